#!/usr/bin/env bash
# HF-layout fixtures (tests/reference/fixtures, made by make_fixtures.py from the independent PyTorch reference)
# -> moec convert -> moec logits, full pass and --step (token by token), in each case's rope table mode.
# Metric: per row, max |moec - reference| / max |reference|; the worst row must be <= 1e-4.
# The rope table is taken from the file (converted with --rope-table) for the full pass, and from the
# --rope-table option of moec logits (overriding the file) for --step.
set -u
cd "$(dirname "$0")/.."
MOEC=${MOEC:-build/moec}
PY=${PY:-/usr/bin/python3}
export PYTHONDONTWRITEBYTECODE=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
FIX=tests/reference/fixtures
fail=0 n=0

# Skip only while `moec logits` is a stub.
"$MOEC" logits -m /nonexistent.gguf --tokens "1" -o "$tmp/x.npy" >"$tmp/probe" 2>&1
if grep -qi "not implemented" "$tmp/probe"; then echo "moec logits is not implemented yet"; exit 77; fi

for dir in "$FIX"/*/; do
    name=$(basename "$dir")
    for table in fp32 hf; do
        if ! "$MOEC" convert "$dir" "$tmp/$name.$table.gguf" --rope-table $table 2>"$tmp/err"; then
            echo "FAIL $name: convert --rope-table $table: $(cat "$tmp/err")"; fail=1; continue 2
        fi
    done
    # cases: name rope_table npy tokens...
    while read -r cname rope npy toks; do
        other=$([ "$rope" = hf ] && echo fp32 || echo hf)
        for mode in full step f32; do
            case $mode in
                full) args=(-m "$tmp/$name.$rope.gguf") ;;
                step) args=(-m "$tmp/$name.$other.gguf" --rope-table "$rope" --step) ;;
                f32)  # the same checkpoint widened to F32 matrices (only where the source is not F32)
                      grep -q '"F32"' "$dir/meta.json" && continue
                      "$MOEC" convert "$dir" "$tmp/$name.f32.gguf" --type f32 --rope-table "$rope" 2>/dev/null || \
                          { echo "FAIL $name: convert --type f32"; fail=1; continue; }
                      args=(-m "$tmp/$name.f32.gguf") ;;
            esac
            n=$((n+1))
            if ! "$MOEC" logits "${args[@]}" --tokens "$toks" -o "$tmp/out.npy" 2>"$tmp/err"; then
                echo "FAIL $name/$cname ($mode): moec logits: $(cat "$tmp/err")"; fail=1; continue
            fi
            if msg=$("$PY" tests/reference/compare.py "$dir/$npy" "$tmp/out.npy" 1e-4); then
                echo "ok   $name/$cname ($mode, rope $rope): $msg"
            else
                echo "FAIL $name/$cname ($mode, rope $rope): $msg"; fail=1
            fi
        done
    done < <("$PY" -c '
import json, sys
for c in json.load(open(sys.argv[1]))["cases"]:
    print(c["name"], c["rope_table"], c["logits"], " ".join(map(str, c["tokens"])))' "$dir/meta.json")
done
echo "$n runs"
[ "$n" -gt 0 ] || { echo "no fixtures found"; exit 1; }
exit $fail
