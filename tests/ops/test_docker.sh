#!/usr/bin/env bash
# test_docker.sh SRC — the image's RUN steps (docker/build-steps.sh) on this
# Debian, into a temp DESTDIR instead of an image, then the image's roles run
# from that tree the way docker/compose.yaml runs them:
#   build-deps / runtime-deps find everything installed (scripts/deps);
#   build compiles a fresh Release tree from SRC; stage installs it plus the
#   container's lighttpd config; setup creates the users of the sysusers.d
#   file (useradd --prefix) and the directories, owned as tmpfiles.d says;
#   compose_lint.py --root: every path and user the compose file names exists
#   in the staged image;
#   ledger role: rg-ledger answers the healthcheck's rg-ctl stats;
#   fcgi role: the pool under umask 0007 answers the healthcheck's cgi-fcgi
#   GET /v1/health with "ok", through the ledger;
#   web role: the rendered lighttpd config passes lighttpd -tt and serves
#   /api/v1/health (port from RG_TEST_PORT) through the pool.
# Environment: RG_TEST_TMP, RG_TEST_PORT.
set -euo pipefail
src=${1:?usage: test_docker.sh SRC}
tmp=${RG_TEST_TMP:?}/docker.$$
port=${RG_TEST_PORT:?}
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
fail=0
bad() { echo "FAIL: $*"; fail=1; }
steps=$src/docker/build-steps.sh

"$steps" build-deps
"$steps" build "$src" "$tmp/build"
DESTDIR=$tmp/stage "$steps" stage "$tmp/build"
"$steps" runtime-deps
DESTDIR=$tmp/stage "$steps" setup
st=$tmp/stage

# The image tree: binaries, config, sql, users, directories.
for f in usr/sbin/rg-ledger usr/sbin/rg-fcgi usr/bin/rg-ctl usr/share/revenue-guard/sql/001_initial.sql \
         usr/share/revenue-guard/scripts/migrate etc/revenue-guard/revenue-guard.conf \
         etc/revenue-guard/lighttpd/lighttpd.conf etc/revenue-guard/lighttpd/fastcgi-pool.conf; do
  [[ -e $st/$f ]] || bad "staged image lacks /$f"
done
for u in revenue-guard revenue-guard-fcgi www-data; do
  grep -q "^$u:" "$st/etc/passwd" || bad "setup did not create user $u"
done
grep -q '^revenue-guard:[^:]*:[0-9]*:.*revenue-guard-fcgi' "$st/etc/group" || bad "revenue-guard-fcgi not in group revenue-guard"
grep -q '^revenue-guard-fcgi:[^:]*:[0-9]*:.*www-data' "$st/etc/group" || bad "www-data not in group revenue-guard-fcgi"
uid=$(awk -F: '$1 == "revenue-guard" { print $3 }' "$st/etc/passwd")
[[ $(stat -c '%a %u' "$st/var/lib/revenue-guard") == "700 $uid" ]] || bad "/var/lib/revenue-guard: $(stat -c '%a %u' "$st/var/lib/revenue-guard")"
# Running setup twice changes nothing (a rebuilt layer, a re-run script).
DESTDIR=$st "$steps" setup 2>/dev/null || bad "setup is not idempotent"
[[ $(grep -c '^revenue-guard:' "$st/etc/passwd") == 1 ]] || bad "setup twice duplicated users"

python3 "$src/tests/ops/compose_lint.py" "$src/docker/compose.yaml" --root "$st" \
  --packages "$("$steps" runtime-packages)" || bad "compose file names things the image lacks"

# ---- the roles, from the staged tree (as root, paths moved into $tmp) -------------
export RG_DATA_DIR=$tmp/wal RG_LEDGER_SOCKET=$tmp/ledger.sock RG_SHARDS=1
conf=$st/etc/revenue-guard/revenue-guard.conf
"$st/usr/sbin/rg-ledger" --config "$conf" >"$tmp/ledger.log" 2>&1 &
pids+=($!)
ok=0
for _ in $(seq 100); do
  if "$st/usr/bin/rg-ctl" --config "$conf" stats >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.1
done
((ok)) || { tail "$tmp/ledger.log"; bad "ledger healthcheck (rg-ctl stats) never passed"; }

fsock=$tmp/fcgi.sock
(umask 0007 && exec "$st/usr/sbin/rg-fcgi" --config "$conf" --listen "unix:$fsock" --workers 2) >"$tmp/fcgi.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -S $fsock ]] && break; sleep 0.05; done
[[ $(stat -c %a "$fsock" 2>/dev/null) == 770 ]] || bad "fcgi socket mode $(stat -c %a "$fsock" 2>&1), want 770 (www-data connects through its group)"
# The compose healthcheck's own command line, with the socket moved.
hc=$(python3 -c 'import json,sys; sys.path.insert(0, sys.argv[2]); import compose_lint as c; print(c.load(sys.argv[1])["services"]["fcgi"]["healthcheck"]["test"][1])' \
     "$src/docker/compose.yaml" "$src/tests/ops")
hc=${hc//\/run\/revenue-guard-fcgi\/fcgi.sock/$fsock}
hc=${hc//\/usr\/bin\/cgi-fcgi/$(type -P cgi-fcgi)}
if sh -c "$hc"; then echo "fcgi healthcheck: passed"; else tail "$tmp/fcgi.log"; bad "fcgi healthcheck failed: $hc"; fi

# Web role: the rendered config, relocated from the image's absolute paths.
web=$tmp/web.conf
sed -e "s|/etc/revenue-guard/|$st/etc/revenue-guard/|g" -e "s|/srv/revenue-guard-web|$st/srv/revenue-guard-web|g" \
    -e "s|/run/revenue-guard-fcgi/fcgi.sock|$fsock|g" -e "s|^server.port *=.*|server.port = $port|" \
    -e '/^server.username/d' -e '/^server.groupname/d' "$st/etc/revenue-guard/lighttpd/lighttpd.conf" > "$web"
sed -i "s|include \"$st/etc/revenue-guard/lighttpd/fastcgi-pool.conf\"|include \"$tmp/pool.conf\"|" "$web"
sed -e "s|/run/revenue-guard-fcgi/fcgi.sock|$fsock|g" "$st/etc/revenue-guard/lighttpd/fastcgi-pool.conf" > "$tmp/pool.conf"
grep -q "$tmp/pool.conf" "$web" || bad "lighttpd.conf does not include the fastcgi-pool.conf"
lighttpd -tt -f "$web" || bad "lighttpd -tt refuses the rendered config"
lighttpd -D -f "$web" >"$tmp/lighttpd.out" 2>&1 &
pids+=($!)
code=000
for _ in $(seq 100); do
  code=$(curl -s -o "$tmp/health.json" -w '%{http_code}' "http://127.0.0.1:$port/api/v1/health" || true)
  [[ $code == 200 ]] && break
  sleep 0.05
done
if [[ $code == 200 ]] && grep -q '"ok"' "$tmp/health.json"; then
  echo "web: GET /api/v1/health through lighttpd -> pool -> ledger: 200 $(cat "$tmp/health.json")"
else
  cat "$tmp/lighttpd.out" "$st/srv/revenue-guard-web/log/lighttpd-error.log" 2>/dev/null | tail
  bad "web role: /api/v1/health answered $code"
fi
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

((fail)) && { echo "test_docker: FAILED"; exit 1; }
echo "test_docker: all passed"
