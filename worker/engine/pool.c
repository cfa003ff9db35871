/* pool.c — see pool.h. Generation counter + futex wake-ups, bounded spinning. A futex wake is a
 * system call (costly in a paravirtualized guest, and made twice per job, ~200 times per decoded
 * token): it is made only when a thread actually sleeps (sleepers), which is rare while jobs come
 * back to back.
 *
 * A job's chunks are split into one contiguous range per thread; each thread takes its own range's
 * chunks through its own counter (a cache line nobody else touches until it runs dry), then takes
 * what is left of the others'. Every shared word the threads write has a cache line to itself: a
 * decode step runs ~60 jobs per token, so a job's cost is the handful of cache-line transfers it
 * needs (start, end, stealing at the tail), not one per chunk. */
#include "pool.h"

#include <immintrin.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define POOL_MAX_THREADS 64
#define POOL_SPIN_NS 50000 /* spinning before sleeping: a pause lasts 1 to 140 cycles by CPU, so time it */
#define POOL_LINE 64   /* bytes in a cache line */

typedef struct {
    struct pool *p;
    int tid;
} pool_arg;

/* One thread's share of the current job: chunks [lo, hi), the next one at lo + taken. */
typedef struct {
    _Alignas(POOL_LINE) _Atomic int taken;
    int lo, hi;
} pool_range;

struct pool {
    int n_threads;
    pthread_t threads[POOL_MAX_THREADS];
    pool_arg args[POOL_MAX_THREADS];
    /* the job: written by the caller, then published by bumping generation */
    _Alignas(POOL_LINE) _Atomic int generation; /* bumped for every job (and for shutdown) */
    _Atomic int stop;
    pool_fn fn;
    void *ctx;
    int n_tasks, grain;
    _Alignas(POOL_LINE) _Atomic int pending;    /* workers still inside the current job */
    _Alignas(POOL_LINE) _Atomic int sleepers;   /* threads inside futex_wait (on generation or pending) */
    pool_range range[POOL_MAX_THREADS];
};

static void futex_wait(_Atomic int *addr, int val) {
    syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic int *addr) {
    syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Waits until *addr != val: spins POOL_SPIN_NS, then sleeps on the futex. The sleeper is
 * counted before the last check (both sequentially consistent), so a waker that changed *addr
 * either sees it counted or the sleeper sees the change: no lost wake-up. */
static void wait_change(pool *p, _Atomic int *addr, int val) {
    long long until = 0;
    for (int i = 1;; i++) {
        if (atomic_load_explicit(addr, memory_order_acquire) != val) return;
        _mm_pause();
        if (i % 64 == 0) { /* the clock every ~64 pauses: cheap beside them */
            long long t = now_ns();
            if (!until) until = t + POOL_SPIN_NS;
            else if (t >= until) break;
        }
    }
    atomic_fetch_add(&p->sleepers, 1);
    while (atomic_load(addr) == val) futex_wait(addr, val);
    atomic_fetch_sub(&p->sleepers, 1);
}

/* After changing *addr (sequentially consistent): wakes its sleepers, if any thread sleeps. */
static void wake(pool *p, _Atomic int *addr) {
    if (atomic_load(&p->sleepers) > 0) futex_wake_all(addr);
}

/* Runs the chunks of range r that nobody has taken yet (the owner and thieves share its counter). */
static void pool_drain(pool *p, pool_range *r, int tid) {
    for (;;) {
        int c = r->lo + atomic_fetch_add_explicit(&r->taken, 1, memory_order_relaxed);
        if (c >= r->hi) return;
        int b = c * p->grain, e = b + p->grain < p->n_tasks ? b + p->grain : p->n_tasks;
        p->fn(p->ctx, b, e, tid);
    }
}

/* This thread's own chunks, then whatever the others have not started. */
static void pool_work(pool *p, int tid) {
    pool_drain(p, &p->range[tid], tid);
    for (int k = 1; k < p->n_threads; k++) pool_drain(p, &p->range[(tid + k) % p->n_threads], tid);
}

static void *pool_worker(void *arg) {
    pool *p = ((pool_arg *)arg)->p;
    int tid = ((pool_arg *)arg)->tid;
    int seen = 0;
    for (;;) {
        wait_change(p, &p->generation, seen);
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (atomic_load(&p->stop)) return NULL;
        pool_work(p, tid);
        if (atomic_fetch_sub(&p->pending, 1) == 1) wake(p, &p->pending);
    }
}

pool *pool_new(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > POOL_MAX_THREADS) n_threads = POOL_MAX_THREADS;
    size_t size = (sizeof(pool) + POOL_LINE - 1) / POOL_LINE * POOL_LINE;
    pool *p = aligned_alloc(POOL_LINE, size);
    if (!p) return NULL;
    memset(p, 0, size);
    p->n_threads = 1;
    for (int i = 1; i < n_threads; i++) {
        p->args[i] = (pool_arg){p, i};
        if (pthread_create(&p->threads[i], NULL, pool_worker, &p->args[i]) != 0) break;
        p->n_threads++;
    }
    return p;
}

void pool_free(pool *p) {
    if (!p) return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->generation, 1);
    futex_wake_all(&p->generation);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    free(p);
}

int pool_threads(const pool *p) { return p->n_threads; }

void pool_run(pool *p, pool_fn fn, void *ctx, int n_tasks, int grain) {
    if (n_tasks <= 0) return;
    if (grain < 1) grain = 1;
    if (p->n_threads == 1 || n_tasks <= grain) {
        fn(ctx, 0, n_tasks, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    p->grain = grain;
    int n = p->n_threads, chunks = (n_tasks + grain - 1) / grain;
    for (int t = 0; t < n; t++) {
        p->range[t].lo = (int)((long)chunks * t / n);
        p->range[t].hi = (int)((long)chunks * (t + 1) / n);
        atomic_store_explicit(&p->range[t].taken, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&p->pending, n - 1, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1);
    wake(p, &p->generation);
    pool_work(p, 0);
    for (;;) {
        int left = atomic_load_explicit(&p->pending, memory_order_acquire);
        if (left == 0) break;
        wait_change(p, &p->pending, left);
    }
}
