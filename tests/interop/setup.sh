#!/bin/sh
# Installs the test-only Node peer (bullmq + ioredis, pinned by package-lock.json next to
# this script) once per lock-file version into a cache directory outside the work tree, and
# prints that directory's node_modules path. Later runs (and fresh CI clones on the same
# machine) find the stamp and print the path without touching the network.
#   AM2Z_NODE_PEER_DIR  cache root (default: $XDG_CACHE_HOME/am2z-node-peer or ~/.cache/...)
# Exit status 2 means node or npm is missing; anything else non-zero is an install failure.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null 2>&1 || { echo "setup.sh: node not found" >&2; exit 2; }
command -v npm >/dev/null 2>&1 || { echo "setup.sh: npm not found" >&2; exit 2; }

root=${AM2Z_NODE_PEER_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/am2z-node-peer}
# The cache key is the lock file's content, so bumping a version installs a fresh copy.
key=$(cat "$here/package.json" "$here/package-lock.json" | cksum | cut -d' ' -f1)
dir="$root/$key"
if [ -f "$dir/.installed" ]; then
    echo "$dir/node_modules"
    exit 0
fi

mkdir -p "$root"
# Concurrent runs (parallel make, two CI jobs) must not interleave two npm installs.
tmp=$(mktemp -d "$root/.tmp.XXXXXX")
cp "$here/package.json" "$here/package-lock.json" "$tmp/"
# --ignore-scripts: the only install script is msgpackr-extract's optional native build,
# which BullMQ does without (msgpackr falls back to JavaScript).
if ! (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2); then
    rm -rf "$tmp"
    echo "setup.sh: npm ci failed" >&2
    exit 1
fi
touch "$tmp/.installed"
# rename is atomic; if another run won the race, keep its copy and drop ours.
if ! mv -T "$tmp" "$dir" 2>/dev/null; then
    rm -rf "$tmp"
fi
[ -f "$dir/.installed" ] || { echo "setup.sh: install did not land in $dir" >&2; exit 1; }
echo "$dir/node_modules"
