#!/usr/bin/env python3
"""Turn bench/out/results.jsonl (written by bench/models.sh) into results.md (tables: tokens/s of moec and
llama.cpp, ratios, the bandwidth bound of decode and the fraction of it reached) and results.svg (bar chart).
usage: report.py results.jsonl results.md results.svg   (prints the markdown to stdout too)"""
import json, os, sys
from html import escape

src, md_path, svg_path = sys.argv[1:4]
rows = [json.loads(l) for l in open(src) if l.strip()]
meta = next((r for r in rows if r.get("kind") == "meta"), {})
end = next((r for r in rows if r.get("kind") == "end"), {})
bw = {}  # threads -> the best of the measurements (before and after the runs)
for r in rows:
    if r.get("kind") == "bw" and (r["threads"] not in bw or r["best_gbps"] > bw[r["threads"]]["best_gbps"]):
        bw[r["threads"]] = r
runs = [r for r in rows if r.get("kind") == "run"]

def f(x, d=2):
    return "—" if x is None else f"{x:.{d}f}"

ENGINES = ("moec", "moec-base", "moec-nommap", "llama.cpp")  # moec-nommap: moec bench --no-mmap (BENCH_NOMMAP=1)
# index: (model, threads) -> {engine: run}
groups = {}
for r in runs:
    g = groups.setdefault((r["model"], r["threads"]), {})
    old = g.get(r["engine"])
    if old is None or old.get("error"):
        g[r["engine"]] = dict(r, n_rounds=1)
    elif not r.get("error"):  # several rounds: the best of each phase (interference only slows down)
        old["n_rounds"] += 1
        for k in ("pp_tps", "tg_tps"):
            old[k] = max(old[k], r[k])
        old["rss_max_mb"] = max(old.get("rss_max_mb") or 0, r.get("rss_max_mb") or 0) or None
models = []
for r in runs:
    if r["model"] not in models: models.append(r["model"])

out = []
out.append(f"# moec benchmark results\n")
out.append(f"- date {meta.get('date', '?')}, commit {meta.get('commit', '?')}{' (+ uncommitted changes)' if meta.get('dirty') else ''}")
out.append(f"- CPU: {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores; load average at start {meta.get('load_start', '?')}, "
           f"at end {end.get('load_end', '?')} (a load above 0 means other jobs shared the cores: numbers are noisy)")
out.append(f"- OpenMP wait policy of moec: OMP_WAIT_POLICY={meta.get('omp_wait_policy', 'default')}, "
           f"GOMP_SPINCOUNT={meta.get('gomp_spincount', 'default')}" +
           (f"; engine moec-base = `{meta['base']}` (another moec build, measured right after moec)" if meta.get("base") else ""))
out.append(f"- prompt {meta.get('n_prompt')} tokens in one batch (pp), then {meta.get('n_gen')} greedy decode steps (tg), "
           f"best of {meta.get('reps', 1)} repetition(s) x {meta.get('rounds', 1)} round(s); "
           "moec: `moec bench` (model_forward time only); llama.cpp: node-llama-cpp's prebuilt llama.cpp, its own "
           "perf counters (`llama_perf_context`), see docs/performance.md")
if bw:
    out.append("- read bandwidth (`moec bench --bandwidth`, 1 GiB, best of 5 passes before and 5 after the runs): " +
               ", ".join(f"{t} thread{'s' if t > 1 else ''} {bw[t]['best_gbps']:.1f} GB/s" for t in sorted(bw)))
out.append("")
out.append("| model | threads | engine | pp tok/s | pp GFLOP/s | tg tok/s | moec/llama.cpp pp | moec/llama.cpp tg | "
           "weights/token MB | tg bound tok/s | tg % of bound | peak RSS MB | first tokens agree |")
