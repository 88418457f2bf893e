//! The lab's attacker: bounded attacks aimed only at the lab's own network namespaces. Every run
//! stops at its packet, connection or message bound or at `--duration`, whichever comes first.

mod connect;
mod equivocate;
mod flood;
mod gossip;
mod packet;
mod peer;
mod replay;
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
    /// Open many libp2p connections (TCP, Noise, Yamux) from one address, each with a fresh
    /// identity, and hold them open.
    ConnectFlood(connect::ConnectArgs),
    /// Join the network as a peer and gossip invalid transactions, invalid votes or oversized
    /// messages to one validator.
    Gossip(gossip::GossipArgs),
    /// Fetch committed transactions from a validator by block sync and send them again, by
    /// gossip and through the API.
    Replay(replay::ReplayArgs),
    /// Join the network as a validator that double-signs: two conflicting votes in every slot it
    /// sees voted in, two proposals in every round it proposes in.
    Equivocate(equivocate::EquivocateArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Flood(args) => flood::run(args),
        Command::ConnectFlood(args) => connect::run(args),
        Command::Gossip(args) => gossip::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Equivocate(args) => equivocate::run(args),
    }
}
