# shellcheck shell=bash
# Shared by run.sh and benchmark-smoke.sh (sourced, not run): temporary folder, servers on
# loopback ports, cleanup. Every wait is a poll with a deadline; every process started here
# is stopped by its pid when the sourcing script exits.

LIB_TMP=$(mktemp -d "${TMPDIR:-/tmp}/sessiond-redis-cli.XXXXXX")
LIB_PIDS=()

lib_cleanup() {
  local pid deadline
  for pid in "${LIB_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  deadline=$((SECONDS + 10))
  for pid in "${LIB_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [[ -n "${KEEP_TMP:-}" ]]; then
    echo "temporary files kept in $LIB_TMP" >&2
  else
    rm -rf "$LIB_TMP"
  fi
}
trap lib_cleanup EXIT
trap 'exit 130' INT TERM

lib_die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# A loopback port nothing listens on now (the server that takes it may still lose a race;
# lib_start_redis retries). Range below Linux's ephemeral ports.
lib_pick_port() {
  local attempt port
  for ((attempt = 0; attempt < 100; attempt++)); do
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# lib_start_redis NAME: starts a throwaway redis-server; sets REDIS_PORT and REDIS_PID.
lib_start_redis() {
  local name=$1 dir="$LIB_TMP/$1" port pid deadline
  command -v redis-server >/dev/null || lib_die "redis-server not found (Debian package redis-server)"
  mkdir -p "$dir"
  for _ in 1 2 3 4 5; do
    port=$(lib_pick_port) || lib_die "no free loopback port"
    : >"$dir/log"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
      --dir "$dir" >"$dir/log" 2>&1 &
    pid=$!
    deadline=$((SECONDS + 15))
    while ((SECONDS < deadline)); do
      if grep -q 'Ready to accept connections' "$dir/log"; then
        LIB_PIDS+=("$pid")
        REDIS_PORT=$port
        REDIS_PID=$pid
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.02
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  cat "$dir/log" >&2
  lib_die "redis-server ($name) did not start"
}

# lib_start_sessiond BINARY: starts sessiond with a RESP listener on any free port; sets
# SESSIOND_RESP_PORT and SESSIOND_PID (its stderr goes to $LIB_TMP/sessiond.log).
lib_start_sessiond() {
  local bin=$1 log="$LIB_TMP/sessiond.log" pid deadline re='RESP listening on 127\.0\.0\.1:([0-9]+)'
  [[ -x "$bin" ]] || lib_die "not an executable: $bin"
  mkdir -p "$LIB_TMP/sessiond-data"
  : >"$log"
  "$bin" --listen 127.0.0.1:0 --resp-port 0 --admin-listen 127.0.0.1:0 --data-dir "$LIB_TMP/sessiond-data" 2>"$log" >&2 &
  pid=$!
  LIB_PIDS+=("$pid")
  deadline=$((SECONDS + 20))
  while ((SECONDS < deadline)); do
    if [[ $(<"$log") =~ $re ]]; then
      SESSIOND_RESP_PORT=${BASH_REMATCH[1]}
      SESSIOND_PID=$pid
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$log" >&2
      lib_die "sessiond exited before 'RESP listening on'"
    fi
    sleep 0.02
  done
  cat "$log" >&2
  lib_die "sessiond did not log 'RESP listening on' within 20 s"
}

# lib_start_target SESSIOND_BINARY: the server under test. By default sessiond; with
# SECOND_REDIS=1 a second redis-server (to check the scripts themselves), with TARGET_PORT=N
# a server already listening on 127.0.0.1:N (TARGET_IS_REDIS=1 if that one is a Redis).
# Sets TARGET_PORT, TARGET_PID (empty when not ours), TARGET_NAME and TARGET_IS_REDIS.
# shellcheck disable=SC2034 # the variables are for the sourcing script
lib_start_target() {
  TARGET_PID=
  if [[ -n "${TARGET_PORT:-}" ]]; then
    TARGET_NAME="server"
    TARGET_IS_REDIS=${TARGET_IS_REDIS:-0}
  elif [[ "${SECOND_REDIS:-}" == 1 ]]; then
    lib_start_redis target
    TARGET_PORT=$REDIS_PORT
    TARGET_PID=$REDIS_PID
    TARGET_NAME="redis(2nd)"
    TARGET_IS_REDIS=1
  else
    [[ -n "${1:-}" ]] || lib_die "usage: $0 SESSIOND_BINARY (or SECOND_REDIS=1 $0)"
    lib_start_sessiond "$1"
    TARGET_PORT=$SESSIOND_RESP_PORT
    TARGET_PID=$SESSIOND_PID
    TARGET_NAME=sessiond
    TARGET_IS_REDIS=0
  fi
}

# lib_target_alive: false once the server under test (when we started it) has exited.
lib_target_alive() {
  [[ -z "$TARGET_PID" ]] || kill -0 "$TARGET_PID" 2>/dev/null
}
