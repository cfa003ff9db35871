/* sampler.c — logits row -> next token (contract in sampler.h).
 *
 * Reads top to bottom: parameters, the counter-based RNG, scratch layout, logit edits (bias and
 * penalties), greedy, candidate ordering and sorting, the three candidate paths (small top-k heap,
 * sort-everything, log-probability buckets), the shared tail (top-p, min-p, draw) and the entry.
 *
 * The candidate order is "scaled logit z = logit / temperature descending, ties by lower id". Since
 * exp is monotone this is also descending probability. Every filter keeps a prefix of that order,
 * so the fast paths only sort the prefix they need and check, in the shared tail, that the answer
 * lies inside it (else they widen the prefix): the result never depends on which path ran. */
#include "sampler.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- parameters */

void sampler_params_default(sampler_params *p) {
    memset(p, 0, sizeof(*p));
    p->temperature = 0.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->seed = 0;
    p->n_bias = 0;
}

/* Writes a message into err (if any); returns -1 for the caller to pass on. */
__attribute__((format(printf, 3, 4))) static int sampler_fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* The bias table: count in range, ids in [0, V), values not NaN. 0 or -1 with a message. */
static int sampler_validate_bias(const sampler_params *p, int n_vocab, char *err, size_t errlen) {
    if (p->n_bias < 0 || p->n_bias > SAMPLER_MAX_BIAS)
        return sampler_fail(err, errlen, "logit_bias must have 0 to %d entries (n_bias), got %d",
                            SAMPLER_MAX_BIAS, p->n_bias);
    for (int k = 0; k < p->n_bias; k++) {
        if (p->bias_id[k] < 0 || p->bias_id[k] >= n_vocab)
            return sampler_fail(err, errlen, "logit_bias token id must be in [0, %d), got %d",
                                n_vocab, p->bias_id[k]);
        if (isnan(p->bias[k]))
            return sampler_fail(err, errlen, "logit_bias value for token %d must not be NaN",
                                p->bias_id[k]);
    }
    return 0;
}

/* A penalty that must be finite and within [-2, 2]. 0 or -1 with a message. */
static int sampler_validate_penalty(const char *name, float v, char *err, size_t errlen) {
    if (!(v >= -2.0f && v <= 2.0f))
        return sampler_fail(err, errlen, "%s must be in [-2, 2], got %g", name, (double)v);
    return 0;
}

