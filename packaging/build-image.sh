#!/usr/bin/env bash
# `make image`: lays out OUTDIR/rootfs (the binary, stripped; exactly the shared objects
# `ldd` lists for it, the dynamic loader included, at the paths the loader looks in; an
# /etc/passwd and /etc/group with the non-root user 65532; nsswitch.conf; the default
# configuration), then builds packaging/Containerfile on it with podman (buildah when podman
# is absent). Prints the image name.
#   packaging/build-image.sh BINARY OUTDIR [IMAGE]
set -euo pipefail
bin=${1:?usage: build-image.sh BINARY OUTDIR [IMAGE]}
out=${2:?usage: build-image.sh BINARY OUTDIR [IMAGE]}
image=${3:-localhost/quilkin-c:0.7.0}
top=$(cd "$(dirname "$0")/.." && pwd)
root="$out/rootfs"
rm -rf "$root"
mkdir -p "$root/usr/bin" "$root/etc/quilkin"

install -m 0755 "$bin" "$root/usr/bin/quilkin"
strip --strip-unneeded "$root/usr/bin/quilkin"

# `ldd` prints "name => /path (addr)" for libraries and "/path (addr)" for the loader.
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
if [ -z "$libs" ] || ldd "$bin" | grep -q 'not found'; then
  echo "build-image: ldd could not resolve every library of $bin" >&2
  exit 1
fi
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"          # the file itself, under the name the loader asks for
done

cat >"$root/etc/passwd" <<'PW'
root:x:0:0:root:/nonexistent:/sbin/nologin
quilkin:x:65532:65532:quilkin:/nonexistent:/sbin/nologin
PW
cat >"$root/etc/group" <<'GR'
root:x:0:
quilkin:x:65532:
GR
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
install -m 0644 "$top/packaging/quilkin.yaml" "$root/etc/quilkin/quilkin.yaml"

if command -v podman >/dev/null 2>&1; then
  tool=podman
  podman build --quiet --layers=false -f "$top/packaging/Containerfile" -t "$image" "$out" >/dev/null
else
  tool=buildah
  buildah bud --quiet -f "$top/packaging/Containerfile" -t "$image" "$out" >/dev/null
fi
# Earlier builds of this image, untagged by this one: only ours (by label), never others'.
"$tool" image prune -f --filter label=org.opencontainers.image.title=quilkin-c >/dev/null
echo "$image"
