/* eopt.c — see eopt.h: the engine settings' table and the helpers every parser shares. */
#include "eopt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto.h"

#define F(f) offsetof(eopt_values, f)
const eopt eopt_table[EOPT_COUNT] = {
/*   name                  kind       field               default  min  max              arg     help */
    {"max-running",        EOPT_INT,  F(max_running),     "0",     0,   PROTO_MAX_SLOTS, "N",    "requests running at once per worker, within the KV budget (0: --slots, else 256)"},
    {"kv-budget-mb",       EOPT_INT,  F(kv_budget_mb),    "0",     0,   1 << 24,         "N",    "KV cache per worker in MiB, in pages of 16 positions; a request waits until the pages it can reach are free (0: --slots, else 64, whole contexts)"},
    {"prefix-cache",       EOPT_BOOL, F(prefix_cache),    "true",  0,   0,               "BOOL", "share the KV of cached prompt prefixes (exact: outputs are unchanged)"},
    {"kv-dtype",           EOPT_STR,  F(kv_dtype),        "",      0,   0,               "fp32|fp16|bf16", "KV cache element type: fp32, or fp16 / bf16 (half the bytes; outputs differ from fp32 but stay invariant; default: fp32)"},
    {"slots",              EOPT_INT,  F(slots),           "0",     0,   PROTO_MAX_SLOTS, "N",    "compatibility: --max-running N with a KV budget of N whole contexts (unless --kv-budget-mb)"},
    {"ctx",                EOPT_INT,  F(ctx),             "0",     0,   1 << 20,         "N",    "positions a request may reach (0: the model's n_ctx)"},
    {"max-batch-tokens",   EOPT_INT,  F(max_batch_tokens), "0",    0,   1 << 20,         "N",    "tokens per engine step: the prefill chunk while nothing decodes (0: the engine's default, 512)"},
    {"prefill-min-tokens", EOPT_INT,  F(prefill_min_tokens), "64", 1,   1 << 20,         "N",    "prefill tokens a step still carries however many requests decode"},
    {"prefill-half",       EOPT_INT,  F(prefill_half),    "16",    0,   PROTO_MAX_SLOTS, "D",    "a step's prefill budget is max(prefill-min-tokens, max-batch-tokens * D / (D + decoding)): halved at D decoding requests; 0: a fixed budget (max-batch-tokens - decoding)"},
    {"preempt",            EOPT_BOOL, F(preempt),         "true",  0,   0,               "BOOL", "a step of bulk work stops between layers when an interactive request arrives, runs it (its first token) and resumes: time to first token about a layer plus its own short step; outputs are unchanged"},
    {"threads",            EOPT_INT,  F(threads),         "0",     0,   4096,            "N",    "compute threads per worker (0: all cores; under gpt2d: cores / workers)"},
    {"blas",               EOPT_BOOL, F(blas),            "false", 0,   0,               "BOOL", "OpenBLAS kernels: faster prefill, but results then depend on batching"},
    {"weights-cache",      EOPT_STR,  F(weights_cache),   "",      0,   0,               "DIR",  "directory of packed weight images, mapped shared by every worker of this machine; 'off': a private copy per worker (default: $GPT2D_WEIGHTS_CACHE, $CACHE_DIRECTORY, else ~/.cache/gpt2d)"},
    {"isa",                EOPT_STR,  F(isa),             "",      0,   0,               "ISA",  "matmul kernel family: auto, avx512 (AVX-512 + VNNI), avx2, or scalar (the portable baseline); also $GPT2D_ISA (default: auto)"},
    {"weights",            EOPT_STR,  F(weights),         "fp32",  0,   0,               "fp32|bf16|int8", "weight format: fp32, bf16 (half the bytes), int8 (blocks of 32 with a scale each, about a quarter); each its own numerics fingerprint"},
    {"debug-step-delay-ms", EOPT_INT, F(step_delay_ms),   "0",     0,   10000,           "N",    "testing only: workers sleep N ms per engine step"},
};
#undef F
_Static_assert(sizeof(eopt_table) / sizeof(eopt_table[0]) == EOPT_COUNT, "EOPT_COUNT counts the table");

/* "true"/"yes"/"on"/"1" -> 1, "false"/"no"/"off"/"0" -> 0, else -1. */
static int parse_bool(const char *s) {
    static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) return 1;
        if (strcasecmp(s, no[i]) == 0) return 0;
    }
    return -1;
}

