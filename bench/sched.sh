#!/bin/sh
# Scheduling and the service path (bench_sched): one streamed request vs the in-process engine,
# 64 at once against the prefill bound, interactive requests beside a bulk batch. Starts gpt2d
# (one worker, 64 slots, ctx 512, default step knobs) on an ipc endpoint in a temp dir and stops it.
# usage: sched.sh MODEL_DIR [WEIGHTS]
set -u
BUILD=${BUILD:-build}
MODEL=$1
WEIGHTS=${2:-fp32}
dir=$(mktemp -d /tmp/gpt2d-bench-sched.XXXXXX)
"$BUILD/gpt2d" --model "$MODEL" --workers 1 --slots 64 --ctx 512 --weights "$WEIGHTS" \
    --listen "ipc://$dir/client.sock" --worker-listen "ipc://$dir/worker.sock" \
    --log-level warn 2> "$dir/gpt2d.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
timeout 2400 "$BUILD/bench/bench_sched" "$MODEL" ${GPT2D_BENCH_EMAILS:-tests/data/emails.jsonl} "ipc://$dir/client.sock" "$WEIGHTS"
rc=$?
[ $rc = 0 ] || { echo "bench_sched failed ($rc); gpt2d log:"; tail -20 "$dir/gpt2d.log"; }
exit $rc
