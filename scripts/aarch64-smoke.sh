#!/usr/bin/env bash
# Cross-builds edge-node for aarch64-unknown-linux-gnu (release, as shipped to
# a Raspberry Pi) and runs a smoke test of that binary under qemu-aarch64
# user-mode emulation: upload (Cranelift compiles aarch64 code, under
# emulation), invoke, state, sessions in both modes, a workflow, a restart.
# Prints PASS/FAIL per step and the time taken; exits non-zero on a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
start_all=$(date +%s)

missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]} (apt-get install them, or run as root)"; exit 2
  fi
fi
for t in aarch64-unknown-linux-gnu wasm32-wasip2; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done

echo "== building edge-node for aarch64"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
build_start=$(date +%s)
cargo build --release --locked --target aarch64-unknown-linux-gnu -p edge-node --bin edge-node
(cd guest-examples && cargo build --release --locked --target wasm32-wasip2 --target-dir ../target/guests)
echo "build: $(( $(date +%s) - build_start ))s"
BIN=target/aarch64-unknown-linux-gnu/release/edge-node
G=target/guests/wasm32-wasip2/release
QEMU=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
file "$BIN" 2>/dev/null || true
ls -l "$BIN"

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
failures=0
check() { # name expected actual
  if [ "$2" = "$3" ]; then echo "PASS $1"; else echo "FAIL $1: expected [$2], got [$3]"; failures=$((failures + 1)); fi
}
start_node() {
  # --compile-in-process: qemu-user runs this one process, not the aarch64
  # `edge-node __compile` child the node starts to compile an upload (that
  # exec needs binfmt_misc; on a real Pi the child runs).
  "${QEMU[@]}" "$BIN" serve --profile pi --compile-in-process --listen 127.0.0.1:0 \
    --data-dir "$work/data" >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 1 600); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/^edge-node listening on //p' "$work/out")
  [ -n "$URL" ] || { echo "node did not start"; cat "$work/err"; exit 1; }
}
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

check "--version" "yes" "$("${QEMU[@]}" "$BIN" --version | grep -q 'wasmtime 48' && echo yes)"
t=$(date +%s%N); start_node; echo "start: $(ms "$t") ms"
check "arch reported" '"aarch64"' "$(curl -sf "$URL/v1/node" | grep -o '"arch":"[a-z0-9_]*"' | cut -d: -f2)"
for g in echo counter memo stage; do
  t=$(date +%s%N)
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary "@$G/$g.wasm" "$URL/v1/functions/$g")
  check "deploy $g (compiled in $(ms "$t") ms)" 201 "$code"
done
check "invoke echo" "hello from qemu" "$(curl -sf -X POST --data 'hello from qemu' "$URL/v1/functions/echo/invoke")"
for n in 1 2 3; do
  check "counter remote $n" "$n" "$(curl -sf -X POST -H 'edge-session: s' "$URL/v1/functions/counter/invoke")"
done
curl -sf -X PUT -H 'content-type: application/json' -d '{"mode":"local"}' "$URL/v1/sessions/s/mode" >/dev/null
check "counter local" "4" "$(curl -sf -X POST -H 'edge-session: s' "$URL/v1/functions/counter/invoke")"
for n in 1 2 3; do
  check "memo pinned $n" "$n" "$(curl -sf -X POST -H 'edge-session: s' "$URL/v1/functions/memo/invoke")"
done
check "state server" "4" "$(curl -sf "$URL/v1/sessions/s/state/count")"
spec='{"tasks":[{"id":"a","function":"stage","args":"name=a"},{"id":"b","function":"stage","args":"name=b"},{"id":"c","function":"stage","args":"name=c"}],"edges":[["a","b"],["b","c"]],"states":{"S":["a","c"]},"initial":{"S":""},"model":"state-prop","input":"wf"}'
result=$(curl -sf -X POST -H 'content-type: application/json' -d "$spec" "$URL/v1/workflows")
check "workflow output" '"wf"' "$(echo "$result" | grep -o '"outputs_text":{"c":"[^"]*"' | cut -d: -f3)"
check "workflow state" '"a;c;"' "$(echo "$result" | grep -o '"text":"a;c;"' | cut -d: -f2)"
kill -TERM "$pid"; wait "$pid" || true; pid=
t=$(date +%s%N); start_node
check "restart: first reply" "4" "$(curl -sf "$URL/v1/sessions/s/state/count")"
check "restart: echo" "again" "$(curl -sf -X POST --data again "$URL/v1/functions/echo/invoke")"
echo "restart to first reply: $(ms "$t") ms"
check "restart: nothing recompiled" "edge_compilations_total 0" "$(curl -sf "$URL/metrics" | grep '^edge_compilations_total ')"
echo "aarch64 smoke: $failures failure(s), $(( $(date +%s) - start_all ))s in all"
[ "$failures" = 0 ]
