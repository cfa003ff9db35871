/* config.c — gpt2d-http's option table, its parser and --help. */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "proto_log.h"

typedef struct {
    const char *name; /* --name */
    int is_int;
    size_t off;
    const char *def;
    int min, max;
    const char *arg, *help;
} gw_option;

#define C(f) offsetof(gw_config, f)
static const gw_option options[] = {
    {"listen", 0, C(listen), "127.0.0.1:8080", 0, 0, "HOST:PORT", "serve HTTP here (port 0: any free port, logged); IPv6 as [::1]:PORT"},
    {"connect", 0, C(connect), "", 0, 0, "EP", "the broker's client endpoint (default ipc://$RUNTIME/client.sock, or $GPT2D_ENDPOINT)"},
    {"api-keys", 0, C(api_keys), "", 0, 0, "FILE", "API keys, one per line ('#' comments): clients must send 'Authorization: Bearer KEY'"},
    {"model-name", 0, C(model_name), "gpt2", 0, 0, "NAME", "the model id served (GET /v1/models; requests naming another model get 404)"},
    {"chat-template", 0, C(chat_template), "", 0, 0, "FILE", "chat template for /v1/chat/completions (default: built in, see docs/HTTP.md)"},
    {"max-connections", 1, C(max_connections), "512", 1, 65536, "N", "open HTTP connections at most; more are refused"},
    {"idle-timeout-s", 1, C(idle_timeout_s), "30", 1, 86400, "S", "close a connection silent this long (slow headers, a client not reading)"},
    {"stream-buffer-kb", 1, C(stream_buffer_kb), "256", 1, 1 << 20, "N", "cancel a stream whose client is this far behind"},
    {"shutdown-grace-ms", 1, C(shutdown_grace_ms), "4000", 0, 600000, "MS", "on SIGTERM: running requests may finish this long (new ones get 503), then the rest end with a shutting_down error"},
    {"curve-key", 0, C(curve_key), "", 0, 0, "FILE", "our CURVE key pair, for a broker with curve-secret (with --server-key)"},
    {"server-key", 0, C(server_key), "", 0, 0, "KEY", "the broker's public key (Z85) or a file holding it"},
    {"name", 0, C(name), "gpt2d-http", 0, 0, "NAME", "our name in the broker's log"},
    {"log-level", 0, C(log_level), "info", 0, 0, "L", "error, warn, info or debug"},
};
#undef C
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static int opt_set(gw_config *cfg, const gw_option *o, const char *val) {
    char *p = (char *)cfg + o->off;
    if (!o->is_int) {
        *(const char **)p = *val ? val : NULL;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end || v < o->min || v > o->max) {
        fprintf(stderr, "gpt2d-http: --%s wants an integer in [%d, %d], got '%s'\n", o->name, o->min, o->max, val);
        return -1;
    }
    *(int *)p = (int)v;
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: gpt2d-http [--listen HOST:PORT] [--connect EP] [options]\n"
               "The HTTP front door of gpt2d: OpenAI-compatible /v1/completions and /v1/chat/completions\n"
               "(with SSE streaming), /v1/models, /health, /ready, /metrics (Prometheus), /v1/stats and a\n"
               "status page at /. gpt2d runs it itself with --http-listen; see gpt2d-http(8), docs/HTTP.md.\n\n");
    for (size_t k = 0; k < N_OPTIONS; k++) {
        char head[64];
        snprintf(head, sizeof(head), "--%s %s", options[k].name, options[k].arg);
        fprintf(f, "  %-26s %s", head, options[k].help);
        if (*options[k].def) fprintf(f, " [%s]", options[k].def);
        fputc('\n', f);
    }
    fprintf(f, "  %-26s this text; the version\n\nSIGTERM/SIGINT: stop (open requests are cancelled).\n",
            "--help, --version");
}

int gw_config_parse(gw_config *cfg, int argc, char **argv) {
    memset(cfg, 0, sizeof(*cfg));
    for (size_t k = 0; k < N_OPTIONS; k++) opt_set(cfg, &options[k], options[k].def);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("gpt2d-http (protocol v%d)\n", PROTO_VERSION);
            return 1;
        }
        size_t alen = strcspn(a, "=");
        const gw_option *o = NULL;
        for (size_t k = 0; k < N_OPTIONS && strncmp(a, "--", 2) == 0; k++)
            if (strlen(options[k].name) == alen - 2 && strncmp(a + 2, options[k].name, alen - 2) == 0) o = &options[k];
        if (!o) {
            fprintf(stderr, "gpt2d-http: unknown option '%s' (see --help)\n", a);
            return -1;
        }
        const char *val = a[alen] == '=' ? a + alen + 1 : i + 1 < argc ? argv[++i] : NULL;
        if (!val) {
            fprintf(stderr, "gpt2d-http: %s needs a value\n", a);
            return -1;
        }
        if (opt_set(cfg, o, val) < 0) return -1;
    }
    if (proto_log_parse_level(cfg->log_level ? cfg->log_level : "") < 0) {
        fprintf(stderr, "gpt2d-http: --log-level must be error, warn, info or debug\n");
        return -1;
    }
    if (!cfg->listen) {
        fprintf(stderr, "gpt2d-http: --listen HOST:PORT is required\n");
        return -1;
    }
    if (!cfg->model_name) cfg->model_name = "gpt2";
    if (!cfg->connect) cfg->connect = getenv("GPT2D_ENDPOINT");
    if (!cfg->connect) {
        if (!proto_default_endpoint(0, cfg->connect_buf, sizeof(cfg->connect_buf), NULL, 0)) {
            fprintf(stderr, "gpt2d-http: runtime directory path too long\n");
            return -1;
        }
        cfg->connect = cfg->connect_buf;
    }
    return 0;
}
