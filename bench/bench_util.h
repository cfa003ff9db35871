/* bench_util.h — timing, medians and percentiles shared by the benchmark programs. */
#ifndef GPT2D_BENCH_UTIL_H
#define GPT2D_BENCH_UTIL_H

#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

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

#endif
