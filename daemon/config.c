/* config.c — the option table of gpt2d; the command-line and file parsers and the commented file it
 * generates all read this one table. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"
#include "proto_log.h"
#include "proto_suggest.h"
#include "proto_version.h"

#define CONFIG_MAX_FILE_BYTES (1 << 20)

/* The daemon's settings use the engine table's type (eopt.h): name, kind, field, default, range,
 * argument and help. */
typedef eopt option;
#define OPT_STR EOPT_STR
#define OPT_INT EOPT_INT
#define OPT_BOOL EOPT_BOOL

/* ---- the table: one line per setting ------------------------------------------------------------ */
#define C(f) offsetof(config, f)
static const option options[] = {
/*   name                    kind      field                  default  min  max              arg     help */
    {"model",                OPT_STR,  C(model),              "",      0,   0,               "DIR",  "model directory (config.json, model.safetensors, vocab.json, merges.txt); required when workers > 0"},
    {"workers",              OPT_INT,  C(workers),            "1",     0,   256,             "N",    "local worker processes to run and supervise (0: only remote workers)"},
    {"listen",               OPT_STR,  C(listen),             "",      0,   0,               "EP",   "client endpoint, ipc://PATH or tcp://HOST:PORT (default ipc://$RUNTIME/client.sock)"},
    {"worker-listen",        OPT_STR,  C(worker_listen),      "",      0,   0,               "EP",   "worker endpoint; remote workers connect here (default ipc://$RUNTIME/worker.sock)"},
    {"max-queue",            OPT_INT,  C(max_queue),          "256",   0,   1000000,         "N",    "requests that may wait for a slot; beyond that a submit is answered 'overloaded'"},
    {"worker-bin",           OPT_STR,  C(worker_bin),         "",      0,   0,               "PATH", "worker executable (default: gpt2d-worker beside gpt2d)"},
    {"log-level",            OPT_STR,  C(log_level),          "info",  0,   0,               "L",    "error, warn, info or debug (info logs one line per finished request)"},
    {"log-file",             OPT_STR,  C(log_file),           "",      0,   0,               "PATH", "append logs to PATH instead of stderr; reopened on SIGHUP (default: stderr, the journal under systemd)"},
    {"shutdown-grace-ms",    OPT_INT,  C(shutdown_grace_ms),  "30000", 0,   3600000,         "MS",   "on SIGTERM, running requests may finish for this long; then they are cancelled"},
    {"start-timeout-s",      OPT_INT,  C(start_timeout_s),    "600",   0,   86400,           "S",    "under systemd, keep extending the start timeout while workers load the model, up to S seconds"},
    {NULL,                   OPT_INT,  0,                     "",      0,   0,               "",     "(here: every engine setting of proto/eopt.h, in its order)"},
    {"queue-timeout-ms",     OPT_INT,  C(queue_timeout_ms),   "60000", 1,   86400000,        "MS",   "a request still waiting for a slot after MS fails with 'timeout' (504, queue_timeout)"},
    {"request-timeout-ms",   OPT_INT,  C(request_timeout_ms), "600000", 1,  86400000,        "MS",   "a request not done MS after its submit is cancelled and fails with 'timeout' (504, request_timeout)"},
    {"max-client-requests",  OPT_INT,  C(max_client_requests), "1024", 1,   1000000,         "N",    "requests one client connection may have in flight; beyond that 'overloaded' (429, client_limit)"},
    {"interactive-reserve",  OPT_INT,  C(interactive_reserve), "1",    0,   PROTO_MAX_SLOTS, "N",    "slots of each worker that requests of priority 'bulk' leave free for 'interactive' ones (a worker keeps at least one slot for bulk), so a person is not queued behind a batch job"},
    {"restart-max-ms",       OPT_INT,  C(restart_max_ms),     "30000", 1,   3600000,         "MS",   "cap of the restart delay of a crashing local worker (it starts at 250 ms and doubles)"},
    {"curve-secret",         OPT_STR,  C(curve_secret),       "",      0,   0,               "FILE", "the broker's CURVE key pair (gpt2c keygen): encrypt and authenticate both endpoints"},
    {"curve-clients",        OPT_STR,  C(curve_clients),      "",      0,   0,               "FILE", "with curve-secret: public keys of the clients allowed in, one Z85 key per line"},
    {"curve-workers",        OPT_STR,  C(curve_workers),      "",      0,   0,               "FILE", "with curve-secret: public keys of the workers allowed in, one Z85 key per line"},
    {"http-listen",          OPT_STR,  C(http_listen),        "",      0,   0,               "HOST:PORT", "serve the OpenAI-compatible HTTP API (gpt2d-http, run and restarted by gpt2d) on HOST:PORT, e.g. 127.0.0.1:8080 (port 0: any free port, logged); off when empty"},
    {"http-bin",             OPT_STR,  C(http_bin),           "",      0,   0,               "PATH", "gateway executable (default: gpt2d-http beside gpt2d)"},
    {"http-api-keys",        OPT_STR,  C(http_api_keys),      "",      0,   0,               "FILE", "API keys for the HTTP API, one per line; clients send 'Authorization: Bearer KEY' (default: no keys; set them before binding a non-loopback address)"},
    {"http-model-name",      OPT_STR,  C(http_model_name),    "",      0,   0,               "NAME", "the model id of the HTTP API (default: the model directory's name)"},
    {"http-chat-template",   OPT_STR,  C(http_chat_template), "",      0,   0,               "FILE", "how /v1/chat/completions turns messages into a prompt (default: built in; see gpt2d-http(8))"},
    {"http-max-connections", OPT_INT,  C(http_max_connections), "512", 1,   65536,           "N",    "open HTTP connections at most; more are refused"},
    {"http-idle-timeout-s",  OPT_INT,  C(http_idle_timeout_s), "30",   1,   86400,           "S",    "close an HTTP connection silent this long (slow headers, a client not reading)"},
    {"http-stream-buffer-kb", OPT_INT, C(http_stream_buffer_kb), "256", 1,  1 << 20,         "N",    "cancel a stream whose client is this many KiB behind"},
    {"allow-plain-workers",  OPT_BOOL, C(allow_plain_workers), "false", 0,  0,               "BOOL", "without curve-secret: let workers that were not started by this broker register over TCP, and allow a worker-listen other than ipc or loopback; anyone who can reach it may then read prompts and forge outputs"},
    {"max-connections",      OPT_INT,  C(max_connections),    "0",     0,   1000000,         "N",    "client connections at once; more are closed at once (0: what the fd limit allows, keeping fds in reserve)"},
    {"max-connections-per-uid", OPT_INT, C(max_connections_per_uid), "0", 0, 1000000,       "N",    "client connections of one local user (ipc) at once (0: half of max-connections)"},
};
#undef C
#define N_DAEMON (sizeof(options) / sizeof(options[0]))
#define N_OPTIONS (N_DAEMON - 1 + EOPT_COUNT)

