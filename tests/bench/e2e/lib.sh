# tests/bench/e2e/lib.sh — what the e2e bench scripts share (sourced, not run).
#
# Binaries: rg-ledger, rg-fcgi and rg-bench from $RG_BIN_DIR (ctest passes the
# build tree), else from ${RG_BUILD_DIR:-build} (built when missing); the
# helpers of this directory (openloop, delayproxy, pgdirect) from
# $RG_E2E_BIN_DIR, else compiled here with cc into the run's temp dir, so the
# scripts work whether or not the build tree has them.
# Results: $RG_E2E_RESULTS (default tests/bench/results), one
# <name>-<UTC date>.json per run with the machine and the command, plus SVG
# charts drawn by gnuplot next to it.

e2e_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$e2e_here/../../.." && pwd)
export LC_ALL=C

say() { printf '%s: %s\n' "$e2e_name" "$*" >&2; }
die() { printf '%s: %s\n' "$e2e_name" "$*" >&2; exit 1; }
skip() { printf '%s: SKIP: %s\n' "$e2e_name" "$*"; exit 77; }

# e2e_init NAME "$@": temp dir, binaries, results path. Sets TMP, BIN, HELP,
# RESULTS, STAMP, JSON_OUT, COMMAND.
e2e_init() {
  e2e_name=$1
  shift
  COMMAND="tests/bench/e2e/$e2e_name${*:+ $*}"
  (($(id -u) == 0)) || skip "needs root (PostgreSQL runs as postgres, the workers as www-data)"
  TMP=$(mktemp -d "${RG_E2E_TMP_BASE:-/tmp}/rg-e2e-$e2e_name.XXXXXX")
  chmod 0755 "$TMP"
  if [[ -n ${RG_BIN_DIR:-} ]]; then
    BIN=$(realpath -- "$RG_BIN_DIR")
  else
    BIN=$(realpath -m -- "${RG_BUILD_DIR:-$repo/build}")
    if [[ ! -x $BIN/rg-ledger || ! -x $BIN/rg-fcgi || ! -x $BIN/rg-bench ]]; then
      say "building $BIN"
      { [[ -f $BIN/CMakeCache.txt ]] || cmake -S "$repo" -B "$BIN" >/dev/null; } &&
        cmake --build "$BIN" -j "$(nproc)" --target rg-ledger rg-fcgi rg-bench >/dev/null ||
        die "build failed"
    fi
  fi
  RG_BENCH=${RG_BENCH_BIN:-$BIN/rg-bench}
  for b in "$BIN/rg-ledger" "$BIN/rg-fcgi" "$RG_BENCH"; do
    [[ -x $b ]] || die "$b is missing"
  done
  if [[ -n ${RG_E2E_BIN_DIR:-} ]]; then
    HELP=$(realpath -- "$RG_E2E_BIN_DIR")
  else
    HELP=$TMP/bin
    mkdir -p "$HELP"
    local cflags=(-std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wno-unused-parameter)
    cc "${cflags[@]}" -o "$HELP/rg-e2e-openloop" "$e2e_here/openloop.c" &&
      cc "${cflags[@]}" -o "$HELP/rg-e2e-delayproxy" "$e2e_here/delayproxy.c" &&
      cc "${cflags[@]}" -I"$(pg_config --includedir)" -o "$HELP/rg-e2e-pgdirect" \
         "$e2e_here/pgdirect_fcgi.c" -lfcgi -ljson-c -lpq || die "cannot compile the helpers"
  fi
  RESULTS=${RG_E2E_RESULTS:-$repo/tests/bench/results}
  mkdir -p "$RESULTS"
  STAMP=$(date -u +%Y-%m-%d)
  JSON_OUT=$RESULTS/e2e-$e2e_name-$STAMP.json
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  : >"$TMP/rows.jsonl"
}

# row JSON: appends one result object (one line) to the run's rows.
row() { printf '%s\n' "$1" >>"$TMP/rows.jsonl"; }

# e2e_write PARAMS_JSON NOTE: writes $JSON_OUT: machine, command, params,
# the rows, and the load average at start and end.
e2e_write() {
  python3 - "$JSON_OUT" "$TMP/rows.jsonl" "$1" "$2" "$COMMAND" "$LOAD_START" "$e2e_name" <<'PY'
import json, os, platform, sys, datetime
out, rows_file, params, note, command, load_start, name = sys.argv[1:]
model = ""
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        model = line.split(":", 1)[1].strip(); break
mem_kb = 0
for line in open("/proc/meminfo"):
    if line.startswith("MemTotal"):
        mem_kb = int(line.split()[1]); break
rows = [json.loads(l) for l in open(rows_file) if l.strip()]
doc = {
    "name": "e2e-" + name,
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "command": command,
    "machine": {"cpus": os.cpu_count(), "cpu_model": model, "mem_kb": mem_kb,
                "kernel": platform.release(), "hostname": platform.node(),
                "loadavg_start": load_start,
                "loadavg_end": open("/proc/loadavg").read().split()[:3]},
    "note": note,
    "params": json.loads(params),
    "results": rows,
}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
os.replace(tmp, out)
PY
  say "wrote $JSON_OUT"
}

