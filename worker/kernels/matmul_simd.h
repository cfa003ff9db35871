/* matmul_simd.h — code shared by the SIMD kernel families (matmul_avx2.c, matmul_avx512.c), each
 * compiling it with its own flags: the fused store of 16 results and the MM_I8 kernels, written once
 * over a block-dot macro that each family defines before including this file:
 *     MM_I8_DOT(acc, xa, ws)  acc (8 x int32) += for each 32-bit lane, the sum of the 4 products of
 *                             xa's unsigned bytes (|x|) by ws's signed bytes (w with x's sign)
 * and MM_I8_FN(name), which gives the family's own names to the functions defined here. A family
 * whose dot cannot saturate (vpdpbusd) also defines MM_I8_BIASED: it then multiplies x + 128
 * (unsigned, kept in the scratch) by w directly and subtracts 128 * sum(w) per block, computed once
 * for all rows: one instruction per 4 k and row instead of abs + sign + dot. (maddubs would
 * saturate its int16 pairs at 255 * 127 * 2, so AVX2 keeps |x| and sign-moved w.)
 * Every element is computed as matmul.h defines it: the integer block sums are exact, the float
 * chain over blocks and the store are the same operations in the same order as matmul_scalar.c. */
#ifndef GPT2D_MATMUL_SIMD_H
#define GPT2D_MATMUL_SIMD_H

#include <immintrin.h>
#include <string.h>

#include "matmul.h"
#include "vmath.h"

/* The AVX2 family's fp32 and bf16 forwards (matmul_avx2.c). */
void mm_avx2_forward_f32(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                         int mode, void *scratch);
void mm_avx2_forward_bf16(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                          int mode, void *scratch);
/* The AVX-512 family's fp32 and bf16 forwards (matmul_f32_avx512.c). */
void mm_avx512_forward_f32(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                           int mode, void *scratch);
void mm_avx512_forward_bf16(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                            int mode, void *scratch);

/* Finishes 16 results of one row into out[n0 .. n0+16), clipped at N:
 *   MM_STORE: out = acc + bias;  MM_GELU: out = gelu(acc + bias);  MM_ADD: out = out + (acc + bias).
 * Each element's operations are the same whatever kernel produced acc. */
static inline void store16(float *out, int n0, int N, const float *bias, int mode, __m256 a0,
                           __m256 a1) {
    float tmp[16];
    int n = N - n0 < 16 ? N - n0 : 16;
    if (bias && n == 16) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(bias + n0));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(bias + n0 + 8));
    } else if (bias) {
        _mm256_storeu_ps(tmp, a0);
        _mm256_storeu_ps(tmp + 8, a1);
        for (int c = 0; c < n; c++) tmp[c] += bias[n0 + c];
        a0 = _mm256_loadu_ps(tmp);
        a1 = _mm256_loadu_ps(tmp + 8);
    }
    if (mode == MM_GELU) {
        a0 = vm_gelu(a0);
        a1 = vm_gelu(a1);
    }
    _mm256_storeu_ps(tmp, a0);
    _mm256_storeu_ps(tmp + 8, a1);
    if (mode == MM_ADD) {
        for (int c = 0; c < n; c++) out[n0 + c] += tmp[c];
    } else {
        memcpy(out + n0, tmp, (size_t)n * sizeof(float));
    }
}

#endif

/* ---- MM_I8 (once per including family: needs MM_I8_DOT and MM_I8_FN) ---- */
#ifdef MM_I8_DOT

/* R rows (m0 ..) x P panels (16 columns each, from panel blk0 on) over all K blocks; R * P <= 4.
 * Per block and panel: the fp16 scales once, then per row 8 groups of 4 k into two int32 vectors
 * (the exact block sums of 16 outputs), folded into the float accumulators. */
static inline __attribute__((always_inline)) void MM_I8_FN(kernel)(int R, int P, const mm_i8_block *blk0,
                                                                  int nb, const void *xq, int K, int m0,
                                                                  float *out, int ldo, int n0, int N,
                                                                  const float *bias, int mode) {
    __m256 acc[8];
    for (int i = 0; i < 2 * R * P; i++) acc[i] = _mm256_setzero_ps();
    const int8_t *xr[4];
    const float *dx[4];
    for (int r = 0; r < R; r++) xr[r] = mm_i8_row(xq, K, m0 + r, &dx[r]);
    for (int b = 0; b < nb; b++) {
        for (int p = 0; p < P; p++) {
            const mm_i8_block *blk = blk0 + (size_t)p * nb + b;
            __m256 d0 = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)blk->d));
            __m256 d1 = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(blk->d + 8)));
#ifdef MM_I8_BIASED
            /* 128 * (sum of the block's weights) per output, once for all rows */
            __m256i ws0 = _mm256_setzero_si256(), ws1 = ws0, c128 = _mm256_set1_epi8((char)0x80);
            for (int g = 0; g < MM_QK / 4; g++) {
                ws0 = MM_I8_DOT(ws0, c128, _mm256_load_si256((const __m256i *)blk->q[g][0]));
                ws1 = MM_I8_DOT(ws1, c128, _mm256_load_si256((const __m256i *)blk->q[g][8]));
            }
