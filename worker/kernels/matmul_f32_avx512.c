/* matmul_f32_avx512.c — the "avx512" family's fp32 and bf16 kernels (matmul.h), compiled with the
 * AVX-512 flags (the Makefile's *_avx512.o rule): one zmm holds one k row of a 16-wide panel, so a
 * micro-kernel of R rows x P panels keeps R x P accumulators of 16 outputs each in the 32 registers.
 *
 * Every output element still gets exactly matmul.h's operations in matmul.h's order: acc = 0, then
 * acc = fma(x[m][k], W[k][n], acc) for k = 0 .. K-1 (one chain per element: the vector width is
 * across outputs, never across k), then + bias, then the mode. bf16 is widened exactly (a zero
 * extension and a shift). The fused GELU is vm512_gelu: vmath.h's vm_gelu on 16 lanes, the same
 * operations lane by lane (checked equal to vm_gelu on all 2^32 inputs once; tests/test_mm.c keeps
 * a million inputs and the special values).
 * So the results are bit-identical to the scalar definition and to the AVX2 family.
 *
 * Shapes: the batched forward (M >= 2) runs 6 rows x 4 panels (24 accumulators, 4 weight rows and
 * one broadcast x per k: 10 loads per 24 FMAs), with smaller R and P at the edges; a single row
 * (decode: memory-bound) runs 1 row x 4 panels (fp32) or 8 (bf16: half the bytes per output, so more
 * streams in flight to keep the memory busy), as many independent chains. */
#include "matmul.h"

#include <immintrin.h>
#include <stdint.h>

#include "matmul_simd.h" /* the declarations */
#include "vmath.h"     /* vm512_gelu */

#define AI static inline __attribute__((always_inline))

/* ---- the kernels ---- */

/* Row k of a panel (16 weights) as fp32; dt is a constant at every call site. */
AI __m512 load_row(const char *panel, int k, int dt) {
    if (dt == MM_BF16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(panel + (size_t)k * 32));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    return _mm512_loadu_ps((const float *)(panel + (size_t)k * 64));
}

static inline size_t panel_bytes(int K, int dt) { return (size_t)K * MM_PANEL * (dt == MM_BF16 ? 2 : 4); }

/* Finishes 16 results of one row into out[n0 .. n0+16), clipped at N (matmul.h's mode). */
AI void store_row(float *out, int n0, int N, const float *bias, int mode, __m512 a) {
    __mmask16 m = N - n0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (N - n0)) - 1);
    if (bias) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(m, bias + n0));
    if (mode == MM_GELU) a = vm512_gelu(a);
    if (mode == MM_ADD) a = _mm512_add_ps(_mm512_maskz_loadu_ps(m, out + n0), a);
    _mm512_mask_storeu_ps(out + n0, m, a);
}

/* R rows x P panels (columns n0 .. n0 + 16P) over the whole K; R and P are constants at each call
 * site, so the loops unroll and the accumulators live in registers. */
AI void kernel(int R, int P, int dt, const char *pan, size_t ps, int K, const float *x, int ldx, float *out,
               int ldo, int n0, int N, const float *bias, int mode) {
    __m512 c[24];
#pragma GCC unroll 24
    for (int i = 0; i < R * P; i++) c[i] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m512 b[8];
#pragma GCC unroll 8
        for (int p = 0; p < P; p++) b[p] = load_row(pan + p * ps, k, dt);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            __m512 a = _mm512_set1_ps(x[(size_t)r * ldx + k]);
#pragma GCC unroll 8
            for (int p = 0; p < P; p++) c[r * P + p] = _mm512_fmadd_ps(a, b[p], c[r * P + p]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int p = 0; p < P; p++)
            store_row(out + (size_t)r * ldo, n0 + p * MM_PANEL, N, bias, mode, c[r * P + p]);
}

/* R rows (1..6) x P panels (1..4), both run-time values here, each pair its own compiled kernel. */
#define KERNEL_R(R)                                                                                  \
    switch (P) {                                                                                     \
    case 4: kernel(R, 4, dt, pan, ps, K, x, ldx, out, ldo, n0, N, bias, mode); break;               \
    case 3: kernel(R, 3, dt, pan, ps, K, x, ldx, out, ldo, n0, N, bias, mode); break;               \
    case 2: kernel(R, 2, dt, pan, ps, K, x, ldx, out, ldo, n0, N, bias, mode); break;               \
    default: kernel(R, 1, dt, pan, ps, K, x, ldx, out, ldo, n0, N, bias, mode); break;              \
    }
