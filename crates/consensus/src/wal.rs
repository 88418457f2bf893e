//! The consensus write-ahead log: the inputs of the current height that the state machine must
//! see again after a crash (votes, proposals, proposed values with their validity, timeouts,
//! polka certificates), and the bodies of the blocks those inputs name.
//!
//! Records live in the store's `wal` column under `0x01 | height | sequence`, block bodies under
//! `0x02 | height | block hash`. Every record ends with a tagged SHA-256 of its contents; the store
//! writes (and, for RocksDB, syncs) each append before the engine publishes anything that
//! depends on it. On opening, a record that does not decode or whose checksum fails ends the log:
//! it and everything after it are dropped with a warning, and the node carries on.

use malachite_core_consensus::{Input, ProposedValue};
use malachite_core_types::{Round, Timeout, TimeoutKind, Validity, ValueOrigin};
use storage::{Column, Store, StoreError, WriteBatch, keys::height_key};
use types::codec::Reader;
use types::{Block, Decode, DecodeError, Encode, Hash, PublicKey, SignedProposal, SignedVote, Tag};

use crate::context::{Address, BlockId, Ctx, Height, round_of, wire_round};
use crate::message::{
    PolkaCertificate, proposal_from_core, proposal_to_core, vote_from_core, vote_to_core,
};

const RECORD: u8 = 0x01;
const BLOCK: u8 = 0x02;
const SCAN_CHUNK: usize = 1024;

/// A proposed value as logged: which block, at which round, from whom, and its validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedValue {
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// Round of the polka behind a re-proposal, if any.
    pub valid_round: Option<u32>,
    /// Proposer.
    pub proposer: PublicKey,
    /// Block hash.
    pub block: Hash,
    /// Whether the block passed validation.
    pub valid: bool,
    /// Whether it arrived by block sync rather than consensus gossip.
    pub from_sync: bool,
}

/// One logged consensus input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalEntry {
    /// A vote (ours or a peer's).
    Vote(SignedVote),
    /// A proposal (ours or a peer's).
    Proposal(SignedProposal),
    /// A complete proposed value.
    Value(LoggedValue),
    /// An elapsed propose (0), prevote (1) or precommit (2) timeout of a round.
    Timeout {
        /// Which timeout.
        kind: u8,
        /// Its round.
        round: u32,
    },
    /// A polka certificate.
    Polka(PolkaCertificate),
}

impl Encode for WalEntry {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::Vote(v) => {
                out.push(0);
                v.encode_to(out);
            }
            Self::Proposal(p) => {
                out.push(1);
                p.encode_to(out);
            }
            Self::Value(v) => {
                out.push(2);
                v.height.encode_to(out);
                v.round.encode_to(out);
                types::codec::put_option(out, v.valid_round.as_ref());
                v.proposer.encode_to(out);
                v.block.encode_to(out);
                out.push(u8::from(v.valid));
                out.push(u8::from(v.from_sync));
            }
            Self::Timeout { kind, round } => {
                out.push(3);
                out.push(*kind);
                round.encode_to(out);
            }
            Self::Polka(c) => {
                out.push(4);
                c.encode_to(out);
            }
        }
    }
}

fn flag(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        tag => Err(DecodeError::InvalidTag { what, tag }),
    }
}

impl Decode for WalEntry {
    const MAX_BYTES: usize = 1 + PolkaCertificate::MAX_BYTES;
    const NAME: &'static str = "wal entry";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            0 => Self::Vote(SignedVote::decode_from(r)?),
            1 => Self::Proposal(SignedProposal::decode_from(r)?),
            2 => Self::Value(LoggedValue {
                height: r.u64()?,
                round: r.u32()?,
                valid_round: r.option("valid round")?,
                proposer: PublicKey::decode_from(r)?,
                block: Hash::decode_from(r)?,
                valid: flag(r, "validity")?,
                from_sync: flag(r, "origin")?,
            }),
            3 => {
                let kind = r.u8()?;
                if kind > 2 {
                    return Err(DecodeError::InvalidTag {
                        what: "timeout kind",
                        tag: kind,
                    });
                }
                Self::Timeout {
                    kind,
                    round: r.u32()?,
                }
            }
            4 => Self::Polka(PolkaCertificate::decode_from(r)?),
            tag => {
                return Err(DecodeError::InvalidTag {
                    what: "wal entry",
                    tag,
                });
            }
        })
    }
}

