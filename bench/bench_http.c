/* bench_http — what the HTTP gateway costs: the email workload at 64 concurrent through gpt2d-http
 * (POST /v1/completions, SSE) against the same requests over ZeroMQ to the same broker, same run.
 *
 * usage: bench_http EMAILS.jsonl ENDPOINT URL [ROUNDS]
 * The caller (bench/http.sh) has started `gpt2d --workers 1 --slots 64 --ctx 512 --http-listen
 * 127.0.0.1:0` with ENDPOINT its client endpoint and URL its gateway. After a warm-up pass on each
 * path (the worker's KV pages get touched, the HTTP connections open and stay alive), ROUNDS
 * (default 2) measured rounds per path alternate ZeroMQ, HTTP, ZeroMQ, HTTP, ... so a drift in the
 * machine's speed hits both. A round submits every request at once (greedy, the file's max_tokens)
 * and times each token's arrival at the client: a token frame over ZeroMQ, an SSE event over HTTP
 * (libcurl's multi interface, one connection per stream, as an HTTP client pool does). Prints per
 * round and the medians: tokens/s, TTFT p50/p99, inter-token p50/p99; then the HTTP / ZeroMQ
 * throughput ratio and the TTFT p50 difference against the targets (< 5% and < 5 ms).
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
#define ROUNDS_MAX 8

typedef struct {
    double t_submit, t_first, t_last;
    int n_tokens, done, failed;
    double *gaps;          /* max_tokens + 1 */
    int n_gaps, gap_cap;
} req_times;

typedef struct {
    double tps, ttft_p50, ttft_p99, itl_p50, itl_p99, wall_s;
    long tokens;
    int failed;
} round_result;

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

static round_result summarize(req_times *rt, int n, double wall_ms, long tokens) {
    round_result r = {.wall_s = wall_ms / 1e3, .tokens = tokens};
    double ttft[N_MAX];
    long n_itl = 0, cap = 0;
    for (int i = 0; i < n; i++) cap += rt[i].n_gaps;
    double *itl = malloc(sizeof(double) * (size_t)(cap + 1));
    for (int i = 0; i < n; i++) {
        ttft[i] = rt[i].t_first - rt[i].t_submit;
        r.failed += rt[i].failed || !rt[i].done;
        for (int k = 0; k < rt[i].n_gaps; k++) itl[n_itl++] = rt[i].gaps[k];
    }
    r.tps = tokens / r.wall_s;
    r.ttft_p50 = bench_quantile(ttft, n, 0.5);
    r.ttft_p99 = bench_quantile(ttft, n, 0.99);
    r.itl_p50 = bench_quantile(itl, (int)n_itl, 0.5);
    r.itl_p99 = bench_quantile(itl, (int)n_itl, 0.99);
    free(itl);
    return r;
}

static void print_round(const char *name, const round_result *r) {
    printf("  %-8s %8.1f tok/s  ttft p50 %7.1f ms p99 %7.1f ms  itl p50 %5.1f ms p99 %6.1f ms  (%ld tokens in "
           "%.1f s%s)\n", name, r->tps, r->ttft_p50, r->ttft_p99, r->itl_p50, r->itl_p99, r->tokens, r->wall_s,
           r->failed ? ", FAILED requests" : "");
}

/* ---- ZeroMQ: every request submitted at once on one DEALER, as bench_e2e ------------------------ */


static round_result zmq_round(proto_client *cl, batchfile *bf, req_times *rt, uint64_t base) {
    int n = bf->n, done = 0;
    long toks = 0;
    for (int i = 0; i < n; i++) req_reset(&rt[i]);
    double t0 = bench_now() * 1e3;
    for (int i = 0; i < n; i++) {
        proto_msg m;
        proto_msg_init(&m, PROTO_T_SUBMIT);
        m.id.num = base + (uint64_t)i;
        m.has |= PROTO_HAS(PF_ID) | PROTO_HAS(PF_PROMPT) | PROTO_HAS(PF_MAX_TOKENS);
        m.prompt.ptr = bf->jobs[i].prompt;
        m.prompt.len = (uint32_t)strlen(bf->jobs[i].prompt);
        m.max_tokens = bf->jobs[i].req.max_tokens;
        rt[i].t_submit = bench_now() * 1e3;
        if (proto_client_send(cl, &m) != 0) rt[i].failed = 1, rt[i].done = 1, done++;
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
                done++;
            }
        }
        proto_msg_destroy(&r);
    }
    return summarize(rt, n, bench_now() * 1e3 - t0, toks);
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

/* One SSE event ("data: ...") of r. Token events are timed; the usage chunk gives the count. */
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

