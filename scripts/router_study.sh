#!/usr/bin/env bash
# Router study: attention router vs linear (Mixtral-style) router vs a dense FFN of the same active size, trained
# on tinyshakespeare with moec, several seeds each. Writes OUT/results.csv (one row per run), OUT/summary.md (table)
# and OUT/val_loss.svg (validation loss curves, mean over seeds). See docs/router-study.md.
#
# usage: scripts/router_study.sh [OUT_DIR]   env: MOEC (build/moec), MOEC_SHARED (../shared), SEEDS ("1 2 3"),
#        STEPS (300), JOBS (parallel runs, 1), THREADS (OpenMP threads per run, 1), and the model/run sizes below.
set -euo pipefail
cd "$(dirname "$0")/.."
MOEC=${MOEC:-build/moec}
SHARED=${MOEC_SHARED:-../shared}
OUT=${1:-build/router-study}
SEEDS=${SEEDS:-"1 2 3"}
STEPS=${STEPS:-300}
JOBS=${JOBS:-1}
THREADS=${THREADS:-1}
DIM=${DIM:-64} LAYERS=${LAYERS:-2} HEADS=${HEADS:-4} EXPERTS=${EXPERTS:-8} TOPK=${TOPK:-2} FF=${FF:-64}
SEQ=${SEQ:-128} BATCH=${BATCH:-8} LR=${LR:-3e-3} WARMUP=${WARMUP:-30} VOCAB=${VOCAB:-512}
TEXT=$SHARED/data/corpora/tinyshakespeare.txt
[ -f "$TEXT" ] || { echo "router_study: $TEXT not found" >&2; exit 1; }
mkdir -p "$OUT"

# 1. vocabulary (Debian's spm_train, BPE with moec's supported settings) and shards (last 10% = validation)
if [ ! -f "$OUT/data/train.bin" ]; then
    spm_train --input="$TEXT" --model_prefix="$OUT/vocab" --vocab_size="$VOCAB" --model_type=bpe \
        --byte_fallback=true --split_digits=true --character_coverage=1.0 --normalization_rule_name=identity \
        --remove_extra_whitespaces=false >"$OUT/spm_train.log" 2>&1
    "$MOEC" prepare -m "$OUT/vocab.model" -o "$OUT/data" --val-frac 0.1 "$TEXT"
fi

# 2. models: equal active parameters per token (dense FFN width = top-k x expert width)
init() { # name seed extra-args...
    local name=$1 seed=$2
    shift 2
    "$MOEC" init "$OUT/$name-s$seed.init.gguf" --dim "$DIM" --layers "$LAYERS" --heads "$HEADS" --ctx "$SEQ" \
        --vocab-from "$OUT/vocab.model" --seed "$seed" "$@" >/dev/null
}
run() { # name seed (skipped when an earlier invocation finished it)
    local name=$1 seed=$2 ck="$OUT/$1-s$2.ckpt"
    [ -f "$ck" ] && [ "$(awk -F, 'END{print $1}' "$ck.csv" 2>/dev/null)" = "$STEPS" ] && return 0
    OMP_NUM_THREADS=$THREADS "$MOEC" train -m "$OUT/$name-s$seed.init.gguf" -d "$OUT/data/train.bin" \
        --val "$OUT/data/val.bin" --seq "$SEQ" --batch "$BATCH" --steps "$STEPS" --lr "$LR" --warmup "$WARMUP" \
        --eval-every $((STEPS / 10)) --eval-rows 64 --save-every 0 --log-every $((STEPS / 10)) --seed "$seed" \
        -o "$ck" 2>"$OUT/$name-s$seed.log"
}
for seed in $SEEDS; do
    [ -f "$OUT/dense-s$seed.init.gguf" ] && continue
    init attention "$seed" --experts "$EXPERTS" --top-k "$TOPK" --ff "$FF" --router attention
    init linear "$seed" --experts "$EXPERTS" --top-k "$TOPK" --ff "$FF" --router linear
    init dense "$seed" --experts 0 --ff $((TOPK * FF))
