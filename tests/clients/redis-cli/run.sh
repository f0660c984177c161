#!/usr/bin/env bash
# Runs commands.redis line by line with redis-cli against a real redis-server (the reference)
# and against sessiond's RESP listener, and compares the replies line by line.
#
#   run.sh SESSIOND_BINARY          the normal run (ctest: clients.redis_cli)
#   SECOND_REDIS=1 run.sh           a second redis-server in place of sessiond: checks the
#                                   script and this runner (every line must match)
#   TARGET_PORT=N run.sh            a server already listening on 127.0.0.1:N in place of
#                                   sessiond (TARGET_IS_REDIS=1 if it is a Redis)
# Other variables: SCRIPT=FILE (default commands.redis beside this file), VERBOSE=1 (print
# every line and both replies), KEEP_TMP=1 (keep the temporary folder and server logs).
#
# Each line (or @begin/@end block) runs in its own redis-cli process, on the reference first
# and then on the target, so every reply is attributable to one line of the script. The
# syntax of the script is described at the top of commands.redis. Exit status: 0 when every
# line matched, 1 on any mismatch, 2 when the servers could not be started.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT=${SCRIPT:-$HERE/commands.redis}
SCRIPT_NAME=${SCRIPT##*/}
VERBOSE=${VERBOSE:-0}
CLI_TIMEOUT=10      # seconds for one redis-cli process
UNTIL_DEADLINE=5    # seconds an @until line waits for its reply
SCAN_MAX_CALLS=10000
SEPARATOR="--- sessiond redis-cli test separator ---"

# shellcheck source=lib.sh
source "$HERE/lib.sh"
command -v redis-cli >/dev/null || lib_die "redis-cli not found (Debian package redis-tools)"
[[ -r "$SCRIPT" ]] || lib_die "cannot read $SCRIPT"
export LC_ALL=C

lib_start_redis reference
REF_PORT=$REDIS_PORT
lib_start_target "${1:-}"
echo "reference: redis-server on 127.0.0.1:$REF_PORT; target: $TARGET_NAME on 127.0.0.1:$TARGET_PORT"

# ---------------------------------------------------------------------------------------
# Inputs for @x lines: files in $INPUTS, made the same on every run.
INPUTS="$LIB_TMP/inputs"
mkdir -p "$INPUTS"
chunk=""
for ((i = 0; i < 256; i++)); do printf -v byte '\\0%03o' "$i"; chunk+=$byte; done
printf '%b' "$chunk" >"$INPUTS/bytes256.bin" # every byte value once
cp "$INPUTS/bytes256.bin" "$INPUTS/doubling"
for ((i = 0; i < 9; i++)); do # 256 << 9 bytes
  cat "$INPUTS/doubling" "$INPUTS/doubling" >"$INPUTS/doubled" && mv "$INPUTS/doubled" "$INPUTS/doubling"
done
head -c 102400 "$INPUTS/doubling" >"$INPUTS/big100k.bin" # 400 times bytes256.bin
rm "$INPUTS/doubling"
printf 'line one\r\nline two\n' >"$INPUTS/crlf.txt"
: >"$INPUTS/empty.txt"

# gen_bytes N: N printable bytes (no space or quote), the same on every call.
gen_bytes() {
  local n=$1 s="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
  while ((${#s} < n)); do s+=$s; done
  printf '%s' "${s:0:n}"
}

# gen_fields N: "f1 v1 f2 v2 ... fN vN".
gen_fields() {
  local n=$1 i out=""
  for ((i = 1; i <= n; i++)); do out+="f$i v$i "; done
  printf '%s' "${out% }"
}

now_ms() {
  local t=$EPOCHREALTIME
  echo $((${t%.*} * 1000 + 10#${t#*.} / 1000))
}

# expand TEXT: replaces {{now+N}} (unix seconds), {{now_ms+N}} (unix milliseconds),
# {{bytes:N}} and {{fields:N}}. Sets EXPANDED. Computed once per line: both servers get the
# same arguments.
expand() {
  local text=$1 out="" re='^([^{]*)\{\{([a-z_]+)([-+:]?)([0-9]*)\}\}(.*)$' name op num val
  while [[ "$text" =~ $re ]]; do
    out+=${BASH_REMATCH[1]}
    name=${BASH_REMATCH[2]} op=${BASH_REMATCH[3]} num=${BASH_REMATCH[4]:-0}
    text=${BASH_REMATCH[5]}
    case "$name" in
      now) val=$EPOCHSECONDS ;;
      now_ms) val=$(now_ms) ;;
      bytes) val=$(gen_bytes "$num") ;;
      fields) val=$(gen_fields "$num") ;;
      *) lib_die "$SCRIPT: unknown substitution {{$name}}" ;;
    esac
    case "$op" in
      +) val=$((val + num)) ;;
      -) val=$((val - num)) ;;
    esac
    out+=$val
  done
  EXPANDED=$out$text
}

