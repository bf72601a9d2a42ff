#!/usr/bin/env bash
# tests/browser/run.sh — the demo checkout page in headless Chromium, against a
# throwaway stack of this build tree's binaries (RG_BIN_DIR).
#
#   run.sh WORKDIR [PORT]
#
# Installs playwright-core from package-lock.json into WORKDIR/npm (npm ci,
# again only when the lock file changed), starts scripts/stack in
# WORKDIR/stack through tests/integration/http/stack_fixture.py (another port
# if PORT is taken; a leftover stack there is stopped first), runs
# checkout.test.js with Debian's /usr/bin/chromium, and stops the stack on any
# way out — failing on sanitizer reports in its logs. The screenshot is
# WORKDIR/checkout.png. Exit 77 (skipped) when not root: the stack needs it.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$src/../.." && pwd)
work=${1:?usage: run.sh WORKDIR [PORT]}
port=${2:-18210}
chromium=${RG_CHROMIUM:-/usr/bin/chromium}

if (($(id -u) != 0)); then echo "browser test: skipped, scripts/stack needs root"; exit 77; fi
for c in node npm python3; do
  command -v "$c" >/dev/null || { echo "browser test: $c is missing; run scripts/deps" >&2; exit 1; }
done
[[ -x $chromium ]] || { echo "browser test: $chromium is missing; run scripts/deps" >&2; exit 1; }
mkdir -p "$work"
work=$(cd "$work" && pwd)

# playwright-core, as pinned by the lock file. The copy of the lock file in
# WORKDIR/npm says which install is there; it is written after a good install.
mods=$work/npm
if ! cmp -s "$src/package-lock.json" "$mods/installed.lock" || [[ ! -d $mods/node_modules/playwright-core ]]; then
  rm -rf "$mods"
  mkdir -p "$mods"
  cp "$src/package.json" "$src/package-lock.json" "$mods/"
  if ! (cd "$mods" && npm ci --no-audit --no-fund --loglevel=error) >"$work/npm-ci.log" 2>&1; then
    cat "$work/npm-ci.log" >&2
    echo "browser test: npm ci failed (log: $work/npm-ci.log)" >&2
    exit 1
  fi
  cp "$src/package-lock.json" "$mods/installed.lock"
fi

stack=$work/stack
fixture=$repo/tests/integration/http/stack_fixture.py
down() {
  local rc=$? down_rc=0
  trap - EXIT INT TERM
  python3 "$fixture" down "$stack" || down_rc=$?
  ((rc)) || rc=$down_rc
  exit "$rc"
}
trap down EXIT
trap 'exit 130' INT TERM
rm -f "$work/checkout.png" "$work/checkout-failure.png"
python3 "$fixture" up "$stack" --port "$port"
RG_NODE_MODULES=$mods/node_modules RG_CHROMIUM=$chromium \
  node "$src/checkout.test.js" --stack "$stack" --out "$work"