int sampler_params_validate(const sampler_params *p, int n_vocab, char *err, size_t errlen) {
    if (n_vocab <= 0)
        return sampler_fail(err, errlen, "n_vocab must be > 0, got %d", n_vocab);
    if (!(p->temperature >= 0.0f && isfinite(p->temperature)))
        return sampler_fail(err, errlen, "temperature must be >= 0 and finite, got %g",
                            (double)p->temperature);
    if (p->top_k < 0)
        return sampler_fail(err, errlen, "top_k must be >= 0, got %d", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return sampler_fail(err, errlen, "top_p must be in (0, 1], got %g", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return sampler_fail(err, errlen, "min_p must be in [0, 1], got %g", (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f && isfinite(p->repetition_penalty)))
        return sampler_fail(err, errlen, "repetition_penalty must be > 0 and finite, got %g",
                            (double)p->repetition_penalty);
    if (sampler_validate_penalty("presence_penalty", p->presence_penalty, err, errlen) < 0 ||
        sampler_validate_penalty("frequency_penalty", p->frequency_penalty, err, errlen) < 0)
        return -1;
    return sampler_validate_bias(p, n_vocab, err, errlen);
}

/* ---------------------------------------------------------------- counter-based RNG */

#define SAMPLER_GOLDEN 0x9e3779b97f4a7c15ULL /* 2^64 / golden ratio, splitmix64's increment */

/* splitmix64 as a pure function: the output for state x (one increment, then the finalizer). */
static uint64_t sampler_splitmix64(uint64_t x) {
    x += SAMPLER_GOLDEN;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

double sampler_uniform(uint64_t seed, uint64_t i) {
    uint64_t r = sampler_splitmix64(seed ^ sampler_splitmix64(i + SAMPLER_GOLDEN));
    return (double)(r >> 11) * 0x1.0p-53; /* top 53 bits: exactly representable, < 1 */
}

/* ---------------------------------------------------------------- scratch layout */

#define SAMPLER_ALIGN 64         /* bytes; every scratch region starts on a cache line */
#define SAMPLER_RADIX_BITS 11    /* three LSD passes cover a 32-bit key */
#define SAMPLER_RADIX (1 << SAMPLER_RADIX_BITS)
#define SAMPLER_BUCKET_PER_NAT 8 /* log-probability buckets per nat below the max */
#define SAMPLER_BUCKET_NATS 64   /* buckets cover max - z < 64; one more holds the rest */
#define SAMPLER_NB (SAMPLER_BUCKET_PER_NAT * SAMPLER_BUCKET_NATS + 1)
#define SAMPLER_HEAP_MAX 1024    /* top_k up to this uses the heap, above it a full sort */
#define SAMPLER_INSERTION_MAX 32 /* lists up to this length sort by insertion */
#define SAMPLER_MORE (-2)        /* "the answer lies beyond this prefix": widen and retry */

typedef struct {
    uint32_t key; /* sampler_key(z): ascending key = descending scaled logit */
    int32_t id;   /* token id */
} sampler_cand;

typedef struct {
    int32_t cnt[SAMPLER_NB]; /* (NB) tokens per bucket of max - z (min-p survivors only) */
    double mass[SAMPLER_NB]; /* (NB) their summed weight */
    double z_all;            /* weight of every token */
    double z_minp;           /* weight of the tokens min-p keeps */
    int n_minp;              /* how many tokens min-p keeps */
} sampler_buckets;

typedef struct {
    int32_t *count;        /* (V) occurrences in history; only history ids are ever touched */
    float *w;              /* (V) exp(z - max) by id, valid where a path wrote it */
    sampler_cand *cand;    /* (V) the candidate list being built and sorted */
    sampler_cand *tmp;     /* (V) radix sort ping-pong buffer */
    uint32_t *radix;       /* (3, RADIX) digit histograms */
    sampler_buckets *bkt;  /* log-probability histogram of the bucket path */
} sampler_work;

/* n bytes rounded up to the scratch alignment. */
static size_t sampler_align(size_t n) {
    return (n + SAMPLER_ALIGN - 1) & ~(size_t)(SAMPLER_ALIGN - 1);
}

/* Byte sizes of the regions in layout order; returns the total (without the base slack). */
static size_t sampler_layout(int n_vocab, size_t size[6]) {
    size_t v = (size_t)(n_vocab > 0 ? n_vocab : 0);
    size[0] = sampler_align(v * sizeof(int32_t));
    size[1] = sampler_align(v * sizeof(float));
    size[2] = sampler_align(v * sizeof(sampler_cand));
    size[3] = sampler_align(v * sizeof(sampler_cand));
    size[4] = sampler_align(3 * SAMPLER_RADIX * sizeof(uint32_t));
    size[5] = sampler_align(sizeof(sampler_buckets));
    return size[0] + size[1] + size[2] + size[3] + size[4] + size[5];
}

size_t sampler_scratch_size(int n_vocab) {
    size_t size[6];
    return sampler_layout(n_vocab, size) + SAMPLER_ALIGN; /* slack to align any base pointer */
}

/* Carves the regions out of the caller's scratch (any alignment, any prior content). */
static sampler_work sampler_work_carve(void *scratch, int n_vocab) {
    size_t size[6];
    sampler_layout(n_vocab, size);
    uintptr_t a = ((uintptr_t)scratch + SAMPLER_ALIGN - 1) & ~(uintptr_t)(SAMPLER_ALIGN - 1);
    char *b = (char *)scratch + (a - (uintptr_t)scratch);
    sampler_work s;
    s.count = (int32_t *)(void *)b;
    s.w = (float *)(void *)(b += size[0]);
    s.cand = (sampler_cand *)(void *)(b += size[1]);
    s.tmp = (sampler_cand *)(void *)(b += size[2]);
    s.radix = (uint32_t *)(void *)(b += size[3]);
    s.bkt = (sampler_buckets *)(void *)(b += size[4]);
    return s;
}

/* ---------------------------------------------------------------- logit edits */

/* Adds each bias entry to its token's logit (entries for the same id add up; ids outside
 * [0, V) are ignored, validation rejects them anyway). */
static void sampler_apply_bias(const sampler_params *p, float *logits, int n_vocab) {
    for (int k = 0; k < p->n_bias && k < SAMPLER_MAX_BIAS; k++) {
        int id = p->bias_id[k];
        if (id >= 0 && id < n_vocab)
            logits[id] += p->bias[k];
    }
}

/* One seen token's logit after the penalties: CTRL repetition (divide if positive, else
 * multiply), then presence (once) and frequency (count times), both subtracted. */
static float sampler_penalize(const sampler_params *p, float l, int count) {
    if (p->repetition_penalty != 1.0f)
        l = l > 0.0f ? l / p->repetition_penalty : l * p->repetition_penalty;
    if (p->presence_penalty != 0.0f)
        l -= p->presence_penalty;
    if (p->frequency_penalty != 0.0f)
        l -= (float)count * p->frequency_penalty;
    return l;
}

/* Penalizes each distinct id of history once, in O(n_hist): count[] is zeroed at the history
 * ids first (so its prior content never matters), counted, then consumed back to zero. */
static void sampler_apply_penalties(const sampler_params *p, float *logits, int n_vocab,
                                    const int *history, int n_hist, int32_t *count) {
    if (!history || n_hist <= 0 ||
        (p->repetition_penalty == 1.0f && p->presence_penalty == 0.0f &&
         p->frequency_penalty == 0.0f))
        return;
    for (int i = 0; i < n_hist; i++)
        if (history[i] >= 0 && history[i] < n_vocab)
            count[history[i]] = 0;
    for (int i = 0; i < n_hist; i++)
        if (history[i] >= 0 && history[i] < n_vocab)
            count[history[i]]++;
    for (int i = 0; i < n_hist; i++) {
        int id = history[i];
        if (id >= 0 && id < n_vocab && count[id] > 0) {
            logits[id] = sampler_penalize(p, logits[id], count[id]);
            count[id] = 0;
        }
    }
}

/* ---------------------------------------------------------------- greedy */

/* The id of the largest logit, lowest id on ties; NaN and -inf never win. -1 if none is left. */
static int sampler_argmax(const float *logits, int n_vocab) {
    int best = -1;
    float bv = -INFINITY;
    for (int j = 0; j < n_vocab; j++) {
        float v = logits[j];
        if (v > bv) { /* false for NaN and for -inf against the -inf start */
            bv = v;
            best = j;
        }
    }
    return best;
}

/* ---------------------------------------------------------------- candidate order */

/* Divides every logit by the temperature in place (NaN becomes -inf: banned); returns the max. */
static float sampler_scale(float *logits, int n_vocab, float temperature) {
    float m = -INFINITY;
    for (int j = 0; j < n_vocab; j++) {
        float z = logits[j] / temperature;
        if (z != z)
            z = -INFINITY;
        logits[j] = z;
        if (z > m)
            m = z;
    }
    return m;
}

/* A 32-bit key whose ascending order is descending z (-0 and +0 share a key). */
static uint32_t sampler_key(float z) {
    uint32_t u;
    z += 0.0f; /* -0 -> +0 */
    memcpy(&u, &z, sizeof(u));
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* ascending in z */
    return ~u;
}

/* The weight exp(z - m) of a scaled logit against the max m; with m = +inf the +inf logits
 * share the mass equally and everything else gets 0. */
static float sampler_weight(float z, float m) {
    if (m == INFINITY)
        return z == INFINITY ? 1.0f : 0.0f;
    return expf(z - m);
}

/* 1 if a comes before b in the candidate order (key, then lower id). */
static int sampler_before(sampler_cand a, sampler_cand b) {
    return a.key < b.key || (a.key == b.key && a.id < b.id);
}

/* Stable insertion sort by key (ties keep their input order). */
static void sampler_insertion_sort(sampler_cand *c, int n) {
    for (int i = 1; i < n; i++) {
        sampler_cand x = c[i];
        int j = i - 1;
        while (j >= 0 && c[j].key > x.key) {
            c[j + 1] = c[j];
            j--;
        }
        c[j + 1] = x;
    }
}

/* Stable LSD radix sort of c (n) by key, three 11-bit passes, skipping a pass whose digit is the
 * same for every element. Input in id order gives ties by lower id. tmp (n) is a buffer and
 * radix (3 * RADIX) the histograms. */
static void sampler_radix_sort(sampler_cand *c, sampler_cand *tmp, int n, uint32_t *radix) {
    if (n <= SAMPLER_INSERTION_MAX) {
        sampler_insertion_sort(c, n);
        return;
    }
    const uint32_t mask = SAMPLER_RADIX - 1;
    memset(radix, 0, 3 * SAMPLER_RADIX * sizeof(uint32_t));
    for (int i = 0; i < n; i++) {
        uint32_t k = c[i].key;
        radix[k & mask]++;
        radix[SAMPLER_RADIX + ((k >> SAMPLER_RADIX_BITS) & mask)]++;
        radix[2 * SAMPLER_RADIX + (k >> (2 * SAMPLER_RADIX_BITS))]++;
    }
    sampler_cand *src = c, *dst = tmp;
    for (int pass = 0; pass < 3; pass++) {
        uint32_t *h = radix + pass * SAMPLER_RADIX;
        int shift = pass * SAMPLER_RADIX_BITS;
        if (h[(src[0].key >> shift) & mask] == (uint32_t)n)
            continue; /* one digit value for all: the pass would not move anything */
        uint32_t sum = 0;
        for (int d = 0; d < SAMPLER_RADIX; d++) {
            uint32_t t = h[d];
            h[d] = sum;
            sum += t;
        }
        for (int i = 0; i < n; i++)
            dst[h[(src[i].key >> shift) & mask]++] = src[i];
        sampler_cand *t = src;
        src = dst;
        dst = t;
    }
    if (src != c)
        memcpy(c, src, (size_t)n * sizeof(*c));
}

/* ---------------------------------------------------------------- shared tail: top-p, min-p, draw */

typedef struct {
    const sampler_cand *c; /* (n) a sorted prefix of the candidate order */
    int n;
    int complete; /* 1 if c holds every token that min-p keeps (so nothing lies beyond) */
    double z_all; /* weight of the distribution top-p measures against */
    double z_minp; /* weight of the tokens min-p keeps: the draw's total when top-p is off */
} sampler_prefix;

/* How many leading candidates survive min-p (and have weight > 0): n + 1 means "all of c and
 * maybe more beyond it", unless c is complete. */
static int sampler_minp_end(const sampler_params *p, const sampler_prefix *s, const float *w) {
    float thr = p->min_p * w[s->c[0].id];
    for (int j = 0; j < s->n; j++) {
        float x = w[s->c[j].id];
        if (!(x > 0.0f && x >= thr))
            return j;
    }
    return s->complete ? s->n : s->n + 1;
}

/* The kept prefix length after top-p and min-p, and the draw's total weight in *total.
 * SAMPLER_MORE if the nucleus ends beyond c. May return n + 1 (kept set runs past c) only with
 * top-p off, where the total (z_minp) is known anyway. */
static int sampler_kept(const sampler_params *p, const sampler_prefix *s, const float *w,
                        double *total) {
    int e = sampler_minp_end(p, s, w);
    if (p->top_p >= 1.0f) {
        *total = s->z_minp;
        return e;
    }
    double bound = (double)p->top_p * s->z_all, cum = 0.0;
    int lim = e < s->n ? e : s->n;
    for (int j = 0; j < lim; j++) {
        cum += w[s->c[j].id];
        if (cum >= bound) {
            *total = cum;
            return j + 1;
        }
    }
    if (e > s->n)
        return SAMPLER_MORE;
    *total = cum; /* min-p (or the end of the distribution) cuts before the nucleus ends */
    return e;
}

/* Applies top-p and min-p to the prefix and draws with u: walks the kept candidates until the
 * running weight exceeds u * total. Returns the id (log-probability in *logprob), or
 * SAMPLER_MORE if the answer lies beyond the prefix. */
static int sampler_finish(const sampler_params *p, const sampler_prefix *s, const float *w,
                          double u, float *logprob) {
    double total = 0.0;
    int e = sampler_kept(p, s, w, &total);
    if (e == SAMPLER_MORE)
        return SAMPLER_MORE;
    double target = u * total, cum = 0.0;
    int lim = e < s->n ? e : s->n, pick = -1;
    for (int j = 0; j < lim && pick < 0; j++) {
        cum += w[s->c[j].id];
        if (cum > target)
            pick = j;
    }
    if (pick < 0 && e > s->n)
        return SAMPLER_MORE;
    if (pick < 0)
        pick = e - 1; /* rounding left the target unreached: the last kept candidate */
    *logprob = (float)log((double)w[s->c[pick].id] / total);
    return s->c[pick].id;
}

/* Weights for a complete sorted list c (n >= 1), then the shared tail. */
static int sampler_finish_list(const sampler_params *p, const float *z, sampler_cand *c, int n,
                               float *w, double u, float *logprob) {
    float m = z[c[0].id];
    double z_all = 0.0, z_minp = 0.0;
    for (int j = 0; j < n; j++) {
        float x = sampler_weight(z[c[j].id], m);
        w[c[j].id] = x;
        z_all += x;
    }
    float thr = p->min_p * w[c[0].id];
    for (int j = 0; j < n; j++) {
        float x = w[c[j].id];
        if (x > 0.0f && x >= thr)
            z_minp += x;
    }
    sampler_prefix s = {c, n, 1, z_all, z_minp};
    return sampler_finish(p, &s, w, u, logprob);
}

/* ---------------------------------------------------------------- path 1: small top-k heap */

/* Restores the heap below i: the root is the worst kept candidate (last in the order). */
static void sampler_heap_down(sampler_cand *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, worst = i;
        if (l < n && sampler_before(h[worst], h[l]))
            worst = l;
        if (r < n && sampler_before(h[worst], h[r]))
            worst = r;
        if (worst == i)
            return;
        sampler_cand t = h[i];
        h[i] = h[worst];
        h[worst] = t;
        i = worst;
    }
}

/* Moves element n-1 up to its place in the heap. */
static void sampler_heap_up(sampler_cand *h, int n) {
    int i = n - 1;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!sampler_before(h[parent], h[i]))
            return;
        sampler_cand t = h[i];
        h[i] = h[parent];
        h[parent] = t;
        i = parent;
    }
}

