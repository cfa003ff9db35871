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
echo "== one weight image for every worker (bench/share.sh)"
BUILD="$BUILD" timeout 1200 sh bench/share.sh "$MODEL"
echo
echo "== email workload, in-process engine (bench_batch)"
"$BUILD/bench/bench_batch" "$MODEL" tests/data/emails.jsonl ${GPT2D_BENCH_QUICK:+--quick}
echo
echo "== paged KV cache and prefix cache: a 300-token campaign preamble, memory per request (bench_prefix)"
"$BUILD/bench/bench_prefix" "$MODEL" tests/data/emails.jsonl
if [ -x bench/e2e.sh ] || [ -f bench/e2e.sh ]; then
    echo
    echo "== email workload through gpt2d (bench/e2e.sh)"
    BUILD="$BUILD" sh bench/e2e.sh "$MODEL"
fi
