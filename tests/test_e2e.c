/* test_e2e.c — the whole service: gpt2d with local gpt2d-worker processes on a small random model,
 * driven through the wire protocol (ZeroMQ DEALER clients) and through gpt2c.
 *
 * Shown here: 64 concurrent clients each get exactly what `gpt2-tool generate` prints for the same
 * request (batch invariance through the whole stack), and streamed text equals the done frame's
 * text; `gpt2c batch` matches `gpt2-tool batch` field for field; a cancel mid-stream frees the slot
 * (the next request is admitted); a full queue answers overloaded at once; a client that vanishes
 * mid-stream has its request cancelled on the worker; a worker killed with SIGKILL is replaced,
 * each of its in-flight requests is replayed on the other worker and completes, and the daemon
 * keeps serving (tests/test_chaos.c checks replays byte for byte); hostile
 * frames get error frames; gpt2c's exit codes. Every wait has a timeout, everything binds to
 * ipc:// in $GPT2D_TMP, and every process started is killed at exit.
 * Env: BUILD (binaries), GPT2D_TMP (scratch). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "proto.h"
#include "proto_sock.h"

/* ============================================================================================== */
/* processes                                                                                       */
/* ============================================================================================== */

#define MAX_PIDS 64
static pid_t g_pids[MAX_PIDS]; /* everything we started, killed at exit */
static int g_n_pids;
static char g_build[512], g_tmp[512], g_model[600];

static void kill_all(void) {
    for (int i = 0; i < g_n_pids; i++)
        if (g_pids[i] > 0) kill(g_pids[i], SIGKILL);
    for (int i = 0; i < g_n_pids; i++)
        if (g_pids[i] > 0) waitpid(g_pids[i], NULL, 0);
    g_n_pids = 0;
}

static void on_fatal_signal(int sig) {
    for (int i = 0; i < g_n_pids; i++)
        if (g_pids[i] > 0) kill(g_pids[i], SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Starts argv with stdout+stderr to log (append). Returns the pid, or -1. */
static pid_t spawn(char *const argv[], const char *log) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    if (g_n_pids < MAX_PIDS) g_pids[g_n_pids++] = pid;
    return pid;
}

/* Waits for pid up to ms; SIGKILL after that. Returns the wait status. */
static int reap(pid_t pid, int ms) {
    int status = -1;
    for (int t = 0; t < ms; t += 10) {
        if (waitpid(pid, &status, WNOHANG) == pid) goto done;
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
done:
    for (int i = 0; i < g_n_pids; i++)
        if (g_pids[i] == pid) g_pids[i] = 0;
    return status;
}

/* Runs argv to completion (bounded by ms), capturing stdout into a malloc'd string.
 * Returns the exit status (-1 on failure / timeout). */
static int run_capture(char *const argv[], char **out, size_t *out_len, int ms) {
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
    if (g_n_pids < MAX_PIDS) g_pids[g_n_pids++] = pid;
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
        sleep_ms(2);
    }
    close(fds[0]);
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    int status = reap(pid, (int)(deadline - proto_clock_ms()) > 0 ? (int)(deadline - proto_clock_ms()) : 1);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ============================================================================================== */
/* test clients                                                                                    */
/* ============================================================================================== */

static void *g_ctx;

typedef struct {
    void *sock;
    msgpack_sbuffer sb;
    proto_frame f;
} tclient;

static void tc_open(tclient *c, const char *endpoint) {
    char err[128];
    memset(c, 0, sizeof(*c));
    msgpack_sbuffer_init(&c->sb);
    c->sock = proto_sock_new(g_ctx, ZMQ_DEALER, err, sizeof(err));
    if (c->sock) zmq_connect(c->sock, endpoint);
}

static void tc_close(tclient *c) {
    proto_frame_close(&c->f);
    proto_sock_close(&c->sock);
    msgpack_sbuffer_destroy(&c->sb);
}

static int tc_send(tclient *c, const proto_msg *m) {
    char err[256];
    int rc = proto_sock_send(c->sock, NULL, 0, m, 0, &c->sb, err, sizeof(err));
    if (rc < 0) printf("  send: %s\n", err);
    return rc;
}

static int tc_send_raw(tclient *c, const void *p, size_t n) { return zmq_send(c->sock, p, n, 0) < 0 ? -1 : 0; }

/* Next message that is not a heartbeat, within ms. 1 (m valid until the next call; destroy it), 0 timeout. */
static int tc_recv(tclient *c, proto_msg *m, int ms) {
    double deadline = proto_clock_ms() + ms;
    for (;;) {
        proto_frame_close(&c->f);
        long left = (long)(deadline - proto_clock_ms());
        if (left < 0) return 0;
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, left) <= 0) continue;
        if (proto_sock_recv(c->sock, 0, &c->f, ZMQ_DONTWAIT) < 0) continue;
        char err[256];
        if (proto_decode(m, proto_frame_data(&c->f), proto_frame_size(&c->f), err, sizeof(err)) != PROTO_OK) {
            printf("  undecodable reply: %s\n", err);
            proto_msg_destroy(m);
            continue;
        }
        if (m->type == PROTO_T_HB) {
            proto_msg_destroy(m);
            continue;
        }
        return 1;
    }
}