# e2e_check KEY...: the JSON is well formed, has rows, and every row has
# the KEYs (dotted paths) as numbers — what the smoke tests assert.
e2e_check() {
  python3 - "$JSON_OUT" "$@" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for k in ("name", "date", "command", "machine", "params", "results"):
    assert k in doc, "missing " + k
assert doc["results"], "no results"
for need in sys.argv[2:]:
    kind, _, path = need.partition(":")
    rows = [r for r in doc["results"] if r.get("kind") == kind]
    assert rows, "no row of kind " + kind
    for r in rows:
        v = r
        for part in path.split("."):
            assert isinstance(v, dict) and part in v, "%s row lacks %s: %s" % (kind, path, r)
            v = v[part]
        assert isinstance(v, (int, float)) and not isinstance(v, bool), "%s.%s is not a number" % (kind, path)
print("json ok: %d rows" % len(doc["results"]))
PY
}

# plot NAME GNUPLOT_SCRIPT: renders $RESULTS/e2e-NAME-$STAMP.svg (data files
# live in $TMP; the script refers to them by absolute path).
plot() {
  local svg=$RESULTS/e2e-$1-$STAMP.svg
  command -v gnuplot >/dev/null || { say "no gnuplot: skipping $svg"; return 0; }
  {
    echo "set terminal svg size 800,480 dynamic enhanced font 'sans,12' background rgb 'white'"
    echo "set output '$svg'"
    echo "set grid"
    echo "set key outside right top"
    printf '%s\n' "$2"
  } >"$TMP/$1.gp"
  gnuplot "$TMP/$1.gp" 2>"$TMP/$1.gp.err" || { cat "$TMP/$1.gp.err" >&2; die "gnuplot failed on $1"; }
  say "chart $svg"
}

# rss_kb PID
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# wrk_json NAME FILE: wrk --latency output as a JSON object (rps, p50/p90/p99
# in µs, requests, non-2xx, socket errors).
wrk_json() {
  awk -v name="$1" '
    function us(v) {
      if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /m$/) return v * 60e6
      if (v ~ /s$/) return v * 1e6; return v + 0 }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = us($2) } /^ +90%/ { p90 = us($2) } /^ +99%/ { p99 = us($2) }
    /requests in/ { n = $1 }
    /Non-2xx/ { non2xx = $5 }
    /Socket errors/ { gsub(",", ""); serr = $4 + $6 + $8 + $10 }
    END { printf "{\"run\":\"%s\",\"rps\":%.1f,\"requests\":%d,\"non2xx\":%d,\"socket_errors\":%d,\"latency_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f}}",
                 name, rps, n, non2xx, serr, p50, p90, p99 }' "$2"
}

# The reserve body for wrk: every request a new buyer of SKU $1.
wrk_reserve_lua() {
  cat >"$TMP/reserve-$1.lua" <<LUA
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"sku":"$1","quantity":1,"session":"w%d-%d"}',
                             math.random(1, 1000000000), n)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
LUA
  echo "$TMP/reserve-$1.lua"
}

