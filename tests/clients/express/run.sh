#!/usr/bin/env bash
# Runs the express-session + connect-redis + node-redis tests against sessiond's RESP listener.
#
#   tests/clients/express/run.sh SESSIOND_BINARY
#
# Starts SESSIOND_BINARY on loopback with a RESP port and a temporary data directory, runs the
# node tests with REDIS_URL pointing at it, then stops it with SIGTERM. With REDIS_URL already
# set (e.g. a redis-server of your own on loopback), no sessiond is started and the tests run
# against that URL. The npm packages come from scripts/setup (npm ci).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [[ ! -d "$here/node_modules/express-session" || ! -d "$here/node_modules/connect-redis" ||
      ! -d "$here/node_modules/redis" || ! -d "$here/node_modules/express" ]]; then
  echo "clients.express: $here/node_modules is missing; run scripts/setup (it runs npm ci there)" >&2
  exit 1
fi
command -v node >/dev/null || { echo "clients.express: node is not installed" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sessiond-express.XXXXXX")
pid=""
cleanup() {
  local rc=$?
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log="$tmp/sessiond.log"
show_log() {
  if [[ -f "$log" ]]; then
    echo "---- sessiond log ($log) ----" >&2
    tail -n 200 "$log" >&2
    echo "---- end of sessiond log ----" >&2
  fi
}

if [[ -n "${REDIS_URL:-}" ]]; then
  echo "clients.express: REDIS_URL=$REDIS_URL is set; not starting sessiond"
else
  bin=${1:-}
  if [[ -z "$bin" || ! -x "$bin" ]]; then
    echo "usage: $0 SESSIOND_BINARY   (or set REDIS_URL to test against a running server)" >&2
    exit 2
  fi
  mkdir -p "$tmp/data"
  "$bin" --listen 127.0.0.1:0 --resp-port 0 --admin-listen 127.0.0.1:0 --data-dir "$tmp/data" --durability async \
    >"$log" 2>&1 &
  pid=$!

  # Wait (at most 10 s) for "RESP listening on HOST:PORT".
  addr=""
  deadline=$((SECONDS + 10))
  while (( SECONDS < deadline )); do
    addr=$(grep -o 'RESP listening on [0-9.]*:[0-9]*' "$log" 2>/dev/null | head -n 1 |
           sed 's/^RESP listening on //' || true)
    [[ -n "$addr" ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "clients.express: sessiond exited before listening" >&2
      show_log
      exit 1
    fi
    sleep 0.05
  done
  if [[ -z "$addr" ]]; then
    echo "clients.express: no 'RESP listening on' line from sessiond within 10 s" >&2
    show_log
    exit 1
  fi
  export REDIS_URL="redis://$addr"
  echo "clients.express: sessiond (pid $pid) RESP on $addr"
fi

cd "$here"
status=0
# Debian 12's Node 18 has neither --test-force-exit (Node 20.14+) nor, before 18.15,
# --test-reporter: each is used where this node has it (the tests close what they open).
flags=()
node_help=$(node --help)
grep -q -- '--test-force-exit' <<<"$node_help" && flags+=(--test-force-exit)
grep -q -- '--test-reporter' <<<"$node_help" && flags+=(--test-reporter=spec)
node --test "${flags[@]}" test/session.test.js || status=$?

if [[ -n "$pid" ]]; then
  kill -TERM "$pid" 2>/dev/null || true
  stop_rc=0
  # Bounded wait for a clean exit: SIGTERM should flush and exit 0 within a few seconds.
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "clients.express: sessiond did not exit within 10 s of SIGTERM" >&2
    kill -KILL "$pid" 2>/dev/null || true
    stop_rc=1
  fi
  wait "$pid" 2>/dev/null || stop_rc=$?
  pid=""
  if [[ $stop_rc -ne 0 ]]; then
    echo "clients.express: sessiond exited with status $stop_rc after SIGTERM" >&2
    status=1
  fi
  if [[ $status -ne 0 ]]; then show_log; fi
fi

if [[ $status -ne 0 ]]; then
  echo "clients.express: FAILED" >&2
fi
exit "$status"
