#!/usr/bin/env python3
"""jepsen.py — a Jepsen-style checker of the public HTTP API under process faults.

    python3 jepsen.py --stack DIR       RG_SEED=N replays the buyers' and the
                                        nemesis' choices; RG_FAULT_LONG=1 runs
                                        long (120 s, more buyers, more faults)

Many buyers (threads, one keep-alive connection and one session each) reserve
1-3 units of Zipf-skewed SKUs (the hot ones sell out mid-run; some have a 2 s
hold so holds time out), confirm and release their holds, while a nemesis
repeatedly
  * kill -9s the ledger (scripts/stack ledger-kill, then ledger-start),
  * kill -9s rg-fcgi worker processes,
  * stops PostgreSQL the hard way and starts it again (pg-stop / pg-start).
Every request and its answer goes into a history: "ok" (2xx), "fail" (a 4xx:
the request definitely did nothing) or "info" (no answer, a timeout, a 5xx:
it may or may not have happened). Half of the reservations carry an
idempotency key and are re-sent with it while in doubt; the rest are sent once.

After healing (everything running, GET /v1/health 200) the checker verifies:
  1. each acknowledged reservation exists (GET with its session), with its sku,
     quantity and session, and a status its own history allows: a reservation
     is a register that goes reserved -> confirmed | released | timeout once;
     a terminal status seen in any answer is final; "confirmed"/"released"
     need a confirm/release we sent; "reserved" is impossible 1 s + slack
     after expires_at;
  2. per SKU: available + reserved + sold = stock, reserved + sold <= stock,
     sold = the units of our reservations that are confirmed (nobody else
     confirms), and reserved = our acknowledged + unacknowledged holds;
  3. PostgreSQL converges to the ledger exactly: scripts/audit (stock,
     reserved, sold per SKU) passes, every inventory_log row of this run has
     the ledger's status, sku, session and quantity, and every acknowledged
     reservation has its row;
  4. every reservation present but never acknowledged (found in
     inventory_log) is explained by a distinct reserve request of the same
     session, sku and quantity that got no answer (timeout, dropped
     connection, 5xx) and started before it was created — never by one that
     got a 4xx, and never by a keyed purchase that was settled.
Writes its reliability line to $RG_RELIABILITY_DIR/jepsen_http.tsv.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration", "http"))
from http_api import (Client, ContractError, check_counters, parse_timestamp,  # noqa: E402
                      response_problems, run_id, stack_from_argv)

STACK = stack_from_argv()
SEED = int(os.environ.get("RG_SEED") or random.SystemRandom().randrange(1 << 31))
LONG = os.environ.get("RG_FAULT_LONG") == "1"
DURATION_S = float(os.environ.get("RG_JEPSEN_DURATION_S") or (120 if LONG else 14))
BUYERS = int(os.environ.get("RG_JEPSEN_BUYERS") or (24 if LONG else 12))
NSKUS = 8
EXPIRY_SLACK_S = float(os.environ.get("RG_EXPIRY_SLACK_S", "1.5"))
RUN = run_id()
PREFIX = f"j{RUN}-"
TERMINAL = ("confirmed", "released", "timeout")
CONFLICT_STATUS = {"reservation_expired": "timeout", "reservation_released": "released",
                   "already_confirmed": "confirmed"}


def now_wall():
    return time.time()


class History:
    """Every operation, appended under a lock; op dicts are filled in place."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []
        self.problems = []     # contract violations seen while running
        self.nemesis = []      # (wall time, what)

    def begin(self, **op):
        op["start"] = now_wall()
        with self.lock:
            op["index"] = len(self.ops)
            self.ops.append(op)
        return op

    def problem(self, text):
        with self.lock:
            self.problems.append(text)


HIST = History()


def classify(resp):
    """'ok' | 'fail' | 'info' for an answer (None: no answer)."""
    if resp is None:
        return "info"
    if 200 <= resp.status < 300:
        return "ok"
    if 400 <= resp.status < 500:
        return "fail"
    return "info"


