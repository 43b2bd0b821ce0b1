#!/usr/bin/env bash
# The AVX-512 kernels (src/kern_avx512.c) on an emulated AVX-512 CPU: this machine has none, so the kernel tests are
# linked statically and run under Bochs (3.0, CPU model sapphire_rapids: AVX-512 F/BW/VL/VNNI/BF16; tests/bochs/run.sh).
# First the emulator's own check (tests/bochs/selftest.c: CPUID, XCR0, real vpdpbusd, vcvtneps2bf16 and vdpbf16ps
# against scalar code); then each test must report the avx512bf16 path and pass: test_kern (every weight type and edge
# shape against double-precision oracles and the scalar path; BF16 weights through vdpbf16ps), test_kern_multi
# (multi-job calls, same bits as single calls, any thread count), test_batch (whole yuan2moe / llama MoE forward passes,
# fp32 and Q8_0, batched against one sequence at a time). test_kern runs a second time with MOEC_KERN=avx512, so the
# AVX-512 kernels without BF16 (CPUs before Cooper Lake / Zen 4) are tested as well.
# Skipped (77) when the emulator or the kernel image cannot be had, and in sanitizer builds (no static linking there;
# the normal pass runs it).
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
    gcc -static -std=c11 -D_GNU_SOURCE -O2 -fopenmp -Isrc -Itests "$src" "$B/libmoec.a" -lm -o "$out/$t" \
        2>"$out/$t.link.log" || { echo "FAIL: static link of $t:"; cat "$out/$t.link.log"; exit 1; }
done
# run: NAME PATH ARGS... (PATH: the kernel path the test must report, - for none)
run() {
    local name=$1 path=$2; shift 2
    local log=$out/$name.log
    bash tests/bochs/run.sh --timeout 1200 "$@" >"$log" 2>"$out/$name.timing"
    local rc=$?
    if [ $rc -eq 77 ]; then cat "$out/$name.timing"; echo "skip: no emulator ($name)"; exit 77; fi
    sed 's/^/    /' "$log" | tail -n 5
    if [ $rc -ne 0 ]; then echo "FAIL: $name under Bochs exited $rc"; cat "$out/$name.timing"; fail=1; return; fi
    if [ "$path" != - ] && ! grep -q "path: $path\b" "$log"; then
        echo "FAIL: $name did not take the $path path"; fail=1
    fi
    echo "ok: $name on the emulated AVX-512 CPU ($(tail -n 1 "$out/$name.timing"))"
}
run selftest - "$out/selftest"
run test_kern avx512bf16 "$out/test_kern"
run test_kern-avx512 avx512 "$out/test_kern" --kern avx512
run test_kern_multi avx512bf16 "$out/test_kern_multi"
run test_batch avx512bf16 "$out/test_batch"
exit $fail
