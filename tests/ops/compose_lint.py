#!/usr/bin/env python3
"""compose_lint.py COMPOSE_FILE [--root STAGED_IMAGE_ROOT] — a structural check
of docker/compose.yaml without Docker (python3 standard library only).

The file is written in the JSON subset of YAML with comments on lines of
their own, so it parses as JSON once those lines are dropped. Checked:
  - top-level keys are compose keys; every service has image or build; a
    build's context and dockerfile exist (relative to the file);
  - every service that others wait on for health has a healthcheck whose
    test is ["CMD", ...] or ["CMD-SHELL", "..."], and every long-running
    service has one; durations look like compose durations;
  - depends_on names existing services, with a valid condition, without
    cycles; service_completed_successfully points at a one-shot service;
  - volumes: named volumes are declared at the top level, bind mounts exist;
    every declared volume is used;
  - with --root (the image's files, as docker/build-steps.sh stages them):
    every absolute path a command or healthcheck names exists there, or is
    installed on this machine by one of the --packages (the image's runtime
    packages, space-separated) or by an Essential package of the base image;
    every user exists in its /etc/passwd (or is root).
Prints one line per problem; exit 1 if any.
"""
import json
import os
import re
import subprocess
import sys

TOP_KEYS = {"name", "services", "volumes", "networks", "configs", "secrets", "version"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(us|ms|s|m|h))+$")


def load(path):
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    body = "".join("\n" if l.lstrip().startswith("#") else l for l in lines)
    return json.loads(body)


def owning_package(path):
    """The Debian package that installed path on this machine, or None."""
    r = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if not line.startswith("diversion by") and line.endswith(": " + path):
            return line.split(":", 1)[0]
    return None


def essential(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Essential}", pkg], capture_output=True, text=True)
    return r.stdout.strip() == "yes"


