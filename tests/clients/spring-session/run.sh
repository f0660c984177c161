#!/usr/bin/env bash
# Spring Session's Redis command sequences (Java is not on these machines: the commands are
# replayed with redis-cli from scripts derived from Spring Session's source; see the top of
# each .redis file), against a real redis-server and against sessiond's RESP listener.
#
#   run.sh SESSIOND_BINARY      the normal run (ctest: clients.spring_session)
#   SECOND_REDIS=1 run.sh       a second redis-server in place of sessiond (checks the test)
#   KEEP_TMP=1                  keep the temporary folder (server logs, subscriber output)
#
# 1. default-repository.redis (RedisSessionRepository) through tests/clients/redis-cli/run.sh:
#    each line on a reference redis-server and on sessiond, replies compared.
# 2. indexed-repository.redis (RedisIndexedSessionRepository, its per-minute expiration sets
#    and Spring Session 3.4's sorted-set store) the same way, while subscribers like the
#    repository's listener watch an "events" redis-server and sessiond:
#      channels: redis-cli --csv SUBSCRIBE __keyevent@0__:del __keyevent@0__:expired
#      patterns: redis-cli --csv PSUBSCRIBE __keyevent@*__:del __keyevent@*__:expired
#                spring:session:event:0:created:*
#    run.sh replays the script once with the events redis-server as its target and once with
#    sessiond; the messages each subscriber received (sorted) must equal
#    expected-events.txt on both (the redis-server run checks that file).
# Exit status: 0 pass, 1 a mismatch, 2 setup.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUNNER=$HERE/../redis-cli/run.sh
EVENTS_DEADLINE=10 # seconds for subscribers to confirm and for the expected events to arrive
BIN=${1:-}

# shellcheck source=../redis-cli/lib.sh
source "$HERE/../redis-cli/lib.sh"
command -v redis-cli >/dev/null || lib_die "redis-cli not found (Debian package redis-tools)"
status=0

echo "=== RedisSessionRepository: default-repository.redis"
SCRIPT=$HERE/default-repository.redis bash "$RUNNER" "$BIN" || status=1

echo
echo "=== RedisIndexedSessionRepository: indexed-repository.redis, with keyspace-event subscribers"
lib_start_redis events
EVENTS_PORT=$REDIS_PORT
lib_start_target "$BIN"
echo "events redis-server on 127.0.0.1:$EVENTS_PORT; target: $TARGET_NAME on 127.0.0.1:$TARGET_PORT"

# start_subscribers SIDE PORT: the two subscribers, output in $LIB_TMP/SIDE.{channels,patterns}
start_subscribers() {
  local side=$1 port=$2
  redis-cli -h 127.0.0.1 -p "$port" --csv SUBSCRIBE '__keyevent@0__:del' '__keyevent@0__:expired' \
    >"$LIB_TMP/$side.channels" 2>&1 &
  LIB_PIDS+=("$!")
  redis-cli -h 127.0.0.1 -p "$port" --csv PSUBSCRIBE '__keyevent@*__:del' '__keyevent@*__:expired' \
    'spring:session:event:0:created:*' >"$LIB_TMP/$side.patterns" 2>&1 &
  LIB_PIDS+=("$!")
}

# count_lines FILE PREFIX: lines of FILE that start with PREFIX
count_lines() { grep -c "^$2" "$1" 2>/dev/null; }

# wait_subscribed SIDE: both subscribers confirmed all their channels and patterns
wait_subscribed() {
  local side=$1 deadline=$((SECONDS + EVENTS_DEADLINE))
  while ((SECONDS < deadline)); do
    if (($(count_lines "$LIB_TMP/$side.channels" '"subscribe",') == 2 &&
      $(count_lines "$LIB_TMP/$side.patterns" '"psubscribe",') == 3)); then
      return 0
    fi
    sleep 0.02
  done
  echo "MISMATCH subscribers on $side did not confirm SUBSCRIBE/PSUBSCRIBE within $EVENTS_DEADLINE s; they printed:"
  sed 's/^/    /' "$LIB_TMP/$side.channels" "$LIB_TMP/$side.patterns"
  return 1
}

# received SIDE: the messages both subscribers got, as "channels LINE" / "patterns LINE", sorted
received() {
  local side=$1 kind
  for kind in channels patterns; do
    grep -E '^"(message|pmessage)",' "$LIB_TMP/$side.$kind" 2>/dev/null | sed "s/^/$kind /"
  done | LC_ALL=C sort
}

# check_events SIDE NAME: waits until SIDE has received as many messages as expected (or the
# deadline), then compares them with expected-events.txt
check_events() {
  local side=$1 name=$2 want deadline=$((SECONDS + EVENTS_DEADLINE))
  want=$(grep -vcE '^(#|$)' "$HERE/expected-events.txt")
  while (($(received "$side" | wc -l) < want && SECONDS < deadline)); do sleep 0.05; done
  if diff -u <(grep -vE '^(#|$)' "$HERE/expected-events.txt" | LC_ALL=C sort) <(received "$side") \
    >"$LIB_TMP/$side.events.diff"; then
    echo "ok   $name: the subscribers received the $want expected messages"
    return 0
  fi
  echo "MISMATCH $name: the subscribers' messages differ from expected-events.txt (- expected, + received):"
  sed 's/^/    /' "$LIB_TMP/$side.events.diff"
  return 1
}

start_subscribers events "$EVENTS_PORT"
start_subscribers target "$TARGET_PORT"
wait_subscribed events || status=1
wait_subscribed target || status=1

echo "--- replay with the events redis-server as the target (checks the script)"
SCRIPT=$HERE/indexed-repository.redis TARGET_PORT=$EVENTS_PORT TARGET_IS_REDIS=1 \
  bash "$RUNNER" || status=1
echo "--- replay with $TARGET_NAME as the target"
SCRIPT=$HERE/indexed-repository.redis TARGET_PORT=$TARGET_PORT TARGET_IS_REDIS=$TARGET_IS_REDIS \
  bash "$RUNNER" || status=1

check_events events "redis-server" || status=1
check_events target "$TARGET_NAME" || status=1
if ! lib_target_alive; then
  echo "FATAL: $TARGET_NAME exited during the test; its log:"
  tail -n 50 "$LIB_TMP/sessiond.log" 2>/dev/null
  status=1
fi
echo
((status == 0)) && echo "clients.spring_session: passed against redis-server and $TARGET_NAME" ||
  echo "clients.spring_session: FAILED"
exit "$status"
