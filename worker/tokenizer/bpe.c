/* bpe.c — GPT-2's byte-level BPE tokenizer (contract in bpe.h).
 *
 * Reading order: constants, UTF-8 helpers, the byte<->unicode map, hash maps (load-time token map,
 * merge-pair map, per-word cache), loading, the BPE merge itself, encoding, decoding, streaming.
 *
 * Everything works on raw bytes and token ids: the byte<->unicode map is used only to read the
 * vocabulary and merges files. A merge (L, R) -> M is stored as (id L, id R) -> (rank, id M). */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "bpe.h"

#include <jansson.h>
#include <limits.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ======================================================================== constants */

#define BPE_N_VOCAB (BPE_EOT + 1)          /* 256 bytes + 50000 merges + <|endoftext|> */
#define BPE_N_MERGES (BPE_N_VOCAB - 257)   /* merges the vocabulary size implies */
#define BPE_N_CP 324                       /* code points the byte map uses: 0..323 */
#define BPE_NO_RANK INT_MAX                /* rank of a pair that has no merge */
#define BPE_SMALL_WORD 64                  /* words up to this many bytes merge on the stack */
#define BPE_CACHE_SLOTS 32768              /* power of two; the cache is cleared when half full */
#define BPE_CACHE_MAX_WORD 128             /* longer words (bytes) are not cached */
#define BPE_CACHE_KEY_BYTES (512 * 1024)   /* arena for cached words' bytes */
#define BPE_CACHE_IDS (128 * 1024)         /* arena for cached words' ids */
#define BPE_PATH_MAX 4096

static const char BPE_EOT_TEXT[] = "<|endoftext|>";
#define BPE_EOT_LEN (sizeof BPE_EOT_TEXT - 1)

/* Unicode White_Space, which is what Python's `regex` module (OpenAI's encoder.py) means by \s.
 * PCRE2's \s (even with PCRE2_UCP) lacks U+0085, so the pattern spells the set out. */
#define BPE_WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
               "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static const char BPE_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" BPE_WS "\\p{L}\\p{N}]+"
    "|[" BPE_WS "]+(?![^" BPE_WS "])|[" BPE_WS "]+";

/* ======================================================================== types */

typedef struct {
    uint32_t off; /* into tok_data */
    uint32_t len; /* bytes; 0 only while loading (= id not seen yet) */
} bpe_span;

typedef struct {
    uint64_t key;   /* (left id << 32) | right id; BPE_PAIR_EMPTY if unused */
    int32_t rank;   /* line index in merges.txt, 0 = merged first */
    int32_t merged; /* id of left+right */
} bpe_pair;
#define BPE_PAIR_EMPTY UINT64_MAX

typedef struct {
    bpe_pair *e; /* (mask + 1) entries, open addressing, linear probing */
    size_t mask;
} bpe_pair_map;

typedef struct {
    int32_t *id; /* (mask + 1) token ids, -1 = empty; keys are the tokens' bytes */
    size_t mask;
} bpe_tok_map;

typedef struct {
    uint64_t hash;    /* of the word's bytes, never 0; 0 = empty slot */
    uint32_t key_off; /* into keys */
    uint32_t ids_off; /* into ids */
    uint16_t key_len; /* bytes */
    uint16_t n_ids;
} bpe_cache_slot;

typedef struct {
    bpe_cache_slot *slots; /* BPE_CACHE_SLOTS */
    unsigned char *keys;   /* BPE_CACHE_KEY_BYTES */
    int *ids;              /* BPE_CACHE_IDS */
    size_t n_slots_used, keys_used, ids_used;
} bpe_cache;

struct bpe_tokenizer {
    int n_vocab;
    bpe_span *tok;            /* (n_vocab) each token's bytes in tok_data */
    unsigned char *tok_data;  /* raw bytes of all tokens */
    int byte_id[256];         /* id of the one-byte token for each byte */
    uint16_t b2u[256];        /* GPT-2 bytes_to_unicode: byte -> code point */
    int16_t u2b[BPE_N_CP];    /* its inverse; -1 for code points it does not use */
    bpe_pair_map pairs;       /* merges */
    int merges_ordered;       /* every merge's parts are made only by earlier merges (see below) */
    pcre2_code *re;           /* the pre-tokenizer */
    pcre2_match_data *md;
    int jit;                  /* re is JIT-compiled */
    bpe_cache cache;          /* mutable: the reason one instance is single-threaded */
};

typedef struct {
    int *ids;
    long cap;
    long n; /* ids produced; only the first cap are stored */
} bpe_out;

/* ======================================================================== small helpers */

/* Formats a message into err (if any). */
static void bpe_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A 64-bit hash of n bytes; never 0 (0 marks an empty cache slot). */
static uint64_t bpe_hash_bytes(const unsigned char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    if (n) memcpy(&v, s, n);
    h = (h ^ v) * 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 29;
    return h | 1;
}

/* Mixes a 64-bit integer key into a table index source. */
static uint64_t bpe_hash_u64(uint64_t k) {
    k *= 0x9E3779B97F4A7C15ULL;
    return k ^ (k >> 31);
}

