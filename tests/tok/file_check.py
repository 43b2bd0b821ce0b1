#!/usr/bin/python3
"""Whole files as one text (`moec tokenize -f`, long inputs with newlines) against sp.encode(bytes).
usage: file_check.py MOEC MODEL FILE..."""
import subprocess, sys
import sentencepiece as spm

moec, model, files = sys.argv[1], sys.argv[2], sys.argv[3:]
sp = spm.SentencePieceProcessor(model_file=model)
bad = 0
for f in files:
    want = sp.encode(open(f, "rb").read())
    r = subprocess.run([moec, "tokenize", "-m", model, "-f", f], capture_output=True)
    got = [int(x) for x in r.stdout.split()] if r.returncode == 0 else None
    if got != want:
        bad += 1
        if got is None:
            print(f"{f}: moec failed: {r.stderr.decode(errors='replace')}")
        else:
            i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
            print(f"{f}: first difference at id {i}: sp {want[i:i+8]} moec {got[i:i+8]}")
    else:
        print(f"{model.split('/')[-1]} on {f.split('/')[-1]}: {len(want)} ids identical")
sys.exit(1 if bad else 0)