typedef struct {
    const char *prompt;
    int max_tokens;
    float temperature;
    int top_k;
    float top_p;
    uint64_t seed;
    const char *stop;
} treq;

static int tc_submit(tclient *c, uint64_t id, const treq *r) {
    proto_msg m;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.id = (proto_cid){0, id, {0}};
    m.prompt = (proto_str){r->prompt, (uint32_t)strlen(r->prompt)};
    m.has = PROTO_HAS(PF_PROMPT);
    m.max_tokens = r->max_tokens;
    m.temperature = r->temperature;
    m.top_k = r->top_k;
    m.top_p = r->top_p > 0 ? r->top_p : 1.0f;
    m.seed = r->seed;
    if (r->stop) {
        m.stop[0] = (proto_str){r->stop, (uint32_t)strlen(r->stop)};
        m.n_stop = 1;
    }
    return tc_send(c, &m);
}

static int tc_cancel(tclient *c, uint64_t id) {
    proto_msg m;
    proto_msg_init(&m, PROTO_T_CANCEL);
    m.id = (proto_cid){0, id, {0}};
    m.has = PROTO_HAS(PF_ID);
    return tc_send(c, &m);
}

/* The outcome of one request, gathered from its frames. */
typedef struct {
    char *streamed;
    size_t streamed_len;
    char *text;              /* the done frame's text */
    size_t text_len;
    int n_tokens, done, error_code, bad_index;
    proto_finish finish;
    double t_first_ms, t_end_ms;
} tresult;

static void tresult_free(tresult *r) {
    free(r->streamed);
    free(r->text);
    memset(r, 0, sizeof(*r));
}

/* Folds one frame into r. 1 if the request ended. */
static int tresult_add(tresult *r, const proto_msg *m) {
    if (m->type == PROTO_T_TOKEN) {
        if (m->index != r->n_tokens) r->bad_index = 1;
        r->n_tokens++;
        if (r->t_first_ms == 0) r->t_first_ms = proto_clock_ms();
        r->streamed = realloc(r->streamed, r->streamed_len + m->text.len + 1);
        if (m->text.len) memcpy(r->streamed + r->streamed_len, m->text.ptr, m->text.len);
        r->streamed_len += m->text.len;
        r->streamed[r->streamed_len] = 0;
        return 0;
    }
    if (m->type == PROTO_T_DONE) {
        r->done = 1;
        r->finish = m->finish;
        r->text = malloc(m->text.len + 1);
        if (m->text.len) memcpy(r->text, m->text.ptr, m->text.len);
        r->text[m->text.len] = 0;
        r->text_len = m->text.len;
        r->t_end_ms = proto_clock_ms();
        return 1;
    }
    if (m->type == PROTO_T_ERROR) {
        r->error_code = m->code;
        r->t_end_ms = proto_clock_ms();
        return 1;
    }
    return 0;
}

/* ============================================================================================== */
/* the daemon                                                                                      */
/* ============================================================================================== */

typedef struct {
    pid_t pid;
    char client_ep[600], worker_ep[600], log[600];
} daemon_t;

/* Stats from the broker (m valid until the next call on c). 1 or 0 on timeout. */
static int get_stats(tclient *c, proto_msg *m) {
    proto_msg q;
    proto_msg_init(&q, PROTO_T_STATS);
    if (tc_send(c, &q) < 0) return 0;
    for (;;) {
        if (!tc_recv(c, m, 3000)) return 0;
        if (m->type == PROTO_T_STATS_REPLY) return 1;
        proto_msg_destroy(m);
    }
}

/* Waits until the broker reports n workers and nothing running. 1 or 0 on timeout. */
static int wait_workers(const daemon_t *d, int n, int ms) {
    tclient c;
    tc_open(&c, d->client_ep);
    double deadline = proto_clock_ms() + ms;
    int ok = 0;
    while (!ok && proto_clock_ms() < deadline) {
        proto_msg m;
        if (get_stats(&c, &m)) {
            ok = (int)m.n_worker_list == n && m.running == 0;
            proto_msg_destroy(&m);
        }
        if (!ok) sleep_ms(50);
    }
    tc_close(&c);
    return ok;
}

static int daemon_start(daemon_t *d, const char *name, int workers, int slots, int max_queue, int delay_ms) {
    snprintf(d->client_ep, sizeof(d->client_ep), "ipc://%s/%s-client.sock", g_tmp, name);
    snprintf(d->worker_ep, sizeof(d->worker_ep), "ipc://%s/%s-worker.sock", g_tmp, name);
    snprintf(d->log, sizeof(d->log), "%s/%s.log", g_tmp, name);
    char bin[600], wbin[600], w[16], s[16], q[16], dl[16];
    snprintf(bin, sizeof(bin), "%s/gpt2d", g_build);
    snprintf(wbin, sizeof(wbin), "%s/gpt2d-worker", g_build);
    snprintf(w, sizeof(w), "%d", workers);
    snprintf(s, sizeof(s), "%d", slots);
    snprintf(q, sizeof(q), "%d", max_queue);
    snprintf(dl, sizeof(dl), "%d", delay_ms);
    char *argv[] = {bin, "--model", g_model, "--workers", w, "--slots", s, "--max-queue", q,
                    "--listen", d->client_ep, "--worker-listen", d->worker_ep, "--worker-bin", wbin,
                    "--threads", "1", "--debug-step-delay-ms", dl, "--log-level", "debug", NULL};
    d->pid = spawn(argv, d->log);
    return d->pid > 0 && wait_workers(d, workers, 60000);
}

