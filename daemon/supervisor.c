/* supervisor.c — see supervisor.h. */
#include "supervisor.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "proto_sock.h"

typedef struct {
    pid_t pid;          /* 0 when not running */
    double started_ms;  /* when it was started */
    double due_ms;      /* when to (re)start it, if not running */
    int backoff_ms;     /* the next restart delay */
    char name[32];      /* local-<k> */
} sup_slot;

struct supervisor {
    int n;
    sup_slot *slots;
    char **argv;        /* worker command + 2 spare entries for --name NAME + NULL */
    int argc;
    int stopping;
    int restart_max_ms; /* cap of the restart delay */
    const char *kind;   /* "worker" or "gateway": what the log lines call a child */
    const proto_logger *log;
};

supervisor *supervisor_new(int n, char *const *argv, int restart_max_ms, const proto_logger *log) {
    supervisor *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->restart_max_ms = restart_max_ms > 0 ? restart_max_ms : PROTO_RESTART_MAX_MS;
    while (argv[s->argc]) s->argc++;
    s->n = n;
    s->kind = "worker";
    s->log = log;
    s->slots = calloc(n > 0 ? (size_t)n : 1, sizeof(sup_slot));
    s->argv = calloc((size_t)s->argc + 3, sizeof(char *));
    if (!s->slots || !s->argv) goto fail;
    for (int i = 0; i < s->argc; i++) s->argv[i] = argv[i];
    for (int k = 0; k < n; k++) {
        snprintf(s->slots[k].name, sizeof(s->slots[k].name), "local-%d", k);
        s->slots[k].backoff_ms = PROTO_RESTART_MIN_MS < s->restart_max_ms ? PROTO_RESTART_MIN_MS : s->restart_max_ms;
    }
    return s;
fail:
    supervisor_free(s);
    return NULL;
}

void supervisor_set_names(supervisor *s, const char *kind, const char *prefix) {
    s->kind = kind;
    for (int k = 0; k < s->n; k++) snprintf(s->slots[k].name, sizeof(s->slots[k].name), "%s%d", prefix, k);
}

void supervisor_free(supervisor *s) {
    if (!s) return;
    free(s->slots);
    free(s->argv);
    free(s);
}

/* fork + exec of slot k. The child only calls async-signal-safe functions before exec. */
static void sup_start(supervisor *s, int k, double now_ms) {
    sup_slot *sl = &s->slots[k];
    s->argv[s->argc] = "--name";
    s->argv[s->argc + 1] = sl->name;
    s->argv[s->argc + 2] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        proto_log(s->log, PROTO_LOG_ERROR, "%s %s: fork: %s", s->kind, sl->name, strerror(errno));
        sl->due_ms = now_ms + sl->backoff_ms;
        return;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setsid(); /* its own session: a terminal's Ctrl-C (SIGINT to the foreground group) is the
                   * daemon's to handle, which stops its workers itself */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1); /* the daemon died between fork and prctl */
        execvp(s->argv[0], s->argv);
        _exit(127);
    }
    sl->pid = pid;
    sl->started_ms = now_ms;
    proto_log(s->log, PROTO_LOG_INFO, "%s %s: started pid %d", s->kind, sl->name, (int)pid);
}

int supervisor_tick(supervisor *s, double now_ms) {
    int next = -1;
    if (s->stopping) return -1;
    for (int k = 0; k < s->n; k++) {
        sup_slot *sl = &s->slots[k];
        if (sl->pid) continue;
        if (sl->due_ms <= now_ms) sup_start(s, k, now_ms);
        if (!sl->pid) {
            int wait = (int)(sl->due_ms - now_ms) + 1;
            if (next < 0 || wait < next) next = wait;
        }
    }
    return next;
}

static void sup_describe(int status, char *buf, size_t cap) {
    if (WIFEXITED(status)) snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) snprintf(buf, cap, "killed by signal %d", WTERMSIG(status));
    else snprintf(buf, cap, "stopped (status %d)", status);
}

void supervisor_reap(supervisor *s, double now_ms, void (*on_exit)(void *user, pid_t pid), void *user) {
    /* each own child by pid, so that several supervisors in one process never reap another's */
    for (int k = 0; k < s->n; k++) {
        sup_slot *sl = &s->slots[k];
        int status;
        pid_t pid = sl->pid > 0 ? waitpid(sl->pid, &status, WNOHANG) : 0;
        if (pid <= 0) continue;
        char how[64];
        sup_describe(status, how, sizeof(how));
        sl->pid = 0;
        if (now_ms - sl->started_ms >= PROTO_RESTART_RESET_MS)
            sl->backoff_ms = PROTO_RESTART_MIN_MS < s->restart_max_ms ? PROTO_RESTART_MIN_MS : s->restart_max_ms;
        sl->due_ms = now_ms + sl->backoff_ms;
        if (!s->stopping)
            proto_log(s->log, PROTO_LOG_WARN, "%s %s (pid %d) %s; restarting in %d ms", s->kind, sl->name,
                      (int)pid, how, sl->backoff_ms);
        sl->backoff_ms = sl->backoff_ms * 2 > s->restart_max_ms ? s->restart_max_ms : sl->backoff_ms * 2;
        if (on_exit) on_exit(user, pid);
    }
}

int supervisor_owns(const supervisor *s, pid_t pid) {
    for (int k = 0; k < s->n; k++)
        if (pid > 0 && s->slots[k].pid == pid) return 1;
    return 0;
}

static int sup_running(const supervisor *s) {
    int n = 0;
    for (int k = 0; k < s->n; k++) n += s->slots[k].pid != 0;
    return n;
}

void supervisor_stop(supervisor *s) {
    s->stopping = 1;
    for (int k = 0; k < s->n; k++)
        if (s->slots[k].pid) kill(s->slots[k].pid, SIGTERM);
    double deadline = proto_clock_ms() + PROTO_STOP_GRACE_MS;
    while (sup_running(s) > 0) {
        double now = proto_clock_ms();
        if (now >= deadline) {
            for (int k = 0; k < s->n; k++)
                if (s->slots[k].pid) {
                    proto_log(s->log, PROTO_LOG_WARN, "%s %s: no exit after SIGTERM; SIGKILL", s->kind,
                              s->slots[k].name);
                    kill(s->slots[k].pid, SIGKILL);
                }
            deadline = now + 60000.0;
        }
        supervisor_reap(s, now, NULL, NULL);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
