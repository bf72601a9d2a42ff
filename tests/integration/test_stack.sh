#!/usr/bin/env bash
# test_stack.sh — scripts/stack end to end, once per web server setup: up,
# stack.env, health and routing through the server, the bot check (the stack
# runs with botcheck_mode = hmac: 403 bot_check_failed without a valid token,
# 201 with one), ledger-kill/ledger-start, pg-stop/pg-start, and down leaving
# no process behind.
#
#   tests/integration/test_stack.sh [VARIANT...]
#   VARIANT: lighttpd:spawned lighttpd:pool apache nginx (default: all four)
#
# Environment
#   RG_BIN_DIR   build tree holding rg-ledger and rg-fcgi (required; ctest
#                passes $<TARGET_FILE_DIR:rg-ledger>)
#   RG_TEST_TMP  scratch directory (default: $RG_BIN_DIR/tests/tmp)
#   RG_STACK_KEEP=1  keep each stack directory even when its checks pass
# Exit 0: passed; 1: failed (the stack directory is kept, its logs named);
# 77: skipped (not root, or rg-fcgi is still the placeholder).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
stack=$here/../../scripts/stack
: "${RG_BIN_DIR:?set RG_BIN_DIR to the build tree holding rg-ledger and rg-fcgi}"
RG_BIN_DIR=$(realpath -- "$RG_BIN_DIR")
export RG_BIN_DIR
tmp=${RG_TEST_TMP:-$RG_BIN_DIR/tests/tmp}
# A stack's Unix socket paths must fit in 107 bytes: scripts/stack takes a DIR
# of at most 80 characters, and the name below adds up to 32.
own_tmp=''
if ((${#tmp} > 48)); then
  own_tmp=$(mktemp -d /tmp/rg-stack.XXXXXX)
  chmod 0755 "$own_tmp"
  echo "($tmp is too long a path for the stacks' sockets; using $own_tmp)"
  tmp=$own_tmp
fi

skip() { echo "SKIP: $*"; exit 77; }
(($(id -u) == 0)) || skip "scripts/stack needs root (PostgreSQL runs as postgres, workers as www-data)"
# The placeholder rg-fcgi prints nothing and exits; the real one has a usage.
if [[ -z $("$RG_BIN_DIR/rg-fcgi" --help 2>&1 || true) ]]; then
  skip "$RG_BIN_DIR/rg-fcgi is still the placeholder: without a FastCGI app no stack can turn healthy"
fi

variants=("$@")
((${#variants[@]})) || variants=(lighttpd:spawned lighttpd:pool apache nginx)

failures=0
current_dir=''
fail() { echo "FAIL [$variant]: $*" >&2; failures=$((failures + 1)); variant_failed=1; }
note() { echo "  [$variant] $*"; }

cleanup() {
  if [[ -n $current_dir ]]; then "$stack" down "$current_dir" >/dev/null 2>&1 || true; fi
  if [[ -n $own_tmp ]]; then rmdir "$own_tmp" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nothing listens on (up also checks, and fails clearly if it raced).
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    [[ -z $(ss -Htln "sport = :$p" 2>/dev/null) ]] && { echo "$p"; return; }
  done
}

# running PID: alive and not a zombie.
running() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  [[ ${s:0:1} != [ZX] ]]
}

# http METHOD URL [curl args...]: sets code, body and headers.
# A botcheck_mode = hmac token for SESSION, signed with SECRET, expiring
# SECONDS from now (negative: already expired), as a shop's backend makes it.
hmac_token() {
  local expiry=$(($(date +%s) + $3))
  printf '%s.%s' "$expiry" \
    "$(printf '%s|%s' "$1" "$expiry" | openssl dgst -sha256 -hmac "$2" -hex | sed 's/.*= //')"
}
botcheck_secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

http() {
  local method=$1 url=$2 out
  shift 2
  # No "Expect: 100-continue": its interim answer would come first.
  out=$(curl -s -i --noproxy '*' --max-time 10 -H 'Expect:' -X "$method" "$@" "$url" 2>/dev/null) || true
  headers=${out%%$'\r\n\r\n'*}
  body=${out#*$'\r\n\r\n'}
  code=$(sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' <<<"$headers")
  code=${code:-000}
}

# Polls GET health until it answers WANT, up to SECONDS.
wait_health() {
  local want=$1 deadline=$((SECONDS + $2))
  while :; do
    http GET "$BASE_URL/v1/health"
    [[ $code == "$want" ]] && return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

load_env() {
  local k
  for k in BASE_URL ADMIN_TOKEN PGHOST PGPORT PGDATABASE PGUSER LEDGER_PID STACK_DIR SERVER \
           SERVER_PID LEDGER_SOCKET LEDGER_CONFIG PG_DATA FCGI_PID; do
    unset "$k"
  done
  set -a
  # shellcheck disable=SC1091
  . "$dir/stack.env"
  set +a
}

run_variant() {
  local server=${variant%%:*} mode="" port try k pid pids=() leftovers
  [[ $variant == *:* ]] && mode=${variant#*:}
  dir=$tmp/stack-${variant/:/-}-$$
  rm -rf "$dir"
  up_log=$tmp/stack-${variant/:/-}-$$.up.log
  mkdir -p "$tmp"
  variant_failed=0

  # --- up --------------------------------------------------------------------
  for try in 1 2 3; do
    port=$(free_port)
    current_dir=$dir
    if RG_BOTCHECK_MODE=hmac RG_BOTCHECK_SECRET=$botcheck_secret \
         "$stack" up "$dir" --port "$port" --server "$server" ${mode:+--fcgi "$mode"} \
         --workers 3 --shards 2 >"$up_log" 2>&1; then
      break
    fi
    if grep -q 'already in use' "$up_log" && ((try < 3)); then continue; fi
    cat "$up_log" >&2
    fail "scripts/stack up failed"
    return
  done
  note "up on port $port ($(grep -c . "$up_log") lines of output)"

  # --- stack.env -------------------------------------------------------------
  [[ -f $dir/stack.env ]] || { fail "no $dir/stack.env"; return; }
  load_env
  for k in BASE_URL ADMIN_TOKEN PGHOST PGPORT PGDATABASE PGUSER LEDGER_PID STACK_DIR SERVER \
           SERVER_PID LEDGER_SOCKET LEDGER_CONFIG PG_DATA; do
    [[ -n ${!k:-} ]] || fail "stack.env lacks $k"
  done
  if [[ $variant != lighttpd:spawned && $variant != apache ]]; then
    [[ -n ${FCGI_PID:-} ]] || fail "stack.env lacks FCGI_PID for a pool"
  fi
  [[ ${BASE_URL:-} == "http://127.0.0.1:$port/api" ]] || fail "BASE_URL is '${BASE_URL:-}'"
  [[ ${STACK_DIR:-} == "$dir" ]] || fail "STACK_DIR is '${STACK_DIR:-}'"
  [[ $(readlink "/proc/${LEDGER_PID:-0}/exe" 2>/dev/null) == "$dir/bin/rg-ledger" ]] ||
    fail "LEDGER_PID ${LEDGER_PID:-} is not the stack's rg-ledger"
  running "${SERVER_PID:-0}" || fail "SERVER_PID ${SERVER_PID:-} is not running"
  [[ -z ${FCGI_PID:-} ]] || running "$FCGI_PID" || fail "FCGI_PID $FCGI_PID is not running"
  [[ $(stat -c '%a %G' "${LEDGER_CONFIG:-/nonexistent}" 2>/dev/null) == "640 www-data" ]] ||
    fail "the config holding the admin token is not mode 0640, group www-data"
  [[ -S ${LEDGER_SOCKET:-} && $(stat -c '%a %G' "$LEDGER_SOCKET") == "660 www-data" ]] ||
    fail "the ledger socket is not mode 0660, group www-data"
  if ((variant_failed)); then return; fi

  # --- scripts/migrate: idempotent, and a failing file changes nothing -----------
  local out sqldir=$dir.sql
  out=$("$here/../../scripts/migrate" 2>&1) || fail "a second scripts/migrate failed: $out"
  [[ $out == *"0 applied"* ]] || fail "a second scripts/migrate applied something: $out"
  mkdir -p "$sqldir"
  cp "$here"/../../sql/*.sql "$sqldir/"
  printf 'CREATE TABLE migrate_probe (a int);\nSELECT 1/0;\n' >"$sqldir/999_broken.sql"
  if RG_SQL_DIR=$sqldir "$here/../../scripts/migrate" >/dev/null 2>&1; then
    fail "scripts/migrate succeeded with a failing migration"
  fi
  [[ $(psql -X -At -c "SELECT to_regclass('migrate_probe') IS NULL AND
        NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = '999')" 2>&1) == t ]] ||
    fail "a failed migration left changes behind"
  rm -rf "$sqldir"

  # --- through the web server --------------------------------------------------
  http GET "$BASE_URL/v1/health"
  [[ $code == 200 ]] || fail "health is $code: $body"
  [[ $body == *'"status":"ok"'* || $body == *'"status": "ok"'* ]] || fail "health body: $body"
  grep -qi '^content-type: application/json' <<<"$headers" || fail "health is not JSON: $headers"
  http GET "http://127.0.0.1:$port/"
  [[ $code == 200 ]] || fail "the static root / is $code"
  http GET "http://127.0.0.1:$port/apix"
  grep -qi '^content-type: application/json' <<<"$headers" && fail "/apix reached the application"
  # Authorization must reach the application (Apache drops it unless told).
  http GET "$BASE_URL/v1/admin/skus/no-such-sku"
  [[ $code == 401 ]] || fail "admin without a token: $code (want 401)"
  http GET "$BASE_URL/v1/admin/skus/no-such-sku" -H "Authorization: Bearer $ADMIN_TOKEN"
  [[ $code == 404 ]] || fail "admin with the stack's token: $code (want 404): $body"
  # Bodies: above request_body_max the application's own JSON 413; far above
  # it the server refuses before the application (never an empty body).
  printf '{"sku":"a","quantity":1,"session":"s","pad":"%s"}' "$(head -c 8000 /dev/zero | tr '\0' x)" \
    >"$dir.body"
  http POST "$BASE_URL/v1/reservations" -H 'Content-Type: application/json' --data-binary "@$dir.body"
  [[ $code == 413 && $body == *body_too_large* ]] || fail "8 KB body: $code $body (want the API's 413)"
  printf '{"pad":"%s"}' "$(head -c 100000 /dev/zero | tr '\0' x)" >"$dir.body"
  http POST "$BASE_URL/v1/reservations" -H 'Content-Type: application/json' --data-binary "@$dir.body"
  [[ $code == 413 ]] || fail "100 KB body: $code (want 413)"
  rm -f "$dir.body"

  # --- the bot check, as a checkout page would meet it ----------------------------
  local res='{"sku":"bot-probe","quantity":1,"session":"bot-s1"'
  http PUT "$BASE_URL/v1/admin/skus/bot-probe" -H "Authorization: Bearer $ADMIN_TOKEN" \
    -H 'Content-Type: application/json' --data '{"stock":5}'
  [[ $code == 201 || $code == 200 ]] || fail "creating SKU bot-probe: $code $body"
  http POST "$BASE_URL/v1/reservations" -H 'Content-Type: application/json' --data "$res}"
  [[ $code == 403 && $body == *bot_check_failed* ]] ||
    fail "a reservation without a token: $code $body (want 403 bot_check_failed)"
  http POST "$BASE_URL/v1/reservations" -H 'Content-Type: application/json' \
    --data "$res,\"token\":\"$(hmac_token bot-s1 "$botcheck_secret" -60)\"}"
  [[ $code == 403 && $body == *bot_check_failed* ]] ||
    fail "a reservation with an expired token: $code $body (want 403 bot_check_failed)"
  http POST "$BASE_URL/v1/reservations" -H 'Content-Type: application/json' \
    --data "$res,\"token\":\"$(hmac_token bot-s1 "$botcheck_secret" 60)\"}"
  [[ $code == 201 ]] || fail "a reservation with a valid token: $code $body (want 201)"

  # --- ledger-kill / ledger-start ------------------------------------------------
  local old_ledger=$LEDGER_PID
  "$stack" ledger-kill "$dir" >/dev/null || fail "ledger-kill failed"
  running "$old_ledger" && fail "ledger pid $old_ledger still runs after ledger-kill"
  if wait_health 503 10; then
    grep -qi '^retry-after:' <<<"$headers" || fail "503 without Retry-After"
  else
    fail "health is $code, not 503, with the ledger killed"
  fi
  "$stack" ledger-start "$dir" >/dev/null || fail "ledger-start failed"
  load_env
  [[ $LEDGER_PID != "$old_ledger" ]] || fail "LEDGER_PID was not updated in stack.env"
  [[ $(readlink "/proc/$LEDGER_PID/exe" 2>/dev/null) == "$dir/bin/rg-ledger" ]] ||
    fail "new LEDGER_PID $LEDGER_PID is not the stack's rg-ledger"
  http GET "$BASE_URL/v1/health"
  [[ $code == 200 ]] || fail "health is $code after ledger-start"

  # --- pg-stop / pg-start ---------------------------------------------------------
  "$stack" pg-stop "$dir" >/dev/null || fail "pg-stop failed"
  if psql -X -At -c 'SELECT 1' >/dev/null 2>&1; then fail "psql still connects after pg-stop"; fi
  # Selling never waits for PostgreSQL: the API stays up without it.
  http GET "$BASE_URL/v1/health"
  [[ $code == 200 ]] || fail "health is $code while PostgreSQL is down"
  "$stack" pg-start "$dir" >/dev/null || fail "pg-start failed"
  [[ $(psql -X -At -c 'SELECT version FROM schema_migrations ORDER BY 1' 2>&1) == 001* ]] ||
    fail "after pg-start, psql cannot read schema_migrations"

  # --- down ---------------------------------------------------------------------
  pids=("$LEDGER_PID" "$SERVER_PID" ${FCGI_PID:+"$FCGI_PID"})
  pid=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
  [[ -z $pid ]] || pids+=("$pid")
  "$stack" down "$dir" >/dev/null || fail "down failed"
  current_dir=''
  for pid in "${pids[@]}"; do
    running "$pid" && fail "pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) still runs after down"
  done
  leftovers=$(for p in /proc/[0-9]*; do
    [[ $(readlink "$p/exe" 2>/dev/null) == "$dir/bin/"* ]] && running "${p#/proc/}" && echo "${p#/proc/}"
  done || true)
  [[ -z $leftovers ]] || fail "processes of $dir/bin still run after down: $leftovers"
  [[ -z $(ss -Htln "sport = :$port" 2>/dev/null) ]] || fail "port $port still listens after down"
  "$stack" down "$dir" >/dev/null || fail "a second down failed"

  # --- logs -----------------------------------------------------------------------
  local reports
  reports=$(grep -lE 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|WARNING: ThreadSanitizer|runtime error:' \
    "$dir"/log/* 2>/dev/null || true)
  [[ -z $reports ]] || fail "sanitizer reports in: $reports"
}

for variant in "${variants[@]}"; do
  case $variant in
    lighttpd:spawned|lighttpd:pool|apache|nginx) ;;
    *) echo "unknown variant '$variant' (lighttpd:spawned lighttpd:pool apache nginx)" >&2; exit 2 ;;
  esac
  echo "== $variant"
  start=$SECONDS
  run_variant
  if [[ -n $current_dir ]]; then "$stack" down "$current_dir" >/dev/null 2>&1 || true; current_dir=''; fi
  if ((variant_failed)); then
    echo "  [$variant] FAILED after $((SECONDS - start)) s; kept $dir (logs: $dir/log, up: $up_log)"
  else
    echo "  [$variant] passed in $((SECONDS - start)) s"
    if [[ -z ${RG_STACK_KEEP:-} ]]; then rm -rf "$dir" "$up_log"; fi
  fi
done

if ((failures)); then
  echo "test_stack: $failures check(s) failed" >&2
  exit 1
fi
echo "test_stack: all passed (${variants[*]})"