/* The k first candidates (z > -inf) in order into c; returns how many (<= k). O(V log k). */
static int sampler_top_k_heap(const float *z, int n_vocab, int k, sampler_cand *c) {
    int n = 0;
    for (int j = 0; j < n_vocab; j++) {
        if (z[j] == -INFINITY)
            continue;
        sampler_cand x = {sampler_key(z[j]), j};
        if (n < k) {
            c[n++] = x;
            sampler_heap_up(c, n);
        } else if (sampler_before(x, c[0])) {
            c[0] = x;
            sampler_heap_down(c, n, 0);
        }
    }
    for (int end = n - 1; end > 0; end--) { /* heapsort: the worst goes to the back */
        sampler_cand t = c[0];
        c[0] = c[end];
        c[end] = t;
        sampler_heap_down(c, end, 0);
    }
    return n;
}

/* ---------------------------------------------------------------- path 2: sort everything */

/* All candidates (z > -inf) in id order into c; sorted; truncated to k if 0 < k. */
static int sampler_sort_all(const float *z, int n_vocab, int k, sampler_work *s) {
    int n = 0;
    for (int j = 0; j < n_vocab; j++)
        if (z[j] != -INFINITY)
            s->cand[n++] = (sampler_cand){sampler_key(z[j]), j};
    sampler_radix_sort(s->cand, s->tmp, n, s->radix);
    return (k > 0 && k < n) ? k : n;
}

