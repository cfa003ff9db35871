/* test_kv.c — the paged KV cache (kv.h), checked against its own rules with kv_check after every
 * operation:
 *  - storage: what kv_store writes is what kv_run reads back for every (sequence, layer, head,
 *    position), sequences do not overlap, runs never cross a page;
 *  - page accounting under thousands of random open / grow / publish / close operations: no leak,
 *    no double free, and the free + cached count returns to the total;
 *  - the prefix cache: the longest cached prefix of whole pages, never the last prompt token, a
 *    partial page never shared, shared pages read back the first writer's K/V;
 *  - admission: a sequence that cannot reserve its pages is refused with nothing changed;
 *  - eviction under pressure: least recently used first, from a chain's end, evicted pages no longer
 *    match;
 *  - hash collisions: with a degenerate hash (every page hashes the same) lookups still match only
 *    the exact token prefix, so no sequence ever reads another prefix's K/V. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kv.h"

enum { L = 2, C = 16, H = 4, HD = C / H, T = 128 };

/* The value of K (kind 0) or V (kind 1) element e written by "writer" w at (layer, pos). */
static float val(int kind, int w, int layer, int pos, int e) {
    return (float)(((kind * 7 + w) * 13 + layer) * 1000 + pos) + (float)e / 1024.0f;
}

static void store_range(kv_arena *a, int seq, int writer, int from, int to) {
    float k[C], v[C];
    for (int l = 0; l < L; l++)
        for (int p = from; p < to; p++) {
            for (int e = 0; e < C; e++) k[e] = val(0, writer, l, p, e), v[e] = val(1, writer, l, p, e);
            kv_store(a, seq, l, p, k, v);
        }
}

/* 1 if seq reads back writer's values for positions [from, to), in runs within pages. */
static int reads_back(const kv_arena *a, int seq, int writer, int from, int to) {
    int ok = 1;
    for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++)
            for (int p = from; p < to;) {
                const void *kp, *vp;
                size_t stride;
                int n = kv_run(a, seq, l, h, p, to - p, &kp, &vp, &stride);
                const float *kr = kp, *vr = vp; /* fp32 arenas */
                ok &= n >= 1 && n <= to - p && (p % KV_PAGE) + n <= KV_PAGE;
                for (int i = 0; i < n; i++)
                    for (int d = 0; d < HD; d++) {
                        ok &= kr[i * stride + d] == val(0, writer, l, p + i, h * HD + d);
                        ok &= vr[i * stride + d] == val(1, writer, l, p + i, h * HD + d);
                    }
                p += n > 0 ? n : 1;
            }
    return ok;
}

static kv_arena *arena(int n_pages, int max_seqs, int cache, kv_hash_fn hash) {
    kv_config c = {.n_layer = L, .n_ctx = T, .n_embd = C, .n_head = H, .n_pages = n_pages, .max_seqs = max_seqs,
                   .prefix_cache = cache, .hash = hash};
    char err[256];
    kv_arena *a = kv_new(&c, err, sizeof err);
    if (!a) printf("kv_new: %s\n", err);
    return a;
}

static int checked(const kv_arena *a, const char *what) {
    char err[256];
    if (kv_check(a, err, sizeof err) == 0) return 1;
    printf("kv_check after %s: %s\n", what, err);
    return 0;
}

static uint64_t degenerate_hash(uint64_t prev, const int *ids, int n) {
    (void)prev, (void)ids, (void)n;
    return 42;
}

static void test_shape(void) {
    char err[256];
    kv_config c = {.n_layer = L, .n_ctx = T, .n_embd = C, .n_head = H, .n_pages = T / KV_PAGE - 1, .max_seqs = 2};
    check(kv_new(&c, err, sizeof err) == NULL && strstr(err, "one context"), "fewer pages than one context refused: %s", err);
    c.n_pages = 64, c.n_embd = 18;
    check(kv_new(&c, err, sizeof err) == NULL, "n_embd not a multiple of n_head refused");
    kv_arena *a = arena(64, 3, 1, NULL);
    check(a && kv_page_bytes(a) == (size_t)L * 2 * KV_PAGE * C * sizeof(float) && kv_bytes(a) == 64 * kv_page_bytes(a),
          "page and arena size");
    kv_free(a);
    kv_free(NULL);
}

