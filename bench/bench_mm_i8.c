/* bench_mm_i8 — the int8 matmul kernels (worker/kernels) shape by shape against this machine's limits,
 * measured in the same run with the same threads (bench_mm_f32 compares the fp32 / bf16 families):
 *   read bandwidth (256 MB read once per pass, huge pages: sequential chunks, and the int8 decode
 *   kernel's pattern with its prefetch; the faster is the bound),
 *   per kernel family, its integer-dot peak (int8 multiply-adds in registers: 512-bit vpdpbusd for
 *   avx512, maddubs + madd + add for avx2) and FMA peak (fp32 FMAs in registers, 512- / 256-bit);
 * then for every kernel family the CPU runs (and with --weights, another format), the 124M model's matrices
 * (768 -> 2304, 768 -> 768, 768 -> 3072, 3072 -> 768, and the 768 -> 50257 lm_head):
 *   M = 1 (decode): GB/s of weights read, against the read bandwidth; the weights cycle through
 *   copies larger than the caches, as a decode step reads them from memory;
 *   M = 64 and 256 (batches): GOP/s (2 per multiply-add), against the integer-dot peak for int8 and
 *   the FMA peak for fp32 / bf16.
 * Each figure is the median of PASSES passes, after a warm-up one; bounds are the best of theirs.
 * The kernels are batch-invariant (matmul.h), so these are the speeds of the forward pass's matmuls.
 * usage: bench_mm_i8 [--threads N] [--family avx512|avx2] [--weights int8|fp32|bf16|all] [--quick] */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench_util.h"
#include "cpu.h"
#include "matmul.h"
#include "pool.h"

#define PASSES 7

typedef struct {
    const unsigned char *buf;
    size_t chunk;
    int pattern; /* 0: one sequential stream; 1: the int8 decode kernel's (4 panel streams, prefetched) */
    long *sink;
} read_job;

#define PANEL_I8 (24 * sizeof(mm_i8_block)) /* one int8 panel of a K = 768 matrix */

static void read_task(void *ctx, int b, int e, int tid) {
    const read_job *j = ctx;
    (void)tid;
    for (int t = b; t < e; t++) {
        const unsigned char *c = j->buf + (size_t)t * j->chunk;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        if (j->pattern == 0) {
            for (size_t i = 0; i + 64 <= j->chunk; i += 64) {
                a0 = _mm256_add_epi32(a0, _mm256_load_si256((const __m256i *)(c + i)));
                a1 = _mm256_add_epi32(a1, _mm256_load_si256((const __m256i *)(c + i + 32)));
            }
        } else {
            const size_t q = PANEL_I8;
            for (size_t i = 0; i + 64 <= q; i += 64) {
                for (int s = 0; s < 4; s++) _mm_prefetch((const char *)c + s * q + i + 2 * sizeof(mm_i8_block), _MM_HINT_T0);
                a0 = _mm256_add_epi32(a0, _mm256_add_epi32(_mm256_load_si256((const __m256i *)(c + i)),
                                                           _mm256_load_si256((const __m256i *)(c + i + 32))));
                a1 = _mm256_add_epi32(a1, _mm256_add_epi32(_mm256_load_si256((const __m256i *)(c + q + i)),
                                                           _mm256_load_si256((const __m256i *)(c + q + i + 32))));
                a2 = _mm256_add_epi32(a2, _mm256_add_epi32(_mm256_load_si256((const __m256i *)(c + 2 * q + i)),
                                                           _mm256_load_si256((const __m256i *)(c + 2 * q + i + 32))));
                a3 = _mm256_add_epi32(a3, _mm256_add_epi32(_mm256_load_si256((const __m256i *)(c + 3 * q + i)),
                                                           _mm256_load_si256((const __m256i *)(c + 3 * q + i + 32))));
            }
        }
        int o[8];
        _mm256_storeu_si256((__m256i *)o, _mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)));
        j->sink[t] = o[0];
    }
}

/* Best GB/s of PASSES reads of `bytes` handed out to the pool in tasks, for each pattern: 64 KB
 * sequential chunks, and the int8 decode kernel's groups of 4 panels read side by side with its
 * prefetch (whichever is faster is the bound: the kernels must not beat it). */