/* ---- the two tables as one ---------------------------------------------------------------------- */

/* Setting k of the combined table: the engine's are spliced in at the NULL line. */
static const option *opt_at(size_t k) {
    size_t splice = 0;
    while (options[splice].name) splice++;
    if (k < splice) return &options[k];
    if (k < splice + EOPT_COUNT) return &eopt_table[k - splice];
    return &options[k - EOPT_COUNT + 1];
}

static size_t opt_index(const option *o) {
    for (size_t k = 0; k < N_OPTIONS; k++)
        if (opt_at(k) == o) return k;
    return 0;
}

static const option *opt_find(const char *name, size_t len) {
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const option *o = opt_at(k);
        if (strlen(o->name) == len && strncmp(name, o->name, len) == 0) return o;
    }
    return NULL;
}

/* "did you mean": the setting named closest to name (len bytes), or NULL. */
static const char *opt_suggest(const char *name, size_t len) {
    const char *names[N_OPTIONS];
    for (size_t k = 0; k < N_OPTIONS; k++) names[k] = opt_at(k)->name;
    return proto_suggest(name, len, names, N_OPTIONS);
}

/* The struct o's field lives in: cfg itself, or its engine options. */
static void *opt_base(config *cfg, const option *o) {
    return o >= eopt_table && o < eopt_table + EOPT_COUNT ? (void *)&cfg->engine : (void *)cfg;
}

