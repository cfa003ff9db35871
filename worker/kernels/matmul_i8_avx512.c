/* matmul_i8_avx512.c — the "avx512" family's MM_I8 kernels (matmul.h), for CPUs with AVX-512 F/BW/VL
 * and AVX512-VNNI (built with those flags, see the Makefile; chosen only where cpu.c's cpu_avx512_ok).
 *
 * The block dot is 512-bit vpdpbusd (u8 x s8, 4 products per int32 lane, exact, no saturation): one
 * instruction covers one group q[g] of a block (16 outputs x 4 k, 64 bytes). vpdpbusd takes its
 * unsigned operand from a register and its signed one from a register or a broadcast memory dword, so
 * the roles are: weights unsigned, w + 128 (q xor 0x80, once per group and panel, shared by all rows),
 * activations signed, 4 int8s (one dword of the scratch) broadcast to all 16 lanes. Then
 *     sum (w + 128) x = sum w x + 128 sum x,
 * so each block's int32 accumulator starts at the row's xc = -128 * sum(x) (matmul.h: computed once
 * per row and block by the quantizer) and ends at the exact block sum of matmul.h's definition. The
 * float chain per block is then, per 16 outputs, one cvtdq2ps, one vmulps (dx x fp32(d), rounded first)
 * and one vfmadd: the same operations in the same order as matmul_scalar.c, so the bits are the same.
 *
 * Kernels: R rows x P panels over all K blocks (R <= 6, P <= 2: 12 int32 + 12 fp32 accumulators in
 * zmm registers, 12 independent vpdpbusd chains) for batches, in tasks of (96 rows, 2 panels); a
 * 1-row kernel over 4 panels at once for decode (each block's 8 activation dwords broadcast once for
 * all panels; two chains per block; each panel's stream prefetched 2 blocks ahead), in tasks of 4
 * panels: it is bound by the weight stream, read once. The store is masked (no tail copies); GELU is vmath.h's vm512_gelu
 * (vm_gelu's operations on 16 lanes: the same bits). The quantizer writes exactly the bytes of
 * mm_quantize_rows (amax of |x| in any order is exact; then the same scalar id / dx and the same
 * vector multiply, round, clamp). */
#include "matmul.h"

#include <immintrin.h>
#include <string.h>

#include "matmul_simd.h"
#include "vmath.h"

#define AI static inline __attribute__((always_inline))

/* ---- the activation quantizer ---- */

/* One row: the bytes mm_quantize_rows writes (see matmul_scalar.c, operation by operation). */
static void quantize_row(const float *row, int K, float *dx, int32_t *xc, int8_t *q) {
    const int nb = (K + MM_QK - 1) / MM_QK;
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
    const __m512 magic = _mm512_set1_ps(12582912.0f), hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
    for (int b = 0; b < nb; b++) {
        int k0 = b * MM_QK, n = K - k0 < MM_QK ? K - k0 : MM_QK;
        __mmask16 m0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
        __mmask16 m1 = n >= 32 ? 0xffff : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : 0;
        __m512 v0 = _mm512_maskz_loadu_ps(m0, row + k0), v1 = _mm512_maskz_loadu_ps(m1, row + k0 + 16);
        /* amax = fmaxf over |x| (NaNs ignored, as fmaxf does): NaN lanes zeroed, then the largest bit
         * pattern of the non-negative floats (their order as integers is their order as floats) */
        __m512i a0 = _mm512_maskz_and_epi32(_mm512_cmp_ps_mask(v0, v0, _CMP_ORD_Q), _mm512_castps_si512(v0), absmask);
        __m512i a1 = _mm512_maskz_and_epi32(_mm512_cmp_ps_mask(v1, v1, _CMP_ORD_Q), _mm512_castps_si512(v1), absmask);
        uint32_t bits = _mm512_reduce_max_epu32(_mm512_max_epu32(a0, a1));
        float amax;
        memcpy(&amax, &bits, sizeof amax);
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        dx[b] = amax / 127.0f;
        /* lanes past K hold 0: 0 x id is 0 (or NaN for an infinite id), quantized to 0 as the definition's 0 */
        __m512 vid = _mm512_set1_ps(id);
        __m512 r0 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(v0, vid), magic), magic);
        __m512 r1 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(v1, vid), magic), magic);
        r0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r0, r0, _CMP_ORD_Q), r0); /* NaN -> 0 */
        r1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r1, r1, _CMP_ORD_Q), r1);
        __m512i i0 = _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(r0, hi), lo)); /* integral: exact */
        __m512i i1 = _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(r1, hi), lo));
        xc[b] = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        _mm_storeu_si128((__m128i *)(q + k0), _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(q + k0 + 16), _mm512_cvtsepi32_epi8(i1));
    }
}

