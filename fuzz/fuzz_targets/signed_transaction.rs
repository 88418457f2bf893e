//! Fuzz `SignedTransaction::from_bytes` (round trip) and `verify` on what decodes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| types_fuzz::signed_transaction(data));
