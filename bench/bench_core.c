/* bench_core — the single-sequence figures for the 124M-shaped model, against this machine's
 * limits measured in the same run, each the best of several passes with its spread printed, and any
 * figure above its bound flagged ("the bound is wrong"):
 *   read bandwidth (a buffer the size of the packed weights read in the decode kernel's pattern,
 *   huge pages and not),
 *   OpenBLAS sgemm peak (M = N = K = 1024, all threads), fp32 FMA register peak (512-bit where the
 *   CPU has AVX-512F; the compute bound is the larger of the two), integer-dot peak (int8
 *   multiply-adds in registers: vpdpbusd with AVX512-VNNI, else maddubs + madd),
 *   prefill tokens/s for a 128-token prompt (ratio to the compute bound, 2 FLOP per weight per token),
 *   single-sequence decode tokens/s (ratio to the weight-read bound: bandwidth / weight bytes), for
 *   fp32, bf16 and int8 weights (each against its own bytes),
 *   tokenizer MB/s on the email workload text;
 *   the shared weight image (weights.h: the cache file every worker maps) against today's private
 *   huge-page copy: load time cold (pack + write) and warm (map + verify), and single-sequence decode
 *   on each, interleaved token by token in the same run (target: shared >= 95% of private).
 * Each figure is the median of several repetitions.
 * usage: bench_core MODEL_DIR EMAILS.jsonl [CACHE_DIR (default build/bench-cache)] */
#include <cblas.h>
#include <immintrin.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "bpe.h"
#include "checkpoint.h"
#include "gpt2.h"
#include "wimage.h"
#include "kv.h"
#include "pool.h"

#define REPS 5

typedef struct {
    const float *buf;
    size_t panel;   /* floats per panel */
    float *partial; /* per task */
} sweep_job;

/* Task t reads panels 4t .. 4t+3 as 4 interleaved streams, 64 bytes of each per step: the access
 * pattern of the decode kernel (1 row x 4 panels of 16 columns), summing so the loads cannot be
 * skipped. */
static void sweep_task(void *ctx, int b, int e, int tid) {
    (void)tid;
    const sweep_job *j = ctx;
    size_t q = j->panel;
    for (int t = b; t < e; t++) {
        const float *p = j->buf + (size_t)t * 4 * q;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t i = 0; i + 16 <= q; i += 16) {
            a0 = _mm256_add_ps(a0, _mm256_add_ps(_mm256_load_ps(p + i), _mm256_load_ps(p + i + 8)));
            a1 = _mm256_add_ps(a1, _mm256_add_ps(_mm256_load_ps(p + q + i), _mm256_load_ps(p + q + i + 8)));
            a2 = _mm256_add_ps(a2, _mm256_add_ps(_mm256_load_ps(p + 2 * q + i), _mm256_load_ps(p + 2 * q + i + 8)));
            a3 = _mm256_add_ps(a3, _mm256_add_ps(_mm256_load_ps(p + 3 * q + i), _mm256_load_ps(p + 3 * q + i + 8)));
        }
        float out[8];
        _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        j->partial[t] = out[0];
    }
}

/* A bound and its spread over PASSES measurements (best = the bound). */
#define PASSES 9
typedef struct {
    double best, median, worst;
} spread;

static spread spread_of(double *v, int n, int higher_is_better) {
    spread s;
    double lo = bench_quantile(v, n, 0.0), hi = bench_quantile(v, n, 1.0);
    s.median = bench_quantile(v, n, 0.5);
    s.best = higher_is_better ? hi : lo;
    s.worst = higher_is_better ? lo : hi;
    return s;
}

/* GB/s reading `bytes` once with the pool's threads in the decode kernel's pattern (panels of a
 * K = 768 matrix, 4 per task), PASSES passes after a warm-up one. */
static spread read_bandwidth(pool *p, size_t bytes, int huge) {
    spread none = {0, 0, 0};
    size_t panel = 768 * 16, group = 4 * panel * sizeof(float);
    bytes = bytes / group * group;
    float *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) return none;
    madvise(buf, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    memset(buf, 1, bytes);
    int n_tasks = (int)(bytes / group);
    float *partial = malloc(sizeof(float) * n_tasks);
    sweep_job j = {buf, panel, partial};
    double gbs[PASSES];
    for (int r = 0; r <= PASSES; r++) {
        double t0 = bench_now();
        pool_run(p, sweep_task, &j, n_tasks, 1);
        if (r > 0) gbs[r - 1] = bytes / (bench_now() - t0) / 1e9;
    }
    free(partial);
    munmap(buf, bytes);
    return spread_of(gbs, PASSES, 1);
}

