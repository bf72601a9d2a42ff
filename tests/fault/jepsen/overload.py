#!/usr/bin/env python3
"""overload.py — far past the sustainable rate, memory stays bounded, excess
load is refused (not buffered), and slow clients do not starve buyers.

    python3 overload.py --stack DIR     RG_BENCH_BIN: rg-bench (default: next to
                                        the stack's rg-ledger build, RG_BIN_DIR)

Phases, against a running stack (lighttpd, the shipped conf/lighttpd):
  http      wrk with as many connections as workers measures the sustainable
            rate; then wrk with 128 connections per worker (the rate they
            offer is >10x what the workers can answer) for a few seconds.
            Every answer must be 201, or 503 with Retry-After and the API's
            JSON "unavailable" body; no connection may be refused, reset or
            time out (10 s). Meanwhile RSS
            (/proc/PID/status VmRSS, sampled every 100 ms) of rg-ledger, each
            rg-fcgi worker and lighttpd may grow at most its cap over idle.
  shed      the same connections, each pausing between answer and next
            request so together they offer 10x the sustainable rate (a rate:
            fast 503s do not buy more load): every answer 201 or JSON 503 +
            Retry-After, some 201s, and at most 20 per mille of answers slower
            than RG_OVERLOAD_SLOW_MS (500). Against nginx the pool must have a
            small fcgi_listen_backlog (e.g. 2 x workers) to refuse the excess;
            behind lighttpd 1.4 (which would queue it in the kernel listen
            backlog of the worker sockets) the workers shed it themselves
            (fcgi_shed_queue_len, on by default): there rg_http_shed_total
            must grow too. Apache mod_fcgid queues the excess in itself:
            waits printed, not compared (README.md says why).
  own errors  lighttpd / Apache: a 70,000-byte body (by Content-Length and
            chunked) gets the server's own 413, as the API's JSON
            body_too_large.
  ledger    rg-bench straight at the ledger socket: 200 connections x 64
            pipelined (12,800 requests in flight, against shard_queue_len_max
            per shard): the ledger must answer the excess "busy" (the 503 of
            the HTTP API) rather than queue it, and its RSS stay under its cap.
  slowloris 2,000 connections from 127.0.0.2 send a request's headers one
            byte every 0.5 s while a buyer on 127.0.0.1 makes 30 reservations,
            each on a new connection: every one must be answered (201) within
            the client's 10 s timeout. With lighttpd's former 1024 connection
            slots every buyer timed out.
Caps (MiB of RSS growth over idle; the ctest environment sets them, see
CMakeLists.txt): RG_OVERLOAD_LEDGER_MB (64), RG_OVERLOAD_FCGI_MB (16, per
worker), RG_OVERLOAD_LIGHTTPD_MB (64). In sanitizer trees (RG_SANITIZER_TREE=1)
RSS is printed, not compared (the sanitizers' own allocator dominates it), and
"busy" answers are not required (the sanitized rg-bench cannot outrun the
ledger there).
Writes $RG_RELIABILITY_DIR/fault_overload.tsv.
"""

import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration", "http"))
from http_api import Client, run_id, stack_from_argv  # noqa: E402

STACK = stack_from_argv()
RUN = run_id()
SANITIZED = os.environ.get("RG_SANITIZER_TREE") == "1"
CAPS = {"rg-ledger": int(os.environ.get("RG_OVERLOAD_LEDGER_MB", "64")),
        "rg-fcgi": int(os.environ.get("RG_OVERLOAD_FCGI_MB", "16")),
        "lighttpd": int(os.environ.get("RG_OVERLOAD_LIGHTTPD_MB", "64"))}
WRK_LUA = os.path.join(HERE, "reserve.lua")
SLOW_CLIENTS = int(os.environ.get("RG_SLOWLORIS_CLIENTS", "2000"))
SLOW_MS = int(os.environ.get("RG_OVERLOAD_SLOW_MS", "500"))
SHED_SLOW_PERMILLE = 20
SHED_RE = re.compile(r"^rg_http_shed_total (\d+)$", re.M)
FAILURES = []
ROWS = []


