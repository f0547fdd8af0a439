#!/usr/bin/env bash
# Brings up (or down) an example topology to curl through, in DSR or IPIP mode:
#
#   sudo scripts/example.sh dsr up     # or: ipip up
#   sudo nsenter --net=/run/netns/ex-client -- curl http://198.51.100.10/
#   sudo target/debug/balancer stats --pin-dir /sys/fs/bpf/balancer-example
#   sudo scripts/example.sh dsr down
#
# LAN 198.18.0.0/24 (scripts/netns-lan.sh): ex-client .1, ex-lb .2 (balancer on eth0), ex-be1..3
# .3-.5, each serving its name over HTTP on port 80 of the VIP 198.51.100.10, which it holds on
# loopback. The client routes the VIP via the balancer. Config: examples/demo.toml (DSR) or
# examples/ipip.toml. Needs a built balancer (cargo xtask build-ebpf && cargo build -p balancer)
# or BALANCER=/path/to/balancer.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
mode=${1:-} action=${2:-}
case "$mode" in dsr) config="$root/examples/demo.toml" ;; ipip) config="$root/examples/ipip.toml" ;; *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;; esac
name=ex
vip=198.51.100.10
l7vip=198.51.100.20
l7key=/tmp/balancer-demo-cookie.key
pins=/sys/fs/bpf/balancer-example
state=/run/balancer-example
bal=${BALANCER:-$root/target/debug/balancer}
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$name-$ns" -- "$@"; }
# Starts a program in a namespace in the background and records its PID (nsenter execs the
# program, so the PID is the program's own; a backgrounded shell function's would not be).
bg_in_ns() { local ns=$1 pidfile=$2 log=$3; shift 3; nsenter --net="/run/netns/$name-$ns" -- "$@" > "$log" 2>&1 & echo $! > "$pidfile"; }

down() {
  for f in "$state"/*.pid; do
    [ -e "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 0.5
  [ -x "$bal" ] && "$bal" teardown --stop --pin-dir "$pins" >/dev/null 2>&1 || true
  "$here/netns-lan.sh" destroy "$name"
  rm -rf "$pins" "$state" "$l7key"
}

case "$action" in
up)
  [ -x "$bal" ] || { echo "no balancer binary at $bal: cargo xtask build-ebpf && cargo build -p balancer" >&2; exit 1; }
  trap 'echo "bringing the example up failed; tearing it down" >&2; down' ERR
  mkdir -p "$state"
  "$here/netns-lan.sh" create "$name" client lb be1 be2 be3
  for i in 1 2 3; do
    be=be$i
    in_ns "$be" ip addr add "$vip/32" dev lo
    in_ns "$be" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
    mkdir -p "$state/www-$be" && echo "$be" > "$state/www-$be/index.html"
    bg_in_ns "$be" "$state/$be.pid" "$state/$be.log" \
      python3 -m http.server 80 --directory "$state/www-$be" --protocol HTTP/1.1
    if [ "$mode" = ipip ]; then
      in_ns "$be" "$bal" decap attach --iface eth0 --pin-dir "$pins" >/dev/null
    fi
  done
  in_ns client ip route add "$vip/32" via 198.18.0.2
  # examples/demo.toml also has an L7 VIP (sticky sessions), terminated on the balancer itself.
  in_ns client ip route add "$l7vip/32" via 198.18.0.2
  in_ns lb ip addr add "$l7vip/32" dev lo
  (umask 077 && head -c 32 /dev/urandom | base64 > "$l7key")
  # The bridge port facing the balancer must take the frames it sends back out with XDP_TX.
  in_ns fab "$bal" xdp-peer attach --iface p2 --pin-dir "$pins" >/dev/null
  # Its own pins and state file (runtime overrides), removed by `down`.
  { echo "pin_dir = \"$pins\""; echo "state_file = \"$state/overrides.json\""; cat "$config"; } > "$state/balancer.toml"
  bg_in_ns lb "$state/balancer.pid" "$state/balancer.log" "$bal" run --config "$state/balancer.toml"
  for _ in $(seq 50); do grep -q "balancer running" "$state/balancer.log" && break; sleep 0.2; done
  grep -q "balancer running" "$state/balancer.log" || { cat "$state/balancer.log" >&2; false; }
  echo "up ($mode). Try:"
  echo "  nsenter --net=/run/netns/$name-client -- curl http://$vip/"
  [ "$mode" = dsr ] && echo "  nsenter --net=/run/netns/$name-client -- curl -c /tmp/jar -b /tmp/jar http://$l7vip/   # sticky (L7)"
  echo "  $bal stats --pin-dir $pins"
  echo "  tail -f $state/balancer.log"
  echo "  $0 $mode down"
  ;;
down) down ;;
*) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
