# lib.sh — what the HTTP test scripts (tests/test_http_*.sh) share; sourced, POSIX sh.
#   http_init NAME         scratch dir $D, the exit trap, the small model $MODEL (as tests/tutil.h
#                          makes it: 2 layers, 128 wide, 4 heads, ctx 256, seed 1)
#   http_start TAG FLAGS.. gpt2d (ipc endpoints in $D, --http-listen 127.0.0.1:0) with gpt2d-http;
#                          waits for the gateway's port and for /ready; sets URL_<TAG> and EP_<TAG>
#   http_node FILE..       node --test on tests/http/FILE.. (TAP), counted into pass/fail
#   ok RC MSG              one check of the script itself
#   http_finish NAME       the final "NAME: N passed, N failed" line and the exit status
# Everything started is killed on exit (the trap), whatever happens; every wait is bounded.
BUILD=${BUILD:-build}
ROOT=${GPT2D_ROOT:-$(pwd)}
pass=0
fail=0
PIDS=""

ok() { if [ "$1" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2"; fi; }

http_cleanup() {
    for p in $PIDS; do kill -TERM "$p" 2>/dev/null; done
    # gpt2d stops its workers and its gateway on SIGTERM; give it 10 s, then SIGKILL the group
    for _ in $(seq 100); do
        alive=""
        for p in $PIDS; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
        [ -z "$alive" ] && break
        sleep 0.1
    done
    for p in $PIDS; do kill -KILL -- "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$D"
}

http_init() {
    D=${GPT2D_TMP:-/tmp}/$1.$$
    mkdir -p "$D"
    trap 'http_cleanup' EXIT
    trap 'exit 130' INT TERM
    MODEL="$D/model"
    if ! "$BUILD/gpt2-tool" mkmodel --out "$MODEL" --layers 2 --embd 128 --heads 4 --ctx 256 --seed 1 \
            > "$D/mkmodel.log" 2>&1; then
        cat "$D/mkmodel.log"
        echo "$1: 0 passed, 1 failed"
        exit 1
    fi
    export GPT2D_MODEL="$MODEL" GPT2D_TOOL="$ROOT/$BUILD/gpt2-tool" GPT2C="$ROOT/$BUILD/gpt2c" GPT2D_SCRATCH="$D"
    case "$BUILD" in /*) export GPT2D_TOOL="$BUILD/gpt2-tool" GPT2C="$BUILD/gpt2c" ;; esac
}

# http_start TAG [gpt2d flags...]: in its own process group (setsid), so the trap can kill the lot.
http_start() {
    tag=$1
    shift
    log="$D/$tag.log"
    setsid "$BUILD/gpt2d" --model "$MODEL" --listen "ipc://$D/$tag-client.sock" \
        --worker-listen "ipc://$D/$tag-worker.sock" --worker-bin "$BUILD/gpt2d-worker" --threads 1 \
        --log-level info --http-listen 127.0.0.1:0 "$@" > "$log" 2>&1 &
    pid=$!
    PIDS="$PIDS $pid"
    port=""
    for _ in $(seq 600); do
        port=$(http_port "$log")
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "gpt2d ($tag) did not report its HTTP port; its log:"
        tail -30 "$log"
        return 1
    fi
    eval "URL_$tag=http://127.0.0.1:$port"
    eval "EP_$tag=ipc://$D/$tag-client.sock"
    # ready = at least one worker serving (GET /ready answers 200), within 60 s
    node -e '
        const url = process.argv[1] + "/ready", end = Date.now() + 60000;
        (async () => {
            while (Date.now() < end) {
                try { if ((await fetch(url)).status === 200) process.exit(0); } catch (e) {}
                await new Promise((r) => setTimeout(r, 100));
            }
            process.exit(1);
        })();' "http://127.0.0.1:$port" || { echo "gpt2d ($tag): /ready never answered 200"; tail -30 "$log"; return 1; }
}

# The gateway's bound port from its start-up line in the log ("... listening on http://127.0.0.1:PORT").
http_port() {
    grep -o 'http://127\.0\.0\.1:[0-9][0-9]*' "$1" 2>/dev/null | grep -v ':0$' | head -n 1 | sed 's/.*://'
}

# http_node FILE...: node --test with the TAP reporter; every test is one pass or one fail here.
http_node() {
    files=""
    for f in "$@"; do files="$files $ROOT/tests/http/$f"; done
    # shellcheck disable=SC2086
    (cd "$ROOT/tests/http" && node --test --test-reporter=tap $files) > "$D/node.tap" 2>&1
    rc=$?
    cat "$D/node.tap"
    np=$(awk '/^# pass /{print $3}' "$D/node.tap" | tail -n 1)
    nf=$(awk '/^# fail /{f=$3} /^# cancelled /{c=$3} END{print (f+0)+(c+0)}' "$D/node.tap")
    np=${np:-0}
    nf=${nf:-0}
    [ "$rc" != 0 ] && [ "$nf" = 0 ] && { echo "FAIL: node --test exited $rc"; nf=1; }
    [ "$np" = 0 ] && [ "$nf" = 0 ] && { echo "FAIL: node --test ran no test"; nf=1; }
    pass=$((pass + np))
    fail=$((fail + nf))
}

http_finish() {
    echo "$1: $pass passed, $fail failed"
    [ "$fail" = 0 ]
}
