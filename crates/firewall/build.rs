//! Build the kernel programs (crate `firewall-ebpf`) into `$OUT_DIR/firewall`, which
//! `src/program.rs` embeds, and `$OUT_DIR/telemetry`, which `src/telemetry/mod.rs` embeds. With
//! `AYA_BUILD_SKIP=1` the objects are empty and loading them fails with
//! `FirewallError::ProgramNotBuilt` or `TelemetryError::NotBuilt`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    ebpf_build::build(
        "firewall-ebpf",
        "../firewall-ebpf",
        &["firewall", "telemetry"],
        &["../firewall-common"],
    )
}
