#!/usr/bin/env bash
# Finds or builds a redis-server >= 7.4 and prints its absolute path on stdout.
#
# Order: $FS_REDIS_SERVER if set; a redis-server on PATH that is new enough;
# the project's cache ($FS_REDIS_CACHE, default ~/.cache/redis-feature-store);
# otherwise build Debian trixie's redis source package into the cache. Debian
# 12 ships 7.0 (no HEXPIRE) and trixie's binary packages need a newer glibc,
# so building the source package is the one way that works on these machines.
# With --valkey it does the same for Debian sid's valkey (>= 9.0) instead and
# prints the valkey-server path.
set -euo pipefail

log() { printf 'ensure-redis: %s\n' "$*" >&2; }

cache="${FS_REDIS_CACHE:-$HOME/.cache/redis-feature-store}"
want=redis
case "${1:-}" in
  --valkey) want=valkey ;;
  "") ;;
  *) echo "usage: $0 [--valkey]" >&2; exit 2 ;;
esac

# version_ok BINARY -> succeeds when BINARY reports a version >= 7.4
version_ok() {
  local v
  v=$("$1" --version 2>/dev/null | sed -n 's/.*v=\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p') || return 1
  [ -n "$v" ] || return 1
  local major=${v%%.*} minor=${v#*.}
  [ "$major" -gt 7 ] || { [ "$major" -eq 7 ] && [ "$minor" -ge 4 ]; }
}

if [ "$want" = redis ] && [ -n "${FS_REDIS_SERVER:-}" ]; then
  version_ok "$FS_REDIS_SERVER" || { log "FS_REDIS_SERVER=$FS_REDIS_SERVER is not a redis-server >= 7.4"; exit 1; }
  echo "$FS_REDIS_SERVER"; exit 0
fi
if [ "$want" = redis ] && command -v redis-server >/dev/null 2>&1 \
   && version_ok "$(command -v redis-server)"; then
  command -v redis-server; exit 0
fi

# fetch_source SUITE PACKAGE DEST: apt-get source with a private apt config,
# so the system's sources and lists are left alone.
fetch_source() {
  local suite=$1 pkg=$2 dest=$3 apt
  apt="$dest/apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
  cat >"$apt/sources.list" <<SRC
deb-src [trusted=yes] http://deb.debian.org/debian $suite main
SRC
  local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
              -o "APT::Get::List-Cleanup=0" -o "Acquire::AllowInsecureRepositories=1")
  log "fetching $pkg source from $suite"
  apt-get "${opts[@]}" -o APT::Sandbox::User=root -qq update >&2
  # Only the upstream tarball is built; a mirror that lacks the .dsc or the
  # Debian patches (a security update whose files moved) is not a failure.
  (cd "$dest" && apt-get "${opts[@]}" -o APT::Sandbox::User=root -qq source --download-only "$pkg/$suite" >&2) \
    || log "apt-get source reported missing files; using the upstream tarball if it arrived"
  ls "$dest"/"${pkg}"_*.orig.tar.* >/dev/null 2>&1 \
    || { log "no $pkg source tarball could be fetched for $suite: check the machine's apt mirror/proxy"; exit 1; }
}

# build_from_debian SUITE PACKAGE BINARY_PREFIX -> installs into $cache/PACKAGE
build_from_debian() {
  local suite=$1 pkg=$2 prefix=$3 work
  work=$(mktemp -d)
  fetch_source "$suite" "$pkg" "$work"
  local orig
  orig=$(ls "$work"/"${pkg}"_*.orig.tar.* | head -n 1)
  mkdir -p "$work/src"
  tar -xf "$orig" -C "$work/src" --strip-components=1
  log "building $pkg (make -j$(nproc) BUILD_TLS=no); this takes a few minutes once"
  make -C "$work/src" -j"$(nproc)" BUILD_TLS=no USE_SYSTEMD=no >"$work/build.log" 2>&1 \
    || { tail -n 40 "$work/build.log" >&2; log "build of $pkg failed"; exit 1; }
  mkdir -p "$cache/$pkg.tmp/bin"
  for b in server cli benchmark; do
    cp "$work/src/src/$prefix-$b" "$cache/$pkg.tmp/bin/"
  done
  rm -rf "$cache/$pkg"
  mv "$cache/$pkg.tmp" "$cache/$pkg"
  rm -rf "$work"
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9   # two concurrent runs must not both build

if [ "$want" = valkey ]; then
  if ! { [ -x "$cache/valkey/bin/valkey-server" ] && version_ok "$cache/valkey/bin/valkey-server"; }; then
    build_from_debian sid valkey valkey
  fi
  echo "$cache/valkey/bin/valkey-server"
  exit 0
fi
if ! { [ -x "$cache/redis/bin/redis-server" ] && version_ok "$cache/redis/bin/redis-server"; }; then
  build_from_debian trixie redis redis
fi
echo "$cache/redis/bin/redis-server"
