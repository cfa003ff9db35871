/* bench_util.h — timing, medians and percentiles, and waiting for a serving gpt2d, shared by the
 * benchmark programs. */
#ifndef GPT2D_BENCH_UTIL_H
#define GPT2D_BENCH_UTIL_H

#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "proto_client.h"

static inline double bench_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of v (n), sorting v in place; nearest-rank. */
static inline double bench_quantile(double *v, int n, double q) {
    if (n <= 0) return 0;
    qsort(v, n, sizeof(double), bench_cmp_double);
    int i = (int)(q * n + 0.999999) - 1;
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return v[i];
}

static inline double bench_peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

/* Sends hello until a welcome with at least one worker arrives (the worker has loaded), up to 120 s.
 * A welcome with 0 workers comes back at once: pause before asking again. */
static inline int bench_wait_ready(proto_client *c) {
    double deadline = bench_now() + 120;
    while (bench_now() < deadline) {
        proto_msg m;
        proto_msg_init(&m, PROTO_T_HELLO);
        if (proto_client_send(c, &m) < 0) return -1;
        proto_msg r;
        if (proto_client_recv(c, &r, 500, PROTO_CLIENT_SKIP_HB) == 1) {
            int ok = r.type == PROTO_T_WELCOME && r.workers >= 1;
            proto_msg_destroy(&r);
            if (ok) return 0;
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    snprintf(c->err, sizeof c->err, "no worker within 120 s");
    return -1;
}

#endif