/* Three sequences written with distinct values read back their own, page runs included. */
static void test_storage(void) {
    kv_arena *a = arena(3 * T / KV_PAGE, 3, 0, NULL);
    if (!a) return;
    int ids[T] = {0}, cached, ok = 1;
    for (int s = 0; s < 3; s++) {
        ok &= kv_seq_open(a, ids, 5, T, &cached) == s && cached == 0;
        ok &= kv_seq_prepare(a, s, T) == 0;
    }
    check(ok && kv_seq_open(a, ids, 5, 5, &cached) == KV_E_NO_SEQ, "three sequences open, a fourth has no handle");
    for (int s = 0; s < 3; s++) store_range(a, s, s, 0, T);
    check(reads_back(a, 0, 0, 0, T) && reads_back(a, 1, 1, 0, T) && reads_back(a, 2, 2, 0, T) &&
              reads_back(a, 1, 1, 7, 45),
          "every (sequence, layer, head, position) reads back what was stored, in runs within pages");
    check(kv_seq_prepare(a, 0, T + 1) == -1, "positions beyond the context are refused");
    check(kv_seq_has(a, 0, T - 1) && !kv_seq_has(a, 0, T) && !kv_seq_has(a, 5, 0), "kv_seq_has bounds");
    check(checked(a, "storage"), "arena consistent");
    kv_free(a);
}

/* Random open / grow+write / publish / close over prompts drawn from a few shared prefixes. */
static void test_random_accounting(void) {
    kv_arena *a = arena(18, 6, 1, NULL);
    if (!a) return;
    enum { NS = 6 };
    int open[NS] = {0}, seq_of[NS], n_prompt[NS], reach[NS], written[NS], ids[NS][T];
    for (int i = 0; i < NS; i++) seq_of[i] = -1;
    unsigned rng = 12345;
#define RND(n) ((int)((rng = rng * 1103515245u + 12345u) >> 8) % (n))
    int ok = 1, ops = 0, refused = 0, hits = 0, readback = 1;
    for (int it = 0; it < 4000 && ok; it++) {
        int i = RND(NS);
        if (!open[i]) {
            int fam = RND(3), np = 1 + RND(T - 1);
            for (int p = 0; p < T; p++) ids[i][p] = p < 40 ? fam * 1000 + p : RND(50);
            int r = np + RND(T - np + 1);
            int cached, s = kv_seq_open(a, ids[i], np, r, &cached);
            ok &= checked(a, "open");
            if (s < 0) {
                refused++;
                continue;
            }
            ok &= cached % KV_PAGE == 0 && cached <= np - 1;
            /* cached pages hold what the family's writer stored (the writer id is the family) */
            if (cached) readback &= reads_back(a, s, fam, 0, cached);
            hits += cached > 0;
            open[i] = 1, seq_of[i] = s, n_prompt[i] = np, reach[i] = r, written[i] = cached;
        } else if (RND(4) == 0 || written[i] == reach[i]) {
            kv_seq_close(a, seq_of[i]);
            ok &= checked(a, "close");
            open[i] = 0;
        } else {
            int to = written[i] + 1 + RND(reach[i] - written[i]);
            ok &= kv_seq_prepare(a, seq_of[i], to) == 0;
            ok &= checked(a, "prepare");
            /* values depend on the family only within the shared 40 ids, which is all a page in the
             * cache can hold for a given chain (ids beyond differ, so their pages are not shared) */
            int fam = ids[i][0] / 1000;
            store_range(a, seq_of[i], fam, written[i], to);
            written[i] = to;
            int done = to < n_prompt[i] ? to : n_prompt[i];
            if (done <= 32) kv_seq_publish(a, seq_of[i], ids[i], done);
            ok &= checked(a, "publish");
        }
        ops++;
    }
#undef RND
    for (int i = 0; i < NS; i++)
        if (open[i]) kv_seq_close(a, seq_of[i]);
    kv_stats st;
    kv_get_stats(a, &st);
    printf("random: %d operations, %d refused for pages, %d opened with a hit, %llu evictions; end: %d free + %d "
           "cached of %d\n", ops, refused, hits, (unsigned long long)st.evictions, st.pages_free, st.pages_cached,
           st.pages_total);
    check(ok, "kv_check holds after every operation (no leak, no double free, refcounts match)");
    check(readback, "every shared page reads back its family's K/V");
    check(hits > 20 && refused > 0 && st.evictions > 0, "the run really shared (%d), waited (%d) and evicted (%llu)",
          hits, refused, (unsigned long long)st.evictions);
    check(st.pages_used == 0 && st.pages_reserved == 0 && st.pages_free + st.pages_cached == st.pages_total,
          "all closed: free + cached = total (%d + %d = %d), nothing reserved", st.pages_free, st.pages_cached,
          st.pages_total);
    kv_free(a);
}

