#!/usr/bin/env python3
"""secrets.py — the admin token is checked exactly and never written anywhere.

    python3 secrets.py stack DIR --port P     starts its own stack in DIR (log
                                              level debug, the most talkative),
                                              checks, stops it
    python3 secrets.py mode RG_LEDGER RG_FCGI  the secret-file permission warning

stack: with the stack's admin token T (64 hex characters):
  * T itself gets 200/201 on PUT and GET /v1/admin/skus/{sku};
  * wrong tokens get 401 unauthorized with WWW-Authenticate: every token of
    T's length that differs from it in one character (first, middle, last),
    T's prefix and T with a character added, an empty bearer, another scheme;
  * after `scripts/stack down`, no file under DIR — every log (ledger,
    rg-fcgi, lighttpd error and access logs, PostgreSQL's), the WAL and
    snapshots, PostgreSQL's data files — holds T, its first or second half,
    or any of the wrong tokens sent (a near-miss logged gives most of T away),
    except the files that are meant to hold it (revenue-guard.conf, stack.env,
    fcgi.env). The stack's logs must also be free of sanitizer reports.
mode: rg-ledger and rg-fcgi --check-config warn when a config file with a
  secret (admin_token, botcheck_secret, a password in pg_conninfo) can be
  read by others, written by group or others, or read by a group they are not
  in; and stay quiet for mode 0600 and for a file without secrets.
Writes its reliability line to $RG_RELIABILITY_DIR/fault_secrets_<mode>.tsv.
"""

import os
import stat
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration", "http"))
import stack_fixture  # noqa: E402
from http_api import Client, Stack, run_id  # noqa: E402

ALLOWED_HOLDERS = {"revenue-guard.conf", "stack.env", "fcgi.env", "stack.env.tmp"}


def reliability(name, what, how, cases, result):
    out_dir = os.environ.get("RG_RELIABILITY_DIR")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"{name}.tsv"), "w", encoding="utf-8") as f:
            f.write(f"{what}\t{how}\t{cases}\t{result}\n")


