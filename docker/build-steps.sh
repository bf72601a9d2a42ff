#!/usr/bin/env bash
# docker/build-steps.sh — every RUN step of docker/Dockerfile, as a script, so
# the steps are tested on a plain Debian 12 without a Docker engine
# (tests/ops/test_docker.sh runs them into a temp DESTDIR).
#
#   build-steps.sh build-deps             install the build packages
#   build-steps.sh build SRC BUILD        configure (Release, prefix /usr) and build
#   DESTDIR=D build-steps.sh stage BUILD  install into D, plus the container's web config
#   build-steps.sh runtime-deps           install the runtime packages (no -dev)
#   DESTDIR=D build-steps.sh setup        users (from the sysusers.d file) and
#                                         directories inside D (default /)
#   build-steps.sh runtime-packages       print the runtime package list
#
# apt steps install only what is missing, so on a machine that has it all
# they change nothing. The users come from the same sysusers.d file the
# Debian package applies, created with useradd --prefix (no systemd in the
# image): the uids match across containers of one image.
set -euo pipefail

build_packages=(build-essential cmake pkg-config libfcgi-dev libjson-c-dev libpq-dev libssl-dev
                libcurl4-openssl-dev libsystemd-dev)
# Runtime: the libraries rg-* link (dpkg-shlibdeps lists the same), psql and
# bash for scripts/migrate, lighttpd for the web container, cgi-fcgi and curl
# for the health checks.
runtime_packages=(libfcgi0ldbl libjson-c5 libpq5 libssl3 libcurl4 libsystemd0 ca-certificates
                  postgresql-client lighttpd libfcgi-bin curl bash passwd)

say() { echo "build-steps: $*" >&2; }
die() { say "$*"; exit 1; }