impl WalEntry {
    /// The entry for a consensus input, or `None` for inputs that are not logged.
    pub(crate) fn from_input(input: &Input<Ctx>) -> Option<WalEntry> {
        match input {
            Input::Vote(v) => vote_from_core(v).map(WalEntry::Vote),
            Input::Proposal(p) => proposal_from_core(p).map(WalEntry::Proposal),
            Input::ProposedValue(v, origin) => Some(WalEntry::Value(LoggedValue {
                height: v.height.0,
                round: wire_round(v.round)?,
                valid_round: wire_round(v.valid_round),
                proposer: v.proposer.0,
                block: v.value.0,
                valid: v.validity.is_valid(),
                from_sync: origin.is_sync(),
            })),
            Input::TimeoutElapsed(t) => Some(WalEntry::Timeout {
                kind: match t.kind {
                    TimeoutKind::Propose => 0,
                    TimeoutKind::Prevote => 1,
                    TimeoutKind::Precommit => 2,
                    _ => return None,
                },
                round: wire_round(t.round)?,
            }),
            Input::PolkaCertificate(c) => PolkaCertificate::from_core(c).map(WalEntry::Polka),
            _ => None,
        }
    }

    /// The consensus input to replay.
    pub(crate) fn to_input(&self) -> Input<Ctx> {
        match self {
            Self::Vote(v) => Input::Vote(vote_to_core(v)),
            Self::Proposal(p) => Input::Proposal(proposal_to_core(p)),
            Self::Value(v) => Input::ProposedValue(
                ProposedValue {
                    height: Height(v.height),
                    round: round_of(v.round),
                    valid_round: v.valid_round.map_or(Round::Nil, round_of),
                    proposer: Address(v.proposer),
                    value: BlockId(v.block),
                    validity: Validity::from_bool(v.valid),
                },
                if v.from_sync {
                    ValueOrigin::Sync
                } else {
                    ValueOrigin::Consensus
                },
            ),
            Self::Timeout { kind, round } => Input::TimeoutElapsed(Timeout::new(
                round_of(*round),
                match kind {
                    0 => TimeoutKind::Propose,
                    1 => TimeoutKind::Prevote,
                    _ => TimeoutKind::Precommit,
                },
            )),
            Self::Polka(c) => Input::PolkaCertificate(c.to_core()),
        }
    }
}

fn record_key(height: u64, seq: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.push(RECORD);
    key.extend_from_slice(&height_key(height));
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn block_key(height: u64, hash: &Hash) -> Vec<u8> {
    let mut key = Vec::with_capacity(41);
    key.push(BLOCK);
    key.extend_from_slice(&height_key(height));
    key.extend_from_slice(&hash.0);
    key
}

fn seal(entry: &WalEntry) -> Vec<u8> {
    let mut bytes = entry.to_bytes();
    let sum = Hash::tagged(Tag::WalRecord, &[&bytes]);
    bytes.extend_from_slice(&sum.0);
    bytes
}

fn unseal(bytes: &[u8]) -> Result<WalEntry, &'static str> {
    if bytes.len() < 32 {
        return Err("shorter than its checksum");
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Hash::tagged(Tag::WalRecord, &[body]).0 != sum {
        return Err("checksum mismatch");
    }
    WalEntry::from_bytes(body).map_err(|e| e.label())
}

/// What opening the log found for the current height.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The entries, in the order they were logged.
    pub entries: Vec<WalEntry>,
    /// Block bodies logged for the height.
    pub blocks: Vec<Block>,
    /// Records dropped because they were torn or corrupt (the first bad one and all after it).
    pub truncated: usize,
}

/// The log of one height.
#[derive(Debug)]
pub struct Wal {
    height: u64,
    next: u32,
}

