#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what cargo does not
# (the wasm32-wasip2 target; redis-server for the remote-store tests), then
# builds the guests (through guest-artifacts/build.rs) and runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "== installing the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

echo "== cargo test"
cargo test --workspace --locked "$@"
