/* config.h — gpt2d's command line: one option table (config.c) gives parsing, defaults and --help.
 * Engine options are passed on to every local worker unchanged. */
#ifndef GPT2D_CONFIG_H
#define GPT2D_CONFIG_H

typedef struct {
    const char *model;        /* --model DIR: what local workers load */
    int workers;              /* --workers N: local worker processes (0: only remote workers) */
    const char *listen;       /* --listen ENDPOINT: clients (default ipc://<runtime>/client.sock) */
    const char *worker_listen;/* --worker-listen ENDPOINT: workers (default ipc://<runtime>/worker.sock) */
    int max_queue;            /* --max-queue N: requests waiting for a slot before "overloaded" */
    const char *worker_bin;   /* --worker-bin PATH: default gpt2d-worker next to gpt2d */
    const char *log_level;    /* --log-level error|warn|info|debug */
    /* engine options, passed to local workers */
    int slots;                /* --slots N: concurrent requests per worker (0: the engine's default) */
    int kv_budget_mb;         /* --kv-budget-mb N: with --slots 0, as many slots as fit */
    int ctx;                  /* --ctx N: positions per slot (0: the model's) */
    int max_batch_tokens;     /* --max-batch-tokens N (0: the engine's default) */
    int threads;              /* --threads N: compute threads per worker (0: cores / workers) */
    int blas;                 /* --blas: OpenBLAS kernels, faster prefill, not batch-invariant */
    int step_delay_ms;        /* --debug-step-delay-ms N: testing only: workers sleep N ms per step */
    /* storage for computed defaults */
    char listen_buf[512], worker_listen_buf[512], runtime_dir[512], worker_bin_buf[4200];
} config;

/* Fills cfg from argv. 0 to run; 1 if --help/--version was printed (exit 0); -1 after printing
 * a usage error to stderr (exit 2). */
int config_parse(config *cfg, int argc, char **argv);

#endif
