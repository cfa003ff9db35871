/* conns.c — see conns.h. */
#include "conns.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <zmq.h>

#include "fdguard.h"

#define CONNS_MAX_WATCH 2
#define CONNS_MAX_UIDS 1024 /* distinct local users tracked at once; more share one bucket */

enum { FD_FREE = 0, FD_COUNTED, FD_REFUSED };

typedef struct {
    uint8_t state;  /* FD_* */
    uint8_t watch;  /* which watched socket accepted it */
    uint32_t uid;   /* (uint32_t)-1: not a local peer (tcp) */
} conn_fd;

typedef struct {
    uint32_t uid;
    int n;
} uid_count;

struct conns {
    const proto_logger *log;
    void *ctx;
    void *mon[CONNS_MAX_WATCH];
    void *watched[CONNS_MAX_WATCH];  /* the ROUTERs whose monitors mon[] read */
    int clients_side[CONNS_MAX_WATCH];
    const char *domain[CONNS_MAX_WATCH];
    int n_watch;
    int held[CONNS_MAX_WATCH];       /* counted connections per watched socket */
    conn_fd *fds;                    /* indexed by fd */
    int n_fds;
    uid_count uids[CONNS_MAX_UIDS];
    int n_uids;
    int max_total, max_per_uid;
    conns_handshake_fn on_handshake;
    void *hs_user;
    proto_log_limit refused_log;
    unsigned long refused;
};

conns *conns_new(void *ctx, const proto_logger *log, int max_total, int max_per_uid) {
    conns *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->log = log;
    c->ctx = ctx;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max > (1u << 20) ? (1u << 20) : rl.rlim_max;
        if (want > rl.rlim_cur) {
            rl.rlim_cur = want;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) rl.rlim_cur = 1024;
    long limit = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20) ? (1l << 20) : (long)rl.rlim_cur;
    c->n_fds = (int)limit;
    c->fds = calloc((size_t)c->n_fds, sizeof(conn_fd));
    if (!c->fds) {
        free(c);
        return NULL;
    }
    long budget = limit - CONNS_FD_RESERVE;
    long workers = budget / 4 < CONNS_MAX_WORKER_LINKS ? budget / 4 : CONNS_MAX_WORKER_LINKS;
    long clients = budget - workers;
    if (clients < 1) clients = 1;
    c->max_total = max_total > 0 && max_total < clients ? max_total : (int)clients;
    c->max_per_uid = max_per_uid > 0 ? max_per_uid : (c->max_total / 2 > 0 ? c->max_total / 2 : 1);
    fdguard_init();
    proto_log(log, PROTO_LOG_INFO, "connections: fd limit %ld; at most %d clients (%d per local user), %ld workers",
              limit, c->max_total, c->max_per_uid, workers);
    return c;
}

void conns_free(conns *c) {
    if (!c) return;
    for (int i = 0; i < c->n_watch; i++) zmq_close(c->mon[i]);
    free(c->fds);
    free(c);
}

