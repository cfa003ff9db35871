/* test_sampler.c — the sampler against independent references.
 *
 * The reference (ref_sample) is the naive reading of sampler.h: apply the edits with O(n^2)
 * history scans, qsort every candidate, weights in double, cut top-k / top-p / min-p on the sorted
 * array and walk it. The sampler must return the same token for the same (seed, i) and a
 * log-probability within rounding, on fixed modes and on random vocab sizes, logits and
 * parameters; a draw whose top-p, min-p or draw boundary lies within float rounding of its
 * threshold is "too close to call" and only counted. Distributions are checked with a chi-square
 * statistic over many i. The scratch is misaligned and full of garbage on purpose. Timings are
 * printed, not asserted. */
#include "check.h"
#include "sampler.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define V_GPT2 50257
#define CHI2_MAX 35.0 /* chi-square bound for <= 8 categories (p < 1e-4 for 7 dof) */

/* ---------------------------------------------------------------- helpers */

/* xorshift64*: the test's own generator for inputs (independent of the sampler's RNG). */
static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static double rng_unit(uint64_t *s) {
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

/* n normal(0, sd) logits. */
static void fill_normal(float *x, int n, float sd, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
    for (int j = 0; j < n; j++) {
        double u1 = rng_unit(&s), u2 = rng_unit(&s);
        x[j] = (float)(sd * sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2));
    }
}

/* Scratch for V at an odd address with garbage in it: the sampler must not care. */
static void *scratch_new(int n_vocab, char **base) {
    size_t n = sampler_scratch_size(n_vocab);
    *base = malloc(n + 3);
    memset(*base, 0xA5, n + 3);
    return *base + 3;
}

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Softmax of x / t (n <= 64) in double. */
static void softmax_ref(const float *x, int n, double t, double *p) {
    double m = -INFINITY, z = 0.0;
    for (int j = 0; j < n; j++)
        m = fmax(m, x[j] / t);
    for (int j = 0; j < n; j++)
        z += (p[j] = exp(x[j] / t - m));
    for (int j = 0; j < n; j++)
        p[j] /= z;
}

/* Pearson chi-square of observed counts against probabilities p; categories with p = 0 must be
 * empty (else +inf). */
static double chi2(const int *obs, const double *p, int n, int total) {
    double x = 0.0;
    for (int j = 0; j < n; j++) {
        double e = p[j] * total;
        if (e == 0.0) {
            if (obs[j] != 0)
                return INFINITY;
            continue;
        }
        x += (obs[j] - e) * (obs[j] - e) / e;
    }
    return x;
}

/* ---------------------------------------------------------------- the naive reference */

typedef struct {
    float z;
    int id;
} ref_cand;