/* Reads a whole file into a NUL-terminated buffer (caller frees); NULL with a message on error. */
static char *bpe_read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f) {
        bpe_err(err, errlen, "%s: cannot open: %m", path);
        return NULL;
    }
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 1 << 20;
            char *nb = realloc(buf, cap);
            if (!nb) {
                bpe_err(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            buf = nb;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
    }
    if (ferror(f)) {
        bpe_err(err, errlen, "%s: read error", path);
        goto fail;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

/* ======================================================================== UTF-8 */

/* Length of the UTF-8 sequence lead byte c starts: 1..4, or 0 if c cannot start one. */
static int bpe_utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) return 2;
    if (c < 0xF0) return 3;
    return c < 0xF5 ? 4 : 0;
}

/* Whether c may be byte number pos (1..3) of a sequence starting with lead (no overlongs,
 * no surrogates, nothing above U+10FFFF). */
static int bpe_utf8_cont_ok(unsigned char lead, int pos, unsigned char c) {
    unsigned lo = 0x80, hi = 0xBF;
    if (pos == 1) {
        if (lead == 0xE0) lo = 0xA0;
        else if (lead == 0xED) hi = 0x9F;
        else if (lead == 0xF0) lo = 0x90;
        else if (lead == 0xF4) hi = 0x8F;
    }
    return c >= lo && c <= hi;
}

/* Length of the valid character at s (n bytes available), or 0 if invalid or cut short. */
static int bpe_utf8_seq(const unsigned char *s, size_t n) {
    int len = bpe_utf8_len(s[0]);
    if (len == 0 || (size_t)len > n) return 0;
    for (int k = 1; k < len; k++)
        if (!bpe_utf8_cont_ok(s[0], k, s[k])) return 0;
    return len;
}

/* Code point of the valid len-byte character at s. */
static uint32_t bpe_utf8_cp(const unsigned char *s, int len) {
    static const unsigned char lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t cp = s[0] & lead_mask[len];
    for (int k = 1; k < len; k++) cp = (cp << 6) | (s[k] & 0x3F);
    return cp;
}

/* 1 if s[0..n) is valid UTF-8 (strict, as Python decodes it), else 0. */
static int bpe_utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) { /* ASCII fast path, 8 bytes at a time */
            uint64_t v;
            memcpy(&v, s + i, 8);
            if ((v & 0x8080808080808080ULL) == 0) {
                i += 8;
                continue;
            }
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int k = bpe_utf8_seq(s + i, n - i);
        if (!k) return 0;
        i += (size_t)k;
    }
    return 1;
}

/* ======================================================================== byte <-> unicode */

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order. Fills t->b2u and t->u2b. */
static void bpe_byte_map_init(bpe_tokenizer *t) {
    int extra = 0;
    for (int u = 0; u < BPE_N_CP; u++) t->u2b[u] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        t->b2u[b] = (uint16_t)(printable ? b : 256 + extra++);
        t->u2b[t->b2u[b]] = (int16_t)b;
    }
}

/* Maps a token as written in the files (UTF-8 of mapped code points, n bytes) back to raw bytes in
 * out (room for n). Returns the byte count, or -1 if s is not UTF-8 or uses an unmapped char. */
static long bpe_unmap(const bpe_tokenizer *t, const char *s, size_t n, unsigned char *out) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    long m = 0;
    while (i < n) {
        int k = bpe_utf8_seq(p + i, n - i);
        if (!k) return -1;
        uint32_t cp = bpe_utf8_cp(p + i, k);
        if (cp >= BPE_N_CP || t->u2b[cp] < 0) return -1;
        out[m++] = (unsigned char)t->u2b[cp];
        i += (size_t)k;
    }
    return m;
}

/* ======================================================================== token map (load time) */

/* Builds bytes -> id over all tokens of t. Returns 0, or -1 if out of memory. */
static int bpe_tok_map_build(bpe_tok_map *m, const bpe_tokenizer *t) {
    size_t cap = 1;
    while (cap < (size_t)t->n_vocab * 2) cap <<= 1;
    m->id = malloc(cap * sizeof *m->id);
    if (!m->id) return -1;
    m->mask = cap - 1;
    memset(m->id, 0xFF, cap * sizeof *m->id); /* all -1 */
    for (int id = 0; id < t->n_vocab; id++) {
        size_t i = bpe_hash_bytes(t->tok_data + t->tok[id].off, t->tok[id].len) & m->mask;
        while (m->id[i] >= 0) i = (i + 1) & m->mask;
        m->id[i] = id;
    }
    return 0;
}

/* The id of the token whose bytes are s[0..n), or -1. */
static int bpe_tok_map_get(const bpe_tok_map *m, const bpe_tokenizer *t, const unsigned char *s,
                           size_t n) {
    size_t i = bpe_hash_bytes(s, n) & m->mask;
    for (; m->id[i] >= 0; i = (i + 1) & m->mask) {
        const bpe_span *sp = &t->tok[m->id[i]];
        if (sp->len == n && memcmp(t->tok_data + sp->off, s, n) == 0) return m->id[i];
    }
    return -1;
}

/* ======================================================================== merge-pair map */

