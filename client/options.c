/* options.c — gpt2c's command line, declared once in a table: sampling parameters fill a submit
 * template (proto_msg), the rest configure the command. Parsed with getopt_long, which permutes, so
 * options may come before or after the command word and the prompt (`gpt2c --json stats`,
 * `gpt2c -c 8 batch f.jsonl`), and `--opt=value` works. A misspelt flag gets a "did you mean".
 * Values are range-checked by the protocol encoder when the request is sent; here only their syntax.
 * --stop strings and a prompt given as an argument have their C escapes interpreted (\n, \t, \r,
 * \\, \", \', \xHH), as llama-cli's --escape; --no-escape takes them literally. */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "gpt2c.h"
#include "proto_suggest.h"

typedef enum { O_INT, O_FLOAT, O_U64, O_STR, O_FLAG, O_ON, O_OFF, O_STOP, O_BIAS, O_PRIORITY } opt_kind;

typedef struct {
    const char *name; /* long name, without the dashes */
    char alt;         /* short letter, or 0 */
    opt_kind kind;
    size_t off;
    const char *help;
} opt;

#define R(f) (offsetof(gpt2c_options, req) + offsetof(proto_msg, f))
#define G(f) offsetof(gpt2c_options, f)
static const opt opts[] = {
    {"connect", 0, O_STR, G(connect), "EP  broker: ipc://PATH, tcp://HOST:PORT or a socket PATH (default: see ENDPOINT)"},
    {"prompt", 'p', O_STR, G(prompt), "TEXT  the prompt (instead of the argument; e.g. a prompt that reads 'stats')"},
    {"max-tokens", 'n', O_INT, R(max_tokens), "N  tokens to generate (default 16)"},
    {"temperature", 't', O_FLOAT, R(temperature), "T  0 = greedy (default)"},
    {"top-k", 0, O_INT, R(top_k), "K  keep the K most likely (0 = off)"},
    {"top-p", 0, O_FLOAT, R(top_p), "P  nucleus sampling (1 = off)"},
    {"min-p", 0, O_FLOAT, R(min_p), "P  drop tokens below P * p_max (0 = off)"},
    {"repetition-penalty", 0, O_FLOAT, R(repetition_penalty), "R  (1 = off)"},
    {"presence-penalty", 0, O_FLOAT, R(presence_penalty), "P  (0 = off)"},
    {"frequency-penalty", 0, O_FLOAT, R(frequency_penalty), "F  (0 = off)"},
    {"seed", 's', O_U64, R(seed), "S  sampling seed (default 0)"},
    {"stop", 0, O_STOP, 0, "STR  stop string (repeatable, up to 8; C escapes such as \\n are interpreted)"},
    {"no-escape", 0, O_ON, G(no_escape), " take --stop and the prompt literally (no \\n, \\t, \\xHH escapes)"},
    {"logit-bias", 0, O_BIAS, 0, "ID:V  add V to token ID's logit (repeatable; -inf bans)"},
    {"ignore-eos", 0, O_FLAG, R(ignore_eos), " keep generating after <|endoftext|>"},
    {"allow-special", 0, O_FLAG, R(allow_special), " '<|endoftext|>' in the prompt is the special token"},
    {"priority", 0, O_PRIORITY, R(priority), "P  interactive (default: admitted first) or bulk (batch jobs)"},
    {"logprobs", 0, O_FLAG, R(logprobs), " print each token's log-probability (in --json: a \"logprob\" field)"},
    {"json", 0, O_ON, G(json), " machine-readable output: one JSON object per frame"},
    {"concurrency", 'c', O_INT, G(concurrency), "N  batch: requests in flight (default 64)"},
    {"output", 'o', O_STR, G(output), "FILE  batch: results (default stdout; written once the broker answers)"},
    {"errors", 'e', O_STR, G(errors), "FILE  batch: failed lines go here as they were (default OUTPUT.errors)"},
    {"resume", 0, O_ON, G(resume), " batch: keep OUTPUT's results, run only the ids not in it, append"},
    {"curve-key", 0, O_STR, G(curve_key), "FILE  CURVE key pair (gpt2c keygen) for a broker with --curve-secret"},
    {"server-key", 0, O_STR, G(server_key), "KEY  the broker's CURVE public key (Z85, or a file holding it)"},
    {"progress", 0, O_ON, G(progress), " batch: progress bar on stderr even if not a terminal"},
    {"no-progress", 0, O_OFF, G(progress), " batch: no progress bar"},
    {"version", 'V', O_ON, G(version), " print the version, git revision, protocol version and CPU features"},
    {"help", 'h', O_ON, G(help), " this help"},
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

void options_usage(FILE *f) {
    fprintf(f, "usage: gpt2c [flags] \"prompt\"          stream a continuation to stdout ('-': read stdin)\n"
               "       gpt2c batch IN.jsonl [-c N] [-o OUT.jsonl] [-e ERR.jsonl] [--resume] [flags]\n"
               "       gpt2c stats [--json]              the broker's live state\n"
               "       gpt2c keygen FILE                 a CURVE key pair\n"
               "flags may come anywhere; --flag=value works too:\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        char sh[8] = "";
        if (opts[i].alt) snprintf(sh, sizeof(sh), ", -%c", opts[i].alt);
        fprintf(f, "  --%s%s %s\n", opts[i].name, sh, opts[i].help);
    }
    fprintf(f,
            "batch input (JSONL, one request per line; flags give the defaults):\n"
            "  {\"id\": \"a1\", \"prompt\": \"Dear team,\", \"max_tokens\": 32, \"temperature\": 0.8, \"seed\": 7}\n"
            "  keys: id (string or integer; default: the line number from 0), prompt or prompt_ids,\n"
            "  max_tokens, temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,\n"
            "  frequency_penalty, seed (integer, exact up to 2^63-1), logit_bias ([[id, bias], ...]),\n"
            "  stop (string or array), ignore_eos, allow_special, logprobs, stream (ignored).\n"
            "  Any other key is an error naming the line and the key; a failed line goes to the error\n"
            "  file as it was (with \"error\" added), so it can be fixed and run again.\n"
            "batch output (JSONL, input order): {\"id\", \"text\", \"tokens\", \"finish_reason\",\n"
            "  \"usage\": {\"prompt_tokens\", \"completion_tokens\"}, \"timings\": {\"queue_ms\",\n"
            "  \"ttft_ms\", \"total_ms\"}} (+ \"error\", \"code\" for a request the broker refused).\n"
            "endpoint: --connect, else $GPT2D_ENDPOINT, else the first socket that exists of\n"
            "  $GPT2D_RUNTIME_DIR/client.sock (only this one when set), $XDG_RUNTIME_DIR/gpt2d/client.sock,\n"
            "  /tmp/gpt2d-$UID/client.sock (what `make run` uses), " GPT2C_SYSTEM_ENDPOINT "\n"
            "  (the installed service; its group gpt2d may connect).\n"
            "exit status: 0 ok, 1 usage or local error, 2 server error, 3 overloaded, 4 broker\n"
            "unreachable, 130 interrupted (requests cancelled)\n");
}

static void unknown_flag(const char *arg) {
    const char *w = arg;
    while (*w == '-') w++;
    const char *s = proto_suggest_table(w, strcspn(w, "="), opts, N_OPTS, sizeof(opts[0]));
    if (s) fprintf(stderr, "gpt2c: unknown flag '%s'; did you mean '--%s'? (see --help)\n", arg, s);
    else fprintf(stderr, "gpt2c: unknown flag '%s' (see --help)\n", arg);
}

size_t options_unescape(char *s) {
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (*r != '\\' || !r[1]) {
            *w++ = *r;
            continue;
        }
        r++;
        switch (*r) {
        case 'n': *w++ = '\n'; break;
        case 't': *w++ = '\t'; break;
        case 'r': *w++ = '\r'; break;
        case '\\': *w++ = '\\'; break;
        case '"': *w++ = '"'; break;
        case '\'': *w++ = '\''; break;
        case 'x': {
            int v = 0, k = 0;
            for (; k < 2; k++) {
                char c = r[1 + k];
                int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
                if (d < 0) break;
                v = v * 16 + d;
            }
            if (k == 0) { /* "\x" without digits stays as it is */
                *w++ = '\\';
                *w++ = 'x';
                break;
            }
            *w++ = (char)v;
            r += k;
            break;
        }
        default: /* an unknown escape is kept as written */
            *w++ = '\\';
            *w++ = *r;
        }
    }
    *w = 0;
    return (size_t)(w - s);
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
        if (q->n_stop >= PROTO_MAX_STOPS || strlen(v) > 4 * PROTO_MAX_STOP_BYTES) break;
        char *buf = o->stop_buf[q->n_stop];
        snprintf(buf, sizeof(o->stop_buf[0]), "%s", v);
        o->stop_raw[q->n_stop] = v;
        q->stop[q->n_stop] = (proto_str){buf, (uint32_t)strlen(buf)};
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
    case O_FLAG: *(uint8_t *)base = 1; return 0;
    case O_ON: *(int *)base = 1; return 0;
    case O_OFF: *(int *)base = 0; return 0;
    }
    if (p->kind == O_STOP)
        fprintf(stderr, "gpt2c: at most %d --stop strings of 1..%d bytes\n", PROTO_MAX_STOPS, PROTO_MAX_STOP_BYTES);
    else
        fprintf(stderr, "gpt2c: bad value '%s' for --%s\n", v, p->name);
    return -1;
}

