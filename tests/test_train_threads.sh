#!/usr/bin/env bash
# moec train gives bitwise the same checkpoint with 1 and 2 threads, on a model big enough that every threaded
# kernel of the step runs threaded (matrix products, attention backward, optimizer), with groups of rows (--group 3
# over 4 rows: a full and a partial group) and the auxiliary losses on.
set -u
MOEC=${MOEC:-build/moec}
dir=$(mktemp -d /tmp/moec_thr_XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$MOEC" init "$dir/m.gguf" --dim 128 --layers 2 --heads 4 --experts 4 --top-k 2 --ff 256 --vocab 512 --ctx 128 \
    --seed 3 >/dev/null || fail "init"
awk 'BEGIN{srand(7); for(i=0;i<16;i++){l=""; for(j=0;j<65;j++) l=l (j?" ":"") int(rand()*512); print l}}' >"$dir/ids.txt"
args=(-m "$dir/m.gguf" -d "$dir/ids.txt" --batch 4 --seq 64 --steps 3 --lr 1e-3 --group 3 --aux-lb 0.01 --aux-z 0.001
      --quiet)
OMP_NUM_THREADS=1 "$MOEC" train "${args[@]}" -o "$dir/a.ckpt" || fail "1-thread run"
OMP_NUM_THREADS=2 "$MOEC" train "${args[@]}" -o "$dir/b.ckpt" || fail "2-thread run"
cmp "$dir/a.ckpt" "$dir/b.ckpt" || fail "checkpoints differ between 1 and 2 threads"
awk -F, 'NR==2{a=$3} END{exit !($3 < a)}' "$dir/a.ckpt.csv" || fail "loss did not go down"
echo "ok   1 and 2 threads give the same checkpoint bits"
