#!/usr/bin/env bash
# The main job: a network of validators in network namespaces, each behind the XDP filter,
# attacked one attack after another while it keeps finalizing blocks, with a live summary.
# Everything the lab creates is removed at its end, on Ctrl-C, and (after a crash) at the start
# of the next run.
#   usage: tools/lab.sh [lab options]     (tools/lab.sh --help lists them)
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/bootstrap.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/xdp-node/target}"
mkdir -p "$CARGO_TARGET_DIR"
cargo build --release --locked -p node -p attacker -p lab
exec "$CARGO_TARGET_DIR/release/lab" "$@"
