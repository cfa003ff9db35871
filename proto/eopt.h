/* eopt.h — the engine settings, declared once. gpt2d's option table and configuration file
 * (daemon/config.c), the command line gpt2d builds for its local workers (eopt_argv), gpt2d-worker's
 * parser and gpt2-tool's (eopt_parse_arg) all read this one table; adding an engine setting is one
 * line in eopt.c plus a field in eopt_values. (No model code here: the daemon links this.)
 * The table type (eopt) is also the daemon's own option type, with eopt_set / eopt_format shared. */
#ifndef GPT2D_EOPT_H
#define GPT2D_EOPT_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    int slots;              /* compatibility: max_running N and, without kv_budget_mb, N whole contexts of KV */
    int max_running;        /* requests running at once per worker (0: slots, else the engine's default) */
    int kv_budget_mb;       /* KV cache MiB (0: slots, else 64, whole contexts) */
    int prefix_cache;       /* share cached prompt prefixes (default on) */
    const char *kv_dtype;   /* "fp32" (NULL: default), "fp16", "bf16" */
    int ctx;                /* positions a request may reach (0: the model's) */
    int max_batch_tokens;   /* tokens per engine step (0: the engine's default, 512) */
    int prefill_min_tokens; /* the step's prefill budget while many decode (floor) */
    int prefill_half;       /* the prefill budget halves at this many decoding requests (0: fixed) */
    int threads;            /* compute threads (0: all cores; gpt2d: cores / workers) */
    int blas;               /* OpenBLAS kernels, faster prefill, not batch-invariant */
    const char *weights_cache; /* packed weight image directory, "off", or NULL (default) */
    const char *isa;        /* matmul kernel family: NULL / "auto", "avx512", "avx2", "scalar" */
    const char *weights;    /* weight format: "fp32" (default), "bf16", "int8" */
    int step_delay_ms;      /* testing only: sleep N ms per engine step */
    int preempt;            /* a long step yields at layer boundaries to interactive work (default on) */
} eopt_values;

typedef enum { EOPT_STR, EOPT_INT, EOPT_BOOL } eopt_kind;

typedef struct {
    const char *name; /* the file key; the flag is --name */
    eopt_kind kind;
    size_t off;       /* the field in the struct the table describes */
    const char *def;  /* the default, as written in a file ("": unset or computed, see help) */
    int min, max;     /* EOPT_INT: the accepted range */
    const char *arg;  /* --help: what the value is; for EOPT_STR, "a|b|c" lists the only values accepted */
    const char *help;
} eopt;

#define EOPT_COUNT 16             /* entries of eopt_table */
extern const eopt eopt_table[EOPT_COUNT]; /* the engine settings, fields of eopt_values */

/* Stores val (a string that outlives base) into o's field of base. "" unsets a string. Booleans take
 * true/yes/on/1 and false/no/off/0. 0, or -1 with err ("NAME wants ..."). */
int eopt_set(void *base, const eopt *o, const char *val, char *err, size_t errlen);
/* o's value in base as a file would write it (into buf for numbers). */
const char *eopt_format(const void *base, const eopt *o, char *buf, size_t cap);

void eopt_defaults(eopt_values *v);
const eopt *eopt_find(const char *name, size_t len); /* in eopt_table, or NULL */

/* If argv[*i] is an engine flag (--name VALUE, --name=VALUE, or a bare boolean --name), stores it in
 * v and advances *i past a separate value: 1. 0 if it is not an engine flag; -1 with err on a bad or
 * missing value. */
int eopt_parse_arg(eopt_values *v, int argc, char **argv, int *i, char *err, size_t errlen);

/* Appends v as --name=value words to argv[*n..] (malloc'd; a default value is left out), at most cap entries in
 * all. 0, or -1 when out of memory or room (what was appended stays in argv for the caller to free). */
int eopt_argv(const eopt_values *v, char **argv, int *n, int cap);

/* One line per engine flag: "  --name ARG   help [default]". */
void eopt_usage(FILE *f);

#endif
