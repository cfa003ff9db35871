/* test_http.c — gpt2d-http end to end over real loopback HTTP: gpt2d started with --http-listen
 * 127.0.0.1:0 (so it runs and supervises the gateway), requests sent by a tiny socket client below.
 *
 * Proves: the fixed "listening on" line with the ephemeral port; /health, /ready, 404, 405 + Allow;
 * API keys (401 without or with a wrong key, 200 with the right one; probes stay open); a greedy
 * completion's text equals `gpt2-tool generate` (an independent process running the engine alone);
 * the SSE stream is framed `data: {json}\n\n` ... `data: [DONE]`, its pieces concatenate to the
 * non-streamed text, finish and usage chunks are there; n = 3 choices equal three n = 1 requests
 * with seeds seed+i; logprobs with top-N; errors in OpenAI's shape with the protocol's status and
 * param (400 unsupported / out of range / invalid JSON, 422 token out of range, 413 body > 1 MiB);
 * a client that disconnects mid-stream or mid-wait has its request cancelled (the broker's running
 * count back to 0, its "cancelled" count up); a live /metrics passes `promtool check metrics`, its
 * TTFT histogram's _sum grows by exactly a request's ttft, KV occupancy is in pages (slots x ctx /
 * 16); a choice's "timings" are bounded by the client's own clock, and (a second gpt2d whose worker
 * sleeps 150 ms after each step) count the time a request waited in the worker's socket. SIGTERM
 * to a gateway on its own: no new connection, a short stream finishes, a long stream ends with a
 * shutting_down error event and [DONE], a long non-streaming call with 503, the body of each
 * properly ended, nothing left running at the broker, exit 0; SIGTERM to gpt2d with a stream open:
 * it still gets exactly one end and [DONE]. */
#include <arpa/inet.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "check.h"
#include "tutil.h"

static int g_port;
static const char *g_key = "sk-test-0123456789";

/* ============================================================================================== */
/* a tiny HTTP/1.1 client                                                                          */
/* ============================================================================================== */

static int http_connect_port(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {20, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int http_connect(void) { return http_connect_port(g_port); }

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Sends a request (key NULL: no Authorization). */
static int http_send(int fd, const char *method, const char *path, const char *key, const char *body, size_t blen) {
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s%s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, key ? "Authorization: Bearer " : "", key ? key : "", key ? "\r\n" : "", blen);
    return send_all(fd, head, (size_t)n) < 0 || (blen && send_all(fd, body, blen) < 0) ? -1 : 0;
}

typedef struct {
    int status;
    char *head; /* the header block */
    char *body; /* de-chunked */
    size_t body_len;
    int chunked_end; /* the chunked body ended with its last chunk (not cut) */
} http_resp;

static void resp_free(http_resp *r) {
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* Reads the whole response (until close) and de-chunks it. 0 or -1. */
static int http_read(int fd, http_resp *r) {
    memset(r, 0, sizeof(*r));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 4096 > cap) buf = realloc(buf, cap *= 2);
        ssize_t k = recv(fd, buf + n, cap - n - 1, 0);
        if (k <= 0) break;
        n += (size_t)k;
    }
    buf[n] = 0;
    char *end = strstr(buf, "\r\n\r\n");
    if (!end || sscanf(buf, "HTTP/1.1 %d", &r->status) != 1) {
        free(buf);
        return -1;
    }
    r->head = strndup(buf, (size_t)(end - buf) + 2);
    char *p = end + 4;
    size_t left = n - (size_t)(p - buf);
    r->body = malloc(left + 1);
    if (strcasestr(r->head, "Transfer-Encoding: chunked")) {
        while (left > 0) {
            unsigned long sz = strtoul(p, NULL, 16);
            char *nl = strstr(p, "\r\n");
            if (nl && sz == 0 && p[0] == '0') r->chunked_end = 1;
            if (!nl || sz == 0) break;
            p = nl + 2;
            memcpy(r->body + r->body_len, p, sz);
            r->body_len += sz;
            p += sz + 2;
            left = n - (size_t)(p - buf) < n ? n - (size_t)(p - buf) : 0;
        }
    } else {
        memcpy(r->body, p, left);
        r->body_len = left;
    }
    r->body[r->body_len] = 0;
    free(buf);
    return 0;
}

