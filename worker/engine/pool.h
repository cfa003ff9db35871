/* pool.h — a small compute thread pool for the forward pass.
 *
 * pool_run(p, fn, ctx, n_tasks, grain) calls fn(ctx, begin, end, tid) over [0, n_tasks) in chunks of
 * `grain` tasks, run by the calling thread and the pool's n_threads-1 workers, and returns when all
 * are done. Each thread starts on its own contiguous share of the chunks and then takes the chunks
 * others have not started (work stealing): both cores stay busy even when one vCPU is slowed by a
 * neighbour, and the threads touch shared cache lines only at a job's start, end and tail. Which
 * thread runs a task never changes its result.
 * Idle workers spin for a bounded time (50 us, timed) and then sleep on a futex: never an unbounded spin,
 * so two threads sharing one physical core do not collapse. One thread drives a pool. */
#ifndef GPT2D_POOL_H
#define GPT2D_POOL_H

/* tid: 0 for the caller, 1..n_threads-1 for workers (index per-thread scratch with it). */
typedef void (*pool_fn)(void *ctx, int begin, int end, int tid);

typedef struct pool pool;

/* n_threads >= 1 (1 = run everything on the caller). NULL on failure. */
pool *pool_new(int n_threads);
void pool_free(pool *p); /* NULL-safe; joins the workers */
int pool_threads(const pool *p);
void pool_run(pool *p, pool_fn fn, void *ctx, int n_tasks, int grain);

#endif
