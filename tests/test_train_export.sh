#!/usr/bin/env bash
# Training checkpoints and exports keep the tokenizer (tokenizer.ggml.*) and general.* keys of the model training
# started from, so an exported model generates from text with no other file. Oracle: Debian SentencePiece ids of
# the prompt vs `moec tokenize` with the exported GGUF; and the exported file has no train.* state left.
set -u
cd "$(dirname "$0")/.."
MOEC=${MOEC:-build/moec}
PY=${PY:-/usr/bin/python3}
S=${MOEC_SHARED:-$(cd .. && pwd)/shared}
TOKM="$S/data/tokenizers/llama2-tokenizer.model"
[ -f "$TOKM" ] || { echo "skip: $TOKM missing"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
"$MOEC" init "$tmp/init.gguf" --dim 32 --layers 1 --heads 2 --experts 4 --top-k 2 --ff 32 --ctx 64 \
    --vocab-from "$TOKM" --seed 3 >/dev/null || { echo "FAIL init"; exit 1; }
for i in 1 2 3 4; do echo "1 450 4996 338 263 1243 29889 13 450 1095"; done >"$tmp/ids.txt"
"$MOEC" train -m "$tmp/init.gguf" -d "$tmp/ids.txt" --batch 2 --seq 9 --steps 2 -o "$tmp/run.ckpt" 2>"$tmp/err" \
    || { echo "FAIL train: $(tail -1 "$tmp/err")"; exit 1; }
"$MOEC" export "$tmp/run.ckpt" "$tmp/out.gguf" || { echo "FAIL export"; exit 1; }
for f in run.ckpt out.gguf; do
    got=$("$MOEC" tokenize -m "$tmp/$f" --ids "The quick brown fox" 2>&1)
    want=$("$PY" -c "import sentencepiece as s; p=s.SentencePieceProcessor(model_file='$TOKM'); print(' '.join(map(str, p.encode('The quick brown fox'))))")
    [ "$got" = "$want" ] && echo "ok   $f carries the tokenizer" || { echo "FAIL $f tokenizer: got '$got' want '$want'"; fail=1; }
done
"$MOEC" generate -m "$tmp/out.gguf" -p "The quick" -n 4 --temp 0 >/dev/null 2>"$tmp/err" \
    && echo "ok   generate from text" || { echo "FAIL generate: $(tail -1 "$tmp/err")"; fail=1; }
"$PY" - "$tmp/out.gguf" <<'PYEOF' && echo "ok   no train.* left" || { echo "FAIL export left train state"; fail=1; }
import sys
data = open(sys.argv[1], 'rb').read()
sys.exit(1 if b'train.m1' in data or b'train.step' in data else 0)
PYEOF
exit $fail