static int ref_cmp(const void *a, const void *b) {
    const ref_cand *x = a, *y = b;
    if (x->z != y->z)
        return x->z > y->z ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Bias and penalties, the slow way: each history id is penalized at its first occurrence with a
 * count found by rescanning. */
static void ref_edit(const sampler_params *p, float *l, int n_vocab, const int *hist, int nh) {
    for (int k = 0; k < p->n_bias; k++)
        l[p->bias_id[k]] += p->bias[k];
    for (int i = 0; i < nh; i++) {
        int id = hist[i], seen = 0, count = 0;
        if (id < 0 || id >= n_vocab)
            continue;
        for (int j = 0; j < i; j++)
            seen |= hist[j] == id;
        if (seen)
            continue;
        for (int j = 0; j < nh; j++)
            count += hist[j] == id;
        float x = l[id];
        if (p->repetition_penalty != 1.0f)
            x = x > 0.0f ? x / p->repetition_penalty : x * p->repetition_penalty;
        if (p->presence_penalty != 0.0f)
            x -= p->presence_penalty;
        if (p->frequency_penalty != 0.0f)
            x -= (float)count * p->frequency_penalty;
        l[id] = x;
    }
}

#define REF_TOL 3e-7 /* a decision closer than this (relative) to its threshold is "ambiguous" */

/* 1 if x and y are within REF_TOL of each other relative to scale. */
static int ref_near(double x, double y, double scale) {
    return fabs(x - y) <= REF_TOL * scale;
}

/* The whole pipeline on a full qsort, weights in double. Returns the token (or -1), the
 * log-probability in *lp, and in *ambiguous whether a float implementation may legitimately
 * decide otherwise (a top-p, min-p or draw boundary within rounding of its threshold). */
static int ref_sample(const sampler_params *p, const float *in, int n_vocab, const int *hist,
                      int nh, uint64_t i, float *lp, int *ambiguous) {
    float *l = malloc(sizeof(float) * (size_t)n_vocab);
    ref_cand *c = malloc(sizeof(ref_cand) * (size_t)n_vocab);
    double *w = malloc(sizeof(double) * (size_t)n_vocab);
    memcpy(l, in, sizeof(float) * (size_t)n_vocab);
    ref_edit(p, l, n_vocab, hist, nh);
    int n = 0, id = -1, amb = 0;
    *lp = 0.0f;
    for (int j = 0; j < n_vocab; j++)
        if (!isnan(l[j]) && l[j] != -INFINITY)
            c[n++] = (ref_cand){l[j], j};
    qsort(c, (size_t)n, sizeof(*c), ref_cmp);
    if (n > 0 && p->temperature == 0.0f) {
        id = c[0].id;
    } else if (n > 0) {
        if (p->top_k > 0 && p->top_k < n)
            n = p->top_k;
        double z_all = 0.0, total = 0.0, cum = 0.0, prev;
        for (int j = 0; j < n; j++) {
            if (c[0].z == INFINITY)
                w[j] = c[j].z == INFINITY;
            else
                w[j] = exp(((double)c[j].z - c[0].z) / p->temperature);
            z_all += w[j];
        }
        if (p->top_p < 1.0f)
            for (int j = 0; j < n; j++) {
                prev = cum;
                cum += w[j];
                if (cum >= p->top_p * z_all) {
                    amb |= ref_near(cum, p->top_p * z_all, z_all) ||
                           ref_near(prev, p->top_p * z_all, z_all);
                    n = j + 1;
                    break;
                }
            }
        for (int j = 0; j < n; j++)
            if (w[j] < p->min_p * w[0] || w[j] < 1e-37) { /* float weights flush to 0 there */
                if (p->min_p > 0.0f) /* the max itself is always kept */
                    amb |= ref_near(w[j], p->min_p * w[0], w[0]) ||
                           (j > 1 && ref_near(w[j - 1], p->min_p * w[0], w[0]));
                n = j;
                break;
            }
        for (int j = 0; j < n; j++)
            total += w[j];
        double target = sampler_uniform(p->seed, i) * total;
        int pick = n - 1;
        cum = 0.0;
        for (int j = 0; j < n; j++) {
            prev = cum;
            cum += w[j];
            if (cum > target) {
                amb |= ref_near(cum, target, total) || ref_near(prev, target, total);
                pick = j;
                break;
            }
        }
        id = c[pick].id;
        *lp = (float)log(w[pick] / total);
    }
    *ambiguous = amb;
    free(l);
    free(c);
    free(w);
    return id;
}

/* ---------------------------------------------------------------- tests */

static void test_defaults_and_validation(void) {
    sampler_params p;
    char err[160];
    sampler_params_default(&p);
    check(p.temperature == 0.0f && p.top_k == 0 && p.top_p == 1.0f && p.min_p == 0.0f &&
              p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f &&
              p.frequency_penalty == 0.0f && p.seed == 0 && p.n_bias == 0,
          "defaults are neutral");
    check(sampler_params_validate(&p, V_GPT2, err, sizeof(err)) == 0, "defaults valid");

    sampler_params ok = p;
    ok.temperature = 1.5f, ok.top_k = 40, ok.top_p = 1.0f, ok.min_p = 1.0f;
    ok.repetition_penalty = 1.2f, ok.presence_penalty = -2.0f, ok.frequency_penalty = 2.0f;
    ok.n_bias = 2, ok.bias_id[0] = 0, ok.bias[0] = -INFINITY, ok.bias_id[1] = V_GPT2 - 1;
    ok.bias[1] = INFINITY;
    check(sampler_params_validate(&ok, V_GPT2, err, sizeof(err)) == 0, "edge values valid: %s",
          err);

    /* Each case: one field broken, the message must name it. */
#define EXPECT_BAD(stmt, name)                                                                  \
    do {                                                                                        \
        sampler_params q = p;                                                                   \
        stmt;                                                                                   \
        err[0] = 0;                                                                             \
        int rc = sampler_params_validate(&q, V_GPT2, err, sizeof(err));                         \
        check(rc == -1 && strstr(err, name) != NULL, "%s rejected naming %s: rc %d, '%s'",      \
              #stmt, name, rc, err);                                                            \
    } while (0)
    EXPECT_BAD(q.temperature = -0.1f, "temperature");
    EXPECT_BAD(q.temperature = NAN, "temperature");
    EXPECT_BAD(q.temperature = INFINITY, "temperature");
    EXPECT_BAD(q.top_k = -1, "top_k");
    EXPECT_BAD(q.top_p = 0.0f, "top_p");
    EXPECT_BAD(q.top_p = 1.5f, "top_p");
    EXPECT_BAD(q.top_p = NAN, "top_p");
    EXPECT_BAD(q.min_p = -0.01f, "min_p");
    EXPECT_BAD(q.min_p = 1.01f, "min_p");
    EXPECT_BAD(q.min_p = NAN, "min_p");
    EXPECT_BAD(q.repetition_penalty = 0.0f, "repetition_penalty");
    EXPECT_BAD(q.repetition_penalty = -1.0f, "repetition_penalty");
    EXPECT_BAD(q.repetition_penalty = INFINITY, "repetition_penalty");
    EXPECT_BAD(q.repetition_penalty = NAN, "repetition_penalty");
    EXPECT_BAD(q.presence_penalty = 2.5f, "presence_penalty");
    EXPECT_BAD(q.presence_penalty = NAN, "presence_penalty");
    EXPECT_BAD(q.presence_penalty = -INFINITY, "presence_penalty");
    EXPECT_BAD(q.frequency_penalty = -2.01f, "frequency_penalty");
    EXPECT_BAD(q.frequency_penalty = NAN, "frequency_penalty");
    EXPECT_BAD(q.n_bias = -1, "n_bias");
    EXPECT_BAD(q.n_bias = SAMPLER_MAX_BIAS + 1, "n_bias");
    EXPECT_BAD((q.n_bias = 1, q.bias_id[0] = -1), "logit_bias");
    EXPECT_BAD((q.n_bias = 1, q.bias_id[0] = V_GPT2), "logit_bias");
    EXPECT_BAD((q.n_bias = 2, q.bias_id[1] = 7, q.bias[1] = NAN), "logit_bias");
#undef EXPECT_BAD
    sampler_params q = p;
    q.top_p = 1.5f;
    sampler_params_validate(&q, V_GPT2, err, sizeof(err));
    check(strcmp(err, "top_p must be in (0, 1], got 1.5") == 0, "message format: '%s'", err);
    check(sampler_params_validate(&q, V_GPT2, NULL, 0) == -1, "NULL err is fine");
}

static void test_uniform(void) {
    int in_range = 1, distinct_i = 1, distinct_seed = 1;
    double sum = 0.0;
    for (uint64_t i = 0; i < 100000; i++) {
        double u = sampler_uniform(42, i);
        in_range &= u >= 0.0 && u < 1.0;
        sum += u;
        if (i > 0)
            distinct_i &= u != sampler_uniform(42, i - 1);
        distinct_seed &= u != sampler_uniform(43, i);
    }
    check(in_range, "uniform in [0, 1)");
    check(distinct_i, "uniform differs across consecutive i");
    check(distinct_seed, "uniform differs across seeds");
    check(fabs(sum / 100000 - 0.5) < 0.005, "uniform mean %.4f ~ 0.5", sum / 100000);
    check(sampler_uniform(7, 3) == sampler_uniform(7, 3), "uniform is a pure function");
    check(sampler_uniform(0, 0) != sampler_uniform(1, 0) && sampler_uniform(0, 0) !=
                                                               sampler_uniform(0, 1),
          "seed 0 / index 0 not degenerate");
}

static void test_greedy(void *scr) {
    sampler_params p;
    sampler_params_default(&p);
    float l[8] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, NAN, -INFINITY, 1.0f};
    float lp = 1.0f;
    int id = sampler_sample(&p, l, 8, NULL, 0, 0, scr, &lp);
    check(id == 1, "greedy picks argmax, lowest id on ties: %d", id);
    check(lp == 0.0f, "greedy logprob 0: %g", (double)lp);

    float l2[4] = {NAN, NAN, NAN, NAN};
    check(sampler_sample(&p, l2, 4, NULL, 0, 0, scr, &lp) == -1, "all NaN -> -1");
    float l3[3] = {-INFINITY, -INFINITY, -INFINITY};
    check(sampler_sample(&p, l3, 3, NULL, 0, 0, scr, NULL) == -1, "all -inf -> -1");
    p.temperature = 1.0f;
    float l4[3] = {-INFINITY, NAN, -INFINITY};
    check(sampler_sample(&p, l4, 3, NULL, 0, 0, scr, &lp) == -1 && lp == 0.0f,
          "nothing drawable -> -1 when sampling too");

    /* argmax on a big random row against a plain scan */
    float *big = malloc(sizeof(float) * V_GPT2);
    fill_normal(big, V_GPT2, 2.0f, 11);
    big[777] = big[30000] = 40.0f;
    int want = 0;
    for (int j = 1; j < V_GPT2; j++)
        if (big[j] > big[want])
            want = j;
    sampler_params_default(&p);
    check(sampler_sample(&p, big, V_GPT2, NULL, 0, 0, scr, NULL) == want && want == 777,
          "greedy on V=50257 ties to lowest id");
    free(big);
}

static void test_bias(void *scr) {
    sampler_params p;
    sampler_params_default(&p);
    float l[5] = {1.0f, 4.0f, 2.0f, 0.0f, -1.0f};
    p.n_bias = 3;
    p.bias_id[0] = 1, p.bias[0] = -INFINITY;
    p.bias_id[1] = 3, p.bias[1] = 1.5f;
    p.bias_id[2] = 3, p.bias[2] = 0.25f; /* entries for one id add up */
    int id = sampler_sample(&p, l, 5, NULL, 0, 0, scr, NULL);
    check(id == 2, "-inf bias bans the argmax: got %d", id);
    check(l[3] == 1.75f && l[0] == 1.0f && l[1] == -INFINITY, "bias values added: %g %g",
          (double)l[3], (double)l[1]);

    /* sampling never draws a banned token */
    float base[5] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    p.temperature = 1.0f;
    p.n_bias = 1;
    p.bias_id[0] = 2, p.bias[0] = -INFINITY;
    int hits[5] = {0};
    for (uint64_t i = 0; i < 5000; i++) {
        float x[5];
        memcpy(x, base, sizeof(x));
        hits[sampler_sample(&p, x, 5, NULL, 0, i, scr, NULL)]++;
    }
    check(hits[2] == 0 && hits[0] > 0 && hits[1] > 0 && hits[3] > 0 && hits[4] > 0,
          "banned token never drawn, others are: %d %d %d %d %d", hits[0], hits[1], hits[2],
          hits[3], hits[4]);

    /* +inf bias: that token always (logprob 0); two of them share the mass */
    p.n_bias = 1;
    p.bias_id[0] = 4, p.bias[0] = INFINITY;
    float lp = -1.0f;
    int always = 1;
    for (uint64_t i = 0; i < 200; i++) {
        float x[5];
        memcpy(x, base, sizeof(x));
        always &= sampler_sample(&p, x, 5, NULL, 0, i, scr, &lp) == 4 && lp == 0.0f;
    }
    check(always, "+inf bias always drawn with logprob 0");
    p.n_bias = 2;
    p.bias_id[1] = 0, p.bias[1] = INFINITY;
    int n0 = 0, n4 = 0;
    for (uint64_t i = 0; i < 2000; i++) {
        float x[5];
        memcpy(x, base, sizeof(x));
        int t = sampler_sample(&p, x, 5, NULL, 0, i, scr, &lp);
        n0 += t == 0, n4 += t == 4;
    }
    check(n0 + n4 == 2000 && n0 > 850 && n4 > 850, "two +inf tokens split: %d %d", n0, n4);
}

/* Penalties under greedy (no scaling), so logits afterwards are the edited values exactly. */
static void test_penalties(void *scr) {
    sampler_params p;
    sampler_params_default(&p);
    /* ids:            0     1     2      3     4     5 */
    float base[6] = {2.0f, -1.0f, 0.5f, 3.0f, 0.0f, -4.0f};
    int hist[] = {0, 1, 1, 3, 1, 0, 4, 99, -5}; /* counts: 0:2 1:3 3:1 4:1; 99, -5 ignored */
    int nh = (int)(sizeof(hist) / sizeof(hist[0]));
    float l[6];

    p.repetition_penalty = 2.0f;
    memcpy(l, base, sizeof(l));
    sampler_sample(&p, l, 6, hist, nh, 0, scr, NULL);
    check(l[0] == 1.0f && l[1] == -2.0f && l[2] == 0.5f && l[3] == 1.5f && l[4] == 0.0f &&
              l[5] == -4.0f,
          "repetition: %g %g %g %g %g %g", (double)l[0], (double)l[1], (double)l[2],
          (double)l[3], (double)l[4], (double)l[5]);

    sampler_params_default(&p);
    p.presence_penalty = 0.5f;
    memcpy(l, base, sizeof(l));
    sampler_sample(&p, l, 6, hist, nh, 0, scr, NULL);
    check(l[0] == 1.5f && l[1] == -1.5f && l[2] == 0.5f && l[3] == 2.5f && l[4] == -0.5f &&
              l[5] == -4.0f,
          "presence subtracts once");

    sampler_params_default(&p);
    p.frequency_penalty = 0.25f;
    memcpy(l, base, sizeof(l));
    sampler_sample(&p, l, 6, hist, nh, 0, scr, NULL);
    check(l[0] == 1.5f && l[1] == -1.75f && l[2] == 0.5f && l[3] == 2.75f && l[4] == -0.25f &&
              l[5] == -4.0f,
          "frequency subtracts count * penalty: %g %g", (double)l[0], (double)l[1]);

    sampler_params_default(&p);
    p.repetition_penalty = 1.3f, p.presence_penalty = 0.7f, p.frequency_penalty = -0.3f;
    p.n_bias = 1, p.bias_id[0] = 2, p.bias[0] = 0.125f;
    float want[6];
    memcpy(want, base, sizeof(want));
    ref_edit(&p, want, 6, hist, nh);
    memcpy(l, base, sizeof(l));
    sampler_sample(&p, l, 6, hist, nh, 0, scr, NULL);
    check(memcmp(l, want, sizeof(l)) == 0, "combined penalties match the reference bit for bit");
    float by_hand = 2.0f / 1.3f - 0.7f - 2.0f * -0.3f;
    check(l[0] == by_hand, "combined on id 0: %.9g vs %.9g", (double)l[0], (double)by_hand);

    /* greedy follows the penalized logits: 3 is best until penalized below 0 */
    sampler_params_default(&p);
    p.presence_penalty = 2.0f;
    memcpy(l, base, sizeof(l));
    int id = sampler_sample(&p, l, 6, hist, nh, 0, scr, NULL);
    check(id == 3 && l[3] == 1.0f, "penalized greedy pick: %d", id);
    int hist2[] = {3, 3, 3, 3};
    p.presence_penalty = 0.0f, p.frequency_penalty = 2.0f;
    memcpy(l, base, sizeof(l));
    id = sampler_sample(&p, l, 6, hist2, 4, 0, scr, NULL);
    check(id == 0 && l[3] == -5.0f, "frequency moves greedy off a repeated token: %d %g", id,
          (double)l[3]);
}

/* Same (seed, i) -> same draw, whatever the order of calls; different seeds differ. */
static void test_determinism(void *scr) {
    enum { N = 64, VV = 1000 };
    float *base = malloc(sizeof(float) * VV), *x = malloc(sizeof(float) * VV);
    fill_normal(base, VV, 1.0f, 5);
    sampler_params p;
    sampler_params_default(&p);
    p.temperature = 0.9f, p.top_p = 0.9f, p.seed = 1234;
    int fwd[N], rev[N], other[N];
    float lpf[N], lpr[N];
    for (int i = 0; i < N; i++) {
        memcpy(x, base, sizeof(float) * VV);
        fwd[i] = sampler_sample(&p, x, VV, NULL, 0, (uint64_t)i, scr, &lpf[i]);
    }
    for (int i = N - 1; i >= 0; i--) { /* i = 63 first, then ..., 5, ..., 0 */
        memcpy(x, base, sizeof(float) * VV);
        rev[i] = sampler_sample(&p, x, VV, NULL, 0, (uint64_t)i, scr, &lpr[i]);
    }
    p.seed = 1235;
    int same_seed_diff = 0, same = 1;
    for (int i = 0; i < N; i++) {
        memcpy(x, base, sizeof(float) * VV);
        other[i] = sampler_sample(&p, x, VV, NULL, 0, (uint64_t)i, scr, NULL);
        same &= fwd[i] == rev[i] && lpf[i] == lpr[i];
        same_seed_diff += other[i] != fwd[i];
    }
    check(same, "draws independent of call order");
    check(same_seed_diff > N / 2, "another seed gives other draws: %d of %d differ",
          same_seed_diff, N);
    int distinct = 0;
    for (int i = 1; i < N; i++)
        distinct += fwd[i] != fwd[0];
    check(distinct > N / 2, "draws vary with i");
    free(base);
    free(x);
}

/* Draws n_draw tokens from a small vocab (logits copied fresh each time), counts into hits. */
static void draw_many(const sampler_params *p, const float *l, int n, int n_draw, void *scr,
                      int *hits) {
    float x[64];
    memset(hits, 0, sizeof(int) * (size_t)n);
    for (int i = 0; i < n_draw; i++) {
        memcpy(x, l, sizeof(float) * (size_t)n);
        int t = sampler_sample(p, x, n, NULL, 0, (uint64_t)i, scr, NULL);
        if (t >= 0 && t < n)
            hits[t]++;
    }
}

static void test_distribution(void *scr) {
    enum { N = 20000 };
    float l[5] = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f};
    double pr[5];
    int hits[5];
    sampler_params p;
    sampler_params_default(&p);
    p.temperature = 0.7f, p.seed = 99;
    softmax_ref(l, 5, 0.7, pr);
    draw_many(&p, l, 5, N, scr, hits);
    double x2 = chi2(hits, pr, 5, N);
    check(x2 < CHI2_MAX, "softmax(l/T) empirical chi2 %.2f (4 dof)", x2);

    float x[5], lp;
    double max_err = 0.0;
    for (uint64_t i = 0; i < 50; i++) {
        memcpy(x, l, sizeof(x));
        int t = sampler_sample(&p, x, 5, NULL, 0, i, scr, &lp);
        max_err = fmax(max_err, fabs(lp - log(pr[t])));
    }
    check(max_err < 1e-5, "logprob = log softmax: max diff %.3g", max_err);
    printf("  softmax T=0.7: chi2 %.2f, logprob max diff %.3g\n", x2, max_err);

    p.temperature = 2.5f;
    softmax_ref(l, 5, 2.5, pr);
    draw_many(&p, l, 5, N, scr, hits);
    check(chi2(hits, pr, 5, N) < CHI2_MAX, "softmax T=2.5 chi2 %.2f", chi2(hits, pr, 5, N));
}

