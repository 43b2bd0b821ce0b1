#!/usr/bin/env bash
# Kernel benchmark: kern_matmul GFLOP/s per weight type at T = 1, 16, 512 next to OpenBLAS sgemm.
# Usage: bash bench/kern.sh [BUILD] [n_in n_out [T...]]   (needs libopenblas-dev; links it only here)
set -eu
cd "$(dirname "$0")/.."
BUILD=${1:-build}
shift || true
make -s -j2 BUILD="$BUILD" "$BUILD/libmoec.a"
CC=${CC:-gcc}
$CC -std=c11 -D_GNU_SOURCE -O2 -fopenmp -Isrc -I/usr/include/x86_64-linux-gnu/openblas-pthread \
    bench/kern_bench.c "$BUILD/libmoec.a" -lopenblas -lm -o "$BUILD/kern_bench"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}
"$BUILD/kern_bench" "$@"
if [ "${MOEC_BENCH_SCALAR:-0}" = 1 ]; then MOEC_KERN=scalar "$BUILD/kern_bench" "$@"; fi
