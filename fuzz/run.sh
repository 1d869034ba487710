#!/usr/bin/env bash
# Runs every libFuzzer target (BUILD_DIR/fuzz_*) for a bounded time on a scratch copy of its
# seed corpus (fuzz/corpus/<name>/), sharing SECONDS evenly (at least 5 s each, 20 s for the
# filter chain).
# Usage: bash fuzz/run.sh BUILD_DIR SECONDS
# Prints one summary line per target; exits non-zero if any target crashed, leaked or timed out.
# A failing target's crash input and log are kept under the printed directory.
set -uo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build_dir=$1
total_secs=$2
here=$(cd "$(dirname "$0")" && pwd)

targets=()
for exe in "$build_dir"/fuzz_*; do
  [ -f "$exe" ] && [ -x "$exe" ] && targets+=("$exe")
done
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz_* executables in $build_dir" >&2
  exit 1
fi

per=$(( total_secs / ${#targets[@]} ))
[ "$per" -lt 5 ] && per=5
# The filter chain target covers the most code (every filter, both directions): it gets at
# least 20 s whatever the share (the filters issue asks for a 20 s run in make test).
chain_min=20

failed=0
for exe in "${targets[@]}"; do
  name=$(basename "$exe")
  name=${name#fuzz_}
  work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-$name.XXXXXX")
  mkdir -p "$work/corpus" "$work/artifacts"
  seeds=0
  if [ -d "$here/corpus/$name" ]; then
    cp -R "$here/corpus/$name/." "$work/corpus/"
    seeds=$(find "$work/corpus" -type f | wc -l)
  fi
  secs=$per
  [ "$name" = filter_chain ] && [ "$secs" -lt "$chain_min" ] && secs=$chain_min
  "$exe" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$' || true)
  after=$(find "$work/corpus" -type f | wc -l)
  if [ $rc -eq 0 ]; then
    echo "fuzz $name: ok, ${runs:-?} runs in ${secs}s, corpus $seeds -> $after"
    rm -rf "$work"
  else
    crash=$(ls "$work/artifacts" 2>/dev/null | head -1)
    reason=$(grep -m1 -E '^==[0-9]+==ERROR|^SUMMARY|deadly signal|ERROR: libFuzzer' "$work/log" \
             | head -1)
    echo "fuzz $name: FAILED (exit $rc) ${reason:-} input=$work/artifacts/${crash:-?} log=$work/log"
    failed=1
  fi
done
exit $failed