/* 8 tokens with known probabilities: filters keep exactly the reference set and the
 * renormalized probabilities. */
static void test_filters(void *scr) {
    enum { N = 20000, K = 8 };
    /* probabilities at T=1 roughly .39 .24 .14 .09 .05 .03 .02 .01 (in shuffled id order) */
    float l[K] = {0.0f, 2.0f, -1.0f, 1.5f, -0.5f, 1.0f, -2.0f, 0.5f};
    int order[K] = {1, 3, 5, 7, 0, 4, 2, 6}; /* ids by descending logit */
    double pr[K], keep[K];
    int hits[K];
    softmax_ref(l, K, 1.0, pr);
    sampler_params p;
    sampler_params_default(&p);
    p.temperature = 1.0f, p.seed = 7;

    /* top-p 0.7: the smallest prefix with mass >= 0.7 */
    p.top_p = 0.7f;
    double cum = 0.0;
    int n_nuc = 0;
    while (cum < 0.7)
        cum += pr[order[n_nuc++]];
    memset(keep, 0, sizeof(keep));
    for (int j = 0; j < n_nuc; j++)
        keep[order[j]] = pr[order[j]] / cum;
    draw_many(&p, l, K, N, scr, hits);
    int inside_ok = 1, outside_ok = 1;
    for (int j = 0; j < K; j++) {
        if (keep[j] > 0)
            inside_ok &= hits[j] > 0;
        else
            outside_ok &= hits[j] == 0;
    }
    check(n_nuc == 3, "reference nucleus has 3 tokens (%d)", n_nuc);
    check(outside_ok, "top-p: tokens outside the nucleus never drawn");
    check(inside_ok, "top-p: every token of the nucleus drawn");
    check(chi2(hits, keep, K, N) < CHI2_MAX, "top-p renormalized chi2 %.2f",
          chi2(hits, keep, K, N));
    float x[K], lp;
    memcpy(x, l, sizeof(x));
    int t = sampler_sample(&p, x, K, NULL, 0, 0, scr, &lp);
    check(fabs(lp - log(keep[t])) < 1e-5, "top-p logprob renormalized: %g vs %g", (double)lp,
          log(keep[t]));

    /* min-p 0.2: drop p < 0.2 * p_max */
    sampler_params_default(&p);
    p.temperature = 1.0f, p.seed = 8, p.min_p = 0.2f;
    double pmax = pr[1], tot = 0.0;
    for (int j = 0; j < K; j++)
        tot += (keep[j] = pr[j] >= 0.2 * pmax ? pr[j] : 0.0);
    for (int j = 0; j < K; j++)
        keep[j] /= tot;
    draw_many(&p, l, K, N, scr, hits);
    int n_keep = 0;
    inside_ok = outside_ok = 1;
    for (int j = 0; j < K; j++) {
        n_keep += keep[j] > 0;
        if (keep[j] > 0)
            inside_ok &= hits[j] > 0;
        else
            outside_ok &= hits[j] == 0;
    }
    check(n_keep == 4 && outside_ok && inside_ok, "min-p keeps exactly %d tokens", n_keep);
    check(chi2(hits, keep, K, N) < CHI2_MAX, "min-p renormalized chi2 %.2f",
          chi2(hits, keep, K, N));

    /* top-k 3 */
    sampler_params_default(&p);
    p.temperature = 1.0f, p.seed = 9, p.top_k = 3;
    memset(keep, 0, sizeof(keep));
    tot = pr[1] + pr[3] + pr[5];
    keep[1] = pr[1] / tot, keep[3] = pr[3] / tot, keep[5] = pr[5] / tot;
    draw_many(&p, l, K, N, scr, hits);
    check(hits[1] + hits[3] + hits[5] == N && hits[1] && hits[3] && hits[5],
          "top-k 3 draws only the top 3");
    check(chi2(hits, keep, K, N) < CHI2_MAX, "top-k renormalized chi2 %.2f",
          chi2(hits, keep, K, N));
}

