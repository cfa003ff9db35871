/* kv.c — see kv.h. Sections: pages and lists, the hash table, sequences, the model's accessors,
 * the checker. Page layout: [layer][K | V][head][KV_PAGE][head_dim]. */
#include "kv.h"

#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

typedef struct {
    int ref;              /* sequences holding it */
    int published;        /* in the hash table (read-only) */
    uint32_t gen;         /* bumped when evicted: children naming an older generation are stale */
    uint64_t hash;        /* chained hash (published) */
    int parent;           /* page before it in its chain (-1: first page) */
    uint32_t parent_gen;
    int hnext;            /* hash bucket chain */
    int lprev, lnext;     /* LRU links (cached pages) */
    int ids[KV_PAGE];     /* its token ids (published) */
} kv_page;

typedef struct {
    int open;
    int n_pages;          /* pages in table */
    int reserve;          /* pages it may still allocate */
    int n_chained;        /* leading pages published or matched in the cache */
    uint64_t chain_hash;  /* hash after n_chained pages */
    int chain_page;       /* the cache's page for the last chained page (-1: none) */
    uint32_t chain_gen;
    int n_full;           /* whole prompt pages it will publish */
    int *table;           /* (pages_per_seq) */
    uint64_t *pending;    /* (pages_per_seq) chained hash of each whole prompt page (admission hint) */
} kv_seq;

struct kv_arena {
    kv_config cfg;
    int head_dim, pages_per_seq;
    size_t elt;           /* bytes per element (dtype) */
    size_t page_elts, bytes;
    unsigned char *base;  /* the mapping */
    kv_page *pages;       /* (n_pages) */
    int *free_stack, n_free;
    int lru_head, lru_tail, n_lru;
    int *buckets;         /* (n_buckets) hash heads, -1 */
    uint64_t bucket_mask;
    int n_reserved;
    kv_seq *seqs;         /* (max_seqs) */
    int *hits;            /* (pages_per_seq) lookup scratch */
    kv_stats stats;
};

uint64_t kv_hash_default(uint64_t prev, const int *ids, int n) {
    uint64_t h = prev ^ 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < n; i++) { /* splitmix64 steps over each id */
        h += (uint64_t)(uint32_t)ids[i] + 0x9e3779b97f4a7c15ull;
        h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
        h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
        h ^= h >> 31;
    }
    return h;
}

int kv_pages_for(int n_positions) { return (n_positions + KV_PAGE - 1) / KV_PAGE; }

const char *kv_dtype_name(kv_dtype t) { return t == KV_F16 ? "fp16" : t == KV_BF16 ? "bf16" : "fp32"; }
size_t kv_dtype_size(kv_dtype t) { return t == KV_F32 ? 4 : 2; }
int kv_dtype_parse(const char *s) {
    if (!s || !*s || !strcmp(s, "fp32")) return KV_F32;
    if (!strcmp(s, "fp16")) return KV_F16;
    if (!strcmp(s, "bf16")) return KV_BF16;
    return -1;
}

