#!/usr/bin/env bash
# External oracle for `moec init` (GGUF writer, llama MoE layout, embedded tokenizer) and for `moec bench`:
# llama.cpp (bench/llamacpp.mjs, node-llama-cpp's prebuilt binaries) must load a Mixtral-style llama MoE written by
# moec init, and its greedy tokens from the same prompt ids must equal moec's (llama.cpp is run by
# `moec bench --peer`, which also gives the ratios). Also checks moec bench's JSON output, its bandwidth bound and
# its argument errors. Skips (77) when the peer is not installed (bash bench/setup.sh).
set -u
cd "$(dirname "$0")/.."
MOEC=${MOEC:-build/moec}
PY=${PY:-/usr/bin/python3}
S=${MOEC_SHARED:-$(cd .. && pwd)/shared}
TOKM="$S/data/tokenizers/llama2-tokenizer.model"
[ -f "$TOKM" ] || { echo "skip: $TOKM missing"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }

# F32 weights: llama.cpp then computes in fp32 like moec (with F16 weights it rounds activations to F16)
"$MOEC" init "$tmp/m.gguf" --arch llama --dim 64 --layers 2 --heads 4 --kv-heads 2 --experts 4 --top-k 2 --ff 96 \
    --tied off --vocab-from "$TOKM" --seed 11 --std 0.2 >/dev/null || { bad "moec init"; exit 1; }
"$MOEC" bench -m "$tmp/m.gguf" -t 1 -p 24 -n 16 --no-peer --json >"$tmp/moec.json" 2>"$tmp/err" || { bad "moec bench: $(cat "$tmp/err")"; exit 1; }
"$PY" - "$tmp/moec.json" <<'PYEOF' && ok "moec bench JSON, bound = bandwidth / weight bytes" || bad "moec bench JSON: $(cat "$tmp/moec.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["engine"] == "moec" and r["threads"] == 1 and r["batch"] == 1 and r["n_prompt"] == 24 and r["n_gen"] == 16, r
assert r["pp_tps"] > 0 and r["tg_tps"] > 0 and r["rss_max_mb"] > 0 and len(r["tokens"]) == 16, r
assert all(0 <= t < 32000 for t in r["tokens"]), r
assert r["kv"] == "f16" and "peer" not in r, r  # the default: F16, as llama.cpp
# weight bytes of this F32 model, counted here from its sizes: per token the attention (wq, wk, wv, wo), the
# router, 2 of 4 experts (gate, up, down), the norms, one embedding row and the untied lm head
H, L, KVd, E, K, F, V = 64, 2, 32, 4, 2, 96, 32000
per_layer = 4 * (H * H + H * KVd + KVd * H + H * H) + 4 * E * H + 4 * K * 3 * H * F + 4 * 2 * H
assert r["weight_bytes_per_token"] == L * per_layer + 4 * H + 4 * H + 4 * V * H, (r["weight_bytes_per_token"], L * per_layer)
assert 0.5 < r["read_gbps"] < 1000, r
assert abs(r["tg_bound_tps"] - r["read_gbps"] * 1e9 / r["weight_bytes_per_token"]) < 1e-3 * r["tg_bound_tps"], r
assert abs(r["tg_bound_frac"] - r["tg_tps"] / r["tg_bound_tps"]) < 1e-3, r
PYEOF
# batched decode: 3 sequences with different prompts decoded together; sequence 0 has the single-sequence prompt,
# so its greedy tokens must be those of the run above
"$MOEC" bench -m "$tmp/m.gguf" -t 2 -p 24 -n 16 -b 3 --no-peer --json >"$tmp/b3.json" 2>"$tmp/err" && "$PY" - "$tmp/moec.json" "$tmp/b3.json" <<'PYEOF' \
    && ok "moec bench -b 3: sequence 0 decodes the same tokens in a batch" || bad "moec bench -b 3: $(cat "$tmp/b3.json" "$tmp/err")"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert b["batch"] == 3 and b["n_gen"] == 16 and "peer" not in b and "read_gbps" not in b, b
assert b["tokens"] == a["tokens"], (a["tokens"], b["tokens"])
PYEOF
"$MOEC" bench --bandwidth -t 1 --json >"$tmp/bw.json" 2>"$tmp/err" && "$PY" -c '
import json, sys; r = json.load(open(sys.argv[1])); assert r["threads"] == 1 and 0 < r["median_gbps"] <= r["best_gbps"], r
' "$tmp/bw.json" && ok "moec bench --bandwidth" || bad "moec bench --bandwidth: $(cat "$tmp/bw.json" "$tmp/err")"
"$MOEC" bench -m "$tmp/m.gguf" -t 0 >/dev/null 2>&1; [ $? -eq 2 ] && ok "bench rejects -t 0" || bad "bench -t 0 accepted"
"$MOEC" bench -m "$tmp/nonexistent.gguf" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && ok "bench: missing file -> one error line" || bad "bench missing file rc=$rc"
"$MOEC" bench -m "$tmp/m.gguf" --kv f32 --kv f8 >/dev/null 2>&1; [ $? -eq 2 ] && ok "bench rejects --kv f8" || bad "bench --kv f8 accepted"
"$MOEC" bench -m "$tmp/m.gguf" --peer "$tmp/none.mjs" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q "none.mjs" "$tmp/err" && ok "bench --peer with no such script: usage error" || bad "bench --peer missing rc=$rc"
if ! [ -f bench/node_modules/node-llama-cpp/package.json ] || ! command -v node >/dev/null; then
    echo "skip: llama.cpp peer not installed (bash bench/setup.sh)"
    [ $fail -eq 0 ] && exit 77 || exit 1