/* Writes a whole prompt for seq as writer w and publishes it. */
static void fill(kv_arena *a, int seq, int w, const int *ids, int n_prompt) {
    kv_seq_prepare(a, seq, n_prompt);
    store_range(a, seq, w, 0, n_prompt);
    kv_seq_publish(a, seq, ids, n_prompt);
}

static void test_prefix(kv_hash_fn hash, const char *label) {
    kv_arena *a = arena(T / KV_PAGE * 4, 4, 1, hash);
    if (!a) return;
    int A[T], B[T], X[T], cached;
    for (int p = 0; p < T; p++) A[p] = 100 + p, B[p] = p < 40 ? 100 + p : 900 + p, X[p] = 5000 + p;
    int sa = kv_seq_open(a, A, 64, 70, &cached);
    check(sa >= 0 && cached == 0, "%s: a cold prompt has no hit", label);
    fill(a, sa, 1, A, 64);
    check(checked(a, "fill"), "%s: consistent after publishing 4 pages", label);
    /* the same 64-token prompt: 3 pages, leaving the last token (and its page) to compute */
    int s2 = kv_seq_open(a, A, 64, 64, &cached);
    check(s2 >= 0 && cached == 48 && reads_back(a, s2, 1, 0, 48), "%s: same prompt reuses 48 of 64 (got %d)", label,
          cached);
    kv_seq_close(a, s2);
    int s3 = kv_seq_open(a, A, 65, 80, &cached);
    check(s3 >= 0 && cached == 64 && reads_back(a, s3, 1, 0, 64), "%s: a longer prompt reuses all 64 (got %d)",
          label, cached);
    kv_seq_close(a, s3);
    /* B shares 40 tokens with A: 2 whole pages */
    int sb = kv_seq_open(a, B, 100, 100, &cached);
    check(sb >= 0 && cached == 32 && reads_back(a, sb, 1, 0, 32), "%s: shared 40 tokens -> 32 cached (got %d)",
          label, cached);
    check(checked(a, "open B"), "%s: consistent with B sharing", label);
    kv_seq_prepare(a, sb, 100);
    store_range(a, sb, 2, 32, 100);
    kv_seq_publish(a, sb, B, 100);
    check(reads_back(a, sb, 1, 0, 32) && reads_back(a, sb, 2, 32, 100), "%s: B's own pages after the shared ones", label);
    /* an unrelated prompt: nothing, even though with a degenerate hash every page collides */
    int sx = kv_seq_open(a, X, 50, 50, &cached);
    check(sx >= 0 && cached == 0, "%s: unrelated prompt gets no hit (got %d)", label, cached);
    /* a prompt whose SECOND page equals A's second page but whose first differs: no hit, the chain
     * (parent) must match, not only the page's own ids */
    int Y[T];
    memcpy(Y, A, sizeof Y);
    Y[3] = 7;
    int sy = kv_seq_open(a, Y, 64, 64, &cached);
    check(sy >= 0 && cached == 0, "%s: same page ids after a different first page: no hit (got %d)", label, cached);
    kv_seq_close(a, sx), kv_seq_close(a, sy);
    /* B's third page is cached now under B's chain; a prompt with A's first 2 pages and B's third */
    int sb2 = kv_seq_open(a, B, 60, 60, &cached);
    check(sb2 >= 0 && cached == 48 && reads_back(a, sb2, 1, 0, 32) && reads_back(a, sb2, 2, 32, 48),
          "%s: B again: 48 cached, A's two pages then B's (got %d)", label, cached);
    kv_seq_close(a, sb2), kv_seq_close(a, sb), kv_seq_close(a, sa);
    check(checked(a, "closes"), "%s: consistent after closing", label);
    kv_free(a);
}

