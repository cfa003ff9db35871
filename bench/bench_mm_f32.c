/* bench_mm_f32 — the fp32 and bf16 matmul kernels of the "avx512" family against the "avx2" family's,
 * on the 124M model's shapes, in the same process: for each shape and format the two families run
 * alternately, several passes each, and the medians are compared (same machine, same moment, so the
 * ratio holds even when the absolute figures move with the machine's load). The weights cycle
 * through copies totalling at least 256 MB, so a single row (decode) reads them from memory as the
 * model does, not from the cache. Both families must give the same bits (checked on every shape).
 * The bound printed beside them: the fp32 FMA peak of 512-bit registers on all the pool's threads
 * (independent FMA chains in registers, no memory), the best of several passes.
 * usage: bench_mm_f32 [--threads N (default 2)] [--passes N (default 7)] */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "matmul.h"
#include "pool.h"

typedef struct {
    const char *name;
    int K, N, mode;
} shape;

static const shape shapes[] = {
    {"c_attn", 768, 2304, MM_STORE}, {"attn_proj", 768, 768, MM_ADD}, {"c_fc", 768, 3072, MM_GELU},
    {"mlp_proj", 3072, 768, MM_ADD}, {"lm_head", 768, 50257, MM_STORE},
};
static const int Ms[] = {1, 4, 64, 256};

static float frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return ((float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f) * 0.5f;
}

/* 12 independent chains of 512-bit FMAs per thread, 2^24 steps: 12 * 16 * 2 FLOP a step. Compiled
 * for AVX-512 alone (this program's other code runs on AVX2 machines: main checks first). */
__attribute__((target("avx512f"))) static void fma_task(void *ctx, int begin, int end, int tid) {
    (void)tid;
    float *sink = ctx;
    for (int t = begin; t < end; t++) {
        __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.001f);
        /* distinct start values: equal chains would be merged into one by the compiler */
        __m512 c0 = _mm512_set1_ps(1), c1 = _mm512_set1_ps(2), c2 = _mm512_set1_ps(3), c3 = _mm512_set1_ps(4),
               c4 = _mm512_set1_ps(5), c5 = _mm512_set1_ps(6), c6 = _mm512_set1_ps(7), c7 = _mm512_set1_ps(8),
               c8 = _mm512_set1_ps(9), c9 = _mm512_set1_ps(10), c10 = _mm512_set1_ps(11), c11 = _mm512_set1_ps(12);
        for (int i = 0; i < (1 << 24); i++) {
            c0 = _mm512_fmadd_ps(a, c0, b), c1 = _mm512_fmadd_ps(a, c1, b), c2 = _mm512_fmadd_ps(a, c2, b);
            c3 = _mm512_fmadd_ps(a, c3, b), c4 = _mm512_fmadd_ps(a, c4, b), c5 = _mm512_fmadd_ps(a, c5, b);
            c6 = _mm512_fmadd_ps(a, c6, b), c7 = _mm512_fmadd_ps(a, c7, b), c8 = _mm512_fmadd_ps(a, c8, b);
            c9 = _mm512_fmadd_ps(a, c9, b), c10 = _mm512_fmadd_ps(a, c10, b), c11 = _mm512_fmadd_ps(a, c11, b);
        }
        __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                                 _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
        s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)));
        sink[t] = _mm512_reduce_add_ps(s);
    }
}

/* GFLOP/s of the register FMA peak on p's threads (one task per thread): best of 5 passes. */
static double fma_peak(pool *p, int threads) {
    float sink[64];
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = bench_now();
        pool_run(p, fma_task, sink, threads, 1);
        double g = threads * 12.0 * 16 * 2 * (1 << 24) / (bench_now() - t0) / 1e9;
        if (g > best) best = g;
    }
    return best;
}

/* Seconds per call of family k over the copies, one pass: calls until at least 20 ms have gone. */
static double one_pass(const mm_kernels *k, pool *p, mm_weight *w, int copies, const float *x, float *out, int M,
                       int mode, int *next) {
    int calls = 0;
    double t0 = bench_now(), t;
    do {
        mm_forward(k, p, &w[*next], x, w->K, out, w->N, M, mode, NULL);
        *next = (*next + 1) % copies;
        calls++;
    } while ((t = bench_now() - t0) < 0.02);
    return t / calls;
}

