//! The state: accounts, the validator set and slashing records, in a Jellyfish Merkle tree
//! whose root every header commits to.
//!
//! # Design
//! The tree is `jmt` (a 16-ary sparse Merkle tree over SHA-256 key hashes, as in Diem/Aptos and
//! Penumbra). Updating it costs O(k log n) node writes for k touched keys out of n, so the cost
//! per block follows what the block touches, not the size of the state; proofs of a key's value
//! (or absence) against a root come with it. Versions are block heights (genesis is 0).
//!
//! Nodes live in [`Column::StateNodes`] (borsh-encoded key and node, as jmt defines them);
//! values live in [`Column::StateValues`] under `key hash || version` (big-endian), so the value
//! of a key at any version is one `get_at_or_before` away. Nothing is pruned yet: every version
//! stays readable (history for proofs and for checking evidence against past validator sets).

use std::collections::BTreeMap;

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{KeyHash, OwnedValue, Sha256Jmt, Version};
use sha2::Sha256;
use storage::{Column, Store, StoreError, WriteBatch};
use types::codec::{Decode, Encode};
use types::{Account, Hash, PublicKey, ValidatorSet};

use crate::error::StateError;

/// Where a record lives in the state. The encoded key is hashed into the tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateKey {
    /// An account's balance and nonce.
    Account(PublicKey),
    /// The whole validator set (one record: it is small and read by every block).
    Validators,
    /// Marks that `offender` was slashed for an offence at `height`.
    Slashed {
        /// The slashed validator.
        offender: PublicKey,
        /// Height of the offence.
        height: u64,
    },
    /// The height of the state (written by every block, so each height has its own root).
    Height,
}

impl StateKey {
    /// The key's bytes (a one-byte kind, then its fields).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(41);
        match self {
            Self::Account(key) => {
                out.push(0);
                key.encode_to(&mut out);
            }
            Self::Validators => out.push(1),
            Self::Slashed { offender, height } => {
                out.push(2);
                offender.encode_to(&mut out);
                height.encode_to(&mut out);
            }
            Self::Height => out.push(3),
        }
        out
    }

    /// The key's position in the tree.
    pub fn hash(&self) -> KeyHash {
        KeyHash::with::<Sha256>(self.to_bytes())
    }
}

/// Decodes the stored record of `key`; a failure means a damaged data directory.
fn decode_record<T: Decode>(key: &StateKey, bytes: &[u8]) -> Result<T, StateError> {
    T::from_bytes(bytes).map_err(|source| StateError::CorruptRecord {
        key: format!("{key:?}"),
        source,
    })
}

/// The tree's root as a [`Hash`].
fn root_hash(root: jmt::RootHash) -> Hash {
    Hash(root.0)
}

/// Reads the tree (nodes and versioned values) from a [`Store`].
pub struct TreeStore<'a, S: ?Sized> {
    store: &'a S,
}

impl<'a, S: Store + ?Sized> TreeStore<'a, S> {
    /// A reader over `store`.
    pub fn new(store: &'a S) -> Self {
        Self { store }
    }

    /// The raw value of `key` at `version` (the newest write at or before it).
    pub fn value(&self, key: &StateKey, version: Version) -> Result<Option<Vec<u8>>, StoreError> {
        read_value(self.store, key.hash(), version)
    }

    /// A typed record at `version`; `None` if absent.
    pub fn get<T: Decode>(
        &self,
        key: &StateKey,
        version: Version,
    ) -> Result<Option<T>, StateError> {
        self.value(key, version)?
            .map(|bytes| decode_record(key, &bytes))
            .transpose()
    }

    /// The account of `key` at `version` (a fresh, empty account if absent).
    pub fn account(&self, key: &PublicKey, version: Version) -> Result<Account, StateError> {
        Ok(self
            .get(&StateKey::Account(*key), version)?
            .unwrap_or_default())
    }

    /// The validator set at `version`.
    pub fn validators(&self, version: Version) -> Result<ValidatorSet, StateError> {
        Ok(self
            .get(&StateKey::Validators, version)?
            .unwrap_or_default())
    }

    /// The state root at `version`.
    pub fn root(&self, version: Version) -> Result<Hash, StateError> {
        Sha256Jmt::new(self)
            .get_root_hash(version)
            .map(root_hash)
            .map_err(|e| StateError::Tree(e.to_string()))
    }

    /// The value of `key` at `version` with a Merkle proof against that version's root.
    pub fn prove(&self, key: &StateKey, version: Version) -> Result<StateProof, StateError> {
        let (value, proof) = Sha256Jmt::new(self)
            .get_with_proof(key.hash(), version)
            .map_err(|e| StateError::Tree(e.to_string()))?;
        Ok(StateProof {
            key: key.clone(),
            value,
            proof,
        })
    }

    /// Computes the root after writing `writes` at `version`, and adds the storage writes that
    /// persist it to `batch`. Reads the tree; writes nothing to the store.
    pub fn update(
        &self,
        writes: &BTreeMap<StateKey, Option<Vec<u8>>>,
        version: Version,
        batch: &mut WriteBatch,
    ) -> Result<Hash, StateError> {
        let value_set: Vec<(KeyHash, Option<OwnedValue>)> = writes
            .iter()
            .map(|(key, value)| (key.hash(), value.clone()))
            .collect();
        let (root, update) = Sha256Jmt::new(self)
            .put_value_set(value_set, version)
            .map_err(|e| StateError::Tree(e.to_string()))?;
        add_tree_writes(&update, batch)?;
        Ok(root_hash(root))
    }
}

