//! Run and administer a node: `node init`, `node genesis`, `node run`, and the `firewall` and
//! `db` subcommands.

mod db_cmd;
mod firewall_cmd;
mod genesis_cmd;
mod init_cmd;
mod run_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "node",
    version,
    about = "A proof-of-stake node that defends itself with XDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a node's data directory (identity, admin token, config), or a local network.
    Init(init_cmd::InitArgs),
    /// Write a genesis file from the public keys of the validators (`node init` prints each).
    Genesis(genesis_cmd::GenesisArgs),
    /// Run a validator: ledger, consensus, the P2P network, and bans enforced in the kernel.
    Run(Box<run_cmd::RunArgs>),
    /// Administer the XDP filter through its pinned maps.
    Firewall(firewall_cmd::FirewallArgs),
    /// Maintain a stopped node's database: restore it from a checkpoint.
    Db(db_cmd::DbArgs),
}

/// Log levels when `RUST_LOG` is unset: the consensus core logs every vote at info.
const DEFAULT_LOG: &str = "info,arc_malachitebft_core_consensus=warn,libp2p_gossipsub=error";

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_LOG)).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Db(args) => db_cmd::run(args),
        Command::Firewall(args) => firewall_cmd::run(args),
        Command::Genesis(args) => genesis_cmd::run(args),
        Command::Init(args) => init_cmd::run(args),
        Command::Run(args) => run_cmd::run(*args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
