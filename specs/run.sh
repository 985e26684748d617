#!/bin/sh
# specs/run.sh — runs every busted spec on Lua 5.4 and ends with the line "N passed, N failed".
# MODAL_SANITIZE=1 preloads the ASan runtime (lua5.4 itself is not instrumented);
# MODAL_VALGRIND=1 runs the suite under valgrind memcheck and fails on a leak from modal.
set -u
out=$(mktemp); vlog=$(mktemp)
trap 'rm -f "$out" "$vlog"' EXIT
lua=lua5.4
if [ "${MODAL_SANITIZE:-}" = 1 ]; then
  LD_PRELOAD=$(gcc -print-file-name=libasan.so); export LD_PRELOAD
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1; export ASAN_OPTIONS
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1; export UBSAN_OPTIONS
fi
if [ "${MODAL_VALGRIND:-}" = 1 ]; then
  set -- valgrind --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite --log-file="$vlog" "$lua"
else
  set -- "$lua"
fi
# Run busted's own script on lua5.4 in this process (--ignore-lua: no re-exec), so the
# sanitizer preload and valgrind see the very process that loads modal.so.
"$@" /usr/bin/busted --ignore-lua --cpath="./${MODAL_BUILD:-build}/?.so" -o TAP "${SPECS:-specs}" \
  >"$out" 2>&1
rc=$?
cat "$out"
passed=$(grep -c '^ok ' "$out")
failed=$(grep -c '^not ok ' "$out")
if [ "${MODAL_VALGRIND:-}" = 1 ] && ! grep -q 'ERROR SUMMARY: 0 errors' "$vlog"; then
  cat "$vlog"; failed=$((failed + 1))
fi
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi   # a spec file that did not load
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