def wrong_tokens(token):
    def flip(i):
        c = token[i]
        return token[:i] + ("0" if c != "0" else "1") + token[i + 1:]
    n = len(token)
    same_len = [flip(0), flip(n // 2), flip(n - 1), token[::-1] if token[::-1] != token else flip(1)]
    return same_len, [token[:-1], token + "0", ""]


def run_stack(stack_dir, port):
    failures = []
    os.environ["RG_LOG_LEVEL"] = "debug"
    rc = stack_fixture.cmd_up(stack_dir, ["--port", str(port)])
    if rc != 0:
        print(f"secrets: scripts/stack up failed ({rc})", flush=True)
        return 1
    sent = []
    cases = 0
    try:
        st = Stack(stack_dir)
        token = st.admin_token
        if len(token) < 16:
            failures.append(f"the stack's admin token is only {len(token)} characters")
        client = Client(st)
        sku = f"sec{run_id()}"
        r = client.put_sku(sku, {"stock": 5})
        cases += 1
        if r.status != 201:
            failures.append(f"PUT with the right token: {r.status}\n{r.describe()}")
        r = client.get(f"/v1/admin/skus/{sku}", admin=True)
        cases += 1
        if r.status != 200:
            failures.append(f"GET admin with the right token: {r.status}\n{r.describe()}")
        same_len, other = wrong_tokens(token)
        headers = [f"Bearer {t}" for t in same_len + other] + [f"Basic {token}", token]
        for h in headers:
            sent.append(h.split(" ", 1)[-1])
            for method, route, body in (("PUT", f"/v1/admin/skus/{sku}", {"stock": 1000}),
                                        ("GET", f"/v1/admin/skus/{sku}", None)):
                r = client.request(method, route, json_body=body, headers={"Authorization": h})
                cases += 1
                if r.status != 401 or r.error_code() != "unauthorized":
                    failures.append(f"{method} with Authorization '{h[:12]}...' (length "
                                    f"{len(h)}): want 401 unauthorized, got {r.status}\n"
                                    f"{r.describe()}")
        # the failed PUTs changed nothing
        r = client.get(f"/v1/skus/{sku}")
        if r.status != 200 or r.body.get("stock") != 5:
            failures.append(f"stock after refused PUTs: {r.body}")
        client.close()
    finally:
        os.environ.pop("RG_LOG_LEVEL", None)
        down_rc = stack_fixture.cmd_down(stack_dir)
        if down_rc != 0:
            failures.append(f"stack down (with the sanitizer scan of the logs) exited {down_rc}")
    secrets = {token, token[: len(token) // 2], token[len(token) // 2:]}
    secrets |= {s for s in sent if len(s) >= 16}
    needles = [s.encode() for s in secrets if s]
    with open(os.path.join(stack_dir, "revenue-guard.conf"), "rb") as f:
        if token.encode() not in f.read():  # the scan below would see nothing either
            failures.append("the token is not found in revenue-guard.conf: the scan is broken")
    scanned = 0
    for root, dirs, files in os.walk(stack_dir):
        dirs[:] = [d for d in dirs if d != "bin"]
        for name in files:
            path = os.path.join(root, name)
            if name in ALLOWED_HOLDERS and root == stack_dir:
                continue
            if os.path.islink(path) or not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            with open(path, "rb") as f:
                data = f.read()
            scanned += 1
            for n in needles:
                if n in data:
                    at = data.index(n)
                    what = "the admin token (or half of it)" if n.decode() in (
                        token, token[:len(token) // 2], token[len(token) // 2:]) else \
                        "a wrong admin token that was sent"
                    failures.append(f"{path} holds {what} at byte {at}: "
                                    f"{data[max(0, at - 60):at].decode('utf-8', 'replace')!r}...")
                    break
    print(f"secrets: {cases} admin requests ({len(same_len)} same-length wrong tokens); "
          f"{scanned} files under {stack_dir} scanned for {len(needles)} secret strings",
          flush=True)
    result = "pass" if not failures else f"FAIL: {len(failures)} problems"
    reliability("fault_secrets_stack", "admin token leak or wrong-token access (security)",
                "right, same-length wrong, prefix, longer tokens over HTTP; every file of the "
                "stack scanned for the tokens after a debug-level run", cases, result)
    for f in failures:
        print("  - " + f.replace("\n", "\n    "), flush=True)
    print(f"secrets: {result}", flush=True)
    return 0 if not failures else 1


def run_mode(ledger, fcgi):
    failures = []
    cases = 0
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        cases_def = [
            ('admin_token = "0123456789abcdef0123"\n', 0o644, True, "readable by every user"),
            ('botcheck_secret = "s3cr3t-s3cr3t"\n', 0o604, True, "readable by every user"),
            ('pg_conninfo = "host=/tmp dbname=x password=pw"\n', 0o644, True, "readable by every user"),
            ('pg_conninfo = "postgresql://u:pw@localhost/db"\n', 0o620, True, "writable by group"),
            ('admin_token = "0123456789abcdef0123"\n', 0o600, False, None),
            ('pg_conninfo = "host=/tmp dbname=x user=rg"\n', 0o644, False, None),
            ('log_level = info\n', 0o666, False, None),
        ]
        for i, (text, mode, warn, phrase) in enumerate(cases_def):
            path = os.path.join(d, f"c{i}.conf")
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, mode)
            for exe in (ledger, fcgi):
                env = {k: v for k, v in os.environ.items() if not k.startswith("RG_")}
                out = subprocess.run([exe, "--config", path, "--check-config"],
                                     capture_output=True, text=True, env=env, timeout=30)
                cases += 1
                warned = "WARN" in out.stderr and path in out.stderr
                name = os.path.basename(exe)
                if out.returncode != 0:
                    failures.append(f"{name} --check-config refused {text.strip()!r}: "
                                    f"{out.stderr.strip()}")
                elif warned != warn or (phrase and phrase not in out.stderr):
                    failures.append(f"{name}, {text.strip()!r} mode {mode:04o}: want "
                                    f"{'a warning (' + phrase + ')' if warn else 'no warning'}, "
                                    f"got stderr {out.stderr.strip()!r}")
                elif warn and ("0123456789abcdef" in out.stderr or "pw@" in out.stderr
                               or "s3cr3t" in out.stderr or "password=pw" in out.stderr):
                    failures.append(f"{name}: the warning prints the secret: {out.stderr!r}")
    result = "pass" if not failures else f"FAIL: {len(failures)} problems"
    reliability("fault_secrets_mode", "config file with secrets readable by others (security)",
                "rg-ledger/rg-fcgi --check-config on files of modes 0600..0666 with and "
                "without admin_token, botcheck_secret, pg_conninfo password", cases, result)
    for f in failures:
        print("  - " + f, flush=True)
    print(f"secrets mode: {cases} cases, {result}", flush=True)
    return 0 if not failures else 1


def main(argv):
    if len(argv) >= 2 and argv[0] == "stack":
        port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 18261
        return run_stack(os.path.abspath(argv[1]), port)
    if len(argv) == 3 and argv[0] == "mode":
        return run_mode(argv[1], argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