/* Stores val (a string that outlives cfg) into o's field. 0, or -1 with err. An empty string
 * unsets a string option. */
static int opt_set(config *cfg, const option *o, const char *val, char *err, size_t errlen) {
    return eopt_set(opt_base(cfg, o), o, val, err, errlen);
}

/* The value of o in cfg as the file would write it, into buf. */
static const char *opt_format(const config *cfg, const option *o, char *buf, size_t cap) {
    return eopt_format(opt_base((config *)cfg, o), o, buf, cap);
}

static void config_defaults(config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    char err[160];
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const option *o = opt_at(k);
        if (opt_set(cfg, o, o->def, err, sizeof(err)) < 0) abort(); /* a bad table line */
    }
}

/* ---- the file ------------------------------------------------------------------------------------- */

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

/* Reads path into a NUL-terminated malloc'd buffer. NULL after printing why. */
static char *read_text(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "gpt2d: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(CONFIG_MAX_FILE_BYTES + 1);
    size_t n = buf ? fread(buf, 1, CONFIG_MAX_FILE_BYTES + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad || n > CONFIG_MAX_FILE_BYTES || memchr(buf, 0, n)) {
        fprintf(stderr, "gpt2d: %s: %s\n", path,
                !buf ? "out of memory" : bad ? "read error" : n > CONFIG_MAX_FILE_BYTES ? "larger than 1 MiB"
                                                                                     : "contains a NUL byte");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

/* Applies every "key = value" line of path; the text stays in cfg->file_text (values point into
 * it). 0, or -1 after printing "path:line: message". */
static int config_load_file(config *cfg, const char *path) {
    char *text = read_text(path);
    if (!text) return -1;
    free(cfg->file_text);
    cfg->file_text = text;
    int first_line[N_DAEMON - 1 + EOPT_COUNT] = {0}; /* by opt_index */
    int line_no = 0;
    for (char *p = text; p;) {
        line_no++;
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        char *line = trim(p);
        p = nl ? nl + 1 : NULL;
        if (!*line || *line == '#') continue;
        char err[256];
        char *eq = strchr(line, '=');
        if (!eq) {
            fprintf(stderr, "%s:%d: expected 'key = value', got '%s'\n", path, line_no, line);
            return -1;
        }
        *eq = 0;
        char *key = trim(line), *val = trim(eq + 1);
        size_t vlen = strlen(val);
        if (vlen >= 2 && val[0] == '"' && val[vlen - 1] == '"') {
            val[vlen - 1] = 0;
            val++;
        }
        const option *o = opt_find(key, strlen(key));
        if (!o) {
            const char *near = opt_suggest(key, strlen(key));
            fprintf(stderr, "%s:%d: unknown key '%s'%s%s%s (gpt2d --help lists them)\n", path, line_no, key,
                    near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
            return -1;
        }
        size_t k = opt_index(o);
        if (first_line[k]) {
            fprintf(stderr, "%s:%d: '%s' is already set on line %d\n", path, line_no, key, first_line[k]);
            return -1;
        }
        first_line[k] = line_no;
        if (opt_set(cfg, o, val, err, sizeof(err)) < 0) {
            fprintf(stderr, "%s:%d: %s\n", path, line_no, err);
            return -1;
        }
    }
    return 0;
}

/* ---- the command line ------------------------------------------------------------------------------ */

static void config_usage(FILE *f) {
    fprintf(f, "usage: gpt2d [--config FILE] --model DIR [--workers N] [--listen EP] [options]\n"
               "GPT-2 generation broker: clients (gpt2c) -> gpt2d -> gpt2d-worker processes.\n"
               "Remote workers join with: gpt2d-worker --model DIR --connect tcp://HOST:PORT\n\n"
               "Settings (each is also a 'key = value' line of the configuration file; a flag wins):\n");
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const option *o = opt_at(k);
        char head[64];
        snprintf(head, sizeof(head), "--%s %s", o->name, o->arg);
        fprintf(f, "  %-28s %s", head, o->help);
        if (*o->def) fprintf(f, " [%s]", o->def);
        fputc('\n', f);
    }
    fprintf(f, "\nActions:\n"
               "  %-28s read settings from FILE first (e.g. /etc/gpt2d/gpt2d.conf)\n"
               "  %-28s validate the settings (file and flags), print the result, exit 0 or 2\n"
               "  %-28s print the fully commented configuration file for these settings\n"
               "  %-28s this text; the version\n\n"
               "Signals: SIGTERM/SIGINT stop gracefully (see shutdown-grace-ms); SIGHUP reopens the log\n"
               "file and reloads log-level, max-queue and shutdown-grace-ms from the file.\n"
               "$RUNTIME is $GPT2D_RUNTIME_DIR, else $XDG_RUNTIME_DIR/gpt2d, else /tmp/gpt2d-$UID.\n",
            "--config FILE", "--check-config", "--print-config", "--help, --version");
}

/* The flag's option and value at argv[*i] (advancing *i past a separate value). 0 (o NULL for an
 * action flag), or -1 after printing the error. */
static int arg_next(int argc, char **argv, int *i, const option **o, const char **val) {
    const char *a = argv[*i];
    *o = NULL;
    *val = NULL;
    int is_action = strcmp(a, "--check-config") == 0 || strcmp(a, "--print-config") == 0 ||
                    strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "--version") == 0;
    if (is_action) return 0;
    size_t alen = strcspn(a, "=");
    int is_config = alen == 8 && strncmp(a, "--config", 8) == 0;
    if (!is_config && (strncmp(a, "--", 2) != 0 || !(*o = opt_find(a + 2, alen - 2)))) {
        const char *w = a + strspn(a, "-"), *near = opt_suggest(w, strcspn(w, "="));
        fprintf(stderr, "gpt2d: unknown option '%s'%s%s%s (see --help)\n", a, near ? "; did you mean '--" : "",
                near ? near : "", near ? "'?" : "");
        return -1;
    }
    if (a[alen] == '=') *val = a + alen + 1;
    else if (*o && (*o)->kind == OPT_BOOL) *val = "true";
    else if (*i + 1 < argc) *val = argv[++*i];
    else {
        fprintf(stderr, "gpt2d: %s needs a value\n", a);
        return -1;
    }
    return 0;
}

/* Pass 1: the actions and --config. 1 if --help/--version was printed, -1 on error, else 0. */
static int config_actions(config *cfg, int argc, char **argv, int *print) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            config_usage(stdout);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            proto_version_print(stdout, "gpt2d", NULL);
            return 1;
        }
        if (strcmp(a, "--check-config") == 0) cfg->check_config = 1;
        if (strcmp(a, "--print-config") == 0) *print = 1;
        const option *o;
        const char *val;
        if (arg_next(argc, argv, &i, &o, &val) < 0) return -1;
        if (!o && val) cfg->config_file = val; /* --config */
    }
    return 0;
}