# ---------------------------------------------------------------------------------------
# Talking to a server. Each sets OUT.

# cli_lines PORT TEXT: TEXT (one command a line, redis-cli quoting) on redis-cli's stdin.
cli_lines() {
  OUT=$(printf '%s\n' "$2" | timeout -k 1 "$CLI_TIMEOUT" redis-cli -h 127.0.0.1 -p "$1" --no-raw 2>&1)
  (($? == 124)) && OUT+=$'\n(redis-cli timed out)'
}

# cli_argv PORT STDIN_FILE WORD...: the command as redis-cli arguments (plain words).
cli_argv() {
  local port=$1 input=$2
  shift 2
  OUT=$(timeout -k 1 "$CLI_TIMEOUT" redis-cli -h 127.0.0.1 -p "$port" --no-raw "$@" <"$input" 2>&1)
  (($? == 124)) && OUT+=$'\n(redis-cli timed out)'
}

# raw_exchange PORT PAYLOAD: PAYLOAD (printf %b escapes) over a bare TCP connection; OUT is
# everything read until the server closes (or 5 s), shown by cat -v (CR as ^M, NUL as ^@).
raw_exchange() {
  local fd
  if ! exec {fd}<>"/dev/tcp/127.0.0.1/$1"; then
    OUT="(cannot connect)"
    return
  fi
  { printf '%b' "$2" >&"$fd"; } 2>/dev/null
  # A server that closes with our later bytes unread sends a reset after its replies; cat's
  # "Connection reset by peer" is that close, not part of the reply.
  OUT=$(timeout -k 1 5 cat -v <&"$fd" 2>/dev/null)
  (($? == 124)) && OUT+=$'\n(no close within 5 s)'
  exec {fd}>&-
}

# scan_all PORT ARGS: SCAN from cursor 0 to the end with ARGS (after the cursor); OUT is the
# sorted set of keys seen, or the first error.
scan_all() {
  local port=$1 args=$2 cursor=0 calls=0 line keys="" re_cursor='^1\) "([0-9]+)"$'
  local re_elem='^ *[0-9]+\) (.*)$'
  while :; do
    cli_lines "$port" "SCAN $cursor $args"
    if ! [[ "${OUT%%$'\n'*}" =~ $re_cursor ]]; then
      return # an error or anything unexpected: compared as it is
    fi
    cursor=${BASH_REMATCH[1]}
    while IFS= read -r line; do
      line=${line#2) }
      [[ "$line" == "(empty array)" ]] && continue
      [[ "$line" =~ $re_elem ]] && keys+=${BASH_REMATCH[1]}$'\n'
    done < <(tail -n +2 <<<"$OUT")
    calls=$((calls + 1))
    [[ "$cursor" == 0 ]] && break
    if ((calls >= SCAN_MAX_CALLS)); then
      keys+="(SCAN did not return cursor 0 within $SCAN_MAX_CALLS calls)"$'\n'
      break
    fi
  done
  OUT="full iteration, distinct keys:"$'\n'$(printf '%s' "$keys" | sort -u)
}

# until_reply PORT CMD EXPECTED: repeats CMD until its reply is EXPECTED or the deadline.
until_reply() {
  local port=$1 cmd=$2 want=$3 deadline=$((SECONDS + UNTIL_DEADLINE))
  while :; do
    cli_lines "$port" "$cmd"
    [[ "$OUT" == "$want" ]] && return
    ((SECONDS < deadline)) || return
    sleep 0.01
  done
}

# ---------------------------------------------------------------------------------------
# Comparisons. Each returns 0 on a match; NOTE may explain a mismatch or a skip.

reply_type() {
  case "$1" in
    "(integer) "*) echo integer ;;
    "(nil)") echo nil ;;
    "(error) "*) echo error ;;
    '"'*) echo bulk ;;
    "(empty array)" | "1) "* | " 1) "* | "  1) "*) echo array ;;
    "1# "* | " 1# "*) echo map ;;
    "(double) "*) echo double ;;
    *) echo status ;;
  esac
}

