/* matmul_avx2.c — the "avx2" kernel family of matmul.h: AVX2 + FMA micro-kernels of R rows x 16
 * columns (R = 1..6) and a 1 x 64 kernel for single-row (decode) calls, for fp32 and bf16 panels
 * (bf16 widened to fp32 in registers: a shift); MM_I8 runs matmul_i8_avx2.c's kernels (maddubs +
 * madd). All of them compute each element in the same order as matmul_scalar.c's definition. */
#include "matmul.h"

#include <immintrin.h>
#include <string.h>

#include "matmul_simd.h"

/* Row k of a panel (16 weights) as two fp32 vectors; dt is a constant at every call site. */
static inline __attribute__((always_inline)) void load16(const void *panel, int k, int dt, __m256 *b0,
                                                         __m256 *b1) {
    if (dt == MM_BF16) {
        __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)panel + (size_t)k * 16));
        *b0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)), 16));
        *b1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)), 16));
    } else {
        *b0 = _mm256_load_ps((const float *)panel + (size_t)k * 16);
        *b1 = _mm256_load_ps((const float *)panel + (size_t)k * 16 + 8);
    }
}

/* Bytes of one panel in format dt. */
static inline size_t panel_bytes(int K, int dt) { return (size_t)K * 16 * (dt == MM_BF16 ? 2 : 4); }

/* R rows x 16 columns over the whole K; R is a compile-time constant at each call site, so the
 * accumulators are named registers (an array would be kept in memory). */
#define ROW_FMA(r)                                                                              \
    if (R > r) {                                                                                \
        __m256 a = _mm256_broadcast_ss(x + (size_t)(r) * ldx + k);                             \
        c##r##0 = _mm256_fmadd_ps(a, b0, c##r##0);                                              \
        c##r##1 = _mm256_fmadd_ps(a, b1, c##r##1);                                              \
    }
#define ROW_STORE(r)                                                                            \
    if (R > r) store16(out + (size_t)(r) * ldo, n0, N, bias, mode, c##r##0, c##r##1);

static inline __attribute__((always_inline)) void kernel_rx16(int R, int dt, const void *panel, int K,
                                                              const float *x, int ldx, float *out,
                                                              int ldo, int n0, int N,
                                                              const float *bias, int mode) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < K; k++) {
        __m256 b0, b1;
        load16(panel, k, dt, &b0, &b1);
        ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4) ROW_FMA(5)
    }
    ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4) ROW_STORE(5)
}

/* One row x 4 panels (64 columns): more independent chains for the bandwidth-bound decode. */
static inline __attribute__((always_inline)) void kernel_1x64(int dt, const void *p0, int K, const float *x,
                                                              float *out, int n0, int N, const float *bias,
                                                              int mode) {
    const size_t ps = panel_bytes(K, dt);
    const char *p1 = (const char *)p0 + ps, *p2 = p1 + ps, *p3 = p2 + ps;
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    for (int k = 0; k < K; k++) {
        __m256 a = _mm256_broadcast_ss(x + k), b0, b1;
        load16(p0, k, dt, &b0, &b1);
        c0 = _mm256_fmadd_ps(a, b0, c0);
        c1 = _mm256_fmadd_ps(a, b1, c1);
        load16(p1, k, dt, &b0, &b1);
        c2 = _mm256_fmadd_ps(a, b0, c2);
        c3 = _mm256_fmadd_ps(a, b1, c3);
        load16(p2, k, dt, &b0, &b1);
        c4 = _mm256_fmadd_ps(a, b0, c4);
        c5 = _mm256_fmadd_ps(a, b1, c5);
        load16(p3, k, dt, &b0, &b1);
        c6 = _mm256_fmadd_ps(a, b0, c6);
        c7 = _mm256_fmadd_ps(a, b1, c7);
    }
    store16(out, n0, N, bias, mode, c0, c1);
    store16(out, n0 + 16, N, bias, mode, c2, c3);
    store16(out, n0 + 32, N, bias, mode, c4, c5);
    store16(out, n0 + 48, N, bias, mode, c6, c7);
}

