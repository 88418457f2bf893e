//! The chain the lab creates in its data directory: keys, the genesis, each honest node's
//! identity, admin token and `node.toml`.
//!
//! Layout: `<dir>/genesis.toml`, `<dir>/byzantine.key`, `<dir>/v<i>/{identity.key,
//! admin.token, node.toml, db/}`, and the logs `<dir>/<name>.log`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use node::api::admin::Token;
use node::config::{Config, OnExit};
use types::{ChainId, Genesis, GenesisAccount, GenesisValidator, SecretKey};

use crate::options::Options;
use crate::topology::{ADMIN_PORT, API_PORT, IFACE, P2P_PORT, Topology};

/// The chain id of every lab.
pub const CHAIN_ID: &str = "lab";
/// Stake of each honest validator.
pub const HONEST_STAKE: u64 = 1_000_000;
/// Stake of the byzantine validator: with four honest validators, three of them are a quorum
/// (3_000_000 > 2/3 of 4_400_000) even when it votes against them, and it is the round-0
/// proposer of about one height in eleven, so it gets turns to double-propose.
pub const BYZANTINE_STAKE: u64 = 400_000;
/// Balance of every account in the genesis (validators and clients).
pub const BALANCE: u64 = 1_000_000_000_000;
/// Funded client accounts of the transaction stream.
pub const CLIENTS: usize = 32;
/// Requests per second (and burst) each client may make to a node's API: far above what the
/// lab sends, so the API's own limit never shapes a measurement.
pub const API_RATE: u32 = 100_000;
/// The nodes' first ban, seconds: longer than any lab, so every attacker stays banned until
/// the end and its ban can be checked.
pub const BAN_SECS: u64 = 3_600;

/// An honest node's files.
#[derive(Debug)]
pub struct NodeFiles {
    /// Its `node.toml`.
    pub config: PathBuf,
    /// Its identity.
    pub key: SecretKey,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its admin API token.
    pub token: String,
}

/// Everything the lab wrote.
#[derive(Debug)]
pub struct Chain {
    /// The genesis.
    pub genesis: Genesis,
    /// Its file.
    pub genesis_path: PathBuf,
    /// The honest validators.
    pub nodes: Vec<NodeFiles>,
    /// The byzantine validator's identity.
    pub byzantine: SecretKey,
    /// Its identity file.
    pub byzantine_key: PathBuf,
    /// The transaction stream's accounts.
    pub clients: Vec<SecretKey>,
}

/// The genesis of the lab: chain id [`CHAIN_ID`], honest and byzantine validators with their
/// stakes, and [`BALANCE`] for every key.
pub fn genesis(
    honest: &[SecretKey],
    byzantine: &SecretKey,
    clients: &[SecretKey],
    time_ms: u64,
) -> Result<Genesis> {
    let accounts = honest
        .iter()
        .chain([byzantine])
        .chain(clients)
        .map(|k| GenesisAccount {
            key: k.public_key(),
            balance: BALANCE,
        })
        .collect();
    let validators = honest
        .iter()
        .map(|k| (k, HONEST_STAKE))
        .chain([(byzantine, BYZANTINE_STAKE)])
        .map(|(k, stake)| GenesisValidator {
            key: k.public_key(),
            stake,
        })
        .collect();
    let chain_id: ChainId = CHAIN_ID.parse().context("the lab's chain id")?;
    Genesis::new(chain_id, time_ms, accounts, validators).context("building the genesis")
}

/// The multiaddr other nodes dial honest validator `i` at.
pub fn dial_addr(ip: Ipv4Addr, peer_id: &str) -> String {
    format!("/ip4/{ip}/tcp/{P2P_PORT}/p2p/{peer_id}")
}