static round_result http_round(CURLM *multi, const char *url, batchfile *bf, req_times *rt, int max_tokens_cap) {
    int n = bf->n;
    http_req *hr = calloc((size_t)n, sizeof *hr);
    CURL **easy = calloc((size_t)n, sizeof *easy);
    char endpoint[600];
    snprintf(endpoint, sizeof endpoint, "%s/v1/completions", url);
    for (int i = 0; i < n; i++) req_reset(&rt[i]);
    double t0 = bench_now() * 1e3;
    for (int i = 0; i < n; i++) {
        int mt = bf->jobs[i].req.max_tokens;
        if (max_tokens_cap && mt > max_tokens_cap) mt = max_tokens_cap;
        json_t *b = json_pack("{s:s, s:i, s:i, s:b, s:{s:b}}", "prompt", bf->jobs[i].prompt, "max_tokens", mt,
                              "temperature", 0, "stream", 1, "stream_options", "include_usage", 1);
        hr[i].body = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        hr[i].q = &rt[i];
        hr[i].headers = curl_slist_append(NULL, "Content-Type: application/json");
        CURL *e = easy[i] = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, endpoint);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, hr[i].body);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hr[i].headers);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_write);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &hr[i]);
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT, 600L);
        curl_easy_setopt(e, CURLOPT_PRIVATE, &hr[i]);
        rt[i].t_submit = bench_now() * 1e3;
        curl_multi_add_handle(multi, e);
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
            long status = 0;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            r->q->done = 1;
            r->q->failed = m->data.result != CURLE_OK || status != 200 || !r->saw_done || r->saw_error;
            if (r->q->failed)
                fprintf(stderr, "bench_http: request failed: curl %d, HTTP %ld%s\n", (int)m->data.result, status,
                        r->saw_error ? ", error event" : "");
        }
    }
    double wall = bench_now() * 1e3 - t0;
    long toks = 0;
    for (int i = 0; i < n; i++) {
        toks += hr[i].usage_tokens;
        curl_multi_remove_handle(multi, easy[i]);
        curl_easy_cleanup(easy[i]);
        curl_slist_free_all(hr[i].headers);
        free(hr[i].body);
        free(hr[i].buf);
    }
    free(hr);
    free(easy);
    return summarize(rt, n, wall, toks);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_http EMAILS.jsonl ENDPOINT URL [ROUNDS]\n");
        return 2;
    }
    int rounds = argc > 4 ? atoi(argv[4]) : 2;
    if (rounds < 1 || rounds > ROUNDS_MAX) rounds = 2;
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
    round_result w = zmq_round(&cl, bf, rt, 1000000);
    failed += w.failed;
    print_round("warm-up zmq", &w);
    w = http_round(multi, argv[3], bf, rt, 4);
    failed += w.failed;
    printf("  warm-up http: %d connections opened (%s)\n", n, w.failed ? "FAILED" : "ok");

    double z_tps[ROUNDS_MAX], h_tps[ROUNDS_MAX], z_ttft[ROUNDS_MAX], h_ttft[ROUNDS_MAX];
    double z_itl[ROUNDS_MAX], h_itl[ROUNDS_MAX];
    for (int k = 0; k < rounds; k++) {
        round_result z = zmq_round(&cl, bf, rt, 2000000 + (uint64_t)k * 1000);
        print_round("zeromq", &z);
        round_result h = http_round(multi, argv[3], bf, rt, 0);
        print_round("http", &h);
        failed += z.failed + h.failed;
        z_tps[k] = z.tps, h_tps[k] = h.tps, z_ttft[k] = z.ttft_p50, h_ttft[k] = h.ttft_p50;
        z_itl[k] = z.itl_p50, h_itl[k] = h.itl_p50;
    }
    double zt = median(z_tps, rounds), ht = median(h_tps, rounds);
    double zf = median(z_ttft, rounds), hf = median(h_ttft, rounds);
    double cost = 100 * (1 - ht / zt), dttft = hf - zf;
    printf("  medians of %d rounds: zeromq %.1f tok/s ttft p50 %.1f ms itl p50 %.2f ms | http %.1f tok/s "
           "ttft p50 %.1f ms itl p50 %.2f ms\n", rounds, zt, zf, median(z_itl, rounds), ht, hf,
           median(h_itl, rounds));
    printf("  http / zeromq throughput: %.3f (gateway cost %.1f%%, target < 5%%: %s); "
           "ttft p50 +%.1f ms (target < 5 ms: %s)\n", ht / zt, cost, cost < 5 ? "met" : "MISSED", dttft,
           dttft < 5 ? "met" : "MISSED");
    if (failed) printf("  %d requests FAILED\n", failed);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    proto_client_close(&cl);
    for (int i = 0; i < n; i++) free(rt[i].gaps);
    free(rt);
    batchfile_free(bf);
    return failed ? 1 : 0;
}