/* Allocates an empty map for up to n pairs. Returns 0, or -1 if out of memory. */
static int bpe_pairs_init(bpe_pair_map *m, size_t n) {
    size_t cap = 1;
    while (cap < n * 2) cap <<= 1;
    m->e = malloc(cap * sizeof *m->e);
    if (!m->e) return -1;
    m->mask = cap - 1;
    for (size_t i = 0; i <= m->mask; i++) m->e[i].key = BPE_PAIR_EMPTY;
    return 0;
}

/* The slot of pair (a, b): the entry if present, else the empty slot where it would go. */
static bpe_pair *bpe_pairs_slot(const bpe_pair_map *m, int a, int b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = bpe_hash_u64(key) & m->mask;
    while (m->e[i].key != key && m->e[i].key != BPE_PAIR_EMPTY) i = (i + 1) & m->mask;
    return &m->e[i];
}

/* Sets (a, b) -> (rank, merged); a repeated pair keeps the later rank, as Python's dict does. */
static void bpe_pairs_put(bpe_pair_map *m, int a, int b, int rank, int merged) {
    bpe_pair *p = bpe_pairs_slot(m, a, b);
    p->key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    p->rank = rank;
    p->merged = merged;
}

/* The rank of merging (a, b), or BPE_NO_RANK. */
static int bpe_rank(const bpe_tokenizer *t, int a, int b) {
    const bpe_pair *p = bpe_pairs_slot(&t->pairs, a, b);
    return p->key == BPE_PAIR_EMPTY ? BPE_NO_RANK : p->rank;
}

/* ======================================================================== word cache */

/* Allocates the cache. Returns 0, or -1 if out of memory (parts freed by bpe_cache_free). */
static int bpe_cache_init(bpe_cache *c) {
    c->slots = calloc(BPE_CACHE_SLOTS, sizeof *c->slots);
    c->keys = malloc(BPE_CACHE_KEY_BYTES);
    c->ids = malloc(BPE_CACHE_IDS * sizeof *c->ids);
    return (c->slots && c->keys && c->ids) ? 0 : -1;
}

static void bpe_cache_free(bpe_cache *c) {
    free(c->slots);
    free(c->keys);
    free(c->ids);
}

/* The slot for word w (n bytes, hash h): its entry if cached, else the empty slot for it. */
static bpe_cache_slot *bpe_cache_slot_for(bpe_cache *c, const unsigned char *w, size_t n,
                                          uint64_t h) {
    size_t i = h & (BPE_CACHE_SLOTS - 1);
    for (;; i = (i + 1) & (BPE_CACHE_SLOTS - 1)) {
        bpe_cache_slot *s = &c->slots[i];
        if (s->hash == 0) return s;
        if (s->hash == h && s->key_len == n && memcmp(c->keys + s->key_off, w, n) == 0) return s;
    }
}

/* Stores word w (n <= BPE_CACHE_MAX_WORD bytes, hash h) -> ids[0..k); clears the cache first
 * when it is half full or its arenas lack room. */
static void bpe_cache_put(bpe_cache *c, const unsigned char *w, size_t n, uint64_t h,
                          const int *ids, int k) {
    if (c->n_slots_used >= BPE_CACHE_SLOTS / 2 || c->keys_used + n > BPE_CACHE_KEY_BYTES ||
        c->ids_used + (size_t)k > BPE_CACHE_IDS) {
        memset(c->slots, 0, BPE_CACHE_SLOTS * sizeof *c->slots);
        c->n_slots_used = c->keys_used = c->ids_used = 0;
    }
    bpe_cache_slot *s = bpe_cache_slot_for(c, w, n, h);
    memcpy(c->keys + c->keys_used, w, n);
    memcpy(c->ids + c->ids_used, ids, (size_t)k * sizeof *ids);
    *s = (bpe_cache_slot){.hash = h, .key_off = (uint32_t)c->keys_used,
                          .ids_off = (uint32_t)c->ids_used, .key_len = (uint16_t)n,
                          .n_ids = (uint16_t)k};
    c->keys_used += n;
    c->ids_used += (size_t)k;
    c->n_slots_used++;
}

/* ======================================================================== loading */

/* Chooses vocab.json + merges.txt in dir, else encoder.json + vocab.bpe. Returns 0, or -1. */
static int bpe_pick_files(const char *dir, char *vpath, char *mpath, char *err, size_t errlen) {
    static const char *const names[2][2] = {{"vocab.json", "merges.txt"},
                                            {"encoder.json", "vocab.bpe"}};
    for (int k = 0; k < 2; k++) {
        int a = snprintf(vpath, BPE_PATH_MAX, "%s/%s", dir, names[k][0]);
        int b = snprintf(mpath, BPE_PATH_MAX, "%s/%s", dir, names[k][1]);
        if (a < 0 || b < 0 || a >= BPE_PATH_MAX || b >= BPE_PATH_MAX) {
            bpe_err(err, errlen, "%s: path too long", dir);
            return -1;
        }
        if (access(vpath, F_OK) == 0) return 0;
    }
    bpe_err(err, errlen, "%s: neither vocab.json nor encoder.json found", dir);
    return -1;
}

