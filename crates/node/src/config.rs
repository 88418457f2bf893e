//! The node's configuration: a TOML file whose every field has a default, overridden by
//! command-line options and environment variables (`node run --help` lists them).
//!
//! `docs/config.md` documents each field; `Config::default()` is what an empty file means, and a
//! test checks that the documented example parses to exactly that.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest configuration file read, bytes.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Longest propose timeout accepted, milliseconds (every timeout is capped at a minute).
pub const MAX_PROPOSE_TIMEOUT_MS: u64 = 60_000;
/// Highest request rate and burst per client accepted.
pub const MAX_API_RATE: u32 = 100_000;
/// Largest request body limit accepted, bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most event streams accepted.
pub const MAX_STREAMS: usize = 4096;
/// Highest bound on open API connections accepted (each holds a file descriptor).
pub const MAX_API_CONNECTIONS: usize = 65_536;
/// Shortest header read timeout accepted, milliseconds.
pub const MIN_HEADER_TIMEOUT_MS: u64 = 100;
/// Longest header read timeout accepted, milliseconds.
pub const MAX_HEADER_TIMEOUT_MS: u64 = 600_000;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("the config file {path} is {len} bytes, more than the bound of {MAX_CONFIG_BYTES}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// Not TOML of the expected shape (unknown fields are refused).
    #[error("the config file {path} is invalid: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
    /// A field's value is out of range.
    #[error("config field {field}: {message}")]
    Field {
        /// The field, as `section.name`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Why a genesis file was refused.
#[derive(Debug, thiserror::Error)]
pub enum GenesisFileError {
    /// The file could not be read.
    #[error("cannot read the genesis file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a valid genesis (too large, not TOML of the genesis shape, inconsistent).
    #[error("the genesis file {path} is invalid")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: types::GenesisError,
    },
}

/// Reads and checks a genesis file, reading at most one byte more than a genesis may have
/// ([`types::limits::MAX_GENESIS_FILE_BYTES`]); returns the genesis and the file's text.
pub fn read_genesis(path: &Path) -> Result<(types::Genesis, String), GenesisFileError> {
    use std::io::Read;
    let read = |source| GenesisFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(types::limits::MAX_GENESIS_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(read)?;
    let genesis = types::Genesis::from_toml(&text).map_err(|source| GenesisFileError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((genesis, text))
}

/// Everything `node run` needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the node's database (`db/`), and default place of its identity, genesis and
    /// admin token.
    pub data_dir: PathBuf,
    /// The chain's genesis file; default `<data_dir>/genesis.toml`.
    pub genesis: Option<PathBuf>,
    /// The node's Ed25519 identity (64 hex digits of seed, mode 0600); default
    /// `<data_dir>/identity.key`, created at start if missing.
    pub key: Option<PathBuf>,
    /// The P2P network.
    pub p2p: P2pConfig,
    /// The XDP filter.
    pub firewall: FirewallConfig,
    /// Consensus.
    pub consensus: ConsensusConfig,
    /// The public HTTP API.
    pub api: ApiConfig,
    /// The admin HTTP API.
    pub admin: AdminConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("data"),
            genesis: None,
            key: None,
            p2p: P2pConfig::default(),
            firewall: FirewallConfig::default(),
            consensus: ConsensusConfig::default(),
            api: ApiConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

/// The P2P network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pConfig {
    /// Listen addresses (TCP and QUIC multiaddrs). The first TCP port is the one the filter
    /// protects.
    pub listen: Vec<String>,
    /// Bootstrap peers (multiaddrs), re-dialled while not connected.
    pub peers: Vec<String>,
    /// Allowlisted validator addresses or prefixes: never banned, let through by the filter.
    pub allow: Vec<ipnet::IpNet>,
    /// Kademlia discovery.
    pub kademlia: bool,
    /// mDNS discovery on the local network.
    pub mdns: bool,
    /// First ban of a peer, seconds (repeat offenders get 4x each time, up to 24 h).
    pub ban_secs: u64,
}

impl Default for P2pConfig {
    fn default() -> P2pConfig {
        P2pConfig {
            listen: vec![
                "/ip4/0.0.0.0/tcp/9000".into(),
                "/ip4/0.0.0.0/udp/9000/quic-v1".into(),
            ],
            peers: Vec::new(),
            allow: Vec::new(),
            kademlia: true,
            mdns: false,
            ban_secs: 600,
        }
    }
}

/// Which XDP mode to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Native (driver) mode, else generic.
    Auto,
    /// Native only.
    Native,
    /// Generic (skb) only.
    Generic,
}

/// What happens to the attached filter when the node stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OnExit {
    /// Leave the pinned filter attached: bans stay in force while the node is down.
    Keep,
    /// Detach the filter and remove its pinned maps.
    Detach,
}

