/* test_bpe.c — the GPT-2 tokenizer against the reference vectors (tests/data/tokenizer), plus
 * special tokens, invalid input, streaming decode, alternative file names and broken files.
 * Files are found under $GPT2D_ROOT (default "."); temp files go under $GPT2D_TMP (or /tmp). */
#include "bpe.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define MAX_SHOWN 5 /* mismatches printed per vector file */

static const char *root(void) {
    const char *r = getenv("GPT2D_ROOT");
    return r && *r ? r : ".";
}

/* ------------------------------------------------------------------------ small helpers */

/* Whether s[0..n) is valid UTF-8 (strict). */
static int utf8_ok(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        int len = c < 0x80 ? 1 : c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
        if (len == 0 || i + (size_t)len > n) return 0;
        for (int k = 1; k < len; k++) {
            unsigned lo = 0x80, hi = 0xBF, b = s[i + (size_t)k];
            if (k == 1 && c == 0xE0) lo = 0xA0;
            if (k == 1 && c == 0xED) hi = 0x9F;
            if (k == 1 && c == 0xF0) lo = 0x90;
            if (k == 1 && c == 0xF4) hi = 0x8F;
            if (b < lo || b > hi) return 0;
        }
        i += (size_t)len;
    }
    return 1;
}

static void print_ids(const char *what, const int *ids, long n) {
    printf("  %s (%ld):", what, n);
    for (long i = 0; i < n && i < 40; i++) printf(" %d", ids[i]);
    printf("%s\n", n > 40 ? " ..." : "");
}

/* Reads a whole file; caller frees. NULL if unreadable. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static int spit(const char *path, const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

/* Parses every line of a .jsonl file under tests/data/tokenizer; returns a JSON array (or NULL). */
static json_t *load_jsonl(const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/tokenizer/%s", root(), name);
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_error_t je;
        json_t *v = json_loadb(line, (size_t)n, JSON_ALLOW_NUL, &je);
        check(v != NULL, "%s: bad line: %s", name, je.text);
        if (v) json_array_append_new(all, v);
    }
    free(line);
    fclose(f);
    return all;
}

/* Copies a JSON array of integers into a malloc'd int array. */
static int *json_ids(const json_t *arr, long *n) {
    *n = (long)json_array_size(arr);
    int *ids = malloc(((size_t)*n + 1) * sizeof *ids);
    for (long i = 0; i < *n; i++) ids[i] = (int)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}

/* ------------------------------------------------------------------------ streaming */

/* Streams ids through bpe_stream into out (room cap), checking every piece is valid UTF-8.
 * Returns the total length, or -1 if a push failed. */
static long stream_all(const bpe_tokenizer *t, const int *ids, long n, char *out, long cap,
                       int *bad_piece) {
    bpe_stream s;
    char piece[4096];
    long total = 0;
    bpe_stream_init(&s);
    *bad_piece = 0;
    for (long i = 0; i <= n; i++) {
        int k = i < n ? bpe_stream_push(&s, t, ids[i], piece, sizeof piece)
                      : bpe_stream_flush(&s, piece, sizeof piece);
        if (k < 0) return -1;
        if (!utf8_ok((unsigned char *)piece, (size_t)k)) *bad_piece = 1;
        if (total + k <= cap) memcpy(out + total, piece, (size_t)k);
        total += k;
    }
    return total;
}

/* ------------------------------------------------------------------------ vector files */

