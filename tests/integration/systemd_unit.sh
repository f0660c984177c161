#!/usr/bin/env bash
# packaging/sessiond.service passes `systemd-analyze verify` (with ExecStart pointing at the
# built binary: verify checks that it exists), and says what docs/operations.md promises:
# Type=notify with a watchdog, SIGHUP on reload, a dedicated user, the hardening options.
# (The notify datagrams themselves are tested by admin_integration_test with a NOTIFY_SOCKET.)
#
#   tests/integration/systemd_unit.sh SOURCE_DIR SESSIOND_BINARY
set -euo pipefail

src=${1:?usage: $0 SOURCE_DIR SESSIOND_BINARY}
bin=$(realpath "${2:?usage: $0 SOURCE_DIR SESSIOND_BINARY}")
unit=$src/packaging/sessiond.service
command -v systemd-analyze >/dev/null || { echo "systemd_unit: systemd-analyze is missing" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sessiond-unit.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/local/bin/sessiond|$bin|" "$unit" >"$tmp/sessiond.service"
if ! out=$(systemd-analyze verify "$tmp/sessiond.service" 2>&1) || [[ -n "$out" ]]; then
  echo "systemd_unit: systemd-analyze verify complained:" >&2
  echo "$out" >&2
  exit 1
fi
for line in 'Type=notify' 'ExecReload=/bin/kill -HUP $MAINPID' 'WatchdogSec=' 'User=sessiond' \
  'DynamicUser=yes' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'KillSignal=SIGTERM'; do
  grep -qF -- "$line" "$unit" || { echo "systemd_unit: $unit lacks $line" >&2; exit 1; }
done
# The flags ExecStart passes exist.
help=$("$bin" --help)
grep -q -- '--data-dir' <<<"$help" || { echo "systemd_unit: no --data-dir" >&2; exit 1; }
echo "systemd_unit: ok"
