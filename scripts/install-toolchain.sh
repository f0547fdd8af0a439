#!/usr/bin/env bash
# Installs what building and testing balancer needs, and nothing when it is all there already.
#
# - Debian's Rust (rustc-web, cargo-web, rust-web-src) and its prebuilt `core` for
#   bpfel-unknown-none (libstd-rust-web-dev-bpf): the toolchain that builds the XDP program.
# - llvm-N-dev and bpf-linker 0.13.0 built against it, where N is the LLVM major version of
#   Debian's rustc (`/usr/bin/rustc -vV`): bpf-linker must link the LLVM that rustc emits for.
# - Debian's clippy (rust-web-clippy), which `cargo xtask lint` runs on the eBPF crate, and
#   cargo-deny $CARGO_DENY_VERSION (licenses, duplicate versions, sources, advisories).
# - The tools the tests and the demo run: iproute2, bpftool, ethtool, curl, ping, python3, nsenter,
#   openssl (TLS certificates and s_client), python3-websockets (a WebSocket client), chromium
#   (a browser loading a page over a TLS VIP), and
#   Tomcat 10 and Jetty 9, the application servers the L7 tests balance.
#
# With --bench, also the contenders `cargo xtask bench` measures against: haproxy, nginx, wrk.
#
# Needs root for apt (run with sudo). Userspace builds with the machine's rustup toolchain.
set -euo pipefail

BPF_LINKER_VERSION=0.13.0
CARGO_DENY_VERSION=0.20.2
say() { printf 'install-toolchain: %s\n' "$*" >&2; }

# rustup's proxies in ~/.cargo/bin shadow Debian's cargo/rustc on PATH: always use Debian's by
# path, and keep rustup's own variables out of the way.
unset RUSTUP_TOOLCHAIN RUSTC RUSTDOC RUSTC_WRAPPER CARGO CARGO_TARGET_DIR RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
export PATH="$HOME/.cargo/bin:$PATH"

apt_packages=(rustc-web cargo-web rust-web-src libstd-rust-web-dev-bpf rust-web-clippy
              iproute2 bpftool ethtool curl python3 util-linux procps tomcat10 jetty9
              openssl python3-websockets chromium iputils-ping bird2)
if [ "${1:-}" = "--bench" ]; then
  apt_packages+=(haproxy nginx-light wrk nftables)
fi

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

apt_updated=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages: $*; run this script as root (sudo $0)"
    exit 1
  fi
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

llvm_major=$(/usr/bin/rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
if [ -z "$llvm_major" ]; then
  say "cannot read the LLVM version from /usr/bin/rustc -vV"
  exit 1
fi
dpkg-query -W -f='${Status}' "llvm-$llvm_major-dev" 2>/dev/null | grep -q 'install ok installed' \
  || apt_install "llvm-$llvm_major-dev"

linker_ok() {
  command -v bpf-linker >/dev/null 2>&1 || return 1
  [ "$(bpf-linker --version 2>/dev/null)" = "bpf-linker $BPF_LINKER_VERSION" ] || return 1
  # Read ldd's whole output first: `ldd | grep -q` fails under pipefail when grep stops early.
  local libs
  libs=$(ldd "$(command -v bpf-linker)")
  [[ "$libs" == *"libLLVM.so.$llvm_major"* ]]
}
if ! linker_ok; then
  if ! command -v cargo >/dev/null 2>&1; then
    say "no rustup cargo on PATH to build bpf-linker with; install Rust with rustup first"
    exit 1
  fi
  say "building bpf-linker $BPF_LINKER_VERSION against LLVM $llvm_major (a few minutes)"
  LLVM_PREFIX="/usr/lib/llvm-$llvm_major" cargo install bpf-linker --version "$BPF_LINKER_VERSION" \
    --locked --force --no-default-features --features "llvm-$llvm_major"
  linker_ok || { say "bpf-linker was built but does not link LLVM $llvm_major"; exit 1; }
fi
if [ "$(cargo-deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
  say "building cargo-deny $CARGO_DENY_VERSION (a few minutes)"
  cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --force
fi
say "ok: Debian rustc $(/usr/bin/rustc -V | cut -d' ' -f2) (LLVM $llvm_major), bpf-linker $BPF_LINKER_VERSION, cargo-deny $CARGO_DENY_VERSION"