/* Checks one {"text","ids"} vector; returns 1 if the ids matched. */
static int check_vector(bpe_tokenizer *t, const json_t *v, int *shown) {
    const json_t *jt = json_object_get(v, "text");
    const char *text = json_string_value(jt);
    size_t len = json_string_length(jt);
    long n_exp, cap = (long)len + 16;
    int *exp = json_ids(json_object_get(v, "ids"), &n_exp);
    int *got = malloc((size_t)cap * sizeof *got);
    char *dec = malloc(len + 64), *str = malloc(len + 64);
    long n = bpe_encode(t, text, len, 0, got, cap);
    int ok = n == n_exp && memcmp(got, exp, (size_t)n * sizeof *got) == 0;
    check(ok, "encode mismatch for text \"%.200s\" (%zu bytes)", text, len);
    if (!ok && (*shown)++ < MAX_SHOWN) {
        print_ids("expected", exp, n_exp);
        print_ids("got", got, n);
    }
    long d = bpe_decode(t, exp, n_exp, dec, (long)len + 64);
    check(d == (long)len && memcmp(dec, text, len) == 0, "decode(ids) != text for \"%.80s\"", text);
    int bad;
    long sl = stream_all(t, exp, n_exp, str, (long)len + 64, &bad);
    check(!bad, "stream emitted broken UTF-8 for \"%.80s\"", text);
    check(sl == (long)len && memcmp(str, text, len) == 0, "stream != text for \"%.80s\"", text);
    free(exp);
    free(got);
    free(dec);
    free(str);
    return ok;
}

static void test_vector_file(bpe_tokenizer *t, const char *name, size_t expect_lines) {
    json_t *all = load_jsonl(name);
    check(all != NULL, "cannot read %s", name);
    if (!all) return;
    check(json_array_size(all) == expect_lines, "%s: %zu lines", name, json_array_size(all));
    size_t i, matched = 0;
    int shown = 0;
    json_t *v;
    json_array_foreach(all, i, v) matched += (size_t)check_vector(t, v, &shown);
    printf("%s: %zu/%zu vectors match\n", name, matched, json_array_size(all));
    json_decref(all);
}

/* ------------------------------------------------------------------------ decode vectors */

static size_t unhex(const char *hex, unsigned char *out) {
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned b;
        sscanf(hex + 2 * i, "%2x", &b);
        out[i] = (unsigned char)b;
    }
    return n;
}

/* Python's bytes.decode("utf-8", "replace") for the invalid decode vectors we know. */
static const char *replaced(const char *hex) {
    static const struct {
        const char *hex, *text;
    } known[] = {
        {"a9", "\xEF\xBF\xBD"},
        {"eda080", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"e280", "\xEF\xBF\xBD"},
        {"f09f98", "\xEF\xBF\xBD"},
        {"f0", "\xEF\xBF\xBD"},
    };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (strcmp(known[i].hex, hex) == 0) return known[i].text;
    return NULL;
}

static void test_decode_vector(const bpe_tokenizer *t, const json_t *v) {
    const char *hex = json_string_value(json_object_get(v, "hex"));
    const char *note = json_string_value(json_object_get(v, "note"));
    long n;
    int *ids = json_ids(json_object_get(v, "ids"), &n);
    unsigned char want[1024];
    char got[1024], str[2048];
    size_t wl = unhex(hex, want);
    long d = bpe_decode(t, ids, n, got, sizeof got);
    check(d == (long)wl && memcmp(got, want, wl) == 0, "decode vector \"%s\": wrong bytes", note);
    int bad;
    long sl = stream_all(t, ids, n, str, sizeof str, &bad);
    check(sl >= 0 && !bad, "decode vector \"%s\": stream emitted broken UTF-8", note);
    const char *rep = utf8_ok(want, wl) ? (const char *)want : replaced(hex);
    size_t rl = rep == (const char *)want ? wl : rep ? strlen(rep) : 0;
    if (rep) check(sl == (long)rl && memcmp(str, rep, rl) == 0, "stream of \"%s\" wrong", note);
    if (wl == 256) { /* bytes 0..255: ASCII as is, then each of 0x80..0xFF alone is invalid */
        check(sl == 128 + 128 * 3 && memcmp(str, want, 128) == 0 &&
                  memcmp(str + 128, "\xEF\xBF\xBD", 3) == 0 &&
                  memcmp(str + sl - 3, "\xEF\xBF\xBD", 3) == 0,
              "stream of all 256 bytes: %ld bytes", sl);
    }
    free(ids);
}

