//! `attacker gossip`: a libp2p peer that connects to one validator and publishes bad gossip —
//! transactions or consensus votes whose signature has one flipped bit, or transaction-topic
//! messages over the topic's size limit — while behaving like an honest node in everything else.
//!
//! The run lasts `--duration` whatever happens: after the last message it stays connected, and
//! once the validator drops it, it re-dials every [`peer::REDIAL_EVERY`], so a ban that reached
//! the kernel shows as dropped SYNs.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, ValueEnum};
use consensus::ConsensusMessage;
use p2p::gossip::{MAX_TX_MESSAGE_BYTES, TopicKind};
use serde_json::json;
use types::{
    ChainId, Domain, Encode, Hash, Payload, SecretKey, Signature, SignedVote, Tag, Transaction,
    Vote, VoteKind,
};

use crate::peer::{self, Peer, PeerArgs};

/// Most messages one run may publish.
const COUNT_MAX: u64 = 100_000;
/// Highest publish rate, messages per second.
const RATE_MAX: u32 = 1000;
/// How often the loop checks the connection (and re-dials) while it has nothing to publish.
const TICK: Duration = Duration::from_millis(100);
/// Fee of the forged transfers (any value: the signature fails first).
const FORGED_FEE: u64 = 1;
/// Amount of the forged transfers.
const FORGED_AMOUNT: u64 = 1;
/// Height of the forged votes: the first block.
const FORGED_VOTE_HEIGHT: u64 = 1;
/// Bytes of an oversized message: one over the transaction topic's limit (still far under
/// gossipsub's frame limit, so gossipsub carries it and the node's own check refuses it).
pub const OVERSIZED_BYTES: usize = MAX_TX_MESSAGE_BYTES + 1;

/// Options of `attacker gossip`.
#[derive(Args)]
pub struct GossipArgs {
    #[command(flatten)]
    peer: PeerArgs,
    /// What to publish.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Messages to publish.
    #[arg(long, default_value_t = 20)]
    count: u64,
    /// Messages per second.
    #[arg(long, default_value_t = 10)]
    rate: u32,
}

/// The bad gossip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Signed transfers with one bit of the signature flipped.
    InvalidTx,
    /// Consensus prevotes with one bit of the signature flipped.
    InvalidVote,
    /// Transaction-topic messages one byte over the topic's limit.
    Oversized,
}

impl Kind {
    /// The name on the command line and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Kind::InvalidTx => "invalid-tx",
            Kind::InvalidVote => "invalid-vote",
            Kind::Oversized => "oversized",
        }
    }

    /// The topic the messages go to.
    pub fn topic(self) -> TopicKind {
        match self {
            Kind::InvalidTx | Kind::Oversized => TopicKind::Transactions,
            Kind::InvalidVote => TopicKind::Consensus,
        }
    }
}

/// `signature` with its first bit flipped: the bit is in the point half (R), so the signature
/// still decodes (its scalar half stays canonical) and fails only when verified.
fn flipped(signature: &Signature) -> Signature {
    let mut bytes = *signature.as_bytes();
    bytes[0] ^= 1;
    // The scalar half is unchanged, so it is still canonical and this cannot fail; fall back to
    // the original only to avoid a panic path.
    Signature::from_bytes(bytes).unwrap_or(*signature)
}

/// Message `n` of `kind`, signed (and spoiled) with `key`, as `Network::publish` takes it (a
/// consensus message without its sequence-number prefix).
pub fn message(kind: Kind, key: &SecretKey, chain: &ChainId, n: u64) -> Vec<u8> {
    match kind {
        Kind::InvalidTx => {
            let mut tx = Transaction {
                chain_id: chain.clone(),
                sender: key.public_key(),
                nonce: n,
                fee: FORGED_FEE,
                payload: Payload::Transfer {
                    // To itself: no other account is needed, and the signature fails first.
                    to: key.public_key(),
                    amount: FORGED_AMOUNT,
                },
            }
            .sign(key);
            tx.signature = flipped(&tx.signature);
            tx.to_bytes()
        }
        Kind::InvalidVote => {
            let vote = Vote {
                height: FORGED_VOTE_HEIGHT,
                // A different round per message, so no two are the same vote.
                round: u32::try_from(n).unwrap_or(u32::MAX),
                kind: VoteKind::Prevote,
                block: Some(Hash::tagged(Tag::Header, &[&n.to_be_bytes()])),
                validator: key.public_key(),
            };
            let signature = key.sign(Domain::Vote, chain, &vote);
            ConsensusMessage::Vote(SignedVote {
                vote,
                signature: flipped(&signature),
            })
            .to_bytes()
        }
        Kind::Oversized => {
            // Unique per run (the fresh key) and per message (n): gossipsub drops a message it
            // has seen, silently, so a repeat would never reach the node's check.
            let mut bytes = vec![0u8; OVERSIZED_BYTES];
            bytes[..32].copy_from_slice(key.public_key().as_bytes());
            bytes[32..40].copy_from_slice(&n.to_be_bytes());
            bytes
        }
    }
}

