#!/usr/bin/env bash
# Flask-Session's Redis backend (Debian's python3-flask-session, python3-redis, python3-flask)
# against a real redis-server and against sessiond's RESP listener: flask_session_test.py runs
# against each, both runs must pass and print the same transcript (../compare.sh).
#
#   run.sh SESSIOND_BINARY      the normal run (ctest: clients.flask)
#   SECOND_REDIS=1 run.sh       a second redis-server in place of sessiond (checks the test)
#   KEEP_TMP=1                  keep the temporary folder (server logs, transcripts)
#
# Runs Debian's /usr/bin/python3: the python3 on PATH may be a build that sees none of Debian's
# packages. Exit status: 0 pass, 1 a failed check or different transcripts, 2 setup.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../compare.sh
source "$HERE/../compare.sh"
/usr/bin/python3 -c 'import flask, flask_session, redis' 2>/dev/null ||
  lib_die "needs Debian's python3-flask-session, python3-flask and python3-redis (scripts/setup)"
export PYTHONDONTWRITEBYTECODE=1
compare_client clients.flask "${1:-}" /usr/bin/python3 "$HERE/flask_session_test.py"
