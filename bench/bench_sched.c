/* bench_sched — latency through the service: the batch-1 path, time to first token against the
 * prefill bound, and priorities. One run, figures against what the same run measured in-process.
 *
 * usage: bench_sched MODEL_DIR EMAILS.jsonl ENDPOINT [WEIGHTS (fp32)] [--priorities-only LABEL]
 * The caller (bench/sched.sh) has started `gpt2d --workers 1 --slots 64 --ctx 512` on ENDPOINT with
 * the default step knobs (preemption on); then again with --preempt=false, for part 3 alone
 * (--priorities-only, its lines labelled LABEL; the idle pass runs twice, the first warming the
 * prefix cache as part 2 does in a full run). Parts:
 *   1. one streamed request (email 0, 192 tokens, greedy): decode rate from the first token to the
 *      last, in-process (engine_step with the worker's settings) and through gpt2d, best of 3 each,
 *      alternated (target: gpt2d >= 90% of in-process);
 *   2. the 64 emails at once through gpt2d: TTFT p50/p99 against the prefill bound (all prompt
 *      tokens / the in-process prefill rate measured on the same 64 prompts with nothing decoding;
 *      target p99 <= 1.3x) and the inter-token latency p50/p99 it costs. Both sides start with
 *      the same prefix cache (email 0 from part 1): gpt2d's warm-up pass sends other prompts;
 *      the figure is printed with the tokens the bound actually computed;
 *   3. priorities: 20 interactive requests (16 tokens each) sent one after another on an idle
 *      service, then the same while a 256-email bulk batch runs (priority bulk, from a second
 *      client); their TTFT p99 against the idle median (target <= 3x), and the bulk batch's
 *      throughput over that window against a bulk-only run over a window of the same length from
 *      the same start (target: drop < 10%). */
#include <stdio.h>
#include <string.h>

#include "batchfile.h"
#include "bench_util.h"
#include "proto.h"
#include "proto_client.h"

#define N_MAX 64
#define N_INTER 20
#define N_BULK 256

static double now_ms(void) { return bench_now() * 1e3; }

/* ---- in-process ------------------------------------------------------------------------------- */

typedef struct {
    double t_first, t_last;
    int n_tokens, n_done, prompt_tokens, cached_tokens;
} eng_obs;

static void eo_token(void *u, uint64_t id, int index, int token, const char *p, size_t n, float lp) {
    (void)id, (void)index, (void)token, (void)p, (void)n, (void)lp;
    eng_obs *o = u;
    double t = now_ms();
    if (o->n_tokens++ == 0) o->t_first = t;
    o->t_last = t;
}

static void eo_done(void *u, uint64_t id, const engine_result *r) {
    (void)id;
    eng_obs *o = u;
    o->n_done++;
    o->prompt_tokens += r->prompt_tokens;
    o->cached_tokens += r->cached_tokens;
}

static engine_request email_req(const batchfile *bf, int i, int max_tokens) {
    engine_request q;
    memset(&q, 0, sizeof q);
    q.prompt = bf->jobs[i].prompt;
    q.prompt_len = strlen(q.prompt);
    q.max_tokens = max_tokens;
    q.ignore_eos = 1;
    sampler_params_default(&q.sampling);
    return q;
}

/* Decode tokens/s of one request (first token to last). */
static double engine_single(engine *e, eng_obs *o, const batchfile *bf) {
    memset(o, 0, sizeof *o);
    engine_request q = email_req(bf, 0, 192);
    static uint64_t id = 1;
    if (engine_submit(e, id++, &q, NULL) != 0) return 0;
    while (engine_has_work(e)) engine_step(e);
    return o->n_tokens > 1 ? (o->n_tokens - 1) / ((o->t_last - o->t_first) / 1e3) : 0;
}

/* ---- through gpt2d ---------------------------------------------------------------------------- */

static void submit(proto_client *c, uint64_t id, const char *prompt, int max_tokens, proto_priority pr) {
    proto_msg m;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.id.num = id;
    m.has |= PROTO_HAS(PF_PROMPT);
    m.prompt = (proto_str){prompt, (uint32_t)strlen(prompt)};
    m.max_tokens = max_tokens;
    m.ignore_eos = 1;
    m.priority = pr;
    if (proto_client_send(c, &m) != 0) fprintf(stderr, "bench_sched: %s\n", c->err);
}