static void test_decode_vectors(const bpe_tokenizer *t) {
    json_t *all = load_jsonl("decode_vectors.jsonl"), *v;
    check(all != NULL && json_array_size(all) > 0, "cannot read decode_vectors.jsonl");
    if (!all) return;
    size_t i;
    json_array_foreach(all, i, v) test_decode_vector(t, v);
    json_decref(all);
}

/* ------------------------------------------------------------------------ API edges */

static long enc(bpe_tokenizer *t, const char *s, int special, int *ids, long cap) {
    return bpe_encode(t, s, strlen(s), special, ids, cap);
}

static void test_special(bpe_tokenizer *t) {
    int a[64], b[64], c[64];
    long n = enc(t, "<|endoftext|>", 1, a, 64);
    check(n == 1 && a[0] == BPE_EOT, "allow_special: <|endoftext|> -> %ld ids, first %d", n, a[0]);
    n = enc(t, "<|endoftext|>", 0, a, 64);
    int has_eot = 0;
    for (long i = 0; i < n; i++) has_eot |= a[i] == BPE_EOT;
    check(n > 1 && !has_eot, "no allow_special: <|endoftext|> is ordinary text (%ld ids)", n);
    long nh = enc(t, "Hello", 0, b, 64), nw = enc(t, " world<", 0, c, 64);
    n = enc(t, "Hello<|endoftext|> world<<|endoftext|><|endoftext|>", 1, a, 64);
    check(n == nh + 1 + nw + 2 && a[nh] == BPE_EOT && memcmp(a, b, (size_t)nh * sizeof *a) == 0 &&
              memcmp(a + nh + 1, c, (size_t)nw * sizeof *a) == 0 && a[n - 1] == BPE_EOT &&
              a[n - 2] == BPE_EOT,
          "allow_special splits text around <|endoftext|> (%ld ids)", n);
    char out[64];
    long d = bpe_decode(t, a, n, out, sizeof out);
    check(d == 51 && memcmp(out, "Hello<|endoftext|> world<<|endoftext|><|endoftext|>", 51) == 0,
          "decode of text with <|endoftext|>");
}

static void test_invalid_utf8(bpe_tokenizer *t) {
    static const char *bad[] = {"\x80",         "a\xC3",         "\xC0\x80",   "\xC1\xBF",
                                "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80",
                                "\xE2\x82",     "ok\xFF",        "\xE0\x80\x80"};
    int ids[16];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        check(enc(t, bad[i], 0, ids, 16) == -1, "invalid UTF-8 #%zu accepted", i);
    check(bpe_encode(t, "a\0b", 3, 0, ids, 16) == 3, "NUL is ordinary text");
    check(enc(t, "\xF4\x8F\xBF\xBF", 0, ids, 16) > 0, "U+10FFFF accepted");
    check(bpe_encode(t, "", 0, 0, ids, 16) == 0, "empty text gives no ids");
}

static void test_ranges(bpe_tokenizer *t) {
    int bad[] = {-1, 50257, 1 << 30};
    char out[256];
    size_t len;
    bpe_stream s;
    bpe_stream_init(&s);
    for (int i = 0; i < 3; i++) {
        int ids[2] = {464, bad[i]};
        check(bpe_decode(t, ids, 2, out, sizeof out) == -1, "decode accepted id %d", bad[i]);
        check(bpe_token_bytes(t, bad[i], &len) == NULL, "token_bytes accepted id %d", bad[i]);
        check(bpe_stream_push(&s, t, bad[i], out, sizeof out) == -1, "stream accepted %d", bad[i]);
    }
    check(bpe_vocab_size(t) == 50257, "vocab size %d", bpe_vocab_size(t));
    const char *b = bpe_token_bytes(t, BPE_EOT, &len);
    check(b && len == 13 && memcmp(b, "<|endoftext|>", 13) == 0, "token 50256 bytes");
    int ids[4];
    long n = enc(t, "The quick brown fox", 0, ids, 2);
    check(n == 4 && ids[0] == 464 && ids[1] == 2068, "encode with a small cap counts all (%ld)", n);
    check(bpe_decode(t, ids, 2, out, 2) == 9 && memcmp(out, "Th", 2) == 0, "decode truncates");
    /* a push that does not fit consumes nothing */
    int tok[2] = {447, 247}; /* U+2019 split across two tokens */
    bpe_stream_init(&s);
    check(bpe_stream_push(&s, t, tok[0], out, sizeof out) == 0 && s.n_held == 2, "held prefix");
    check(bpe_stream_push(&s, t, tok[1], out, 2) == -1 && s.n_held == 2, "small cap refused");
    check(bpe_stream_push(&s, t, tok[1], out, 3) == 3 && memcmp(out, "\xE2\x80\x99", 3) == 0,
          "completed character emitted");
}