int conns_watch(conns *c, void *sock, int clients, const char *domain) {
    if (c->n_watch == CONNS_MAX_WATCH) return -1;
    char ep[64];
    snprintf(ep, sizeof(ep), "inproc://gpt2d-conns-%d", c->n_watch);
    int events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    void *m = NULL;
    if (zmq_socket_monitor(sock, ep, events) < 0 || !(m = zmq_socket(c->ctx, ZMQ_PAIR)) || zmq_connect(m, ep) < 0) {
        if (m) zmq_close(m);
        return -1;
    }
    int linger = 0, hwm = 0; /* never drop an event: a lost disconnect would leak a slot */
    zmq_setsockopt(m, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(m, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    c->mon[c->n_watch] = m;
    c->watched[c->n_watch] = sock;
    c->clients_side[c->n_watch] = clients;
    c->domain[c->n_watch] = domain;
    c->n_watch++;
    return 0;
}

void conns_on_handshake(conns *c, conns_handshake_fn fn, void *user) {
    c->on_handshake = fn;
    c->hs_user = user;
}

int conns_poll_sockets(const conns *c, void **socks, int cap) {
    int n = 0;
    for (int i = 0; i < c->n_watch && n < cap; i++) socks[n++] = c->mon[i];
    return n;
}

static uid_count *uid_slot(conns *c, uint32_t uid) {
    for (int i = 0; i < c->n_uids; i++)
        if (c->uids[i].uid == uid) return &c->uids[i];
    if (c->n_uids == CONNS_MAX_UIDS) return &c->uids[CONNS_MAX_UIDS - 1];
    c->uids[c->n_uids] = (uid_count){uid, 0};
    return &c->uids[c->n_uids++];
}

static void conn_forget(conns *c, int fd) {
    conn_fd *e = &c->fds[fd];
    if (e->state == FD_COUNTED) {
        c->held[e->watch]--;
        if (c->clients_side[e->watch] && e->uid != (uint32_t)-1) uid_slot(c, e->uid)->n--;
    }
    e->state = FD_FREE;
}

static void conn_accepted(conns *c, int w, int fd) {
    if (fd < 0 || fd >= c->n_fds) return;
    conn_forget(c, fd); /* a disconnect we did not see: the fd was closed and reused */
    conn_fd *e = &c->fds[fd];
    e->watch = (uint8_t)w;
    e->uid = (uint32_t)-1;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && len == sizeof(cred) && cred.pid > 0)
        e->uid = (uint32_t)cred.uid;
    int limit = c->clients_side[w] ? c->max_total : CONNS_MAX_WORKER_LINKS;
    uid_count *u = c->clients_side[w] && e->uid != (uint32_t)-1 ? uid_slot(c, e->uid) : NULL;
    const char *why = c->held[w] >= limit ? "the endpoint's connection limit"
                      : u && u->n >= c->max_per_uid ? "this user's connection limit"
                                                    : NULL;
    if (!why) {
        e->state = FD_COUNTED;
        c->held[w]++;
        if (u) u->n++;
        return;
    }
    e->state = FD_REFUSED;
    c->refused++;
    shutdown(fd, SHUT_RDWR); /* libzmq sees the end of the stream and closes it */
    unsigned long skipped;
    if (proto_log_allow(&c->refused_log, &skipped)) {
        char who[32] = "a tcp peer";
        if (e->uid != (uint32_t)-1) snprintf(who, sizeof(who), "uid %u", (unsigned)e->uid);
        proto_log(c->log, PROTO_LOG_WARN,
                  "%s link: connection of %s refused: %s (%d held; %lu refused in all, %lu not logged)",
                  c->domain[w], who, why, c->held[w], c->refused, skipped);
    }
}

/* Reads one monitor event (2 frames: 6-byte event + value, then the address). 0, or -1 if none. */
static int monitor_one(conns *c, int w) {
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    if (zmq_msg_recv(&ev, c->mon[w], ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&ev);
        return -1;
    }
    zmq_msg_init(&addr);
    int has_addr = zmq_msg_more(&ev) && zmq_msg_recv(&addr, c->mon[w], 0) >= 0;
    if (zmq_msg_size(&ev) >= 6) {
        uint16_t event;
        uint32_t value;
        memcpy(&event, zmq_msg_data(&ev), 2);
        memcpy(&value, (const char *)zmq_msg_data(&ev) + 2, 4);
        if (event == ZMQ_EVENT_ACCEPTED) {
            conn_accepted(c, w, (int)value);
        } else if (event == ZMQ_EVENT_DISCONNECTED) {
            if ((int)value >= 0 && (int)value < c->n_fds) conn_forget(c, (int)value);
        } else if (c->on_handshake) {
            char a[128];
            snprintf(a, sizeof(a), "%.*s", has_addr ? (int)zmq_msg_size(&addr) : 1,
                     has_addr ? (const char *)zmq_msg_data(&addr) : "?");
            c->on_handshake(c->hs_user, c->domain[w], event, value, a);
        }
    }
    zmq_msg_close(&ev);
    zmq_msg_close(&addr);
    return 0;
}

void conns_handle(conns *c) {
    for (int w = 0; w < c->n_watch; w++)
        for (int k = 0; k < 4096 && monitor_one(c, w) == 0; k++) {}
}

void conns_stop(conns *c) {
    if (!c) return;
    for (int i = 0; i < c->n_watch; i++)
        if (c->watched[i]) zmq_socket_monitor(c->watched[i], NULL, 0);
    for (int i = 0; i < c->n_watch; i++) {
        c->watched[i] = NULL;
        zmq_msg_t ev; /* whatever is left is read and freed, not dropped with the pipe */
        zmq_msg_init(&ev);
        while (zmq_msg_recv(&ev, c->mon[i], ZMQ_DONTWAIT) >= 0) {}
        zmq_msg_close(&ev);
    }
}

int conns_clients(const conns *c) {
    int n = 0;
    for (int i = 0; i < c->n_watch; i++)
        if (c->clients_side[i]) n += c->held[i];
    return n;
}
int conns_max_total(const conns *c) { return c->max_total; }
int conns_max_per_uid(const conns *c) { return c->max_per_uid; }
