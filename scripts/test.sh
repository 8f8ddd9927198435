#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what cargo does not
# (the wasm32-wasip2 target; redis-server for the remote-store tests;
# mosquitto for the MQTT triggers;
# componentize-py and componentize-js for the Python and JS templates), then
# builds the guests (through guest-artifacts/build.rs) and runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "== installing the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

MISSING=
command -v redis-server >/dev/null 2>&1 || MISSING="$MISSING redis-server"
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || MISSING="$MISSING mosquitto"
if [ -n "$MISSING" ]; then
  echo "== installing$MISSING"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $MISSING >/dev/null
  # The broker runs only when a test starts it.
  $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
# Debian keeps mosquitto in /usr/sbin, outside a normal user's PATH.
export PATH="$PATH:/usr/sbin"

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

# componentize-js (npm), for the JavaScript template's test.
JSTOOLS="$PWD/target/tools/js"
COMPONENTIZE_JS_VERSION=0.23.0
if ! command -v npm >/dev/null 2>&1; then
  echo "== installing node.js and npm"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
if [ "$(cat "$JSTOOLS/version" 2>/dev/null)" != "$COMPONENTIZE_JS_VERSION" ]; then
  echo "== installing componentize-js $COMPONENTIZE_JS_VERSION"
  rm -rf "$JSTOOLS" && mkdir -p "$JSTOOLS"
  npm install --prefix "$JSTOOLS" --silent --no-audit --no-fund \
    "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION"
  echo "$COMPONENTIZE_JS_VERSION" > "$JSTOOLS/version"
fi
export EDGE_JS_MODULES="$JSTOOLS/node_modules"

echo "== cargo test"
cargo test --workspace --locked "$@"
