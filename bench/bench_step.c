/* bench_step — one decode step's time, for comparing two revisions of the forward pass (attention,
 * layer norm, the KV store, the thread pool) on a machine that others share: the figure is the
 * MINIMUM over many steps (and its median beside it), which a neighbour's load can only raise.
 * Uses only gpt2.h, kv.h, weights.h and pool.h, so the same file builds against older revisions.
 *
 *   bench_step MODEL_DIR [--weights fp32|bf16|int8] [--kv-dtype fp32|fp16|bf16] [--seqs N]
 *              [--pos P] [--steps S] [--threads T]
 *     N sequences (default 1) each prefilled with P positions (default 128), then S decode steps
 *     of one token per sequence (default 64): min and median ms per step, tokens/s at the min.
 *   bench_step --pool [--threads T]
 *     pool_run jobs of 12 or 48 tasks, empty to a few us each (a decode step makes ~60 such jobs):
 *     best time per job and its excess over an even split of the same work on one thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "gpt2.h"
#include "kv.h"
#include "pool.h"
#include "weights.h"

static const char *opt(int argc, char **argv, const char *name, const char *dflt) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return dflt;
}

/* A task: `iters` dependent multiply-adds (a fixed amount of work, no memory traffic). */
static void spin_task(void *ctx, int begin, int end, int tid) {
    (void)tid;
    volatile float sink;
    int iters = *(const int *)ctx;
    for (int t = begin; t < end; t++) {
        float x = (float)t;
        for (int i = 0; i < iters; i++) x = x * 0.999f + 1.0f;
        sink = x;
    }
    (void)sink;
}

/* Best-of time per job of n_tasks tasks of iters each, in us. */
static double pool_job_us(pool *p, int n_tasks, int iters) {
    double best = 1e9;
    for (int r = 0; r < 50; r++) {
        double t0 = bench_now();
        for (int i = 0; i < 500; i++) pool_run(p, spin_task, &iters, n_tasks, 1);
        double dt = (bench_now() - t0) / 500;
        if (dt < best) best = dt;
    }
    return best * 1e6;
}

/* A job's overhead: its time against the same tasks run on one thread, split evenly. */
static int bench_pool(int threads) {
    pool *p = pool_new(threads), *one = pool_new(1);
    if (!p || !one) return 1;
    static const int shapes[][2] = {{12, 0}, {12, 400}, {48, 400}, {12, 4000}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        double alone = pool_job_us(one, shapes[i][0], shapes[i][1]), job = pool_job_us(p, shapes[i][0], shapes[i][1]);
        printf("pool_run, %d threads, %2d tasks of %4d multiply-adds: %7.2f us per job, %5.2f us more than an "
               "even split of the single-thread time (best of 50 x 500)\n",
               pool_threads(p), shapes[i][0], shapes[i][1], job, job - alone / pool_threads(p));
    }
    pool_free(p);
    pool_free(one);
    return 0;
}

int main(int argc, char **argv) {
    int threads = atoi(opt(argc, argv, "--threads", "2"));
    if (argc >= 2 && strcmp(argv[1], "--pool") == 0) return bench_pool(threads);
    if (argc < 2) {
        fprintf(stderr, "usage: bench_step MODEL_DIR [--weights W] [--kv-dtype D] [--seqs N] [--pos P] "
                        "[--steps S] [--threads T] | bench_step --pool [--threads T]\n");
        return 2;
    }
    const char *fmt = opt(argc, argv, "--weights", "fp32"), *kvd = opt(argc, argv, "--kv-dtype", "fp32");
    int n_seq = atoi(opt(argc, argv, "--seqs", "1")), n_pos = atoi(opt(argc, argv, "--pos", "128"));
    int n_steps = atoi(opt(argc, argv, "--steps", "64"));
    char err[512];
    gpt2_weights_opts wo = {.weights = fmt};
    gpt2_weights *w = gpt2_weights_load(argv[1], &wo, err, sizeof err);
    if (!w) {
        fprintf(stderr, "bench_step: %s\n", err);
        return 1;
    }
    const gpt2_config *c = gpt2_weights_config(w);
    int ctx = n_pos + n_steps, rows = n_pos > n_seq ? n_pos : n_seq;
    if (n_seq < 1 || n_pos < 1 || n_steps < 1 || ctx > c->n_ctx || kv_dtype_parse(kvd) < 0) {
        fprintf(stderr, "bench_step: bad shape (seqs %d, pos %d + steps %d within ctx %d) or kv dtype\n", n_seq,
                n_pos, n_steps, c->n_ctx);
        return 2;
    }
    gpt2_state *m = gpt2_state_new(w, rows, ctx, threads, err, sizeof err);
    kv_config kc = {.n_layer = c->n_layer, .n_ctx = ctx, .n_embd = c->n_embd, .n_head = c->n_head,
                    .n_pages = n_seq * kv_pages_for(ctx), .max_seqs = n_seq, .dtype = kv_dtype_parse(kvd)};
    kv_arena *kv = m ? kv_new(&kc, err, sizeof err) : NULL;
    int *tok = malloc(sizeof(int) * rows), *pos = malloc(sizeof(int) * rows), *slot = malloc(sizeof(int) * rows);
    int *out = malloc(sizeof(int) * rows);
    float *logits = malloc(sizeof(float) * c->n_vocab * n_seq);
    double *t = malloc(sizeof(double) * n_steps);
    if (!kv || !tok || !pos || !slot || !out || !logits || !t) {
        fprintf(stderr, "bench_step: %s\n", kv ? "out of memory" : err);
        return 1;
    }
    for (int s = 0; s < n_seq; s++) {
        int zero = 0, cached;
        if (kv_seq_open(kv, &zero, 1, ctx, &cached) != s || kv_seq_prepare(kv, s, ctx) != 0) return 1;
        for (int i = 0; i < n_pos; i++)
            tok[i] = (i * 7919 + s * 131) % c->n_vocab, pos[i] = i, slot[i] = s, out[i] = i == n_pos - 1 ? 0 : -1;
        gpt2_batch b = {n_pos, tok, pos, slot, out};
        if (gpt2_forward(m, kv, &b, logits) != 0) return 1;
    }
    for (int i = 0; i < n_steps; i++) {
        for (int s = 0; s < n_seq; s++)
            tok[s] = (i * 31 + s) % c->n_vocab, pos[s] = n_pos + i, slot[s] = s, out[s] = s;
        gpt2_batch d = {n_seq, tok, pos, slot, out};
        double t0 = bench_now();
        gpt2_forward(m, kv, &d, logits);
        t[i] = bench_now() - t0;
    }
    double med = bench_quantile(t, n_steps, 0.5), best = t[0]; /* sorted by the quantile */
    printf("decode step, %s weights, %s KV, %d seqs at positions %d..%d, %d threads: min %.3f ms (%.1f tok/s), "
           "median %.3f ms\n", fmt, kvd, n_seq, n_pos, ctx - 1, threads, best * 1e3, n_seq / best, med * 1e3);
    free(t), free(logits), free(out), free(slot), free(pos), free(tok);
    kv_free(kv);
    gpt2_state_free(m);
    gpt2_weights_free(w);
    return 0;
}
