#!/usr/bin/python3
"""Compare `moec tokenize` with recorded reference ids (llama.cpp .inp/.out format).
usage: ref_check.py MOEC MODEL INP OUT  -> exit 0 if all cases match, else prints the first failures."""
import subprocess, sys

moec, model, inp, out = sys.argv[1:5]
sep = "\n__ggml_vocab_test__\n"
cases = open(inp, "rb").read().decode("utf-8").split(sep)
if cases and cases[-1] == "":
    cases.pop()
expected = open(out, encoding="utf-8").read().split("\n")
if expected and expected[-1] == "":
    expected.pop()
if len(cases) != len(expected):
    sys.exit(f"{inp}: {len(cases)} cases but {out} has {len(expected)} lines")
data = b"".join(c.encode("utf-8") + b"\0" for c in cases)
r = subprocess.run([moec, "tokenize", "-m", model, "--ids", "--nul"], input=data, capture_output=True)
if r.returncode != 0:
    sys.exit(f"moec tokenize failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
got = r.stdout.decode().split("\n")[: len(cases)]
bad = 0
for i, (c, e, g) in enumerate(zip(cases, expected, got)):
    if e.strip() != g.strip():
        bad += 1
        if bad <= 5:
            print(f"case {i} {c!r}\n  expected {e}\n  got      {g}")
print(f"{model.split('/')[-1]} on {inp.split('/')[-1]}: {len(cases) - bad}/{len(cases)} cases match")
sys.exit(1 if bad else 0)
