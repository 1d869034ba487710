#!/usr/bin/env bash
# bench.sh BUILD_DIR: `make bench`. Runs bench_echo and the proxy on loopback, measures latency
# and throughput directly and through the proxy with bench_loadgen, and prints a table of
# direct, proxied and their ratio plus the proxy's CPU time and peak RSS. Builds nothing and
# asserts nothing: it exits non-zero only when a tool is missing or the proxy never forwards.
#
# Environment (all optional):
#   BENCH_PROXY_ARGS  extra quilkin arguments placed just before `proxy` (word-split)
#   BENCH_PROXY_SUBCMD_ARGS  extra arguments after `proxy --port P`, e.g. "--workers 1"
#   BENCH_CONFIG      run `quilkin -c FILE proxy --port P` instead of `--to`; @ECHO_PORT@ and
#                     @PROXY_PORT@ in FILE are substituted into a temporary copy
#   BENCH_DURATION    seconds per throughput run (default 3)
#   BENCH_SAMPLES     latency samples (default 20000)
#   BENCH_LAT_SPIN    1: the latency client busy-polls for replies instead of sleeping
#
# Reading the numbers: on a small VM an idle CPU takes tens of microseconds to wake, so the
# latency percentiles can be bimodal from run to run; the min row is the stable measure of
# the path's own cost. Throughput varies by +-20% between runs on 2 shared cores.

set -u -o pipefail

die() {
    echo "bench.sh: $*" >&2
    exit 1
}

[ $# -ge 1 ] || die "usage: bench.sh BUILD_DIR"
[ -d "$1" ] || die "no such build directory: $1"
BUILD_DIR=$(cd "$1" && pwd)
QUILKIN=$BUILD_DIR/quilkin
ECHO_BIN=$BUILD_DIR/bench_echo
LOADGEN=$BUILD_DIR/bench_loadgen
for t in "$QUILKIN" "$ECHO_BIN" "$LOADGEN"; do
    [ -x "$t" ] || die "missing executable $t (build first: make build)"
done
for t in awk sed timeout mktemp; do
    command -v "$t" >/dev/null || die "missing tool: $t"
done
if [ -n "${BENCH_CONFIG:-}" ] && [ ! -r "$BENCH_CONFIG" ]; then
    die "BENCH_CONFIG=$BENCH_CONFIG is not readable"
fi

DURATION=${BENCH_DURATION:-3}
SAMPLES=${BENCH_SAMPLES:-20000}
LAT_SPIN=${BENCH_LAT_SPIN:-0}
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION must be whole seconds, got $DURATION"
[[ $SAMPLES =~ ^[1-9][0-9]*$ ]] || die "BENCH_SAMPLES must be a positive integer"
[[ $LAT_SPIN =~ ^[01]$ ]] || die "BENCH_LAT_SPIN must be 0 or 1"
read -r -a EXTRA_ARGS <<<"${BENCH_PROXY_ARGS:-}"
read -r -a SUB_ARGS <<<"${BENCH_PROXY_SUBCMD_ARGS:-}"
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/quilkin-bench.XXXXXX")
ECHO_PID=""
PROXY_PID=""

# Every process we start is recorded here and ended (TERM, then KILL) on any exit.
stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    stop_pid "$PROXY_PID"
    stop_pid "$ECHO_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A UDP port below the ephemeral range (so client sockets never take it) that nothing on
# this host has bound. Racy by nature; callers retry on a failed start.
free_port() {
    local p hex
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        hex=$(printf '%04X' "$p")
        if ! awk -v h="$hex" 'FNR > 1 { split($2, a, ":"); if (a[2] == h) f = 1 }
                              END { exit !f }' /proc/net/udp /proc/net/udp6 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo 0
}

# probe PORT MS: true once a datagram sent to 127.0.0.1:PORT comes back within MS.
probe() {
    timeout -k 1 $(($2 / 1000 + 3)) "$LOADGEN" --target "127.0.0.1:$1" --mode probe \
        --timeout-ms "$2" >/dev/null 2>&1
}

# cpu_ticks PID: utime + stime of the whole process (all threads), in clock ticks; empty if
# the process is gone.
cpu_ticks() {
    local stat rest f
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    rest=${stat##*) }   # comm may hold spaces; fields after it are fixed
    read -r -a f <<<"$rest"
    echo $((f[11] + f[12]))
}

# field LINE KEY: the value of KEY=... in a RESULT line, or empty.
field() {
    awk -v k="$2" '{ for (i = 1; i <= NF; i++) { n = index($i, "=");
                      if (n && substr($i, 1, n - 1) == k) print substr($i, n + 1) } }' <<<"$1"
}

now_s() { date +%s.%N; }