def fail(text):
    FAILURES.append(text)
    print("  FAIL: " + text, flush=True)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def processes():
    """name -> [pids] of this stack."""
    STACK.reload_env()
    return {"rg-ledger": [int(STACK.env["LEDGER_PID"])],
            "rg-fcgi": STACK.fcgi_worker_pids(),
            "lighttpd": [int(STACK.env["SERVER_PID"])]}


class Sampler(threading.Thread):
    """Peak RSS per pid while running."""

    def __init__(self, procs):
        super().__init__(daemon=True)
        self.procs = procs
        self.peak = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.1):
            for pids in self.procs.values():
                for pid in pids:
                    r = rss_kib(pid)
                    if r is not None:
                        self.peak[pid] = max(self.peak.get(pid, 0), r)

    def finish(self):
        self.stop.set()
        self.join()
        return self.peak


def check_rss(phase, procs, idle, peak, only=None):
    for name, pids in procs.items():
        if only and name not in only:
            continue
        for pid in pids:
            if pid not in idle or pid not in peak:
                continue
            grow_mb = (peak[pid] - idle[pid]) / 1024
            print(f"  {phase}: {name} pid {pid}: RSS idle {idle[pid] / 1024:.1f} MiB, peak "
                  f"{peak[pid] / 1024:.1f} MiB (+{grow_mb:.1f}, cap +{CAPS[name]})", flush=True)
            if not SANITIZED and grow_mb > CAPS[name]:
                fail(f"{phase}: {name} pid {pid} grew {grow_mb:.1f} MiB, over its cap of "
                     f"{CAPS[name]} MiB")