static double read_bandwidth(pool *p, size_t bytes) {
    size_t group = 4 * PANEL_I8;
    bytes = (bytes + group - 1) / group * group;
    unsigned char *buf = mmap(NULL, bytes + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) return 0;
    madvise(buf, bytes, MADV_HUGEPAGE);
    memset(buf, 1, bytes);
    long *sink = malloc(sizeof(long) * (bytes / (4 << 10)));
    double best = 0;
    for (int pattern = 0; pattern < 2; pattern++) {
        read_job j = {buf, pattern ? group : 64 << 10, pattern, sink};
        for (int r = 0; r <= PASSES; r++) {
            double t0 = bench_now();
            pool_run(p, read_task, &j, (int)(bytes / j.chunk), 1);
            double g = (double)(bytes / j.chunk * j.chunk) / (bench_now() - t0) / 1e9;
            if (r > 0 && g > best) best = g;
        }
    }
    free(sink);
    munmap(buf, bytes + 4096);
    return best;
}

/* Register-only peaks: each returns the multiply-adds it did (results go to sink, so none is skipped). */
#define PEAK_ITERS 10000000
static volatile int sink;
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double idot_vnni(void) {
    __m512i a = _mm512_set1_epi8(3), w = _mm512_set1_epi8(-2);
    /* distinct chains: equal ones (same start, same inputs) would be merged into one */
    __m512i c0 = _mm512_set1_epi32(0), c1 = _mm512_set1_epi32(1), c2 = _mm512_set1_epi32(2), c3 = _mm512_set1_epi32(3);
    __m512i c4 = _mm512_set1_epi32(4), c5 = _mm512_set1_epi32(5), c6 = _mm512_set1_epi32(6), c7 = _mm512_set1_epi32(7);
    for (int i = 0; i < PEAK_ITERS; i++) {
        c0 = _mm512_dpbusd_epi32(c0, a, w), c1 = _mm512_dpbusd_epi32(c1, a, w);
        c2 = _mm512_dpbusd_epi32(c2, a, w), c3 = _mm512_dpbusd_epi32(c3, a, w);
        c4 = _mm512_dpbusd_epi32(c4, a, w), c5 = _mm512_dpbusd_epi32(c5, a, w);
        c6 = _mm512_dpbusd_epi32(c6, a, w), c7 = _mm512_dpbusd_epi32(c7, a, w);
        __asm__ volatile("" : "+v"(a)); /* a loop-carried unknown: nothing hoisted */
    }
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                                 _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
    sink = _mm512_reduce_add_epi32(s);
    return (double)PEAK_ITERS * 8 * 64;
}

static double idot_avx2(void) {
    /* a weight vector per chain: with one, the compiler would form maddubs(a, w) once for all six */
    __m256i a = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1), c[6], w[6];
    for (int k = 0; k < 6; k++) c[k] = _mm256_setzero_si256(), w[k] = _mm256_set1_epi8((char)(-2 - k));
    for (int i = 0; i < PEAK_ITERS; i++) {
#pragma GCC unroll 6
        for (int k = 0; k < 6; k++) c[k] = _mm256_add_epi32(c[k], _mm256_madd_epi16(_mm256_maddubs_epi16(a, w[k]), one));
        __asm__ volatile("" : "+x"(a));
    }
    for (int k = 1; k < 6; k++) c[0] = _mm256_add_epi32(c[0], c[k]);
    int o[8];
    _mm256_storeu_si256((__m256i *)o, c[0]);
    sink = o[0];
    return (double)PEAK_ITERS * 6 * 32;
}

__attribute__((target("avx512f"))) static double fma_zmm(void) {
    __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(0.5f), c[10];
    for (int k = 0; k < 10; k++) c[k] = _mm512_set1_ps((float)k); /* distinct chains (equal ones would merge) */
    for (int i = 0; i < PEAK_ITERS; i++) {
#pragma GCC unroll 10
        for (int k = 0; k < 10; k++) c[k] = _mm512_fmadd_ps(a, b, c[k]);
        __asm__ volatile("" : "+v"(a));
    }
    for (int k = 1; k < 10; k++) c[0] = _mm512_add_ps(c[0], c[k]);
    float o[16];
    _mm512_storeu_ps(o, c[0]);
    sink = (int)o[0];
    return (double)PEAK_ITERS * 10 * 16;
}