# elements TEXT: the top-level elements of a flat array reply, one a line.
elements() {
  local line re='^ *[0-9]+\) (.*)$'
  while IFS= read -r line; do
    [[ "$line" =~ $re ]] && printf '%s\n' "${BASH_REMATCH[1]}" || printf '%s\n' "$line"
  done <<<"$1"
}

# map_keys TEXT: the keys of a map reply (an array of pairs in RESP2, a map in RESP3).
map_keys() {
  local line i=0 re2='^ *[0-9]+\) (.*)$' re3='^ *[0-9]+# ("([^"\\]|\\.)*") => '
  while IFS= read -r line; do
    if [[ "$line" =~ $re3 ]]; then
      printf '%s\n' "${BASH_REMATCH[1]}"
    elif [[ "$line" =~ $re2 ]]; then
      ((i++ % 2 == 0)) && printf '%s\n' "${BASH_REMATCH[1]}"
    fi
  done <<<"$1"
}

sorted_pairs() {
  elements "$1" | paste - - | sort
}

info_sections() { # the sections INFO ARGS must return
  local cmd=$1 words w
  read -ra words <<<"$cmd"
  words=("${words[@]:1}")
  if ((${#words[@]} == 0)); then words=(server clients memory keyspace); fi
  for w in "${words[@]}"; do
    w=${w,,}
    case "$w" in
      default | all | everything) printf '%s\n' Server Clients Memory Keyspace ;;
      *) printf '%s\n' "${w^}" ;;
    esac
  done
}

# compare KIND ARG CMD REF TGT
compare() {
  local kind=$1 arg=$2 cmd=$3 ref=$4 tgt=$5 a b s
  NOTE=""
  case "$kind" in
    exact | scan) [[ "$ref" == "$tgt" ]] ;;
    until)
      [[ "$ref" == "$arg" ]] || { NOTE="the reference did not reach '$arg' within $UNTIL_DEADLINE s"; return 1; }
      [[ "$tgt" == "$arg" ]] || { NOTE="the target did not reach '$arg' within $UNTIL_DEADLINE s"; return 1; } ;;
    skip) NOTE="not compared"; return 0 ;;
    unordered)
      [[ "$(elements "$ref" | sort)" == "$(elements "$tgt" | sort)" ]] ||
        { NOTE="compared as unordered elements"; return 1; } ;;
    pairs)
      [[ "$(sorted_pairs "$ref")" == "$(sorted_pairs "$tgt")" ]] ||
        { NOTE="compared as unordered field/value pairs"; return 1; } ;;
    within)
      local re='^\(integer\) (-?[0-9]+)$'
      [[ "$ref" =~ $re ]] || { NOTE="reference reply is not an integer"; return 1; }
      a=${BASH_REMATCH[1]}
      [[ "$tgt" =~ $re ]] || { NOTE="target reply is not an integer"; return 1; }
      b=${BASH_REMATCH[1]}
      if ((a < 0 || b < 0)); then
        ((a == b)) || { NOTE="negative TTL replies must be equal"; return 1; }
      else
        local d=$((a > b ? a - b : b - a))
        ((d <= arg)) || { NOTE="differ by $d, more than $arg"; return 1; }
      fi ;;
    type)
      a=$(reply_type "$ref") b=$(reply_type "$tgt")
      [[ "$a" == "$b" ]] || { NOTE="reply types differ: $a vs $b"; return 1; } ;;
    keys)
      [[ "$(reply_type "$ref")" == "$(reply_type "$tgt")" ]] || { NOTE="reply types differ"; return 1; }
      [[ "$(map_keys "$ref")" == "$(map_keys "$tgt")" ]] || { NOTE="map keys differ"; return 1; } ;;
    info)
      for s in $(info_sections "$cmd"); do
        [[ $'\n'"$ref" == *$'\n'"# $s"* ]] || { NOTE="reference lacks section '# $s'"; return 1; }
        [[ $'\n'"$tgt" == *$'\n'"# $s"* ]] || { NOTE="target lacks section '# $s'"; return 1; }
      done ;;
    sessiond)
      if ((TARGET_IS_REDIS)); then
        [[ "$ref" == "$tgt" ]]
      else
        NOTE="intended difference: target reply must match /$arg/"
        [[ "$tgt" =~ $arg ]]
      fi ;;
    ifimpl)
      if ((!TARGET_IS_REDIS)) && [[ "$tgt" == "(error) ERR unknown command"* ]]; then
        NOTE="NOT IMPLEMENTED by the target (optional command)"
        NOT_IMPLEMENTED+=("$cmd")
        return 0
      fi
      [[ "$ref" == "$tgt" ]] ;;
    *) lib_die "unknown comparison $kind" ;;
  esac
}

