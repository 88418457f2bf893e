//! Gossip topics and what a relay checks before the application sees a message.
//!
//! Three topics per chain: transactions, consensus messages (proposals, block parts, votes and
//! certificates) and final blocks with their commit certificates. Messages are anonymous
//! (every payload carries its own signatures) and identified by a hash of topic and content,
//! so the same bytes from two relays are one message while two conflicting votes are two.
//! Consensus messages carry the sender's publish sequence number in front: a validator re-sends
//! the very same votes when a round stalls, and gossipsub would drop the copy as a duplicate
//! (its memory of seen ids is only pruned when new ids arrive, so in a stalled network it never
//! forgets). Each re-send is thus a new gossip message; the engine ignores the repeated vote.
//! Before a message reaches the application it is checked here for size, encoding and
//! signatures; the application then rules on what needs chain state, and the verdict goes back
//! to gossipsub, which forwards accepted messages only and scores the peers that sent the rest.

use consensus::ConsensusMessage;
use libp2p::gossipsub::{self, IdentTopic, MessageId, TopicHash};
use sha2::{Digest, Sha256};
use types::{ChainId, Decode, DecodeError, SignedTransaction};

use crate::sync::SyncedBlock;

/// Largest transaction message, in bytes.
pub const MAX_TX_MESSAGE_BYTES: usize = SignedTransaction::MAX_BYTES;
/// Bytes of the sequence number in front of every consensus message.
pub const CONSENSUS_SEQ_BYTES: usize = 8;
/// Largest consensus message, in bytes.
pub const MAX_CONSENSUS_MESSAGE_BYTES: usize = CONSENSUS_SEQ_BYTES + ConsensusMessage::MAX_BYTES;
/// Largest final-block message, in bytes.
pub const MAX_BLOCK_MESSAGE_BYTES: usize = SyncedBlock::MAX_BYTES;
/// Largest gossipsub frame: the largest message and the protocol's own overhead.
pub const MAX_TRANSMIT_BYTES: usize = MAX_BLOCK_MESSAGE_BYTES + 64 * 1024;

/// The kind of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicKind {
    /// Signed transactions.
    Transactions,
    /// Consensus messages.
    Consensus,
    /// Final blocks with their commit certificates.
    Blocks,
}

impl TopicKind {
    /// Every topic kind.
    pub const ALL: [TopicKind; 3] = [
        TopicKind::Transactions,
        TopicKind::Consensus,
        TopicKind::Blocks,
    ];

    /// A stable name, for topic strings and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            TopicKind::Transactions => "tx",
            TopicKind::Consensus => "consensus",
            TopicKind::Blocks => "block",
        }
    }

    /// Largest message on the topic, in bytes.
    pub const fn max_bytes(self) -> usize {
        match self {
            TopicKind::Transactions => MAX_TX_MESSAGE_BYTES,
            TopicKind::Consensus => MAX_CONSENSUS_MESSAGE_BYTES,
            TopicKind::Blocks => MAX_BLOCK_MESSAGE_BYTES,
        }
    }
}

/// The topics of one chain.
#[derive(Debug, Clone)]
pub struct Topics {
    topics: [IdentTopic; 3],
}

impl Topics {
    /// Topics named after the chain id: `/xdp-node/<chain>/<kind>/1`.
    pub fn new(chain: &ChainId) -> Topics {
        Topics {
            topics: TopicKind::ALL
                .map(|kind| IdentTopic::new(format!("/xdp-node/{chain}/{}/1", kind.name()))),
        }
    }

    /// The topic of a kind.
    pub fn topic(&self, kind: TopicKind) -> &IdentTopic {
        &self.topics[kind as usize]
    }

    /// The kind of a topic hash, if it is one of ours.
    pub fn kind(&self, hash: &TopicHash) -> Option<TopicKind> {
        TopicKind::ALL
            .into_iter()
            .find(|kind| self.topics[*kind as usize].hash() == *hash)
    }
}

/// The gossipsub configuration: anonymous messages, content ids, one frame limit, and manual
/// validation so that nothing is forwarded before the application accepted it. Per-topic limits
/// are [`check`]'s: gossipsub's own per-topic limit counts the topic string and framing on
/// receipt but not on publish, so it would drop full-size block parts, and it drops oversized
/// messages silently, where [`check`] reports their sender.
pub fn config(heartbeat_ms: u64) -> Result<gossipsub::Config, String> {
    let mut builder = gossipsub::ConfigBuilder::default();
    builder
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .heartbeat_interval(std::time::Duration::from_millis(heartbeat_ms))
        .max_transmit_size(MAX_TRANSMIT_BYTES)
        .message_id_fn(message_id);
    builder.build().map_err(|e| e.to_string())
}

/// Gossipsub's peer scoring: invalid messages (the ones the application rejects) count against
/// the sender on every topic, squared, so a peer that keeps sending them is graylisted after
/// about nine; the peer manager bans it sooner (six invalid signatures), so its reports, not
/// gossipsub's silence, decide. Delivery-rate penalties are off, since a quiet chain sends little.
pub fn score_params(topics: &Topics) -> gossipsub::PeerScoreParams {
    let mut params = gossipsub::PeerScoreParams::default();
    for kind in TopicKind::ALL {
        params.topics.insert(
            topics.topic(kind).hash(),
            gossipsub::TopicScoreParams {
                topic_weight: 1.0,
                mesh_message_deliveries_weight: 0.0,
                mesh_failure_penalty_weight: 0.0,
                invalid_message_deliveries_weight: -1.0,
                invalid_message_deliveries_decay: 0.5,
                ..Default::default()
            },
        );
    }
    params
}

