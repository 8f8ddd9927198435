# Sourced by scripts that start edge-node processes: a work directory
# ($work) removed at exit, the processes they start (append their pids to
# $pids) killed at exit, and free_port for servers on 127.0.0.1.
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