/// The XDP filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallConfig {
    /// Use the filter at all (`--no-xdp` turns it off, for comparisons).
    pub enabled: bool,
    /// Interface to attach to; none: bans are enforced by the user-space fallback only.
    pub iface: Option<String>,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Filter instance: the pin directory under /sys/fs/bpf.
    pub instance: String,
    /// Keep the filter attached when the node stops, or detach it.
    pub on_exit: OnExit,
    /// Drop events sampled into the WebSocket stream, at most per second.
    pub drop_events_per_sec: u32,
    /// Attach the kernel telemetry tracepoints (stack drops, handshakes, receive latency).
    pub telemetry: bool,
}

impl Default for FirewallConfig {
    fn default() -> FirewallConfig {
        FirewallConfig {
            enabled: true,
            iface: None,
            xdp_mode: XdpMode::Auto,
            instance: "node".into(),
            on_exit: OnExit::Keep,
            drop_events_per_sec: 10,
            telemetry: true,
        }
    }
}

/// Consensus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusConfig {
    /// Propose timeout of round 0, milliseconds; the other timeouts scale with it.
    pub propose_timeout_ms: u64,
}

impl Default for ConsensusConfig {
    fn default() -> ConsensusConfig {
        ConsensusConfig {
            propose_timeout_ms: 3000,
        }
    }
}

/// The public HTTP API: status, blocks, transactions, accounts, events, metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve it at all.
    pub enabled: bool,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Requests per second each client address may make (sustained).
    pub rate_per_sec: u32,
    /// Requests a client may make in a burst.
    pub burst: u32,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Open WebSocket event streams, at most.
    pub max_streams: usize,
    /// Open connections, at most (each of the public and the admin server); more are closed at
    /// once.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 client: its /64), at most; more are
    /// closed at once.
    pub max_connections_per_ip: usize,
    /// Time a client has to send a request's headers, milliseconds, from the moment the
    /// connection opens or its previous answer was sent; then the connection is closed. It also
    /// bounds how long an idle keep-alive connection stays open.
    pub header_timeout_ms: u64,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rate_per_sec: 50,
            burst: 100,
            max_body_bytes: 256 * 1024,
            max_streams: 64,
            max_connections: 1024,
            max_connections_per_ip: 64,
            header_timeout_ms: 10_000,
        }
    }
}

/// The admin HTTP API: firewall and peer administration, behind a bearer token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve it at all (it is also off while the token file is missing).
    pub enabled: bool,
    /// Address to listen on: loopback unless an operator configures otherwise.
    pub listen: SocketAddr,
    /// File holding the bearer token (mode 0600); default `<data_dir>/admin.token`.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            token_file: None,
        }
    }
}