/* top-k 1 is greedy on the same logits, for any temperature and i. */
static void test_top_k1_is_greedy(void *scr) {
    float *base = malloc(sizeof(float) * V_GPT2), *x = malloc(sizeof(float) * V_GPT2);
    sampler_params g, p;
    sampler_params_default(&g);
    sampler_params_default(&p);
    p.top_k = 1;
    int ok = 1;
    for (int r = 0; r < 8; r++) {
        fill_normal(base, V_GPT2, 3.0f, 100 + (uint64_t)r);
        memcpy(x, base, sizeof(float) * V_GPT2);
        int want = sampler_sample(&g, x, V_GPT2, NULL, 0, 0, scr, NULL);
        p.temperature = 0.3f + 0.4f * (float)r;
        float lp;
        memcpy(x, base, sizeof(float) * V_GPT2);
        ok &= sampler_sample(&p, x, V_GPT2, NULL, 0, (uint64_t)r * 31, scr, &lp) == want &&
              lp == 0.0f;
    }
    check(ok, "top_k = 1 equals greedy (logprob 0)");
    free(base);
    free(x);
}

/* Every mode on V = 50257 against the naive reference: same token for each i, logprob close. */
static void test_against_reference(void *scr) {
    enum { DRAWS = 40 };
    struct {
        const char *name;
        float sd;      /* logit spread: small = flat distribution, large = peaky */
        int ties;      /* 1: logits take 13 values (ties everywhere); 2: all equal */
        float t, top_p, min_p, rep, pres, freq;
        int top_k;
        int loose;     /* 1: boundaries lie within float rounding by design (only count) */
    } mode[] = {
        {"greedy", 2, 0, 0.0f, 1, 0, 1.3f, 0.4f, 0.1f, 0, 0},
        {"temperature only, flat", 1, 0, 1.0f, 1, 0, 1, 0, 0, 0, 0},
        {"temperature only, peaky", 6, 0, 0.8f, 1, 0, 1, 0, 0, 0, 0},
        {"top_p 0.95 flat", 1, 0, 0.8f, 0.95f, 0, 1, 0, 0, 0, 0},
        {"top_p 0.95 peaky", 5, 0, 0.8f, 0.95f, 0, 1, 0, 0, 0, 0},
        {"top_p 0.5 peaky", 8, 0, 1.0f, 0.5f, 0, 1, 0, 0, 0, 0},
        {"min_p 0.05", 3, 0, 1.0f, 1, 0.05f, 1, 0, 0, 0, 0},
        {"top_p + min_p", 2, 0, 0.7f, 0.9f, 0.01f, 1, 0, 0, 0, 0},
        {"top_k 40", 2, 0, 0.8f, 1, 0, 1, 0, 0, 40, 0},
        {"top_k 40 + top_p 0.9 + min_p", 2, 0, 0.8f, 0.9f, 0.1f, 1, 0, 0, 40, 0},
        {"top_k 5000 (sort path)", 2, 0, 1.1f, 0.97f, 0, 1, 0, 0, 5000, 0},
        {"ties, top_p", 0, 1, 1.0f, 0.6f, 0, 1, 0, 0, 0, 0},
        {"ties, top_k 100", 0, 1, 1.0f, 1, 0, 1, 0, 0, 100, 0},
        {"ties, temperature only", 0, 1, 1.0f, 1, 0, 1, 0, 0, 0, 0},
        {"penalties + top_p", 2, 0, 0.9f, 0.9f, 0, 1.2f, 0.5f, 0.3f, 0, 0},
        {"tiny temperature", 2, 0, 1e-4f, 1, 0, 1, 0, 0, 0, 0},
        {"top_p 0.999 peaky (deep tail)", 4, 0, 1.0f, 0.999f, 0, 1, 0, 0, 0, 1},
        {"top_p 1e-6 (top token only)", 1, 0, 1.0f, 1e-6f, 0, 1, 0, 0, 0, 0},
        {"all logits equal, top_p 0.5", 0, 2, 1.0f, 0.5f, 0, 1, 0, 0, 0, 0},
        {"all logits equal, min_p 1", 0, 2, 1.0f, 1, 1.0f, 1, 0, 0, 0, 0},
        {"high temperature 5, top_p 0.9", 3, 0, 5.0f, 0.9f, 0, 1, 0, 0, 0, 0},
    };
    float *base = malloc(sizeof(float) * V_GPT2), *x = malloc(sizeof(float) * V_GPT2);
    int hist[300];
    uint64_t hs = 77;
    for (int j = 0; j < 300; j++)
        hist[j] = (int)(rng_next(&hs) % 400); /* repeats: counts up to several */
    double max_lp_err = 0.0;
    int total_amb = 0, n_mode = (int)(sizeof(mode) / sizeof(mode[0]));
    for (int m = 0; m < n_mode; m++) {
        fill_normal(base, V_GPT2, mode[m].sd, 1000 + (uint64_t)m);
        if (mode[m].ties)
            for (int j = 0; j < V_GPT2; j++) /* 1: 13 values, ~3866 ties each; 2: all equal */
                base[j] = mode[m].ties == 1 ? (float)(j * 7919 % 13) * 0.5f - 3.0f : 0.25f;
        sampler_params p;
        sampler_params_default(&p);
        p.temperature = mode[m].t, p.top_p = mode[m].top_p, p.min_p = mode[m].min_p;
        p.repetition_penalty = mode[m].rep, p.presence_penalty = mode[m].pres;
        p.frequency_penalty = mode[m].freq, p.top_k = mode[m].top_k, p.seed = 31337 + (uint64_t)m;
        p.n_bias = 2, p.bias_id[0] = 5, p.bias[0] = -INFINITY, p.bias_id[1] = 6;
        p.bias[1] = 1.0f;
        int nh = (mode[m].rep != 1 || mode[m].pres != 0 || mode[m].freq != 0) ? 300 : 0;
        int same = 1, valid = 1, first_bad = -1, got = 0, want = 0, n_amb = 0;
        double lp_err = 0.0;
        for (int i = 0; i < DRAWS; i++) {
            float lp, lpr;
            int amb;
            memcpy(x, base, sizeof(float) * V_GPT2);
            int t = sampler_sample(&p, x, V_GPT2, hist, nh, (uint64_t)i, scr, &lp);
            int r = ref_sample(&p, base, V_GPT2, hist, nh, (uint64_t)i, &lpr, &amb);
            valid &= t >= 0 && t < V_GPT2 && t != 5 && lp <= 0.0f && isfinite(lp);
            n_amb += amb;
            if (amb)
                continue;
            if (t != r && first_bad < 0)
                first_bad = i, got = t, want = r;
            same &= t == r;
            lp_err = fmax(lp_err, fabs((double)lp - (double)lpr));
        }
        check(valid, "%s: tokens valid, not banned, logprob finite <= 0", mode[m].name);
        check(same, "%s: same tokens as the reference (first diff at i=%d: %d vs %d)",
              mode[m].name, first_bad, got, want);
        check(mode[m].loose || n_amb <= DRAWS / 5, "%s: %d of %d draws too close to call",
              mode[m].name, n_amb, DRAWS);
        check(lp_err < 1e-4, "%s: logprob max diff %.3g", mode[m].name, lp_err);
        max_lp_err = fmax(max_lp_err, lp_err);
        total_amb += n_amb;
    }
    printf("  reference: %d modes x %d draws, %d too close to call, logprob max diff %.3g\n",
           n_mode, DRAWS, total_amb, max_lp_err);
    free(base);
    free(x);
}

