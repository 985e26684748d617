#!/bin/sh
# fuzz/run.sh — runs each libFuzzer harness named (definition, deferred, admin) for
# FUZZ_SECONDS (default 30) on its working corpus, build-fuzz/corpus/<harness>/, into which
# the checked-in seeds (specs/fuzz/corpus/<harness>/) are copied first; inputs found by earlier
# runs stay there until `make clean`. New crashes go to build-fuzz/crashes/. Prints, per
# harness, its executions, executions per second and corpus size; exits 1 when any harness
# found a crash (its reproducer command printed), 2 on a usage error (doc/fuzzing.md).
#
#   FUZZ_SECONDS=60 sh fuzz/run.sh definition deferred admin      (make fuzz runs this)
set -u
cd "$(dirname "$0")/.." || exit 2

seconds=${FUZZ_SECONDS:-30}
case $seconds in
  '' | *[!0-9]*) echo "fuzz/run.sh: FUZZ_SECONDS must be a whole number of seconds, got '$seconds'" >&2
                 exit 2 ;;
esac
[ $# -gt 0 ] || set -- definition deferred admin

out=build-fuzz
mkdir -p "$out/crashes" "$out/logs" || exit 2
status=0
for h in "$@"; do
  bin=$out/fuzz-$h
  if [ ! -x "$bin" ]; then
    echo "fuzz/run.sh: $bin is not built (run make fuzz-build)" >&2
    exit 2
  fi
  seeds=specs/fuzz/corpus/$h
  work=$out/corpus/$h
  mkdir -p "$work" || exit 2
  if [ -d "$seeds" ]; then cp "$seeds"/* "$work"/ 2>/dev/null; fi
  log=$out/logs/$h.log
  before=$(ls "$out/crashes" | sort)
  # -timeout: an input running 30 s is a hang, a finding like a crash; -rss_limit_mb as
  # libFuzzer's default, named so that the log shows it.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$bin" -max_total_time="$seconds" -timeout=30 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/crashes/$h-" "$work" \
    >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  corpus=$(ls "$work" | wc -l)
  printf 'fuzz %-10s %8s executions  %5s exec/s  corpus %s  (%s s, log %s)\n' "$h" \
    "${runs:-?}" "${rate:-?}" "$corpus" "$seconds" "$log"
  # The inputs this run saved: files of crashes/ not there before it.
  new=$(ls "$out/crashes" | sort | while read -r f; do
          printf '%s\n' "$before" | grep -qxF "$f" || printf '%s\n' "$f"; done)
  if [ "$rc" -ne 0 ] || [ -n "$new" ]; then
    status=1
    echo "fuzz $h: FOUND A PROBLEM (exit $rc); the end of $log:" >&2
    # A broken check: its message up to the abort; else the sanitizer's or libFuzzer's report.
    if grep -q '^==== modal fuzz' "$log"; then
      sed -n '/^==== modal fuzz/,/ERROR: libFuzzer/p' "$log" | head -60 >&2
    else
      grep -A30 'ERROR: \(AddressSanitizer\|LeakSanitizer\|libFuzzer\)\|runtime error' "$log" |
        head -40 >&2
    fi
    for f in $new; do
      echo "reproduce: make fuzz-repro HARNESS=$h INPUT=$out/crashes/$f" >&2
    done
    [ -n "$new" ] || echo "no input was saved; see $log" >&2
  fi
done
exit $status