/* Decode tokens/s of one streamed request through gpt2d. */
static double service_single(proto_client *c, const batchfile *bf) {
    static uint64_t id = 1;
    submit(c, id, bf->jobs[0].prompt, 192, PROTO_PRIORITY_INTERACTIVE);
    double t_first = 0, t_last = 0;
    int n = 0;
    double deadline = now_ms() + 300e3;
    while (now_ms() < deadline) {
        proto_msg r;
        if (proto_client_recv(c, &r, 1000, PROTO_CLIENT_SKIP_HB) != 1) continue;
        int end = 0;
        if (r.id.num == id) {
            if (r.type == PROTO_T_TOKEN) {
                double t = now_ms();
                if (n++ == 0) t_first = t;
                t_last = t;
            }
            end = r.type == PROTO_T_DONE || r.type == PROTO_T_ERROR;
        }
        proto_msg_destroy(&r);
        if (end) break;
    }
    id++;
    return n > 1 ? (n - 1) / ((t_last - t_first) / 1e3) : 0;
}

/* One request's observed times through gpt2d. */
typedef struct {
    double t_submit, t_first, t_last;
    int n_tokens, done;
} obs;

/* Receives on c until every one of n requests (ids base+1..base+n) ended or ms passed; gaps
 * (inter-token times) appended to itl (cap). The number ended. */
static int collect(proto_client *c, obs *o, uint64_t base, int n, double *itl, long *n_itl, long cap, double ms) {
    int done = 0;
    double deadline = now_ms() + ms;
    while (done < n && now_ms() < deadline) {
        proto_msg r;
        if (proto_client_recv(c, &r, 1000, PROTO_CLIENT_SKIP_HB) != 1) continue;
        double t = now_ms();
        if (r.id.num > base && r.id.num <= base + (uint64_t)n) {
            obs *q = &o[r.id.num - base - 1];
            if (r.type == PROTO_T_TOKEN) {
                if (q->n_tokens++ == 0) q->t_first = t;
                else if (*n_itl < cap) itl[(*n_itl)++] = t - q->t_last;
                q->t_last = t;
            } else if ((r.type == PROTO_T_DONE || r.type == PROTO_T_ERROR) && !q->done) {
                q->done = 1;
                done++;
            }
        }
        proto_msg_destroy(&r);
    }
    return done;
}

/* Part 3: the TTFT (ms) of N_INTER interactive requests sent one after another on ci; with bulk
 * (bc != NULL) N_BULK bulk requests are submitted on bc first and their tokens counted over the
 * window, which lasts until the last interactive request is done or window_ms (when > 0) passed.
 * Returns the window's length in ms; *bulk_tokens its bulk tokens. */
static double priority_run(proto_client *ci, proto_client *bc, const batchfile *bf, uint64_t base,
                           double *ttft, int n_inter, long *bulk_tokens, double window_ms) {
    static int seq = 0;
    seq++;
    *bulk_tokens = 0;
    double t0 = now_ms();
    if (bc)
        for (int i = 0; i < N_BULK; i++)
            submit(bc, base + 1000 + (uint64_t)i, bf->jobs[i % bf->n].prompt, bf->jobs[i % bf->n].req.max_tokens,
                   PROTO_PRIORITY_BULK);
    int k = 0, in_flight = 0, started = bc == NULL;
    double t_sent = 0, end = 0;
    zmq_pollitem_t items[2];
    int n_items = 0;
    if (ci) items[n_items++] = (zmq_pollitem_t){ci->sock, 0, ZMQ_POLLIN, 0};
    if (bc) items[n_items++] = (zmq_pollitem_t){bc->sock, 0, ZMQ_POLLIN, 0};
    for (;;) {
        double t = now_ms();
        if (window_ms > 0 && t - t0 >= window_ms) {
            end = t;
            break;
        }
        if (window_ms <= 0 && k == n_inter && !in_flight) {
            end = t;
            break;
        }
        if (t - t0 > 900e3) {
            end = t;
            break;
        }
        if (started && !in_flight && k < n_inter && ci) {
            t_sent = now_ms();
            submit(ci, base + 1 + (uint64_t)k, bf->jobs[(k * 7 + 3) % bf->n].prompt, 16, PROTO_PRIORITY_INTERACTIVE);
            ttft[k] = -1;
            in_flight = 1;
        }
        zmq_poll(items, n_items, 100);
        proto_msg r;
        while (ci && proto_client_recv(ci, &r, 0, PROTO_CLIENT_SKIP_HB) == 1) {
            if (in_flight && r.id.num == base + 1 + (uint64_t)k) {
                if (r.type == PROTO_T_TOKEN && ttft[k] < 0) ttft[k] = now_ms() - t_sent;
                if (r.type == PROTO_T_DONE || r.type == PROTO_T_ERROR) {
                    in_flight = 0;
                    k++;
                }
            }
            proto_msg_destroy(&r);
        }
        while (bc && proto_client_recv(bc, &r, 0, PROTO_CLIENT_SKIP_HB) == 1) {
            if (r.type == PROTO_T_TOKEN) {
                (*bulk_tokens)++;
                started = 1; /* the interactive requests start once the bulk batch runs */
            }
            proto_msg_destroy(&r);
        }
    }
    if (bc) { /* cancel what is left and wait for the ends */
        for (int i = 0; i < N_BULK; i++) {
            proto_cid id = {0, base + 1000 + (uint64_t)i, {0}};
            proto_client_cancel(bc, &id);
        }
        int ended = 0;
        double deadline = now_ms() + 60e3;
        while (ended < N_BULK && now_ms() < deadline) {
            proto_msg r;
            if (proto_client_recv(bc, &r, 1000, PROTO_CLIENT_SKIP_HB) != 1) continue;
            ended += r.type == PROTO_T_DONE || r.type == PROTO_T_ERROR;
            proto_msg_destroy(&r);
        }
    }
    return end - t0;
}

