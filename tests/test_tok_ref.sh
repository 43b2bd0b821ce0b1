#!/usr/bin/env bash
# Tokenizer exactness against recorded SentencePiece / llama.cpp outputs (oracles in $MOEC_SHARED, see
# ../shared/data/README.md): llama.cpp's 46 cases with the llama-spm and phi-3 GGUF vocabularies and the vocab
# embedded in a llama model GGUF (llama-2-tiny-random), the 77
# Chinese/mixed cases with the LLaMA 2 and Yuan2-M32 .model files, the 46 cases with Yuan2-M32 and with the
# llama2.c tokenizer.bin (same vocab as LLaMA 2).
set -u
S=${MOEC_SHARED:-../shared}/data
PY=${PY:-/usr/bin/python3}
MOEC=${MOEC:-build/moec}
cd "$(dirname "$0")/.."
[ -f "$S/tokenizers/llama2-tokenizer.model" ] || { echo "no shared data at $S"; exit 77; }
V=$S/llama.cpp-vocab R=$S/tokenizer-ref T=$S/tokenizers
fail=0
run() { "$PY" tests/tok/ref_check.py "$MOEC" "$@" || fail=1; }
run "$V/ggml-vocab-llama-spm.gguf" "$V/ggml-vocab-llama-spm.gguf.inp" "$V/ggml-vocab-llama-spm.gguf.out"
run "$V/ggml-vocab-phi-3.gguf" "$V/ggml-vocab-phi-3.gguf.inp" "$V/ggml-vocab-phi-3.gguf.out"
run "$S/models/llama-2-tiny-random.gguf" "$V/ggml-vocab-llama-spm.gguf.inp" "$V/ggml-vocab-llama-spm.gguf.out"
run "$T/llama2-tokenizer.model" "$V/ggml-vocab-llama-spm.gguf.inp" "$V/ggml-vocab-llama-spm.gguf.out"
run "$T/llama2c-tokenizer.bin" "$V/ggml-vocab-llama-spm.gguf.inp" "$V/ggml-vocab-llama-spm.gguf.out"
run "$T/llama2-tokenizer.model" "$R/zh-mix.inp" "$R/zh-mix.llama2-spm097.out"
run "$T/yuan2-m32-tokenizer.model" "$R/zh-mix.inp" "$R/zh-mix.yuan2-spm097.out"
run "$T/yuan2-m32-tokenizer.model" "$V/ggml-vocab-llama-spm.gguf.inp" "$R/llamacpp-inp.yuan2-spm097.out"
exit $fail
