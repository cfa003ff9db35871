/* bench_http — what the HTTP gateway costs: the email workload through gpt2d-http (POST
 * /v1/completions, SSE) against the same requests over ZeroMQ to the same broker, same run.
 *
 * usage: bench_http EMAILS.jsonl ENDPOINT URL [ROUNDS [TTFT_ROUNDS [SINGLES]]]
 * The caller (bench/http.sh) has started `gpt2d --workers 1 --slots 64 --ctx 512 --http-listen
 * 127.0.0.1:0` with ENDPOINT its client endpoint and URL its gateway. A warm-up pass on each path
 * touches the worker's KV pages, fills its prefix cache with every prompt and opens the HTTP
 * connections (one per stream, kept alive, as an HTTP client pool does; libcurl's multi interface).
 * Then, the two paths alternating so that a drift in the machine's speed hits both:
 *
 *  1. ROUNDS (default 3) pairs of full rounds: every request at once, greedy, the file's max_tokens;
 *     tokens/s, TTFT p50/p99, inter-token p50/p99 per round and their medians -> the throughput
 *     ratio (target: the gateway costs < 5%).
 *  2. TTFT_ROUNDS (default 20) pairs of the same 64-request burst cut to 8 tokens each (the first
 *     tokens come from the first engine step or two, before any decoding, so the burst's TTFT is the
 *     full rounds' one; the rounds are short, so there can be many): the TTFT p50 difference paired
 *     round by round, its median and spread (target: < 5 ms at p50), split into the server's share
 *     and the hop. The server's TTFT is the broker's own figure (the done frame's timings; through
 *     HTTP the choice's "timings"), from its receipt of the submit; the hop is the client's TTFT minus
 *     the server's: sending the request to the broker plus bringing the first token back. How many
 *     groups the first tokens came in (an engine step each) shows whether the burst reached the
 *     worker before its first step: when part of it arrived after that step began, it waits a step.
 *  3. SINGLES (default 40) pairs of one request at a time, idle otherwise (4 tokens, the prompts in
 *     turn, the order in each pair alternating): the gateway's cost per request, paired.
 *
 * Every request of a round is timed from one instant: just before the client hands the first one to
 * its transport (all 64 are prepared beforehand on both paths), to its first token's arrival (a
 * token frame; an SSE event). GPT2D_BENCH_HTTP_TRACE=FILE writes each request's times there.
 * Exit status 1 only if a request failed (a missed target is reported, not fatal). */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "batchfile.h"
#include "bench_util.h"
#include "proto.h"
#include "proto_client.h"

#define N_MAX 256
#define ROUNDS_MAX 64
#define SINGLES_MAX 400
#define TTFT_TOKENS 8   /* max_tokens of the TTFT rounds */
#define SINGLE_TOKENS 4 /* max_tokens of the single requests */
#define GROUP_GAP_MS 10 /* first tokens further apart than this came from different engine steps */

typedef struct {
    double t_submit, t_first, t_last;
    double server_ttft;    /* the broker's ttft_ms (0: not reported) */
    int n_tokens, done, failed;
    double *gaps;          /* max_tokens + 1 */
    int n_gaps, gap_cap;
} req_times;

typedef struct {
    double tps, ttft_p50, ttft_p99, itl_p50, itl_p99, wall_s;
    double server_p50, hop_p50; /* server's TTFT p50, p50 of (client - server) TTFT */
    int groups, first_group;    /* first-token groups, requests in the first one */
    long tokens;
    int failed, new_conns;
} round_result;

static FILE *g_trace; /* GPT2D_BENCH_HTTP_TRACE */

static void req_reset(req_times *q) {
    double *g = q->gaps;
    int cap = q->gap_cap;
    memset(q, 0, sizeof *q);
    q->gaps = g;
    q->gap_cap = cap;
}

