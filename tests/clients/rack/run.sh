#!/usr/bin/env bash
# Rack::Session::Redis and redis-store (Debian's ruby-redis-rack, ruby-redis-store, ruby-rack,
# ruby-redis) against a real redis-server and against sessiond's RESP listener:
# rack_session_test.rb runs against each, both runs must pass and print the same transcript
# (../compare.sh).
#
#   run.sh SESSIOND_BINARY      the normal run (ctest: clients.rack)
#   SECOND_REDIS=1 run.sh       a second redis-server in place of sessiond (checks the test)
#   KEEP_TMP=1                  keep the temporary folder (server logs, transcripts)
#
# Exit status: 0 pass, 1 a failed check or different transcripts, 2 setup.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../compare.sh
source "$HERE/../compare.sh"
/usr/bin/ruby -e 'require "redis-rack"; require "rack/mock"' 2>/dev/null ||
  lib_die "needs Debian's ruby, ruby-redis-rack, ruby-redis-store and ruby-rack (scripts/setup)"
compare_client clients.rack "${1:-}" /usr/bin/ruby "$HERE/rack_session_test.rb"
