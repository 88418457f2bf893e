//! Every size bound of the protocol, in one place. Changing one is a protocol change.

/// Longest chain id, bytes.
pub const MAX_CHAIN_ID_BYTES: usize = 32;
/// Most validators in the set (bounds commits, evidence checks and the validator-set record).
pub const MAX_VALIDATORS: usize = 100;
/// Largest encoded signed transaction, bytes (an evidence transaction, the largest kind, is
/// about 500 bytes).
pub const MAX_TX_BYTES: usize = 2 * 1024;
/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = 20_000;
/// Largest encoded block, bytes.
pub const MAX_BLOCK_BYTES: usize = 8 * 1024 * 1024;
/// Most accounts in a genesis document.
pub const MAX_GENESIS_ACCOUNTS: usize = 100_000;
/// Largest genesis file, bytes (TOML text).
pub const MAX_GENESIS_FILE_BYTES: usize = 32 * 1024 * 1024;

/// Most coins that can exist (balances plus stakes, fixed at genesis: fees move coins, slashing
/// burns them, nothing mints). Below TOML's largest integer, and small enough that three times
/// the total voting power fits a `u64` (the consensus core's threshold arithmetic needs that).
pub const MAX_SUPPLY: u64 = 1 << 62;