def wrk(connections, seconds, sku, delay_ms=0):
    env = dict(os.environ, RG_WRK_SKU=sku, RG_WRK_DELAY_MS=str(delay_ms),
               RG_WRK_SLOW_MS=str(SLOW_MS))
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                          "-s", WRK_LUA, STACK.base_url + "/v1/reservations"],
                         capture_output=True, text=True, env=env, timeout=seconds + 60)
    text = out.stdout
    stats = {"codes": {int(a): int(b) for a, b in re.findall(r"^status (\d+) (\d+)$", text, re.M)}}
    for key in ("no_retry_after", "bad_503_body", "slow_permille", "latency_p50_ms",
                "latency_p90_ms", "latency_p99_ms", "latency_max_ms", "requests", "seconds"):
        m = re.search(rf"^{key} ([\d.]+)$", text, re.M)
        stats[key] = float(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    stats["socket_errors"] = sum(map(int, m.groups())) if m else 0
    stats["socket_text"] = m.group(0) if m else ""
    if out.returncode != 0 or stats["requests"] is None:
        fail(f"wrk failed ({out.returncode}): {out.stderr[-500:]} {text[-500:]}")
    return stats


def check_answers(phase, stats):
    """Every answer 201 or the API's 503 (JSON "unavailable" + Retry-After),
    and every request answered."""
    bad = {c: n for c, n in stats["codes"].items() if c not in (201, 503)}
    if bad:
        fail(f"{phase}: answers other than 201 / 503: {bad}")
    if stats["no_retry_after"]:
        fail(f"{phase}: {stats['no_retry_after']:.0f} answers 503 without Retry-After")
    if stats["bad_503_body"]:
        fail(f"{phase}: {stats['bad_503_body']:.0f} answers 503 without the JSON "
             "\"unavailable\" body")
    if stats["socket_errors"]:
        fail(f"{phase}: requests without an answer: {stats['socket_text']}")


def phase_http(sku):
    procs = processes()
    workers = len(procs["rg-fcgi"])
    base = wrk(max(workers, 1), 3, sku)
    rate = base["requests"] / base["seconds"] if base["requests"] else 0
    print(f"  sustainable: {workers} connections (one per worker): {rate:.0f} req/s, "
          f"p99 {base['latency_p99_ms']} ms, answers {base['codes']}", flush=True)
    time.sleep(0.5)
    procs = processes()
    idle = {pid: rss_kib(pid) for pids in procs.values() for pid in pids}
    sampler = Sampler(procs)
    sampler.start()
    conns = 128 * max(workers, 1)
    over = wrk(conns, 5, sku)
    peak = sampler.finish()
    orate = over["requests"] / over["seconds"] if over["requests"] else 0
    print(f"  overload: {conns} connections: {orate:.0f} answers/s, p50 "
          f"{over['latency_p50_ms']} ms, p99 {over['latency_p99_ms']} ms, max "
          f"{over['latency_max_ms']} ms, answers {over['codes']} {over['socket_text']}", flush=True)
    check_answers("overload", over)
    check_rss("overload", procs, idle, peak)
    ROWS.append(("overload through lighttpd (HTTP)",
                 f"wrk, {conns} connections ({128}x the {workers} workers) for 5 s; RSS caps "
                 f"ledger +{CAPS['rg-ledger']} MiB, worker +{CAPS['rg-fcgi']} MiB, lighttpd "
                 f"+{CAPS['lighttpd']} MiB", int(over["requests"] or 0)))
    return rate


def shed_total():
    """rg_http_shed_total from /metrics (the stack's workers share the
    counters through metrics_file), or None."""
    client = Client(STACK)
    try:
        r = client.get("/metrics", check=False)
        m = SHED_RE.search(r.text or "") if r.status == 200 else None
        return int(m.group(1)) if m else None
    except OSError:
        return None
    finally:
        client.close()


def phase_shed(sku, rate):
    """10x the sustainable rate, offered as a rate (each of the connections
    pauses between answer and next request, so fast 503s do not turn into
    more load): the excess must be answered, 201 or JSON 503 + Retry-After,
    buyers still get 201s, and (nginx, lighttpd) at most SHED_SLOW_PERMILLE
    per mille of answers take over RG_OVERLOAD_SLOW_MS. Who refuses the
    excess fast: nginx, when the pool's fcgi_listen_backlog is small; behind
    lighttpd 1.4 the workers themselves (fcgi_shed_queue_len: past that many
    connections waiting on its socket a worker answers 503 at once), so
    there rg_http_shed_total must grow. Apache mod_fcgid queues the excess
    before any worker sees it (figures printed, README.md)."""
    workers = max(len(processes()["rg-fcgi"]), 1)
    conns = 128 * workers
    offered = 10 * max(rate, 100.0)
    delay_ms = max(1, int(conns * 1000 / offered))
    shed_before = shed_total()
    stats = wrk(conns, 5, sku, delay_ms)
    shed_after = shed_total()
    backlog = STACK.int_setting("fcgi_listen_backlog", 1024)
    shed_len = STACK.int_setting("fcgi_shed_queue_len", 64)
    sheds = STACK.server in ("nginx", "lighttpd")
    shed_count = (shed_after - shed_before if shed_before is not None and shed_after is not None
                  else None)
    how = (f"fcgi_listen_backlog {backlog}" if STACK.server == "nginx" else
           f"fcgi_shed_queue_len {shed_len}")
    codes = stats["codes"]
    print(f"  shed: {conns} connections pausing {delay_ms} ms (offered ~{offered:.0f}/s, 10x "
          f"{rate:.0f}/s): answers {codes}, p50 {stats['latency_p50_ms']} ms, p90 "
          f"{stats['latency_p90_ms']} ms, max {stats['latency_max_ms']} ms, "
          f"{stats['slow_permille']:.0f} per mille over {SLOW_MS} ms, rg_http_shed_total "
          f"+{shed_count} {stats['socket_text']}", flush=True)
    check_answers("shed", stats)
    if not codes.get(201):
        fail("shed: no buyer got a 201 under 10x load")
    if sheds:
        if not codes.get(503):
            fail(f"shed: {STACK.server} with {how}: no 503 at 10x load")
        if STACK.server == "lighttpd" and not shed_count:
            fail(f"shed: rg_http_shed_total grew by {shed_count} under 10x load behind "
                 f"lighttpd ({how}): the workers did not shed")
        if stats["slow_permille"] > SHED_SLOW_PERMILLE:
            fail(f"shed: {stats['slow_permille']:.0f} per mille of answers took over {SLOW_MS} "
                 f"ms (allowed {SHED_SLOW_PERMILLE}): the excess waited in a queue ("
                 + (f"the pool's fcgi_listen_backlog is {backlog}; 2 x workers refuses it"
                    if STACK.server == "nginx" else
                    f"fcgi_shed_queue_len is {shed_len}; 0 turns shedding off") + ")")
    else:
        print(f"  note: {STACK.server} queues the excess before any worker sees it instead of "
              "refusing it fast: waits printed, not compared (tests/fault/jepsen/README.md)",
              flush=True)
    ROWS.append((f"10x rate through {STACK.server}",
                 f"wrk, {conns} connections offering ~{offered:.0f}/s for 5 s: 201 or JSON 503 + "
                 "Retry-After" + (f", <= {SHED_SLOW_PERMILLE} per mille over {SLOW_MS} ms"
                                  if sheds else " (queued: waits not compared)"),
                 int(stats["requests"] or 0)))


def phase_own_errors():
    """A body over the web server's own limit (64 KiB) gets its 413, and under
    /api that 413 is the API's JSON body_too_large (conf/lighttpd/rg-errors),
    by Content-Length and chunked alike. lighttpd and Apache (nginx has no
    such page: its client_max_body_size 413 is not checked here)."""
    if STACK.server not in ("lighttpd", "apache"):
        return
    client = Client(STACK)
    problems = []
    for what, body in (("a 70,000-byte body", b"x" * 70000),
                       ("a chunked 70,000-byte body", [b"x" * 7000] * 10)):
        try:
            r = client.request("POST", "/v1/reservations", body=body, check=False)
        except OSError as e:
            problems.append(f"{what}: {type(e).__name__}")
            client.close()
            client = Client(STACK)
            continue
        if r.status != 413 or r.error_code() != "body_too_large":
            problems.append(f"{what}: {r.status} {r.error_code()} "
                            f"({r.header('Content-Type')}), want 413 body_too_large")
        client.close()  # the server closes after a 413
        client = Client(STACK)
    client.close()
    print("  own errors: " + ("; ".join(problems) if problems else
                              "413 body_too_large in JSON (Content-Length and chunked)"),
          flush=True)
    for p in problems:
        fail(f"{STACK.server}'s own 413: " + p)
    ROWS.append((f"{STACK.server}'s own 413 under /api", "70,000-byte bodies, by length and "
                 "chunked: JSON body_too_large", 2))


def phase_ledger(sku_prefix):
    bench = os.environ.get("RG_BENCH_BIN") or os.path.join(
        os.environ.get("RG_BIN_DIR", os.path.join(STACK.dir, "bin")), "rg-bench")
    if not os.access(bench, os.X_OK):
        fail(f"rg-bench not found at {bench} (set RG_BENCH_BIN)")
        return
    procs = {"rg-ledger": processes()["rg-ledger"]}
    idle = {pid: rss_kib(pid) for pid in procs["rg-ledger"]}
    sampler = Sampler(procs)
    sampler.start()
    # rg-bench itself sometimes dies: its latency histogram index goes
    # negative under "busy" answers (rg_bench.c worker_main, hist[us] with
    # us < 0; SIGSEGV, or an ASan report) — the load generator, not the
    # ledger: try again (reported in the output). Its leaks at exit are not
    # this test's business either.
    # Its SKU (PREFIX-0) has 1,000 units: past them every answer is "sold
    # out" and no state grows, so RSS growth is queues and buffers only.
    client = Client(STACK)
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
    for attempt in range(1, 7):
        r = client.put_sku(f"{sku_prefix}a{attempt}-0", {"stock": 1000})
        if r.status != 201:
            r.fail("create the rg-bench SKU")
        out = subprocess.run([bench, "--socket", STACK.env["LEDGER_SOCKET"], "--connections",
                              "200", "--pipeline", "64", "--duration", "3", "--skus", "1",
                              "--no-setup", "--prefix", f"{sku_prefix}a{attempt}"],
                             capture_output=True, text=True, timeout=120, env=env)
        m = re.search(r"created (\d+), sold out (\d+), busy (\d+), other (\d+)", out.stdout)
        if out.returncode == 0 and m:
            break
        print(f"  note: rg-bench attempt {attempt} exited {out.returncode} "
              f"({out.stderr.strip()[-200:]}); trying again", flush=True)
    client.close()
    peak = sampler.finish()
    print("  ledger: " + " | ".join(line.strip() for line in out.stdout.splitlines()[-3:]),
          flush=True)
    if out.returncode != 0 or not m:
        fail(f"rg-bench failed ({out.returncode}): {out.stderr[-500:]}")
        return
    created, sold_out, busy, other = map(int, m.groups())
    if not busy and not SANITIZED:
        fail("ledger: 12,800 requests in flight and not one 'busy': the excess was queued")
    elif not busy:
        print("  note: no 'busy' answer: the sanitized rg-bench is too slow to overload the "
              "ledger here (required in the plain tree only)", flush=True)
    if other:
        fail(f"ledger: {other} answers other than created/sold out/busy")
    check_rss("ledger", procs, idle, peak)
    ROWS.append(("overload at the ledger socket", "rg-bench, 200 connections x 64 pipelined "
                 f"for 3 s: excess must be answered busy; RSS cap +{CAPS['rg-ledger']} MiB",
                 created + sold_out + busy))


def phase_slowloris(sku):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = SLOW_CLIENTS + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard > 0 else want, hard))
    socks, stop = [], threading.Event()
    head = (f"POST {STACK.prefix}/v1/reservations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nX-Slow: {'a' * 400}").encode()
    try:
        for _ in range(SLOW_CLIENTS):
            s = socket.socket()
            s.bind(("127.0.0.2", 0))  # another address: per-source limits would tell them apart
            s.settimeout(5)
            try:
                s.connect((STACK.host, STACK.port))
                s.send(head[:1])
            except OSError as e:
                s.close()
                fail(f"slowloris: only {len(socks)} slow connections could be opened ({e})")
                break
            socks.append(s)

        def drip():
            i = 1
            while not stop.wait(0.5):
                for s in socks:
                    try:
                        s.send(head[i % len(head):i % len(head) + 1])
                    except OSError:
                        pass
                i += 1

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        time.sleep(1.0)
        answered, slowest, problems = 0, 0.0, []
        for n in range(30):
            client = Client(STACK, timeout=10.0)  # a new connection each time
            started = time.monotonic()
            try:
                r = client.reserve(sku, 1, f"{RUN}-buyer", f"k{n}")
                if r.status == 201:
                    answered += 1
                else:
                    problems.append(f"{r.status} {r.error_code()}")
            except OSError as e:
                problems.append(f"{type(e).__name__}")
            slowest = max(slowest, time.monotonic() - started)
            client.close()
        alive = 0
        for s in socks:
            try:
                s.setblocking(False)
                if s.recv(1) == b"":
                    continue
                alive += 1
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
    finally:
        stop.set()
        for s in socks:
            s.close()
    print(f"  slowloris: {len(socks)} slow connections ({alive} still open at the end); buyer: "
          f"{answered} of 30 reservations answered 201, slowest {slowest:.2f} s"
          + (f"; problems: {problems[:5]}" if problems else ""), flush=True)
    if answered != 30:
        fail(f"slowloris: {30 - answered} of 30 buyer requests failed with {len(socks)} slow "
             f"clients connected: {problems[:5]}")
    ROWS.append(("slow clients (slowloris) behind lighttpd",
                 f"{len(socks)} connections sending headers 1 byte / 0.5 s from 127.0.0.2, "
                 f"30 buyer reservations on new connections", 30))


