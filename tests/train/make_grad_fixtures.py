#!/usr/bin/python3
"""Gradient and optimizer fixtures for moec's trainer, from PyTorch autograd on the independent reference model
(tests/reference/yuan2_ref.py) in float64.

For each tiny model (attention router, linear router; LFA on, tied embeddings, rotary dims < head dim, P != H):
  fixtures/NAME.gguf        the weights in moec's GGUF layout (yuan2moe keys, F32 tensors)
  fixtures/NAME.grads.gguf  d(loss)/d(every tensor), same names and layout, plus keys
                            test.ids / test.targets (i32[T]), test.mask (f32[T]), test.loss (f64)
                            with loss = sum(ce * mask) / sum(mask) (Megatron's rule; one masked token)
  fixtures/NAME.aux.grads.gguf  the same with the auxiliary losses (--aux-lb 0.5 --aux-z 0.25), key test.loss
  fixtures/NAME.adamw.gguf  the weights after 10 AdamW steps on that batch (lr 1e-2, betas (0.9, 0.95),
                            eps 1e-8, weight decay 0.1 on tensors of >= 2 dims only, global-norm clip 1.0),
                            plus key test.losses (f64[10]): the loss before each step
The router margin (gap between the k-th and (k+1)-th router logit) is checked to exceed 1e-3 at every step, so
fp32 rounding in moec cannot flip a routing decision (else the seed is bumped).
Usage: /usr/bin/python3 tests/train/make_grad_fixtures.py   (deterministic: rewrites the same bytes)
"""
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as Fn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import yuan2_ref as ref  # noqa: E402

torch.set_num_threads(1)
OUT = os.path.join(HERE, "fixtures")
MARGIN = 1e-3
T = 8
STEPS = 10
LR, B1, B2, EPS, WD, CLIP = 1e-2, 0.9, 0.95, 1e-8, 0.1, 1.0
AUX_LB, AUX_Z = 0.5, 0.25  # large, so a wrong aux gradient cannot hide in the tolerance

MODELS = [
    ("tiny_attn", "attention"),
    ("tiny_linear", "linear"),
]


def config(router):
    return dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, attention_projection_size=24,
                vocab_size=40, rms_norm_eps=1e-6, max_position_embeddings=64, rotary_dim=6, rope_theta=10000.0,
                router_type=router, use_lfa=True, tie_word_embeddings=True,
                moe_config=dict(moe_num_experts=4, moe_top_k=2, ffn_hidden_size=20, norm_topk_prob=True))


