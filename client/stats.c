/* stats.c — `gpt2c stats`: asks the broker for its live state and prints it (or --json). */
#include <string.h>

#include "gpt2c.h"
#include "gpt2c_json.h"

static json_t *stats_pct(const proto_pct *p) {
    return json_pack("{s:f, s:f, s:f}", "p50", p->p50, "p90", p->p90, "p99", p->p99);
}

/* ---- latency histograms (PROTO_HIST_BOUNDS_MS buckets) ------------------------------------------ */

static const double hist_bounds[PROTO_HIST_BUCKETS - 1] = PROTO_HIST_BOUNDS_MS;

/* {"1": n, "2": n, ..., "60000": n, "inf": n}: the wire's own keys. */
static json_t *stats_hist_json(const proto_hist *h) {
    json_t *o = json_object();
    for (int i = 0; i < PROTO_HIST_BUCKETS; i++) {
        char key[32];
        if (i < PROTO_HIST_BUCKETS - 1) snprintf(key, sizeof(key), "%g", hist_bounds[i]);
        else snprintf(key, sizeof(key), "inf");
        json_object_set_new(o, key, json_integer((json_int_t)h->n[i]));
    }
    return o;
}

/* One row per bucket from the first to the last non-empty one, with a bar scaled to the fullest:
 *     (10, 20] ms        12  ########################################  */
static void stats_hist_text(const char *title, const proto_hist *h) {
    int lo = -1, hi = -1;
    uint64_t total = 0, max = 0;
    for (int i = 0; i < PROTO_HIST_BUCKETS; i++) {
        if (!h->n[i]) continue;
        if (lo < 0) lo = i;
        hi = i;
        total += h->n[i];
        if (h->n[i] > max) max = h->n[i];
    }
    printf("%s: %llu sample%s\n", title, (unsigned long long)total, total == 1 ? "" : "s");
    for (int i = lo; lo >= 0 && i <= hi; i++) {
        char range[48];
        if (i == 0) snprintf(range, sizeof(range), "<= %g ms", hist_bounds[0]);
        else if (i == PROTO_HIST_BUCKETS - 1) snprintf(range, sizeof(range), "> %g ms", hist_bounds[i - 1]);
        else snprintf(range, sizeof(range), "(%g, %g] ms", hist_bounds[i - 1], hist_bounds[i]);
        int bar = (int)((h->n[i] * 40 + max - 1) / max);
        char bars[41];
        memset(bars, '#', (size_t)bar);
        bars[bar] = 0;
        double pct = 100.0 * (double)h->n[i] / (double)total;
        printf("  %18s %10llu %5.1f%%  %s\n", range, (unsigned long long)h->n[i], pct, bars);
    }
}

static void stats_json(const proto_msg *m) {
    json_t *ws = json_array();
    for (uint32_t i = 0; i < m->n_worker_list; i++) {
        const proto_worker_info *w = &m->worker_list[i];
        json_array_append_new(ws, json_pack("{s:o, s:i, s:b, s:i, s:i, s:i, s:I, s:{s:i, s:i, s:i, s:i, s:I, s:I}}",
                                            "name", json_text(w->name.ptr, w->name.len), "pid", w->pid, "local",
                                            w->local, "slots", w->slots, "running", w->running, "credit",
                                            w->credit, "tokens", (json_int_t)w->tokens, "kv", "pages",
                                            w->kv.pages, "used", w->kv.used, "cached", w->kv.cached, "free",
                                            w->kv.pages - w->kv.used - w->kv.cached, "prefix_lookup_tokens",
                                            (json_int_t)w->kv.lookup_tokens, "prefix_hit_tokens",
                                            (json_int_t)w->kv.hit_tokens));
    }
    json_t *o = json_pack("{s:f, s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:f, s:o, s:o, s:o}", "uptime_s", m->uptime_s,
                          "queue", m->queue, "max_queue", m->max_queue, "running", m->running, "requests_total",
                          (json_int_t)m->requests_total, "tokens_total", (json_int_t)m->tokens_total,
                          "errors_total", (json_int_t)m->errors_total, "overloaded_total",
                          (json_int_t)m->overloaded_total, "tokens_per_s", m->tokens_per_s, "ttft_ms",
                          stats_pct(&m->ttft_pct), "itl_ms", stats_pct(&m->itl_pct), "workers", ws);
    if (o && (m->has & PROTO_HAS(PF_RECENT))) {
        const proto_recent *r = &m->recent;
        json_object_set_new(o, "recent", json_pack("{s:f, s:I, s:I, s:I, s:f}", "window_s", r->window_s, "requests",
                                                   (json_int_t)r->requests, "tokens", (json_int_t)r->tokens, "errors",
                                                   (json_int_t)r->errors, "tokens_per_s",
                                                   r->window_s > 0 ? (double)r->tokens / r->window_s : 0.0));
    }
    if (o && (m->has & PROTO_HAS(PF_TTFT_HIST))) {
        json_object_set_new(o, "ttft_hist_ms", stats_hist_json(&m->ttft_hist));
        json_object_set_new(o, "itl_hist_ms", stats_hist_json(&m->itl_hist));
        json_object_set_new(o, "total_hist_ms", stats_hist_json(&m->total_hist));
    }
    json_print_line(stdout, o);
}

