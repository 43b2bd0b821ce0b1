#!/usr/bin/python3
"""check_gguf_hf.py HF_DIR OUT.gguf [--type f32|f16|bf16] [--rope-table fp32|hf]

Checks a GGUF written by `moec convert HF_DIR` against the HF checkpoint, with the mapping of
docs/convert.md implemented here independently in numpy (reshapes instead of index loops): every key, every
tensor name, type, ne and value (bit-exact after rounding to the output type). Exit 1 with a message otherwise."""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_read  # noqa: E402
import st_io  # noqa: E402
import yuan2_cfg as yuan2_ref  # noqa: E402  (Cfg only; no torch)

hf_dir, path = sys.argv[1], sys.argv[2]
args = sys.argv[3:]
otype = args[args.index("--type") + 1] if "--type" in args else None
table = args[args.index("--rope-table") + 1] if "--rope-table" in args else "fp32"
conf = json.load(open(os.path.join(hf_dir, "config.json")))
c = yuan2_ref.Cfg(conf)
hf = st_io.read_dir(hf_dir)
kv, t = gguf_read.read(path)

# matrix type: the source's dtype unless --type
if otype is None:
    hdr = None
    for f in sorted(os.listdir(hf_dir)):
        if f.endswith(".safetensors"):
            b = open(os.path.join(hf_dir, f), "rb").read()
            h = json.loads(b[8:8 + int.from_bytes(b[:8], "little")])
            if "model.embed_tokens.weight" in h:
                hdr = h["model.embed_tokens.weight"]["dtype"]
    otype = {"F32": "f32", "F16": "f16", "BF16": "bf16"}[hdr]
MT = {"f32": 0, "f16": 1, "bf16": 30}[otype]
RT = {"f32": "F32", "f16": "F16", "bf16": "BF16"}[otype]

want_kv = {
    "general.architecture": "yuan2moe", "yuan2moe.embedding_length": c.H, "yuan2moe.block_count": c.L,
    "yuan2moe.attention.head_count": c.n_h, "yuan2moe.attention.key_length": c.d,
    "yuan2moe.rope.dimension_count": c.rd, "yuan2moe.rope.table": table, "yuan2moe.expert_count": c.E,
    "yuan2moe.expert_used_count": c.k, "yuan2moe.expert_feed_forward_length": c.F,
    "yuan2moe.router": c.router, "yuan2moe.lfa": c.lfa, "yuan2moe.context_length": c.max_pos,
}
err = []
for k, v in want_kv.items():
    if kv.get(k) != v:
        err.append("key %s = %r, want %r" % (k, kv.get(k), v))
if abs(kv.get("yuan2moe.rope.freq_base", 0) - c.theta) > 1e-3 * c.theta:
    err.append("rope.freq_base %r, want %r" % (kv.get("yuan2moe.rope.freq_base"), c.theta))
if abs(kv.get("yuan2moe.attention.layer_norm_rms_epsilon", 0) - c.eps) > 1e-3 * c.eps:
    err.append("eps")

want = {}  # name -> (type, array in PyTorch order = reversed ne)


def mat(a):
    return (MT, st_io.round_to(a, RT))


def vec(a):
    return (0, a)


want["token_embd.weight"] = mat(hf["model.embed_tokens.weight"])
want["output_norm.weight"] = vec(hf["model.norm.weight"])
if not c.tied:
    want["output.weight"] = mat(hf["lm_head.weight"])
for l in range(c.L):
    p, g = "model.layers.%d." % l, "blk.%d." % l
    want[g + "attn_norm.weight"] = vec(hf[p + "input_layernorm.weight"])
    qk = np.concatenate([hf[p + "self_attn.q_proj.weight"], hf[p + "self_attn.k_proj.weight"]]).reshape(c.n_h, 2, c.d, c.H)
    want[g + "attn_q.weight"] = mat(qk[:, 0].reshape(c.P, c.H))
    want[g + "attn_k.weight"] = mat(qk[:, 1].reshape(c.P, c.H))
    want[g + "attn_v.weight"] = mat(hf[p + "self_attn.v_proj.weight"])
    want[g + "attn_output.weight"] = mat(hf[p + "self_attn.o_proj.weight"])
    if c.lfa:
        for j in (1, 2):
            w = hf[p + "self_attn.lf_gate.conv%d.weight" % j]  # [out, in, 2, 1]
            want[g + "lfa_conv%d.weight" % j] = mat(w[:, :, :, 0].transpose(2, 0, 1))  # [tap, out, in]
            want[g + "lfa_conv%d.bias" % j] = vec(hf[p + "self_attn.lf_gate.conv%d.bias" % j])
        want[g + "lfa_norm.weight"] = vec(hf[p + "self_attn.lf_gate.output_layernorm.weight"])
    want[g + "ffn_norm.weight"] = vec(hf[p + "post_attention_layernorm.weight"])
    if c.router == "linear":
        want[g + "ffn_gate_inp.weight"] = (0, hf[p + "mlp.gate.weight"])
    else:
        for a, b in (("q", "query"), ("k", "key"), ("v", "value")):
            want[g + "ffn_router_%s.weight" % a] = (0, hf[p + "mlp.gate.%s.weight" % b])
    w1 = np.stack([hf[p + "mlp.experts.%d.w1.weight" % e] for e in range(c.E)])  # [E, 2F, H]
    w2 = np.stack([hf[p + "mlp.experts.%d.w2.weight" % e] for e in range(c.E)])  # [E, H, F]
    want[g + "ffn_gate_exps.weight"] = mat(w1[:, :c.F])
    want[g + "ffn_up_exps.weight"] = mat(w1[:, c.F:])
    want[g + "ffn_down_exps.weight"] = mat(w2)

if set(t) != set(want):
    err.append("tensor names differ: extra %s, missing %s" % (sorted(set(t) - set(want)), sorted(set(want) - set(t))))
for k, (typ, a) in want.items():
    if k not in t:
        continue
    gt, ne, ga = t[k]
    if gt != typ:
        err.append("%s: type %d, want %d" % (k, gt, typ))
    elif list(ne) != list(reversed(a.shape)):
        err.append("%s: ne %s, want %s" % (k, ne, list(reversed(a.shape))))
    elif not np.array_equal(ga, a):
        err.append("%s: values differ (max %g)" % (k, np.abs(ga - a).max()))
if err:
    print("\n".join(err[:20]))
    sys.exit(1)
print("ok %s: %d tensors, %d keys, matrices %s" % (os.path.basename(hf_dir.rstrip("/")), len(t), len(kv), RT))
