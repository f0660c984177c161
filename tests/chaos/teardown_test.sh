#!/usr/bin/env bash
# The chaos runner leaves nothing behind (label chaos-smoke): SIGTERM in the middle of a run (as
# Ctrl-C's SIGINT, which a shell ignores in its background jobs) tears everything down (its EXIT
# trap); after kill -9 of the runner, a new run refuses to start beside
# the leftovers and scripts/chaos/clean removes them. Exit 2 (skipped) where the suite cannot run.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin=${1:-$root/build/release}
run="$root/scripts/chaos/run"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

leftovers() { ip netns list 2>/dev/null | awk '{print $1}' | grep -c '^sdc-' || true; }
# start_run: a smoke run in the background, returned once its load runs (its pid in $pid)
start_run() {
  "$run" --scenario smoke --seed 1 --duration 60 --bin-dir "$bin" >"$out" 2>&1 &
  pid=$!
  local deadline=$((SECONDS + 90))
  until grep -q "load running" "$out"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      local rc=$?
      ((rc == 2)) && { cat "$out"; exit 2; }  # cannot run here: skipped
      echo "FAIL: the run ended before its load started (exit $rc):"; cat "$out"; exit 1
    fi
    ((SECONDS < deadline)) || { echo "FAIL: no load within 90 s:"; cat "$out"; exit 1; }
    sleep 0.2
  done
}

start_run
kill -TERM "$pid"
wait "$pid"
n=$(leftovers)
[[ $n == 0 ]] || { echo "FAIL: $n namespaces left after SIGTERM"; ip netns list; exit 1; }
grep -q "interrupted; tearing down" "$out" || { echo "FAIL: no word of the interruption:"; cat "$out"; exit 1; }
echo "ok: SIGTERM tore everything down"

start_run
kill -KILL "$pid"
wait "$pid" 2>/dev/null
n=$(leftovers)
[[ $n -gt 0 ]] || { echo "FAIL: kill -9 of the runner left nothing to clean (a vacuous test)"; exit 1; }
"$run" --scenario smoke --bin-dir "$bin" >"$out" 2>&1
rc=$?
[[ $rc == 1 ]] && grep -q "scripts/chaos/clean removes them" "$out" ||
  { echo "FAIL: a run beside leftovers was not refused (exit $rc):"; cat "$out"; exit 1; }
"$root/scripts/chaos/clean" || { echo "FAIL: scripts/chaos/clean failed"; exit 1; }
n=$(leftovers)
[[ $n == 0 ]] || { echo "FAIL: $n namespaces left after scripts/chaos/clean"; ip netns list; exit 1; }
echo "ok: after kill -9, a new run refused to start and scripts/chaos/clean removed everything"
