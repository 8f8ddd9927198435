#!/usr/bin/env bash
# How long a release node takes to compile a new function of each template
# language: `edge-node new` in a temporary directory, built with the
# language's own tool, deployed to a fresh release node (default settings,
# then `--profile pi`; the default limits, a compile past them fails the
# script), `compile_ms` read from the deploy answer. Each
# deploy goes to a fresh data dir (identical bytes are not compiled twice on
# one node). Prints a markdown table of medians with the smallest and
# largest.
#
#   scripts/compile-times.sh [--runs N]      (default 3)
#
# Needs the tools the test command installs (./scripts/test.sh puts
# componentize-py under target/tools/py and componentize-js under
# target/tools/js).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
py="$PWD/target/tools/py/bin/componentize-py"
js="$PWD/target/tools/js/node_modules"
for tool in "$py" "$js/.bin/componentize-js"; do
  [ -x "$tool" ] || { echo "$tool missing: run ./scripts/test.sh first (it installs it)" >&2; exit 1; }
done
cargo build --release --locked -p edge-node --bin edge-node
node_bin="$PWD/target/release/edge-node"
. scripts/lib/procs.sh

# The three templates, built as their READMEs say.
for lang in rust python js; do
  "$node_bin" new "t$lang" --lang "$lang" --dir "$work" >/dev/null
done
(cd "$work/trust" && CARGO_TARGET_DIR="$PWD/../rust-target" cargo build --release --quiet)
cp "$work/rust-target/wasm32-wasip2/release/trust.wasm" "$work/rust.wasm"
(cd "$work/tpython" && "$py" -d wit -w function componentize app -o "$work/python.wasm")
ln -s "$js" "$work/tjs/node_modules"
(cd "$work/tjs" && npm run --silent build && cp tjs.wasm "$work/js.wasm")

# compile_ms of deploying $2 to a fresh node started with the flags after.
deploy_once() {
  local wasm=$1; shift
  local port; port=$(free_port)
  local data; data=$(mktemp -d -p "$work")
  "$node_bin" serve --listen "127.0.0.1:$port" --data-dir "$data" "$@" >"$data.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
  done
  curl -sf -X PUT --data-binary "@$wasm" "http://127.0.0.1:$port/v1/functions/f" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["compile_ms"])'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

stats() { # median [low–high] of the numbers given, in seconds
  python3 -c 'import sys,statistics as s; v=sorted(float(x)/1000 for x in sys.argv[1:]); print(f"{s.median(v):.2f} s [{v[0]:.2f}–{v[-1]:.2f}]")' "$@"
}

echo "| template | size | release node | release node, \`--profile pi\` |"
echo "|---|---:|---:|---:|"
for lang in rust python js; do
  wasm="$work/$lang.wasm"
  size=$(python3 -c "import os; print(f'{os.path.getsize(\"$wasm\")/1e6:.2f} MB')")
  plain=(); pi=()
  for _ in $(seq "$runs"); do
    plain+=("$(deploy_once "$wasm")")
    pi+=("$(deploy_once "$wasm" --profile pi)")
  done
  echo "| $lang | $size | $(stats "${plain[@]}") | $(stats "${pi[@]}") |"
done
echo
echo "($runs runs each; $(nproc) cores; $(date -u +%Y-%m-%d))"