#endif
            for (int r = 0; r < R; r++) {
                __m256i s0 = _mm256_setzero_si256(), s1 = s0;
#ifdef MM_I8_BIASED
                /* sum (x + 128) w - 128 sum w: one u8 x s8 instruction per 4 k, exact */
                const uint8_t *u8 = (const uint8_t *)xr[r] + (size_t)nb * MM_QK + (size_t)b * MM_QK;
                for (int g = 0; g < MM_QK / 4; g++) {
                    int32_t x4;
                    memcpy(&x4, u8 + 4 * g, sizeof x4);
                    __m256i xb = _mm256_set1_epi32(x4);
                    s0 = MM_I8_DOT(s0, xb, _mm256_load_si256((const __m256i *)blk->q[g][0]));
                    s1 = MM_I8_DOT(s1, xb, _mm256_load_si256((const __m256i *)blk->q[g][8]));
                }
                s0 = _mm256_sub_epi32(s0, ws0);
                s1 = _mm256_sub_epi32(s1, ws1);
#else
                const int8_t *q8 = xr[r] + (size_t)b * MM_QK;
                for (int g = 0; g < MM_QK / 4; g++) {
                    int32_t x4;
                    memcpy(&x4, q8 + 4 * g, sizeof x4);
                    __m256i xb = _mm256_set1_epi32(x4), xa = _mm256_abs_epi8(xb);
                    __m256i w0 = _mm256_load_si256((const __m256i *)blk->q[g][0]);
                    __m256i w1 = _mm256_load_si256((const __m256i *)blk->q[g][8]);
                    s0 = MM_I8_DOT(s0, xa, _mm256_sign_epi8(w0, xb));
                    s1 = MM_I8_DOT(s1, xa, _mm256_sign_epi8(w1, xb));
                }
#endif
                __m256 dxv = _mm256_set1_ps(dx[r][b]);
                int a = 2 * (r * P + p);
                acc[a] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_mul_ps(dxv, d0), acc[a]);
                acc[a + 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_mul_ps(dxv, d1), acc[a + 1]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int p = 0; p < P; p++)
            store16(out + (size_t)(m0 + r) * ldo, n0 + p * MM_PANEL, N, bias, mode, acc[2 * (r * P + p)],
                    acc[2 * (r * P + p) + 1]);
}

typedef struct {
    const mm_weight *w;
    const float *x;
    void *xq;
    float *out;
    int ldx, ldo, M, m_block, n_pgroups, mode;
} MM_I8_FN(job);

/* Task t = (row block, group of 4 panels); one row and 4 whole panels: the 1 x 64 decode kernel. */
static void MM_I8_FN(task)(void *ctx, int begin, int end, int tid) {
    (void)tid;
    const MM_I8_FN(job) *j = ctx;
    const mm_weight *w = j->w;
    int nb = (w->K + MM_QK - 1) / MM_QK;
    for (int t = begin; t < end; t++) {
        int mb = t / j->n_pgroups, pg = t % j->n_pgroups;
        int m0 = mb * j->m_block, m1 = m0 + j->m_block < j->M ? m0 + j->m_block : j->M;
        int p0 = pg * 4, p1 = p0 + 4 < w->n_panels ? p0 + 4 : w->n_panels;
        const mm_i8_block *blk = (const mm_i8_block *)w->panels + (size_t)p0 * nb;
        if (m1 - m0 == 1 && p1 - p0 == 4) {
            MM_I8_FN(kernel)(1, 4, blk, nb, j->xq, w->K, m0, j->out, j->ldo, p0 * MM_PANEL, w->N, w->bias, j->mode);
            continue;
        }
        for (int p = p0; p < p1; p++, blk += nb) {
            int m = m0, n0 = p * MM_PANEL;
            for (; m + 4 <= m1; m += 4)
                MM_I8_FN(kernel)(4, 1, blk, nb, j->xq, w->K, m, j->out, j->ldo, n0, w->N, w->bias, j->mode);
            switch (m1 - m) {
            case 3: MM_I8_FN(kernel)(3, 1, blk, nb, j->xq, w->K, m, j->out, j->ldo, n0, w->N, w->bias, j->mode); break;
            case 2: MM_I8_FN(kernel)(2, 1, blk, nb, j->xq, w->K, m, j->out, j->ldo, n0, w->N, w->bias, j->mode); break;
            case 1: MM_I8_FN(kernel)(1, 1, blk, nb, j->xq, w->K, m, j->out, j->ldo, n0, w->N, w->bias, j->mode); break;
            default: break;
            }
        }
    }
}

/* Rows [begin*16, end*16) of the activations quantized (the one definition, matmul_scalar.c). */
static void MM_I8_FN(quantize_task)(void *ctx, int begin, int end, int tid) {
    (void)tid;
    const MM_I8_FN(job) *j = ctx;
    int m1 = end * 16 < j->M ? end * 16 : j->M;
    mm_quantize_rows(j->x, j->ldx, j->w->K, begin * 16, m1, j->xq);
}

static void MM_I8_FN(forward)(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                              int mode, void *scratch) {
    MM_I8_FN(job) j = {.w = w, .x = x, .xq = scratch, .out = out, .ldx = ldx, .ldo = ldo, .M = M, .mode = mode};
    j.m_block = M <= 96 ? M : 96;
    j.n_pgroups = (w->n_panels + 3) / 4;
    int n_tasks = ((M + j.m_block - 1) / j.m_block) * j.n_pgroups, n_qtasks = (M + 15) / 16;
    if (p && M >= 32)
        pool_run(p, MM_I8_FN(quantize_task), &j, n_qtasks, 1);
    else
        MM_I8_FN(quantize_task)(&j, 0, n_qtasks, 0);
    if (p)
        pool_run(p, MM_I8_FN(task), &j, n_tasks, 1);
    else
        MM_I8_FN(task)(&j, 0, n_tasks, 0);
}

#endif