/* Pass 2: the settings, over whatever the file set. 0 or -1. */
static int config_flags(config *cfg, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const option *o;
        const char *val;
        char err[256];
        if (arg_next(argc, argv, &i, &o, &val) < 0) return -1;
        if (o && opt_set(cfg, o, val, err, sizeof(err)) < 0) {
            fprintf(stderr, "gpt2d: --%s\n", err);
            return -1;
        }
    }
    return 0;
}

/* ---- validation and computed defaults ---------------------------------------------------------------- */

static int endpoint_ok(const char *ep) {
    return !ep || strncmp(ep, "ipc://", 6) == 0 || strncmp(ep, "tcp://", 6) == 0;
}

/* 1 if ep is ipc:// or TCP on a loopback address (reachable from this machine only). */
static int endpoint_private(const char *ep) {
    if (!ep || strncmp(ep, "ipc://", 6) == 0) return 1;
    const char *host = ep + 6;
    return strncmp(host, "127.", 4) == 0 || strncmp(host, "localhost:", 10) == 0 || strncmp(host, "[::1]:", 6) == 0;
}

static int config_validate(const config *cfg) {
    const char *where = cfg->config_file ? cfg->config_file : "the command line";
    if (proto_log_parse_level(cfg->log_level ? cfg->log_level : "") < 0) {
        fprintf(stderr, "gpt2d: %s: log-level must be error, warn, info or debug\n", where);
        return -1;
    }
    if (cfg->workers > 0 && !cfg->model) {
        fprintf(stderr, "gpt2d: %s: model (--model DIR) is required to run local workers (or set workers = 0)\n",
                where);
        return -1;
    }
    if (!endpoint_ok(cfg->listen) || !endpoint_ok(cfg->worker_listen)) {
        fprintf(stderr, "gpt2d: %s: listen and worker-listen must be ipc://PATH or tcp://HOST:PORT\n", where);
        return -1;
    }
    if (!cfg->curve_secret && !cfg->allow_plain_workers && !endpoint_private(cfg->worker_listen)) {
        fprintf(stderr,
                "gpt2d: %s: worker-listen %s is reachable from other machines and has no CURVE: anyone who can "
                "reach it could register as a worker, read prompts and forge outputs; set curve-secret (and "
                "curve-workers), bind it to 127.0.0.1 or ipc://, or set allow-plain-workers = true\n",
                where, cfg->worker_listen);
        return -1;
    }
    return 0;
}

