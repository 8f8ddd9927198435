#!/usr/bin/env bash
# Cold vs warm start, side by side with `wasmtime serve` and a plain hyper
# server, in one run: builds what it needs (release), then runs the bench
# runner. Results go to bench-results/<name>/ (results.md, CSVs, SVG plots).
#
#   scripts/bench.sh [--duration SECS] [--name NAME] [--sessions N]
#
# Needs wrk (apt-get install wrk) and wasmtime-cli 48.0.8 (the runner prints
# the cargo install command when it is missing). About 3 minutes with the
# default 5 s per point, not counting builds.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=0
command -v wrk >/dev/null || { echo "missing wrk: apt-get install wrk" >&2; missing=1; }
if ! command -v wasmtime >/dev/null && [ ! -x "$HOME/.cargo/bin/wasmtime" ]; then
  echo "missing wasmtime-cli 48.0.8: cargo install wasmtime-cli --version 48.0.8 --locked \\" >&2
  echo "  --no-default-features --features serve,run,compile,cranelift,cache,config,pooling-allocator,parallel-compilation,component-model,component-model-async,logging,clap/default" >&2
  missing=1
fi
[ "$missing" = 0 ] || exit 2
rustup target list --installed 2>/dev/null | grep -q wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --locked -p edge-node --bin edge-node -p edge-benches --bin bench-runner --bin plain-hyper
exec target/release/bench-runner "$@"
