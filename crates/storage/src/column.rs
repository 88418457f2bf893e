//! Name the column families; their names are on disk and fixed forever.

/// A column family: an independent, ordered key space.
///
/// # Invariants
/// The names returned by [`Column::name`] are written into every RocksDB directory. Never rename
/// or reuse one; add a new variant (and bump [`crate::SCHEMA_VERSION`]) instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// Blocks by height.
    Blocks,
    /// Commit certificates by height.
    Commits,
    /// Block hash to height index.
    BlockHashes,
    /// Transactions by hash.
    Txs,
    /// Nodes of the authenticated state tree.
    StateNodes,
    /// State values by key and version.
    StateValues,
    /// Consensus write-ahead log.
    Wal,
    /// Known peers and their addresses.
    Peers,
    /// Active and past bans.
    Bans,
    /// Store metadata, such as the schema version.
    Meta,
}

impl Column {
    /// Every column, in declaration order.
    pub const ALL: [Column; 10] = [
        Column::Blocks,
        Column::Commits,
        Column::BlockHashes,
        Column::Txs,
        Column::StateNodes,
        Column::StateValues,
        Column::Wal,
        Column::Peers,
        Column::Bans,
        Column::Meta,
    ];

    /// The column family's on-disk name.
    pub fn name(self) -> &'static str {
        match self {
            Column::Blocks => "blocks",
            Column::Commits => "commits",
            Column::BlockHashes => "block_hashes",
            Column::Txs => "txs",
            Column::StateNodes => "state_nodes",
            Column::StateValues => "state_values",
            Column::Wal => "wal",
            Column::Peers => "peers",
            Column::Bans => "bans",
            Column::Meta => "meta",
        }
    }

    /// Position in [`Column::ALL`], for per-column tables.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn on_disk_names_are_the_documented_ones() {
        let names: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "blocks",
                "commits",
                "block_hashes",
                "txs",
                "state_nodes",
                "state_values",
                "wal",
                "peers",
                "bans",
                "meta"
            ]
        );
    }

    #[test]
    fn names_are_unique_and_not_rocksdb_default() {
        let names: HashSet<&str> = Column::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Column::ALL.len());
        assert!(!names.contains("default"));
    }

    #[test]
    fn index_is_the_position_in_all() {
        for (i, col) in Column::ALL.iter().enumerate() {
            assert_eq!(col.index(), i);
        }
    }
}