/* name in the directory of /proc/self/exe (into buf), else plain name (PATH). */
static const char *config_sibling_bin(const char *name, char *buf, size_t cap) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = 0;
            snprintf(buf, cap, "%s/%s", self, name);
            return buf;
        }
    }
    return name;
}

static int config_compute(config *cfg) {
    if (!proto_default_endpoint(0, cfg->listen_buf, sizeof(cfg->listen_buf), cfg->runtime_dir,
                                sizeof(cfg->runtime_dir)) ||
        !proto_default_endpoint(1, cfg->worker_listen_buf, sizeof(cfg->worker_listen_buf), NULL, 0)) {
        fprintf(stderr, "gpt2d: runtime directory path too long\n");
        return -1;
    }
    if (!cfg->listen) cfg->listen = cfg->listen_buf;
    if (!cfg->worker_listen) cfg->worker_listen = cfg->worker_listen_buf;
    if (!cfg->worker_bin) cfg->worker_bin = config_sibling_bin("gpt2d-worker", cfg->worker_bin_buf, sizeof(cfg->worker_bin_buf));
    if (!cfg->http_bin) cfg->http_bin = config_sibling_bin("gpt2d-http", cfg->http_bin_buf, sizeof(cfg->http_bin_buf));
    if (cfg->engine.threads == 0 && cfg->workers > 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->engine.threads = cores > cfg->workers ? (int)(cores / cfg->workers) : 1;
    }
    return 0;
}

/* ---- public ------------------------------------------------------------------------------------------ */

int config_parse(config *cfg, int argc, char **argv) {
    config_defaults(cfg);
    int print = 0;
    int rc = config_actions(cfg, argc, argv, &print);
    if (rc != 0) return rc;
    if (cfg->config_file && config_load_file(cfg, cfg->config_file) < 0) return -1;
    if (config_flags(cfg, argc, argv) < 0 || config_validate(cfg) < 0) return -1;
    if (print) {
        config_write(cfg, stdout);
        return 1;
    }
    return config_compute(cfg);
}

