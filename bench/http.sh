#!/bin/sh
# The email workload through gpt2d-http vs over ZeroMQ, same broker, same run (bench_http).
# Starts gpt2d (one worker, 64 slots, ctx 512) with its gateway on an ephemeral loopback port and
# an ipc client endpoint in a temp dir; stops it on exit.  usage: http.sh MODEL_DIR
# Environment: GPT2D_BENCH_HTTP_ROUNDS (full rounds, default 3), GPT2D_BENCH_HTTP_TTFT_ROUNDS (20),
# GPT2D_BENCH_HTTP_SINGLES (40), GPT2D_BENCH_EMAILS (the workload); for diagnosis
# GPT2D_BENCH_LOG_LEVEL (gpt2d's, default info), GPT2D_BENCH_HTTP_LOG=FILE (keep gpt2d's log) and
# GPT2D_BENCH_HTTP_TRACE=FILE (each request's times, bench_http.c).
set -u
BUILD=${BUILD:-build}
MODEL=$1
dir=$(mktemp -d /tmp/gpt2d-bench-http.XXXXXX)
"$BUILD/gpt2d" --model "$MODEL" --workers 1 --slots 64 --ctx 512 \
    --listen "ipc://$dir/client.sock" --worker-listen "ipc://$dir/worker.sock" \
    --http-listen 127.0.0.1:0 --log-level ${GPT2D_BENCH_LOG_LEVEL:-info} 2> "$dir/gpt2d.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; [ -n "${GPT2D_BENCH_HTTP_LOG:-}" ] && cp "$dir/gpt2d.log" "$GPT2D_BENCH_HTTP_LOG"; rm -rf "$dir"' EXIT INT TERM
# the gateway logs "listening on http://127.0.0.1:PORT" at level info (hence info: one line per
# finished request, the same for both paths)
port=""
for _ in $(seq 300); do
    port=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$dir/gpt2d.log" | head -n 1 | sed 's/.*://')
    [ -n "$port" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
if [ -z "$port" ]; then
    echo "bench http: the gateway did not start; gpt2d log:"
    tail -20 "$dir/gpt2d.log"
    exit 1
fi
timeout 1800 "$BUILD/bench/bench_http" ${GPT2D_BENCH_EMAILS:-tests/data/emails.jsonl} "ipc://$dir/client.sock" \
    "http://127.0.0.1:$port" ${GPT2D_BENCH_HTTP_ROUNDS:-3} ${GPT2D_BENCH_HTTP_TTFT_ROUNDS:-20} \
    ${GPT2D_BENCH_HTTP_SINGLES:-40}
rc=$?
[ $rc = 0 ] || { echo "bench_http failed ($rc); gpt2d log:"; tail -20 "$dir/gpt2d.log"; }
exit $rc
