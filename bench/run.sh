#!/usr/bin/env bash
# `make bench`: install the llama.cpp peer (bench/setup.sh), run every bench/*.sh piece (models.sh: moec vs
# llama.cpp speed and bandwidth; tok.sh: tokenizer speed; others' kernel pieces), then print a summary.
# Pieces get BUILD as their argument. Speed numbers from a shared machine are noisy: see docs/performance.md.
# env: BENCH_ONLY="models tok" runs only those pieces; the pieces' own env (BENCH_P, BENCH_N, BENCH_THREADS...).
set -u
main() {  # one function: editing this file during a run cannot break the run
cd "$(dirname "$0")/.."
BUILD=${1:-build}
export MOEC=${MOEC:-$BUILD/moec}
[ -x "$MOEC" ] || { echo "bench: $MOEC not built (make)"; exit 1; }
bash bench/setup.sh || echo "bench: bench/setup.sh failed: the llama.cpp peer will be missing"
summary=()
status=0
for piece in bench/*.sh; do
    name=$(basename "$piece" .sh)
    case "$name" in run | setup | make-models) continue ;; esac
    if [ -n "${BENCH_ONLY:-}" ] && ! [[ " $BENCH_ONLY " == *" $name "* ]]; then continue; fi
    echo "=== bench/$name.sh"
    t0=$(date +%s)
    bash "$piece" "$BUILD"
    rc=$?
    summary+=("$(printf '%-14s %s (%ss)' "$name" "$([ $rc -eq 0 ] && echo ok || echo "FAILED rc=$rc")" $(($(date +%s) - t0)))")
    [ $rc -eq 0 ] || status=1
done
echo
echo "=== bench summary"
for s in "${summary[@]}"; do echo "  $s"; done
[ -f bench/out/results.md ] && echo "  model results: bench/out/results.md, bench/out/results.svg"
exit $status
}
main "$@"
