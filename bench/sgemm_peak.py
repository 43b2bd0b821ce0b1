#!/usr/bin/python3
"""OpenBLAS sgemm GFLOP/s (for bench/train.sh): C[M, N] = A[M, K] · B[K, N], fp32 row-major, called through ctypes
from Debian's libopenblas (the library torch's libblas.so.3 resolves to), with openblas_set_num_threads(threads).
Best of ~1 s of calls per shape. Usage: sgemm_peak.py THREADS M,K,N [M,K,N ...]   prints `M,K,N GFLOPS` lines."""
import ctypes
import ctypes.util
import sys
import time

import numpy as np


def load():
    for name in ("libopenblas.so.0", ctypes.util.find_library("openblas") or "", "libblas.so.3"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.cblas_sgemm  # noqa: B018  (must exist)
            return lib, name
        except (OSError, AttributeError):
            continue
    sys.exit("sgemm_peak: no OpenBLAS library (apt-get install libopenblas0-pthread)")


def main():
    threads = int(sys.argv[1])
    lib, name = load()
    if hasattr(lib, "openblas_set_num_threads"):
        lib.openblas_set_num_threads(threads)
    P = ctypes.POINTER(ctypes.c_float)
    for spec in sys.argv[2:]:
        M, K, N = (int(x) for x in spec.split(","))
        rng = np.random.default_rng(1)
        a = rng.standard_normal((M, K), dtype=np.float32)
        b = rng.standard_normal((K, N), dtype=np.float32)
        c = np.zeros((M, N), dtype=np.float32)
        args = (101, 111, 111, M, N, K, ctypes.c_float(1.0), a.ctypes.data_as(P), K, b.ctypes.data_as(P), N,
                ctypes.c_float(0.0), c.ctypes.data_as(P), N)  # RowMajor, NoTrans, NoTrans
        lib.cblas_sgemm(*args)  # warm-up
        best, t_end = float("inf"), time.perf_counter() + 1.0
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            lib.cblas_sgemm(*args)
            best = min(best, time.perf_counter() - t0)
        print(f"{spec} {2.0 * M * K * N / best * 1e-9:.1f} {name}")


if __name__ == "__main__":
    main()
