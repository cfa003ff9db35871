/* fuzz_bpe.c — libFuzzer target for the GPT-2 tokenizer (worker/bpe.c) on OpenAI's vocabulary.
 *
 * The first input byte picks the mode, the rest is the data:
 *   0: encode the bytes as text. Invalid UTF-8 must be refused (-1); valid text must encode, and
 *      decoding its ids must give the bytes back exactly; streaming those ids must give the same
 *      text (no held-back or replaced byte).
 *   1: the same with allow_special (`<|endoftext|>` becomes token 50256), round trip included.
 *   2: the bytes as little-endian u16 token ids (so both in-range and out-of-range ids): batch
 *      decode and streaming decode must agree after U+FFFD replacement, never write past their
 *      buffers, and every streamed piece must be valid UTF-8.
 * Run: sh fuzz/run.sh bpe (FUZZ_TIME seconds; the tokenizer is data/gpt2-tokenizer/, or
 * $GPT2D_TOKENIZER). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "proto.h"

static bpe_tokenizer *g_tok; /* loaded once: the fuzzer's process is this target's main file */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("GPT2D_TOKENIZER");
    char err[512];
    g_tok = bpe_load(dir && *dir ? dir : "data/gpt2-tokenizer", err, sizeof(err));
    if (!g_tok) {
        fprintf(stderr, "fuzz_bpe: %s\n", err);
        abort();
    }
    return 0;
}

/* Streams ids through a bpe_stream; returns the concatenated text length in out (cap bytes), or
 * -1 if an id was refused. Every piece must be valid UTF-8. */
static long stream_all(const int *ids, long n, char *out, size_t cap) {
    bpe_stream s;
    bpe_stream_init(&s);
    size_t len = 0;
    for (long i = 0; i < n; i++) {
        int w = bpe_stream_push(&s, g_tok, ids[i], out + len, cap - len);
        if (w < 0) return -1;
        if (!proto_utf8_valid(out + len, (size_t)w)) abort();
        len += (size_t)w;
    }
    int w = bpe_stream_flush(&s, out + len, cap - len);
    if (w < 0) abort();
    len += (size_t)w;
    return (long)len;
}

static void fuzz_encode(const uint8_t *data, size_t size, int special) {
    int *ids = malloc((size + 1) * sizeof(int));
    char *back = malloc(size + 1), *streamed = malloc(4 * size + 64);
    if (!ids || !back || !streamed) abort();
    long n = bpe_encode(g_tok, (const char *)data, size, special, ids, (long)size + 1);
    int valid = proto_utf8_valid((const char *)data, size);
    if (n < 0 && valid) abort();   /* valid text always encodes */
    if (n >= 0 && !valid) abort(); /* invalid UTF-8 is always refused */
    if (n > (long)size) abort();   /* never more ids than bytes */
    if (n >= 0) {
        long m = bpe_decode(g_tok, ids, n, back, (long)size + 1);
        if (m != (long)size || memcmp(back, data, size) != 0) abort(); /* exact round trip */
        long k = stream_all(ids, n, streamed, 4 * size + 64);
        if (k != (long)size || memcmp(streamed, data, size) != 0) abort();
    }
    free(ids);
    free(back);
    free(streamed);
}

static void fuzz_decode(const uint8_t *data, size_t size) {
    long n = (long)(size / 2);
    int *ids = malloc((size_t)(n + 1) * sizeof(int));
    if (!ids) abort();
    int in_range = 1;
    for (long i = 0; i < n; i++) {
        ids[i] = data[2 * i] | (data[2 * i + 1] << 8);
        in_range &= ids[i] < bpe_vocab_size(g_tok);
    }
    char small[16];
    long len = bpe_decode(g_tok, ids, n, small, sizeof(small)); /* truncation must be safe */
    if (in_range != (len >= 0)) abort();
    size_t cap = (size_t)n * 3 * 128 + 64;
    char *streamed = malloc(cap);
    if (!streamed) abort();
    long k = stream_all(ids, n, streamed, cap);
    if (in_range != (k >= 0)) abort();
    if (k >= 0 && !proto_utf8_valid(streamed, (size_t)k)) abort();
    free(streamed);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    switch (data[0] % 3) {
    case 0: fuzz_encode(data + 1, size - 1, 0); break;
    case 1: fuzz_encode(data + 1, size - 1, 1); break;
    default: fuzz_decode(data + 1, size - 1); break;
    }
    return 0;
}
