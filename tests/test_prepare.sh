#!/usr/bin/env bash
# moec prepare: the shards hold exactly what Debian's SentencePiece encodes (+ the end-of-text id after each file),
# split into train / the last val-frac for validation; 16-bit tokens for a small vocab, 32-bit for Yuan's.
set -u
MOEC=${MOEC:-build/moec}
PY=${PY:-/usr/bin/python3}
SH=${MOEC_SHARED:-../shared}
SPM=$SH/data/tokenizers/llama2-tokenizer.model
YUAN=$SH/data/tokenizers/yuan2-m32-tokenizer.model
TXT=$SH/data/corpora/tinystories_sample.txt
TXT2=$SH/data/corpora/botchan.txt
[ -f "$SPM" ] && [ -f "$TXT" ] && [ -f "$TXT2" ] || { echo "shared data missing"; exit 77; }
$PY -c "import sentencepiece, numpy" 2>/dev/null || { echo "python3-sentencepiece missing"; exit 77; }
dir=$(mktemp -d /tmp/moec_prepare_XXXXXX)
trap 'rm -rf "$dir"' EXIT

"$MOEC" prepare -m "$SPM" -o "$dir/a" --val-frac 0.1 "$TXT" "$TXT2" 2>/dev/null || { echo "prepare failed"; exit 1; }
$PY - "$SPM" "$dir/a" "$TXT" "$TXT2" <<'EOF' || exit 1
import sys, numpy as np, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
ids = []
for f in sys.argv[3:]:
    ids += sp.encode(open(f, "rb").read().decode("utf-8")) + [sp.eos_id()]  # bytes as is (keep \r\n)
def shard(p):
    b = open(p, "rb").read()
    assert b[:8] == b"MOECTOKS", "magic"
    ver, width = np.frombuffer(b[8:16], "<u4")
    n, vocab = np.frombuffer(b[16:32], "<u8")
    assert ver == 1 and width == 2 and vocab == sp.vocab_size(), (ver, width, vocab)
    t = np.frombuffer(b[32:], "<u2")
    assert len(t) == n
    return t.tolist()
tr, va = shard(sys.argv[2] + "/train.bin"), shard(sys.argv[2] + "/val.bin")
assert tr + va == ids, "tokens differ from SentencePiece"
assert len(va) == int(len(ids) * 0.1), (len(va), len(ids))
print("prepare: %d train + %d val tokens = SentencePiece's" % (len(tr), len(va)))
EOF
# a shard feeds moec train's loader directly; 32-bit tokens for a vocabulary > 65536
if [ -f "$YUAN" ]; then
    "$MOEC" prepare -m "$YUAN" -o "$dir/y" --val-frac 0 "$TXT" 2>/dev/null || { echo "prepare yuan failed"; exit 1; }
    [ ! -e "$dir/y/val.bin" ] || { echo "val.bin written with --val-frac 0"; exit 1; }
    w=$(od -An -tu4 -j12 -N4 "$dir/y/train.bin" | tr -d ' ')
    [ "$w" = 4 ] || { echo "yuan shard width $w, expected 4"; exit 1; }
fi
# usage errors
"$MOEC" prepare -m "$SPM" "$TXT" 2>/dev/null; [ $? -eq 2 ] || { echo "missing -o accepted"; exit 1; }
"$MOEC" prepare -m "$SPM" -o "$dir/b" --val-frac 1.5 "$TXT" 2>/dev/null; [ $? -eq 2 ] || { echo "bad --val-frac"; exit 1; }
out=$("$MOEC" prepare -m "$SPM" -o "$dir/b" /nonexistent.txt 2>&1); [ $? -eq 1 ] && echo "$out" | grep -q nonexistent ||
    { echo "missing input: $out"; exit 1; }
echo ok
