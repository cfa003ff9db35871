#!/bin/sh
# The email workload through gpt2d (one worker, 64 slots) vs the in-process engine, same run.
# Starts gpt2d on an ipc endpoint in a temp dir and stops it on exit.
# usage: e2e.sh MODEL_DIR [WEIGHTS [KV_DTYPE]]   (WEIGHTS: fp32 (default), bf16 or int8: gpt2d --weights;
#        KV_DTYPE: fp32 (default), fp16 or bf16: gpt2d --kv-dtype)
set -u
BUILD=${BUILD:-build}
MODEL=$1
WEIGHTS=${2:-fp32}
KVT=${3:-fp32}
dir=$(mktemp -d /tmp/gpt2d-bench.XXXXXX)
"$BUILD/gpt2d" --model "$MODEL" --workers 1 --slots 64 --ctx 512 --weights "$WEIGHTS" --kv-dtype "$KVT" \
    --listen "ipc://$dir/client.sock" --worker-listen "ipc://$dir/worker.sock" \
    --log-level warn 2> "$dir/gpt2d.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
timeout 900 "$BUILD/bench/bench_e2e" "$MODEL" ${GPT2D_BENCH_EMAILS:-tests/data/emails.jsonl} "ipc://$dir/client.sock" "$WEIGHTS" "$KVT"
rc=$?
[ $rc = 0 ] || { echo "bench_e2e failed ($rc); gpt2d log:"; tail -20 "$dir/gpt2d.log"; }
exit $rc
