#!/usr/bin/env bash
# moec train --resume is exact: a run killed with kill -9 at random moments several times and resumed each time
# ends with weights bitwise identical to an uninterrupted run (cmp of the exported files). Also: moec export strips
# the training state, the loss goes down, the CSV/SVG logs exist, and bad arguments fail cleanly.
set -u
MOEC=${MOEC:-build/moec}
FIX=tests/train/fixtures/tiny_attn.gguf
[ -f "$FIX" ] || { echo "fixture missing"; exit 77; }
dir=$(mktemp -d /tmp/moec_resume_XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# token ids (vocab 40), one sequence per line, lengths 5..18: exercises the loss mask
awk 'BEGIN{srand(5); for(i=0;i<300;i++){n=5+int(rand()*14); s=int(rand()*40); l=""; for(j=0;j<n;j++){l=l (j?" ":"") s; s=(s*7+3)%40}; print l}}' >"$dir/ids.txt"
args=(-d "$dir/ids.txt" --val "$dir/ids.txt" --eval-rows 20 --seq 16 --batch 2 --accum 2 --steps 400 --lr 3e-3
      --warmup 10 --save-every 8 --eval-every 40 --quiet)

t0=$EPOCHREALTIME
"$MOEC" train -m "$FIX" "${args[@]}" -o "$dir/A.ckpt" || fail "uninterrupted run"
t1=$EPOCHREALTIME
run_ms=$(( (${t1/./} - ${t0/./}) / 1000 )) # how long the whole run takes on this machine, now
"$MOEC" export "$dir/A.ckpt" "$dir/A.gguf" || fail "export A"
[ -s "$dir/A.ckpt.csv" ] && [ -s "$dir/A.ckpt.svg" ] || fail "no CSV/SVG log"
first=$(awk -F, 'NR==2{print $3}' "$dir/A.ckpt.csv")
last=$(awk -F, 'END{print $3}' "$dir/A.ckpt.csv")
awk -v a="$first" -v b="$last" 'BEGIN{exit !(b < a - 1.0)}' || fail "loss did not go down ($first -> $last)"
[ "$(wc -l <"$dir/A.ckpt.csv")" -eq 401 ] || fail "CSV should have 400 rows"
"$MOEC" info "$dir/A.gguf" >/dev/null 2>&1 || true
[ "$(stat -c %s "$dir/A.gguf")" -lt "$(stat -c %s "$dir/A.ckpt")" ] || fail "export did not shrink the file"

# interrupted run: kill -9 at random moments, resume from the last checkpoint each time. The moments are 5-25% of
# the uninterrupted run's time after each start, so at least the first two kills land inside the run however fast
# the machine is (a fixed 0.05-0.34 s once let a fast run finish before its second kill).
kills=0
RANDOM=42
for attempt in $(seq 1 30); do
    if [ -f "$dir/B.ckpt" ]; then
        "$MOEC" train --resume "$dir/B.ckpt" "${args[@]}" & pid=$!
    else
        "$MOEC" train -m "$FIX" "${args[@]}" -o "$dir/B.ckpt" & pid=$!
    fi
    if [ $kills -lt 4 ]; then
        ms=$(( run_ms * (RANDOM % 21 + 5) / 100 ))
        sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
        if kill -9 $pid 2>/dev/null; then kills=$((kills + 1)); fi
    fi
    wait $pid; rc=$?
    [ $rc -eq 0 ] && break
    [ $rc -eq 137 ] || fail "interrupted run exited with $rc"
done
[ $kills -ge 2 ] || fail "the run was killed only $kills times (too fast to test?)"
step=$(awk -F, 'END{print $1}' "$dir/B.ckpt.csv")
[ "$step" = 400 ] || fail "resumed run ended at step $step"
"$MOEC" export "$dir/B.ckpt" "$dir/B.gguf" || fail "export B"
cmp "$dir/A.gguf" "$dir/B.gguf" || fail "resumed weights differ from the uninterrupted run (killed $kills times)"
cmp "$dir/A.ckpt" "$dir/B.ckpt" || fail "resumed checkpoints (moments, progress) differ"
echo "killed $kills times, final weights and optimizer state bitwise identical"

# errors: one clear line, nonzero exit
out=$("$MOEC" train -m "$FIX" -d /nonexistent --steps 2 -o "$dir/x" 2>&1); rc=$?
[ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q nonexistent || fail "missing data: $out"
out=$("$MOEC" train --resume "$dir/ids.txt" -d "$dir/ids.txt" --steps 2 2>&1); rc=$?
[ $rc -ne 0 ] || fail "resume from a non-GGUF file accepted"
echo "7 99" >"$dir/bad.txt"
out=$("$MOEC" train -m "$FIX" -d "$dir/bad.txt" --steps 2 -o "$dir/x" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "outside the vocabulary" || fail "id >= vocab: $out"
out=$("$MOEC" train -m "$FIX" -d "$dir/ids.txt" -o "$dir/x" 2>&1); rc=$?
[ $rc -eq 2 ] || fail "no --steps should be a usage error"
out=$("$MOEC" export "$dir/ids.txt" "$dir/y" 2>&1); rc=$?
[ $rc -ne 0 ] || fail "export of a non-GGUF file"
echo ok
