/* sampler.c — logits row -> next token (contract in sampler.h).
 *
 * Reads top to bottom: parameters and validation, the counter-based RNG, constants and scratch
 * layout, logit edits (bias, penalties), AVX2 kernels (exp, max), greedy, the candidate order and
 * its sorts, then the three sampling paths and the entry:
 *   top-k <= 1024      a heap picks the k best in one pass; the tail works on that sorted list;
 *   top-k > 1024       (or a +inf logit) radix-sort every candidate, then the same tail;
 *   top-k off          the logit-level search: only a small logit range is ever sorted.
 *
 * The candidate order is "edited logit descending, ties by lower id". Temperature does not
 * change it: a token's weight is exp((l - max) / T), never increasing along the order. Every
 * filter keeps a prefix of the order and is stated on logits (min-p keeps l >= max + T ln min_p),
 * and the draw walks that prefix until the running weight exceeds u * total. All weights come
 * from one vectorized exp with explicit FMA, so the paths agree and the bits are the same on
 * every AVX2+FMA machine: a draw is a pure function of (edited logits, parameters, seed, i). */
#include "sampler.h"

#include "vmath.h"

#include <immintrin.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- parameters */

void sampler_params_default(sampler_params *p) {
    memset(p, 0, sizeof(*p)); /* greedy, top_k/min_p/presence/frequency off, seed 0, no bias */
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
}

