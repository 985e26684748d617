#!/bin/sh
# specs/fuzz/run.sh — runs a fuzzer on lua5.4 under the ASan + UBSan runtime, as specs/run.sh
# runs the specs (MODAL_BUILD names the sanitized build; lua5.4 itself is not instrumented):
#   sh specs/fuzz/run.sh specs/fuzz/driver_fuzz.lua
# Exits with the fuzzer's status. A sanitizer report aborts the process (non-zero); an
# iteration that makes no progress for FUZZ_HANG seconds (default 60: a loop that never ends)
# is killed and reported. Either way the iteration is named: the fuzzer writes it to
# $MODAL_BUILD/fuzz/current_$FUZZ_SEED as it starts each one.
set -u
LD_PRELOAD=$(gcc -print-file-name=libasan.so); export LD_PRELOAD
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1; export ASAN_OPTIONS
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1; export UBSAN_OPTIONS
current="${MODAL_BUILD:-build}/fuzz/current_${FUZZ_SEED:-1}"
hang="${FUZZ_HANG:-60}"
flag=$(mktemp)
trap 'rm -f "$flag"' EXIT
rm -f "$current"
lua5.4 "$@" &
pid=$!
(
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if [ -f "$current" ] && [ $(( $(date +%s) - $(stat -c %Y "$current") )) -gt "$hang" ]; then
      echo hang > "$flag"
      kill "$pid" 2>/dev/null
      break
    fi
  done
) &
watchdog=$!
wait "$pid"
rc=$?
wait "$watchdog" 2>/dev/null
where=$(cat "$current" 2>/dev/null || echo 'an unknown iteration')
if [ -s "$flag" ]; then
  echo "fuzz: FINDING: no progress for $hang s (a loop that never ends), in $where"
  rc=1
elif [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
  echo "fuzz: the process died (status $rc): a sanitizer report or a crash, in $where"
fi
exit "$rc"
