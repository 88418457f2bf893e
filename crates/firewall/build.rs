//! Build the kernel program (crate `firewall-ebpf`) into `$OUT_DIR/firewall`, where
//! `src/program.rs` embeds it. With `AYA_BUILD_SKIP=1` the object is empty and loading it fails
//! with `FirewallError::ProgramNotBuilt`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    ebpf_build::build(
        "firewall-ebpf",
        "../firewall-ebpf",
        "firewall",
        &["../firewall-common"],
    )
}
