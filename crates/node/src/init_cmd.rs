//! `node init`: a node's data directory (identity, admin token, config), or a whole local
//! network of validators sharing one genesis.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use types::{ChainId, SecretKey};

use node::api::admin::Token;
use node::config::Config;

use crate::genesis_cmd::{self, DEFAULT_BALANCE, DEFAULT_STAKE};

/// Most validators `--validators` creates.
const MAX_LOCAL_VALIDATORS: usize = 64;

/// Options of `node init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// The data directory to create (for `--validators`: the directory holding one per node).
    #[arg(long, env = "NODE_DATA_DIR")]
    data_dir: PathBuf,
    /// Create a local network: a genesis with this many validators and a directory per node
    /// (`node-0`, `node-1`, ...), each node on its own loopback address.
    #[arg(long)]
    validators: Option<usize>,
    /// Chain id of the local genesis.
    #[arg(long, default_value = "local")]
    chain_id: String,
    /// P2P port of node i is `base_port + i` (TCP and QUIC).
    #[arg(long, default_value_t = 9000)]
    base_port: u16,
    /// Public API port of node i is `api_base_port + 2i`, its admin API the next one.
    #[arg(long, default_value_t = 8080)]
    api_base_port: u16,
    /// For a single node: the chain's genesis file, copied into the data directory.
    #[arg(long, conflicts_with = "validators")]
    genesis: Option<PathBuf>,
}

/// Runs `node init`.
pub fn run(args: InitArgs) -> Result<()> {
    match args.validators {
        Some(count) => local_network(&args, count),
        None => single(&args),
    }
}

/// Creates a directory only its owner may enter (fine if it exists).
fn private_dir(path: &Path) -> Result<()> {
    Ok(node::secret::private_dir(path)?)
}

/// Loads the identity of `dir`, or creates it.
fn identity(dir: &Path) -> Result<(SecretKey, bool)> {
    Ok(node::secret::load_or_create_key(&dir.join("identity.key"))?)
}

/// Creates the admin token of `dir` unless there is one.
fn admin_token(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("admin.token");
    if !path.exists() {
        Token::write_new(&path)
            .with_context(|| format!("creating the admin token {}", path.display()))?;
    }
    Ok(path)
}

/// Writes a file that must not exist yet.
pub(crate) fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (remove it first to start over)",
                path.display()
            )
        })?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

fn single(args: &InitArgs) -> Result<()> {
    let dir = absolute(&args.data_dir)?;
    private_dir(&dir)?;
    let (key, created) = identity(&dir)?;
    admin_token(&dir)?;
    if let Some(genesis) = &args.genesis {
        let (_, text) = node::config::read_genesis(genesis)?;
        write_new(&dir.join("genesis.toml"), &text, 0o644)?;
    }
    let config_path = dir.join("node.toml");
    if !config_path.exists() {
        let config = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        write_new(&config_path, &config.to_toml()?, 0o644)?;
    }
    println!(
        "{} {}\nidentity  {}\npeer id   {}\nconfig    {}",
        if created { "created" } else { "kept" },
        dir.display(),
        key.public_key(),
        p2p::peer_id_of(&key)?,
        config_path.display()
    );
    Ok(())
}

/// The loopback address of local node `i`: 127.0.0.(i+1), so per-address limits apply per node.
fn local_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, (i + 1) as u8)
}

fn local_network(args: &InitArgs, count: usize) -> Result<()> {
    if count == 0 || count > MAX_LOCAL_VALIDATORS {
        bail!("--validators takes 1 to {MAX_LOCAL_VALIDATORS}");
    }
    let last_port = usize::from(args.base_port) + count;
    let last_api = usize::from(args.api_base_port) + 2 * count;
    if last_port > usize::from(u16::MAX) || last_api > usize::from(u16::MAX) {
        bail!("the ports of {count} nodes do not fit under 65536");
    }
    let root = absolute(&args.data_dir)?;
    if root.join("genesis.toml").exists() {
        bail!(
            "{} already holds a network; remove it to start over",
            root.display()
        );
    }
    private_dir(&root)?;
    let chain_id: ChainId = args
        .chain_id
        .parse()
        .with_context(|| format!("`{}` is not a valid chain id", args.chain_id))?;
    let mut keys = Vec::new();
    for i in 0..count {
        let dir = root.join(format!("node-{i}"));
        private_dir(&dir)?;
        keys.push(identity(&dir)?.0);
        admin_token(&dir)?;
    }
    let public_keys: Vec<_> = keys.iter().map(SecretKey::public_key).collect();
    let genesis = genesis_cmd::from_keys(chain_id, &public_keys, DEFAULT_STAKE, DEFAULT_BALANCE)
        .context("building the genesis")?;
    let genesis_text = genesis.to_toml();
    write_new(&root.join("genesis.toml"), &genesis_text, 0o644)?;
    let peer_ids = keys
        .iter()
        .map(p2p::peer_id_of)
        .collect::<Result<Vec<_>, _>>()?;
    for (i, key) in keys.iter().enumerate() {
        let dir = root.join(format!("node-{i}"));
        write_new(&dir.join("genesis.toml"), &genesis_text, 0o644)?;
        let port = args.base_port + i as u16;
        let api_port = args.api_base_port + 2 * i as u16;
        let mut config = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        config.p2p.listen = vec![
            format!("/ip4/{}/tcp/{port}", local_ip(i)),
            format!("/ip4/{}/udp/{port}/quic-v1", local_ip(i)),
        ];
        config.p2p.peers = (0..count)
            .filter(|j| *j != i)
            .map(|j| {
                format!(
                    "/ip4/{}/tcp/{}/p2p/{}",
                    local_ip(j),
                    args.base_port + j as u16,
                    peer_ids[j]
                )
            })
            .collect();
        config.p2p.allow = (0..count)
            .map(|j| ipnet::IpNet::from(std::net::IpAddr::from(local_ip(j))))
            .collect();
        config.p2p.kademlia = false;
        config.api.listen = SocketAddr::from(([127, 0, 0, 1], api_port));
        config.admin.listen = SocketAddr::from(([127, 0, 0, 1], api_port + 1));
        write_new(&dir.join("node.toml"), &config.to_toml()?, 0o644)?;
        println!(
            "node-{i}: {} peer {} p2p {}:{port} api 127.0.0.1:{api_port} admin 127.0.0.1:{}",
            key.public_key(),
            peer_ids[i],
            local_ip(i),
            api_port + 1
        );
    }
    println!(
        "genesis {} with {count} validators; run each with `node run --config {}/node-<i>/node.toml`",
        root.join("genesis.toml").display(),
        root.display()
    );
    Ok(())
}
