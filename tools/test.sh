#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints (user space and the eBPF crate),
# unit tests, BPF_PROG_TEST_RUN tests, network-namespace tests with the filter attached, the
# Ansible playbooks deploying four LXC validator containers (tools/lab/tests/lxc_deploy.rs,
# about 2 min), and a short fuzzing run of every decoder of the types crate (tools/fuzz.sh
# smoke, about 80 s warm). Needs root: the privileged tests load XDP programs and create
# namespaces and containers. With CI=true a privileged test that cannot run fails instead of
# skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/bootstrap.sh
export PATH="$HOME/.cargo/bin:$PATH"
# Builds are slow on small machines: keep the target dir outside the clone so later runs (and
# fresh clones) on the same machine reuse it. Override with CARGO_TARGET_DIR.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/xdp-node/target}"
mkdir -p "$CARGO_TARGET_DIR"

echo "== cargo fmt"
cargo fmt --all -- --check
# The fuzz workspace, its own packages only (`--all` would walk the main workspace through `types`).
cargo fmt --manifest-path fuzz/Cargo.toml -p types-fuzz -p types-fuzz-seeds -- --check
# Default members: every crate but the eBPF one, which only builds for the BPF target.
echo "== cargo clippy (user space)"
# Clippy runs in check mode, which links nothing. Pointing librocksdb-sys at a library directory
# skips its C++ build here (minutes on 2 cores); the test build below compiles and links RocksDB.
ROCKSDB_LIB_DIR="$CARGO_TARGET_DIR" ROCKSDB_STATIC=1 cargo clippy --all-targets --locked -- -D warnings
echo "== cargo clippy (eBPF crates, nightly, bpfel-unknown-none)"
for crate in crates/firewall-ebpf tools/attacker-ebpf; do
  (cd "$crate" && cargo +nightly clippy --locked --release \
    -Z build-std=core --target bpfel-unknown-none -- -D warnings)
done
echo "== cargo test"
cargo test --locked
echo "== fuzz smoke (every decoder of the types crate)"
bash tools/fuzz.sh smoke