static int http(const char *method, const char *path, const char *key, const char *body, http_resp *r) {
    int fd = http_connect();
    if (fd < 0) return -1;
    http_send(fd, method, path, key, body, body ? strlen(body) : 0); /* a refused body may hit EPIPE: read anyway */
    int rc = http_read(fd, r);
    close(fd);
    return rc;
}

static json_t *resp_json(const http_resp *r) { return json_loadb(r->body ? r->body : "", r->body_len, 0, NULL); }

/* POST path with the key; the JSON answer (NULL on failure), status in *status. */
static json_t *post(const char *path, const char *body, int *status) {
    http_resp r;
    if (http("POST", path, g_key, body, &r) < 0) return NULL;
    *status = r.status;
    json_t *j = resp_json(&r);
    resp_free(&r);
    return j;
}

static const char *jstr(json_t *j, const char *path) {
    /* path like "choices.0.text" */
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *cur = j;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur = json_is_array(cur) ? json_array_get(cur, (size_t)atoi(tok)) : json_object_get(cur, tok);
    return json_is_string(cur) ? json_string_value(cur) : NULL;
}

/* ============================================================================================== */
/* SSE                                                                                             */
/* ============================================================================================== */

typedef struct {
    int events, framing_ok, done_last, n_done, n_finish, n_error, has_usage, has_timings;
    char text[8][4096]; /* concatenated pieces per choice index */
    char finish[8][16];
    char error_code[40]; /* of the last error event */
    double ttft_ms, total_ms; /* the "timings" of the last finishing chunk */
} sse_result;

static void sse_parse(const char *body, sse_result *s) {
    memset(s, 0, sizeof(*s));
    s->framing_ok = 1;
    const char *p = body;
    while (*p) {
        if (strncmp(p, "data: ", 6) != 0) {
            s->framing_ok = 0;
            return;
        }
        const char *end = strstr(p, "\n\n");
        if (!end) {
            s->framing_ok = 0;
            return;
        }
        s->events++;
        s->done_last = strncmp(p + 6, "[DONE]", 6) == 0 && end[2] == 0;
        s->n_done += strncmp(p + 6, "[DONE]", 6) == 0;
        json_t *j = json_loadb(p + 6, (size_t)(end - p - 6), 0, NULL);
        if (j) {
            if (json_object_get(j, "usage")) s->has_usage = 1;
            json_t *err = json_object_get(j, "error");
            if (err) {
                s->n_error++;
                snprintf(s->error_code, sizeof(s->error_code), "%s",
                         json_string_value(json_object_get(err, "code")) ? json_string_value(json_object_get(err, "code")) : "");
            }
            json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
            if (ch) {
                int idx = (int)json_integer_value(json_object_get(ch, "index")) & 7;
                const char *t = json_string_value(json_object_get(ch, "text"));
                if (t) strncat(s->text[idx], t, sizeof(s->text[idx]) - strlen(s->text[idx]) - 1);
                const char *f = json_string_value(json_object_get(ch, "finish_reason"));
                if (f) {
                    snprintf(s->finish[idx], sizeof(s->finish[idx]), "%s", f);
                    s->n_finish++;
                }
                json_t *tm = json_object_get(ch, "timings");
                if (f && json_is_object(tm)) {
                    s->has_timings = 1;
                    s->ttft_ms = json_number_value(json_object_get(tm, "ttft_ms"));
                    s->total_ms = json_number_value(json_object_get(tm, "total_ms"));
                }
            }
            json_decref(j);
        } else if (!s->done_last) {
            s->framing_ok = 0;
        }
        p = end + 2;
    }
}

/* ============================================================================================== */
/* tests                                                                                           */
/* ============================================================================================== */

