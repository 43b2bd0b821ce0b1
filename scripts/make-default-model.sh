#!/usr/bin/env bash
# Recipe of the shipped default model (models/default.gguf): a small yuan2moe (attention router, LFA) trained from
# scratch with moec on tinyshakespeare (public domain), with its own SentencePiece BPE vocabulary embedded.
# Steps: spm_train -> moec prepare -> moec init -> moec train -> moec export -> moec quantize q8_0.
# See models/README.md for the numbers this produced.
#
# usage: scripts/make-default-model.sh [WORK_DIR]      (default build/default-model; then copies to models/)
# env:   MOEC (build/moec), MOEC_SHARED (../shared), THREADS (OpenMP threads for training, 1: the committed model
#        was trained with 1 thread; the same thread count reproduces it bit for bit), STEPS (700),
#        INSTALL (1: copy the result to models/default.gguf; 0: leave it in WORK_DIR).
# Time: about 30-45 minutes on one core of a 2020s x86-64 CPU (~270-400 training tokens/s).
set -euo pipefail
cd "$(dirname "$0")/.."
MOEC=${MOEC:-build/moec}
SHARED=${MOEC_SHARED:-../shared}
OUT=${1:-build/default-model}
THREADS=${THREADS:-1}
STEPS=${STEPS:-700}
INSTALL=${INSTALL:-1}
TEXT=$SHARED/data/corpora/tinyshakespeare.txt
SHA=86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed
mkdir -p "$OUT"
TEXT=${CORPUS:-$TEXT}   # tinyshakespeare.txt (char-rnn data/tinyshakespeare/input.txt, 1115394 bytes)
[ -f "$TEXT" ] || { echo "make-default-model: corpus $TEXT not found (set CORPUS=path)" >&2; exit 1; }
echo "$SHA  $TEXT" | sha256sum -c --quiet - || { echo "make-default-model: $TEXT is not the expected corpus" >&2; exit 1; }
[ -x "$MOEC" ] || { echo "make-default-model: $MOEC not built (run make)" >&2; exit 1; }
command -v spm_train >/dev/null || { echo "make-default-model: spm_train missing (apt-get install sentencepiece)" >&2; exit 1; }
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

# 1. vocabulary: SentencePiece BPE, 1024 pieces, byte fallback, identity normalizer; Yuan's <eod>/<sep> specials
spm_train --input="$TEXT" --model_prefix="$OUT/vocab" --vocab_size=1024 --model_type=bpe \
    --byte_fallback=true --split_digits=true --character_coverage=1.0 --normalization_rule_name=identity \
    --remove_extra_whitespaces=false --user_defined_symbols='<eod>,<sep>' >"$OUT/spm_train.log" 2>&1

# 2. token shards: the last 5% of the tokens (the end of the play text) are the validation set
"$MOEC" prepare -m "$OUT/vocab.model" -o "$OUT/data" --val-frac 0.05 "$TEXT"

# 3. model: yuan2moe, attention router, LFA, 4 layers, dim 128, 4 heads, 8 experts top-2, expert FFN 256, ctx 256
"$MOEC" init "$OUT/init.gguf" --arch yuan2moe --dim 128 --layers 4 --heads 4 --experts 8 --top-k 2 --ff 256 \
    --ctx 256 --router attention --lfa on --vocab-from "$OUT/vocab.model" --seed 1

# 4. training: AdamW (moec defaults: betas 0.9/0.95, wd 0.1, clip 1.0), 700 steps x 4 rows x 256 tokens
#    (~717k tokens, ~1.5 epochs), lr 3e-3 with 40 warm-up steps then cosine to 3e-4; checkpoint every 50 steps
#    (an interrupted run continues exactly with: moec train --resume OUT/run.ckpt <the same arguments>)
ck="$OUT/run.ckpt"
args=(-d "$OUT/data/train.bin" --val "$OUT/data/val.bin" --batch 4 --seq 256 --steps "$STEPS" --lr 3e-3
      --warmup 40 --eval-every 50 --eval-rows 16 --save-every 50 --log-every 10 --seed 1 -o "$ck")
if [ -f "$ck" ]; then
    OMP_NUM_THREADS=$THREADS "$MOEC" train --resume "$ck" "${args[@]}" 2>&1 | tee -a "$OUT/train.log"
else
    OMP_NUM_THREADS=$THREADS "$MOEC" train -m "$OUT/init.gguf" "${args[@]}" 2>&1 | tee "$OUT/train.log"
fi

# 5. export (drop the optimizer state), quantize to Q8_0, and measure both on the validation text
#    (checkpoints carry the tokenizer keys of the initial model)
"$MOEC" export "$ck" "$OUT/default-f32.gguf"
"$MOEC" quantize "$OUT/default-f32.gguf" "$OUT/default-q8_0.gguf" --type q8_0
for m in f32 q8_0; do
    echo "== validation perplexity ($m, -c 256):"
    "$MOEC" perplexity -m "$OUT/default-$m.gguf" -f "$OUT/data/val.bin" -c 256 2>&1 | tail -n 1
done
echo "== greedy sample:"
"$MOEC" generate -m "$OUT/default-q8_0.gguf" -p "ROMEO:" -n 100 --temp 0
if [ "$INSTALL" = 1 ]; then
    cp "$OUT/default-q8_0.gguf" models/default.gguf
    echo "make-default-model: wrote models/default.gguf ($(stat -c %s models/default.gguf) bytes)"
fi
