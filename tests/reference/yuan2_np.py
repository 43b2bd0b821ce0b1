"""Second, deliberately different implementation of the same model, used only to check yuan2_ref.py:
numpy float64, token-by-token decode with a KV cache and the HF-style LFA cache (the last two normed
inputs x[t-2], x[t-1]), explicit loops over heads, router experts and conv taps, Q/K de-interleaved by
row indices of the fused Megatron-style weight, RoPE as a complex rotation, and its own RoPE tables built
with numpy bf16 rounding. If it agrees with the batched torch model, the two readings of the spec agree."""
import math

import numpy as np

from st_io import bf16_bits_to_f32, f32_to_bf16_bits


def bf16(a):
    return bf16_bits_to_f32(f32_to_bf16_bits(np.asarray(a, dtype=np.float32))).astype(np.float64)


def tables(cfg, T, mode):
    """cos, sin [T, rd/2] float64."""
    i = np.arange(0, cfg.rd, 2, dtype=np.float64)
    inv32 = (1.0 / np.float32(cfg.theta) ** (i / cfg.rd).astype(np.float32)).astype(np.float32)
    if mode == "hf":
        pos = bf16(np.arange(T, dtype=np.float32))
        ang = bf16((pos[:, None] * bf16(inv32)[None, :]).astype(np.float32))  # exact product, one rounding
        return bf16(np.cos(ang).astype(np.float32)), bf16(np.sin(ang).astype(np.float32))
    pos = np.arange(T, dtype=np.float32)
    ang = (pos[:, None] * inv32[None, :]).astype(np.float32)
    return np.cos(ang), np.sin(ang)


def rmsnorm(x, w, eps):
    return x / math.sqrt(float(np.mean(x * x)) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


class NpModel:
    def __init__(self, cfg, tensors):
        self.c = cfg
        self.t = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
        c = cfg
        # Fused Megatron get_query_key [2P, H] = cat(q_proj, k_proj); rows of head h: [Q_h (d) | K_h (d)].
        self.Wq, self.Wk = [], []
        for l in range(c.L):
            p = "model.layers.%d.self_attn." % l
            qk = np.concatenate([self.t[p + "q_proj.weight"], self.t[p + "k_proj.weight"]], axis=0)
            qrows = [2 * c.d * h + j for h in range(c.n_h) for j in range(c.d)]
            krows = [2 * c.d * h + c.d + j for h in range(c.n_h) for j in range(c.d)]
            self.Wq.append(qk[qrows])
            self.Wk.append(qk[krows])

    def decode(self, ids, mode):
        """Feed ids one at a time; returns logits [T, V] and router logits [L][T, E]."""
        c, t = self.c, self.t
        T = len(ids)
        cos, sin = tables(c, T, mode)
        K = [[] for _ in range(c.L)]
        Vc = [[] for _ in range(c.L)]
        lfa = [np.zeros((2, c.H)) for _ in range(c.L)]  # x[t-2], x[t-1]
        out = np.zeros((T, c.V))
        routers = [np.zeros((T, c.E)) for _ in range(c.L)]
        half = c.rd // 2
        for pos, tok in enumerate(ids):
            h = t["model.embed_tokens.weight"][tok].copy()
            for l in range(c.L):
                p = "model.layers.%d." % l
                x = rmsnorm(h, t[p + "input_layernorm.weight"], c.eps)
                v = t[p + "self_attn.v_proj.weight"] @ x
                if c.lfa:
                    g = p + "self_attn.lf_gate."
                    w1, b1 = t[g + "conv1.weight"], t[g + "conv1.bias"]
                    w2, b2 = t[g + "conv2.weight"], t[g + "conv2.bias"]
                    xm2, xm1 = lfa[l]
                    # o1[t-1] uses x[t-2], x[t-1]; at pos 0 there is no o1[-1] (it is zero, not b1)
                    o1_prev = b1 + w1[:, :, 0, 0] @ xm2 + w1[:, :, 1, 0] @ xm1 if pos > 0 else np.zeros(c.H // 2)
                    o1 = b1 + w1[:, :, 0, 0] @ xm1 + w1[:, :, 1, 0] @ x
                    o2 = b2 + w2[:, :, 0, 0] @ o1_prev + w2[:, :, 1, 0] @ o1
                    lfa[l] = np.stack([xm1, x])
                    f = rmsnorm(o2 + x, t[g + "output_layernorm.weight"], c.eps)
                else:
                    f = x
                q = (self.Wq[l] @ f).reshape(c.n_h, c.d)
                k = (self.Wk[l] @ f).reshape(c.n_h, c.d)
                rot = cos[pos] + 1j * sin[pos]
                for hh in range(c.n_h):
                    for arr in (q, k):
                        z = (arr[hh, :half] + 1j * arr[hh, half:c.rd]) * rot
                        arr[hh, :half], arr[hh, half:c.rd] = z.real, z.imag
                K[l].append(k)
                Vc[l].append(v.reshape(c.n_h, c.d))
                att = np.zeros((c.n_h, c.d))
                for hh in range(c.n_h):
                    s = np.array([q[hh] @ kk[hh] for kk in K[l]]) / math.sqrt(c.d)
                    s = np.exp(s - s.max())
                    s /= s.sum()
                    att[hh] = sum(s[j] * Vc[l][j][hh] for j in range(len(s)))
                h = h + t[p + "self_attn.o_proj.weight"] @ att.reshape(-1)
                u = rmsnorm(h, t[p + "post_attention_layernorm.weight"], c.eps)
                if c.router == "attention":
                    rq = t[p + "mlp.gate.query.weight"] @ u
                    rk = t[p + "mlp.gate.key.weight"] @ u
                    rv = t[p + "mlp.gate.value.weight"] @ u
                    lg = np.zeros(c.E)
                    for i in range(c.E):
                        s = np.array([rq[i] * rk[j] for j in range(c.E)])
                        s = np.exp(s - s.max())
                        s /= s.sum()
                        lg[i] = sum(s[j] * rv[j] for j in range(c.E))
                else:
                    lg = t[p + "mlp.gate.weight"] @ u
                routers[l][pos] = lg
                order = sorted(range(c.E), key=lambda e: -lg[e])[:c.k]
                pr = np.exp(lg - lg.max())
                pr /= pr.sum()
                wsel = np.array([pr[e] for e in order])
                if c.norm_topk:
                    wsel /= wsel.sum()
                y = np.zeros(c.H)
                for e, we in zip(order, wsel):
                    w1 = t[p + "mlp.experts.%d.w1.weight" % e]
                    gate, up = w1[:c.F] @ u, w1[c.F:] @ u
                    y += we * (t[p + "mlp.experts.%d.w2.weight" % e] @ (silu(gate) * up))
                h = h + y
            hn = rmsnorm(h, t["model.norm.weight"], c.eps)
            W = t["model.embed_tokens.weight"] if c.tied else t["lm_head.weight"]
            out[pos] = W @ hn
        return out, routers