impl Config {
    /// Reads a configuration file; fields it leaves out keep their defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                len,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Config::parse(&text).map_err(|message| ConfigError::Syntax {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The configuration as TOML; fails on a path that is not UTF-8.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Field {
            field: "data_dir",
            message: format!("cannot be written as TOML: {e}"),
        })
    }

    /// Checks the values that have a range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |field, message: &str| ConfigError::Field {
            field,
            message: message.to_string(),
        };
        if self.p2p.listen.is_empty() {
            return Err(field("p2p.listen", "needs at least one address"));
        }
        if self.p2p.ban_secs == 0 {
            return Err(field("p2p.ban_secs", "must be at least 1"));
        }
        if !(10..=MAX_PROPOSE_TIMEOUT_MS).contains(&self.consensus.propose_timeout_ms) {
            return Err(field(
                "consensus.propose_timeout_ms",
                "must be 10 to 60000 (milliseconds)",
            ));
        }
        if self.api.rate_per_sec == 0 || self.api.burst == 0 {
            return Err(field(
                "api.rate_per_sec",
                "rate and burst must be at least 1",
            ));
        }
        if self.api.rate_per_sec > MAX_API_RATE || self.api.burst > MAX_API_RATE {
            return Err(field(
                "api.rate_per_sec",
                "rate and burst must be at most 100000",
            ));
        }
        if !(1024..=MAX_BODY_BYTES).contains(&self.api.max_body_bytes) {
            return Err(field(
                "api.max_body_bytes",
                "must be 1024 to 16777216 (bytes)",
            ));
        }
        if !(1..=MAX_STREAMS).contains(&self.api.max_streams) {
            return Err(field("api.max_streams", "must be 1 to 4096"));
        }
        if !(1..=MAX_API_CONNECTIONS).contains(&self.api.max_connections) {
            return Err(field("api.max_connections", "must be 1 to 65536"));
        }
        if !(1..=self.api.max_connections).contains(&self.api.max_connections_per_ip) {
            return Err(field(
                "api.max_connections_per_ip",
                "must be 1 to api.max_connections",
            ));
        }
        if !(MIN_HEADER_TIMEOUT_MS..=MAX_HEADER_TIMEOUT_MS).contains(&self.api.header_timeout_ms) {
            return Err(field(
                "api.header_timeout_ms",
                "must be 100 to 600000 (milliseconds)",
            ));
        }
        if self.firewall.instance.is_empty() {
            return Err(field("firewall.instance", "must not be empty"));
        }
        Ok(())
    }

    /// The genesis file.
    pub fn genesis_path(&self) -> PathBuf {
        self.genesis
            .clone()
            .unwrap_or_else(|| self.data_dir.join("genesis.toml"))
    }

    /// The identity key file.
    pub fn key_path(&self) -> PathBuf {
        self.key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("identity.key"))
    }

    /// The admin token file.
    pub fn admin_token_path(&self) -> PathBuf {
        self.admin
            .token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.token"))
    }

    /// The RocksDB directory.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_means_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let doc = include_str!("../../../docs/config.md");
        let start = doc
            .find("```toml\n")
            .expect("docs/config.md has a toml block")
            + 8;
        let end = start + doc[start..].find("```").expect("the toml block ends");
        let parsed = Config::parse(&doc[start..end]).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let config = Config::default();
        assert_eq!(Config::parse(&config.to_toml().unwrap()).unwrap(), config);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused_with_their_place() {
        let err = Config::parse("[p2p]\nbans_secs = 5\n").unwrap_err();
        assert!(err.contains("bans_secs"), "{err}");
        let err = Config::parse("[api]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(err.contains("listen"), "{err}");
        let mut config = Config::default();
        config.p2p.ban_secs = 0;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Field {
                field: "p2p.ban_secs",
                ..
            })
        ));
    }

    #[test]
    fn files_default_into_the_data_dir() {
        let config = Config {
            data_dir: PathBuf::from("/srv/node"),
            ..Config::default()
        };
        assert_eq!(config.key_path(), PathBuf::from("/srv/node/identity.key"));
        assert_eq!(
            config.genesis_path(),
            PathBuf::from("/srv/node/genesis.toml")
        );
        assert_eq!(config.db_path(), PathBuf::from("/srv/node/db"));
        assert_eq!(
            config.admin_token_path(),
            PathBuf::from("/srv/node/admin.token")
        );
    }
}