# --- echo server -------------------------------------------------------------------------
EPORT=0
for attempt in 1 2 3 4 5; do
    EPORT=$(free_port)
    "$ECHO_BIN" "$EPORT" >"$TMP/echo.log" 2>&1 &
    ECHO_PID=$!
    if probe "$EPORT" 2000 && kill -0 "$ECHO_PID" 2>/dev/null; then
        break
    fi
    stop_pid "$ECHO_PID"
    ECHO_PID=""
done
[ -n "$ECHO_PID" ] || die "bench_echo did not start: $(tail -n 3 "$TMP/echo.log")"

# --- proxy -------------------------------------------------------------------------------
PPORT=0
PROXY_DESC=""
for attempt in 1 2 3; do
    PPORT=$(free_port)
    QPORT=$(free_port) # QCMP: not the default 7600, which another proxy may hold
    if [ -n "${BENCH_CONFIG:-}" ]; then
        sed -e "s/@ECHO_PORT@/$EPORT/g" -e "s/@PROXY_PORT@/$PPORT/g" "$BENCH_CONFIG" \
            >"$TMP/config.yaml"
        cmd=("$QUILKIN" --no-admin "${EXTRA_ARGS[@]}" -c "$TMP/config.yaml" proxy --port "$PPORT"
             --qcmp-port "$QPORT" "${SUB_ARGS[@]}")
        PROXY_DESC="config $BENCH_CONFIG"
    else
        cmd=("$QUILKIN" --no-admin "${EXTRA_ARGS[@]}" proxy --port "$PPORT"
             --qcmp-port "$QPORT" --to "127.0.0.1:$EPORT" "${SUB_ARGS[@]}")
        PROXY_DESC="--to 127.0.0.1:$EPORT"
    fi
    "${cmd[@]}" >"$TMP/proxy.log" 2>&1 &
    PROXY_PID=$!
    # Bounded 10 s: probe in 1 s slices so a proxy that exits is noticed at once.
    is_up=0
    for _ in $(seq 1 10); do
        kill -0 "$PROXY_PID" 2>/dev/null || break
        if probe "$PPORT" 1000; then
            is_up=1
            break
        fi
    done
    [ "$is_up" = 1 ] && break
    if kill -0 "$PROXY_PID" 2>/dev/null; then
        echo "bench.sh: proxy did not forward within 10 s: ${cmd[*]}" >&2
        tail -n 5 "$TMP/proxy.log" >&2
        stop_pid "$PROXY_PID"
        PROXY_PID=""
        break
    fi
    # Only a proxy that exited (say, its port was taken meanwhile) is worth another port.
    wait "$PROXY_PID"
    echo "bench.sh: proxy exited with status $? (attempt $attempt): ${cmd[*]}" >&2
    tail -n 5 "$TMP/proxy.log" >&2
    PROXY_PID=""
done
[ -n "$PROXY_PID" ] || die "proxy failed to start"

# --- measurements ------------------------------------------------------------------------
# name|loadgen args|RESULT key|unit label
LAT="--mode latency --size 64 --samples $SAMPLES --warmup 2000 --spin $LAT_SPIN"
MEASUREMENTS=(
    "lat64|$LAT|min_us|latency 64B min (us)"
    "lat64|$LAT|p50_us|latency 64B p50 (us)"
    "lat64|$LAT|p99_us|latency 64B p99 (us)"
    "lat64|$LAT|p999_us|latency 64B p99.9 (us)"
    "tp64x1|--mode throughput --size 64 --sessions 1 --duration $DURATION|pps|64B x1 session (pps)"
    "tp64x64|--mode throughput --size 64 --sessions 64 --duration $DURATION|pps|64B x64 sessions (pps)"
    "tp1200x1|--mode throughput --size 1200 --sessions 1 --duration $DURATION|pps|1200B x1 session (pps)"
    "tp1200x64|--mode throughput --size 1200 --sessions 64 --duration $DURATION|pps|1200B x64 sessions (pps)"
)
declare -A RESULT CPU_PCT CPU_NS_RT
# Last readings of the proxy's totals, taken after each proxied run so a proxy that dies
# later still reports what it used.
PROXY_TICKS=""
PROXY_HWM_KB=""

# sample_proxy: refreshes PROXY_TICKS and PROXY_HWM_KB while the proxy is alive.
sample_proxy() {
    local t h
    t=$(cpu_ticks "$PROXY_PID")
    h=$(awk '/^VmHWM:/ { print $2 }' "/proc/$PROXY_PID/status" 2>/dev/null)
    if [ -n "$t" ] && [ -n "$h" ]; then
        PROXY_TICKS=$t
        PROXY_HWM_KB=$h
    fi
}

