/* metrics.c — see metrics.h. */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void metrics_init(metrics *m, double now_ms) {
    memset(m, 0, sizeof(*m));
    for (int i = 0; i < METRICS_RATE_WINDOW_S; i++) m->bucket_sec[i] = -1;
    for (int i = 0; i < PROTO_RECENT_WINDOW_S; i++) m->recent_sec[i] = -1;
    m->start_ms = now_ms;
}

int metrics_hist_bucket(double ms) {
    static const double bounds[PROTO_HIST_BUCKETS - 1] = PROTO_HIST_BOUNDS_MS;
    int i = 0;
    while (i < PROTO_HIST_BUCKETS - 1 && !(ms <= bounds[i])) i++;
    return i;
}

/* One sample into h: its bucket, and the exact sum (what Prometheus' _sum wants). */
static void hist_add(proto_hist *h, double ms) {
    h->n[metrics_hist_bucket(ms)]++;
    if (ms > 0) h->sum_ms += ms;
}

void metrics_ttft(metrics *m, double ms) {
    m->ttft[m->n_ttft++ % METRICS_TTFT_SAMPLES] = ms;
    hist_add(&m->ttft_hist, ms);
}

void metrics_itl(metrics *m, double ms) {
    m->itl[m->n_itl++ % METRICS_ITL_SAMPLES] = ms;
    hist_add(&m->itl_hist, ms);
}

void metrics_total(metrics *m, double ms) { hist_add(&m->total_hist, ms); }

void metrics_queue(metrics *m, double ms) { hist_add(&m->queue_hist, ms); }

void metrics_client_frame(metrics *m, const proto_msg *f) {
    if (f->type == PROTO_T_DONE) {
        if ((unsigned)f->finish < PROTO_FINISH_COUNT) m->totals.finish[f->finish]++;
        if (f->prompt_tokens > 0) m->totals.prompt_tokens += (uint64_t)f->prompt_tokens;
    } else if (f->type == PROTO_T_ERROR) {
        proto_reason r = proto_reason_from_name(f->reason.ptr, f->reason.len);
        m->reasons.n[r]++; /* PROTO_R_NONE: a frame without a known reason */
        if (f->has & PROTO_HAS(PF_ID)) m->totals.finish[PROTO_FINISH_ERROR]++;
    }
}

enum { RECENT_REQ, RECENT_TOK, RECENT_ERR };

static void recent_add(metrics *m, double now_ms, int kind, uint64_t n) {
    int64_t sec = (int64_t)floor((now_ms - m->start_ms) / 1000.0);
    int i = (int)(sec % PROTO_RECENT_WINDOW_S);
    if (m->recent_sec[i] != sec) {
        m->recent_sec[i] = sec;
        memset(m->recent_n[i], 0, sizeof(m->recent_n[i]));
    }
    m->recent_n[i][kind] += n;
}

void metrics_request(metrics *m, double now_ms) { recent_add(m, now_ms, RECENT_REQ, 1); }
void metrics_error(metrics *m, double now_ms) { recent_add(m, now_ms, RECENT_ERR, 1); }

proto_recent metrics_recent(const metrics *m, double now_ms) {
    double t = (now_ms - m->start_ms) / 1000.0;
    int64_t sec = (int64_t)floor(t);
    proto_recent r = {t < PROTO_RECENT_WINDOW_S ? t : PROTO_RECENT_WINDOW_S, 0, 0, 0};
    for (int i = 0; i < PROTO_RECENT_WINDOW_S; i++) {
        if (m->recent_sec[i] < 0 || m->recent_sec[i] <= sec - PROTO_RECENT_WINDOW_S) continue;
        r.requests += m->recent_n[i][RECENT_REQ];
        r.tokens += m->recent_n[i][RECENT_TOK];
        r.errors += m->recent_n[i][RECENT_ERR];
    }
    return r;
}

void metrics_tokens(metrics *m, double now_ms, uint64_t n) {
    recent_add(m, now_ms, RECENT_TOK, n);
    int64_t sec = (int64_t)floor((now_ms - m->start_ms) / 1000.0);
    int i = (int)(sec % METRICS_RATE_WINDOW_S);
    if (m->bucket_sec[i] != sec) {
        m->bucket_sec[i] = sec;
        m->bucket_tokens[i] = 0;
    }
    m->bucket_tokens[i] += n;
}

double metrics_rate(const metrics *m, double now_ms) {
    double t = (now_ms - m->start_ms) / 1000.0;
    int64_t sec = (int64_t)floor(t);
    uint64_t sum = 0;
    for (int i = 0; i < METRICS_RATE_WINDOW_S; i++)
        if (m->bucket_sec[i] >= 0 && m->bucket_sec[i] > sec - METRICS_RATE_WINDOW_S) sum += m->bucket_tokens[i];
    /* the window covers the last full seconds plus the current partial one */
    double span = t - (double)(sec - METRICS_RATE_WINDOW_S + 1);
    if (span > t) span = t;
    return span > 0.001 ? (double)sum / span : 0.0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static proto_pct pct_of(const double *ring, uint64_t count, int cap) {
    proto_pct p = {0, 0, 0};
    size_t n = count < (uint64_t)cap ? (size_t)count : (size_t)cap;
    if (n == 0) return p;
    double *v = malloc(n * sizeof(double));
    if (!v) return p;
    memcpy(v, ring, n * sizeof(double));
    qsort(v, n, sizeof(double), cmp_double);
    p.p50 = v[(size_t)(0.50 * (double)(n - 1) + 0.5)];
    p.p90 = v[(size_t)(0.90 * (double)(n - 1) + 0.5)];
    p.p99 = v[(size_t)(0.99 * (double)(n - 1) + 0.5)];
    free(v);
    return p;
}

proto_pct metrics_ttft_pct(const metrics *m) { return pct_of(m->ttft, m->n_ttft, METRICS_TTFT_SAMPLES); }
proto_pct metrics_itl_pct(const metrics *m) { return pct_of(m->itl, m->n_itl, METRICS_ITL_SAMPLES); }
