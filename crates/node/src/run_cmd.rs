//! `node run`: the startup sequence, the running node, and its orderly stop.
//!
//! # Startup order
//! Each step logs what it found: (1) command line and config, genesis; (2) the memlock limit;
//! (3) RocksDB; (4) the XDP filter (native, else generic; the user-space fallback, loudly, when
//! it cannot be loaded; off with `--no-xdp`); (5) the identity; (6) the peer manager, which
//! re-applies persisted bans and the allowlist to the kernel maps; (7) the swarm; (8) consensus.
//! The API listeners come up last, when there is something to answer with.
//!
//! # Stop
//! On SIGINT or SIGTERM the API stops taking requests, the loop finishes the event in hand (a
//! block being committed is committed), RocksDB is flushed, the swarm is closed, and the filter
//! is left attached or detached as `firewall.on_exit` says.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use consensus::{Engine, EngineConfig, Timeouts};
use firewall::telemetry::Telemetry;
use firewall::{AttachMode, Instance, Policy, program};
use ipnet::IpNet;
use p2p::{KernelFilter, Multiaddr, Network, NetworkConfig};
use storage::{RocksStore, StoreOptions};
use tokio::sync::{broadcast, watch};
use types::{Genesis, SecretKey};

use node::api::{self, Api, NodeInfo, NodeStore};
use node::config::{Config, OnExit, XdpMode};
use node::events::Event;
use node::filter::{Filter, FilterMode};
use node::kernel::XdpBlocklist;
use node::runtime::Runtime;
use node::secret;

/// Options of `node run`; each overrides the config file's field of the same name.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// The configuration file (TOML); every field has a default (docs/config.md).
    #[arg(long, env = "NODE_CONFIG")]
    config: Option<PathBuf>,
    /// [data_dir] Directory of the database, identity, genesis and admin token.
    #[arg(long, env = "NODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// [genesis] The chain's genesis file.
    #[arg(long, env = "NODE_GENESIS")]
    genesis: Option<PathBuf>,
    /// [key] The identity: 64 hex digits of Ed25519 seed, readable by its owner only.
    #[arg(long, env = "NODE_KEY")]
    key: Option<PathBuf>,
    /// [p2p.listen] Listen addresses (multiaddrs); repeat for several.
    #[arg(long, env = "NODE_LISTEN", value_delimiter = ',')]
    listen: Vec<Multiaddr>,
    /// [p2p.peers] Bootstrap peers (multiaddrs); repeat for several.
    #[arg(long = "peer", env = "NODE_PEERS", value_delimiter = ',')]
    peers: Vec<Multiaddr>,
    /// [p2p.allow] Allowlisted validator addresses or prefixes; repeat for several.
    #[arg(long = "allow", env = "NODE_ALLOW", value_delimiter = ',')]
    allow: Vec<IpNet>,
    /// [p2p.kademlia = false] Turn off Kademlia discovery.
    #[arg(long)]
    no_kademlia: bool,
    /// [p2p.mdns = true] Find peers on the local network with mDNS.
    #[arg(long)]
    mdns: bool,
    /// [p2p.ban_secs] First ban of a peer, seconds.
    #[arg(long, env = "NODE_BAN_SECS")]
    ban_secs: Option<u64>,
    /// [firewall.iface] Attach the XDP filter to this interface.
    #[arg(long, env = "NODE_IFACE")]
    iface: Option<String>,
    /// [firewall.xdp_mode] XDP attach mode.
    #[arg(long, value_enum, env = "NODE_XDP_MODE")]
    xdp_mode: Option<XdpMode>,
    /// [firewall.instance] Filter instance (pin directory under /sys/fs/bpf).
    #[arg(long, env = "NODE_FIREWALL_INSTANCE")]
    instance: Option<String>,
    /// [firewall.enabled = false] Run without the kernel filter (for comparisons).
    #[arg(long)]
    no_xdp: bool,
    /// [firewall.telemetry = false] Do not attach the kernel telemetry tracepoints.
    #[arg(long)]
    no_telemetry: bool,
    /// [firewall.on_exit] Keep the filter attached when the node stops, or detach it.
    #[arg(long, value_enum, env = "NODE_ON_EXIT")]
    on_exit: Option<OnExit>,
    /// [consensus.propose_timeout_ms] Propose timeout of round 0, ms.
    #[arg(long, env = "NODE_PROPOSE_TIMEOUT_MS")]
    propose_timeout_ms: Option<u64>,
    /// [api.listen] Address of the public API.
    #[arg(long, env = "NODE_API_LISTEN")]
    api_listen: Option<SocketAddr>,
    /// [api.enabled = false] Do not serve the public API.
    #[arg(long)]
    no_api: bool,
    /// [api.rate_per_sec] Requests per second per client of the public API.
    #[arg(long, env = "NODE_API_RATE")]
    api_rate: Option<u32>,
    /// [api.burst] Request burst per client of the public API.
    #[arg(long, env = "NODE_API_BURST")]
    api_burst: Option<u32>,
    /// [admin.listen] Address of the admin API.
    #[arg(long, env = "NODE_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// [admin.token_file] The admin bearer token file.
    #[arg(long, env = "NODE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// [admin.enabled = false] Do not serve the admin API.
    #[arg(long)]
    no_admin: bool,
}

