#!/usr/bin/env bash
# moec convert HF_DIR: layout of the written GGUF checked tensor by tensor against the HF checkpoint by an
# independent numpy implementation of the mapping (tests/reference/check_gguf_hf.py), for every fixture and
# output type; the Yuan tokenizer path (eos = <eod> 77185, sep = <sep> 77187, padding to vocab_size);
# hostile inputs (lying safetensors headers, missing tensors, bad config, bad llama2.c files): one error line,
# exit status 1, and no output file written (an existing one is left untouched).
set -u
cd "$(dirname "$0")/.."
MOEC=${MOEC:-build/moec}
PY=${PY:-/usr/bin/python3}
SH=${MOEC_SHARED:-../shared}
export PYTHONDONTWRITEBYTECODE=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
FIX=tests/reference/fixtures
fail=0

# ---- layout -------------------------------------------------------------------------------------------
for dir in "$FIX"/*/; do
    for opts in "" "--type f32 --rope-table hf" "--type bf16" "--type f16"; do
        # shellcheck disable=SC2086
        if ! "$MOEC" convert "$dir" "$tmp/x.gguf" $opts 2>"$tmp/err"; then
            echo "FAIL convert $dir $opts: $(cat "$tmp/err")"; fail=1; continue
        fi
        # shellcheck disable=SC2086
        "$PY" tests/reference/check_gguf_hf.py "$dir" "$tmp/x.gguf" $opts || { echo "FAIL layout $dir $opts"; fail=1; }
    done
done

# ---- Yuan tokenizer: a tiny model with the real vocabulary size and tokenizer.model ----------------------
TOKM=$SH/data/tokenizers/yuan2-m32-tokenizer.model
[ -f "$TOKM" ] || TOKM=$SH/tokenizers/yuan2-m32-tokenizer.model
if [ -f "$TOKM" ]; then
    "$PY" - "$tmp/yuan" <<'PYEOF' || { echo "FAIL: making the Yuan-vocab checkpoint"; fail=1; }
import json, os, sys
import numpy as np
sys.path.insert(0, "tests/reference")
import yuan2_cfg as mf, st_io
conf = mf.make_config(dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, attention_projection_size=8,
                           vocab_size=135040, experts=2, top_k=1, ffn=4))
cfg = mf.Cfg(conf)
w = mf.make_weights(cfg, np.random.default_rng(1), False)
st_io.write_dir(sys.argv[1], [(k, v, "BF16") for k, v in w.items()])
json.dump(conf, open(os.path.join(sys.argv[1], "config.json"), "w"))
PYEOF
    ln -s "$(cd "$(dirname "$TOKM")" && pwd)/$(basename "$TOKM")" "$tmp/yuan/tokenizer.model"
    if "$MOEC" convert "$tmp/yuan" "$tmp/yuan.gguf" 2>"$tmp/err"; then
        "$PY" - "$tmp/yuan.gguf" <<'PYEOF' || { echo "FAIL: Yuan tokenizer keys"; fail=1; }
import sys
sys.path.insert(0, "tests/reference")
import gguf_read
kv, t = gguf_read.read(sys.argv[1])
toks, types, scores = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"], kv["tokenizer.ggml.scores"]
assert kv["tokenizer.ggml.model"] == "llama"
assert len(toks) == len(types) == len(scores) == 135040 == t["token_embd.weight"][1][1], len(toks)
assert kv["tokenizer.ggml.eos_token_id"] == 77185 and toks[77185] == "<eod>", kv.get("tokenizer.ggml.eos_token_id")
assert kv["tokenizer.ggml.sep_token_id"] == 77187 and toks[77187] == "<sep>"
assert toks[0] == "<unk>" and types[0] == 2 and types[1] == 3 and types[2] == 3 and types[13] == 6
assert toks[29871] == "\u2581" and toks[134953] == "<mask>" and toks[134957] == "<FIM_MIDDLE>"
assert all(toks[i] == "[PAD%d]" % i and types[i] == 5 for i in range(134958, 135040))
assert kv["tokenizer.ggml.add_bos_token"] is False
print("ok Yuan tokenizer: 135040 rows, eos 77185, sep 77187, 82 padding rows")
PYEOF
        # the converted file's tokenizer encodes like the .model it came from
        a=$("$MOEC" tokenize -m "$tmp/yuan.gguf" --special "请问Hello<sep>" 2>&1) ; b=$("$MOEC" tokenize -m "$TOKM" --special "请问Hello<sep>" 2>&1)
        if [ "$a" != "$b" ] || [ -z "$a" ]; then echo "FAIL: tokenize via the GGUF '$a' != via the .model '$b'"; fail=1; fi
    else
        echo "FAIL convert with the Yuan tokenizer: $(cat "$tmp/err")"; fail=1
    fi
else
    echo "FAIL: yuan2-m32-tokenizer.model not found under $SH"; fail=1
fi

# ---- hostile inputs ---------------------------------------------------------------------------------------
# expect_fail NAME SUBSTRING convert-args...: exit 1, one line "moec convert: ...SUBSTRING...", no output file
expect_fail() {
    local name=$1 want=$2; shift 2
    rm -f "$tmp/bad.gguf"
    "$MOEC" convert "$@" "$tmp/bad.gguf" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    local lines; lines=$(grep -c . "$tmp/err")
    if [ $rc -ne 1 ] || [ "$lines" -ne 1 ] || ! grep -q "^moec convert: .*$want" "$tmp/err" || [ -e "$tmp/bad.gguf" ]; then
        echo "FAIL hostile $name: exit $rc, stderr: $(cat "$tmp/err") (wanted '$want')"; fail=1
    else
        echo "ok   hostile $name: $(cat "$tmp/err")"
    fi
}
"$PY" - "$FIX/attn_e4_top2_lfa" "$tmp/h" <<'PYEOF' || { echo "FAIL: making hostile inputs"; fail=1; }
import json, os, shutil, struct, sys
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
conf = json.load(open(os.path.join(src, "config.json")))
st = open(os.path.join(src, "model.safetensors"), "rb").read()
n = struct.unpack_from("<Q", st)[0]
hdr = json.loads(st[8:8 + n])
data = st[8 + n:]

def mk(name, conf=conf, hdr=hdr, data=data, extra=None, raw=None):
    d = os.path.join(out, name)
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(conf if isinstance(conf, str) else json.dumps(conf))
    if raw is not None:
        open(os.path.join(d, "model.safetensors"), "wb").write(raw)
    elif hdr is not None:
        hj = json.dumps(hdr).encode()
        open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", len(hj)) + hj + data)
    for fn, content in (extra or {}).items():
        open(os.path.join(d, fn), "w").write(content)

def edit(f):
    h = json.loads(json.dumps(hdr)); f(h); return h

def drop(c, k):
    c = json.loads(json.dumps(c)); c.pop(k); return c

mk("no_hidden", conf=drop(conf, "hidden_size"))
mk("no_moe", conf=drop(conf, "moe_config"))
c = json.loads(json.dumps(conf)); c["moe_config"]["norm_topk_prob"] = False; mk("no_renorm", conf=c)
c = json.loads(json.dumps(conf)); c["hidden_size"] = 1e12; mk("absurd_hidden", conf=c)
c = json.loads(json.dumps(conf)); c["vocab_size"] = 97; mk("vocab_mismatch", conf=c)
c = json.loads(json.dumps(conf)); c["tie_word_embeddings"] = False; mk("untied_no_lm_head", conf=c)
mk("bad_json", conf="{\"hidden_size\": 32,")
c = json.loads(json.dumps(conf)); c["use_lfa"] = False; mk("lfa_config_mismatch", conf=c)
c = json.loads(json.dumps(conf)); c["num_key_value_heads"] = 2; mk("gqa", conf=c)
w2 = "model.layers.1.mlp.experts.3.w2.weight"
mk("missing_tensor", hdr=edit(lambda h: h.pop(w2)))
mk("offsets_past_end", hdr=edit(lambda h: h[w2].update(data_offsets=[h[w2]["data_offsets"][0], len(data) + 4])))
mk("size_mismatch", hdr=edit(lambda h: h[w2].update(shape=[32, 25])))
mk("begin_after_end", hdr=edit(lambda h: h[w2].update(data_offsets=h[w2]["data_offsets"][::-1])))
mk("overlap", hdr=edit(lambda h: h[w2].update(data_offsets=[0, 32 * 24 * 4])))  # inside the embedding's bytes
mk("dtype_unknown", hdr=edit(lambda h: h[w2].update(dtype="F7")))
mk("dtype_int", hdr=edit(lambda h: h[w2].update(dtype="I32")))
mk("negative_shape", hdr=edit(lambda h: h[w2].update(shape=[-32, 24])))
mk("header_too_long", raw=struct.pack("<Q", len(st)) + st[8:])
mk("header_huge", raw=struct.pack("<Q", 1 << 62) + st[8:])
mk("header_not_json", raw=struct.pack("<Q", 8) + b"{garbage" + data)
mk("short_file", raw=b"\x01\x02")
mk("dup_name", raw=(lambda hj: struct.pack("<Q", len(hj)) + hj + data)(
    json.dumps(hdr).encode()[:-1] + b',"model.norm.weight":' + json.dumps(hdr["model.norm.weight"]).encode() + b"}"))
# shards: index pointing outside the directory / listing a tensor its shard lacks
mk("index_escape", hdr=None, extra={"model.safetensors.index.json":
   json.dumps({"weight_map": {k: "../x.safetensors" for k in hdr if k != "__metadata__"}})})
mk("index_lies", hdr=None, extra={"model.safetensors.index.json":
   json.dumps({"weight_map": dict({k: "model.safetensors" for k in hdr if k != "__metadata__"}, **{"ghost.weight": "model.safetensors"})})})
shutil.copy(os.path.join(src, "model.safetensors"), os.path.join(out, "index_lies", "model.safetensors"))
PYEOF
H=$tmp/h
expect_fail no-such-dir "not a directory" "$tmp/nonexistent"
expect_fail no-config "config.json" "$tmp"
expect_fail config-missing-key "missing key hidden_size" "$H/no_hidden"
expect_fail config-no-moe "missing key moe_config" "$H/no_moe"
expect_fail config-no-renorm "norm_topk_prob" "$H/no_renorm"
expect_fail config-absurd "hidden_size must be an integer in" "$H/absurd_hidden"
expect_fail config-bad-json "not a JSON object" "$H/bad_json"
expect_fail vocab-mismatch "model.embed_tokens.weight has shape \[96, 32\], config.json implies \[97, 32\]" "$H/vocab_mismatch"
expect_fail leftover-tensor "lf_gate.conv1.bias of the checkpoint has no place" "$H/lfa_config_mismatch"
expect_fail config-gqa "num_key_value_heads 2 != num_attention_heads 4" "$H/gqa"
expect_fail untied-no-lm-head "lm_head.weight is missing" "$H/untied_no_lm_head"
expect_fail missing-tensor "missing tensor model.layers.1.mlp.experts.3.w2.weight" "$H/missing_tensor"
expect_fail offsets-past-end "past the end of the data" "$H/offsets_past_end"
expect_fail size-mismatch "needs 3200" "$H/size_mismatch"
expect_fail begin-after-end "begin .* > end" "$H/begin_after_end"
expect_fail overlap "overlap" "$H/overlap"
expect_fail dtype-unknown "unknown dtype 'F7'" "$H/dtype_unknown"
expect_fail dtype-int "dtype I32" "$H/dtype_int"
expect_fail negative-shape "not a non-negative integer" "$H/negative_shape"
expect_fail header-too-long "exceeds the file" "$H/header_too_long"
expect_fail header-huge "header length .* out of range" "$H/header_huge"
expect_fail header-not-json "not valid JSON" "$H/header_not_json"
expect_fail short-file "too short" "$H/short_file"
expect_fail duplicate-name "duplicate tensor model.norm.weight" "$H/dup_name"
expect_fail index-escape "must be a plain file name" "$H/index_escape"
expect_fail index-lies "weight_map lists ghost.weight" "$H/index_lies"
# llama2.c
M=$SH/data/models
[ -f "$M/aidreams260K.bin" ] || M=$SH/models
V=$M/aidreams-tok512.bin
head -c 900000 "$M/aidreams260K.bin" >"$tmp/trunc.bin"
cat "$M/aidreams260K.bin" >"$tmp/long.bin"; printf 'xxxx' >>"$tmp/long.bin"
"$PY" -c '
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
def put(fn, i, v):
    c = bytearray(b); struct.pack_into("<i", c, 4 * i, v); open(fn, "wb").write(c)
put(sys.argv[2] + "/huge.bin", 0, 1 << 30)
put(sys.argv[2] + "/heads.bin", 3, 5)
put(sys.argv[2] + "/neglayers.bin", 2, -4)
put(sys.argv[2] + "/unshared.bin", 5, -512)' "$M/aidreams260K.bin" "$tmp"
head -c 20 "$M/aidreams260K.bin" >"$tmp/tiny.bin"
expect_fail l2c-truncated "truncated" --llama2c "$tmp/trunc.bin" --vocab "$V"
expect_fail l2c-trailing "header implies" --llama2c "$tmp/long.bin" --vocab "$V"
expect_fail l2c-absurd-dim "dim 1073741824 out of range" --llama2c "$tmp/huge.bin" --vocab "$V"
expect_fail l2c-heads "n_heads 5 does not divide dim 64" --llama2c "$tmp/heads.bin" --vocab "$V"
expect_fail l2c-neg-layers "n_layers -4 out of range" --llama2c "$tmp/neglayers.bin" --vocab "$V"
expect_fail l2c-unshared-short "truncated" --llama2c "$tmp/unshared.bin" --vocab "$V"
expect_fail l2c-tiny "too short" --llama2c "$tmp/tiny.bin" --vocab "$V"
TB=$SH/data/tokenizers/llama2c-tokenizer.bin
[ -f "$TB" ] || TB=$SH/tokenizers/llama2c-tokenizer.bin
expect_fail l2c-vocab-mismatch "has 32000 tokens but the model's vocab_size is 512" --llama2c "$M/aidreams260K.bin" --vocab "$TB"
# a failed conversion leaves an existing output untouched
echo keep >"$tmp/keep.gguf"
"$MOEC" convert "$H/missing_tensor" "$tmp/keep.gguf" 2>/dev/null
[ "$(cat "$tmp/keep.gguf")" = keep ] || { echo "FAIL: a failed convert replaced the existing output"; fail=1; }
# usage errors exit 2
"$MOEC" convert >/dev/null 2>&1; [ $? -eq 2 ] || { echo "FAIL: no arguments should be a usage error"; fail=1; }
"$MOEC" convert "$FIX/attn_e4_top2_lfa" "$tmp/x.gguf" --type q9 >/dev/null 2>&1; [ $? -eq 2 ] || { echo "FAIL: bad --type"; fail=1; }
exit $fail