/* Interprets escapes in the stop strings (once every flag is known: --no-escape may come last). */
static int options_stops(gpt2c_options *o) {
    proto_msg *q = &o->req;
    for (uint32_t i = 0; i < q->n_stop; i++) {
        char *buf = o->stop_buf[i];
        size_t n = o->no_escape ? strlen(buf) : options_unescape(buf);
        if (n < 1 || n > PROTO_MAX_STOP_BYTES) {
            fprintf(stderr, "gpt2c: --stop '%s': a stop string is 1..%d bytes\n", o->stop_raw[i],
                    PROTO_MAX_STOP_BYTES);
            return -1;
        }
        q->stop[i] = (proto_str){buf, (uint32_t)n};
    }
    return 0;
}

int options_parse(gpt2c_options *o, int argc, char **argv) {
    memset(o, 0, sizeof(*o));
    proto_msg_init(&o->req, PROTO_T_SUBMIT);
    o->concurrency = 64;
    o->progress = -1;
    struct option lo[N_OPTS + 1];
    char shorts[3 * N_OPTS + 2], *sp = shorts;
    *sp++ = ':'; /* a missing value returns ':' (we print our own messages) */
    for (size_t i = 0; i < N_OPTS; i++) {
        int has_arg = opts[i].kind == O_FLAG || opts[i].kind == O_ON || opts[i].kind == O_OFF ? no_argument
                                                                                            : required_argument;
        lo[i] = (struct option){opts[i].name, has_arg, NULL, (int)(256 + i)};
        if (opts[i].alt) {
            *sp++ = opts[i].alt;
            if (has_arg == required_argument) *sp++ = ':';
        }
    }
    *sp = 0;
    lo[N_OPTS] = (struct option){0, 0, 0, 0};
    opterr = 0;
    optind = 1;
    int c, longi;
    while ((c = getopt_long(argc, argv, shorts, lo, &longi)) != -1) {
        const opt *p = NULL;
        if (c >= 256 && c < 256 + (int)N_OPTS) p = &opts[c - 256];
        for (size_t k = 0; !p && k < N_OPTS; k++)
            if (opts[k].alt && opts[k].alt == c) p = &opts[k];
        if (c == ':') {
            fprintf(stderr, "gpt2c: %s needs a value\n", argv[optind - 1]);
            return -1;
        }
        if (!p) { /* '?': unknown, or an ambiguous prefix */
            if (optopt && optopt < 256) {
                char a[3] = {'-', (char)optopt, 0};
                unknown_flag(a);
            } else {
                unknown_flag(argv[optind - 1]);
            }
            return -1;
        }
        if (opt_value(o, p, optarg) < 0) return -1;
    }
    for (int i = optind; i < argc; i++) {
        if (o->n_args >= 4) {
            fprintf(stderr, "gpt2c: too many arguments (quote the prompt)\n");
            return -1;
        }
        o->args[o->n_args++] = argv[i];
    }
    if (options_stops(o) < 0) return -1;
    /* the connection reads the CURVE settings from the environment (one place for every command) */
    if (o->curve_key) setenv("GPT2D_CURVE_KEY", o->curve_key, 1);
    if (o->server_key) setenv("GPT2D_SERVER_KEY", o->server_key, 1);
    return 0;
}