/// Score thresholds below which gossipsub stops gossiping to, publishing to, and then
/// listening to a peer.
pub fn thresholds() -> gossipsub::PeerScoreThresholds {
    gossipsub::PeerScoreThresholds::default()
}

/// SHA-256 of topic and content.
fn message_id(message: &gossipsub::Message) -> MessageId {
    let mut h = Sha256::new();
    h.update((message.topic.as_str().len() as u32).to_be_bytes());
    h.update(message.topic.as_str().as_bytes());
    h.update(&message.data);
    MessageId::new(&h.finalize())
}

/// A gossip message that passed the relay's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gossip {
    /// A transaction with a valid signature.
    Transaction(SignedTransaction),
    /// A consensus message whose signatures all verify.
    Consensus(ConsensusMessage),
    /// A block with a certificate that names it (the certificate is checked by the application,
    /// which knows the validator set).
    Block(Box<SyncedBlock>),
}

impl Gossip {
    /// The topic it came on.
    pub fn kind(&self) -> TopicKind {
        match self {
            Gossip::Transaction(_) => TopicKind::Transactions,
            Gossip::Consensus(_) => TopicKind::Consensus,
            Gossip::Block(_) => TopicKind::Blocks,
        }
    }
}

/// Why a relay refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// Longer than its topic allows.
    #[error("{kind:?} message of {len} bytes is over the limit of {max}")]
    Oversized {
        /// The topic.
        kind: TopicKind,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a valid encoding.
    #[error("malformed message: {0}")]
    Malformed(#[from] DecodeError),
    /// A signature does not verify.
    #[error("invalid signature")]
    InvalidSignature,
    /// A block message whose certificate names another block.
    #[error("the commit certificate names another block")]
    CommitMismatch,
}

impl GossipError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "oversized",
            Self::Malformed(_) => "malformed",
            Self::InvalidSignature => "invalid_signature",
            Self::CommitMismatch => "commit_mismatch",
        }
    }
}

/// Checks what can be checked without chain state: size, encoding, signatures.
pub fn check(kind: TopicKind, data: &[u8], chain: &ChainId) -> Result<Gossip, GossipError> {
    if data.len() > kind.max_bytes() {
        return Err(GossipError::Oversized {
            kind,
            len: data.len(),
            max: kind.max_bytes(),
        });
    }
    match kind {
        TopicKind::Transactions => {
            let tx = SignedTransaction::from_bytes(data)?;
            tx.verify().map_err(|_| GossipError::InvalidSignature)?;
            Ok(Gossip::Transaction(tx))
        }
        TopicKind::Consensus => {
            let body = data
                .get(CONSENSUS_SEQ_BYTES..)
                .ok_or(DecodeError::UnexpectedEnd {
                    needed: CONSENSUS_SEQ_BYTES,
                    remaining: data.len(),
                })?;
            let message = ConsensusMessage::from_bytes(body)?;
            message
                .verify(chain)
                .map_err(|_| GossipError::InvalidSignature)?;
            Ok(Gossip::Consensus(message))
        }
        TopicKind::Blocks => {
            let synced = SyncedBlock::from_bytes(data)?;
            if synced.commit.block != synced.block.hash()
                || synced.commit.height != synced.block.header.height
            {
                return Err(GossipError::CommitMismatch);
            }
            Ok(Gossip::Block(Box::new(synced)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::Encode;

    fn chain() -> ChainId {
        ChainId::new("test").expect("valid id")
    }

    #[test]
    fn topics_are_per_chain_and_map_back_to_their_kind() {
        let a = Topics::new(&chain());
        let b = Topics::new(&ChainId::new("other").expect("valid id"));
        for kind in TopicKind::ALL {
            assert_eq!(a.kind(&a.topic(kind).hash()), Some(kind));
            assert_eq!(a.kind(&b.topic(kind).hash()), None);
        }
        config(700).expect("valid gossipsub config");
    }

    #[test]
    fn relays_refuse_oversized_malformed_and_badly_signed_messages() {
        let test = chain::testkit::TestChain::new(1, 2, 1);
        let tx = test.transfer(0, 1, 0, 5);
        let bytes = tx.to_bytes();
        let chain = test.genesis.chain_id.clone();
        assert_eq!(
            check(TopicKind::Transactions, &bytes, &chain),
            Ok(Gossip::Transaction(tx.clone()))
        );
        let mut forged = bytes.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            check(TopicKind::Transactions, &forged, &chain),
            Err(GossipError::InvalidSignature | GossipError::Malformed(_))
        ));
        assert!(matches!(
            check(TopicKind::Transactions, &bytes[..10], &chain),
            Err(GossipError::Malformed(_))
        ));
        let big = vec![0u8; MAX_TX_MESSAGE_BYTES + 1];
        assert!(matches!(
            check(TopicKind::Transactions, &big, &chain),
            Err(GossipError::Oversized { .. })
        ));
        assert!(matches!(
            check(TopicKind::Consensus, &bytes, &chain),
            Err(GossipError::Malformed(_))
        ));
    }
}
