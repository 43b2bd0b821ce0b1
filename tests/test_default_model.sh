#!/usr/bin/env bash
# The shipped default model (models/default.gguf, recipe scripts/make-default-model.sh): it loads with no other file,
# is a yuan2moe with the attention router and LFA, greedy generation is deterministic and reads as the corpus it was
# trained on (>= 80% of the greedy words and >= 60% of the words sampled at temperature 0.8 are words of
# tinyshakespeare; a random model with the same tokenizer, the negative control, has ~30-37% and fails the oracle),
# and its perplexity on held-out text (the end of the corpus, inside the validation split) is far below the
# vocabulary size.
set -u
MOEC=${MOEC:-build/moec}
PY=${PY:-/usr/bin/python3}
SHARED=${MOEC_SHARED:-../shared}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}   # shared machine: no spinning threads
M=${DEFAULT_MODEL:-models/default.gguf}
TEXT=$SHARED/data/corpora/tinyshakespeare.txt
PPL_MAX=${PPL_MAX:-60}   # the committed model measures 44.7 on this text; uniform over the vocabulary = 1024
[ -f "$M" ] || { echo "no $M committed"; exit 77; }
[ -f "$TEXT" ] || { echo "$TEXT missing"; exit 77; }
dir=$(mktemp -d /tmp/moec_defmodel_XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# 1. metadata
info=$("$MOEC" info "$M") || { echo "moec info failed"; exit 1; }
echo "$info" | grep -q '^architecture: *yuan2moe$' || bad "not yuan2moe: $info"
echo "$info" | grep -q '^lfa: *on$' || bad "LFA not on"
echo "$info" | grep -q 'attention router' || bad "not the attention router"
echo "$info" | grep -q '^experts: *8, top-2' || bad "not 8 experts top-2"
[ "$(stat -c %s "$M")" -lt 30000000 ] || bad "$M is 30 MB or more"

# 2. generation: greedy and seeded sampling (demo's settings) are deterministic (twice; greedy also with 1 and 2
#    threads) and made of corpus words; the sampled text is not degenerate (>= 8 distinct words)
gen() { "$MOEC" generate -m "$M" -p "$1" -n 120 -t "$2" "${@:3}" 2>/dev/null; }
for mode in greedy sampled; do
    if [ $mode = greedy ]; then opt=(--temp 0); else opt=(--temp 0.8 --seed 42); fi
    for p in "ROMEO:" "First Citizen:" "KING HENRY VI:"; do
        a=$(gen "$p" 1 "${opt[@]}") || { bad "generate failed ($p)"; continue; }
        b=$(gen "$p" 1 "${opt[@]}")
        [ "$a" = "$b" ] || bad "$mode generation differs between two runs ($p)"
        if [ $mode = greedy ]; then
            c=$(gen "$p" 2 "${opt[@]}")
            [ "$a" = "$c" ] || bad "greedy generation differs between 1 and 2 threads ($p)"
        fi
        printf '%s\n\x1e\n' "${a#"$p"}" >>"$dir/$mode.txt"   # scored without the prompt
    done
done
"$MOEC" init "$dir/random.gguf" --dim 128 --layers 4 --heads 4 --experts 8 --top-k 2 --ff 256 --ctx 256 \
    --vocab-from "$M" --seed 7 >/dev/null || bad "init of the control model failed"
for s in 1 2 3; do
    "$MOEC" generate -m "$dir/random.gguf" -p "ROMEO:" -n 120 --temp 1 --top-k 0 --top-p 1 --seed "$s" \
        2>/dev/null >>"$dir/noise.txt" || bad "generate (control) failed"
    printf '\n\x1e\n' >>"$dir/noise.txt"
done
$PY - "$TEXT" "$dir/greedy.txt" "$dir/sampled.txt" "$dir/noise.txt" <<'EOF' || fail=1
import re, sys
words = lambda s: re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*", s)
vocab = set(w.lower() for w in words(open(sys.argv[1]).read()))
def samples(path):  # -> [(fraction of words in the corpus vocabulary, distinct words)] per sample
    out = []
    for s in open(path).read().split("\x1e")[:3]:
        w = [x.lower() for x in words(s)]
        out.append((sum(x in vocab for x in w) / len(w) if w else 0.0, len(set(w))))
    return out
greedy, sampled, noise = samples(sys.argv[2]), samples(sys.argv[3]), samples(sys.argv[4])
for name, r in ("greedy", greedy), ("sampled", sampled), ("random control", noise):
    print(f"{name}: (fraction of corpus words, distinct words) per sample", [(round(f, 3), d) for f, d in r])
bad = False
if min(f for f, _ in greedy) < 0.8: print("FAIL: a greedy sample has < 80% corpus words"); bad = True
if min(f for f, _ in sampled) < 0.6: print("FAIL: a sampled text (temp 0.8) has < 60% corpus words"); bad = True
if min(d for _, d in sampled) < 8: print("FAIL: a sampled text has fewer than 8 distinct words (degenerate)"); bad = True
if max(f for f, _ in noise) >= 0.8: print("FAIL: the oracle does not reject the random model"); bad = True
sys.exit(1 if bad else 0)
EOF
head -c 300 "$dir/sampled.txt" | tr '\036' '\n'; echo

# 3. perplexity on held-out text: the last 12 kB of the corpus lie inside the validation split (last 5% of tokens)
tail -c 12000 "$TEXT" >"$dir/heldout.txt"
out=$("$MOEC" perplexity -m "$M" -f "$dir/heldout.txt" -c 256 2>/dev/null) || bad "perplexity failed"
ppl=$(echo "$out" | sed -n 's/.*PPL = \([0-9.]*\).*/\1/p')
echo "held-out perplexity: $ppl (bound $PPL_MAX)"
[ -n "$ppl" ] && awk -v p="$ppl" -v m="$PPL_MAX" 'BEGIN{exit !(p > 1 && p < m)}' || bad "perplexity $ppl not in (1, $PPL_MAX)"
exit $fail