/* Random vocab sizes, logits (spreads, ties, bans, NaN) and parameters against the reference. */
static void test_fuzz(void *scr) {
    enum { ITERS = 400 };
    static const int sizes[] = {1, 2, 3, 8, 17, 100, 1000, 4100, 9000, 20000, V_GPT2};
    static const float temps[] = {0.0f, 0.05f, 0.3f, 0.7f, 1.0f, 1.5f, 3.0f};
    static const float sds[] = {0.1f, 1.0f, 3.0f, 10.0f, 30.0f};
    float *base = malloc(sizeof(float) * V_GPT2), *x = malloc(sizeof(float) * V_GPT2);
    int hist[64], same = 1, n_amb = 0, first_bad = -1, valid = 1;
    double lp_err = 0.0;
    uint64_t s = 99991;
    for (int it = 0; it < ITERS; it++) {
        int nv = sizes[rng_next(&s) % 11];
        fill_normal(base, nv, sds[rng_next(&s) % 5], 5000 + (uint64_t)it);
        int kind = (int)(rng_next(&s) % 10);
        for (int j = 0; j < nv; j++) {
            if (kind == 0)
                base[j] = roundf(base[j] * 2.0f) * 0.5f; /* ties */
            else if (kind == 1 && rng_next(&s) % 4 == 0)
                base[j] = rng_next(&s) % 2 ? -INFINITY : NAN; /* banned */
            else if (kind == 2)
                base[j] = 1.0f; /* all equal */
        }
        sampler_params p;
        sampler_params_default(&p);
        p.temperature = temps[rng_next(&s) % 7];
        p.seed = rng_next(&s);
        if (rng_next(&s) % 2)
            p.top_k = (int)(rng_next(&s) % (uint64_t)(nv + 5)) + 1;
        if (rng_next(&s) % 5 < 3)
            p.top_p = (float)(1.0 - rng_unit(&s) * rng_unit(&s));
        if (rng_next(&s) % 5 < 2)
            p.min_p = (float)(rng_unit(&s) * 0.5);
        if (rng_next(&s) % 3 == 0)
            p.repetition_penalty = 1.3f, p.presence_penalty = 0.5f, p.frequency_penalty = 0.2f;
        if (rng_next(&s) % 3 == 0) {
            p.n_bias = 2, p.bias_id[0] = (int)(rng_next(&s) % (uint64_t)nv), p.bias[0] = -INFINITY;
            p.bias_id[1] = (int)(rng_next(&s) % (uint64_t)nv), p.bias[1] = 2.0f;
        }
        for (int j = 0; j < 64; j++)
            hist[j] = (int)(rng_next(&s) % (uint64_t)nv);
        char err[128];
        check(sampler_params_validate(&p, nv, err, sizeof(err)) == 0, "fuzz params valid: %s",
              err);
        float lp, lpr;
        int amb;
        memcpy(x, base, sizeof(float) * (size_t)nv);
        int t = sampler_sample(&p, x, nv, hist, 64, (uint64_t)it, scr, &lp);
        int r = ref_sample(&p, base, nv, hist, 64, (uint64_t)it, &lpr, &amb);
        valid &= (t == -1 && r == -1) || (t >= 0 && t < nv && isfinite(lp) && lp <= 0.0f);
        n_amb += amb;
        if (amb)
            continue;
        if (t != r && first_bad < 0)
            first_bad = it;
        same &= t == r;
        lp_err = fmax(lp_err, fabs((double)lp - (double)lpr));
    }
    check(valid, "fuzz: every token valid (or -1 exactly when the reference has none)");
    check(same, "fuzz: same tokens as the reference (first diff at iteration %d)", first_bad);
    check(n_amb <= ITERS / 10, "fuzz: %d of %d too close to call", n_amb, ITERS);
    check(lp_err < 1e-4, "fuzz: logprob max diff %.3g", lp_err);
    printf("  fuzz: %d cases, %d too close to call, logprob max diff %.3g\n", ITERS, n_amb,
           lp_err);
    free(base);
    free(x);
}