void mm_avx512_quantize_rows(const float *x, int ldx, int K, int m0, int m1, void *scratch) {
    for (int m = m0; m < m1; m++) {
        const float *dx;
        int8_t *q = (int8_t *)mm_i8_row(scratch, K, m, &dx);
        quantize_row(x + (size_t)m * ldx, K, (float *)dx, (int32_t *)mm_i8_xc(scratch, K, m), q);
    }
}

/* ---- the kernels ---- */

/* Finishes 16 results of one row into out[n0 .. n0+16), clipped at N: MM_STORE out = acc + bias,
 * MM_GELU out = gelu(acc + bias), MM_ADD out = out + (acc + bias); the operations of matmul_simd.h's
 * store16, lane by lane. */
AI void store16z(float *out, int n0, int N, const float *bias, int mode, __m512 a) {
    __mmask16 k = N - n0 >= 16 ? 0xffff : (__mmask16)((1u << (N - n0)) - 1);
    if (bias) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(k, bias + n0));
    if (mode == MM_GELU) {
        a = vm512_gelu(a);
    } else if (mode == MM_ADD) {
        a = _mm512_add_ps(_mm512_maskz_loadu_ps(k, out + n0), a);
    }
    _mm512_mask_storeu_ps(out + n0, k, a);
}

/* Finishes an R x P tile of results f[r * P + p] (rows of out ldo apart, panel p at n0 + 16 p). Out of
 * line on purpose: GELU's constants then never take registers from the kernels' loops. */
static __attribute__((noinline)) void store_tile(float *out, int ldo, int n0, int N, const float *bias, int mode,
                                                 int R, int P, const __m512 *f) {
    for (int r = 0; r < R; r++)
        for (int p = 0; p < P; p++) store16z(out + (size_t)r * ldo, n0 + p * MM_PANEL, N, bias, mode, f[r * P + p]);
}

/* The weights of group g of a block as unsigned bytes, w + 128. */
AI __m512i wgroup(const mm_i8_block *blk, int g) {
    return _mm512_xor_si512(_mm512_loadu_si512(blk->q[g]), _mm512_set1_epi8((char)0x80));
}

/* Activations of one row as the kernels read them. */
typedef struct {
    const int32_t *x4; /* the int8s, 4 per dword (a broadcast operand) */
    const int32_t *xc; /* per block: -128 * sum */
    const float *dx;   /* per block: scale */
} arow;

AI arow act_row(const void *xq, int K, int m) {
    arow a;
    a.x4 = (const int32_t *)mm_i8_row(xq, K, m, &a.dx);
    a.xc = mm_i8_xc(xq, K, m);
    return a;
}

/* How far ahead the decode kernel prefetches each panel's stream: two blocks (measured on Zen 5 with
 * one thread: ~25% more read bandwidth than the hardware prefetcher alone on these 4 streams). */
#define PREFETCH_BYTES (2 * sizeof(mm_i8_block))

/* R rows (m0 ..) x P panels (from blk0, nb blocks each) over all K; R <= 6, P <= 2, both constants at
 * every call site (the loops unroll and the accumulators live in registers). */
AI void kernel_rp(int R, int P, const mm_i8_block *blk0, int nb, const void *xq, int K, int m0, float *out,
                  int ldo, int n0, int N, const float *bias, int mode) {
    arow a[6];
    __m512 f[6][2];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        a[r] = act_row(xq, K, m0 + r);
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) f[r][p] = _mm512_setzero_ps();
    }
    for (int b = 0; b < nb; b++) {
        __m512i acc[6][2];
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) /* the first run of rows reads the panels from memory */
#pragma GCC unroll 9
            for (size_t l = 0; l < sizeof(mm_i8_block); l += 64)
                _mm_prefetch((const char *)(blk0 + (size_t)p * nb + b) + PREFETCH_BYTES + l, _MM_HINT_T0);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            __m512i c = _mm512_set1_epi32(a[r].xc[b]);
