"""Torch-free parts shared by the reference scripts: config.json parsing (Cfg, including our extension keys,
see yuan2_ref.py and docs/convert.md) and the fixture generator's config and random weights."""
import json

import numpy as np


class Cfg:
    def __init__(self, d):
        moe = d["moe_config"]
        self.H = d["hidden_size"]
        self.L = d["num_hidden_layers"]
        self.n_h = d["num_attention_heads"]
        self.P = d.get("attention_projection_size", self.H)
        assert self.P % self.n_h == 0
        self.d = self.P // self.n_h
        self.V = d["vocab_size"]
        self.eps = d.get("rms_norm_eps", 1e-6)
        self.E = moe["moe_num_experts"]
        self.k = moe["moe_top_k"]
        self.F = moe["ffn_hidden_size"]
        self.norm_topk = moe.get("norm_topk_prob", True)
        self.max_pos = d.get("max_position_embeddings", 4096)
        self.tied = d.get("tie_word_embeddings", True)
        self.theta = float(d.get("rope_theta", 10000.0))
        if "rotary_dim" in d:
            self.rd = d["rotary_dim"]
        elif "rotary_percent" in d:
            self.rd = int(self.d * d["rotary_percent"])
        else:
            self.rd = self.H // self.n_h
        assert self.rd % 2 == 0 and 0 < self.rd <= self.d
        self.router = d.get("router_type", "attention")
        assert self.router in ("attention", "linear")
        self.lfa = d.get("use_lfa", True)

    @staticmethod
    def load(path):
        with open(path) as f:
            return Cfg(json.load(f))


def make_config(s):
    c = {
        "architectures": ["YuanForCausalLM"],
        "model_type": "yuan",
        "hidden_size": s["hidden_size"],
        "num_hidden_layers": s["num_hidden_layers"],
        "num_attention_heads": s["num_attention_heads"],
        "attention_projection_size": s["attention_projection_size"],
        "vocab_size": s["vocab_size"],
        "intermediate_size": s["ffn"],
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": s.get("max_pos", 64),
        "tie_word_embeddings": s.get("tie", True),
        "use_flash_attention": False,
        "causal_mask": True,
        "moe_config": {"moe_num_experts": s["experts"], "moe_top_k": s["top_k"],
                       "ffn_hidden_size": s["ffn"], "gated_linear_unit": True, "norm_topk_prob": True},
        "torch_dtype": "float32",
    }
    for k in ("rope_theta", "rotary_dim", "rotary_percent", "router_type", "use_lfa"):
        if k in s:
            c[k] = s[k]
    return c


def make_weights(cfg, rng, with_lm_head):
    """HF state_dict in file order: name -> float32 array."""
    H, P, E, F, V = cfg.H, cfg.P, cfg.E, cfg.F, cfg.V

    def lin(o, i, scale=1.0):
        return (rng.standard_normal((o, i)) * scale / np.sqrt(i)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    t = {"model.embed_tokens.weight": rng.standard_normal((V, H)).astype(np.float32)}
    for l in range(cfg.L):
        p = "model.layers.%d." % l
        t[p + "input_layernorm.weight"] = norm(H)
        t[p + "self_attn.q_proj.weight"] = lin(P, H, 1.5)
        t[p + "self_attn.k_proj.weight"] = lin(P, H, 1.5)
        t[p + "self_attn.v_proj.weight"] = lin(P, H)
        if cfg.lfa:
            g = p + "self_attn.lf_gate."
            t[g + "conv1.weight"] = (rng.standard_normal((H // 2, H, 2, 1)) / np.sqrt(2 * H)).astype(np.float32)
            t[g + "conv1.bias"] = (0.1 * rng.standard_normal(H // 2)).astype(np.float32)
            t[g + "conv2.weight"] = (rng.standard_normal((H, H // 2, 2, 1)) / np.sqrt(H)).astype(np.float32)
            t[g + "conv2.bias"] = (0.1 * rng.standard_normal(H)).astype(np.float32)
            t[g + "output_layernorm.weight"] = norm(H)
        t[p + "self_attn.o_proj.weight"] = lin(H, P)
        t[p + "post_attention_layernorm.weight"] = norm(H)
        if cfg.router == "attention":
            # q.k products O(1): a softmax neither flat nor saturated (both give near-tied router logits)
            for n, sc in (("query", 1.0), ("key", 1.0), ("value", 3.0)):
                t[p + "mlp.gate.%s.weight" % n] = lin(E, H, sc)
        else:
            t[p + "mlp.gate.weight"] = lin(E, H, 3.0)
        for e in range(E):
            t[p + "mlp.experts.%d.w1.weight" % e] = lin(2 * F, H)
            t[p + "mlp.experts.%d.w2.weight" % e] = lin(H, F)
    t["model.norm.weight"] = norm(H)
    if with_lm_head:
        t["lm_head.weight"] = lin(V, H, 2.0)
    return t
