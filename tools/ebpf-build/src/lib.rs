//! Compile one of the project's eBPF crates from a build script (nightly, bpfel-unknown-none,
//! through aya-build) and leave the object of each binary at `$OUT_DIR/<bin>`, for
//! `include_bytes_aligned!`.
//!
//! With `AYA_BUILD_SKIP=1` (lint-only runs) empty objects are written instead; the crate that
//! embeds them must refuse to load an empty object with a message that says so.

use std::{env, error::Error, fs, path::PathBuf};

/// Builds the eBPF package `package`, found at `dir` relative to the calling crate's manifest,
/// whose binary targets are `bins`. `watch` lists more directories (relative to the manifest)
/// whose changes must rebuild it, such as a shared types crate.
pub fn build(
    package: &str,
    dir: &str,
    bins: &[&str],
    watch: &[&str],
) -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        for bin in bins {
            fs::write(out_dir.join(bin), [])?;
        }
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("no manifest dir")?);
    for extra in watch {
        println!(
            "cargo:rerun-if-changed={}",
            manifest_dir.join(extra).display()
        );
    }
    let root = manifest_dir.join(dir);
    let root = root.to_str().ok_or("non-UTF-8 path")?;
    // aya-build relays every line the nested cargo prints as a build warning; keep it to errors.
    // SAFETY: a build script runs this before starting any thread; nothing reads the
    // environment concurrently.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: package,
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .map_err(|e| format!("building {package} failed: {e:#}; run tools/bootstrap.sh").into())
}