apt_install() { # PACKAGES...: installs the missing ones, then cleans apt's caches
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && { say "packages present: $*"; return 0; }
  (($(id -u) == 0)) || die "missing packages ${missing[*]}; run as root"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Only in an image build: keep the layer small.
  if [[ -f /.dockerenv || -n ${RG_IMAGE_BUILD:-} ]]; then rm -rf /var/lib/apt/lists/*; fi
}

step_build() { # SRC BUILD
  local src=${1:?build SRC BUILD} build=${2:?build SRC BUILD}
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DRG_WERROR=ON >/dev/null
  local targets=(rg-ledger rg-fcgi rg-bench rg-drill)
  grep -q 'add_executable(rg-ctl' "$src/CMakeLists.txt" && targets+=(rg-ctl)
  local t args=()
  for t in "${targets[@]}"; do args+=(--target "$t"); done
  cmake --build "$build" -j "$(nproc)" "${args[@]}" -- --no-print-directory >/dev/null
  say "built ${targets[*]} in $build"
}

# The lighttpd front of the web container: the shipped template with the
# container's paths, on every interface (the container's port is published;
# the template binds loopback for a host install), workers from the pool.
render_web() { # DESTDIR SHARE
  local d=$1 share=$2 web=/srv/revenue-guard-web conf=$1/etc/revenue-guard/lighttpd
  mkdir -p "$conf" "$d$web/www" "$d$web/log" "$d$web/tmp"
  sed -e "s|@STACK_DIR@|$web|g" -e 's|@PORT@|8080|g' \
      -e "s|@FASTCGI_CONF@|/etc/revenue-guard/lighttpd/fastcgi-pool.conf|g" \
      -e "s|@ERRORS_DIR@|$share/conf/lighttpd|g" \
      -e 's|^server.bind *=.*|server.bind           = "0.0.0.0"  # in a container: the published port|' \
      "$d$share/conf/lighttpd/lighttpd.conf" > "$conf/lighttpd.conf"
  sed -e 's|@FCGI_SOCKET@|/run/revenue-guard-fcgi/fcgi.sock|g' -e 's|@CONFIG@|/etc/revenue-guard/revenue-guard.conf|g' \
      "$d$share/conf/lighttpd/fastcgi-pool.conf" > "$conf/fastcgi-pool.conf"
  if [[ -d $d$share/www ]]; then cp -a "$d$share/www/." "$d$web/www/"; fi
  ! grep -q '@[A-Z_]*@' "$conf/lighttpd.conf" "$conf/fastcgi-pool.conf" || die "unfilled placeholder in $conf"
}

step_stage() { # BUILD
  local build=${1:?stage BUILD} d=${DESTDIR:?stage needs DESTDIR}
  DESTDIR=$d cmake --install "$build" >/dev/null
  # Debian 12 is merged-/usr: /lib is a symlink there, and COPY of a real
  # lib/ directory onto it must not happen. The units go to /usr/lib instead.
  if [[ -d $d/lib && ! -L $d/lib ]]; then
    mkdir -p "$d/usr/lib"
    cp -a "$d/lib/." "$d/usr/lib/"
    rm -rf "$d/lib"
  fi
  render_web "$d" /usr/share/revenue-guard
  say "staged into $d"
}

step_setup() {
  local d=${DESTDIR:-/} sysusers type name group gecos home
  d=${d%/}
  sysusers=$d/usr/lib/sysusers.d/revenue-guard.conf
  [[ -f $sysusers ]] || die "no $sysusers: run stage first"
  local prefix=()
  [[ -n $d ]] && prefix=(--prefix "$d")
  mkdir -p "$d/etc"
  local f
  for f in passwd group shadow gshadow; do [[ -e $d/etc/$f ]] || : > "$d/etc/$f"; done
  # u NAME - "GECOS" HOME  /  m USER GROUP (comment lines and #m are skipped)
  while read -r type name rest; do
    case $type in
    u)
      gecos=$(sed -n 's/^[^"]*"\([^"]*\)".*/\1/p' <<<"$rest")
      home=$(awk '{ print $NF }' <<<"$rest")
      getent_in "$d" group "$name" || groupadd "${prefix[@]}" --system "$name"
      getent_in "$d" passwd "$name" ||
        useradd "${prefix[@]}" --system --gid "$name" --home-dir "$home" --no-create-home \
          --shell /usr/sbin/nologin --comment "$gecos" "$name"
      ;;
    m)
      group=$(awk '{ print $1 }' <<<"$rest")
      getent_in "$d" passwd "$name" || useradd "${prefix[@]}" --system --no-create-home \
        --shell /usr/sbin/nologin "$name"
      usermod "${prefix[@]}" --append --groups "$group" "$name"
      ;;
    esac
  done < <(grep -E '^[um][[:space:]]' "$sysusers")
  # The directories of the tmpfiles.d file, owned as it says.
  local uid gid fcgi_uid fcgi_gid www_uid
  uid=$(id_in "$d" passwd revenue-guard); gid=$(id_in "$d" group revenue-guard)
  fcgi_uid=$(id_in "$d" passwd revenue-guard-fcgi); fcgi_gid=$(id_in "$d" group revenue-guard-fcgi)
  www_uid=$(id_in "$d" passwd www-data)
  install -d -m 0700 -o "$uid" -g "$gid" "$d/var/lib/revenue-guard"
  install -d -m 0750 -o "$uid" -g "$gid" "$d/run/revenue-guard"
  install -d -m 0750 -o "$fcgi_uid" -g "$fcgi_gid" "$d/run/revenue-guard-fcgi"
  install -d -m 0750 -o 0 -g "$gid" "$d/etc/revenue-guard"
  chown "0:$gid" "$d/etc/revenue-guard/revenue-guard.conf"
  chmod 0640 "$d/etc/revenue-guard/revenue-guard.conf"
  if [[ -d $d/srv/revenue-guard-web ]]; then
    chown -R "$www_uid" "$d/srv/revenue-guard-web/log" "$d/srv/revenue-guard-web/tmp"
  fi
  say "users and directories set up in ${d:-/}"
}

# getent_in ROOT DB NAME: is NAME in ROOT/etc/DB?
getent_in() { grep -q "^$3:" "$1/etc/$2"; }
# id_in ROOT DB NAME: its numeric id
id_in() { awk -F: -v n="$3" '$1 == n { print $3 }' "$1/etc/$2"; }

step=${1:-}
shift || true
case $step in
build-deps) apt_install "${build_packages[@]}" ;;
build) step_build "$@" ;;
stage) step_stage "$@" ;;
runtime-deps) apt_install "${runtime_packages[@]}" ;;
setup) step_setup ;;
runtime-packages) echo "${runtime_packages[*]}" ;;
*) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