impl Wal {
    /// Opens the log at `height`: drops records of earlier heights, reads this height's records
    /// up to the first bad one and drops that one and the rest.
    pub fn open<S: Store>(store: &S, height: u64) -> Result<(Wal, Recovered), StoreError> {
        let mut wal = Wal { height, next: 0 };
        wal.reset(store, height)?;
        let mut recovered = Recovered::default();
        let prefix = record_key(height, 0);
        let mut start = prefix.clone();
        let mut bad: Vec<Vec<u8>> = Vec::new();
        'scan: loop {
            let chunk = store.scan(Column::Wal, &start, SCAN_CHUNK)?;
            let done = chunk.len() < SCAN_CHUNK;
            for (key, value) in chunk {
                if key.len() != prefix.len() || key[..9] != prefix[..9] {
                    break 'scan;
                }
                if !bad.is_empty() {
                    bad.push(key);
                    continue;
                }
                match unseal(&value) {
                    Ok(entry) => {
                        recovered.entries.push(entry);
                        let seq = u32::from_be_bytes([key[9], key[10], key[11], key[12]]);
                        wal.next = seq.saturating_add(1);
                    }
                    Err(reason) => {
                        log::warn!(
                            "WAL record {} of height {height} is torn or corrupt ({reason}); dropping it and every record after it",
                            recovered.entries.len()
                        );
                        bad.push(key);
                    }
                }
                start = record_key(height, wal.next);
            }
            if done {
                break;
            }
            if let Some(last) = bad.last() {
                start = last.clone();
                start.push(0);
            }
        }
        if !bad.is_empty() {
            recovered.truncated = bad.len();
            let mut batch = WriteBatch::new();
            for key in bad {
                batch.delete(Column::Wal, key);
            }
            store.write(batch)?;
        }
        recovered.blocks = wal.blocks(store)?;
        Ok((wal, recovered))
    }

    /// The block bodies logged for the height being logged; a corrupt one is skipped with a
    /// warning.
    pub fn blocks<S: Store>(&self, store: &S) -> Result<Vec<Block>, StoreError> {
        let height = self.height;
        let block_prefix = block_key(height, &Hash([0; 32]));
        let mut blocks = Vec::new();
        for (key, value) in store.scan(Column::Wal, &block_prefix, SCAN_CHUNK)? {
            if key.len() != block_prefix.len() || key[..9] != block_prefix[..9] {
                break;
            }
            match Block::from_bytes(&value) {
                Ok(block) => blocks.push(block),
                Err(e) => log::warn!(
                    "WAL block body at height {height} is corrupt ({}); ignoring it",
                    e.label()
                ),
            }
        }
        Ok(blocks)
    }

    /// The height being logged.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// Appends `entry` (written through before this returns).
    pub fn append<S: Store>(&mut self, store: &S, entry: &WalEntry) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.put(Column::Wal, record_key(self.height, self.next), seal(entry));
        store.write(batch)?;
        self.next = self.next.saturating_add(1);
        Ok(())
    }

    /// Logs the body of a block proposed at this height.
    pub fn save_block<S: Store>(&self, store: &S, block: &Block) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.put(
            Column::Wal,
            block_key(self.height, &block.hash()),
            block.to_bytes(),
        );
        store.write(batch)
    }

    /// Moves the log to `height`, deleting everything logged for earlier heights. Moving on from
    /// the current height scans only that height's records; on opening (the height unchanged) the
    /// whole log is scanned once, for leftovers of any earlier height.
    pub fn reset<S: Store>(&mut self, store: &S, height: u64) -> Result<(), StoreError> {
        let from = if self.height < height { self.height } else { 0 };
        for prefix in [RECORD, BLOCK] {
            let mut start = vec![prefix];
            start.extend_from_slice(&height_key(from));
            loop {
                let chunk = store.scan(Column::Wal, &start, SCAN_CHUNK)?;
                let stale: Vec<Vec<u8>> = chunk
                    .into_iter()
                    .map(|(key, _)| key)
                    .take_while(|key| {
                        key.len() >= 9
                            && key[0] == prefix
                            && u64::from_be_bytes(key[1..9].try_into().unwrap_or([0xff; 8]))
                                < height
                    })
                    .collect();
                let Some(last) = stale.last() else { break };
                start = last.clone();
                start.push(0);
                let mut batch = WriteBatch::new();
                for key in stale {
                    batch.delete(Column::Wal, key);
                }
                store.write(batch)?;
            }
        }
        if height != self.height {
            self.height = height;
            self.next = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::MemStore;
    use types::{ChainId, Domain, SecretKey, Vote, VoteKind};

    fn vote(height: u64, round: u32) -> WalEntry {
        let key = SecretKey::from_seed([3; 32]);
        let vote = Vote {
            height,
            round,
            kind: VoteKind::Prevote,
            block: None,
            validator: key.public_key(),
        };
        WalEntry::Vote(SignedVote {
            signature: key.sign(Domain::Vote, &ChainId::new("t").expect("valid"), &vote),
            vote,
        })
    }

    fn value(height: u64) -> WalEntry {
        WalEntry::Value(LoggedValue {
            height,
            round: 1,
            valid_round: Some(0),
            proposer: SecretKey::from_seed([4; 32]).public_key(),
            block: Hash([9; 32]),
            valid: true,
            from_sync: false,
        })
    }

    #[test]
    fn entries_survive_reopening_in_order_and_earlier_heights_are_dropped() {
        let store = MemStore::new();
        let (mut wal, recovered) = Wal::open(&store, 3).expect("open");
        assert!(recovered.entries.is_empty());
        let entries = vec![
            vote(3, 0),
            value(3),
            WalEntry::Timeout { kind: 1, round: 0 },
        ];
        for e in &entries {
            wal.append(&store, e).expect("append");
        }
        let (_, again) = Wal::open(&store, 3).expect("reopen");
        assert_eq!(again.entries, entries);
        assert_eq!(again.truncated, 0);
        let (_, next) = Wal::open(&store, 4).expect("next height");
        assert!(next.entries.is_empty());
        assert!(
            store.scan(Column::Wal, &[], 10).expect("scan").is_empty(),
            "height 3 records are deleted once height 4 opens"
        );
    }

    #[test]
    fn moving_to_the_next_height_deletes_the_previous_heights_records() {
        let store = MemStore::new();
        let (mut wal, _) = Wal::open(&store, 3).expect("open");
        wal.append(&store, &vote(3, 0)).expect("append");
        wal.append(&store, &vote(3, 1)).expect("append");
        wal.reset(&store, 4).expect("next height");
        wal.append(&store, &vote(4, 0)).expect("append");
        let keys: Vec<Vec<u8>> = store
            .scan(Column::Wal, &[], 10)
            .expect("scan")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![record_key(4, 0)]);
    }

    #[test]
    fn a_torn_last_record_is_truncated_and_the_log_keeps_working() {
        let store = MemStore::new();
        let (mut wal, _) = Wal::open(&store, 7).expect("open");
        wal.append(&store, &vote(7, 0)).expect("append");
        wal.append(&store, &vote(7, 1)).expect("append");
        let mut sealed = seal(&vote(7, 2));
        sealed.truncate(sealed.len() - 5);
        let mut batch = WriteBatch::new();
        batch.put(Column::Wal, record_key(7, 2), sealed);
        store.write(batch).expect("write torn record");
        let (mut wal, recovered) = Wal::open(&store, 7).expect("reopen");
        assert_eq!(recovered.entries, vec![vote(7, 0), vote(7, 1)]);
        assert_eq!(recovered.truncated, 1);
        wal.append(&store, &vote(7, 3))
            .expect("append after truncation");
        let (_, again) = Wal::open(&store, 7).expect("reopen");
        assert_eq!(again.entries, vec![vote(7, 0), vote(7, 1), vote(7, 3)]);
        assert_eq!(again.truncated, 0);
    }

    #[test]
    fn a_corrupt_middle_record_drops_it_and_everything_after() {
        let store = MemStore::new();
        let (mut wal, _) = Wal::open(&store, 2).expect("open");
        for r in 0..4 {
            wal.append(&store, &vote(2, r)).expect("append");
        }
        let key = record_key(2, 1);
        let mut bytes = store.get(Column::Wal, &key).expect("get").expect("present");
        bytes[10] ^= 0xff;
        let mut batch = WriteBatch::new();
        batch.put(Column::Wal, key, bytes);
        store.write(batch).expect("corrupt");
        let (_, recovered) = Wal::open(&store, 2).expect("reopen");
        assert_eq!(recovered.entries, vec![vote(2, 0)]);
        assert_eq!(recovered.truncated, 3);
    }

    #[test]
    fn every_entry_kind_round_trips_through_its_encoding() {
        for entry in [
            vote(1, 2),
            value(1),
            WalEntry::Timeout { kind: 2, round: 5 },
        ] {
            assert_eq!(WalEntry::from_bytes(&entry.to_bytes()), Ok(entry.clone()));
            assert_eq!(
                WalEntry::from_input(&entry.to_input()),
                Some(entry.clone()),
                "input conversion round-trips"
            );
        }
    }
}
