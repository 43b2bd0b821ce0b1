#!/usr/bin/python3
"""Generate the small random Yuan2-M32-style checkpoints in HuggingFace layout under fixtures/, with the
expected logits. Deterministic: rerunning rewrites the same bytes (fixed seeds, one torch thread).

Each fixture dir holds config.json, model.safetensors (or shards + model.safetensors.index.json) and
meta.json {"seed", "router_margin", "cases": [{"name", "rope_table", "tokens", "logits"}]}, where
`logits` is a float32 .npy [T, V] computed by yuan2_ref.py in float64 from the stored (rounded) weights.

Checks run here (the script fails loudly otherwise):
  * top-k routing margin: the gap between the k-th and (k+1)-th router logit exceeds 1e-3 for every
    token, layer, rope mode and precision (token ids are drawn position by position and redrawn until
    the margin holds), so a 1e-4 engine error cannot flip a routing decision;
  * the torch model in fp32 agrees with fp64 (max err / max|logit| per row <= 1e-5);
  * the independent numpy decoder (yuan2_np.py) agrees with the torch fp64 full pass (<= 1e-9) and builds
    the same RoPE tables;
  * the HF bf16 table rounds positions (257 -> 256, 259 -> 260) as the spec says, and hf and fp32 logits
    of the long fixture differ by far more than the test tolerance (so the tests can tell them apart).
Usage: /usr/bin/python3 tests/reference/make_fixtures.py [--check]
  --check: write nothing; regenerate the weights (must equal the committed ones), recompute every case
           from the committed token ids, rerun the checks above (margins included) and require the stored
           logits to be reproduced bit for bit. (Regenerating in full also reproduces the token ids.)
"""
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st_io  # noqa: E402
import yuan2_np  # noqa: E402
import yuan2_ref as ref  # noqa: E402
from yuan2_cfg import make_config, make_weights  # noqa: E402,F401

torch.set_num_threads(1)
OUT = os.path.join(HERE, "fixtures")
MARGIN = 1e-3

# name, config (HF keys + our extensions), storage dtype, shards, write lm_head, cases [(T, rope_table)]
FIXTURES = [
    ("attn_e4_top2_lfa", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              attention_projection_size=64, vocab_size=96, experts=4, top_k=2, ffn=24),
     "F32", 1, False, [(7, "hf"), (1, "fp32"), (7, "fp32")]),
    ("attn_e32_top2_bf16_shards", dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                                       attention_projection_size=48, vocab_size=128, experts=32, top_k=2,
                                       ffn=8, rotary_percent=0.5, rope_theta=40890.0, tie=False),
     "BF16", 3, True, [(33, "fp32"), (33, "hf")]),
    ("linear_e4_top1_f16", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                attention_projection_size=32, vocab_size=64, experts=4, top_k=1, ffn=32,
                                rotary_dim=16, router_type="linear"),
     "F16", 1, True, [(1, "fp32"), (7, "hf")]),
    ("linear_e8_top2_nolfa", dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                  attention_projection_size=32, vocab_size=80, experts=8, top_k=2, ffn=16,
                                  rotary_dim=4, router_type="linear", use_lfa=False, tie=False),
     "F32", 2, True, [(33, "hf"), (33, "fp32")]),
    ("attn_e4_top1_long", dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               attention_projection_size=32, vocab_size=64, experts=4, top_k=1, ffn=16,
                               max_pos=512),
     "F32", 1, False, [(300, "hf"), (300, "fp32")]),
]


def choose_tokens(cfg, models, modes, T, rng):
    """Random ids, drawn position by position: a candidate is kept only if the top-k routing margin of
    its position exceeds MARGIN in every layer, rope mode and precision (causality: later tokens cannot
    change it)."""
    ids = []
    for pos in range(T):
        for attempt in range(1000):
            cand = ids + [int(rng.integers(0, cfg.V))]
            ok = True
            for m in models:
                for mode in modes:
                    _, r = m(cand, mode)
                    if ref.topk_margin([rl[-1:] for rl in r], cfg.k) <= MARGIN:
                        ok = False
            if ok:
                ids = cand
                break
        else:
            raise RuntimeError("no token with a routing margin > %g at position %d" % (MARGIN, pos))
    return ids


