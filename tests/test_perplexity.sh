#!/usr/bin/env bash
# moec perplexity: llama.cpp's chunked second-half convention, against the PyTorch reference model (float64)
# loaded from the same GGUF by an independent reader (tests/train/gguf_ref.py); for the untrained fixture and for a
# model trained by moec train (and exported), so the trained weights run identically in both.
set -u
MOEC=${MOEC:-build/moec}
PY=${PY:-/usr/bin/python3}
FIX=tests/train/fixtures/tiny_attn.gguf
[ -f "$FIX" ] || { echo "fixture missing"; exit 77; }
$PY -c "import torch, numpy" 2>/dev/null || { echo "python3-torch missing"; exit 77; }
dir=$(mktemp -d /tmp/moec_ppl_XXXXXX)
trap 'rm -rf "$dir"' EXIT
awk 'BEGIN{srand(11); s=3; for(i=0;i<70;i++){l=""; for(j=0;j<10;j++){l=l (j?" ":"") s; s=(s*7+3+int(rand()*2))%40}; print l}}' >"$dir/ids.txt"
tr '\n' ' ' <"$dir/ids.txt" >"$dir/flat.txt"
"$MOEC" train -m "$FIX" -d "$dir/ids.txt" --seq 9 --batch 4 --steps 40 --lr 5e-3 --save-every 0 --quiet \
    -o "$dir/t.ckpt" || { echo "train failed"; exit 1; }
"$MOEC" export "$dir/t.ckpt" "$dir/t.gguf" || exit 1
for m in "$FIX" "$dir/t.gguf"; do
    out=$("$MOEC" perplexity -m "$m" -f "$dir/flat.txt" --ids -c 32 2>/dev/null) || { echo "perplexity failed"; exit 1; }
    nll=$(echo "$out" | sed -n 's/.*mean NLL \([0-9.]*\) over \([0-9]*\) tokens.*/\1 \2/p')
    [ -n "$nll" ] || { echo "no result line: $out"; exit 1; }
    $PY - "$m" "$dir/flat.txt" $nll <<'EOF' || exit 1
import sys, torch
sys.path.insert(0, "tests/train")
import gguf_ref
model, kv = gguf_ref.load_reference(sys.argv[1])
ids = [int(x) for x in open(sys.argv[2]).read().split()]
nll_moec, count_moec = float(sys.argv[3]), int(sys.argv[4])
n_ctx, tot, cnt = 32, 0.0, 0
for c in range(len(ids) // n_ctx):
    ch = ids[c * n_ctx:(c + 1) * n_ctx]
    with torch.no_grad():
        logits, _ = model.forward(ch)
    lp = torch.log_softmax(logits, -1)
    for t in range(n_ctx // 2, n_ctx - 1):
        tot -= float(lp[t, ch[t + 1]])
        cnt += 1
assert cnt == count_moec, (cnt, count_moec)
err = abs(tot / cnt - nll_moec)
print(f"{sys.argv[1].split('/')[-1]}: mean NLL moec {nll_moec:.6f}, torch {tot / cnt:.6f} over {cnt} tokens")
assert err < 2e-5 * max(1.0, nll_moec), err
EOF
done
# trained model must be better than the untrained one on its own training data
a=$("$MOEC" perplexity -m "$FIX" -f "$dir/flat.txt" --ids -c 32 2>/dev/null | sed -n 's/.*mean NLL \([0-9.]*\).*/\1/p')
b=$("$MOEC" perplexity -m "$dir/t.gguf" -f "$dir/flat.txt" --ids -c 32 2>/dev/null | sed -n 's/.*mean NLL \([0-9.]*\).*/\1/p')
awk -v a="$a" -v b="$b" 'BEGIN{exit !(b < a)}' || { echo "training did not lower the NLL ($a -> $b)"; exit 1; }
# errors
"$MOEC" perplexity -m "$FIX" -f "$dir/flat.txt" --ids -c 4096 >/dev/null 2>&1 && { echo "too few tokens accepted"; exit 1; }
"$MOEC" perplexity -m "$FIX" -f "$dir/flat.txt" 2>/dev/null && { echo "no tokenizer accepted"; exit 1; }
echo ok