static int daemon_stop(daemon_t *d) {
    kill(d->pid, SIGTERM);
    int status = reap(d->pid, 15000);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int log_contains(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f)) found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* ============================================================================================== */
/* scenarios                                                                                       */
/* ============================================================================================== */

#define N_CONCURRENT 64

static const char *const g_prompts[] = {
    "Hello, my name is", "The quick brown fox", "Dear team,\n\nThanks for", "Once upon a time",
    "In 1998, the", "Subject: Partnership opportunity\n\n", "def main():\n    ", "The weather today",
};

static treq make_req(int i, char *prompt_buf, size_t cap) {
    snprintf(prompt_buf, cap, "%s %d", g_prompts[i % 8], i);
    treq r = {prompt_buf, 8 + (i * 7) % 40, 0, 0, 0, (uint64_t)i, NULL};
    if (i % 4 != 0) { /* sampled: temperature, top-k, top-p, per-request seed */
        r.temperature = 0.7f + 0.1f * (float)(i % 5);
        r.top_k = (i % 3) * 20;
        r.top_p = (i % 2) ? 0.9f : 1.0f;
    }
    if (i % 8 == 5) r.stop = "a";
    return r;
}

/* What gpt2-tool generate prints for r. */
static int reference(const treq *r, char **out, size_t *len) {
    char bin[600], n[16], t[32], k[16], p[32], s[32];
    snprintf(bin, sizeof(bin), "%s/gpt2-tool", g_build);
    snprintf(n, sizeof(n), "%d", r->max_tokens);
    snprintf(t, sizeof(t), "%.9g", r->temperature);
    snprintf(k, sizeof(k), "%d", r->top_k);
    snprintf(p, sizeof(p), "%.9g", r->top_p > 0 ? r->top_p : 1.0f);
    snprintf(s, sizeof(s), "%llu", (unsigned long long)r->seed);
    char *argv[24] = {bin, "generate", "--model", g_model, "--prompt", (char *)r->prompt, "-n", n,
                      "--temperature", t, "--top-k", k, "--top-p", p, "--seed", s, "--threads", "1"};
    int a = 18;
    if (r->stop) {
        argv[a++] = "--stop";
        argv[a++] = (char *)r->stop;
    }
    argv[a] = NULL;
    return run_capture(argv, out, len, 60000);
}

/* Reads the frames of n clients (client i's request has id base + i) until every request ended
 * or ms passed. Returns how many are still open. */
static int collect(tclient *cl, tresult *res, int n, uint64_t base, int ms) {
    zmq_pollitem_t items[N_CONCURRENT];
    int left = 0;
    for (int i = 0; i < n; i++) left += !(res[i].done || res[i].error_code);
    double deadline = proto_clock_ms() + ms;
    while (left > 0 && proto_clock_ms() < deadline) {
        for (int i = 0; i < n; i++) items[i] = (zmq_pollitem_t){cl[i].sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(items, n, 200) <= 0) continue;
        for (int i = 0; i < n; i++) {
            if (!(items[i].revents & ZMQ_POLLIN)) continue;
            proto_msg m;
            while (tc_recv(&cl[i], &m, 0)) {
                if (m.id.num == base + (uint64_t)i && !(res[i].done || res[i].error_code) && tresult_add(&res[i], &m))
                    left--;
                proto_msg_destroy(&m);
            }
        }
    }
    return left;
}