kv_arena *kv_new(const kv_config *c, char *err, size_t errlen) {
    if (c->n_layer < 1 || c->n_ctx < 1 || c->n_embd < 1 || c->n_head < 1 || c->n_embd % c->n_head ||
        c->max_seqs < 1 || c->n_pages < kv_pages_for(c->n_ctx) || c->dtype < KV_F32 || c->dtype > KV_BF16) {
        snprintf(err, errlen, "kv arena: invalid shape (layers %d, ctx %d, embd %d, heads %d, %d sequences, "
                 "%d pages: at least %d, one context)", c->n_layer, c->n_ctx, c->n_embd, c->n_head, c->max_seqs,
                 c->n_pages, kv_pages_for(c->n_ctx > 0 ? c->n_ctx : 0));
        return NULL;
    }
    kv_arena *a = calloc(1, sizeof *a);
    if (!a) goto oom;
    a->cfg = *c;
    if (!a->cfg.hash) a->cfg.hash = kv_hash_default;
    a->head_dim = c->n_embd / c->n_head;
    a->pages_per_seq = kv_pages_for(c->n_ctx);
    a->elt = kv_dtype_size(c->dtype);
    a->page_elts = (size_t)c->n_layer * 2 * KV_PAGE * c->n_embd;
    a->bytes = a->page_elts * a->elt * c->n_pages;
    size_t nb = 1;
    while (nb < (size_t)c->n_pages) nb <<= 1;
    a->bucket_mask = nb - 1;
    a->pages = calloc(c->n_pages, sizeof *a->pages);
    a->free_stack = malloc(sizeof(int) * c->n_pages);
    a->buckets = malloc(sizeof(int) * nb);
    a->seqs = calloc(c->max_seqs, sizeof *a->seqs);
    a->hits = malloc(sizeof(int) * a->pages_per_seq);
    if (!a->pages || !a->free_stack || !a->buckets || !a->seqs || !a->hits) goto oom;
    for (int s = 0; s < c->max_seqs; s++)
        if (!(a->seqs[s].table = malloc(sizeof(int) * a->pages_per_seq)) ||
            !(a->seqs[s].pending = malloc(sizeof(uint64_t) * a->pages_per_seq)))
            goto oom;
    void *m = mmap(NULL, a->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "kv arena: cannot map %zu MiB for %d pages of %d positions", a->bytes >> 20,
                 c->n_pages, KV_PAGE);
        kv_free(a);
        return NULL;
    }
    madvise(m, a->bytes, MADV_HUGEPAGE);
    a->base = m;
    for (size_t b = 0; b < nb; b++) a->buckets[b] = -1;
    for (int p = 0; p < c->n_pages; p++) {
        a->pages[p].parent = a->pages[p].hnext = a->pages[p].lprev = a->pages[p].lnext = -1;
        a->free_stack[p] = c->n_pages - 1 - p; /* page 0 handed out first */
    }
    a->n_free = c->n_pages;
    a->lru_head = a->lru_tail = -1;
    a->stats.page_bytes = a->page_elts * a->elt;
    return a;
oom:
    snprintf(err, errlen, "kv arena: out of memory");
    kv_free(a);
    return NULL;
}

kv_arena *kv_new_fixed(int n_seqs, int n_layer, int n_ctx, int n_embd, int n_head, char *err, size_t errlen) {
    kv_config c = {.n_layer = n_layer, .n_ctx = n_ctx, .n_embd = n_embd, .n_head = n_head,
                   .n_pages = n_seqs * kv_pages_for(n_ctx), .max_seqs = n_seqs};
    kv_arena *a = n_seqs >= 1 ? kv_new(&c, err, errlen) : NULL;
    if (!a && n_seqs < 1) snprintf(err, errlen, "kv arena: invalid shape (%d sequences)", n_seqs);
    for (int s = 0; a && s < n_seqs; s++) {
        int cached, zero = 0;
        if (kv_seq_open(a, &zero, 1, n_ctx, &cached) != s || kv_seq_prepare(a, s, n_ctx) != 0) abort(); /* sized for it */
    }
    return a;
}

void kv_free(kv_arena *a) {
    if (!a) return;
    if (a->base) munmap(a->base, a->bytes);
    if (a->seqs)
        for (int s = 0; s < a->cfg.max_seqs; s++) free(a->seqs[s].table), free(a->seqs[s].pending);
    free(a->seqs);
    free(a->pages);
    free(a->free_stack);
    free(a->buckets);
    free(a->hits);
    free(a);
}

size_t kv_page_bytes(const kv_arena *a) { return a->page_elts * a->elt; }
kv_dtype kv_dtype_of(const kv_arena *a) { return a->cfg.dtype; }
int kv_head_dim(const kv_arena *a) { return (int)a->head_dim; }
size_t kv_bytes(const kv_arena *a) { return a->bytes; }
int kv_ctx(const kv_arena *a) { return a->cfg.n_ctx; }
int kv_max_seqs(const kv_arena *a) { return a->cfg.max_seqs; }

void kv_get_stats(const kv_arena *a, kv_stats *s) {
    *s = a->stats;
    s->pages_total = a->cfg.n_pages;
    s->pages_free = a->n_free;
    s->pages_cached = a->n_lru;
    s->pages_used = a->cfg.n_pages - a->n_free - a->n_lru;
    s->pages_reserved = a->n_reserved;
    s->seqs_open = 0;
    for (int i = 0; i < a->cfg.max_seqs; i++) s->seqs_open += a->seqs[i].open;
}