int config_reload(const config *cfg, config *fresh, int argc, char **argv) {
    config_defaults(fresh);
    fresh->config_file = cfg->config_file;
    if (fresh->config_file && config_load_file(fresh, fresh->config_file) < 0) return -1;
    if (config_flags(fresh, argc, argv) < 0 || config_validate(fresh) < 0) return -1;
    return config_compute(fresh);
}

/* Loads the model the way a worker will (headers, shapes, tensors, tokenizer, --ctx within the
 * model's): the daemon never links the model, so the worker binary does it (gpt2d-worker --check),
 * printing what is wrong. 0, or -1. */
static int config_check_model(const config *cfg) {
    char *argv[48] = {(char *)cfg->worker_bin, "--check", "--model", (char *)cfg->model, "--log-level", "error"};
    int n = 6, fixed = 6;
    if (eopt_argv(&cfg->engine, argv, &n, 46) < 0) { /* the engine options, as local workers get them */
        for (int i = fixed; i < n; i++) free(argv[i]);
        fprintf(stderr, "gpt2d: out of memory\n");
        return -1;
    }
    argv[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "gpt2d: fork: %s\n", strerror(errno));
        for (int i = fixed; i < n; i++) free(argv[i]);
        return -1;
    }
    if (pid == 0) {
        execvp(argv[0], argv);
        fprintf(stderr, "gpt2d: worker-bin: %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    for (int i = fixed; i < n; i++) free(argv[i]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    fprintf(stderr, "gpt2d: model %s: cannot be loaded with these settings (see above)\n", cfg->model);
    return -1;
}

int config_check(const config *cfg) {
    char path[PATH_MAX];
    int rc = 0;
    if (cfg->workers > 0 && cfg->model) {
        snprintf(path, sizeof(path), "%s/config.json", cfg->model);
        if (access(path, R_OK) != 0) {
            fprintf(stderr, "gpt2d: model: %s: %s (no model there yet?)\n", path, strerror(errno));
            rc = -1;
        }
        if (access(cfg->worker_bin, X_OK) != 0 && strchr(cfg->worker_bin, '/')) {
            fprintf(stderr, "gpt2d: worker-bin: %s: %s\n", cfg->worker_bin, strerror(errno));
            rc = -1;
        }
        if (rc == 0 && config_check_model(cfg) < 0) rc = -1;
    }
    return rc;
}

/* Writes text as "# "-prefixed lines of at most ~96 columns. */
static void write_comment(FILE *f, const char *text) {
    const char *p = text;
    while (*p) {
        size_t n = strlen(p);
        if (n > 94) {
            n = 94;
            while (n > 0 && p[n] != ' ') n--;
            if (n == 0) n = strcspn(p, " ");
        }
        fprintf(f, "# %.*s\n", (int)n, p);
        p += n;
        while (*p == ' ') p++;
    }
}

void config_write(const config *cfg, FILE *f) {
    fprintf(f, "# gpt2d.conf: settings of gpt2d, the GPT-2 generation broker (see gpt2d(8)).\n"
               "#\n"
               "# One 'key = value' per line; lines starting with '#' are comments; a value may be put\n"
               "# in double quotes. Every key is also a command-line flag (--key VALUE), and a flag wins\n"
               "# over this file. Lines below that are commented out show the default. Check a file with\n"
               "#     gpt2d --check-config --config /etc/gpt2d/gpt2d.conf\n"
               "# SIGHUP (systemctl reload gpt2d) re-reads log-level, max-queue and shutdown-grace-ms.\n");
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const option *o = opt_at(k);
        char buf[32];
        const char *v = opt_format(cfg, o, buf, sizeof(buf));
        int differs = strcmp(v, o->def) != 0;
        fputc('\n', f);
        write_comment(f, o->help);
        const char *shown = differs ? v : o->def;
        fprintf(f, "%s%s =%s%s\n", differs ? "" : "#", o->name, *shown ? " " : "", shown);
    }
}

void config_destroy(config *cfg) {
    free(cfg->file_text);
    cfg->file_text = NULL;
}