static void test_concurrent(const daemon_t *d) {
    static tclient cl[N_CONCURRENT];
    static tresult res[N_CONCURRENT];
    static char prompts[N_CONCURRENT][96];
    treq reqs[N_CONCURRENT];
    for (int i = 0; i < N_CONCURRENT; i++) {
        reqs[i] = make_req(i, prompts[i], sizeof(prompts[i]));
        tc_open(&cl[i], d->client_ep);
        memset(&res[i], 0, sizeof(res[i]));
    }
    for (int i = 0; i < N_CONCURRENT; i++) tc_submit(&cl[i], 1000 + (uint64_t)i, &reqs[i]);
    int left = collect(cl, res, N_CONCURRENT, 1000, 120000);
    check(left == 0, "all %d concurrent requests ended (%d left)", N_CONCURRENT, left);
    int same = 0, stream_ok = 0, index_ok = 0;
    for (int i = 0; i < N_CONCURRENT; i++) {
        char *ref;
        size_t ref_len;
        int rc = reference(&reqs[i], &ref, &ref_len);
        int ok = rc == 0 && res[i].done && res[i].streamed_len == ref_len &&
                 (ref_len == 0 || memcmp(res[i].streamed, ref, ref_len) == 0);
        if (!ok)
            printf("  request %d differs: daemon '%s' vs gpt2-tool '%s' (rc %d, done %d, error %d)\n", i,
                   res[i].streamed ? res[i].streamed : "", ref ? ref : "", rc, res[i].done, res[i].error_code);
        same += ok;
        int sok = res[i].done && res[i].text_len == res[i].streamed_len &&
                  (res[i].text_len == 0 || memcmp(res[i].text, res[i].streamed, res[i].text_len) == 0);
        if (!sok && res[i].done) printf("  request %d: streamed '%s' != final '%s'\n", i, res[i].streamed, res[i].text);
        stream_ok += sok;
        index_ok += !res[i].bad_index;
        free(ref);
    }
    check(same == N_CONCURRENT, "%d/%d concurrent clients got exactly gpt2-tool generate's output", same,
          N_CONCURRENT);
    check(stream_ok == N_CONCURRENT, "%d/%d: streamed text == done text", stream_ok, N_CONCURRENT);
    check(index_ok == N_CONCURRENT, "%d/%d: token indexes are 0, 1, 2, ...", index_ok, N_CONCURRENT);
    for (int i = 0; i < N_CONCURRENT; i++) {
        tresult_free(&res[i]);
        tc_close(&cl[i]);
    }
}

/* A 1-slot, 1-queue-place daemon: A runs, B waits, C is refused at once; cancelling A lets B run. */
static void test_cancel_and_overload(void) {
    daemon_t d;
    check(daemon_start(&d, "small", 1, 1, 1, 20), "1-slot daemon starts");
    tclient a, b, c;
    tc_open(&a, d.client_ep);
    tc_open(&b, d.client_ep);
    tc_open(&c, d.client_ep);
    treq longr = {"A long story", 200, 0, 0, 0, 0, NULL};
    tresult ra = {0}, rb = {0}, rc = {0};
    proto_msg m;
    tc_submit(&a, 1, &longr);
    int got_first = 0;
    while (!got_first && tc_recv(&a, &m, 10000)) {
        tresult_add(&ra, &m);
        got_first = m.type == PROTO_T_TOKEN;
        proto_msg_destroy(&m);
    }
    check(got_first, "A streams");
    tc_submit(&b, 2, &longr); /* queued: the queue holds 1 */
    sleep_ms(100);
    double t0 = proto_clock_ms();
    tc_submit(&c, 3, &longr);
    int refused = tc_recv(&c, &m, 5000) && m.type == PROTO_T_ERROR && m.code == PROTO_CODE_OVERLOADED &&
                  m.id.num == 3;
    double dt = proto_clock_ms() - t0;
    if (refused) proto_msg_destroy(&m);
    check(refused, "a full queue answers overloaded");
    check(dt < 500, "overloaded comes at once (%.1f ms)", dt);

    /* cancel A mid-stream: it ends cancelled, and B (waiting) is admitted */
    tc_cancel(&a, 1);
    while (!ra.done && !ra.error_code && tc_recv(&a, &m, 10000)) {
        tresult_add(&ra, &m);
        proto_msg_destroy(&m);
    }
    check(ra.done && ra.finish == PROTO_FINISH_CANCELLED, "A ends with finish cancelled");
    check(ra.n_tokens < 200, "A was cut short (%d tokens)", ra.n_tokens);
    int b_runs = 0;
    while (!b_runs && tc_recv(&b, &m, 10000)) {
        b_runs = m.type == PROTO_T_TOKEN;
        tresult_add(&rb, &m);
        proto_msg_destroy(&m);
    }
    check(b_runs, "after the cancel the waiting request is admitted");
    /* cancelling a request that is still queued ends it at once */
    tc_submit(&c, 4, &longr);
    sleep_ms(50);
    tc_cancel(&c, 4);
    int c_done = tc_recv(&c, &m, 5000) && m.type == PROTO_T_DONE && m.finish == PROTO_FINISH_CANCELLED;
    if (c_done) proto_msg_destroy(&m);
    check(c_done, "a queued request cancels at once");
    tc_cancel(&b, 2);
    while (!rb.done && !rb.error_code && tc_recv(&b, &m, 10000)) {
        tresult_add(&rb, &m);
        proto_msg_destroy(&m);
    }
    check(rb.done && rb.finish == PROTO_FINISH_CANCELLED, "B cancelled");
    treq shortr = {"Short", 4, 0, 0, 0, 0, NULL};
    tc_submit(&c, 5, &shortr);
    while (!rc.done && !rc.error_code && tc_recv(&c, &m, 10000)) {
        tresult_add(&rc, &m);
        proto_msg_destroy(&m);
    }
    check(rc.done && rc.finish == PROTO_FINISH_LENGTH && rc.n_tokens == 4, "the freed slot serves the next request");

    /* gpt2c: overloaded -> exit 3 while the slot and the queue are both taken */
    tc_submit(&a, 6, &longr);
    int a_runs = 0;
    while (!a_runs && tc_recv(&a, &m, 10000)) {
        a_runs = m.type == PROTO_T_TOKEN;
        proto_msg_destroy(&m);
    }
    tc_submit(&b, 7, &longr);
    sleep_ms(100);
    char bin[600], *out;
    size_t out_len;
    snprintf(bin, sizeof(bin), "%s/gpt2c", g_build);
    char *argv[] = {bin, "--connect", d.client_ep, "x", NULL};
    int code = run_capture(argv, &out, &out_len, 10000);
    free(out);
    check(code == 3, "gpt2c exits 3 on overloaded (got %d)", code);
    tresult_free(&ra);
    tresult_free(&rb);
    tresult_free(&rc);
    tc_close(&a);
    tc_close(&b);
    tc_close(&c);
    check(daemon_stop(&d), "the small daemon stops cleanly on SIGTERM");
}

