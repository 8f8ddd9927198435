#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/fuzz_targets/) for a bounded time,
# starting from the checked-in corpus (fuzz/corpus/<target>/; new inputs go
# to a scratch copy, so the repository stays small). Needs the nightly
# toolchain; installs cargo-fuzz when missing. The first build compiles
# wasmtime with sanitizer coverage: ~10 minutes on 2 cores.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
rustup toolchain list | grep -q '^nightly' || {
  echo "needs the nightly toolchain: rustup toolchain install nightly" >&2
  exit 2
}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
failed=0
for target in workflow_spec upload state_commit; do
  scratch=$(mktemp -d)
  cp fuzz/corpus/"$target"/* "$scratch"/
  echo "== fuzz $target for ${secs}s"
  if ! cargo +nightly fuzz run -O "$target" "$scratch" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      >"$scratch.log" 2>&1; then
    failed=1
    tail -40 "$scratch.log"
  fi
  # libFuzzer's last status line: runs, coverage, corpus size.
  grep -E "^#[0-9]+.*(DONE|pulse)" "$scratch.log" | tail -1 || true
  grep -E "Done [0-9]+ runs" "$scratch.log" || true
  rm -rf "$scratch" "$scratch.log"
done
exit "$failed"
