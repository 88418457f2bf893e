//! Build the XDP traffic generator (crate `attacker-ebpf`) into `$OUT_DIR/generator`, where
//! `src/xdp.rs` embeds it. With `AYA_BUILD_SKIP=1` the object is empty and `--engine xdp` fails
//! with a message that says so.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    ebpf_build::build("attacker-ebpf", "../attacker-ebpf", &["generator"], &[])
}