AI void kernel_rp(int R, int P, int dt, const char *pan, size_t ps, int K, const float *x, int ldx,
                  float *out, int ldo, int n0, int N, const float *bias, int mode) {
    switch (R) {
    case 6: KERNEL_R(6) break;
    case 5: KERNEL_R(5) break;
    case 4: KERNEL_R(4) break;
    case 3: KERNEL_R(3) break;
    case 2: KERNEL_R(2) break;
    default: KERNEL_R(1) break;
    }
}

/* One row x P panels (1..8): the single-row (decode) kernel, P independent streams and chains. */
AI void kernel_1p(int P, int dt, const char *pan, size_t ps, int K, const float *x, float *out, int n0, int N,
                  const float *bias, int mode) {
    switch (P) {
    case 8: kernel(1, 8, dt, pan, ps, K, x, 0, out, 0, n0, N, bias, mode); break;
    case 7: kernel(1, 7, dt, pan, ps, K, x, 0, out, 0, n0, N, bias, mode); break;
    case 6: kernel(1, 6, dt, pan, ps, K, x, 0, out, 0, n0, N, bias, mode); break;
    case 5: kernel(1, 5, dt, pan, ps, K, x, 0, out, 0, n0, N, bias, mode); break;
    case 4: kernel(1, 4, dt, pan, ps, K, x, 0, out, 0, n0, N, bias, mode); break;
    case 3: kernel(1, 3, dt, pan, ps, K, x, 0, out, 0, n0, N, bias, mode); break;
    case 2: kernel(1, 2, dt, pan, ps, K, x, 0, out, 0, n0, N, bias, mode); break;
    default: kernel(1, 1, dt, pan, ps, K, x, 0, out, 0, n0, N, bias, mode); break;
    }
}

typedef struct {
    const mm_weight *w;
    const float *x;
    float *out;
    int ldx, ldo, M;
    int m_block;   /* rows per task */
    int group;     /* panels per task: 4; 8 for a single bf16 row (more streams in flight) */
    int n_pgroups; /* groups of `group` panels */
    int mode;
} job;

/* Task t = (row block, group of panels): the block's rows 6 at a time against the group's panels. */
AI void task(int dt, const job *j, int begin, int end) {
    const mm_weight *w = j->w;
    size_t ps = panel_bytes(w->K, dt);
    for (int t = begin; t < end; t++) {
        int mb = t / j->n_pgroups, pg = t % j->n_pgroups;
        int m0 = mb * j->m_block, m1 = m0 + j->m_block < j->M ? m0 + j->m_block : j->M;
        int p0 = pg * j->group, P = w->n_panels - p0 < j->group ? w->n_panels - p0 : j->group;
        const char *pan = (const char *)w->panels + (size_t)p0 * ps;
        if (j->group > 4) { /* M == 1 */
            kernel_1p(P, dt, pan, ps, w->K, j->x, j->out, p0 * MM_PANEL, w->N, w->bias, j->mode);
            continue;
        }
        for (int m = m0; m < m1; m += 6) {
            int R = m1 - m < 6 ? m1 - m : 6;
            kernel_rp(R, P, dt, pan, ps, w->K, j->x + (size_t)m * j->ldx, j->ldx, j->out + (size_t)m * j->ldo,
                      j->ldo, p0 * MM_PANEL, w->N, w->bias, j->mode);
        }
    }
}

static void task_f32(void *ctx, int begin, int end, int tid) {
    (void)tid;
    task(MM_F32, ctx, begin, end);
}

static void task_bf16(void *ctx, int begin, int end, int tid) {
    (void)tid;
    task(MM_BF16, ctx, begin, end);
}

static void forward(pool_fn fn, int dt, pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo,
                    int M, int mode) {
    job j = {.w = w, .x = x, .out = out, .ldx = ldx, .ldo = ldo, .M = M, .mode = mode};
    j.m_block = M <= 96 ? M : 96;
    j.group = M == 1 && dt == MM_BF16 ? 8 : 4;
    j.n_pgroups = (w->n_panels + j.group - 1) / j.group;
    int n_tasks = ((M + j.m_block - 1) / j.m_block) * j.n_pgroups;
    if (p)
        pool_run(p, fn, &j, n_tasks, 1);
    else
        fn(&j, 0, n_tasks, 0);
}

void mm_avx512_forward_f32(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                           int mode, void *scratch) {
    (void)scratch;
    forward(task_f32, MM_F32, p, w, x, ldx, out, ldo, M, mode);
}

void mm_avx512_forward_bf16(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                            int mode, void *scratch) {
    (void)scratch;
    forward(task_bf16, MM_BF16, p, w, x, ldx, out, ldo, M, mode);
}
