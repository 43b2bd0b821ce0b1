#!/usr/bin/env bash
# yuan2moe forward vs the independent PyTorch reference (tests/reference, H4): every fixture (HF layout +
# expected float64 logits) is turned into a yuan2moe GGUF by a small writer in this script (independent of
# `moec convert`, so it also cross-checks the converter's layout), then `moec logits` (one full pass and --step
# token-by-token decode) must match each case within 1e-5 of max|logit| per row. Covers: LFA on/off, attention
# and linear routers, top-1/top-2, 4..32 experts, P != H, partial RoPE, rope base 40890, tied/untied output,
# fp32 and hf RoPE tables, 300 positions (bf16 position rounding past 256).
set -u
FIX=$(cd "$(dirname "$0")" && pwd)/reference/fixtures
PY=${PY:-/usr/bin/python3}
[ -d "$FIX" ] && ls "$FIX"/*/meta.json >/dev/null 2>&1 || { echo "skip: no fixtures in $FIX"; exit 77; }
"$PY" -c "import numpy" 2>/dev/null || { echo "skip: no numpy"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
cat >"$T/hf2gguf.py" <<'PYEOF'
import sys, json, struct, numpy as np
sys.path.insert(0, sys.argv[3])
import st_io
d, out = sys.argv[1], sys.argv[2]
cfg = json.load(open(d + '/config.json')); t = st_io.read_dir(d)
H = cfg['hidden_size']; L = cfg['num_hidden_layers']; nh = cfg['num_attention_heads']; P = cfg.get('attention_projection_size', H)
dd = P // nh; moe = cfg['moe_config']; E = moe['moe_num_experts']; F = moe['ffn_hidden_size']; K = moe['moe_top_k']
if 'rotary_dim' in cfg: rd = cfg['rotary_dim']
elif 'rotary_percent' in cfg: rd = int(dd * cfg['rotary_percent'])
else: rd = H // nh
router = cfg.get('router_type', 'attention'); lfa = cfg.get('use_lfa', True); V = cfg['vocab_size']
tied = cfg.get('tie_word_embeddings', True)
tensors = []
def add(name, arr): tensors.append((name, np.ascontiguousarray(arr, dtype=np.float32)))
add('token_embd.weight', t['model.embed_tokens.weight'])
for l in range(L):
    p = 'model.layers.%d.' % l; b = 'blk.%d.' % l
    add(b + 'attn_norm.weight', t[p + 'input_layernorm.weight'])
    qk = np.concatenate([t[p + 'self_attn.q_proj.weight'], t[p + 'self_attn.k_proj.weight']], 0).reshape(nh, 2 * dd, H)
    add(b + 'attn_q.weight', qk[:, :dd].reshape(P, H)); add(b + 'attn_k.weight', qk[:, dd:].reshape(P, H))
    add(b + 'attn_v.weight', t[p + 'self_attn.v_proj.weight']); add(b + 'attn_output.weight', t[p + 'self_attn.o_proj.weight'])
    if lfa:
        add(b + 'lfa_conv1.weight', np.transpose(t[p + 'self_attn.lf_gate.conv1.weight'][:, :, :, 0], (2, 0, 1)))
        add(b + 'lfa_conv1.bias', t[p + 'self_attn.lf_gate.conv1.bias'])
        add(b + 'lfa_conv2.weight', np.transpose(t[p + 'self_attn.lf_gate.conv2.weight'][:, :, :, 0], (2, 0, 1)))
        add(b + 'lfa_conv2.bias', t[p + 'self_attn.lf_gate.conv2.bias'])
        add(b + 'lfa_norm.weight', t[p + 'self_attn.lf_gate.output_layernorm.weight'])
    add(b + 'ffn_norm.weight', t[p + 'post_attention_layernorm.weight'])
    if router == 'attention':
        for x in 'qkv': add(b + 'ffn_router_%s.weight' % x, t[p + 'mlp.gate.%s.weight' % dict(q='query', k='key', v='value')[x]])
    else:
        add(b + 'ffn_gate_inp.weight', t[p + 'mlp.gate.weight'])
    w1 = np.stack([t[p + 'mlp.experts.%d.w1.weight' % e] for e in range(E)]); w2 = np.stack([t[p + 'mlp.experts.%d.w2.weight' % e] for e in range(E)])
    add(b + 'ffn_gate_exps.weight', w1[:, :F]); add(b + 'ffn_up_exps.weight', w1[:, F:]); add(b + 'ffn_down_exps.weight', w2)
add('output_norm.weight', t['model.norm.weight'])
if not tied: add('output.weight', t['lm_head.weight'])
kv = []
def s(x): b = x.encode(); return struct.pack('<Q', len(b)) + b
A = 'yuan2moe.'
kv.append((s('general.architecture'), 8, s('yuan2moe')))
for k, v in [('context_length', cfg.get('max_position_embeddings', 4096)), ('embedding_length', H), ('block_count', L),
             ('attention.head_count', nh), ('attention.key_length', dd), ('rope.dimension_count', rd), ('expert_count', E),
             ('expert_used_count', K), ('expert_feed_forward_length', F)]:
    kv.append((s(A + k), 4, struct.pack('<I', v)))
kv.append((s(A + 'attention.layer_norm_rms_epsilon'), 6, struct.pack('<f', cfg.get('rms_norm_eps', 1e-6))))
kv.append((s(A + 'rope.freq_base'), 6, struct.pack('<f', cfg.get('rope_theta', 10000.0))))
kv.append((s(A + 'router'), 8, s(router))); kv.append((s(A + 'lfa'), 7, struct.pack('<B', 1 if lfa else 0)))
hdr = b'GGUF' + struct.pack('<IQQ', 3, len(tensors), len(kv))
for k, ty, v in kv: hdr += k + struct.pack('<I', ty) + v
off = 0; infos = b''; datas = []
for name, a in tensors:
    ne = list(reversed(a.shape))
    infos += s(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', n) for n in ne) + struct.pack('<IQ', 0, off)
    raw = a.tobytes(); pad = (-len(raw)) % 32; datas.append(raw + b'\0' * pad); off += len(raw) + pad
hdr += infos; hdr += b'\0' * ((-len(hdr)) % 32)
open(out, 'wb').write(hdr + b''.join(datas))
PYEOF
fail=0
for d in "$FIX"/*/; do
    name=$(basename "$d")
    "$PY" "$T/hf2gguf.py" "$d" "$T/$name.gguf" "$FIX/.." || { echo "FAIL: writing $name"; fail=1; continue; }
    "$PY" - "$d" "$T/$name.gguf" "$MOEC" "$T" <<'PYEOF' || fail=1
