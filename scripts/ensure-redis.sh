#!/usr/bin/env bash
# Finds or builds a redis-server >= 7.4 and prints its absolute path on stdout.
#
# Order: $FS_REDIS_SERVER if set; a redis-server on PATH that is new enough
# and speaks TLS; the project's cache ($FS_REDIS_CACHE, default
# ~/.cache/redis-feature-store) when its build speaks TLS; otherwise build
# Debian trixie's redis source package into the cache, with TLS (libssl-dev:
# the TLS tests run the store against a redis-server with its own
# certificates, so a build without TLS is rebuilt once). Debian
# 12 ships 7.0 (no HEXPIRE) and trixie's binary packages need a newer glibc,
# so building the source package is the one way that works on these machines.
# With --valkey it does the same for Debian sid's valkey (>= 9.0) instead and
# prints the valkey-server path.
#
# The source comes from the machine's own Debian mirror: the first apt source
# (sources.list, then sources.list.d/*.list and *.sources in name order) that
# serves the Debian archive (a Debian suite such as bookworm, with `main`), or
# $FS_DEBIAN_MIRROR when set. apt's own configuration (Acquire::http::Proxy,
# auth.conf) applies as for any apt-get run. --print-mirror prints the mirror
# and exits; $FS_APT_ETC (default /etc/apt) says where apt's sources are.
set -euo pipefail

log() { printf 'ensure-redis: %s\n' "$*" >&2; }

cache="${FS_REDIS_CACHE:-$HOME/.cache/redis-feature-store}"
apt_etc="${FS_APT_ETC:-/etc/apt}"
want=redis
case "${1:-}" in
  --valkey) want=valkey ;;
  --print-mirror) want=mirror ;;
  "") ;;
  *) echo "usage: $0 [--valkey | --print-mirror]" >&2; exit 2 ;;
esac

# version_ok BINARY -> succeeds when BINARY is a redis-server >= 7.4 or a
# valkey-server >= 9.0. Valkey 8 prints v=8.x, above 7.4, yet has no
# hash-field TTLs: the product named in --version decides the minimum.
version_ok() {
  local out v
  out=$("$1" --version 2>/dev/null) || return 1
  v=$(printf '%s\n' "$out" | sed -n 's/.*v=\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
  [ -n "$v" ] || return 1
  local major=${v%%.*} minor=${v#*.} min_major=7 min_minor=4
  case "$out" in *[Vv]alkey*) min_major=9 min_minor=0 ;; esac
  [ "$major" -gt "$min_major" ] || { [ "$major" -eq "$min_major" ] && [ "$minor" -ge "$min_minor" ]; }
}

# tls_ok BINARY -> succeeds when BINARY was built with TLS. Given a TLS
# port and certificate files that do not exist, a build without TLS stops
# with "Failed finding TLS support" and one with TLS at loading the files;
# neither gets as far as listening.
tls_ok() {
  local out
  out=$("$1" --port 0 --tls-port 1 --tls-cert-file /nonexistent/cert.pem \
          --tls-key-file /nonexistent/key.pem --save '' 2>&1) && return 1
  case "$out" in *"TLS support"*|*"connection type tls"*) return 1 ;; esac
  return 0
}