/* One token (or SSE event) arrived for q at now (ms). */
static void req_token(req_times *q, double now) {
    if (q->n_tokens == 0) q->t_first = now;
    else if (q->n_gaps < q->gap_cap) q->gaps[q->n_gaps++] = now - q->t_last;
    q->t_last = now;
    q->n_tokens++;
}

static round_result summarize(const char *name, req_times *rt, int n, double wall_ms, long tokens) {
    round_result r = {.wall_s = wall_ms / 1e3, .tokens = tokens};
    double ttft[N_MAX], server[N_MAX], hop[N_MAX], first[N_MAX];
    int n_server = 0;
    long n_itl = 0, cap = 0;
    for (int i = 0; i < n; i++) cap += rt[i].n_gaps;
    double *itl = malloc(sizeof(double) * (size_t)(cap + 1));
    for (int i = 0; i < n; i++) {
        ttft[i] = rt[i].t_first - rt[i].t_submit;
        first[i] = rt[i].t_first;
        if (rt[i].server_ttft > 0) {
            server[n_server] = rt[i].server_ttft;
            hop[n_server++] = ttft[i] - rt[i].server_ttft;
        }
        r.failed += rt[i].failed || !rt[i].done;
        for (int k = 0; k < rt[i].n_gaps; k++) itl[n_itl++] = rt[i].gaps[k];
        if (g_trace)
            fprintf(g_trace, "%s %d submit %.3f first %.3f last %.3f tokens %d server_ttft %.3f\n", name, i,
                    rt[i].t_submit, rt[i].t_first, rt[i].t_last, rt[i].n_tokens, rt[i].server_ttft);
    }
    r.tps = tokens / r.wall_s;
    r.ttft_p50 = bench_quantile(ttft, n, 0.5);
    r.ttft_p99 = bench_quantile(ttft, n, 0.99);
    r.itl_p50 = bench_quantile(itl, (int)n_itl, 0.5);
    r.itl_p99 = bench_quantile(itl, (int)n_itl, 0.99);
    r.server_p50 = bench_quantile(server, n_server, 0.5);
    r.hop_p50 = bench_quantile(hop, n_server, 0.5);
    bench_quantile(first, n, 0); /* sorts */
    r.groups = n > 0;
    r.first_group = n;
    for (int i = 1; i < n; i++)
        if (first[i] - first[i - 1] > GROUP_GAP_MS) {
            if (r.groups++ == 1) r.first_group = i;
        }
    free(itl);
    return r;
}

static void print_round(const char *name, const round_result *r) {
    printf("  %-8s %8.1f tok/s  ttft p50 %7.1f ms p99 %7.1f ms  itl p50 %5.1f ms p99 %6.1f ms  (%ld tokens in "
           "%.1f s%s)\n", name, r->tps, r->ttft_p50, r->ttft_p99, r->itl_p50, r->itl_p99, r->tokens, r->wall_s,
           r->failed ? ", FAILED requests" : "");
}

/* ---- ZeroMQ: every request submitted at once on one DEALER, as bench_e2e ------------------------ */