out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for m in models:
    for t in sorted({k[1] for k in groups if k[0] == m}):
        g = groups[(m, t)]
        wb = next((r.get("weight_bytes_per_token") for r in g.values() if r.get("weight_bytes_per_token")), None)
        fl = next((r.get("flops_per_token") for r in g.values() if r.get("flops_per_token")), None)
        bound = bw[t]["best_gbps"] * 1e9 / wb if (wb and t in bw) else None
        mo, ll = g.get("moec"), g.get("llama.cpp")
        agree = "—"
        if mo and ll and mo.get("tokens") and ll.get("tokens"):
            a, b = mo["tokens"], ll["tokens"]
            k = 0
            while k < min(len(a), len(b)) and a[k] == b[k]: k += 1
            agree = f"{k}/{min(len(a), len(b))}"
        for eng in ENGINES:
            r = g.get(eng)
            if not r: continue
            name = os.path.basename(m)
            if r.get("error"):
                out.append(f"| {name} | {t} | {eng} | error: {r['error'][:80]} | | | | | | | | | |")
                continue
            ratio_pp = ratio_tg = None
            if eng != "llama.cpp" and ll and not ll.get("error"):
                ratio_pp, ratio_tg = r["pp_tps"] / ll["pp_tps"], r["tg_tps"] / ll["tg_tps"]
            frac = r["tg_tps"] / bound * 100 if bound else None
            gf = r["pp_tps"] * fl / 1e9 if fl else None
            out.append(f"| {name} | {t} | {eng} | {f(r['pp_tps'])} | {f(gf, 1)} | {f(r['tg_tps'])} | {f(ratio_pp, 3)} | {f(ratio_tg, 3)} | "
                       f"{f(wb / 1e6 if wb else None, 1)} | {f(bound, 1)} | {f(frac, 1)} | {f(r.get('rss_max_mb'), 0)} | "
                       f"{agree if eng == 'moec' else ''} |")
out.append("")
out.append("tg bound = read bandwidth / bytes of weights read per decoded token (active experts, attention, lm head, "
           "one embedding row; from `moec info`). pp GFLOP/s = pp tok/s x FLOPs per token at context P (2 x matmul weights + attention). Ratios > 1 mean moec is faster. Above 100% of the bound means the bandwidth was measured at a busier moment than the decode. \"first tokens agree\": greedy tokens "
           "of moec and llama.cpp from the same prompt ids (a cross-check of both forwards on our GGUF file).")
md = "\n".join(out) + "\n"
open(md_path, "w").write(md)
sys.stdout.write(md)

# SVG: two panels (pp, tg), one bar group per (model, threads), moec and llama.cpp bars, values printed.
bars = []
for m in models:
    for t in sorted({k[1] for k in groups if k[0] == m}):
        g = groups[(m, t)]
        bars.append((f"{os.path.basename(m).replace('.gguf', '')} t={t}",
                     {e: r for e, r in g.items() if not r.get("error")}))
colors = {"moec": "#1f77b4", "moec-base": "#9ecae1", "moec-nommap": "#2ca02c", "llama.cpp": "#ff7f0e"}
colors = {e: c for e, c in colors.items() if any(e in g for _, g in bars)}
W, bh, gap, left, right = 900, 14, 10, 230, 80
panel_h = len(bars) * (len(colors) * bh + gap) + 40
H = 2 * panel_h + 60
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="10" y="20" font-size="14" font-weight="bold">moec vs llama.cpp, tokens/s '
       f'({escape(meta.get("date", ""))}, commit {escape(meta.get("commit", ""))}; shared 2-core machine, noisy)</text>']
for pi, (key, title) in enumerate((("pp_tps", f"prompt processing ({meta.get('n_prompt')} tokens)"),
                                   ("tg_tps", f"decode ({meta.get('n_gen')} tokens)"))):
    y0 = 40 + pi * panel_h
    vmax = max([r[key] for _, g in bars for r in g.values()] + [1e-9])
    svg.append(f'<text x="10" y="{y0 + 14}" font-weight="bold">{escape(title)}</text>')
    y = y0 + 26
    for label, g in bars:
        svg.append(f'<text x="{left - 6}" y="{y + bh + 4}" text-anchor="end">{escape(label)}</text>')
        for eng in colors:
            r = g.get(eng)
            if r:
                w = max(1.0, (W - left - right) * r[key] / vmax)
                svg.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bh - 2}" fill="{colors[eng]}"/>')
                svg.append(f'<text x="{left + w + 4:.1f}" y="{y + bh - 4}">{r[key]:.2f}</text>')
            y += bh
        y += gap
for i, (eng, c) in enumerate(colors.items()):
    x0 = W - 100 * len(colors) + i * 100
    svg.append(f'<rect x="{x0}" y="{H - 18}" width="12" height="12" fill="{c}"/>'
               f'<text x="{x0 + 16}" y="{H - 7}">{eng}</text>')
svg.append("</svg>")
open(svg_path, "w").write("\n".join(svg) + "\n")