/* ---------------------------------------------------------------- path 3: log-probability buckets */

/* The bucket of a token from d = max - z >= 0: 8 per nat, everything from 64 nats on shares the
 * last. Monotone in z, so a run of first buckets is a prefix of the candidate order. */
static int sampler_bucket(float d) {
    return d < (float)SAMPLER_BUCKET_NATS ? (int)(d * (float)SAMPLER_BUCKET_PER_NAT)
                                          : SAMPLER_NB - 1;
}

/* Weights of all V tokens against the finite max m into w, their totals, and the histogram of
 * the min-p survivors (weight >= min_p, > 0) by bucket. */
static void sampler_weigh_all(const float *z, int n_vocab, float m, float min_p, float *w,
                              sampler_buckets *b) {
    memset(b, 0, sizeof(*b));
    double z_all = 0.0, z_minp = 0.0;
    for (int j = 0; j < n_vocab; j++) {
        float x = expf(z[j] - m); /* exp(-inf) = 0 */
        w[j] = x;
        z_all += x;
        if (x > 0.0f && x >= min_p) {
            int k = sampler_bucket(m - z[j]);
            b->cnt[k]++;
            b->mass[k] += x;
            z_minp += x;
            b->n_minp++;
        }
    }
    b->z_all = z_all;
    b->z_minp = z_minp;
}

