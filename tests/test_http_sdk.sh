#!/bin/sh
# test_http_sdk.sh — gpt2d-http as OpenAI SDK users meet it: three services started by gpt2d with
# --http-listen 127.0.0.1:0 (main; busy: 1 slot, --max-queue 1, slowed steps; auth: API keys), the
# openai npm package under node --test (tests/http/sdk.test.mjs: completions and chat, streamed and
# not, n, stop, seed, logprobs top-N, echo, typed errors, 429 on overload, 401 without a key, texts
# equal to gpt2-tool generate), then `promtool check metrics` on the live /metrics and a few
# metric values checked against what was sent. Ends with "test_http_sdk: N passed, N failed".
. tests/http/lib.sh
http_init test_http_sdk

printf '# API keys of the test\nsk-test-%s\n\nsk-other-key\n' "$$" > "$D/keys"
export GPT2D_API_KEY="sk-test-$$"

http_start main --workers 1 --slots 4 || { ok 1 "start the main service"; http_finish test_http_sdk; exit 1; }
http_start busy --workers 1 --slots 1 --max-queue 1 --debug-step-delay-ms 20 || { ok 1 "start busy"; http_finish test_http_sdk; exit 1; }
http_start auth --workers 1 --slots 2 --http-api-keys "$D/keys" || { ok 1 "start auth"; http_finish test_http_sdk; exit 1; }
# shellcheck disable=SC2154
export GPT2D_URL_main="$URL_main" GPT2D_URL_busy="$URL_busy" GPT2D_URL_auth="$URL_auth"
export GPT2D_EP_main="$EP_main" GPT2D_EP_busy="$EP_busy" GPT2D_EP_auth="$EP_auth"

http_node sdk.test.mjs

# /metrics after the run: valid exposition for promtool, and numbers that match what was sent
node -e 'fetch(process.argv[1]).then(r => r.text()).then(t => process.stdout.write(t))' "$URL_main/metrics" > "$D/metrics.txt"
promtool check metrics < "$D/metrics.txt" > "$D/promtool.out" 2>&1
rc=$?
cat "$D/promtool.out"
ok $rc "promtool check metrics on a live /metrics"
grep -q '^# TYPE gpt2d_time_to_first_token_seconds histogram' "$D/metrics.txt"; ok $? "TTFT histogram exposed"
grep -q '^gpt2d_requests_total{finish_reason="stop"} [1-9]' "$D/metrics.txt"; ok $? "requests finished by a stop string are counted"
grep -q '^gpt2d_running_requests 0$' "$D/metrics.txt"; ok $? "no request left running (gauge 0)"
grep -q '^gpt2d_workers 1$' "$D/metrics.txt"; ok $? "one worker"
node -e 'fetch(process.argv[1]).then(r => r.text()).then(t => process.stdout.write(t))' "$URL_busy/metrics" > "$D/metrics-busy.txt"
grep -Eq '^gpt2d_overloaded_total [1-9]' "$D/metrics-busy.txt"; ok $? "the overload is counted (gpt2d_overloaded_total)"
grep -Eq '^gpt2d_http_requests_total\{code="429"\} [1-9]' "$D/metrics-busy.txt"; ok $? "429 answers are counted by status"
grep -q "sk-test-$$" "$D"/*.log; [ $? = 1 ]; ok $? "the API key appears in no log"

http_finish test_http_sdk