done
export OUT MOEC THREADS SEQ BATCH STEPS LR WARMUP
export -f run
for seed in $SEEDS; do for name in attention linear dense; do echo "$name $seed"; done; done |
    xargs -P "$JOBS" -n 2 bash -c 'run "$0" "$1"'

# 3. results: final validation loss (whole validation set), active parameters, time
echo "router,seed,val_loss,train_loss,active_params,total_params,seconds" >"$OUT/results.csv"
for seed in $SEEDS; do for name in attention linear dense; do
    ck="$OUT/$name-s$seed.ckpt"
    read -r val trn secs < <(awk -F, 'END{print $4, $3, $7}' "$ck.csv")
    act=$("$MOEC" info "$OUT/$name-s$seed.init.gguf" | awk '/^parameters:/{gsub(/[(),]/," "); for(i=1;i<=NF;i++) if($i=="active") {print $(i+5); exit}}')
    tot=$("$MOEC" info "$OUT/$name-s$seed.init.gguf" | awk '/^parameters:/{gsub(/[(),]/," "); print $5; exit}')
    echo "$name,$seed,$val,$trn,$act,$tot,$secs" >>"$OUT/results.csv"
done; done
/usr/bin/python3 - "$OUT" <<'EOF'
import csv, math, os, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
names = ["attention", "linear", "dense"]
lines = ["| FFN / router | active params | total params | val loss (mean ± std over seeds) | per seed | time/run (s) |",
         "|---|---|---|---|---|---|"]
for n in names:
    r = [x for x in rows if x["router"] == n]
    v = [float(x["val_loss"]) for x in r]
    m = sum(v) / len(v)
    sd = math.sqrt(sum((a - m) ** 2 for a in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    t = sum(float(x["seconds"]) for x in r) / len(r)
    lines.append(f"| {n} | {r[0]['active_params']} | {r[0]['total_params']} | {m:.4f} ± {sd:.4f} | "
                 + " ".join(f"{a:.4f}" for a in v) + f" | {t:.0f} |")
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
# validation curves, mean over seeds
curves = {}
for n in names:
    pts = {}
    for x in rows:
        if x["router"] != n:
            continue
        for r in csv.DictReader(open(os.path.join(out, f"{n}-s{x['seed']}.ckpt.csv"))):
            if r["val_loss"] not in ("nan", "-nan") and math.isfinite(float(r["val_loss"])):
                pts.setdefault(int(r["step"]), []).append(float(r["val_loss"]))
    curves[n] = sorted((s, sum(v) / len(v)) for s, v in pts.items())
allv = [v for c in curves.values() for _, v in c]
lo, hi = min(allv), max(allv)
smax = max(s for c in curves.values() for s, _ in c)
W, H, L, R, T, B = 640, 400, 60, 20, 20, 40
X = lambda s: L + s / smax * (W - L - R)  # noqa: E731
Y = lambda v: T + (hi - v) / (hi - lo) * (H - T - B)  # noqa: E731
col = {"attention": "#d62728", "linear": "#1f77b4", "dense": "#2ca02c"}
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="white"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="2" y="{T+4}">{hi:.3f}</text><text x="2" y="{H-B}">{lo:.3f}</text>',
       f'<text x="{W-110}" y="{H-10}">step {smax}</text>',
       f'<text x="{L+5}" y="{H-B+30}">validation loss, mean over seeds</text>']
for i, n in enumerate(names):
    p = " ".join(f"{X(s):.1f},{Y(v):.1f}" for s, v in curves[n])
    svg.append(f'<polyline fill="none" stroke="{col[n]}" stroke-width="2" points="{p}"/>')
    svg.append(f'<text x="{W-150}" y="{T+15+15*i}" fill="{col[n]}">{n}</text>')
svg.append("</svg>")
open(os.path.join(out, "val_loss.svg"), "w").write("\n".join(svg) + "\n")
EOF