impl RunArgs {
    /// The configuration: the file (or the defaults), then the command line and environment.
    fn config(&self) -> Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &self.genesis {
            config.genesis = Some(v.clone());
        }
        if let Some(v) = &self.key {
            config.key = Some(v.clone());
        }
        if !self.listen.is_empty() {
            config.p2p.listen = self.listen.iter().map(|a| a.to_string()).collect();
        }
        if !self.peers.is_empty() {
            config.p2p.peers = self.peers.iter().map(|a| a.to_string()).collect();
        }
        if !self.allow.is_empty() {
            config.p2p.allow = self.allow.clone();
        }
        if self.no_kademlia {
            config.p2p.kademlia = false;
        }
        if self.mdns {
            config.p2p.mdns = true;
        }
        if let Some(v) = self.ban_secs {
            config.p2p.ban_secs = v;
        }
        if let Some(v) = &self.iface {
            config.firewall.iface = Some(v.clone());
        }
        if let Some(v) = self.xdp_mode {
            config.firewall.xdp_mode = v;
        }
        if let Some(v) = &self.instance {
            config.firewall.instance = v.clone();
        }
        if self.no_xdp {
            config.firewall.enabled = false;
        }
        if self.no_telemetry {
            config.firewall.telemetry = false;
        }
        if let Some(v) = self.on_exit {
            config.firewall.on_exit = v;
        }
        if let Some(v) = self.propose_timeout_ms {
            config.consensus.propose_timeout_ms = v;
        }
        if let Some(v) = self.api_listen {
            config.api.listen = v;
        }
        if self.no_api {
            config.api.enabled = false;
        }
        if let Some(v) = self.api_rate {
            config.api.rate_per_sec = v;
        }
        if let Some(v) = self.api_burst {
            config.api.burst = v;
        }
        if let Some(v) = self.admin_listen {
            config.admin.listen = v;
        }
        if let Some(v) = &self.admin_token_file {
            config.admin.token_file = Some(v.clone());
        }
        if self.no_admin {
            config.admin.enabled = false;
        }
        config.validate()?;
        Ok(config)
    }
}

/// The port of the first TCP listen address: the one the filter protects.
fn p2p_port(listen: &[Multiaddr]) -> Option<u16> {
    listen.iter().flat_map(|a| a.iter()).find_map(|p| match p {
        p2p::multiaddr::Protocol::Tcp(port) => Some(port),
        _ => None,
    })
}