def call(client, op, method, route, body):
    """Sends one request of OP and fills op's outcome. Returns the Response
    or None."""
    try:
        resp = client.request(method, route, json_body=body, check=False)
    except OSError as e:  # timeouts, resets, refused: no answer
        op.update(end=now_wall(), type="info", status=None, error=f"{type(e).__name__}")
        return None
    op.update(end=now_wall(), type=classify(resp), status=resp.status, error=resp.error_code(),
              body=resp.body if isinstance(resp.body, dict) else None)
    json_answer = isinstance(resp.body, dict)
    if resp.status >= 500 and not json_answer:
        op["server_page"] = True  # the web server's own page: a worker died mid-request
    elif resp.status not in (502, 504):
        problems = response_problems(resp, route)
        if problems:
            HIST.problem("; ".join(problems) + "\n" + resp.describe())
    return resp


class Buyer(threading.Thread):
    def __init__(self, n, skus, weights, stop):
        super().__init__(daemon=True)
        self.n = n
        self.rng = random.Random(SEED * 1000 + n)
        self.session = f"{PREFIX}s{n}"
        self.skus = skus
        self.weights = weights
        self.stop = stop
        self.client = Client(STACK, timeout=6.0)
        self.held = []     # reservation ids we believe are still reserved
        self.keys = 0

    def run(self):
        try:
            while not self.stop.is_set():
                r = self.rng.random()
                if self.held and r < 0.25:
                    self.change("confirm")
                elif self.held and r < 0.4:
                    self.change("release")
                else:
                    self.reserve()
        finally:
            self.client.close()

    def backoff(self, resp):
        if resp is None or resp.status >= 500:
            time.sleep(0.05 + self.rng.random() * 0.15)

    def reserve(self):
        sku = self.rng.choices(self.skus, self.weights)[0]
        qty = self.rng.choice((1, 1, 1, 2, 3))
        keyed = self.rng.random() < 0.5
        body = {"sku": sku, "quantity": qty, "session": self.session}
        if keyed:
            self.keys += 1
            body["idempotency_key"] = f"k{self.keys}"
        attempts = 0
        while True:
            attempts += 1
            op = HIST.begin(kind="reserve", session=self.session, sku=sku, qty=qty,
                            key=body.get("idempotency_key"), attempt=attempts)
            resp = call(self.client, op, "POST", "/v1/reservations", body)
            if op["type"] == "ok":
                obj = op.get("body") or {}
                op["rid"] = obj.get("reservation_id")
                if obj.get("status") == "reserved" and op["rid"] not in self.held:
                    self.held.append(op["rid"])
                return
            self.backoff(resp)
            # A keyed purchase in doubt is re-sent until it settles (or the run ends).
            if op["type"] == "fail" or not keyed or self.stop.is_set():
                return

    def change(self, what):
        rid = self.rng.choice(self.held)
        op = HIST.begin(kind=what, session=self.session, rid=rid)
        resp = call(self.client, op, "POST", f"/v1/reservations/{rid}/{what}",
                    {"session": self.session})
        if op["type"] == "ok" or op["type"] == "fail":
            self.held.remove(rid)
        else:
            self.backoff(resp)
            if self.rng.random() < 0.5:
                self.held.remove(rid)  # give up on it sometimes: leave it in doubt


# --- The nemesis -----------------------------------------------------------------


def stack_cmd(command):
    out = STACK.run_stack_command(command, timeout=90)
    HIST.nemesis.append((now_wall(), f"{command} -> {out.returncode}"))
    if out.returncode != 0:
        HIST.problem(f"scripts/stack {command} failed: {out.stdout[-300:]} {out.stderr[-500:]}")
    return out.returncode == 0


