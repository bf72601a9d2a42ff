#!/usr/bin/env python3
"""test_fcgi_pool_wakeups.py — one new FastCGI connection wakes one pool worker.

The workers of an rg-fcgi pool share one listening socket. If each waited by
polling it, every connection would wake every idle worker and all but one
would find nothing to accept: with many workers that herd costs more CPU than
the request (through lighttpd, 128 workers served a quarter of what 32 did).

Starts `rg-fcgi --listen unix:... --workers 16` (no ledger: the requests go to
an unknown route, answered 404 without one), sends requests one at a time
with cgi-fcgi, and counts the context switches of the workers' main threads
(/proc/PID/status). The serving worker switches a few times per request; a
herd would add one wakeup for each of the 15 idle workers. Fails when the
workers switched more than 6 times per request on average.

  test_fcgi_pool_wakeups.py --fcgi BIN
Scratch files go under $RG_TEST_TMP (or /tmp). Standard library only.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fcgi_client  # noqa: E402

WORKERS = 16
REQUESTS = 200
MAX_SWITCHES_PER_REQUEST = 6


def workers_of(master_pid):
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as f:
        return [int(p) for p in f.read().split()]


def switches(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += sum(int(n) for n in re.findall(r"ctxt_switches:\s+(\d+)", f.read()))
    return total


def request(sock):
    return fcgi_client.request(sock, "GET", "/v1/no-such-route")[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fcgi", required=True)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="rg-wakeups.", dir=os.environ.get("RG_TEST_TMP", "/tmp"))
    sock = os.path.join(tmp, "fcgi.sock")
    env = dict(os.environ, RG_LEDGER_SOCKET=os.path.join(tmp, "no-ledger.sock"),
               RG_BOTCHECK_MODE="off", RG_API_PREFIX="/api", RG_LOG_LEVEL="warn")
    pool = subprocess.Popen([args.fcgi, "--listen", "unix:" + sock, "--workers", str(WORKERS)],
                            env=env, stdout=open(os.path.join(tmp, "fcgi.log"), "ab"),
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while len(workers_of(pool.pid)) < WORKERS or not os.path.exists(sock):
            if time.monotonic() > deadline or pool.poll() is not None:
                sys.exit("the pool did not start its workers; see " + tmp)
            time.sleep(0.05)
        # Every worker has connected (or tried) to the ledger and is waiting.
        for _ in range(WORKERS):
            request(sock)
        time.sleep(0.5)
        workers = workers_of(pool.pid)
        before = switches(workers)
        statuses = [request(sock) for _ in range(REQUESTS)]
        after = switches(workers)
        if statuses.count(404) != REQUESTS:
            sys.exit(f"expected {REQUESTS} answers 404, got {sorted(set(statuses))}")
        per_request = (after - before) / REQUESTS
        print(f"{WORKERS} workers, {REQUESTS} requests one at a time: "
              f"{after - before} context switches, {per_request:.1f} per request")
        if per_request > MAX_SWITCHES_PER_REQUEST:
            sys.exit(f"FAIL: more than {MAX_SWITCHES_PER_REQUEST} switches per request: "
                     "a new connection wakes idle workers that have nothing to do")
    finally:
        fcgi_client.stop(pool)
    subprocess.run(["rm", "-rf", tmp])
    print("ok")


if __name__ == "__main__":
    main()
