#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what cargo does not
# (the wasm32-wasip2 target; redis-server for the remote-store tests;
# componentize-py for the Python template), then
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

# componentize-py (PyPI), for the Python template's test, in a venv of its own.
PYTOOLS="$PWD/target/tools/py"
COMPONENTIZE_PY_VERSION=0.25.1
if ! "$PYTOOLS/bin/componentize-py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
  echo "== installing componentize-py $COMPONENTIZE_PY_VERSION"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$PYTOOLS"
  python3 -m venv "$PYTOOLS"
  "$PYTOOLS/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
export EDGE_COMPONENTIZE_PY="$PYTOOLS/bin/componentize-py"

echo "== cargo test"
cargo test --workspace --locked "$@"
