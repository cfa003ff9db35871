#!/bin/sh
# Runs every test binary given as argument and every tests/test_*.sh script, each bounded by
# a timeout, and sums their "N passed, N failed" lines. Ends with the total line; exits non-zero
# if anything failed, crashed, timed out or ran no check.
# Env: BUILD (binary dir, e.g. build or build/san), TEST_TIMEOUT (seconds per test, default 600).
# GPT2D_TMP (a fresh temp dir) and GPT2D_WEIGHTS_CACHE (in it) are set for the tests.
BUILD=${BUILD:-build}
TIMEOUT=${TEST_TIMEOUT:-600}
export BUILD
export GPT2D_ROOT="$(pwd)"
export GPT2D_TMP="$(mktemp -d /tmp/gpt2d-test.XXXXXX)"
trap 'rm -rf "$GPT2D_TMP"' EXIT INT TERM
# packed weight images (weights.h) go to the run's temp dir, not to ~/.cache/gpt2d
export GPT2D_WEIGHTS_CACHE="$GPT2D_TMP/weights-cache"
total_pass=0
total_fail=0
for t in "$@" tests/test_*.sh; do
    [ -e "$t" ] || continue
    name=$(basename "$t")
    echo "== $name"
    start=$(date +%s)
    out="$GPT2D_TMP/$name.out"
    case "$t" in
        *.sh) timeout -k 10 "$TIMEOUT" sh "$t" > "$out" 2>&1 ;;
        *)    timeout -k 10 "$TIMEOUT" "$t" > "$out" 2>&1 ;;
    esac
    rc=$?
    cat "$out"
    line=$(grep -E '^[A-Za-z0-9_.:-]*:? ?[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
    p=$(echo "$line" | awk '{for(i=2;i<=NF;i++) if($i=="passed,") print $(i-1)}')
    f=$(echo "$line" | awk '{for(i=2;i<=NF;i++) if($i ~ /^failed/) print $(i-1)}')
    p=${p:-0}; f=${f:-0}
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        echo "   $name exited with status $rc (crash, timeout or no checks): counted as 1 failure"
        f=1
    fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    echo "   ($(( $(date +%s) - start )) s)"
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ] && [ "$total_pass" -gt 0 ]
