//! `node run`: a validator on the network, its bans enforced by the XDP filter when one is
//! attached.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use consensus::{Engine, EngineConfig, Timeouts};
use firewall::{AttachMode, Instance, Policy, program};
use ipnet::IpNet;
use p2p::{KernelFilter, Multiaddr, Network, NetworkConfig};
use storage::{RocksStore, StoreOptions};
use types::{Genesis, SecretKey};

use node::kernel::XdpBlocklist;
use node::runtime::Runtime;

/// Options of `node run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Directory of the node's RocksDB database.
    #[arg(long, env = "NODE_DATA_DIR")]
    data_dir: PathBuf,
    /// The chain's genesis file (TOML).
    #[arg(long, env = "NODE_GENESIS")]
    genesis: PathBuf,
    /// The node's Ed25519 key: 64 hex digits of seed, in a file readable by its owner only.
    #[arg(long, env = "NODE_KEY")]
    key: PathBuf,
    /// Addresses to listen on (TCP and QUIC multiaddrs); repeat for several.
    #[arg(long, default_values = ["/ip4/0.0.0.0/tcp/9000", "/ip4/0.0.0.0/udp/9000/quic-v1"])]
    listen: Vec<Multiaddr>,
    /// Bootstrap peers, re-dialled while not connected; repeat for several.
    #[arg(long = "peer")]
    peers: Vec<Multiaddr>,
    /// Allowlisted validator addresses or prefixes: never banned, let through by the filter.
    #[arg(long = "allow")]
    allow: Vec<IpNet>,
    /// Turn off Kademlia discovery.
    #[arg(long)]
    no_kademlia: bool,
    /// Find peers on the local network with mDNS.
    #[arg(long)]
    mdns: bool,
    /// Attach the XDP filter to this interface and write bans into its blocklist.
    #[arg(long)]
    iface: Option<String>,
    /// XDP attach mode.
    #[arg(long, default_value = "auto", value_parser = ["auto", "native", "generic"])]
    xdp_mode: String,
    /// Filter instance (pin directory under /sys/fs/bpf).
    #[arg(long, default_value = "node")]
    instance: String,
    /// First ban of a peer, in seconds (repeat offenders get 4x each time).
    #[arg(long, default_value_t = 600)]
    ban_secs: u64,
    /// Propose timeout of round 0, in milliseconds (the other timeouts scale with it).
    #[arg(long, default_value_t = 3000)]
    propose_timeout_ms: u64,
}

/// Reads a key file: 64 hex digits, refused if group or others can read it.
fn read_key(path: &Path) -> Result<SecretKey> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "the key file {} is readable by others; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).with_context(|| {
        format!(
            "the key file {} must hold 64 hex digits of Ed25519 seed",
            path.display()
        )
    })?;
    Ok(SecretKey::from_seed(seed))
}

/// The port of the first TCP listen address: the one the filter protects.
fn p2p_port(listen: &[Multiaddr]) -> Option<u16> {
    listen.iter().flat_map(|a| a.iter()).find_map(|p| match p {
        p2p::multiaddr::Protocol::Tcp(port) => Some(port),
        _ => None,
    })
}

fn attach_filter(args: &RunArgs, iface: &str) -> Result<Box<dyn KernelFilter>> {
    program::raise_memlock();
    program::preflight().context("the XDP filter cannot be loaded here")?;
    let instance = Instance::new(&args.instance)?;
    let port = p2p_port(&args.listen).unwrap_or(9000);
    let mode = match args.xdp_mode.as_str() {
        "native" => AttachMode::Native,
        "generic" => AttachMode::Generic,
        _ => AttachMode::Auto,
    };
    let attached = program::attach(&instance, iface, mode, Some(&Policy::node(port)))
        .with_context(|| format!("attaching the XDP filter to {iface}"))?;
    log::info!(
        "XDP filter attached to {iface} in {} mode (instance {}, P2P port {port})",
        attached.mode,
        args.instance
    );
    let maps = firewall::Maps::open(&instance)?;
    Ok(Box::new(XdpBlocklist::new(maps)))
}

/// Runs the node until SIGINT or SIGTERM.
pub fn run(args: RunArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.genesis)
        .with_context(|| format!("reading the genesis file {}", args.genesis.display()))?;
    let genesis = Genesis::from_toml(&text)
        .with_context(|| format!("parsing the genesis file {}", args.genesis.display()))?;
    let key = read_key(&args.key)?;
    let kernel = match &args.iface {
        Some(iface) => Some(attach_filter(&args, iface)?),
        None => {
            log::warn!("no --iface: bans are enforced by libp2p only, not in the kernel");
            None
        }
    };
    let store = Arc::new(
        RocksStore::open(&args.data_dir, &StoreOptions::default())
            .with_context(|| format!("opening the database in {}", args.data_dir.display()))?,
    );
    let engine_config = EngineConfig {
        timeouts: Timeouts::scaled(args.propose_timeout_ms),
        ..EngineConfig::default()
    };
    let mut config = NetworkConfig {
        listen: args.listen.clone(),
        bootstrap: args.peers.clone(),
        kademlia: !args.no_kademlia,
        mdns: args.mdns,
        ..NetworkConfig::default()
    };
    config.peers.allowlist = args.allow.clone();
    config.peers.ban_base_ms = args.ban_secs.saturating_mul(1000);
    let sync = config.sync;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let engine = Engine::open(
            store.clone(),
            &genesis,
            key.clone(),
            engine_config,
            p2p::clock::now_ms(),
        )
        .context("opening the ledger and consensus")?;
        log::info!(
            "validator {} at height {}",
            key.public_key(),
            engine.ledger().height()
        );
        let network = Network::new(&key, genesis.chain_id.clone(), store, config, kernel)
            .context("starting the network")?;
        log::info!("peer id {}", network.local_peer_id());
        Runtime::new(engine, network, sync).run(shutdown()).await;
        log::info!("stopped");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
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