/* ---------------------------------------------------------------------------------------------
 * The LRU list of cached pages (head: least recently used) and the hash table. */

static void lru_remove(kv_arena *a, int p) {
    kv_page *g = &a->pages[p];
    if (g->lprev >= 0) a->pages[g->lprev].lnext = g->lnext;
    else a->lru_head = g->lnext;
    if (g->lnext >= 0) a->pages[g->lnext].lprev = g->lprev;
    else a->lru_tail = g->lprev;
    g->lprev = g->lnext = -1;
    a->n_lru--;
}

static void lru_push(kv_arena *a, int p) {
    kv_page *g = &a->pages[p];
    g->lprev = a->lru_tail;
    g->lnext = -1;
    if (a->lru_tail >= 0) a->pages[a->lru_tail].lnext = p;
    else a->lru_head = p;
    a->lru_tail = p;
    a->n_lru++;
}

static void hash_insert(kv_arena *a, int p) {
    int *b = &a->buckets[a->pages[p].hash & a->bucket_mask];
    a->pages[p].hnext = *b;
    *b = p;
    a->pages[p].published = 1;
}

static void hash_remove(kv_arena *a, int p) {
    int *link = &a->buckets[a->pages[p].hash & a->bucket_mask];
    while (*link != p) link = &a->pages[*link].hnext;
    *link = a->pages[p].hnext;
    a->pages[p].hnext = -1;
    a->pages[p].published = 0;
}

/* The published page with this hash, these ids and this parent (index and generation), or -1. The
 * ids and the parent are compared, never the hash alone. */
static int hash_find(const kv_arena *a, uint64_t h, const int *ids, int parent, uint32_t parent_gen) {
    for (int p = a->buckets[h & a->bucket_mask]; p >= 0; p = a->pages[p].hnext) {
        const kv_page *g = &a->pages[p];
        if (g->hash == h && g->parent == parent && (parent < 0 || g->parent_gen == parent_gen) &&
            memcmp(g->ids, ids, sizeof g->ids) == 0)
            return p;
    }
    return -1;
}

/* A page for a reservation: a free one, else the least recently used cached one (evicted). */
static int take_page(kv_arena *a) {
    if (a->n_free > 0) return a->free_stack[--a->n_free];
    int p = a->lru_head;
    lru_remove(a, p);
    hash_remove(a, p);
    a->pages[p].gen++;
    a->pages[p].parent = -1;
    a->stats.evictions++;
    return p;
}

static void drop_ref(kv_arena *a, int p) {
    if (--a->pages[p].ref > 0) return;
    if (a->pages[p].published) lru_push(a, p);
    else a->free_stack[a->n_free++] = p;
}

/* ---------------------------------------------------------------------------------------------
 * Sequences. */

/* Fills a->hits with the longest cached chain of whole pages of ids (at most max_pages); returns
 * its length and the chain state after it. */
static int lookup(kv_arena *a, const int *ids, int max_pages, uint64_t *h_out) {
    uint64_t h = 0;
    int parent = -1, n = 0;
    uint32_t pgen = 0;
    while (n < max_pages) {
        uint64_t h2 = a->cfg.hash(h, ids + (size_t)n * KV_PAGE, KV_PAGE);
        int p = hash_find(a, h2, ids + (size_t)n * KV_PAGE, parent, pgen);
        if (p < 0) break;
        a->hits[n++] = p;
        h = h2, parent = p, pgen = a->pages[p].gen;
    }
    *h_out = h;
    return n;
}

