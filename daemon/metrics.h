/* metrics.h — the broker's live numbers for `gpt2c stats`: recent time-to-first-token and
 * inter-token latencies (rings of the last samples, percentiles on demand), latency histograms
 * since start (time to first token, inter-token, whole request; buckets of PROTO_HIST_BOUNDS_MS),
 * and tokens/s over a sliding window of one-second buckets.
 * Caller-owned struct, metrics_init(); nothing to release. */
#ifndef GPT2D_METRICS_H
#define GPT2D_METRICS_H

#include <stdint.h>

#include "proto.h"

#define METRICS_TTFT_SAMPLES 1024
#define METRICS_ITL_SAMPLES 8192
#define METRICS_RATE_WINDOW_S 10

typedef struct {
    double ttft[METRICS_TTFT_SAMPLES]; /* ms, ring */
    uint64_t n_ttft;                   /* samples ever added */
    double itl[METRICS_ITL_SAMPLES];   /* ms between consecutive tokens of one request, ring */
    uint64_t n_itl;
    proto_hist ttft_hist, itl_hist;    /* every sample since start */
    proto_hist total_hist;             /* submit -> end of every request that ended */
    uint64_t bucket_tokens[METRICS_RATE_WINDOW_S]; /* tokens in second bucket_sec[i] */
    int64_t bucket_sec[METRICS_RATE_WINDOW_S];
    /* the last PROTO_RECENT_WINDOW_S seconds, one bucket a second: requests, tokens, errors */
    uint64_t recent_n[PROTO_RECENT_WINDOW_S][3];
    int64_t recent_sec[PROTO_RECENT_WINDOW_S];
    double start_ms;
} metrics;

void metrics_init(metrics *m, double now_ms);
void metrics_ttft(metrics *m, double ms);
void metrics_itl(metrics *m, double ms);
void metrics_total(metrics *m, double ms);            /* a request ended, ms after its submit */
void metrics_tokens(metrics *m, double now_ms, uint64_t n);
double metrics_rate(const metrics *m, double now_ms); /* tokens/s over the window */
void metrics_request(metrics *m, double now_ms);      /* a request was accepted */
void metrics_error(metrics *m, double now_ms);        /* a request ended in error */
/* Requests, tokens and errors of the last PROTO_RECENT_WINDOW_S seconds (less just after start). */
proto_recent metrics_recent(const metrics *m, double now_ms);
proto_pct metrics_ttft_pct(const metrics *m);         /* zeros if no samples */
proto_pct metrics_itl_pct(const metrics *m);

/* The bucket of a latency in a proto_hist: 0 .. PROTO_HIST_BUCKETS - 1. */
int metrics_hist_bucket(double ms);

#endif