static double fma_ymm(void) {
    __m256 a = _mm256_set1_ps(1.0f), b = _mm256_set1_ps(0.5f), c[10];
    for (int k = 0; k < 10; k++) c[k] = _mm256_set1_ps((float)k); /* distinct chains (equal ones would merge) */
    for (int i = 0; i < PEAK_ITERS; i++) {
#pragma GCC unroll 10
        for (int k = 0; k < 10; k++) c[k] = _mm256_fmadd_ps(a, b, c[k]);
        __asm__ volatile("" : "+x"(a));
    }
    for (int k = 1; k < 10; k++) c[0] = _mm256_add_ps(c[0], c[k]);
    float o[8];
    _mm256_storeu_ps(o, c[0]);
    sink = (int)o[0];
    return (double)PEAK_ITERS * 10 * 8;
}

typedef struct {
    double (*fn)(void);
    double macs[256];
} peak_job;

static void peak_task(void *ctx, int b, int e, int tid) {
    peak_job *j = ctx;
    (void)tid;
    for (int t = b; t < e; t++) j->macs[t % 256] = j->fn();
}

/* Best GOP/s (2 per multiply-add) of fn run once on each of the pool's threads at once. */
static double peak(pool *p, double (*fn)(void)) {
    peak_job j = {.fn = fn};
    int n = pool_threads(p);
    double best = 0;
    for (int r = 0; r <= PASSES; r++) {
        double t0 = bench_now();
        pool_run(p, peak_task, &j, n, 1);
        double g = 2.0 * j.macs[0] * n / (bench_now() - t0) / 1e9;
        if (r > 0 && g > best) best = g;
    }
    return best;
}

static float frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

