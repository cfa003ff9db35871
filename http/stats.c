/* stats.c — /metrics (Prometheus text exposition 0.0.4), /v1/stats (JSON for the status page) and
 * /ready, all from the broker's last stats_reply (the broker is the single source of truth; only the
 * http_* series are the gateway's own). Metric names follow Prometheus conventions: the gpt2d_
 * prefix, base units (seconds), _total for counters; one table below says each name and its help. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"

/* ============================================================================================== */
/* a growing text buffer                                                                           */
/* ============================================================================================== */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        if (b->oom) return;
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 8192;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
}

/* ============================================================================================== */
/* Prometheus                                                                                      */
/* ============================================================================================== */

static void head(sbuf *b, const char *name, const char *type, const char *help) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A latency histogram of the broker (ms buckets, not cumulative) as seconds, cumulative. */
static void histogram(sbuf *b, const char *name, const char *help, const proto_hist *h) {
    static const double bounds_ms[PROTO_HIST_BUCKETS - 1] = PROTO_HIST_BOUNDS_MS;
    head(b, name, "histogram", help);
    uint64_t cum = 0;
    double est = 0;
    for (int i = 0; i < PROTO_HIST_BUCKETS; i++) {
        cum += h->n[i];
        /* an older broker sends no sum: then it is estimated with the buckets' midpoints */
        double lo = i ? bounds_ms[i - 1] : 0, hi = i < PROTO_HIST_BUCKETS - 1 ? bounds_ms[i] : lo;
        est += (double)h->n[i] * (lo + hi) / 2000.0;
        if (i < PROTO_HIST_BUCKETS - 1) sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, bounds_ms[i] / 1000.0,
                                                  (unsigned long long)cum);
    }
    double sum = h->sum_ms > 0 || cum == 0 ? h->sum_ms / 1000.0 : est;
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)cum, name,
              sum, name, (unsigned long long)cum);
}

/* A label value with \, " and newline escaped. */
static void label(sbuf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') sb_printf(b, "\\%c", *s);
        else if (*s == '\n') sb_printf(b, "\\n");
        else sb_printf(b, "%c", *s);
    }
}

