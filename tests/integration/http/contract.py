#!/usr/bin/env python3
"""contract.py — every endpoint and status code of API.md's HTTP table, end to end.

    python3 contract.py --stack DIR        (DIR of `scripts/stack up DIR`)

Each check creates its own SKUs, named t<run id>-<check>, so reruns on the
same stack never collide. A failing check prints the request, what API.md
wants and what came back; the exit status is non-zero if any check failed.
"""

import os
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_api import (UNDOCUMENTED_FIELDS, Client, Runner, check,  # noqa: E402
                      check_counters, check_reservation, expect, parse_timestamp, run_id,
                      stack_from_argv)

STACK = stack_from_argv()
RUN = run_id()
C = Client(STACK)
IDS = []  # every reservation id seen, for the uniqueness check
# Extra seconds allowed on top of API.md's "within one second" for expiry,
# for a slow (sanitizer) build; the observed lateness is printed either way.
EXPIRY_SLACK_S = float(os.environ.get("RG_EXPIRY_SLACK_S", "0.5"))


def S(tag):
    """A session of this run: idempotency keys belong to a session, so reruns
    on the same stack must not share sessions."""
    return f"s{RUN}-{tag}"


def sku_name(tag):
    return f"t{RUN}-{tag}"


def new_sku(tag, stock, **settings):
    """Creates SKU t<run>-<tag> with stock and settings; returns its name."""
    sku = sku_name(tag)
    resp = C.put_sku(sku, dict(stock=stock, **settings))
    expect(resp, 201, what=f"PUT admin sku {sku} (new)")
    return sku


def reserve_ok(sku, quantity, session, key=None, status=201, **extra):
    resp = C.reserve(sku, quantity, session, key, **extra)
    expect(resp, status, what=f"reserve {quantity} x {sku}")
    obj = check_reservation(resp, sku=sku, quantity=quantity, session=session, status="reserved")
    IDS.append(obj["reservation_id"])
    return obj


def counters(sku, **want):
    """GET /v1/skus/{sku} until it shows want. With Cache-Control: max-age=N
    the answer may be up to N s stale, so it is asked again for N s + 0.5 s;
    with no-store it must be right at once."""
    deadline = None
    while True:
        resp = C.get(f"/v1/skus/{sku}")
        expect(resp, 200, what=f"GET /v1/skus/{sku}")
        obj = check_counters(resp)
        wrong = {k: obj[k] for k, v in want.items() if obj[k] != v}
        if not wrong:
            return obj
        cache = (resp.header("Cache-Control") or "").lower()
        if deadline is None and cache.startswith("max-age="):
            deadline = time.monotonic() + int(cache.split("=", 1)[1]) + 0.5
        if deadline is None or time.monotonic() > deadline:
            resp.fail(f"counters of {sku}: want {want}, got {obj}")
        time.sleep(0.1)


# --- Health, metrics ----------------------------------------------------------------


def test_health():
    resp = expect(C.get("/v1/health"), 200, what="GET /v1/health")
    check(resp.body.get("status") == "ok", "health body lacks \"status\": \"ok\"", resp)
    wb = resp.body.get("writebehind")
    check(isinstance(wb, dict) and all(isinstance(wb.get(k), int) and wb[k] >= 0
                                       for k in ("lag_records", "lag_ms", "connected_shards")),
          "health lacks the write-behind lag (lag_records, lag_ms, connected_shards)", resp)


