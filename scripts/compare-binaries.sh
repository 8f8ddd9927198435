#!/usr/bin/env bash
# Compares edge-node binaries built differently (say `release` and `dist`) on
# what a build setting can change: how long a component takes to compile, and
# cold `hello` invocations per second (wrk -t1 -c32, 3 s warm-up then 8 s,
# fresh instance per call). Each binary runs alone, in the order given; give
# each twice to see the noise.
# Usage: scripts/compare-binaries.sh [--component FILE.wasm] BIN...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/procs.sh
component=""
if [ "${1:-}" = "--component" ]; then component=$2; shift 2; fi
[ $# -ge 1 ] || { echo "usage: $0 [--component FILE.wasm] BIN..."; exit 2; }
command -v wrk >/dev/null || { echo "missing wrk (apt-get install wrk)"; exit 2; }
(cd guest-examples && cargo build --release --locked --target wasm32-wasip2 --target-dir ../target/guests -p hello)
HELLO=target/guests/wasm32-wasip2/release/hello.wasm

printf 'wrk.method = "POST"\n' > "$work/post.lua"
for bin in "$@"; do
  data="$work/data-$RANDOM"
  "$bin" serve --listen 127.0.0.1:0 --data-dir "$data" > "$work/out" 2>/dev/null &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 100); do grep -q listening "$work/out" && break; sleep 0.1; done
  url=$(sed -n 's/^edge-node listening on //p' "$work/out")
  compile="-"
  if [ -n "$component" ]; then
    compile=$(curl -sf -X PUT --data-binary "@$component" "$url/v1/functions/big" \
      | python3 -c 'import sys, json; print("%.0f ms" % json.load(sys.stdin)["compile_ms"])')
  fi
  curl -sf -o /dev/null -X PUT --data-binary "@$HELLO" "$url/v1/functions/hello"
  wrk -t1 -c32 -d3s -s "$work/post.lua" "$url/v1/functions/hello/invoke" > /dev/null
  rps=$(wrk -t1 -c32 -d8s -s "$work/post.lua" "$url/v1/functions/hello/invoke" | awk '/Requests\/sec/ {print $2}')
  echo "$bin: $(stat -c %s "$bin") bytes, compile $compile, hello $rps req/s"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