static spread sgemm_peak(int threads) {
    int n = 1024;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    openblas_set_num_threads(threads);
    double g[PASSES];
    for (int r = 0; r <= PASSES; r++) {
        double t0 = bench_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        if (r > 0) g[r - 1] = 2.0 * n * n * n / (bench_now() - t0) / 1e9;
    }
    free(a), free(b), free(c);
    return spread_of(g, PASSES, 1);
}

/* The integer-dot peak: int8 multiply-adds per second with every thread running independent chains
 * in registers (no memory): 512-bit vpdpbusd where the CPU has AVX512-VNNI (64 per instruction),
 * else AVX2 maddubs + madd + add (32 per three instructions). Counted as 2 ops per multiply-add. */
#define IDOT_ITERS 2000000
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static float idot_vnni(void) {
    __m512i a = _mm512_set1_epi8(3), w = _mm512_set1_epi8(-2);
    /* distinct start values: equal chains with equal inputs would be merged into one by the compiler */
    __m512i c0 = _mm512_set1_epi32(0), c1 = _mm512_set1_epi32(1), c2 = _mm512_set1_epi32(2), c3 = _mm512_set1_epi32(3);
    __m512i c4 = _mm512_set1_epi32(4), c5 = _mm512_set1_epi32(5), c6 = _mm512_set1_epi32(6), c7 = _mm512_set1_epi32(7);
    for (int i = 0; i < IDOT_ITERS; i++) {
        c0 = _mm512_dpbusd_epi32(c0, a, w); c1 = _mm512_dpbusd_epi32(c1, a, w);
        c2 = _mm512_dpbusd_epi32(c2, a, w); c3 = _mm512_dpbusd_epi32(c3, a, w);
        c4 = _mm512_dpbusd_epi32(c4, a, w); c5 = _mm512_dpbusd_epi32(c5, a, w);
        c6 = _mm512_dpbusd_epi32(c6, a, w); c7 = _mm512_dpbusd_epi32(c7, a, w);
        __asm__ volatile("" : "+v"(a)); /* a loop-carried unknown: no hoisting */
    }
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                                 _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
    return (float)_mm512_reduce_add_epi32(s);
}

static float idot_avx2(void) {
    /* a weight vector per chain: with one, every chain's products would be the same and computed once */
    __m256i a = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);
    __m256i w0 = _mm256_set1_epi8(-2), w1 = _mm256_set1_epi8(-3), w2 = _mm256_set1_epi8(-4);
    __m256i w3 = _mm256_set1_epi8(-5), w4 = _mm256_set1_epi8(-6), w5 = _mm256_set1_epi8(-7);
    __m256i c0 = _mm256_set1_epi32(0), c1 = _mm256_set1_epi32(1), c2 = _mm256_set1_epi32(2);
    __m256i c3 = _mm256_set1_epi32(3), c4 = _mm256_set1_epi32(4), c5 = _mm256_set1_epi32(5);
    for (int i = 0; i < IDOT_ITERS; i++) {
#define STEP(c, w) c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), one))
        STEP(c0, w0); STEP(c1, w1); STEP(c2, w2); STEP(c3, w3); STEP(c4, w4); STEP(c5, w5);
#undef STEP
        __asm__ volatile("" : "+x"(a));
    }
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(_mm256_add_epi32(c2, c3), _mm256_add_epi32(c4, c5)));
    int out[8];
    _mm256_storeu_si256((__m256i *)out, s);
    return (float)out[0];
}

typedef struct {
    int vnni;
    float sink[256];
} idot_job;

static void idot_task(void *ctx, int b, int e, int tid) {
    idot_job *j = ctx;
    (void)tid;
    for (int t = b; t < e; t++) j->sink[t % 256] = j->vnni ? idot_vnni() : idot_avx2();
}