/* Runs n jobs from j0 on (max_tokens capped by cap when > 0) at once; ids from base. */
static round_result zmq_round(const char *name, proto_client *cl, batchfile *bf, int j0, int n, req_times *rt,
                              uint64_t base, int cap) {
    int done = 0;
    long toks = 0;
    proto_msg m[N_MAX];
    for (int i = 0; i < n; i++) {
        const char *prompt = bf->jobs[(j0 + i) % bf->n].prompt;
        int mt = bf->jobs[(j0 + i) % bf->n].req.max_tokens;
        req_reset(&rt[i]);
        proto_msg_init(&m[i], PROTO_T_SUBMIT);
        m[i].id.num = base + (uint64_t)i;
        m[i].has |= PROTO_HAS(PF_ID) | PROTO_HAS(PF_PROMPT) | PROTO_HAS(PF_MAX_TOKENS);
        m[i].prompt.ptr = prompt;
        m[i].prompt.len = (uint32_t)strlen(prompt);
        m[i].max_tokens = cap > 0 && mt > cap ? cap : mt;
    }
    double t0 = bench_now() * 1e3;
    for (int i = 0; i < n; i++) {
        rt[i].t_submit = t0;
        if (proto_client_send(cl, &m[i]) != 0) rt[i].failed = 1, rt[i].done = 1, done++;
    }
    double deadline = t0 + 600e3;
    while (done < n && bench_now() * 1e3 < deadline) {
        proto_msg r;
        if (proto_client_recv(cl, &r, 1000, PROTO_CLIENT_SKIP_HB) != 1) continue;
        double now = bench_now() * 1e3;
        if (r.id.num >= base && r.id.num < base + (uint64_t)n) {
            req_times *q = &rt[r.id.num - base];
            if (r.type == PROTO_T_TOKEN) {
                req_token(q, now);
                toks++;
            } else if ((r.type == PROTO_T_DONE || r.type == PROTO_T_ERROR) && !q->done) {
                q->done = 1;
                q->failed = r.type == PROTO_T_ERROR || r.finish == PROTO_FINISH_ERROR;
                if (r.type == PROTO_T_DONE) q->server_ttft = r.ttft_ms;
                done++;
            }
        }
        proto_msg_destroy(&r);
    }
    return summarize(name, rt, n, bench_now() * 1e3 - t0, toks);
}

/* ---- HTTP: one libcurl easy handle per request, all on one multi handle ------------------------- */

typedef struct {
    req_times *q;
    char *buf;             /* SSE bytes not yet split into events */
    size_t len, cap;
    long usage_tokens;     /* completion_tokens of the final usage chunk */
    int saw_done, saw_error;
    struct curl_slist *headers;
    char *body;
} http_req;

/* One SSE event ("data: ...") of r. Token events are timed; the finishing event gives the server's
 * timings, the usage chunk the count. */
static void http_event(http_req *r, const char *data, size_t len, double now) {
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        r->saw_done = 1;
        return;
    }
    json_t *o = json_loadb(data, len, 0, NULL);
    if (!o) {
        r->saw_error = 1;
        return;
    }
    json_t *choices = json_object_get(o, "choices"), *usage = json_object_get(o, "usage");
    if (json_object_get(o, "error")) r->saw_error = 1;
    if (json_is_object(usage)) r->usage_tokens = (long)json_integer_value(json_object_get(usage, "completion_tokens"));
    json_t *c0 = json_array_get(choices, 0);
    /* a token event: text, and no finish_reason (the finishing event has empty text) */
    if (c0 && json_is_null(json_object_get(c0, "finish_reason"))) req_token(r->q, now);
    json_t *timings = c0 ? json_object_get(c0, "timings") : NULL;
    if (timings) r->q->server_ttft = json_number_value(json_object_get(timings, "ttft_ms"));
    json_decref(o);
}

static size_t http_write(char *ptr, size_t size, size_t nmemb, void *user) {
    http_req *r = user;
    size_t n = size * nmemb;
    double now = bench_now() * 1e3;
    if (r->len + n + 1 > r->cap) {
        size_t cap = (r->len + n + 1) * 2;
        char *p = realloc(r->buf, cap);
        if (!p) return 0;
        r->buf = p;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, ptr, n);
    r->len += n;
    r->buf[r->len] = 0;
    char *start = r->buf, *end;
    while ((end = strstr(start, "\n\n")) != NULL) {
        if (strncmp(start, "data: ", 6) == 0) http_event(r, start + 6, (size_t)(end - start - 6), now);
        start = end + 2;
    }
    r->len -= (size_t)(start - r->buf);
    memmove(r->buf, start, r->len);
    return n;
}

/* Sets up e (a new handle if NULL) for job j's prompt (max_tokens capped by cap when > 0), streaming
 * into hr. */
