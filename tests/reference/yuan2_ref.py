"""Independent PyTorch reference of the Yuan 2.0-M32 architecture in HuggingFace layout.

Written from shared/spec/yuan2-m32.md sections 1-2 (not from any HF code). Parameters carry the HF
state_dict names, so `model.load_state_dict(tensors)` takes a HF checkpoint directly. Runs in fp32 or
fp64 (dtype argument); see docs/convert.md for the config.json keys, including our extensions:

  rope_theta        float, RoPE base (default 10000, what the released HF code uses)
  rotary_dim        int, rotated dims at the start of each head (default hidden_size // num_attention_heads,
                    the HF rule); or rotary_percent: float, rotary_dim = int(head_dim * rotary_percent)
  router_type       "attention" (default; mlp.gate.query/key/value) or "linear" (mlp.gate.weight [E, H])
  use_lfa           bool (default true); false = plain attention, Q/K from the normed input
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


from yuan2_cfg import Cfg  # noqa: E402,F401  (config parsing lives in the torch-free module)


# ---------------------------------------------------------------------------------------------------
# RoPE tables. Both return cos, sin: [T, rd/2] in float64 (exact copies of the values the model uses).
def rope_inv_freq(cfg):
    # fp32, as the HF/Megatron code computes it: 1 / base^(2i/rd)
    return 1.0 / (cfg.theta ** (torch.arange(0, cfg.rd, 2, dtype=torch.float32) / cfg.rd))


def rope_table_fp32(cfg, T):
    """Training math (Megatron, vLLM): fp32 positions, fp32 angles, fp32 cos/sin."""
    pos = torch.arange(T, dtype=torch.float32)
    ang = torch.outer(pos, rope_inv_freq(cfg))  # fp32 products
    return ang.cos().double(), ang.sin().double()


def rope_table_hf(cfg, T):
    """The HF code's table: inv_freq rounded to bf16, positions rounded to bf16, angle = bf16(pos*inv),
    cos/sin rounded to bf16. (The products with q/k are then done in fp32 here and in moec.)"""
    inv = rope_inv_freq(cfg).to(torch.bfloat16)
    n = max(T, cfg.max_pos)  # the HF table covers max_position_embeddings, rebuilt alike when longer
    pos = torch.arange(n, dtype=torch.bfloat16)[:T]
    ang = torch.outer(pos, inv)  # bf16 x bf16 -> bf16 (one rounding)
    return ang.cos().double(), ang.sin().double()


def rope_table(cfg, T, mode):
    return rope_table_hf(cfg, T) if mode == "hf" else rope_table_fp32(cfg, T)


def apply_rope(x, cos, sin, rd):
    """x: [T, n_h, d]; half-split (NeoX) rotation of dims [0, rd) of each head; the rest pass through."""
    half = rd // 2
    c = cos.to(x.dtype)[:, None, :]
    s = sin.to(x.dtype)[:, None, :]
    a, b, rest = x[..., :half], x[..., half:rd], x[..., rd:]
    return torch.cat([a * c - b * s, b * c + a * s, rest], dim=-1)


# ---------------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):  # x: [T, n]
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LFGate(nn.Module):
    """Localized filtering: two causal kernel-2 convolutions H -> H/2 -> H, then RMSNorm(o2 + x)."""

    def __init__(self, cfg):
        super().__init__()
        self.conv1 = nn.Conv2d(cfg.H, cfg.H // 2, (2, 1), stride=1, padding=(1, 0), bias=True)
        self.conv2 = nn.Conv2d(cfg.H // 2, cfg.H, (2, 1), stride=1, padding=(1, 0), bias=True)
        self.output_layernorm = RMSNorm(cfg.H, cfg.eps)

    def forward(self, x):  # x: [T, H]
        T = x.shape[0]
        y = x.t()[None, :, :, None]  # [1, H, T, 1]: the conv runs along the sequence
        o1 = self.conv1(y)[:, :, :T, :]  # padding 1 at both ends, keep the first T outputs (causal)
        o2 = self.conv2(o1)[:, :, :T, :]
        o2 = o2[0, :, :, 0].t()  # [T, H]
        return self.output_layernorm(o2 + x)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.q_proj = nn.Linear(cfg.H, cfg.P, bias=False)
        self.k_proj = nn.Linear(cfg.H, cfg.P, bias=False)
        self.v_proj = nn.Linear(cfg.H, cfg.P, bias=False)
        self.o_proj = nn.Linear(cfg.P, cfg.H, bias=False)
        if cfg.lfa:
            self.lf_gate = LFGate(cfg)

    def forward(self, x, cos, sin):  # x: [T, H] (normed input), returns [T, H]
        c = self.cfg
        T = x.shape[0]
        v = self.v_proj(x).view(T, c.n_h, c.d)  # V from x, before LFA
        f = self.lf_gate(x) if c.lfa else x
        qk = torch.cat([self.q_proj(f), self.k_proj(f)], dim=-1).view(T, c.n_h, 2 * c.d)
        q, k = qk[..., :c.d], qk[..., c.d:]  # per head [Q_h | K_h] (the misnamed q_proj/k_proj)
        q = apply_rope(q, cos, sin, c.rd)
        k = apply_rope(k, cos, sin, c.rd)
        s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(c.d)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        s = s.masked_fill(mask, float("-inf"))
        a = torch.softmax(s, dim=-1)
        o = torch.einsum("hts,shd->thd", a, v).reshape(T, c.P)
        return self.o_proj(o)


class AttentionRouter(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.query = nn.Linear(cfg.H, cfg.E, bias=False)
        self.key = nn.Linear(cfg.H, cfg.E, bias=False)
        self.value = nn.Linear(cfg.H, cfg.E, bias=False)

    def forward(self, u):  # u: [T, H] -> router logits [T, E]
        q, k, v = self.query(u), self.key(u), self.value(u)
        a = torch.softmax(q[:, :, None] * k[:, None, :], dim=-1)  # [T, E, E]: a[t,i,j] = softmax_j(q_i k_j)
        return torch.einsum("tij,tj->ti", a, v)  # no scaling


class LinearRouter(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cfg.E, cfg.H))

    def forward(self, u):
        return u @ self.weight.t()


class Expert(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.F = cfg.F
        self.w1 = nn.Linear(cfg.H, 2 * cfg.F, bias=False)  # fused [gate; up]
        self.w2 = nn.Linear(cfg.F, cfg.H, bias=False)

    def forward(self, u):
        g = self.w1(u)
        return self.w2(F.silu(g[:, :self.F]) * g[:, self.F:])


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.gate = AttentionRouter(cfg) if cfg.router == "attention" else LinearRouter(cfg)
        self.experts = nn.ModuleList([Expert(cfg) for _ in range(cfg.E)])

    def forward(self, u):  # u: [T, H] -> ([T, H], router logits [T, E])
        c = self.cfg
        logits = self.gate(u)
        p = torch.softmax(logits, dim=-1)
        w, idx = torch.topk(p, c.k, dim=-1)
        if c.norm_topk:
            w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(u)
        for e in range(c.E):  # tokens grouped by expert
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel():
                out.index_add_(0, tok, self.experts[e](u[tok]) * w[tok, slot][:, None])
        return out, logits


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.H, cfg.eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.H, cfg.eps)
        self.mlp = MoE(cfg)

    def forward(self, h, cos, sin):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        y, logits = self.mlp(self.post_attention_layernorm(h))
        return h + y, logits


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.V, cfg.H)
        self.layers = nn.ModuleList([Layer(cfg) for _ in range(cfg.L)])
        self.norm = RMSNorm(cfg.H, cfg.eps)


class Yuan2Ref(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        if not cfg.tied:
            self.lm_head = nn.Linear(cfg.H, cfg.V, bias=False)

    def load_hf(self, tensors):
        """tensors: HF state_dict (name -> numpy float32). Tied models take lm_head from the embedding."""
        sd = {k: torch.from_numpy(v.copy()) for k, v in tensors.items()}
        if self.cfg.tied:
            sd.pop("lm_head.weight", None)
        self.load_state_dict(sd, strict=True)
        return self

    @torch.no_grad()
    def forward(self, ids, rope_mode="fp32"):
        """ids: list of T token ids -> (logits [T, V], router logits per layer [L][T, E])."""
        T = len(ids)
        cos, sin = rope_table(self.cfg, T, rope_mode)
        h = self.model.embed_tokens(torch.tensor(ids, dtype=torch.long))
        routers = []
        for layer in self.model.layers:
            h, rl = layer(h, cos, sin)
            routers.append(rl)
        h = self.model.norm(h)
        w = self.model.embed_tokens.weight if self.cfg.tied else self.lm_head.weight
        return h @ w.t(), routers


def topk_margin(router_logits, k):
    """Smallest gap between the k-th and (k+1)-th largest router logit over all tokens and layers."""
    m = float("inf")
    for rl in router_logits:
        s = torch.sort(rl.double(), dim=-1, descending=True).values
        if s.shape[-1] > k:
            m = min(m, float((s[:, k - 1] - s[:, k]).min()))
    return m