def metric_sum(text, name):
    """Sum of the samples of metric NAME (any labels) in exposition TEXT."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        metric = line.split("{", 1)[0].split(" ", 1)[0]
        if metric == name:
            total += float(line.rsplit(" ", 1)[1] if "}" not in line else
                           line.rsplit("}", 1)[1].split()[0])
            seen = True
    return total if seen else None


def test_metrics():
    resp = expect(C.get("/metrics"), 200, what="GET /metrics")
    for name in ("rg_http_requests_total", "rg_reservations_total"):
        check(metric_sum(resp.text, name) is not None, f"/metrics has no {name} sample", resp)
    for line in resp.text.splitlines():
        if line and not line.startswith("#"):
            parts = line.rsplit("}", 1)[-1].split() if "}" in line else line.split()[1:]
            check(len(parts) >= 1, f"/metrics line without a value: {line!r}", resp)
            try:
                float(parts[0])
            except ValueError:
                resp.fail(f"/metrics sample value is not a number: {line!r}")
    before = metric_sum(resp.text, "rg_http_requests_total")
    for _ in range(5):
        expect(C.get("/v1/health"), 200, what="GET /v1/health")
    sku = new_sku("metrics", 5)
    reservations_before = metric_sum(C.get("/metrics").text, "rg_reservations_total")
    reserve_ok(sku, 1, S("metrics"))
    after = C.get("/metrics")
    grown = metric_sum(after.text, "rg_http_requests_total") - before
    check(grown >= 5, f"rg_http_requests_total grew by {grown} over 7 requests, want >= 5 "
          f"(the counters are to cover every worker)", after)
    check(metric_sum(after.text, "rg_reservations_total") > reservations_before,
          "rg_reservations_total did not grow after a 201 reservation", after)


# --- Admin API ------------------------------------------------------------------------


def test_admin_put_creates_then_updates():
    sku = sku_name("admin-put")
    resp = expect(C.put_sku(sku, {"stock": 10, "name": "Admin put", "price_cents": 1999}), 201,
                  what="PUT a new SKU")
    check(resp.body.get("sku") == sku and resp.body.get("stock") == 10,
          f"the 201 sku object lacks sku={sku!r}, stock=10", resp)
    counters(sku, stock=10, available=10, reserved=0, sold=0)
    resp = expect(C.put_sku(sku, {"stock": 12, "name": "Admin put", "price_cents": 1999}), 200,
                  what="PUT an existing SKU")
    check(resp.body.get("sku") == sku and resp.body.get("stock") == 12,
          "the 200 sku object lacks the new stock 12", resp)
    counters(sku, stock=12, available=12, reserved=0, sold=0)


def test_admin_unauthorized():
    sku = sku_name("admin-401")
    good = {"stock": 5}
    cases = [("no Authorization", {}),
             ("wrong token", {"Authorization": "Bearer " + "0" * 64}),
             ("token with a suffix", {"Authorization": f"Bearer {STACK.admin_token}x"}),
             ("token as Basic", {"Authorization": f"Basic {STACK.admin_token}"}),
             ("empty Bearer", {"Authorization": "Bearer "})]
    for what, headers in cases:
        resp = C.request("PUT", f"/v1/admin/skus/{sku}", json_body=good, headers=headers)
        expect(resp, 401, "unauthorized", what=f"PUT admin sku, {what}")
        resp = C.request("GET", f"/v1/admin/skus/{sku}", headers=headers)
        expect(resp, 401, "unauthorized", what=f"GET admin sku, {what}")
    resp = C.get(f"/v1/skus/{sku}")
    expect(resp, 404, what="a 401 PUT must not create the SKU")


def test_admin_bad_request():
    sku = sku_name("admin-400")
    for body, field in (({"name": "no stock"}, "stock"), ({"stock": -1}, "stock"),
                        ({"stock": "5"}, "stock"), ({"stock": 2.5}, "stock")):
        resp = expect(C.put_sku(sku, body), 400, "invalid_request", what=f"PUT admin {body}")
        check(field in resp.body["message"], f"the message does not name {field!r}", resp)
    expect(C.get(f"/v1/skus/{sku}"), 404, what="a 400 PUT must not create the SKU")


def test_admin_get():
    expect(C.get(f"/v1/admin/skus/{sku_name('admin-get-none')}", admin=True), 404,
           what="GET admin sku of an unknown SKU")
    settings = {"stock": 7, "name": "Tour shirt", "price_cents": 2500, "per_session_limit": 4,
                "max_per_order": 3, "reservation_ttl_s": 120}
    sku = new_sku("admin-get", **settings)
    resp = expect(C.get(f"/v1/admin/skus/{sku}", admin=True), 200, what="GET admin sku")
    check(resp.body.get("sku") == sku, "the admin sku object lacks its sku", resp)
    for key, value in settings.items():
        check(resp.body.get(key) == value, f"admin sku {key} is {resp.body.get(key)!r}, "
              f"want {value!r} as PUT", resp)


def test_stock_below_committed():
    sku = new_sku("below-committed", 5)
    reserve_ok(sku, 3, S("below"))
    resp = C.put_sku(sku, {"stock": 2})
    expect(resp, 409, "stock_below_committed", what="PUT stock 2 under 3 reserved")
    counters(sku, stock=5, reserved=3, available=2)
    expect(C.put_sku(sku, {"stock": 3}), 200, what="PUT stock 3 == reserved")
    counters(sku, stock=3, reserved=3, available=0, sold=0)


# --- SKU counters -----------------------------------------------------------------------


def test_get_sku():
    resp = C.get(f"/v1/skus/{sku_name('nonexistent')}")
    expect(resp, 404, what="GET /v1/skus of an unknown SKU")
    sku = new_sku("get-sku", 9)
    obj = counters(sku, stock=9, available=9, reserved=0, sold=0)
    check(obj["sku"] == sku, f"GET /v1/skus/{sku} names {obj['sku']!r}")


# --- Reservations -----------------------------------------------------------------------


def test_reserve_shape():
    sku = new_sku("shape", 10)
    before = time.time()
    obj = reserve_ok(sku, 2, S("shape"))
    check(obj["available"] == 8, f"available after reserving 2 of 10 is {obj['available']}")
    created = parse_timestamp(obj["created_at"])
    check(abs(created - before) < 5, f"created_at {obj['created_at']} is not now")
    ttl = STACK.int_setting("default_reservation_ttl_s", 300)
    lifetime = parse_timestamp(obj["expires_at"]) - created
    check(abs(lifetime - ttl) < 0.01, f"expires_at - created_at is {lifetime:.3f} s, "
          f"want the default TTL {ttl} s")
    counters(sku, stock=10, available=8, reserved=2, sold=0)
    for i in range(4):
        reserve_ok(sku, 1, S(f"shape-{i}"))
    counters(sku, available=4, reserved=6)


def test_reservation_ids_unguessable():
    check(len(IDS) >= 5, f"only {len(IDS)} reservation ids were collected")
    check(len(set(IDS)) == len(IDS), "a reservation id was handed out twice")
    for a, b in zip(IDS, IDS[1:]):
        if len(a) == len(b):
            diff = sum(x != y for x, y in zip(a, b))
            check(diff >= len(a) // 4, f"consecutive reservation ids {a} and {b} differ in only "
                  f"{diff} characters: they look guessable")


def test_unknown_fields_and_token_ignored():
    sku = new_sku("unknown-fields", 5)
    resp = C.post("/v1/reservations", {"sku": sku, "quantity": 1, "session": S("uf"),
                                       "colour": "red", "extra": {"a": [1, 2, {"b": None}]}})
    expect(resp, 201, what="reserve with unknown fields")
    check_reservation(resp, sku=sku, quantity=1, session=S("uf"), status="reserved")
    if STACK.config().get("botcheck_mode", "off") == "off":
        resp = C.reserve(sku, 1, S("uf-token"), token="not-a-real-token")
        expect(resp, 201, what="reserve with a token while botcheck_mode is off")


def test_unknown_sku():
    resp = C.reserve(sku_name("never-created"), 1, S("unknown"))
    expect(resp, 404, "unknown_sku", what="reserve an unknown SKU")


def test_idempotency():
    sku = new_sku("idem", 10)
    other = new_sku("idem-other", 10)
    first = reserve_ok(sku, 2, S("idem"), key="k-1")
    resp = expect(C.reserve(sku, 2, S("idem"), "k-1"), 200, what="replay (session, key)")
    again = check_reservation(resp)
    for key in ("reservation_id", "sku", "quantity", "session", "status", "created_at",
                "expires_at"):
        check(again[key] == first[key], f"the replay's {key} is {again[key]!r}, the first "
              f"answer's {first[key]!r}", resp)
    expect(C.reserve(sku, 3, S("idem"), "k-1"), 409, "idempotency_conflict",
           what="same key, other quantity")
    expect(C.reserve(other, 2, S("idem"), "k-1"), 409, "idempotency_conflict",
           what="same key, other sku")
    second = reserve_ok(sku, 2, S("idem-2"), key="k-1")  # keys belong to a session
    check(second["reservation_id"] != first["reservation_id"],
          "the same key in another session returned the other session's reservation")
    third = reserve_ok(sku, 1, S("idem"))                # no key: a new reservation
    fourth = reserve_ok(sku, 1, S("idem"))
    check(third["reservation_id"] != fourth["reservation_id"],
          "two reservations without a key got the same id")
    counters(sku, reserved=6, available=4)
    counters(other, reserved=0, available=10)


def test_idempotent_replay_after_sell_out():
    sku = new_sku("idem-last", 1)
    first = reserve_ok(sku, 1, S("last"), key="last-unit")
    check(first["available"] == 0, "available after taking the only unit is not 0")
    resp = expect(C.reserve(sku, 1, S("last"), "last-unit"), 200,
                  what="replay once the SKU is sold out")
    check(resp.body.get("reservation_id") == first["reservation_id"],
          "the replay returned another reservation", resp)
    expect(C.reserve(sku, 1, S("other")), 409, "sold_out", what="another buyer after sell-out")
    counters(sku, reserved=1, available=0)


def test_sold_out_and_insufficient_stock():
    sku = new_sku("stock", 5)
    check(reserve_ok(sku, 4, S("a"))["available"] == 1, "available after 4 of 5 is not 1")
    resp = expect(C.reserve(sku, 3, S("b")), 409, "insufficient_stock",
                  what="reserve 3 with 1 available")
    check(resp.body["available"] == 1, f"insufficient_stock says available "
          f"{resp.body['available']}, want 1", resp)
    check(reserve_ok(sku, 1, S("b"))["available"] == 0, "available after the last unit is not 0")
    for q in (1, 3):
        expect(C.reserve(sku, q, S("c")), 409, "sold_out", what=f"reserve {q} with 0 available")
    counters(sku, stock=5, available=0, reserved=5, sold=0)


def test_per_session_limit():
    sku = new_sku("limit", 20, per_session_limit=3)
    held = reserve_ok(sku, 2, S("lim"))
    resp = expect(C.reserve(sku, 2, S("lim")), 429, "limit_exceeded",
                  what="2 more with 2 held, limit 3")
    check(resp.body["limit"] == 3 and resp.body["held"] == 2,
          f"limit_exceeded says limit {resp.body['limit']}, held {resp.body['held']}; "
          f"want 3 and 2", resp)
    reserve_ok(sku, 1, S("lim"))
    resp = expect(C.reserve(sku, 1, S("lim")), 429, "limit_exceeded", what="1 more with 3 held")
    check(resp.body["held"] == 3, f"held is {resp.body['held']}, want 3", resp)
    reserve_ok(sku, 3, S("lim-other"))                   # the limit is per session
    expect(C.release(held["reservation_id"], S("lim")), 200, what="release 2 of the 3 held")
    reserve_ok(sku, 2, S("lim"))                         # released units are not held
    counters(sku, reserved=6, available=14)


def test_max_per_order():
    sku = new_sku("max-order", 50)
    resp = expect(C.reserve(sku, 11, S("max")), 400, "invalid_request",
                  what="quantity 11 > default max_per_order 10")
    check("quantity" in resp.body["message"], "the message does not name quantity", resp)
    reserve_ok(sku, 10, S("max"))
    expect(C.put_sku(sku, {"stock": 50, "max_per_order": 2}), 200, what="PUT max_per_order 2")
    expect(C.reserve(sku, 3, S("max2")), 400, "invalid_request", what="quantity 3 > max 2")
    reserve_ok(sku, 2, S("max2"))
    counters(sku, reserved=12, available=38)


def test_get_reservation():
    sku = new_sku("get-res", 5)
    session = S("get/with:odd=chars&more")          # printable, no spaces: valid
    obj = reserve_ok(sku, 1, session)
    rid = obj["reservation_id"]
    resp = expect(C.get_reservation(rid, session), 200, what="GET reservation, right session")
    got = check_reservation(resp, sku=sku, quantity=1, session=session, status="reserved")
    for key in ("reservation_id", "created_at", "expires_at"):
        check(got[key] == obj[key], f"GET reservation {key} {got[key]!r} != {obj[key]!r}", resp)
    expect(C.get_reservation(rid, S("someone-else")), 404, "unknown_reservation",
           what="GET reservation, wrong session")
    expect(C.get(f"/v1/reservations/{rid}"), (400, 404), ("invalid_request", "unknown_reservation"),
           what="GET reservation without session")
    unknown = "0" * len(rid) if rid != "0" * len(rid) else "1" * len(rid)
    for bad in (unknown, "not-an-id", "x" * 65, rid + "0", rid[:-1], rid.upper()[:-1] + "G"):
        expect(C.get(f"/v1/reservations/{bad}?session=" + urllib.parse.quote(session, safe="")),
               404, "unknown_reservation", what=f"GET reservation {bad!r}")


def test_confirm():
    sku = new_sku("confirm", 5)
    rid = reserve_ok(sku, 2, S("conf"))["reservation_id"]
    expect(C.confirm(rid, S("wrong")), 404, "unknown_reservation", what="confirm, wrong session")
    resp = expect(C.confirm(rid, S("conf")), 200, what="confirm")
    check_reservation(resp, sku=sku, quantity=2, session=S("conf"), status="confirmed")
    counters(sku, stock=5, available=3, reserved=0, sold=2)
    resp = expect(C.confirm(rid, S("conf")), 200, what="confirm twice")
    check_reservation(resp, status="confirmed")
    expect(C.release(rid, S("conf")), 409, "already_confirmed", what="release after confirm")
    resp = expect(C.get_reservation(rid, S("conf")), 200, what="GET a confirmed reservation")
    check_reservation(resp, status="confirmed")
    counters(sku, available=3, reserved=0, sold=2)
    expect(C.confirm("0" * 32, S("conf")), 404, "unknown_reservation", what="confirm unknown id")
    expect(C.request("POST", f"/v1/reservations/{rid}/confirm", json_body={}), 400,
           "invalid_request", what="confirm without session")


def test_release():
    sku = new_sku("release", 5)
    rid = reserve_ok(sku, 3, S("rel"))["reservation_id"]
    expect(C.release(rid, S("wrong")), 404, "unknown_reservation", what="release, wrong session")
    resp = expect(C.release(rid, S("rel")), 200, what="release")
    obj = check_reservation(resp, sku=sku, quantity=3, session=S("rel"), status="released")
    check(obj["available"] == 5, f"available right after the release is {obj['available']}, "
          f"want 5 (units go back at once)", resp)
    counters(sku, available=5, reserved=0, sold=0)
    resp = expect(C.release(rid, S("rel")), 200, what="release twice")
    check_reservation(resp, status="released")
    expect(C.confirm(rid, S("rel")), 409, "reservation_released", what="confirm after release")
    check_reservation(expect(C.get_reservation(rid, S("rel")), 200, what="GET released"),
                      status="released")
    expect(C.release("f" * 32, S("rel")), 404, "unknown_reservation", what="release unknown id")
    counters(sku, available=5, reserved=0, sold=0)


def wait_until(epoch_s):
    while time.time() < epoch_s:
        time.sleep(min(0.01, max(0.0, epoch_s - time.time())))


def test_expiry():
    """reservation_ttl_s 1: a hold can be confirmed until expires_at, not after
    it (even before the sweep); it turns timeout within one second after
    expires_at and gives its units back; confirming it then is 409."""
    sku = new_sku("expiry", 10, reservation_ttl_s=1)
    a = reserve_ok(sku, 2, S("exp-a"))
    b = reserve_ok(sku, 3, S("exp-b"))
    c = reserve_ok(sku, 1, S("exp-c"))
    d = reserve_ok(sku, 1, S("exp-d"))
    lifetime = parse_timestamp(b["expires_at"]) - parse_timestamp(b["created_at"])
    check(abs(lifetime - 1) < 0.01, f"expires_at - created_at is {lifetime:.3f} s, want 1 s")
    wait_until(parse_timestamp(d["expires_at"]) - 0.3)
    check_reservation(expect(C.confirm(d["reservation_id"], S("exp-d")), 200,
                             what="confirm 0.3 s before expires_at"), status="confirmed")
    wait_until(parse_timestamp(c["expires_at"]) + 0.1)
    expect(C.confirm(c["reservation_id"], S("exp-c")), 409, "reservation_expired",
           what="confirm 0.1 s after expires_at (API.md: not confirmed by expires_at)")
    expires = parse_timestamp(b["expires_at"])
    deadline = expires + 1.0 + EXPIRY_SLACK_S
    while True:
        resp = expect(C.get_reservation(b["reservation_id"], S("exp-b")), 200,
                      what="GET a reservation past its TTL")
        if resp.body.get("status") == "timeout":
            break
        check(resp.body.get("status") == "reserved", f"status {resp.body.get('status')!r} "
              f"while waiting for timeout", resp)
        if time.time() > deadline:
            resp.fail(f"still reserved {time.time() - expires:.2f} s after expires_at "
                      f"(API.md: timeout within one second)")
        time.sleep(0.05)
    print(f"  expiry seen {time.time() - expires:.2f} s after expires_at", flush=True)
    wait_until(parse_timestamp(a["expires_at"]) + 1.0)
    expect(C.confirm(a["reservation_id"], S("exp-a")), 409, "reservation_expired",
           what="confirm after expires_at + 1 s")
    check_reservation(expect(C.get_reservation(a["reservation_id"], S("exp-a")), 200,
                             what="GET an expired reservation"), status="timeout")
    counters(sku, stock=10, available=9, reserved=0, sold=1)


# --- Routing, methods, bodies, media types ------------------------------------------------


def test_not_found():
    for path in ("/v1/nope", "/v2/health", "/v1/skus", "/v1/admin/skus", "/v1/health/x",
                 "/v1/reservations/abc/confirm/x", "/v1/reservations/abc/cancel", "/metricsx",
                 "/", "/v1"):
        expect(C.get(path), 404, "not_found", what=f"GET {path}")
    expect(C.post("/v1/reservation", {"sku": "a", "quantity": 1, "session": "s"}), 404,
           "not_found", what="POST /v1/reservation (typo)")


def test_method_not_allowed():
    rid = "0" * 32
    cases = [("DELETE", "/v1/health", "GET"), ("POST", "/v1/health", "GET"),
             ("GET", "/v1/reservations", "POST"), ("PUT", "/v1/reservations", "POST"),
             ("PUT", f"/v1/skus/{sku_name('m')}", "GET"), ("POST", "/metrics", "GET"),
             ("DELETE", f"/v1/admin/skus/{sku_name('m')}", "PUT"),
             ("GET", f"/v1/reservations/{rid}/confirm", "POST"),
             ("PATCH", f"/v1/reservations/{rid}/release", "POST"),
             ("DELETE", f"/v1/reservations/{rid}", "GET")]
    for method, path, allowed in cases:
        resp = C.request(method, path, admin=path.startswith("/v1/admin"))
        expect(resp, 405, "method_not_allowed", what=f"{method} {path}")
        allow = [m.strip().upper() for m in resp.header("Allow", "").split(",")]
        check(allowed in allow and method not in allow,
              f"Allow is {resp.header('Allow')!r}: want {allowed}, not {method}", resp)


def padded_reservation(sku, session, size):
    """A valid reservation body of exactly size bytes (blanks after the JSON)."""
    body = ('{"sku":"%s","quantity":1,"session":"%s"}' % (sku, session)).encode()
    check(len(body) <= size, "padding target too small")
    return body + b" " * (size - len(body))


def test_body_limits():
    limit = STACK.int_setting("request_body_max", 4096)
    sku = new_sku("body-limit", 5)
    resp = C.request("POST", "/v1/reservations", body=padded_reservation(sku, S("big"), 5 * 1024))
    expect(resp, 413, "body_too_large", what="a 5 KiB body")
    resp = C.request("POST", "/v1/reservations", body=padded_reservation(sku, S("big"), limit + 1))
    expect(resp, 413, "body_too_large", what=f"a body of request_body_max + 1 = {limit + 1} bytes")
    resp = C.request("POST", "/v1/reservations", body=padded_reservation(sku, S("big"), limit))
    expect(resp, 201, what=f"a body of exactly request_body_max = {limit} bytes")
    resp = C.request("PUT", f"/v1/admin/skus/{sku}", admin=True,
                     body=b'{"stock": 5, "name": "' + b"n" * 5000 + b'"}')
    expect(resp, 413, "body_too_large", what="a 5 KiB admin body")
    counters(sku, stock=5, reserved=1, available=4)


def test_media_type():
    sku = new_sku("media", 5)
    body = '{"sku":"%s","quantity":1,"session":"%s"}' % (sku, S("media"))
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None,
                  "application/jsonx", "text/json"):
        resp = C.request("POST", "/v1/reservations", body=body, content_type=ctype)
        expect(resp, 415, "unsupported_media_type", what=f"Content-Type {ctype!r}")
    resp = C.request("PUT", f"/v1/admin/skus/{sku}", body='{"stock":5}', content_type="text/plain",
                     admin=True)
    expect(resp, 415, "unsupported_media_type", what="admin PUT as text/plain")
    counters(sku, reserved=0, available=5)
    for ctype in ("application/json", "application/json; charset=utf-8",
                  "application/json;charset=UTF-8"):
        resp = C.request("POST", "/v1/reservations", body=body, content_type=ctype)
        expect(resp, 201, what=f"Content-Type {ctype!r}")
    counters(sku, reserved=3, available=2)


def test_json_depth():
    sku = new_sku("depth", 5)
    max_depth = STACK.int_setting("json_depth_max", 8)
    def body(depth):  # the top-level object is level 1
        nested = "[" * (depth - 1) + "1" + "]" * (depth - 1)
        return '{"sku":"%s","quantity":1,"session":"%s","x":%s}' % (sku, S("depth"), nested)
    expect(C.request("POST", "/v1/reservations", body=body(max_depth)), 201,
           what=f"nesting exactly {max_depth} deep (allowed)")
    resp = C.request("POST", "/v1/reservations", body=body(max_depth + 1))
    expect(resp, 400, "invalid_request", what=f"nesting {max_depth + 1} deep")
    counters(sku, reserved=1, available=4)


def test_cors():
    origins = STACK.cors_origins()
    allowed = "*" if origins == ["*"] else (origins[0] if origins else None)
    stranger = "https://not-allowed.invalid"
    resp = C.get("/v1/health", headers={"Origin": stranger})
    if allowed != "*":
        check(resp.header("Access-Control-Allow-Origin") is None,
              f"Access-Control-Allow-Origin sent to an origin not configured ({origins})", resp)
    if not origins:
        print("  cors_allowed_origins is empty: only checked that no CORS header is sent")
        return
    origin = "https://shop.example" if allowed == "*" else allowed
    resp = expect(C.get("/v1/health", headers={"Origin": origin}), 200, what="GET with Origin")
    acao = resp.header("Access-Control-Allow-Origin")
    check(acao in ("*", origin), f"Access-Control-Allow-Origin is {acao!r} for {origin}", resp)
    if acao == origin:
        check("origin" in (resp.header("Vary") or "").lower(), "an echoed origin without "
              "Vary: Origin", resp)
    resp = C.request("OPTIONS", "/v1/reservations", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    expect(resp, (200, 204), what="CORS preflight of POST /v1/reservations")
    check(resp.header("Access-Control-Allow-Origin") in ("*", origin),
          "the preflight lacks Access-Control-Allow-Origin", resp)
    methods = (resp.header("Access-Control-Allow-Methods") or "").upper()
    check("POST" in methods, "the preflight does not allow POST", resp)
    check("CONTENT-TYPE" in (resp.header("Access-Control-Allow-Headers") or "").upper(),
          "the preflight does not allow the Content-Type header", resp)
    resp = C.reserve(sku_name("cors-none"), 1, S("cors"))
    expect(resp, 404, "unknown_sku", what="plain request without Origin still works")


# --- Strings that try to escape ------------------------------------------------------------


def test_injection_strings_are_data():
    evil_name = "x'; DROP TABLE products;-- $(touch /tmp/rg-pwned) `id` \"q\" \\"
    sku = new_sku("inject", 5, name=evil_name)
    resp = expect(C.get(f"/v1/admin/skus/{sku}", admin=True), 200, what="GET admin sku")
    check(resp.body.get("name") == evil_name, f"name came back as {resp.body.get('name')!r}",
          resp)
    session = S("x';DROP_TABLE_inventory_log;--$(id)")   # printable, no spaces: a valid session
    obj = reserve_ok(sku, 1, session)
    resp = expect(C.get_reservation(obj["reservation_id"], session), 200,
                  what="GET reservation with an injection-like session")
    check_reservation(resp, session=session)
    expect(C.reserve("x';DROP TABLE products;--", 1, S("inject")), 400, "invalid_request",
           what="an injection string as sku")
    check(not os.path.exists("/tmp/rg-pwned"), "a shell command in a name ran")
    counters(sku, reserved=1, available=4)
    expect(C.get("/v1/health"), 200, what="health after injection strings")


def test_identifier_edges_accepted():
    """The widest valid values: a session of every printable ASCII character
    but space (decoded from the query string exactly), a 128-char session, an
    idempotency key with a space (API.md forbids spaces only in session), a
    sku spelled with JSON \\u escapes, and a 64-char sku."""
    sku = new_sku("edges", 20)
    wide = S("") + "".join(chr(c) for c in range(0x21, 0x7f))
    obj = reserve_ok(sku, 1, wide)
    resp = C.get(f"/v1/reservations/{obj['reservation_id']}?session="
                  + urllib.parse.quote(wide, safe=""))
    check_reservation(expect(resp, 200, what="GET with every printable character in session"),
                      session=wide)
    expect(C.confirm(obj["reservation_id"], wide), 200, what="confirm with that session")
    long_session = (S("long") + "x" * 128)[:128]
    reserve_ok(sku, 1, long_session)
    spaced = reserve_ok(sku, 1, S("key-space"), key="order 42 / retry #1")
    resp = expect(C.reserve(sku, 1, S("key-space"), "order 42 / retry #1"), 200,
                  what="replay of a key with spaces")
    check(resp.body["reservation_id"] == spaced["reservation_id"],
          "the replay returned another reservation", resp)
    escaped = "".join(f"\\u{ord(c):04x}" for c in sku)
    resp = C.request("POST", "/v1/reservations", body='{"sku":"%s","quantity":1,"session":"%s"}'
                     % (escaped, S("escaped")))
    check_reservation(expect(resp, 201, what="sku written with \\u escapes"), sku=sku)
    sku64 = (sku_name("64") + "-" + "x" * 64)[:64]
    expect(C.put_sku(sku64, {"stock": 1}), 201, what="PUT a 64-char sku")
    reserve_ok(sku64, 1, S("64"))
    counters(sku, reserved=3, sold=1, available=16)


def test_bearer_scheme_case_insensitive():
    """RFC 9110: the auth scheme is case-insensitive."""
    sku = sku_name("bearer-case")
    resp = C.request("PUT", f"/v1/admin/skus/{sku}", json_body={"stock": 1},
                     headers={"Authorization": "bearer " + STACK.admin_token})
    expect(resp, 201, what="PUT with 'bearer' in lower case")


def test_chunked_bodies():
    """A body sent with Transfer-Encoding: chunked obeys the same limit."""
    limit = STACK.int_setting("request_body_max", 4096)
    sku = new_sku("chunked", 5)

    def chunked(body):
        return (body[i:i + 1000] for i in range(0, len(body), 1000))
    body = padded_reservation(sku, S("chunked"), 200)
    resp = C.request("POST", "/v1/reservations", body=chunked(body))
    expect(resp, 201, what="a small chunked body")
    body = padded_reservation(sku, S("chunked-big"), limit + 1000)
    resp = C.request("POST", "/v1/reservations", body=chunked(body))
    expect(resp, 413, "body_too_large", what=f"a chunked body of {limit + 1000} bytes")
    counters(sku, reserved=1, available=4)


def test_names_round_trip_or_are_refused():
    """API.md gives no rule for name: whatever is accepted must come back
    byte for byte (never truncated at a NUL, never re-encoded)."""
    for tag, name in (("name-unicode", "Bühne – Reihe 7 🎫"), ("name-nul", "before\u0000after"),
                      ("name-ctl", "tab\tnewline\n")):
        sku = sku_name(tag)
        resp = C.put_sku(sku, {"stock": 1, "name": name})
        if resp.status == 400:
            expect(resp, 400, "invalid_request", what=f"PUT name {name!r}")
            continue
        expect(resp, 201, what=f"PUT name {name!r}")
        got = expect(C.get(f"/v1/admin/skus/{sku}", admin=True), 200, what="GET admin sku")
        check(got.body.get("name") == name, f"name {name!r} came back as "
              f"{got.body.get('name')!r}", got)


def test_error_bodies_only_documented_fields():
    """API.md: an error is {"error", "message"}, plus available
    (insufficient_stock) and limit, held (limit_exceeded). Checked over every
    error answer of this run."""
    found = [f"{code}: {sorted(fields)} (e.g. {next(iter(fields.values()))})"
             for code, fields in sorted(UNDOCUMENTED_FIELDS.items())]
    check(not found, "error bodies carry fields API.md does not document - document them "
          "in API.md or drop them:\n" + "\n".join(found))


TESTS = [test_health, test_admin_put_creates_then_updates, test_admin_unauthorized,
         test_admin_bad_request, test_admin_get, test_get_sku, test_reserve_shape,
         test_unknown_fields_and_token_ignored, test_unknown_sku, test_idempotency,
         test_idempotent_replay_after_sell_out, test_sold_out_and_insufficient_stock,
         test_per_session_limit, test_max_per_order, test_stock_below_committed,
         test_get_reservation, test_confirm, test_release, test_expiry, test_not_found,
         test_method_not_allowed, test_body_limits, test_media_type, test_json_depth,
         test_chunked_bodies, test_cors, test_injection_strings_are_data,
         test_identifier_edges_accepted, test_bearer_scheme_case_insensitive,
         test_names_round_trip_or_are_refused,
         test_metrics, test_reservation_ids_unguessable,
         test_error_bodies_only_documented_fields]


def main():
    print(f"contract: {STACK.base_url} ({STACK.server}), run id {RUN}", flush=True)
    runner = Runner("contract")
    only = os.environ.get("RG_ONLY")  # e.g. RG_ONLY=expiry,confirm
    for fn in TESTS:
        name = fn.__name__[len("test_"):]
        if only and not any(o in name for o in only.split(",")):
            continue
        runner.run(name, fn)
    C.close()
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