/* The last bucket needed for the prefix to hold weight `need` (plus a rounding margin). */
static int sampler_bucket_cut(const sampler_buckets *b, double need) {
    double cum = 0.0;
    for (int k = 0; k < SAMPLER_NB; k++) {
        cum += b->mass[k];
        if (cum > need * (1.0 + 1e-9))
            return k;
    }
    return SAMPLER_NB - 1;
}

/* The min-p survivors in buckets <= cut, in id order into c; returns how many. */
static int sampler_gather(const float *z, const float *w, int n_vocab, float m, float min_p,
                          int cut, sampler_cand *c) {
    int n = 0;
    for (int j = 0; j < n_vocab; j++) {
        float x = w[j];
        if (x > 0.0f && x >= min_p && sampler_bucket(m - z[j]) <= cut)
            c[n++] = (sampler_cand){sampler_key(z[j]), j};
    }
    return n;
}

/* Top-k off, finite max m: weighs all tokens, sorts only the buckets the nucleus or the draw
 * needs, and widens to every bucket if rounding put the answer just beyond them. */
static int sampler_sample_buckets(const sampler_params *p, const float *z, int n_vocab, float m,
                                  double u, sampler_work *s, float *logprob) {
    sampler_buckets *b = s->bkt;
    sampler_weigh_all(z, n_vocab, m, p->min_p, s->w, b);
    double need = p->top_p < 1.0f ? (double)p->top_p * b->z_all : u * b->z_minp;
    int cut = sampler_bucket_cut(b, need);
    for (;;) {
        int n = sampler_gather(z, s->w, n_vocab, m, p->min_p, cut, s->cand);
        sampler_radix_sort(s->cand, s->tmp, n, s->radix);
        sampler_prefix pre = {s->cand, n, n == b->n_minp, b->z_all, b->z_minp};
        int id = sampler_finish(p, &pre, s->w, u, logprob);
        if (id != SAMPLER_MORE || cut == SAMPLER_NB - 1)
            return id; /* the full set is complete, so MORE cannot come back from it */
        cut = SAMPLER_NB - 1;
    }
}

