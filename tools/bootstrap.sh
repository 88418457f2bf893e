#!/usr/bin/env bash
# Installs what building and testing the project needs on a fresh Debian 12 machine (root).
# Idempotent: every step checks first and skips what is already there.
set -euo pipefail

log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get, bpffs and XDP need it)"

# Debian packages: LLVM 22 for bpf-linker, network tools for the namespace tests and benchmarks,
# Prometheus (the lab's --monitoring, promtool for the alert rules), headless Chromium (the
# status page's test), and LXC, debootstrap, SSH and a Python venv for Ansible (deploy/).
DEB_PACKAGES=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev iproute2 nftables iptables
  bpftool clang-22 pkg-config build-essential ethtool procps iputils-ping prometheus chromium
  lxc debootstrap openssh-client python3-venv)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages: present"
fi

# bpf-linker 0.13 against LLVM 22 (the LLVM of the installed nightly).
export PATH="$HOME/.cargo/bin:$PATH"
if bpf-linker --version 2>/dev/null | grep -q '^bpf-linker 0\.13'; then
  log "bpf-linker: $(bpf-linker --version)"
else
  log "building bpf-linker 0.13 against LLVM 22 (about a minute)"
  # llvm-sys reads LLVM_SYS_221_PREFIX; bpf-linker's own build script reads LLVM_PREFIX (else it
  # takes whichever llvm-config is first in PATH).
  LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 LLVM_PREFIX=/usr/lib/llvm-22 \
    cargo install --quiet --locked bpf-linker --version '^0.13' \
    --no-default-features --features llvm-22
fi

# rust-src for the nightly that builds the eBPF crate (build-std).
rustup toolchain list | grep -q '^nightly' || die "the 'nightly' toolchain is missing: rustup toolchain install nightly"
if rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "nightly rust-src: present"
else
  log "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly >/dev/null
fi

if rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^clippy'; then
  log "nightly clippy: present"
else
  log "adding clippy to nightly (lints the eBPF crate)"
  rustup component add clippy --toolchain nightly >/dev/null
fi

# cargo-fuzz 0.13 for the fuzz targets of the types crate (tools/fuzz.sh); they build with nightly.
if cargo fuzz --version 2>/dev/null | grep -q '^cargo-fuzz 0\.13'; then
  log "cargo-fuzz: $(cargo fuzz --version)"
else
  log "building cargo-fuzz 0.13 (about a minute)"
  cargo install --quiet --locked cargo-fuzz --version '^0.13'
fi

# ansible-core and ansible-lint, pinned, in their own venv (deploy/ansible; no Galaxy collection).
ANSIBLE_VENV=/var/cache/xdp-node/ansible
ANSIBLE_PINS=(ansible-core==2.19.14 ansible-lint==26.10.1)
installed="$("$ANSIBLE_VENV/bin/pip" freeze 2>/dev/null || true)"
if grep -qx "${ANSIBLE_PINS[0]}" <<<"$installed" && grep -qx "${ANSIBLE_PINS[1]}" <<<"$installed"; then
  log "ansible: ${ANSIBLE_PINS[*]} in $ANSIBLE_VENV"
else
  log "installing ${ANSIBLE_PINS[*]} into $ANSIBLE_VENV"
  /usr/bin/python3 -m venv "$ANSIBLE_VENV"
  "$ANSIBLE_VENV/bin/pip" install --quiet --disable-pip-version-check "${ANSIBLE_PINS[@]}"
fi

# bpffs for pinned maps and links; tracefs for tracepoints.
if ! mountpoint -q /sys/fs/bpf; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf || die "cannot mount bpffs on /sys/fs/bpf (needs CAP_SYS_ADMIN)"
fi
if [ -d /sys/kernel/tracing ] && ! mountpoint -q /sys/kernel/tracing; then
  log "mounting tracefs on /sys/kernel/tracing"
  mount -t tracefs nodev /sys/kernel/tracing || log "warning: cannot mount tracefs; tracepoints unavailable"
fi
[ -e /sys/kernel/btf/vmlinux ] || log "warning: /sys/kernel/btf/vmlinux missing: this kernel has no BTF"
log "ready"