static CURL *http_prepare(CURL *e, const char *endpoint, batchfile *bf, int j, int cap, http_req *hr, req_times *q) {
    int mt = bf->jobs[j].req.max_tokens;
    if (cap > 0 && mt > cap) mt = cap;
    json_t *b = json_pack("{s:s, s:i, s:i, s:b, s:{s:b}}", "prompt", bf->jobs[j].prompt, "max_tokens", mt,
                          "temperature", 0, "stream", 1, "stream_options", "include_usage", 1);
    free(hr->body);
    free(hr->buf);
    curl_slist_free_all(hr->headers);
    memset(hr, 0, sizeof *hr);
    hr->body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    hr->q = q;
    hr->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (!e) e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, endpoint);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, hr->body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hr->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, hr);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 600L);
    curl_easy_setopt(e, CURLOPT_PRIVATE, hr);
    return e;
}

static void http_release(http_req *hr) {
    curl_slist_free_all(hr->headers);
    free(hr->body);
    free(hr->buf);
    memset(hr, 0, sizeof *hr);
}

/* Marks r's request done, failed unless it ended with status 200 and [DONE] and no error event. */
static void http_finish(http_req *r, CURL *e, CURLcode result) {
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    r->q->done = 1;
    r->q->failed = result != CURLE_OK || status != 200 || !r->saw_done || r->saw_error;
    if (r->q->failed)
        fprintf(stderr, "bench_http: request failed: curl %d, HTTP %ld%s\n", (int)result, status,
                r->saw_error ? ", error event" : "");
}

static round_result http_round(const char *name, CURLM *multi, const char *url, batchfile *bf, int n,
                               req_times *rt, int cap) {
    http_req *hr = calloc((size_t)n, sizeof *hr);
    CURL **easy = calloc((size_t)n, sizeof *easy);
    char endpoint[600];
    snprintf(endpoint, sizeof endpoint, "%s/v1/completions", url);
    for (int i = 0; i < n; i++) {
        req_reset(&rt[i]);
        easy[i] = http_prepare(NULL, endpoint, bf, i % bf->n, cap, &hr[i], &rt[i]);
    }
    double t0 = bench_now() * 1e3;
    for (int i = 0; i < n; i++) {
        rt[i].t_submit = t0;
        curl_multi_add_handle(multi, easy[i]);
    }
    int running = n;
    while (running > 0) {
        curl_multi_perform(multi, &running);
        if (running > 0) curl_multi_poll(multi, NULL, 0, 100, NULL);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE) continue;
            http_req *r;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            http_finish(r, m->easy_handle, m->data.result);
        }
    }
    double wall = bench_now() * 1e3 - t0;
    long toks = 0, conns = 0;
    for (int i = 0; i < n; i++) {
        long c = 0;
        curl_easy_getinfo(easy[i], CURLINFO_NUM_CONNECTS, &c);
        conns += c;
        toks += hr[i].usage_tokens;
        curl_multi_remove_handle(multi, easy[i]);
        curl_easy_cleanup(easy[i]);
        http_release(&hr[i]);
    }
    free(hr);
    free(easy);
    round_result r = summarize(name, rt, n, wall, toks);
    r.new_conns = (int)conns;
    return r;
}

/* ---- one request at a time ---------------------------------------------------------------------- */

/* Job j alone over ZeroMQ: its client TTFT and the server's into *ttft / *server. 0, or -1. */
static int zmq_single(proto_client *cl, batchfile *bf, int j, uint64_t id, req_times *q, double *ttft,
                      double *server) {
    round_result r = zmq_round("single-zmq", cl, bf, j, 1, q, id, SINGLE_TOKENS);
    *ttft = r.ttft_p50;
    *server = q->server_ttft;
    return r.failed ? -1 : 0;
}

