#!/usr/bin/env bash
# moec tokenize / detokenize command line: input modes (TEXT, -f, stdin lines, --nul), output modes, BOS/EOS,
# --special, detokenize from arguments and stdin, and clear errors with the right exit status.
# Expected ids are SentencePiece 0.1.97's (LLaMA 2 model).
set -u
S=${MOEC_SHARED:-../shared}/data
MOEC=${MOEC:-build/moec}
cd "$(dirname "$0")/.."
M=$S/tokenizers/llama2-tokenizer.model
[ -f "$M" ] || { echo "no shared data at $S"; exit 77; }
fail=0
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
eq() { # eq NAME EXPECTED ACTUAL
    if [ "$2" == "$3" ]; then echo "ok   $1"; else echo "FAIL $1: expected [$2] got [$3]"; fail=1; fi
}
status() { # status NAME WANT_RC WANT_STDERR_SUBSTRING CMD...
    local name=$1 want=$2 msg=$3; shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
    if [ $rc -eq "$want" ] && grep -q -- "$msg" "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 1 ]; then echo "ok   $name"
    else echo "FAIL $name: rc $rc (want $want), stderr: $(cat "$tmp/err")"; fail=1; fi
}
eq "TEXT" "15043 3186 29892 29871 30919 31076" "$("$MOEC" tokenize -m "$M" "Hello world, 你好")"
eq "--pieces" "▁Hello ▁world" "$("$MOEC" tokenize -m "$M" --pieces "Hello world")"
eq "--bos --eos" "1 22172 2" "$("$MOEC" tokenize -m "$M" --bos --eos hello)"
eq "no --special" "22172 29966 29879 29958 11526" "$("$MOEC" tokenize -m "$M" "hello<s>world")"
eq "--special" "22172 1 3186" "$("$MOEC" tokenize -m "$M" --special "hello<s>world")"
printf 'hello\n\nx\ty\n' > "$tmp/in.txt"
eq "stdin lines" "$(printf '22172\n\n921 12 29891')" "$("$MOEC" tokenize -m "$M" < "$tmp/in.txt")"
eq "-f whole file" "22172 13 13 29916 12 29891 13" "$("$MOEC" tokenize -m "$M" -f "$tmp/in.txt")"
eq "--nul" "$(printf '22172\n921 13 29891')" "$(printf 'hello\0x\ny\0' | "$MOEC" tokenize -m "$M" --nul)"
eq "stdin without final newline" "22172" "$(printf 'hello' | "$MOEC" tokenize -m "$M")"
eq "detokenize args" "Hello world, 你好" "$("$MOEC" detokenize -m "$M" 15043 3186 29892 29871 30919 31076)"
eq "detokenize stdin" "$(printf 'hello\n\nx\ty')" "$(printf '22172\n\n921 12 29891\n' | "$MOEC" detokenize -m "$M")"
eq "detokenize --stream" "你你好" "$("$MOEC" detokenize -m "$M" --stream 231 192 163 30919 31076)"
eq "detokenize --special" "<s>hello</s>" "$("$MOEC" detokenize -m "$M" --special 1 22172 2)"
eq "detokenize control" "hello" "$("$MOEC" detokenize -m "$M" 1 22172 2)"
eq "detokenize --keep-space" " hello" "$("$MOEC" detokenize -m "$M" --keep-space 22172)"
status "missing -m" 2 "moec tokenize: -m FILE is required" "$MOEC" tokenize hello
status "unknown option" 2 "unknown option" "$MOEC" tokenize -m "$M" --frobnicate
status "missing model" 1 "moec tokenize: .*nonexistent" "$MOEC" tokenize -m "$tmp/nonexistent.model" hi
head -c 1000 "$M" > "$tmp/trunc.model"
status "truncated model" 1 "moec tokenize: .*trunc.model" "$MOEC" tokenize -m "$tmp/trunc.model" hi
status "missing -f file" 1 "moec tokenize: " "$MOEC" tokenize -m "$M" -f "$tmp/nope.txt"
status "two inputs" 2 "only one" "$MOEC" tokenize -m "$M" -f "$tmp/in.txt" hello
status "detok bad id" 1 "moec detokenize: token id 32000" "$MOEC" detokenize -m "$M" 1 32000
status "detok negative id" 1 "moec detokenize: token id -3" "$MOEC" detokenize -m "$M" -3
status "detok not a number" 2 "'x1' is not a token id" "$MOEC" detokenize -m "$M" 1 x1
exit $fail