def rel_err(a, b):
    """max over rows of max|a-b| / max|b| (the metric the tests use)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)).max())


def build(name, spec, dtype, shards, lm_head, cases, write):
    seed = sum(ord(ch) for ch in name) * 1000
    conf = make_config(spec)
    cfg = ref.Cfg(conf)
    rng = np.random.default_rng(seed)
    w = {k: st_io.round_to(v, dtype) for k, v in make_weights(cfg, rng, lm_head).items()}
    m64 = ref.Yuan2Ref(cfg).double().load_hf(w)
    m64.double()
    m32 = ref.Yuan2Ref(cfg).load_hf(w)
    toks = {}
    if write:
        for T in sorted({T for T, _ in cases}):
            toks[T] = choose_tokens(cfg, (m32, m64), sorted({md for t, md in cases if t == T}), T, rng)
    else:  # check the committed fixture: same weights; its stored tokens (their margins are rechecked below)
        d = os.path.join(OUT, name)
        back = st_io.read_dir(d)
        assert set(back) == set(w) and all(np.array_equal(back[k], w[k]) for k in w), (name, "weights")
        with open(os.path.join(d, "meta.json")) as f:
            stored = {c["name"]: c for c in json.load(f)["cases"]}
        for c in stored.values():
            toks[len(c["tokens"])] = c["tokens"]
    results, margin = [], float("inf")
    for T, mode in cases:
        lg64, r64 = m64(toks[T], mode)
        lg32, r32 = m32(toks[T], mode)
        margin = min(margin, ref.topk_margin(r64, cfg.k), ref.topk_margin(r32, cfg.k))
        results.append((T, mode, lg64.numpy(), lg32.numpy()))
    assert margin > MARGIN, (name, margin)
    npm = yuan2_np.NpModel(cfg, w)
    meta_cases = []
    for T, mode, lg64, lg32 in results:
        e32 = rel_err(lg32, lg64)
        assert e32 <= 1e-5, (name, T, mode, "fp32 vs fp64", e32)
        c_t, s_t = ref.rope_table(cfg, T, mode)
        c_n, s_n = yuan2_np.tables(cfg, T, mode)
        tol = 0 if mode == "hf" else 1e-6
        assert np.abs(c_t.numpy() - c_n).max() <= tol and np.abs(s_t.numpy() - s_n).max() <= tol, (name, mode)
        lg_np, _ = npm.decode(toks[T], mode)
        enp = rel_err(lg_np, lg64)
        # hf tables are bit-identical; fp32 cos/sin of numpy and torch may differ by 1 ulp
        assert enp <= (1e-9 if mode == "hf" else 1e-6), (name, T, mode, "numpy decode vs torch", enp)
        cname = "t%d_%s" % (T, mode)
        print("  %-28s %-8s fp32-vs-fp64 %.1e  numpy-decode-vs-torch %.1e" % (name, cname, e32, enp))
        meta_cases.append({"name": cname, "rope_table": mode, "tokens": toks[T], "logits": cname + ".npy"})
        if write:
            np.save(os.path.join(OUT, name, cname + ".npy"), lg64.astype(np.float32))
        else:
            assert stored[cname]["tokens"] == toks[T], (name, cname, "tokens")
            old = np.load(os.path.join(OUT, name, cname + ".npy"))
            assert np.array_equal(old, lg64.astype(np.float32)), (name, cname, "logits not reproduced")
    if name == "attn_e4_top1_long":
        hf = [r for r in results if r[1] == "hf"][0][2]
        fp = [r for r in results if r[1] == "fp32"][0][2]
        d = rel_err(hf, fp)
        d_late = rel_err(hf[257:], fp[257:])
        print("  hf vs fp32 rope tables: logits differ by %.2e (positions > 256: %.2e)" % (d, d_late))
        assert d_late > 1e-2
    print("  %s: seed %d, routing margin %.3e" % (name, seed, margin))
    meta = {"seed": seed, "router_margin": round(margin, 6), "storage_dtype": dtype, "shards": shards,
            "lm_head_in_file": lm_head, "cases": meta_cases}
    if write:
        d = os.path.join(OUT, name)
        for f in os.listdir(d) if os.path.isdir(d) else []:
            if f.endswith(".safetensors") or f.endswith(".index.json"):
                os.remove(os.path.join(d, f))
        order = list(w.items())
        st_io.write_dir(d, [(k, v, dtype) for k, v in order], shards)
        # the stored values read back are the values the reference used
        back = st_io.read_dir(d)
        assert set(back) == set(w) and all(np.array_equal(back[k], w[k]) for k in w)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(conf, f, indent=2)
            f.write("\n")
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")


def spec_facts():
    cfg = ref.Cfg(make_config(dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   attention_projection_size=32, vocab_size=64, experts=4, top_k=1, ffn=16)))
    c, s = ref.rope_table_hf(cfg, 300)
    assert torch.equal(c[257], c[256]) and torch.equal(c[259], c[260]) and not torch.equal(c[258], c[256])
    pos = torch.arange(300, dtype=torch.bfloat16)
    assert pos[257] == 256 and pos[259] == 260 and pos[258] == 258


def main():
    write = "--check" not in sys.argv
    spec_facts()
    for name, spec, dtype, shards, lm_head, cases in FIXTURES:
        if write:
            os.makedirs(os.path.join(OUT, name), exist_ok=True)
        build(name, spec, dtype, shards, lm_head, cases, write)
    print("reference checks passed")
    if write:
        total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
        print("fixtures: %d bytes" % total)
        assert total < 2_000_000


if __name__ == "__main__":
    main()