# pgdirect_up DIR PORT WORKERS CONNINFO: a second lighttpd, the same
# conf/lighttpd/lighttpd.conf template as the stack's, spawning WORKERS
# pgdirect processes. Sets PGD_PID.
pgdirect_up() {
  local d=$1 port=$2 workers=$3 conninfo=$4
  install -d -m 0755 "$d" "$d/bin" "$d/conf" "$d/www" "$d/log"
  install -d -o www-data -g www-data -m 0750 "$d/run" "$d/tmp"
  install -m 0755 "$HELP/rg-e2e-pgdirect" "$d/bin/"
  echo ok >"$d/www/index.html"
  install -o www-data -g www-data -m 0640 /dev/null "$d/log/lighttpd-error.log"
  install -o www-data -g www-data -m 0640 /dev/null "$d/log/lighttpd-access.log"
  cat >"$d/conf/fastcgi.conf" <<EOF
\$HTTP["url"] =~ "^/api(/|\$)" {
  fastcgi.server = (
    "/api" => ((
      "bin-path"        => "$d/bin/rg-e2e-pgdirect",
      "bin-environment" => ( "PGDIRECT_CONNINFO" => "$conninfo" ),
      "socket"          => "$d/run/pgdirect.sock",
      # lighttpd 1.4.69 starts min-procs (default 4) processes and no more,
      # whatever max-procs says: both, so there really are WORKERS.
      "max-procs"       => $workers,
      "min-procs"       => $workers,
      "check-local"     => "disable",
    )),
  )
}
EOF
  sed -e "s|@STACK_DIR@|$d|g" -e "s|@PORT@|$port|g" -e "s|@FASTCGI_CONF@|$d/conf/fastcgi.conf|g" \
    -e "s|@ERRORS_DIR@|$repo/conf/lighttpd|g" \
    "$repo/conf/lighttpd/lighttpd.conf" >"$d/conf/lighttpd.conf"
  lighttpd -tt -f "$d/conf/lighttpd.conf" >/dev/null || die "lighttpd refuses $d/conf/lighttpd.conf"
  setsid lighttpd -D -f "$d/conf/lighttpd.conf" </dev/null >>"$d/log/lighttpd.out" 2>&1 &
  PGD_PID=$!
  echo "$PGD_PID" >"$d/lighttpd.pid"
  local i
  for i in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' "http://127.0.0.1:$port/api/v1/health") == 200 ]] && return 0
    kill -0 "$PGD_PID" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$d/log/lighttpd-error.log" "$d/log/lighttpd.out" >&2
  die "the pgdirect lighttpd did not answer on port $port"
}

# pgdirect_down DIR: stops that lighttpd (it stops its workers) by pid.
pgdirect_down() {
  local pid
  pid=$(cat "$1/lighttpd.pid" 2>/dev/null) || return 0
  if kill -0 "$pid" 2>/dev/null && [[ $(readlink "/proc/$pid/exe") == "$(command -v lighttpd)" ]]; then
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$1/lighttpd.pid"
}

# wait_lag BASE_URL [SECONDS]: until /v1/health says the write-behind is
# caught up (lag 0, every shard connected). Prints the seconds it took.
wait_lag() {
  python3 - "$1" "${2:-120}" <<'PY'
import json, sys, time, urllib.request
base, limit = sys.argv[1], float(sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
t0 = time.monotonic()
while True:
    try:
        h = json.load(opener.open(base + "/v1/health", timeout=5))
        wb = h.get("writebehind", {})
        if wb.get("lag_records", 1) == 0 and wb.get("connected_shards", 0) >= h.get("shards", 1):
            break
    except Exception:
        pass
    if time.monotonic() - t0 > limit:
        print("-1"); sys.exit(0)
    time.sleep(0.05)
print("%.2f" % (time.monotonic() - t0))
PY
}

# wait_rows_settled MIN: until the stack's inventory_log (database
# revenue_guard, over PostgreSQL's own socket) holds at least MIN rows and
# has not grown for a second — PostgreSQL's own word that the write-behind
# is idle. (/v1/health's lag is refreshed only when the writer reports, so
# right after a burst it can still read 0.) Prints the seconds it took.
wait_rows_settled() {
  local min=$1 t0=$SECONDS n last=-1 still=0
  while :; do
    n=$(psql -X -At -h "$PGHOST" -p "$PGPORT" -U postgres -d revenue_guard \
          -c "SELECT count(*) FROM inventory_log")
    if ((n >= min && n == last)); then
      still=$((still + 1))
      ((still >= 5)) && break
    else
      still=0
    fi
    last=$n
    ((SECONDS - t0 < 900)) || die "inventory_log stuck at $n rows (at least $min expected)"
    sleep 0.2
  done
  echo $((SECONDS - t0))
}

# count_workers: checks that both sides really run WORKERS FastCGI processes
# (lighttpd quietly runs fewer than max-procs; see pgdirect_up) and sets
# RG_WORKERS_RUNNING and PGD_WORKERS_RUNNING. Needs FCGI_PID (the stack's
# rg-fcgi pool, from stack.env) and the pgdirect dir.
count_workers() {
  local want=$1 pgd_dir=$2
  RG_WORKERS_RUNNING=$(pgrep -c -P "$FCGI_PID" || true)
  PGD_WORKERS_RUNNING=$(find "$pgd_dir/run" -maxdepth 1 -name 'pgdirect.sock-*' | wc -l)
  ((RG_WORKERS_RUNNING == want)) || die "the rg-fcgi pool runs $RG_WORKERS_RUNNING workers, not $want"
  ((PGD_WORKERS_RUNNING == want)) || die "lighttpd runs $PGD_WORKERS_RUNNING pgdirect processes, not $want"
}
