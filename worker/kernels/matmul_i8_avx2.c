/* matmul_i8_avx2.c — the "avx2" family's MM_I8 kernels (matmul.h), AVX2 + FMA + F16C only (the
 * baseline: no VNNI). The block dot is maddubs (|x| unsigned x w with x's sign, pairs into int16: at
 * most 2 x 127 x 127, no saturation) then madd by ones (into int32) and an add: per 4 k and 8 outputs,
 * exact. Kernels of R rows x 16 outputs (R <= 2) and 1 row x 32 outputs for decode, accumulators in
 * registers (16 ymm), each panel's blocks prefetched 2 ahead (decode streams them from memory). The
 * float chain per block and the store are matmul_scalar.c's operations in its order (store16 of
 * matmul_simd.h), so the bits are the definition's. The quantizer writes exactly the bytes of
 * mm_quantize_rows, 8 lanes at a time. */
#include "matmul.h"

#include <immintrin.h>
#include <string.h>

#include "matmul_simd.h"

#define AI static inline __attribute__((always_inline))

/* ---- the activation quantizer ---- */

/* Largest of 8 unsigned lanes. */
static inline uint32_t hmax_epu32(__m256i v) {
    __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4e));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xb1));
    return (uint32_t)_mm_cvtsi128_si32(m);
}

static inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* One row: the bytes mm_quantize_rows writes (see matmul_scalar.c, operation by operation). */
static void quantize_row(const float *row, int K, float *dx, int32_t *xc, int8_t *q) {
    const int nb = (K + MM_QK - 1) / MM_QK;
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
    const __m256 magic = _mm256_set1_ps(12582912.0f), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    for (int b = 0; b < nb; b++) {
        int k0 = b * MM_QK, n = K - k0 < MM_QK ? K - k0 : MM_QK;
        float tail[MM_QK];
        const float *src = row + k0;
        if (n < MM_QK) { /* the last block: zeros past K, as the definition's 0 */
            memset(tail, 0, sizeof tail);
            memcpy(tail, src, sizeof(float) * (size_t)n);
            src = tail;
        }
        __m256 v[4];
        __m256i amax_bits = _mm256_setzero_si256();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(src + 8 * i);
            /* |x| with NaN lanes zeroed (fmaxf ignores NaNs); non-negative floats order as integers */
            __m256i a = _mm256_and_si256(_mm256_castps_si256(v[i]), absmask);
            a = _mm256_and_si256(a, _mm256_castps_si256(_mm256_cmp_ps(v[i], v[i], _CMP_ORD_Q)));
            amax_bits = _mm256_max_epu32(amax_bits, a);
        }
        uint32_t bits = hmax_epu32(amax_bits);
        float amax;
        memcpy(&amax, &bits, sizeof amax);
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        dx[b] = amax / 127.0f;
        __m256 vid = _mm256_set1_ps(id);
        __m256i iv[4], sum = _mm256_setzero_si256();
        for (int i = 0; i < 4; i++) {
            __m256 r = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(v[i], vid), magic), magic);
            r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q)); /* NaN -> 0 */
            iv[i] = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(r, hi), lo)); /* integral: exact */
            sum = _mm256_add_epi32(sum, iv[i]);
        }
        xc[b] = -128 * hsum_epi32(sum);
        /* 32 int32 in [-127, 127] to bytes in order: the packs interleave 128-bit lanes, the permute
         * puts them back */
        __m256i w16 = _mm256_packs_epi32(iv[0], iv[1]), w16b = _mm256_packs_epi32(iv[2], iv[3]);
        __m256i b8 = _mm256_packs_epi16(w16, w16b);
        b8 = _mm256_permutevar8x32_epi32(b8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(q + k0), b8);
    }
}

void mm_avx2_quantize_rows(const float *x, int ldx, int K, int m0, int m1, void *scratch) {
    for (int m = m0; m < m1; m++) {
        const float *dx;
        int8_t *q = (int8_t *)mm_i8_row(scratch, K, m, &dx);
        quantize_row(x + (size_t)m * ldx, K, (float *)dx, (int32_t *)mm_i8_xc(scratch, K, m), q);
    }
}

/* ---- the kernels ---- */

/* acc += the 4-k dot of |x| (xa) with w carrying x's sign (8 int32 lanes). */
AI __m256i dot4(__m256i acc, __m256i xa, __m256i xb, __m256i w) {
    __m256i p16 = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(w, xb));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

/* R rows (m0 ..) x P panels of 16 outputs over all K; R * P <= 2, constants at every call site. */
AI void kernel_rp(int R, int P, const mm_i8_block *blk0, int nb, const void *xq, int K, int m0, float *out,
                  int ldo, int n0, int N, const float *bias, int mode) {
    const int32_t *x4[2];
    const float *dx[2];
    __m256 f[2][2][2];
#pragma GCC unroll 2
    for (int r = 0; r < R; r++) {
        x4[r] = (const int32_t *)mm_i8_row(xq, K, m0 + r, &dx[r]);
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) f[r][p][0] = f[r][p][1] = _mm256_setzero_ps();
    }
    for (int b = 0; b < nb; b++) {
        __m256i s[2][2][2];
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) /* weights stream from memory: each panel 2 blocks ahead */
#pragma GCC unroll 9
            for (size_t l = 0; l < sizeof(mm_i8_block); l += 64)
                _mm_prefetch((const char *)(blk0 + (size_t)p * nb + b + 2) + l, _MM_HINT_T0);