# run_one WHERE NAME ARGS PORT: runs one loadgen measurement, stores its RESULT line.
run_one() {
    local where=$1 name=$2 args=$3 port=$4 line t0 t1 c0 c1 rt
    [ -n "${RESULT[$where.$name]:-}" ] && return 0
    if [ "$where" = proxied ] && ! kill -0 "$PROXY_PID" 2>/dev/null; then
        RESULT[$where.$name]="skipped: proxy exited"
        return 0
    fi
    c0=$(cpu_ticks "$PROXY_PID")
    t0=$(now_s)
    # shellcheck disable=SC2086  # args is a list of loadgen flags
    line=$(timeout -k 2 $((DURATION + 70)) "$LOADGEN" --target "127.0.0.1:$port" $args \
        2>>"$TMP/loadgen.err" | grep '^RESULT' | tail -n 1)
    t1=$(now_s)
    c1=$(cpu_ticks "$PROXY_PID")
    RESULT[$where.$name]=${line:-failed}
    if [ "$where" = proxied ] && [ -n "$c0" ] && [ -n "$c1" ]; then
        sample_proxy
        rt=$(field "$line" received)
        if [ -z "$rt" ] && [ -n "$(field "$line" samples)" ]; then
            rt=$(($(field "$line" samples) + $(field "$line" warmup)))
        fi
        CPU_PCT[$name]=$(awk -v c=$((c1 - c0)) -v hz="$HZ" -v a="$t0" -v b="$t1" \
            'BEGIN { if (b > a) printf "%.0f", 100 * c / hz / (b - a) }')
        CPU_NS_RT[$name]=$(awk -v c=$((c1 - c0)) -v hz="$HZ" -v n="${rt:-0}" \
            'BEGIN { if (n > 0) printf "%.0f", 1e9 * c / hz / n }')
    fi
}

for where in direct proxied; do
    port=$EPORT
    [ "$where" = proxied ] && port=$PPORT
    for m in "${MEASUREMENTS[@]}"; do
        IFS='|' read -r name args _ _ <<<"$m"
        run_one "$where" "$name" "$args" "$port"
    done
done

# --- report ------------------------------------------------------------------------------
PROXY_ALIVE=1
kill -0 "$PROXY_PID" 2>/dev/null || PROXY_ALIVE=0
sample_proxy

echo
echo "quilkin-c bench: $(nproc) cores, $(uname -r); echo 127.0.0.1:$EPORT, proxy" \
     "127.0.0.1:$PPORT ($PROXY_DESC${BENCH_PROXY_ARGS:+, args: $BENCH_PROXY_ARGS}$(
     )${BENCH_PROXY_SUBCMD_ARGS:+, proxy args: $BENCH_PROXY_SUBCMD_ARGS})"
echo "latency: lower is better; pps = echoed round trips/s, higher is better"
printf '%-26s %12s %12s %9s %10s %10s %10s\n' measurement direct proxied ratio \
    proxy_lost "proxy_cpu%" "cpu_ns/rt"
for m in "${MEASUREMENTS[@]}"; do
    IFS='|' read -r name _ key label <<<"$m"
    d=$(field "${RESULT[direct.$name]}" "$key")
    p=$(field "${RESULT[proxied.$name]}" "$key")
    ratio=$(awk -v d="${d:-0}" -v p="${p:-0}" 'BEGIN { if (d > 0 && p > 0) printf "%.2fx", p / d;
                                                      else print "n/a" }')
    lost=$(field "${RESULT[proxied.$name]}" lost)
    printf '%-26s %12s %12s %9s %10s %10s %10s\n' "$label" "${d:-n/a}" "${p:-n/a}" "$ratio" \
        "${lost:-n/a}" "${CPU_PCT[$name]:-n/a}" "${CPU_NS_RT[$name]:-n/a}"
done
echo
if [ -n "$PROXY_TICKS" ]; then
    awk -v t="$PROXY_TICKS" -v hz="$HZ" -v kb="$PROXY_HWM_KB" 'BEGIN {
        printf "proxy CPU: %.2f s (utime+stime, whole run)   proxy peak RSS: %.1f MiB\n",
               t / hz, kb / 1024 }'
else
    echo "proxy CPU: n/a   proxy peak RSS: n/a (the proxy exited before it could be read)"
fi
echo "(proxy_cpu% = % of one core during that run; cpu_ns/rt = proxy CPU per echoed round trip)"
if [ "$PROXY_ALIVE" = 0 ]; then
    echo "WARNING: the proxy exited during the run; last log lines:"
    tail -n 10 "$TMP/proxy.log"
fi
echo
echo "raw results:"
for where in direct proxied; do
    for m in "${MEASUREMENTS[@]}"; do
        IFS='|' read -r name _ key _ <<<"$m"
        case $key in p50_us | p99_us | p999_us) continue ;; esac
        echo "  $where ${RESULT[$where.$name]}"
    done
done
if [ -s "$TMP/loadgen.err" ]; then
    echo "loadgen stderr:"
    sort -u "$TMP/loadgen.err" | head -n 5 | sed 's/^/  /'
fi
exit 0