static inline __attribute__((always_inline)) void rows_panel(int dt, const mm_weight *w, int j, const float *x,
                                                             int ldx, float *out, int ldo, int M, int mode) {
    const void *panel = (const char *)w->panels + (size_t)j * panel_bytes(w->K, dt);
    int n0 = j * MM_PANEL, m = 0;
    for (; m + 6 <= M; m += 6)
        kernel_rx16(6, dt, panel, w->K, x + (size_t)m * ldx, ldx, out + (size_t)m * ldo, ldo, n0,
                    w->N, w->bias, mode);
    const float *xm = x + (size_t)m * ldx;
    float *om = out + (size_t)m * ldo;
    switch (M - m) {
    case 5: kernel_rx16(5, dt, panel, w->K, xm, ldx, om, ldo, n0, w->N, w->bias, mode); break;
    case 4: kernel_rx16(4, dt, panel, w->K, xm, ldx, om, ldo, n0, w->N, w->bias, mode); break;
    case 3: kernel_rx16(3, dt, panel, w->K, xm, ldx, om, ldo, n0, w->N, w->bias, mode); break;
    case 2: kernel_rx16(2, dt, panel, w->K, xm, ldx, om, ldo, n0, w->N, w->bias, mode); break;
    case 1: kernel_rx16(1, dt, panel, w->K, xm, ldx, om, ldo, n0, w->N, w->bias, mode); break;
    default: break;
    }
}

typedef struct {
    const mm_weight *w;
    const float *x;
    float *out;
    int ldx, ldo, M;
    int m_block;  /* rows per task */
    int n_pgroups;/* panel groups of 4 */
    int mode;     /* MM_STORE, MM_GELU or MM_ADD */
} mm_job;

/* Task t = (row block, group of 4 panels), panels of format dt. */
static inline __attribute__((always_inline)) void mm_task(int dt, const mm_job *j, int begin, int end) {
    const mm_weight *w = j->w;
    for (int t = begin; t < end; t++) {
        int mb = t / j->n_pgroups, pg = t % j->n_pgroups;
        int m0 = mb * j->m_block;
        int M = j->M - m0 < j->m_block ? j->M - m0 : j->m_block;
        int p0 = pg * 4, p1 = p0 + 4 < w->n_panels ? p0 + 4 : w->n_panels;
        const float *x = j->x + (size_t)m0 * j->ldx;
        float *out = j->out + (size_t)m0 * j->ldo;
        if (M == 1 && p1 - p0 == 4) {
            kernel_1x64(dt, (const char *)w->panels + (size_t)p0 * panel_bytes(w->K, dt), w->K, x, out,
                        p0 * MM_PANEL, w->N, w->bias, j->mode);
            continue;
        }
        for (int p = p0; p < p1; p++) rows_panel(dt, w, p, x, j->ldx, out, j->ldo, M, j->mode);
    }
}

static void mm_task_f32(void *ctx, int begin, int end, int tid) {
    (void)tid;
    mm_task(MM_F32, ctx, begin, end);
}

static void mm_task_bf16(void *ctx, int begin, int end, int tid) {
    (void)tid;
    mm_task(MM_BF16, ctx, begin, end);
}

static void forward(pool_fn task, pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo,
                    int M, int mode) {
    mm_job j = {.w = w, .x = x, .out = out, .ldx = ldx, .ldo = ldo, .M = M, .mode = mode};
    j.m_block = M <= 96 ? M : 96;
    j.n_pgroups = (w->n_panels + 3) / 4;
    int n_tasks = ((M + j.m_block - 1) / j.m_block) * j.n_pgroups;
    if (p)
        pool_run(p, task, &j, n_tasks, 1);
    else
        task(&j, 0, n_tasks, 0);
}

void mm_avx2_forward_f32(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                         int mode, void *scratch) {
    (void)scratch;
    forward(mm_task_f32, p, w, x, ldx, out, ldo, M, mode);
}

void mm_avx2_forward_bf16(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                          int mode, void *scratch) {
    (void)scratch;
    forward(mm_task_bf16, p, w, x, ldx, out, ldo, M, mode);
}

const mm_kernels mm_kernels_avx2 = {
    "avx2", {[MM_F32] = mm_avx2_forward_f32, [MM_BF16] = mm_avx2_forward_bf16, [MM_I8] = mm_avx2_forward_i8}};
