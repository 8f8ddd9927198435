#!/usr/bin/env bash
# The local/remote-phases paper's Fig. 3 and Fig. 4 on real nodes (release
# build; a fresh `edge-node serve` process per point; a real redis-server
# behind a relay that delays every byte by --link-ms each way). Results (CSV, SVG,
# markdown) go to bench-results/phases-<name>/.
#
#   scripts/phases.sh [--name NAME] [--fig3-only|--fig4-only] [runner options…]
# (options of one figure, e.g. --clients, only with --fig3-only or --fig4-only)
#
# About 20 minutes for Fig. 3 and 15 for Fig. 4 with the defaults (30 s per
# point); `target/release/phases-runner --help` lists the options.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$(date -u +%Y%m%d-%H%M%S); figs=(fig3 fig4); args=()
while [ $# -gt 0 ]; do
  case $1 in
    --name) name=$2; shift ;;
    --fig3-only) figs=(fig3) ;;
    --fig4-only) figs=(fig4) ;;
    *) args+=("$1") ;;
  esac
  shift
done
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
rustup target list --installed 2>/dev/null | grep -q wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --locked -p edge-node --bin edge-node -p edge-benches --bin phases-runner
out=bench-results/phases-$name
for f in "${figs[@]}"; do
  target/release/phases-runner "$f" --out "$out" "${args[@]}"
done
echo "results in $out"
