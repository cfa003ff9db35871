/* test_systemd.c — gpt2d under a service manager: this test plays systemd.
 *
 * It binds a NOTIFY_SOCKET (a datagram socket in $GPT2D_TMP), starts gpt2d with WATCHDOG_USEC set,
 * records every sd_notify message with its arrival time, and drives the daemon through the wire
 * protocol. Shown: EXTEND_TIMEOUT_USEC and a "starting" STATUS while the worker loads; READY=1 only
 * once a request can be served (a request queued during start-up gets its first token after READY,
 * one submitted at READY is dispatched at once); WATCHDOG=1 keeps arriving, never further apart than
 * WATCHDOG_USEC; STATUS= follows the load ("1 worker, 2 running, 1 queued"); SIGHUP reloads the
 * configuration file; a per-request log line at completion; on SIGTERM STOPPING=1 comes first, new
 * and waiting submits get shutting_down, the requests in flight still complete with their done
 * frame, and gpt2d exits 0; with a short grace a request in flight ends with a "cancelled" done frame.
 * Env: BUILD (binaries), GPT2D_TMP (scratch). Everything started is killed at exit. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "tutil.h"

#define WATCHDOG_USEC 2000000 /* what we tell gpt2d: a ping at least every 2 s (it pings every 1 s) */
#define STEP_DELAY_MS 40      /* per engine step, so requests last long enough to watch */

/* ============================================================================================== */
/* processes                                                                                       */
/* ============================================================================================== */

static pid_t g_pid; /* the gpt2d we run (also in tu.pids; its workers die with it: PR_SET_PDEATHSIG) */

/* g_pid has been reaped: forget it everywhere. */
static void forget_daemon(void) {
    for (int i = 0; i < tu.n_pids; i++)
        if (tu.pids[i] == g_pid) tu.pids[i] = 0;
    g_pid = 0;
}

/* Runs a shell command (bounded by `timeout`), its stdout into buf. The exit status, or -1. */
static int shell_capture(const char *cmd, char *buf, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(buf, 1, cap - 1, p);
    buf[n] = 0;
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ============================================================================================== */
/* the service manager's side: NOTIFY_SOCKET                                                       */
/* ============================================================================================== */

#define MAX_EVENTS 4096

typedef struct {
    double t;       /* ms, arrival */
    char text[256]; /* one line: "READY=1", "STATUS=...", ... */
} nevent;

typedef struct {
    int fd;
    double real_minus_mono; /* ms: converts the kernel's receive time (SO_TIMESTAMP) to our clock */
    char path[600];
    nevent ev[MAX_EVENTS];
    int n;
} notifier;

static int notifier_open(notifier *n, const char *name) {
    memset(n, 0, sizeof(*n));
    snprintf(n->path, sizeof(n->path), "%s/%s", tu.tmp, name);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(n->path) >= sizeof(a.sun_path)) return -1;
    strcpy(a.sun_path, n->path);
    unlink(n->path);
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int on = 1;
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    n->real_minus_mono = (double)rt.tv_sec * 1e3 + (double)rt.tv_nsec / 1e6 - proto_clock_ms();
    return n->fd >= 0 && setsockopt(n->fd, SOL_SOCKET, SO_TIMESTAMP, &on, sizeof(on)) == 0 &&
                   bind(n->fd, (struct sockaddr *)&a, sizeof(a)) == 0
               ? 0
               : -1;
}

static void notifier_close(notifier *n) {
    if (n->fd >= 0) close(n->fd);
    unlink(n->path);
}

/* Reads every datagram waiting, one event per line, each stamped with the time the kernel received
 * it (so a test busy elsewhere does not make the daemon look late). */
