#!/bin/sh
# specs/fuzz/run.sh — runs a fuzzer on lua5.4 under the ASan + UBSan runtime, as specs/run.sh
# runs the specs (MODAL_BUILD names the sanitized build; lua5.4 itself is not instrumented):
#   sh specs/fuzz/run.sh specs/fuzz/driver_fuzz.lua
# Exits with the fuzzer's status; a sanitizer report aborts the process (non-zero) and the
# iteration it happened in is in $MODAL_BUILD/fuzz/current_$FUZZ_SEED.
set -u
LD_PRELOAD=$(gcc -print-file-name=libasan.so); export LD_PRELOAD
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1; export ASAN_OPTIONS
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1; export UBSAN_OPTIONS
lua5.4 "$@"
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
  echo "fuzz: the process died (status $rc): a sanitizer report or a crash, in" \
    "$(cat "${MODAL_BUILD:-build}/fuzz/current_${FUZZ_SEED:-1}" 2>/dev/null ||
      echo 'an unknown iteration')"
fi
exit "$rc"
