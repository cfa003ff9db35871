/* attention.c — see attention.h. Two passes over the head's runs: scores (8 positions at a time,
 * their 8 dot products reduced together), then the weighted sum of V with the output row held in
 * registers across positions. K and V are widened as they are loaded, never copied. Every function
 * takes the KV dtype as a constant and is inlined into one copy per dtype. */
#include "attention.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "vmath.h"

#define INLINE static inline __attribute__((always_inline))

/* ---------------------------------------------------------------------------------------------
 * Loads: K and V elements of dtype t widened to floats (exact). */

INLINE __m256 load8(kv_dtype t, const void *row, int i) {
    if (t == KV_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    if (t == KV_BF16) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    }
    return _mm256_loadu_ps((const float *)row + i);
}

INLINE float load1(kv_dtype t, const void *row, int i) {
    if (t == KV_F16) return _cvtsh_ss(((const uint16_t *)row)[i]);
    if (t == KV_BF16) {
        uint32_t u = (uint32_t)((const uint16_t *)row)[i] << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    return ((const float *)row)[i];
}

INLINE size_t elt_bytes(kv_dtype t) { return t == KV_F32 ? 4 : 2; }

/* Row r of a run whose rows are stride elements apart. */
INLINE const void *row_at(kv_dtype t, const void *run, size_t stride, int r) {
    return (const unsigned char *)run + (size_t)r * stride * elt_bytes(t);
}

/* ---------------------------------------------------------------------------------------------
 * Prefetch: a head's K (or V) is a chain of runs of up to KV_PAGE positions in separate pages, too
 * short for the hardware prefetcher to ramp up on; each pass asks for the run PREFETCH_RUNS ahead
 * while it computes on the current one, and the score pass's last runs ask for V's first. */

#ifndef ATTN_PREFETCH_RUNS
#define ATTN_PREFETCH_RUNS 2
#endif

/* Every cache line of the run starting at position pos (K if which = 0, else V), row by row
 * (measured: a row's lines at a time beat one burst for the whole run). */
INLINE void prefetch_run(kv_dtype t, const kv_arena *kv, int seq, int layer, int head, int pos, int T, int hd,
                         int which) {
    if (pos >= T) return;
    const void *k, *v;
    size_t stride;
    int n = kv_run(kv, seq, layer, head, pos, T - pos, &k, &v, &stride);
    size_t row_bytes = (size_t)hd * elt_bytes(t);
    for (int r = 0; r < n; r++) {
        const char *p = row_at(t, which ? v : k, stride, r);
        for (size_t o = 0; o < row_bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
    }
}

/* While on the run at t0: the K run ATTN_PREFETCH_RUNS ahead, or once past the end, V's runs. */
INLINE void prefetch_ahead(kv_dtype t, const kv_arena *kv, int seq, int layer, int head, int t0, int T, int hd,
                           int which) {
    int ahead = t0 + ATTN_PREFETCH_RUNS * KV_PAGE;
    if (ahead < T)
        prefetch_run(t, kv, seq, layer, head, ahead, T, hd, which);
    else if (!which)
        prefetch_run(t, kv, seq, layer, head, ahead - (T + KV_PAGE - 1) / KV_PAGE * KV_PAGE, T, hd, 1);
}

/* ---------------------------------------------------------------------------------------------
 * Scores. */

/* Lane r = vm_hsum(a_r): the same additions in the same tree for each of the 8 vectors. */
INLINE __m256 hsum8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6, __m256 a7) {
    /* s_rq = [a_r's lanes j + j+4 | a_q's]: vm_hsum's first step, two vectors at once */
    __m256 s04 = _mm256_add_ps(_mm256_permute2f128_ps(a0, a4, 0x20), _mm256_permute2f128_ps(a0, a4, 0x31));
    __m256 s15 = _mm256_add_ps(_mm256_permute2f128_ps(a1, a5, 0x20), _mm256_permute2f128_ps(a1, a5, 0x31));
    __m256 s26 = _mm256_add_ps(_mm256_permute2f128_ps(a2, a6, 0x20), _mm256_permute2f128_ps(a2, a6, 0x31));
    __m256 s37 = _mm256_add_ps(_mm256_permute2f128_ps(a3, a7, 0x20), _mm256_permute2f128_ps(a3, a7, 0x31));
    /* second step (s0 + s2, s1 + s3): w01 = [w0(a0) w0(a1) w1(a0) w1(a1) | the same for a4, a5] */
    __m256 w01 = _mm256_add_ps(_mm256_unpacklo_ps(s04, s15), _mm256_unpackhi_ps(s04, s15));
    __m256 w23 = _mm256_add_ps(_mm256_unpacklo_ps(s26, s37), _mm256_unpackhi_ps(s26, s37));
    /* last step w0 + w1: [r0 r1 r2 r3 | r4 r5 r6 r7] */
    return _mm256_add_ps(_mm256_shuffle_ps(w01, w23, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(w01, w23, _MM_SHUFFLE(3, 2, 3, 2)));
}

/* The dot products of q with 8 rows rb bytes apart from base, each exactly vm_dot(q, row, hd);
 * rows past `last` repeat row `last` (a run's short last group). */
INLINE __m256 dot8(kv_dtype t, const float *q, int hd, const char *base, size_t rb, int last) {
    const void *r[8];
    for (int w = 0; w < 8; w++) r[w] = base + (size_t)(w < last ? w : last) * rb;
    int nv = hd / 8;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int i = 0; i < 8 * nv; i += 8) {
        __m256 qv = _mm256_loadu_ps(q + i);
        a0 = _mm256_fmadd_ps(qv, load8(t, r[0], i), a0);
        a1 = _mm256_fmadd_ps(qv, load8(t, r[1], i), a1);
        a2 = _mm256_fmadd_ps(qv, load8(t, r[2], i), a2);
        a3 = _mm256_fmadd_ps(qv, load8(t, r[3], i), a3);
        a4 = _mm256_fmadd_ps(qv, load8(t, r[4], i), a4);
        a5 = _mm256_fmadd_ps(qv, load8(t, r[5], i), a5);
        a6 = _mm256_fmadd_ps(qv, load8(t, r[6], i), a6);
        a7 = _mm256_fmadd_ps(qv, load8(t, r[7], i), a7);
    }
    __m256 d = hsum8(a0, a1, a2, a3, a4, a5, a6, a7);
    if (hd % 8) { /* the tail elements, in index order after the lane sum (vm_dot) */
        float x[8];
        _mm256_storeu_ps(x, d);
        for (int w = 0; w < 8; w++)
            for (int i = 8 * nv; i < hd; i++) x[w] = fmaf(q[i], load1(t, r[w], i), x[w]);
        d = _mm256_loadu_ps(x);
    }
    return d;
}

/* s[0, n) = dot(q, row) * scale for the n rows of one run, 8 at a time; *mx = running maximum per
 * lane, as `s > mx ? s : mx` in position order, started at the first score when first is set (the
 * scalar scan's start; a short group's repeated row changes no maximum). */
INLINE void scores_run(kv_dtype t, const float *q, int hd, const void *k, size_t stride, int n, float scale,
                       float *s, __m256 *mx, int first) {
    size_t rb = stride * elt_bytes(t);
    for (int u = 0; u < n; u += 8) {
        const char *base = row_at(t, k, stride, u);
        int full = u + 8 <= n;
        __m256 d = full ? dot8(t, q, hd, base, rb, 7) : dot8(t, q, hd, base, rb, n - u - 1);
        d = _mm256_mul_ps(d, _mm256_set1_ps(scale));
        if (first && u == 0) *mx = _mm256_broadcastss_ps(_mm256_castps256_ps128(d));
        *mx = _mm256_blendv_ps(*mx, d, _mm256_cmp_ps(d, *mx, _CMP_GT_OQ));
        if (full) {
            _mm256_storeu_ps(s + u, d);
        } else {
            float x[8];
            _mm256_storeu_ps(x, d);
            memcpy(s + u, x, sizeof(float) * (n - u));
        }
    }
}

/* s[0, T) = softmax weights from the raw scores, given their maximum m. */
INLINE void softmax(float *s, int T, float m) {
    __m256 mv = _mm256_set1_ps(m), acc = _mm256_setzero_ps();
    int t = 0;
    for (; t + 8 <= T; t += 8) {
        __m256 e = vm_exp(_mm256_sub_ps(_mm256_loadu_ps(s + t), mv));
        _mm256_storeu_ps(s + t, e);
        acc = _mm256_add_ps(acc, e);
    }
    float z = vm_hsum(acc);
    for (; t < T; t++) {
        s[t] = vm_exp1(s[t] - m);
        z += s[t];
    }
    float inv = 1.0f / z;
    __m256 iv = _mm256_set1_ps(inv);
    for (t = 0; t + 8 <= T; t += 8) _mm256_storeu_ps(s + t, _mm256_mul_ps(_mm256_loadu_ps(s + t), iv));
    for (; t < T; t++) s[t] *= inv;
}

/* ---------------------------------------------------------------------------------------------
 * The weighted sum of V. */

/* out[8 c0, 8 (c0 + NV)) = sum over t of p[t] V[t] for NV vectors of columns, held in registers. */
INLINE void sum_v(kv_dtype t, int NV, const kv_arena *kv, int seq, int layer, int head, int T, const float *p,
                  int c0, float *out) {
    __m256 acc[8];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) acc[v] = _mm256_setzero_ps();
    const void *k, *vr;
    size_t stride;
    for (int t0 = 0; t0 < T;) {
        int n = kv_run(kv, seq, layer, head, t0, T - t0, &k, &vr, &stride);
        if (c0 == 0) prefetch_ahead(t, kv, seq, layer, head, t0, T, 8 * NV, 1);
        for (int u = 0; u < n; u++) {
            __m256 pv = _mm256_set1_ps(p[t0 + u]);
            const void *r = row_at(t, vr, stride, u);
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) acc[v] = _mm256_fmadd_ps(pv, load8(t, r, 8 * (c0 + v)), acc[v]);
        }
        t0 += n;
    }
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) _mm256_storeu_ps(out + 8 * (c0 + v), acc[v]);
}

