#!/usr/bin/env bash
# The AVX-512 kernels (src/kern_avx512.c) on an emulated AVX-512 CPU: this machine has none, so the kernel tests are
# linked statically and run under Bochs (CPU model tigerlake: AVX-512 F/BW/VL/VNNI; tests/bochs/run.sh). First the
# emulator's own check (tests/bochs/selftest.c: CPUID, XCR0, a real vpdpbusd against scalar code); then each test
# must report the avx512 path and pass: test_kern (every weight type and edge shape against double-precision oracles and
# the scalar path), test_kern_multi (multi-job calls, same bits as single calls, any thread count), test_batch (whole
# yuan2moe / llama MoE forward passes, fp32 and Q8_0, batched against one sequence at a time).
# Skipped (77) when Bochs or the kernel image are missing, and in sanitizer builds (no static linking there; the
# normal pass runs it).
set -u
cd "$(dirname "$0")/.."
B=${MOEC_BUILD:-build}
case "${B}" in *asan*) echo "skip: static AVX-512 emulator run is part of the non-sanitizer pass"; exit 77 ;; esac
[ -f "$B/libmoec.a" ] || { echo "FAIL: no $B/libmoec.a (make first)"; exit 1; }
out=$B/avx512
mkdir -p "$out"
fail=0
for t in selftest test_kern test_kern_multi test_batch; do
    src=tests/$t.c; [ $t = selftest ] && src=tests/bochs/selftest.c
    if ! gcc -static -std=c11 -D_GNU_SOURCE -O2 -fopenmp -Isrc -Itests "$src" "$B/libmoec.a" -lm \
        -o "$out/$t" 2>"$out/$t.link.log"; then
        echo "FAIL: static link of $t:"; cat "$out/$t.link.log"; fail=1; continue
    fi
    log=$out/$t.log
    bash tests/bochs/run.sh --timeout 1200 "$out/$t" >"$log" 2>"$out/$t.timing"
    rc=$?
    if [ $rc -eq 77 ]; then cat "$out/$t.timing"; echo "skip: no emulator ($t)"; exit 77; fi
    sed 's/^/    /' "$log" | tail -n 5
    if [ $rc -ne 0 ]; then echo "FAIL: $t under Bochs exited $rc"; cat "$out/$t.timing"; fail=1; continue; fi
    [ $t = selftest ] || grep -q "path: avx512" "$log" || { echo "FAIL: $t did not take the avx512 path"; fail=1; }
    echo "ok: $t on the emulated AVX-512 CPU ($(tail -n 1 "$out/$t.timing"))"
done
exit $fail
