//! Fuzz `Commit::from_bytes`: no panic, and what decodes re-encodes to its input.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| types_fuzz::round_trip::<types::Commit>(data));