#pragma GCC unroll 2
        for (int r = 0; r < R; r++)
#pragma GCC unroll 2
            for (int p = 0; p < P; p++) s[r][p][0] = s[r][p][1] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int g = 0; g < MM_QK / 4; g++) {
#pragma GCC unroll 2
            for (int r = 0; r < R; r++) {
                __m256i xb = _mm256_set1_epi32(x4[r][8 * b + g]), xa = _mm256_abs_epi8(xb);
#pragma GCC unroll 2
                for (int p = 0; p < P; p++) {
                    const mm_i8_block *blk = blk0 + (size_t)p * nb + b;
                    s[r][p][0] = dot4(s[r][p][0], xa, xb, _mm256_load_si256((const __m256i *)blk->q[g][0]));
                    s[r][p][1] = dot4(s[r][p][1], xa, xb, _mm256_load_si256((const __m256i *)blk->q[g][8]));
                }
            }
        }
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) {
            const mm_i8_block *blk = blk0 + (size_t)p * nb + b;
            __m256 d0 = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)blk->d));
            __m256 d1 = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(blk->d + 8)));
#pragma GCC unroll 2
            for (int r = 0; r < R; r++) {
                __m256 dxv = _mm256_set1_ps(dx[r][b]);
                f[r][p][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r][p][0]), _mm256_mul_ps(dxv, d0), f[r][p][0]);
                f[r][p][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r][p][1]), _mm256_mul_ps(dxv, d1), f[r][p][1]);
            }
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int p = 0; p < P; p++)
            store16(out + (size_t)(m0 + r) * ldo, n0 + p * MM_PANEL, N, bias, mode, f[r][p][0], f[r][p][1]);
}

typedef struct {
    const mm_weight *w;
    const float *x;
    void *xq;
    float *out;
    int ldx, ldo, M, m_block, n_pgroups, mode;
} i8_job;

/* Task t = (row block, group of 4 panels): pairs of rows x 1 panel, a single row x 2 panels. */
static void i8_task(void *ctx, int begin, int end, int tid) {
    (void)tid;
    const i8_job *j = ctx;
    const mm_weight *w = j->w;
    const int nb = (w->K + MM_QK - 1) / MM_QK, K = w->K, N = w->N, mode = j->mode, ldo = j->ldo;
    for (int t = begin; t < end; t++) {
        int mb = t / j->n_pgroups, pg = t % j->n_pgroups;
        int m0 = mb * j->m_block, m1 = m0 + j->m_block < j->M ? m0 + j->m_block : j->M;
        int p0 = pg * 4, p1 = p0 + 4 < w->n_panels ? p0 + 4 : w->n_panels;
        const mm_i8_block *panels = w->panels;
        if (m1 - m0 == 1) {
            int p = p0;
            for (; p + 2 <= p1; p += 2)
                kernel_rp(1, 2, panels + (size_t)p * nb, nb, j->xq, K, m0, j->out, ldo, p * MM_PANEL, N, w->bias, mode);
            if (p < p1) kernel_rp(1, 1, panels + (size_t)p * nb, nb, j->xq, K, m0, j->out, ldo, p * MM_PANEL, N, w->bias, mode);
            continue;
        }
        for (int p = p0; p < p1; p++) {
            int m = m0;
            for (; m + 2 <= m1; m += 2)
                kernel_rp(2, 1, panels + (size_t)p * nb, nb, j->xq, K, m, j->out, ldo, p * MM_PANEL, N, w->bias, mode);
            if (m < m1) kernel_rp(1, 1, panels + (size_t)p * nb, nb, j->xq, K, m, j->out, ldo, p * MM_PANEL, N, w->bias, mode);
        }
    }
}

/* Rows [begin*16, end*16) of the activations quantized. */
static void quantize_task(void *ctx, int begin, int end, int tid) {
    (void)tid;
    const i8_job *j = ctx;
    int m1 = end * 16 < j->M ? end * 16 : j->M;
    mm_avx2_quantize_rows(j->x, j->ldx, j->w->K, begin * 16, m1, j->xq);
}

void mm_avx2_forward_i8(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M, int mode,
                        void *scratch) {
    i8_job j = {.w = w, .x = x, .xq = scratch, .out = out, .ldx = ldx, .ldo = ldo, .M = M, .mode = mode};
    j.m_block = M <= 96 ? M : 96;
    j.n_pgroups = (w->n_panels + 3) / 4;
    int n_tasks = ((M + j.m_block - 1) / j.m_block) * j.n_pgroups, n_qtasks = (M + 15) / 16;
    if (p && M >= 32)
        pool_run(p, quantize_task, &j, n_qtasks, 1);
    else
        quantize_task(&j, 0, n_qtasks, 0);
    if (p)
        pool_run(p, i8_task, &j, n_tasks, 1);
    else
        i8_task(&j, 0, n_tasks, 0);
}
