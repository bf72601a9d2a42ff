#!/usr/bin/env python3
"""stack_fixture.py — the ctest fixture around scripts/stack for the HTTP suite.

    stack_fixture.py up DIR --server S --port P    stop a leftover stack in DIR,
                                                    then scripts/stack up (on
                                                    another port if P is taken)
    stack_fixture.py down DIR                       scripts/stack down, then fail
                                                    if any log under DIR holds a
                                                    sanitizer report

The sanitizer scan reads every file under DIR/log and DIR/pg (logs only: not
PostgreSQL's data, not the web servers' access logs) for "Sanitizer"
(AddressSanitizer, ThreadSanitizer, LeakSanitizer, UndefinedBehaviorSanitizer
...) and "runtime error:" (UBSan), and prints each hit with its file, line
number and a few lines of context.
"""

import os
import socket
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PATTERNS = ("Sanitizer", "runtime error:")
LOG_DIRS = ("log", "pg")
SKIP_DIRS = {"data"}  # PostgreSQL's data directory under pg/


def stack(*args, timeout=600):
    script = os.environ.get("RG_STACK_SCRIPT", os.path.join(REPO, "scripts", "stack"))
    argv = ([script] if os.access(script, os.X_OK) else ["bash", script]) + list(args)
    print("+ " + " ".join(argv), flush=True)
    return subprocess.run(argv, timeout=timeout).returncode


def log_files(stack_dir):
    for sub in LOG_DIRS:
        for root, dirs, files in os.walk(os.path.join(stack_dir, sub)):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            for name in files:
                if "access" not in name:  # request logs: big, and only URLs
                    yield os.path.join(root, name)


def sanitizer_hits(stack_dir):
    """(path, line number, context lines) for every report line."""
    hits = []
    for path in log_files(stack_dir):
        try:
            with open(path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            continue
        for i, line in enumerate(lines):
            if any(p in line for p in PATTERNS):
                hits.append((path, i + 1, lines[max(0, i - 2):i + 8]))
    return hits


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def with_free_port(args):
    """args with --port P replaced by a free port when P is taken (the tests
    read the real one from stack.env)."""
    args = list(args)
    if "--port" in args:
        i = args.index("--port") + 1
        if not port_free(int(args[i])):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                free = s.getsockname()[1]
            print(f"stack_fixture: port {args[i]} is taken; using {free}", flush=True)
            args[i] = str(free)
    return args


def cmd_up(stack_dir, args):
    if os.path.exists(os.path.join(stack_dir, ".rg-stack")):
        stack("down", stack_dir)  # a leftover of an interrupted run
    return stack("up", stack_dir, *with_free_port(args))


def cmd_down(stack_dir):
    rc = stack("down", stack_dir)
    hits = sanitizer_hits(stack_dir)
    for path, lineno, context in hits[:20]:
        print(f"sanitizer report: {path}:{lineno}\n    " + "\n    ".join(context), flush=True)
    if hits:
        print(f"stack_fixture: {len(hits)} sanitizer report lines under {stack_dir}", flush=True)
        return 1
    if rc != 0:
        print(f"stack_fixture: scripts/stack down exited {rc}", flush=True)
    return rc


def main(argv):
    if len(argv) < 2 or argv[0] not in ("up", "down"):
        print(__doc__, file=sys.stderr)
        return 2
    stack_dir = os.path.abspath(argv[1])
    if argv[0] == "up":
        return cmd_up(stack_dir, argv[2:])
    return cmd_down(stack_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
