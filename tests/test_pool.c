/* test_pool.c — the compute thread pool: every task of a job runs exactly once, on a thread id in
 * range, whatever the grain and thread count; jobs run back to back without a lost wake-up (a
 * deadlock would hit the run.sh timeout); one thread runs everything on the caller; a thread stuck
 * in one task does not hold up the rest of the job (the others take its share); idle workers stop
 * spinning and sleep (the process uses next to no CPU between jobs). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "check.h"
#include "pool.h"

#define MAX_TASKS 5000

typedef struct {
    _Atomic int count[MAX_TASKS];
    _Atomic int bad_tid;
    _Atomic int calls;
    int threads;
    pthread_t caller;
    _Atomic int on_caller; /* tid 0 ran on the calling thread */
    _Atomic int tid0_elsewhere;
} job;

static void task(void *ctx, int begin, int end, int tid) {
    job *j = ctx;
    atomic_fetch_add(&j->calls, 1);
    if (tid < 0 || tid >= j->threads) atomic_store(&j->bad_tid, 1);
    if (tid == 0 && !pthread_equal(pthread_self(), j->caller)) atomic_store(&j->tid0_elsewhere, 1);
    for (int t = begin; t < end; t++) atomic_fetch_add(&j->count[t], 1);
}

/* Stuck job: whichever thread runs task 0 waits (bounded, 10 s) until every other task has run. */
typedef struct {
    _Atomic int done;
    int n;
    _Atomic int others_done; /* 1 if task 0 saw all the others finish */
} stuck_job;

static void stuck_task(void *ctx, int begin, int end, int tid) {
    (void)tid;
    stuck_job *j = ctx;
    for (int t = begin; t < end; t++) {
        if (t == 0) {
            struct timespec ts = {0, 1000000};
            for (int i = 0; i < 10000 && atomic_load(&j->done) < j->n - 1; i++) nanosleep(&ts, NULL);
            atomic_store(&j->others_done, atomic_load(&j->done) == j->n - 1);
        }
        atomic_fetch_add(&j->done, 1);
    }
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int main(void) {
    static job j;
    for (int threads = 1; threads <= 4; threads++) {
        pool *p = pool_new(threads);
        check(p && pool_threads(p) == threads, "pool of %d threads", threads);
        if (!p) continue;
        int once = 1, tid_ok = 1;
        static const int sizes[] = {1, 2, 7, 64, 1000, MAX_TASKS}, grains[] = {1, 3, 64, 10000};
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
            for (size_t g = 0; g < sizeof grains / sizeof *grains; g++) {
                memset(&j, 0, sizeof j);
                j.threads = threads;
                j.caller = pthread_self();
                pool_run(p, task, &j, sizes[s], grains[g]);
                for (int t = 0; t < sizes[s]; t++) once &= atomic_load(&j.count[t]) == 1;
                tid_ok &= !atomic_load(&j.bad_tid) && !atomic_load(&j.tid0_elsewhere);
            }
        check(once, "%d threads: every task ran exactly once (all sizes and grains)", threads);
        check(tid_ok, "%d threads: tids in [0, %d), tid 0 is the caller", threads, threads);
        memset(&j, 0, sizeof j);
        j.threads = threads;
        j.caller = pthread_self();
        pool_run(p, task, &j, 0, 1);
        check(atomic_load(&j.calls) == 0, "an empty job calls nothing");
        int total = 0;
        for (int r = 0; r < 2000; r++) {
            memset(&j, 0, sizeof j);
            j.threads = threads;
            j.caller = pthread_self();
            pool_run(p, task, &j, 16, 1);
            for (int t = 0; t < 16; t++) total += atomic_load(&j.count[t]);
        }
        check(total == 2000 * 16, "2000 jobs back to back complete (%d tasks)", total);
        if (threads > 1) {
            /* idle: after a job, 300 ms of sleep in the caller cost the process under 30 ms of CPU
             * (workers spinning all along would cost 300 ms each) */
            struct timespec settle = {0, 20000000}, idle = {0, 300000000};
            nanosleep(&settle, NULL);
            double c0 = cpu_seconds();
            nanosleep(&idle, NULL);
            double used = cpu_seconds() - c0;
            check(used < 0.03, "%d threads: idle workers sleep (%.1f ms of CPU in 300 ms idle)", threads, used * 1e3);
            stuck_job sj = {.n = 64};
            pool_run(p, stuck_task, &sj, sj.n, 1);
            check(atomic_load(&sj.others_done), "%d threads: the other 63 tasks ran while task 0 was stuck", threads);
        }
        pool_free(p);
    }
    pool_free(NULL);
    return check_done("test_pool");
}