/// Node `i`'s configuration: its files, listening on its own address, the other honest
/// validators as peers and every honest validator allowlisted, discovery off, the filter on
/// `eth0` as the instance named like its namespace (detached when it stops), the lab's propose
/// timeout, and APIs open to the hub with limits the lab never reaches.
pub fn node_config(
    i: usize,
    dir: &Path,
    topo: &Topology,
    peer_ids: &[String],
    opts: &Options,
) -> Config {
    let me = &topo.validators[i];
    let mut config = Config {
        data_dir: dir.join(format!("v{i}")),
        genesis: Some(dir.join("genesis.toml")),
        key: Some(dir.join(format!("v{i}")).join("identity.key")),
        ..Config::default()
    };
    config.p2p.listen = vec![
        format!("/ip4/{}/tcp/{P2P_PORT}", me.ip),
        format!("/ip4/{}/udp/{P2P_PORT}/quic-v1", me.ip),
    ];
    config.p2p.peers = topo
        .validators
        .iter()
        .zip(peer_ids)
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, (m, id))| dial_addr(m.ip, id))
        .collect();
    config.p2p.allow = topo
        .validators
        .iter()
        .map(|m| ipnet::IpNet::from(std::net::IpAddr::V4(m.ip)))
        .collect();
    config.p2p.kademlia = false;
    config.p2p.mdns = false;
    config.p2p.ban_secs = BAN_SECS;
    config.firewall.enabled = opts.xdp;
    config.firewall.iface = Some(IFACE.to_string());
    config.firewall.instance = me.ns.clone();
    config.firewall.on_exit = OnExit::Detach;
    config.consensus.propose_timeout_ms = opts.propose_timeout_ms;
    config.api.listen = SocketAddr::from((me.ip, API_PORT));
    config.api.rate_per_sec = API_RATE;
    config.api.burst = API_RATE;
    config.admin.listen = SocketAddr::from((me.ip, ADMIN_PORT));
    config.admin.token_file = Some(config.data_dir.join("admin.token"));
    config
}

/// Creates a directory only its owner may enter (fine if it exists).
fn private_dir(path: &Path) -> Result<()> {
    Ok(node::secret::private_dir(path)?)
}

/// Writes a new identity file (64 hex digits of seed, mode 0600).
fn write_key(path: &Path, key: &SecretKey) -> Result<()> {
    node::secret::write_new(path, format!("{}\n", hex::encode(key.seed())).as_bytes())
        .with_context(|| format!("writing the identity {}", path.display()))
}

