#!/usr/bin/env python3
"""test_metrics_scrape.py — GET /metrics of a real rg-fcgi in front of a real rg-ledger.

Starts a two-shard rg-ledger and an rg-fcgi pool (one worker, Unix socket),
sells through the FastCGI API with cgi-fcgi, and checks the scrape:
  - the ledger series are there, per shard, with the right values: RESERVE
    outcomes, holds active, one expiry, queue depth, and batch-size and fsync
    histograms that are well-formed (cumulative, +Inf == _count) and agree
    with the ledger's own fsync counter;
  - every metric conf/grafana/revenue-guard.json queries exists in the scrape;
  - with the ledger killed, the scrape still answers 200, says rg_ledger_up 0
    and shows no ledger series.

  test_metrics_scrape.py --ledger BIN --fcgi BIN --ctl BIN --dashboard JSON
Scratch files go under $RG_TEST_TMP (or /tmp). Standard library only.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fcgi_client  # noqa: E402

failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("CHECK failed: " + what, file=sys.stderr)


def wait_for(pred, what, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise SystemExit("timed out waiting for " + what)


class Stack:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.ledger_sock = os.path.join(tmp, "ledger.sock")
        self.fcgi_sock = os.path.join(tmp, "fcgi.sock")
        self.env = dict(os.environ, RG_LEDGER_SOCKET=self.ledger_sock,
                        RG_DATA_DIR=os.path.join(tmp, "data"), RG_SHARDS="2",
                        RG_BOTCHECK_MODE="off", RG_API_PREFIX="/api")
        self.ledger = self.fcgi = None

    def start(self):
        self.ledger = subprocess.Popen([self.args.ledger], env=self.env,
                                       stdout=open(os.path.join(self.tmp, "ledger.log"), "ab"),
                                       stderr=subprocess.STDOUT)
        wait_for(lambda: self.ctl("stats")[0] == 0, "the ledger")
        self.fcgi = subprocess.Popen([self.args.fcgi, "--listen", "unix:" + self.fcgi_sock,
                                      "--workers", "1"], env=self.env,
                                     stdout=open(os.path.join(self.tmp, "fcgi.log"), "ab"),
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(self.fcgi_sock) and self.try_request("GET", "/metrics"),
                 "rg-fcgi")

    def ctl(self, *argv):
        p = subprocess.run([self.args.ctl, "--socket", self.ledger_sock] + list(argv),
                           capture_output=True, text=True)
        return p.returncode, p.stdout

    def request(self, method, path, body=b""):
        return fcgi_client.request(self.fcgi_sock, method, path, body)

    def try_request(self, method, path):
        try:
            return self.request(method, path)[0] == 200
        except (subprocess.SubprocessError, OSError):
            return False

    def stop(self):
        fcgi_client.stop(self.fcgi)
        fcgi_client.stop(self.ledger)


def parse(text):
    """{(name, frozenset(labels.items())): value} of every sample line."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$', line)
        check(m is not None, "exposition line parses: " + line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        samples[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def names(samples):
    return {name for name, _ in samples}


def check_histogram(samples, metric, shard):
    buckets = sorted(((float("inf") if dict(l)["le"] == "+Inf" else float(dict(l)["le"])), v)
                     for (n, l), v in samples.items()
                     if n == metric + "_bucket" and dict(l).get("shard") == shard)
    check(len(buckets) >= 2, f"{metric} shard {shard} has buckets")
    counts = [v for _, v in buckets]
    check(counts == sorted(counts), f"{metric} shard {shard} buckets are cumulative")
    check(buckets and buckets[-1][0] == float("inf"), f"{metric} shard {shard} has +Inf")
    count = value(samples, metric + "_count", shard=shard)
    check(buckets and count == buckets[-1][1], f"{metric} shard {shard}: +Inf == _count")
    check(value(samples, metric + "_sum", shard=shard) is not None, f"{metric} shard {shard} _sum")
    return count or 0


def reserve(stack, sku, session, quantity):
    body = json.dumps({"sku": sku, "session": session, "quantity": quantity}).encode()
    return stack.request("POST", "/v1/reservations", body)


def main():
    ap = argparse.ArgumentParser()
    for opt in ("--ledger", "--fcgi", "--ctl", "--dashboard"):
        ap.add_argument(opt, required=True)
    args = ap.parse_args()
    base = os.environ.get("RG_TEST_TMP") or "/tmp"
    os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="metrics-scrape-", dir=base)
    stack = Stack(args, tmp)
    try:
        stack.start()
        check(stack.ctl("sku", "put", "HELD", "--stock", "3", "--ttl", "600")[0] == 0, "put HELD")
        check(stack.ctl("sku", "put", "BRIEF", "--stock", "1", "--ttl", "1")[0] == 0, "put BRIEF")
        status, body = reserve(stack, "HELD", "buyer-1", 1)
        check(status == 201, f"reserve HELD: {status} {body}")
        status, body = reserve(stack, "BRIEF", "buyer-2", 1)
        check(status == 201, f"reserve BRIEF: {status} {body}")
        status, body = reserve(stack, "HELD", "buyer-3", 5)
        check(status == 409 and "insufficient_stock" in body, f"reserve 5 of 2: {status} {body}")

        # BRIEF's hold expires within a second of its ttl.
        def expired():
            s = parse(stack.request("GET", "/metrics")[1])
            return value(s, "rg_ledger_expiries_total") == 1
        wait_for(expired, "the BRIEF hold to expire", 15)

        # STATS and SHARD_STATS are read one after the other: compare counters
        # once the expiry's batch is synced and two scrapes agree.
        def settled():
            first = parse(stack.request("GET", "/metrics")[1])
            time.sleep(0.1)
            status, text = stack.request("GET", "/metrics")
            second = parse(text)
            settled.last = (status, second)
            return value(first, "rg_ledger_fsyncs") == value(second, "rg_ledger_fsyncs")
        wait_for(settled, "the ledger's counters to settle", 10)
        status, s = settled.last
        check(status == 200, f"/metrics status {status}")
        check(value(s, "rg_ledger_up") == 1, "rg_ledger_up 1")
        check(value(s, "rg_ledger_reservations_total", outcome="created") == 2, "2 created")
        check(value(s, "rg_ledger_reservations_total", outcome="insufficient_stock") == 1,
              "1 insufficient_stock")
        check(value(s, "rg_ledger_reservations_total", outcome="sold_out") == 0, "0 sold_out")
        check(value(s, "rg_ledger_holds_active") == 1, "1 hold active")
        held = sum(value(s, "rg_ledger_shard_holds_active", shard=k) or 0 for k in ("0", "1"))
        check(held == 1, f"per-shard holds add up to 1, got {held}")
        expired_per_shard = sum(value(s, "rg_ledger_shard_expiries_total", shard=k) or 0
                                for k in ("0", "1"))
        check(expired_per_shard == 1, "per-shard expiries add up to 1")
        fsyncs = 0
        for k in ("0", "1"):
            check(value(s, "rg_ledger_shard_queue_depth", shard=k) == 0, f"queue depth {k}")
            check(value(s, "rg_ledger_shard_pg_connected", shard=k) == 0, f"pg_connected {k}")
            check(value(s, "rg_ledger_shard_writebehind_lag_records", shard=k) == 0, f"lag {k}")
            check(value(s, "rg_ledger_shard_writebehind_lag_seconds", shard=k) == 0, f"lag s {k}")
            check_histogram(s, "rg_ledger_shard_batch_requests", k)
            fsyncs += check_histogram(s, "rg_ledger_shard_fsync_seconds", k)
        check(fsyncs == value(s, "rg_ledger_fsyncs") and fsyncs >= 5,
              f"fsync histograms count {fsyncs}, the ledger says {value(s, 'rg_ledger_fsyncs')}")
        check(value(s, "rg_reservations_total", outcome="created") == 2, "HTTP side: 2 created")

        # Every metric the dashboard queries is in this scrape.
        dash = json.load(open(args.dashboard))
        exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
        check(len(exprs) >= 10, "the dashboard has queries")
        used = {n for e in exprs for n in re.findall(r"\brg_[a-z0-9_]+", e)}
        missing = sorted(used - names(s))
        check(not missing, "dashboard metrics missing from the scrape: " + ", ".join(missing))
        if not missing:
            print(f"dashboard: {len(exprs)} queries over {len(used)} metrics, all in the scrape")

        # The ledger gone: still 200, rg_ledger_up 0, no ledger series.
        stack.ledger.kill()
        stack.ledger.wait()
        status, text = stack.request("GET", "/metrics")
        check(status == 200, "/metrics answers with the ledger down")
        s = parse(text)
        check(value(s, "rg_ledger_up") == 0, "rg_ledger_up 0 with the ledger down")
        leftovers = sorted(n for n in names(s) if n.startswith(("rg_ledger_shard_",
                           "rg_ledger_reservations", "rg_ledger_holds", "rg_ledger_expiries",
                           "rg_ledger_shards", "rg_ledger_fsync")))
        check(not leftovers, "ledger series with the ledger down: " + ", ".join(leftovers))
    finally:
        stack.stop()
        for log in ("ledger.log", "fcgi.log"):
            path = os.path.join(tmp, log)
            text = open(path, errors="replace").read() if os.path.exists(path) else ""
            for needle in ("AddressSanitizer", "ThreadSanitizer", "runtime error:",
                           "LeakSanitizer"):
                check(needle not in text, f"{log} has a sanitizer report ({needle})")
    if failures:
        print(f"{failures} check(s) failed; logs in {tmp}", file=sys.stderr)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
