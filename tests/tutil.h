/* tutil.h — what the service-level tests and the soak program share: starting and killing
 * processes, a small model, a broker with local workers, DEALER test clients, and the outcome of a
 * request gathered from its frames.
 *
 * Every process started is recorded and SIGKILLed by tu_kill_all() (registered with atexit by
 * tu_init()), every wait has a timeout, and every endpoint is ipc:// under the scratch directory
 * ($GPT2D_TMP/<name>). Functions are static inline: each including program is one main file. */
#ifndef GPT2D_TESTS_TUTIL_H
#define GPT2D_TESTS_TUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "proto_client.h"
#include "proto_sock.h"

#define TU_MAX_PIDS 128

typedef struct {
    pid_t pids[TU_MAX_PIDS]; /* everything started, killed at exit */
    int n_pids;
    char build[512], tmp[512], model[600];
    void *ctx;               /* the ZeroMQ context of the test clients */
} tu_env;

static tu_env tu; /* the one environment of the test program (its main file) */

static inline void tu_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline void tu_kill_all(void) {
    for (int i = 0; i < tu.n_pids; i++)
        if (tu.pids[i] > 0) kill(tu.pids[i], SIGKILL);
    for (int i = 0; i < tu.n_pids; i++)
        if (tu.pids[i] > 0) waitpid(tu.pids[i], NULL, 0);
    tu.n_pids = 0;
}