static spread idot_peak(pool *p, int threads, int *vnni) {
    idot_job j = {.vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw")};
    *vnni = j.vnni;
    double macs_per_call = (double)IDOT_ITERS * (j.vnni ? 8 * 64 : 6 * 32), g[PASSES];
    for (int r = 0; r <= PASSES; r++) {
        double t0 = bench_now();
        pool_run(p, idot_task, &j, threads, 1);
        if (r > 0) g[r - 1] = 2.0 * macs_per_call * threads / (bench_now() - t0) / 1e9;
    }
    return spread_of(g, PASSES, 1);
}

/* The fp32 FMA peak: multiply-adds per second with every thread running independent chains in
 * registers: 512-bit FMAs where the CPU has AVX-512F (16 per instruction), else 256-bit (8). The
 * avx512 family's own kernels can beat OpenBLAS's sgemm here, so the compute bound is the larger. */
#define FMA_ITERS 4000000
__attribute__((target("avx512f"))) static float fma512(void) {
    __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(0.5f);
    __m512 c0 = _mm512_set1_ps(0), c1 = _mm512_set1_ps(1), c2 = _mm512_set1_ps(2), c3 = _mm512_set1_ps(3);
    __m512 c4 = _mm512_set1_ps(4), c5 = _mm512_set1_ps(5), c6 = _mm512_set1_ps(6), c7 = _mm512_set1_ps(7);
    __m512 c8 = _mm512_set1_ps(8), c9 = _mm512_set1_ps(9), c10 = _mm512_set1_ps(10), c11 = _mm512_set1_ps(11);
    for (int i = 0; i < FMA_ITERS; i++) {
        c0 = _mm512_fmadd_ps(a, b, c0); c1 = _mm512_fmadd_ps(a, b, c1); c2 = _mm512_fmadd_ps(a, b, c2);
        c3 = _mm512_fmadd_ps(a, b, c3); c4 = _mm512_fmadd_ps(a, b, c4); c5 = _mm512_fmadd_ps(a, b, c5);
        c6 = _mm512_fmadd_ps(a, b, c6); c7 = _mm512_fmadd_ps(a, b, c7); c8 = _mm512_fmadd_ps(a, b, c8);
        c9 = _mm512_fmadd_ps(a, b, c9); c10 = _mm512_fmadd_ps(a, b, c10); c11 = _mm512_fmadd_ps(a, b, c11);
        __asm__ volatile("" : "+v"(a));
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                             _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)));
    return _mm512_reduce_add_ps(s);
}