int kv_seq_open(kv_arena *a, const int *ids, int n_prompt, int n_reserve, int *n_cached) {
    *n_cached = 0;
    int seq = 0;
    while (seq < a->cfg.max_seqs && a->seqs[seq].open) seq++;
    if (seq == a->cfg.max_seqs) return KV_E_NO_SEQ;
    if (n_reserve > a->cfg.n_ctx) n_reserve = a->cfg.n_ctx;
    if (n_reserve < n_prompt) n_reserve = n_prompt;
    uint64_t h = 0;
    int n_hits = a->cfg.prefix_cache ? lookup(a, ids, (n_prompt - 1) / KV_PAGE, &h) : 0;
    int in_lru = 0;
    for (int i = 0; i < n_hits; i++) in_lru += a->pages[a->hits[i]].ref == 0;
    int need = kv_pages_for(n_reserve) - n_hits;
    if (a->n_free + a->n_lru - in_lru - a->n_reserved < need) return KV_E_NO_PAGES;
    kv_seq *s = &a->seqs[seq];
    for (int i = 0; i < n_hits; i++) {
        int p = a->hits[i];
        if (a->pages[p].ref++ == 0) lru_remove(a, p);
        s->table[i] = p;
    }
    s->open = 1;
    s->n_pages = s->n_chained = n_hits;
    s->reserve = need;
    s->chain_hash = h;
    s->chain_page = n_hits ? a->hits[n_hits - 1] : -1;
    s->chain_gen = n_hits ? a->pages[s->chain_page].gen : 0;
    s->n_full = a->cfg.prefix_cache ? n_prompt / KV_PAGE : 0;
    for (int i = n_hits; i < s->n_full; i++) s->pending[i] = h = a->cfg.hash(h, ids + (size_t)i * KV_PAGE, KV_PAGE);
    a->n_reserved += need;
    a->stats.lookup_tokens += (uint64_t)n_prompt;
    a->stats.hit_tokens += (uint64_t)n_hits * KV_PAGE;
    *n_cached = n_hits * KV_PAGE;
    return seq;
}

int kv_prefix_pending(kv_arena *a, const int *ids, int n_prompt) {
    int max_pages = (n_prompt - 1) / KV_PAGE;
    if (!a->cfg.prefix_cache || max_pages < 1) return 0;
    uint64_t h;
    int n = lookup(a, ids, max_pages, &h);
    if (n == max_pages) return 0;
    uint64_t next = a->cfg.hash(h, ids + (size_t)n * KV_PAGE, KV_PAGE);
    for (int s = 0; s < a->cfg.max_seqs; s++) {
        const kv_seq *q = &a->seqs[s];
        if (q->open && n >= q->n_chained && n < q->n_full && q->pending[n] == next) return 1;
    }
    return 0;
}

int kv_seq_close(kv_arena *a, int seq) {
    if (seq < 0 || seq >= a->cfg.max_seqs || !a->seqs[seq].open) return -1;
    kv_seq *s = &a->seqs[seq];
    /* last page first: a prefix's first pages become the most recently used, so a chain is
     * evicted from its end and its head stays reachable longest */
    for (int i = s->n_pages - 1; i >= 0; i--) drop_ref(a, s->table[i]);
    a->n_reserved -= s->reserve;
    memset(s->table, 0xff, sizeof(int) * a->pages_per_seq);
    int *table = s->table;
    uint64_t *pending = s->pending;
    memset(s, 0, sizeof *s);
    s->table = table;
    s->pending = pending;
    return 0;
}

int kv_seq_prepare(kv_arena *a, int seq, int n) {
    kv_seq *s = &a->seqs[seq];
    int need = kv_pages_for(n);
    if (need - s->n_pages > s->reserve || need > a->pages_per_seq) return -1;
    while (s->n_pages < need) {
        int p = take_page(a);
        a->pages[p].ref = 1;
        s->table[s->n_pages++] = p;
        s->reserve--;
        a->n_reserved--;
    }
    return 0;
}

void kv_seq_publish(kv_arena *a, int seq, const int *ids, int n_done) {
    kv_seq *s = &a->seqs[seq];
    int full = n_done / KV_PAGE;
    if (full > s->n_pages) full = s->n_pages;
    while (a->cfg.prefix_cache && s->n_chained < full) {
        int i = s->n_chained, p = s->table[i];
        const int *pid = ids + (size_t)i * KV_PAGE;
        uint64_t h = a->cfg.hash(s->chain_hash, pid, KV_PAGE);
        int canon = hash_find(a, h, pid, s->chain_page, s->chain_gen);
        if (canon < 0) { /* new to the cache: ours becomes the shared copy */
            kv_page *g = &a->pages[p];
            g->hash = h;
            g->parent = s->chain_page;
            g->parent_gen = s->chain_gen;
            memcpy(g->ids, pid, sizeof g->ids);
            hash_insert(a, p);
            canon = p;
        } /* else an equal page was published meanwhile: ours stays private, the chain goes on there */
        s->chain_hash = h;
        s->chain_page = canon;
        s->chain_gen = a->pages[canon].gen;
        s->n_chained++;
    }
}