/* Job j alone through the gateway, on one kept-alive connection (easy). */
static int http_single(CURL *easy, const char *endpoint, batchfile *bf, int j, req_times *q, double *ttft,
                       double *server) {
    http_req hr = {0};
    req_reset(q);
    http_prepare(easy, endpoint, bf, j, SINGLE_TOKENS, &hr, q);
    q->t_submit = bench_now() * 1e3;
    CURLcode rc = curl_easy_perform(easy);
    http_finish(&hr, easy, rc);
    *ttft = q->t_first - q->t_submit;
    *server = q->server_ttft;
    int failed = q->failed;
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
    http_release(&hr);
    return failed ? -1 : 0;
}

/* ---- summaries ---------------------------------------------------------------------------------- */

static double median(double *v, int n) {
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* "median (p25 .. p75)" of v (n values; sorted in place) */
static void spread(char *out, size_t cap, double *v, int n) {
    double m = median(v, n);
    snprintf(out, cap, "%+.1f ms (p25 %+.1f, p75 %+.1f, over %d)", m, bench_quantile(v, n, 0.25),
             bench_quantile(v, n, 0.75), n);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_http EMAILS.jsonl ENDPOINT URL [ROUNDS [TTFT_ROUNDS [SINGLES]]]\n");
        return 2;
    }
    int rounds = argc > 4 ? atoi(argv[4]) : 3, ttft_rounds = argc > 5 ? atoi(argv[5]) : 20;
    int singles = argc > 6 ? atoi(argv[6]) : 40;
    if (rounds < 0 || rounds > ROUNDS_MAX || ttft_rounds < 0 || ttft_rounds > ROUNDS_MAX || singles < 0 ||
        singles > SINGLES_MAX) {
        fprintf(stderr, "bench_http: ROUNDS and TTFT_ROUNDS 0..%d, SINGLES 0..%d\n", ROUNDS_MAX, SINGLES_MAX);
        return 2;
    }
    if (getenv("GPT2D_BENCH_HTTP_TRACE")) g_trace = fopen(getenv("GPT2D_BENCH_HTTP_TRACE"), "w");
    char err[512];
    batchfile *bf = batchfile_read(argv[1], err, sizeof err);
    if (!bf || bf->n > N_MAX) {
        fprintf(stderr, "bench_http: %s\n", bf ? "too many requests" : err);
        return 1;
    }
    int n = bf->n;
    req_times *rt = calloc((size_t)n, sizeof *rt);
    for (int i = 0; i < n; i++) {
        rt[i].gap_cap = bf->jobs[i].req.max_tokens + 1;
        rt[i].gaps = malloc(sizeof(double) * (size_t)rt[i].gap_cap);
    }
    proto_client cl;
    if (proto_client_open(&cl, argv[2], NULL, NULL) != PROTO_CLIENT_OK || bench_wait_ready(&cl) != 0) {
        fprintf(stderr, "bench_http: no ready gpt2d at %s: %s\n", argv[2], cl.err);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    /* one connection per stream, kept alive between rounds (HTTP/1.1 keep-alive) */
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)n);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)n);

    printf("email workload, %d requests at %d concurrent, one worker (64 slots, ctx 512), greedy:\n", n, n);
    int failed = 0;
    round_result w = zmq_round("warmup-zmq", &cl, bf, 0, n, rt, 1000000, 0);
    failed += w.failed;
    print_round("warm-up zmq", &w);
    w = http_round("warmup-http", multi, argv[3], bf, n, rt, 4);
    failed += w.failed;
    printf("  warm-up http: %d connections opened (%s)\n", w.new_conns, w.failed ? "FAILED" : "ok");

    /* 1. full rounds: throughput */
    double z_tps[ROUNDS_MAX], h_tps[ROUNDS_MAX], z_ttft[ROUNDS_MAX], h_ttft[ROUNDS_MAX];
    double z_itl[ROUNDS_MAX], h_itl[ROUNDS_MAX];
    int new_conns = 0;
    for (int k = 0; k < rounds; k++) {
        round_result z = zmq_round("zmq", &cl, bf, 0, n, rt, 2000000 + (uint64_t)k * 1000, 0);
        print_round("zeromq", &z);
        round_result h = http_round("http", multi, argv[3], bf, n, rt, 0);
        print_round("http", &h);
        failed += z.failed + h.failed;
        new_conns += h.new_conns;
        z_tps[k] = z.tps, h_tps[k] = h.tps, z_ttft[k] = z.ttft_p50, h_ttft[k] = h.ttft_p50;
        z_itl[k] = z.itl_p50, h_itl[k] = h.itl_p50;
    }
    double zt = median(z_tps, rounds), ht = median(h_tps, rounds), cost = 100 * (1 - ht / zt);
    if (rounds > 0) {
        printf("  medians of %d rounds: zeromq %.1f tok/s ttft p50 %.1f ms itl p50 %.2f ms | http %.1f tok/s "
               "ttft p50 %.1f ms itl p50 %.2f ms\n", rounds, zt, median(z_ttft, rounds), median(z_itl, rounds), ht,
               median(h_ttft, rounds), median(h_itl, rounds));
        printf("  http / zeromq throughput: %.3f (gateway cost %.1f%%, target < 5%%: %s)\n", ht / zt, cost,
               cost < 5 ? "met" : "MISSED");
    }

    /* 2. TTFT rounds: the same burst, 8 tokens each, many alternating pairs */
    double d_ttft[ROUNDS_MAX], d_server[ROUNDS_MAX], d_hop[ROUNDS_MAX];
    double zf[ROUNDS_MAX], hf[ROUNDS_MAX], zs[ROUNDS_MAX], hs[ROUNDS_MAX], zh[ROUNDS_MAX], hh[ROUNDS_MAX];
    int z_one = 0, h_one = 0;
    if (ttft_rounds > 0)
        printf("TTFT at %d concurrent: %d alternating pairs of the burst cut to %d tokens (ms; server: the broker's "
               "TTFT; hop: client - server; groups: engine steps the first tokens came in)\n", n, ttft_rounds,
               TTFT_TOKENS);
    for (int k = 0; k < ttft_rounds; k++) {
        /* the order in a pair alternates, so that neither path always follows the other */
        round_result z, h;
        if (k % 2 == 0) {
            z = zmq_round("ttft-zmq", &cl, bf, 0, n, rt, 3000000 + (uint64_t)k * 1000, TTFT_TOKENS);
            h = http_round("ttft-http", multi, argv[3], bf, n, rt, TTFT_TOKENS);
        } else {
            h = http_round("ttft-http", multi, argv[3], bf, n, rt, TTFT_TOKENS);
            z = zmq_round("ttft-zmq", &cl, bf, 0, n, rt, 3000000 + (uint64_t)k * 1000, TTFT_TOKENS);
        }
        failed += z.failed + h.failed;
        new_conns += h.new_conns;
        zf[k] = z.ttft_p50, hf[k] = h.ttft_p50, zs[k] = z.server_p50, hs[k] = h.server_p50;
        zh[k] = z.hop_p50, hh[k] = h.hop_p50;
        d_ttft[k] = h.ttft_p50 - z.ttft_p50;
        d_server[k] = h.server_p50 - z.server_p50;
        d_hop[k] = h.hop_p50 - z.hop_p50;
        z_one += z.groups == 1, h_one += h.groups == 1;
        printf("  %2d  zeromq ttft p50 %7.1f server %7.1f hop %5.2f groups %d (%2d first) | http ttft p50 %7.1f "
               "server %7.1f hop %5.2f groups %d (%2d first) | http - zeromq %+7.1f\n", k + 1, z.ttft_p50,
               z.server_p50, z.hop_p50, z.groups, z.first_group, h.ttft_p50, h.server_p50, h.hop_p50, h.groups,
               h.first_group, d_ttft[k]);
    }
    char s_ttft[128], s_server[128], s_hop[128];
    if (ttft_rounds > 0) {
        double mzf = median(zf, ttft_rounds), mhf = median(hf, ttft_rounds);
        double mzs = median(zs, ttft_rounds), mhs = median(hs, ttft_rounds);
        double mzh = median(zh, ttft_rounds), mhh = median(hh, ttft_rounds);
        double dm = median(d_ttft, ttft_rounds);
        spread(s_ttft, sizeof s_ttft, d_ttft, ttft_rounds);
        spread(s_server, sizeof s_server, d_server, ttft_rounds);
        spread(s_hop, sizeof s_hop, d_hop, ttft_rounds);
        printf("  medians: zeromq ttft p50 %.1f (server %.1f, hop %.2f) | http ttft p50 %.1f (server %.1f, hop %.2f)\n",
               mzf, mzs, mzh, mhf, mhs, mhh);
        printf("  first tokens in one engine step: zeromq %d/%d rounds, http %d/%d\n", z_one, ttft_rounds, h_one,
               ttft_rounds);
        printf("  http - zeromq, paired by round: ttft p50 %s\n", s_ttft);
        printf("      of which server (the burst's arrival at the worker) %s\n", s_server);
        printf("      and the hop (request in, first token out) %s\n", s_hop);
        printf("  ttft p50 at %d concurrent: http %+.1f ms over zeromq (median of %d paired rounds; target < 5 ms: "
               "%s)\n", n, dm, ttft_rounds, dm < 5 ? "met" : "MISSED");
    }

    /* 3. one request at a time */
    if (singles > 0) {
        double dz[SINGLES_MAX], dh[SINGLES_MAX], dd[SINGLES_MAX], hz[SINGLES_MAX], hh2[SINGLES_MAX], dhop[SINGLES_MAX];
        char endpoint[600];
        snprintf(endpoint, sizeof endpoint, "%s/v1/completions", argv[3]);
        CURL *easy = curl_easy_init();
        int ok = 0;
        for (int k = 0; k < singles; k++) {
            double tz = 0, sz = 0, th = 0, sh = 0;
            int j = k % n, fz, fh;
            if (k % 2 == 0) {
                fz = zmq_single(&cl, bf, j, 4000000 + (uint64_t)k, &rt[0], &tz, &sz);
                fh = http_single(easy, endpoint, bf, j, &rt[0], &th, &sh);
            } else {
                fh = http_single(easy, endpoint, bf, j, &rt[0], &th, &sh);
                fz = zmq_single(&cl, bf, j, 4000000 + (uint64_t)k, &rt[0], &tz, &sz);
            }
            if (fz || fh) {
                failed++;
                continue;
            }
            dz[ok] = tz, dh[ok] = th, dd[ok] = th - tz, hz[ok] = tz - sz, hh2[ok] = th - sh;
            dhop[ok] = (th - sh) - (tz - sz);
            ok++;
        }
        curl_easy_cleanup(easy);
        char s_d[128], s_hop1[128];
        double mz = median(dz, ok), mh = median(dh, ok), mhz = median(hz, ok), mhh2 = median(hh2, ok);
        spread(s_d, sizeof s_d, dd, ok);
        spread(s_hop1, sizeof s_hop1, dhop, ok);
        printf("one request at a time (%d alternating pairs, %d tokens): zeromq ttft p50 %.2f ms (hop %.2f) | http "
               "%.2f ms (hop %.2f)\n", singles, SINGLE_TOKENS, mz, mhz, mh, mhh2);
        printf("  http - zeromq, paired: ttft %s; the hop alone %s\n", s_d, s_hop1);
    }
    if (new_conns) printf("  NOTE: %d HTTP connections were opened during the measured rounds\n", new_conns);
    if (failed) printf("  %d requests FAILED\n", failed);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    proto_client_close(&cl);
    for (int i = 0; i < n; i++) free(rt[i].gaps);
    free(rt);
    batchfile_free(bf);
    if (g_trace) fclose(g_trace);
    return failed ? 1 : 0;
}
