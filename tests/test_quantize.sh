#!/usr/bin/env bash
# moec quantize: on random yuan2moe (LFA, attention router, experts, untied output) and llama (linear router) models,
# every output tensor has the type the documented rule gives (re-derived here in Python), every KV is copied,
# general.file_type / quantization_version are set, the converted bytes equal an independent numpy quantizer
# (tests/quant/ref.py) / numpy fp16 / bf16 rounding of the source, the quantized models' logits stay close to the
# original's, and bad input fails cleanly without leaving an output file.
set -u
MOEC=${MOEC:-build/moec}
PY=${PY:-/usr/bin/python3}
"$PY" -c 'import numpy' 2>/dev/null || { echo "skip: numpy missing"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }

"$MOEC" init "$tmp/y.gguf" --dim 64 --layers 2 --heads 2 --experts 4 --top-k 2 --ff 96 --dense-ff 64 --dense-layers 1 \
    --vocab 300 --ctx 64 --tied off --seed 3 >/dev/null 2>&1 || bad "init yuan2moe"
"$MOEC" init "$tmp/l.gguf" --arch llama --dim 64 --layers 1 --heads 4 --kv-heads 2 --experts 2 --top-k 1 --ff 96 \
    --vocab 256 --ctx 64 --seed 4 >/dev/null 2>&1 || bad "init llama"
for m in y l; do
    for t in q8_0 q4_0 f16 bf16 f32; do
        "$MOEC" quantize "$tmp/$m.gguf" "$tmp/$m.$t.gguf" --type $t 2>"$tmp/err" || { bad "quantize $m $t"; cat "$tmp/err"; }
    done
done
grep -q "tensors converted" "$tmp/err" && ok "summary line" || bad "no summary line: $(cat "$tmp/err")"

"$PY" - "$tmp" <<'PYEOF' || fail=1
import sys
import numpy as np
sys.path.insert(0, "tests/gguf"); sys.path.insert(0, "tests/quant")
import dump, ref
d = sys.argv[1]
BLOCK = {"Q8_0": 32, "Q4_0": 32, "F16": 1, "BF16": 1, "F32": 1}
FTYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "BF16": 32}
bad = 0
def expect_type(name, ne, cur, target):
    if len(ne) < 2 or not name.endswith(".weight") or name.startswith("train."): return cur
    if name.endswith("_norm.weight") or "ffn_gate_inp" in name or "ffn_router_" in name: return cur
    t = target
    if target == "Q4_0" and (name in ("token_embd.weight", "output.weight") or "lfa_conv" in name): t = "Q8_0"
    return t if ne[0] % BLOCK[t] == 0 else cur
def bf16(x):
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()
for m in "yl":
    skv, st = dump.load(f"{d}/{m}.gguf")
    for target in ["Q8_0", "Q4_0", "F16", "BF16", "F32"]:
        kv, ts = dump.load(f"{d}/{m}.{target.lower()}.gguf")
        for k, v in skv.items():
            if k in ("general.file_type", "general.quantization_version"): continue
            if k not in kv or kv[k][2] != v[2]: print(f"FAIL {m} {target}: KV {k} not copied"); bad += 1
        if kv.get("general.file_type", (0, -1))[1] != FTYPE[target]: print(f"FAIL {m} {target}: file_type"); bad += 1
        nq = 0
        if set(ts) != set(st): print(f"FAIL {m} {target}: tensor set differs"); bad += 1; continue
        for name, (cur, ne, raw) in st.items():
            want = expect_type(name, ne, cur, target)
            got, gne, graw = ts[name]
            if got != want or gne != ne: print(f"FAIL {m} {target}: {name} is {got}, rule says {want}"); bad += 1; continue
            if want in ("Q8_0", "Q4_0"): nq += 1
            if cur != "F32": continue  # init writes f32; converted bytes checked against numpy below
            x = np.frombuffer(raw, dtype=np.float32)
            exp = {"Q8_0": lambda: ref.quant_q8_0(x), "Q4_0": lambda: ref.quant_q4_0(x),
                   "F16": lambda: x.astype(np.float16).tobytes(), "BF16": lambda: bf16(x), "F32": lambda: raw}[want]()
            if exp != graw: print(f"FAIL {m} {target}: {name} bytes differ from the numpy conversion"); bad += 1
        qv = kv.get("general.quantization_version", (0, None))[1]
        if (nq > 0 and qv != 2) or (nq == 0 and qv is not None): print(f"FAIL {m} {target}: quantization_version {qv}"); bad += 1
        if target in ("Q8_0", "Q4_0") and nq == 0: print(f"FAIL {m} {target}: nothing quantized"); bad += 1
        kept = [n for n in st if ("norm" in n or "router" in n or "gate_inp" in n) and ts[n][0] != st[n][0]]
        if kept: print(f"FAIL {m} {target}: {kept} changed type"); bad += 1
