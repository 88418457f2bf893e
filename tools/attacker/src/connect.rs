//! `attacker connect-flood`: many real libp2p connections (TCP, Noise, Yamux) from the one address
//! of the attacker's namespace, each with a fresh identity so that the node's per-peer limit does
//! not hide its per-address one. Dials are paced at `--rate`; every established connection is
//! held open until the end of the run.
//!
//! Each dial ends in one of three ways: established; refused (the node closed or reset it before
//! the handshake finished: its connection limits); or unanswered (nothing within
//! [`DIAL_TIMEOUT`]: the kernel dropped the SYN, which is what a ban in the XDP blocklist does).
//! Established connections the node closes later (when it bans the address) are counted as
//! closed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use futures::StreamExt;
use libp2p::swarm::{SwarmEvent, dummy};
use libp2p::{Multiaddr, noise, tcp, yamux};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant as TokioInstant;

use crate::peer::{self, RunArgs};

/// Most connections one run may attempt (each holds a socket until the end of the run, so this
/// stays under the usual limit of 1024 open files).
const CONNECTIONS_MAX: u32 = 900;
/// Highest dial rate, connections per second.
const RATE_MAX: u32 = 1000;
/// A dial with no answer (connection established or refused) within this is unanswered.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Distinct refusal messages printed to stderr, at most.
const REFUSAL_MESSAGES_MAX: usize = 8;

/// Options of `attacker connect-flood`.
#[derive(Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Where to connect: `/ip4/IP/tcp/PORT` (a `/p2p/PEERID` suffix is allowed and checked).
    #[arg(long)]
    target: Multiaddr,
    /// Connections to attempt, each with a fresh identity.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Connections attempted per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
}

/// How one connection attempt went.
#[derive(Debug)]
enum Outcome {
    /// The handshake finished: the connection is open.
    Established,
    /// The node closed or reset it before the handshake finished.
    Refused(String),
    /// No answer within [`DIAL_TIMEOUT`].
    Unanswered,
    /// An established connection closed before the end of the run.
    Closed,
    /// The dial could not even start here (a local error).
    Failed(String),
}

/// The tally of a run.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    attempted: u64,
    established: u64,
    refused: u64,
    unanswered: u64,
    closed: u64,
    failed: u64,
}

impl Tally {
    /// Attempts whose first outcome is known.
    fn settled(&self) -> u64 {
        self.established + self.refused + self.unanswered + self.failed
    }

    /// Connections open now.
    fn open(&self) -> u64 {
        self.established.saturating_sub(self.closed)
    }

    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Established => self.established += 1,
            Outcome::Refused(_) => self.refused += 1,
            Outcome::Unanswered => self.unanswered += 1,
            Outcome::Closed => self.closed += 1,
            Outcome::Failed(_) => self.failed += 1,
        }
    }
}

fn check(args: &ConnectArgs) -> Result<()> {
    args.run.check()?;
    peer::in_range(
        "--connections",
        u64::from(args.connections),
        u64::from(CONNECTIONS_MAX),
    )?;
    peer::in_range("--rate", u64::from(args.rate), u64::from(RATE_MAX))?;
    let tcp = args
        .target
        .iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_)));
    if p2p::gate::ip_of(&args.target).is_none() || !tcp {
        bail!(
            "--target {}: expected /ip4/IP/tcp/PORT[/p2p/PEERID]",
            args.target
        );
    }
    Ok(())
}

/// Runs `attacker connect-flood`.
pub fn run(args: ConnectArgs) -> Result<()> {
    check(&args)?;
    let runtime = args.run.enter()?;
    runtime.block_on(flood(&args))
}

