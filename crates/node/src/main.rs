//! Run and administer a node. For now: the `firewall` subcommands.

mod firewall_cmd;

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
    /// Administer the XDP filter through its pinned maps.
    Firewall(firewall_cmd::FirewallArgs),
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Firewall(args) => firewall_cmd::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
