#!/usr/bin/env bash
# Training speed: `moec train` vs PyTorch 1.13 (bench/train_torch.py) on the same yuan2moe model (attention router +
# LFA; the linear router too), the same initial weights (the GGUF moec init wrote, loaded into the reference model of
# tests/reference/yuan2_ref.py), the same token lines, batch, sequence length, AdamW step (clip 1.0, constant lr)
# and thread count. Prints tokens/s of both (the fastest of the timed steps after the warm-up: the machine is
# shared, the best step is the least disturbed one), the ratio moec/PyTorch, the peak RSS of
# both, the first losses of both, and the share of the OpenBLAS sgemm peak each reaches: training FLOPs per token
# (train_flops_per_token: 6 x matmul weights met per token + causal attention, see docs/training.md) x tokens/s
# over OpenBLAS sgemm GFLOP/s measured in this run (bench/sgemm_peak.py, [B*T x H] x [H x F], same threads).
# usage: bench/train.sh [BUILD]   env: BENCH_TRAIN_THREADS ("1 2"), BENCH_TRAIN_STEPS (2 timed), BENCH_TRAIN_WARMUP (1),
#        BENCH_TRAIN_B (4), BENCH_TRAIN_T (256), BENCH_TRAIN_DIM (512), BENCH_TRAIN_FF (1024), BENCH_TRAIN_LAYERS (4),
#        BENCH_TRAIN_VOCAB (8192), BENCH_TRAIN_ROUTERS ("attention linear"; linear runs at the largest thread count),
#        BENCH_TRAIN_WAIT (OMP_WAIT_POLICY of both engines, passive)
set -eu
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MOEC=${MOEC:-$BUILD/moec}
S=${MOEC_SHARED:-$(cd .. && pwd)/shared}/data
PY=/usr/bin/python3
THREADS=${BENCH_TRAIN_THREADS:-1 2}
STEPS=${BENCH_TRAIN_STEPS:-3}
WARM=${BENCH_TRAIN_WARMUP:-1}
B=${BENCH_TRAIN_B:-4}
T=${BENCH_TRAIN_T:-256}
H=${BENCH_TRAIN_DIM:-512}
FF=${BENCH_TRAIN_FF:-1024}
L=${BENCH_TRAIN_LAYERS:-4}
V=${BENCH_TRAIN_VOCAB:-8192}
ROUTERS=${BENCH_TRAIN_ROUTERS:-attention linear}
LR=1e-3
# both engines use OpenMP (PyTorch's libgomp): the same wait policy for both; passive by default because the
# machine is shared (spinning threads on busy cores make 2-thread runs of both many times slower)
WAIT=${BENCH_TRAIN_WAIT:-passive}
[ -x "$MOEC" ] || { echo "train bench: $MOEC not built"; exit 1; }
"$PY" -c "import torch" 2>/dev/null || { echo "train bench: /usr/bin/python3 has no torch (apt-get install python3-torch)"; exit 0; }
out=bench/out/train
mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# token lines: tinyshakespeare in the default model's vocabulary (ids < 1024 <= V), rows of T+1 ids, in order
"$MOEC" tokenize -m models/default.gguf --ids -f "$S/corpora/tinyshakespeare.txt" >"$tmp/ids.txt"
"$PY" - "$tmp/ids.txt" "$out/lines.txt" $((T + 1)) $((B * (WARM + STEPS))) <<'PYEOF'
import sys
ids, n, rows = open(sys.argv[1]).read().split(), int(sys.argv[3]), int(sys.argv[4])
assert len(ids) >= n * rows, "corpus too short"
open(sys.argv[2], "w").write("".join(" ".join(ids[i * n:(i + 1) * n]) + "\n" for i in range(rows)))
PYEOF

maxthr=1
for th in $THREADS; do [ "$th" -gt "$maxthr" ] && maxthr=$th; done
# OpenBLAS sgemm peak at each thread count, on the FFN shape [B*T x H] x [H x F] and on a square 1024^3
declare -A PEAK
for th in $THREADS; do
    PEAK[$th]=$("$PY" bench/sgemm_peak.py "$th" "$((B * T)),$H,$FF" 1024,1024,1024 | awk '$2 > m {m = $2} END {print m}')
done