int main(int argc, char **argv) {
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), quick = 0;
    const char *only_family = NULL, *only_weights = "int8";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--family") == 0 && i + 1 < argc) only_family = argv[++i];
        else if (strcmp(argv[i], "--weights") == 0 && i + 1 < argc) only_weights = argv[++i];
        else if (strcmp(argv[i], "--quick") == 0) quick = 1;
        else {
            fprintf(stderr, "usage: bench_mm_i8 [--threads N] [--family avx512|avx2] [--weights int8|fp32|bf16|all] [--quick]\n");
            return 2;
        }
    }
    cpu_features cf;
    cpu_detect(&cf);
    pool *p = pool_new(threads);
    double bw = read_bandwidth(p, 256u << 20);
    /* each family against its own instructions' peaks: [0] avx512 (if the CPU has it), [1] avx2 */
    int z = cpu_avx512_ok(&cf);
    double idot[2] = {z ? peak(p, idot_vnni) : 0, peak(p, idot_avx2)};
    double fma[2] = {z ? peak(p, fma_zmm) : 0, peak(p, fma_ymm)};
    printf("bench_mm_i8: %d threads; read bandwidth %.1f GB/s (256 MB)\n", pool_threads(p), bw);
    if (z) printf("  avx512 peaks: integer-dot %.0f GOP/s (512-bit vpdpbusd), FMA %.0f GFLOP/s (512-bit)\n", idot[0], fma[0]);
    printf("  avx2 peaks: integer-dot %.0f GOP/s (maddubs + madd + add), FMA %.0f GFLOP/s (256-bit)\n", idot[1], fma[1]);
    printf("  %-7s %-5s %-18s %10s %10s %10s  %s\n", "family", "fmt", "M x K -> N", "median us", "best us", "GOP/s",
           "of its bound (median)");
    static const int shapes[][2] = {{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}, {768, 50257}};
    static const int Ms[] = {1, 64, 256};
    static const char *const fams[] = {"avx512", "avx2"}; /* the index of idot / fma */
    unsigned seed = 1;
    for (size_t fi = 0; fi < sizeof fams / sizeof *fams; fi++) {
        char err[256];
        const mm_kernels *k = mm_kernels_select(fams[fi], err, sizeof err);
        if (!k || (only_family && strcmp(only_family, fams[fi]) != 0)) continue;
        for (int dt = 0; dt < MM_N_DTYPES; dt++) {
            if (strcmp(only_weights, "all") != 0 && strcmp(only_weights, mm_dtype_name((mm_dtype)dt)) != 0) continue;
            for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
                int K = shapes[si][0], N = shapes[si][1];
                size_t wb = mm_packed_bytes(K, N, (mm_dtype)dt);
                int copies = (int)((quick ? 96u << 20 : 256u << 20) / wb) + 1;
                float *W = malloc(sizeof(float) * (size_t)K * N), *bias = malloc(sizeof(float) * N);
                for (size_t i = 0; i < (size_t)K * N; i++) W[i] = frand(&seed) * 0.1f;
                for (int n = 0; n < N; n++) bias[n] = 0.001f * (n % 100);
                char *img = mmap(NULL, wb * copies, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                mm_weight *w = malloc(sizeof(mm_weight) * copies);
                if (img == MAP_FAILED || !w) return 1;
                madvise(img, wb * copies, MADV_HUGEPAGE);
                mm_pack(&w[0], img, W, K, N, 0, bias, (mm_dtype)dt);
                for (int c = 1; c < copies; c++) {
                    memcpy(img + wb * c, img, wb);
                    mm_bind(&w[c], img + wb * c, K, N, bias, (mm_dtype)dt);
                }
                for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                    int M = Ms[mi];
                    if ((quick || N > 10000) && M > 64) continue;
                    float *x = malloc(sizeof(float) * (size_t)M * K), *out = malloc(sizeof(float) * (size_t)M * N);
                    for (size_t i = 0; i < (size_t)M * K; i++) x[i] = frand(&seed);
                    void *scratch = aligned_alloc(64, mm_scratch_bytes(M, K));
                    /* M = 1: a pass reads every copy once (from memory); batches: ~0.2 s of work */
                    int reps = M == 1 ? copies : (int)(2e9 * (quick ? 0.3 : 1) / (2.0 * M * K * N * 10)) + 1;
                    double t[PASSES + 1];
                    for (int r = 0; r <= PASSES; r++) {
                        double t0 = bench_now();
                        for (int i = 0; i < reps; i++)
                            mm_forward(k, p, &w[i % copies], x, K, out, N, M, MM_STORE, scratch);
                        t[r] = (bench_now() - t0) / reps;
                    }
                    double med = bench_quantile(t + 1, PASSES, 0.5), best = bench_quantile(t + 1, PASSES, 0.0);
                    double gops = 2.0 * M * K * N / med / 1e9;
                    char shape[32], of[128];
                    snprintf(shape, sizeof shape, "%d x %d -> %d", M, K, N);
                    double x_of = M == 1 ? wb / med / 1e9 / bw : gops / (dt == MM_I8 ? idot[fi] : fma[fi]);
                    if (M == 1)
                        snprintf(of, sizeof of, "%.1f GB/s = %.0f%% of the read bandwidth", wb / med / 1e9, 100 * x_of);
                    else
                        snprintf(of, sizeof of, "%.0f%% of the %s peak", 100 * x_of, dt == MM_I8 ? "integer-dot" : "FMA");
                    if (x_of > 1) /* a bound below a measured speed is not a bound */
                        snprintf(of + strlen(of), sizeof of - strlen(of), " -- ABOVE the bound: the bound is wrong");
                    printf("  %-7s %-5s %-18s %10.1f %10.1f %10.1f  %s\n", k->name, mm_dtype_name((mm_dtype)dt), shape,
                           med * 1e6, best * 1e6, gops, of);
                    fflush(stdout);
                    free(x), free(out), free(scratch);
                }
                munmap(img, wb * copies);
                free(W), free(bias), free(w);
            }
        }
    }
    pool_free(p);
    return 0;
}