/// Step 4, continued: the kernel telemetry tracepoints, each optional; the log says which
/// attached and why the others did not.
fn start_telemetry(config: &Config, listen: &[Multiaddr]) -> Option<Telemetry> {
    if !config.firewall.telemetry {
        log::info!("[4/8] kernel telemetry off (firewall.telemetry = false, --no-telemetry)");
        return None;
    }
    let Some(port) = p2p_port(listen) else {
        log::warn!(
            "[4/8] kernel telemetry NOT attached: no TCP listen address, so no P2P port to watch"
        );
        return None;
    };
    match Telemetry::start(port) {
        Ok(telemetry) => {
            let (attached, missing): (Vec<_>, Vec<_>) = telemetry
                .attachments()
                .iter()
                .partition(|a| a.result.is_ok());
            let attached: Vec<&str> = attached.iter().map(|a| a.tracepoint.as_str()).collect();
            log::info!(
                "[4/8] kernel telemetry attached for P2P port {port}: {}",
                attached.join(", ")
            );
            for a in missing {
                if let Err(why) = &a.result {
                    log::warn!(
                        "[4/8] kernel telemetry: {} NOT attached ({why}); the kernel_* samples it feeds are left out",
                        a.tracepoint
                    );
                }
            }
            Some(telemetry)
        }
        Err(e) => {
            log::warn!(
                "[4/8] kernel telemetry NOT attached: {e}. The kernel_* metrics have no samples; it needs root (CAP_BPF, CAP_PERFMON) and tracefs (--no-telemetry silences this)"
            );
            None
        }
    }
}

/// Step 4: the kernel filter, or the reason there is none.
fn attach_filter(config: &Config, listen: &[Multiaddr]) -> (Filter, Option<Box<dyn KernelFilter>>) {
    let fw = &config.firewall;
    if !fw.enabled {
        log::warn!(
            "[4/8] XDP filter OFF (--no-xdp): hostile packets reach the kernel stack; bans are enforced by the connection gate only"
        );
        return (Filter::without_kernel(FilterMode::Off), None);
    }
    let Some(iface) = fw.iface.clone() else {
        log::warn!(
            "[4/8] no firewall.iface configured: running the USER-SPACE FALLBACK filter (bans and operator blocks refused at connection time; packets are not filtered in the kernel)"
        );
        return (Filter::without_kernel(FilterMode::Userspace), None);
    };
    let attempt = || -> Result<(Filter, Box<dyn KernelFilter>)> {
        program::preflight().context("the XDP filter cannot be loaded here")?;
        let instance = Instance::new(&fw.instance)?;
        let port = p2p_port(listen).unwrap_or(9000);
        let mode = match fw.xdp_mode {
            XdpMode::Native => AttachMode::Native,
            XdpMode::Generic => AttachMode::Generic,
            XdpMode::Auto => AttachMode::Auto,
        };
        let attached = program::attach(&instance, &iface, mode, Some(&Policy::node(port)))
            .with_context(|| format!("attaching the XDP filter to {iface}"))?;
        let filter_mode = if attached.mode == "native" {
            FilterMode::XdpNative
        } else {
            FilterMode::XdpGeneric
        };
        log::info!(
            "[4/8] XDP filter attached to {iface} in {} mode (instance {}, P2P port {port}{})",
            attached.mode,
            fw.instance,
            if attached.replaced {
                ", replaced the running program in place"
            } else {
                ""
            }
        );
        if filter_mode == FilterMode::XdpGeneric && fw.xdp_mode == XdpMode::Auto {
            log::warn!("[4/8] the driver of {iface} has no native XDP: generic mode is slower");
        }
        let kernel = Box::new(XdpBlocklist::new(firewall::Maps::open(&instance)?));
        let maps = firewall::Maps::open(&instance)?;
        Ok((
            Filter::xdp(filter_mode, iface.clone(), instance, maps),
            kernel,
        ))
    };
    match attempt() {
        Ok((filter, kernel)) => (filter, Some(kernel)),
        Err(e) => {
            log::error!(
                "[4/8] XDP FILTER NOT LOADED: {e:#}. Running the USER-SPACE FALLBACK filter: bans and operator blocks are refused at connection time, but hostile packets reach the kernel stack. Run as root (CAP_BPF, CAP_NET_ADMIN) to load it."
            );
            (Filter::without_kernel(FilterMode::Userspace), None)
        }
    }
}

