#!/usr/bin/env bash
# `make deb`: builds the Debian package from a copy of the tree in OUTDIR/src, so that
# dpkg-buildpackage's output (it writes to the parent directory) and debhelper's scratch
# files stay under build/ and never reach the source tree. Prints the .deb's path.
#   packaging/build-deb.sh OUTDIR [JOBS]
set -euo pipefail
out=${1:?usage: build-deb.sh OUTDIR [JOBS]}
jobs=${2:-2}
top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/src" "$out"/*.deb "$out"/*.buildinfo "$out"/*.changes
mkdir -p "$out/src"
# The tree as it is (uncommitted edits included), without build outputs or git metadata.
(cd "$top" && tar -c --exclude='./build' --exclude='./build-*' --exclude='./.git' \
   --exclude='./obj-deb' --exclude='__pycache__' .) | tar -x -C "$out/src"
cd "$out/src"
dpkg-checkbuilddeps
DEB_BUILD_OPTIONS="parallel=$jobs ${DEB_BUILD_OPTIONS:-}" \
  dpkg-buildpackage -b -us -uc --no-sign >"$out/build.log" 2>&1 || {
    tail -40 "$out/build.log" >&2
    exit 1
  }
ls "$out"/quilkin-c_*.deb
