#!/usr/bin/env bash
# External oracle for `moec init` (GGUF writer, llama MoE layout, embedded tokenizer) and for `moec bench`:
# llama.cpp (bench/llamacpp.mjs, node-llama-cpp's prebuilt binaries) must load a Mixtral-style llama MoE written by
# moec init, and its greedy tokens from the same prompt ids must equal moec bench's. Also checks moec bench's
# JSON output and its argument errors. Skips (77) when the peer is not installed (bash bench/setup.sh).
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
"$MOEC" bench -m "$tmp/m.gguf" -t 1 -p 24 -n 16 --json >"$tmp/moec.json" 2>"$tmp/err" || { bad "moec bench: $(cat "$tmp/err")"; exit 1; }
"$PY" - "$tmp/moec.json" <<'PYEOF' && ok "moec bench JSON" || bad "moec bench JSON: $(cat "$tmp/moec.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["engine"] == "moec" and r["threads"] == 1 and r["n_prompt"] == 24 and r["n_gen"] == 16, r
assert r["pp_tps"] > 0 and r["tg_tps"] > 0 and r["rss_max_mb"] > 0 and len(r["tokens"]) == 16, r
assert all(0 <= t < 32000 for t in r["tokens"]), r
PYEOF
"$MOEC" bench -m "$tmp/m.gguf" -t 0 >/dev/null 2>&1; [ $? -eq 2 ] && ok "bench rejects -t 0" || bad "bench -t 0 accepted"
"$MOEC" bench -m "$tmp/nonexistent.gguf" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && ok "bench: missing file -> one error line" || bad "bench missing file rc=$rc"

if ! [ -f bench/node_modules/node-llama-cpp/package.json ] || ! command -v node >/dev/null; then
    echo "skip: llama.cpp peer not installed (bash bench/setup.sh)"
    [ $fail -eq 0 ] && exit 77 || exit 1
fi
UV_THREADPOOL_SIZE=1 node bench/llamacpp.mjs "$tmp/m.gguf" -t 1 -p 24 -n 16 >"$tmp/llama.json" 2>"$tmp/err" \
    && ok "llama.cpp loads and runs the moec-init llama MoE" || { bad "llama.cpp: $(head -c 600 "$tmp/err")"; exit 1; }
"$PY" - "$tmp/moec.json" "$tmp/llama.json" <<'PYEOF' || fail=1
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert b["n_prompt"] == 24 and b["n_gen"] == 16, b
ok = a["tokens"] == b["tokens"]
print(("ok   " if ok else "FAIL ") + f"greedy tokens moec {a['tokens']} vs llama.cpp {b['tokens']}")
sys.exit(0 if ok else 1)
PYEOF

# Q8_0 / Q4_0 files written by moec init: llama.cpp must load them (block layout) and start with the same tokens
# (llama.cpp rounds activations to 8 bits in these matmuls, so only a common prefix of 4 is required)
for q in q8_0 q4_0; do
    "$MOEC" init "$tmp/$q.gguf" --arch llama --dim 64 --layers 2 --heads 4 --kv-heads 2 --experts 4 --top-k 2 \
        --ff 96 --tied off --vocab-from "$TOKM" --seed 11 --std 0.2 --type $q >/dev/null || { bad "init $q"; continue; }
    "$MOEC" bench -m "$tmp/$q.gguf" -t 1 -p 24 -n 16 --json >"$tmp/m$q.json" 2>"$tmp/err" || { bad "moec bench $q: $(cat "$tmp/err")"; continue; }
    UV_THREADPOOL_SIZE=1 node bench/llamacpp.mjs "$tmp/$q.gguf" -t 1 -p 24 -n 16 >"$tmp/l$q.json" 2>"$tmp/err" \
        || { bad "llama.cpp $q: $(head -c 600 "$tmp/err")"; continue; }
    "$PY" - "$tmp/m$q.json" "$tmp/l$q.json" "$q" <<'PYEOF' || fail=1
import json, sys
a, b = (json.load(open(p))["tokens"] for p in sys.argv[1:3])
k = 0
while k < min(len(a), len(b)) and a[k] == b[k]: k += 1
print(("ok   " if k >= 4 else "FAIL ") + f"{sys.argv[3]}: moec and llama.cpp agree on the first {k} of 16 greedy tokens")
sys.exit(0 if k >= 4 else 1)
PYEOF
done
exit $fail