def main():
    print(f"overload: {STACK.base_url} ({STACK.server}), run id {RUN}"
          + (" (sanitizer tree: RSS not compared)" if SANITIZED else ""), flush=True)
    client = Client(STACK)
    sku = f"ov{RUN}"
    r = client.put_sku(sku, {"stock": 2000000000})
    if r.status != 201:
        r.fail(f"create {sku}")
    rate = phase_http(sku)
    phase_shed(sku, rate)
    time.sleep(1.0)  # the Retry-After of the 503s: let the backlog drain
    phase_own_errors()
    phase_ledger(f"ovb{RUN}")
    phase_slowloris(sku)
    # After all of it the stack serves as before.
    r = client.reserve(sku, 1, f"{RUN}-after", "after")
    if r.status != 201:
        fail(f"after the overload a reservation got {r.status}")
    client.close()
    result = "pass" if not FAILURES else f"FAIL: {len(FAILURES)} problems"
    out_dir = os.environ.get("RG_RELIABILITY_DIR")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "fault_overload.tsv"), "w", encoding="utf-8") as f:
            for fault, how, cases in ROWS:
                f.write(f"{fault}\t{how}\t{cases}\t{result}\n")
    print(f"overload: {result}", flush=True)
    return 0 if not FAILURES else 1


if __name__ == "__main__":
    sys.exit(main())