static float fma256(void) {
    __m256 a = _mm256_set1_ps(1.0f), b = _mm256_set1_ps(0.5f);
    __m256 c0 = _mm256_set1_ps(0), c1 = _mm256_set1_ps(1), c2 = _mm256_set1_ps(2), c3 = _mm256_set1_ps(3);
    __m256 c4 = _mm256_set1_ps(4), c5 = _mm256_set1_ps(5), c6 = _mm256_set1_ps(6), c7 = _mm256_set1_ps(7);
    __m256 c8 = _mm256_set1_ps(8), c9 = _mm256_set1_ps(9), c10 = _mm256_set1_ps(10), c11 = _mm256_set1_ps(11);
    for (int i = 0; i < FMA_ITERS; i++) {
        c0 = _mm256_fmadd_ps(a, b, c0); c1 = _mm256_fmadd_ps(a, b, c1); c2 = _mm256_fmadd_ps(a, b, c2);
        c3 = _mm256_fmadd_ps(a, b, c3); c4 = _mm256_fmadd_ps(a, b, c4); c5 = _mm256_fmadd_ps(a, b, c5);
        c6 = _mm256_fmadd_ps(a, b, c6); c7 = _mm256_fmadd_ps(a, b, c7); c8 = _mm256_fmadd_ps(a, b, c8);
        c9 = _mm256_fmadd_ps(a, b, c9); c10 = _mm256_fmadd_ps(a, b, c10); c11 = _mm256_fmadd_ps(a, b, c11);
        __asm__ volatile("" : "+x"(a));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                             _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
}

typedef struct {
    int wide;
    float sink[256];
} fma_job;

static void fma_task(void *ctx, int b, int e, int tid) {
    fma_job *j = ctx;
    (void)tid;
    for (int t = b; t < e; t++) j->sink[t % 256] = j->wide ? fma512() : fma256();
}

static spread fma_peak(pool *p, int threads, int *wide) {
    fma_job j = {.wide = __builtin_cpu_supports("avx512f")};
    *wide = j.wide;
    double fmas_per_call = (double)FMA_ITERS * 12 * (j.wide ? 16 : 8), g[PASSES];
    for (int r = 0; r <= PASSES; r++) {
        double t0 = bench_now();
        pool_run(p, fma_task, &j, threads, 1);
        if (r > 0) g[r - 1] = 2.0 * fmas_per_call * threads / (bench_now() - t0) / 1e9;
    }
    return spread_of(g, PASSES, 1);
}

/* "NN% of <what>" for a figure against its bound, with the verdict when the figure exceeds it. */
static const char *of_bound(double x, double bound, const char *what, char *buf, size_t cap) {
    if (bound <= 0) snprintf(buf, cap, "n/a (no %s)", what);
    else if (x > bound) snprintf(buf, cap, "%.0f%% of %s -- ABOVE the bound: the bound is wrong", 100 * x / bound, what);
    else snprintf(buf, cap, "%.0f%% of %s", 100 * x / bound, what);
    return buf;
}

/* Median seconds of n single-sequence decode steps on w after a 128-token prompt. */
static double decode_median_s(gpt2_weights *w, int threads, int n) {
    char err[256];
    const gpt2_config *c = gpt2_weights_config(w);
    gpt2_state *m = gpt2_state_new(w, 128, 1024, threads, err, sizeof err);
    kv_arena *kv = m ? kv_new_fixed(1, c->n_layer, 1024, c->n_embd, c->n_head, err, sizeof err) : NULL;
    float *logits = malloc(sizeof(float) * c->n_vocab);
    double t[64], r = 0;
    if (kv && n <= 64) {
        int tok[128], pos[128], slot[128], out[128];
        for (int i = 0; i < 128; i++) tok[i] = (i * 7919) % 50000, pos[i] = i, slot[i] = 0, out[i] = i == 127 ? 0 : -1;
        gpt2_batch b = {128, tok, pos, slot, out};
        gpt2_forward(m, kv, &b, logits);
        for (int i = 0; i < n; i++) {
            int t1 = tok[i], p1 = 128 + i, s1 = 0, o1 = 0;
            gpt2_batch d = {1, &t1, &p1, &s1, &o1};
            double t0 = bench_now();
            gpt2_forward(m, kv, &d, logits);
            t[i] = bench_now() - t0;
        }
        r = bench_quantile(t, n, 0.5);
    }
    free(logits);
    kv_free(kv);
    gpt2_state_free(m);
    return r;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_core MODEL_DIR EMAILS.jsonl\n");
        return 2;
    }
    char err[512];
    const char *cache = argc > 3 ? argv[3] : "build/bench-cache";
    gpt2_weights_opts private_opts = {.cache_dir = "off"}, shared_opts = {.cache_dir = cache};
    double tl0 = bench_now();
    gpt2_weights *wp = gpt2_weights_load(argv[1], &private_opts, err, sizeof err);
    double private_load_s = bench_now() - tl0;
    if (!wp) {
        fprintf(stderr, "bench_core: %s\n", err);
        return 1;
    }
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), P = 128, DEC = 64;
    gpt2_state *m = gpt2_state_new(wp, P, 1024, threads, err, sizeof err);
    const gpt2_config *c = gpt2_weights_config(wp);
    kv_arena *kv = m ? kv_new_fixed(1, c->n_layer, 1024, c->n_embd, c->n_head, err, sizeof err) : NULL;
    if (!kv) {
        fprintf(stderr, "bench_core: %s\n", err);
        return 1;
    }
    double params = (double)gpt2_weights_streamed_bytes(wp) / 4; /* weights streamed per token */
    size_t wbytes = gpt2_weights_streamed_bytes(wp);
    pool *p = pool_new(threads);
    spread bwh = read_bandwidth(p, wbytes, 1), bws = read_bandwidth(p, wbytes, 0);
    spread sg = sgemm_peak(threads);
    int vnni = 0;
    spread id = idot_peak(p, threads, &vnni);
    int wide = 0;
    spread fp = fma_peak(p, threads, &wide);
    /* the bounds: the best pass of each (a bound must not be beaten; the spread says how noisy); the
     * compute bound is the larger of OpenBLAS's sgemm and the FMA register peak */
    double bw_huge = bwh.best > bws.best ? bwh.best : bws.best, peak = sg.best > fp.best ? sg.best : fp.best;
    char ob[96];
    printf("machine: %d threads; bounds are the best of %d passes (median, worst in brackets):\n", threads, PASSES);
    printf("  read bandwidth over %.0f MB, the decode kernel's pattern: huge pages %.1f GB/s (%.1f, %.1f), "
           "4 KB pages %.1f GB/s (%.1f, %.1f); bound %.1f GB/s\n", wbytes / 1e6, bwh.best, bwh.median, bwh.worst,
           bws.best, bws.median, bws.worst, bw_huge);
    printf("  OpenBLAS sgemm peak %.1f GFLOP/s (%.1f, %.1f)\n", sg.best, sg.median, sg.worst);
    printf("  fp32 FMA peak (%s, registers only) %.1f GFLOP/s (%.1f, %.1f); compute bound %.1f GFLOP/s\n",
           wide ? "512-bit" : "256-bit", fp.best, fp.median, fp.worst, peak);
    printf("  integer-dot peak (%s, registers only) %.1f GOP/s (%.1f, %.1f) = %.1fx the fp32 compute bound\n",
           vnni ? "512-bit vpdpbusd" : "AVX2 maddubs+madd", id.best, id.median, id.worst, id.best / peak);

    /* prefill: a 128-token prompt in one forward call */
    int tok[128], pos[128], slot[128], out[128];
    for (int i = 0; i < P; i++) tok[i] = (i * 7919) % 50000, pos[i] = i, slot[i] = 0, out[i] = i == P - 1 ? 0 : -1;
    float *logits = malloc(sizeof(float) * c->n_vocab);
    gpt2_batch b = {P, tok, pos, slot, out};
    double tp[REPS + 1];
    for (int r = 0; r <= REPS; r++) {
        double t0 = bench_now();
        gpt2_forward(m, kv, &b, logits);
        tp[r] = bench_now() - t0;
    }
    double prefill_s = bench_quantile(tp + 1, REPS, 0.5);
    /* every layer's matmuls for all P tokens, lm_head only for the last one */
    double head = (double)c->n_embd * c->n_vocab;
    double prefill_tps = P / prefill_s, prefill_gflops = 2.0 * ((params - head) * P + head) / prefill_s / 1e9;
    /* decode: one token at a time after the prompt, positions 128..191 */
    double td[64];
    for (int i = 0; i < DEC; i++) {
        int t1 = tok[i], p1 = P + i, s1 = 0, o1 = 0;
        gpt2_batch d = {1, &t1, &p1, &s1, &o1};
        double t0 = bench_now();
        gpt2_forward(m, kv, &d, logits);
        td[i] = bench_now() - t0;
    }
    double decode_s = bench_quantile(td, DEC, 0.5);
    /* the same decode with a CPU hog beside it (a child process spinning): both vCPUs then share
     * what is left; a pool that spun without bound would collapse here, ours should slow ~2x */
    pid_t hog = fork();
    if (hog == 0) {
        volatile unsigned long spin = 0;
        for (;;) spin++;
    }
    double th[32];
    for (int i = 0; i < 32; i++) {
        int t1 = tok[i], p1 = P + DEC + i, s1 = 0, o1 = 0;
        gpt2_batch d = {1, &t1, &p1, &s1, &o1};
        double t0 = bench_now();
        gpt2_forward(m, kv, &d, logits);
        th[i] = bench_now() - t0;
    }
    if (hog > 0) {
        kill(hog, SIGKILL);
        waitpid(hog, NULL, 0);
    }
    double hog_s = bench_quantile(th, 32, 0.5);
    /* the same weights packed into ordinary 4 KB pages (the page cache of a memory-mapped
     * safetensors file is 4 KB pages too): is the copy into huge pages worth it? */
    setenv("GPT2D_NO_HUGEPAGES", "1", 1);
    gpt2_weights *w4k = gpt2_weights_load(argv[1], &private_opts, err, sizeof err);
    gpt2_state *m4k = w4k ? gpt2_state_new(w4k, 1, 1024, threads, err, sizeof err) : NULL;
    unsetenv("GPT2D_NO_HUGEPAGES");
    double t4k[32];
    for (int i = 0; m4k && i < 32; i++) {
        int t1 = tok[i], p1 = P + DEC + 32 + i, s1 = 0, o1 = 0;
        gpt2_batch d = {1, &t1, &p1, &s1, &o1};
        double t0 = bench_now();
        gpt2_forward(m4k, kv, &d, logits);
        t4k[i] = bench_now() - t0;
    }
    double small_s = m4k ? bench_quantile(t4k, 32, 0.5) : 0;
    gpt2_state_free(m4k);
    gpt2_weights_free(w4k);
    double bound_tps = bw_huge * 1e9 / wbytes;
    printf("prefill (128-token prompt): %.0f tokens/s = %.1f GFLOP/s = %s\n",
           prefill_tps, prefill_gflops, of_bound(prefill_gflops, peak, "the compute bound", ob, sizeof ob));
    printf("decode (1 sequence, positions 128-191): %.1f tokens/s; weight-read bound %.1f tokens/s "
           "(%.0f MB per token at %.1f GB/s): %s\n", 1 / decode_s, bound_tps,
           wbytes / 1e6, bw_huge, of_bound(1 / decode_s, bound_tps, "the bound", ob, sizeof ob));
    /* the other weight formats: single-sequence decode against their own weight-read bound */
    static const char *const fmts[] = {"bf16", "int8"};
    for (int f = 0; f < 2; f++) {
        gpt2_weights_opts fo = {.cache_dir = "off", .weights = fmts[f]};
        gpt2_weights *wf = gpt2_weights_load(argv[1], &fo, err, sizeof err);
        double s = wf ? decode_median_s(wf, threads, 64) : 0;
        if (!wf || s <= 0) {
            printf("decode %s: %s\n", fmts[f], wf ? "failed" : err);
        } else {
            size_t fb = gpt2_weights_streamed_bytes(wf);
            double fbound = bw_huge * 1e9 / fb;
            printf("decode %s (%s): %.1f tokens/s = %.2fx fp32; weight-read bound %.1f tokens/s (%.0f MB per "
                   "token): %s%s\n", fmts[f], gpt2_weights_fingerprint(wf), 1 / s, decode_s / s, fbound,
                   fb / 1e6, of_bound(1 / s, fbound, "the bound", ob, sizeof ob), f == 1 ? " (target >= 85%)" : "");
        }
        gpt2_weights_free(wf);
    }
    printf("decode with the weights in 4 KB pages instead of huge pages: %.1f tokens/s (huge pages "
           "%.2fx faster)\n", 1 / small_s, small_s / decode_s);
    printf("decode with a CPU hog on the machine: %.1f tokens/s (%.2fx slower than idle; no spin "
           "collapse)\n", 1 / hog_s, hog_s / decode_s);

    /* a batched decode step: 64 sequences, each one token at position 256 (contexts already full
     * of 256 positions), the shape of a busy server's steady state */
    {
        int B = 64, T0 = 256;
        gpt2_state *mb = gpt2_state_new(wp, B, T0 + 1, threads, err, sizeof err);
        kv_arena *kvb = mb ? kv_new_fixed(B, c->n_layer, T0 + 1, c->n_embd, c->n_head, err, sizeof err) : NULL;
        float *lg = malloc(sizeof(float) * (size_t)B * c->n_vocab);
        int bt[64], bp[64], bs[64], bo[64];
        for (int i = 0; i < B; i++) bt[i] = (i * 31) % 50000, bp[i] = T0, bs[i] = i, bo[i] = i;
        double tb[REPS + 1];
        for (int r = 0; kvb && r <= REPS; r++) {
            gpt2_batch d = {B, bt, bp, bs, bo};
            double t0 = bench_now();
            gpt2_forward(mb, kvb, &d, lg);
            tb[r] = bench_now() - t0;
        }
        if (kvb) {
            double st = bench_quantile(tb + 1, REPS, 0.5);
            double gf = 2.0 * params * B / st / 1e9;
            printf("batched decode step (64 sequences at position 256): %.1f ms = %.0f tokens/s = "
                   "%.1f GFLOP/s in matmuls = %s\n", st * 1e3, B / st, gf,
                   of_bound(gf, peak, "the compute bound", ob, sizeof ob));
        }
        free(lg);
        kv_free(kvb);
        gpt2_state_free(mb);
    }

    /* the shared image against the private copy: cold load (no cache file: pack and write it), warm
     * load (map and verify, what a worker restart does), then decode on both, alternating token by
     * token so that both see the same machine */
    {
        gpt2_weights_info probe;
        memset(&probe, 0, sizeof probe);
        wimage_key k = {.packing = GPT2_PACKING_VERSION, .dtype = MM_F32, .cfg = *c};
        char path[4300];
        if (wimage_hash_checkpoint(argv[1], k.ckpt_hash, err, sizeof err) == 0 &&
            wimage_path(path, sizeof path, cache, &k, "f32") == 0)
            unlink(path); /* cold */
        double t0 = bench_now();
        gpt2_weights *ws = gpt2_weights_load(argv[1], &shared_opts, err, sizeof err);
        double cold_s = bench_now() - t0;
        gpt2_weights_free(ws);
        t0 = bench_now();
        ws = gpt2_weights_load(argv[1], &shared_opts, err, sizeof err);
        double warm_s = bench_now() - t0;
        gpt2_state *msh = ws ? gpt2_state_new(ws, P, 1024, threads, err, sizeof err) : NULL;
        gpt2_state *mpr = gpt2_state_new(wp, P, 1024, threads, err, sizeof err);
        kv_arena *kvs = kv_new_fixed(1, c->n_layer, 1024, c->n_embd, c->n_head, err, sizeof err);
        kv_arena *kvp = kv_new_fixed(1, c->n_layer, 1024, c->n_embd, c->n_head, err, sizeof err);
        if (!msh || !mpr || !kvs || !kvp) {
            printf("shared weights: %s\n", err);
        } else {
            const gpt2_weights_info *si = gpt2_weights_info_of(ws), *pi = gpt2_weights_info_of(wp);
            gpt2_forward(msh, kvs, &b, logits);
            gpt2_forward(mpr, kvp, &b, logits);
            double ts[64], tq[64];
            for (int i = 0; i < DEC; i++) {
                int t1 = tok[i], p1 = P + i, s1 = 0, o1 = 0;
                gpt2_batch d = {1, &t1, &p1, &s1, &o1};
                double a = bench_now();
                gpt2_forward(msh, kvs, &d, logits);
                double mid = bench_now();
                gpt2_forward(mpr, kvp, &d, logits);
                tq[i] = bench_now() - mid;
                ts[i] = mid - a;
            }
            double sh = bench_quantile(ts, DEC, 0.5), pr = bench_quantile(tq, DEC, 0.5);
            printf("weights load: private pack %.0f ms; shared image cold (pack + write %s) %.0f ms, warm (map + "
                   "verify) %.0f ms\n", private_load_s * 1e3, si->path, cold_s * 1e3, warm_s * 1e3);
            printf("decode on the shared image: %.1f tokens/s vs %.1f on the private huge-page copy = %.1f%% "
                   "(target >= 95%%); 2 MB pages: shared %.0f%%, private %.0f%%\n", 1 / sh, 1 / pr, 100 * pr / sh,
                   100.0 * (double)si->huge_bytes / (double)si->bytes,
                   100.0 * (double)pi->huge_bytes / (double)pi->bytes);
        }
        kv_free(kvs);
        kv_free(kvp);
        gpt2_state_free(msh);
        gpt2_state_free(mpr);
        gpt2_weights_free(ws);
    }

    /* tokenizer: the email prompts, concatenated, encoded repeatedly */
    bpe_tokenizer *tk = bpe_load(argv[1], err, sizeof err);
    FILE *f = fopen(argv[2], "rb");
    if (tk && f) {
        static char text[1 << 20];
        size_t n = fread(text, 1, sizeof text - 1, f);
        int *ids = malloc(sizeof(int) * (n + 1));
        double tt[REPS + 1];
        for (int r = 0; r <= REPS; r++) {
            bpe_free(tk); /* a cold word cache each time: the honest figure */
            tk = bpe_load(argv[1], err, sizeof err);
            double t0 = bench_now();
            bpe_encode(tk, text, n, 0, ids, (long)n + 1);
            tt[r] = bench_now() - t0;
        }
        double warm0 = bench_now();
        bpe_encode(tk, text, n, 0, ids, (long)n + 1);
        double warm = bench_now() - warm0;
        printf("tokenizer: %.1f MB/s cold cache, %.1f MB/s warm (%.0f KB of email JSONL)\n",
               n / bench_quantile(tt + 1, REPS, 0.5) / 1e6, n / warm / 1e6, n / 1e3);
        free(ids);
    }
    if (f) fclose(f);
    bpe_free(tk);
    free(logits);
    pool_free(p);
    kv_free(kv);
    gpt2_state_free(m);
    gpt2_weights_free(wp);
    return 0;
}
