"""http_api.py — a small client for the Revenue Guard HTTP API (API.md).

Every answer that goes through Client.request is checked against the rules
API.md sets for all responses, before the test looks at it:
  * Content-Type is exactly application/json; charset=utf-8 (GET /metrics:
    text/plain; a 204 has no body and needs none);
  * Cache-Control is no-store (GET /v1/skus/{sku} may say max-age=1 instead);
  * a 2xx body is a JSON object; an error body is exactly
    {"error": "<code>", "message": "<sentence>"} plus the extra fields API.md
    documents for that code (available; limit and held);
  * a 503 carries Retry-After, a 401 WWW-Authenticate, a 405 Allow.
A violation raises ContractError naming the request and the response.

The stack under test is described by DIR/stack.env, written by
`scripts/stack up DIR`. Only the standard library is used. Traffic goes only
to 127.0.0.1 (the BASE_URL of the stack; anything else is refused).
"""

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
RESERVATION_KEYS = {"reservation_id", "sku", "quantity", "session", "status",
                    "created_at", "expires_at", "available"}
RESERVATION_STATUSES = {"reserved", "confirmed", "released", "timeout"}
SKU_COUNTER_KEYS = {"sku", "stock", "available", "reserved", "sold"}
# Extra fields an error body may carry, per code (API.md), and whether each is
# required. Other fields next to "error" and "message" are collected in
# UNDOCUMENTED_FIELDS (code -> {field: example response}) rather than failing
# every request: contract.py has one check that reports them, so the race and
# fault suites still test what they are about.
ERROR_EXTRAS = {
    "insufficient_stock": {"available": True},
    "limit_exceeded": {"limit": True, "held": True},
}
UNDOCUMENTED_FIELDS = {}
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ERROR_CODE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
REPO_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


class ContractError(AssertionError):
    """A response (or a sequence of them) that breaks API.md."""


# --- The stack under test -------------------------------------------------------


