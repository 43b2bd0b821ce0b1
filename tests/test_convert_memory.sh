#!/usr/bin/env bash
# moec convert streams: peak memory does not grow with the model. A synthetic HF checkpoint of ~246 MB (bf16,
# H=512, 4 layers, 16 experts, F=1024, V=32000, LFA, attention router, 2 shards + index; written here with
# numpy) is converted; the converter's own peak RSS (VmHWM, printed by `moec convert --stats`) must stay below
# 25% of the output size (~59 MB; measured: 30 MB, and 491 MB for the old converter that built every output
# tensor in memory). What the bound covers: the binary and its libraries (~3 MB), the writer's chunk buffer
# (~8 MB) and a few row buffers, and the input pages around the chunk being produced. Touched pages of the
# mmapped shards count in RSS, so the converter drops what it has read with madvise(MADV_DONTNEED) (after each
# chunk, every 2 MB of a long read, and all of a source tensor after its last chunk; the kernel maps whole
# page-cache folios, up to 640 KB for one touched byte on Linux 6.18, hence the slack). Without the drops every
# page of the input would count (~241 MB here), so the bound fails if either the buffering or the page dropping
# regresses. The output is also checked tensor by tensor (bit-exact) with an independent numpy mapping on the raw
# bits: token_embd and the expert tensors here span several writer chunks (the small fixtures of test_convert.sh
# fit in one), so chunk boundaries inside a stacked expert tensor, inside token_embd and across experts are
# exercised.
set -u
cd "$(dirname "$0")/.."
MOEC=${MOEC:-build/moec}
PY=${PY:-/usr/bin/python3}
export PYTHONDONTWRITEBYTECODE=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

"$PY" - "$tmp/hf" <<'PYEOF' || { echo "FAIL: making the synthetic checkpoint"; exit 1; }
import json, os, sys
import numpy as np
d = sys.argv[1]
os.makedirs(d)
H, L, NH, E, K, F, V = 512, 4, 8, 16, 2, 1024, 32000
conf = {"architectures": ["YuanForCausalLM"], "model_type": "yuan", "hidden_size": H, "num_hidden_layers": L,
        "num_attention_heads": NH, "attention_projection_size": H, "vocab_size": V, "intermediate_size": F,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 256, "tie_word_embeddings": True,
        "moe_config": {"moe_num_experts": E, "moe_top_k": K, "ffn_hidden_size": F, "norm_topk_prob": True}}
