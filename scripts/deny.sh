#!/usr/bin/env bash
# cargo-deny (deny.toml): licenses, bans and sources, offline; advisories
# too when the RustSec database (github.com) can be fetched, and says so
# when it cannot. Installs cargo-deny when missing (~4 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deny >/dev/null || cargo install cargo-deny --locked --version 0.20.2
# cargo-deny reads the metadata of every platform's dependencies (the
# Windows-only ones too), so fetch them first; crates.io is reachable.
cargo fetch --locked
cargo deny --offline check bans licenses sources
if timeout 60 cargo deny fetch db >/dev/null 2>&1; then
  cargo deny check advisories
else
  echo "cargo deny: advisories not checked — the RustSec database (github.com) is unreachable from here"
fi