/// Step 5: the identity, loaded or created.
fn identity(config: &Config) -> Result<SecretKey> {
    let path = config.key_path();
    let (key, created) = secret::load_or_create_key(&path).context("loading the identity")?;
    if created {
        log::warn!(
            "[5/8] no identity at {}: created {} (mode 0600); back it up",
            path.display(),
            key.public_key()
        );
    } else {
        log::info!(
            "[5/8] identity {} loaded from {}",
            key.public_key(),
            path.display()
        );
    }
    Ok(key)
}

/// Runs the node until SIGINT or SIGTERM.
pub fn run(args: RunArgs) -> Result<()> {
    let config = args.config()?;
    let genesis_path = config.genesis_path();
    let (genesis, _) = node::config::read_genesis(&genesis_path).context(
        "no usable genesis (`node init --validators N` makes a local one; `node init --genesis FILE` copies the chain's)",
    )?;
    let listen = parse_addrs("p2p.listen", &config.p2p.listen)?;
    let peers = parse_addrs("p2p.peers", &config.p2p.peers)?;
    log::info!(
        "[1/8] config {}: data dir {}, chain {}, {} validators in genesis, listen {}, {} bootstrap peers",
        args.config
            .as_ref()
            .map_or("(defaults)".to_string(), |p| p.display().to_string()),
        config.data_dir.display(),
        genesis.chain_id,
        genesis.validators.len(),
        config.p2p.listen.join(" "),
        peers.len()
    );

    program::raise_memlock();
    log::info!("[2/8] memlock limit for BPF maps: {}", memlock_limit());

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let db = Arc::new(
        RocksStore::open(&config.db_path(), &StoreOptions::default()).with_context(|| {
            format!(
                "opening the database in {} (is another node running on it?)",
                config.db_path().display()
            )
        })?,
    );
    log::info!("[3/8] RocksDB open at {}", config.db_path().display());

    let (filter, kernel) = attach_filter(&config, &listen);
    let filter = Arc::new(filter);
    let telemetry = start_telemetry(&config, &listen).map(|t| Arc::new(Mutex::new(t)));
    let result = identity(&config).and_then(|key| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        runtime.block_on(serve(
            &config,
            genesis,
            listen,
            peers,
            db,
            key,
            filter.clone(),
            kernel,
            telemetry,
        ))
    });
    leave_filter(&config, &filter);
    result
}

/// The memlock limit now, for the log.
fn memlock_limit() -> String {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return format!("unknown ({})", std::io::Error::last_os_error());
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".to_string()
    } else {
        format!("{} bytes", limit.rlim_cur)
    }
}

fn parse_addrs(field: &str, addrs: &[String]) -> Result<Vec<Multiaddr>> {
    addrs
        .iter()
        .map(|a| {
            a.parse()
                .with_context(|| format!("config field {field}: `{a}` is not a multiaddr"))
        })
        .collect()
}

/// Leaves the filter in force or detaches it.
fn leave_filter(config: &Config, filter: &Filter) {
    let Some(instance) = filter.instance() else {
        return;
    };
    match config.firewall.on_exit {
        OnExit::Keep => log::info!(
            "XDP filter left attached (instance {}): bans stay in force while the node is down",
            instance.name()
        ),
        OnExit::Detach => match program::detach(instance) {
            Ok(_) => log::info!("XDP filter detached (instance {})", instance.name()),
            Err(e) => log::error!("detaching the XDP filter failed: {e}"),
        },
    }
}

