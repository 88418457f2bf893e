//! Build the XDP traffic generator (crate `attacker-ebpf`) with nightly for bpfel-unknown-none
//! and put the object at `$OUT_DIR/generator`, where `src/xdp.rs` embeds it.
//!
//! With `AYA_BUILD_SKIP=1` (lint-only runs) an empty object is written instead; `--engine xdp`
//! then fails with a message that says so.
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    let object = out_dir.join("generator");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        fs::write(&object, [])?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("no manifest dir")?);
    let ebpf_dir = manifest_dir.join("../attacker-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or("non-UTF-8 path")?;
    // aya-build relays every line the nested cargo prints as a build warning; keep it to errors.
    // SAFETY: build scripts are single-threaded here; nothing reads the environment concurrently.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "attacker-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .map_err(|e| format!("building the XDP generator failed: {e:#}; run tools/bootstrap.sh"))?;
    Ok(())
}
