#!/bin/sh
# bench/targets.sh: the parts of bench/run.sh that issue 9 and 14's targets read (bench_core, the pre-wave
# baseline, the e2e formats, sched, http), with run.sh's commands: about 20 minutes instead of 35+.
set -u
cd "$(dirname "$0")/.."
BUILD=build
MODEL=build/bench-model-124m
make -j2 all $(ls bench/*.c | sed "s|bench/\(.*\)\.c|build/bench/\1|") >/dev/null 2>&1 || exit 1
"$BUILD/gpt2-tool" info --model "$MODEL"
echo "== single sequence vs machine limits (bench_core)"
"$BUILD/bench/bench_core" "$MODEL" tests/data/emails.jsonl build/bench-cache
FORMATS="fp32 int8 int8/fp16"
out=$(mktemp /tmp/gpt2d-bench-e2e.XXXXXX) # mktemp template: the per-format results, removed on any exit
trap 'rm -f "$out" "$out".*' EXIT INT TERM
echo "== email workload through the gpt2d the speed issue was filed against (bench/baseline.sh)"
BUILD="$BUILD" sh bench/baseline.sh "$MODEL" | tee "$out.base"
for f in $FORMATS; do
    w=${f%/*}; kv=fp32; [ "$w" != "$f" ] && kv=${f#*/}
    echo "== email workload through gpt2d, $w weights, $kv KV (bench/e2e.sh $w $kv)"
    BUILD="$BUILD" sh bench/e2e.sh "$MODEL" "$w" "$kv" | tee "$out.$(echo "$f" | tr / _)"
done
echo "== scheduling and the service path through gpt2d (bench/sched.sh)"
BUILD="$BUILD" sh bench/sched.sh "$MODEL" fp32
echo "== email workload through gpt2d-http vs ZeroMQ (bench/http.sh)"
BUILD="$BUILD" sh bench/http.sh "$MODEL"
for f in $FORMATS; do grep 'broker+worker' "$out.$(echo "$f" | tr / _)" | sed "s|^|$f: |"; done
grep 'broker+worker' "$out.base"
rm -f "$out" "$out".*
