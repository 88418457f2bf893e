//! Build the kernel program (crate `firewall-ebpf`) with nightly for bpfel-unknown-none and put
//! the object at `$OUT_DIR/firewall`, where `src/program.rs` embeds it.
//!
//! With `AYA_BUILD_SKIP=1` (lint-only runs) an empty object is written instead; loading it fails
//! with `FirewallError::ProgramNotBuilt`.
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    let object = out_dir.join("firewall");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        fs::write(&object, [])?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("no manifest dir")?);
    let ebpf_dir = manifest_dir.join("../firewall-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or("non-UTF-8 path")?;
    let common_dir = manifest_dir.join("../firewall-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    // aya-build relays every line the nested cargo prints as a build warning; keep it to errors.
    // SAFETY: build scripts are single-threaded here; nothing reads the environment concurrently.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "firewall-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .map_err(|e| format!("building the XDP program failed: {e:#}; run tools/bootstrap.sh"))?;
    Ok(())
}