/* Stores one vocabulary entry (key as written in the file, its JSON id) into t. Returns 0, or -1
 * with a message. t->tok_data has room; *used is its fill level. */
static int bpe_vocab_add(bpe_tokenizer *t, const char *path, const char *key, json_t *val,
                         size_t *used, char *err, size_t errlen) {
    if (!json_is_integer(val)) {
        bpe_err(err, errlen, "%s: token \"%s\": id is not an integer", path, key);
        return -1;
    }
    json_int_t id = json_integer_value(val);
    if (id < 0 || id >= t->n_vocab) {
        bpe_err(err, errlen, "%s: token \"%s\": id %lld out of range", path, key, (long long)id);
        return -1;
    }
    if (t->tok[id].len != 0) {
        bpe_err(err, errlen, "%s: id %lld appears twice", path, (long long)id);
        return -1;
    }
    long n = bpe_unmap(t, key, strlen(key), t->tok_data + *used);
    if (n <= 0) {
        bpe_err(err, errlen, "%s: token \"%s\" is empty or not in GPT-2's byte map", path, key);
        return -1;
    }
    t->tok[id] = (bpe_span){.off = (uint32_t)*used, .len = (uint32_t)n};
    *used += (size_t)n;
    return 0;
}

/* Checks what the rest of the tokenizer relies on: every byte has a one-byte token, and id 50256
 * is <|endoftext|>. Fills t->byte_id. Returns 0, or -1 with a message. */
static int bpe_vocab_check(bpe_tokenizer *t, const char *path, char *err, size_t errlen) {
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    for (int id = 0; id < t->n_vocab; id++)
        if (t->tok[id].len == 1) t->byte_id[t->tok_data[t->tok[id].off]] = id;
    for (int b = 0; b < 256; b++) {
        if (t->byte_id[b] < 0) {
            bpe_err(err, errlen, "%s: no token for byte 0x%02x", path, b);
            return -1;
        }
    }
    const bpe_span *e = &t->tok[BPE_EOT];
    if (e->len != BPE_EOT_LEN || memcmp(t->tok_data + e->off, BPE_EOT_TEXT, BPE_EOT_LEN) != 0) {
        bpe_err(err, errlen, "%s: id %d is not %s", path, BPE_EOT, BPE_EOT_TEXT);
        return -1;
    }
    return 0;
}

/* Loads the vocabulary (JSON object token -> id, exactly 50257 distinct ids) into t.
 * Returns 0, or -1 with a message naming path. */
static int bpe_load_vocab(bpe_tokenizer *t, const char *path, char *err, size_t errlen) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je), *val;
    const char *key;
    size_t total = 0, used = 0;
    int rc = -1;
    if (!root) {
        bpe_err(err, errlen, "%s: bad JSON: %s (line %d)", path, je.text, je.line);
        return -1;
    }
    if (!json_is_object(root)) {
        bpe_err(err, errlen, "%s: not a JSON object", path);
        goto done;
    }
    if (json_object_size(root) != BPE_N_VOCAB) {
        bpe_err(err, errlen, "%s: %zu tokens, expected %d", path, json_object_size(root),
                BPE_N_VOCAB);
        goto done;
    }
    t->n_vocab = BPE_N_VOCAB;
    json_object_foreach(root, key, val) total += strlen(key);
    t->tok = calloc((size_t)t->n_vocab, sizeof *t->tok);
    t->tok_data = malloc(total + 1);
    if (!t->tok || !t->tok_data) {
        bpe_err(err, errlen, "%s: out of memory", path);
        goto done;
    }
    json_object_foreach(root, key, val) {
        if (bpe_vocab_add(t, path, key, val, &used, err, errlen) < 0) goto done;
    }
    rc = bpe_vocab_check(t, path, err, errlen);
done:
    json_decref(root);
    return rc;
}

/* Parses one merges line "L R" (n bytes, no newline) as merge number rank. tmp has room for n
 * bytes. Returns 0, or -1 with a message naming path and line. */
static int bpe_merge_add(bpe_tokenizer *t, const bpe_tok_map *map, const char *s, size_t n,
                         int rank, unsigned char *tmp, const char *path, int line, char *err,
                         size_t errlen) {
    const char *sp = memchr(s, ' ', n);
    if (!sp || sp == s || sp == s + n - 1 || memchr(sp + 1, ' ', (size_t)(s + n - sp - 1))) {
        bpe_err(err, errlen, "%s line %d: expected two tokens separated by a space", path, line);
        return -1;
    }
    long a = bpe_unmap(t, s, (size_t)(sp - s), tmp);
    long b = a < 0 ? -1 : bpe_unmap(t, sp + 1, (size_t)(s + n - sp - 1), tmp + a);
    if (b < 0) {
        bpe_err(err, errlen, "%s line %d: a character outside GPT-2's byte map", path, line);
        return -1;
    }
    int left = bpe_tok_map_get(map, t, tmp, (size_t)a);
    int right = bpe_tok_map_get(map, t, tmp + a, (size_t)b);
    int merged = bpe_tok_map_get(map, t, tmp, (size_t)(a + b));
    if (left < 0 || right < 0 || merged < 0) {
        bpe_err(err, errlen, "%s line %d: \"%.*s\" uses a token not in the vocabulary", path,
                line, (int)n, s);
        return -1;
    }
    bpe_pairs_put(&t->pairs, left, right, rank, merged);
    return 0;
}