static void notifier_read(notifier *n) {
    char buf[4096];
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(struct timeval))];
    } ctl;
    for (;;) {
        struct iovec iov = {buf, sizeof(buf) - 1};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof(ctl)};
        ssize_t got = recvmsg(n->fd, &mh, 0);
        if (got <= 0) return;
        buf[got] = 0;
        double now = proto_clock_ms();
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_TIMESTAMP) continue;
            struct timeval tv;
            memcpy(&tv, CMSG_DATA(c), sizeof(tv));
            now = (double)tv.tv_sec * 1e3 + (double)tv.tv_usec / 1e3 - n->real_minus_mono;
        }
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
            if (n->n == MAX_EVENTS) return;
            n->ev[n->n].t = now;
            snprintf(n->ev[n->n].text, sizeof(n->ev[n->n].text), "%s", line);
            n->n++;
        }
    }
}

/* Index of the first event from `from` on that starts with prefix (and contains needle, if not
 * NULL), or -1. */
static int notifier_find(const notifier *n, int from, const char *prefix, const char *needle) {
    for (int i = from; i < n->n; i++)
        if (strncmp(n->ev[i].text, prefix, strlen(prefix)) == 0 && (!needle || strstr(n->ev[i].text, needle)))
            return i;
    return -1;
}

/* ============================================================================================== */
/* the daemon and a client                                                                         */
/* ============================================================================================== */

typedef struct {
    char client_ep[700], worker_ep[700], log[700], conf[700];
    tu_client c; /* our link to the broker */
    notifier nt;
} rig;

/* Starts gpt2d (1 worker, 2 slots) with NOTIFY_SOCKET and WATCHDOG_USEC in its environment; its
 * settings come from a configuration file (log_file: its log-file setting, or NULL for stderr). */