/* A client that disappears mid-stream: the broker cancels its request on the worker. */
static void test_vanish(const daemon_t *d) {
    tclient a;
    tc_open(&a, d->client_ep);
    treq longr = {"Vanishing act", 200, 0, 0, 0, 0, NULL};
    tc_submit(&a, 77, &longr);
    proto_msg m;
    int streaming = 0;
    while (!streaming && tc_recv(&a, &m, 10000)) {
        streaming = m.type == PROTO_T_TOKEN;
        proto_msg_destroy(&m);
    }
    check(streaming, "the soon-to-vanish client streams");
    tc_close(&a); /* gone, without a cancel */
    tclient s;
    tc_open(&s, d->client_ep);
    int freed = 0;
    double t0 = proto_clock_ms();
    while (!freed && proto_clock_ms() - t0 < 3000) {
        if (get_stats(&s, &m)) {
            int credit = 0, slots = 0;
            for (uint32_t i = 0; i < m.n_worker_list; i++) {
                credit += m.worker_list[i].credit;
                slots += m.worker_list[i].slots;
            }
            freed = m.running == 0 && credit == slots;
            proto_msg_destroy(&m);
        }
        if (!freed) sleep_ms(20);
    }
    /* 200 tokens at >= 10 ms a step would take > 2 s: freed sooner means it was cancelled */
    check(freed, "the vanished client's slot is free again after %.0f ms", proto_clock_ms() - t0);
    check(log_contains(d->log, "cancelled by the broker"), "the worker logged the cancel");
    tc_close(&s);
}

/* SIGKILL a worker with requests in flight: each of them ends with an error frame, the others
 * finish, a new worker replaces it, and the daemon keeps serving. */
static void test_worker_kill(const daemon_t *d) {
    enum { N = 8 };
    tclient cl[N];
    tresult res[N];
    treq longr = {"Kill switch", 150, 0, 0, 0, 0, NULL};
    for (int i = 0; i < N; i++) {
        tc_open(&cl[i], d->client_ep);
        memset(&res[i], 0, sizeof(res[i]));
        tc_submit(&cl[i], 500 + (uint64_t)i, &longr);
    }
    /* all streaming */
    for (int i = 0; i < N; i++) {
        proto_msg m;
        while (res[i].n_tokens == 0 && !res[i].error_code && tc_recv(&cl[i], &m, 10000)) {
            tresult_add(&res[i], &m);
            proto_msg_destroy(&m);
        }
    }
    tclient s;
    tc_open(&s, d->client_ep);
    proto_msg m;
    pid_t victim = 0;
    int victim_running = 0;
    if (get_stats(&s, &m)) {
        for (uint32_t i = 0; i < m.n_worker_list; i++)
            if (m.worker_list[i].running > victim_running) {
                victim = m.worker_list[i].pid;
                victim_running = m.worker_list[i].running;
            }
        proto_msg_destroy(&m);
    }
    check(victim > 0 && victim_running > 0, "a worker with requests in flight (%d)", victim_running);
    if (victim > 0) kill(victim, SIGKILL);
    /* its requests are replayed on the other worker: every stream goes on, without a gap or a repeat */
    int ended = 0, completed = 0, contiguous = 0, same_text = 0;
    collect(cl, res, N, 500, 60000);
    for (int i = 0; i < N; i++) {
        ended += res[i].done || res[i].error_code;
        completed += res[i].done && res[i].finish == PROTO_FINISH_LENGTH && res[i].n_tokens == 150;
        contiguous += !res[i].bad_index;
        same_text += res[i].done && res[i].text_len == res[i].streamed_len &&
                     (res[i].text_len == 0 || memcmp(res[i].text, res[i].streamed, res[i].text_len) == 0);
    }
    check(ended == N, "every request ended with a frame (%d/%d)", ended, N);
    check(completed == N, "every request completed all 150 tokens, the killed worker's %d included (%d/%d)",
          victim_running, completed, N);
    check(contiguous == N, "token indexes stayed 0, 1, 2, ... across the replay (%d/%d)", contiguous, N);
    check(same_text == N, "streamed text == done text across the replay (%d/%d)", same_text, N);
    check(wait_workers(d, 2, 30000), "the killed worker is replaced");
    treq shortr = {"After the storm", 6, 0, 0, 0, 0, NULL};
    tresult r = {0};
    tc_submit(&s, 9, &shortr);
    while (!r.done && !r.error_code && tc_recv(&s, &m, 10000)) {
        tresult_add(&r, &m);
        proto_msg_destroy(&m);
    }
    check(r.done && r.n_tokens == 6, "the daemon keeps serving");
    tresult_free(&r);
    for (int i = 0; i < N; i++) {
        tresult_free(&res[i]);
        tc_close(&cl[i]);
    }
    tc_close(&s);
}

