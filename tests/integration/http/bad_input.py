#!/usr/bin/env python3
"""bad_input.py — sends every row of bad_input.tsv and checks the answer.

    python3 bad_input.py --stack DIR [--table FILE]

Each row must get its status and error code (and a message naming the field
where the table says so); every answer must also obey API.md's response-wide
rules (http_api.response_problems). Afterwards: the service still answers
health 200 and sells, and nothing the rows aimed at changed — the SKU's
counters, the reservation's state, the SKU that must not exist.
"""

import os
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_api import (Client, Runner, check, check_reservation, expect,  # noqa: E402
                      response_problems, run_id, stack_from_argv)

# In the error column: the web server may refuse the request itself, before
# the application sees it (e.g. lighttpd answers a %00 in the URL with its own
# HTML 400); accepted when the status matches and the answer is not JSON.
SERVER_REFUSAL = "(server)"
COLUMNS = ["name", "method", "path", "content_type", "auth", "body", "status", "error", "field"]


def load_table(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            cells = line.split("\t")
            if len(cells) != len(COLUMNS):
                raise SystemExit(f"{path}:{lineno}: {len(cells)} columns, want {len(COLUMNS)}")
            row = dict(zip(COLUMNS, cells))
            row["lineno"] = lineno
            rows.append(row)
    names = [r["name"] for r in rows]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SystemExit(f"{path}: duplicate row names {sorted(dup)}")
    return rows


def expand(text, values):
    """Fills the placeholders, then turns \\xHH escapes into raw bytes."""
    text = re.sub(r"\{REP:(\d+):([^}]*)\}", lambda m: m.group(2) * int(m.group(1)), text)
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    left = re.findall(r"\{[A-Z]+\}", text)
    if left:
        raise SystemExit(f"unknown placeholder(s) {left} in {text[:80]!r}")
    out = bytearray()
    pos = 0
    for m in re.finditer(r"\\x([0-9A-Fa-f]{2})", text):
        out += text[pos:m.start()].encode("utf-8")
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def run_row(client, row, values):
    path = expand(row["path"], values)
    if any(b < 0x21 or b > 0x7e for b in path):
        raise SystemExit(f"row {row['name']}: the path must be printable ASCII (use %XX)")
    body = None if row["body"] == "-" else expand(row["body"], values)
    ctype = None if row["content_type"] == "-" else row["content_type"]
    route = path.decode("ascii")
    resp = client.request(row["method"], route, body=body, content_type=ctype,
                          admin=row["auth"] == "admin", check=False)
    statuses = tuple(int(s) for s in row["status"].split("|"))
    errors = row["error"].split("|")
    if SERVER_REFUSAL in errors and resp.status in statuses and not is_json(resp):
        return f"refused by the web server itself ({resp.status}, {resp.header('Content-Type')})"
    problems = response_problems(resp, route)
    if problems:
        resp.fail(f"row {row['name']}: response breaks API.md: " + "; ".join(problems))
    expect(resp, statuses, tuple(e for e in errors if e != SERVER_REFUSAL),
           what=f"row {row['name']} (line {row['lineno']})")
    if row["field"] != "-":
        check(row["field"] in resp.body.get("message", ""),
              f"row {row['name']}: the message does not name {row['field']!r}", resp)
    return None


def is_json(resp):
    return (resp.header("Content-Type") or "").lower().startswith("application/json")


def main():
    stack = stack_from_argv()
    table = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad_input.tsv")
    for i, arg in enumerate(sys.argv):
        if arg == "--table" and i + 1 < len(sys.argv):
            table = sys.argv[i + 1]
    rows = load_table(table)
    run = run_id()
    client = Client(stack)
    runner = Runner("bad_input")
    print(f"bad_input: {len(rows)} rows against {stack.base_url} ({stack.server}), run id {run}",
          flush=True)

    sku, newsku, session = f"t{run}-bad", f"t{run}-bad-never", "s-bad"
    expect(client.put_sku(sku, {"stock": 10}), 201, what="create the target SKU")
    resp = expect(client.reserve(sku, 1, session), 201, what="create the target reservation")
    rid = check_reservation(resp)["reservation_id"]
    values = {"SKU": sku, "NEWSKU": newsku, "RID": rid, "EMPTY": ""}
    before = client.sku_counters(sku)

    for row in rows:
        runner.run(row["name"], run_row, client, row, values)
    for name, note in runner.results.items():
        if note:
            print(f"  note: {name}: {note}", flush=True)

    def nothing_changed():
        after = client.sku_counters(sku)
        check(after == before, f"the counters of {sku} moved: before {before}, after {after}")
        resp = expect(client.get_reservation(rid, session), 200, what="GET the target reservation")
        check_reservation(resp, status="reserved")
        expect(client.get(f"/v1/skus/{newsku}"), 404, what=f"{newsku} must not exist")
        check(not os.path.exists("/tmp/rg-pwned"), "a shell command in a field ran")

    def still_serves():
        fresh = Client(stack)
        resp = expect(fresh.get("/v1/health"), 200, what="health after the bad input")
        check(resp.body.get("status") == "ok", "health is not ok", resp)
        resp = expect(fresh.reserve(sku, 2, "s-good"), 201, what="a normal reservation")
        check_reservation(resp, sku=sku, quantity=2, session="s-good", status="reserved")
        after = fresh.sku_counters(sku)
        check(after["reserved"] == before["reserved"] + 2, f"counters after a good reservation: "
              f"{after}, before the rows: {before}")
        fresh.close()

    runner.run("after-rows: nothing changed", nothing_changed)
    runner.run("after-rows: still serves", still_serves)
    if client.stale_retries:
        print(f"  note: {client.stale_retries} requests re-sent after the server closed an idle "
              f"keep-alive connection", flush=True)
    client.close()
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
