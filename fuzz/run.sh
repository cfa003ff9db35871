#!/bin/sh
# make fuzz: builds the libFuzzer target for the protocol decoder with clang (ASan + UBSan) and runs
# it for FUZZ_TIME seconds (default 60) on fuzz-corpus/, seeded with one valid message of each type.
# Exits non-zero if the fuzzer finds a crash, a leak, an abort or an allocation over the limit.
set -eu
FUZZ_TIME=${FUZZ_TIME:-60}
CLANG=${CLANG:-clang}
OUT=build/fuzz
mkdir -p "$OUT/seeds" fuzz-corpus
SRC="proto/proto.c proto/proto_scan.c"
$CLANG -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Iproto \
    fuzz/fuzz_proto.c $SRC -lmsgpackc -lm -o "$OUT/fuzz_proto"
${CC:-cc} -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror -Iproto fuzz/mkseeds.c $SRC \
    -lmsgpackc -lm -o "$OUT/mkseeds"
"$OUT/mkseeds" "$OUT/seeds"
# -malloc_limit_mb: the decoder's memory bound, enforced (a 1 MiB message needs well under 64 MiB)
exec "$OUT/fuzz_proto" -max_total_time="$FUZZ_TIME" -malloc_limit_mb=64 -rss_limit_mb=1024 \
    -max_len=$((1 << 20)) -timeout=10 -print_final_stats=1 fuzz-corpus "$OUT/seeds"
