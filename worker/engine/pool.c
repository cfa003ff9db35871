/* pool.c — see pool.h. Generation counter + futex wake-ups, bounded spinning. A futex wake is a
 * system call (costly in a paravirtualized guest, and made twice per job, ~200 times per decoded
 * token): it is made only when a thread actually sleeps (sleepers), which is rare while jobs come
 * back to back. */
#include "pool.h"

#include <immintrin.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define POOL_MAX_THREADS 64
#define POOL_SPIN 4000 /* pause iterations before sleeping (~50 us) */

typedef struct {
    struct pool *p;
    int tid;
} pool_arg;

struct pool {
    int n_threads;
    pthread_t threads[POOL_MAX_THREADS];
    pool_arg args[POOL_MAX_THREADS];
    _Atomic int generation;   /* bumped for every job (and for shutdown) */
    _Atomic int next;         /* next task to hand out */
    _Atomic int pending;      /* workers still inside the current job */
    _Atomic int stop;
    _Atomic int sleepers;     /* threads inside futex_wait (on generation or pending) */
    pool_fn fn;
    void *ctx;
    int n_tasks, grain;
};

static void futex_wait(_Atomic int *addr, int val) {
    syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic int *addr) {
    syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

/* Waits until *addr != val: spins a bounded time, then sleeps on the futex. The sleeper is
 * counted before the last check (both sequentially consistent), so a waker that changed *addr
 * either sees it counted or the sleeper sees the change: no lost wake-up. */
static void wait_change(pool *p, _Atomic int *addr, int val) {
    for (int i = 0; i < POOL_SPIN; i++) {
        if (atomic_load_explicit(addr, memory_order_acquire) != val) return;
        _mm_pause();
    }
    atomic_fetch_add(&p->sleepers, 1);
    while (atomic_load(addr) == val) futex_wait(addr, val);
    atomic_fetch_sub(&p->sleepers, 1);
}

/* After changing *addr (sequentially consistent): wakes its sleepers, if any thread sleeps. */
static void wake(pool *p, _Atomic int *addr) {
    if (atomic_load(&p->sleepers) > 0) futex_wake_all(addr);
}

/* Takes chunks of the current job until none is left. */
static void pool_work(pool *p, int tid) {
    for (;;) {
        int b = atomic_fetch_add_explicit(&p->next, p->grain, memory_order_relaxed);
        if (b >= p->n_tasks) return;
        int e = b + p->grain < p->n_tasks ? b + p->grain : p->n_tasks;
        p->fn(p->ctx, b, e, tid);
    }
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
    pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
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
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1);
    wake(p, &p->generation);
    pool_work(p, 0);
    for (;;) {
        int left = atomic_load_explicit(&p->pending, memory_order_acquire);
        if (left == 0) break;
        wait_change(p, &p->pending, left);
    }
}
