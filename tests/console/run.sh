#!/usr/bin/env bash
# Browser test of the web console (daemon/console/) against a real 2-node local cluster.
#
#   tests/console/run.sh SESSIOND_BUILD_DIR
#
# Starts a cluster with scripts/cluster on a free base port (node 1's admin listener on
# base+201), puts bounded load on it with sessiond-bench, creates one session with a known user
# and field and records one access to it, then runs console.test.mjs (playwright-core driving Debian's /usr/bin/chromium)
# against node 1's admin listener. Screenshots go to $ARTIFACT_DIR (default
# SESSIOND_BUILD_DIR/artifacts). The npm package comes from `npm ci` in this folder. The cluster
# is always stopped on exit; with KEEP_TMP set, its logs and data are kept.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
die() {
  echo "console.browser: $*" >&2
  exit 1
}

build=${1:-}
[[ -n "$build" && -d "$build" ]] || { echo "usage: $0 SESSIOND_BUILD_DIR" >&2; exit 2; }
build=$(cd "$build" && pwd)
sessctl=$build/client/sessctl
bench=$build/tests/bench/sessiond-bench
[[ -x "$sessctl" ]] || die "$sessctl is missing; build the sessctl target"
[[ -x "$bench" ]] || die "$bench is missing; build the sessiond-bench target"
# scripts/cluster runs build/release's binaries (and would build them if missing).
[[ -x "$root/build/release/daemon/sessiond" && -x "$root/build/release/client/sessctl" ]] ||
  die "scripts/cluster runs build/release/daemon/sessiond and client/sessctl; build them first"
command -v node >/dev/null || die "node is not installed"
command -v curl >/dev/null || die "curl is not installed"
command -v etcd >/dev/null || die "etcd is not installed; run scripts/setup"
[[ -d "$here/node_modules/playwright-core" ]] ||
  die "$here/node_modules/playwright-core is missing; run npm ci in $here (scripts/setup)"
[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium is missing; install Debian's chromium package"

artifacts=${ARTIFACT_DIR:-$build/artifacts}
mkdir -p "$artifacts"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sessiond-console.XXXXXX")
cluster_started=0
bench_pid=""
cleanup() {
  local rc=$?
  if [[ -n "$bench_pid" ]] && kill -0 "$bench_pid" 2>/dev/null; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  if ((cluster_started)); then
    "$root/scripts/cluster" down --dir "$tmp/cluster" >/dev/null 2>&1 || true
  fi
  if ((rc != 0)); then
    local log
    for log in "$tmp"/cluster/n*.log "$tmp/bench.log"; do
      [[ -f "$log" ]] || continue
      echo "---- $log (last 40 lines) ----" >&2
      tail -n 40 "$log" >&2
    done
  fi
  if [[ -n "${KEEP_TMP:-}" ]]; then
    echo "console.browser: temporary files kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what did not happen within ${seconds}s"
    sleep 0.1
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A base port whose derived ports are all free: nodes base+1..2, RESP base+101..102, admin
# base+201..202, etcd base+1000..1001 (scripts/cluster's layout). Another process may still
# take one before the cluster binds it; scripts/cluster then fails and so does the test.
base=""
for ((attempt = 0; attempt < 100; attempt++)); do
  candidate=$((20000 + RANDOM % 10001))
  ok=1
  for offset in 1 2 101 102 201 202 1000 1001; do
    port_free $((candidate + offset)) || { ok=0; break; }
  done
  if ((ok)); then base=$candidate; break; fi
done
[[ -n "$base" ]] || die "no free base port in 20000-30000"
node1=127.0.0.1:$((base + 1))
admin_url=http://127.0.0.1:$((base + 201))

echo "console.browser: starting a 2-node cluster on base port $base"
cluster_started=1
if ! "$root/scripts/cluster" up --nodes 2 --dir "$tmp/cluster" --base-port "$base" \
  >"$tmp/cluster-up.log" 2>&1; then
  cat "$tmp/cluster-up.log" >&2
  die "scripts/cluster up failed"
fi
wait_for 30 "node 1's admin listener answering on $admin_url" \
  curl -fsS --max-time 2 "$admin_url/api/overview?history=0"

# Load for a bounded time (at most 20 s measured, 200k calls) so the charts have data.
"$bench" --addr "$node1" --connections 4 --clients 1 --keys 1000 --value-size 64 --warmup 0 \
  --duration 20 --max-ops 200000 --rate 1000 --timeout-ms 2000 >"$tmp/bench.log" 2>&1 &
bench_pid=$!

user=console-user-$RANDOM
value=console-secret-$RANDOM$RANDOM
created=$("$sessctl" --json --addr "$node1" create --user "$user" --field "cart=$value") ||
  die "sessctl create failed: $created"
session_id=$(node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0, "utf8")).id)' \
  <<<"$created") || die "no id in sessctl's answer: $created"
# One recorded access, for the access history.
"$sessctl" --addr "$node1" get "$session_id" --record-ip 203.0.113.7 --record-ua-hash 42 \
  >/dev/null || die "sessctl get --record-ip failed"
echo "console.browser: session $session_id of user $user; admin $admin_url"

ADMIN_URL=$admin_url SESSION_ID=$session_id SESSION_USER=$user SESSION_FIELD=cart \
  SESSION_VALUE=$value SESSION_ACCESS_IP=203.0.113.7 EXPECT_NODES=n1,n2 ARTIFACT_DIR=$artifacts \
  node "$here/console.test.mjs"