static int rig_start(rig *r, const char *name, int grace_ms, const char *log_file) {
    snprintf(r->client_ep, sizeof(r->client_ep), "ipc://%s/%s-client.sock", tu.tmp, name);
    snprintf(r->worker_ep, sizeof(r->worker_ep), "ipc://%s/%s-worker.sock", tu.tmp, name);
    snprintf(r->log, sizeof(r->log), "%s/%s.log", tu.tmp, name);
    snprintf(r->conf, sizeof(r->conf), "%s/%s.conf", tu.tmp, name);
    FILE *f = fopen(r->conf, "w");
    if (!f) return -1;
    fprintf(f, "# written by test_systemd\nworkers = 1\nslots = 2\nmax-queue = 64\nlog-level = info\n"
               "shutdown-grace-ms = %d\n",
            grace_ms);
    if (log_file) fprintf(f, "log-file = %s\n", log_file);
    fclose(f);
    char nname[64];
    snprintf(nname, sizeof(nname), "%s-notify.sock", name);
    if (notifier_open(&r->nt, nname) < 0) return -1;
    char bin[600], wbin[600], delay[16];
    snprintf(bin, sizeof(bin), "%s/gpt2d", tu.build);
    snprintf(wbin, sizeof(wbin), "%s/gpt2d-worker", tu.build);
    snprintf(delay, sizeof(delay), "%d", STEP_DELAY_MS);
    char *argv[] = {bin, "--config", r->conf, "--model", tu.model, "--listen", r->client_ep, "--worker-listen",
                    r->worker_ep, "--worker-bin", wbin, "--threads", "1", "--debug-step-delay-ms", delay, NULL};
    g_pid = fork();
    if (g_pid < 0) return -1;
    if (g_pid > 0 && tu.n_pids < TU_MAX_PIDS) tu.pids[tu.n_pids++] = g_pid;
    if (g_pid == 0) {
        int fd = open(r->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        char usec[32];
        snprintf(usec, sizeof(usec), "%d", WATCHDOG_USEC);
        setenv("NOTIFY_SOCKET", r->nt.path, 1);
        setenv("WATCHDOG_USEC", usec, 1);
        unsetenv("WATCHDOG_PID");
        unsetenv("JOURNAL_STREAM");
        execv(argv[0], argv);
        _exit(127);
    }
    return tu_client_open(&r->c, r->client_ep);
}

/* Waits for gpt2d to exit (up to ms; then SIGKILL). Its wait status, and the time of exit. */
static int rig_wait_exit(rig *r, int ms, double *t_exit) {
    int status = -1;
    for (int t = 0; t < ms; t += 5) {
        notifier_read(&r->nt);
        if (waitpid(g_pid, &status, WNOHANG) == g_pid) goto done;
        tu_sleep_ms(5);
    }
    kill(g_pid, SIGKILL);
    waitpid(g_pid, &status, 0);
done:
    *t_exit = proto_clock_ms();
    notifier_read(&r->nt);
    forget_daemon();
    return status;
}

static void rig_close(rig *r) {
    if (g_pid > 0) {
        kill(g_pid, SIGKILL);
        waitpid(g_pid, NULL, 0);
        forget_daemon();
    }
    tu_client_close(&r->c);
    notifier_close(&r->nt);
}

static int rig_submit(rig *r, uint64_t id, int max_tokens) {
    proto_msg m;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.id = (proto_cid){0, id, {0}};
    m.prompt = (proto_str){"Dear team,", 10};
    m.has = PROTO_HAS(PF_PROMPT);
    m.max_tokens = max_tokens;
    m.ignore_eos = 1;
    return tu_send(&r->c, &m);
}

/* What the client saw of one request. */
typedef struct {
    int tokens;        /* token frames */
    int done, error;   /* the final frame: done, or error with code */
    proto_finish finish;
    int done_tokens;   /* the done frame's token count */
    double queue_ms;   /* the done frame's */
    double t_first, t_end;
} outcome;

#define MAX_IDS 16

/* Reads client frames and notify datagrams for up to ms, or until stop_when(arg) says so. */
static void rig_pump(rig *r, outcome *o, int ms, int (*stop_when)(rig *, outcome *, void *), void *arg) {
    double deadline = proto_clock_ms() + ms;
    for (;;) {
        notifier_read(&r->nt);
        if (stop_when && stop_when(r, o, arg)) return;
        long left = (long)(deadline - proto_clock_ms());
        if (left < 0) return;
        zmq_pollitem_t it[2] = {{r->c.sock, 0, ZMQ_POLLIN, 0}, {NULL, r->nt.fd, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 2, left) <= 0 || !(it[0].revents & ZMQ_POLLIN)) continue;
        proto_msg m;
        if (proto_client_recv(&r->c, &m, 0, 0) != 1) continue;
        if ((m.has & PROTO_HAS(PF_ID)) && !m.id.is_str && m.id.num < MAX_IDS) {
            outcome *x = &o[m.id.num];
            double now = proto_clock_ms();
            if (m.type == PROTO_T_TOKEN && x->tokens++ == 0) x->t_first = now;
            if (m.type == PROTO_T_DONE) {
                x->done = 1;
                x->finish = m.finish;
                x->done_tokens = (int)m.n_tokens;
                x->queue_ms = m.queue_ms;
                x->t_end = now;
            }
            if (m.type == PROTO_T_ERROR) {
                x->error = m.code;
                x->t_end = now;
            }
        }
        proto_msg_destroy(&m);
    }
}

static int until_ready(rig *r, outcome *o, void *arg) {
    (void)o, (void)arg;
    return notifier_find(&r->nt, 0, "READY=1", NULL) >= 0;
}

static int until_ended(rig *r, outcome *o, void *arg) {
    (void)r;
    const int *ids = arg; /* -1 terminated */
    for (int i = 0; ids[i] >= 0; i++)
        if (!o[ids[i]].done && !o[ids[i]].error) return 0;
    return 1;
}

static int until_status(rig *r, outcome *o, void *arg) {
    (void)o;
    return notifier_find(&r->nt, 0, "STATUS=", arg) >= 0;
}

static int until_first_token(rig *r, outcome *o, void *arg) {
    (void)r;
    return o[*(const int *)arg].tokens > 0;
}

/* ============================================================================================== */
/* scenarios                                                                                       */
/* ============================================================================================== */

/* Start-up, readiness, watchdog, status, reload, and a graceful stop with requests in flight. */
static void test_lifecycle(void) {
    rig r;
    memset(&r, 0, sizeof(r));
    outcome o[MAX_IDS];
    memset(o, 0, sizeof(o));
    double t0 = proto_clock_ms();
    int up = rig_start(&r, "sd", 20000, NULL) == 0;
    check(up, "gpt2d starts under a fake NOTIFY_SOCKET");
    if (!up) {
        rig_close(&r);
        return;
    }
    /* request 1 is queued while the worker still loads the model */
    check(rig_submit(&r, 1, 2) == 0, "submit during start-up");
    rig_pump(&r, o, 30000, until_ready, NULL);
    int ready = notifier_find(&r.nt, 0, "READY=1", NULL);
    check(ready >= 0, "READY=1 arrives (%.0f ms after start)", ready >= 0 ? r.nt.ev[ready].t - t0 : -1.0);
    if (ready < 0) {
        rig_close(&r);
        return;
    }
    double t_ready = r.nt.ev[ready].t;
    int ext = notifier_find(&r.nt, 0, "EXTEND_TIMEOUT_USEC=", NULL);
    check(ext >= 0 && ext < ready, "EXTEND_TIMEOUT_USEC= is sent while the model loads, before READY=1");
    int starting = notifier_find(&r.nt, 0, "STATUS=starting", NULL);
    check(starting >= 0 && starting < ready, "STATUS= says 'starting' before READY=1");
    check(notifier_find(&r.nt, ready + 1, "READY=1", NULL) < 0, "READY=1 is sent once");

    /* a request submitted at READY is served at once: a worker with free slots is there */
    check(rig_submit(&r, 2, 2) == 0, "submit at READY");
    int ids12[] = {1, 2, -1};
    rig_pump(&r, o, 10000, until_ended, ids12);
    check(o[1].done && o[1].finish == PROTO_FINISH_LENGTH && o[1].done_tokens == 2,
          "the request queued during start-up is served (done, 2 tokens)");
    check(o[1].tokens > 0 && o[1].t_first >= t_ready,
          "... and its first token comes after READY=1 (%.0f ms after)", o[1].t_first - t_ready);
    check(o[2].done && o[2].finish == PROTO_FINISH_LENGTH, "the request submitted at READY is served");
    check(o[2].done && o[2].queue_ms < 2000, "... without waiting for a worker (queue %.1f ms)", o[2].queue_ms);

    /* gpt2c stats: latency histograms */
    char cmd[2048], out[16384];
    snprintf(cmd, sizeof(cmd), "timeout 10 %s/gpt2c stats --connect %s", tu.build, r.client_ep);
    int rc = shell_capture(cmd, out, sizeof(out));
    check(rc == 0 && strstr(out, "time to first token (submit -> first token), since start: 2 samples"),
          "gpt2c stats shows a time-to-first-token histogram of the 2 requests");
    check(strstr(out, "request latency (submit -> end), since start: 2 samples") && strstr(out, "] ms "),
          "... and a request-latency histogram with bucket rows");
    printf("  gpt2c stats after 2 requests:\n%s", out);
    snprintf(cmd, sizeof(cmd), "timeout 10 %s/gpt2c stats --json --connect %s", tu.build, r.client_ep);
    rc = shell_capture(cmd, out, sizeof(out));
    check(rc == 0 && strstr(out, "\"ttft_hist_ms\":{\"1\":") && strstr(out, "\"inf\":"),
          "gpt2c stats --json has the histograms, keyed by bucket bound");

    /* load: 2 slots, 3 long requests -> "2 running, 1 queued" */
    for (int id = 3; id <= 5; id++) rig_submit(&r, (uint64_t)id, 40);
    rig_pump(&r, o, 5000, until_status, "2 running, 1 queued");
    int loaded = notifier_find(&r.nt, ready, "STATUS=", "2 running, 1 queued");
    check(loaded >= 0, "STATUS= reflects the load: '%s'", loaded >= 0 ? r.nt.ev[loaded].text : "(none)");
    check(loaded >= 0 && strstr(r.nt.ev[loaded].text, "1 worker") && strstr(r.nt.ev[loaded].text, "tok/s"),
          "STATUS= names the workers and the token rate");

    /* SIGHUP: the configuration file is read again */
    FILE *f = fopen(r.conf, "a");
    if (f) {
        fprintf(f, "# reloaded\n");
        fclose(f);
    }
    kill(g_pid, SIGHUP);
    int first3 = 3;
    rig_pump(&r, o, 3000, until_first_token, &first3);
    check(o[3].tokens > 0, "request 3 is running");
    tu_sleep_ms(300); /* the SIGHUP is acted on at the next tick (250 ms) */

    /* SIGTERM with requests 3 and 4 running and 5 waiting */
    double t_term = proto_clock_ms();
    kill(g_pid, SIGTERM);
    rig_pump(&r, o, 2000, until_status, "stopping");
    check(rig_submit(&r, 6, 2) == 0, "submit after SIGTERM");
    int ids3456[] = {3, 4, 5, 6, -1};
    rig_pump(&r, o, 15000, until_ended, ids3456);
    double t_exit;
    int status = rig_wait_exit(&r, 10000, &t_exit);
    int stopping = notifier_find(&r.nt, 0, "STOPPING=1", NULL);
    check(stopping >= 0, "STOPPING=1 is sent");
    check(stopping >= 0 && r.nt.ev[stopping].t >= t_term && r.nt.ev[stopping].t <= t_exit,
          "STOPPING=1 comes after SIGTERM and before the exit");
    check(stopping >= 0 && r.nt.ev[stopping].t - t_term < 3000, "STOPPING=1 within 3 s of SIGTERM (%.0f ms)",
          stopping >= 0 ? r.nt.ev[stopping].t - t_term : -1.0);
    check(o[3].done && o[3].finish == PROTO_FINISH_LENGTH && o[3].done_tokens == 40,
          "request 3, in flight at SIGTERM, completes: done, 40 tokens (got done %d, %d tokens)", o[3].done,
          o[3].done_tokens);
    check(o[4].done && o[4].finish == PROTO_FINISH_LENGTH && o[4].done_tokens == 40,
          "request 4, in flight at SIGTERM, completes: done, 40 tokens");
    check(o[3].t_end > t_term && o[4].t_end > t_term, "... after the SIGTERM");
    check(o[5].error == PROTO_CODE_SHUTTING_DOWN, "request 5, waiting at SIGTERM, ends with shutting_down (%d)",
          o[5].error);
    check(o[6].error == PROTO_CODE_SHUTTING_DOWN, "a submit after SIGTERM is refused with shutting_down (%d)",
          o[6].error);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "gpt2d exits 0 after the drain (status %d)", status);

    /* watchdog: from the first ping (start-up is covered by EXTEND_TIMEOUT_USEC) to exit, never a
     * gap longer than WATCHDOG_USEC */
    int n_wd = 0;
    double last = -1, worst = 0;
    for (int i = 0; i < r.nt.n; i++) {
        if (strcmp(r.nt.ev[i].text, "WATCHDOG=1") != 0) continue;
        n_wd++;
        if (last >= 0 && r.nt.ev[i].t - last > worst) worst = r.nt.ev[i].t - last;
        last = r.nt.ev[i].t;
    }
    if (stopping >= 0 && r.nt.ev[stopping].t - last > worst) worst = r.nt.ev[stopping].t - last;
    double span = proto_clock_ms() - t0;
    check(n_wd >= 2 && n_wd >= (int)(span / (WATCHDOG_USEC / 1000.0)), "WATCHDOG=1 keeps arriving (%d in %.1f s)",
          n_wd, span / 1000);
    check(worst < WATCHDOG_USEC / 1000.0, "WATCHDOG=1 never %d ms apart (worst gap %.0f ms)", WATCHDOG_USEC / 1000,
          worst);

    check(tu_log_contains(r.log, "SIGHUP: reloaded"), "SIGHUP re-reads the configuration file (log)");
    check(tu_log_contains(r.log, "request id=3 rid=") && tu_log_contains(r.log, "finish=length prompt_tokens=3 tokens=40"),
          "a per-request log line at completion (id, tokens, timings, finish)");
    check(tu_log_contains(r.log, "queue_ms=") && tu_log_contains(r.log, "ttft_ms=") && tu_log_contains(r.log, "total_ms="),
          "... with queue, first-token and total times");
    check(tu_log_contains(r.log, "error=shutting_down"), "the refused request is logged with its reason");
    check(!tu_log_contains(r.log, "Sanitizer") && !tu_log_contains(r.log, "runtime error:"), "no sanitizer report");
    rig_close(&r);
}

