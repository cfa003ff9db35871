#!/bin/sh
# The shared weight image through gpt2d (weights.h): with 1, 2 and 4 local workers, the total
# proportional set size (PSS, /proc/PID/smaps_rollup) of the workers against one weight image +
# N x the per-worker state, and the ratio at N = 2 to N = 1 (target <= 1.15); then a worker's
# restart to ready: before this change (weights-cache off: every start packs a private copy), the
# first start (no image yet: pack + write it), and a restart (the image exists: map it).
# Idle workers (nothing generated), so the per-worker state is what a worker holds before traffic.
# usage: share.sh MODEL_DIR   (env BUILD; GPT2D_BENCH_CACHE, default build/bench-cache)
set -u
BUILD=${BUILD:-build}
MODEL=$1
CACHE=${GPT2D_BENCH_CACHE:-build/bench-cache}
dir=$(mktemp -d /tmp/gpt2d-share.XXXXXX)
pid=
stop() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=; }
trap 'stop; rm -rf "$dir"' EXIT INT TERM
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# start N [extra flags]: gpt2d with N local workers; waits (<= 300 s) for "ready"; $took: the ms it took
start() {
    n=$1; shift
    : > "$dir/gpt2d.log"
    t0=$(now_ms)
    "$BUILD/gpt2d" --model "$MODEL" --workers "$n" --slots 4 --ctx 256 --weights-cache "$CACHE" \
        --listen "ipc://$dir/c.sock" --worker-listen "ipc://$dir/w.sock" --log-level info "$@" 2>> "$dir/gpt2d.log" &
    pid=$!
    i=0
    while ! grep -q "ready: $n worker" "$dir/gpt2d.log"; do
        i=$((i + 1)); [ $i -gt 3000 ] && { echo "share: gpt2d not ready; log:"; tail -5 "$dir/gpt2d.log"; exit 1; }
        sleep 0.1
    done
    took=$(( $(now_ms) - t0 ))
}

kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/smaps_rollup"; }
# kB of PSS a process has in the image file's mappings
img_pss() { awk '/^[0-9a-f]+-[0-9a-f]+ / {in_img = ($0 ~ /\.img$/)} in_img && $1 == "Pss:" {s += $2} END {print s + 0}' "/proc/$1/smaps"; }
workers() { cat /proc/"$pid"/task/*/children 2>/dev/null; }

echo "weights cache: $CACHE"
# per-worker state: what a worker holds beyond its share of the image (its PSS minus that share)
for n in 1 2 4; do
    start "$n"
    sleep 1
    pss=0; state=0
    for w in $(workers); do
        p=$(kb "$w" Pss)
        pss=$((pss + p))
        state=$((state + p - $(img_pss "$w")))
    done
    img=$(ls -l "$CACHE"/*.img 2>/dev/null | awk '{s += $5} END {print int(s / 1024)}')
    eval "pss_$n=$pss"
    bound=$(( img + state ))
    echo "$n worker(s): total PSS $((pss / 1024)) MiB <= weight image $((img / 1024)) MiB + $n x per-worker state $((state / n / 1024)) MiB = $((bound / 1024)) MiB: $( [ "$pss" -le "$bound" ] && echo yes || echo NO)"
    stop
done
awk -v a="$pss_1" -v b="$pss_2" -v c="$pss_4" 'BEGIN {printf "PSS ratio: 2 workers / 1 = %.2fx (target <= 1.15), 4 workers / 1 = %.2fx\n", b / a, c / a}'

start 1 --weights-cache off; before=$took; stop
rm -f "$CACHE"/*.img
start 1; cold=$took; stop
start 1; warm=$took
wpid=$(workers)
t0=$(now_ms)
kill -9 $wpid
i=0
while [ "$(grep -c 'worker local-0 .* ready' "$dir/gpt2d.log")" -lt 2 ]; do
    i=$((i + 1)); [ $i -gt 3000 ] && break
    sleep 0.05
done
restart=$(( $(now_ms) - t0 ))
stop
echo "start to ready, 1 worker: before (private pack every start) $before ms; first start (pack + write the image) $cold ms; with the image (map + verify) $warm ms"
echo "worker SIGKILLed -> ready again: $restart ms (includes the supervisor's 250 ms restart delay)"
grep -h "weights " "$dir/gpt2d.log" | tail -1