json.dump(conf, open(os.path.join(d, "config.json"), "w"))
shapes = [("model.embed_tokens.weight", (V, H))]
for l in range(L):
    p = "model.layers.%d." % l
    shapes += [(p + "input_layernorm.weight", (H,)), (p + "post_attention_layernorm.weight", (H,))]
    shapes += [(p + "self_attn.%s_proj.weight" % n, (H, H)) for n in "qkvo"]
    shapes += [(p + "self_attn.lf_gate.conv1.weight", (H // 2, H, 2, 1)), (p + "self_attn.lf_gate.conv1.bias", (H // 2,)),
               (p + "self_attn.lf_gate.conv2.weight", (H, H // 2, 2, 1)), (p + "self_attn.lf_gate.conv2.bias", (H,)),
               (p + "self_attn.lf_gate.output_layernorm.weight", (H,))]
    shapes += [(p + "mlp.gate.%s.weight" % n, (E, H)) for n in ("query", "key", "value")]
    for e in range(E):
        shapes += [(p + "mlp.experts.%d.w1.weight" % e, (2 * F, H)), (p + "mlp.experts.%d.w2.weight" % e, (H, F))]
shapes.append(("model.norm.weight", (H,)))
rng = np.random.default_rng(7)
half = len(shapes) // 2
index = {}
for si, part in enumerate((shapes[:half], shapes[half:])):
    fn = "model-%05d-of-00002.safetensors" % (si + 1)
    hdr, off, blobs = {}, 0, []
    for name, sh in part:
        n = int(np.prod(sh))
        # bf16 bit patterns with random sign and mantissa, exponents giving |x| in [2^-8, 2^-1): any normal
        # value would do, the check is bit-exact
        b = rng.integers(0, 1 << 16, n, dtype=np.uint16)
        b = (b & np.uint16(0x807F)) | (np.uint16(0x3B80) + ((b & np.uint16(0x0700)) >> np.uint16(1)))
        blobs.append(b)
        hdr[name] = {"dtype": "BF16", "shape": list(sh), "data_offsets": [off, off + 2 * n]}
        off += 2 * n
        index[name] = fn
    hj = json.dumps(hdr, separators=(",", ":")).encode()
    hj += b" " * ((-len(hj)) % 8)
    with open(os.path.join(d, fn), "wb") as f:
        f.write(len(hj).to_bytes(8, "little"))
        f.write(hj)
        for b in blobs:
            f.write(b.astype("<u2").tobytes())
json.dump({"metadata": {}, "weight_map": index}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
PYEOF

in_bytes=$(cat "$tmp"/hf/*.safetensors | wc -c)
# under `make asan`: ASan's quarantine would keep the freed chunk buffers (up to 256 MB of ASan's own memory,
# not the converter's); without it the ASan build peaks at ~35 MB here. No effect on a normal build.
if ! ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}quarantine_size_mb=0" \
    "$MOEC" convert "$tmp/hf" "$tmp/out.gguf" --stats 2>"$tmp/err"; then
    echo "FAIL convert: $(cat "$tmp/err")"; exit 1
fi
out_bytes=$(stat -c %s "$tmp/out.gguf")
hwm=$(sed -n 's/.*peak RSS \([0-9]*\) kB.*/\1/p' "$tmp/err")
[ -n "$hwm" ] || { echo "FAIL: no 'peak RSS' line from --stats: $(cat "$tmp/err")"; exit 1; }
limit=$((out_bytes / 4 / 1024))
if [ "$hwm" -lt "$limit" ]; then
    echo "ok   peak RSS $hwm kB < $limit kB (25% of the $((out_bytes / 1024)) kB output; input $((in_bytes / 1024)) kB)"
else
    echo "FAIL peak RSS $hwm kB >= $limit kB (25% of the $((out_bytes / 1024)) kB output)"; fail=1
fi
# the output, bit by bit, against the mapping of docs/convert.md done here with numpy reshapes on the raw bf16
# bits (matrices stay bf16; vectors and router matrices widen to f32 = bits << 16)
"$PY" - "$tmp/hf" "$tmp/out.gguf" <<'PYEOF' || { echo "FAIL layout/values"; fail=1; }
import json, os, sys
import numpy as np
sys.path.insert(0, "tests/reference")
from gguf_read import read_header
d, path = sys.argv[1], sys.argv[2]
src = {}
for fn in sorted(os.listdir(d)):
    if fn.endswith(".safetensors"):
        raw = np.memmap(os.path.join(d, fn), np.uint8, "r")
        n = int(raw[:8].view("<u8")[0])
        for k, v in json.loads(bytes(raw[8:8 + n])).items():
            b, e = v["data_offsets"]
            src[k] = raw[8 + n + b:8 + n + e].view("<u2").reshape(v["shape"])
c = json.load(open(os.path.join(d, "config.json")))
H, L, NH, E, F = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["moe_config"]["moe_num_experts"], c["moe_config"]["ffn_hidden_size"]
dh = H // NH
def f32(a):
    return (np.asarray(a).astype(np.uint32) << 16)
want = {"token_embd.weight": (30, src["model.embed_tokens.weight"]), "output_norm.weight": (0, f32(src["model.norm.weight"]))}
for l in range(L):
    p, g = "model.layers.%d." % l, "blk.%d." % l
    fused = np.concatenate([src[p + "self_attn.q_proj.weight"], src[p + "self_attn.k_proj.weight"]]).reshape(NH, 2, dh, H)
    want[g + "attn_q.weight"] = (30, fused[:, 0].reshape(H, H))
    want[g + "attn_k.weight"] = (30, fused[:, 1].reshape(H, H))
    want[g + "attn_v.weight"] = (30, src[p + "self_attn.v_proj.weight"])
    want[g + "attn_output.weight"] = (30, src[p + "self_attn.o_proj.weight"])
    for n, hn in (("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm"),
                  ("lfa_norm", "self_attn.lf_gate.output_layernorm"), ("lfa_conv1.bias", None), ("lfa_conv2.bias", None)):
        key = g + (n if n.endswith("bias") else n + ".weight")
        want[key] = (0, f32(src[p + (hn + ".weight" if hn else "self_attn.lf_gate." + n.replace("lfa_", ""))]))
    for i in (1, 2):
        want[g + "lfa_conv%d.weight" % i] = (30, src[p + "self_attn.lf_gate.conv%d.weight" % i][..., 0].transpose(2, 0, 1))
    for n, hn in (("q", "query"), ("k", "key"), ("v", "value")):
        want[g + "ffn_router_%s.weight" % n] = (0, f32(src[p + "mlp.gate.%s.weight" % hn]))
    w1 = np.stack([src[p + "mlp.experts.%d.w1.weight" % e] for e in range(E)])
    want[g + "ffn_gate_exps.weight"] = (30, w1[:, :F])
    want[g + "ffn_up_exps.weight"] = (30, w1[:, F:])
    want[g + "ffn_down_exps.weight"] = (30, np.stack([src[p + "mlp.experts.%d.w2.weight" % e] for e in range(E)]))
b = np.memmap(path, np.uint8, "r")
with open(path, "rb") as fh:
    kv, infos, start = read_header(fh.read(1 << 22))  # the header (no tokenizer: a few kB)
nt = len(infos)
err = []
if sorted(i[0] for i in infos) != sorted(want):
    err.append("tensor names differ: %s" % sorted(set(want) ^ set(i[0] for i in infos)))
for name, ne, typ, off in infos:
    if name not in want:
        continue
    wt, wa = want[name]
    if typ != wt or list(reversed(ne)) != list(wa.shape):
        err.append("%s: type %d ne %s, want %d %s" % (name, typ, ne, wt, list(reversed(wa.shape))))
        continue
    es = 4 if typ == 0 else 2
    got = b[start + off:start + off + es * wa.size].view("<u4" if typ == 0 else "<u2").reshape(wa.shape)
    if not np.array_equal(got, wa):
        idx = np.argwhere(got != wa)[0]
        err.append("%s: first difference at %s" % (name, tuple(idx)))
if err:
    print("\n".join(err[:10]))
    sys.exit(1)
print("ok   all %d tensors bit-exact (numpy mapping on the raw bits; token_embd and the expert tensors span several writer chunks)" % nt)
PYEOF
exit $fail