/* Whether only '\r' and '\n' remain in [p, end). */
static int bpe_blank_rest(const char *p, const char *end) {
    for (; p < end; p++)
        if (*p != '\n' && *p != '\r') return 0;
    return 1;
}

/* Parses the merges text buf[0..len) (first line "#version..." skipped) into t->pairs.
 * Returns the number of merges, or -1 with a message. */
static int bpe_parse_merges(bpe_tokenizer *t, const bpe_tok_map *map, const char *buf,
                            size_t len, unsigned char *tmp, const char *path, char *err,
                            size_t errlen) {
    const char *p = buf, *end = buf + len;
    int line = 0, rank = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        size_t n = (size_t)(eol - p);
        if (n && p[n - 1] == '\r') n--;
        line++;
        if (line == 1 && n && p[0] == '#') {
            /* the "#version: 0.2" header */
        } else if (n == 0) {
            if (bpe_blank_rest(eol, end)) break;
            bpe_err(err, errlen, "%s line %d: empty line", path, line);
            return -1;
        } else if (rank >= BPE_N_MERGES) {
            bpe_err(err, errlen, "%s line %d: more than %d merges", path, line, BPE_N_MERGES);
            return -1;
        } else if (bpe_merge_add(t, map, p, n, rank++, tmp, path, line, err, errlen) < 0) {
            return -1;
        }
        p = nl ? nl + 1 : end;
    }
    return rank;
}

/* Sets t->merges_ordered: whether each merge's two parts are one-byte tokens or made only by
 * merges of lower rank. Then a pair created by a merge always ranks after it, so merging pairs
 * in (rank, position) order with a heap is exactly encoder.py's "merge all occurrences of the
 * best pair, repeat". Returns 0, or -1 if out of memory. */
static int bpe_check_order(bpe_tokenizer *t) {
    int *made = malloc((size_t)t->n_vocab * sizeof *made); /* highest rank that makes the id */
    if (!made) return -1;
    for (int i = 0; i < t->n_vocab; i++) made[i] = -1;
    for (size_t i = 0; i <= t->pairs.mask; i++) {
        const bpe_pair *p = &t->pairs.e[i];
        if (p->key != BPE_PAIR_EMPTY && made[p->merged] < p->rank) made[p->merged] = p->rank;
    }
    t->merges_ordered = 1;
    for (size_t i = 0; i <= t->pairs.mask; i++) {
        const bpe_pair *p = &t->pairs.e[i];
        if (p->key == BPE_PAIR_EMPTY) continue;
        if (made[p->key >> 32] >= p->rank || made[p->key & 0xFFFFFFFFu] >= p->rank)
            t->merges_ordered = 0;
    }
    free(made);
    return 0;
}

/* Loads the merges file (exactly 50000 merges) into t->pairs. Returns 0, or -1 with a message. */
static int bpe_load_merges(bpe_tokenizer *t, const char *path, char *err, size_t errlen) {
    size_t len = 0;
    bpe_tok_map map = {0};
    unsigned char *tmp = NULL;
    int rc = -1, n;
    char *buf = bpe_read_file(path, &len, err, errlen);
    if (!buf) return -1;
    tmp = malloc(len + 1);
    if (!tmp || bpe_tok_map_build(&map, t) < 0 || bpe_pairs_init(&t->pairs, BPE_N_MERGES) < 0) {
        bpe_err(err, errlen, "%s: out of memory", path);
        goto done;
    }
    n = bpe_parse_merges(t, &map, buf, len, tmp, path, err, errlen);
    if (n < 0) goto done;
    if (n != BPE_N_MERGES) {
        bpe_err(err, errlen, "%s: %d merges, expected %d (truncated?)", path, n, BPE_N_MERGES);
        goto done;
    }
    if (bpe_check_order(t) < 0) {
        bpe_err(err, errlen, "%s: out of memory", path);
        goto done;
    }
    rc = 0;
done:
    free(map.id);
    free(tmp);
    free(buf);
    return rc;
}

/* Compiles the pre-tokenizer (JIT if available). Returns 0, or -1 with a message. */
static int bpe_regex_init(bpe_tokenizer *t, char *err, size_t errlen) {
    int code;
    PCRE2_SIZE off;
    t->re = pcre2_compile((PCRE2_SPTR)BPE_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                          &code, &off, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        bpe_err(err, errlen, "pre-tokenizer regex: %s at offset %zu", (char *)msg, (size_t)off);
        return -1;
    }
    t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    t->md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!t->md) {
        bpe_err(err, errlen, "pre-tokenizer regex: out of memory");
        return -1;
    }
    return 0;
}