/* A short grace: the request in flight is cancelled and still gets its final (done) frame. And
 * log-file: SIGHUP after a rotation (rename) makes gpt2d write to a new file. */
static void test_grace_expiry(void) {
    rig r;
    memset(&r, 0, sizeof(r));
    outcome o[MAX_IDS];
    memset(o, 0, sizeof(o));
    char logf[700], rotated[710];
    snprintf(logf, sizeof(logf), "%s/sdgrace-file.log", tu.tmp);
    snprintf(rotated, sizeof(rotated), "%s.1", logf);
    unlink(logf); /* a fresh pair, even in a reused temp dir */
    unlink(rotated);
    int up = rig_start(&r, "sdgrace", 300, logf) == 0;
    check(up, "gpt2d starts (shutdown grace 300 ms)");
    if (!up) {
        rig_close(&r);
        return;
    }
    rig_pump(&r, o, 30000, until_ready, NULL);
    check(notifier_find(&r.nt, 0, "READY=1", NULL) >= 0, "READY=1");
    rename(logf, rotated); /* logrotate's move, then its postrotate: kill -HUP */
    kill(g_pid, SIGHUP);
    tu_sleep_ms(400); /* acted on at the next tick (250 ms) */
    rig_submit(&r, 1, 200); /* ~8 s at 40 ms a step */
    int one = 1;
    rig_pump(&r, o, 5000, until_first_token, &one);
    check(o[1].tokens > 0, "the long request is running");
    double t_term = proto_clock_ms();
    kill(g_pid, SIGTERM);
    int ids1[] = {1, -1};
    rig_pump(&r, o, 5000, until_ended, ids1);
    double t_exit;
    int status = rig_wait_exit(&r, 5000, &t_exit);
    check(o[1].done && o[1].finish == PROTO_FINISH_CANCELLED,
          "past the grace, the request in flight ends with a done frame, finish cancelled");
    check(o[1].done && o[1].done_tokens == o[1].tokens && o[1].tokens < 200,
          "... carrying the %d tokens streamed so far", o[1].tokens);
    check(o[1].t_end - t_term >= 250 && o[1].t_end - t_term < 10000, "... after the grace (%.0f ms after SIGTERM)",
          o[1].t_end - t_term);
    int stopping = notifier_find(&r.nt, 0, "STOPPING=1", NULL);
    check(stopping >= 0 && r.nt.ev[stopping].t <= t_exit, "STOPPING=1 precedes the exit");
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "gpt2d exits 0 (status %d)", status);
    check(tu_log_contains(rotated, "ready: 1 worker(s)") && !tu_log_contains(rotated, "shutting down"),
          "log-file: the lines before the rotation are in the rotated file");
    check(tu_log_contains(logf, "SIGHUP: reloaded") && tu_log_contains(logf, "shutting down") &&
              tu_log_contains(logf, "finish=cancelled"),
          "log-file: SIGHUP reopened it; later lines (the cancelled request's) are in the new file");
    check(!tu_log_contains(logf, "Sanitizer") && !tu_log_contains(rotated, "Sanitizer") &&
              !tu_log_contains(r.log, "Sanitizer") && !tu_log_contains(r.log, "runtime error:"),
          "no sanitizer report");
    rig_close(&r);
}

int main(void) {
    check(tu_init("systemd", 120) == 0, "gpt2-tool mkmodel makes the small model");

    test_lifecycle();
    test_grace_expiry();
    return check_done("test_systemd");
}