def _assignments(path):
    """(key, value) of each KEY=value line; blank lines and # comments skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                yield key.strip(), value.strip()


def read_env_file(path):
    """KEY=value lines (shell style, optional single or double quotes) -> dict."""
    values = {}
    for key, value in _assignments(path):
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def read_config_file(path):
    """revenue-guard.conf (key = value, optional double quotes) -> dict."""
    values = {}
    for key, value in _assignments(path):
        if value.startswith('"'):
            value = value[1:value.find('"', 1)]
        else:
            value = re.split(r"\s#", value, 1)[0].strip()
        values[key] = value
    return values


class Stack:
    """A running stack: its stack.env, config and processes."""

    def __init__(self, stack_dir):
        self.dir = os.path.abspath(stack_dir)
        env_path = os.path.join(self.dir, "stack.env")
        if not os.path.exists(env_path):
            raise SystemExit(f"{env_path} does not exist: start the stack first "
                             f"(scripts/stack up {self.dir})")
        self.env = read_env_file(env_path)
        self.base_url = self.env["BASE_URL"].rstrip("/")
        url = urllib.parse.urlsplit(self.base_url)
        if url.scheme != "http" or url.hostname != "127.0.0.1":
            raise SystemExit(f"BASE_URL {self.base_url} is not http://127.0.0.1:...: refusing")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.admin_token = self.env.get("ADMIN_TOKEN", "")
        self.server = self.env.get("SERVER", "?")

    def reload_env(self):
        self.env = read_env_file(os.path.join(self.dir, "stack.env"))

    def config(self):
        """The settings the stack gave rg-fcgi: revenue-guard.conf plus the
        RG_* lines of fcgi.env (keys the config table does not know yet)."""
        values = {}
        conf = self.env.get("LEDGER_CONFIG") or os.path.join(self.dir, "revenue-guard.conf")
        if os.path.exists(conf):
            values.update(read_config_file(conf))
        fcgi_env = os.path.join(self.dir, "fcgi.env")
        if os.path.exists(fcgi_env):
            for key, value in read_env_file(fcgi_env).items():
                if key.startswith("RG_"):
                    values[key[3:].lower()] = value
        return values

    def cors_origins(self):
        """The configured CORS origins (a list; ["*"] for any; [] for none)."""
        raw = self.config().get("cors_allowed_origins", "")
        return [o.strip() for o in raw.split(",") if o.strip()]

    def int_setting(self, key, default):
        try:
            return int(self.config().get(key, default))
        except ValueError:
            return default

    def fcgi_exe(self):
        return os.path.join(self.dir, "bin", "rg-fcgi")

    def fcgi_worker_pids(self):
        """Pids of this stack's rg-fcgi processes that serve requests: every
        process running DIR/bin/rg-fcgi except a pool's master (FCGI_PID)."""
        exe = self.fcgi_exe()
        master = self.env.get("FCGI_PID")
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or name == master:
                continue
            try:
                if os.readlink(f"/proc/{name}/exe") != exe:
                    continue
                with open(f"/proc/{name}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("Z", "X"):
                pids.append(int(name))
        return sorted(pids)

    def run_stack_command(self, command, timeout=120):
        """scripts/stack COMMAND DIR; returns the CompletedProcess."""
        script = os.environ.get("RG_STACK_SCRIPT", os.path.join(REPO_DIR, "scripts", "stack"))
        argv = [script] if os.access(script, os.X_OK) else ["bash", script]
        return subprocess.run(argv + [command, self.dir], capture_output=True, text=True,
                              timeout=timeout)


def stack_from_argv(argv=None):
    """The stack named by --stack DIR (or $RG_STACK_DIR)."""
    argv = sys.argv[1:] if argv is None else argv
    stack_dir = os.environ.get("RG_STACK_DIR")
    for i, arg in enumerate(argv):
        if arg == "--stack" and i + 1 < len(argv):
            stack_dir = argv[i + 1]
        elif arg.startswith("--stack="):
            stack_dir = arg.split("=", 1)[1]
    if not stack_dir:
        raise SystemExit("usage: %s --stack DIR (a directory of scripts/stack up), "
                         "or set RG_STACK_DIR" % os.path.basename(sys.argv[0]))
    return Stack(stack_dir)


# --- Requests and responses -----------------------------------------------------


def short(data, limit=400):
    """A printable excerpt of bytes or str for failure messages."""
    if data is None:
        return "(none)"
    if isinstance(data, bytes):
        text = data.decode("utf-8", "backslashreplace")
    else:
        text = data
    text = text.encode("unicode_escape").decode("ascii") if any(
        ord(c) < 32 and c not in "\n" for c in text) else text
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class Response:
    """One exchange: what was sent and what came back."""

    def __init__(self, method, path, req_headers, req_body, status, reason, headers, raw,
                 elapsed):
        self.method = method
        self.path = path                  # as sent, with the prefix
        self.req_headers = req_headers
        self.req_body = req_body
        self.status = status
        self.reason = reason
        self.header_list = headers        # [(name, value), ...]
        self.raw = raw
        self.elapsed = elapsed
        self.body = None                  # parsed JSON, or text for non-JSON
        self.json_error = None
        try:
            self.text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.text = raw.decode("utf-8", "replace")
            self.json_error = f"body is not UTF-8: {e}"
        if raw and self.json_error is None:
            try:
                self.body = json.loads(self.text)
            except ValueError as e:
                self.body = self.text
                self.json_error = f"body is not JSON: {e}"

    def header(self, name, default=None):
        """The value of header NAME (values of repeated headers joined by ', ')."""
        values = [v for k, v in self.header_list if k.lower() == name.lower()]
        return ", ".join(values) if values else default

    def error_code(self):
        return self.body.get("error") if isinstance(self.body, dict) else None

    def describe(self):
        sent = " ".join(f"{k}: {v}" for k, v in self.req_headers.items()
                        if k.lower() != "authorization")
        if any(k.lower() == "authorization" for k in self.req_headers):
            sent += " Authorization: (given)"
        heads = "; ".join(f"{k}: {v}" for k, v in self.header_list
                          if k.lower() in ("content-type", "cache-control", "retry-after", "allow",
                                           "www-authenticate", "access-control-allow-origin",
                                           "location", "content-length"))
        return (f"request:  {self.method} {self.path}  [{sent}]  body={short(self.req_body)}\n"
                f"response: {self.status} {self.reason} ({self.elapsed * 1000:.0f} ms)  "
                f"[{heads}]  body={short(self.raw)}")

    def fail(self, what):
        raise ContractError(f"{what}\n{self.describe()}")


def response_problems(resp, route):
    """What in resp breaks the response-wide rules of API.md (a list of
    strings). route is the path below BASE, e.g. /v1/health."""
    problems = []
    ctype = resp.header("Content-Type")
    cache = resp.header("Cache-Control")
    is_metrics = route.split("?", 1)[0] == "/metrics" and resp.status == 200
    if resp.status == 204:
        if resp.raw:
            problems.append("a 204 with a body")
    elif is_metrics:
        if not ctype or not ctype.lower().startswith("text/plain"):
            problems.append(f"Content-Type of /metrics is {ctype!r}, want text/plain")
    else:
        if ctype is None or re.sub(r"\s+", "", ctype.lower()) != "application/json;charset=utf-8":
            problems.append(f"Content-Type is {ctype!r}, want {JSON_CONTENT_TYPE!r}")
    may_cache = (resp.method == "GET" and route.startswith("/v1/skus/") and resp.status == 200)
    allowed_cache = {"no-store"} | ({"max-age=1"} if may_cache else set())
    if resp.status != 204 and (cache is None or cache.strip().lower() not in allowed_cache):
        problems.append(f"Cache-Control is {cache!r}, want {' or '.join(sorted(allowed_cache))}")
    if resp.status != 204 and not is_metrics:
        if resp.json_error:
            problems.append(resp.json_error)
        elif not isinstance(resp.body, dict):
            problems.append("body is not a JSON object")
        elif resp.status >= 400:
            problems.extend(error_body_problems(resp.body))
    if resp.status == 503:
        retry = resp.header("Retry-After")
        if retry is None or not retry.strip().isdigit() or int(retry) < 1:
            problems.append(f"503 without a valid Retry-After (got {retry!r})")
    if resp.status == 401 and not resp.header("WWW-Authenticate"):
        problems.append("401 without WWW-Authenticate")
    if resp.status == 405 and not resp.header("Allow"):
        problems.append("405 without Allow")
    return problems


def error_body_problems(body):
    """What in an error body breaks {"error","message"} + documented extras."""
    problems = []
    code, message = body.get("error"), body.get("message")
    if not isinstance(code, str) or not ERROR_CODE_RE.match(code):
        problems.append(f"\"error\" is {code!r}, want a snake_case string")
    if not isinstance(message, str) or not message.strip():
        problems.append(f"\"message\" is {message!r}, want a non-empty sentence")
    extras = ERROR_EXTRAS.get(code, {})
    for key in body:
        if key not in ("error", "message") and key not in extras:
            UNDOCUMENTED_FIELDS.setdefault(code, {}).setdefault(key, body)
    for key, required in extras.items():
        if required and not is_int(body.get(key)):
            problems.append(f"{code} without an integer {key!r}")
    return problems


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class Client:
    """One keep-alive HTTP/1.1 connection to the stack."""

    RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                 http.client.BadStatusLine)

    def __init__(self, stack, timeout=15.0):
        self.stack = stack
        self.timeout = timeout
        self.conn = None
        self.used = 0           # requests sent on the current connection
        self.stale_retries = 0  # re-sends after the server closed an idle connection

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connect(self):
        self.close()
        self.conn = http.client.HTTPConnection(self.stack.host, self.stack.port,
                                               timeout=self.timeout)
        self.used = 0

    def request(self, method, route, body=None, json_body=None, headers=None,
                content_type="application/json", admin=False, check=True):
        """Sends METHOD BASE+ROUTE and returns a Response.

        body: bytes or str sent as is; json_body: an object to serialise
        instead. content_type: the Content-Type header when there is a body
        (None: no header). admin: adds the admin bearer token. check: apply
        response_problems (raises ContractError)."""
        chunked = not isinstance(body, (bytes, str, type(None)))  # an iterable of chunks
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
        elif isinstance(body, str):
            body = body.encode("utf-8")
        req_headers = {}
        if body is not None and content_type is not None:
            req_headers["Content-Type"] = content_type
        if admin:
            req_headers["Authorization"] = "Bearer " + self.stack.admin_token
        req_headers.update(headers or {})
        if chunked:
            req_headers["Transfer-Encoding"] = "chunked"
            body = [bytes(c) for c in body]  # a list can be sent again on a retry
        path = self.stack.prefix + route
        resp = self._exchange(method, path, body, req_headers, chunked)
        if check:
            problems = response_problems(resp, route)
            if problems:
                resp.fail("response breaks API.md: " + "; ".join(problems))
        return resp

    def _exchange(self, method, path, body, headers, chunked=False):
        # A keep-alive connection the server closed while idle fails on the
        # next request before anything was processed: re-send once on a new
        # connection. Never after a fresh connect, never after a timeout.
        for attempt in (0, 1):
            if self.conn is None:
                self._connect()
            reused = self.used > 0
            started = time.monotonic()
            try:
                self.conn.request(method, path, body=body, headers=headers,
                                  encode_chunked=chunked)
                self.used += 1
                r = self.conn.getresponse()
                raw = r.read()
            except self.RETRYABLE:
                self.close()
                if reused and attempt == 0:
                    self.stale_retries += 1
                    continue
                raise
            except (socket.timeout, OSError):
                self.close()
                raise
            elapsed = time.monotonic() - started
            sent = b"".join(body) if chunked else body
            resp = Response(method, path, headers, sent, r.status, r.reason, r.getheaders(),
                            raw, elapsed)
            if r.will_close:
                self.close()
            return resp
        raise AssertionError("unreachable")

    # --- Shorthands for the API -------------------------------------------------

    def get(self, route, **kw):
        return self.request("GET", route, **kw)

    def post(self, route, json_body=None, **kw):
        return self.request("POST", route, json_body=json_body, **kw)

    def put_sku(self, sku, settings, admin=True, **kw):
        return self.request("PUT", f"/v1/admin/skus/{sku}", json_body=settings, admin=admin, **kw)

    def reserve(self, sku, quantity, session, key=None, **extra):
        body = {"sku": sku, "quantity": quantity, "session": session}
        if key is not None:
            body["idempotency_key"] = key
        body.update(extra)
        return self.post("/v1/reservations", body)

    def get_reservation(self, rid, session):
        query = urllib.parse.urlencode({"session": session}) if session is not None else ""
        return self.get(f"/v1/reservations/{rid}" + (f"?{query}" if query else ""))

    def confirm(self, rid, session):
        return self.post(f"/v1/reservations/{rid}/confirm", {"session": session})

    def release(self, rid, session):
        return self.post(f"/v1/reservations/{rid}/release", {"session": session})

    def sku_counters(self, sku):
        resp = self.get(f"/v1/skus/{sku}")
        expect(resp, 200, what=f"GET /v1/skus/{sku}")
        check_counters(resp)
        return resp.body


