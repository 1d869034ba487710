#!/usr/bin/env bash
# Checks that #include dependencies between src/ folders point one way (STYLE.md §1):
# base <- net <- config <- filters <- proxy <- cli. Prints each violation; exits 1 if any.
set -u
cd "$(dirname "$0")/../src"
rank() {
  case "$1" in
    base) echo 0 ;; net) echo 1 ;; config|qcmp) echo 2 ;; filters) echo 3 ;;
    admin|xds) echo 3 ;; proxy) echo 4 ;; cli) echo 5 ;; *) echo 9 ;;
  esac
}
bad=0
for f in $(find . -name '*.[ch]' | sed 's|^\./||'); do
  dir=${f%%/*}
  [ "$dir" = "$f" ] && continue # main.c
  mine=$(rank "$dir")
  for inc in $(grep -oE '^#include "[a-z_]+/' "$f" | sed -E 's/.*"([a-z_]+)\//\1/'); do
    theirs=$(rank "$inc")
    [ "$theirs" -eq 9 ] && continue # not ours (e.g. generated protobuf headers)
    if [ "$theirs" -gt "$mine" ]; then
      echo "check-deps: $f includes $inc/ (a later layer)"
      bad=1
    fi
  done
done
[ $bad -eq 0 ] && echo "check-deps: ok"
exit $bad
