#!/bin/sh
# test_http_page.sh — the status page in headless Chromium (tests/http/page.test.mjs): gpt2d with
# --http-listen 127.0.0.1:0, the page loaded from GET /, its charts filled by live polls while
# clients generate, a completion streamed through its prompt box (== gpt2-tool generate), and the
# screenshot saved to $BUILD/http-status.png. Ends with "test_http_page: N passed, N failed".
. tests/http/lib.sh
http_init test_http_page

http_start main --workers 1 --slots 8 || { ok 1 "start the service"; http_finish test_http_page; exit 1; }
# shellcheck disable=SC2154
export GPT2D_URL_main="$URL_main" GPT2D_EP_main="$EP_main"
case "$BUILD" in /*) GPT2D_SCREENSHOT="$BUILD/http-status.png" ;; *) GPT2D_SCREENSHOT="$ROOT/$BUILD/http-status.png" ;; esac
export GPT2D_SCREENSHOT
rm -f "$GPT2D_SCREENSHOT"

http_node page.test.mjs
[ -s "$GPT2D_SCREENSHOT" ]; ok $? "screenshot saved: $GPT2D_SCREENSHOT"

http_finish test_http_page