# ---- GGUF writer (v3, F32 tensors only) -----------------------------------------------------------------
def _str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write_gguf(path, kvs, tensors):
    """kvs: list of (key, kind, value), kind in u32 i32 f32 f64 bool str arr_i32 arr_f32 arr_f64;
    tensors: list of (name, numpy float32 array in PyTorch order [.., ne1, ne0])."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
    codes = {"u32": (4, "<I"), "i32": (5, "<i"), "f32": (6, "<f"), "bool": (7, "<?"), "f64": (12, "<d")}
    arr = {"arr_i32": (5, "<i"), "arr_f32": (6, "<f"), "arr_f64": (12, "<d")}
    for k, kind, v in kvs:
        out += _str(k)
        if kind in codes:
            c, f = codes[kind]
            out += struct.pack("<I", c) + struct.pack(f, v)
        elif kind == "str":
            out += struct.pack("<I", 8) + _str(v)
        else:
            c, f = arr[kind]
            out += struct.pack("<IIQ", 9, c, len(v)) + b"".join(struct.pack(f, x) for x in v)
    off = 0
    blobs = []
    for name, a in tensors:
        a = np.ascontiguousarray(a, dtype=np.float32)
        ne = list(reversed(a.shape))
        out += _str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", 0, off)
        blobs.append((off, a.tobytes()))
        off += (a.nbytes + 31) // 32 * 32
    out += b"\0" * ((32 - len(out) % 32) % 32)
    data = bytearray(off)
    for o, b in blobs:
        data[o:o + len(b)] = b
    with open(path, "wb") as f:
        f.write(out + data)


def model_kvs(cfg, router):
    c = ref.Cfg(cfg)
    a = "yuan2moe."
    return [("general.architecture", "str", "yuan2moe"),
            (a + "context_length", "u32", cfg["max_position_embeddings"]),
            (a + "embedding_length", "u32", c.H), (a + "block_count", "u32", c.L),
            (a + "attention.head_count", "u32", c.n_h), (a + "attention.head_count_kv", "u32", c.n_h),
            (a + "attention.key_length", "u32", c.d), (a + "attention.value_length", "u32", c.d),
            (a + "attention.layer_norm_rms_epsilon", "f32", c.eps),
            (a + "rope.dimension_count", "u32", c.rd), (a + "rope.freq_base", "f32", c.theta),
            (a + "rope.table", "str", "fp32"),
            (a + "expert_count", "u32", c.E), (a + "expert_used_count", "u32", c.k),
            (a + "expert_feed_forward_length", "u32", c.F), (a + "leading_dense_block_count", "u32", 0),
            (a + "router", "str", router), (a + "lfa", "bool", True)]


# ---- HF <-> moec tensor layout ---------------------------------------------------------------------------
def to_moec(c, sd):
    """HF state_dict (name -> tensor) -> list of (moec name, numpy [.., ne1, ne0]) in model.c's order."""
    g = lambda k: sd[k].detach().double().numpy()  # noqa: E731
    out = [("token_embd.weight", g("model.embed_tokens.weight"))]
    for l in range(c.L):
        p = f"model.layers.{l}."
        qk = np.concatenate([g(p + "self_attn.q_proj.weight"), g(p + "self_attn.k_proj.weight")], 0)
        qk = qk.reshape(c.n_h, 2, c.d, c.H)  # per head [Q_h | K_h]
        c1 = g(p + "self_attn.lf_gate.conv1.weight")[..., 0].transpose(2, 0, 1)  # [2, H/2, H]
        c2 = g(p + "self_attn.lf_gate.conv2.weight")[..., 0].transpose(2, 0, 1)  # [2, H, H/2]
        b = f"blk.{l}."
        out += [(b + "attn_norm.weight", g(p + "input_layernorm.weight")),
                (b + "attn_q.weight", qk[:, 0].reshape(c.P, c.H)),
                (b + "attn_k.weight", qk[:, 1].reshape(c.P, c.H)),
                (b + "attn_v.weight", g(p + "self_attn.v_proj.weight")),
                (b + "attn_output.weight", g(p + "self_attn.o_proj.weight")),
                (b + "lfa_conv1.weight", c1), (b + "lfa_conv1.bias", g(p + "self_attn.lf_gate.conv1.bias")),
                (b + "lfa_conv2.weight", c2), (b + "lfa_conv2.bias", g(p + "self_attn.lf_gate.conv2.bias")),
                (b + "lfa_norm.weight", g(p + "self_attn.lf_gate.output_layernorm.weight")),
                (b + "ffn_norm.weight", g(p + "post_attention_layernorm.weight"))]
        if c.router == "attention":
            out += [(b + "ffn_router_q.weight", g(p + "mlp.gate.query.weight")),
                    (b + "ffn_router_k.weight", g(p + "mlp.gate.key.weight")),
                    (b + "ffn_router_v.weight", g(p + "mlp.gate.value.weight"))]
        else:
            out += [(b + "ffn_gate_inp.weight", g(p + "mlp.gate.weight"))]
        w1 = np.stack([g(p + f"mlp.experts.{e}.w1.weight") for e in range(c.E)])  # [E, 2F, H]
        w2 = np.stack([g(p + f"mlp.experts.{e}.w2.weight") for e in range(c.E)])  # [E, H, F]
        out += [(b + "ffn_gate_exps.weight", w1[:, :c.F]), (b + "ffn_up_exps.weight", w1[:, c.F:]),
                (b + "ffn_down_exps.weight", w2)]
    out += [("output_norm.weight", g("model.norm.weight"))]
    return out


