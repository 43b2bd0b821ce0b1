#!/usr/bin/python3
"""PyTorch peer of `moec train` for bench/train.sh: trains the same yuan2moe model (the reference model of
tests/reference/yuan2_ref.py, loaded from the same GGUF by tests/train/gguf_ref.py, so the initial weights are the
same) on the same token-id lines with the same step: loss = mean cross-entropy over the B·T tokens of the batch,
global-norm clipping 1.0, AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on tensors of >= 2 dims), constant lr.

The reference model runs one sequence at a time; here the same modules run a whole batch [B, T] at once (every
projection is one [B·T, in] x [in, out] product, the experts take the tokens of all rows routed to them), which is
how one would train it in PyTorch. Prints one line per step and a final `RESULT` line (key=value) for the script.

Usage: train_torch.py MODEL.gguf IDS.txt --batch B --seq T --steps N --warmup W --threads N [--lr LR]
"""
import argparse
import math
import os
import resource
import sys
import time

import torch
import torch.nn.functional as Fn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "train"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
import gguf_ref  # noqa: E402
import yuan2_ref as ref  # noqa: E402


def lfa(g, x):  # LFGate over a batch, x: [B, T, H]
    T = x.shape[1]
    y = x.transpose(1, 2)[..., None]  # [B, H, T, 1]
    o1 = g.conv1(y)[:, :, :T, :]
    o2 = g.conv2(o1)[:, :, :T, :]
    return g.output_layernorm(o2[..., 0].transpose(1, 2) + x)


def attention(a, x, cos, sin, mask):  # ref.Attention over a batch, x: [B, T, H]
    c = a.cfg
    B, T, _ = x.shape
    v = a.v_proj(x).view(B, T, c.n_h, c.d)
    f = lfa(a.lf_gate, x) if c.lfa else x
    qk = torch.cat([a.q_proj(f), a.k_proj(f)], dim=-1).view(B, T, c.n_h, 2 * c.d)
    q, k = ref.apply_rope(qk[..., :c.d], cos, sin, c.rd), ref.apply_rope(qk[..., c.d:], cos, sin, c.rd)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, n_h, T, d]
    s = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(c.d)
    p = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1)
    o = torch.matmul(p, v).transpose(1, 2).reshape(B, T, c.P)
    return a.o_proj(o)


def moe(mlp, u):  # ref.MoE over the tokens of the whole batch, u: [N, H]
    c = mlp.cfg
    p = torch.softmax(mlp.gate(u), dim=-1)
    w, idx = torch.topk(p, c.k, dim=-1)
    w = w / w.sum(-1, keepdim=True)
    out = torch.zeros_like(u)
    for e in range(c.E):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        if tok.numel():
            out.index_add_(0, tok, mlp.experts[e](u[tok]) * w[tok, slot][:, None])
    return out


def loss_fn(model, ids, tgt, cos, sin, mask):
    B, T = ids.shape
    inner = model.model
    h = inner.embed_tokens(ids)
    for layer in inner.layers:
        h = h + attention(layer.self_attn, layer.input_layernorm(h), cos, sin, mask)
        h = h + moe(layer.mlp, layer.post_attention_layernorm(h).reshape(B * T, -1)).view(B, T, -1)
    h = inner.norm(h)
    logits = h.reshape(B * T, -1) @ inner.embed_tokens.weight.t()  # tied output
    return Fn.cross_entropy(logits, tgt.reshape(-1))


def blas_library():
    """The BLAS shared object this process mapped (torch's BLAS_INFO=generic build calls libblas.so.3)."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if "blas" in p or "mkl" in p or "dnnl" in p:
                libs.add(os.path.realpath(p))
    return ",".join(sorted(libs)) or "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, _ = gguf_ref.load_reference(a.model)
    model = model.float()
    B, T = a.batch, a.seq
    rows = []
    with open(a.ids) as f:
        for line in f:
            v = [int(x) for x in line.replace(",", " ").split()]
            if len(v) >= T + 1:
                rows.append(v[:T + 1])
    assert rows, "no line of T+1 ids"
    cos, sin = ref.rope_table(model.cfg, T, "fp32")
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    nxt = 0
    losses, times, cpus = [], [], []
    for step in range(a.warmup + a.steps):
        batch = torch.tensor([rows[(nxt + r) % len(rows)] for r in range(B)], dtype=torch.long)
        nxt += B
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch[:, :T], batch[:, 1:], cos, sin, mask)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        cpus.append(time.process_time() - c0)
        losses.append(float(loss))
        times.append(dt)
        print(f"torch step {step + 1}  loss {float(loss):.4f}  |g| {float(gn):.3g}  {B * T / dt:.0f} tok/s"
              + ("  (warm-up)" if step < a.warmup else ""), file=sys.stderr)
    timed = times[a.warmup:]
    tps = B * T / min(timed)  # the fastest timed step (bench/train.sh takes the same for moec)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    cpu_tps = B * T * a.steps / sum(cpus[a.warmup:])  # tokens per CPU second (all threads)
    print("RESULT tok_s=%.2f cpu_tok_s=%.2f rss_mb=%.1f losses=%s blas=%s threads=%d" %
          (tps, cpu_tps, rss, ",".join("%.4f" % x for x in losses), blas_library(), torch.get_num_threads()))


if __name__ == "__main__":
    main()
