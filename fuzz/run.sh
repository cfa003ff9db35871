#!/bin/sh
# make fuzz: builds the libFuzzer targets with clang (ASan + UBSan) and runs each for FUZZ_TIME
# seconds (default 60):
#   proto  the protocol decoder, corpus fuzz-corpus/, seeded with one valid message of each type;
#   bpe    the tokenizer (worker/tokenizer/bpe.c) on data/gpt2-tokenizer/, corpus build/fuzz/corpus-bpe/.
# Usage: sh fuzz/run.sh [proto|bpe|all] (default all). Extra libFuzzer flags: FUZZ_FLAGS
# (e.g. FUZZ_FLAGS=-jobs=2). Exits non-zero if a fuzzer finds a crash, a leak, an abort or an
# allocation over the limit.
set -eu
FUZZ_TIME=${FUZZ_TIME:-60}
FUZZ_FLAGS=${FUZZ_FLAGS:-}
CLANG=${CLANG:-clang}
OUT=build/fuzz
TARGET=${1:-all}
mkdir -p "$OUT/seeds" "$OUT/corpus-bpe" fuzz-corpus
SRC="proto/proto.c proto/proto_scan.c"

run_proto() {
    $CLANG -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Iproto \
        fuzz/fuzz_proto.c $SRC -lmsgpackc -lm -o "$OUT/fuzz_proto"
    ${CC:-cc} -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror -Iproto fuzz/mkseeds.c $SRC \
        -lmsgpackc -lm -o "$OUT/mkseeds"
    "$OUT/mkseeds" "$OUT/seeds"
    # -malloc_limit_mb: the decoder's memory bound, enforced (a 1 MiB message needs well under 64 MiB)
    "$OUT/fuzz_proto" -max_total_time="$FUZZ_TIME" -malloc_limit_mb=64 -rss_limit_mb=1024 \
        -max_len=$((1 << 20)) -timeout=10 -print_final_stats=1 $FUZZ_FLAGS fuzz-corpus "$OUT/seeds"
}

run_bpe() {
    $CLANG -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Iworker/tokenizer -Iproto \
        fuzz/fuzz_bpe.c worker/tokenizer/bpe.c $SRC -lpcre2-8 -ljansson -lmsgpackc -lm -o "$OUT/fuzz_bpe"
    # seeds: text with every kind of pre-token, multi-byte and invalid UTF-8, special tokens, ids
    printf '\000Hello, world! It'"'"'s 2024 -- caf\303\251 \346\227\245\346\234\254 \360\237\231\202\n\n  x' > "$OUT/corpus-bpe/seed-text"
    printf '\001a<|endoftext|>b <|endoftext|>' > "$OUT/corpus-bpe/seed-special"
    printf '\000\377\300\200 \355\240\200 \302\205\357\273\277' > "$OUT/corpus-bpe/seed-invalid"
    printf '\002\000\001\377\377\074\304\050\000' > "$OUT/corpus-bpe/seed-ids"
    "$OUT/fuzz_bpe" -max_total_time="$FUZZ_TIME" -rss_limit_mb=2048 -max_len=4096 -timeout=10 \
        -print_final_stats=1 $FUZZ_FLAGS "$OUT/corpus-bpe"
}

case "$TARGET" in
    proto) run_proto ;;
    bpe) run_bpe ;;
    all) run_proto && run_bpe ;;
    *) echo "usage: fuzz/run.sh [proto|bpe|all]" >&2; exit 2 ;;
esac