# apt_sources -> "URI SUITE COMPONENTS..." for every enabled deb/deb-src
# entry, one line per URI and suite, in the order apt reads the files.
apt_sources() {
  local f files=()
  [ -f "$apt_etc/sources.list" ] && files+=("$apt_etc/sources.list")
  for f in "$apt_etc"/sources.list.d/*; do
    case "$f" in *.list|*.sources) [ -f "$f" ] && files+=("$f") ;; esac
  done
  for f in ${files[@]+"${files[@]}"}; do
    case "$f" in
      *.sources) awk '
        function flush(  i, j, n, m, U, S) {
          if (types ~ /(^|[ \t])deb(-src)?([ \t]|$)/ && tolower(enabled) !~ /^[ \t]*no/) {
            n = split(uris, U, /[ \t]+/); m = split(suites, S, /[ \t]+/)
            for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
              if (U[i] != "" && S[j] != "") print U[i], S[j], comps
          }
          types = uris = suites = comps = enabled = last = ""
        }
        /^#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ {
          if (last == "uris") uris = uris " " $0
          else if (last == "suites") suites = suites " " $0
          else if (last == "components") comps = comps " " $0
          next
        }
        {
          i = index($0, ":"); if (i == 0) next
          last = tolower(substr($0, 1, i - 1)); val = substr($0, i + 1)
          if (last == "types") types = val
          else if (last == "uris") uris = val
          else if (last == "suites") suites = val
          else if (last == "components") comps = val
          else if (last == "enabled") enabled = val
        }
        END { flush() }' "$f" ;;
      *) sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" \
           | awk '$1 == "deb" || $1 == "deb-src" { $1 = ""; print }' ;;
    esac
  done
}

# debian_mirror -> the mirror to fetch Debian sources from, or a clear
# failure saying what to configure.
debian_mirror() {
  if [ -n "${FS_DEBIAN_MIRROR:-}" ]; then echo "${FS_DEBIAN_MIRROR%/}"; return 0; fi
  local sources found
  sources=$(apt_sources)
  found=$(printf '%s\n' "$sources" | awk '
    $1 ~ /^https?:\/\// && (" " $0 " ") ~ /[ \t]main[ \t]/ &&
    $2 ~ /^(buster|bullseye|bookworm|trixie|forky|duke|sid|oldoldstable|oldstable|stable|testing|unstable)$/ {
      sub(/\/+$/, "", $1); print $1; exit
    }')
  if [ -z "$found" ]; then
    log "no Debian archive mirror in $apt_etc/sources.list or $apt_etc/sources.list.d/:"
    log "  add one to apt (e.g. 'deb http://YOUR-MIRROR/debian bookworm main'),"
    log "  or set FS_DEBIAN_MIRROR=http://YOUR-MIRROR/debian; a proxy goes in"
    log "  apt's Acquire::http::Proxy (or http_proxy), as for any apt-get"
    return 1
  fi
  echo "$found"
}

if [ "$want" = mirror ]; then
  debian_mirror || exit 1
  exit 0
fi

if [ "$want" = redis ] && [ -n "${FS_REDIS_SERVER:-}" ]; then
  version_ok "$FS_REDIS_SERVER" || { log "FS_REDIS_SERVER=$FS_REDIS_SERVER is not a redis-server >= 7.4 or valkey-server >= 9.0"; exit 1; }
  echo "$FS_REDIS_SERVER"; exit 0
fi
if [ "$want" = redis ] && command -v redis-server >/dev/null 2>&1 \
   && version_ok "$(command -v redis-server)" && tls_ok "$(command -v redis-server)"; then
  command -v redis-server; exit 0
fi

# fetch_source SUITE PACKAGE DEST: apt-get source with a private apt config,
# so the system's sources and lists are left alone.
fetch_source() {
  local suite=$1 pkg=$2 dest=$3 apt mirror
  mirror=$(debian_mirror) || exit 1
  apt="$dest/apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
  cat >"$apt/sources.list" <<SRC
deb-src [trusted=yes] $mirror $suite main
SRC
  local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
              -o "APT::Get::List-Cleanup=0" -o "Acquire::AllowInsecureRepositories=1")
  log "fetching $pkg source from $suite at $mirror"
  apt-get "${opts[@]}" -o APT::Sandbox::User=root -qq update >&2
  # Only the upstream tarball is built; a mirror that lacks the .dsc or the
  # Debian patches (a security update whose files moved) is not a failure.
  (cd "$dest" && apt-get "${opts[@]}" -o APT::Sandbox::User=root -qq source --download-only "$pkg/$suite" >&2) \
    || log "apt-get source reported missing files; using the upstream tarball if it arrived"
  ls "$dest"/"${pkg}"_*.orig.tar.* >/dev/null 2>&1 \
    || { log "no $pkg source tarball could be fetched for $suite: check the mirror $mirror and apt's proxy"; exit 1; }
}

# ensure_libssl: OpenSSL's headers for BUILD_TLS=yes, installed with apt on
# a machine that lacks them (as CI's chromium is).
ensure_libssl() {
  [ -f /usr/include/openssl/ssl.h ] && return 0
  log "installing libssl-dev (OpenSSL headers) for the TLS build"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev >&2
  else
    sudo apt-get update -qq >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev >&2
  fi || { log "libssl-dev is needed to build redis with TLS: install it and run again"; exit 1; }
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
  ensure_libssl
  log "building $pkg (make -j$(nproc) BUILD_TLS=yes); this takes a few minutes once"
  make -C "$work/src" -j"$(nproc)" BUILD_TLS=yes USE_SYSTEMD=no >"$work/build.log" 2>&1 \
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
  if ! { [ -x "$cache/valkey/bin/valkey-server" ] && version_ok "$cache/valkey/bin/valkey-server" \
         && tls_ok "$cache/valkey/bin/valkey-server"; }; then
    build_from_debian sid valkey valkey
  fi
  echo "$cache/valkey/bin/valkey-server"
  exit 0
fi
if ! { [ -x "$cache/redis/bin/redis-server" ] && version_ok "$cache/redis/bin/redis-server" \
       && tls_ok "$cache/redis/bin/redis-server"; }; then
  build_from_debian trixie redis redis
fi
echo "$cache/redis/bin/redis-server"