async fn flood(args: &ConnectArgs) -> Result<()> {
    let started = Instant::now();
    let until = TokioInstant::now() + args.run.duration;
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (sender, mut outcomes) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    let mut tally = Tally::default();
    let mut messages = BTreeSet::new();
    eprintln!(
        "connect-flood: {} connections to {} at {}/s for at most {}",
        args.connections,
        args.target,
        args.rate,
        humantime::format_duration(args.run.duration)
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            _ = pace.tick(), if tally.attempted < u64::from(args.connections) => {
                tally.attempted += 1;
                tasks.spawn(connect(args.target.clone(), until, sender.clone()));
            }
            Some(outcome) = outcomes.recv() => {
                note(&mut tally, &mut messages, &outcome, started);
            }
        }
        // Every attempt has ended and none is left open: nothing more to hold.
        if tally.attempted == u64::from(args.connections)
            && tally.settled() == tally.attempted
            && tally.open() == 0
        {
            break;
        }
    }
    tasks.shutdown().await;
    while let Ok(outcome) = outcomes.try_recv() {
        note(&mut tally, &mut messages, &outcome, started);
    }
    let summary = json!({
        "attack": "connect-flood",
        "target": args.target.to_string(),
        "attempted": tally.attempted,
        "established": tally.established,
        "refused": tally.refused,
        "unanswered": tally.unanswered,
        "closed": tally.closed,
        "failed": tally.failed,
        "secs": peer::secs_since(started),
    });
    println!("{summary}");
    Ok(())
}

/// Counts an outcome and prints what is worth a line.
fn note(tally: &mut Tally, messages: &mut BTreeSet<String>, outcome: &Outcome, started: Instant) {
    tally.count(outcome);
    let at = peer::secs_since(started);
    match outcome {
        Outcome::Refused(why) | Outcome::Failed(why)
            if messages.len() < REFUSAL_MESSAGES_MAX && messages.insert(why.clone()) =>
        {
            eprintln!("{at:.3}s: {outcome:?}");
        }
        Outcome::Unanswered if tally.unanswered == 1 => {
            eprintln!("{at:.3}s: first dial unanswered within {DIAL_TIMEOUT:?}");
        }
        Outcome::Closed if tally.closed == 1 => {
            eprintln!("{at:.3}s: first established connection closed by the node");
        }
        _ => {}
    }
    let settled = tally.settled();
    if settled > 0
        && settled.is_multiple_of(peer::PROGRESS_EVERY)
        && !matches!(outcome, Outcome::Closed)
    {
        eprintln!(
            "{at:.3}s: {} attempted, {} established, {} refused, {} unanswered, {} closed",
            tally.attempted, tally.established, tally.refused, tally.unanswered, tally.closed
        );
    }
}

