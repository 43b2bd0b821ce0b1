#!/usr/bin/env bash
# Model speed: moec bench and llama.cpp (bench/llamacpp.mjs) on the same GGUF files, with each thread count, in the
# same run; plus read bandwidth (`moec bench --bandwidth`). Writes bench/out/results.jsonl, results.md and results.svg
# (bench/report.py). Models: bench/make-models.sh (made on demand).
# env: BENCH_THREADS="1 2"  BENCH_P=512  BENCH_N=128  BENCH_MODELS="file.gguf ..." (default: the made ones)
#      BENCH_REPS=1 (repetitions per measurement; the best time of each phase is kept)
#      BENCH_ROUNDS=1 (the whole series of measurements that many times, engines interleaved; report.py keeps the
#      best pp and the best tg of each engine/model/threads: on a shared machine interference only slows down)
#      BENCH_KV=f16 (moec's KV cache type, f16 or f32; llama.cpp's is F16)
#      BENCH_TIMEOUT=1800 (seconds per single measurement; a slower one is recorded as a timeout)
#      BENCH_BASE=path/to/other/moec (optional: a second moec binary, e.g. an older build, measured in the same run
#      right after the first, as engine "moec-base": before/after ratios under the same machine load)
#      BENCH_NOMMAP=1 (also moec bench --no-mmap, the weights read into huge pages, as engine "moec-nommap")
#      OMP_WAIT_POLICY / GOMP_SPINCOUNT are passed to moec as set (recorded in the results; unset = libgomp's default)
# usage: bench/models.sh [BUILD]   (called from bench/run.sh)
set -u
main() {  # (the whole script is one function so that editing this file during a run cannot break the run)
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MOEC=${MOEC:-$BUILD/moec}
PY=/usr/bin/python3
OUT=bench/out
THREADS=${BENCH_THREADS:-1 2}
P=${BENCH_P:-512}
N=${BENCH_N:-128}
TMO=${BENCH_TIMEOUT:-1800}
REPS=${BENCH_REPS:-1}
ROUNDS=${BENCH_ROUNDS:-1}
KV=${BENCH_KV:-f16}
KVOPT="--kv $KV"
mkdir -p "$OUT" "$BUILD/bench"
# a private copy of the binary: the build dir may be rebuilt by someone else during a long run
cp "$MOEC" "$BUILD/bench/moec" || { echo "models: no moec binary at $MOEC"; exit 1; }
MOEC_ORIG=$MOEC
MOEC=$BUILD/bench/moec
BASE=${BENCH_BASE:-}
if [ -n "$BASE" ]; then cp "$BASE" "$BUILD/bench/moec-base" || { echo "models: no moec binary at $BASE"; exit 1; }
    BASE=$BUILD/bench/moec-base; fi
BASEOPT=""  # an older build may not know the options of this one
if [ -n "$BASE" ] && "$BASE" bench --help 2>&1 | grep -q -- --no-peer; then BASEOPT="$KVOPT --no-bw --no-peer"; fi
RES="$OUT/results.jsonl"
: >"$RES.tmp"
meta() { printf '%s\n' "$1" >>"$RES.tmp"; }

MOEC=$MOEC_ORIG bash bench/make-models.sh "$BUILD" || { echo "models: making the models failed"; exit 1; }
MODELS=${BENCH_MODELS:-$(ls "$OUT"/moe-llama-f16.gguf "$OUT"/moe-llama-q8_0.gguf "$OUT"/moe-llama-q4_0.gguf \
    "$OUT"/moe-yuan-f16.gguf 2>/dev/null)}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true || echo false)
cpu=$(grep -m1 "model name" /proc/cpuinfo | sed 's/.*: //; s/"/'"'"'/g')
meta "{\"kind\":\"meta\",\"date\":\"$(date -u +%Y-%m-%dT%H:%MZ)\",\"commit\":\"$commit\",\"dirty\":$dirty,\"cpu\":\"$cpu\",\"cores\":$(nproc),\"load_start\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"n_prompt\":$P,\"n_gen\":$N,\"reps\":$REPS,\"rounds\":$ROUNDS,\"omp_wait_policy\":\"${OMP_WAIT_POLICY:-default}\",\"gomp_spincount\":\"${GOMP_SPINCOUNT:-default}\",\"base\":\"${BENCH_BASE:-}\",\"kv\":\"$KV\"}"