/* Hostile and mistaken frames get specific error frames; the broker stays up. */
static void test_bad_frames(const daemon_t *d) {
    tclient c;
    tc_open(&c, d->client_ep);
    proto_msg m;
    tc_send_raw(&c, "\xc1garbage", 8);
    int ok = tc_recv(&c, &m, 3000) && m.type == PROTO_T_ERROR && m.code == PROTO_CODE_BAD_REQUEST &&
             !(m.has & PROTO_HAS(PF_ID));
    if (ok) proto_msg_destroy(&m);
    check(ok, "garbage gets bad_request without an id");

    /* a submit from a future protocol version: unsupported_version, addressed to its id */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "t", 1);
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "submit", 6);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "v", 1);
    msgpack_pack_int(&pk, 99);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "id", 2);
    msgpack_pack_str(&pk, 3);
    msgpack_pack_str_body(&pk, "abc", 3);
    tc_send_raw(&c, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    ok = tc_recv(&c, &m, 3000) && m.type == PROTO_T_ERROR && m.code == PROTO_CODE_UNSUPPORTED_VERSION &&
         m.id.is_str && m.id.str.len == 3 && memcmp(m.id.str.ptr, "abc", 3) == 0;
    if (ok) proto_msg_destroy(&m);
    check(ok, "a future version gets unsupported_version with the request's id");

    /* a prompt the engine refuses (longer than the context) */
    static char big[8192];
    memset(big, 'x', sizeof(big) - 1);
    for (size_t i = 0; i + 1 < sizeof(big); i += 2) big[i] = ' ';
    treq r = {big, 4, 0, 0, 0, 0, NULL};
    tc_submit(&c, 11, &r);
    ok = tc_recv(&c, &m, 5000) && m.type == PROTO_T_ERROR && m.code == PROTO_CODE_INVALID_REQUEST && m.id.num == 11;
    if (ok) proto_msg_destroy(&m);
    check(ok, "a prompt longer than the context gets invalid_request");

    /* duplicate id while live */
    treq longr = {"Twice", 100, 0, 0, 0, 0, NULL};
    tc_submit(&c, 12, &longr);
    tc_submit(&c, 12, &longr);
    int dup = 0, done = 0;
    while (!(dup && done) && tc_recv(&c, &m, 10000)) {
        if (m.type == PROTO_T_ERROR && m.code == PROTO_CODE_DUPLICATE_ID) dup = 1;
        if (m.type == PROTO_T_TOKEN && m.index == 0) tc_cancel(&c, 12);
        if (m.type == PROTO_T_DONE) done = 1;
        proto_msg_destroy(&m);
    }
    check(dup, "a second submit with a live id gets duplicate_id");
    check(done, "the first one still ends");
    /* a worker-only message on the client link */
    proto_msg_init(&m, PROTO_T_CREDIT);
    m.credit = 5;
    tc_send(&c, &m);
    ok = tc_recv(&c, &m, 3000) && m.type == PROTO_T_ERROR && m.code == PROTO_CODE_BAD_REQUEST;
    if (ok) proto_msg_destroy(&m);
    check(ok, "a worker message from a client gets bad_request");
    tc_close(&c);
}