res="$out/results.txt"
: >"$res"
echo "train bench: yuan2moe H=$H L=$L E=8 top-2 F=$FF V=$V, batch $B x seq $T, AdamW, $WARM warm-up + $STEPS timed steps"
for router in $ROUTERS; do
    "$MOEC" init "$out/model-$router.gguf" --dim "$H" --layers "$L" --heads 8 --experts 8 --top-k 2 --ff "$FF" \
        --vocab "$V" --ctx $((T > 512 ? T : 512)) --router "$router" --lfa on --seed 1 >/dev/null
    for th in $THREADS; do
        [ "$router" = attention ] || [ "$th" = "$maxthr" ] || continue
        peak=${PEAK[$th]}
        # moec: the CSV's cumulative seconds give the time of the steps after the warm-up
        MOEC_TRAIN_PROFILE=cpu OMP_NUM_THREADS=$th OMP_WAIT_POLICY=$WAIT /usr/bin/time -f "%M" -o "$tmp/rss" "$MOEC" train \
            -m "$out/model-$router.gguf" -d "$out/lines.txt" -o "$tmp/run.ckpt" --batch "$B" --seq "$T" \
            --steps $((WARM + STEPS)) --lr $LR --lr-min $LR --no-save --peak "$peak" 2>"$tmp/moec.log" || {
            cat "$tmp/moec.log"; exit 1; }
        mtps=$(awk -F, -v w="$WARM" -v bt=$((B * T)) 'NR > 1 {s[$1] = $7; n = $1}
            END {for (i = w + 1; i <= n; i++) if (s[i] - s[i - 1] < b || !b) b = s[i] - s[i - 1]; print bt / b}' "$tmp/run.ckpt.csv")
        # tokens per CPU second: the step's phases in process CPU time (MOEC_TRAIN_PROFILE=cpu), all steps
        mcpu=$(sed -n 's/.*time per phase (s, % of \([0-9.]*\) s).*/\1/p' "$tmp/moec.log" |
            awk -v n=$(((WARM + STEPS) * B * T)) '{print n / $1}')
        mloss=$(awk -F, 'NR > 1 && NR <= 4 {printf "%s%.4f", (NR > 2 ? "," : ""), $3}' "$tmp/run.ckpt.csv")
        mrss=$(awk '{printf "%.0f", $1 / 1024}' "$tmp/rss")
        OMP_NUM_THREADS=$th OMP_WAIT_POLICY=$WAIT /usr/bin/time -f "%M" -o "$tmp/rss" "$PY" bench/train_torch.py "$out/model-$router.gguf" \
            "$out/lines.txt" --batch "$B" --seq "$T" --steps "$STEPS" --warmup "$WARM" --threads "$th" --lr $LR \
            >"$tmp/torch.out" 2>"$tmp/torch.log" || { cat "$tmp/torch.log"; exit 1; }
        ttps=$(sed -n 's/.* tok_s=\([0-9.]*\).*/\1/p' "$tmp/torch.out")
        tcpu=$(sed -n 's/.*cpu_tok_s=\([0-9.]*\).*/\1/p' "$tmp/torch.out")
        tloss=$(sed -n 's/.*losses=\([0-9.,]*\).*/\1/p' "$tmp/torch.out" | cut -d, -f1-3)
        blas=$(sed -n 's/.* blas=\([^ ]*\).*/\1/p' "$tmp/torch.out")
        trss=$(awk '{printf "%.0f", $1 / 1024}' "$tmp/rss")
        fpt=$(sed -n 's/.*: \([0-9.e+-]*\) GFLOP per token.*/\1/p' "$tmp/moec.log")
        "$PY" - "$router" "$th" "$mtps" "$ttps" "$mrss" "$trss" "$fpt" "$peak" "$mloss" "$tloss" "$mcpu" "$tcpu" <<'PYEOF' | tee -a "$res"
import sys
r, th, m, t, mr, tr, fpt, peak, ml, tl, mc, tc = sys.argv[1:]
m, t, fpt, peak, mc, tc = float(m), float(t), float(fpt), float(peak), float(mc), float(tc)
print(f"{r:9s} threads {th}: moec {m:7.1f} tok/s, PyTorch {t:7.1f} tok/s, moec/PyTorch {m / t:.2f}x "
      f"(per CPU second: {mc:.0f} vs {tc:.0f}, {mc / tc:.2f}x) | "
      f"sgemm peak {peak:.1f} GFLOP/s: moec {100 * m * fpt / peak:.0f}%, PyTorch {100 * t * fpt / peak:.0f}% | "
      f"peak RSS moec {mr} MB, PyTorch {tr} MB | first losses moec {ml} PyTorch {tl}")
PYEOF
    done
done
echo "  (GFLOP per token: $fpt, matmuls forward + backward; PyTorch BLAS: $blas)" | tee -a "$res"