def nemesis(stop, counts, first_round):
    """Faults until stop; first_round is set once each kind ran at least once."""
    rng = random.Random(SEED ^ 0x5EED)
    pg_down = False
    first = ["ledger", "worker", "pg"]  # each kind at least once, even in a short run
    rng.shuffle(first)
    while not stop.wait(0.6 + rng.random() * 1.2):
        fault = first.pop() if first else rng.choice(("ledger", "ledger", "worker", "worker", "pg"))
        if fault == "ledger":
            if stack_cmd("ledger-kill"):
                counts["ledger"] += 1
            stop.wait(0.2 + rng.random() * 0.8)
            stack_cmd("ledger-start")
        elif fault == "worker":
            pids = STACK.fcgi_worker_pids()
            for pid in rng.sample(pids, min(len(pids), rng.choice((1, 1, 2)))):
                try:
                    os.kill(pid, signal.SIGKILL)
                    counts["worker"] += 1
                    HIST.nemesis.append((now_wall(), f"kill -9 rg-fcgi {pid}"))
                except ProcessLookupError:
                    pass
        elif not pg_down:
            if stack_cmd("pg-stop"):
                counts["pg"] += 1
                pg_down = True
        if pg_down and rng.random() < 0.5:
            pg_down = not stack_cmd("pg-start")
        if not first:
            first_round.set()
    if pg_down:
        stack_cmd("pg-start")


def heal():
    """Every process up again and the API healthy."""
    STACK.run_stack_command("pg-start")
    STACK.reload_env()
    pid = STACK.env.get("LEDGER_PID", "")
    if not (pid.isdigit() and os.path.exists(f"/proc/{pid}")):
        stack_cmd("ledger-start")
    client = Client(STACK)
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get("/v1/health", check=False).status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ContractError("the stack did not become healthy within 60 s of healing")
        time.sleep(0.2)
    client.close()


# --- Checks ------------------------------------------------------------------------


def get_with_retry(client, route, tries=40):
    """GET until the answer is not a 5xx/no answer (the stack is healed, but a
    worker may still be restarting)."""
    for _ in range(tries):
        try:
            resp = client.get(route, check=False)
            if resp.status < 500:
                return resp
        except OSError:
            pass
        time.sleep(0.25)
    raise ContractError(f"GET {route}: no non-5xx answer after {tries} tries")


def reservations_from_history():
    """rid -> {sku, qty, session, observed [(time, status)], sent {confirm, release}}."""
    res = {}
    for op in HIST.ops:
        if op["kind"] == "reserve" and op.get("type") == "ok" and op.get("rid"):
            r = res.setdefault(op["rid"], {"sku": op["sku"], "qty": op["qty"],
                                           "session": op["session"], "observed": [],
                                           "sent": set(), "acked_by": []})
            r["acked_by"].append(op["index"])
            r["observed"].append((op["end"], op["body"].get("status")))
            r["expires_at"] = parse_timestamp(op["body"]["expires_at"])
    for op in HIST.ops:
        if op["kind"] in ("confirm", "release") and op["rid"] in res:
            r = res[op["rid"]]
            r["sent"].add(op["kind"])
            if op.get("type") == "ok":
                r["observed"].append((op["end"], (op.get("body") or {}).get("status")))
            elif op.get("type") == "fail":
                code = op.get("error")
                if code in CONFLICT_STATUS:
                    r["observed"].append((op["end"], CONFLICT_STATUS[code]))
                else:
                    r.setdefault("bad", []).append(f"{op['kind']} answered {op['status']} {code}")
    return res


def check_reservation_register(rid, r, final, now):
    """What in this reservation's history is impossible (a list)."""
    bad = list(r.get("bad", []))
    terminal = sorted({s for _, s in r["observed"] if s in TERMINAL})
    if len(terminal) > 1:
        bad.append(f"two terminal statuses answered: {terminal}")
    seq = [s for _, s in sorted(r["observed"])]
    for a, b in zip(seq, seq[1:]):
        if a in TERMINAL and b != a:
            bad.append(f"status went {a} -> {b}")
    if final["sku"] != r["sku"] or final["quantity"] != r["qty"] or final["session"] != r["session"]:
        bad.append(f"GET shows sku/quantity/session {final['sku']}/{final['quantity']}/"
                   f"{final['session']}, acknowledged {r['sku']}/{r['qty']}/{r['session']}")
    st = final["status"]
    if terminal and st != terminal[0]:
        bad.append(f"final status {st}, but an answer said {terminal[0]}")
    if st == "confirmed" and "confirm" not in r["sent"]:
        bad.append("confirmed without a confirm")
    if st == "released" and "release" not in r["sent"]:
        bad.append("released without a release")
    if st == "reserved" and now > r["expires_at"] + 1.0 + EXPIRY_SLACK_S:
        bad.append(f"still reserved {now - r['expires_at']:.1f} s after expires_at")
    return bad


