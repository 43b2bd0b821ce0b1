#!/usr/bin/env bash
# moec init: the written GGUF loads (moec info), every tensor follows the initialisation rule of spec §2
# (checked by an independent struct-based GGUF reader in Python/numpy: norms 1, N(0, 0.02), output layers
# N(0, 0.02/sqrt(2L)), LFA convs U(+-1/sqrt(fan_in))), keys match the options, the config file works, the same seed
# gives identical bytes, F16/BF16 storage round-trips, --vocab-from embeds the tokenizer, bad input fails cleanly.
set -u
MOEC=${MOEC:-build/moec}
PY=${PY:-/usr/bin/python3}
S=${MOEC_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
"$PY" -c 'import numpy' 2>/dev/null || { echo "skip: numpy missing"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }

# -- yuan2moe with LFA, attention router, one leading dense layer, untied output
"$MOEC" init "$tmp/y.gguf" --dim 128 --layers 3 --heads 4 --experts 4 --top-k 2 --ff 192 --dense-ff 160 \
    --dense-layers 1 --vocab 300 --ctx 256 --tied off --seed 7 >/dev/null || bad "init yuan2moe"
"$MOEC" info "$tmp/y.gguf" >"$tmp/y.info" 2>&1 && ok "moec info loads yuan2moe" || { bad "moec info yuan2moe"; cat "$tmp/y.info"; }
"$MOEC" bench -m "$tmp/y.gguf" -t 1 -p 8 -n 2 --no-bw --json >"$tmp/y.bench" 2>&1 && grep -q '"tokens":\[[0-9]*,[0-9]*\]' "$tmp/y.bench" \
    && ok "the yuan2moe model runs (moec bench)" || bad "moec bench on the init model: $(cat "$tmp/y.bench")"
"$MOEC" init "$tmp/y2.gguf" --dim 128 --layers 3 --heads 4 --experts 4 --top-k 2 --ff 192 --dense-ff 160 \
    --dense-layers 1 --vocab 300 --ctx 256 --tied off --seed 7 >/dev/null
cmp -s "$tmp/y.gguf" "$tmp/y2.gguf" && ok "same seed -> identical bytes" || bad "same seed gives different files"
OMP_NUM_THREADS=1 "$MOEC" init "$tmp/y1t.gguf" --dim 128 --layers 3 --heads 4 --experts 4 --top-k 2 --ff 192 \
    --dense-ff 160 --dense-layers 1 --vocab 300 --ctx 256 --tied off --seed 7 >/dev/null
cmp -s "$tmp/y.gguf" "$tmp/y1t.gguf" && ok "1 thread -> identical bytes" || bad "result depends on the thread count"
"$MOEC" init "$tmp/y3.gguf" --dim 128 --layers 3 --heads 4 --experts 4 --top-k 2 --ff 192 --dense-ff 160 \
    --dense-layers 1 --vocab 300 --ctx 256 --tied off --seed 8 >/dev/null
cmp -s "$tmp/y.gguf" "$tmp/y3.gguf" && bad "different seeds give identical files" || ok "different seed -> different bytes"

# -- the same through a config file, with a command-line override (layers) and comments
cat >"$tmp/c.cfg" <<'CFG'
# yuan toy
arch = yuan2moe
dim = 128
layers = 9        # overridden on the command line
heads = 4
experts = 4
top-k = 2
ff = 192
dense-ff = 160
dense-layers = 1
vocab = 300
ctx = 256
tied = off
seed = 7
CFG
"$MOEC" init "$tmp/c.gguf" --config "$tmp/c.cfg" --layers 3 >/dev/null || bad "init --config"
cmp -s "$tmp/y.gguf" "$tmp/c.gguf" && ok "config file + override == options" || bad "config file result differs"

# -- llama MoE (Mixtral layout), GQA, F16 and BF16 storage; dense llama
"$MOEC" init "$tmp/l.gguf" --arch llama --dim 128 --layers 2 --heads 4 --kv-heads 2 --experts 4 --top-k 2 \
    --ff 256 --vocab 300 --type f16 --seed 3 >/dev/null || bad "init llama f16"
"$MOEC" info "$tmp/l.gguf" >"$tmp/l.info" 2>&1 && ok "moec info loads llama MoE f16" || { bad "moec info llama"; cat "$tmp/l.info"; }
"$MOEC" init "$tmp/lb.gguf" --arch llama --dim 128 --layers 2 --heads 4 --experts 0 --ff 256 --vocab 300 \
    --type bf16 --tied on --seed 3 >/dev/null || bad "init llama dense bf16"
"$MOEC" info "$tmp/lb.gguf" >/dev/null 2>&1 && ok "moec info loads dense llama bf16" || bad "moec info dense llama"

# -- Q8_0 / Q4_0 storage (routers and LFA convs stay F32)
for q in 8 2; do
    qt=$([ $q = 8 ] && echo q8_0 || echo q4_0)
    "$MOEC" init "$tmp/q$q.gguf" --dim 128 --layers 2 --heads 4 --experts 4 --ff 256 --vocab 320 --type $qt \
        --seed 5 >/dev/null || bad "init --type $qt"
    "$MOEC" info "$tmp/q$q.gguf" >/dev/null 2>&1 && ok "moec info loads a $qt yuan2moe" || bad "moec info $qt"
done

# -- tokenizer embedding
TOKM="$S/data/tokenizers/llama2-tokenizer.model"
if [ -f "$TOKM" ]; then
    "$MOEC" init "$tmp/v.gguf" --arch llama --dim 64 --layers 1 --heads 2 --experts 2 --top-k 1 --ff 64 \
        --vocab-from "$TOKM" >/dev/null || bad "init --vocab-from"
    "$MOEC" info "$tmp/v.gguf" | grep -q "^vocab: *32000$" && ok "--vocab-from: V = 32000" || bad "--vocab-from vocab size"
    echo "Hello world" | "$MOEC" tokenize -m "$tmp/v.gguf" >"$tmp/v.tok" 2>&1 && echo "Hello world" | \
        "$MOEC" tokenize -m "$TOKM" >"$tmp/v.ref" 2>&1 && cmp -s "$tmp/v.tok" "$tmp/v.ref" \
        && ok "embedded tokenizer encodes like the .model" || echo "note: tokenize comparison unavailable ($(head -c 200 "$tmp/v.tok"))"
    "$MOEC" init "$tmp/v2.gguf" --arch llama --dim 64 --layers 1 --heads 2 --experts 0 --ff 64 --vocab 100 \
        --vocab-from "$TOKM" >/dev/null 2>"$tmp/err"; rc=$?
    [ $rc -ne 0 ] && grep -q "differs" "$tmp/err" && ok "--vocab conflicting with --vocab-from rejected" || bad "vocab conflict accepted"
fi

# -- statistics, keys and types, read back with an independent parser
"$PY" - "$tmp" <<'PYEOF' || fail=1
import struct, sys, math
import numpy as np
tmp = sys.argv[1]

def read_gguf(path):
    b = open(path, "rb").read()
    o = 0
    def rd(fmt):
        nonlocal o
        v = struct.unpack_from("<" + fmt, b, o); o += struct.calcsize("<" + fmt); return v[0]
    def rs():
        nonlocal o
        n = rd("Q"); s = b[o:o + n].decode(); o += n; return s
    SC = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    def val(t):
        if t == 8: return rs()
        if t == 9:
            et = rd("I"); n = rd("Q"); return [val(et) for _ in range(n)]
        return rd(SC[t])
    assert b[:4] == b"GGUF", "magic"
    o = 4
    ver = rd("I"); nt = rd("Q"); nkv = rd("Q")
    assert ver == 3
    kv = {}
    for _ in range(nkv):
        k = rs(); t = rd("I"); kv[k] = val(t)
    tens = []
    for _ in range(nt):
        name = rs(); nd = rd("I"); ne = [rd("Q") for _ in range(nd)]; ty = rd("I"); off = rd("Q")
        tens.append((name, ne, ty, off))
    al = kv.get("general.alignment", 32)
    base = (o + al - 1) // al * al
    out = {}
    for name, ne, ty, off in tens:
        n = int(np.prod(ne))
        if ty == 0: a = np.frombuffer(b, np.float32, n, base + off)
        elif ty == 1: a = np.frombuffer(b, np.float16, n, base + off).astype(np.float32)
        elif ty == 30: a = (np.frombuffer(b, np.uint16, n, base + off).astype(np.uint32) << 16).view(np.float32)
        elif ty == 8:   # Q8_0: per 32 elements f16 d, int8 q[32]; x = d*q
            blk = np.frombuffer(b, np.uint8, n // 32 * 34, base + off).reshape(-1, 34)
            d = blk[:, :2].copy().view(np.float16).astype(np.float32)
            a = (d * blk[:, 2:].copy().view(np.int8).astype(np.float32)).reshape(-1)
        elif ty == 2:   # Q4_0: f16 d, u8 qs[16]; x[j] = d*((qs[j]&15)-8), x[j+16] = d*((qs[j]>>4)-8)
            blk = np.frombuffer(b, np.uint8, n // 32 * 18, base + off).reshape(-1, 18)
            d = blk[:, :2].copy().view(np.float16).astype(np.float32)
            qs = blk[:, 2:].astype(np.int32)
            a = (d * np.concatenate([(qs & 15) - 8, (qs >> 4) - 8], axis=1).astype(np.float32)).reshape(-1)
        else: raise SystemExit(f"unexpected type {ty}")
        out[name] = (ne, ty, a)
    return kv, out

failures = []
def check(cond, msg):
    if not cond: failures.append(msg)

def rule(name, ne, L, H):
    if "lfa_conv" in name:
        fan_in = (ne[0] if len(ne) > 1 else (H if "conv1" in name else H // 2)) * 2
        return ("uniform", 1 / math.sqrt(fan_in))
    if len(ne) == 1: return ("ones", 1.0)
    if "attn_output" in name or "ffn_down" in name: return ("normal", 0.02 / math.sqrt(2 * L))
    return ("normal", 0.02)

def check_file(path, arch, exp_keys, mat_type, expect_names):
    kv, t = read_gguf(path)
    check(kv.get("general.architecture") == arch, f"{path}: architecture {kv.get('general.architecture')}")
    for k, v in exp_keys.items():
        got = kv.get(f"{arch}.{k}")
        ok_ = abs(got - v) <= 1e-6 * abs(v) if isinstance(v, float) and got is not None else got == v
        check(ok_, f"{path}: key {arch}.{k} = {got!r}, expected {v!r}")
    for nme in expect_names:
        check(nme in t, f"{path}: missing tensor {nme}")
    L = kv[f"{arch}.block_count"]; H = kv[f"{arch}.embedding_length"]
    for name, (ne, ty, a) in t.items():
        kind, s = rule(name, ne, L, H)
        want_ty = 0 if len(ne) == 1 else mat_type
        if mat_type in (2, 8) and ("ffn_gate_inp" in name or "router" in name or "lfa_conv" in name or ne[0] % 32):
            want_ty = 0
        check(ty == want_ty, f"{name}: type {ty}, expected {want_ty}")
        n = a.size
        if kind == "ones":
            check(np.all(a == 1.0), f"{name}: norm weights not all 1")
        elif kind == "normal":
            sd = float(a.std()); mu = float(a.mean())
            # 6 sigma of the sample std, + rounding: 16-bit types, Q8_0 (~0.1%), Q4_0 (step ~0.3 sigma: ~1%)
            tol = 6 / math.sqrt(2 * n) + {0: 0, 1: 2e-3, 30: 2e-3, 8: 5e-3, 2: 3e-2}[ty]
            check(abs(sd / s - 1) < tol, f"{name}: std {sd:.6g}, expected {s:.6g} (n={n})")
            check(abs(mu) < 6 * s / math.sqrt(n), f"{name}: mean {mu:.3g} not ~0 (n={n})")
            if n >= 4096 and ty in (0, 1, 30):
                frac = float(np.mean(np.abs(a) < s))
                check(abs(frac - 0.6827) < 0.03, f"{name}: {frac:.3f} within 1 sigma, normal has 0.683")
        else:
            check(float(np.abs(a).max()) <= s * (1 + 1e-3), f"{name}: |w| max {np.abs(a).max():.6g} > bound {s:.6g}")
            if n >= 1024:
                sd = float(a.std())
                check(abs(sd / (s / math.sqrt(3)) - 1) < 6 / math.sqrt(n) + 0.01,
                      f"{name}: std {sd:.6g}, uniform(+-{s:.4g}) has {s / math.sqrt(3):.6g}")
                check(float(np.abs(a).max()) > 0.95 * s, f"{name}: max {np.abs(a).max():.4g} far below the bound {s:.4g}")
    return kv, t

blk = lambda l, n: f"blk.{l}.{n}.weight"
kv, t = check_file(f"{tmp}/y.gguf", "yuan2moe",
    dict(embedding_length=128, block_count=3, **{"attention.head_count": 4, "attention.key_length": 32,
         "rope.dimension_count": 16, "rope.freq_base": 10000.0, "attention.layer_norm_rms_epsilon": 1e-6},
         expert_count=4, expert_used_count=2, expert_feed_forward_length=192, feed_forward_length=160,
         leading_dense_block_count=1, router="attention", lfa=True, context_length=256),
    0, ["token_embd.weight", "output.weight", "output_norm.weight", blk(0, "ffn_gate"), blk(0, "ffn_down"),
        blk(1, "ffn_router_q"), blk(2, "ffn_gate_exps"), blk(2, "ffn_down_exps"), blk(1, "lfa_conv1"),
        "blk.1.lfa_conv2.bias", blk(2, "lfa_norm")])
check(t[blk(2, "ffn_gate_exps")][0] == [128, 192, 4], f"ffn_gate_exps shape {t[blk(2, 'ffn_gate_exps')][0]}")
check(t[blk(0, "lfa_conv1")][0] == [128, 64, 2], f"lfa_conv1 shape {t[blk(0, 'lfa_conv1')][0]}")
check(t[blk(0, "lfa_conv2")][0] == [64, 128, 2], f"lfa_conv2 shape {t[blk(0, 'lfa_conv2')][0]}")
check(t[blk(0, "attn_output")][2].std() < 0.012, "attn_output not scaled by 1/sqrt(2L)")
kv, t = check_file(f"{tmp}/l.gguf", "llama",
    dict(embedding_length=128, block_count=2, **{"attention.head_count": 4, "attention.head_count_kv": 2,
         "rope.dimension_count": 32}, expert_count=4, expert_used_count=2, feed_forward_length=256),
    1, ["token_embd.weight", "output.weight", blk(0, "ffn_gate_inp"), blk(1, "ffn_up_exps")])
check(t[blk(0, "attn_k")][0] == [128, 64], f"GQA attn_k shape {t[blk(0, 'attn_k')][0]}")
check(not any("lfa" in n or "router" in n for n in t), "llama file has yuan tensors")
kv, t = check_file(f"{tmp}/lb.gguf", "llama", dict(feed_forward_length=256), 30, [blk(1, "ffn_down")])
check("output.weight" not in t, "tied model has output.weight")
for q in (8, 2):
    kv, t = check_file(f"{tmp}/q{q}.gguf", "yuan2moe", dict(expert_count=4, lfa=True), q,
                       [blk(0, "lfa_conv1"), blk(0, "ffn_router_q"), blk(0, "ffn_down_exps")])
    a = t[blk(0, "attn_q")][2]
    check(len(np.unique(a[:32])) <= (16 if q == 2 else 255), f"type {q}: attn_q not quantized")
import os
if os.path.exists(f"{tmp}/v.gguf"):
    kv, _ = read_gguf(f"{tmp}/v.gguf")
    check(kv.get("tokenizer.ggml.model") == "llama", "tokenizer.ggml.model")
    check(len(kv.get("tokenizer.ggml.tokens", [])) == 32000, "tokenizer tokens")
    check(kv["tokenizer.ggml.tokens"][1] == "<s>" and kv.get("tokenizer.ggml.bos_token_id") == 1, "bos")
for f in failures: print("FAIL " + f)
print(("ok   " if not failures else "FAIL ") + f"tensor statistics/keys/types ({len(failures)} problems)")
sys.exit(1 if failures else 0)
PYEOF

# -- bad input: one clear line, nonzero exit, no output file
expect_err() {  # expect_err PATTERN args...
    local pat=$1; shift
    "$MOEC" init "$@" >/dev/null 2>"$tmp/err"; local rc=$?
    if [ $rc -ne 0 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "$pat" "$tmp/err"; then ok "rejects: $*"
    else bad "init $* -> rc $rc, stderr: $(cat "$tmp/err")"; fi
}
expect_err "unknown option" "$tmp/e.gguf" --bogus 1
expect_err "needs an integer" "$tmp/e.gguf" --dim abc
expect_err "needs an integer" "$tmp/e.gguf" --layers 0
expect_err "multiple of" "$tmp/e.gguf" --dim 100 --heads 3
expect_err "arch" "$tmp/e.gguf" --arch gpt2
expect_err "top-k" "$tmp/e.gguf" --experts 2 --top-k 3
expect_err "LFA" "$tmp/e.gguf" --arch llama --lfa on
expect_err "GQA" "$tmp/e.gguf" --kv-heads 2
expect_err "type" "$tmp/e.gguf" --type q4_k
expect_err "cannot open config" "$tmp/e.gguf" --config "$tmp/nonexistent.cfg"
printf 'dim = 64\nthis line is junk\n' >"$tmp/bad.cfg"
expect_err "bad.cfg:2" "$tmp/e.gguf" --config "$tmp/bad.cfg"
printf 'colour = blue\n' >"$tmp/bad2.cfg"
expect_err "unknown setting 'colour'" "$tmp/e.gguf" --config "$tmp/bad2.cfg"
expect_err "tok\|vocab\|open\|No such" "$tmp/e.gguf" --vocab-from "$tmp/nonexistent.model"
expect_err "" "$tmp/nodir/e.gguf" --dim 16 --heads 2 --layers 1 --ff 16 --vocab 10
[ -e "$tmp/e.gguf" ] && bad "a failed init left $tmp/e.gguf" || ok "no output file after failures"
exit $fail
