#!/usr/bin/env bash
# Makes (once) the virtualenv with Feast's Python SDK and prints its path on
# stdout. The one owner of it: the Feast SDK test (tests/integration/feast.rs)
# and fs-bench's Feast rows (src/bin/fs-bench/feast.rs) both call this.
#
# Feast is pinned, so a new release cannot change what the test checks or
# what the bench measures unnoticed. The `redis` extra is for the bench: its
# baseline is `feast serve` on Feast's own Redis online store.
#
# The venv lives in the project's cache ($FS_REDIS_CACHE, default
# ~/.cache/redis-feature-store, beside the cached redis-server) as
# feast-<version>; the first run downloads from PyPI (about 40 s, 600 MB).
# A file `installed` holding the pip requirement is written last: a venv
# without it (an interrupted install) or with an older requirement is
# installed into again. A lock keeps a test and a bench started together
# from installing at once.
#
# Python: $FS_PYTHON, default python3 (3.10+). Exit status 3 when there is
# no such Python (the test skips outside CI on that), 1 on any other failure,
# with the reason on stderr.
set -euo pipefail

version=0.67.0
requirement="feast[redis]==$version"
python="${FS_PYTHON:-python3}"
cache="${FS_REDIS_CACHE:-$HOME/.cache/redis-feature-store}"
dir="$cache/feast-$version"
marker="$dir/installed"

log() { printf 'feast-venv: %s\n' "$*" >&2; }

if [[ -f $marker && $(<"$marker") == "$requirement" ]]; then
  echo "$dir"
  exit 0
fi

if ! "$python" --version >/dev/null 2>&1; then
  log "no $python (set FS_PYTHON to a Python 3.10+)"
  exit 3
fi

mkdir -p "$cache"
exec 9>"$cache/feast-$version.lock"
flock 9
# Another run may have finished it while this one waited for the lock.
if [[ -f $marker && $(<"$marker") == "$requirement" ]]; then
  echo "$dir"
  exit 0
fi

if [[ ! -x $dir/bin/python ]]; then
  rm -rf "$dir"
  log "making a virtualenv in $dir"
  if ! "$python" -m venv "$dir" >&2; then
    log "$python -m venv $dir failed"
    exit 1
  fi
fi
rm -f "$marker"
log "pip install $requirement (from PyPI, once)"
if ! "$dir/bin/pip" install -q --disable-pip-version-check "$requirement" >&2; then
  log "pip install $requirement failed"
  exit 1
fi
printf '%s' "$requirement" >"$marker"
echo "$dir"