/* Many distinct words (more than the cache holds) give the same ids on a second pass. */
static void test_cache_churn(bpe_tokenizer *t) {
    size_t cap = 40000 * 8, len = 0;
    char *text = malloc(cap);
    for (int i = 0; i < 40000; i++) {
        text[len++] = ' ';
        for (int k = i + 1; k > 0; k /= 26) text[len++] = (char)('a' + k % 26);
    }
    int *a = malloc(len * sizeof *a), *b = malloc(len * sizeof *b);
    char *dec = malloc(len);
    long na = bpe_encode(t, text, len, 0, a, (long)len);
    long nb = bpe_encode(t, text, len, 0, b, (long)len);
    check(na > 0 && na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0, "cache churn");
    check(bpe_decode(t, a, na, dec, (long)len) == (long)len && memcmp(dec, text, len) == 0,
          "cache churn round trip");
    free(text);
    free(a);
    free(b);
    free(dec);
}

/* A 200 kB word (the heap merge) and a 200 kB whitespace run round-trip in reasonable time. */
static void test_long_word(bpe_tokenizer *t) {
    size_t len = 200000;
    char *text = malloc(len);
    unsigned x = 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        text[i] = (char)('a' + (x >> 16) % 26);
    }
    int *ids = malloc(len * sizeof *ids);
    char *dec = malloc(len);
    clock_t c0 = clock();
    long n = bpe_encode(t, text, len, 0, ids, (long)len);
    double sec = (double)(clock() - c0) / CLOCKS_PER_SEC;
    check(n > 0 && bpe_decode(t, ids, n, dec, (long)len) == (long)len &&
              memcmp(dec, text, len) == 0,
          "200 kB word round trip");
    check(sec < 5.0, "200 kB word took %.2f s", sec);
    memset(text, ' ', len); /* one long whitespace run */
    n = bpe_encode(t, text, len, 0, ids, (long)len);
    check(n > 0 && bpe_decode(t, ids, n, dec, (long)len) == (long)len &&
              memcmp(dec, text, len) == 0,
          "200 kB of spaces round trip");
    free(text);
    free(ids);
    free(dec);
}

/* ------------------------------------------------------------------------ loading */

