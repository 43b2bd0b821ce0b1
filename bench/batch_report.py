"""Batched-decode report: bench/out/batch.jsonl (lines of `moec bench -b B --json`, with the llama.cpp peer's
result nested as "peer" when it ran) -> batch.md (table) and batch.svg (decode tokens/s over all sequences
against B, one line per model, engine and thread count).
usage: batch_report.py batch.jsonl batch.md batch.svg   (prints the markdown to stdout too)"""
import json
import sys
from html import escape

src, md_path, svg_path = sys.argv[1:4]
meta, series = {}, {}  # (model, engine, threads) -> {B: (pp_tps, tg_tps)}
for line in open(src):
    r = json.loads(line)
    if r.get("kind") == "meta":
        meta = r
        continue
    model = r["model"].split("/")[-1].replace(".gguf", "")
    B = r.get("batch", 1)
    series.setdefault((model, "moec", r["threads"]), {})[B] = (r["pp_tps"], r["tg_tps"])
    p = r.get("peer")
    if p:
        series.setdefault((model, "llama.cpp", p["threads"]), {})[B] = (p["pp_tps"], p["tg_tps"])

md = ["# Batched decode", "",
      f"- date {meta.get('date', '?')}, commit {meta.get('commit', '?')}, load at start {meta.get('load_start', '?')}",
      f"- each of B sequences: a prompt of {meta.get('n_prompt', '?')} tokens (all B prompts in one call), then "
      f"{meta.get('n_gen', '?')} decode steps of one token per sequence; tokens/s count every sequence", "",
      "| model | engine | threads | B | prompt tok/s | decode tok/s | decode vs B = 1 |", "|---|---|---|---|---|---|---|"]
for (model, eng, t), pts in sorted(series.items()):
    base = pts.get(1, (0, 0))[1]
    for B in sorted(pts):
        pp, tg = pts[B]
        md.append(f"| {model} | {eng} | {t} | {B} | {pp:.1f} | {tg:.2f} | {tg / base:.2f}× |" if base else
                  f"| {model} | {eng} | {t} | {B} | {pp:.1f} | {tg:.2f} | — |")
open(md_path, "w").write("\n".join(md) + "\n")
print("\n".join(md))

# line chart: x = B (log2 spaced), y = decode tok/s
W, H, L, R, T, Bm = 760, 420, 60, 250, 30, 40
allB = sorted({B for pts in series.values() for B in pts}) or [1]
ymax = max([tg for pts in series.values() for _, tg in pts.values()] + [1]) * 1.1
xpos = {B: L + (W - L - R) * (i / max(1, len(allB) - 1)) for i, B in enumerate(allB)}
ypos = lambda v: H - Bm - (H - Bm - T) * v / ymax
palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<text x="{L}" y="18" font-weight="bold">Batched decode: tokens/s of all sequences vs sequences per step</text>',
       f'<line x1="{L}" y1="{H - Bm}" x2="{W - R}" y2="{H - Bm}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - Bm}" stroke="black"/>']
for B in allB:
    svg.append(f'<text x="{xpos[B]:.1f}" y="{H - Bm + 16}" text-anchor="middle">{B}</text>')
svg.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - 6}" text-anchor="middle">sequences B</text>')
for k in range(5):
    v = ymax * k / 4
    svg.append(f'<text x="{L - 6}" y="{ypos(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
for i, ((model, eng, t), pts) in enumerate(sorted(series.items())):
    c = palette[i % len(palette)]
    dash = "" if eng == "moec" else ' stroke-dasharray="5,4"'
    xs = sorted(pts)
    path = " ".join(f"{xpos[B]:.1f},{ypos(pts[B][1]):.1f}" for B in xs)
    svg.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
    for B in xs:
        svg.append(f'<circle cx="{xpos[B]:.1f}" cy="{ypos(pts[B][1]):.1f}" r="3" fill="{c}"/>')
    y = T + 16 * i
    svg.append(f'<line x1="{W - R + 12}" y1="{y}" x2="{W - R + 36}" y2="{y}" stroke="{c}" stroke-width="2"{dash}/>')
    svg.append(f'<text x="{W - R + 42}" y="{y + 4}">{escape(f"{model} {eng} {t}t")}</text>')
svg.append("</svg>")
open(svg_path, "w").write("\n".join(svg) + "\n")
