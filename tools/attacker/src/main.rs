//! The lab's attacker: bounded attacks aimed only at the lab's own network namespaces. Every run
//! stops at its packet, connection or message bound or at `--duration`, whichever comes first.

mod flood;
mod packet;
mod xdp;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "attacker",
    about = "Bounded attacks on the lab's own namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Flood crafted frames out of an interface: spoofed UDP, TCP SYNs, undersized QUIC Initials.
    Flood(flood::FloodArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Flood(args) => flood::run(args),
    }
}
