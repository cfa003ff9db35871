/* vmath.h — AVX2 vector math for the forward pass: exp, GELU (tanh form), dot, horizontal sum.
 *
 * Every function computes each element the same way whatever its neighbours are, so results do not
 * depend on how a batch is laid out. vm_exp: Cephes-style range reduction + degree-5 polynomial,
 * relative error ~2e-7 over [-87, 88]; inputs below -87 give 0. */
#ifndef GPT2D_VMATH_H
#define GPT2D_VMATH_H

#include <immintrin.h>
#include <math.h>

static inline __m256 vm_exp(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.0f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    __m256 x2 = _mm256_mul_ps(x, x);
    y = _mm256_fmadd_ps(y, x2, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
    __m256 pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
    return _mm256_andnot_ps(under, _mm256_mul_ps(y, pow2));
}

/* GPT-2's GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), tanh(u) = 1 - 2 / (exp(2u) + 1). */
static inline __m256 vm_gelu(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                             _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
    __m256 e = vm_exp(_mm256_add_ps(u, u));
    __m256 t = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, t));
}

/* Scalar GELU for tails, same formula through the vector path. */
static inline float vm_gelu1(float x) {
    float out[8];
    _mm256_storeu_ps(out, vm_gelu(_mm256_set1_ps(x)));
    return out[0];
}

static inline float vm_exp1(float x) {
    float out[8];
    _mm256_storeu_ps(out, vm_exp(_mm256_set1_ps(x)));
    return out[0];
}

#ifdef __AVX512F__
/* vm_exp and vm_gelu on 16 lanes, for code built with AVX-512: the same operations in the same order
 * (floor as roundscale, the compare-and-clear as a mask), so every lane has vm_exp's / vm_gelu's bits
 * (checked equal to vm_gelu on all 2^32 inputs once; tests/test_mm.c keeps a million inputs, the
 * special values, and the int8 store on arbitrary floats). */
static inline __m512 vm512_exp(__m512 x) {
    const __m512 hi = _mm512_set1_ps(88.3762626647949f), lo = _mm512_set1_ps(-87.0f);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 fx = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f));
    fx = _mm512_floor_ps(fx);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 y = _mm512_set1_ps(1.9875691500E-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507E-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073E-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894E-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459E-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201E-1f));
    __m512 x2 = _mm512_mul_ps(x, x);
    y = _mm512_fmadd_ps(y, x2, _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_add_epi32(_mm512_cvttps_epi32(fx), _mm512_set1_epi32(127));
    __m512 pow2 = _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
    /* vm_exp's andnot(under, ...): all bits cleared (+0.0f) where under, as is */
    return _mm512_maskz_mov_ps((__mmask16)~under, _mm512_mul_ps(y, pow2));
}

static inline __m512 vm512_gelu(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f),
                             _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
    __m512 e = vm512_exp(_mm512_add_ps(u, u));
    __m512 t = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(one, t));
}
#endif

/* Fixed-order horizontal sum of 8 lanes. */
static inline float vm_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Dot product of n floats: 8-lane FMA chain in index order, fixed lane reduction, scalar tail. */
static inline float vm_dot(const float *a, const float *b, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float s = vm_hsum(acc);
    for (; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}

/* Four dot products of q with b0..b3 at once (independent chains for throughput); each result is
 * bit-identical to vm_dot(q, bi, n). */
static inline void vm_dot4(const float *q, const float *b0, const float *b1, const float *b2,
                           const float *b3, int n, float *out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 qv = _mm256_loadu_ps(q + i);
        a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(b0 + i), a0);
        a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(b1 + i), a1);
        a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(b2 + i), a2);
        a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(b3 + i), a3);
    }
    float s0 = vm_hsum(a0), s1 = vm_hsum(a1), s2 = vm_hsum(a2), s3 = vm_hsum(a3);
    for (; i < n; i++) {
        s0 = fmaf(q[i], b0[i], s0);
        s1 = fmaf(q[i], b1[i], s1);
        s2 = fmaf(q[i], b2[i], s2);
        s3 = fmaf(q[i], b3[i], s3);
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

/* Sum of n floats, same scheme as vm_dot. */
static inline float vm_sum(const float *a, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(a + i));
    float s = vm_hsum(acc);
    for (; i < n; i++) s += a[i];
    return s;
}

#endif
