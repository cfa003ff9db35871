/* matmul_avx2.c — the "avx2" kernel family of matmul.h: AVX2 + FMA micro-kernels of R rows x 16
 * columns (R = 1..6) and a 1 x 64 kernel for single-row (decode) calls; all of them compute each
 * element in the same order as matmul_scalar.c's definition. */
#include "matmul.h"

#include "vmath.h"

#include <immintrin.h>
#include <string.h>

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

static inline __attribute__((always_inline)) void kernel_rx16(int R, const float *panel, int K,
                                                              const float *x, int ldx, float *out,
                                                              int ldo, int n0, int N,
                                                              const float *bias, int mode) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < K; k++) {
        __m256 b0 = _mm256_load_ps(panel + (size_t)k * 16);
        __m256 b1 = _mm256_load_ps(panel + (size_t)k * 16 + 8);
        ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4) ROW_FMA(5)
    }
    ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4) ROW_STORE(5)
}

/* One row x 4 panels (64 columns): more independent chains for the bandwidth-bound decode. */
static void kernel_1x64(const float *p0, int K, const float *x, float *out, int n0, int N,
                        const float *bias, int mode) {
    const size_t ps = (size_t)K * 16;
    const float *p1 = p0 + ps, *p2 = p1 + ps, *p3 = p2 + ps;
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    for (int k = 0; k < K; k++) {
        __m256 a = _mm256_broadcast_ss(x + k);
        size_t o = (size_t)k * 16;
        c0 = _mm256_fmadd_ps(a, _mm256_load_ps(p0 + o), c0);
        c1 = _mm256_fmadd_ps(a, _mm256_load_ps(p0 + o + 8), c1);
        c2 = _mm256_fmadd_ps(a, _mm256_load_ps(p1 + o), c2);
        c3 = _mm256_fmadd_ps(a, _mm256_load_ps(p1 + o + 8), c3);
        c4 = _mm256_fmadd_ps(a, _mm256_load_ps(p2 + o), c4);
        c5 = _mm256_fmadd_ps(a, _mm256_load_ps(p2 + o + 8), c5);
        c6 = _mm256_fmadd_ps(a, _mm256_load_ps(p3 + o), c6);
        c7 = _mm256_fmadd_ps(a, _mm256_load_ps(p3 + o + 8), c7);
    }
    store16(out, n0, N, bias, mode, c0, c1);
    store16(out, n0 + 16, N, bias, mode, c2, c3);
    store16(out, n0 + 32, N, bias, mode, c4, c5);
    store16(out, n0 + 48, N, bias, mode, c6, c7);
}

static void rows_panel(const mm_weight *w, int j, const float *x, int ldx, float *out, int ldo,
                       int M, int mode) {
    const float *panel = w->panels + (size_t)j * w->K * MM_PANEL;
    int n0 = j * MM_PANEL, m = 0;
    for (; m + 6 <= M; m += 6)
        kernel_rx16(6, panel, w->K, x + (size_t)m * ldx, ldx, out + (size_t)m * ldo, ldo, n0,
                    w->N, w->bias, mode);
    const float *xm = x + (size_t)m * ldx;
    float *om = out + (size_t)m * ldo;
    switch (M - m) {
    case 5: kernel_rx16(5, panel, w->K, xm, ldx, om, ldo, n0, w->N, w->bias, mode); break;
    case 4: kernel_rx16(4, panel, w->K, xm, ldx, om, ldo, n0, w->N, w->bias, mode); break;
    case 3: kernel_rx16(3, panel, w->K, xm, ldx, om, ldo, n0, w->N, w->bias, mode); break;
    case 2: kernel_rx16(2, panel, w->K, xm, ldx, om, ldo, n0, w->N, w->bias, mode); break;
    case 1: kernel_rx16(1, panel, w->K, xm, ldx, om, ldo, n0, w->N, w->bias, mode); break;
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

/* Task t = (row block, group of 4 panels). */
static void mm_task(void *ctx, int begin, int end, int tid) {
    (void)tid;
    const mm_job *j = ctx;
    const mm_weight *w = j->w;
    for (int t = begin; t < end; t++) {
        int mb = t / j->n_pgroups, pg = t % j->n_pgroups;
        int m0 = mb * j->m_block;
        int M = j->M - m0 < j->m_block ? j->M - m0 : j->m_block;
        int p0 = pg * 4, p1 = p0 + 4 < w->n_panels ? p0 + 4 : w->n_panels;
        const float *x = j->x + (size_t)m0 * j->ldx;
        float *out = j->out + (size_t)m0 * j->ldo;
        if (M == 1 && p1 - p0 == 4) {
            kernel_1x64(w->panels + (size_t)p0 * w->K * MM_PANEL, w->K, x, out, p0 * MM_PANEL,
                        w->N, w->bias, j->mode);
            continue;
        }
        for (int p = p0; p < p1; p++) rows_panel(w, p, x, j->ldx, out, j->ldo, M, j->mode);
    }
}

static void mm_forward_f32(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                           int mode) {
    mm_job j = {.w = w, .x = x, .out = out, .ldx = ldx, .ldo = ldo, .M = M, .mode = mode};
    j.m_block = M <= 96 ? M : 96;
    j.n_pgroups = (w->n_panels + 3) / 4;
    int n_tasks = ((M + j.m_block - 1) / j.m_block) * j.n_pgroups;
    if (p)
        pool_run(p, mm_task, &j, n_tasks, 1);
    else
        mm_task(&j, 0, n_tasks, 0);
}

const mm_kernels mm_kernels_avx2 = {"avx2", {[MM_F32] = mm_forward_f32}};
