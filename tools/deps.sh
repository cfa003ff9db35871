#!/bin/sh
# Installs the Debian packages gpt2d builds against, if any is missing, and the npm packages of the
# HTTP tests (tests/http: the openai SDK and playwright-core, exactly as package-lock.json pins them).
# Needs root for apt-get (it runs apt-get update once, then apt-get install). Prints what it does.
#   sh tools/deps.sh        both
#   sh tools/deps.sh npm    only `npm ci` in tests/http (when package-lock.json changed)
set -e
PKGS="gcc make pkg-config libzmq3-dev libmsgpack-dev libopenblas-dev libpcre2-dev libsystemd-dev libjansson-dev libxxhash-dev libmicrohttpd-dev xxd"
# For the tests of gpt2d-http: Node (node --test, the openai SDK), headless Chromium (the status
# page), promtool (package prometheus: checks /metrics in tests/test_http and tests/test_http_sdk.sh). Node and npm may come from elsewhere
# (e.g. NodeSource, whose nodejs includes npm); Debian's are installed only if there is no node/npm.
TEST_PKGS="chromium prometheus"
# For make bench: bench_http's HTTP client (libcurl's multi interface).
BENCH_PKGS="libcurl4-openssl-dev"
NPM_DIR="$(dirname "$0")/../tests/http"

npm_deps() {
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$major" -lt 20 ]; then
        # Debian 12's own nodejs is 18; openai 6 and playwright-core 1.65 need Node 20 or later
        echo "deps: node $(node --version 2>/dev/null) is older than 20, which the HTTP tests need (openai 6," \
             "playwright-core): install Node 20+ (e.g. Debian 13's nodejs, or NodeSource's nodejs_20.x)" >&2
        return 1
    fi
    # npm writes node_modules/.package-lock.json on install: newer than the lockfile = up to date
    if [ -f "$NPM_DIR/node_modules/.package-lock.json" ] &&
       [ "$NPM_DIR/node_modules/.package-lock.json" -nt "$NPM_DIR/package-lock.json" ]; then
        echo "deps: npm packages of tests/http present"
        return 0
    fi
    echo "deps: npm ci in tests/http (openai, playwright-core)"
    (cd "$NPM_DIR" && npm ci --no-audit --no-fund --loglevel=error)
}

if [ "${1:-}" = npm ]; then
    npm_deps
    exit $?
fi

missing=""
for p in $PKGS $TEST_PKGS $BENCH_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
command -v node > /dev/null 2>&1 || missing="$missing nodejs"
command -v npm > /dev/null 2>&1 || missing="$missing npm"
if [ -z "$missing" ]; then
    echo "deps: all build, test and bench packages present ($PKGS $TEST_PKGS $BENCH_PKGS node npm)"
else
    echo "deps: installing missing Debian packages:$missing"
    if [ "$(id -u)" != 0 ]; then
        echo "deps: not root; please run: sudo apt-get update && sudo apt-get install -y$missing" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q $missing
fi
# the build does not need them: a failure here only stops make test (which runs deps.sh npm again)
npm_deps || echo "deps: the npm packages of tests/http are not installed; the HTTP tests cannot run" >&2
echo "deps: done"