def forward_loss(model, ids, tgt, mask, aux_lb=0.0, aux_z=0.0):
    """Differentiable forward (yuan2_ref's forward without no_grad) -> loss, min router margin.
    Optional auxiliary losses per MoE layer (moec's definitions, train.h): Switch load balancing
    aux_lb * E * sum_e f_e * P_e (f_e = fraction of the T*k routed slots, P_e = mean router probability) and
    z-loss aux_z * mean_t logsumexp(router logits)^2."""
    c = model.cfg
    cos, sin = ref.rope_table(c, len(ids), "fp32")
    h = model.model.embed_tokens(torch.tensor(ids))
    routers, aux = [], 0.0
    for layer in model.model.layers:
        h, rl = layer(h, cos, sin)
        routers.append(rl.detach())
        if aux_lb or aux_z:
            p = torch.softmax(rl, -1)
            idx = torch.topk(rl.detach(), c.k, -1).indices
            f = torch.zeros(c.E, dtype=rl.dtype).index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), dtype=rl.dtype))
            f = f / idx.numel()
            aux = aux + aux_lb * c.E * (f * p.mean(0)).sum() + aux_z * (torch.logsumexp(rl, -1) ** 2).mean()
    h = model.model.norm(h)
    logits = h @ model.model.embed_tokens.weight.t()
    ce = Fn.cross_entropy(logits, torch.tensor(tgt), reduction="none")
    m = torch.tensor(mask, dtype=logits.dtype)
    return (ce * m).sum() / m.sum() + aux, ref.topk_margin(routers, c.k)


def build(name, router, seed):
    cfg = config(router)
    c = ref.Cfg(cfg)
    torch.manual_seed(seed)
    model = ref.Yuan2Ref(c).double()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.2 * torch.randn_like(p) if "weight" in n else 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
            p.copy_(p.float().double())  # representable in fp32: the file holds exactly these values
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, c.V, (T + 1,), generator=g).tolist()
    inp, tgt = ids[:T], ids[1:]
    mask = [1.0] * T
    mask[3] = 0.0
    kvs = model_kvs(cfg, router)
    write_gguf(os.path.join(OUT, name + ".gguf"), kvs, to_moec(c, dict(model.named_parameters())))
    # gradients
    loss, margin = forward_loss(model, inp, tgt, mask)
    if margin < MARGIN:
        return False
    model.zero_grad()
    loss.backward()
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}
    write_gguf(os.path.join(OUT, name + ".grads.gguf"),
               kvs + [("test.ids", "arr_i32", inp), ("test.targets", "arr_i32", tgt), ("test.mask", "arr_f32", mask),
                      ("test.loss", "f64", float(loss))],
               to_moec(c, grads))
    # gradients with the auxiliary router losses
    loss, _ = forward_loss(model, inp, tgt, mask, AUX_LB, AUX_Z)
    model.zero_grad()
    loss.backward()
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}
    write_gguf(os.path.join(OUT, name + ".aux.grads.gguf"),
               kvs + [("test.loss", "f64", float(loss)), ("test.aux_lb", "f32", AUX_LB), ("test.aux_z", "f32", AUX_Z)],
               to_moec(c, grads))
    # 10 AdamW steps: decay exactly the tensors moec decays (>= 2 dims in moec's layout = >= 2 dims in HF)
    dec = [p for p in model.parameters() if p.dim() >= 2]
    nodec = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": dec, "weight_decay": WD}, {"params": nodec, "weight_decay": 0.0}],
                            lr=LR, betas=(B1, B2), eps=EPS)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss, margin = forward_loss(model, inp, tgt, mask)
        if margin < MARGIN:
            return False
        losses.append(float(loss))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
    write_gguf(os.path.join(OUT, name + ".adamw.gguf"), kvs + [("test.losses", "arr_f64", losses)],
               to_moec(c, dict(model.named_parameters())))
    print(f"{name}: seed {seed}, loss {losses[0]:.6f} -> {losses[-1]:.6f}, margin >= {MARGIN}")
    return True


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, router in MODELS:
        seed = 1
        while not build(name, router, seed):
            seed += 1


if __name__ == "__main__":
    main()