static inline void tu_on_fatal_signal(int sig) {
    for (int i = 0; i < tu.n_pids; i++)
        if (tu.pids[i] > 0) kill(tu.pids[i], SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* How tu_spawn_opts() starts a child. */
typedef struct {
    int own_group; /* in a process group of its own (a signal to the group reaches it alone) */
    int nofile;    /* RLIMIT_NOFILE for the child; 0: inherited */
} tu_spawn_how;

/* Starts argv with stdout+stderr appended to log, as `how` says (NULL: plainly). The pid, or -1. */
static inline pid_t tu_spawn_opts(char *const argv[], const char *log, const tu_spawn_how *how) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (how && how->own_group) setpgid(0, 0);
        if (how && how->nofile > 0) {
            struct rlimit rl = {(rlim_t)how->nofile, (rlim_t)how->nofile};
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    if (how && how->own_group) setpgid(pid, pid); /* also here: no race with a signal to the group */
    if (tu.n_pids < TU_MAX_PIDS) tu.pids[tu.n_pids++] = pid;
    return pid;
}

/* Starts argv with stdout+stderr appended to log. The pid, or -1. */
static inline pid_t tu_spawn(char *const argv[], const char *log) { return tu_spawn_opts(argv, log, NULL); }

/* Waits for pid up to ms, then SIGKILL. The wait status. */
static inline int tu_reap(pid_t pid, int ms) {
    int status = -1;
    for (int t = 0; t < ms; t += 10) {
        if (waitpid(pid, &status, WNOHANG) == pid) goto done;
        tu_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
done:
    for (int i = 0; i < tu.n_pids; i++)
        if (tu.pids[i] == pid) tu.pids[i] = 0;
    return status;
}

/* Runs argv to completion within ms, stdout+stderr to log. The exit status, or -1. */
static inline int tu_run(char *const argv[], const char *log, int ms) {
    pid_t pid = tu_spawn(argv, log);
    if (pid < 0) return -1;
    int status = tu_reap(pid, ms);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Runs argv to completion (bounded by ms), capturing stdout into a malloc'd string.
 * Returns the exit status (-1 on failure / timeout). */
static inline int tu_run_capture(char *const argv[], char **out, size_t *out_len, int ms) {
    int fds[2];
    *out = NULL;
    *out_len = 0;
    if (pipe(fds) < 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    if (tu.n_pids < TU_MAX_PIDS) tu.pids[tu.n_pids++] = pid;
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    double deadline = proto_clock_ms() + ms;
    for (;;) {
        ssize_t got = read(fds[0], buf + n, cap - n - 1);
        if (got > 0) {
            n += (size_t)got;
            if (cap - n - 1 == 0) buf = realloc(buf, cap *= 2);
            continue;
        }
        if (got == 0) break;
        if (errno != EAGAIN || proto_clock_ms() > deadline) break;
        tu_sleep_ms(2);
    }
    close(fds[0]);
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    int status = tu_reap(pid, (int)(deadline - proto_clock_ms()) > 0 ? (int)(deadline - proto_clock_ms()) : 1);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Reads BUILD and GPT2D_TMP, makes <tmp>/<name>, installs the exit handlers, bounds the whole
 * program by alarm_s seconds, and makes the 2-layer 128-wide random model (ctx 256). 0 or -1. */
static inline int tu_init(const char *name, int alarm_s) {
    const char *b = getenv("BUILD"), *t = getenv("GPT2D_TMP");
    snprintf(tu.build, sizeof(tu.build), "%s", b && *b ? b : "build");
    if (t && *t) snprintf(tu.tmp, sizeof(tu.tmp), "%s/%s", t, name);
    else snprintf(tu.tmp, sizeof(tu.tmp), "/tmp/gpt2d-%s.%d", name, (int)getpid());
    mkdir(tu.tmp, 0700);
    snprintf(tu.model, sizeof(tu.model), "%s/model", tu.tmp);
    atexit(tu_kill_all);
    signal(SIGTERM, tu_on_fatal_signal);
    signal(SIGINT, tu_on_fatal_signal);
    signal(SIGALRM, tu_on_fatal_signal);
    signal(SIGPIPE, SIG_IGN);
    if (alarm_s > 0) alarm((unsigned)alarm_s);
    tu.ctx = zmq_ctx_new();
    char tool[600], log[700];
    snprintf(tool, sizeof(tool), "%s/gpt2-tool", tu.build);
    snprintf(log, sizeof(log), "%s/mkmodel.log", tu.tmp);
    char *mk[] = {tool, "mkmodel", "--out", tu.model, "--layers", "2", "--embd", "128", "--heads", "4", "--ctx",
                  "256", "--seed", "1", NULL};
    return tu.ctx && tu_run(mk, log, 120000) == 0 ? 0 : -1;
}

/* ============================================================================================== */
/* test clients                                                                                    */
/* ============================================================================================== */

/* A test client is the shared client library's link (proto/proto_client.h) on the test's context,
 * without the hello handshake (tests send hello themselves where they test it). */
typedef proto_client tu_client;

/* A plain client, or a CURVE one when keyfile (our key pair) and server_key are given. 0 or -1. */
static inline int tu_client_open_curve(tu_client *c, const char *endpoint, const char *keyfile,
                                       const char *server_key) {
    proto_client_opts o = {.ctx = tu.ctx, .curve_key = keyfile, .server_key = server_key};
    if (proto_client_open(c, endpoint, &o, NULL) == PROTO_CLIENT_OK) return 0;
    printf("  client: %s\n", c->err);
    return -1;
}

static inline int tu_client_open(tu_client *c, const char *endpoint) {
    return tu_client_open_curve(c, endpoint, NULL, NULL);
}

static inline void tu_client_close(tu_client *c) { proto_client_close(c); }

static inline int tu_send(tu_client *c, const proto_msg *m) {
    int rc = proto_client_send(c, m);
    if (rc < 0) printf("  send: %s\n", c->err);
    return rc;
}

static inline int tu_send_raw(tu_client *c, const void *p, size_t n) { return proto_client_send_raw(c, p, n); }

/* The next message that is not a heartbeat, within ms. 1 (m valid until the next call; destroy
 * it), 0 on timeout. Undecodable replies are reported and skipped. */
static inline int tu_recv(tu_client *c, proto_msg *m, int ms) {
    long before = c->n_undecodable;
    int rc = proto_client_recv(c, m, ms, PROTO_CLIENT_SKIP_HB);
    if (c->n_undecodable != before) printf("  %s\n", c->err);
    return rc == 1;
}

static inline int tu_cancel(tu_client *c, uint64_t id) {
    proto_cid cid = {0, id, {0}};
    return proto_client_cancel(c, &cid);
}

/* A fake worker for broker tests: a DEALER on the worker endpoint that announces `slots` slots
 * (name "fake", no secret: allowed on ipc). 0, or -1. */
static inline int tu_fake_worker_ready(tu_client *c, const char *worker_ep, int slots) {
    if (tu_client_open(c, worker_ep) < 0) return -1;
    proto_msg r;
    proto_msg_init(&r, PROTO_T_READY);
    r.slots = slots;
    r.name = (proto_str){"fake", 4};
    r.pid = 1;
    r.n_ctx = 256;
    return tu_send(c, &r);
}

/* ============================================================================================== */
/* requests and their outcomes                                                                     */
/* ============================================================================================== */

typedef struct {
    char prompt[160];
    int max_tokens;
    float temperature;
    int top_k;
    float top_p;
    uint64_t seed;
    const char *stop[2];
} tu_req;

/* Request i of a reproducible mixed workload: greedy and sampled, stop strings of several bytes,
 * multi-byte UTF-8 in prompts, lengths between min_tok and 2 * min_tok. */
static inline void tu_req_make(tu_req *r, int i, int min_tok) {
    static const char *const heads[] = {
        "Hello, my name is", "The quick brown fox", "Dear team,\n\nThanks for", "Once upon a time",
        "Café au lait, naïve façade:", "日本語のテキスト", "Subject: Partnership\n\n", "Emoji 🙂 and Ωmega",
    };
    memset(r, 0, sizeof(*r));
    snprintf(r->prompt, sizeof(r->prompt), "%s %d", heads[i % 8], i);
    r->max_tokens = min_tok + (i * 37) % (min_tok + 1);
    r->seed = (uint64_t)i * 7919u;
    r->top_p = 1.0f;
    if (i % 3 != 0) {
        r->temperature = 0.6f + 0.1f * (float)(i % 7);
        r->top_k = (i % 4) * 25;
        r->top_p = (i % 2) ? 0.92f : 1.0f;
    }
    if (i % 5 == 1) r->stop[0] = "the";
    if (i % 5 == 3) {
        r->stop[0] = "\n\n";
        r->stop[1] = "ing ";
    }
}

static inline int tu_submit(tu_client *c, uint64_t id, const tu_req *r) {
    proto_msg m;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.id = (proto_cid){0, id, {0}};
    m.prompt = (proto_str){r->prompt, (uint32_t)strlen(r->prompt)};
    m.has = PROTO_HAS(PF_PROMPT);
    m.max_tokens = r->max_tokens;
    m.temperature = r->temperature;
    m.top_k = r->top_k;
    m.top_p = r->top_p;
    m.seed = r->seed;
    for (int k = 0; k < 2 && r->stop[k]; k++) m.stop[m.n_stop++] = (proto_str){r->stop[k], (uint32_t)strlen(r->stop[k])};
    return tu_send(c, &m);
}

typedef struct {
    char *streamed;          /* token pieces concatenated */
    size_t streamed_len;
    char *text;              /* the done frame's text */
    size_t text_len;
    int32_t *tokens;         /* the done frame's tokens */
    int n_tokens;            /* token frames */
    int n_done_tokens;
    int prompt_tokens, completion_tokens;
    int done, error_code, bad_index;
    char reason[40];         /* an error frame's reason */
    proto_finish finish;
} tu_result;

static inline void tu_result_free(tu_result *r) {
    free(r->streamed);
    free(r->text);
    free(r->tokens);
    memset(r, 0, sizeof(*r));
}

/* Folds one frame into r. 1 if the request ended. */
static inline int tu_result_add(tu_result *r, const proto_msg *m) {
    if (m->type == PROTO_T_TOKEN) {
        if (m->index != r->n_tokens) r->bad_index = 1;
        r->n_tokens++;
        char *p = realloc(r->streamed, r->streamed_len + m->text.len + 1);
        if (!p) return 0;
        r->streamed = p;
        if (m->text.len) memcpy(r->streamed + r->streamed_len, m->text.ptr, m->text.len);
        r->streamed_len += m->text.len;
        r->streamed[r->streamed_len] = 0;
        return 0;
    }
    if (m->type == PROTO_T_DONE) {
        r->done = 1;
        r->finish = m->finish;
        r->text = malloc(m->text.len + 1);
        r->tokens = malloc((m->n_tokens + 1) * sizeof(int32_t));
        if (r->text && m->text.len) memcpy(r->text, m->text.ptr, m->text.len);
        if (r->text) r->text[m->text.len] = 0;
        r->text_len = m->text.len;
        if (r->tokens && m->n_tokens) memcpy(r->tokens, m->tokens, m->n_tokens * sizeof(int32_t));
        r->n_done_tokens = (int)m->n_tokens;
        r->prompt_tokens = m->prompt_tokens;
        r->completion_tokens = m->completion_tokens;
        return 1;
    }
    if (m->type == PROTO_T_ERROR) {
        r->error_code = m->code;
        snprintf(r->reason, sizeof(r->reason), "%.*s", (int)m->reason.len, m->reason.ptr ? m->reason.ptr : "");
        return 1;
    }
    return 0;
}

/* 1 if a and b are the same outcome: text streamed, done text, tokens, finish, usage. */
static inline int tu_result_same(const tu_result *a, const tu_result *b) {
    return a->done && b->done && a->finish == b->finish && a->streamed_len == b->streamed_len &&
           (a->streamed_len == 0 || memcmp(a->streamed, b->streamed, a->streamed_len) == 0) &&
           a->text_len == b->text_len && (a->text_len == 0 || memcmp(a->text, b->text, a->text_len) == 0) &&
           a->n_done_tokens == b->n_done_tokens &&
           (a->n_done_tokens == 0 || memcmp(a->tokens, b->tokens, (size_t)a->n_done_tokens * sizeof(int32_t)) == 0) &&
           a->n_tokens == b->n_tokens && a->prompt_tokens == b->prompt_tokens &&
           a->completion_tokens == b->completion_tokens && !a->bad_index && !b->bad_index;
}

/* ============================================================================================== */
/* the daemon                                                                                      */
/* ============================================================================================== */

typedef struct {
    pid_t pid;
    char client_ep[700], worker_ep[700], log[700];
} tu_daemon;

/* Stats from the broker (m valid until the next call on c). 1, or 0 on timeout. */
static inline int tu_stats(tu_client *c, proto_msg *m) { return proto_client_stats(c, m, 3000); }

/* Waits until the broker reports n workers and nothing running. 1, or 0 on timeout. */
static inline int tu_wait_workers(const tu_daemon *d, int n, int ms) {
    tu_client c;
    tu_client_open(&c, d->client_ep);
    double deadline = proto_clock_ms() + ms;
    int ok = 0;
    while (!ok && proto_clock_ms() < deadline) {
        proto_msg m;
        if (tu_stats(&c, &m)) {
            ok = (int)m.n_worker_list == n && m.running == 0;
            proto_msg_destroy(&m);
        }
        if (!ok) tu_sleep_ms(50);
    }
    tu_client_close(&c);
    return ok;
}

/* Starts gpt2d with `workers` local workers of `slots` slots, and extra flags (NULL-terminated,
 * may be NULL); waits for the workers. 1 on success. */
static inline int tu_daemon_start(tu_daemon *d, const char *name, int workers, int slots, char *const *extra) {
    snprintf(d->client_ep, sizeof(d->client_ep), "ipc://%s/%s-client.sock", tu.tmp, name);
    snprintf(d->worker_ep, sizeof(d->worker_ep), "ipc://%s/%s-worker.sock", tu.tmp, name);
    snprintf(d->log, sizeof(d->log), "%s/%s.log", tu.tmp, name);
    static char bin[600], wbin[600], w[16], s[16];
    snprintf(bin, sizeof(bin), "%s/gpt2d", tu.build);
    snprintf(wbin, sizeof(wbin), "%s/gpt2d-worker", tu.build);
    snprintf(w, sizeof(w), "%d", workers);
    snprintf(s, sizeof(s), "%d", slots);
    char *argv[64] = {bin, "--model", tu.model, "--workers", w, "--slots", s, "--listen", d->client_ep,
                      "--worker-listen", d->worker_ep, "--worker-bin", wbin, "--threads", "1", "--log-level", "info"};
    int n = 17;
    for (int i = 0; extra && extra[i] && n < 62; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    d->pid = tu_spawn(argv, d->log);
    return d->pid > 0 && (workers == 0 || tu_wait_workers(d, workers, 60000));
}

/* SIGTERM and wait. 1 if it exited 0. */
static inline int tu_daemon_stop(tu_daemon *d) {
    kill(d->pid, SIGTERM);
    int status = tu_reap(d->pid, 40000);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static inline int tu_log_contains(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f)) found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* The pids of the workers the broker has registered (local ones first), up to cap. */
static inline int tu_worker_pids(tu_client *c, pid_t *pids, int *running, int cap) {
    proto_msg m;
    int n = 0;
    if (!tu_stats(c, &m)) return 0;
    for (uint32_t i = 0; i < m.n_worker_list && n < cap; i++) {
        running[n] = m.worker_list[i].running;
        pids[n++] = m.worker_list[i].pid;
    }
    proto_msg_destroy(&m);
    return n;
}

#endif