import sys, json, subprocess, numpy as np
d, g, moec, tmp = sys.argv[1:5]
meta = json.load(open(d + '/meta.json'))
bad = 0
for c in meta['cases']:
    toks = ' '.join(map(str, c['tokens']))
    exp = np.load(d + '/' + c['logits'])
    for step in ([], ['--step']):
        r = subprocess.run([moec, 'logits', '-m', g, '--tokens', toks, '--rope-table', c['rope_table'],
                            '-o', tmp + '/o.npy'] + step, capture_output=True, text=True)
        if r.returncode:
            print('FAIL', d, c['name'], r.stderr.strip()); bad = 1; continue
        a = np.load(tmp + '/o.npy')
        if a.shape != exp.shape:
            print('FAIL', d, c['name'], 'shape', a.shape, exp.shape); bad = 1; continue
        rel = (np.abs(a - exp).max(axis=1) / np.maximum(np.abs(exp).max(axis=1), 1e-30)).max()
        ok = rel <= 1e-5
        bad |= not ok
        print('%s %-28s %-10s %-4s max rel err %.2e' % ('ok  ' if ok else 'FAIL', d.rstrip('/').split('/')[-1],
              c['name'], 'step' if step else 'full', rel))
sys.exit(bad)
PYEOF
done
exit $fail
