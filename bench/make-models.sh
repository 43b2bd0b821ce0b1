#!/usr/bin/env bash
# Make the benchmark models in bench/out/ (git-ignored), only those missing:
#   moe-llama-f16.gguf    Mixtral-style `llama` MoE, ~1.3 GB at F16: dim 1024, 8 layers, 16 heads (4 KV heads),
#                         8 experts top-2, expert FFN 2816, vocab 32000 with the LLaMA 2 tokenizer embedded (so
#                         llama.cpp accepts it), untied output
#   moe-llama-q8_0.gguf, moe-llama-q4_0.gguf   the F16 model through `moec quantize IN OUT --type q8_0|q4_0`
#                         (with q4_0 it keeps token_embd/output at q8_0); if that fails, written directly by
#                         `moec init --type q8_0|q4_0` (same seed; every matrix but the router/LFA quantized)
#   moe-yuan-f16.gguf     the same sizes as `yuan2moe` (attention router, LFA, no GQA: 16 KV heads, tied embedding)
#   moe-llama16kv-f16.gguf  the fair `llama` twin of moe-yuan-f16 (issue 5): the same dim, layers, heads, 16 KV
#                         heads, experts, FFN, vocab, tied embedding, 32 rope dims and eps 1e-6; it differs from
#                         moe-yuan-f16 only by the LFA and the attention router (a linear router instead). yuan2moe
#                         needs n_kv == n_head (docs/gguf-yuan2moe.md), so the twin takes yuan's KV heads.
#                         Not in the default bench/models.sh list (BENCH_MODELS picks it)
#   moe-yuan-q8_0.gguf, moe-llama16kv-q8_0.gguf   the two twins through `moec quantize --type q8_0` (the yuan2moe
#                         target of issue 5 at Q8_0; not in the default list either)
# usage: bench/make-models.sh [BUILD]
set -eu
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MOEC=${MOEC:-$BUILD/moec}
S=${MOEC_SHARED:-$(cd .. && pwd)/shared}
TOK="$S/data/tokenizers/llama2-tokenizer.model"
OUT=bench/out
mkdir -p "$OUT"
[ -f "$TOK" ] || { echo "make-models: $TOK not found (set MOEC_SHARED)"; exit 1; }
COMMON=(--dim 1024 --layers 8 --heads 16 --experts 8 --top-k 2 --ff 2816 --ctx 4096 --type f16 --vocab-from "$TOK")

if [ ! -f "$OUT/moe-llama-f16.gguf" ]; then
    "$MOEC" init "$OUT/moe-llama-f16.gguf" --arch llama --kv-heads 4 --tied off --seed 1 "${COMMON[@]}"
fi
if [ ! -f "$OUT/moe-yuan-f16.gguf" ]; then
    "$MOEC" init "$OUT/moe-yuan-f16.gguf" --arch yuan2moe --seed 1 "${COMMON[@]}"
fi
if [ ! -f "$OUT/moe-llama16kv-f16.gguf" ]; then
    "$MOEC" init "$OUT/moe-llama16kv-f16.gguf" --arch llama --kv-heads 16 --tied on --rope-dims 32 --eps 1e-6 \
        --seed 1 "${COMMON[@]}"
fi
for q in q8_0 q4_0; do
    [ -f "$OUT/moe-llama-$q.gguf" ] && continue
    if "$MOEC" quantize --help >/dev/null 2>&1 &&
        "$MOEC" quantize "$OUT/moe-llama-f16.gguf" "$OUT/moe-llama-$q.gguf" --type "$q"; then
        :
    else
        echo "make-models: using moec init --type $q (moec quantize not available or failed)"
        "$MOEC" init "$OUT/moe-llama-$q.gguf" --arch llama --kv-heads 4 --tied off --seed 1 "${COMMON[@]}" --type "$q"
    fi
done
for m in moe-yuan moe-llama16kv; do
    [ -f "$OUT/$m-q8_0.gguf" ] || "$MOEC" quantize "$OUT/$m-f16.gguf" "$OUT/$m-q8_0.gguf" --type q8_0
done
ls -l "$OUT"/*.gguf
