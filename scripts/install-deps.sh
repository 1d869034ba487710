#!/usr/bin/env bash
# Installs the Debian packages that building, testing and benchmarking quilkin-c need.
#   install-deps.sh          what `make build` and `make test` need (zsh, fish and
#                            groff-base only syntax-check the generated completions and man page)
#   install-deps.sh --bench  that, plus what `make bench` compares against and counts with:
#                            nginx (/usr/sbin/nginx) and its stream module, perf, strace
#   install-deps.sh deploy   that, plus packaging: the Debian package (debhelper), the
#                            container image (podman; runc, since crun cannot run on a host
#                            with hybrid cgroups), man page and seccomp checks (groff, strace)
# Idempotent: when every package is already installed it returns without touching apt.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libyaml-dev liburcu-dev libcmocka-dev libre2-dev libsnappy-dev
  libmicrohttpd-dev libprotobuf-c-dev protobuf-c-compiler libnghttp2-dev
  python3 python3-pytest python3-grpcio python3-protobuf protobuf-compiler
  iproute2 util-linux libssl-dev openssl
  libmaxminddb-dev libmaxmind-db-writer-perl liburing-dev python3-jsonschema python3-yaml
  zsh fish groff-base
)
# Debian 12: `nginx` ships /usr/sbin/nginx (nginx-light is a metapackage over it) and
# libnginx-mod-stream /usr/lib/nginx/modules/ngx_stream_module.so; linux-perf ships perf.
BENCH_PKGS=(nginx libnginx-mod-stream linux-perf strace)
DEPLOY_PKGS=(debhelper dpkg-dev fakeroot podman runc groff-base strace)

case "${1:-}" in
  "") ;;
  --bench) PKGS+=("${BENCH_PKGS[@]}") ;;
  deploy) PKGS+=("${DEPLOY_PKGS[@]}") ;;
  *) echo "usage: install-deps.sh [--bench|deploy]" >&2; exit 2 ;;
esac

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