/* Median microseconds per sample on one random row (logits restored outside the timing). */
static double time_mode(const sampler_params *p, const float *base, float *x, void *scr,
                        int reps) {
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps; r++) {
        memcpy(x, base, sizeof(float) * V_GPT2);
        double t0 = now_sec();
        int id = sampler_sample(p, x, V_GPT2, NULL, 0, (uint64_t)r, scr, NULL);
        t[r] = now_sec() - t0;
        if (id < 0)
            t[r] = INFINITY;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    double med = t[reps / 2] * 1e6;
    free(t);
    return med;
}

static void bench(void *scr) {
    float *base = malloc(sizeof(float) * V_GPT2), *x = malloc(sizeof(float) * V_GPT2);
    sampler_params g, tp, tk, tt;
    sampler_params_default(&g);
    sampler_params_default(&tp);
    tp.temperature = 0.8f, tp.top_p = 0.95f, tp.seed = 1;
    sampler_params_default(&tk);
    tk.temperature = 0.8f, tk.top_k = 40, tk.seed = 1;
    sampler_params_default(&tt);
    tt.temperature = 0.8f, tt.seed = 1;
    float sds[2] = {1.0f, 4.0f};
    for (int s = 0; s < 2; s++) {
        fill_normal(base, V_GPT2, sds[s], 4242);
        printf("  time per sample, V=50257, logits N(0, %g^2), median of 301:\n", (double)sds[s]);
        printf("    greedy                      %7.1f us\n", time_mode(&g, base, x, scr, 301));
        printf("    temperature 0.8 top_p 0.95  %7.1f us\n", time_mode(&tp, base, x, scr, 301));
        printf("    temperature 0.8 top_k 40    %7.1f us\n", time_mode(&tk, base, x, scr, 301));
        printf("    temperature 0.8 only        %7.1f us\n", time_mode(&tt, base, x, scr, 301));
    }
    free(base);
    free(x);
}

