#!/bin/sh
# The email workload through the gpt2d of an earlier commit, in this same bench run, so "N x today's"
# targets compare two figures measured side by side on this machine (the issue's own figures were
# taken on another one). Builds that commit's gpt2d, gpt2d-worker and bench_e2e from `git archive`
# into $BUILD/baseline (kept between runs, rebuilt only when missing) and runs its own bench/e2e.sh
# (64 emails at 64 concurrent, one worker of 64 slots, ctx 512, fp32: the same workload and settings
# as bench/e2e.sh). Prints its result lines prefixed with "baseline".
# usage: baseline.sh MODEL_DIR [COMMIT]   (COMMIT: $GPT2D_BENCH_BASELINE, default ea2e6ed, the main
#        the speed issue (14) was filed against)
set -u
BUILD=${BUILD:-build}
MODEL=$(cd "$1" && pwd)
COMMIT=${2:-${GPT2D_BENCH_BASELINE:-ea2e6ed}}
if ! git rev-parse --verify -q "$COMMIT^{commit}" >/dev/null; then
    echo "baseline: commit $COMMIT is not in this clone (shallow?): skipped"
    exit 0
fi
src="$BUILD/baseline/$COMMIT"
if [ ! -x "$src/build/bench/bench_e2e" ] || [ ! -x "$src/build/gpt2d" ]; then
    echo "baseline: building $COMMIT's gpt2d and bench_e2e in $src"
    rm -rf "$src" && mkdir -p "$src" || exit 1
    git archive "$COMMIT" | tar -x -C "$src" || exit 1
    make -C "$src" -j2 build/gpt2d build/gpt2d-worker build/bench/bench_e2e > "$src/build.log" 2>&1 || {
        echo "baseline: the build failed; see $src/build.log"
        exit 1
    }
fi
echo "baseline: $(git log -1 --format='%h %ad %s' --date=short "$COMMIT" | cut -c1-100)"
cd "$src" && BUILD=build sh bench/e2e.sh "$MODEL" | sed 's/^/baseline /'
