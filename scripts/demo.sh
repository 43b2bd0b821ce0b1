#!/usr/bin/env bash
# The main job: generate text with the shipped default model (models/default.gguf).
# If no default model is committed yet, make a small random one with a committed recipe so the path still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
MODEL=models/default.gguf
if [ ! -f "$MODEL" ]; then
    echo "demo: no $MODEL yet; making a small random yuan2moe model in $BUILD/demo.gguf" >&2
    MODEL=$BUILD/demo.gguf
    "$BUILD"/moec init "$MODEL" --arch yuan2moe --vocab-from ../shared/data/tokenizers/llama2-tokenizer.model --seed 1
fi
"$BUILD"/moec info "$MODEL"
"$BUILD"/moec generate -m "$MODEL" -p "${PROMPT:-ROMEO:}" -n "${N:-80}" --temp 0.8 --seed 42
