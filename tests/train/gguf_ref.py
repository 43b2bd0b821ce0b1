"""Load a moec yuan2moe GGUF (F32 tensors) into the PyTorch reference model (tests/reference/yuan2_ref.py).
A small independent GGUF v3 reader plus the inverse of make_grad_fixtures.to_moec (undoes moec's plain Q/K layout
into HF's interleaved q_proj/k_proj, taps into Conv2d weights, stacked experts into w1/w2)."""
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import yuan2_ref as ref  # noqa: E402

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf(path):
    """-> (kv dict, tensors dict name -> numpy float32 array in PyTorch order)."""
    b = open(path, "rb").read()
    assert b[:4] == b"GGUF", "not a GGUF file"
    ver, nt, nkv = struct.unpack_from("<IQQ", b, 4)
    assert ver == 3
    o = 24

    def s():
        nonlocal o
        n, = struct.unpack_from("<Q", b, o)
        v = b[o + 8:o + 8 + n].decode()
        o += 8 + n
        return v

    def val(t):
        nonlocal o
        if t == 8:
            return s()
        if t == 9:
            et, n = struct.unpack_from("<IQ", b, o)
            o += 12
            return [val(et) for _ in range(n)]
        f = _SCALAR[t]
        v, = struct.unpack_from(f, b, o)
        o += struct.calcsize(f)
        return v

    kv = {}
    for _ in range(nkv):
        k = s()
        t, = struct.unpack_from("<I", b, o)
        o += 4
        kv[k] = val(t)
    infos = []
    for _ in range(nt):
        name = s()
        nd, = struct.unpack_from("<I", b, o)
        ne = struct.unpack_from("<%dQ" % nd, b, o + 4)
        typ, off = struct.unpack_from("<IQ", b, o + 4 + 8 * nd)
        o += 4 + 8 * nd + 12
        infos.append((name, ne, typ, off))
    al = kv.get("general.alignment", 32)
    base = (o + al - 1) // al * al
    tensors = {}
    for name, ne, typ, off in infos:
        assert typ == 0, f"{name}: only F32 tensors are supported here"
        n = int(np.prod(ne))
        tensors[name] = np.frombuffer(b, "<f4", n, base + off).reshape(tuple(reversed(ne))).copy()
    return kv, tensors


def load_reference(path):
    """-> Yuan2Ref (float64) holding the GGUF's weights, and the GGUF kv dict."""
    kv, t = read_gguf(path)
    a = "yuan2moe."
    H, nh, d = kv[a + "embedding_length"], kv[a + "attention.head_count"], kv[a + "attention.key_length"]
    E, K, F = kv[a + "expert_count"], kv[a + "expert_used_count"], kv[a + "expert_feed_forward_length"]
    L = kv[a + "block_count"]
    V = t["token_embd.weight"].shape[0]
    router = kv.get(a + "router", "attention")
    assert kv.get(a + "leading_dense_block_count", 0) == 0 and E > 0, "reference has MoE layers only"
    assert "output.weight" not in t, "reference loader: tied models only"
    cfg = dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=nh, attention_projection_size=nh * d,
               vocab_size=V, rms_norm_eps=kv[a + "attention.layer_norm_rms_epsilon"],
               max_position_embeddings=kv.get(a + "context_length", 4096), rotary_dim=kv[a + "rope.dimension_count"],
               rope_theta=kv.get(a + "rope.freq_base", 10000.0), router_type=router,
               use_lfa=kv.get(a + "lfa", True), tie_word_embeddings=True,
               moe_config=dict(moe_num_experts=E, moe_top_k=K, ffn_hidden_size=F, norm_topk_prob=True))
    c = ref.Cfg(cfg)
    sd = {"model.embed_tokens.weight": t["token_embd.weight"], "model.norm.weight": t["output_norm.weight"]}
    for l in range(L):
        b, p = f"blk.{l}.", f"model.layers.{l}."
        q, k = t[b + "attn_q.weight"].reshape(nh, 1, d, H), t[b + "attn_k.weight"].reshape(nh, 1, d, H)
        qk = np.concatenate([q, k], 1).reshape(2 * nh * d, H)  # per head [Q_h | K_h]
        sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"] = qk[:nh * d], qk[nh * d:]
        sd[p + "self_attn.v_proj.weight"] = t[b + "attn_v.weight"]
        sd[p + "self_attn.o_proj.weight"] = t[b + "attn_output.weight"]
        sd[p + "input_layernorm.weight"] = t[b + "attn_norm.weight"]
        sd[p + "post_attention_layernorm.weight"] = t[b + "ffn_norm.weight"]
        if c.lfa:
            g = p + "self_attn.lf_gate."
            sd[g + "conv1.weight"] = t[b + "lfa_conv1.weight"].transpose(1, 2, 0)[..., None]
            sd[g + "conv2.weight"] = t[b + "lfa_conv2.weight"].transpose(1, 2, 0)[..., None]
            sd[g + "conv1.bias"], sd[g + "conv2.bias"] = t[b + "lfa_conv1.bias"], t[b + "lfa_conv2.bias"]
            sd[g + "output_layernorm.weight"] = t[b + "lfa_norm.weight"]
        if router == "attention":
            for x in ("q", "k", "v"):
                sd[p + "mlp.gate." + {"q": "query", "k": "key", "v": "value"}[x] + ".weight"] = \
                    t[b + f"ffn_router_{x}.weight"]
        else:
            sd[p + "mlp.gate.weight"] = t[b + "ffn_gate_inp.weight"]
        for e in range(E):
            sd[p + f"mlp.experts.{e}.w1.weight"] = np.concatenate(
                [t[b + "ffn_gate_exps.weight"][e], t[b + "ffn_up_exps.weight"][e]], 0)
            sd[p + f"mlp.experts.{e}.w2.weight"] = t[b + "ffn_down_exps.weight"][e]
    m = ref.Yuan2Ref(c)
    m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, strict=True)
    return m.double(), kv
