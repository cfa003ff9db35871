/* bench_e2e — the email workload through the whole stack (gpt2d + worker over ZeroMQ), against the
 * in-process engine measured in the same run with the same engine settings.
 *
 * usage: bench_e2e MODEL_DIR EMAILS.jsonl ENDPOINT [WEIGHTS (fp32)] [KV_DTYPE (fp32)]
 * The caller (bench/e2e.sh) has started `gpt2d --workers 1 --slots 64 --ctx 512` on ENDPOINT.
 * First the in-process figure: batchfile_run with 64 concurrent (engine: 64 slots, ctx 512, default
 * step budget). Then all 64 requests are submitted to the daemon at once over one DEALER socket;
 * every token frame's arrival is timed. Prints aggregate tokens/s, TTFT p50/p99, inter-token
 * p50/p99 for both and the ratio (the broker + protocol cost). */
#include <stdio.h>
#include <string.h>

#include "batchfile.h"
#include "bench_util.h"
#include "proto.h"
#include "proto_client.h"

#define N_MAX 256

typedef struct {
    double t_submit, t_first, t_last;
    int n_tokens, done;
    double *gaps;
    int n_gaps;
} req_times;

static void report(const char *name, double tps, double *ttft, int n, double *itl, int n_itl, long toks,
                   double wall) {
    printf("  %-22s %8.1f tok/s  ttft p50 %6.0f ms p99 %6.0f ms  itl p50 %5.1f ms p99 %6.1f ms  "
           "(%ld tokens in %.1f s)\n", name, tps, bench_quantile(ttft, n, 0.5),
           bench_quantile(ttft, n, 0.99), bench_quantile(itl, n_itl, 0.5),
           bench_quantile(itl, n_itl, 0.99), toks, wall);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_e2e MODEL_DIR EMAILS.jsonl ENDPOINT\n");
        return 2;
    }
    char err[512];
    batchfile *bf = batchfile_read(argv[2], err, sizeof err);
    if (!bf || bf->n > N_MAX) {
        fprintf(stderr, "bench_e2e: %s\n", bf ? "too many requests" : err);
        return 1;
    }
    int n = bf->n;
    /* in-process, same engine settings as the daemon's worker; one warm-up pass first (the KV
     * arena's pages are touched then), as the daemon run below also gets */
    engine_config cfg = {.n_slots = 64, .n_ctx = 512};
    engine_callbacks no_cb = {0};
    const char *fmt = argc > 4 ? argv[4] : "fp32";
    const char *kvt = argc > 5 ? argv[5] : "fp32"; /* the --kv-dtype gpt2d was started with */
    cfg.kv_dtype = kv_dtype_parse(kvt);
    gpt2_weights_opts wo = {.weights = fmt}; /* the format gpt2d was started with (bench/e2e.sh) */
    gpt2_weights *w = gpt2_weights_load(argv[1], &wo, err, sizeof err);
    bpe_tokenizer *tok = w ? bpe_load(argv[1], err, sizeof err) : NULL;
    engine *e = tok ? engine_new(w, tok, &cfg, &no_cb, err, sizeof err) : NULL;
    if (!e || batchfile_run_on(bf, e, 64, err, sizeof err) != 0) {
        fprintf(stderr, "bench_e2e: %s\n", err);
        return 1;
    }
    batchfile_reset(bf);
    batchfile_run_on(bf, e, 64, err, sizeof err);
    engine_free(e);
    bpe_free(tok);
    gpt2_weights_free(w);
    double ttft[N_MAX];
    long toks = 0, n_itl = 0;
    for (int i = 0; i < n; i++) toks += bf->jobs[i].n_tokens;
    double *itl = malloc(sizeof(double) * (toks + 1));
    for (int i = 0; i < n; i++) {
        batch_job *j = &bf->jobs[i];
        ttft[i] = j->ttft_ms;
        for (int k = 1; k < j->n_tokens && k < j->req.max_tokens; k++) itl[n_itl++] = j->token_ms[k] - j->token_ms[k - 1];
    }
    double tps_engine = toks / (bf->wall_ms / 1e3);
    printf("email workload, %d requests at 64 concurrent, one worker (64 slots, ctx 512), %s weights, %s KV:\n", n,
           fmt, kvt);
    report("in-process engine", tps_engine, ttft, n, itl, (int)n_itl, toks, bf->wall_ms / 1e3);

    /* through the daemon */
    proto_client cl;
    if (proto_client_open(&cl, argv[3], NULL, NULL) != PROTO_CLIENT_OK || bench_wait_ready(&cl) != 0) {
        fprintf(stderr, "bench_e2e: no ready gpt2d at %s\n", argv[3]);
        return 1;
    }
    req_times *rt = calloc(n, sizeof *rt);
    for (int i = 0; i < n; i++) rt[i].gaps = malloc(sizeof(double) * (bf->jobs[i].req.max_tokens + 1));
    int done = 0, errors = 0;
    long toks2 = 0;
    double t0 = 0;
    for (int pass = 0; pass < 2; pass++) { /* pass 0 warms the worker up */
    for (int i = 0; i < n; i++) {
        double *g = rt[i].gaps;
        memset(&rt[i], 0, sizeof rt[i]);
        rt[i].gaps = g;
    }
    done = errors = 0;
    toks2 = 0;
    t0 = bench_now() * 1e3;
    for (int i = 0; i < n; i++) {
        proto_msg m;
        proto_msg_init(&m, PROTO_T_SUBMIT);
        m.id.num = (uint64_t)pass * 1000 + i + 1;
        m.has |= PROTO_HAS(PF_ID) | PROTO_HAS(PF_PROMPT) | PROTO_HAS(PF_MAX_TOKENS);
        m.prompt.ptr = bf->jobs[i].prompt;
        m.prompt.len = (uint32_t)strlen(bf->jobs[i].prompt);
        m.max_tokens = bf->jobs[i].req.max_tokens;
        rt[i].t_submit = bench_now() * 1e3;
        if (proto_client_send(&cl, &m) != 0) {
            fprintf(stderr, "bench_e2e: %s\n", cl.err);
            return 1;
        }
    }
    double deadline = t0 + 600e3;
    while (done < n && bench_now() * 1e3 < deadline) {
        proto_msg r;
        if (proto_client_recv(&cl, &r, 1000, PROTO_CLIENT_SKIP_HB) != 1) continue;
        double now = bench_now() * 1e3;
        if (r.id.num >= (uint64_t)pass * 1000 + 1 && r.id.num <= (uint64_t)pass * 1000 + n) {
            int ri = (int)(r.id.num - (uint64_t)pass * 1000 - 1);
            req_times *q = &rt[ri];
            if (r.type == PROTO_T_TOKEN) {
                if (q->n_tokens == 0) q->t_first = now;
                else if (q->n_gaps < bf->jobs[ri].req.max_tokens) q->gaps[q->n_gaps++] = now - q->t_last;
                q->t_last = now;
                q->n_tokens++;
                toks2++;
            } else if (r.type == PROTO_T_DONE || r.type == PROTO_T_ERROR) {
                if (!q->done) done++;
                q->done = 1;
                errors += r.type == PROTO_T_ERROR;
            }
        }
        proto_msg_destroy(&r);
    }
    }
    double wall = bench_now() * 1e3 - t0;
    n_itl = 0;
    for (int i = 0; i < n; i++) {
        ttft[i] = rt[i].t_first - rt[i].t_submit;
        for (int k = 0; k < rt[i].n_gaps; k++) itl[n_itl++] = rt[i].gaps[k];
    }
    double tps_e2e = toks2 / (wall / 1e3);
    report("gpt2d (broker+worker)", tps_e2e, ttft, n, itl, (int)n_itl, toks2, wall / 1e3);
    printf("  end-to-end / in-process throughput: %.3f (broker and protocol cost %.1f%%); %d/%d done, "
           "%d errors\n", tps_e2e / tps_engine, 100 * (1 - tps_e2e / tps_engine), done, n, errors);
    for (int i = 0; i < n; i++) free(rt[i].gaps);
    free(rt);
    free(itl);
    proto_client_close(&cl);
    batchfile_free(bf);
    return done == n && errors == 0 ? 0 : 1;
}
