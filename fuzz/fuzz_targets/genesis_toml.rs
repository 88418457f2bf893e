//! Fuzz `Genesis::from_toml`: what parses survives `to_toml` and the binary encoding unchanged.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| types_fuzz::genesis_toml(data));
