//! Check the `types` crate's decoders on arbitrary bytes; each fuzz target calls one function.
//!
//! # Invariants
//! - No decoder panics, whatever the input.
//! - Every value that decodes re-encodes to exactly the bytes it came from: one value, one
//!   encoding, so hashes and signatures over encodings are unambiguous.
//! - A genesis file that parses prints as TOML that parses back to the same document (and hash),
//!   and its binary encoding decodes back to it.
//!
//! A broken invariant panics; libFuzzer then saves the input under `fuzz/artifacts/<target>/`.

use std::fmt::Debug;

use types::{Decode, Encode, Genesis, SignedTransaction};

/// Decodes `data` as a `T`; if that succeeds, asserts that the value re-encodes to `data`.
pub fn round_trip<T: Decode + Encode + Debug>(data: &[u8]) {
    decode_exact::<T>(data);
}

/// [`round_trip`], then checks the signature: it may fail, but it must not panic.
pub fn signed_transaction(data: &[u8]) {
    if let Some(tx) = decode_exact::<SignedTransaction>(data) {
        let _ = tx.verify();
    }
}

/// Parses `data` as a genesis file when it is UTF-8; a document that parses must survive
/// `to_toml` and the binary encoding unchanged.
pub fn genesis_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(genesis) = Genesis::from_toml(text) else {
        return;
    };
    let printed = genesis.to_toml();
    let reparsed = Genesis::from_toml(&printed)
        .unwrap_or_else(|e| panic!("to_toml output does not parse: {e}\n{printed}"));
    assert_eq!(
        reparsed, genesis,
        "to_toml changed the document:\n{printed}"
    );
    assert_eq!(reparsed.hash(), genesis.hash());
    let binary = genesis.to_bytes();
    assert_eq!(Genesis::from_bytes(&binary).as_ref(), Ok(&genesis));
}

fn decode_exact<T: Decode + Encode + Debug>(data: &[u8]) -> Option<T> {
    let value = T::from_bytes(data).ok()?;
    let encoded = value.to_bytes();
    if encoded != data {
        let at = encoded
            .iter()
            .zip(data)
            .position(|(a, b)| a != b)
            .unwrap_or(encoded.len().min(data.len()));
        panic!(
            "{}: decoded {value:?} re-encodes differently from its input: first difference at \
             byte {at}; input {} bytes, re-encoding {} bytes",
            T::NAME,
            data.len(),
            encoded.len()
        );
    }
    Some(value)
}