print("ok   tensor types follow the rule, KVs copied, bytes equal the numpy conversions" if bad == 0 else f"{bad} problems")
sys.exit(1 if bad else 0)
PYEOF

# logits of the converted models stay close to the original's (relative RMS error)
ids="1 5 9 17 33 65 129 200 7 3"
for m in y l; do
    "$MOEC" logits -m "$tmp/$m.gguf" --tokens "$ids" -o "$tmp/$m.npy" 2>/dev/null || bad "logits $m"
    for t in q8_0 q4_0 f16 bf16 f32; do
        "$MOEC" logits -m "$tmp/$m.$t.gguf" --tokens "$ids" -o "$tmp/$m.$t.npy" 2>"$tmp/err" || { bad "logits $m $t"; cat "$tmp/err"; }
    done
    "$PY" - "$tmp" "$m" <<'PYEOF' || fail=1
import sys, numpy as np
d, m = sys.argv[1:3]
a = np.load(f"{d}/{m}.npy")
lim = {"f32": 1e-6, "f16": 3e-3, "bf16": 2e-2, "q8_0": 2e-2, "q4_0": 0.25}
bad = 0
for t, l in lim.items():
    b = np.load(f"{d}/{m}.{t}.npy")
    e = float(np.sqrt(np.mean((a - b) ** 2)) / (np.sqrt(np.mean(a ** 2)) + 1e-30))
    st = "ok  " if e <= l else "FAIL"
    bad += e > l
    print(f"{st} {m} {t}: logits relative RMS error {e:.2e} (limit {l})")
sys.exit(1 if bad else 0)
PYEOF
done

# bad input: clear message, nonzero exit, no output file
"$MOEC" quantize "$tmp/y.gguf" "$tmp/o1.gguf" --type q5_k 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q "unknown type 'q5_k'" "$tmp/err" && [ ! -e "$tmp/o1.gguf" ] && ok "unknown type rejected" || bad "unknown type: rc $rc $(cat "$tmp/err")"
"$MOEC" quantize "$tmp/none.gguf" "$tmp/o2.gguf" --type q8_0 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "none.gguf" "$tmp/err" && [ ! -e "$tmp/o2.gguf" ] && ok "missing input" || bad "missing input: rc $rc $(cat "$tmp/err")"
printf 'GGUF\3\0\0\0garbage' >"$tmp/bad.gguf"
"$MOEC" quantize "$tmp/bad.gguf" "$tmp/o3.gguf" --type q8_0 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "bad.gguf" "$tmp/err" && [ ! -e "$tmp/o3.gguf" ] && ok "corrupt input" || bad "corrupt input: rc $rc $(cat "$tmp/err")"
"$MOEC" quantize "$tmp/y.gguf" "$tmp/y.gguf" --type q8_0 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && "$MOEC" info "$tmp/y.gguf" >/dev/null 2>&1 && ok "IN == OUT refused" || bad "IN == OUT: rc $rc"
"$MOEC" quantize "$tmp/y.gguf" 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q "usage" "$tmp/err" && ok "usage error" || bad "usage: rc $rc"
"$MOEC" quantize "$tmp/y.gguf" "$tmp/nodir/o.gguf" --type q8_0 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "nodir" "$tmp/err" && ok "unwritable output" || bad "unwritable output: rc $rc $(cat "$tmp/err")"
ls "$tmp" | grep -q "tmp\." && bad "temp file left behind: $(ls "$tmp")" || ok "no temp files left"
exit $fail
