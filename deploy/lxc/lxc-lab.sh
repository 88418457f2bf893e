#!/usr/bin/env bash
# Validator containers for the local LXC lab: N privileged containers (deploy/lxc/validator.conf)
# on the bridge xdpn-br0, each a copy-on-write overlay of one Debian 12 base rootfs, reachable
# over SSH from this host (the Ansible controller).
#
#   lxc-lab.sh up [N] [--plain I,...]   create and start xdpn-v0 .. xdpn-v(N-1) (default 4);
#                                       containers listed by --plain boot without systemd
#   lxc-lab.sh down [--purge]           stop and destroy them, remove the bridge and their bpffs
#                                       directories (--purge: the base rootfs and SSH key too)
#   lxc-lab.sh status                   one line per container
#
# Container i is 10.97.0.(10+i)/24; the host is 10.97.0.1 on the bridge. `up` is idempotent: a
# running container is left alone. The state (base rootfs, the controller's SSH key, the
# known_hosts file Ansible checks host keys against) lives in $XDPN_LXC_STATE, default
# /var/cache/xdp-node/lxc. deploy/lxc/README.md explains the design.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${XDPN_LXC_STATE:-/var/cache/xdp-node/lxc}"
BASE="$STATE/base"
ROOTFS="$BASE/rootfs"
SUITE=bookworm
MIRROR="${XDPN_LXC_MIRROR:-http://deb.debian.org/debian}"
# What the rootfs needs beyond minbase: an init, the SSH server Ansible uses, Python for Ansible's
# modules, iproute2 (`ip link` shows the XDP program), procps (pgrep for the plain init).
PACKAGES=systemd-sysv,openssh-server,python3,iproute2,procps
BRIDGE=xdpn-br0
HOST_IP=10.97.0.1
PREFIX=xdpn-v
FIRST_HOST=10
MAX_CONTAINERS=64
BPFFS_DIR=/sys/fs/bpf/xdp-node-lxc
LXC_PATH="$(lxc-config lxc.lxcpath 2>/dev/null || echo /var/lib/lxc)"
SSH_WAIT_SECS=60

die() { echo "lxc-lab: $*" >&2; exit 1; }
say() { echo "lxc-lab: $*"; }

ip_of() { echo "10.97.0.$((FIRST_HOST + $1))"; }

require() {
  [[ $EUID -eq 0 ]] || die "needs root (privileged containers, bridges)"
  for tool in lxc-start lxc-copy debootstrap ssh-keygen; do
    command -v "$tool" >/dev/null || die "$tool is missing: run tools/bootstrap.sh (Debian packages lxc, debootstrap, openssh-client)"
  done
}

# The base rootfs, built once and shared read-only by every container.
base_rootfs() {
  if [[ -f "$BASE/complete" ]]; then
    return
  fi
  say "building the base rootfs ($SUITE, minbase + $PACKAGES) in $ROOTFS"
  rm -rf "$BASE"
  mkdir -p "$BASE"
  if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$BASE/debootstrap.log" 2>&1; then
    tail -20 "$BASE/debootstrap.log" >&2
    die "debootstrap failed (full log: $BASE/debootstrap.log)"
  fi
  # Per-container identity comes from each container's own layer: no shared host keys, and
  # systemd makes a machine id at first boot.
  rm -f "$ROOTFS"/etc/ssh/ssh_host_*
  : >"$ROOTFS/etc/machine-id"
  install -m 0755 "$HERE/plain-init" "$ROOTFS/usr/local/sbin/plain-init"
  # Key-only root logins, for the controller.
  printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\n' \
    >"$ROOTFS/etc/ssh/sshd_config.d/xdp-node.conf"
  touch "$BASE/complete"
}

controller_key() {
  if [[ ! -f "$STATE/id_ed25519" ]]; then
    ssh-keygen -q -t ed25519 -N "" -C "xdp-node lxc lab controller" -f "$STATE/id_ed25519"
  fi
}

bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  if ! ip -4 addr show dev "$BRIDGE" | grep -q "inet $HOST_IP/24"; then
    ip addr add "$HOST_IP/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
}

# Whether this host may give a container an unlimited memlock limit (needs CAP_SYS_RESOURCE or
# an unlimited hard limit already).
memlock_raisable() {
  prlimit --memlock=unlimited:unlimited true 2>/dev/null
}

# Whether overlayfs is available for copy-on-write rootfs layers.
overlay_available() {
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null
}

create() {
  local i=$1 plain=$2 name="$PREFIX$1" dir="$LXC_PATH/$PREFIX$1" upper rootfs_line was
  if [[ -f "$dir/config" ]]; then
    was=0
    grep -q '^lxc.init.cmd = /usr/local/sbin/plain-init$' "$dir/config" && was=1
    [[ $was == "$plain" ]] ||
      die "$name exists $( ((was)) && echo without || echo with) systemd; run 'lxc-lab.sh down' first to change --plain"
    return
  fi
  # A directory without a config is what a crashed create left: start over.
  rm -rf "$dir"
  mkdir -p "$dir"
  if overlay_available; then
    upper="$dir/delta0"
    rootfs_line="overlay:$ROOTFS:$upper"
  else
    say "$name: overlayfs unavailable, copying the base rootfs"
    upper="$dir/rootfs"
    cp -a "$ROOTFS" "$upper"
    rootfs_line="dir:$upper"
  fi
  install -d -m 0700 "$upper/root" "$upper/root/.ssh"
  mkdir -p "$upper/etc/ssh"
  install -m 0600 "$STATE/id_ed25519.pub" "$upper/root/.ssh/authorized_keys"
  ssh-keygen -q -A -f "$upper" >/dev/null
  echo "$name" >"$upper/etc/hostname"
  {
    cat "$HERE/validator.conf"
    echo
    echo "# $name, written by lxc-lab.sh"
    echo "lxc.uts.name = $name"
    echo "lxc.rootfs.path = $rootfs_line"
    echo "lxc.net.0.type = veth"
    echo "lxc.net.0.link = $BRIDGE"
    echo "lxc.net.0.flags = up"
    echo "lxc.net.0.name = eth0"
    echo "lxc.net.0.veth.pair = $name"
    echo "lxc.net.0.ipv4.address = $(ip_of "$i")/24"
    echo "lxc.net.0.ipv4.gateway = $HOST_IP"
    # This container's own directory of the host's bpffs: pins survive container restarts and
    # containers never see each other's maps.
    echo "lxc.mount.entry = $BPFFS_DIR/$name sys/fs/bpf none bind,create=dir 0 0"
    if memlock_raisable; then
      echo "lxc.prlimit.memlock = unlimited"
    fi
    if [[ $plain == 1 ]]; then
      echo "lxc.init.cmd = /usr/local/sbin/plain-init"
    fi
  } >"$dir/config.new"
  mv "$dir/config.new" "$dir/config"
}