/* Part 3 on cl (interactive) and bulk: prints its two lines, labelled. */
static void priorities(proto_client *cl, proto_client *bulk, const batchfile *bf, const char *label, int warm) {
    double idle[N_INTER], busy[N_INTER];
    long bulk_with = 0, bulk_alone = 0;
    if (warm) priority_run(cl, NULL, bf, 15000, idle, N_INTER, &bulk_with, 0);
    priority_run(cl, NULL, bf, 20000, idle, N_INTER, &bulk_with, 0);
    double win = priority_run(cl, bulk, bf, 30000, busy, N_INTER, &bulk_with, 0);
    priority_run(NULL, bulk, bf, 40000, NULL, 0, &bulk_alone, win);
    double idle_p50 = bench_quantile(idle, N_INTER, 0.5), idle_p99 = bench_quantile(idle, N_INTER, 0.99);
    double busy_p50 = bench_quantile(busy, N_INTER, 0.5), busy_p99 = bench_quantile(busy, N_INTER, 0.99);
    double tw = bulk_with / (win / 1e3), ta = bulk_alone / (win / 1e3);
    printf("  priorities (%s): %d interactive requests one after another: TTFT idle p50 %.0f ms p99 %.0f ms; beside a "
           "%d-email bulk batch p50 %.0f ms p99 %.0f ms = %.2fx the idle p50 (target <= 3x)\n",
           label, N_INTER, idle_p50, idle_p99, N_BULK, busy_p50, busy_p99, idle_p50 > 0 ? busy_p99 / idle_p50 : 0);
    printf("  the bulk batch (%s) over the same %.1f s from its start: %.1f tok/s alone, %.1f tok/s beside them: "
           "%.1f%% drop (target < 10%%)\n", label, win / 1e3, ta, tw, ta > 0 ? 100 * (1 - tw / ta) : 0);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_sched MODEL_DIR EMAILS.jsonl ENDPOINT [WEIGHTS] [--priorities-only LABEL]\n");
        return 2;
    }
    char err[512];
    batchfile *bf = batchfile_read(argv[2], err, sizeof err);
    if (!bf || bf->n < 1) {
        fprintf(stderr, "bench_sched: %s\n", bf ? "no requests" : err);
        return 1;
    }
    int n = bf->n < N_MAX ? bf->n : N_MAX;
    const char *fmt = argc > 4 ? argv[4] : "fp32";
    if (argc > 6 && strcmp(argv[5], "--priorities-only") == 0) {
        proto_client cl, bulk;
        if (proto_client_open(&cl, argv[3], NULL, NULL) != PROTO_CLIENT_OK || bench_wait_ready(&cl) != 0 ||
            proto_client_open(&bulk, argv[3], NULL, NULL) != PROTO_CLIENT_OK) {
            fprintf(stderr, "bench_sched: no ready gpt2d\n");
            return 1;
        }
        priorities(&cl, &bulk, bf, argv[6], 1);
        proto_client_close(&bulk);
        proto_client_close(&cl);
        batchfile_free(bf);
        return 0;
    }
    /* the worker's settings: 64 slots, ctx 512, the default step knobs, all cores (one worker) */
    engine_config cfg = {.n_slots = 64, .n_ctx = 512};
    eng_obs eo;
    engine_callbacks cb = {eo_token, eo_done, NULL, &eo};
    gpt2_weights_opts wo = {.weights = fmt};
    gpt2_weights *w = gpt2_weights_load(argv[1], &wo, err, sizeof err);
    bpe_tokenizer *tok = w ? bpe_load(argv[1], err, sizeof err) : NULL;
    engine *e = tok ? engine_new(w, tok, &cfg, &cb, err, sizeof err) : NULL;
    proto_client cl, bulk;
    if (!e || proto_client_open(&cl, argv[3], NULL, NULL) != PROTO_CLIENT_OK || bench_wait_ready(&cl) != 0 ||
        proto_client_open(&bulk, argv[3], NULL, NULL) != PROTO_CLIENT_OK) {
        fprintf(stderr, "bench_sched: %s\n", e ? "no ready gpt2d" : err);
        return 1;
    }
    printf("scheduling and the service path (%s weights, one worker of 64 slots, ctx 512, default step knobs):\n", fmt);

    /* 1. batch 1 */
    double best_e = 0, best_s = 0;
    engine_single(e, &eo, bf); /* warm-up of both */
    service_single(&cl, bf);
    for (int r = 0; r < 3; r++) {
        double a = engine_single(e, &eo, bf), b = service_single(&cl, bf);
        if (a > best_e) best_e = a;
        if (b > best_s) best_s = b;
    }
    printf("  one streamed request, decode (192 tokens): in-process %.1f tok/s, through gpt2d %.1f tok/s = %.1f%% "
           "(target >= 90%%)\n", best_e, best_s, best_e > 0 ? 100 * best_s / best_e : 0);

    /* 2. 64 at once against the prefill bound */
    memset(&eo, 0, sizeof eo);
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        engine_request q = email_req(bf, i, 1);
        engine_submit(e, 100 + (uint64_t)i, &q, NULL);
    }
    while (engine_has_work(e)) engine_step(e);
    double prefill_s = (now_ms() - t0) / 1e3;
    double prefill_rate = eo.prompt_tokens / prefill_s;
    double bound_ms = 1e3 * eo.prompt_tokens / prefill_rate;
    engine_free(e);
    bpe_free(tok);
    gpt2_weights_free(w);
    obs o[N_MAX];
    long cap = 64L * 4096, n_itl = 0;
    double *itl = malloc(sizeof(double) * cap), ttft[N_MAX];
    for (int pass = 0; pass < 2; pass++) { /* pass 0 warms up */
        memset(o, 0, sizeof o);
        n_itl = 0;
        uint64_t base = 10000 + (uint64_t)pass * 1000;
        for (int i = 0; i < n; i++) {
            /* The warm-up pass sends the prompts behind a line of its own, so the prefix cache holds
             * none of the measured prompts' pages: pass 1 computes what the in-process bound did. */
            char warm[8192];
            const char *prompt = bf->jobs[i].prompt;
            if (pass == 0 && snprintf(warm, sizeof warm, "Warm-up.\n%s", prompt) < (int)sizeof warm) prompt = warm;
            o[i].t_submit = now_ms();
            submit(&cl, base + 1 + (uint64_t)i, prompt, bf->jobs[i].req.max_tokens, PROTO_PRIORITY_INTERACTIVE);
        }
        collect(&cl, o, base, n, itl, &n_itl, cap, 900e3);
    }
    for (int i = 0; i < n; i++) ttft[i] = o[i].t_first - o[i].t_submit;
    double p50 = bench_quantile(ttft, n, 0.5), p99 = bench_quantile(ttft, n, 0.99);
    printf("  %d at once: prefill bound %.0f ms (%d prompt tokens, %d from the prefix cache, at %.1f tok/s "
           "in-process, nothing decoding); TTFT p50 %.0f ms, p99 %.0f ms = %.2fx the bound (target <= 1.3x); "
           "ITL p50 %.1f ms, p99 %.1f ms\n",
           n, bound_ms, eo.prompt_tokens, eo.cached_tokens, prefill_rate, p50, p99, p99 / bound_ms,
           bench_quantile(itl, (int)n_itl, 0.5),
           bench_quantile(itl, (int)n_itl, 0.99));

    /* 3. priorities */
    priorities(&cl, &bulk, bf, "preempt on, the default", 0);
    free(itl);
    proto_client_close(&bulk);
    proto_client_close(&cl);
    batchfile_free(bf);
    return best_s > 0 && best_e > 0 ? 0 : 1;
}
