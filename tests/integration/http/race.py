#!/usr/bin/env python3
"""race.py — many HTTP clients race for few units; exactly the stock sells.

    python3 race.py --stack DIR        RG_SEED=N to replay the clients' choices
                                       RG_RACE_THREADS (32), RG_RACE_SKUS (3),
                                       RG_RACE_STOCK (20) to resize

Three races, each released by a barrier so the requests really overlap:
  stock     RG_RACE_THREADS clients, each with its own session, buy 1-3 units
            at a time from RG_RACE_SKUS SKUs of RG_RACE_STOCK units until every
            SKU answers sold_out. Exactly the stock is reserved: the 201s'
            quantities add up to the stock, their "available" values tile
            0..stock-1 without overlap (no unit handed out twice), GET sku shows
            reserved == stock and available 0, every id is unique and readable.
  limit     16 clients share one session on a SKU with per_session_limit 5:
            exactly 5 units are reserved, the rest get 429 limit_exceeded.
  replay    16 clients send the same (session, idempotency_key) at once:
            one 201, the rest 200, all with the same reservation.
Allowed answers besides those: 409 sold_out / insufficient_stock, and 503 with
Retry-After (counted and retried). Anything else — a 5xx without Retry-After
above all — fails, with the request and the response printed.
"""

import os
import random
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_api import (Client, ContractError, Runner, check, check_reservation,  # noqa: E402
                      expect, run_id, stack_from_argv)

STACK = stack_from_argv()
SEED = int(os.environ.get("RG_SEED") or random.SystemRandom().randrange(1 << 31))
THREADS = int(os.environ.get("RG_RACE_THREADS", "32"))
SKUS = int(os.environ.get("RG_RACE_SKUS", "3"))
STOCK = int(os.environ.get("RG_RACE_STOCK", "20"))
DEADLINE_S = 90.0
RUN = run_id()


