#!/usr/bin/env bash
# The main job, until the node exists: attach the XDP filter to a veth in a pair of network
# namespaces, flood it from the other side (spoofed blocked sources, a rate-limit breach, a SYN
# flood, undersized QUIC Initials), and show the live drop counters. Everything it creates is
# removed on exit, on Ctrl-C, and at the start of the next run.
#   usage: tools/demo.sh [seconds per attack, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_ATTACK="${1:-5}"
case "$SECONDS_PER_ATTACK" in ''|*[!0-9]*) echo "usage: $0 [seconds per attack]" >&2; exit 2;; esac

bash tools/bootstrap.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/xdp-node/target}"
cargo build --release --locked -p node -p attacker
BIN="$CARGO_TARGET_DIR/release"

NS_A=xdpdemo-attacker NS_B=xdpdemo-node VETH_A=xdpdemo-a VETH_B=xdpdemo-b INSTANCE=xdpdemo
cleanup() {
  [ -n "${TOP_PID:-}" ] && kill "$TOP_PID" 2>/dev/null || true
  "$BIN/node" firewall --instance "$INSTANCE" detach >/dev/null 2>&1 || true
  ip netns del "$NS_A" 2>/dev/null || true
  ip netns del "$NS_B" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
ip -n "$NS_A" addr add 198.18.0.1/24 dev "$VETH_A"
ip -n "$NS_B" addr add 198.18.0.2/24 dev "$VETH_B"
ip -n "$NS_A" link set "$VETH_A" up
ip -n "$NS_B" link set "$VETH_B" up
MAC_B=$(ip -n "$NS_B" -br link show "$VETH_B" | awk '{print $3}')

"$BIN/node" firewall --instance "$INSTANCE" attach --netns "$NS_B" --iface "$VETH_B" \
  --tcp-port 9000 --quic-port 9000 --rate-pps 1000 --syn-pps 50 --drop-fragments
"$BIN/node" firewall --instance "$INSTANCE" block 198.19.66.0/24 --ttl 10m --reason spam

attack() {
  echo ">>> $1" >&2
  shift
  "$BIN/attacker" flood --netns "$NS_A" --iface "$VETH_A" --dst 198.18.0.2 --dst-mac "$MAC_B" \
    --engine xdp --duration "${SECONDS_PER_ATTACK}s" --packets 50000000 "$@" >&2
}

"$BIN/node" firewall --instance "$INSTANCE" top --count $((SECONDS_PER_ATTACK * 4 + 2)) &
TOP_PID=$!
sleep 1
attack "UDP flood from the blocked range 198.19.66.0/24 (spoofed)" --src 198.19.66.0/24 --kind udp --dst-port 7000
attack "UDP flood at the P2P port from one unblocked source, over its 1000 pkt/s budget" --src 198.19.77.7 --kind udp --dst-port 9000
attack "TCP SYN flood at the P2P port from 16 sources, over 50 SYN/s each" --src 198.19.88.0/28 --kind syn --dst-port 9000
attack "QUIC Initials padded to 200 bytes (RFC 9000 requires 1200)" --src 198.19.99.0/24 --kind quic-short --dst-port 9000
wait "$TOP_PID" || true
TOP_PID=
echo
echo "== final counters"
"$BIN/node" firewall --instance "$INSTANCE" stats
echo
echo "== why is 198.19.66.42 dropped?"
"$BIN/node" firewall --instance "$INSTANCE" why 198.19.66.42