wait_ssh() {
  local i=$1 ip deadline
  ip="$(ip_of "$i")"
  deadline=$((SECONDS + SSH_WAIT_SECS))
  until ssh -i "$STATE/id_ed25519" -o BatchMode=yes -o ConnectTimeout=2 \
    -o UserKnownHostsFile="$STATE/known_hosts" -o StrictHostKeyChecking=yes \
    "root@$ip" true 2>/dev/null; do
    ((SECONDS < deadline)) || die "$PREFIX$i: no SSH on $ip after ${SSH_WAIT_SECS}s (lxc-attach -n $PREFIX$i to look)"
    sleep 0.5
  done
}

known_hosts() {
  local count=$1 i upper
  : >"$STATE/known_hosts.new"
  for ((i = 0; i < count; i++)); do
    upper="$LXC_PATH/$PREFIX$i/delta0"
    [[ -d $upper ]] || upper="$LXC_PATH/$PREFIX$i/rootfs"
    echo "$(ip_of "$i") $(cut -d' ' -f1,2 "$upper/etc/ssh/ssh_host_ed25519_key.pub")" >>"$STATE/known_hosts.new"
  done
  mv "$STATE/known_hosts.new" "$STATE/known_hosts"
}

up() {
  local count=4 plain_list="" i
  while [[ $# -gt 0 ]]; do
    case $1 in
      --plain) plain_list="${2:?--plain takes a comma-separated list of container indexes}"; shift 2 ;;
      *) count=$1; shift ;;
    esac
  done
  [[ $count =~ ^[0-9]+$ ]] && ((count >= 1 && count <= MAX_CONTAINERS)) ||
    die "the number of containers must be 1 to $MAX_CONTAINERS, not '$count'"
  require
  mkdir -p "$STATE"
  base_rootfs
  controller_key
  bridge
  if ! memlock_raisable; then
    say "warning: this host cannot raise RLIMIT_MEMLOCK (no CAP_SYS_RESOURCE), so the containers keep the host's limit ($(ulimit -l) KiB); kernels from 5.11 charge BPF maps to the memory cgroup instead, so the filter loads anyway"
  fi
  for ((i = 0; i < count; i++)); do
    local plain=0
    [[ ,$plain_list, == *,$i,* ]] && plain=1
    create "$i" "$plain"
    # bpffs is empty after a host reboot: the bind mount's source must exist at every start.
    mkdir -p "$BPFFS_DIR/$PREFIX$i"
    if [[ $(lxc-info -n "$PREFIX$i" -s -H) != RUNNING ]]; then
      lxc-start -n "$PREFIX$i" -l INFO -o "$LXC_PATH/$PREFIX$i/lxc.log" ||
        die "$PREFIX$i did not start: see $LXC_PATH/$PREFIX$i/lxc.log"
    fi
  done
  known_hosts "$count"
  for ((i = 0; i < count; i++)); do
    wait_ssh "$i"
  done
  say "$count containers up on $BRIDGE ($HOST_IP/24): ssh -i $STATE/id_ed25519 -o UserKnownHostsFile=$STATE/known_hosts root@$(ip_of 0)"
}

containers() {
  lxc-ls -1 2>/dev/null | grep -E "^$PREFIX[0-9]+$" || true
}

down() {
  local purge=0 name
  [[ ${1:-} == --purge ]] && purge=1
  [[ $EUID -eq 0 ]] || die "needs root"
  for name in $(containers); do
    lxc-stop -n "$name" -k 2>/dev/null || true
    lxc-destroy -n "$name" >/dev/null || die "cannot destroy $name (lxc-destroy -n $name)"
  done
  # Pins left by the containers' nodes (their links went with the containers' interfaces).
  rm -rf "$BPFFS_DIR"
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link del "$BRIDGE"
  fi
  rm -f "$STATE/known_hosts"
  if [[ $purge == 1 ]]; then
    rm -rf "$BASE" "$STATE/id_ed25519" "$STATE/id_ed25519.pub"
  fi
  say "down"
}

status() {
  local name
  for name in $(containers); do
    printf '%-10s %-8s %s\n' "$name" "$(lxc-info -n "$name" -s -H)" "$(lxc-info -n "$name" -i -H | head -1)"
  done
}

# One lxc-lab.sh at a time per state dir (the names, addresses and known_hosts are shared).
lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/lock"
  flock -w 600 9 || die "another lxc-lab.sh still runs after 10 minutes (lock $STATE/lock)"
}

case "${1:-}" in
  up) shift; lock; up "$@" ;;
  down) shift; lock; down "$@" ;;
  status) status ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
