#!/usr/bin/env bash
# Runs every test: the C test programs (BUILD/tests/test_*) and the scripts tests/test_*.sh.
# Each program/script is one test; it prints its own failing checks. Exit status 0 = pass, 77 = skipped.
# Environment for the tests: MOEC (the binary), MOEC_BUILD, MOEC_SHARED (../shared by default), PY (/usr/bin/python3).
set -u
cd "$(dirname "$0")/.."
BUILD=${1:-build}
export MOEC_BUILD=$BUILD MOEC=$PWD/$BUILD/moec PY=/usr/bin/python3
export MOEC_SHARED=${MOEC_SHARED:-$(cd .. && pwd)/shared}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# Threads sleep instead of spinning between parallel regions: the test machine is shared (spinning OpenMP
# threads on 2 busy cores make 2-thread runs ~10x slower).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
pass=0 fail=0 skip=0 failed=()
for t in "$BUILD"/tests/test_* tests/test_*.sh; do
    [ -f "$t" ] || continue
    case "$t" in *.o|*.d) continue ;; esac
    [ -x "$t" ] || [[ "$t" == *.sh ]] || continue
    start=$(date +%s.%N)
    if [[ "$t" == *.sh ]]; then bash "$t" >"$BUILD/$(basename "$t").log" 2>&1; rc=$?
    else "$t" >"$BUILD/$(basename "$t").log" 2>&1; rc=$?; fi
    secs=$(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)")
    if [ $rc -eq 0 ]; then pass=$((pass+1)); echo "PASS $t (${secs}s)"
    elif [ $rc -eq 77 ]; then skip=$((skip+1)); echo "SKIP $t: $(tail -n 1 "$BUILD/$(basename "$t").log")"
    else fail=$((fail+1)); failed+=("$t"); echo "FAIL $t (exit $rc)"; tail -n 30 "$BUILD/$(basename "$t").log" | sed 's/^/    /'; fi
done
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