#pragma GCC unroll 2
            for (int p = 0; p < P; p++) acc[r][p] = c;
        }
#pragma GCC unroll 8
        for (int g = 0; g < MM_QK / 4; g++) {
#pragma GCC unroll 2
            for (int p = 0; p < P; p++) {
                __m512i w = wgroup(blk0 + (size_t)p * nb + b, g);
#pragma GCC unroll 6
                for (int r = 0; r < R; r++)
                    acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], w, _mm512_set1_epi32(a[r].x4[8 * b + g]));
            }
        }
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) {
            __m512 d = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)blk0[(size_t)p * nb + b].d));
#pragma GCC unroll 6
            for (int r = 0; r < R; r++)
                f[r][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][p]), _mm512_mul_ps(_mm512_set1_ps(a[r].dx[b]), d),
                                          f[r][p]);
        }
    }
    __m512 fs[12];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) fs[r * P + p] = f[r][p];
    store_tile(out + (size_t)m0 * ldo, ldo, n0, N, bias, mode, R, P, fs);
}

/* One row x P panels (P <= 4): per block the 8 activation dwords are broadcast once for all panels,
 * and each block sum is two chains of 4 vpdpbusd (even and odd groups, added: exact). Bound by the
 * weight stream: each panel's blocks are prefetched PREFETCH_BYTES ahead. */
AI void kernel_1p(int P, const mm_i8_block *blk0, int nb, arow a, float *out, int n0, int N, const float *bias,
                  int mode) {
    __m512 f[4];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) f[p] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m512i xb[8];
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) xb[g] = _mm512_set1_epi32(a.x4[8 * b + g]);
        __m512i c = _mm512_set1_epi32(a.xc[b]);
        __m512 dx = _mm512_set1_ps(a.dx[b]);
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
            const mm_i8_block *blk = blk0 + (size_t)p * nb + b;
#pragma GCC unroll 9
            for (size_t l = 0; l < sizeof *blk; l += 64) _mm_prefetch((const char *)blk + PREFETCH_BYTES + l, _MM_HINT_T0);
            __m512i s0 = c, s1 = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int g = 0; g < 8; g += 2) {
                s0 = _mm512_dpbusd_epi32(s0, wgroup(blk, g), xb[g]);
                s1 = _mm512_dpbusd_epi32(s1, wgroup(blk, g + 1), xb[g + 1]);
            }
            __m512 d = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)blk->d));
            f[p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), _mm512_mul_ps(dx, d), f[p]);
        }
    }
    store_tile(out, 0, n0, N, bias, mode, 1, P, f);
}

typedef struct {
    const mm_weight *w;
    const float *x;
    void *xq;
    float *out;
    int ldx, ldo, M, m_block, mode;
    int group;     /* panels per task: 4 for one row (the 1 x 4 kernel), else 2 (the 6 x 2 kernel) */
    int n_pgroups; /* ceil(n_panels / group) */
} i8_job;

