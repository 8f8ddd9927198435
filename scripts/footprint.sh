#!/usr/bin/env bash
# Footprint of edge-node as a device gets it (the `dist` build profile:
# whole-program LTO, no symbols), as the README reports it: binary size, idle
# RSS, and RSS after 100 deployed functions and 100 pinned sessions.
# Usage: scripts/footprint.sh [--profile pi|default]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=pi
[ "${1:-}" = "--profile" ] && profile=${2:-pi}
command -v curl >/dev/null || { echo "missing curl"; exit 2; }
cargo build --profile dist --locked -p edge-node --bin edge-node
(cd guest-examples && cargo build --release --locked --target wasm32-wasip2 --target-dir ../target/guests)
BIN=target/dist/edge-node
G=target/guests/wasm32-wasip2/release
echo "binary: $(stat -c %s "$BIN") bytes (dist profile: fat LTO, symbols stripped)"
work=$(mktemp -d)
"$BIN" serve --profile "$profile" --listen 127.0.0.1:0 --data-dir "$work/data" --max-local-sessions 128 --max-instances 160 >"$work/out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do grep -q listening "$work/out" && break; sleep 0.1; done
URL=$(sed -n 's/^edge-node listening on //p' "$work/out")
rss() { awk '/VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$pid/status"; }
sleep 0.5
echo "idle RSS: $(rss)"
# 100 different components: memo with a custom section naming the copy
# (identical bytes would share one compiled artifact).
for i in $(seq 1 100); do
  { cat "$G/memo.wasm"; printf '\x00\x08\x07copy%03d' "$i"; } > "$work/memo-$i.wasm"
  curl -sf -o /dev/null -X PUT --data-binary "@$work/memo-$i.wasm" "$URL/v1/functions/memo-$i"
done
echo "RSS with 100 functions: $(rss)"
for i in $(seq 1 100); do
  curl -sf -o /dev/null -X PUT -H 'content-type: application/json' -d '{"mode":"local"}' "$URL/v1/sessions/p$i/mode"
  curl -sf -o /dev/null -X POST -H "edge-session: p$i" "$URL/v1/functions/memo-$i/invoke"
done
echo "RSS with 100 functions and 100 pinned sessions: $(rss)"
