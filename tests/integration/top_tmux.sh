#!/usr/bin/env bash
# `sessctl top` as an operator runs it: in an 80x24 terminal (a tmux pane on a tmux server of
# its own), against a live node with sessions and traffic. The pane must show the node's
# figures (its session count), fit 80x24, and close when q is pressed.
#
#   tests/integration/top_tmux.sh BUILD_DIR
set -euo pipefail

build=${1:?usage: $0 BUILD_DIR}
sessiond=$build/daemon/sessiond
sessctl=$build/client/sessctl
command -v tmux >/dev/null || { echo "top_tmux: tmux is not installed (scripts/setup)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sessiond-top.XXXXXX")
sock=$tmp/tmux.sock
pid=""
cleanup() {
  local rc=$?
  tmux -S "$sock" kill-server 2>/dev/null || true
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if ((rc != 0)); then
    echo "---- sessiond log ----" >&2
    tail -n 40 "$tmp/node.log" >&2 || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
fail() {
  echo "top_tmux: $*" >&2
  exit 1
}
# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    ((SECONDS < deadline)) || fail "$what did not happen within ${seconds}s"
    sleep 0.1
  done
}

"$sessiond" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$tmp/data" \
  --durability memory --threads 1 >"$tmp/node.log" 2>&1 &
pid=$!
wait_for 15 "the node listening" grep -q '^.* info listening on ' "$tmp/node.log"
addr=$(grep -o ' listening on [0-9.]*:[0-9]*' "$tmp/node.log" | head -n 1 | awk '{print $3}')
admin=$(grep -o 'admin HTTP listener on [0-9.]*:[0-9]*' "$tmp/node.log" | awk '{print $5}')
[[ -n "$addr" && -n "$admin" ]] || fail "no addresses in the node's log"

for i in $(seq 1 37); do
  "$sessctl" --addr "$addr" create --user "user$i" >/dev/null
done

tmux -S "$sock" new-session -d -x 80 -y 24 -s top "$sessctl top --admin $admin"
screen=""
shows_the_node() {
  screen=$(tmux -S "$sock" capture-pane -p -t top)
  grep -Eq '^local +up +100% +37 ' <<<"$screen"
}
wait_for 15 "the pane showing the node's 37 sessions" shows_the_node
echo "$screen"
lines=$(wc -l <<<"$screen")
((lines <= 24)) || fail "$lines lines on a 24-line terminal"
widest=$(awk '{ if (length($0) > w) w = length($0) } END { print w + 0 }' <<<"$screen")
((widest <= 80)) || fail "a line of $widest columns on an 80-column terminal"
grep -q 'sessiond top  region local' <<<"$screen" || fail "no title line"
grep -q 'alerts: none' <<<"$screen" || fail "no alerts line"

# Traffic shows up as ops/s within a refresh or two.
"$sessctl" --addr "$addr" stats >/dev/null
moving() {
  for _ in $(seq 1 50); do "$sessctl" --addr "$addr" ping >/dev/null; done
  screen=$(tmux -S "$sock" capture-pane -p -t top)
  awk '$1 == "local" && $5 + 0 > 0 { found = 1 } END { exit !found }' <<<"$screen"
}
wait_for 15 "ops/s above 0 in the pane" moving

tmux -S "$sock" send-keys -t top q
gone() { ! tmux -S "$sock" has-session -t top 2>/dev/null; }
wait_for 5 "sessctl top quitting on q" gone
echo "top_tmux: ok"
