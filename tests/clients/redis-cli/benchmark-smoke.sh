#!/usr/bin/env bash
# redis-benchmark against sessiond's RESP listener: a smoke test, not a measurement.
#
#   benchmark-smoke.sh SESSIOND_BINARY   (ctest: clients.redis_benchmark)
#   SECOND_REDIS=1 benchmark-smoke.sh    the same against a redis-server (checks this script)
#   TARGET_PORT=N benchmark-smoke.sh     against a server already on 127.0.0.1:N
#
# Runs the SET, GET and PING (inline and multibulk) tests of redis-benchmark, 20000 requests
# each from 20 connections with 1024-byte values over 1000 random keys, once without
# pipelining and once with -P 16. Fails when redis-benchmark stops on an error reply (it
# exits at the first one and prints "Error from server"), reports a connection error, does
# not finish in time, or reports a test without a positive rate; then checks that the
# keyspace is what the SETs made: 1000 keys named key:NNNNNNNNNNNN holding 1024 bytes.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REQUESTS=20000
CLIENTS=20
VALUE_BYTES=1024
KEYSPACE=1000
RUN_TIMEOUT=45 # seconds for one redis-benchmark run

# shellcheck source=lib.sh
source "$HERE/lib.sh"
command -v redis-benchmark >/dev/null || lib_die "redis-benchmark not found (Debian package redis-tools)"
command -v redis-cli >/dev/null || lib_die "redis-cli not found (Debian package redis-tools)"
export LC_ALL=C

lib_start_target "${1:-}"
PORT=$TARGET_PORT
echo "target: $TARGET_NAME on 127.0.0.1:$PORT"

FAILURES=0
fail() {
  echo "FAIL: $*"
  FAILURES=$((FAILURES + 1))
}

cli() {
  timeout -k 1 10 redis-cli -h 127.0.0.1 -p "$PORT" "$@" 2>&1
}

# redis-benchmark 7.0 spins forever when it cannot connect: check the port first.
reply=$(cli PING)
[[ "$reply" == PONG ]] || lib_die "PING on the target answered '$reply'"
reply=$(cli FLUSHDB)
[[ "$reply" == OK ]] || lib_die "FLUSHDB on the target answered '$reply'"

for pipeline in 1 16; do
  out="$LIB_TMP/bench-P$pipeline.csv" err="$LIB_TMP/bench-P$pipeline.err"
  echo "redis-benchmark -t set,get,ping -n $REQUESTS -c $CLIENTS -d $VALUE_BYTES -r $KEYSPACE -P $pipeline"
  timeout -k 2 "$RUN_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "$PORT" -t set,get,ping \
    -n "$REQUESTS" -c "$CLIENTS" -d "$VALUE_BYTES" -r "$KEYSPACE" -P "$pipeline" --csv \
    >"$out" 2>"$err"
  rc=$?
  sed 's/^/    /' "$out"
  # It asks for CONFIG GET save/appendonly first, for its header; a server without CONFIG
  # makes it print a warning and go on. Anything else on stderr is a failure.
  if grep -q 'CONFIG' "$err"; then
    echo "    (note: $(grep -m1 'CONFIG' "$err"))"
  fi
  others=$(grep -v 'CONFIG' "$err")
  if ((rc == 124 || rc == 137)); then
    fail "-P $pipeline: redis-benchmark did not finish within $RUN_TIMEOUT s"
  elif ((rc != 0)); then
    fail "-P $pipeline: redis-benchmark exited with $rc"
  fi
  [[ -z "$others" ]] || fail "-P $pipeline: redis-benchmark reported: $others"
  for test in PING_INLINE PING_MBULK SET GET; do
    rps=$(awk -F'"' -v t="$test" '$2 == t { print $4 }' "$out")
    if [[ -z "$rps" ]]; then
      fail "-P $pipeline: no result for $test"
    elif ! awk -v r="$rps" 'BEGIN { exit !(r + 0 > 0) }'; then
      fail "-P $pipeline: $test at $rps requests/s"
    fi
  done
  lib_target_alive || { fail "$TARGET_NAME exited during the benchmark"; break; }
done

if lib_target_alive; then
  # 2 x 20000 SETs over 1000 random keys: a given key is missed with probability
  # 0.999^40000 < 1e-17, so every key exists.
  dbsize=$(cli DBSIZE)
  echo "DBSIZE: $dbsize"
  [[ "$dbsize" == "$KEYSPACE" ]] || fail "DBSIZE is '$dbsize', expected $KEYSPACE"
  # Every key is one of redis-benchmark's, and a value read back has the size written.
  cursor=0 calls=0 keys=0 bad=""
  while ((calls < 10000)); do
    mapfile -t batch < <(cli --no-raw SCAN "$cursor" COUNT 100)
    calls=$((calls + 1))
    re='^1\) "([0-9]+)"$'
    [[ "${batch[0]:-}" =~ $re ]] || { fail "SCAN answered: ${batch[*]}"; break; }
    cursor=${BASH_REMATCH[1]}
    for line in "${batch[@]:1}"; do
      line=${line#2) }
      [[ "$line" == "(empty array)" ]] && continue
      keys=$((keys + 1))
      [[ "$line" =~ ^\ *[0-9]+\)\ \"key:[0-9]{12}\"$ ]] || bad+=" $line"
    done
    [[ "$cursor" == 0 ]] && break
  done
  ((keys >= KEYSPACE)) || fail "SCAN saw $keys keys"
  [[ -z "$bad" ]] || fail "keys that redis-benchmark did not write:$bad"
  size=$(cli --raw GET key:000000000042 | head -c 100000 | wc -c)
  # --raw prints the value and a newline
  ((size == VALUE_BYTES + 1)) || fail "GET key:000000000042 returned $((size - 1)) bytes, expected $VALUE_BYTES"
  reply=$(cli FLUSHDB)
  [[ "$reply" == OK ]] || fail "FLUSHDB answered '$reply'"
fi
lib_target_alive || { fail "$TARGET_NAME is not running at the end"; tail -n 50 "$LIB_TMP/sessiond.log" 2>/dev/null; }

if ((FAILURES)); then
  echo "$FAILURES failure(s)"
  exit 1
fi
echo "redis-benchmark smoke test passed"
