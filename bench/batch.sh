#!/usr/bin/env bash
# Batched decode: B sequences with different prompts decoded together (moec: model_forward_batch through
# `moec bench -b B`; llama.cpp: B sequences of one context in lock step, bench/llamacpp.mjs -b B, run by moec
# bench itself when the peer is installed and the model is a `llama`). Writes bench/out/batch.{jsonl,md,svg}
# (bench/batch_report.py): decode tokens/s over all sequences against B, per engine and thread count.
# env: BENCH_BATCH="1 2 4 8"  BENCH_THREADS="1 2"  BENCH_BATCH_P=128  BENCH_BATCH_N=32
#      BENCH_BATCH_MODELS="bench/out/moe-llama-q8_0.gguf bench/out/moe-yuan-q8_0.gguf"  BENCH_TIMEOUT=1800
# usage: bench/batch.sh [BUILD]   (called from bench/run.sh)
set -u
main() {  # one function: editing this file during a run cannot break the run
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MOEC=${MOEC:-$BUILD/moec}
OUT=bench/out
mkdir -p "$OUT" "$BUILD/bench"
cp "$MOEC" "$BUILD/bench/moec-batch" || { echo "batch: no moec binary at $MOEC"; exit 1; }
MOEC_ORIG=$MOEC
MOEC=$BUILD/bench/moec-batch
MOEC=$MOEC_ORIG bash bench/make-models.sh "$BUILD" >/dev/null || { echo "batch: making the models failed"; exit 1; }
MODELS=${BENCH_BATCH_MODELS:-$OUT/moe-llama-q8_0.gguf $OUT/moe-yuan-q8_0.gguf}
RES="$OUT/batch.jsonl"
: >"$RES.tmp"
printf '{"kind":"meta","date":"%s","commit":"%s","load_start":"%s","n_prompt":%s,"n_gen":%s}\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "${BENCH_BATCH_P:-128}" "${BENCH_BATCH_N:-32}" >>"$RES.tmp"
for m in $MODELS; do
    for t in ${BENCH_THREADS:-1 2}; do
        for b in ${BENCH_BATCH:-1 2 4 8}; do
            echo "batch: $m -t $t -b $b" >&2
            # the peer script is the one of this source tree (moec bench would look next to the copied binary)
            peer=(--no-peer)
            [ -f bench/node_modules/node-llama-cpp/package.json ] && command -v node >/dev/null && peer=(--peer bench/llamacpp.mjs)
            line=$(timeout "${BENCH_TIMEOUT:-1800}" "$MOEC" bench -m "$m" -t "$t" -p "${BENCH_BATCH_P:-128}" \
                -n "${BENCH_BATCH_N:-32}" -b "$b" --no-bw "${peer[@]}" --json 2>"$OUT/batch-err.txt")
            if [ -n "$line" ]; then printf '%s\n' "$line" >>"$RES.tmp"
            else echo "batch: $m -t $t -b $b failed: $(head -c 300 "$OUT/batch-err.txt")" >&2; fi
        done
    done
done
rm -f "$OUT/batch-err.txt"
mv "$RES.tmp" "$RES"
/usr/bin/python3 bench/batch_report.py "$RES" "$OUT/batch.md" "$OUT/batch.svg"
}
main "$@"
