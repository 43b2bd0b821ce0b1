#!/usr/bin/env bash
# The committed fixtures are exactly what tests/reference/make_fixtures.py makes (weights, token ids and
# expected logits bit for bit), and the reference passes its own independent checks: torch fp32 vs fp64,
# the numpy token-by-token decoder (explicit loops, KV + LFA caches) vs the torch full pass, both RoPE
# tables vs a numpy construction, bf16 position rounding (257 -> 256), routing margins > 1e-3.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-/usr/bin/python3}
export PYTHONDONTWRITEBYTECODE=1
"$PY" -c "import torch, numpy" 2>/dev/null || { echo "FAIL: $PY cannot import torch and numpy (scripts/install-deps.sh)"; exit 1; }
exec "$PY" tests/reference/make_fixtures.py --check