bpe_tokenizer *bpe_load(const char *dir, char *err, size_t errlen) {
    char vpath[BPE_PATH_MAX], mpath[BPE_PATH_MAX];
    bpe_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        bpe_err(err, errlen, "%s: out of memory", dir);
        return NULL;
    }
    bpe_byte_map_init(t);
    if (bpe_pick_files(dir, vpath, mpath, err, errlen) < 0) goto fail;
    if (bpe_load_vocab(t, vpath, err, errlen) < 0) goto fail;
    if (bpe_load_merges(t, mpath, err, errlen) < 0) goto fail;
    if (bpe_regex_init(t, err, errlen) < 0) goto fail;
    if (bpe_cache_init(&t->cache) < 0) {
        bpe_err(err, errlen, "%s: out of memory", dir);
        goto fail;
    }
    return t;
fail:
    bpe_free(t);
    return NULL;
}

void bpe_free(bpe_tokenizer *t) {
    if (!t) return;
    bpe_cache_free(&t->cache);
    pcre2_match_data_free(t->md);
    pcre2_code_free(t->re);
    free(t->pairs.e);
    free(t->tok_data);
    free(t->tok);
    free(t);
}

int bpe_vocab_size(const bpe_tokenizer *t) { return t->n_vocab; }

/* ======================================================================== BPE merge */

/* Replaces, left to right, every non-overlapping occurrence of the pair at sym[at], sym[at+1]
 * (its first occurrence) by the merged token. rank[i] is the rank of (sym[i], sym[i+1]) and is
 * kept up to date; mark is scratch (n bytes). Returns the new symbol count. */
static int bpe_merge_all(const bpe_tokenizer *t, int *sym, int *rank, unsigned char *mark, int n,
                         int at) {
    int first = sym[at], second = sym[at + 1];
    int merged = bpe_pairs_slot(&t->pairs, first, second)->merged;
    int j = at;
    for (int i = at; i < n; j++) {
        if (i + 1 < n && sym[i] == first && sym[i + 1] == second) {
            sym[j] = merged;
            mark[j] = 1;
            i += 2;
        } else {
            sym[j] = sym[i];
            if (i + 1 < n) rank[j] = rank[i]; /* still right unless a merged neighbour follows */
            mark[j] = 0;
            i++;
        }
    }
    for (int k = at; k + 1 < j; k++)
        if (mark[k] || mark[k + 1]) rank[k] = bpe_rank(t, sym[k], sym[k + 1]);
    if (at > 0) rank[at - 1] = bpe_rank(t, sym[at - 1], sym[at]);
    return j;
}

/* encoder.py's bpe() on sym[0..n) in place: while some adjacent pair has a merge, merge every
 * occurrence of the lowest-ranked one. O(n * merges); exact for any merges file. rank and mark
 * are scratch of n entries. Returns the final symbol count. */
static int bpe_merge_scan(const bpe_tokenizer *t, int *sym, int *rank, unsigned char *mark,
                          int n) {
    for (int i = 0; i + 1 < n; i++) rank[i] = bpe_rank(t, sym[i], sym[i + 1]);
    for (;;) {
        int at = -1, best = BPE_NO_RANK;
        for (int i = 0; i + 1 < n; i++) {
            if (rank[i] < best) {
                best = rank[i];
                at = i;
            }
        }
        if (at < 0) return n;
        n = bpe_merge_all(t, sym, rank, mark, n, at);
    }
}

typedef struct {
    int rank, pos;
} bpe_heap_item;

