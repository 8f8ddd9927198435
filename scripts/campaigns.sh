#!/usr/bin/env bash
# The long hardening campaigns (RELIABILITY.md): the quick tests of the
# README test command, scaled up, with their figures printed. About 20-25
# minutes on a 2-core machine after the build.
#
#   scripts/campaigns.sh
#
# - kill -9 at >= 1,000 random points during acknowledged local-state writes,
#   and at 300 during uploads
# - 10,000 mutated components through the upload endpoint
# - 400 workflow runs with the middle node killed, the full disk, the
#   compile bombs and the HTTP abuse tests
# - ten 30 s runs of concurrent stateful load: 64 clients over 64 local
#   sessions, 64 clients on ONE remote session, transitions meanwhile,
#   /healthz every 100 ms (the load that once wedged the node)
# - ten full-disk cycles under a restart-on-failure supervisor
# (The hostile-guest campaign needs a release build: see RELIABILITY.md.)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "missing redis-server: run scripts/test.sh once" >&2; exit 2; }
started=$(date +%s)
cargo build --locked --tests -p edge-node
failed=0
run() { # test file, test name, env...
  local test=$1 filter=$2 log
  shift 2
  log=$(mktemp)
  echo "== $test::$filter $*"
  if ! env "$@" cargo test --locked -q -p edge-node --test "$test" -- --nocapture --exact "$filter" >"$log" 2>&1; then
    failed=1
  fi
  grep -E "kill -9|mutants|bytes →|neighbour|refused for|spinning calls|bytes sent|slowloris|workflow faults|disk full:|during uploads|concurrent load|healthz failed|test result|panicked" "$log" || true
  rm -f "$log"
}
run sessions kill_9_loses_no_acknowledged_local_write EDGE_KILL_CALLS=1500 EDGE_KILL_CALLS_BETWEEN=1
run crash_uploads kill_9_during_uploads_leaves_no_half_registered_function EDGE_UPLOAD_KILLS=300
run bad_uploads a_thousand_mutated_components_get_answers_and_never_crash_the_node EDGE_MUTANTS=10000
run compile_isolation compile_bombs_are_refused_while_the_node_keeps_answering
run workflow_faults the_middle_node_killed_during_runs_fails_runs_cleanly_and_commits_once EDGE_FAULT_RUNS=400
run full_disk a_full_disk_gets_507_loses_nothing_and_recovers
run full_disk under_a_supervisor_each_full_disk_ends_in_a_restart_that_serves_again EDGE_DISK_CYCLES=10
for i in $(seq 1 10); do
  echo "-- concurrent load, run $i of 10"
  run concurrency sixty_four_clients_per_group_never_wedge_the_node_and_lose_nothing EDGE_LOAD_SECS=30
done
run http_abuse a_flood_beyond_the_admission_limit_is_shed_with_503
run http_abuse gigabyte_bodies_are_refused_after_at_most_the_limit
run http_abuse hundreds_of_slowloris_sockets_are_cut_off_while_others_are_served
echo "campaigns took $(( $(date +%s) - started )) s"
exit "$failed"
