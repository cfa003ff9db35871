/* options.c — gpt2c's flags, declared once in a table: sampling parameters fill a submit template
 * (proto_msg), the rest configure the command. Values are range-checked by the protocol encoder
 * when the request is sent; here only their syntax. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "gpt2c.h"
#include "proto_runtime.h"

typedef enum { O_INT, O_FLOAT, O_U64, O_STR, O_FLAG, O_ON, O_STOP, O_BIAS, O_NOPROGRESS, O_PRIORITY } opt_kind;

typedef struct {
    const char *name, *alt;
    opt_kind kind;
    size_t off;
    const char *help;
} opt;

#define R(f) (offsetof(gpt2c_options, req) + offsetof(proto_msg, f))
#define G(f) offsetof(gpt2c_options, f)
static const opt opts[] = {
    {"--connect", NULL, O_STR, G(connect), "EP  broker endpoint (default $GPT2D_ENDPOINT, else ipc://$RUNTIME/client.sock)"},
    {"--max-tokens", "-n", O_INT, R(max_tokens), "N  tokens to generate (default 16)"},
    {"--temperature", "-t", O_FLOAT, R(temperature), "T  0 = greedy (default)"},
    {"--top-k", NULL, O_INT, R(top_k), "K  keep the K most likely (0 = off)"},
    {"--top-p", NULL, O_FLOAT, R(top_p), "P  nucleus sampling (1 = off)"},
    {"--min-p", NULL, O_FLOAT, R(min_p), "P  drop tokens below P * p_max (0 = off)"},
    {"--repetition-penalty", NULL, O_FLOAT, R(repetition_penalty), "R  (1 = off)"},
    {"--presence-penalty", NULL, O_FLOAT, R(presence_penalty), "P  (0 = off)"},
    {"--frequency-penalty", NULL, O_FLOAT, R(frequency_penalty), "F  (0 = off)"},
    {"--seed", "-s", O_U64, R(seed), "S  sampling seed (default 0)"},
    {"--stop", NULL, O_STOP, 0, "STR  stop string (repeatable, up to 8)"},
    {"--logit-bias", NULL, O_BIAS, 0, "ID:V  add V to token ID's logit (repeatable; -inf bans)"},
    {"--ignore-eos", NULL, O_FLAG, R(ignore_eos), " keep generating after <|endoftext|>"},
    {"--allow-special", NULL, O_FLAG, R(allow_special), " '<|endoftext|>' in the prompt is the special token"},
    {"--priority", NULL, O_PRIORITY, R(priority), "P  interactive (default: admitted first) or bulk (batch jobs)"},
    {"--logprobs", NULL, O_FLAG, R(logprobs), " token frames carry log-probabilities (--json)"},
    {"--json", NULL, O_ON, G(json), " machine-readable output: one JSON object per frame"},
    {"--concurrency", "-c", O_INT, G(concurrency), "N  batch: requests in flight (default 64)"},
    {"--output", "-o", O_STR, G(output), "FILE  batch: results (default stdout)"},
    {"--curve-key", NULL, O_STR, G(curve_key), "FILE  CURVE key pair (gpt2c keygen) for a broker with --curve-secret"},
    {"--server-key", NULL, O_STR, G(server_key), "KEY  the broker's CURVE public key (Z85, or a file holding it)"},
    {"--progress", NULL, O_ON, G(progress), " batch: progress bar on stderr even if not a terminal"},
    {"--no-progress", NULL, O_NOPROGRESS, G(progress), " batch: no progress bar"},
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

void options_usage(FILE *f) {
    fprintf(f, "usage: gpt2c [flags] \"prompt\"          stream a continuation to stdout\n"
               "       gpt2c batch IN.jsonl [-c N] [-o OUT.jsonl] [flags]\n"
               "       gpt2c stats [--json]              the broker's live state\n"
               "flags:\n");
    for (size_t i = 0; i < N_OPTS; i++)
        fprintf(f, "  %s%s%s %s\n", opts[i].name, opts[i].alt ? ", " : "", opts[i].alt ? opts[i].alt : "",
                opts[i].help);
    fprintf(f, "exit status: 0 ok, 1 usage or local error, 2 server error, 3 overloaded, 4 broker\n"
               "unreachable, 130 interrupted (requests cancelled)\n");
}

static int opt_value(gpt2c_options *o, const opt *p, const char *v) {
    char *base = (char *)o + p->off, *end = NULL;
    errno = 0;
    switch (p->kind) {
    case O_INT: {
        long x = strtol(v, &end, 10);
        if (errno || *end || end == v || x < -2147483647L || x > 2147483647L) break;
        *(int32_t *)base = (int32_t)x;
        return 0;
    }
    case O_FLOAT: {
        float x = strtof(v, &end);
        if (errno || *end || end == v) break;
        *(float *)base = x;
        return 0;
    }
    case O_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || *end || end == v || v[0] == '-') break;
        *(uint64_t *)base = x;
        return 0;
    }
    case O_STR: *(const char **)base = v; return 0;
    case O_PRIORITY: {
        int pr = proto_priority_parse(v, strlen(v));
        if (pr < 0) break;
        *(proto_priority *)base = (proto_priority)pr;
        return 0;
    }
    case O_STOP: {
        proto_msg *q = &o->req;
        size_t n = strlen(v);
        if (q->n_stop >= PROTO_MAX_STOPS || n < 1 || n > PROTO_MAX_STOP_BYTES) {
            fprintf(stderr, "gpt2c: at most %d --stop strings of 1..%d bytes\n", PROTO_MAX_STOPS, PROTO_MAX_STOP_BYTES);
            return -1;
        }
        memcpy(o->stop_buf[q->n_stop], v, n + 1);
        q->stop[q->n_stop] = (proto_str){o->stop_buf[q->n_stop], (uint32_t)n};
        q->n_stop++;
        return 0;
    }
    case O_BIAS: {
        proto_msg *q = &o->req;
        long id = strtol(v, &end, 10);
        if (end == v || *end != ':' || q->n_logit_bias >= PROTO_MAX_BIAS) break;
        const char *b = end + 1;
        float x = strtof(b, &end);
        if (*end || end == b) break;
        o->bias[q->n_logit_bias] = (proto_bias){(int32_t)id, x};
        q->n_logit_bias++;
        q->logit_bias = o->bias;
        return 0;
    }
    default: break;
    }
    fprintf(stderr, "gpt2c: bad value '%s' for %s\n", v, p->name);
    return -1;
}

int options_parse(gpt2c_options *o, int argc, char **argv) {
    memset(o, 0, sizeof(*o));
    proto_msg_init(&o->req, PROTO_T_SUBMIT);
    o->concurrency = 64;
    o->progress = -1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || strcmp(a, "-") == 0) {
            if (o->n_args >= 4) {
                fprintf(stderr, "gpt2c: too many arguments (quote the prompt)\n");
                return -1;
            }
            o->args[o->n_args++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            for (i++; i < argc && o->n_args < 4; i++) o->args[o->n_args++] = argv[i];
            break;
        }
        const opt *p = NULL;
        for (size_t k = 0; k < N_OPTS && !p; k++)
            if (strcmp(a, opts[k].name) == 0 || (opts[k].alt && strcmp(a, opts[k].alt) == 0)) p = &opts[k];
        if (!p) {
            fprintf(stderr, "gpt2c: unknown flag '%s' (see --help)\n", a);
            return -1;
        }
        if (p->kind == O_FLAG || p->kind == O_ON || p->kind == O_NOPROGRESS) {
            if (p->kind == O_FLAG) *(uint8_t *)((char *)o + p->off) = 1;
            else *(int *)((char *)o + p->off) = p->kind == O_NOPROGRESS ? 0 : 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "gpt2c: %s needs a value\n", a);
            return -1;
        }
        if (opt_value(o, p, argv[++i]) < 0) return -1;
    }
    /* the connection reads the CURVE settings from the environment (one place for every command) */
    if (o->curve_key) setenv("GPT2D_CURVE_KEY", o->curve_key, 1);
    if (o->server_key) setenv("GPT2D_SERVER_KEY", o->server_key, 1);
    if (!o->connect) o->connect = getenv("GPT2D_ENDPOINT");
    if (!o->connect || !*o->connect) {
        if (!proto_default_endpoint(0, o->connect_buf, sizeof(o->connect_buf), NULL, 0)) {
            fprintf(stderr, "gpt2c: runtime directory path too long\n");
            return -1;
        }
        char err[600]; /* a default directory somebody else made is not ours to trust */
        if (proto_runtime_check_endpoint(o->connect_buf, 0, 0, err, sizeof(err)) < 0) {
            fprintf(stderr, "gpt2c: %s\n", err);
            return -1;
        }
        o->connect = o->connect_buf;
    }
    return 0;
}