static void test_probes_and_auth(void) {
    http_resp r;
    check(http("GET", "/health", NULL, NULL, &r) == 0 && r.status == 200 && strstr(r.body, "\"ok\""),
          "/health 200 without a key");
    resp_free(&r);
    int ready = 0;
    for (int i = 0; i < 100 && !ready; i++) {
        if (http("GET", "/ready", NULL, NULL, &r) == 0) ready = r.status == 200;
        resp_free(&r);
        if (!ready) tu_sleep_ms(100);
    }
    check(ready, "/ready 200 once the worker serves");
    check(http("GET", "/nope", NULL, NULL, &r) == 0 && r.status == 404 && strstr(r.body, "\"not_found\""), "404");
    resp_free(&r);
    check(http("GET", "/v1/completions", g_key, NULL, &r) == 0 && r.status == 405 && strstr(r.head, "Allow: POST"),
          "405 with Allow: POST (%d)", r.status);
    resp_free(&r);
    check(http("GET", "/v1/models", NULL, NULL, &r) == 0 && r.status == 401 && strstr(r.body, "invalid_api_key"),
          "401 without a key (%d)", r.status);
    resp_free(&r);
    check(http("GET", "/v1/models", "sk-test-0123456788", NULL, &r) == 0 && r.status == 401,
          "401 with a wrong key (%d)", r.status);
    resp_free(&r);
    check(http("POST", "/v1/completions", NULL, "{\"prompt\":\"x\"}", &r) == 0 && r.status == 401,
          "401 on completions without a key");
    resp_free(&r);
    check(http("GET", "/v1/models", g_key, NULL, &r) == 0 && r.status == 200 && strstr(r.body, "\"model\""),
          "/v1/models 200 with the key");
    resp_free(&r);
    check(http("GET", "/", NULL, NULL, &r) == 0 && r.status == 200 && strstr(r.head, "text/html") &&
              strstr(r.body, "<html"),
          "GET / serves the status page");
    resp_free(&r);
}