/// A value with its proof of inclusion (or of absence) under a state root.
pub struct StateProof {
    /// The key proven.
    pub key: StateKey,
    /// Its value, or `None` if the proof shows it absent.
    pub value: Option<Vec<u8>>,
    /// The sparse Merkle proof.
    pub proof: jmt::proof::SparseMerkleProof<Sha256>,
}

impl StateProof {
    /// Checks the proof against `root`.
    pub fn verify(&self, root: Hash) -> Result<(), StateError> {
        self.proof
            .verify(jmt::RootHash(root.0), self.key.hash(), self.value.as_ref())
            .map_err(|e| StateError::BadProof(e.to_string()))
    }
}

/// The key under which a value version is stored: key hash, then version (big-endian).
fn value_key(key_hash: KeyHash, version: Version) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..32].copy_from_slice(&key_hash.0);
    out[32..].copy_from_slice(&version.to_be_bytes());
    out
}

/// Stored values start with a tag: a deletion is recorded too, so older versions stay readable.
const VALUE_DELETED: u8 = 0;
const VALUE_PRESENT: u8 = 1;

fn read_value<S: Store + ?Sized>(
    store: &S,
    key_hash: KeyHash,
    version: Version,
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some((found, stored)) =
        store.get_at_or_before(Column::StateValues, &value_key(key_hash, version))?
    else {
        return Ok(None);
    };
    if found.len() != 40 || found[..32] != key_hash.0 {
        return Ok(None);
    }
    match stored.split_first() {
        Some((&VALUE_PRESENT, value)) => Ok(Some(value.to_vec())),
        _ => Ok(None),
    }
}

fn add_tree_writes(update: &TreeUpdateBatch, batch: &mut WriteBatch) -> Result<(), StateError> {
    for (key, node) in update.node_batch.nodes() {
        batch.put(Column::StateNodes, encode_borsh(key)?, encode_borsh(node)?);
    }
    for ((version, key_hash), value) in update.node_batch.values() {
        let stored = match value {
            Some(value) => {
                let mut stored = Vec::with_capacity(1 + value.len());
                stored.push(VALUE_PRESENT);
                stored.extend_from_slice(value);
                stored
            }
            None => vec![VALUE_DELETED],
        };
        batch.put(Column::StateValues, value_key(*key_hash, *version), stored);
    }
    Ok(())
}

fn encode_borsh<T: borsh::BorshSerialize>(value: &T) -> Result<Vec<u8>, StateError> {
    borsh::to_vec(value).map_err(|e| StateError::Tree(e.to_string()))
}

impl<S: Store + ?Sized> TreeReader for TreeStore<'_, S> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        let key = borsh::to_vec(node_key)?;
        match self.store.get(Column::StateNodes, &key)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(borsh::from_slice(&bytes)?)),
        }
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        Ok(read_value(self.store, key_hash, max_version)?)
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        // Only jmt's state-sync restore asks for this; the node never restores a tree that way.
        anyhow::bail!("restoring the state tree from chunks is not supported")
    }
}

/// Reads of the state at one version with the writes of a block in progress on top.
pub struct Overlay<'a, S: ?Sized> {
    tree: TreeStore<'a, S>,
    version: Version,
    writes: BTreeMap<StateKey, Option<Vec<u8>>>,
}

impl<'a, S: Store + ?Sized> Overlay<'a, S> {
    /// Pending writes on top of the state at `version`.
    pub fn new(store: &'a S, version: Version) -> Self {
        Self {
            tree: TreeStore::new(store),
            version,
            writes: BTreeMap::new(),
        }
    }

    /// The underlying tree.
    pub fn tree(&self) -> &TreeStore<'a, S> {
        &self.tree
    }

    fn get<T: Decode>(&self, key: &StateKey) -> Result<Option<T>, StateError> {
        match self.writes.get(key) {
            Some(None) => Ok(None),
            Some(Some(bytes)) => decode_record(key, bytes).map(Some),
            None => self.tree.get(key, self.version),
        }
    }

    fn put<T: Encode>(&mut self, key: StateKey, value: &T) {
        self.writes.insert(key, Some(value.to_bytes()));
    }

    /// An account (empty if it never existed).
    pub fn account(&self, key: &PublicKey) -> Result<Account, StateError> {
        Ok(self.get(&StateKey::Account(*key))?.unwrap_or_default())
    }

    /// Writes an account.
    pub fn set_account(&mut self, key: PublicKey, account: Account) {
        self.put(StateKey::Account(key), &account);
    }

    /// The validator set.
    pub fn validators(&self) -> Result<ValidatorSet, StateError> {
        Ok(self.get(&StateKey::Validators)?.unwrap_or_default())
    }

    /// Writes the validator set.
    pub fn set_validators(&mut self, set: &ValidatorSet) {
        self.put(StateKey::Validators, set);
    }

    /// Whether `offender` was already slashed for an offence at `height`.
    pub fn was_slashed(&self, offender: PublicKey, height: u64) -> Result<bool, StateError> {
        Ok(self
            .get::<u64>(&StateKey::Slashed { offender, height })?
            .is_some())
    }

    /// Records a slash (the value is the height of the block that slashed).
    pub fn mark_slashed(&mut self, offender: PublicKey, height: u64, at: u64) {
        self.put(StateKey::Slashed { offender, height }, &at);
    }

    /// Records the state's height.
    pub fn set_height(&mut self, height: u64) {
        self.put(StateKey::Height, &height);
    }

    /// The pending writes.
    pub fn writes(&self) -> &BTreeMap<StateKey, Option<Vec<u8>>> {
        &self.writes
    }
}