/* Rows m0 .. m1-1 x panels p0 .. p1-1 (one task). */
static void rows_panels(const i8_job *j, int m0, int m1, int p0, int p1) {
    const mm_weight *w = j->w;
    const int nb = (w->K + MM_QK - 1) / MM_QK, K = w->K, N = w->N, mode = j->mode, ldo = j->ldo;
    const float *bias = w->bias;
    const mm_i8_block *panels = w->panels;
    if (m1 - m0 == 1) {
        arow a = act_row(j->xq, K, m0);
        float *out = j->out + (size_t)m0 * ldo;
        int p = p0;
        for (; p + 4 <= p1; p += 4) kernel_1p(4, panels + (size_t)p * nb, nb, a, out, p * MM_PANEL, N, bias, mode);
        switch (p1 - p) {
        case 3: kernel_1p(3, panels + (size_t)p * nb, nb, a, out, p * MM_PANEL, N, bias, mode); break;
        case 2: kernel_1p(2, panels + (size_t)p * nb, nb, a, out, p * MM_PANEL, N, bias, mode); break;
        case 1: kernel_1p(1, panels + (size_t)p * nb, nb, a, out, p * MM_PANEL, N, bias, mode); break;
        default: break;
        }
        return;
    }
    /* rows in runs of at most 6, as even as they go (8 rows: 4 + 4, not 6 + 2: the short run's
     * fewer chains and unshared weight loads would cost more than a sixth run) */
    int rows = m1 - m0, runs = (rows + 5) / 6;
    for (int p = p0; p < p1; p += 2) {
        const mm_i8_block *blk = panels + (size_t)p * nb;
        int n0 = p * MM_PANEL, m = m0;
        for (int r = 0; r < runs; r++) {
            int R = rows / runs + (r < rows % runs);
            if (p + 2 <= p1) {
                switch (R) {
                case 6: kernel_rp(6, 2, blk, nb, j->xq, K, m, j->out, ldo, n0, N, bias, mode); break;
                case 5: kernel_rp(5, 2, blk, nb, j->xq, K, m, j->out, ldo, n0, N, bias, mode); break;
                case 4: kernel_rp(4, 2, blk, nb, j->xq, K, m, j->out, ldo, n0, N, bias, mode); break;
                case 3: kernel_rp(3, 2, blk, nb, j->xq, K, m, j->out, ldo, n0, N, bias, mode); break;
                case 2: kernel_rp(2, 2, blk, nb, j->xq, K, m, j->out, ldo, n0, N, bias, mode); break;
                default: kernel_rp(1, 2, blk, nb, j->xq, K, m, j->out, ldo, n0, N, bias, mode); break;
                }
            } else {
                switch (R) {
                case 6: kernel_rp(6, 1, blk, nb, j->xq, K, m, j->out, ldo, n0, N, bias, mode); break;
                case 5: kernel_rp(5, 1, blk, nb, j->xq, K, m, j->out, ldo, n0, N, bias, mode); break;
                case 4: kernel_rp(4, 1, blk, nb, j->xq, K, m, j->out, ldo, n0, N, bias, mode); break;
                case 3: kernel_rp(3, 1, blk, nb, j->xq, K, m, j->out, ldo, n0, N, bias, mode); break;
                case 2: kernel_rp(2, 1, blk, nb, j->xq, K, m, j->out, ldo, n0, N, bias, mode); break;
                default: kernel_rp(1, 1, blk, nb, j->xq, K, m, j->out, ldo, n0, N, bias, mode); break;
                }
            }
            m += R;
        }
    }
}

/* Task t = (row block, group of panels). */
static void i8_task(void *ctx, int begin, int end, int tid) {
    (void)tid;
    const i8_job *j = ctx;
    for (int t = begin; t < end; t++) {
        int mb = t / j->n_pgroups, pg = t % j->n_pgroups;
        int m0 = mb * j->m_block, m1 = m0 + j->m_block < j->M ? m0 + j->m_block : j->M;
        int p0 = pg * j->group, p1 = p0 + j->group < j->w->n_panels ? p0 + j->group : j->w->n_panels;
        rows_panels(j, m0, m1, p0, p1);
    }
}

/* Rows [begin*16, end*16) of the activations quantized. */
static void quantize_task(void *ctx, int begin, int end, int tid) {
    (void)tid;
    const i8_job *j = ctx;
    int m1 = end * 16 < j->M ? end * 16 : j->M;
    mm_avx512_quantize_rows(j->x, j->ldx, j->w->K, begin * 16, m1, j->xq);
}

void mm_avx512_forward_i8(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M, int mode,
                          void *scratch) {
    i8_job j = {.w = w, .x = x, .xq = scratch, .out = out, .ldx = ldx, .ldo = ldo, .M = M, .mode = mode};
    j.m_block = M <= 96 ? M : 96;
    j.group = M == 1 ? 4 : 2; /* small tasks balance the two threads; one row streams 4 panels at once */
    j.n_pgroups = (w->n_panels + j.group - 1) / j.group;
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
