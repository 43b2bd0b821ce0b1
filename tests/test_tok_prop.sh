#!/usr/bin/env bash
# Property test of the tokenizer against Debian's SentencePiece 0.1.97 (python3-sentencepiece): 3000 generated
# strings per model (random Unicode, CJK, emoji, combining marks, whitespace runs, digits, control characters,
# invalid UTF-8) must give identical ids; decode (whole and streaming) must equal sp.decode on those ids and on
# 3000 random id sequences; decode(encode(x)) == x wherever SentencePiece round-trips. Fixed seeds.
# Whole files (English, Chinese JSON, Japanese novel) encoded as one text must match too.
set -u
S=${MOEC_SHARED:-../shared}/data
PY=${PY:-/usr/bin/python3}
MOEC=${MOEC:-build/moec}
cd "$(dirname "$0")/.."
[ -f "$S/tokenizers/llama2-tokenizer.model" ] || { echo "no shared data at $S"; exit 77; }
"$PY" -c "import sentencepiece" 2>/dev/null || { echo "python3-sentencepiece not installed"; exit 77; }
fail=0
for m in llama2-tokenizer.model yuan2-m32-tokenizer.model; do
    echo "== $m"
    "$PY" tests/tok/prop.py "$MOEC" "$S/tokenizers/$m" 3000 1234 || fail=1
    "$PY" tests/tok/file_check.py "$MOEC" "$S/tokenizers/$m" "$S/corpora/botchan.txt" "$S/corpora/cp-lunyu.json" \
        "$S/corpora/wagahaiwa_nekodearu.txt" || fail=1
done
# Variants of the LLaMA 2 model (tests/tok/mkmodel.py) for paths the real models do not use: USER_DEFINED pieces,
# UNUSED pieces (resegmentation), remove_extra_whitespaces without dummy prefix, no byte fallback (<unk> runs),
# treat_whitespace_as_suffix, escape_whitespaces off, the nmt_nfkc normalizer (precompiled charsmap).
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for var in user ws nobytes suffix noescape nfkc; do
    echo "== llama2 variant: $var"
    "$PY" tests/tok/mkmodel.py "$S/tokenizers/llama2-tokenizer.model" "$tmp/$var.model" $var \
        "$S/tokenizers/spm-test_model.model" || { fail=1; continue; }
    "$PY" tests/tok/prop.py "$MOEC" "$tmp/$var.model" 1500 $((7 + ${#var})) || fail=1
    "$PY" tests/tok/file_check.py "$MOEC" "$tmp/$var.model" "$S/corpora/botchan.txt" || fail=1
done
# Unigram models (sentencepiece's own test models, nmt_nfkc normalizer), and one with user-defined/unused pieces.
for m in spm-test_model.model spm-test_ja_model.model; do
    echo "== unigram: $m"
    "$PY" tests/tok/prop.py "$MOEC" "$S/tokenizers/$m" 1500 21 || fail=1
    "$PY" tests/tok/file_check.py "$MOEC" "$S/tokenizers/$m" "$S/corpora/botchan.txt" || fail=1
done
echo "== unigram variant: user"
"$PY" tests/tok/mkmodel.py "$S/tokenizers/spm-test_model.model" "$tmp/uni-user.model" user &&
    "$PY" tests/tok/prop.py "$MOEC" "$tmp/uni-user.model" 1500 22 || fail=1
exit $fail