# ---------------------------------------------------------------------------------------
# The script.

LINES_RUN=0
MISMATCHES=0
NOT_IMPLEMENTED=()
FAILED_LINES=()

show() { # LABEL TEXT: a reply, indented, long ones cut
  local label=$1 text=$2 len=${#2}
  if ((len > 600)); then
    text="${text:0:600}... ($len characters, md5 $(printf '%s' "$2" | md5sum | cut -c1-12))"
  fi
  printf '    %-12s' "$label:"
  if [[ "$text" == *$'\n'* ]]; then
    printf '\n'
    while IFS= read -r text; do printf '      | %s\n' "$text"; done <<<"$text"
  else
    printf '%s\n' "$text"
  fi
}

report() { # LINENO CMD KIND REF TGT OK
  local lineno=$1 cmd=$2 kind=$3 ref=$4 tgt=$5 ok=$6 shown=$2
  ((${#shown} > 200)) && shown="${shown:0:200}... (${#cmd} characters)"
  LINES_RUN=$((LINES_RUN + 1))
  if ((ok)); then
    if ((VERBOSE)) || [[ -n "$NOTE" && "$kind" == ifimpl ]]; then
      printf 'ok   %s:%d: %s%s\n' "$SCRIPT_NAME" "$lineno" "$shown" "${NOTE:+   [$NOTE]}"
      if ((VERBOSE)); then show redis "$ref"; show "${TARGET_NAME%% *}" "$tgt"; fi
    fi
  else
    MISMATCHES=$((MISMATCHES + 1))
    FAILED_LINES+=("$lineno")
    printf 'MISMATCH %s:%d: %s   [%s%s]\n' "$SCRIPT_NAME" "$lineno" "$shown" "$kind" "${NOTE:+: $NOTE}"
    show redis "$ref"
    show "${TARGET_NAME%% *}" "$tgt"
  fi
}

# parse_annotations TEXT: sets EXEC (repl|argv|x|raw|scan|until), EXEC_ARG, KIND, KIND_ARG, CMD.
parse_annotations() {
  local text=$1 word name val
  EXEC=repl EXEC_ARG="" KIND=exact KIND_ARG=""
  while [[ "$text" == @* ]]; do
    word=${text%% *}
    [[ "$word" == "$text" ]] && text="" || text=${text#* }
    name=${word#@} val=""
    if [[ "$name" == *=* ]]; then val=${name#*=} name=${name%%=*}; fi
    case "$name" in
      argv | raw | scan) EXEC=$name ;;
      x) EXEC=x EXEC_ARG=$val ;;
      until)
        EXEC=until KIND=until
        case "$val" in
          nil) EXEC_ARG="(nil)" ;;
          empty) EXEC_ARG="(empty array)" ;;
          *) EXEC_ARG="(integer) $val" ;;
        esac
        KIND_ARG=$EXEC_ARG ;;
      unordered | pairs | type | keys | info | skip | ifimpl) KIND=$name ;;
      within | sessiond) KIND=$name KIND_ARG=$val ;;
      *) lib_die "$SCRIPT: unknown annotation @$name" ;;
    esac
  done
  [[ "$EXEC" == scan ]] && KIND=scan
  CMD=$text
}

# execute PORT: runs CMD on one server as EXEC says; sets OUT.
execute() {
  local port=$1 words
  case "$EXEC" in
    repl) cli_lines "$port" "$CMD" ;;
    argv) read -ra words <<<"$CMD"; cli_argv "$port" /dev/null "${words[@]}" ;;
    x) read -ra words <<<"$CMD"; cli_argv "$port" "$INPUTS/$EXEC_ARG" -x "${words[@]}" ;;
    raw) raw_exchange "$port" "$CMD" ;;
    scan)
      local re='^[Ss][Cc][Aa][Nn] 0( (.*))?$'
      [[ "$CMD" =~ $re ]] || lib_die "$SCRIPT: @scan needs 'SCAN 0 ...'"
      scan_all "$port" "${BASH_REMATCH[2]}" ;;
    until) until_reply "$port" "$CMD" "$EXEC_ARG" ;;
  esac
}