int kv_seq_has(const kv_arena *a, int seq, int pos) {
    return seq >= 0 && seq < a->cfg.max_seqs && a->seqs[seq].open && pos >= 0 && pos < a->cfg.n_ctx &&
           pos / KV_PAGE < a->seqs[seq].n_pages;
}

int kv_seq_pages(const kv_arena *a, int seq) {
    return seq >= 0 && seq < a->cfg.max_seqs && a->seqs[seq].open ? a->seqs[seq].n_pages : 0;
}

/* ---------------------------------------------------------------------------------------------
 * The model's accessors. */

/* Element offset of (layer, K) within a page; V follows KV_PAGE * n_embd elements later. */
static unsigned char *page_layer(const kv_arena *a, int page, int layer) {
    return a->base + ((size_t)page * a->page_elts + (size_t)layer * 2 * KV_PAGE * a->cfg.n_embd) * a->elt;
}

static uint16_t to_bf16(float x) { /* round to nearest even (K and V are finite) */
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* n floats to dtype t at dst. */
static void narrow(kv_dtype t, const float *src, void *dst, size_t n) {
    if (t == KV_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    uint16_t *d = dst;
    size_t i = 0;
    if (t == KV_F16) {
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
        for (; i < n; i++) d[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
    } else { /* to_bf16 on 8 lanes: the same integer steps */
        const __m256i round = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
        for (; i + 8 <= n; i += 8) {
            __m256i u = _mm256_castps_si256(_mm256_loadu_ps(src + i));
            __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
            __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, round), odd), 16);
            _mm_storeu_si128((__m128i *)(d + i), _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
        }
        for (; i < n; i++) d[i] = to_bf16(src[i]);
    }
}

void kv_widen(kv_dtype t, const void *src, size_t stride, int n, int hd, float *out) {
    for (int r = 0; r < n; r++) {
        float *o = out + (size_t)r * hd;
        if (t == KV_F32) {
            memcpy(o, (const float *)src + r * stride, sizeof(float) * hd);
            continue;
        }
        const uint16_t *s = (const uint16_t *)src + r * stride;
        int i = 0;
        if (t == KV_F16) {
            for (; i + 8 <= hd; i += 8) _mm256_storeu_ps(o + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
            for (; i < hd; i++) o[i] = _cvtsh_ss(s[i]);
        } else {
            for (; i + 8 <= hd; i += 8) {
                __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
                _mm256_storeu_ps(o + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
            }
            for (; i < hd; i++) {
                uint32_t u = (uint32_t)s[i] << 16;
                memcpy(o + i, &u, 4);
            }
        }
    }
}

void kv_store(kv_arena *a, int seq, int layer, int pos, const float *k, const float *v) {
    int p = a->seqs[seq].table[pos / KV_PAGE];
    if (a->pages[p].published || a->pages[p].ref != 1) abort(); /* a write to a shared page: a bug */
    unsigned char *K = page_layer(a, p, layer), *V = K + (size_t)KV_PAGE * a->cfg.n_embd * a->elt;
    size_t hd = a->head_dim, off = (size_t)(pos % KV_PAGE) * hd;
    for (int h = 0; h < a->cfg.n_head; h++) {
        narrow(a->cfg.dtype, k + h * hd, K + (h * KV_PAGE * hd + off) * a->elt, hd);
        narrow(a->cfg.dtype, v + h * hd, V + (h * KV_PAGE * hd + off) * a->elt, hd);
    }
}

int kv_run(const kv_arena *a, int seq, int layer, int head, int pos, int n_max, const void **k,
           const void **v, size_t *stride) {
    int p = a->seqs[seq].table[pos / KV_PAGE], in = pos % KV_PAGE;
    const unsigned char *K = page_layer(a, p, layer);
    size_t hd = a->head_dim, off = (size_t)head * KV_PAGE * hd + (size_t)in * hd;
    *k = K + off * a->elt;
    *v = K + ((size_t)KV_PAGE * a->cfg.n_embd + off) * a->elt;
    *stride = hd;
    int n = KV_PAGE - in;
    return n < n_max ? n : n_max;
}

/* ---------------------------------------------------------------------------------------------
 * The checker (tests; allocates its own scratch). */

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); goto out; } while (0)

int kv_check(const kv_arena *a, char *err, size_t errlen) {
    int P = a->cfg.n_pages, rc = -1;
    int *refs = calloc(P, sizeof(int)), *seen = calloc(P, sizeof(int));
    if (!refs || !seen) FAIL("kv_check: out of memory");
    int reserved = 0;
    for (int s = 0; s < a->cfg.max_seqs; s++) {
        const kv_seq *q = &a->seqs[s];
        if (!q->open) {
            if (q->n_pages || q->reserve) FAIL("closed sequence %d holds pages", s);
            continue;
        }
        if (q->n_pages + q->reserve > a->pages_per_seq || q->reserve < 0 || q->n_chained > q->n_pages)
            FAIL("sequence %d: %d pages + %d reserved exceed a context", s, q->n_pages, q->reserve);
        reserved += q->reserve;
        for (int i = 0; i < q->n_pages; i++) {
            int p = q->table[i];
            if (p < 0 || p >= P) FAIL("sequence %d page %d: bad index %d", s, i, p);
            refs[p]++;
            if (i >= q->n_chained && a->pages[p].published) FAIL("sequence %d writes published page %d", s, p);
        }
    }
    if (reserved != a->n_reserved) FAIL("reservations: sequences hold %d, arena counts %d", reserved, a->n_reserved);
    int used = 0, published = 0;
    for (int p = 0; p < P; p++) {
        if (refs[p] != a->pages[p].ref) FAIL("page %d: refcount %d, held by %d sequences", p, a->pages[p].ref, refs[p]);
        used += refs[p] > 0;
        published += a->pages[p].published;
        if (refs[p] > 1 && !a->pages[p].published) FAIL("page %d shared by %d but not read-only", p, refs[p]);
    }
    for (int i = 0; i < a->n_free; i++) {
        int p = a->free_stack[i];
        if (seen[p]++) FAIL("page %d twice on the free list (double free)", p);
        if (a->pages[p].ref || a->pages[p].published) FAIL("free page %d is in use or published", p);
    }
    int n_lru = 0;
    for (int p = a->lru_head, prev = -1; p >= 0; prev = p, p = a->pages[p].lnext) {
        if (seen[p]++) FAIL("page %d on two lists", p);
        if (a->pages[p].ref || !a->pages[p].published) FAIL("cached page %d is in use or unpublished", p);
        if (a->pages[p].lprev != prev) FAIL("LRU links broken at page %d", p);
        if (++n_lru > P) FAIL("LRU list loops");
    }
    if (n_lru != a->n_lru) FAIL("LRU holds %d pages, arena counts %d", n_lru, a->n_lru);
    if (a->n_free + n_lru + used != P)
        FAIL("pages leak: free %d + cached %d + used %d != %d", a->n_free, n_lru, used, P);
    if (a->n_reserved > a->n_free + n_lru) FAIL("%d pages reserved, only %d free or evictable", a->n_reserved, a->n_free + n_lru);
    int hashed = 0;
    for (uint64_t b = 0; b <= a->bucket_mask; b++)
        for (int p = a->buckets[b]; p >= 0; p = a->pages[p].hnext) {
            if (!a->pages[p].published || (a->pages[p].hash & a->bucket_mask) != b) FAIL("page %d in the wrong bucket", p);
            if (++hashed > P) FAIL("hash chain loops");
        }
    if (hashed != published) FAIL("%d pages published, %d in the hash table", published, hashed);
    rc = 0;
out:
    free(refs);
    free(seen);
    return rc;
}