/// Steps 6 to 8, the API, and the run until a signal.
#[expect(
    clippy::too_many_arguments,
    reason = "the parts built by the earlier steps"
)]
async fn serve(
    config: &Config,
    genesis: Genesis,
    listen: Vec<Multiaddr>,
    peers: Vec<Multiaddr>,
    db: Arc<RocksStore>,
    key: SecretKey,
    filter: Arc<Filter>,
    kernel: Option<Box<dyn KernelFilter>>,
    telemetry: Option<Arc<Mutex<Telemetry>>>,
) -> Result<()> {
    let signal = watch_signals();
    let store: NodeStore = db.clone();
    let mut network_config = NetworkConfig {
        listen,
        bootstrap: peers,
        kademlia: config.p2p.kademlia,
        mdns: config.p2p.mdns,
        ..NetworkConfig::default()
    };
    network_config.peers.allowlist = config.p2p.allow.clone();
    network_config.peers.ban_base_ms = config.p2p.ban_secs.saturating_mul(1000);
    let sync = network_config.sync;
    let network = Network::new(
        &key,
        genesis.chain_id.clone(),
        store.clone(),
        network_config,
        kernel,
    )
    .context("starting the network")?;
    let now = p2p::clock::now_ms();
    log::info!(
        "[6/8] peer manager: {} active bans and {} allowlisted nets re-applied{}",
        network.peers().bans(now).len(),
        network.peers().allowlist().len(),
        if filter.mode().is_xdp() {
            " to libp2p and the kernel maps"
        } else {
            " to libp2p"
        }
    );
    log::info!(
        "[7/8] swarm online: peer id {}, {} bootstrap peers, kademlia {}, mdns {}",
        network.local_peer_id(),
        config.p2p.peers.len(),
        config.p2p.kademlia,
        config.p2p.mdns
    );
    let engine_config = EngineConfig {
        timeouts: Timeouts::scaled(config.consensus.propose_timeout_ms),
        ..EngineConfig::default()
    };
    let engine = Engine::open(store, &genesis, key.clone(), engine_config, now)
        .context("opening the ledger and consensus")?;
    let validator = engine
        .ledger()
        .validators()
        .get(&key.public_key())
        .is_some();
    log::info!(
        "[8/8] consensus: ledger at height {}, {}",
        engine.ledger().height(),
        if validator {
            "joining as a validator"
        } else {
            "following (not in the validator set)"
        }
    );
    let peer_id = network.local_peer_id().to_string();
    let runtime = Runtime::new(engine, network, sync);

    let (stop_tx, stop_rx) = watch::channel(false);
    let api = Api {
        handle: runtime.handle(),
        progress: runtime.progress(),
        events: runtime.events(),
        filter: filter.clone(),
        telemetry: telemetry.clone(),
        db: Some(db.clone()),
        info: Arc::new(NodeInfo {
            chain_id: genesis.chain_id.to_string(),
            key: key.public_key().to_string(),
            peer_id,
            version: env!("CARGO_PKG_VERSION"),
            started_ms: p2p::clock::now_ms(),
            data_dir: std::path::absolute(&config.data_dir).with_context(|| {
                format!("resolving the data directory {}", config.data_dir.display())
            })?,
        }),
        config: config.api.clone(),
        limiter: api::limit::limiter(&config.api),
        streams: Arc::new(AtomicUsize::new(0)),
        connections: Arc::new(api::ConnectionStats::default()),
    };
    let mut servers = Vec::new();
    if config.api.enabled {
        let listener = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .with_context(|| format!("binding the public API to {}", config.api.listen))?;
        log::info!("public API on http://{}", config.api.listen);
        servers.push(tokio::spawn(api.serve(
            listener,
            api.public_router(),
            stopped(stop_rx.clone()),
        )));
    }
    if let Some(router) = admin_router(config, &api) {
        let listener = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("binding the admin API to {}", config.admin.listen))?;
        log::info!("admin API on http://{}", config.admin.listen);
        servers.push(tokio::spawn(api.serve(
            listener,
            router,
            stopped(stop_rx.clone()),
        )));
    }
    let sampler = spawn_drop_sampler(&filter, runtime.events(), config, stop_rx.clone());
    if let Some(telemetry) = telemetry {
        tokio::spawn(sweep_handshakes(telemetry, stop_rx.clone()));
    }

    let loop_stop = stopped(stop_rx.clone());
    tokio::spawn(async move {
        signal.await;
        log::info!("stopping: the API takes no more requests; finishing the event in hand");
        let _ = stop_tx.send(true);
    });
    let runtime = runtime.run(loop_stop).await;
    log::info!(
        "consensus stopped at height {}",
        runtime.engine().ledger().height()
    );
    match db.flush() {
        Ok(()) => log::info!("database flushed"),
        Err(e) => log::error!("flushing the database failed: {e}"),
    }
    drop(runtime);
    log::info!("swarm closed");
    for server in servers {
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => log::error!("an API server failed: {e}"),
            Ok(Err(e)) => log::error!("an API server task failed: {e}"),
            Err(_) => log::warn!("an API server did not stop within 5 s"),
        }
    }
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    Ok(())
}

