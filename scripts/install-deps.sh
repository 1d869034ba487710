#!/usr/bin/env bash
# Installs the Debian packages that building, testing and benchmarking quilkin-c need.
# Idempotent: when every package is already installed it returns without touching apt.
#   scripts/install-deps.sh           build, unit and integration tests
#   scripts/install-deps.sh deploy    also packaging: the Debian package (debhelper), the
#                                     container image (podman; runc, since crun cannot run
#                                     on a host with hybrid cgroups), man page and seccomp
#                                     checks (groff, strace)
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libyaml-dev liburcu-dev libcmocka-dev libre2-dev libsnappy-dev
  libmicrohttpd-dev libprotobuf-c-dev protobuf-c-compiler libnghttp2-dev
  python3 python3-pytest python3-grpcio python3-protobuf protobuf-compiler
  iproute2 util-linux libssl-dev openssl python3-yaml python3-jsonschema
)
if [ "${1:-}" = "deploy" ]; then
  PKGS+=(debhelper dpkg-dev fakeroot podman runc groff-base strace)
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
