#!/usr/bin/env bash
# A *trained* llama model: aidreams260K (llama2.c checkpoint, converted with `moec convert --llama2c`) must give
# exactly run.c's recorded greedy text (REFERENCE-outputs.txt; llama.cpp gives the same): 128 steps from BOS,
# and 64 steps from the prompt 'I dream of' (run.c's -n counts prompt positions: 64 - 6 prompt tokens = 58 new).
set -u
S=${MOEC_SHARED:-../shared}
D=$S/data/models
[ -f "$D/aidreams260K.bin" ] || { echo "skip: no aidreams260K.bin"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
"$MOEC" convert --llama2c "$D/aidreams260K.bin" --vocab "$D/aidreams-tok512.bin" "$T/a.gguf" >/dev/null 2>"$T/err" \
    || { echo "skip: moec convert --llama2c failed: $(cat "$T/err")"; exit 77; }
fail=0
exp1=$(grep -A1 "run -n 128\|-t 0 -n 128" "$D/REFERENCE-outputs.txt" | tail -n 1)
exp2=$(grep -A1 "I dream of'" "$D/REFERENCE-outputs.txt" | tail -n 1)
[ -n "$exp1" ] && [ -n "$exp2" ] || { echo "FAIL: cannot read the reference"; exit 1; }
got1=$("$MOEC" generate -m "$T/a.gguf" -p "" -n 128 --temp 0 2>/dev/null)
if [ "$got1" = "$exp1" ]; then echo "ok: 128 greedy tokens from BOS = run.c"; else
    echo "FAIL: from BOS"; echo "  got:      $got1"; echo "  expected: $exp1"; fail=1; fi
got2=$("$MOEC" generate -m "$T/a.gguf" -p "I dream of" -n 58 --temp 0 2>/dev/null)
if [ "$got2" = "$exp2" ]; then echo "ok: 'I dream of' + 58 greedy tokens = run.c"; else
    echo "FAIL: 'I dream of'"; echo "  got:      $got2"; echo "  expected: $exp2"; fail=1; fi
exit $fail
