#!/usr/bin/env bash
# Fuzzes every decoder of the types crate with libFuzzer (cargo-fuzz; the targets are in fuzz/).
#
#   tools/fuzz.sh smoke                          every target for a few seconds (tools/test.sh)
#   tools/fuzz.sh long <target|all> [seconds]    longer runs that keep a corpus in fuzz/corpus/
#
# Both build the targets (nightly, ASan, release with debug assertions: cargo-fuzz's defaults)
# and write the seed corpus (valid encodings of every type, from fuzz/seeds). A crash, a broken
# round trip, a timeout or an out-of-memory input exits non-zero and leaves the input in
# fuzz/artifacts/<target>/; docs/fuzzing.md says how to reproduce it.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'fuzz: %s\n' "$*" >&2; }
die() { printf 'fuzz: error: %s\n' "$*" >&2; exit 1; }
usage() { die "usage: tools/fuzz.sh smoke | long <target|all> [seconds]"; }

# Seconds per target in the smoke run: 12 targets take about a minute together.
SMOKE_SECONDS=5
# Default seconds per target of a long run.
LONG_SECONDS=600
# Memory bound of one fuzzing process, MiB (libFuzzer's own default, made explicit).
RSS_LIMIT_MB=2048
# One input taking longer than this is a hang, seconds; every decoder is linear in its input.
INPUT_TIMEOUT_S=10

export PATH="$HOME/.cargo/bin:$PATH"
# Not CARGO_TARGET_DIR: tools/test.sh exports that for the main workspace, whose artifacts the
# instrumented builds would otherwise evict.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/cache/xdp-node/fuzz-target}"
# cargo-fuzz builds for the host triple in release mode.
BIN_DIR="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"

command -v cargo-fuzz >/dev/null || die "cargo-fuzz is missing: run tools/bootstrap.sh"

mode="${1:-}"
case "$mode" in
  smoke) [ $# -eq 1 ] || usage ;;
  long)
    [ $# -ge 2 ] && [ $# -le 3 ] || usage
    [[ "${3:-$LONG_SECONDS}" =~ ^[1-9][0-9]*$ ]] || die "seconds must be a positive integer, not '$3'"
    ;;
  *) usage ;;
esac

log "building the fuzz targets (cargo +nightly fuzz build)"
cargo +nightly fuzz build
seeds() { cargo +nightly run --quiet --manifest-path fuzz/Cargo.toml -p types-fuzz-seeds -- "$@"; }

# Target name -> -max_len, from the seed tool (each type's MAX_BYTES, capped at 64 KiB).
listing=$(seeds --list)
declare -A MAX_LEN=()
while read -r name max_len; do
  MAX_LEN[$name]=$max_len
done <<<"$listing"
built=$(cargo +nightly fuzz list)
for name in $built; do
  [ -n "${MAX_LEN[$name]:-}" ] || die "fuzz target $name has no entry in fuzz/seeds/src/main.rs"
done
for name in "${!MAX_LEN[@]}"; do
  grep -qx "$name" <<<"$built" || die "fuzz/seeds lists $name, which is not a fuzz target"
done

work=$(mktemp -d /tmp/xdp-node-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
seeds "$work/seeds"

failed=()
# run TARGET SECONDS CORPUS_DIR...: fuzzes TARGET; new inputs go to the first corpus directory.
run() {
  local target=$1 seconds=$2
  shift 2
  local output="$work/$target.log" dict="fuzz/dicts/$target.dict" args=()
  [ -f "$dict" ] && args+=("-dict=$dict")
  mkdir -p "fuzz/artifacts/$target"
  args+=(-artifact_prefix="fuzz/artifacts/$target/" -max_len="${MAX_LEN[$target]}"
    -rss_limit_mb="$RSS_LIMIT_MB" -timeout="$INPUT_TIMEOUT_S" -max_total_time="$seconds"
    -print_final_stats=1 "$@")
  local status=0
  if [ "$mode" = long ]; then
    # Long runs show libFuzzer's progress as it goes.
    "$BIN_DIR/$target" "${args[@]}" 2>&1 | tee "$output" >&2 || status=${PIPESTATUS[0]}
  else
    "$BIN_DIR/$target" "${args[@]}" >"$output" 2>&1 || status=$?
  fi
  if [ "$status" -eq 0 ]; then
    log "$target: ok, $(grep -m1 -o 'Done [0-9]* runs in [0-9]* second(s)' "$output" || echo done)"
    return
  fi
  # The panic message or sanitizer report with the top of its backtrace, then libFuzzer's summary.
  grep -m1 -A 24 -E 'panicked at|==ERROR|ERROR: libFuzzer' "$output" >&2 || tail -n 40 "$output" >&2
  grep -E '^SUMMARY|^MS: |Test unit written' "$output" >&2 || true
  local input
  input=$(grep -o 'Test unit written to .*' "$output" | sed 's/^Test unit written to //' | tail -n 1)
  log "$target: FAILED (exit $status); input: ${input:-none saved, see the output above}"
  if [ -n "$input" ]; then
    # In the log too: a CI run's artifacts do not outlive its clone.
    log "input (hex, first 4 KiB): $(head -c 4096 "$input" | od -An -v -tx1 | tr -d ' \n')"
    log "reproduce (from the repository root): CARGO_TARGET_DIR=$CARGO_TARGET_DIR cargo +nightly fuzz run $target $input"
  fi
  failed+=("$target")
}

if [ "$mode" = smoke ]; then
  log "smoke: every target for ${SMOKE_SECONDS}s from its seeds"
  for target in $built; do
    run "$target" "$SMOKE_SECONDS" "$work/seeds/$target"
  done
else
  target=$2
  seconds="${3:-$LONG_SECONDS}"
  if [ "$target" = all ]; then
    targets=$built
  else
    [ -n "${MAX_LEN[$target]:-}" ] || die "no fuzz target named '$target'; targets: $(tr '\n' ' ' <<<"$built")"
    targets=$target
  fi
  for target in $targets; do
    mkdir -p "fuzz/corpus/$target"
    log "long: $target for ${seconds}s, corpus fuzz/corpus/$target"
    run "$target" "$seconds" "fuzz/corpus/$target" "$work/seeds/$target"
    log "$target: corpus holds $(find "fuzz/corpus/$target" -type f | wc -l) inputs"
  done
fi

if [ ${#failed[@]} -gt 0 ]; then
  die "${#failed[@]} target(s) failed: ${failed[*]}"
fi
log "all targets passed"