/* gpt2c: streaming output equals gpt2-tool's, batch results match gpt2-tool batch, exit codes. */
static void test_cli(const daemon_t *d) {
    char gpt2c[600], tool[600], *out, *ref;
    size_t out_len, ref_len;
    snprintf(gpt2c, sizeof(gpt2c), "%s/gpt2c", g_build);
    snprintf(tool, sizeof(tool), "%s/gpt2-tool", g_build);
    char *a1[] = {gpt2c, "--connect", (char *)d->client_ep, "-n", "30", "--temperature", "0.9", "--top-k", "50",
                  "--seed", "42", "The meaning of life is", NULL};
    char *a2[] = {tool, "generate", "--model", g_model, "--prompt", "The meaning of life is", "-n", "30",
                  "--temperature", "0.9", "--top-k", "50", "--seed", "42", "--threads", "1", NULL};
    int rc1 = run_capture(a1, &out, &out_len, 30000);
    int rc2 = run_capture(a2, &ref, &ref_len, 30000);
    check(rc1 == 0 && rc2 == 0 && out_len == ref_len && memcmp(out, ref, out_len) == 0,
          "gpt2c prints exactly what gpt2-tool generate prints (rc %d/%d)", rc1, rc2);
    free(out);
    free(ref);

    /* batch: the same input through gpt2c batch and gpt2-tool batch */
    char in[700], o1[700], o2[700];
    snprintf(in, sizeof(in), "%s/batch-in.jsonl", g_tmp);
    snprintf(o1, sizeof(o1), "%s/batch-gpt2c.jsonl", g_tmp);
    snprintf(o2, sizeof(o2), "%s/batch-tool.jsonl", g_tmp);
    FILE *f = fopen(in, "w");
    for (int i = 0; i < 12; i++)
        fprintf(f, "{\"id\": \"b-%d\", \"prompt\": \"Line %d says\", \"max_tokens\": %d, \"temperature\": %s, "
                   "\"seed\": %d, \"top_k\": 40}\n",
                i, i, 5 + i, i % 2 ? "0.8" : "0", i);
    fclose(f);
    char *b1[] = {gpt2c, "batch", in, "--connect", (char *)d->client_ep, "-c", "5", "-o", o1, NULL};
    char *b2[] = {tool, "batch", "--model", g_model, "--input", in, "--output", o2, "--concurrency", "5",
                  "--threads", "1", NULL};
    rc1 = run_capture(b1, &out, &out_len, 60000);
    free(out);
    rc2 = run_capture(b2, &out, &out_len, 60000);
    free(out);
    check(rc1 == 0 && rc2 == 0, "both batch runs succeed (%d, %d)", rc1, rc2);
    FILE *f1 = fopen(o1, "r"), *f2 = fopen(o2, "r");
    int lines = 0, same = 0;
    char l1[65536], l2[65536];
    while (f1 && f2 && fgets(l1, sizeof(l1), f1) && fgets(l2, sizeof(l2), f2)) {
        lines++;
        json_t *j1 = json_loads(l1, 0, NULL), *j2 = json_loads(l2, 0, NULL);
        int keys_same = json_object_size(j1) == json_object_size(j2);
        const char *key;
        json_t *v;
        json_object_foreach(j1, key, v) keys_same &= json_object_get(j2, key) != NULL;
        static const char *const fields[] = {"id", "text", "tokens", "finish_reason"};
        int vals_same = keys_same;
        for (int k = 0; k < 4; k++) vals_same &= json_equal(json_object_get(j1, fields[k]), json_object_get(j2, fields[k]));
        vals_same &= json_equal(json_object_get(json_object_get(j1, "usage"), "completion_tokens"),
                                json_object_get(json_object_get(j2, "usage"), "completion_tokens"));
        if (!vals_same) printf("  batch line %d differs:\n    %s    %s", lines, l1, l2);
        same += vals_same;
        json_decref(j1);
        json_decref(j2);
    }
    if (f1) fclose(f1);
    if (f2) fclose(f2);
    check(lines == 12 && same == 12, "gpt2c batch == gpt2-tool batch on %d/12 lines (same fields and values)", same);

    /* unreachable broker: exit 4 */
    char nowhere[700];
    snprintf(nowhere, sizeof(nowhere), "ipc://%s/nobody.sock", g_tmp);
    char *a3[] = {gpt2c, "--connect", nowhere, "x", NULL};
    double t0 = proto_clock_ms();
    rc1 = run_capture(a3, &out, &out_len, 20000);
    free(out);
    check(rc1 == 4, "gpt2c exits 4 when no broker answers (got %d after %.0f ms)", rc1, proto_clock_ms() - t0);
    /* bad flag: exit 1 */
    char *a4[] = {gpt2c, "--temperature", "hot", "x", NULL};
    rc1 = run_capture(a4, &out, &out_len, 5000);
    free(out);
    check(rc1 == 1, "gpt2c exits 1 on a bad flag");
    /* a parameter the protocol refuses: exit 1 before anything is sent (local check) or 2 */
    char *a5[] = {gpt2c, "--connect", (char *)d->client_ep, "--top-p", "0", "x", NULL};
    rc1 = run_capture(a5, &out, &out_len, 10000);
    free(out);
    check(rc1 == 1 || rc1 == 2, "gpt2c refuses top-p 0 (exit %d)", rc1);
    /* stats */
    char *a6[] = {gpt2c, "stats", "--connect", (char *)d->client_ep, NULL};
    rc1 = run_capture(a6, &out, &out_len, 10000);
    check(rc1 == 0 && out && strstr(out, "tokens/s") && strstr(out, "local-0") && strstr(out, "p99"),
          "gpt2c stats prints the broker's state");
    free(out);

    /* Ctrl-C: SIGINT to a streaming gpt2c cancels and exits 130 */
    char log[700];
    snprintf(log, sizeof(log), "%s/gpt2c-int.log", g_tmp);
    char *a7[] = {gpt2c, "--connect", (char *)d->client_ep, "-n", "200", "Interrupt me", NULL};
    pid_t p = spawn(a7, log);
    sleep_ms(700);
    kill(p, SIGINT);
    int status = reap(p, 5000);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 130, "gpt2c exits 130 on Ctrl-C (status %d)", status);
}

