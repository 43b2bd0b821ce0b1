#!/usr/bin/python3
"""compare.py EXPECTED.npy ACTUAL.npy [TOL]: exit 0 if both are [T, V] and
max over rows of (max_v |actual - expected| / max_v |expected|) <= TOL (default 1e-4); prints the metric."""
import sys

import numpy as np

exp = np.load(sys.argv[1]).astype(np.float64)
act = np.load(sys.argv[2]).astype(np.float64)
tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
if exp.shape != act.shape:
    print("shape %s, expected %s" % (act.shape, exp.shape))
    sys.exit(1)
if not np.all(np.isfinite(act)):
    print("non-finite logits")
    sys.exit(1)
err = np.abs(act - exp).max(axis=1) / np.abs(exp).max(axis=1)
worst = int(err.argmax())
print("max rel err %.3e (row %d of %d)" % (err[worst], worst, len(err)))
sys.exit(0 if err[worst] <= tol else 1)