int eopt_set(void *base, const eopt *o, const char *val, char *err, size_t errlen) {
    char *p = (char *)base + o->off;
    if (o->kind == EOPT_STR) {
        if (*val && strchr(o->arg, '|')) { /* a closed list of values */
            size_t n = strlen(val);
            const char *c = o->arg;
            while (!(strncmp(c, val, n) == 0 && (c[n] == '|' || c[n] == 0)) && (c = strchr(c, '|'))) c++;
            if (!c) {
                snprintf(err, errlen, "%s wants one of %s, got '%s'", o->name, o->arg, val);
                return -1;
            }
        }
        *(const char **)p = *val ? val : NULL;
        return 0;
    }
    if (o->kind == EOPT_BOOL) {
        int v = parse_bool(val);
        if (v < 0) {
            snprintf(err, errlen, "%s wants true or false, got '%s'", o->name, val);
            return -1;
        }
        *(int *)p = v;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end || v < o->min || v > o->max) {
        snprintf(err, errlen, "%s wants an integer in [%d, %d], got '%s'", o->name, o->min, o->max, val);
        return -1;
    }
    *(int *)p = (int)v;
    return 0;
}

const char *eopt_format(const void *base, const eopt *o, char *buf, size_t cap) {
    const char *p = (const char *)base + o->off;
    if (o->kind == EOPT_STR) {
        const char *s = *(const char *const *)p;
        return s ? s : "";
    }
    if (o->kind == EOPT_BOOL) return *(const int *)p ? "true" : "false";
    snprintf(buf, cap, "%d", *(const int *)p);
    return buf;
}

void eopt_defaults(eopt_values *v) {
    memset(v, 0, sizeof *v);
    char err[160];
    for (size_t k = 0; k < EOPT_COUNT; k++)
        if (eopt_set(v, &eopt_table[k], eopt_table[k].def, err, sizeof err) < 0) abort(); /* a bad table line */
}

const eopt *eopt_find(const char *name, size_t len) {
    for (size_t k = 0; k < EOPT_COUNT; k++)
        if (strlen(eopt_table[k].name) == len && strncmp(name, eopt_table[k].name, len) == 0) return &eopt_table[k];
    return NULL;
}

int eopt_parse_arg(eopt_values *v, int argc, char **argv, int *i, char *err, size_t errlen) {
    const char *a = argv[*i];
    if (strncmp(a, "--", 2) != 0) return 0;
    size_t len = strcspn(a + 2, "=");
    const eopt *o = eopt_find(a + 2, len);
    if (!o) return 0;
    const char *val;
    if (a[2 + len] == '=') val = a + 3 + len;
    else if (o->kind == EOPT_BOOL) val = "true";
    else if (*i + 1 < argc) val = argv[++*i];
    else {
        snprintf(err, errlen, "--%s needs a value", o->name);
        return -1;
    }
    return eopt_set(v, o, val, err, errlen) < 0 ? -1 : 1;
}

int eopt_argv(const eopt_values *v, char **argv, int *n, int cap) {
    eopt_values def;
    eopt_defaults(&def);
    for (size_t k = 0; k < EOPT_COUNT; k++) {
        const eopt *o = &eopt_table[k];
        char buf[32], dbuf[32];
        const char *val = eopt_format(v, o, buf, sizeof buf);
        if (strcmp(val, eopt_format(&def, o, dbuf, sizeof dbuf)) == 0) continue;
        if (*n + 1 > cap) return -1;
        size_t len = strlen(o->name) + strlen(val) + 4;
        char *arg = malloc(len);
        if (!arg) return -1;
        snprintf(arg, len, "--%s=%s", o->name, val); /* one word: a value may start with "-" */
        argv[(*n)++] = arg;
    }
    return 0;
}

void eopt_usage(FILE *f) {
    for (size_t k = 0; k < EOPT_COUNT; k++) {
        const eopt *o = &eopt_table[k];
        char head[64];
        snprintf(head, sizeof head, "--%s %s", o->name, o->arg);
        fprintf(f, "  %-28s %s", head, o->help);
        if (*o->def) fprintf(f, " [%s]", o->def);
        fputc('\n', f);
    }
}
