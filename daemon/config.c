/* config.c — the option table of gpt2d and its parser. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "proto_log.h"

typedef enum { OPT_STR, OPT_INT, OPT_FLAG } opt_kind;

typedef struct {
    const char *name;
    opt_kind kind;
    size_t off;
    int min, max;
    const char *help;
} option;

#define C(f) offsetof(config, f)
static const option options[] = {
    {"--model", OPT_STR, C(model), 0, 0, "DIR  model directory (config.json, model.safetensors, tokenizer)"},
    {"--workers", OPT_INT, C(workers), 0, 256, "N  local worker processes to run and supervise (default 1)"},
    {"--listen", OPT_STR, C(listen), 0, 0, "EP  client endpoint (default ipc://$RUNTIME/client.sock)"},
    {"--worker-listen", OPT_STR, C(worker_listen), 0, 0, "EP  worker endpoint (default ipc://$RUNTIME/worker.sock)"},
    {"--max-queue", OPT_INT, C(max_queue), 0, 1000000, "N  requests waiting for a slot before 'overloaded' (default 256)"},
    {"--worker-bin", OPT_STR, C(worker_bin), 0, 0, "PATH  worker executable (default: gpt2d-worker beside gpt2d)"},
    {"--log-level", OPT_STR, C(log_level), 0, 0, "L  error, warn, info (default) or debug"},
    {"--slots", OPT_INT, C(slots), 0, PROTO_MAX_SLOTS, "N  concurrent requests per worker (default: the engine's, 64)"},
    {"--kv-budget-mb", OPT_INT, C(kv_budget_mb), 0, 1 << 24, "N  with --slots 0: as many KV slots as fit in N MiB"},
    {"--ctx", OPT_INT, C(ctx), 0, 1 << 20, "N  positions per slot (default: the model's n_ctx)"},
    {"--max-batch-tokens", OPT_INT, C(max_batch_tokens), 0, 1 << 20, "N  tokens per engine step (default: the engine's)"},
    {"--threads", OPT_INT, C(threads), 0, 4096, "N  compute threads per worker (default: cores / workers)"},
    {"--blas", OPT_FLAG, C(blas), 0, 0, "  OpenBLAS kernels: faster prefill, results then depend on batching"},
    {"--debug-step-delay-ms", OPT_INT, C(step_delay_ms), 0, 10000, "N  testing: workers sleep N ms per step"},
};
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static void config_usage(FILE *f) {
    fprintf(f, "usage: gpt2d --model DIR [--workers N] [--listen EP] [--worker-listen EP] [options]\n"
               "GPT-2 generation broker: clients (gpt2c) -> gpt2d -> gpt2d-worker processes.\n"
               "Remote workers join with: gpt2d-worker --model DIR --connect tcp://HOST:PORT\n\n");
    for (size_t i = 0; i < N_OPTIONS; i++) fprintf(f, "  %s %s\n", options[i].name, options[i].help);
    fprintf(f, "  --help, --version\n\n$RUNTIME is $GPT2D_RUNTIME_DIR, else $XDG_RUNTIME_DIR/gpt2d, "
               "else /tmp/gpt2d-$UID.\n");
}

static void config_defaults(config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->workers = 1;
    cfg->max_queue = 256;
    cfg->log_level = "info";
}

/* gpt2d-worker in the directory of /proc/self/exe, else plain "gpt2d-worker" (PATH). */
static void config_default_worker_bin(config *cfg) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = 0;
            snprintf(cfg->worker_bin_buf, sizeof(cfg->worker_bin_buf), "%s/gpt2d-worker", self);
            cfg->worker_bin = cfg->worker_bin_buf;
            return;
        }
    }
    cfg->worker_bin = "gpt2d-worker";
}

static int config_set(config *cfg, const option *o, const char *val) {
    char *p = (char *)cfg + o->off;
    if (o->kind == OPT_STR) {
        *(const char **)p = val;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end || v < o->min || v > o->max) {
        fprintf(stderr, "gpt2d: %s wants an integer in [%d, %d], got '%s'\n", o->name, o->min, o->max, val);
        return -1;
    }
    *(int *)p = (int)v;
    return 0;
}

int config_parse(config *cfg, int argc, char **argv) {
    config_defaults(cfg);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            config_usage(stdout);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("gpt2d (protocol v%d)\n", PROTO_VERSION);
            return 1;
        }
        const option *o = NULL;
        const char *val = NULL;
        size_t alen = strcspn(a, "=");
        for (size_t k = 0; k < N_OPTIONS && !o; k++)
            if (strlen(options[k].name) == alen && strncmp(a, options[k].name, alen) == 0) o = &options[k];
        if (!o) {
            fprintf(stderr, "gpt2d: unknown option '%s' (see --help)\n", a);
            return -1;
        }
        if (o->kind == OPT_FLAG) {
            *(int *)((char *)cfg + o->off) = 1;
            continue;
        }
        if (a[alen] == '=') val = a + alen + 1;
        else if (i + 1 < argc) val = argv[++i];
        else {
            fprintf(stderr, "gpt2d: %s needs a value\n", o->name);
            return -1;
        }
        if (config_set(cfg, o, val) < 0) return -1;
    }
    if (proto_log_parse_level(cfg->log_level) < 0) {
        fprintf(stderr, "gpt2d: --log-level must be error, warn, info or debug\n");
        return -1;
    }
    if (cfg->workers > 0 && !cfg->model) {
        fprintf(stderr, "gpt2d: --model DIR is required to run local workers (or use --workers 0)\n");
        return -1;
    }
    if (!proto_default_endpoint(0, cfg->listen_buf, sizeof(cfg->listen_buf), cfg->runtime_dir,
                                sizeof(cfg->runtime_dir)) ||
        !proto_default_endpoint(1, cfg->worker_listen_buf, sizeof(cfg->worker_listen_buf), NULL, 0)) {
        fprintf(stderr, "gpt2d: runtime directory path too long\n");
        return -1;
    }
    if (!cfg->listen) cfg->listen = cfg->listen_buf;
    if (!cfg->worker_listen) cfg->worker_listen = cfg->worker_listen_buf;
    if (!cfg->worker_bin) config_default_worker_bin(cfg);
    if (cfg->threads == 0 && cfg->workers > 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->threads = cores > cfg->workers ? (int)(cores / cfg->workers) : 1;
    }
    return 0;
}
