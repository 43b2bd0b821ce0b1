#!/usr/bin/env bash
# moec chat: the Yuan prompt format. A tiny random yuan2moe model with the real Yuan tokenizer (moec init) answers
# two questions; each answer must equal greedy `moec generate --tokens` on the ids built independently with
# Debian SentencePiece: turn 1 = sp(q1) <sep>; turn 2 = sp(q1) <n> sp(a1) <n> sp(q2) <sep> (FastChat yuan2
# template; each text chunk encoded on its own, as HF's legacy LlamaTokenizer does). Stops at <eod>.
set -u
S=${MOEC_SHARED:-../shared}
SPM=$S/data/tokenizers/yuan2-m32-tokenizer.model
PY=${PY:-/usr/bin/python3}
[ -f "$SPM" ] || { echo "skip: no $SPM"; exit 77; }
"$PY" -c "import sentencepiece" 2>/dev/null || { echo "skip: no sentencepiece"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
M=$T/y.gguf
"$MOEC" init "$M" --arch yuan2moe --dim 32 --layers 2 --heads 2 --experts 4 --top-k 2 --ff 32 \
    --vocab-from "$SPM" --seed 3 --std 0.5 >/dev/null 2>"$T/err" || { echo "skip: moec init failed: $(cat "$T/err")"; exit 77; }
fail=0
q1="What is the capital of France?"; q2="And of Spain?"
printf '%s\n%s\n' "$q1" "$q2" | "$MOEC" chat -m "$M" -n 10 >"$T/chat" 2>"$T/err" || { echo "FAIL: chat"; cat "$T/err"; exit 1; }
[ "$(wc -l <"$T/chat")" = 2 ] || { echo "FAIL: expected 2 answer lines"; cat "$T/chat"; exit 1; }
a1=$(sed -n 1p "$T/chat"); a2=$(sed -n 2p "$T/chat")
sp() { "$PY" -c "
import sys, sentencepiece as s; p = s.SentencePieceProcessor(model_file='$SPM')
SEP, NL = 77187, 77186
parts = sys.argv[1:]
ids = []
for i, x in enumerate(parts):
    ids += p.encode(x)
    ids.append(SEP if i == len(parts) - 1 else NL)
print(' '.join(map(str, ids)))" "$@"; }
dec() { "$PY" -c "
import sys, sentencepiece as s; p = s.SentencePieceProcessor(model_file='$SPM')
print(p.decode([int(x) for x in sys.argv[1].split()]))" "$1"; }
p1=$(sp "$q1")
g1=$("$MOEC" generate -m "$M" --tokens "$p1" -n 10 --temp 0 --ids 2>/dev/null)
e1=$(dec "$g1")
if [ "$a1" = "$e1" ]; then echo "ok: turn 1 = greedy continuation of sp(q1)<sep>: '$a1'"; else
    echo "FAIL: turn 1"; echo "  chat:     '$a1'"; echo "  expected: '$e1' (ids $g1)"; fail=1; fi
p2=$(sp "$q1" "$a1" "$q2")
g2=$("$MOEC" generate -m "$M" --tokens "$p2" -n 10 --temp 0 --ids 2>/dev/null)
e2=$(dec "$g2")
if [ "$a2" = "$e2" ]; then echo "ok: turn 2 = greedy continuation of q1<n>a1<n>q2<sep>: '$a2'"; else
    echo "FAIL: turn 2"; echo "  chat:     '$a2'"; echo "  expected: '$e2' (ids $g2)"; fail=1; fi
[ "$a1" != "$a2" ] || { echo "FAIL: the two answers are identical (test cannot tell turns apart)"; fail=1; }
# a vocabulary without <sep> is a clear error
if "$MOEC" chat -m "$S/data/models/llama-2-tiny-random.gguf" </dev/null 2>"$T/err"; then echo "FAIL: llama vocab accepted"; fail=1
else grep -q "<sep>" "$T/err" || { echo "FAIL: unclear error"; cat "$T/err"; fail=1; }; fi
exit $fail