/* Writes a message into err (if any); returns -1 for the caller to pass on. */
__attribute__((format(printf, 3, 4))) static int sampler_fail(char *err, size_t errlen,
                                                              const char *fmt, ...) {
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

int sampler_params_check(const sampler_params *p, int n_vocab, const char **field, char *err, size_t errlen) {
    const char *f = NULL;
    int rc = -1;
    if (n_vocab <= 0)
        rc = sampler_fail(err, errlen, "n_vocab must be > 0, got %d", n_vocab);
    else if (f = "temperature", !(p->temperature >= 0.0f && isfinite(p->temperature)))
        rc = sampler_fail(err, errlen, "temperature must be >= 0 and finite, got %g", (double)p->temperature);
    else if (f = "top_k", p->top_k < 0)
        rc = sampler_fail(err, errlen, "top_k must be >= 0, got %d", p->top_k);
    else if (f = "top_p", !(p->top_p > 0.0f && p->top_p <= 1.0f))
        rc = sampler_fail(err, errlen, "top_p must be in (0, 1], got %g", (double)p->top_p);
    else if (f = "min_p", !(p->min_p >= 0.0f && p->min_p <= 1.0f))
        rc = sampler_fail(err, errlen, "min_p must be in [0, 1], got %g", (double)p->min_p);
    else if (f = "repetition_penalty", !(p->repetition_penalty > 0.0f && isfinite(p->repetition_penalty)))
        rc = sampler_fail(err, errlen, "repetition_penalty must be > 0 and finite, got %g",
                          (double)p->repetition_penalty);
    else if (f = "presence_penalty", sampler_validate_penalty(f, p->presence_penalty, err, errlen) < 0)
        rc = -1;
    else if (f = "frequency_penalty", sampler_validate_penalty(f, p->frequency_penalty, err, errlen) < 0)
        rc = -1;
    else if (f = "logit_bias", sampler_validate_bias(p, n_vocab, err, errlen) < 0)
        rc = -1;
    else
        f = NULL, rc = 0;
    if (field) *field = f;
    return rc;
}

int sampler_params_validate(const sampler_params *p, int n_vocab, char *err, size_t errlen) {
    return sampler_params_check(p, n_vocab, NULL, err, errlen);
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

/* ---------------------------------------------------------------- constants, scratch layout */

#define SAMPLER_ALIGN 64         /* bytes; every scratch region starts on a cache line */
#define SAMPLER_RADIX_BITS 8     /* LSD radix digit; four passes cover a 32-bit key */
#define SAMPLER_RADIX (1 << SAMPLER_RADIX_BITS)
#define SAMPLER_PASSES ((32 + SAMPLER_RADIX_BITS - 1) / SAMPLER_RADIX_BITS)
#define SAMPLER_NT 8             /* thresholds per level of the logit-range search */
#define SAMPLER_LEAF_MAX 4096    /* a range this small is sorted, a larger one cut again */
#define SAMPLER_DEPTH_MAX 3      /* levels at most (ties can make a range uncuttable) */
#define SAMPLER_HEAP_MAX 1024    /* top_k up to this uses the heap, above it a full sort */
#define SAMPLER_INSERTION_MAX 32 /* lists up to this length sort by insertion */

/* The top level's thresholds as depths below the max in units of temperature: threshold k is
 * the logit max - depth[k] * T, i.e. weight exp(-depth[k]) relative to the best. */
static const float sampler_top_depth[SAMPLER_NT] = {1, 2, 3, 4.5f, 6, 8, 11, 16};

typedef struct {
    uint32_t key; /* sampler_key(logit): ascending key = descending logit */
    int32_t id;   /* token id */
} sampler_cand;

typedef struct {
    int32_t *count;     /* (V) occurrences in history; only history ids are ever touched */
    float *w;           /* (V) weight exp((logit - max) * (1/T)) by id, where a path wrote it */
    sampler_cand *cand; /* (V) the candidate list being built and sorted */
    sampler_cand *tmp;  /* (V) radix sort ping-pong buffer */
    sampler_cand *pre;  /* (V) tokens above a scanned range, joined in front of it if few */
    uint32_t *radix;    /* (PASSES, RADIX) digit histograms */
} sampler_work;

/* n bytes rounded up to the scratch alignment. */
static size_t sampler_align(size_t n) {
    return (n + SAMPLER_ALIGN - 1) & ~(size_t)(SAMPLER_ALIGN - 1);
}

/* Byte sizes of the regions in layout order; returns their sum. */
static size_t sampler_layout(int n_vocab, size_t size[6]) {
    size_t v = (size_t)(n_vocab > 0 ? n_vocab : 0);
    size[0] = sampler_align(v * sizeof(int32_t));
    size[1] = sampler_align(v * sizeof(float));
    size[2] = sampler_align(v * sizeof(sampler_cand));
    size[3] = sampler_align(v * sizeof(sampler_cand));
    size[4] = sampler_align(v * sizeof(sampler_cand));
    size[5] = sampler_align(SAMPLER_PASSES * SAMPLER_RADIX * sizeof(uint32_t));
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
    size_t pad = (SAMPLER_ALIGN - (uintptr_t)scratch % SAMPLER_ALIGN) % SAMPLER_ALIGN;
    char *b = (char *)scratch + pad;
    sampler_work s;
    s.count = (int32_t *)(void *)b;
    s.w = (float *)(void *)(b += size[0]);
    s.cand = (sampler_cand *)(void *)(b += size[1]);
    s.tmp = (sampler_cand *)(void *)(b += size[2]);
    s.pre = (sampler_cand *)(void *)(b += size[3]);
    s.radix = (uint32_t *)(void *)(b += size[4]);
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

/* ---------------------------------------------------------------- vector kernels (AVX2) */

/* exp of 8 lanes (x <= 0): vm_exp, the forward pass's own (below -87 and -inf give 0, NaN lanes
 * give 0 too; callers mask them). Explicit FMA, so the same bits on every AVX2+FMA machine.
 * Every weight in this file comes from here, so all paths agree. */
static inline __m256 sampler_exp8(__m256 x) { return vm_exp(x); }

/* 8 logits from l[j..] (j + 8 may pass n: missing lanes read as -inf). */
static __m256 sampler_load8(const float *l, int j, int n) {
    if (j + 8 <= n)
        return _mm256_loadu_ps(l + j);
    float buf[8];
    for (int t = 0; t < 8; t++)
        buf[t] = j + t < n ? l[j + t] : -INFINITY;
    return _mm256_loadu_ps(buf);
}

/* Stores the 8 lanes of x to p[j..], only those below n. */
static void sampler_store8(float *p, int j, int n, __m256 x) {
    if (j + 8 <= n) {
        _mm256_storeu_ps(p + j, x);
        return;
    }
    float buf[8];
    _mm256_storeu_ps(buf, x);
    memcpy(p + j, buf, sizeof(float) * (size_t)(n - j));
}

/* The weights exp((l - m) * inv_t) of 8 logits against the finite max m (inv_t = 1 / T);
 * 0 for -inf and NaN. */
static inline __m256 sampler_weight8(__m256 v, float m, float inv_t) {
    __m256 valid = _mm256_cmp_ps(v, _mm256_set1_ps(-INFINITY), _CMP_GT_OQ);
    __m256 x = _mm256_mul_ps(_mm256_sub_ps(v, _mm256_set1_ps(m)), _mm256_set1_ps(inv_t));
    return _mm256_and_ps(sampler_exp8(x), valid);
}

/* The largest logit (NaN ignored); -inf if none is above -inf. */
static float sampler_max(const float *l, int n) {
    __m256 acc = _mm256_set1_ps(-INFINITY);
    for (int j = 0; j < n; j += 8)
        acc = _mm256_max_ps(sampler_load8(l, j, n), acc); /* a NaN first operand yields acc */
    float t[8], m = -INFINITY;
    _mm256_storeu_ps(t, acc);
    for (int k = 0; k < 8; k++)
        m = t[k] > m ? t[k] : m;
    return m;
}

/* The lowest j with l[j] == v, or -1. */
static int sampler_first_eq(const float *l, int n, float v) {
    __m256 vv = _mm256_set1_ps(v);
    for (int j = 0; j < n; j += 8) {
        int mask = _mm256_movemask_ps(_mm256_cmp_ps(sampler_load8(l, j, n), vv, _CMP_EQ_OQ));
        if (mask)
            return j + __builtin_ctz((unsigned)mask);
    }
    return -1;
}

/* Horizontal sum of 4 doubles in a fixed order. */
static double sampler_hsum4(__m256d v) {
    double t[4];
    _mm256_storeu_pd(t, v);
    return (t[0] + t[1]) + (t[2] + t[3]);
}

/* ---------------------------------------------------------------- greedy */

/* The id of the largest logit, lowest id on ties; NaN and -inf never win. -1 if none is left. */
static int sampler_argmax(const float *logits, int n_vocab) {
    float m = sampler_max(logits, n_vocab);
    return m == -INFINITY ? -1 : sampler_first_eq(logits, n_vocab, m);
}

/* ---------------------------------------------------------------- candidate order */

/* A 32-bit key whose ascending order is descending logit (-0 and +0 share a key). */
static uint32_t sampler_key(float l) {
    uint32_t u;
    l += 0.0f; /* -0 -> +0 */
    memcpy(&u, &l, sizeof(u));
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* ascending in l */
    return ~u;
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

/* Stable LSD radix sort of c (n) by key, skipping a pass whose digit is the same for every
 * element. Input in id order gives ties by lower id. tmp (n) is a buffer and radix
 * (PASSES * RADIX) the histograms. */
static void sampler_radix_sort(sampler_cand *c, sampler_cand *tmp, int n, uint32_t *radix) {
    if (n <= SAMPLER_INSERTION_MAX) {
        sampler_insertion_sort(c, n);
        return;
    }
    const uint32_t mask = SAMPLER_RADIX - 1;
    memset(radix, 0, SAMPLER_PASSES * SAMPLER_RADIX * sizeof(uint32_t));
    for (int i = 0; i < n; i++)
        for (int pass = 0; pass < SAMPLER_PASSES; pass++)
            radix[pass * SAMPLER_RADIX + ((c[i].key >> (pass * SAMPLER_RADIX_BITS)) & mask)]++;
    sampler_cand *src = c, *dst = tmp;
    for (int pass = 0; pass < SAMPLER_PASSES; pass++) {
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

/* The logit below which min-p drops a token: p < min_p * p_max <=> l < max + T * ln(min_p).
 * -inf when min-p is off. A logit threshold keeps the kept set a prefix of the order. */
static float sampler_minp_logit(float m, float temperature, float min_p) {
    return min_p > 0.0f ? m + temperature * logf(min_p) : -INFINITY;
}

/* 1 once the running weight cum has reached target: cum > target for a draw (strict), cum >=
 * target for the nucleus bound. */
static int sampler_crossed(double cum, double target, int strict) {
    return strict ? cum > target : cum >= target;
}

/* ---------------------------------------------------------------- top-k paths: a sorted list */

/* Weights of the listed tokens against m (8 at a time through sampler_exp8) into w[id]; with
 * m = +inf the +inf logits share the mass equally and the rest get 0. */
static void sampler_weigh_list(const float *l, const sampler_cand *c, int n, float m,
                               float temperature, float *w) {
    for (int j = 0; j < n; j += 8) {
        float in[8], out[8];
        int cnt = n - j < 8 ? n - j : 8;
        for (int t = 0; t < 8; t++)
            in[t] = t < cnt ? l[c[j + t].id] : m;
        _mm256_storeu_ps(out, sampler_weight8(_mm256_loadu_ps(in), m, 1.0f / temperature));
        for (int t = 0; t < cnt; t++)
            w[c[j + t].id] = m == INFINITY ? (in[t] == INFINITY ? 1.0f : 0.0f) : out[t];
    }
}

/* The kept length of a sorted list after min-p (and weight > 0), then top-p against the whole
 * list's weight; the kept weight in *total. */
static int sampler_list_kept(const sampler_params *p, const float *l, const sampler_cand *c,
                             int n, const float *w, double *total) {
    float l_minp = sampler_minp_logit(l[c[0].id], p->temperature, p->min_p);
    double z_all = 0.0, cum = 0.0;
    int e = n;
    for (int j = 0; j < n; j++) {
        if (e == n && !(w[c[j].id] > 0.0f && l[c[j].id] >= l_minp))
            e = j;
        z_all += w[c[j].id];
    }
    for (int j = 0; j < e; j++) {
        cum += w[c[j].id];
        if (p->top_p < 1.0f && sampler_crossed(cum, (double)p->top_p * z_all, 0)) {
            *total = cum;
            return j + 1;
        }
    }
    *total = cum;
    return e;
}

/* A complete sorted list c (n >= 1, c[0] the max): weights, top-p, min-p, then the draw: the
 * first candidate whose running weight exceeds u * total (the last kept one if rounding leaves
 * the target unreached). */
static int sampler_finish_list(const sampler_params *p, const float *l, const sampler_cand *c,
                               int n, float *w, double u, float *logprob) {
    double total = 0.0, cum = 0.0;
    sampler_weigh_list(l, c, n, l[c[0].id], p->temperature, w);
    int kept = sampler_list_kept(p, l, c, n, w, &total), pick = kept - 1;
    for (int j = 0; j < kept; j++) {
        cum += w[c[j].id];
        if (sampler_crossed(cum, u * total, 1)) {
            pick = j;
            break;
        }
    }
    *logprob = (float)log((double)w[c[pick].id] / total);
    return c[pick].id;
}

/* ---------------------------------------------------------------- path 1: top-k heap */

/* Restores the heap below i: the root is the worst kept candidate (last in the order). */
static void sampler_heap_down(sampler_cand *h, int n, int i) {
    for (;;) {
        int a = 2 * i + 1, b = a + 1, worst = i;
        if (a < n && sampler_before(h[worst], h[a]))
            worst = a;
        if (b < n && sampler_before(h[worst], h[b]))
            worst = b;
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
    for (int i = n - 1; i > 0;) {
        int parent = (i - 1) / 2;
        if (!sampler_before(h[parent], h[i]))
            return;
        sampler_cand t = h[i];
        h[i] = h[parent];
        h[parent] = t;
        i = parent;
    }
}

/* Offers token j to the heap h (*n of k): pushes while not full, else replaces the root when
 * j's logit beats it (ids arrive ascending, so an equal logit never does). */
static void sampler_heap_offer(sampler_cand *h, int *n, int k, const float *l, int j) {
    if (*n < k) {
        if (l[j] > -INFINITY) {
            h[(*n)++] = (sampler_cand){sampler_key(l[j]), j};
            sampler_heap_up(h, *n);
        }
    } else if (l[j] > l[h[0].id]) {
        h[0] = (sampler_cand){sampler_key(l[j]), j};
        sampler_heap_down(h, *n, 0);
    }
}

/* The first k candidates (logit > -inf) in order into c; returns how many (<= k). O(V) compares
 * against the current root, 8 at a time, plus O(log k) per replacement. */
static int sampler_top_k_heap(const float *l, int n_vocab, int k, sampler_cand *c) {
    int n = 0, j = 0;
    for (; j < n_vocab && n < k; j++)
        sampler_heap_offer(c, &n, k, l, j);
    for (; j < n_vocab; j += 8) {
        __m256 v = sampler_load8(l, j, n_vocab);
        unsigned mask = (unsigned)_mm256_movemask_ps(
            _mm256_cmp_ps(v, _mm256_set1_ps(l[c[0].id]), _CMP_GT_OQ));
        for (; mask; mask &= mask - 1)
            sampler_heap_offer(c, &n, k, l, j + __builtin_ctz(mask));
    }
    for (int end = n - 1; end > 0; end--) { /* heapsort: the worst goes to the back */
        sampler_cand t = c[0];
        c[0] = c[end];
        c[end] = t;
        sampler_heap_down(c, end, 0);
    }
    return n;
}

/* ---------------------------------------------------------------- path 2: sort every candidate */

/* All candidates (logit > -inf) in id order into c; sorted; truncated to k if 0 < k. */
static int sampler_sort_all(const float *l, int n_vocab, int k, sampler_work *s) {
    int n = 0;
    for (int j = 0; j < n_vocab; j++)
        if (l[j] > -INFINITY)
            s->cand[n++] = (sampler_cand){sampler_key(l[j]), j};
    sampler_radix_sort(s->cand, s->tmp, n, s->radix);
    return (k > 0 && k < n) ? k : n;
}

/* ---------------------------------------------------------------- path 3: logit-level search
 *
 * Top-k off, finite max m. Eligible tokens: weight > 0 and kept by min-p (l >= l_minp). The
 * nucleus end and the draw are both "the token where the running weight in candidate order
 * crosses a target". The running weight before any logit h is an exact masked sum over all V
 * (no order needed), so only the tokens of one small logit range need sorting: a level cuts a
 * range [lo, hi) at NT thresholds (sub-range k is [thr[k], thr[k-1])), float guide masses say
 * which sub-range the crossing falls in, that sub-range is scanned (exact weight above it,
 * tokens in it) and, if still large, cut again. The top level's thresholds are fixed depths
 * below m (in units of T) and its guides come with the weighing pass. */

typedef struct {
    sampler_cand c; /* the token a walk stopped at */
    double cum;     /* running weight including it */
} sampler_walked;

typedef struct {
    float lo, hi;            /* the level's logit range [lo, hi) */
    float thr[SAMPLER_NT];   /* descending thresholds inside it */
    float guide[SAMPLER_NT]; /* float weight of the eligible tokens in [thr[k], hi) */
    double base;             /* exact weight of the eligible tokens >= hi */
} sampler_level;

typedef struct {
    const float *l;      /* (V) edited logits */
    const float *w;      /* (V) weights exp((l - m) * (1/T)), 0 where banned */
    int n_vocab;
    float m, temperature;
    float l_minp;        /* eligible: l >= l_minp and w > 0 */
    double z_all;        /* weight of every token (top-p's denominator) */
    double z_minp;       /* weight of the eligible tokens (the draw's total without top-p) */
    sampler_level top;   /* the first level: [l_minp, +inf) */
    sampler_work *s;     /* s->cand holds the eligible tokens of [lo, hi), n of them */
    float lo, hi;
    int n;               /* eligible tokens in [lo, hi); < 0: nothing scanned yet */
    int gathered;        /* 1 if s->cand holds all n of them (a capped scan only counts) */
    int sorted;          /* 1 if s->cand is sorted */
    double before;       /* exact weight of the eligible tokens >= hi */
    sampler_level sub;   /* [lo, hi) cut into a level by the scan, if has_sub */
    int has_sub;
} sampler_search;

/* Adds e (weights of 8 tokens with logits v, already masked to the level) to each guide whose
 * threshold v reaches. */
static void sampler_guide_add(__m256 guide[SAMPLER_NT], __m256 v, __m256 e,
                              const float thr[SAMPLER_NT]) {
#pragma GCC unroll 8
    for (int k = 0; k < SAMPLER_NT; k++)
        guide[k] = _mm256_add_ps(guide[k], _mm256_and_ps(e, _mm256_cmp_ps(
                                               v, _mm256_set1_ps(thr[k]), _CMP_GE_OQ)));
}

/* Horizontal sums of the guide lanes into out, fixed order. */
static void sampler_guide_sum(const __m256 guide[SAMPLER_NT], float out[SAMPLER_NT]) {
    for (int k = 0; k < SAMPLER_NT; k++) {
        float t[8];
        _mm256_storeu_ps(t, guide[k]);
        out[k] = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
    }
}

/* Adds the 8 float lanes of e to the 4 double lanes of acc (lane t gets e[t] + e[t + 4], an
 * exact sum in double). */
static inline __m256d sampler_acc_pd(__m256d acc, __m256 e) {
    return _mm256_add_pd(acc, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(e)),
                                            _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1))));
}

/* One pass over V: weights into w, z_all, z_minp and the top level's guides. Invariants are
 * copied to locals first: the stores to w could otherwise alias them. */
static void sampler_weigh_all(sampler_search *b, float *w) {
    const float *l = b->l, m = b->m, inv_t = 1.0f / b->temperature, l_minp = b->l_minp;
    const int n = b->n_vocab, minp_on = l_minp > -INFINITY;
    float thr[SAMPLER_NT];
    memcpy(thr, b->top.thr, sizeof(thr));
    __m256d za = _mm256_setzero_pd(), zm = _mm256_setzero_pd();
    __m256 guide[SAMPLER_NT];
    for (int k = 0; k < SAMPLER_NT; k++)
        guide[k] = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 8) {
        __m256 v = sampler_load8(l, j, n);
        __m256 e = sampler_weight8(v, m, inv_t);
        sampler_store8(w, j, n, e);
        za = sampler_acc_pd(za, e);
        if (minp_on) {
            e = _mm256_and_ps(e, _mm256_cmp_ps(v, _mm256_set1_ps(l_minp), _CMP_GE_OQ));
            zm = sampler_acc_pd(zm, e);
        }
        sampler_guide_add(guide, v, e, thr);
    }
    b->z_all = sampler_hsum4(za);
    b->z_minp = minp_on ? sampler_hsum4(zm) : b->z_all;
    sampler_guide_sum(guide, b->top.guide);
}

/* Range k of a level, clamped to the min-p limit: [lo, hi). */
static void sampler_level_range(const sampler_search *b, const sampler_level *lv, int k, float *lo,
                                float *hi) {
    *hi = k == 0 ? lv->hi : lv->thr[k - 1];
    *lo = k < SAMPLER_NT ? lv->thr[k] : lv->lo;
    *hi = *hi > b->l_minp ? *hi : b->l_minp;
    *lo = *lo > b->l_minp ? *lo : b->l_minp;
}

/* Sets lv to [lo, hi) cut at NT even thresholds (guides still to fill). Returns 0 if the
 * range has no width to cut (weights below max - 88 T are 0: that is the range's real floor). */
static int sampler_level_init(const sampler_search *b, sampler_level *lv, float lo, float hi) {
    float top = hi < b->m ? hi : b->m, bottom = b->m - 88.0f * b->temperature;
    bottom = lo > bottom ? lo : bottom;
    lv->lo = lo, lv->hi = hi;
    for (int k = 0; k < SAMPLER_NT; k++)
        lv->thr[k] = top - (top - bottom) * (float)(k + 1) / (float)(SAMPLER_NT + 1);
    return top > bottom;
}

/* Cuts the range scanned in b into the level lv and computes its guides in one pass over V.
 * Returns 0 if the range cannot be cut. */
static int sampler_level_split(const sampler_search *b, sampler_level *lv) {
    float lo = b->lo, hi = b->hi, thr[SAMPLER_NT];
    if (!sampler_level_init(b, lv, lo, hi))
        return 0;
    lv->base = b->before;
    memcpy(thr, lv->thr, sizeof(thr));
    __m256 guide[SAMPLER_NT];
    for (int k = 0; k < SAMPLER_NT; k++)
        guide[k] = _mm256_setzero_ps();
    for (int j = 0; j < b->n_vocab; j += 8) {
        __m256 v = sampler_load8(b->l, j, b->n_vocab), e = sampler_load8(b->w, j, b->n_vocab);
        __m256 in = _mm256_and_ps(_mm256_cmp_ps(v, _mm256_set1_ps(lo), _CMP_GE_OQ),
                                  _mm256_cmp_ps(v, _mm256_set1_ps(hi), _CMP_LT_OQ));
        sampler_guide_add(guide, v, _mm256_and_ps(e, in), thr);
    }
    sampler_guide_sum(guide, lv->guide);
    return 1;
}

/* Appends the tokens of bit mask (lanes of the chunk at j) to c[*n..] if they fit in cap, else
 * only counts them. *n only grows, so once a chunk does not fit none after it does: the list is
 * complete exactly when the final *n <= cap. */
static void sampler_gather_mask(const float *l, int j, unsigned mask, sampler_cand *c, int *n,
                                int cap) {
    if (*n + __builtin_popcount(mask) > cap) {
        *n += __builtin_popcount(mask);
        return;
    }
    for (; mask; mask &= mask - 1) {
        int id = j + __builtin_ctz(mask);
        c[(*n)++] = (sampler_cand){sampler_key(l[id]), id};
    }
}

/* After a capped scan that also gathered the n_above tokens above [lo, hi) into s->pre: if
 * both fit, joins them in front of the range, making s->cand the whole prefix [lo, +inf)
 * (running weight before it: 0), so later searches above lo need no pass over V. */
static void sampler_range_join(sampler_search *b, int n_above, int cap) {
    if (!b->gathered || b->n + n_above > cap)
        return;
    memmove(b->s->cand + n_above, b->s->cand, sizeof(sampler_cand) * (size_t)b->n);
    memcpy(b->s->cand, b->s->pre, sizeof(sampler_cand) * (size_t)n_above);
    b->hi = INFINITY, b->n += n_above, b->before = 0.0;
}

/* Counts the eligible tokens of [lo, hi), gathers them into s->cand (id order, unsorted) unless
 * there are more than cap, and computes b->before, the exact weight (double, fixed order) of
 * the eligible tokens >= hi. A capped scan also gathers the tokens above hi and, if all fit,
 * keeps the whole prefix (sampler_range_join); with `cut` it also fills b->sub, the range cut
 * into a level, saving a pass if it proves too big. One pass over V, none if already there. */
static void sampler_range_scan(sampler_search *b, float lo, float hi, int cap, int cut) {
    if (b->n >= 0 && b->lo == lo && b->hi == hi && (b->gathered || b->n > cap))
        return;
    int capped = cap < b->n_vocab, n = 0, n_above = 0;
    cut = cut && sampler_level_init(b, &b->sub, lo, hi);
    float thr[SAMPLER_NT];
    memcpy(thr, b->sub.thr, sizeof(thr));
    __m256 guide[SAMPLER_NT];
    for (int k = 0; k < SAMPLER_NT; k++)
        guide[k] = _mm256_setzero_ps();
    __m256d acc = _mm256_setzero_pd();
    for (int j = 0; j < b->n_vocab; j += 8) {
        __m256 v = sampler_load8(b->l, j, b->n_vocab), e = sampler_load8(b->w, j, b->n_vocab);
        __m256 above = _mm256_cmp_ps(v, _mm256_set1_ps(hi), _CMP_GE_OQ);
        __m256 in = _mm256_andnot_ps(above, _mm256_cmp_ps(v, _mm256_set1_ps(lo), _CMP_GE_OQ));
        acc = sampler_acc_pd(acc, _mm256_and_ps(e, above));
        if (cut)
            sampler_guide_add(guide, v, _mm256_and_ps(e, in), thr);
        unsigned pos = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(e, _mm256_setzero_ps(),
                                                                  _CMP_GT_OQ));
        unsigned up = (unsigned)_mm256_movemask_ps(above) & pos;
        sampler_gather_mask(b->l, j, (unsigned)_mm256_movemask_ps(in) & pos, b->s->cand, &n, cap);
        if (capped && up)
            sampler_gather_mask(b->l, j, up, b->s->pre, &n_above, cap);
    }
    b->lo = lo, b->hi = hi, b->n = n, b->sorted = 0, b->gathered = n <= cap;
    b->before = sampler_hsum4(acc);
    b->sub.base = b->before, b->has_sub = cut;
    sampler_guide_sum(guide, b->sub.guide);
    if (capped)
        sampler_range_join(b, n_above, cap);
}

/* 1 if range k of lv surely holds more than LEAF_MAX tokens: its guide mass over the largest
 * weight a token in it can have (its top logit's) is a lower bound on its count. */
static int sampler_level_big(const sampler_search *b, const sampler_level *lv, int k) {
    if (k == SAMPLER_NT)
        return 1; /* everything below the last threshold: usually the long tail */
    float lo, hi;
    sampler_level_range(b, lv, k, &lo, &hi);
    float mass = lv->guide[k] - (k > 0 ? lv->guide[k - 1] : 0.0f);
    float w_hi = expf(((hi < b->m ? hi : b->m) - b->m) / b->temperature);
    return mass > (float)SAMPLER_LEAF_MAX * w_hi;
}

/* Scans range k of lv (gathering up to LEAF_MAX tokens), moved up while the exact weight
 * before it has already crossed target (float guides can point one range too far). Returns
 * the k used. */
static int sampler_level_scan(sampler_search *b, const sampler_level *lv, int k, double target,
                              int strict) {
    for (;; k--) {
        float lo, hi;
        sampler_level_range(b, lv, k, &lo, &hi);
        sampler_range_scan(b, lo, hi, SAMPLER_LEAF_MAX, sampler_level_big(b, lv, k));
        if (k == 0 || !sampler_crossed(b->before, target, strict))
            return k; /* range 0 starts at the level's base, which has not crossed */
    }
}

/* The range of lv the guides put the crossing in: the first whose end has crossed. */
static int sampler_level_pick(const sampler_level *lv, double target, int strict) {
    int k = 0;
    while (k < SAMPLER_NT && !sampler_crossed(lv->base + (double)lv->guide[k], target, strict))
        k++;
    return k;
}

/* Walks the range in b (gathering it whole first if the scan stopped at the cap, then sorting),
 * adding weights to r->cum. Stops (returns 1) at the first token whose running weight crosses
 * target, or at *stop (also when the walk would pass it). r->c is the last token visited. */
static int sampler_walk_range(sampler_search *b, sampler_walked *r, double target, int strict,
                              const sampler_cand *stop) {
    sampler_range_scan(b, b->lo, b->hi, b->n_vocab, 0);
    if (!b->sorted)
        sampler_radix_sort(b->s->cand, b->s->tmp, b->n, b->s->radix);
    b->sorted = 1;
    for (int j = 0; j < b->n; j++) {
        r->c = b->s->cand[j];
        if (stop && sampler_before(*stop, r->c)) {
            r->c = *stop; /* rounding carried the walk past the nucleus end */
            return 1;
        }
        r->cum += b->w[r->c.id];
        if (sampler_crossed(r->cum, target, strict) || (stop && r->c.id == stop->id))
            return 1;
    }
    return 0;
}

/* Leaves in b the range where the running weight should cross target, lv/k naming it: a whole
 * prefix already at hand (k = NT of a level ending at its lo), else the range the guides point
 * to, cut into finer levels while it holds more than LEAF_MAX tokens. */
static void sampler_descend(sampler_search *b, sampler_level *lv, int *k, double target,
                            int strict) {
    if (b->gathered && b->hi == INFINITY) {
        lv->lo = b->lo, *k = SAMPLER_NT;
        return;
    }
    for (int depth = 1;; depth++) {
        *k = sampler_level_scan(b, lv, sampler_level_pick(lv, target, strict), target, strict);
        if (b->n <= SAMPLER_LEAF_MAX || depth == SAMPLER_DEPTH_MAX)
            return;
        if (b->has_sub)
            *lv = b->sub; /* the scan already cut the range */
        else if (!sampler_level_split(b, lv))
            return;
    }
}

/* The range after range k of lv: k + 1, then everything eligible below lv (k = NT + 1).
 * 0 if there is none. */
static int sampler_next_range(const sampler_search *b, const sampler_level *lv, int *k, float *lo,
                              float *hi) {
    if (*k < SAMPLER_NT) {
        sampler_level_range(b, lv, ++*k, lo, hi);
        return 1;
    }
    if (*k > SAMPLER_NT || !(lv->lo > b->l_minp))
        return 0;
    *k = SAMPLER_NT + 1, *lo = b->l_minp, *hi = lv->lo;
    return 1;
}

/* The token where the running weight crosses target (or *stop, or the last eligible token if
 * rounding leaves it uncrossed), with the running weight there: descends to a small range,
 * walks it and, if rounding put the crossing just beyond, the ranges after it. */
static sampler_walked sampler_find(sampler_search *b, double target, int strict,
                                   const sampler_cand *stop) {
    sampler_level lv = b->top;
    int k;
    float lo, hi;
    sampler_descend(b, &lv, &k, target, strict);
    sampler_walked r = {{0, -1}, b->before};
    while (!sampler_walk_range(b, &r, target, strict, stop) &&
           sampler_next_range(b, &lv, &k, &lo, &hi))
        sampler_range_scan(b, lo, hi, b->n_vocab, 0);
    if (r.c.id < 0 && stop)
        r.c = *stop; /* nothing left to walk (rounding at the very end): the nucleus end */
    return r;
}

/* Top-p's nucleus end (if on), then the draw inside the kept prefix. */
static int sampler_sample_levels(const sampler_params *p, const float *l, int n_vocab, float m,
                                 double u, sampler_work *s, float *logprob) {
    sampler_search b = {.l = l, .w = s->w, .n_vocab = n_vocab, .m = m,
                       .temperature = p->temperature, .s = s, .n = -1};
    b.l_minp = sampler_minp_logit(m, p->temperature, p->min_p);
    b.top.lo = b.l_minp, b.top.hi = INFINITY, b.top.base = 0.0;
    for (int k = 0; k < SAMPLER_NT; k++)
        b.top.thr[k] = m - sampler_top_depth[k] * p->temperature;
    sampler_weigh_all(&b, s->w);
    double total = b.z_minp;
    sampler_walked end = {{0, -1}, 0.0};
    if (p->top_p < 1.0f) {
        end = sampler_find(&b, (double)p->top_p * b.z_all, 0, NULL);
        total = end.cum; /* the nucleus, or all eligible tokens if min-p cut first */
    }
    sampler_walked pick = sampler_find(&b, u * total, 1, end.c.id >= 0 ? &end.c : NULL);
    if (pick.c.id < 0) /* cannot happen (the max token is eligible); stay in bounds anyway */
        pick.c.id = sampler_first_eq(l, n_vocab, m);
    *logprob = (float)log((double)s->w[pick.c.id] / total);
    return pick.c.id;
}

/* ---------------------------------------------------------------- entry */

/* Temperature > 0: choose the path, draw. -1 if no token has a logit above -inf. */
static int sampler_sample_temp(const sampler_params *p, const float *logits, int n_vocab,
                               uint64_t i, sampler_work *s, float *logprob) {
    float m = sampler_max(logits, n_vocab);
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
    return sampler_sample_levels(p, logits, n_vocab, m, u, s, logprob);
}

int sampler_sample(const sampler_params *p, float *logits, int n_vocab, const int *history,
                   int n_hist, uint64_t i, void *scratch, float *logprob) {
    float lp = 0.0f;
    int id = -1;
    if (n_vocab > 0) {
        sampler_work s = sampler_work_carve(scratch, n_vocab);
        sampler_apply_bias(p, logits, n_vocab);
        sampler_apply_penalties(p, logits, n_vocab, history, n_hist, s.count);
        id = p->temperature == 0.0f ? sampler_argmax(logits, n_vocab)
                                    : sampler_sample_temp(p, logits, n_vocab, i, &s, &lp);
    }
    if (logprob)
        *logprob = id >= 0 ? lp : 0.0f;
    return id;
}

int sampler_top_logprobs(const float *logits, int n_vocab, int token, int n, int *out_id, float *out_lp) {
    if (token < 0 || token >= n_vocab) return 0;
    float max = -INFINITY;
    for (int v = 0; v < n_vocab; v++)
        if (logits[v] > max) max = logits[v]; /* NaN compares false: skipped */
    if (!isfinite(max)) return 0;
    double sum = 0.0;
    for (int v = 0; v < n_vocab; v++)
        if (logits[v] > -INFINITY) sum += exp((double)logits[v] - max);
    double log_z = (double)max + log(sum);
    int k = 0; /* out_id[1..k]: the best so far, in order */
    for (int v = 0; v < n_vocab && n > 0; v++) {
        float l = logits[v];
        if (!(l > -INFINITY)) continue;
        if (k == n && !(l > logits[out_id[k]])) continue; /* ties keep the lower id */
        int j = k < n ? ++k : k;
        while (j > 1 && l > logits[out_id[j - 1]]) {
            out_id[j] = out_id[j - 1];
            j--;
        }
        out_id[j] = v;
    }
    out_id[0] = token;
    for (int i = 0; i <= k; i++) {
        float l = logits[out_id[i]];
        out_lp[i] = l > -INFINITY ? (float)((double)l - log_z) : -INFINITY;
    }
    return 1 + k;
}
