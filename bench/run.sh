#!/bin/sh
# make bench: the benchmarks on the 124M-shaped model. Run it with nothing else on the machine:
# two vCPUs that share a physical core run at half speed each, and every figure below is then off.
# Ratios are computed within one run (each program measures its own bounds).
set -eu
BUILD=${BUILD:-build}
MODEL=${GPT2D_BENCH_MODEL:-build/bench-model-124m}
if [ ! -f "$MODEL/config.json" ]; then
    echo "bench: writing the random 124M-shaped model to $MODEL"
    "$BUILD/gpt2-tool" mkmodel --out "$MODEL" --layers 12 --embd 768 --heads 12 --ctx 1024 --seed 1
fi
"$BUILD/gpt2-tool" info --model "$MODEL"
echo
echo "== single sequence vs machine limits (bench_core)"
"$BUILD/bench/bench_core" "$MODEL" tests/data/emails.jsonl "${GPT2D_BENCH_CACHE:-build/bench-cache}"
echo
echo "== fp32 and bf16 matmul kernels: the avx512 family against the avx2 family, one run (bench_mm_f32)"
"$BUILD/bench/bench_mm_f32"
echo
echo "== int8 matmul kernels shape by shape vs machine limits (bench_mm_i8)"
"$BUILD/bench/bench_mm_i8" --quick
echo
echo "== weight formats against fp32: accuracy on the email prompts (bench_accuracy)"
"$BUILD/bench/bench_accuracy" "$MODEL" tests/data/emails.jsonl --tokens "${GPT2D_BENCH_ACC_TOKENS:-48}"
echo
echo "== one weight image for every worker (bench/share.sh)"
BUILD="$BUILD" timeout 1200 sh bench/share.sh "$MODEL"
echo
echo "== email workload, in-process engine (bench_batch)"
"$BUILD/bench/bench_batch" "$MODEL" tests/data/emails.jsonl ${GPT2D_BENCH_QUICK:+--quick}
echo
echo "== paged KV cache and prefix cache: a 300-token campaign preamble, memory per request (bench_prefix)"
"$BUILD/bench/bench_prefix" "$MODEL" tests/data/emails.jsonl
echo
echo "== email workload, in-process engine, int8 weights (bench_batch --weights int8)"
"$BUILD/bench/bench_batch" "$MODEL" tests/data/emails.jsonl --quick --weights int8
# The email workload through gpt2d before this wave (an earlier commit, built here), then once per
# weight format (GPT2D_BENCH_FORMATS: WEIGHTS or WEIGHTS/KV_DTYPE, default fp32, int8 and int8 with
# an fp16 KV cache), each against fp32 and against the earlier commit from this same run.
FORMATS=${GPT2D_BENCH_FORMATS:-fp32 int8 int8/fp16}
out=$(mktemp /tmp/gpt2d-bench-e2e.XXXXXX) # mktemp template: the per-format results, removed on any exit
trap 'rm -f "$out" "$out".*' EXIT INT TERM
echo
echo "== email workload through the gpt2d the speed issue was filed against (bench/baseline.sh)"
BUILD="$BUILD" sh bench/baseline.sh "$MODEL" | tee "$out.base"
for f in $FORMATS; do
    w=${f%/*}
    kv=fp32
    [ "$w" != "$f" ] && kv=${f#*/}
    echo
    echo "== email workload through gpt2d, $w weights, $kv KV (bench/e2e.sh $w $kv)"
    BUILD="$BUILD" sh bench/e2e.sh "$MODEL" "$w" "$kv" | tee "$out.$(echo "$f" | tr / _)"
done
echo
echo "== scheduling and the service path through gpt2d (bench/sched.sh)"
BUILD="$BUILD" sh bench/sched.sh "$MODEL" fp32
base=$(awk '/gpt2d \(broker\+worker\)/ {print $3}' "$out.fp32" 2>/dev/null || true)
old=$(awk '/baseline +gpt2d \(broker\+worker\)/ {print $4}' "$out.base" 2>/dev/null || true)
echo
for f in $FORMATS; do
    tps=$(awk '/gpt2d \(broker\+worker\)/ {print $3}' "$out.$(echo "$f" | tr / _)" 2>/dev/null || true)
    [ -n "$tps" ] || continue
    target=""
    case $f in fp32) target=" (target >= 1.25x)" ;; int8*) target=" (target >= 2.0x)" ;; esac
    if [ -n "$old" ]; then
        awk -v f="$f" -v t="$tps" -v o="$old" -v tg="$target" 'BEGIN { printf "through gpt2d: %s %.1f tok/s = %.2fx the earlier commit'"'"'s fp32 (%.1f tok/s, bench/baseline.sh) in this run%s\n", f, t, t / o, o, tg }'
    fi
    if [ -n "$base" ] && [ "$f" != fp32 ]; then
        awk -v f="$f" -v t="$tps" -v b="$base" 'BEGIN { printf "through gpt2d: %s %.1f tok/s = %.2fx this commit'"'"'s fp32 (%.1f tok/s)\n", f, t, t / b, b }'
    fi
done
rm -f "$out" "$out".*
if [ -f bench/http.sh ]; then
    echo
    echo "== email workload through gpt2d-http vs ZeroMQ (bench/http.sh)"
    BUILD="$BUILD" sh bench/http.sh "$MODEL"
fi