def parallel(items, fn, threads=8):
    out = [None] * len(items)

    def work(idx):
        client = Client(STACK)
        for i in idx:
            out[i] = fn(client, items[i])
        client.close()

    pool = [threading.Thread(target=work, args=(range(k, len(items), threads),))
            for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return out


FETCHED = {}  # (rid, session) -> (status, body): the self-test re-checks without new GETs


def fetch(client, rid_session):
    if rid_session in FETCHED:
        return FETCHED[rid_session]
    rid, session = rid_session
    resp = get_with_retry(client, f"/v1/reservations/{rid}?session={session}")
    FETCHED[rid_session] = resp.status, (resp.body if isinstance(resp.body, dict) else {})
    return FETCHED[rid_session]


def psql(sql, *params):
    env = dict(os.environ, PGHOST=STACK.env["PGHOST"], PGPORT=STACK.env["PGPORT"],
               PGDATABASE=STACK.env["PGDATABASE"], PGUSER=STACK.env["PGUSER"])
    argv = ["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
    for i, p in enumerate(params):
        argv += ["-v", f"p{i}={p}"]
    out = subprocess.run(argv, input=sql, capture_output=True, text=True, env=env, timeout=60)
    if out.returncode != 0:
        raise ContractError(f"psql failed: {out.stderr.strip()}")
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def explainers():
    """The reserve requests that may have happened without our knowing: one
    per unanswered unkeyed request, one per keyed purchase that never settled
    (its attempts are one purchase: the key makes them one reservation at most).
    Each: {session, sku, qty, start, kind}."""
    groups = {}
    for op in HIST.ops:
        if op["kind"] != "reserve":
            continue
        gid = (op["session"], op["key"]) if op.get("key") else ("#", op["index"])
        groups.setdefault(gid, []).append(op)
    out = []
    for ops in groups.values():
        if any(o.get("type") in ("ok", "fail") for o in ops):
            continue  # settled: a 2xx (acknowledged) or a 4xx (did nothing)
        first = min(ops, key=lambda o: o["start"])
        out.append({"session": first["session"], "sku": first["sku"], "qty": first["qty"],
                    "start": first["start"],
                    "kind": "no answer" if all(o.get("status") is None for o in ops) else "5xx"})
    return out


def explain_orphans(orphans, failures):
    """Matches each unacknowledged reservation to a distinct explainer of the
    same session, sku and quantity that started before it was created."""
    pool = {}
    for e in explainers():
        pool.setdefault((e["session"], e["sku"], e["qty"]), []).append(e)
    by_4xx = {}
    for op in HIST.ops:
        if op["kind"] == "reserve" and op.get("type") == "fail":
            k = (op["session"], op["sku"], op["qty"])
            by_4xx[k] = by_4xx.get(k, 0) + 1
    explained = {"no answer": 0, "5xx": 0}
    for rid, (sku, session, qty, created) in sorted(orphans.items(), key=lambda kv: kv[1][3]):
        k = (session, sku, qty)
        fits = [e for e in pool.get(k, []) if e["start"] <= created + 1.0]
        if not fits:
            hint = (f"; {by_4xx[k]} requests of the same session, sku and quantity got a 4xx "
                    f"(which must have done nothing)" if by_4xx.get(k) else "")
            failures.append(f"reservation {rid} ({session} {qty} x {sku}, created "
                            f"{time.strftime('%H:%M:%S', time.gmtime(created))}) was never "
                            f"acknowledged and no unanswered request explains it{hint}")
            continue
        e = max(fits, key=lambda x: x["start"])  # the latest that fits: greedy in time order
        pool[k].remove(e)
        explained[e["kind"]] += 1
    return explained


def check_reserve_answers(failures):
    """4xx answers to a reserve: only sold_out / insufficient_stock may happen here."""
    for op in HIST.ops:
        if op["kind"] == "reserve" and op.get("type") == "fail" and \
                op.get("error") not in ("sold_out", "insufficient_stock"):
            failures.append(f"reserve {op['qty']} x {op['sku']} ({op['session']}, key "
                            f"{op.get('key')}) answered {op['status']} {op.get('error')}")
        if op["kind"] == "reserve" and op.get("type") == "ok" and not op.get("rid"):
            failures.append(f"reserve {op['qty']} x {op['sku']} answered {op['status']} "
                            f"without a reservation_id")


def verify(skus, counts, cached=None):
    """All checks; cached (the self-test) reuses the counters, the audit and
    the PostgreSQL rows of the real run."""
    failures = []
    check_reserve_answers(failures)
    res = reservations_from_history()
    # 1. every acknowledged reservation, by GET
    items = sorted(res.items())
    finals = parallel([(rid, r["session"]) for rid, r in items], fetch)
    now = now_wall()
    ledger = {}
    for (rid, r), (status, body) in zip(items, finals):
        if status != 200:
            failures.append(f"acknowledged reservation {rid} ({r['session']} {r['qty']} x "
                            f"{r['sku']}): GET answered {status} {body.get('error')}")
            continue
        ledger[rid] = body
        for b in check_reservation_register(rid, r, body, now):
            failures.append(f"reservation {rid}: {b}; history: {sorted(r['observed'])}, "
                            f"sent {sorted(r['sent'])}")
    # 2. per SKU counters
    client = Client(STACK)
    counters = cached["counters"] if cached else {}
    for sku in skus:
        if not cached:
            resp = get_with_retry(client, f"/v1/skus/{sku}")
            try:
                counters[sku] = check_counters(resp)
            except ContractError as e:
                failures.append(str(e))
                continue
        c = counters[sku]
        if c["reserved"] + c["sold"] > c["stock"]:
            failures.append(f"{sku}: reserved {c['reserved']} + sold {c['sold']} > stock {c['stock']}")
        ours_sold = sum(b["quantity"] for b in ledger.values()
                        if b["sku"] == sku and b["status"] == "confirmed")
        if c["sold"] != ours_sold:
            failures.append(f"{sku}: sold is {c['sold']}, our confirmed reservations hold "
                            f"{ours_sold} units")
    client.close()
    # 3. PostgreSQL converges to the ledger
    if not cached:
        audit = subprocess.run([os.path.join(STACK_REPO, "scripts", "audit"), STACK.dir,
                                "--timeout", "90"], capture_output=True, text=True, timeout=200)
        if audit.returncode != 0:
            failures.append(f"scripts/audit exited {audit.returncode}:\n{audit.stdout[-2000:]}"
                            f"{audit.stderr[-1000:]}")
    rows = cached["rows"] if cached else psql("SELECT id, sku_id, user_session_id, quantity, status, "
                "extract(epoch FROM \"timestamp\") FROM inventory_log "
                "WHERE sku_id LIKE :'p0' ORDER BY id", PREFIX + "%")
    pg = {r[0]: (r[1], r[2], int(r[3]), r[4], float(r[5])) for r in rows}
    for rid, body in ledger.items():
        row = pg.get(rid)
        if row is None:
            failures.append(f"acknowledged reservation {rid} has no inventory_log row")
        elif row[:4] != (body["sku"], body["session"], body["quantity"], body["status"]):
            failures.append(f"inventory_log row of {rid} is {row[:4]}, the ledger says "
                            f"{(body['sku'], body['session'], body['quantity'], body['status'])}")
    orphan_ids = sorted(set(pg) - set(ledger))
    orphan_finals = parallel([(rid, pg[rid][1]) for rid in orphan_ids], fetch)
    orphans = {}
    for rid, (status, body) in zip(orphan_ids, orphan_finals):
        sku, session, qty, st, created = pg[rid]
        if status != 200:
            failures.append(f"inventory_log row {rid} ({session} {qty} x {sku} {st}) is not in "
                            f"the ledger: GET answered {status}")
            continue
        if (body["sku"], body["session"], body["quantity"], body["status"]) != (sku, session, qty, st):
            failures.append(f"inventory_log row of {rid} is {(sku, session, qty, st)}, the ledger "
                            f"says {(body['sku'], body['session'], body['quantity'], body['status'])}")
        if body["status"] in ("confirmed", "released"):
            failures.append(f"unacknowledged reservation {rid} is {body['status']}: we never "
                            f"confirmed or released it")
        orphans[rid] = (sku, session, qty, created)
        ledger[rid] = body
    for sku, c in counters.items():
        held = sum(b["quantity"] for b in ledger.values()
                   if b["sku"] == sku and b["status"] == "reserved")
        if c["reserved"] != held:
            failures.append(f"{sku}: reserved is {c['reserved']}, the reservations found "
                            f"(acknowledged and not) hold {held}")
    # 4. the unacknowledged holds, explained
    explained = explain_orphans(orphans, failures)
    return failures, res, orphans, explained, {"counters": counters, "rows": rows}


def self_test(skus, counts, cached):
    """Plants anomalies in a copy of the history and insists the checker
    sees each: proof that a passing run checked something."""
    import copy
    real = HIST.ops
    res = reservations_from_history()
    planted = []
    acked = [op for op in real if op["kind"] == "reserve" and op.get("type") == "ok"]
    if acked:
        def lost_ack(ops):  # an acknowledged hold, as if it had been answered 409 sold_out
            op = next(o for o in ops if o["index"] == acked[len(acked) // 2]["index"])
            op.update(type="fail", status=409, error="sold_out", rid=None)
        planted.append(("a hold whose request got a 4xx", lost_ack))
    done = [rid for rid, r in res.items()
            if FETCHED.get((rid, r["session"]), (0, {}))[1].get("status") == "confirmed"]
    if done:
        def flip(ops):  # an answer that said "released" for a reservation now confirmed
            ops.append({"kind": "release", "session": res[done[0]]["session"], "rid": done[0],
                        "type": "ok", "status": 200, "start": now_wall(), "end": now_wall(),
                        "index": len(ops), "body": {"status": "released"}})
        planted.append(("a terminal status that changed", flip))
    missed = []
    for what, plant in planted:
        HIST.ops = copy.deepcopy(real)
        plant(HIST.ops)
        try:
            failures = verify(skus, counts, cached)[0]
        finally:
            HIST.ops = real
        if not failures:
            missed.append(what)
    return [p[0] for p in planted], missed


def write_reliability(cases, result, counts):
    out_dir = os.environ.get("RG_RELIABILITY_DIR")
    if not out_dir:
        return
    os.makedirs(out_dir, exist_ok=True)
    how = (f"HTTP load ({BUYERS} buyers, Zipf SKUs selling out) while kill -9 of rg-ledger "
           f"x{counts['ledger']}, kill -9 of rg-fcgi x{counts['worker']}, PostgreSQL stop -m "
           f"immediate x{counts['pg']} (seed {SEED}{', long' if LONG else ''})")
    with open(os.path.join(out_dir, "jepsen_http.tsv"), "w", encoding="utf-8") as f:
        f.write(f"process crashes under HTTP load (Jepsen checker)\t{how}\t{cases}\t{result}\n")


STACK_REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def main():
    print(f"jepsen: {STACK.base_url} ({STACK.server}), seed {SEED} (RG_SEED={SEED} to replay), "
          f"run id {RUN}, {DURATION_S:.0f} s, {BUYERS} buyers{', long' if LONG else ''}",
          flush=True)
    rng = random.Random(SEED)
    skus = [f"{PREFIX}{i}" for i in range(NSKUS)]
    weights = [1.0 / (i + 1) ** 1.1 for i in range(NSKUS)]
    setup = Client(STACK)
    for i, sku in enumerate(skus):
        stock = int((15 + rng.randrange(20)) * (i + 1) ** 2.2) * (6 if LONG else 1)
        settings = {"stock": stock, "max_per_order": 3}
        if i % 3 == 1:
            settings["reservation_ttl_s"] = 2
        resp = setup.put_sku(sku, settings)
        if resp.status != 201:
            resp.fail(f"create {sku}")
        print(f"  {sku}: stock {stock}, hold {settings.get('reservation_ttl_s', 'default')} s, "
              f"weight {weights[i] / sum(weights):.2f}", flush=True)
    setup.close()

    stop = threading.Event()
    counts = {"ledger": 0, "worker": 0, "pg": 0}
    buyers = [Buyer(n, skus, weights, stop) for n in range(BUYERS)]
    nem_stop = threading.Event()
    first_round = threading.Event()
    nem = threading.Thread(target=nemesis, args=(nem_stop, counts, first_round), daemon=True)
    started = time.monotonic()
    for b in buyers:
        b.start()
    nem.start()
    time.sleep(DURATION_S)
    # A slow (sanitizer) build may need longer for one fault of each kind.
    first_round.wait(120)
    nem_stop.set()
    nem.join(120)
    time.sleep(0.5)  # the last answers after the last fault
    stop.set()
    for b in buyers:
        b.join(30)
    if any(b.is_alive() for b in buyers) or nem.is_alive():
        print("jepsen: FAIL: a buyer or the nemesis hung", flush=True)
        return 1
    load_s = time.monotonic() - started
    heal()
    # Short holds (2 s) still running now expire within 1 s after expires_at:
    # wait them out, so the ledger stands still while it is compared.
    time.sleep(2.0 + 1.0 + EXPIRY_SLACK_S)

    kinds = {}
    for op in HIST.ops:
        label = f"{op['kind']} {op.get('status') or 'no answer'}" + (
            f" {op['error']}" if op.get("type") == "fail" else "")
        kinds[label] = kinds.get(label, 0) + 1
    print(f"  {len(HIST.ops)} operations in {load_s:.1f} s; faults: kill -9 ledger "
          f"{counts['ledger']}, kill -9 rg-fcgi {counts['worker']}, PostgreSQL stops {counts['pg']}",
          flush=True)
    print("  answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())), flush=True)

    failures, res, orphans, explained, cached = verify(skus, counts)
    counters = cached["counters"]
    failures = HIST.problems + failures
    if not failures:
        planted, missed = self_test(skus, counts, cached)
        print(f"  checker self-test: planted {planted}; missed {missed or 'none'}", flush=True)
        if missed or not planted:
            failures.append(f"the checker did not notice planted anomalies: {missed or planted}")
    sold_out = sorted({op["sku"] for op in HIST.ops if op.get("error") == "sold_out"})
    print(f"  {len(res)} acknowledged reservations checked; {len(orphans)} unacknowledged "
          f"found in PostgreSQL, explained by: "
          + ", ".join(f"{k} {v}" for k, v in explained.items())
          + f"; SKUs that sold out: {len(sold_out)} of {NSKUS}", flush=True)
    for sku in skus:
        c = counters.get(sku)
        if c:
            print(f"  {sku}: stock {c['stock']} reserved {c['reserved']} sold {c['sold']} "
                  f"available {c['available']}", flush=True)
    if not counts["ledger"] or not counts["worker"]:
        failures.append(f"the nemesis injected too little (ledger kills {counts['ledger']}, "
                        f"worker kills {counts['worker']}): the run proves nothing")
    if failures:
        print(f"jepsen: FAIL: {len(failures)} problems (RG_SEED={SEED} to replay), first 15:",
              flush=True)
        for f in failures[:15]:
            print("  - " + f.replace("\n", "\n    "), flush=True)
        write_reliability(len(HIST.ops), f"FAIL: {len(failures)} problems", counts)
        return 1
    write_reliability(len(HIST.ops), "pass", counts)
    print("jepsen: pass", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
