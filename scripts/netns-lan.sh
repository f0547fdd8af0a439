#!/usr/bin/env bash
# A LAN of network namespaces for trying the balancer by hand; the same shape the Rust tests
# build (tests/src/netns.rs): hosts on one L2 segment through a bridge in its own namespace.
#
#   scripts/netns-lan.sh create NAME HOST...   # e.g. create demo client lb be1 be2
#   scripts/netns-lan.sh destroy NAME          # removes every namespace NAME-*
#
# Host N (from 1) is namespace NAME-HOST with eth0 = 198.18.0.N/24, MAC 02:b4:17:00:00:0N, whose
# peer pN is a port of br0 in NAME-fab. Checksum offloads are off on every veth (a frame that XDP
# forwards has lost what the kernel would need to finish a partial checksum). GRO is on for the
# bridge ports so they accept frames sent with XDP_TX.
#
# Run commands on a host with: nsenter --net=/run/netns/NAME-HOST -- CMD  (keeps /sys/fs/bpf)
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 name=$2; shift 2

case "$cmd" in
create)
  [ $# -ge 1 ] || usage
  fab="$name-fab"
  trap 'echo "creation failed; cleaning up" >&2; "$0" destroy "$name"' ERR
  ip netns add "$fab"
  ip -n "$fab" link set lo up
  ip -n "$fab" link add br0 type bridge
  ip -n "$fab" link set br0 up
  n=0
  for host in "$@"; do
    n=$((n + 1))
    ns="$name-$host"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$fab" link add "p$n" type veth peer name eth0 netns "$ns"
    ip -n "$fab" link set "p$n" master br0 up
    ip netns exec "$fab" ethtool -K "p$n" rx off tx off gro on >/dev/null
    ip -n "$ns" link set eth0 address "02:b4:17:00:00:$(printf %02x "$n")"
    ip -n "$ns" addr add "198.18.0.$n/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip netns exec "$ns" ethtool -K eth0 rx off tx off >/dev/null
    echo "$ns: eth0 198.18.0.$n"
  done
  ;;
destroy)
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$name-" || true); do
    ip netns del "$ns"
  done
  ;;
*) usage ;;
esac
