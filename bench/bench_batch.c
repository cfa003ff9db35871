/* bench_batch — the email workload through the continuous-batching engine, in-process.
 *
 * For the 64 prompts of emails.jsonl on the given model: 1, 8, 32 and 64 concurrent requests
 * (aggregate generated tokens/s, time to first token p50/p99, inter-token latency p50/p99), static
 * batching at 8 and 32 (a batch admitted only when the previous one has fully finished), and the
 * fastest non-invariant configuration (OpenBLAS sgemm for multi-row matmuls) at 64, all in one run,
 * as ratios. The sgemm peak is measured in the same run: the compute bound for decode is
 * peak / (2 * params) tokens/s. Peak RSS is the process's (weights + KV arena + buffers).
 * With --weights bf16|int8 the invariant runs use that weight format (the OpenBLAS run is fp32's
 * and is left out).
 * usage: bench_batch MODEL_DIR EMAILS.jsonl [--quick] [--weights FMT]   (--quick: concurrency 64 and 8 only) */
#include <cblas.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "batchfile.h"
#include "bench_util.h"
#include "checkpoint.h"

typedef struct {
    double tps, ttft50, ttft99, itl50, itl99, wall;
    long tokens;
} run_figures;

static run_figures figures(const batchfile *bf) {
    run_figures f = {0};
    int n = bf->n;
    double *ttft = malloc(sizeof(double) * n);
    long n_itl = 0;
    for (int i = 0; i < n; i++) n_itl += bf->jobs[i].n_tokens;
    double *itl = malloc(sizeof(double) * (n_itl + 1));
    n_itl = 0;
    for (int i = 0; i < n; i++) {
        const batch_job *j = &bf->jobs[i];
        ttft[i] = j->ttft_ms;
        f.tokens += j->n_tokens;
        for (int k = 1; k < j->n_tokens && k < j->req.max_tokens; k++)
            itl[n_itl++] = j->token_ms[k] - j->token_ms[k - 1];
    }
    f.wall = bf->wall_ms / 1e3;
    f.tps = f.tokens / f.wall;
    f.ttft50 = bench_quantile(ttft, n, 0.5);
    f.ttft99 = bench_quantile(ttft, n, 0.99);
    f.itl50 = bench_quantile(itl, (int)n_itl, 0.5);
    f.itl99 = bench_quantile(itl, (int)n_itl, 0.99);
    free(ttft), free(itl);
    return f;
}

static const char *g_format = "fp32"; /* --weights */

static int run(batchfile *bf, const char *model, int conc, int is_static, int blas, run_figures *out) {
    engine_config cfg = {.n_slots = conc, .n_ctx = 512, .max_batch_tokens = 0, .use_blas = blas};
    /* the image cache unless OpenBLAS needs the tensors */
    gpt2_weights_opts wo = {.keep_checkpoint = blas, .weights = blas ? NULL : g_format};
    char err[512];
    batchfile_reset(bf);
    bf->static_batching = is_static;
    gpt2_weights *w = gpt2_weights_load(model, &wo, err, sizeof err);
    bpe_tokenizer *tok = w ? bpe_load(model, err, sizeof err) : NULL;
    int rc = tok ? batchfile_run(bf, w, tok, &cfg, conc, err, sizeof err) : -1;
    bpe_free(tok);
    gpt2_weights_free(w);
    if (rc != 0) {
        fprintf(stderr, "bench_batch: %s\n", err);
        return -1;
    }
    *out = figures(bf);
    printf("  %-28s %3d  %8.1f  %7.0f %7.0f  %6.1f %6.1f  %7ld  %6.1f\n",
           blas ? "continuous, OpenBLAS" : is_static ? "static batches" : "continuous (invariant)", conc,
           out->tps, out->ttft50, out->ttft99, out->itl50, out->itl99, out->tokens, out->wall);
    fflush(stdout);
    return 0;
}

static double sgemm_peak(void) {
    int n = 1024;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    openblas_set_num_threads((int)sysconf(_SC_NPROCESSORS_ONLN));
    double t[6];
    for (int r = 0; r < 6; r++) {
        double t0 = bench_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        t[r] = bench_now() - t0;
    }
    free(a), free(b), free(c);
    return 2.0 * n * n * n / bench_quantile(t + 1, 5, 0.5) / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_batch MODEL_DIR EMAILS.jsonl [--quick]\n");
        return 2;
    }
    int quick = 0;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = 1;
        else if (strcmp(argv[i], "--weights") == 0 && i + 1 < argc) g_format = argv[++i];
        else {
            fprintf(stderr, "bench_batch: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    int blas_run = strcmp(g_format, "fp32") == 0;
    char err[512];
    gpt2_config cfg;
    if (ckpt_read_config(&cfg, argv[1], err, sizeof err) != 0) {
        fprintf(stderr, "bench_batch: %s\n", err);
        return 1;
    }
    double C = cfg.n_embd, L = cfg.n_layer;
    double params = cfg.n_vocab * C + L * 12 * C * C; /* matmul weights touched per token */
    batchfile *bf = batchfile_read(argv[2], err, sizeof err);
    if (!bf) {
        fprintf(stderr, "bench_batch: %s\n", err);
        return 1;
    }
    double peak = sgemm_peak();
    double bound = peak * 1e9 / (2 * params);
    printf("email workload, %s weights: %d requests; sgemm peak %.1f GFLOP/s -> compute bound %.0f tokens/s "
           "(2 x %.0fM params per token)\n", g_format, bf->n, peak, bound, params / 1e6);
    printf("  %-28s %3s  %8s  %7s %7s  %6s %6s  %7s  %6s\n", "mode", "N", "tok/s", "ttft50", "ttft99",
           "itl50", "itl99", "tokens", "wall s");
    printf("  %-28s %3s  %8s  %7s %7s  %6s %6s  %7s  %6s\n", "", "", "", "ms", "ms", "ms", "ms", "", "");
    run_figures c1 = {0}, c8, c32 = {0}, c64, s8, s32 = {0}, blas64 = {0};
    if (!quick && run(bf, argv[1], 1, 0, 0, &c1)) return 1;
    if (run(bf, argv[1], 8, 0, 0, &c8) || (!quick && run(bf, argv[1], 32, 0, 0, &c32)) ||
        run(bf, argv[1], 64, 0, 0, &c64) || run(bf, argv[1], 8, 1, 0, &s8) ||
        (!quick && run(bf, argv[1], 32, 1, 0, &s32)) || (blas_run && run(bf, argv[1], 64, 0, 1, &blas64)))
        return 1;
    printf("ratios (same run):\n");
    if (!quick) printf("  64 concurrent vs one at a time: %.1fx\n", c64.tps / c1.tps);
    printf("  64 concurrent vs compute bound: %.0f%%\n", 100 * c64.tps / bound);
    printf("  continuous vs static batching: %.2fx at 8", c8.tps / s8.tps);
    if (!quick) printf(", %.2fx at 32", c32.tps / s32.tps);
    printf("\n  inter-token p99 / p50 at 64: %.2f\n", c64.itl99 / c64.itl50);
    if (blas_run)
        printf("  batch invariance cost at 64: invariant %.1f tok/s vs OpenBLAS %.1f tok/s (%+.1f%%)\n",
               c64.tps, blas64.tps, 100 * (c64.tps - blas64.tps) / blas64.tps);
    printf("  peak RSS: %.0f MB\n", bench_peak_rss_mb());
    batchfile_free(bf);
    return 0;
}
