#!/usr/bin/env bash
# The chains/DAGs paper's experiments on an emulated edge network: network
# namespaces for a client and three edge-node hosts, veth pairs to a bridge,
# `tc tbf` limiting every link (both directions) to the rate under test.
#
#   sudo scripts/edge-links.sh            # reduced sweep (< 20 min)
#   sudo scripts/edge-links.sh --full     # every rate and workload (hours at 1 Mb/s)
#   options: --name NAME (results in bench-results/links-NAME/), --runs N
#
# The kernel here has tbf but not netem, so the paper's 1 ms per-link delay
# is left out: links add only serialisation at the rate (+ ~30 µs of veth).
# Namespaces are named edge-links-*; they are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
full=0; name=$(date -u +%Y%m%d-%H%M%S); runs=3
while [ $# -gt 0 ]; do
  case $1 in
    --full) full=1 ;;
    --name) name=$2; shift ;;
    --runs) runs=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
missing=()
[ "$(id -u)" = 0 ] || missing+=("root (network namespaces and tc need it): run with sudo")
command -v ip >/dev/null || missing+=("ip: apt-get install iproute2")
command -v tc >/dev/null || missing+=("tc: apt-get install iproute2")
command -v ethtool >/dev/null || missing+=("ethtool (to turn segmentation offloads off so tbf sees real packets): apt-get install ethtool")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'missing: %s\n' "${missing[@]}" >&2
  exit 2
fi

if [ "$full" = 1 ]; then
  rates=(1 2 5 10 20 50 100)
  workloads=()
else
  rates=(1 10 100)
  workloads=(--workload chain3-s3-a10k --workload chain6-s6-a100k --workload dag19-a10k)
fi

rustup target list --installed 2>/dev/null | grep -q wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --locked -p edge-node --bin edge-node -p edge-benches --bin links-runner
BIN=$PWD/target/release
STAGE=$PWD/target/guests/wasm32-wasip2/release/stage.wasm
out=$PWD/bench-results/links-$name
mkdir -p "$out"
work=$(mktemp -d)
P=edge-links
hosts=(client a b c)
declare -A ip=([client]=10.77.0.1 [a]=10.77.0.2 [b]=10.77.0.3 [c]=10.77.0.4)
pids=()

drop_namespaces() {
  for h in "${hosts[@]}" sw; do ip netns del "$P-$h" 2>/dev/null || true; done
}
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  drop_namespaces
  rm -rf "$work"
}
trap cleanup EXIT
drop_namespaces # left over from an interrupted run

ip netns add "$P-sw"
ip -n "$P-sw" link add br0 type bridge
ip -n "$P-sw" link set br0 up
for h in "${hosts[@]}"; do
  ip netns add "$P-$h"
  ip link add "eth-$h" type veth peer name "port-$h"
  ip link set "eth-$h" netns "$P-$h"
  ip link set "port-$h" netns "$P-sw"
  ip -n "$P-$h" link set "eth-$h" name eth0
  ip -n "$P-$h" addr add "${ip[$h]}/24" dev eth0
  ip -n "$P-$h" link set eth0 up
  ip -n "$P-$h" link set lo up
  ip -n "$P-sw" link set "port-$h" master br0
  ip -n "$P-sw" link set "port-$h" up
  ip netns exec "$P-$h" ethtool -K eth0 tso off gso off gro off >/dev/null 2>&1 || true
  ip netns exec "$P-sw" ethtool -K "port-$h" tso off gso off gro off >/dev/null 2>&1 || true
done

set_rate() { # Mb/s on every link, both directions
  local mbit=$1 burst
  burst=$(( mbit * 1000000 / 8 / 100 )); [ "$burst" -lt 3200 ] && burst=3200
  for h in "${hosts[@]}"; do
    ip netns exec "$P-$h" tc qdisc replace dev eth0 root tbf rate "${mbit}mbit" burst "$burst" latency 1s
    ip netns exec "$P-sw" tc qdisc replace dev "port-$h" root tbf rate "${mbit}mbit" burst "$burst" latency 1s
  done
}

start_node() { # host, extra args...
  local h=$1; shift
  ip netns exec "$P-$h" env EDGE_LOG=warn "$BIN/edge-node" serve \
    --listen "${ip[$h]}:7878" --public-url "http://${ip[$h]}:7878" \
    --data-dir "$work/$h" --max-invoke-bytes 67108864 "$@" >"$out/node-$h.log" 2>&1 &
  pids+=($!)
}
start_node b
start_node c
start_node a --peer "b=http://${ip[b]}:7878" --peer "c=http://${ip[c]}:7878"
for h in a b c; do
  for _ in $(seq 1 100); do
    ip netns exec "$P-client" bash -c "exec 3<>/dev/tcp/${ip[$h]}/7878" 2>/dev/null && break
    sleep 0.1
  done
done

started=$(date +%s)
csv=$out/links.csv
for r in "${rates[@]}"; do
  set_rate "$r"
  ip netns exec "$P-client" "$BIN/links-runner" run --entry "http://${ip[a]}:7878" \
    --node "b=http://${ip[b]}:7878" --node "c=http://${ip[c]}:7878" \
    --rate "$r" --runs "$runs" --stage "$STAGE" --csv "$csv" "${workloads[@]}"
done
"$BIN/links-runner" plot --csv "$csv" --out "$out"
echo "sweep took $(( $(date +%s) - started )) s; results in $out"