int main(int argc, char **argv) {
    int threads = 2, passes = 7;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0) threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--passes") == 0) passes = atoi(argv[i + 1]);
    }
    if (threads < 1 || threads > 64 || passes < 1 || passes > 99) {
        fprintf(stderr, "usage: bench_mm_f32 [--threads N] [--passes N (1..99)]\n");
        return 2;
    }
    char err[256];
    const mm_kernels *wide = mm_kernels_select("avx512", err, sizeof err), *base = mm_kernels_select("avx2", err, sizeof err);
    if (!wide || !base) {
        printf("bench_mm_f32: skipped (%s)\n", err);
        return 0;
    }
    pool *p = pool_new(threads);
    unsigned seed = 1;
    double peak = fma_peak(p, threads);
    printf("fp32 FMA peak, 512-bit registers, %d threads: %.1f GFLOP/s (the compute bound below)\n", threads, peak);
    printf("fp32/bf16 kernels, avx512 vs avx2 family, %d threads, median of %d passes (ms per call; "
           "GFLOP/s; avx2 time / avx512 time; avx512 as %% of the peak)\n", threads, passes);
    for (int dt = MM_F32; dt <= MM_BF16; dt++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            const shape *sh = &shapes[s];
            int K = sh->K, N = sh->N, maxM = Ms[sizeof Ms / sizeof *Ms - 1];
            size_t bytes = mm_packed_bytes(K, N, (mm_dtype)dt);
            int copies = (int)((256u << 20) / bytes) + 1;
            float *W = malloc(sizeof(float) * K * N), *b = malloc(sizeof(float) * N);
            float *x = malloc(sizeof(float) * maxM * K), *o1 = malloc(sizeof(float) * maxM * N);
            float *o2 = malloc(sizeof(float) * maxM * N);
            char *panels = aligned_alloc(64, bytes * copies);
            mm_weight *w = malloc(sizeof(mm_weight) * copies);
            for (size_t i = 0; i < (size_t)K * N; i++) W[i] = frand(&seed) * 0.1f;
            for (int n = 0; n < N; n++) b[n] = frand(&seed);
            for (int i = 0; i < maxM * K; i++) x[i] = frand(&seed);
            mm_pack(&w[0], panels, W, K, N, 0, b, (mm_dtype)dt);
            for (int c = 1; c < copies; c++) {
                memcpy(panels + c * bytes, panels, bytes);
                mm_bind(&w[c], panels + c * bytes, K, N, b, (mm_dtype)dt);
            }
            for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                int M = Ms[mi];
                if (N > 10000 && M > 64) continue;
                /* the same bits from both (MM_ADD: from the same starting output) */
                memset(o1, 0, sizeof(float) * M * N), memset(o2, 0, sizeof(float) * M * N);
                mm_forward(base, p, &w[0], x, K, o1, N, M, sh->mode, NULL);
                mm_forward(wide, p, &w[0], x, K, o2, N, M, sh->mode, NULL);
                int same = memcmp(o1, o2, sizeof(float) * M * N) == 0;
                double t_base[99], t_wide[99];
                int next = 0;
                for (int r = 0; r < passes; r++) {
                    t_base[r] = one_pass(base, p, w, copies, x, o1, M, sh->mode, &next);
                    t_wide[r] = one_pass(wide, p, w, copies, x, o2, M, sh->mode, &next);
                }
                double tb = bench_quantile(t_base, passes, 0.5), tw = bench_quantile(t_wide, passes, 0.5);
                double flop = 2.0 * M * K * N;
                double gw = flop / tw / 1e9;
                printf("  %-4s %-9s M %3d K %4d N %5d: avx2 %8.3f ms %6.1f GF/s | avx512 %8.3f ms %6.1f GF/s | "
                       "%.2fx | %3.0f%%%s%s\n", mm_dtype_name((mm_dtype)dt), sh->name, M, K, N, tb * 1e3,
                       flop / tb / 1e9, tw * 1e3, gw, tb / tw, 100 * gw / peak,
                       gw > peak ? " (above the peak: the bound is wrong)" : "", same ? "" : "  RESULTS DIFFER");
                fflush(stdout);
            }
            free(W), free(b), free(x), free(o1), free(o2), free(panels), free(w);
        }
    pool_free(p);
    return 0;
}