/* gpt2-tool generate's stdout for the prompt (the engine alone, no service). */
static char *tool_generate(const char *prompt, int n) {
    char bin[600], num[16];
    snprintf(bin, sizeof(bin), "%s/gpt2-tool", tu.build);
    snprintf(num, sizeof(num), "%d", n);
    char *argv[] = {bin, "generate", "--model", tu.model, "--prompt", (char *)prompt, "-n", num, "--threads", "1", NULL};
    char *out = NULL;
    size_t len = 0;
    if (tu_run_capture(argv, &out, &len, 60000) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

static void test_completion_matches_tool(void) {
    int st = 0;
    double t0 = proto_clock_ms();
    json_t *j = post("/v1/completions", "{\"prompt\":\"Dear team,\",\"max_tokens\":12}", &st);
    double elapsed = proto_clock_ms() - t0;
    const char *text = jstr(j, "choices.0.text");
    json_t *tm = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "timings");
    double ttft = json_number_value(json_object_get(tm, "ttft_ms")), total = json_number_value(json_object_get(tm, "total_ms"));
    check(json_is_object(tm) && ttft > 0 && ttft <= total && total <= elapsed,
          "choice timings: 0 < ttft_ms %.2f <= total_ms %.2f <= the client's %.2f ms", ttft, total, elapsed);
    char *ref = tool_generate("Dear team,", 12);
    check(st == 200 && text && ref && strcmp(text, ref) == 0, "completion text == gpt2-tool generate: '%s' vs '%s'",
          text ? text : "(null)", ref ? ref : "(null)");
    check(jstr(j, "object") && strcmp(jstr(j, "object"), "text_completion") == 0, "object text_completion");
    check(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")) == 12,
          "usage.completion_tokens 12");
    /* the same request streamed */
    http_resp r;
    http("POST", "/v1/completions", g_key,
         "{\"prompt\":\"Dear team,\",\"max_tokens\":12,\"stream\":true,\"stream_options\":{\"include_usage\":true}}", &r);
    sse_result s;
    sse_parse(r.body ? r.body : "", &s);
    check(r.status == 200 && strstr(r.head, "text/event-stream"), "stream: 200 text/event-stream");
    check(s.framing_ok && s.done_last && s.events >= 4, "stream: data: {json}\\n\\n events, [DONE] last (%d events)",
          s.events);
    check(text && strcmp(s.text[0], text) == 0, "streamed pieces == non-streamed text: '%s' vs '%s'", s.text[0],
          text ? text : "");
    check(s.n_finish == 1 && strcmp(s.finish[0], "length") == 0, "stream: one finish chunk, length");
    check(s.has_usage, "stream: usage chunk with include_usage");
    check(s.has_timings && s.ttft_ms > 0 && s.ttft_ms <= s.total_ms, "stream: the finish chunk has timings (%.2f, %.2f)",
          s.ttft_ms, s.total_ms);
    resp_free(&r);
    free(ref);
    json_decref(j);
}

static void test_choices_and_logprobs(void) {
    int st = 0;
    json_t *j = post("/v1/completions",
                     "{\"prompt\":\"Hello\",\"max_tokens\":8,\"n\":3,\"temperature\":0.9,\"seed\":41}", &st);
    int same = st == 200 && json_array_size(json_object_get(j, "choices")) == 3;
    for (int i = 0; i < 3 && same; i++) {
        char body[256], path[32];
        snprintf(body, sizeof(body), "{\"prompt\":\"Hello\",\"max_tokens\":8,\"temperature\":0.9,\"seed\":%d}", 41 + i);
        int st1 = 0;
        json_t *one = post("/v1/completions", body, &st1);
        snprintf(path, sizeof(path), "choices.%d.text", i);
        const char *a = jstr(j, path), *b = jstr(one, "choices.0.text");
        same = st1 == 200 && a && b && strcmp(a, b) == 0;
        json_decref(one);
    }
    check(same, "n=3: choice i == an n=1 request with seed 41+i");
    json_decref(j);

    j = post("/v1/completions", "{\"prompt\":\"Hello\",\"max_tokens\":5,\"logprobs\":3}", &st);
    json_t *lp = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs");
    json_t *tops = json_object_get(lp, "top_logprobs"), *tlp = json_object_get(lp, "token_logprobs");
    int ok = st == 200 && json_array_size(tops) == 5 && json_array_size(tlp) == 5;
    for (size_t i = 0; ok && i < 5; i++) {
        json_t *top = json_array_get(tops, i);
        double best = -1e30, v = json_number_value(json_array_get(tlp, i));
        const char *k;
        json_t *x;
        json_object_foreach(top, k, x) if (json_number_value(x) > best) best = json_number_value(x);
        ok = json_object_size(top) == 3 && v <= 0 && fabs(best - v) < 1e-6; /* greedy: the best one */
    }
    check(ok, "logprobs 3: 3 alternatives per token, the greedy token is the most likely");
    json_decref(j);
}

static void test_errors(void) {
    static const struct {
        const char *body;
        int status;
        const char *code, *param;
    } cases[] = {
        {"{\"prompt\":\"x\",\"suffix\":\"y\"}", 400, "unsupported_parameter", "suffix"},
        {"{\"prompt\":\"x\",\"best_of\":3}", 400, "unsupported_parameter", "best_of"},
        {"{\"prompt\":\"x\",\"temperature\":-1}", 400, "out_of_range", "temperature"},
        {"{\"prompt\":\"x\",\"max_tokens\":\"ten\"}", 400, "wrong_type", "max_tokens"},
        {"{\"prompt\":\"x\",\"frobnicate\":1}", 400, "unknown_parameter", "frobnicate"},
        {"{\"prompt\":[70000]}", 422, "token_out_of_range", "prompt"},
        {"{\"prompt\":\"x\",\"model\":\"gpt-4\"}", 404, "model_not_found", "model"},
        {"{\"prompt\":", 400, "invalid_json", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int st = 0;
        json_t *j = post("/v1/completions", cases[i].body, &st);
        const char *code = jstr(j, "error.code"), *param = jstr(j, "error.param");
        check(st == cases[i].status && code && strcmp(code, cases[i].code) == 0 &&
                  (!cases[i].param || (param && strcmp(param, cases[i].param) == 0)) && jstr(j, "error.message") &&
                  jstr(j, "error.type"),
              "%s -> %d %s (got %d %s)", cases[i].body, cases[i].status, cases[i].code, st, code ? code : "?");
        json_decref(j);
    }
    /* a body over 1 MiB: announced, its first 64 KiB sent; the answer comes without the rest */
    http_resp r;
    int fd = http_connect();
    char head[512], chunk[65536];
    int n = snprintf(head, sizeof(head),
                     "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Content-Length: %u\r\n\r\n{",
                     g_key, (1u << 20) + 100);
    memset(chunk, ' ', sizeof(chunk));
    send_all(fd, head, (size_t)n);
    send_all(fd, chunk, sizeof(chunk));
    check(http_read(fd, &r) == 0 && r.status == 413 && strstr(r.body, "too_large"), "body > 1 MiB: 413 (%d)",
          r.status);
    close(fd);
    resp_free(&r);
}

/* The broker's running count and cancelled total. */
static int broker_counts(const tu_daemon *d, int *running, uint64_t *cancelled) {
    tu_client c;
    if (tu_client_open(&c, d->client_ep) < 0) return 0;
    proto_msg m;
    int ok = tu_stats(&c, &m);
    if (ok) {
        *running = m.running + m.queue;
        *cancelled = m.totals.finish[PROTO_FINISH_CANCELLED];
        proto_msg_destroy(&m);
    }
    tu_client_close(&c);
    return ok;
}

static int wait_idle(const tu_daemon *d, uint64_t *cancelled, int ms) {
    double deadline = proto_clock_ms() + ms;
    int running = -1;
    while (proto_clock_ms() < deadline) {
        if (broker_counts(d, &running, cancelled) && running == 0) return 1;
        tu_sleep_ms(20);
    }
    return 0;
}

static void test_disconnect(const tu_daemon *d) {
    uint64_t c0 = 0, c1 = 0;
    wait_idle(d, &c0, 5000);
    static const char *bodies[] = {"{\"prompt\":\"Hello\",\"max_tokens\":200,\"stream\":true}",
                                   "{\"prompt\":\"Hello\",\"max_tokens\":200}"};
    for (int i = 0; i < 2; i++) {
        int fd = http_connect();
        http_send(fd, "POST", "/v1/completions", g_key, bodies[i], strlen(bodies[i]));
        if (i == 0) { /* read until the first event has arrived: the request is running */
            char buf[512];
            recv(fd, buf, sizeof(buf), 0);
        } else {
            int running = 0;
            uint64_t c;
            for (int t = 0; t < 200 && running == 0; t++) {
                broker_counts(d, &running, &c);
                if (!running) tu_sleep_ms(10);
            }
        }
        close(fd);
    }
    check(wait_idle(d, &c1, 3000), "client hang-ups: nothing left running at the broker");
    check(c1 >= c0 + 2, "both hung-up requests ended cancelled (%llu -> %llu)", (unsigned long long)c0,
          (unsigned long long)c1);
}

/* The value of the series that starts with `series ` (name and labels) in a /metrics body, or NAN. */
static double metric_value(const char *body, const char *series) {
    size_t n = strlen(series);
    for (const char *p = body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
    return NAN;
}

static double metrics_now(const char *series) {
    http_resp r;
    double v = NAN;
    if (http("GET", "/metrics", NULL, NULL, &r) == 0 && r.status == 200) v = metric_value(r.body, series);
    if (r.body || r.head) resp_free(&r);
    return v;
}

static void test_metrics(void) {
    /* a histogram's _sum is the broker's exact sum: one request adds its own TTFT (its timings) */
    double s0 = metrics_now("gpt2d_time_to_first_token_seconds_sum");
    int st = 0;
    json_t *j = post("/v1/completions", "{\"prompt\":\"Dear team,\",\"max_tokens\":2}", &st);
    double ttft = json_number_value(json_object_get(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "timings"), "ttft_ms"));
    json_decref(j);
    double s1 = metrics_now("gpt2d_time_to_first_token_seconds_sum");
    check(st == 200 && ttft > 0 && fabs((s1 - s0) - ttft / 1000) < 2e-6,
          "ttft histogram _sum grew by exactly the request's ttft (%.6f -> %.6f, ttft %.6f s)", s0, s1, ttft / 1000);
    http_resp r;
    check(http("GET", "/metrics", NULL, NULL, &r) == 0 && r.status == 200 &&
              strstr(r.body, "gpt2d_requests_total{finish_reason=\"length\"}") &&
              strstr(r.body, "gpt2d_time_to_first_token_seconds_bucket") &&
              strstr(r.body, "gpt2d_errors_total{code=\"422\",reason=\"token_out_of_range\"}"),
          "/metrics 200 with the expected series");
    /* KV occupancy in pages: 8 slots x ctx 256 / 16 positions a page (the worker's default arena) */
    double pages = metric_value(r.body, "gpt2d_worker_kv_pages{worker=\"local-0\",local=\"true\"}");
    double used = metric_value(r.body, "gpt2d_worker_kv_pages_used{worker=\"local-0\",local=\"true\"}");
    double ratio = metric_value(r.body, "gpt2d_worker_kv_occupancy_ratio{worker=\"local-0\",local=\"true\"}");
    check(pages == 8 * 256 / 16 && used >= 0 && used <= pages && ratio >= 0 && ratio <= 1,
          "/metrics: KV pages per worker (%g pages, %g used, ratio %g)", pages, used, ratio);
    char path[700], log[700];
    snprintf(path, sizeof(path), "%s/metrics.txt", tu.tmp);
    snprintf(log, sizeof(log), "%s/promtool.log", tu.tmp);
    FILE *f = fopen(path, "w");
    if (f) {
        fwrite(r.body, 1, r.body_len, f);
        fclose(f);
    }
    char cmd[1600];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s > %s 2>&1", path, log);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    int rc = tu_run(argv, "/dev/null", 30000);
    check(rc == 0, "promtool check metrics on a live /metrics (rc %d, see %s)", rc, log);
    resp_free(&r);
    check(http("GET", "/v1/stats", NULL, NULL, &r) == 0 && r.status == 200 && strstr(r.body, "\"workers\"") &&
              strstr(r.body, "\"ttft_ms\""),
          "/v1/stats 200");
    resp_free(&r);
}

/* The port in a gateway's "listening on http://127.0.0.1:PORT" line of log (waits up to 10 s), or 0. */
static int log_port(const char *log) {
    int port = 0;
    for (int i = 0; i < 200 && !port; i++) {
        FILE *lf = fopen(log, "r");
        char line[1024];
        while (lf && fgets(line, sizeof(line), lf)) {
            const char *p = strstr(line, "listening on http://127.0.0.1:");
            if (p) port = atoi(p + strlen("listening on http://127.0.0.1:"));
        }
        if (lf) fclose(lf);
        if (!port) tu_sleep_ms(50);
    }
    return port;
}

/* Opens a connection to port and sends body to /v1/completions (no key). The fd, or -1. */
static int start_completion(int port, const char *body) {
    int fd = http_connect_port(port);
    if (fd >= 0 && http_send(fd, "POST", "/v1/completions", NULL, body, strlen(body)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Waits (up to ms) until the broker runs at least n requests. */
static int wait_running(const tu_daemon *d, int n, int ms) {
    int running = 0;
    uint64_t c;
    for (double end = proto_clock_ms() + ms; proto_clock_ms() < end; tu_sleep_ms(5))
        if (broker_counts(d, &running, &c) && running >= n) return 1;
    return 0;
}

/* d2's worker sleeps 150 ms after each step. A request that reaches the worker during that sleep
 * waits in its socket: the broker's timings count that wait (its own clock, from its receipt of
 * the submit), so total_ms is the client's elapsed time less the hops, not the worker's share. */
static void test_timings_cover_worker_wait(const tu_daemon *d2, int port) {
    double elapsed = 0, total = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        int a = start_completion(port, "{\"prompt\":\"Hello\",\"max_tokens\":3,\"stream\":true}");
        char buf[256];
        if (a < 0 || recv(a, buf, sizeof(buf), 0) <= 0) { /* the first event: the worker has stepped */
            if (a >= 0) close(a);
            continue;
        }
        int st = 0;
        double t0 = proto_clock_ms();
        int fd = http_connect_port(port);
        http_resp r;
        int ok = fd >= 0 && http_send(fd, "POST", "/v1/completions", NULL, "{\"prompt\":\"Hi\",\"max_tokens\":1}", 30) == 0 &&
                 http_read(fd, &r) == 0;
        elapsed = proto_clock_ms() - t0;
        if (fd >= 0) close(fd);
        json_t *j = ok ? resp_json(&r) : NULL;
        st = ok ? r.status : 0;
        total = json_number_value(json_object_get(json_object_get(json_array_get(json_object_get(j, "choices"), 0),
                                                                  "timings"), "total_ms"));
        json_decref(j);
        if (ok) resp_free(&r);
        http_read(a, &r); /* the first one's rest */
        resp_free(&r);
        close(a);
        if (st == 200 && elapsed >= 60) break; /* it did wait for the worker (else: try again) */
    }
    (void)d2;
    check(elapsed >= 60 && total >= elapsed - 40 && total <= elapsed,
          "a request that waited in the worker's socket: total_ms %.1f covers the client's %.1f ms (less the hops)",
          total, elapsed);
}

/* SIGTERM to a gateway (run on its own against d2's broker, grace 1500 ms): it stops accepting;
 * a short stream running then finishes normally; a long stream ends with an error event
 * (shutting_down) and [DONE], a long non-streaming call with 503 shutting_down; each exactly once,
 * its chunked body properly ended; their requests are cancelled at the broker; the gateway exits 0. */
static void test_gateway_sigterm(const tu_daemon *d2) {
    char log[700], hbin[700];
    snprintf(log, sizeof(log), "%s/gw-term.log", tu.tmp);
    snprintf(hbin, sizeof(hbin), "%s/gpt2d-http", tu.build);
    char *argv[] = {hbin, "--connect", (char *)d2->client_ep, "--listen", "127.0.0.1:0", "--shutdown-grace-ms", "1500",
                    "--name", "gw-term", "--log-level", "info", NULL};
    pid_t pid = tu_spawn(argv, log);
    int port = pid > 0 ? log_port(log) : 0;
    check(port > 0, "a gateway on its own starts (port %d)", port);
    if (port <= 0) return;
    uint64_t c0 = 0, c1 = 0;
    wait_idle(d2, &c0, 5000);
    int a = start_completion(port, "{\"prompt\":\"Hello\",\"max_tokens\":250,\"stream\":true}");
    wait_running(d2, 1, 5000);
    int b = start_completion(port, "{\"prompt\":\"Hello\",\"max_tokens\":250}");
    wait_running(d2, 2, 5000);
    int c = start_completion(port, "{\"prompt\":\"Hello\",\"max_tokens\":2,\"stream\":true}");
    check(wait_running(d2, 3, 5000), "three requests run through the gateway");
    kill(pid, SIGTERM);
    tu_sleep_ms(300);
    int late = http_connect_port(port);
    check(late < 0, "after SIGTERM the gateway accepts no new connection");
    if (late >= 0) close(late);
    http_resp ra, rb, rc;
    int ok_a = http_read(a, &ra) == 0, ok_b = http_read(b, &rb) == 0, ok_c = http_read(c, &rc) == 0;
    sse_result sa, sc;
    sse_parse(ok_a && ra.body ? ra.body : "", &sa);
    sse_parse(ok_c && rc.body ? rc.body : "", &sc);
    check(ok_a && ra.status == 200 && sa.framing_ok && sa.events >= 2 && sa.n_error == 1 &&
              strcmp(sa.error_code, "shutting_down") == 0 && sa.n_finish == 0 && sa.n_done == 1 && sa.done_last &&
              ra.chunked_end,
          "a long stream ends with one shutting_down error event, then [DONE], the body ended (%d events, %d errors "
          "'%s', %d finish, %d [DONE], chunked end %d)", sa.events, sa.n_error, sa.error_code, sa.n_finish, sa.n_done,
          ok_a ? ra.chunked_end : -1);
    json_t *jb = ok_b ? resp_json(&rb) : NULL;
    const char *code_b = jstr(jb, "error.code");
    check(ok_b && rb.status == 503 && code_b && strcmp(code_b, "shutting_down") == 0,
          "a long non-streaming call gets 503 shutting_down (status %d, code %s)", ok_b ? rb.status : -1,
          code_b ? code_b : "-");
    json_decref(jb);
    check(ok_c && rc.status == 200 && sc.framing_ok && sc.n_error == 0 && sc.n_finish == 1 &&
              strcmp(sc.finish[0], "length") == 0 && sc.n_done == 1 && sc.done_last && rc.chunked_end,
          "a short stream running at SIGTERM finishes normally within the grace (finish '%s', %d errors)", sc.finish[0],
          sc.n_error);
    if (ok_a) resp_free(&ra);
    if (ok_b) resp_free(&rb);
    if (ok_c) resp_free(&rc);
    close(a);
    close(b);
    close(c);
    int status = tu_reap(pid, 10000);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the gateway exits 0 after SIGTERM");
    check(wait_idle(d2, &c1, 5000), "the two cut requests were cancelled at the broker: nothing runs there");
}

/* SIGTERM to gpt2d (grace 300 ms) with a long stream open through its gateway: the broker's drain
 * ends it (cancelled after the grace, or shutting_down), and the gateway, stopped after that,
 * still delivers the end: one finish or error, then [DONE], the body ended; gpt2d exits 0. */
static void test_daemon_sigterm(tu_daemon *d2, int port) {
    int a = start_completion(port, "{\"prompt\":\"Hello\",\"max_tokens\":250,\"stream\":true}");
    check(wait_running(d2, 1, 5000), "a long stream runs through gpt2d's gateway");
    check(tu_daemon_stop(d2), "gpt2d with an open stream stops on SIGTERM, exit 0");
    http_resp r;
    int ok = http_read(a, &r) == 0;
    sse_result s;
    sse_parse(ok && r.body ? r.body : "", &s);
    check(ok && r.status == 200 && s.framing_ok && s.n_finish + s.n_error == 1 && s.n_done == 1 && s.done_last &&
              r.chunked_end,
          "the stream got exactly one end (finish '%s' / error '%s'), then [DONE], the body ended (chunked end %d)",
          s.finish[0], s.error_code, ok ? r.chunked_end : -1);
    if (ok) resp_free(&r);
    close(a);
}

int main(void) {
    if (tu_init("http", 240) < 0) {
        printf("cannot make the test model\n");
        return 1;
    }
    char keys[700];
    snprintf(keys, sizeof(keys), "%s/api-keys", tu.tmp);
    FILE *f = fopen(keys, "w");
    fprintf(f, "# test keys\nsk-other-key\n%s\n", g_key);
    fclose(f);
    static char hbin[700];
    snprintf(hbin, sizeof(hbin), "%s/gpt2d-http", tu.build);
    char *extra[] = {"--http-listen", "127.0.0.1:0", "--http-api-keys", keys, "--http-bin", hbin,
                     "--debug-step-delay-ms", "5", NULL};
    tu_daemon d;
    check(tu_daemon_start(&d, "d", 1, 8, extra), "gpt2d with --http-listen starts");
    for (int i = 0; i < 200 && !g_port; i++) {
        FILE *lf = fopen(d.log, "r");
        char line[1024];
        while (lf && fgets(line, sizeof(line), lf)) {
            const char *p = strstr(line, "listening on http://127.0.0.1:");
            if (p) g_port = atoi(p + strlen("listening on http://127.0.0.1:"));
        }
        if (lf) fclose(lf);
        if (!g_port) tu_sleep_ms(50);
    }
    check(g_port > 0, "the gateway logs 'listening on http://127.0.0.1:PORT' (port %d)", g_port);
    if (g_port > 0) {
        test_probes_and_auth();
        test_completion_matches_tool();
        test_choices_and_logprobs();
        test_errors();
        test_disconnect(&d);
        test_metrics();
    }
    check(tu_daemon_stop(&d), "gpt2d (and its gateway) stop cleanly");

    /* a second gpt2d: slow steps, a short shutdown grace */
    char *extra2[] = {"--http-listen", "127.0.0.1:0", "--http-bin", hbin, "--debug-step-delay-ms", "150",
                      "--shutdown-grace-ms", "300", NULL};
    tu_daemon d2;
    check(tu_daemon_start(&d2, "d2", 1, 8, extra2), "a second gpt2d (150 ms steps) starts");
    int port2 = log_port(d2.log);
    check(port2 > 0, "its gateway listens (port %d)", port2);
    if (port2 > 0) {
        test_timings_cover_worker_wait(&d2, port2);
        test_gateway_sigterm(&d2);
        test_daemon_sigterm(&d2, port2);
    } else {
        tu_daemon_stop(&d2);
    }
    return check_done("test_http");
}
