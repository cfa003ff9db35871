#!/bin/sh
# make run: serves the default model in the foreground (Ctrl-C stops it).
# With the daemon built: gpt2d with 2 workers on the default ipc endpoint; talk to it with
# build/gpt2c "your prompt", or over HTTP on 127.0.0.1:8080 (GPT2D_HTTP to change, "" for none).
# Env: BUILD (binary dir), GPT2D_WORKERS (default 2).
set -eu
BUILD=${BUILD:-build}
DIR=${1:-models/gpt2}
"$BUILD/gpt2-tool" info --model "$DIR"
if [ -x "$BUILD/gpt2d" ]; then
    echo "run: starting gpt2d on $DIR with ${GPT2D_WORKERS:-2} workers (Ctrl-C to stop);"
    echo "run: in another terminal: $BUILD/gpt2c \"Dear team,\""
    HTTP=${GPT2D_HTTP-127.0.0.1:8080}
    if [ -n "$HTTP" ]; then
        echo "run: or: curl http://$HTTP/v1/completions -H 'Content-Type: application/json' -d '{\"prompt\": \"Dear team,\", \"max_tokens\": 32}'"
        echo "run: status page: http://$HTTP/"
        set -- --http-listen "$HTTP"
    else
        set --
    fi
    # 32 slots of 1024 positions per worker (2.4 GB of KV each at most, resident only as used):
    # 64 concurrent requests over the two workers.
    exec "$BUILD/gpt2d" --model "$DIR" --workers "${GPT2D_WORKERS:-2}" --slots 32 "$@"
fi
echo "run: no daemon built; generating locally"
exec "$BUILD/gpt2-tool" generate --model "$DIR" --prompt "Dear team," -n 64