# --- Checks ---------------------------------------------------------------------


def expect(resp, status, error=None, what="request"):
    """Fails unless resp has one of the statuses (int or tuple) and, when
    given, one of the error codes (str or tuple)."""
    statuses = status if isinstance(status, (tuple, list, set)) else (status,)
    errors = error if isinstance(error, (tuple, list, set)) or error is None else (error,)
    if resp.status not in statuses:
        resp.fail(f"{what}: want status {'/'.join(map(str, statuses))}"
                  f"{' ' + '/'.join(errors) if errors else ''}, got {resp.status}")
    if errors is not None and resp.error_code() not in errors:
        resp.fail(f"{what}: want error {'/'.join(errors)}, got {resp.error_code()!r}")
    return resp


def check(condition, what, resp=None):
    if not condition:
        if resp is not None:
            resp.fail(what)
        raise ContractError(what)


def parse_timestamp(text):
    """ISO 8601 UTC with milliseconds ("2026-12-03T12:00:00.000Z") -> epoch s."""
    import calendar
    base = time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(base) + int(text[20:23]) / 1000.0


def check_reservation(resp, sku=None, quantity=None, session=None, status=None):
    """The reservation object of API.md, field by field."""
    obj = resp.body
    check(isinstance(obj, dict), "the reservation is not a JSON object", resp)
    keys = set(obj)
    check(keys == RESERVATION_KEYS,
          f"reservation fields are {sorted(keys)}, want exactly {sorted(RESERVATION_KEYS)}", resp)
    rid = obj["reservation_id"]
    check(isinstance(rid, str) and 16 <= len(rid) <= 64 and re.match(r"^[A-Za-z0-9_-]+$", rid),
          f"reservation_id {rid!r}: want an opaque URL-safe string of 16..64 chars "
          f"(>= 64 random bits)", resp)
    want = {"sku": sku, "quantity": quantity, "session": session, "status": status}
    for key, value in want.items():
        if value is not None:
            check(obj[key] == value, f"reservation {key} is {obj[key]!r}, want {value!r}", resp)
    check(is_int(obj["quantity"]) and obj["quantity"] >= 1, "quantity is not a positive integer",
          resp)
    check(obj["status"] in RESERVATION_STATUSES, f"status {obj['status']!r} is not one of "
          f"{sorted(RESERVATION_STATUSES)}", resp)
    for key in ("created_at", "expires_at"):
        check(isinstance(obj[key], str) and TIMESTAMP_RE.match(obj[key]),
              f"{key} {obj[key]!r} is not ISO 8601 UTC with milliseconds "
              f"(YYYY-MM-DDTHH:MM:SS.mmmZ)", resp)
    check(parse_timestamp(obj["expires_at"]) > parse_timestamp(obj["created_at"]),
          "expires_at is not after created_at", resp)
    check(is_int(obj["available"]) and obj["available"] >= 0,
          f"available {obj['available']!r} is not an integer >= 0", resp)
    return obj