/// Creates `dir` and the chain in it.
pub fn write(dir: &Path, topo: &Topology, opts: &Options) -> Result<Chain> {
    private_dir(dir)?;
    let honest: Vec<SecretKey> = (0..topo.validators.len())
        .map(|_| SecretKey::generate())
        .collect();
    let byzantine = SecretKey::generate();
    let clients: Vec<SecretKey> = (0..CLIENTS).map(|_| SecretKey::generate()).collect();
    let genesis = genesis(&honest, &byzantine, &clients, p2p::clock::now_ms())?;
    let genesis_path = dir.join("genesis.toml");
    std::fs::write(&genesis_path, genesis.to_toml())
        .with_context(|| format!("writing {}", genesis_path.display()))?;
    let byzantine_key = dir.join("byzantine.key");
    write_key(&byzantine_key, &byzantine)?;
    let peer_ids = honest
        .iter()
        .map(|k| p2p::peer_id_of(k).map(|id| id.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .context("deriving the validators' peer ids")?;
    let mut nodes = Vec::new();
    for (i, key) in honest.into_iter().enumerate() {
        let config = node_config(i, dir, topo, &peer_ids, opts);
        private_dir(&config.data_dir)?;
        write_key(&config.key_path(), &key)?;
        let token_path = config.admin_token_path();
        Token::write_new(&token_path)
            .with_context(|| format!("creating the admin token {}", token_path.display()))?;
        let token = node::secret::read(&token_path)
            .with_context(|| format!("reading {}", token_path.display()))?;
        let config_path = config.data_dir.join("node.toml");
        let text = config.to_toml().context("writing node.toml")?;
        std::fs::write(&config_path, text)
            .with_context(|| format!("writing {}", config_path.display()))?;
        nodes.push(NodeFiles {
            config: config_path,
            key,
            peer_id: peer_ids[i].clone(),
            token: String::from_utf8_lossy(&token).into_owned(),
        });
    }
    Ok(Chain {
        genesis,
        genesis_path,
        nodes,
        byzantine,
        byzantine_key,
        clients,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::options::Cli;
    use clap::Parser;

    fn options(dir: &Path) -> Options {
        Cli::try_parse_from([
            "lab",
            "--dir",
            dir.to_str().unwrap(),
            "--propose-timeout-ms",
            "700",
        ])
        .unwrap()
        .options(1)
        .unwrap()
    }

    #[test]
    fn three_honest_validators_are_a_quorum_even_against_the_byzantine_one() {
        let honest: Vec<SecretKey> = (0..4).map(|_| SecretKey::generate()).collect();
        let byz = SecretKey::generate();
        let clients: Vec<SecretKey> = (0..CLIENTS).map(|_| SecretKey::generate()).collect();
        let g = genesis(&honest, &byz, &clients, 1).unwrap();
        assert_eq!(g.validators.len(), 5);
        assert_eq!(g.accounts.len(), 5 + CLIENTS);
        let total: u64 = g.validators.iter().map(|v| v.stake).sum();
        assert!(3 * 3 * HONEST_STAKE > 2 * total, "3 honest of {total}");
        assert!(2 * 3 * HONEST_STAKE <= 2 * total, "2 honest are not");
    }

    #[test]
    fn node_configs_wire_the_lab_together() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lab");
        let opts = options(&dir);
        let topo = Topology::new(99, 4);
        let ids: Vec<String> = (0..4).map(|i| format!("peer{i}")).collect();
        let c = node_config(1, &dir, &topo, &ids, &opts);
        c.validate().unwrap();
        assert_eq!(c.p2p.listen[0], "/ip4/198.18.100.2/tcp/9000");
        assert_eq!(c.p2p.listen[1], "/ip4/198.18.100.2/udp/9000/quic-v1");
        assert_eq!(c.p2p.peers.len(), 3);
        assert_eq!(c.p2p.peers[0], "/ip4/198.18.100.1/tcp/9000/p2p/peer0");
        assert!(!c.p2p.peers.iter().any(|p| p.ends_with("peer1")));
        assert_eq!(c.p2p.allow.len(), 4);
        assert!(!c.p2p.kademlia && !c.p2p.mdns);
        assert_eq!(c.firewall.instance, "xlab-99-v1");
        assert_eq!(c.firewall.iface.as_deref(), Some("eth0"));
        assert!(c.firewall.enabled);
        assert_eq!(c.firewall.on_exit, OnExit::Detach);
        assert_eq!(c.consensus.propose_timeout_ms, 700);
        assert_eq!(c.api.listen.to_string(), "198.18.100.2:8080");
        assert_eq!(c.admin.listen.to_string(), "198.18.100.2:8081");
        let mut no_xdp = opts.clone();
        no_xdp.xdp = false;
        assert!(!node_config(0, &dir, &topo, &ids, &no_xdp).firewall.enabled);
    }

    #[test]
    fn the_chain_is_written_with_private_secrets() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lab");
        let opts = options(&dir);
        let topo = Topology::new(99, 4);
        let chain = write(&dir, &topo, &opts).unwrap();
        assert_eq!(chain.nodes.len(), 4);
        let text = std::fs::read_to_string(&chain.genesis_path).unwrap();
        assert_eq!(Genesis::from_toml(&text).unwrap(), chain.genesis);
        let node = &chain.nodes[2];
        let config = Config::load(&node.config).unwrap();
        assert_eq!(config.key_path(), dir.join("v2").join("identity.key"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&config.key_path()), 0o600);
        assert_eq!(mode(&chain.byzantine_key), 0o600);
        assert_eq!(mode(&config.data_dir), 0o700);
        let seed = node::secret::read(&config.key_path()).unwrap();
        assert_eq!(seed, hex::encode(node.key.seed()).as_bytes());
        assert_eq!(node.token.len(), 64);
    }
}
