#!/usr/bin/env bash
# bench.sh BUILD_DIR: `make bench`. Runs bench/bench.py (stdlib Python), which starts
# bench_echo, nginx's UDP stream proxy and one quilkin-c per variant on loopback and prints
# markdown tables, a row per path, of latency, saturation throughput, a paced load with each
# proxy's RTT and CPU per round trip, the ratios between the paths, and system calls and
# context switches per round trip. The environment variables it reads (BENCH_ROUNDS,
# BENCH_QUICK, BENCH_QUILKIN_VARIANTS, ...) are listed at the top of bench/bench.py. Builds
# nothing and asserts nothing.
set -u -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "${PYTHON:-/usr/bin/python3}" "$here/bench.py" "$@"