class Tally:
    """What the clients saw, shared between their threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.won = []          # (sku, quantity, reservation_id, available, session)
        self.answers = {}      # "201", "409 sold_out", ... -> count
        self.unavailable = 0   # 503s (with Retry-After), retried
        self.failures = []     # descriptions of answers outside the contract
        self.latencies = []

    def count(self, resp):
        label = str(resp.status) + (f" {resp.error_code()}" if resp.status >= 400 else "")
        with self.lock:
            self.answers[label] = self.answers.get(label, 0) + 1
            self.latencies.append(resp.elapsed)

    def fail(self, text):
        with self.lock:
            self.failures.append(text)


def send(client, tally, sku, quantity, session, key):
    """One reservation attempt, retried on 503 with the same idempotency key.
    Returns the final Response, or None after a failure was recorded."""
    while True:
        try:
            resp = client.reserve(sku, quantity, session, key)
        except ContractError as e:
            tally.fail(str(e))
            return None
        except OSError as e:
            tally.fail(f"reserve {quantity} x {sku} (session {session}): {type(e).__name__}: {e}")
            return None
        tally.count(resp)
        if resp.status != 503:
            return resp
        with tally.lock:
            tally.unavailable += 1
        time.sleep(min(float(resp.header("Retry-After")), 0.2))


def stock_client(index, skus, barrier, tally):
    rng = random.Random(SEED * 1000 + index)
    client = Client(STACK)
    session = f"s-race-{RUN}-{index}"
    order = list(skus)
    rng.shuffle(order)
    barrier.wait()
    started = time.monotonic()
    n = 0
    for sku in order:
        while time.monotonic() - started < DEADLINE_S:
            quantity = rng.choice((1, 1, 2, 3))
            n += 1
            resp = send(client, tally, sku, quantity, session, f"k{n}")
            if resp is None:
                break
            code = resp.error_code()
            if resp.status == 201:
                obj = resp.body
                try:
                    check_reservation(resp, sku=sku, quantity=quantity, session=session,
                                      status="reserved")
                except ContractError as e:
                    tally.fail(str(e))
                with tally.lock:
                    tally.won.append((sku, quantity, obj.get("reservation_id"),
                                      obj.get("available"), session))
            elif resp.status == 409 and code == "sold_out":
                break
            elif resp.status == 409 and code == "insufficient_stock":
                if not 0 < resp.body["available"] < quantity:
                    tally.fail(f"insufficient_stock with available {resp.body['available']} for "
                               f"quantity {quantity}\n{resp.describe()}")
            else:
                tally.fail(f"unexpected answer in the stock race\n{resp.describe()}")
                break
        else:
            tally.fail(f"client {index} still buying {sku} after {DEADLINE_S} s")
    client.close()


def run_clients(count, target, *args):
    barrier = threading.Barrier(count)
    threads = [threading.Thread(target=target, args=(i, *args, barrier), daemon=True)
               for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S + 30)
    check(not any(t.is_alive() for t in threads), "a client thread hung")


def report(tally, title):
    lat = sorted(tally.latencies)
    pct = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000) if lat else (lambda p: 0)
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(tally.answers.items()))
    print(f"  {title}: {sum(tally.answers.values())} answers ({answers}); 503 retried: "
          f"{tally.unavailable}; latency p50 {pct(0.5):.0f} ms, p99 {pct(0.99):.0f} ms, "
          f"max {pct(1.0):.0f} ms", flush=True)
    if tally.failures:
        shown = "\n".join(tally.failures[:5])
        raise ContractError(f"{len(tally.failures)} answers outside the contract "
                            f"(first {min(5, len(tally.failures))}):\n{shown}")


def test_stock_race():
    admin = Client(STACK)
    skus = [f"t{RUN}-race-{i}" for i in range(SKUS)]
    for sku in skus:
        expect(admin.put_sku(sku, {"stock": STOCK}), 201, what=f"create {sku}")
    tally = Tally()
    run_clients(THREADS, lambda i, b: stock_client(i, skus, b, tally))
    report(tally, f"{THREADS} clients x {SKUS} SKUs x {STOCK} units")
    ids = [w[2] for w in tally.won]
    check(len(set(ids)) == len(ids), "a reservation id was handed out twice")
    for sku in skus:
        won = [w for w in tally.won if w[0] == sku]
        sold = sum(w[1] for w in won)
        check(sold == STOCK, f"{sku}: the 201s reserved {sold} units, the stock is {STOCK}")
        # Each 201 took [available, available + quantity): together exactly 0..stock-1.
        taken = sorted(u for w in won for u in range(w[3], w[3] + w[1]))
        check(taken == list(range(STOCK)), f"{sku}: the units the 201s took overlap or leave "
              f"gaps (available + quantity ranges: {sorted((w[3], w[1]) for w in won)})")
        got = admin.sku_counters(sku)
        check(got["reserved"] == STOCK and got["available"] == 0 and got["sold"] == 0,
              f"{sku}: counters {got}, want reserved {STOCK}, available 0, sold 0")
    for sku, quantity, rid, _, session in tally.won:
        resp = expect(admin.get_reservation(rid, session), 200, what="GET a won reservation")
        check_reservation(resp, sku=sku, quantity=quantity, session=session, status="reserved")
    admin.close()


def test_session_limit_race():
    admin = Client(STACK)
    sku = f"t{RUN}-race-limit"
    expect(admin.put_sku(sku, {"stock": 100, "per_session_limit": 5}), 201, what=f"create {sku}")
    tally = Tally()
    session = f"s-race-limit-{RUN}"

    def client_fn(index, barrier):
        client = Client(STACK)
        barrier.wait()
        resp = send(client, tally, sku, 1, session, f"k{index}")
        if resp is not None and resp.status == 201:
            with tally.lock:
                tally.won.append((sku, 1, resp.body.get("reservation_id"), None, session))
        elif resp is not None and not (resp.status == 429 and
                                       resp.error_code() == "limit_exceeded"):
            tally.fail(f"unexpected answer in the limit race\n{resp.describe()}")
        elif resp is not None and not resp.body["held"] <= resp.body["limit"] == 5:
            tally.fail(f"limit_exceeded with held > limit or limit != 5\n{resp.describe()}")
        client.close()

    run_clients(16, client_fn)
    report(tally, "16 clients, one session, per_session_limit 5")
    check(len(tally.won) == 5, f"{len(tally.won)} reservations of 1 unit got 201, want 5")
    got = admin.sku_counters(sku)
    check(got["reserved"] == 5, f"{sku}: reserved {got['reserved']}, want 5")
    admin.close()


def test_replay_race():
    admin = Client(STACK)
    sku = f"t{RUN}-race-replay"
    expect(admin.put_sku(sku, {"stock": 50}), 201, what=f"create {sku}")
    tally = Tally()
    results = []

    def client_fn(index, barrier):
        client = Client(STACK)
        barrier.wait()
        resp = send(client, tally, sku, 2, f"s-replay-{RUN}", "one-key")
        if resp is not None:
            with tally.lock:
                results.append(resp)
        client.close()

    run_clients(16, client_fn)
    report(tally, "16 clients, one (session, idempotency_key)")
    created = [r for r in results if r.status == 201]
    replayed = [r for r in results if r.status == 200]
    others = [r for r in results if r.status not in (200, 201)]
    check(not others, "answers other than 201/200 to a replay:\n" +
          "\n".join(r.describe() for r in others[:3]))
    check(len(created) == 1, f"{len(created)} answers were 201, want exactly 1 "
          f"(and {len(replayed)} were 200)")
    ids = {r.body.get("reservation_id") for r in created + replayed}
    check(len(ids) == 1, f"replays returned {len(ids)} different reservations: {sorted(ids)}")
    got = admin.sku_counters(sku)
    check(got["reserved"] == 2, f"{sku}: reserved {got['reserved']}, want 2 (one reservation)")
    admin.close()


def main():
    print(f"race: {STACK.base_url} ({STACK.server}), seed {SEED} (RG_SEED={SEED} to replay), "
          f"run id {RUN}", flush=True)
    runner = Runner("race")
    runner.run("stock race", test_stock_race)
    runner.run("session limit race", test_session_limit_race)
    runner.run("idempotency replay race", test_replay_race)
    rc = runner.finish()
    if rc:
        print(f"race: reproduce with RG_SEED={SEED}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