/* ---------------------------------------------------------------- entry */

/* Temperature > 0: scale, choose the path, draw. -1 if no token has a logit above -inf. */
static int sampler_sample_temp(const sampler_params *p, float *logits, int n_vocab, uint64_t i,
                               sampler_work *s, float *logprob) {
    float m = sampler_scale(logits, n_vocab, p->temperature);
    if (m == -INFINITY)
        return -1;
    double u = sampler_uniform(p->seed, i);
    int k = p->top_k < n_vocab ? p->top_k : 0; /* k >= V keeps everything: off */
    if (k > 0 && k <= SAMPLER_HEAP_MAX) {
        int n = sampler_top_k_heap(logits, n_vocab, k, s->cand);
        return sampler_finish_list(p, logits, s->cand, n, s->w, u, logprob);
    }
    if (k > 0 || m == INFINITY) {
        int n = sampler_sort_all(logits, n_vocab, k, s);
        return sampler_finish_list(p, logits, s->cand, n, s->w, u, logprob);
    }
    return sampler_sample_buckets(p, logits, n_vocab, m, u, s, logprob);
}

int sampler_sample(const sampler_params *p, float *logits, int n_vocab, const int *history,
                   int n_hist, uint64_t i, void *scratch, float *logprob) {
    float lp = 0.0f;
    if (n_vocab <= 0) {
        if (logprob)
            *logprob = 0.0f;
        return -1;
    }
    sampler_work s = sampler_work_carve(scratch, n_vocab);
    sampler_apply_bias(p, logits, n_vocab);
    sampler_apply_penalties(p, logits, n_vocab, history, n_hist, s.count);
    int id = p->temperature == 0.0f ? sampler_argmax(logits, n_vocab)
                                    : sampler_sample_temp(p, logits, n_vocab, i, &s, &lp);
    if (logprob)
        *logprob = id >= 0 ? lp : 0.0f;
    return id;
}