/* Heap order: lower rank first, then leftmost. */
static int bpe_heap_less(bpe_heap_item a, bpe_heap_item b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void bpe_heap_push(bpe_heap_item *h, int *n, bpe_heap_item x) {
    int i = (*n)++;
    while (i > 0 && bpe_heap_less(x, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = x;
}

static bpe_heap_item bpe_heap_pop(bpe_heap_item *h, int *n) {
    bpe_heap_item top = h[0], x = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && bpe_heap_less(h[c + 1], h[c])) c++;
        if (!bpe_heap_less(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

typedef struct {
    int *sym, *prv, *nxt, *prank; /* (n) symbol (-1 = merged away), neighbours, pair rank */
    bpe_heap_item *heap;          /* (3n) pending pairs; stale items are skipped */
    int n_heap;
} bpe_heap_word;

/* Recomputes the rank of the pair starting at live position i and queues it if it changed. */
static void bpe_heap_update(const bpe_tokenizer *t, bpe_heap_word *w, int i) {
    int r = w->nxt[i] >= 0 ? bpe_rank(t, w->sym[i], w->sym[w->nxt[i]]) : BPE_NO_RANK;
    if (r == w->prank[i]) return;
    w->prank[i] = r;
    if (r != BPE_NO_RANK) bpe_heap_push(w->heap, &w->n_heap, (bpe_heap_item){r, i});
}

/* The same result as bpe_merge_scan in O(n log n), valid when t->merges_ordered: pairs are merged
 * in (rank, position) order, which is rank by rank, each rank left to right. Reads w->sym[0..n),
 * writes the result to out. Returns the symbol count. */
static int bpe_merge_heap(const bpe_tokenizer *t, bpe_heap_word *w, int n, int *out) {
    w->n_heap = 0;
    for (int i = 0; i < n; i++) {
        w->prv[i] = i - 1;
        w->nxt[i] = i + 1 < n ? i + 1 : -1;
        w->prank[i] = BPE_NO_RANK;
    }
    for (int i = 0; i < n; i++) bpe_heap_update(t, w, i);
    while (w->n_heap > 0) {
        bpe_heap_item it = bpe_heap_pop(w->heap, &w->n_heap);
        int p = it.pos;
        if (w->sym[p] < 0 || w->prank[p] != it.rank) continue; /* stale */
        int q = w->nxt[p];
        w->sym[p] = bpe_pairs_slot(&t->pairs, w->sym[p], w->sym[q])->merged;
        w->sym[q] = -1;
        w->nxt[p] = w->nxt[q];
        if (w->nxt[q] >= 0) w->prv[w->nxt[q]] = p;
        bpe_heap_update(t, w, p);
        if (w->prv[p] >= 0) bpe_heap_update(t, w, w->prv[p]);
    }
    int k = 0;
    for (int i = 0; i >= 0; i = w->nxt[i]) out[k++] = w->sym[i];
    return k;
}

/* BPE of a word longer than BPE_SMALL_WORD bytes into out (room for n). Returns the id count,
 * or -1 if out of memory. */
static int bpe_merge_long(const bpe_tokenizer *t, const unsigned char *s, int n, int *out) {
    size_t ints = (size_t)n * 4;
    int *buf = malloc(ints * sizeof(int) + (size_t)n * 3 * sizeof(bpe_heap_item) + (size_t)n);
    if (!buf) return -1;
    bpe_heap_word w = {.sym = buf, .prv = buf + n, .nxt = buf + 2 * n, .prank = buf + 3 * n,
                       .heap = (bpe_heap_item *)(buf + ints)};
    for (int i = 0; i < n; i++) w.sym[i] = t->byte_id[s[i]];
    int k;
    if (t->merges_ordered) {
        k = bpe_merge_heap(t, &w, n, out);
    } else {
        unsigned char *mark = (unsigned char *)(w.heap + (size_t)n * 3);
        k = bpe_merge_scan(t, w.sym, w.prank, mark, n);
        memcpy(out, w.sym, (size_t)k * sizeof *out);
    }
    free(buf);
    return k;
}

/* BPE of the word s[0..n) (n >= 1 bytes) into out (room for n ids). Returns the id count, or -1
 * if out of memory. */
static int bpe_merge_word(const bpe_tokenizer *t, const unsigned char *s, size_t n, int *out) {
    if (n > INT_MAX / 8) return -1;
    if (n > BPE_SMALL_WORD) return bpe_merge_long(t, s, (int)n, out);
    int rank[BPE_SMALL_WORD];
    unsigned char mark[BPE_SMALL_WORD];
    for (size_t i = 0; i < n; i++) out[i] = t->byte_id[s[i]];
    return bpe_merge_scan(t, out, rank, mark, (int)n);
}

/* ======================================================================== encoding */

/* Appends k ids to o (storing only what fits in its capacity). */
static void bpe_out_put(bpe_out *o, const int *ids, long k) {
    long room = o->cap - o->n;
    if (room > 0) memcpy(o->ids + o->n, ids, (size_t)(k < room ? k : room) * sizeof *ids);
    o->n += k;
}

/* Encodes one pre-tokenized word w[0..n) (n >= 1), through the cache. Returns 0, or -1 if out of
 * memory. */
static int bpe_encode_word(bpe_tokenizer *t, const unsigned char *w, size_t n, bpe_out *o) {
    if (n == 1) {
        bpe_out_put(o, &t->byte_id[w[0]], 1);
        return 0;
    }
    if (n <= BPE_CACHE_MAX_WORD) {
        int ids[BPE_CACHE_MAX_WORD];
        uint64_t h = bpe_hash_bytes(w, n);
        const bpe_cache_slot *s = bpe_cache_slot_for(&t->cache, w, n, h);
        if (s->hash != 0) {
            bpe_out_put(o, t->cache.ids + s->ids_off, s->n_ids);
            return 0;
        }
        int k = bpe_merge_word(t, w, n, ids);
        if (k < 0) return -1;
        bpe_cache_put(&t->cache, w, n, h, ids, k);
        bpe_out_put(o, ids, k);
        return 0;
    }
    int *ids = malloc(n * sizeof *ids);
    int k = ids ? bpe_merge_word(t, w, n, ids) : -1;
    if (k >= 0) bpe_out_put(o, ids, k);
    free(ids);
    return k < 0 ? -1 : 0;
}

/* Finds the next pre-tokenizer match in s[0..len) at or after off: [*start, *end).
 * Returns 1, 0 if there is none, or -1 on a matcher error. */
static int bpe_next_match(bpe_tokenizer *t, const char *s, size_t len, size_t off, size_t *start,
                          size_t *end) {
    int rc = t->jit ? pcre2_jit_match(t->re, (PCRE2_SPTR)s, len, off, 0, t->md, NULL)
                    : pcre2_match(t->re, (PCRE2_SPTR)s, len, off, PCRE2_NO_UTF_CHECK, t->md,
                                  NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) return -1;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
    *start = ov[0];
    *end = ov[1];
    return ov[1] > ov[0] ? 1 : -1; /* the pattern cannot match empty */
}

/* Encodes valid UTF-8 s[0..len) with no special tokens. Returns 0, or -1 on a matcher error or
 * out of memory. */
static int bpe_encode_text(bpe_tokenizer *t, const char *s, size_t len, bpe_out *o) {
    const unsigned char *u = (const unsigned char *)s;
    size_t off = 0, start, end;
    while (off < len) {
        int rc = bpe_next_match(t, s, len, off, &start, &end);
        if (rc < 0) return -1;
        if (rc == 0) start = end = len; /* unreachable: every character matches */
        if (start > off && bpe_encode_word(t, u + off, start - off, o) < 0) return -1;
        if (end > start && bpe_encode_word(t, u + start, end - start, o) < 0) return -1;
        off = end;
    }
    return 0;
}

long bpe_encode(bpe_tokenizer *t, const char *text, size_t len, int allow_special, int *ids,
                long cap) {
    bpe_out o = {.ids = ids, .cap = cap < 0 ? 0 : cap, .n = 0};
    const char *p = text, *end = text + len, *hit;
    static const int eot = BPE_EOT;
    if (len == 0) return 0;
    if (!bpe_utf8_valid((const unsigned char *)text, len)) return -1;
    while (allow_special && (hit = memmem(p, (size_t)(end - p), BPE_EOT_TEXT, BPE_EOT_LEN))) {
        if (bpe_encode_text(t, p, (size_t)(hit - p), &o) < 0) return -1;
        bpe_out_put(&o, &eot, 1);
        p = hit + BPE_EOT_LEN;
    }
    if (bpe_encode_text(t, p, (size_t)(end - p), &o) < 0) return -1;
    return o.n;
}

/* ======================================================================== decoding */

const char *bpe_token_bytes(const bpe_tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) return NULL;
    *len = t->tok[id].len;
    return (const char *)t->tok_data + t->tok[id].off;
}

long bpe_decode(const bpe_tokenizer *t, const int *ids, long n, char *out, long cap) {
    long total = 0;
    for (long i = 0; i < n; i++) {
        size_t len;
        const char *b = bpe_token_bytes(t, ids[i], &len);
        if (!b) return -1;
        if (total < cap) {
            size_t room = (size_t)(cap - total);
            memcpy(out + total, b, room < len ? room : len);
        }
        total += (long)len;
    }
    return total;
}

/* ======================================================================== streaming decode */

/* Appends b[0..n) at out + *at if it fits in cap; always advances *at (a NULL out only counts). */
static void bpe_put(char *out, size_t cap, size_t *at, const void *b, size_t n) {
    if (out && *at + n <= cap) memcpy(out + *at, b, n);
    *at += n;
}

/* Feeds one byte to the decoder state: emits complete characters, U+FFFD for each maximal
 * invalid subsequence (as Python's errors="replace"), holds an unfinished character. */
static void bpe_stream_byte(bpe_stream *s, unsigned char c, char *out, size_t cap, size_t *at) {
    static const unsigned char fffd[3] = {0xEF, 0xBF, 0xBD};
    if (s->n_held > 0) {
        if (bpe_utf8_cont_ok(s->held[0], s->n_held, c)) {
            s->held[s->n_held++] = c;
            if (s->n_held == bpe_utf8_len(s->held[0])) {
                bpe_put(out, cap, at, s->held, (size_t)s->n_held);
                s->n_held = 0;
            }
            return;
        }
        bpe_put(out, cap, at, fffd, 3); /* the held prefix is invalid; c starts afresh */
        s->n_held = 0;
    }
    int need = bpe_utf8_len(c);
    if (need == 1) {
        bpe_put(out, cap, at, &c, 1);
    } else if (need == 0) {
        bpe_put(out, cap, at, fffd, 3);
    } else {
        s->held[0] = c;
        s->n_held = 1;
    }
}

/* Feeds b[0..n) to s; returns the output length (written to out only if out is non-NULL). */
static size_t bpe_stream_feed(bpe_stream *s, const unsigned char *b, size_t n, char *out,
                              size_t cap) {
    size_t at = 0;
    for (size_t i = 0; i < n; i++) bpe_stream_byte(s, b[i], out, cap, &at);
    return at;
}

void bpe_stream_init(bpe_stream *s) { memset(s, 0, sizeof *s); }

int bpe_stream_push(bpe_stream *s, const bpe_tokenizer *t, int id, char *out, size_t cap) {
    size_t len;
    const char *b = bpe_token_bytes(t, id, &len);
    if (!b) return -1;
    bpe_stream dry = *s;
    size_t need = bpe_stream_feed(&dry, (const unsigned char *)b, len, NULL, 0);
    if (need > cap || need > INT_MAX) return -1;
    return (int)bpe_stream_feed(s, (const unsigned char *)b, len, out, cap);
}

int bpe_stream_flush(bpe_stream *s, char *out, size_t cap) {
    static const unsigned char fffd[3] = {0xEF, 0xBF, 0xBD};
    if (s->n_held == 0) return 0;
    if (cap < 3) return -1;
    memcpy(out, fffd, 3);
    s->n_held = 0;
    return 3;
}