/* Admission and eviction with exactly one context of pages plus 2. */
static void test_pressure(void) {
    int P = T / KV_PAGE + 2;
    kv_arena *a = arena(P, 4, 1, NULL);
    if (!a) return;
    int A[T], B[T], cached;
    for (int p = 0; p < T; p++) A[p] = 10 + p, B[p] = 3000 + p;
    int sa = kv_seq_open(a, A, 64, 64, &cached); /* 4 pages */
    fill(a, sa, 1, A, 64);
    kv_stats before, after;
    kv_get_stats(a, &before);
    int sb = kv_seq_open(a, B, 64, T, &cached); /* needs 8, only 6 free */
    kv_get_stats(a, &after);
    check(sb == KV_E_NO_PAGES && memcmp(&before, &after, sizeof before) == 0 && checked(a, "refused"),
          "a sequence that cannot reserve its pages is refused, nothing changed");
    kv_seq_close(a, sa);
    kv_get_stats(a, &after);
    check(after.pages_cached == 4 && after.pages_free == P - 4, "closed: its 4 published pages stay cached (%d)",
          after.pages_cached);
    sb = kv_seq_open(a, B, 64, T, &cached); /* 6 free + 4 evictable >= 8 */
    check(sb >= 0 && cached == 0 && checked(a, "open under pressure"), "admitted by counting evictable pages");
    kv_seq_prepare(a, sb, 7 * KV_PAGE); /* 6 free pages, then 1 eviction */
    kv_get_stats(a, &after);
    check(after.evictions == 1 && after.pages_cached == 3 && checked(a, "evict"), "one eviction (%llu), 3 still cached",
          (unsigned long long)after.evictions);
    /* the chain's end went first: A still hits its first 3 pages (48 tokens) */
    int sa2 = kv_seq_open(a, A, 64, 64, &cached);
    check(sa2 == KV_E_NO_PAGES, "A cannot be admitted while B holds its reservation");
    kv_seq_prepare(a, sb, T);
    store_range(a, sb, 2, 0, T);
    kv_seq_close(a, sb);
    sa2 = kv_seq_open(a, A, 64, 64, &cached);
    check(sa2 >= 0 && cached == 32 && reads_back(a, sa2, 1, 0, 32),
          "B's growth evicted A's last two pages; A keeps 32 (got %d)", cached);
    check(checked(a, "end"), "consistent at the end");
    kv_seq_close(a, sa2);
    kv_free(a);
    /* LRU order: the chain evicted from its end */
    a = arena(P, 4, 1, NULL);
    sa = kv_seq_open(a, A, 64, 64, &cached);
    fill(a, sa, 1, A, 64);
    kv_seq_close(a, sa);
    sb = kv_seq_open(a, B, 64, T, &cached);
    kv_seq_prepare(a, sb, 7 * KV_PAGE); /* 1 eviction */
    kv_seq_close(a, sb);
    sa = kv_seq_open(a, A, 64, 64, &cached);
    check(sa >= 0 && cached == 48 && reads_back(a, sa, 1, 0, 48), "eviction took A's last page, A keeps 48 (got %d)",
          cached);
    kv_free(a);
}

/* fp16 / bf16 arenas: stored values come back rounded to nearest even, exactly representable ones
 * unchanged; a page then holds half the bytes. */
static void test_dtypes(void) {
    static const struct {
        kv_dtype t;
        float tie, want; /* a value halfway between two neighbours, and its even neighbour */
    } cases[2] = {{KV_F16, 1.0f + 1.5f / 1024, 1.0f + 2.0f / 1024}, {KV_BF16, 1.0f + 1.5f / 128, 1.0f + 2.0f / 128}};
    for (int c = 0; c < 2; c++) {
        kv_config cfg = {.n_layer = L, .n_ctx = T, .n_embd = C, .n_head = H, .n_pages = T / KV_PAGE, .max_seqs = 1,
                         .dtype = cases[c].t};
        char err[256];
        kv_arena *a = kv_new(&cfg, err, sizeof err);
        int ids[1] = {0}, cached;
        if (!a || kv_seq_open(a, ids, 1, T, &cached) != 0 || kv_seq_prepare(a, 0, T) != 0) {
            check(0, "%s arena: %s", kv_dtype_name(cases[c].t), a ? "open failed" : err);
            kv_free(a);
            continue;
        }
        float k[C], v[C], got[KV_PAGE * HD];
        for (int e = 0; e < C; e++) k[e] = (float)(e - 8) * 0.5f, v[e] = e == 3 ? cases[c].tie : (float)e * 0.25f;
        kv_store(a, 0, 1, 21, k, v);
        const void *kp, *vp;
        size_t stride;
        int ok = 1;
        for (int h = 0; h < H; h++) {
            int n = kv_run(a, 0, 1, h, 21, 1, &kp, &vp, &stride);
            kv_widen(cases[c].t, kp, stride, n, HD, got);
            for (int d = 0; d < HD; d++) ok &= got[d] == k[h * HD + d];
            kv_widen(cases[c].t, vp, stride, n, HD, got);
            for (int d = 0; d < HD; d++) ok &= got[d] == (h * HD + d == 3 ? cases[c].want : v[h * HD + d]);
        }
        check(ok && kv_page_bytes(a) == (size_t)L * 2 * KV_PAGE * C * 2,
              "%s: representable values exact, a tie rounds to even, 2 bytes per element", kv_dtype_name(cases[c].t));
        kv_free(a);
    }
    check(kv_dtype_parse("fp16") == KV_F16 && kv_dtype_parse("bf16") == KV_BF16 && kv_dtype_parse(NULL) == KV_F32 &&
              kv_dtype_parse("fp8") == -1,
          "dtype names");
}