/* Workers started elsewhere: a broker with --workers 0 queues a request until a worker connects
 * by itself, serves through it, and the worker re-registers with a restarted broker. */
static void test_remote_worker(void) {
    daemon_t d;
    check(daemon_start(&d, "remote", 0, 4, 8, 0), "a broker without local workers starts");
    tclient c;
    tc_open(&c, d.client_ep);
    treq r = {"Far away", 5, 0, 0, 0, 0, NULL};
    tc_submit(&c, 1, &r);
    sleep_ms(200);
    char wbin[600], wlog[700];
    snprintf(wbin, sizeof(wbin), "%s/gpt2d-worker", g_build);
    snprintf(wlog, sizeof(wlog), "%s/remote-worker.log", g_tmp);
    char *argv[] = {wbin, "--model", g_model, "--connect", d.worker_ep, "--slots", "2", "--threads", "1",
                    "--name", "far-1", NULL};
    pid_t w = spawn(argv, wlog);
    tresult res = {0};
    proto_msg m;
    while (!res.done && !res.error_code && tc_recv(&c, &m, 20000)) {
        tresult_add(&res, &m);
        proto_msg_destroy(&m);
    }
    check(res.done && res.n_tokens == 5, "the queued request is served once a worker connects by itself");
    tresult_free(&res);
    int remote = 0;
    if (get_stats(&c, &m)) {
        remote = m.n_worker_list == 1 && !m.worker_list[0].local && m.worker_list[0].slots == 2;
        proto_msg_destroy(&m);
    }
    check(remote, "stats lists it as a remote worker with its 2 slots");
    tc_close(&c);
    check(daemon_stop(&d), "the broker stops");
    char bin[600];
    snprintf(bin, sizeof(bin), "%s/gpt2d", g_build);
    char *dargv[] = {bin, "--workers", "0", "--listen", d.client_ep, "--worker-listen", d.worker_ep, NULL};
    d.pid = spawn(dargv, d.log);
    check(wait_workers(&d, 1, 15000), "the worker re-registers with a restarted broker");
    tc_open(&c, d.client_ep);
    tc_submit(&c, 2, &r);
    while (!res.done && !res.error_code && tc_recv(&c, &m, 20000)) {
        tresult_add(&res, &m);
        proto_msg_destroy(&m);
    }
    check(res.done && res.n_tokens == 5, "and serves again");
    tresult_free(&res);
    tc_close(&c);
    daemon_stop(&d);
    kill(w, SIGTERM);
    int status = reap(w, 10000);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the worker stops cleanly on SIGTERM");
}

int main(void) {
    const char *b = getenv("BUILD"), *t = getenv("GPT2D_TMP");
    snprintf(g_build, sizeof(g_build), "%s", b && *b ? b : "build");
    if (t && *t) snprintf(g_tmp, sizeof(g_tmp), "%s/e2e", t);
    else snprintf(g_tmp, sizeof(g_tmp), "/tmp/gpt2d-e2e.%d", (int)getpid());
    mkdir(g_tmp, 0700);
    snprintf(g_model, sizeof(g_model), "%s/model", g_tmp);
    atexit(kill_all);
    signal(SIGTERM, on_fatal_signal);
    signal(SIGINT, on_fatal_signal);
    signal(SIGALRM, on_fatal_signal);
    signal(SIGPIPE, SIG_IGN);
    alarm(500); /* a hard bound under tests/run.sh's own timeout */
    g_ctx = zmq_ctx_new();

    char tool[600], *out;
    size_t out_len;
    snprintf(tool, sizeof(tool), "%s/gpt2-tool", g_build);
    char *mk[] = {tool, "mkmodel", "--out", g_model, "--layers", "2", "--embd", "128", "--heads", "4", "--ctx",
                  "256", "--seed", "1", NULL};
    int rc = run_capture(mk, &out, &out_len, 60000);
    free(out);
    check(rc == 0, "gpt2-tool mkmodel makes the small model");

    daemon_t d;
    int up = daemon_start(&d, "main", 2, 32, 256, 10);
    check(up, "gpt2d starts with 2 workers");
    if (up) {
        test_concurrent(&d);
        test_bad_frames(&d);
        test_vanish(&d);
        test_cli(&d);
        test_worker_kill(&d);
        check(daemon_stop(&d), "gpt2d stops cleanly on SIGTERM");
        check(log_contains(d.log, "ready: 2 worker(s)"), "the daemon logged readiness");
    }
    test_cancel_and_overload();
    test_remote_worker();
    /* under SAN=1 the daemons and workers report memory errors and leaks into their logs */
    static const char *const logs[] = {"main.log", "small.log", "remote.log", "remote-worker.log"};
    for (int i = 0; i < 4; i++) {
        char path[700];
        snprintf(path, sizeof(path), "%s/%s", g_tmp, logs[i]);
        check(!log_contains(path, "Sanitizer") && !log_contains(path, "runtime error:"),
              "%s: no sanitizer report", logs[i]);
    }
    zmq_ctx_term(g_ctx);
    kill_all();
    return check_done("test_e2e");
}
