# shellcheck shell=bash
# Shared by flask/run.sh and rack/run.sh (sourced, not run): runs a client test program against
# a real redis-server (the reference) and against the server under test, with REDIS_URL
# pointing at each in turn. The program prints one line per check and exits non-zero on a
# failure; both runs must pass and their transcripts must be the same.
#
#   compare_client NAME SESSIOND_BINARY PROGRAM [ARGS...]
#
# The servers come from redis-cli/lib.sh (temporary folder, loopback ports, cleanup on exit):
# SECOND_REDIS=1 puts a second redis-server in place of sessiond (checks the test itself),
# KEEP_TMP=1 keeps the temporary folder (server logs, transcripts).

# shellcheck source=redis-cli/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/redis-cli/lib.sh"
COMPARE_TIMEOUT=${COMPARE_TIMEOUT:-90} # seconds for one run of the program

compare_client() {
  local name=$1 bin=$2 status=0 ref_port side port rc
  shift 2
  lib_start_redis reference
  ref_port=$REDIS_PORT
  lib_start_target "$bin"
  echo "reference: redis-server on 127.0.0.1:$ref_port; target: $TARGET_NAME on 127.0.0.1:$TARGET_PORT"
  for side in reference target; do
    [[ $side == reference ]] && port=$ref_port || port=$TARGET_PORT
    echo "--- ${1##*/} against ${side/target/$TARGET_NAME}"
    REDIS_URL="redis://127.0.0.1:$port" timeout -k 5 "$COMPARE_TIMEOUT" "$@" >"$LIB_TMP/$side.out" 2>&1
    rc=$?
    cat "$LIB_TMP/$side.out"
    ((rc == 124)) && echo "(timed out after $COMPARE_TIMEOUT s)"
    if ((rc != 0)); then
      [[ $side == reference ]] && echo "FAILED against redis-server: the test itself is wrong" ||
        echo "FAILED against $TARGET_NAME"
      status=1
    fi
  done
  if ! diff -u "$LIB_TMP/reference.out" "$LIB_TMP/target.out" >"$LIB_TMP/diff"; then
    echo "--- transcripts differ (redis-server vs $TARGET_NAME):"
    cat "$LIB_TMP/diff"
    status=1
  fi
  if ! lib_target_alive; then
    echo "$TARGET_NAME exited during the test; its log:"
    tail -n 50 "$LIB_TMP/sessiond.log" 2>/dev/null
    status=1
  fi
  ((status == 0)) && echo "$name: passed against redis-server and $TARGET_NAME"
  return "$status"
}
