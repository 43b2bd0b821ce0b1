#!/usr/bin/env bash
# Tokenizer speed: `moec tokenize` vs SentencePiece's spm_encode on ~1 MB of mixed text (tinyshakespeare +
# Chinese from cp-lunyu/cp-mengzi/cp-tangshi300), LLaMA 2 and Yuan2-M32 models. Prints MB/s (CPU time, incl. model load)
# for: moec -f (whole file as one text), moec reading stdin line by line, spm_encode (line by line).
# usage: bench/tok.sh [BUILD]   (called from bench/run.sh)
set -eu
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MOEC=${MOEC:-$BUILD/moec}
S=${MOEC_SHARED:-$(cd .. && pwd)/shared}/data
PY=/usr/bin/python3
command -v spm_encode >/dev/null || { echo "tok bench: spm_encode not installed (apt-get install sentencepiece)"; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$PY" - "$S" "$tmp/text.txt" <<'PYEOF'
import json, sys
S, out = sys.argv[1], sys.argv[2]
en = open(f"{S}/corpora/tinyshakespeare.txt", encoding="utf-8").read()
zh = []
for f in ("cp-lunyu.json", "cp-mengzi.json", "cp-tangshi300.json"):
    for ch in json.load(open(f"{S}/corpora/{f}", encoding="utf-8")):
        zh.extend(ch.get("paragraphs", []))
zh = "\n".join(zh)
zb = ("\n" + zh).encode("utf-8")
b = en.encode("utf-8")[: 1_000_000 - len(zb)] + zb
b = b.decode("utf-8", "ignore").encode("utf-8")
open(out, "wb").write(b)
PYEOF
bytes=$(stat -c %s "$tmp/text.txt")
# CPU seconds (user+sys) of a command: the machine is shared, wall time is noisy
t() { /usr/bin/time -f "%U %S" -o "$tmp/time" "$@" >/dev/null; awk '{print $1 + $2 + 0.001}' "$tmp/time"; }
mbs() { echo "scale=2; $bytes / 1000000 / $1" | bc -l; }
printf "tokenizer bench: %d bytes (%s)\n" "$bytes" "tinyshakespeare + Analects, Mencius, Tang poems"
rc=0
for m in llama2-tokenizer.model yuan2-m32-tokenizer.model; do
    M=$S/tokenizers/$m
    a=$(t "$MOEC" tokenize -m "$M" -f "$tmp/text.txt")
    b=$(t sh -c "\"$MOEC\" tokenize -m \"$M\" < \"$tmp/text.txt\"")
    l=$(t "$MOEC" tokenize -m "$M" x)
    c=$(t spm_encode --model="$M" --output_format=id --input="$tmp/text.txt")
    # identical ids line by line (sanity, not timed)
    "$MOEC" tokenize -m "$M" < "$tmp/text.txt" > "$tmp/a.ids"
    spm_encode --model="$M" --output_format=id --input="$tmp/text.txt" > "$tmp/b.ids"
    same=$(cmp -s "$tmp/a.ids" "$tmp/b.ids" && echo "ids identical" || echo "IDS DIFFER")
    [ "$same" == "ids identical" ] || rc=1
    printf "  %-26s moec -f %6.2f MB/s | moec lines %6.2f MB/s | spm_encode %6.2f MB/s | moec load %.3f s | %s\n" \
        "$m" "$(mbs "$a")" "$(mbs "$b")" "$(mbs "$c")" "$l" "$same"
done
exit $rc
