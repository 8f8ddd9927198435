#!/usr/bin/env bash
# Compares edge-node binaries built differently (say `release` and `dist`) on
# what a build setting can change: how long a component takes to compile, and
# cold `hello` invocations per second (wrk -t1 -c32, 3 s warm-up then 8 s,
# fresh instance per call). With --pinned, warm calls instead: 32 sessions in
# local-state mode, each with its pinned instance, called in turn. Each binary
# runs alone, in the order given; give each twice (interleaved) to see the
# noise.
# Usage: scripts/compare-binaries.sh [--component FILE.wasm] [--pinned] BIN...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/procs.sh
component=""
pinned=""
while [ $# -gt 0 ]; do
  case "$1" in
    --component) component=$2; shift 2 ;;
    --pinned) pinned=1; shift ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--component FILE.wasm] [--pinned] BIN..."; exit 2; }
command -v wrk >/dev/null || { echo "missing wrk (apt-get install wrk)"; exit 2; }
(cd guest-examples && cargo build --release --locked --target wasm32-wasip2 --target-dir ../target/guests -p hello)
HELLO=target/guests/wasm32-wasip2/release/hello.wasm

printf 'wrk.method = "POST"\n' > "$work/post.lua"
cat > "$work/pinned.lua" <<'LUA'
wrk.method = "POST"
counter = 0
request = function()
  counter = counter % 32 + 1
  wrk.headers["edge-session"] = "warm-" .. (counter - 1)
  return wrk.format()
end
LUA
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
  script="$work/post.lua"
  what="hello cold"
  if [ -n "$pinned" ]; then
    for i in $(seq 0 31); do
      curl -sf -o /dev/null -X PUT -H 'content-type: application/json' \
        -d '{"mode":"local"}' "$url/v1/sessions/warm-$i/mode"
      curl -sf -o /dev/null -X POST -H "edge-session: warm-$i" "$url/v1/functions/hello/invoke"
    done
    script="$work/pinned.lua"
    what="hello warm (32 pinned sessions)"
  fi
  wrk -t1 -c32 -d3s -s "$script" "$url/v1/functions/hello/invoke" > /dev/null
  rps=$(wrk -t1 -c32 -d8s -s "$script" "$url/v1/functions/hello/invoke" | awk '/Requests\/sec/ {print $2}')
  echo "$bin: $(stat -c %s "$bin") bytes, compile $compile, $what $rps req/s"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
