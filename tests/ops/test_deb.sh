#!/usr/bin/env bash
# test_deb.sh BUILD_DIR — the Debian package, end to end, without touching
# this machine's own system:
#   cpack builds the .deb from the build tree; its Depends (computed by
#   dpkg-shlibdeps) are all satisfied here; it holds the files in FHS places
#   and marks the config as a conffile.
#   dpkg installs it into a throwaway root (--root, maintainer scripts run
#   chrootless with DPKG_ROOT set): postinst creates the users with
#   systemd-sysusers and the directories with systemd-tmpfiles inside that
#   root, and starts nothing (no systemd here; systemctl and friends are
#   shadowed by recorders on PATH to prove it).
#   rg-ledger from the installed files, with the installed config (paths moved
#   to a temp dir by RG_* env, as a drop-in would), passes --check-config,
#   serves durable reservations to the installed rg-bench, stops cleanly on
#   SIGTERM; rg-fcgi from the package accepts the same config.
#   dpkg --purge removes the files and the conffile.
# Environment: RG_TEST_TMP (scratch space).
set -euo pipefail
build=${1:?usage: test_deb.sh BUILD_DIR}
tmp=${RG_TEST_TMP:?}/deb.$$
ledger_pid=
cleanup() {
  [[ -n $ledger_pid ]] && kill -9 "$ledger_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# ---- build and inspect -------------------------------------------------------
cpack --config "$build/CPackConfig.cmake" -B "$tmp/pkg" >"$tmp/cpack.log" 2>&1 || { cat "$tmp/cpack.log"; exit 1; }
deb=$(ls "$tmp"/pkg/revenue-guard_*.deb)
echo "built $(basename "$deb") ($(stat -c %s "$deb") bytes)"
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
for lib in libpq5 libsystemd0 libfcgi0ldbl libjson-c5 adduser; do
  [[ $depends == *"$lib"* ]] || bad "Depends lacks $lib"
done
mkdir -p "$tmp/deps/debian"
printf 'Source: x\n\nPackage: x\nArchitecture: any\n' > "$tmp/deps/debian/control"
(cd "$tmp/deps" && dpkg-checkbuilddeps -d "$depends" -c "") || bad "dependencies not satisfiable here"
dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|' > "$tmp/contents"
for f in /usr/sbin/rg-ledger /usr/sbin/rg-fcgi /usr/bin/rg-bench /etc/revenue-guard/revenue-guard.conf \
         /lib/systemd/system/revenue-guard-ledger.service /lib/systemd/system/revenue-guard-fcgi.service \
         /usr/lib/sysusers.d/revenue-guard.conf /usr/lib/tmpfiles.d/revenue-guard.conf \
         /usr/share/revenue-guard/sql/001_initial.sql /usr/share/revenue-guard/scripts/migrate \
         /usr/share/revenue-guard/conf/nginx/nginx.conf /usr/share/revenue-guard/conf/apache/apache2.conf \
         /usr/share/revenue-guard/conf/lighttpd/lighttpd.conf; do
  grep -qx "$f" "$tmp/contents" || bad "package lacks $f"
done
grep -q '^/usr/local' "$tmp/contents" && bad "package installs under /usr/local"
dpkg-deb -e "$deb" "$tmp/control"
grep -qx /etc/revenue-guard/revenue-guard.conf "$tmp/control/conffiles" || bad "config is not a conffile"

# ---- install into a throwaway root ----------------------------------------------
root=$tmp/root
mkdir -p "$root"/var/lib/dpkg/{info,updates,triggers} "$root/etc" "$tmp/fakebin"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
: > "$root/etc/passwd"; : > "$root/etc/group"
for t in systemctl deb-systemd-invoke deb-systemd-helper invoke-rc.d service; do
  printf '#!/bin/sh\necho "%s $*" >> "%s"\n' "$t" "$tmp/service-calls" > "$tmp/fakebin/$t"
  chmod +x "$tmp/fakebin/$t"
done
# --force-depends: the root has no libc package; the libraries come from the
# host (checked above).
if ! PATH=$tmp/fakebin:$PATH dpkg --root="$root" --force-script-chrootless --force-depends \
      --log="$tmp/dpkg.log" -i "$deb" >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log"; bad "dpkg -i failed"
fi
[[ -s $tmp/service-calls ]] && bad "postinst touched services without systemd: $(cat "$tmp/service-calls")"
status=$(dpkg --root="$root" -s revenue-guard 2>/dev/null | sed -n 's/^Status: //p')
[[ $status == "install ok installed" ]] || bad "package status '$status'"
uid=$(awk -F: '$1 == "revenue-guard" { print $3 }' "$root/etc/passwd")
gid=$(awk -F: '$1 == "revenue-guard" { print $3 }' "$root/etc/group")
[[ -n $uid && -n $gid ]] || bad "postinst did not create the revenue-guard user"
grep -q '^revenue-guard:[^:]*:[0-9]*:.*revenue-guard-fcgi' "$root/etc/group" || bad "revenue-guard-fcgi not in group revenue-guard"
[[ $(stat -c '%a %u:%g' "$root/var/lib/revenue-guard" 2>/dev/null) == "700 $uid:$gid" ]] ||
  bad "/var/lib/revenue-guard is '$(stat -c '%a %u:%g' "$root/var/lib/revenue-guard" 2>&1)'"
[[ $(stat -c '%a %u:%g' "$root/etc/revenue-guard/revenue-guard.conf") == "640 0:$gid" ]] ||
  bad "config is $(stat -c '%a %u:%g' "$root/etc/revenue-guard/revenue-guard.conf"), want 640 root:revenue-guard"
echo "installed into $root: users $(cut -d: -f1 "$root/etc/passwd" | tr '\n' ' ')"

# ---- run the installed ledger -----------------------------------------------------
conf=$root/etc/revenue-guard/revenue-guard.conf
export RG_DATA_DIR=$tmp/data RG_LEDGER_SOCKET=$tmp/ledger.sock RG_SHARDS=2
"$root/usr/sbin/rg-ledger" --config "$conf" --check-config || bad "installed config fails --check-config"
"$root/usr/sbin/rg-fcgi" --config "$conf" --listen "unix:$tmp/fcgi.sock" --check-config || bad "rg-fcgi refuses the installed config"
"$root/usr/sbin/rg-ledger" --config "$conf" >"$tmp/ledger.log" 2>&1 &
ledger_pid=$!
for _ in $(seq 200); do [[ -S $RG_LEDGER_SOCKET ]] && break; sleep 0.05; done
if ! out=$("$root/usr/bin/rg-bench" --socket "$RG_LEDGER_SOCKET" --connections 4 --duration 1 --skus 4 \
             --prefix debtest --count 400 2>&1); then
  printf '%s\n' "$out"; bad "rg-bench against the installed ledger failed"
else
  printf '%s\n' "$out" | head -n 3
fi
kill -TERM "$ledger_pid"
rc=0; wait "$ledger_pid" || rc=$?
ledger_pid=
((rc == 0)) || { tail -n 20 "$tmp/ledger.log"; bad "installed ledger exited $rc on SIGTERM"; }
grep -q 'stopped cleanly' "$tmp/ledger.log" || bad "no clean stop in the ledger log"
ls "$tmp/data"/shard-000/* >/dev/null 2>&1 || bad "no WAL written under $tmp/data"

# ---- purge -----------------------------------------------------------------------
PATH=$tmp/fakebin:$PATH dpkg --root="$root" --force-script-chrootless --log="$tmp/dpkg.log" \
  --purge revenue-guard >"$tmp/purge.log" 2>&1 || { cat "$tmp/purge.log"; bad "dpkg --purge failed"; }
for f in /usr/sbin/rg-ledger /etc/revenue-guard/revenue-guard.conf /lib/systemd/system/revenue-guard-ledger.service; do
  [[ -e $root$f ]] && bad "$f left after purge"
done
[[ -d $root/var/lib/revenue-guard ]] || bad "purge removed /var/lib/revenue-guard (the WAL must stay)"

((fail)) && { echo "test_deb: FAILED"; exit 1; }
echo "test_deb: all passed"