run_line() { # LINENO TEXT
  local lineno=$1 ref
  expand "$2"
  parse_annotations "$EXPANDED"
  execute "$REF_PORT"
  ref=$OUT
  execute "$TARGET_PORT"
  compare "$KIND" "$KIND_ARG" "$CMD" "$ref" "$OUT"
  report "$lineno" "$CMD" "$KIND" "$ref" "$OUT" $(($? == 0))
}

# run_block: the lines of a @begin/@end block on one connection per server, with
# "ECHO <separator>" between them to split the replies; each line compared on its own.
run_block() {
  local -a linenos=("${BLOCK_LINENOS[@]}") cmds=() kinds=() kargs=() refs=() tgts=()
  local i n=${#BLOCK_LINES[@]} text="" port side
  for ((i = 0; i < n; i++)); do
    expand "${BLOCK_LINES[i]}"
    parse_annotations "$EXPANDED"
    [[ "$EXEC" == repl ]] || lib_die "$SCRIPT:${linenos[i]}: only comparison annotations in a block"
    cmds+=("$CMD") kinds+=("$KIND") kargs+=("$KIND_ARG")
    ((i > 0)) && text+=$'\n'"ECHO \"$SEPARATOR\""$'\n'
    text+=$CMD
  done
  for side in ref tgt; do
    [[ $side == ref ]] && port=$REF_PORT || port=$TARGET_PORT
    cli_lines "$port" "$text"
    local -a parts=()
    local part="" line first=1
    while IFS= read -r line; do
      if [[ "$line" == "\"$SEPARATOR\"" ]]; then
        parts+=("$part") part="" first=1
      else
        ((first)) && part=$line || part+=$'\n'$line
        first=0
      fi
    done <<<"$OUT"
    parts+=("$part")
    for ((i = 0; i < n; i++)); do
      if [[ $side == ref ]]; then refs[i]=${parts[i]-"(no reply)"}; else tgts[i]=${parts[i]-"(no reply)"}; fi
    done
  done
  for ((i = 0; i < n; i++)); do
    compare "${kinds[i]}" "${kargs[i]}" "${cmds[i]}" "${refs[i]}" "${tgts[i]}"
    report "${linenos[i]}" "${cmds[i]} (in the block)" "${kinds[i]}" "${refs[i]}" "${tgts[i]}" $(($? == 0))
  done
}

lineno=0
in_block=0
BLOCK_LINES=()
BLOCK_LINENOS=()
TARGET_DIED=0
while IFS= read -r line <&9 || [[ -n "$line" ]]; do
  lineno=$((lineno + 1))
  line=${line%$'\r'}
  [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
  if [[ "$line" == "@begin" ]]; then
    ((in_block)) && lib_die "$SCRIPT:$lineno: nested @begin"
    in_block=1 BLOCK_LINES=() BLOCK_LINENOS=()
    continue
  fi
  if [[ "$line" == "@end" ]]; then
    ((in_block)) || lib_die "$SCRIPT:$lineno: @end without @begin"
    in_block=0
    run_block
  elif ((in_block)); then
    BLOCK_LINES+=("$line") BLOCK_LINENOS+=("$lineno")
    continue
  else
    run_line "$lineno" "$line"
  fi
  if ! lib_target_alive; then
    echo "FATAL: $TARGET_NAME exited after $SCRIPT_NAME:$lineno; its log:" >&2
    tail -n 50 "$LIB_TMP/sessiond.log" >&2 2>/dev/null
    TARGET_DIED=1
    break
  fi
done 9<"$SCRIPT"
((in_block)) && lib_die "$SCRIPT: @begin without @end"

echo
echo "$LINES_RUN commands compared, $MISMATCHES mismatches (reference redis-server vs $TARGET_NAME)"
((${#NOT_IMPLEMENTED[@]})) && printf 'not implemented by the target (optional): %s\n' "${NOT_IMPLEMENTED[*]}"
((MISMATCHES)) && echo "mismatched lines: ${FAILED_LINES[*]}"
((MISMATCHES == 0 && TARGET_DIED == 0))