fi
"$MOEC" bench -m "$tmp/m.gguf" -t 1 -p 24 -n 16 --no-bw --peer bench/llamacpp.mjs --json >"$tmp/both.json" 2>"$tmp/err" \
    && ok "llama.cpp loads and runs the moec-init llama MoE (moec bench --peer)" || { bad "moec bench --peer: $(head -c 600 "$tmp/err")"; exit 1; }
"$PY" - "$tmp/both.json" <<'PYEOF' || fail=1
import json, sys
a = json.load(open(sys.argv[1]))
b = a["peer"]
assert b["engine"] == "llama.cpp" and b["n_prompt"] == 24 and b["n_gen"] == 16, b
assert abs(a["pp_ratio"] - a["pp_tps"] / b["pp_tps"]) < 1e-3 * a["pp_ratio"], a
assert abs(a["tg_ratio"] - a["tg_tps"] / b["tg_tps"]) < 1e-3 * a["tg_ratio"], a
ok = a["tokens"] == b["tokens"]
print(("ok   " if ok else "FAIL ") + f"greedy tokens moec {a['tokens']} vs llama.cpp {b['tokens']}")
sys.exit(0 if ok else 1)
PYEOF
# batched decode on both engines: 3 sequences in lock step; sequence 0's greedy tokens agree, and llama.cpp batched
# every decode token with the others
"$MOEC" bench -m "$tmp/m.gguf" -t 1 -p 24 -n 16 -b 3 --peer bench/llamacpp.mjs --json >"$tmp/bb.json" 2>"$tmp/err" \
    && "$PY" - "$tmp/bb.json" <<'PYEOF' && ok "moec bench -b 3 --peer: llama.cpp batched too, same tokens" || bad "bench -b 3 --peer: $(cat "$tmp/bb.json" "$tmp/err")"
import json, sys
a = json.load(open(sys.argv[1])); b = a["peer"]
assert a["batch"] == 3 and b["batch"] == 3 and b["n_gen"] == 16 and b["tg_tokens_unbatched"] == 0, a
assert a["tokens"] == b["tokens"], (a["tokens"], b["tokens"])
PYEOF
# the human summary names the peer and the ratios
"$MOEC" bench -m "$tmp/m.gguf" -t 1 -p 8 -n 4 --no-bw >"$tmp/both.txt" 2>"$tmp/err" && grep -q "^llama.cpp: prompt" "$tmp/both.txt" \
    && grep -q "^ratio: *moec/llama.cpp prompt" "$tmp/both.txt" && ok "moec bench finds the installed peer by itself" \
    || bad "moec bench summary without the peer: $(cat "$tmp/both.txt" "$tmp/err")"

# Q8_0 / Q4_0 files written by moec init: llama.cpp must load them (block layout) and start with the same tokens
# (llama.cpp rounds activations to 8 bits in these matmuls, so only a common prefix of 4 is required)
for q in q8_0 q4_0; do
    "$MOEC" init "$tmp/$q.gguf" --arch llama --dim 64 --layers 2 --heads 4 --kv-heads 2 --experts 4 --top-k 2 \
        --ff 96 --tied off --vocab-from "$TOKM" --seed 11 --std 0.2 --type $q >/dev/null || { bad "init $q"; continue; }
    "$MOEC" bench -m "$tmp/$q.gguf" -t 1 -p 24 -n 16 --no-bw --peer bench/llamacpp.mjs --json >"$tmp/m$q.json" 2>"$tmp/err" \
        || { bad "moec bench --peer $q: $(head -c 600 "$tmp/err")"; continue; }
    "$PY" - "$tmp/m$q.json" "$q" <<'PYEOF' || fail=1
import json, sys
r = json.load(open(sys.argv[1]))
a, b = r["tokens"], r["peer"]["tokens"]
k = 0
while k < min(len(a), len(b)) and a[k] == b[k]: k += 1
print(("ok   " if k >= 4 else "FAIL ") + f"{sys.argv[2]}: moec and llama.cpp agree on the first {k} of 16 greedy tokens")
sys.exit(0 if k >= 4 else 1)
PYEOF
done
exit $fail