/// Runs `attacker gossip`.
pub fn run(args: GossipArgs) -> Result<()> {
    let genesis = args.peer.load()?;
    peer::in_range("--count", args.count, COUNT_MAX)?;
    peer::in_range("--rate", u64::from(args.rate), u64::from(RATE_MAX))?;
    let runtime = args.peer.run.enter()?;
    runtime.block_on(attack(&args, &genesis))
}

async fn attack(args: &GossipArgs, genesis: &types::Genesis) -> Result<()> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.peer.run.duration;
    let mut peer = Peer::start(genesis, args.peer.peer.clone())?;
    let every = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let mut publish = tokio::time::interval(every);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(TICK);
    let topic = args.kind.topic();
    let (mut published, mut refused) = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            event = peer.network.next() => {
                peer.handle(event);
            }
            _ = publish.tick(), if published < args.count => {
                // Published only to a peer that has joined the topic, so none is lost.
                if peer.network.topic_peers(topic) > 0 {
                    let bytes = message(args.kind, &peer.key, &genesis.chain_id, published);
                    if peer.network.publish(topic, bytes) {
                        published += 1;
                        if published == 1 || published == args.count || published.is_multiple_of(peer::PROGRESS_EVERY) {
                            eprintln!(
                                "{:.3}s: published {published} {} messages",
                                peer.secs(),
                                args.kind.name()
                            );
                        }
                    } else {
                        refused += 1;
                    }
                }
            }
            _ = tick.tick() => peer.redial_if_lost(),
        }
    }
    let summary = json!({
        "attack": "gossip",
        "kind": args.kind.name(),
        "target": args.peer.peer.to_string(),
        "published": published,
        "publish_failed": refused,
        "connections": peer.connections,
        "redials": peer.redials,
        "secs": peer::secs_since(started),
    });
    println!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p::gossip::{CONSENSUS_SEQ_BYTES, GossipError, check};

    fn chain() -> ChainId {
        ChainId::new("attack-test").expect("valid chain id")
    }

    #[test]
    fn forged_transactions_and_votes_decode_and_fail_only_their_signature() {
        let key = SecretKey::generate();
        for n in 0..50 {
            let tx = message(Kind::InvalidTx, &key, &chain(), n);
            assert_eq!(
                check(TopicKind::Transactions, &tx, &chain()),
                Err(GossipError::InvalidSignature),
                "transaction {n}"
            );
            // As the network frames it: a sequence number in front.
            let mut vote = 7u64.to_be_bytes().to_vec();
            assert_eq!(vote.len(), CONSENSUS_SEQ_BYTES);
            vote.extend(message(Kind::InvalidVote, &key, &chain(), n));
            assert_eq!(
                check(TopicKind::Consensus, &vote, &chain()),
                Err(GossipError::InvalidSignature),
                "vote {n}"
            );
        }
    }

    #[test]
    fn unspoiled_messages_would_pass_the_check() {
        // The spoiling is what fails: the same transaction, properly signed, is accepted.
        let key = SecretKey::generate();
        let good = Transaction {
            chain_id: chain(),
            sender: key.public_key(),
            nonce: 0,
            fee: FORGED_FEE,
            payload: Payload::Transfer {
                to: key.public_key(),
                amount: FORGED_AMOUNT,
            },
        }
        .sign(&key);
        let mut bad = good.clone();
        bad.signature = flipped(&good.signature);
        assert_eq!(bad.to_bytes(), message(Kind::InvalidTx, &key, &chain(), 0));
        assert!(check(TopicKind::Transactions, &good.to_bytes(), &chain()).is_ok());
    }

    #[test]
    fn oversized_messages_are_refused_as_oversized_and_are_all_different() {
        let key = SecretKey::generate();
        let a = message(Kind::Oversized, &key, &chain(), 0);
        let b = message(Kind::Oversized, &key, &chain(), 1);
        assert_ne!(a, b);
        assert_eq!(a.len(), MAX_TX_MESSAGE_BYTES + 1);
        assert!(a.len() < p2p::gossip::MAX_TRANSMIT_BYTES);
        assert_eq!(
            check(TopicKind::Transactions, &a, &chain()),
            Err(GossipError::Oversized {
                kind: TopicKind::Transactions,
                len: MAX_TX_MESSAGE_BYTES + 1,
                max: MAX_TX_MESSAGE_BYTES,
            })
        );
    }

    #[test]
    fn kinds_go_to_their_topics() {
        assert_eq!(Kind::InvalidTx.topic(), TopicKind::Transactions);
        assert_eq!(Kind::Oversized.topic(), TopicKind::Transactions);
        assert_eq!(Kind::InvalidVote.topic(), TopicKind::Consensus);
    }
}
