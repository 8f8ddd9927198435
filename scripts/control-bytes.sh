#!/usr/bin/env bash
# Control bytes per task of workflow messages: three edge-nodes on loopback,
# the 19-task DAG with a 10 kB and a 2 MB client input, every model, one
# timed run each (`links-runner` prints the traffic the nodes counted).
#
#   scripts/control-bytes.sh [EDGE_NODE_BINARY]
#
# With a binary built from another commit, the same workloads measure that
# commit (the runner speaks only the public API).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed 2>/dev/null | grep -q wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --locked -p edge-node --bin edge-node -p edge-benches --bin links-runner -p edge-guest-artifacts
BIN=${1:-$PWD/target/debug/edge-node}
STAGE=$PWD/target/guests/wasm32-wasip2/release/stage.wasm
. scripts/lib/procs.sh
pa=$(free_port); pb=$(free_port); pc=$(free_port)
a=http://127.0.0.1:$pa b=http://127.0.0.1:$pb c=http://127.0.0.1:$pc
start() { # name port peers...
  local name=$1 p=$2; shift 2
  "$BIN" serve --listen "127.0.0.1:$p" --data-dir "$work/$name" --public-url "http://127.0.0.1:$p" \
    --max-upload-bytes 67108864 "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}
start a "$pa" --peer "b=$b" --peer "c=$c"
start b "$pb" --peer "a=$a" --peer "c=$c"
start c "$pc" --peer "a=$a" --peer "b=$b"
for u in "$a" "$b" "$c"; do
  for _ in $(seq 100); do curl -sf "$u/healthz" >/dev/null && break; sleep 0.1; done
done
target/debug/links-runner run --entry "$a" --node "b=$b" --node "c=$c" --rate 0 --runs 1 \
  --workload dag19-a10k --workload dag19-a2000k --stage "$STAGE" --csv "$work/out.csv"