# read bandwidth, before and after the runs (report.py uses the best: interference only lowers it)
bw() {
    for t in $THREADS; do
        "$MOEC" bench --bandwidth -t "$t" --json 2>/dev/null | sed 's/^{/{"kind":"bw",/' >>"$RES.tmp"
    done
}
bw

peer=1
if ! node -e 'require.resolve("./bench/node_modules/node-llama-cpp/package.json")' 2>/dev/null; then
    echo "models: node-llama-cpp not installed (bench/setup.sh): no llama.cpp numbers"
    peer=0
fi

# run_moec ENGINE BINARY OPTIONS...: one `moec bench` of model $m with $t threads, recorded as ENGINE
run_moec() {
    local eng=$1 bin=$2 line rc; shift 2
    echo "models: $eng bench $m -t $t -p $P -n $N $*" >&2
    line=$(timeout "$TMO" "$bin" bench -m "$m" -t "$t" -p "$P" -n "$N" -r "$REPS" "$@" --json 2>"$OUT/err.txt")
    rc=$?
    if [ $rc -eq 0 ] && [ -n "$line" ]; then meta "$(printf '%s' "$line" | sed "s/^{/{\"kind\":\"run\",\"arch\":\"$arch\",/; s/\"engine\":\"moec\"/\"engine\":\"$eng\"/")"
    else meta "{\"kind\":\"run\",\"engine\":\"$eng\",\"arch\":\"$arch\",\"model\":\"$m\",\"threads\":$t,\"error\":\"$( [ $rc -eq 124 ] && echo "timeout after ${TMO}s" || head -c 200 "$OUT/err.txt" | tr '"\n' "' ")\"}"; fi
}

for round in $(seq "$ROUNDS"); do
[ "$ROUNDS" -gt 1 ] && echo "models: round $round of $ROUNDS" >&2
for m in $MODELS; do
    arch=$("$MOEC" info "$m" 2>/dev/null | sed -n 's/^architecture: *//p')
    for t in $THREADS; do
        run_moec moec "$MOEC" $KVOPT --no-bw --no-peer
        [ -n "$BASE" ] && run_moec moec-base "$BASE" $BASEOPT
        [ "${BENCH_NOMMAP:-0}" = 1 ] && run_moec moec-nommap "$MOEC" $KVOPT --no-bw --no-peer --no-mmap
        if [ $peer -eq 1 ] && [ "$arch" = llama ]; then
            echo "models: llama.cpp $m -t $t -p $P -n $N" >&2
            line=$(UV_THREADPOOL_SIZE=1 timeout "$TMO" node bench/llamacpp.mjs "$m" -t "$t" -p "$P" -n "$N" -r "$REPS" 2>"$OUT/err.txt")
            rc=$?
            if [ $rc -eq 0 ] && [ -n "$line" ]; then meta "$(printf '%s' "$line" | sed "s/^{/{\"kind\":\"run\",\"arch\":\"$arch\",/")"
            else meta "{\"kind\":\"run\",\"engine\":\"llama.cpp\",\"arch\":\"$arch\",\"model\":\"$m\",\"threads\":$t,\"error\":\"$( [ $rc -eq 124 ] && echo "timeout after ${TMO}s" || head -c 200 "$OUT/err.txt" | tr '"\n' "' ")\"}"; fi
        fi
    done
done
bw  # after every round: the bound uses the best bandwidth seen
done
meta "{\"kind\":\"end\",\"load_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
rm -f "$OUT/err.txt"
mv "$RES.tmp" "$RES"
"$PY" bench/report.py "$RES" "$OUT/results.md" "$OUT/results.svg"
}
main "$@"