def check_counters(resp):
    """GET /v1/skus/{sku}: the five fields and available = stock - reserved - sold >= 0."""
    obj = resp.body
    check(isinstance(obj, dict) and set(obj) >= SKU_COUNTER_KEYS,
          f"SKU counters lack {sorted(SKU_COUNTER_KEYS - set(obj or {}))}", resp)
    for key in ("stock", "available", "reserved", "sold"):
        check(is_int(obj[key]) and obj[key] >= 0, f"{key} {obj[key]!r} is not an integer >= 0",
              resp)
    check(obj["stock"] == obj["available"] + obj["reserved"] + obj["sold"],
          "stock != available + reserved + sold", resp)
    return obj


# --- Running a file of checks ---------------------------------------------------


def run_id():
    """A short random tag that makes this run's SKU names unique."""
    return os.urandom(4).hex()


class Runner:
    """Runs named check functions, prints one line each (and the details of a
    failure), and exits non-zero if any failed."""

    def __init__(self, title):
        self.title = title
        self.failed = []
        self.passed = 0
        self.results = {}  # name -> what the check function returned
    def run(self, name, fn, *args):
        started = time.monotonic()
        try:
            self.results[name] = fn(*args)
        except (ContractError, AssertionError) as e:
            self.failed.append(name)
            print(f"FAIL {name} ({time.monotonic() - started:.2f} s)\n  "
                  + str(e).replace("\n", "\n  "), flush=True)
            return False
        except Exception as e:  # a crash of the check itself, or a transport error
            self.failed.append(name)
            print(f"FAIL {name} ({time.monotonic() - started:.2f} s): "
                  f"{type(e).__name__}: {e}", flush=True)
            return False
        self.passed += 1
        print(f"ok   {name} ({time.monotonic() - started:.2f} s)", flush=True)
        return True

    def finish(self):
        total = self.passed + len(self.failed)
        if self.failed:
            print(f"{self.title}: {len(self.failed)} of {total} FAILED: "
                  + ", ".join(self.failed), flush=True)
            return 1
        print(f"{self.title}: all {total} passed", flush=True)
        return 0
