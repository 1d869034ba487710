#!/usr/bin/env bash
# The integration suite on both I/O backends at once (`make integration`):
#   - io_uring (the default backend) with the ASan+UBSan binary, in the foreground;
#   - epoll (QUILKIN_IO_BACKEND=epoll) with the optimised binary, in the background, its
#     output printed when it ends (whole when it failed, the summary otherwise).
# Each run takes its own half of the test ports (QK_TEST_PORT_SLICE), so the two never
# share a port. Exits non-zero when either run failed.
# Usage: run-integration.sh PYTHON ASAN_BUILD_DIR PLAIN_BUILD_DIR [PYTEST ARGS...]
set -uo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 PYTHON ASAN_BUILD_DIR PLAIN_BUILD_DIR [PYTEST ARGS...]" >&2
  exit 2
fi
python=$1 asan=$(cd "$2" && pwd) plain=$(cd "$3" && pwd)
shift 3
args=(-q -p no:cacheprovider "$@")
[ $# -eq 0 ] && args+=(tests/integration)
log=$(mktemp "${TMPDIR:-/tmp}/integration-epoll.XXXXXX")
trap 'rm -f "$log"' EXIT
# both runs: the optimised binary and the counting preload for test_hot_path.py
export QUILKIN_PLAIN_BIN="$plain/quilkin" ALLOCCOUNT_LIB="$plain/liballoccount.so"
QK_TEST_PORT_SLICE=0/2 QUILKIN_IO_BACKEND=epoll QUILKIN_BIN="$plain/quilkin" \
  "$python" -m pytest "${args[@]}" >"$log" 2>&1 &
epoll_pid=$!
trap 'kill "$epoll_pid" 2>/dev/null; rm -f "$log"' INT TERM
echo "== integration: io_uring backend, ASan+UBSan binary (epoll runs alongside) =="
QK_TEST_PORT_SLICE=1/2 QUILKIN_BIN="$asan/quilkin" "$python" -m pytest "${args[@]}"
uring_rc=$?
wait "$epoll_pid"
epoll_rc=$?
echo "== integration: epoll backend, optimised binary =="
if [ "$epoll_rc" -ne 0 ]; then cat "$log"; else tail -n 3 "$log"; fi
if [ "$uring_rc" -ne 0 ] || [ "$epoll_rc" -ne 0 ]; then
  echo "integration: failed (io_uring: exit $uring_rc, epoll: exit $epoll_rc)" >&2
  exit 1
fi
