#!/usr/bin/env bash
# test_systemd.sh BUILD_DIR — the units as `cmake --install` installs them:
#   systemd-analyze verify on every unit we install, against the installed
#   tree (its --root holds our binaries at the paths the units name, plus a
#   copy of this machine's own units for the targets they refer to); any
#   message at all fails (verify exits 0 on unknown keys). A deliberately
#   broken copy must be caught, so the check itself is proven to work.
#   systemd-analyze security --offline: the overall exposure of each unit is
#   printed and must be <= 2.0.
#   sysusers.d and tmpfiles.d parse (dry runs against the same root).
# Environment: RG_TEST_TMP (scratch space).
set -euo pipefail
build=${1:?usage: test_systemd.sh BUILD_DIR}
command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing (scripts/deps installs systemd)"; exit 1; }

root=${RG_TEST_TMP:?}/systemd-root.$$
trap 'rm -rf "$root"' EXIT
rm -rf "$root"
mkdir -p "$root"
DESTDIR=$root cmake --install "$build" >/dev/null

unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)
mapfile -t units < <(cd "$root$unitdir" && ls ./*.service | sed 's|^\./||')
((${#units[@]} >= 2)) || { echo "expected our units in $root$unitdir, found: ${units[*]-}"; exit 1; }
echo "units: ${units[*]}"

# The targets and units ours refer to (multi-user.target, sysinit.target ...)
# and the helpers they run (/bin/kill), from this machine, inside the root.
for u in "$unitdir"/*; do
  [[ -e $root$unitdir/$(basename "$u") ]] || cp -a "$u" "$root$unitdir/"
done
mkdir -p "$root/bin"
cp "$(type -P kill)" "$root/bin/kill"

fail=0
verify() { # UNIT_PATH (inside the root) -> prints messages, returns 1 on any
  local out rc=0
  out=$(cd "$root" && systemd-analyze verify --root="$root" "${1#/}" 2>&1) || rc=$?
  if ((rc)) || [[ -n $out ]]; then printf '%s\n' "${out:-exit status $rc}"; return 1; fi
}

for u in "${units[@]}"; do
  if verify "$unitdir/$u"; then
    echo "verify $u: clean"
  else
    echo "verify $u: FAILED"; fail=1
  fi
  # Every ExecStart*= binary of ours exists in the installed tree, executable.
  while read -r exe; do
    [[ -x $root$exe ]] || { echo "$u names $exe, not installed"; fail=1; }
  done < <(sed -n 's/^Exec[A-Za-z]*=[-@+!:]*\([^ ]*\).*/\1/p' "$root$unitdir/$u")
done

# The check must catch a typo and a missing binary.
broken=rg-broken-test.service
sed -e 's/^NoNewPrivileges=yes/NoNewPrivilege=yes/' -e 's|^ExecStart=.*|ExecStart=/usr/sbin/rg-no-such-binary|' \
  "$root$unitdir/${units[0]}" > "$root$unitdir/$broken"
if verify "$unitdir/$broken" >/dev/null; then
  echo "verify accepted a unit with a typo and a missing binary: the check is blind"; fail=1
else
  echo "verify $broken: rejected, as it must be"
fi
rm -f "$root$unitdir/$broken"

for u in "${units[@]}"; do
  out=$(cd "$root" && systemd-analyze security --offline=yes --root="$root" "${unitdir#/}/$u" 2>&1) || true
  level=$(sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p' <<<"$out")
  if [[ -z $level ]]; then
    printf '%s\n' "$out"; echo "security $u: no exposure level"; fail=1; continue
  fi
  echo "security $u: exposure $level (target <= 2.0)"
  if ! awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'; then
    grep '✗' <<<"$out" || true
    fail=1
  fi
done

# sysusers.d / tmpfiles.d: parse and apply inside the root (nothing on this host).
mkdir -p "$root/etc"
: > "$root/etc/passwd"; : > "$root/etc/group"
if ! out=$(systemd-sysusers --root="$root" revenue-guard.conf 2>&1); then
  printf '%s\n' "$out"; echo "sysusers: FAILED"; fail=1
fi
for user in revenue-guard revenue-guard-fcgi; do
  grep -q "^$user:" "$root/etc/passwd" || { echo "sysusers did not create $user"; fail=1; }
done
grep -q '^revenue-guard:.*revenue-guard-fcgi' "$root/etc/group" || { echo "revenue-guard-fcgi is not in group revenue-guard"; fail=1; }
if ! out=$(systemd-tmpfiles --root="$root" --create revenue-guard.conf 2>&1) || [[ -n $out ]]; then
  printf '%s\n' "$out"; echo "tmpfiles: FAILED"; fail=1
fi
uid=$(awk -F: '$1 == "revenue-guard" { print $3 }' "$root/etc/passwd")
[[ $(stat -c '%a %u' "$root/var/lib/revenue-guard") == "700 $uid" ]] || { echo "tmpfiles: /var/lib/revenue-guard is $(stat -c '%a %u' "$root/var/lib/revenue-guard")"; fail=1; }

((fail)) && { echo "test_systemd: FAILED"; exit 1; }
echo "test_systemd: all passed"