/* bf16 rounding of whole head rows (the vector path) and of a head's tail, against nearest-even
 * decided here in double: random finite floats of every magnitude, exact ties both ways, zeros,
 * subnormals. */
static float bf16_nearest_even(float f) {
    uint32_t u, lo_u, hi_u;
    memcpy(&u, &f, 4);
    lo_u = u & 0xffff0000u, hi_u = lo_u + 0x10000u;
    float lo, hi;
    memcpy(&lo, &lo_u, 4);
    memcpy(&hi, &hi_u, 4);
    double dlo = fabs((double)f - lo), dhi = fabs((double)hi - f);
    return dlo < dhi ? lo : dhi < dlo ? hi : ((lo_u >> 16) & 1) ? hi : lo;
}

static void test_bf16_rows(void) {
    enum { BC = 76, BH = 2, BHD = BC / BH }; /* 38 per head: 4 vectors of 8 and a tail of 6 */
    kv_config cfg = {.n_layer = 1, .n_ctx = KV_PAGE, .n_embd = BC, .n_head = BH, .n_pages = 1, .max_seqs = 1,
                     .dtype = KV_BF16};
    char err[256];
    kv_arena *a = kv_new(&cfg, err, sizeof err);
    int ids[1] = {0}, cached;
    if (!a || kv_seq_open(a, ids, 1, KV_PAGE, &cached) != 0 || kv_seq_prepare(a, 0, KV_PAGE) != 0) {
        check(0, "bf16 arena: %s", a ? "open failed" : err);
        kv_free(a);
        return;
    }
    unsigned seed = 7;
    int bad = 0, n = 0;
    float k[BC], v[BC], got[BHD];
    for (int round = 0; round < 2000; round++) {
        int pos = round % KV_PAGE;
        for (int e = 0; e < BC; e++) {
            seed = seed * 1103515245u + 12345u;
            uint32_t bits = seed ^ (seed << 13), kind = (seed >> 28) & 7;
            if (kind == 0) bits = (bits & 0x807f0000u) | 0x3f808000u;  /* a tie between two neighbours */
            if (kind == 1) bits &= 0x807fffffu;                         /* zero or subnormal */
            if (kind >= 2) bits = (bits & 0x8fffffffu) | 0x30000000u;    /* |x| in [2^-31, 2^32) */
            memcpy(&k[e], &bits, 4);
            v[e] = -k[e];
        }
        kv_store(a, 0, 0, pos, k, v);
        for (int h = 0; h < BH; h++) {
            const void *kp, *vp;
            size_t stride;
            kv_run(a, 0, 0, h, pos, 1, &kp, &vp, &stride);
            kv_widen(KV_BF16, kp, stride, 1, BHD, got);
            for (int d = 0; d < BHD; d++, n++) bad += got[d] != bf16_nearest_even(k[h * BHD + d]);
            kv_widen(KV_BF16, vp, stride, 1, BHD, got);
            for (int d = 0; d < BHD; d++, n++) bad += got[d] != bf16_nearest_even(v[h * BHD + d]);
        }
    }
    check(bad == 0, "bf16 rows: %d of %d stored values rounded to nearest even", n - bad, n);
    kv_free(a);
}

int main(void) {
    test_shape();
    test_storage();
    test_random_accounting();
    test_prefix(NULL, "default hash");
    test_prefix(degenerate_hash, "degenerate hash");
    test_pressure();
    test_dtypes();
    test_bf16_rows();
    return check_done("test_kv");
}