/* Prefix-cache hits over every worker: "prefix cache: 1200 of 1500 prompt tokens (80.0%)". */
static void stats_prefix_text(const proto_msg *m) {
    uint64_t look = 0, hit = 0;
    for (uint32_t i = 0; i < m->n_worker_list; i++) {
        look += m->worker_list[i].kv.lookup_tokens;
        hit += m->worker_list[i].kv.hit_tokens;
    }
    printf("prefix cache: %llu of %llu prompt tokens reused (%.1f%%)\n", (unsigned long long)hit,
           (unsigned long long)look, look ? 100.0 * (double)hit / (double)look : 0.0);
}

static void stats_text(const proto_msg *m) {
    printf("gpt2d up %.1f s | queue %d/%d | running %d | %.1f tokens/s\n", m->uptime_s, m->queue, m->max_queue,
           m->running, m->tokens_per_s);
    if (m->has & PROTO_HAS(PF_RECENT)) { /* a recent window beside since-start */
        const proto_recent *r = &m->recent;
        char win[32];
        snprintf(win, sizeof(win), "last %.0f s", r->window_s);
        printf("%-12s %14s %14s\n", "", win, "since start");
        printf("%-12s %14llu %14llu\n", "requests", (unsigned long long)r->requests,
               (unsigned long long)m->requests_total);
        printf("%-12s %14llu %14llu\n", "tokens", (unsigned long long)r->tokens, (unsigned long long)m->tokens_total);
        printf("%-12s %14llu %14llu\n", "errors", (unsigned long long)r->errors, (unsigned long long)m->errors_total);
        printf("%-12s %14.1f %14.1f\n", "tokens/s", r->window_s > 0 ? (double)r->tokens / r->window_s : 0.0,
               m->uptime_s > 0 ? (double)m->tokens_total / m->uptime_s : 0.0);
        printf("overloaded %llu since start\n", (unsigned long long)m->overloaded_total);
    } else {
        printf("requests %llu, tokens %llu, errors %llu, overloaded %llu\n", (unsigned long long)m->requests_total,
               (unsigned long long)m->tokens_total, (unsigned long long)m->errors_total,
               (unsigned long long)m->overloaded_total);
    }
    printf("time to first token ms  p50 %8.2f  p90 %8.2f  p99 %8.2f\n", m->ttft_pct.p50, m->ttft_pct.p90,
           m->ttft_pct.p99);
    printf("inter-token ms          p50 %8.2f  p90 %8.2f  p99 %8.2f\n", m->itl_pct.p50, m->itl_pct.p90,
           m->itl_pct.p99);
    if (m->has & PROTO_HAS(PF_TTFT_HIST)) {
        stats_hist_text("time to first token (submit -> first token), since start", &m->ttft_hist);
        stats_hist_text("inter-token gaps, since start", &m->itl_hist);
        stats_hist_text("request latency (submit -> end), since start", &m->total_hist);
    }
    stats_prefix_text(m);
    printf("%-24s %8s %-6s %6s %8s %7s %10s %24s\n", "worker", "pid", "where", "slots", "running", "credit", "tokens",
           "KV pages used/cached/free");
    for (uint32_t i = 0; i < m->n_worker_list; i++) {
        const proto_worker_info *w = &m->worker_list[i];
        char kv[64];
        snprintf(kv, sizeof kv, "%d/%d/%d", w->kv.used, w->kv.cached, w->kv.pages - w->kv.used - w->kv.cached);
        printf("%-24.*s %8d %-6s %6d %8d %7d %10llu %24s\n", (int)w->name.len, w->name.ptr ? w->name.ptr : "",
               w->pid, w->local ? "local" : "remote", w->slots, w->running, w->credit, (unsigned long long)w->tokens, kv);
    }
}

int cmd_stats(gpt2c_options *o) {
    conn c;
    int rc = conn_open(&c, o->connect);
    if (rc != 0) {
        conn_close(&c);
        return rc;
    }
    proto_msg q;
    proto_msg_init(&q, PROTO_T_STATS);
    rc = GPT2C_UNREACHABLE;
    if (conn_send(&c, &q) == 0) {
        double deadline = proto_clock_ms() + PROTO_CONNECT_TIMEOUT_MS;
        while (rc == GPT2C_UNREACHABLE && proto_clock_ms() < deadline) {
            proto_msg m;
            if (conn_recv(&c, &m, (int)(deadline - proto_clock_ms()) + 1) != 1) continue;
            if (m.type == PROTO_T_STATS_REPLY) {
                if (o->json) stats_json(&m);
                else stats_text(&m);
                rc = GPT2C_OK;
            }
            proto_msg_destroy(&m);
        }
        if (rc != GPT2C_OK) fprintf(stderr, "gpt2c: no stats from %s\n", o->connect);
    }
    conn_close(&c);
    return rc;
}