/// The admin router, when enabled and its token is readable.
fn admin_router(config: &Config, api: &Api) -> Option<axum::Router> {
    if !config.admin.enabled {
        log::info!("admin API disabled by configuration");
        return None;
    }
    let path = config.admin_token_path();
    match api::admin::Token::load(&path) {
        Ok(token) => {
            if !config.admin.listen.ip().is_loopback() {
                log::warn!(
                    "the admin API listens on {}, not on loopback: protect that address",
                    config.admin.listen
                );
            }
            Some(api.admin_router(token))
        }
        Err(e) => {
            log::error!(
                "ADMIN API OFF: {e}. Create a token with `node init` or write 64 hex digits to {} (mode 0600)",
                path.display()
            );
            None
        }
    }
}

/// Samples the kernel's drop events into the event stream, at most
/// `firewall.drop_events_per_sec` per second.
fn spawn_drop_sampler(
    filter: &Filter,
    events: broadcast::Sender<Event>,
    config: &Config,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let maps = filter.maps()?;
    let mut stream = match maps.events() {
        Ok(stream) => stream,
        Err(e) => {
            log::warn!("no drop events in the event stream: {e}");
            return None;
        }
    };
    drop(maps);
    let per_sec = u64::from(config.firewall.drop_events_per_sec);
    Some(tokio::task::spawn_blocking(move || {
        let mut window_start = std::time::Instant::now();
        let mut sent = 0u64;
        // Ends when the node stops, or when the stop flag's sender is gone (a panic unwound
        // the runtime): dropping the runtime waits for this thread.
        while !*stop.borrow() && stop.has_changed().is_ok() {
            for event in stream.poll(Duration::from_millis(200)) {
                if window_start.elapsed() >= Duration::from_secs(1) {
                    window_start = std::time::Instant::now();
                    sent = 0;
                }
                if sent >= per_sec || events.receiver_count() == 0 {
                    continue;
                }
                sent += 1;
                let reason =
                    firewall::Reason::from_code(event.reason).map_or("unknown", |r| r.name());
                let _ = events.send(Event::Drop {
                    source: firewall::maps::event_addr(&event).to_string(),
                    reason,
                    port: event.dst_port,
                    protocol: event.protocol,
                });
            }
        }
    }))
}

/// Sweeps the telemetry's handshake table every few seconds, so it never stays full of dead
/// handshakes between scrapes; ends when the node stops.
async fn sweep_handshakes(telemetry: Arc<Mutex<Telemetry>>, stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(firewall::telemetry::SWEEP_INTERVAL);
    let stopped = stopped(stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tick.tick() => {}
        }
        let telemetry = telemetry.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let mut telemetry = match telemetry.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            telemetry.sweep()
        })
        .await;
        if let Ok(Err(e)) = swept {
            log::warn!("kernel telemetry: sweeping the handshake table failed: {e}");
        }
    }
}

/// Completes once the stop flag is set.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// SIGINT and SIGTERM, watched from the moment this is called: the handlers are installed
/// before anything (the API's `/health` included) can tell a supervisor the node is up, so a
/// SIGTERM sent right after never meets the default action.
fn watch_signals() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let watched = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        match watched {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                log::error!("cannot watch for signals; stop the node with SIGKILL");
                std::future::pending::<()>().await
            }
        }
    }
}