static void make_tmpdir(char *dir, size_t n) {
    const char *base = getenv("GPT2D_TMP");
    snprintf(dir, n, "%s/bpe-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) dir[0] = '\0';
}

static int write_in(const char *dir, const char *name, const char *data, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return spit(path, data, len);
}

static void remove_in(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

/* Expects bpe_load(dir) to fail with a message containing `mention`. */
static void expect_fail(const char *dir, const char *mention, const char *what) {
    char err[512] = "";
    bpe_tokenizer *t = bpe_load(dir, err, sizeof err);
    check(t == NULL && err[0] && strstr(err, mention), "%s: load gave %p, \"%s\"", what,
          (void *)t, err);
    if (!t) printf("  (%s -> %s)\n", what, err);
    bpe_free(t);
}

static void test_files(bpe_tokenizer *ref) {
    char src[4096], dir[4096];
    size_t vl, ml;
    snprintf(src, sizeof src, "%s/data/gpt2-tokenizer/vocab.json", root());
    char *vocab = slurp(src, &vl);
    snprintf(src, sizeof src, "%s/data/gpt2-tokenizer/merges.txt", root());
    char *merges = slurp(src, &ml);
    make_tmpdir(dir, sizeof dir);
    check(vocab && merges && dir[0], "cannot set up temp dir %s", dir);
    if (!vocab || !merges || !dir[0]) goto done;

    /* encoder.json + vocab.bpe (OpenAI's names) */
    write_in(dir, "encoder.json", vocab, vl);
    write_in(dir, "vocab.bpe", merges, ml);
    char err[512] = "";
    bpe_tokenizer *t = bpe_load(dir, err, sizeof err);
    check(t != NULL, "load encoder.json + vocab.bpe: %s", err);
    if (t) {
        int a[64], b[64];
        const char *s = "Loading from OpenAI's file names works, doesn't it?";
        long na = enc(t, s, 0, a, 64), nb = enc(ref, s, 0, b, 64);
        check(na > 0 && na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0, "same ids");
    }
    bpe_free(t);

    /* broken files */
    write_in(dir, "vocab.bpe", merges, ml / 2); /* cut mid-line */
    expect_fail(dir, "vocab.bpe", "merges cut mid-line");
    const char *cut = merges + ml / 2;
    while (*cut != '\n') cut++;
    write_in(dir, "vocab.bpe", merges, (size_t)(cut + 1 - merges)); /* cut at a line end */
    expect_fail(dir, "vocab.bpe", "merges cut at a line end");
    static const char three[] = "#version: 0.2\n\xC4\xA0 t x\n";
    write_in(dir, "vocab.bpe", three, sizeof three - 1);
    expect_fail(dir, "line 2", "malformed merges line");
    static const char blank[] = "#version: 0.2\n\n\xC4\xA0 t\n";
    write_in(dir, "vocab.bpe", blank, sizeof blank - 1);
    expect_fail(dir, "line 2", "empty merges line");
    static const char unknown[] = "#version: 0.2\n\xC4\xA0 zzzzqqq\n";
    write_in(dir, "vocab.bpe", unknown, sizeof unknown - 1);
    expect_fail(dir, "not in the vocabulary", "merge of an unknown token");
    remove_in(dir, "vocab.bpe");
    expect_fail(dir, "vocab.bpe", "missing merges");
    write_in(dir, "vocab.bpe", merges, ml);
    write_in(dir, "encoder.json", vocab, vl / 2);
    expect_fail(dir, "encoder.json", "truncated JSON");
    write_in(dir, "encoder.json", "{\"a\": 0, \"b\": 1}", 16);
    expect_fail(dir, "encoder.json", "wrong vocab size");
    write_in(dir, "encoder.json", "[1, 2]", 6);
    expect_fail(dir, "encoder.json", "not an object");
    remove_in(dir, "encoder.json");
    expect_fail(dir, dir, "no vocabulary file");
    expect_fail("/nonexistent/gpt2d-tokenizer", "nonexistent", "missing directory");
    remove_in(dir, "vocab.bpe");
    rmdir(dir);
done:
    free(vocab);
    free(merges);
}

int main(void) {
    char dir[4096], err[512] = "";
    snprintf(dir, sizeof dir, "%s/data/gpt2-tokenizer", root());
    bpe_tokenizer *t = bpe_load(dir, err, sizeof err);
    check(t != NULL, "bpe_load(%s): %s", dir, err);
    if (!t) return check_done("test_bpe");
    test_vector_file(t, "vectors.jsonl", 518);
    test_vector_file(t, "whitespace_edge_vectors.jsonl", 24);
    test_decode_vectors(t);
    test_special(t);
    test_invalid_utf8(t);
    test_ranges(t);
    test_cache_churn(t);
    test_long_word(t);
    test_files(t);
    bpe_free(t);
    return check_done("test_bpe");
}