/// One connection with a fresh identity: dials, reports how the dial ended, and holds an
/// established connection open until `until`.
async fn connect(target: Multiaddr, until: TokioInstant, outcomes: mpsc::UnboundedSender<Outcome>) {
    // The receiver lives until every task has ended; a send can only fail at shutdown.
    let report = |outcome| {
        let _ = outcomes.send(outcome);
    };
    let hold = until.saturating_duration_since(TokioInstant::now());
    let built = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map(|b| {
            b.with_behaviour(|_| dummy::Behaviour).map(|b| {
                // Idle connections are closed after this: never before the end of the run.
                b.with_swarm_config(|c| c.with_idle_connection_timeout(hold))
                    .build()
            })
        });
    let mut swarm = match built {
        Ok(Ok(swarm)) => swarm,
        Ok(Err(never)) => match never {},
        Err(e) => return report(Outcome::Failed(format!("building the transport: {e}"))),
    };
    if let Err(e) = swarm.dial(target) {
        return report(Outcome::Failed(format!("dial: {e}")));
    }
    let answer_by = (TokioInstant::now() + DIAL_TIMEOUT).min(until);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(answer_by) => return report(Outcome::Unanswered),
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { .. } => {
                    report(Outcome::Established);
                    break;
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    return report(Outcome::Refused(error.to_string()));
                }
                _ => {}
            },
        }
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return,
            event = swarm.select_next_some() => {
                if let SwarmEvent::ConnectionClosed { .. } = event {
                    return report(Outcome::Closed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: &str, connections: u32, rate: u32) -> ConnectArgs {
        ConnectArgs {
            run: RunArgs {
                netns: None,
                duration: Duration::from_secs(2),
            },
            target: target.parse().expect("multiaddr"),
            connections,
            rate,
        }
    }

    #[test]
    fn bounds_and_target_are_checked() {
        let good = "/ip4/127.0.0.1/tcp/9000";
        assert!(check(&args(good, 64, 50)).is_ok());
        assert!(check(&args(good, CONNECTIONS_MAX, RATE_MAX)).is_ok());
        assert!(check(&args(good, 0, 50)).is_err());
        assert!(check(&args(good, CONNECTIONS_MAX + 1, 50)).is_err());
        assert!(check(&args(good, 64, 0)).is_err());
        assert!(check(&args(good, 64, RATE_MAX + 1)).is_err());
        assert!(check(&args("/ip4/127.0.0.1/udp/9000/quic-v1", 64, 50)).is_err());
        assert!(check(&args("/dns4/example.org/tcp/9000", 64, 50)).is_err());
    }

    #[test]
    fn a_run_ends_when_nothing_is_open_and_every_attempt_settled() {
        let mut t = Tally {
            attempted: 3,
            ..Tally::default()
        };
        t.count(&Outcome::Established);
        t.count(&Outcome::Refused("reset".into()));
        t.count(&Outcome::Unanswered);
        assert_eq!((t.settled(), t.open()), (3, 1));
        t.count(&Outcome::Closed);
        assert_eq!((t.settled(), t.open()), (3, 0));
    }

    /// Against a libp2p listener, the connection is established and held; when the listener
    /// goes away, it is counted as closed.
    #[test]
    fn connections_are_established_held_and_their_close_counted() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut listener = libp2p::SwarmBuilder::with_new_identity()
                .with_tokio()
                .with_tcp(
                    tcp::Config::default(),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .expect("tcp transport")
                .with_behaviour(|_| dummy::Behaviour)
                .expect("dummy behaviour")
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
                .build();
            listener
                .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
                .expect("listen");
            let address = loop {
                if let SwarmEvent::NewListenAddr { address, .. } = listener.select_next_some().await
                {
                    break address;
                }
            };
            let (sender, mut outcomes) = mpsc::unbounded_channel();
            let until = TokioInstant::now() + Duration::from_secs(5);
            let dialer = tokio::spawn(connect(address, until, sender));
            let mut seen = Vec::new();
            // Drive the listener until the dialer's connection is up, then drop it.
            while seen.is_empty() {
                tokio::select! {
                    _ = listener.select_next_some() => {}
                    Some(outcome) = outcomes.recv() => seen.push(outcome),
                }
            }
            drop(listener);
            seen.push(outcomes.recv().await.expect("a second outcome"));
            dialer.await.expect("the dialer task");
            assert!(
                matches!(seen[..], [Outcome::Established, Outcome::Closed]),
                "{seen:?}"
            );
        });
    }

    /// Against a local listener that accepts TCP and closes at once (no libp2p), every dial is
    /// refused; against a port with nothing listening, too (a reset).
    #[test]
    fn dials_the_node_refuses_are_counted_as_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    drop(stream);
                }
            });
            let (sender, mut outcomes) = mpsc::unbounded_channel();
            let until = TokioInstant::now() + Duration::from_secs(3);
            let target: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr");
            connect(target, until, sender.clone()).await;
            let outcome = outcomes.recv().await.expect("an outcome");
            assert!(matches!(outcome, Outcome::Refused(_)), "{outcome:?}");
            let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = closed.local_addr().expect("addr").port();
            drop(closed);
            let target: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr");
            connect(target, until, sender).await;
            let outcome = outcomes.recv().await.expect("an outcome");
            assert!(matches!(outcome, Outcome::Refused(_)), "{outcome:?}");
        });
    }
}