/* The tail columns [8 (hd / 8), hd) one at a time. */
INLINE void sum_v_tail(kv_dtype t, const kv_arena *kv, int seq, int layer, int head, int T, int hd,
                       const float *p, float *out) {
    const void *k, *vr;
    size_t stride;
    for (int d = hd / 8 * 8; d < hd; d++) {
        float o = 0.0f;
        for (int t0 = 0; t0 < T;) {
            int n = kv_run(kv, seq, layer, head, t0, T - t0, &k, &vr, &stride);
            for (int u = 0; u < n; u++) o = fmaf(p[t0 + u], load1(t, row_at(t, vr, stride, u), d), o);
            t0 += n;
        }
        out[d] = o;
    }
}

/* ---------------------------------------------------------------------------------------------
 * One head. */

INLINE void head_t(kv_dtype t, const kv_arena *kv, int seq, int layer, int head, int pos, const float *q,
                   float *out, float *s) {
    int hd = kv_head_dim(kv), T = pos + 1;
    float scale = 1.0f / sqrtf((float)hd);
    const void *k, *v;
    size_t stride;
    __m256 mx = _mm256_setzero_ps();
    for (int r = 0; r < ATTN_PREFETCH_RUNS; r++) prefetch_run(t, kv, seq, layer, head, r * KV_PAGE, T, hd, 0);
    for (int t0 = 0; t0 < T;) {
        int n = kv_run(kv, seq, layer, head, t0, T - t0, &k, &v, &stride);
        prefetch_ahead(t, kv, seq, layer, head, t0, T, hd, 0);
        scores_run(t, q, hd, k, stride, n, scale, s + t0, &mx, t0 == 0);
        t0 += n;
    }
    float lanes[8], m;
    _mm256_storeu_ps(lanes, mx);
    m = lanes[0];
    for (int w = 1; w < 8; w++) m = lanes[w] > m ? lanes[w] : m;
    softmax(s, T, m);
    int nv = hd / 8, c = 0;
    for (; c + 8 <= nv; c += 8) sum_v(t, 8, kv, seq, layer, head, T, s, c, out);
    for (; c + 4 <= nv; c += 4) sum_v(t, 4, kv, seq, layer, head, T, s, c, out);
    for (; c < nv; c++) sum_v(t, 1, kv, seq, layer, head, T, s, c, out);
    if (hd % 8) sum_v_tail(t, kv, seq, layer, head, T, hd, s, out);
}

void attn_head(const kv_arena *kv, int seq, int layer, int head, int pos, const float *q, float *out,
               float *scores) {
    switch (kv_dtype_of(kv)) {
    case KV_F16: head_t(KV_F16, kv, seq, layer, head, pos, q, out, scores); break;
    case KV_BF16: head_t(KV_BF16, kv, seq, layer, head, pos, q, out, scores); break;
    default: head_t(KV_F32, kv, seq, layer, head, pos, q, out, scores); break;
    }
}
