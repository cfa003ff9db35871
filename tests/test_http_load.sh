#!/bin/sh
# test_http_load.sh — load through gpt2d-http (tests/http/load.test.mjs): 256 concurrent SSE
# streams, each byte-identical to the same request over ZeroMQ (gpt2c batch, same broker), with a
# client that never reads its stream and 50 that hang up mid-stream; afterwards the broker and the
# gateway run nothing. Small model, 8..16 tokens a request: seconds. Ends with
# "test_http_load: N passed, N failed".
. tests/http/lib.sh
http_init test_http_load

# a long queue timeout: under SAN=1 the 370 requests of the test may wait longer than the default 60 s
http_start main --workers 1 --slots 64 --max-queue 1024 --queue-timeout-ms 600000 || { ok 1 "start the service"; http_finish test_http_load; exit 1; }
# shellcheck disable=SC2154
export GPT2D_URL_main="$URL_main" GPT2D_EP_main="$EP_main"

http_node load.test.mjs
# the gateway and the broker are still up and serving after it all
node -e 'fetch(process.argv[1]).then(r => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))' "$URL_main/ready"
ok $? "/ready is 200 after the load"
kill -0 $PIDS 2>/dev/null; ok $? "gpt2d still running"

http_finish test_http_load