/* sampler_top_logprobs against a naive reference: log-softmax in double, a full sort by (logit
 * descending, id ascending); -inf logits are probability 0 and never listed before finite ones. */
static void test_top_logprobs(void) {
    enum { V = 1000 };
    static float lg[V];
    uint64_t st = 12345;
    double max_err = 0;
    int order_ok = 1, n_ok = 1;
    for (int it = 0; it < 50; it++) {
        for (int v = 0; v < V; v++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            lg[v] = (float)((int)(st >> 40) % 64) / 8.0f; /* many ties */
        }
        if (it % 5 == 0) lg[(it * 37) % V] = -INFINITY;
        double mx = -1e30, sum = 0;
        for (int v = 0; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
        for (int v = 0; v < V; v++) sum += isinf(lg[v]) ? 0 : exp((double)lg[v] - mx);
        int tok = (it * 101) % V, ids[6];
        float lps[6];
        int n = sampler_top_logprobs(lg, V, tok, 5, ids, lps);
        n_ok &= n == 6 && ids[0] == tok;
        for (int i = 0; i < n; i++) {
            double ref = isinf(lg[ids[i]]) ? -INFINITY : (double)lg[ids[i]] - mx - log(sum);
            if (isfinite(ref)) max_err = fmax(max_err, fabs(ref - lps[i]));
        }
        /* ids[1..5]: no token outside the list beats the last one, order by (logit desc, id asc) */
        for (int i = 2; i < n; i++)
            order_ok &= lg[ids[i - 1]] > lg[ids[i]] || (lg[ids[i - 1]] == lg[ids[i]] && ids[i - 1] < ids[i]);
        for (int v = 0; v < V; v++) {
            int listed = 0;
            for (int i = 1; i < n; i++) listed |= ids[i] == v;
            if (!listed) order_ok &= lg[v] < lg[ids[n - 1]] || (lg[v] == lg[ids[n - 1]] && v > ids[n - 1]);
        }
    }
    check(n_ok, "top_logprobs: 1 + 5 entries, the sampled token first");
    check(order_ok, "top_logprobs: the 5 most likely, ties by lower id");
    check(max_err < 1e-5, "top_logprobs: log-softmax max diff %.3g", max_err);
    printf("  top_logprobs: 50 rows, max diff %.3g\n", max_err);
}

int main(void) {
    char *base;
    void *scr = scratch_new(V_GPT2, &base);
    test_defaults_and_validation();
    test_uniform();
    test_greedy(scr);
    test_bias(scr);
    test_penalties(scr);
    test_determinism(scr);
    test_distribution(scr);
    test_filters(scr);
    test_top_k1_is_greedy(scr);
    test_against_reference(scr);
    test_fuzz(scr);
    test_top_logprobs();
    bench(scr);
    free(base);
    return check_done("test_sampler");
}