char *stats_render_prometheus(const gw *g) {
    const proto_msg *m = &g->stats.m;
    sbuf b = {0};
    head(&b, "gpt2d_up", "gauge", "1 when the broker answered the gateway's stats request");
    sb_printf(&b, "gpt2d_up %d\n", g->stats.valid);
    head(&b, "gpt2d_uptime_seconds", "gauge", "Seconds since the broker started");
    sb_printf(&b, "gpt2d_uptime_seconds %.3f\n", m->uptime_s);

    head(&b, "gpt2d_requests_total", "counter", "Requests ended, by finish reason (error: ended with an error)");
    for (int f = 0; f < PROTO_FINISH_COUNT; f++)
        sb_printf(&b, "gpt2d_requests_total{finish_reason=\"%s\"} %llu\n", proto_finish_name((proto_finish)f),
                  (unsigned long long)m->totals.finish[f]);
    head(&b, "gpt2d_requests_accepted_total", "counter", "Requests the broker accepted into its queue");
    sb_printf(&b, "gpt2d_requests_accepted_total %llu\n", (unsigned long long)m->requests_total);
    head(&b, "gpt2d_errors_total", "counter", "Error frames sent to clients, by code and reason");
    for (int r = 1; r < PROTO_R_COUNT; r++)
        if (m->error_reasons.n[r])
            sb_printf(&b, "gpt2d_errors_total{code=\"%d\",reason=\"%s\"} %llu\n", proto_reason_code((proto_reason)r),
                      proto_reason_name((proto_reason)r), (unsigned long long)m->error_reasons.n[r]);
    head(&b, "gpt2d_overloaded_total", "counter", "Submits refused at once because the broker was full (429)");
    sb_printf(&b, "gpt2d_overloaded_total %llu\n", (unsigned long long)m->overloaded_total);
    head(&b, "gpt2d_prompt_tokens_total", "counter", "Prompt tokens of requests that ended with done");
    sb_printf(&b, "gpt2d_prompt_tokens_total %llu\n", (unsigned long long)m->totals.prompt_tokens);
    head(&b, "gpt2d_generated_tokens_total", "counter", "Tokens generated and forwarded by the broker");
    sb_printf(&b, "gpt2d_generated_tokens_total %llu\n", (unsigned long long)m->tokens_total);
    head(&b, "gpt2d_replays_total", "counter", "Requests moved off a lost worker and replayed");
    sb_printf(&b, "gpt2d_replays_total %llu\n", (unsigned long long)m->totals.replays);
    head(&b, "gpt2d_worker_restarts_total", "counter", "Local worker processes that exited and were restarted");
    sb_printf(&b, "gpt2d_worker_restarts_total %llu\n", (unsigned long long)m->totals.worker_restarts);

    histogram(&b, "gpt2d_queue_time_seconds", "Time from submit to a worker slot", &m->queue_hist);
    histogram(&b, "gpt2d_time_to_first_token_seconds", "Time from submit to the first token", &m->ttft_hist);
    histogram(&b, "gpt2d_inter_token_latency_seconds", "Time between consecutive tokens of a request", &m->itl_hist);
    histogram(&b, "gpt2d_request_duration_seconds", "Time from submit to the request's end", &m->total_hist);

    head(&b, "gpt2d_queue_depth", "gauge", "Requests waiting for a slot");
    sb_printf(&b, "gpt2d_queue_depth %d\n", m->queue);
    head(&b, "gpt2d_queue_capacity", "gauge", "Requests that may wait for a slot (max-queue)");
    sb_printf(&b, "gpt2d_queue_capacity %d\n", m->max_queue);
    head(&b, "gpt2d_running_requests", "gauge", "Requests running on workers");
    sb_printf(&b, "gpt2d_running_requests %d\n", m->running);
    head(&b, "gpt2d_workers", "gauge", "Workers connected to the broker");
    sb_printf(&b, "gpt2d_workers %d\n", g->stats.n_workers);
    head(&b, "gpt2d_tokens_per_second", "gauge", "Tokens generated per second over the last 10 s");
    sb_printf(&b, "gpt2d_tokens_per_second %.3f\n", m->tokens_per_s);

    static const char *const wmetric[][3] = {
        {"gpt2d_worker_slots", "gauge", "Requests a worker runs at once at most"},
        {"gpt2d_worker_slots_used", "gauge", "Requests running on a worker"},
        {"gpt2d_worker_kv_pages", "gauge", "KV-cache pages of a worker (16 positions each)"},
        {"gpt2d_worker_kv_pages_used", "gauge", "KV-cache pages held by a worker's running requests"},
        {"gpt2d_worker_kv_pages_cached", "gauge", "KV-cache pages a worker keeps for reuse by its prefix cache (evictable)"},
        {"gpt2d_worker_kv_occupancy_ratio", "gauge", "Fraction of a worker's KV-cache pages held by running requests"},
        {"gpt2d_worker_prefix_lookup_tokens_total", "counter", "Prompt tokens a worker looked up in its prefix cache"},
        {"gpt2d_worker_prefix_hit_tokens_total", "counter", "Prompt tokens a worker found in its prefix cache (not computed)"},
        {"gpt2d_worker_generated_tokens_total", "counter", "Tokens a worker generated since it connected"},
    };
    for (int k = 0; k < (int)(sizeof(wmetric) / sizeof(wmetric[0])); k++) {
        head(&b, wmetric[k][0], wmetric[k][1], wmetric[k][2]);
        for (int i = 0; i < g->stats.n_workers; i++) {
            const proto_worker_info *w = &g->stats.workers[i];
            sb_printf(&b, "%s{worker=\"", wmetric[k][0]);
            label(&b, g->stats.names[i]);
            sb_printf(&b, "\",local=\"%s\"} ", w->local ? "true" : "false");
            switch (k) {
            case 0: sb_printf(&b, "%d\n", w->slots); break;
            case 1: sb_printf(&b, "%d\n", w->running); break;
            case 2: sb_printf(&b, "%d\n", w->kv.pages); break;
            case 3: sb_printf(&b, "%d\n", w->kv.used); break;
            case 4: sb_printf(&b, "%d\n", w->kv.cached); break;
            case 5: sb_printf(&b, "%.4f\n", w->kv.pages > 0 ? (double)w->kv.used / w->kv.pages : 0.0); break;
            case 6: sb_printf(&b, "%llu\n", (unsigned long long)w->kv.lookup_tokens); break;
            case 7: sb_printf(&b, "%llu\n", (unsigned long long)w->kv.hit_tokens); break;
            default: sb_printf(&b, "%llu\n", (unsigned long long)w->tokens); break;
            }
        }
    }

    head(&b, "gpt2d_http_requests_total", "counter", "HTTP requests answered by the gateway, by status code");
    for (int s = 100; s < 600; s++)
        if (g->http_status_counts[s]) sb_printf(&b, "gpt2d_http_requests_total{code=\"%d\"} %llu\n", s,
                                                (unsigned long long)g->http_status_counts[s]);
    head(&b, "gpt2d_http_connections", "gauge", "Open HTTP connections");
    sb_printf(&b, "gpt2d_http_connections %d\n", g->connections);
    head(&b, "gpt2d_http_active_requests", "gauge", "Generation requests the gateway has open at the broker");
    sb_printf(&b, "gpt2d_http_active_requests %d\n", g->n_open_choices);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* ============================================================================================== */
/* JSON                                                                                            */
/* ============================================================================================== */

static json_t *pct_json(const proto_pct *p) { return json_pack("{s:f,s:f,s:f}", "p50", p->p50, "p90", p->p90, "p99", p->p99); }

char *stats_render_json(const gw *g) {
    const proto_msg *m = &g->stats.m;
    gw_error e;
    json_t *workers = json_array();
    for (int i = 0; i < g->stats.n_workers; i++) {
        const proto_worker_info *w = &g->stats.workers[i];
        json_array_append_new(workers, json_pack("{s:s,s:i,s:b,s:i,s:i,s:i,s:I,s:{s:i,s:i,s:i}}", "name",
                                                 g->stats.names[i], "pid", w->pid, "local", w->local, "slots",
                                                 w->slots, "credit", w->credit, "running", w->running, "tokens",
                                                 (json_int_t)w->tokens, "kv_pages", "total", w->kv.pages, "used",
                                                 w->kv.used, "cached", w->kv.cached));
    }
    json_t *finish = json_object();
    for (int f = 0; f < PROTO_FINISH_COUNT; f++)
        json_object_set_new(finish, proto_finish_name((proto_finish)f), json_integer((json_int_t)m->totals.finish[f]));
    json_t *j = json_pack("{s:s,s:s,s:b,s:f,s:i,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:o,s:o,s:o,s:o}",
                          "object", "stats", "model", g->cfg->model_name, "ready", stats_ready(g, &e), "uptime_s",
                          m->uptime_s, "queue", m->queue, "max_queue", m->max_queue, "running", m->running,
                          "requests_total", (json_int_t)m->requests_total, "tokens_total",
                          (json_int_t)m->tokens_total, "errors_total", (json_int_t)m->errors_total,
                          "overloaded_total", (json_int_t)m->overloaded_total, "prompt_tokens_total",
                          (json_int_t)m->totals.prompt_tokens, "replays_total", (json_int_t)m->totals.replays,
                          "worker_restarts_total", (json_int_t)m->totals.worker_restarts, "tokens_per_s",
                          m->tokens_per_s, "ttft_ms", pct_json(&m->ttft_pct), "itl_ms", pct_json(&m->itl_pct),
                          "finish", finish, "workers", workers);
    if (!j) return NULL;
    json_object_set_new(j, "http", json_pack("{s:i,s:I,s:i}", "connections", g->connections, "requests_total",
                                             (json_int_t)g->http_requests, "active", g->n_open_choices));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

int stats_ready(const gw *g, gw_error *e) {
    if (!g->stats.valid) {
        gw_error_set(e, 503, "broker_unreachable", "", "the broker did not answer within %d ms", GW_STATS_TIMEOUT_MS);
        return 0;
    }
    for (int i = 0; i < g->stats.n_workers; i++)
        if (g->stats.workers[i].slots > 0) return 1;
    gw_error_set(e, 503, "no_worker", "", "no worker is connected to the broker (workers still loading?)");
    return 0;
}
