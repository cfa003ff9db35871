#!/bin/sh
# Scheduling and the service path (bench_sched): one streamed request vs the in-process engine,
# 64 at once against the prefill bound, interactive requests beside a bulk batch. Starts gpt2d
# (one worker, 64 slots, ctx 512, default step knobs) on an ipc endpoint in a temp dir and stops it;
# then once more with --preempt=false for the priorities alone (what preemption buys).
# usage: sched.sh MODEL_DIR [WEIGHTS]
set -u
BUILD=${BUILD:-build}
MODEL=$1
WEIGHTS=${2:-fp32}
EMAILS=${GPT2D_BENCH_EMAILS:-tests/data/emails.jsonl}
dir=$(mktemp -d /tmp/gpt2d-bench-sched.XXXXXX)
pid=
start() { # extra gpt2d flags
    "$BUILD/gpt2d" --model "$MODEL" --workers 1 --slots 64 --ctx 512 --weights "$WEIGHTS" \
        --listen "ipc://$dir/client.sock" --worker-listen "ipc://$dir/worker.sock" \
        --log-level warn "$@" 2>> "$dir/gpt2d.log" &
    pid=$!
}
stop() { [ -n "$pid" ] && kill $pid 2>/dev/null && wait $pid 2>/dev/null; pid=; }
trap 'stop; rm -rf "$dir"' EXIT INT TERM
start
timeout 2400 "$BUILD/bench/bench_sched" "$MODEL" "$EMAILS" "ipc://$dir/client.sock" "$WEIGHTS"
rc=$?
stop
if [ $rc = 0 ]; then
    start --preempt=false
    timeout 1200 "$BUILD/bench/bench_sched" "$MODEL" "$EMAILS" "ipc://$dir/client.sock" "$WEIGHTS" \
        --priorities-only "preempt off"
    rc=$?
    stop
fi
[ $rc = 0 ] || { echo "bench_sched failed ($rc); gpt2d log:"; tail -20 "$dir/gpt2d.log"; }
exit $rc