def lint(doc, base, root, packages=()):
    """Returns the list of problems of the parsed compose document."""
    problems = []

    def bad(msg):
        problems.append(msg)

    for k in doc:
        if k not in TOP_KEYS and not k.startswith("x-"):
            bad(f"unknown top-level key '{k}'")
    services = doc.get("services") or {}
    declared = doc.get("volumes") or {}
    if not services:
        bad("no services")
    used_volumes = set()
    passwd = set()
    if root:
        with open(os.path.join(root, "etc/passwd"), encoding="utf-8") as f:
            passwd = {l.split(":", 1)[0] for l in f if ":" in l}

    def check_path_words(name, words):
        if not root:
            return
        for w in words:
            for m in re.finditer(r"(?<![\w:/])(/(?:usr|etc|bin|sbin|lib)/[\w./-]+)", w):
                p = m.group(1)
                if os.path.exists(os.path.join(root, p.lstrip("/"))):
                    continue
                pkg = owning_package(p)
                if pkg is None:
                    bad(f"{name}: {p} is neither ours nor installed by a package")
                elif pkg.split(":")[0] not in packages and not essential(pkg):
                    bad(f"{name}: {p} comes from {pkg}, which the image does not install")

    for name, svc in services.items():
        if not isinstance(svc, dict):
            bad(f"{name}: not a mapping")
            continue
        if "image" not in svc and "build" not in svc:
            bad(f"{name}: neither image nor build")
        build = svc.get("build")
        if build is not None:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            ctx_dir = os.path.normpath(os.path.join(base, ctx))
            if not os.path.isdir(ctx_dir):
                bad(f"{name}: build context {ctx} does not exist")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not os.path.isfile(os.path.join(ctx_dir, dockerfile)):
                bad(f"{name}: dockerfile {dockerfile} does not exist in {ctx}")
        one_shot = svc.get("restart") == "no"
        hc = svc.get("healthcheck")
        if hc is None:
            if not one_shot:
                bad(f"{name}: long-running service without a healthcheck")
        else:
            test = hc.get("test")
            if not (isinstance(test, list) and len(test) >= 2 and test[0] in ("CMD", "CMD-SHELL")
                    and all(isinstance(t, str) and t for t in test)):
                bad(f"{name}: healthcheck test must be [\"CMD\", ...] or [\"CMD-SHELL\", \"...\"]")
            elif test[0] == "CMD-SHELL" and len(test) != 2:
                bad(f"{name}: CMD-SHELL takes one string")
            else:
                check_path_words(f"{name} healthcheck", test[1:])
            for k in ("interval", "timeout", "start_period"):
                if k in hc and not DURATION.match(str(hc[k])):
                    bad(f"{name}: healthcheck {k} '{hc[k]}' is not a duration")
            if "retries" in hc and not (isinstance(hc["retries"], int) and hc["retries"] > 0):
                bad(f"{name}: healthcheck retries must be a positive integer")
        for k in ("stop_grace_period",):
            if k in svc and not DURATION.match(str(svc[k])):
                bad(f"{name}: {k} '{svc[k]}' is not a duration")
        cmd = svc.get("command")
        if cmd is not None:
            if not isinstance(cmd, list) or not all(isinstance(c, str) for c in cmd):
                bad(f"{name}: command must be a list of strings (exec form)")
            else:
                check_path_words(f"{name} command", cmd)
        user = svc.get("user")
        if root and user and user.split(":")[0] not in passwd | {"root"} and not user[0].isdigit():
            bad(f"{name}: user {user} does not exist in the image")
        deps = svc.get("depends_on", {})
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            if dep not in services:
                bad(f"{name}: depends_on unknown service '{dep}'")
                continue
            cond = (spec or {}).get("condition", "service_started")
            if cond not in CONDITIONS:
                bad(f"{name}: depends_on {dep} with unknown condition '{cond}'")
            if cond == "service_healthy" and "healthcheck" not in services[dep]:
                bad(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
            if cond == "service_completed_successfully" and services[dep].get("restart") != "no":
                bad(f"{name}: waits for {dep} to complete, but {dep} restarts")
        for v in svc.get("volumes", []):
            src = (v.split(":")[0] if isinstance(v, str) else v.get("source", ""))
            if not src:
                bad(f"{name}: volume '{v}' without a source")
            elif src.startswith((".", "/", "~")):
                if not os.path.exists(os.path.normpath(os.path.join(base, src))):
                    bad(f"{name}: bind mount {src} does not exist")
            else:
                used_volumes.add(src)
                if src not in declared:
                    bad(f"{name}: volume '{src}' is not declared under volumes")
        for p in svc.get("ports", []):
            if not re.match(r"^([0-9.]+:)?[0-9]+:[0-9]+(/(tcp|udp))?$", str(p)):
                bad(f"{name}: port '{p}' is malformed")

    for v in declared:
        if v not in used_volumes:
            bad(f"volume '{v}' is declared but no service uses it")

    # depends_on must be acyclic, or compose refuses to start anything.
    state = {}

    def visit(n, trail):
        if state.get(n) == 1:
            bad("depends_on cycle: " + " -> ".join(trail + [n]))
            return
        if state.get(n) == 2:
            return
        state[n] = 1
        deps = services.get(n, {}).get("depends_on", {})
        for d in deps:
            if d in services:
                visit(d, trail + [n])
        state[n] = 2

    for n in services:
        visit(n, [])

    return problems


# Each mutation of the real file must be caught: the check is not blind.
MUTATIONS = [
    ("a healthcheck removed", lambda d: d["services"]["ledger"].pop("healthcheck")),
    ("depends_on an unknown service", lambda d: d["services"]["web"]["depends_on"].update({"nosuch": {"condition": "service_started"}})),
    ("an undeclared volume", lambda d: d["volumes"].pop("wal")),
    ("a depends_on cycle", lambda d: d["services"]["postgres"].update({"depends_on": {"web": {"condition": "service_started"}}})),
    ("a bad condition", lambda d: d["services"]["fcgi"]["depends_on"]["ledger"].update({"condition": "healthy"})),
    ("neither image nor build", lambda d: [d["services"]["web"].pop(k) for k in ("image", "build")]),
    ("a missing Dockerfile", lambda d: d["services"]["migrate"]["build"].update({"dockerfile": "docker/Nope"})),
    ("a shell-form healthcheck", lambda d: d["services"]["web"]["healthcheck"].update({"test": "curl localhost"})),
]


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    path = argv[1]
    root = argv[argv.index("--root") + 1] if "--root" in argv else None
    packages = argv[argv.index("--packages") + 1].split() if "--packages" in argv else []
    base = os.path.dirname(os.path.abspath(path))
    try:
        doc = load(path)
    except (OSError, ValueError) as e:
        print(f"{path}: not JSON-subset YAML: {e}")
        return 1
    problems = lint(doc, base, root, packages)
    for p in problems:
        print(f"{path}: {p}")
    if "--self-test" in argv:
        for what, mutate in MUTATIONS:
            d = json.loads(json.dumps(doc))
            mutate(d)
            found = lint(d, base, root, packages)
            if found:
                print(f"mutation '{what}': caught ({found[0]})")
            else:
                print(f"mutation '{what}': NOT caught")
                problems.append(what)
    if not problems:
        print(f"{path}: {len(doc['services'])} services, {len(doc.get('volumes', {}))} volumes: structure OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
