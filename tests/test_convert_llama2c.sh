#!/usr/bin/env bash
# moec convert --llama2c: aidreams260K.bin (+ aidreams-tok512.bin) -> llama GGUF.
# 1. Layout, checked in Python against the llama2.c file read with numpy (independent of moec's reader): keys,
#    every tensor (no Q/K permutation: llama2.c's RoPE pairs adjacent elements = llama.cpp "normal" rope),
#    tied classifier (no output.weight), token types (<unk> 2, <s> </s> 3, <0xNN> 6, others 1).
# 2. Behaviour: greedy `moec generate` must reproduce run.c's recorded outputs (REFERENCE-outputs.txt) exactly.
#    run.c's -n counts positions including the prompt (BOS + prompt tokens - 1 forced steps), so
#    `run -n 128` (empty prompt = BOS only) = 128 new tokens, and `run -n 64 -i 'I dream of'` (BOS + 6 prompt
#    tokens) = 64 - 7 + 1 = 58 new tokens.
set -u
cd "$(dirname "$0")/.."
MOEC=${MOEC:-build/moec}
PY=${PY:-/usr/bin/python3}
SH=${MOEC_SHARED:-../shared}
export PYTHONDONTWRITEBYTECODE=1
M=$SH/data/models
[ -f "$M/aidreams260K.bin" ] || M=$SH/models
[ -f "$M/aidreams260K.bin" ] || { echo "FAIL: aidreams260K.bin not found under $SH"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

"$MOEC" convert --llama2c "$M/aidreams260K.bin" --vocab "$M/aidreams-tok512.bin" "$tmp/ai.gguf" || { echo "FAIL: convert"; exit 1; }
"$PY" - "$M/aidreams260K.bin" "$tmp/ai.gguf" <<'PYEOF' || fail=1
import sys
import numpy as np
sys.path.insert(0, "tests/reference")
import gguf_read
b = open(sys.argv[1], "rb").read()
dim, hid, L, nh, nkv, V, seq = np.frombuffer(b, "<i4", 7)
assert V > 0  # shared classifier
w = np.frombuffer(b, "<f4", offset=28)
hs = dim // nh; kvd = hs * nkv
kv, t = gguf_read.read(sys.argv[2])
exp_kv = {"general.architecture": "llama", "llama.embedding_length": dim, "llama.block_count": L,
          "llama.feed_forward_length": hid, "llama.attention.head_count": nh, "llama.attention.head_count_kv": nkv,
          "llama.context_length": seq, "llama.rope.dimension_count": hs, "llama.rope.freq_base": 10000.0,
          "tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
          "tokenizer.ggml.add_bos_token": True}
for k, v in exp_kv.items():
    assert kv.get(k) == v, (k, kv.get(k), v)
assert abs(kv["llama.attention.layer_norm_rms_epsilon"] - 1e-5) < 1e-12
off = 0
def take(shape):
    global off
    n = int(np.prod(shape)); a = w[off:off + n].reshape(shape); off += n; return a
want = {"token_embd.weight": take((V, dim))}
for nm, shp in (("attn_norm", (dim,)), ("attn_q", (dim, dim)), ("attn_k", (kvd, dim)), ("attn_v", (kvd, dim)),
                ("attn_output", (dim, dim)), ("ffn_norm", (dim,)), ("ffn_gate", (hid, dim)), ("ffn_down", (dim, hid)),
                ("ffn_up", (hid, dim))):
    for l in range(L):
        want["blk.%d.%s.weight" % (l, nm)] = take(shp)
want["output_norm.weight"] = take((dim,))
off += seq * hs
assert off == len(w), (off, len(w))
assert set(t) == set(want), set(t) ^ set(want)
for k, a in want.items():
    typ, ne, g = t[k]
    assert typ == 0 and list(ne) == list(reversed(a.shape)) and np.array_equal(g, a), k
toks, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
assert len(toks) == V == len(types) == len(kv["tokenizer.ggml.scores"])
for i, (s, ty) in enumerate(zip(toks, types)):
    e = 2 if s == "<unk>" else 3 if s in ("<s>", "</s>") else 6 if (len(s) == 6 and s.startswith("<0x") and s.endswith(">")) else 1
    assert ty == e, (i, s, ty, e)
assert types.count(6) == 256
print("llama2c layout ok: %d tensors, %d tokens" % (len(t), len(toks)))
PYEOF

# Greedy generation vs run.c
probe=$("$MOEC" generate -m "$tmp/ai.gguf" --temp 0 -n 1 -p '' 2>&1 >/dev/null)
if echo "$probe" | grep -qi "not implemented"; then echo "moec generate is not implemented yet"; exit 77; fi
gen() { "$MOEC" generate -m "$tmp/ai.gguf" --temp 0 -t 1 "$@" 2>"$tmp/gen.err"; }
gen -n 128 -p '' >"$tmp/g1.txt" || { echo "FAIL: generate: $(cat "$tmp/gen.err")"; fail=1; }
gen -n 58 -p 'I dream of' >"$tmp/g2.txt" || { echo "FAIL: generate: $(cat "$tmp/gen.err")"; fail=1; }
gen -n 64 -p 'I dream of' >"$tmp/g3.txt" || { echo "FAIL: generate: $(cat "$tmp/gen.err")"; fail=1; }
"$PY" - "$M/REFERENCE-outputs.txt" "$tmp/g1.txt" "$tmp/g2.txt" "$tmp/g3.txt" <<'PYEOF' || fail=1
import re, sys
parts = re.split(r"^### (.*)\n", open(sys.argv[1]).read(), flags=re.M)
runc = [(parts[i], parts[i + 1].rstrip("\n")) for i in range(1, len(parts), 2) if parts[i].startswith("run.c")]
assert len(runc) == 2, runc
bad = 0
# moec -n 64 generates 6 tokens more than run.c's -n 64: its text must extend run.c's
g3 = open(sys.argv[4]).read().rstrip("\n")
if g3.startswith(runc[1][1]) and len(g3) > len(runc[1][1]):
    print("ok   moec -n 64 extends run.c's -n 64 text")
else:
    print("FAIL moec -n 64 does not extend run.c's text: %r" % g3)
    bad = 1
for (title, exp), f in zip(runc, sys.argv[2:4]):
    got = open(f).read().rstrip("\n")
    if got == exp:
        print("ok   %s" % title)
    else:
        n = next((i for i in range(min(len(got), len(exp))) if got[i] != exp[i]), min(len(got), len(exp)))
        print("FAIL %s\n  differs at char %d\n  want %r\n  got  %r" % (title, n, exp[max(0, n-40):n+40], got[max(0, n-40):n+40]))
        bad = 1
sys.exit(bad)
PYEOF
exit $fail
