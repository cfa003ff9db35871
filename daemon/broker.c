/* broker.c — see broker.h. Reads top to bottom: state, bookkeeping, sending, the worker link, the
 * client link, timers, the loop, construction. */
#include "broker.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <linux/sockios.h>
#include <signal.h>
#include <unistd.h>

#include "auth.h"
#include "conns.h"
#include "proto_runtime.h"
#include "metrics.h"
#include "proto.h"
#include "proto_sock.h"
#include "squeue.h"
#include "supervisor.h"
#include "table.h"

#define BROKER_TICK_MS (PROTO_HEARTBEAT_MS / 4) /* timer resolution of heartbeats and expiry */
#define BROKER_BATCH 256                        /* messages read per socket per loop turn */
#define BROKER_CLIENT_IDLE_MS 10000.0           /* a client with nothing in flight is forgotten after this */
#define BROKER_FENCE_MS 60000.0                 /* a worker fenced for breaking the contract stays out */
#define BROKER_MAX_FENCED 32

/* ============================================================================================== */
/* state                                                                                           */
/* ============================================================================================== */

typedef struct client client;
typedef struct worker worker;

typedef struct request {
    uint64_t rid;                /* the broker's id, on the worker link */
    client *cl;
    proto_cid cid;               /* the client's id; cid.str points into cid_buf */
    char cid_buf[PROTO_MAX_ID_BYTES];
    uint8_t stream;              /* forward token frames */
    uint8_t running;             /* 0: in the queue; 1: on worker w */
    uint8_t cancelling;          /* a cancel went to the worker */
    uint8_t priority;            /* proto_priority of the submit */
    sq_item sq;               /* its place in the dispatch order while in the queue */
    int32_t max_tokens;          /* what the worker was asked for: it may not send more */
    worker *w;
    unsigned char *wire;         /* the encoded "request" frame as first sent (kept for replays) */
    size_t wire_len;
    unsigned char *replay;       /* NULL, or the frame of the current replay (new rid, resume_ids) */
    size_t replay_len;
    int32_t *streamed;           /* token ids received so far, index order (resume_ids of a replay) */
    uint32_t n_streamed, cap_streamed;
    char *text;                  /* the text pieces of those tokens, concatenated */
    size_t text_len, text_cap;
    int n_replays;               /* times moved off a lost worker */
    char fingerprint[PROTO_MAX_FINGERPRINT_BYTES + 1]; /* of the worker that streamed its tokens: a
                                     replay after a token goes only to a worker with the same one */
    double t_submit, t_last;     /* ms: submit, last token */
    double t_dispatch;           /* ms: given to the worker (the first time) */
    double t_first;              /* ms: first token received (0: none yet) */
    struct request *prev, *next; /* in the queue, or in w's list */
    struct request *cprev, *cnext; /* in cl's list */
} request;

struct client {
    unsigned char ident[PROTO_MAX_IDENT];
    size_t ident_len;
    request *reqs;               /* live requests */
    int n_reqs;
    int n_waiting;               /* of those, in the queue (its fair share is checked on this) */
    sq_flow flow;             /* its waiting requests in the dispatch order (round robin) */
    double last_send_ms, last_recv_ms;
    /* what it may have queued in its pipe: the sizes of the last PROTO_CLIENT_SNDHWM frames */
    uint32_t *sent_sizes;        /* ring, allocated at the first send */
    uint32_t sent_pos;
    uint64_t sent_sum;
    int fd;                      /* its connection (ZMQ_SRCFD of its last message), or -1 */
    double stats_window_ms;      /* stats replies in the current second */
    int stats_in_window;
    client *prev, *next;         /* broker's list of known clients */
};

struct worker {
    unsigned char ident[PROTO_MAX_IDENT];
    size_t ident_len;
    char name[PROTO_MAX_NAME_BYTES + 1];
    int pid, local, slots, credit, n_ctx;
    char fingerprint[PROTO_MAX_FINGERPRINT_BYTES + 1]; /* numerics fingerprint from ready ("" if none) */
    int running;                 /* requests given and not ended */
    uint64_t tokens;
    proto_kv_info kv;            /* KV pages and prefix cache, from its last heartbeat */
    double expiry_ms, last_send_ms;
    request *reqs;
    worker *next;
};

struct broker {
    const config *cfg;
    const proto_logger *log;
    void *ctx, *front, *back;    /* clients ROUTER, workers ROUTER */
    auth *auth;                  /* CURVE + ZAP handler, or NULL (no CURVE) */
    supervisor *sup;
    supervisor *http_sup;        /* the HTTP gateway (cfg->http_listen), or NULL */
    char **http_argv;
    char http_connect[512];      /* the client endpoint the gateway connects to */
    char http_model_name[256];
    table *clients;              /* ident -> client */
    table *by_rid;               /* rid -> request */
    table *by_cid;               /* (ident, client id) -> request */
    client *client_list;
    request *q_head, *q_tail;    /* waiting requests, FIFO (deadlines, eviction, shutdown) */
    int q_len;
    squeue sq;                     /* the same requests in dispatch order (squeue.h) */
    worker *workers;
    int n_workers, n_local_ready;
    uint64_t next_rid;
    uint64_t requests_total, tokens_total, errors_total, overloaded_total;
    metrics met;
    msgpack_sbuffer sb;          /* encode scratch */
    double next_tick_ms;
    double t_no_worker;          /* ms since when no worker has been connected (0: some are) */
    int had_worker;              /* a worker has registered once (before that, startup: no clock) */
    int worker_exits;            /* local worker processes that exited (loading or not) */
    char load_error[512];        /* why the last worker that could not start said so ("": none) */
    int fatal;                   /* no worker can ever start: broker_run returns -1 (see broker_failure) */
    int lock_fd[2];              /* flock()ed <socket>.lock of each ipc:// endpoint (-1: none) */
    char ipc_file[2][600];       /* the socket file behind lock_fd[i], removed at a clean exit */
    int queue_timeout_ms, request_timeout_ms, max_client_requests; /* cfg, defaults applied */
    int notified_ready;
    int draining;                /* SIGTERM seen: submits refused, running requests may finish */
    double drain_end_ms;         /* then they are cancelled at this time ... */
    double drain_cancel_end_ms;  /* ... and the loop ends at this one (0: not cancelled yet) */
    broker_tick_fn on_tick;      /* main.c's hook (sd_notify), called every tick */
    void *tick_user;
    char worker_connect[512];    /* the endpoint local workers connect to */
    char **worker_argv;
    conns *conns;                /* connection limits of both endpoints */
    char secret[PROTO_SECRET_HEX + 1]; /* handed to local workers (environment), proven in ready */
    int worker_tcp;              /* the worker endpoint is TCP (not ipc): any local user can reach it */
    int n_clients_waiting;       /* clients with requests in the queue */
    struct {
        unsigned char ident[PROTO_MAX_IDENT];
        size_t ident_len;
        double until_ms;
    } fenced[BROKER_MAX_FENCED]; /* workers refused for a while (contract broken, bad ready) */
    int fenced_next;
    proto_log_limit log_encode, log_worker_bad, log_worker_refused; /* lines a peer can cause */
};

/* ============================================================================================== */
/* bookkeeping: lists and indexes                                                                  */
/* ============================================================================================== */

static size_t cid_key(const unsigned char *ident, size_t ident_len, const proto_cid *id, unsigned char *key) {
    size_t n = 0;
    key[n++] = (unsigned char)ident_len;
    memcpy(key + n, ident, ident_len);
    n += ident_len;
    key[n++] = id->is_str;
    if (id->is_str) {
        memcpy(key + n, id->str.ptr, id->str.len);
        n += id->str.len;
    } else {
        memcpy(key + n, &id->num, sizeof(id->num));
        n += sizeof(id->num);
    }
    return n;
}
#define CID_KEY_MAX (2 + PROTO_MAX_IDENT + PROTO_MAX_ID_BYTES + 8)

/* The dispatch class of a waiting request: a replay goes first, then by priority. */
static int q_class(const request *r) {
    if (r->n_replays > 0) return SQ_REPLAY;
    return r->priority == PROTO_PRIORITY_BULK ? SQ_BULK : SQ_INTERACTIVE;
}

static void q_unlink(broker *b, request *r) {
    sq_remove(&b->sq, &r->sq);
    if (r->prev) r->prev->next = r->next;
    else b->q_head = r->next;
    if (r->next) r->next->prev = r->prev;
    else b->q_tail = r->prev;
    r->prev = r->next = NULL;
    b->q_len--;
    if (--r->cl->n_waiting == 0) b->n_clients_waiting--;
}

static void q_push(broker *b, request *r, int front) {
    r->prev = r->next = NULL;
    if (!b->q_head) {
        b->q_head = b->q_tail = r;
    } else if (front) {
        r->next = b->q_head;
        b->q_head->prev = r;
        b->q_head = r;
    } else {
        r->prev = b->q_tail;
        b->q_tail->next = r;
        b->q_tail = r;
    }
    b->q_len++;
    if (r->cl->n_waiting++ == 0) b->n_clients_waiting++;
    sq_push(&b->sq, &r->cl->flow, &r->sq, q_class(r), front);
}

static void w_link(worker *w, request *r) {
    r->prev = NULL;
    r->next = w->reqs;
    if (w->reqs) w->reqs->prev = r;
    w->reqs = r;
    r->w = w;
    r->running = 1;
    w->running++;
}

static void w_unlink(request *r) {
    worker *w = r->w;
    if (r->prev) r->prev->next = r->next;
    else w->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->w = NULL;
    r->running = 0;
    w->running--;
}

static client *client_get(broker *b, const unsigned char *ident, size_t len, int create) {
    client *c = table_get(b->clients, ident, len);
    if (c || !create) return c;
    c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    memcpy(c->ident, ident, len);
    c->ident_len = len;
    c->last_send_ms = c->last_recv_ms = proto_clock_ms();
    c->fd = -1;
    if (table_put(b->clients, ident, len, c) < 0) {
        free(c);
        return NULL;
    }
    c->next = b->client_list;
    if (b->client_list) b->client_list->prev = c;
    b->client_list = c;
    return c;
}

/* Frees the client once it has no live request and has been quiet for BROKER_CLIENT_IDLE_MS (its
 * accounting of what it may have queued must outlive one reply; it is re-created by its next
 * message). */
static void client_free(broker *b, client *c) {
    table_del(b->clients, c->ident, c->ident_len);
    if (c->prev) c->prev->next = c->next;
    else b->client_list = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c->sent_sizes);
    free(c);
}

static void client_release_if_idle(broker *b, client *c) {
    if (!c || c->n_reqs > 0) return;
    double now = proto_clock_ms();
    if (now - c->last_recv_ms < BROKER_CLIENT_IDLE_MS || now - c->last_send_ms < BROKER_CLIENT_IDLE_MS) return;
    client_free(b, c);
}

/* Removes r from every list and index and frees it. The client struct stays (see
 * client_release_if_idle). */
static void request_free(broker *b, request *r) {
    unsigned char key[CID_KEY_MAX];
    if (r->running) w_unlink(r);
    else q_unlink(b, r);
    table_del(b->by_rid, &r->rid, sizeof(r->rid));
    table_del(b->by_cid, key, cid_key(r->cl->ident, r->cl->ident_len, &r->cid, key));
    client *c = r->cl;
    if (r->cprev) r->cprev->cnext = r->cnext;
    else c->reqs = r->cnext;
    if (r->cnext) r->cnext->cprev = r->cprev;
    c->n_reqs--;
    free(r->wire);
    free(r->replay);
    free(r->streamed);
    free(r->text);
    free(r);
}

static worker *worker_find(broker *b, const unsigned char *ident, size_t len) {
    for (worker *w = b->workers; w; w = w->next)
        if (w->ident_len == len && memcmp(w->ident, ident, len) == 0) return w;
    return NULL;
}

/* A request that streamed tokens must continue on a worker computing the same bits. */
static int request_pinned(const request *r) { return r->n_streamed > 0; }

/* The free slots a bulk request must leave on w: the interactive reserve, but never all its slots. */
static int worker_reserve(const broker *b, const worker *w) {
    int r = b->cfg->interactive_reserve;
    return r < w->slots ? r : w->slots - 1;
}

/* The worker with the most free credit that may run r (any worker, or for a pinned replay one with
 * r's fingerprint; for a bulk request one with more free slots than its interactive reserve), or
 * NULL if none. */
static worker *worker_pick(broker *b, const request *r) {
    worker *best = NULL;
    for (worker *w = b->workers; w; w = w->next)
        if (w->credit > (r->priority == PROTO_PRIORITY_BULK ? worker_reserve(b, w) : 0) &&
            (!best || w->credit > best->credit) &&
            (!request_pinned(r) || strcmp(w->fingerprint, r->fingerprint) == 0))
            best = w;
    return best;
}

static int total_credit(const broker *b) {
    int n = 0;
    for (const worker *w = b->workers; w; w = w->next) n += w->credit;
    return n;
}

/* ============================================================================================== */
/* sending                                                                                         */
/* ============================================================================================== */

/* 1 if c may have more than PROTO_CLIENT_QUEUE_BYTES queued in its pipe and is not reading: the
 * last PROTO_CLIENT_SNDHWM frames sent to it (all its pipe can hold) add up to more than that, and
 * its connection's kernel send buffer is at least a quarter full (a reading client's is empty). */
static int client_over_budget(const client *c) {
    if (c->sent_sum <= PROTO_CLIENT_QUEUE_BYTES) return 0;
    int outq = 0, sndbuf = 0;
    socklen_t len = sizeof(sndbuf);
    if (c->fd < 0 || ioctl(c->fd, SIOCOUTQ, &outq) < 0 ||
        getsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) < 0)
        return 1; /* cannot tell: the bound holds */
    return outq >= sndbuf / 4;
}

/* Records a frame of n bytes sent to c. */
static void client_sent(client *c, size_t n) {
    if (!c->sent_sizes && !(c->sent_sizes = calloc(PROTO_CLIENT_SNDHWM, sizeof(uint32_t)))) return;
    c->sent_sum += n - c->sent_sizes[c->sent_pos];
    c->sent_sizes[c->sent_pos] = (uint32_t)n;
    c->sent_pos = (c->sent_pos + 1) % PROTO_CLIENT_SNDHWM;
}

/* Sends m to a client. 0, or -1 if the client cannot be reached (gone, or not reading). */
static int send_client(broker *b, const unsigned char *ident, size_t len, const proto_msg *m) {
    char err[256];
    client *c = table_get(b->clients, ident, len);
    if (c && client_over_budget(c)) return -1; /* not reading, and its pipe is full enough */
    if (proto_sock_send(b->front, ident, len, m, ZMQ_DONTWAIT, &b->sb, err, sizeof(err)) == 0) {
        metrics_client_frame(&b->met, m);
        if (c) {
            c->last_send_ms = proto_clock_ms();
            client_sent(c, b->sb.size);
        }
        return 0;
    }
    if (errno == EINVAL) {
        unsigned long skipped;
        if (proto_log_allow(&b->log_encode, &skipped))
            proto_log(b->log, PROTO_LOG_ERROR, "cannot encode %s for a client: %s (%lu more not logged)",
                      proto_type_name(m->type), err, skipped);
        if (m->type != PROTO_T_DONE && m->type != PROTO_T_ERROR) return 0; /* our bug, not the client's absence */
        /* a final frame that cannot go still ends the request: with an internal error instead */
        proto_msg e;
        proto_msg_init(&e, PROTO_T_ERROR);
        e.id = m->id;
        e.has = m->has & PROTO_HAS(PF_ID);
        e.code = PROTO_CODE_INTERNAL;
        const char *rname = proto_reason_name(PROTO_R_INTERNAL);
        e.reason = (proto_str){rname, (uint32_t)strlen(rname)};
        e.has |= PROTO_HAS(PF_REASON);
        char msg[320];
        snprintf(msg, sizeof(msg), "the request's %s frame could not be encoded: %s", proto_type_name(m->type), err);
        e.message = (proto_str){msg, (uint32_t)strlen(msg)};
        if (proto_sock_send(b->front, ident, len, &e, ZMQ_DONTWAIT, &b->sb, err, sizeof(err)) == 0) return 0;
        return errno == EINVAL ? 0 : -1;
    }
    return -1;
}

static int send_worker(broker *b, worker *w, const proto_msg *m) {
    char err[256];
    if (proto_sock_send(b->back, w->ident, w->ident_len, m, ZMQ_DONTWAIT, &b->sb, err, sizeof(err)) == 0) {
        w->last_send_ms = proto_clock_ms();
        return 0;
    }
    if (errno == EINVAL) {
        proto_log(b->log, PROTO_LOG_ERROR, "cannot encode %s for worker %s: %s", proto_type_name(m->type),
                  w->name, err);
        return 0;
    }
    return -1;
}

/* An error frame to a client; id may be NULL (about the link, not a request). The code is the
 * reason's; field (may be NULL) names the field at fault. */
static int send_error_field(broker *b, const unsigned char *ident, size_t len, const proto_cid *id,
                            proto_reason why, const char *field, const char *message) {
    proto_msg e;
    proto_msg_init(&e, PROTO_T_ERROR);
    if (id) {
        e.id = *id;
        e.has |= PROTO_HAS(PF_ID);
    }
    e.code = proto_reason_code(why);
    const char *rname = proto_reason_name(why);
    e.reason = (proto_str){rname, (uint32_t)strlen(rname)};
    e.has |= PROTO_HAS(PF_REASON);
    if (field) {
        e.field = (proto_str){field, (uint32_t)strlen(field)};
        e.has |= PROTO_HAS(PF_FIELD);
    }
    /* the message may quote what the peer sent: valid UTF-8, cut on a character, or it would not encode */
    char text[PROTO_MAX_MESSAGE_BYTES + 1];
    size_t n = proto_utf8_sanitize(message, strlen(message), text, sizeof(text));
    e.message = (proto_str){text, (uint32_t)n};
    return send_client(b, ident, len, &e);
}

static int send_error(broker *b, const unsigned char *ident, size_t len, const proto_cid *id, proto_reason why,
                      const char *message) {
    return send_error_field(b, ident, len, id, why, NULL, message);
}

static void client_vanished(broker *b, const unsigned char *ident, size_t len);

/* The request's end (e: the done or error frame the client gets): its latency goes into the
 * histogram, and its log line, logfmt:
 * request id=q1 rid=41 finish=length prompt_tokens=5 tokens=16 queue_ms=0.1 ttft_ms=9.5 total_ms=80 */
static void request_log_end(broker *b, const request *r, const proto_msg *e) {
    metrics_total(&b->met, proto_clock_ms() - r->t_submit);
    if (PROTO_LOG_INFO > b->log->level) return;
    char id[PROTO_MAX_ID_BYTES + 3];
    if (r->cid.is_str) {
        size_t n = 0;
        id[n++] = '"';
        for (uint32_t i = 0; i < r->cid.str.len; i++) {
            unsigned char ch = (unsigned char)r->cid_buf[i];
            id[n++] = (ch < 0x20 || ch == '"' || ch == '\\' || ch == 0x7f) ? '?' : (char)ch;
        }
        id[n++] = '"';
        id[n] = 0;
    } else {
        snprintf(id, sizeof(id), "%llu", (unsigned long long)r->cid.num);
    }
    if (e->type == PROTO_T_DONE)
        proto_log(b->log, PROTO_LOG_INFO,
                  "request id=%s rid=%llu finish=%s prompt_tokens=%d tokens=%d queue_ms=%.1f ttft_ms=%.1f "
                  "total_ms=%.1f worker=%.*s",
                  id, (unsigned long long)r->rid, proto_finish_name(e->finish), e->prompt_tokens,
                  e->completion_tokens, e->queue_ms, e->ttft_ms, e->total_ms, (int)e->name.len,
                  e->name.ptr ? e->name.ptr : "-");
    else
        proto_log(b->log, PROTO_LOG_INFO,
                  "request id=%s rid=%llu finish=error error=%.*s tokens=%u queue_ms=%.1f total_ms=%.1f", id,
                  (unsigned long long)r->rid, (int)e->reason.len, e->reason.ptr ? e->reason.ptr : "?",
                  r->n_streamed, (r->t_dispatch > 0 ? r->t_dispatch : proto_clock_ms()) - r->t_submit,
                  proto_clock_ms() - r->t_submit);
}

/* After a request's final frame was sent to client c (rc: the send's result): a failed send means
 * the client is gone, else c is released if it has nothing left in flight. */
static void client_after_final(broker *b, client *c, int rc) {
    if (rc < 0) client_vanished(b, c->ident, c->ident_len);
    else client_release_if_idle(b, c);
}

/* Ends r with an error frame to its client and frees it (and the client if it is then idle).
 * Returns 1 if the send found the client gone: then every request of that client was freed too. */
static int request_fail(broker *b, request *r, proto_reason code, const char *message) {
    client *c = r->cl;
    proto_cid id = r->cid;
    char idbuf[PROTO_MAX_ID_BYTES];
    memcpy(idbuf, r->cid_buf, sizeof(idbuf));
    id.str.ptr = idbuf;
    b->errors_total++;
    metrics_error(&b->met, proto_clock_ms());
    proto_msg e;
    proto_msg_init(&e, PROTO_T_ERROR);
    e.reason = (proto_str){proto_reason_name(code), (uint32_t)strlen(proto_reason_name(code))};
    request_log_end(b, r, &e);
    request_free(b, r);
    int rc = send_error(b, c->ident, c->ident_len, &id, code, message);
    client_after_final(b, c, rc);
    return rc < 0;
}

static void worker_lost(broker *b, worker *w, const char *why);

#define REQ_OF(it) ((request *)((char *)(it) - offsetof(request, sq)))

/* Hands r (just taken from the dispatch order) to w. 0, or -1 if w could not be reached: r is back
 * at the front of the queue and w is lost (the queue changed). */
static int dispatch_to(broker *b, request *r, worker *w) {
    q_unlink(b, r);
    const unsigned char *wire = r->replay ? r->replay : r->wire;
    size_t wire_len = r->replay ? r->replay_len : r->wire_len;
    if (proto_sock_send_raw(b->back, w->ident, w->ident_len, wire, wire_len, ZMQ_DONTWAIT) < 0) {
        q_push(b, r, 1);
        worker_lost(b, w, errno == EHOSTUNREACH ? "unreachable" : "not reading");
        return -1;
    }
    w->last_send_ms = proto_clock_ms();
    if (r->t_dispatch == 0) {
        r->t_dispatch = w->last_send_ms;
        metrics_queue(&b->met, r->t_dispatch - r->t_submit);
    }
    if (!request_pinned(r)) memcpy(r->fingerprint, w->fingerprint, sizeof r->fingerprint);
    w->credit--;
    w_link(w, r);
    proto_log(b->log, PROTO_LOG_DEBUG, "rid %llu -> worker %s (credit %d)", (unsigned long long)r->rid, w->name,
              w->credit);
    return 0;
}

/* Gives waiting requests to workers with credit in the order of squeue.h: replays first (oldest
 * first; one pinned to a fingerprint no worker with credit has waits, the others pass it), then
 * interactive requests, then bulk ones (which leave each worker its interactive reserve), clients
 * taking turns within a priority. */
static void dispatch(broker *b) {
again:
    for (sq_item *it = b->sq.replay.head[SQ_REPLAY], *next; it; it = next) {
        next = it->next;
        request *r = REQ_OF(it);
        worker *w = worker_pick(b, r);
        if (!w) continue;
        sq_take(&b->sq, it);
        if (dispatch_to(b, r, w) < 0) goto again;
    }
    for (int cls = SQ_INTERACTIVE; cls < SQ_CLASSES; cls++) {
        sq_item *it;
        while ((it = sq_next(&b->sq, cls))) {
            request *r = REQ_OF(it);
            worker *w = worker_pick(b, r); /* not pinned: any request of the class would get the same answer */
            if (!w) break;
            sq_take(&b->sq, it);
            if (dispatch_to(b, r, w) < 0) goto again;
        }
    }
}

/* Asks r's worker to cancel it (once). */
static void request_cancel_on_worker(broker *b, request *r) {
    if (!r->running || r->cancelling) return;
    proto_msg c;
    proto_msg_init(&c, PROTO_T_CANCEL);
    c.rid = r->rid;
    c.has = PROTO_HAS(PF_RID);
    r->cancelling = 1;
    if (send_worker(b, r->w, &c) < 0)
        proto_log(b->log, PROTO_LOG_WARN, "cancel rid %llu: worker %s unreachable", (unsigned long long)r->rid,
                  r->w->name);
}

/* The ROUTER can no longer reach this client: cancel and forget all its requests. */
static void client_vanished(broker *b, const unsigned char *ident, size_t len) {
    client *c = client_get(b, ident, len, 0);
    if (!c) return;
    proto_log(b->log, PROTO_LOG_INFO, "client gone: cancelling its %d request(s)", c->n_reqs);
    while (c->reqs) {
        request *r = c->reqs;
        char idbuf[96];
        proto_log(b->log, PROTO_LOG_INFO, "cancel rid %llu (client id %s): client gone",
                  (unsigned long long)r->rid, proto_cid_str(&r->cid, idbuf, sizeof(idbuf)));
        request_cancel_on_worker(b, r);
        request_free(b, r);
    }
    client_release_if_idle(b, c);
}

/* ============================================================================================== */
/* the worker link                                                                                 */
/* ============================================================================================== */

static void worker_free(broker *b, worker *w) {
    worker **pp = &b->workers;
    while (*pp && *pp != w) pp = &(*pp)->next;
    if (*pp) *pp = w->next;
    b->n_workers--;
    if (w->local) b->n_local_ready--;
    free(w);
    if (b->n_workers == 0) b->t_no_worker = proto_clock_ms(); /* now, not at the next tick */
}

/* Ends r with a done frame made from what the broker saw (the worker that ran it is gone). */
static void request_done_here(broker *b, request *r, proto_finish finish) {
    client *c = r->cl;
    proto_msg d;
    proto_msg_init(&d, PROTO_T_DONE);
    d.id = r->cid;
    d.has = PROTO_HAS(PF_ID);
    d.finish = finish;
    d.text = (proto_str){r->text_len ? r->text : NULL, (uint32_t)r->text_len};
    d.tokens = r->streamed;
    d.n_tokens = r->n_streamed;
    d.completion_tokens = (int32_t)r->n_streamed;
    double now = proto_clock_ms();
    d.queue_ms = (r->t_dispatch > 0 ? r->t_dispatch : now) - r->t_submit;
    d.ttft_ms = r->t_first > 0 ? r->t_first - r->t_submit : 0;
    d.total_ms = now - r->t_submit;
    request_log_end(b, r, &d);
    int rc = send_client(b, c->ident, c->ident_len, &d); /* before the free: d points into r */
    request_free(b, r);
    client_after_final(b, c, rc);
}

/* Builds r's replay frame: the original request under a new rid (so late frames of the old run are
 * ignored: the fence), with every received token but the last as resume_ids. The last one is
 * generated again (and deduplicated by index), so at least one token remains to generate, and a
 * request that had ended in that token ends the same way. 0, or -1 on allocation failure. */
static int request_make_replay(broker *b, request *r) {
    proto_msg q;
    char err[256];
    if (proto_decode(&q, r->wire, r->wire_len, err, sizeof(err)) < 0) {
        proto_msg_destroy(&q);
        return -1;
    }
    uint32_t n_res = r->n_streamed > 0 ? r->n_streamed - 1 : 0;
    table_del(b->by_rid, &r->rid, sizeof(r->rid));
    r->rid = ++b->next_rid;
    q.rid = r->rid;
    q.resume_ids = r->streamed;
    q.n_resume_ids = n_res;
    q.has |= PROTO_HAS(PF_RESUME_IDS); /* max_tokens stays: it counts the resumed tokens too */
    msgpack_sbuffer_clear(&b->sb);
    int rc = proto_encode(&q, &b->sb, err, sizeof(err));
    proto_msg_destroy(&q);
    unsigned char *p = rc == 0 ? malloc(b->sb.size) : NULL;
    if (!p || table_put(b->by_rid, &r->rid, sizeof(r->rid), r) < 0) {
        free(p);
        return -1;
    }
    memcpy(p, b->sb.data, b->sb.size);
    free(r->replay);
    r->replay = p;
    r->replay_len = b->sb.size;
    return 0;
}

/* The worker is dead, or silent and fenced off: each request it held moves to the front of the
 * queue as a replay (see request_make_replay), so its client sees one uninterrupted stream. A
 * request the client was cancelling ends here with "cancelled"; one moved PROTO_MAX_REPLAYS times
 * already (a request that kills every worker) ends with worker_lost. */
static void worker_lost(broker *b, worker *w, const char *why) {
    proto_log(b->log, PROTO_LOG_WARN, "worker %s (pid %d) lost: %s; moving %d request(s)", w->name, w->pid, why,
              w->running);
    char msg[256];
    snprintf(msg, sizeof(msg), "worker %s died while running this request (%s), %d times", w->name, why,
             PROTO_MAX_REPLAYS);
    w->credit = 0; /* nothing new goes there while we unwind */
    while (w->reqs) {
        request *r = w->reqs;
        if (r->cancelling) {
            request_done_here(b, r, PROTO_FINISH_CANCELLED);
        } else if (r->n_replays >= PROTO_MAX_REPLAYS || request_make_replay(b, r) < 0) {
            request_fail(b, r, PROTO_R_WORKER_LOST, msg);
        } else {
            r->n_replays++;
            b->met.totals.replays++;
            w_unlink(r);
            q_push(b, r, 1);
            proto_log(b->log, PROTO_LOG_INFO, "rid %llu replayed after %u token(s) (replay %d)",
                      (unsigned long long)r->rid, r->n_streamed, r->n_replays);
        }
    }
    worker_free(b, w);
}

/* 1 if frames from this peer are ignored for now (fenced, see worker_fence). */
static int worker_is_fenced(broker *b, const unsigned char *ident, size_t len) {
    double now = proto_clock_ms();
    for (int i = 0; i < BROKER_MAX_FENCED; i++)
        if (b->fenced[i].until_ms > now && b->fenced[i].ident_len == len && memcmp(b->fenced[i].ident, ident, len) == 0)
            return 1;
    return 0;
}

static void worker_fence_ident(broker *b, const unsigned char *ident, size_t len) {
    int i = b->fenced_next;
    b->fenced_next = (b->fenced_next + 1) % BROKER_MAX_FENCED;
    memcpy(b->fenced[i].ident, ident, len);
    b->fenced[i].ident_len = len;
    b->fenced[i].until_ms = proto_clock_ms() + BROKER_FENCE_MS;
}

/* The worker broke the contract (PROTOCOL.md, "What the broker holds a worker to"): it is fenced
 * (its frames are ignored for BROKER_FENCE_MS; a local one is killed, and the supervisor starts it
 * again) and every request it held is replayed on another worker, from the tokens that were valid. */
static void worker_fence(broker *b, worker *w, const char *why) {
    proto_log(b->log, PROTO_LOG_ERROR, "worker %s (pid %d) broke the protocol contract: %s; fenced", w->name, w->pid,
              why);
    worker_fence_ident(b, w->ident, w->ident_len);
    if (w->local && w->pid > 0) kill(w->pid, SIGKILL);
    worker_lost(b, w, why);
}

static void broker_pulse(broker *b);

static void maybe_notify_ready(broker *b) {
    if (b->notified_ready || b->n_local_ready < b->cfg->workers) return;
    b->notified_ready = 1;
    proto_log(b->log, PROTO_LOG_INFO, "ready: %d worker(s), clients on %s", b->n_workers, b->cfg->listen);
    broker_pulse(b);
}

/* Who may register (PROTOCOL.md, "Worker authentication"): a worker holding this broker's start
 * secret is one it started; without it, the name local-N is refused, and so is any worker on a TCP
 * endpoint without CURVE (any local user can reach loopback) unless allow-plain-workers. NULL if
 * allowed, else why not. */
static const char *worker_refusal(broker *b, const proto_msg *m, int *has_secret) {
    *has_secret = 0;
    if (m->has & PROTO_HAS(PF_SECRET)) {
        unsigned diff = m->secret.len != PROTO_SECRET_HEX;
        for (uint32_t i = 0; i < PROTO_SECRET_HEX && !diff; i++) diff |= (unsigned)(m->secret.ptr[i] ^ b->secret[i]);
        if (diff) return "wrong start secret";
        *has_secret = 1;
        return NULL;
    }
    if (m->name.len >= 6 && memcmp(m->name.ptr, "local-", 6) == 0)
        return "the name local-N is reserved for workers this broker started";
    if (b->worker_tcp && !b->auth && !b->cfg->allow_plain_workers)
        return "a TCP worker link without CURVE admits only the broker's own workers (see allow-plain-workers)";
    return NULL;
}

static void on_worker_ready(broker *b, const proto_frame *f, const proto_msg *m) {
    int has_secret;
    const char *refused = worker_refusal(b, m, &has_secret);
    if (refused) {
        unsigned long skipped;
        if (proto_log_allow(&b->log_worker_refused, &skipped))
            proto_log(b->log, PROTO_LOG_WARN, "worker \"%.*s\" (pid %d) refused: %s (%lu more refusals not logged)",
                      (int)(m->name.len > 64 ? 64 : m->name.len), m->name.ptr ? m->name.ptr : "", m->pid, refused,
                      skipped);
        worker *old = worker_find(b, f->ident, f->ident_len);
        if (old) worker_lost(b, old, "announced itself again, refused");
        worker_fence_ident(b, f->ident, f->ident_len); /* its next frames are ignored, not answered */
        return;
    }
    worker *w = worker_find(b, f->ident, f->ident_len);
    if (w) worker_lost(b, w, "announced itself again");
    w = calloc(1, sizeof(*w));
    if (!w) return;
    memcpy(w->ident, f->ident, f->ident_len);
    w->ident_len = f->ident_len;
    proto_utf8_sanitize(m->name.ptr ? m->name.ptr : "", m->name.len, w->name, sizeof(w->name));
    if (!w->name[0]) snprintf(w->name, sizeof(w->name), "worker-%d", m->pid);
    w->pid = m->pid;
    w->slots = w->credit = m->slots;
    w->n_ctx = m->n_ctx;
    snprintf(w->fingerprint, sizeof(w->fingerprint), "%.*s", (int)m->fingerprint.len,
             m->fingerprint.ptr ? m->fingerprint.ptr : "");
    w->local = has_secret && supervisor_owns(b->sup, m->pid);
    w->expiry_ms = proto_clock_ms() + (double)PROTO_HEARTBEAT_MS * PROTO_LIVENESS;
    w->last_send_ms = proto_clock_ms();
    w->next = b->workers;
    b->workers = w;
    b->n_workers++;
    b->had_worker = 1;
    b->t_no_worker = 0;
    if (w->local) b->n_local_ready++;
    proto_log(b->log, PROTO_LOG_INFO, "worker %s (pid %d, %s) ready: %d slots, n_ctx %d, fingerprint %s",
              w->name, w->pid, w->local ? "local" : "remote", w->slots, w->n_ctx,
              w->fingerprint[0] ? w->fingerprint : "-");
    maybe_notify_ready(b);
}

/* A worker's error frame without rid: it could not load the model and is exiting (PROTOCOL.md,
 * "Worker start-up failure"). With no worker up, the waiting requests end now with its reason; if
 * no worker ever came up and the reason is not transient, a local worker will fail the same way
 * on every restart: the broker gives up (broker_run returns -1, broker_failure() says why). */
static void on_worker_cannot_start(broker *b, const proto_msg *m) {
    int permanent = m->reason.len == strlen(proto_reason_name(PROTO_R_MODEL_LOAD_FAILED)) &&
                    memcmp(m->reason.ptr, proto_reason_name(PROTO_R_MODEL_LOAD_FAILED), m->reason.len) == 0;
    int local = m->name.len > 6 && memcmp(m->name.ptr, "local-", 6) == 0;
    snprintf(b->load_error, sizeof(b->load_error), "%.*s", (int)m->message.len, m->message.ptr ? m->message.ptr : "");
    for (char *p = b->load_error; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    proto_log(b->log, PROTO_LOG_ERROR, "worker %.*s cannot start (%s): %s", (int)m->name.len,
              m->name.ptr ? m->name.ptr : "?", permanent ? "model_load_failed" : "transient", b->load_error);
    if (b->n_workers > 0) return; /* others serve */
    char msg[600];
    snprintf(msg, sizeof(msg), "no worker can serve: %s", b->load_error);
    proto_reason why = permanent ? PROTO_R_MODEL_LOAD_FAILED : PROTO_R_WORKER_START_FAILED;
    while (b->q_head) request_fail(b, b->q_head, why, msg);
    if (permanent && local && !b->had_worker) b->fatal = 1;
}

const char *broker_failure(const broker *b) { return b->fatal ? b->load_error : NULL; }

/* The request of a frame from w. NULL if there is none to act on: stale (cancelled for a vanished
 * client, replayed under a new rid), or w broke the contract by naming a rid it was not given (then
 * w has been fenced and freed: *fenced is set). */
static request *worker_request(broker *b, worker *w, const proto_msg *m, int *fenced) {
    *fenced = 0;
    request *r = table_get(b->by_rid, &m->rid, sizeof(m->rid));
    if ((r && r->w != w) || m->rid > b->next_rid || m->rid == 0) {
        char why[96];
        snprintf(why, sizeof(why), "%s for rid %llu, which it was not given", proto_type_name(m->type),
                 (unsigned long long)m->rid);
        worker_fence(b, w, why);
        *fenced = 1;
        return NULL;
    }
    return r;
}

/* Appends a token and its text piece to r's record. 0, or -1 on allocation failure. */
static int request_record(request *r, int32_t token, const proto_str *piece) {
    if (r->n_streamed == r->cap_streamed) {
        uint32_t cap = r->cap_streamed ? 2 * r->cap_streamed : 64;
        int32_t *p = realloc(r->streamed, cap * sizeof(int32_t));
        if (!p) return -1;
        r->streamed = p;
        r->cap_streamed = cap;
    }
    if (r->text_len + piece->len > r->text_cap) {
        size_t cap = r->text_cap ? 2 * r->text_cap : 256;
        while (cap < r->text_len + piece->len) cap *= 2;
        char *p = realloc(r->text, cap);
        if (!p) return -1;
        r->text = p;
        r->text_cap = cap;
    }
    if (piece->len) memcpy(r->text + r->text_len, piece->ptr, piece->len);
    r->text_len += piece->len;
    r->streamed[r->n_streamed++] = token;
    return 0;
}

static void on_worker_token(broker *b, worker *w, const proto_msg *m) {
    double now = proto_clock_ms();
    int fenced;
    request *r = worker_request(b, w, m, &fenced);
    if (!r) return;
    /* the contract: indices in order from 0 (a replay sends the last one again), at most max_tokens
     * of them, pieces of at most PROTO_MAX_PIECE_BYTES, all of them at most PROTO_MAX_TEXT_BYTES */
    char why[128] = "";
    if ((uint32_t)m->index + 1 < r->n_streamed)
        snprintf(why, sizeof(why), "token index %d after %u", m->index, r->n_streamed);
    else if ((uint32_t)m->index > r->n_streamed)
        snprintf(why, sizeof(why), "token index %d skips %u", m->index, r->n_streamed);
    else if (m->index >= r->max_tokens)
        snprintf(why, sizeof(why), "token index %d with max_tokens %d", m->index, r->max_tokens);
    else if (m->text.len > PROTO_MAX_PIECE_BYTES)
        snprintf(why, sizeof(why), "a token piece of %u bytes (at most %d)", m->text.len, PROTO_MAX_PIECE_BYTES);
    else if (r->text_len + m->text.len > PROTO_MAX_TEXT_BYTES)
        snprintf(why, sizeof(why), "more than %u bytes of text", PROTO_MAX_TEXT_BYTES);
    if (why[0]) {
        worker_fence(b, w, why);
        return;
    }
    /* a replay generates the last token before the loss again: forward each index once */
    if ((uint32_t)m->index < r->n_streamed) return;
    if (request_record(r, m->token, &m->text) < 0) {
        request_cancel_on_worker(b, r);
        request_fail(b, r, PROTO_R_INTERNAL, "out of memory");
        return;
    }
    w->tokens++;
    b->tokens_total++;
    metrics_tokens(&b->met, now, 1);
    if (r->t_first == 0) r->t_first = now;
    if (m->index == 0) metrics_ttft(&b->met, now - r->t_submit);
    else metrics_itl(&b->met, now - r->t_last);
    r->t_last = now;
    if (!r->stream) return;
    proto_msg t = *m;
    t.zone = NULL;
    t.id = r->cid;
    t.has = PROTO_HAS(PF_ID) | (m->has & (PROTO_HAS(PF_LOGPROB) | PROTO_HAS(PF_TOP)));
    if (send_client(b, r->cl->ident, r->cl->ident_len, &t) < 0) client_vanished(b, r->cl->ident, r->cl->ident_len);
}

/* done or error from a worker: forward with the client's id and free the request. */
static void on_worker_end(broker *b, worker *w, const proto_msg *m) {
    int fenced;
    request *r = worker_request(b, w, m, &fenced);
    if (!r) return;
    if (m->type == PROTO_T_DONE && (m->n_tokens > (uint32_t)r->max_tokens || m->completion_tokens > r->max_tokens)) {
        char why[96];
        snprintf(why, sizeof(why), "done with %u tokens for max_tokens %d", m->n_tokens, r->max_tokens);
        worker_fence(b, w, why);
        return;
    }
    client *c = r->cl;
    proto_msg e = *m;
    e.zone = NULL;
    e.id = r->cid;
    char idbuf[PROTO_MAX_ID_BYTES];
    memcpy(idbuf, r->cid_buf, sizeof(idbuf));
    e.id.str.ptr = idbuf;
    e.has = (m->has & ~PROTO_HAS(PF_RID)) | PROTO_HAS(PF_ID);
    if (m->type == PROTO_T_DONE) {
        /* the worker timed its queue from its own receipt: add the wait in the broker's queue. The
         * first token and the end are timed on the broker's own clock (PROTOCOL.md: from the
         * broker's receipt of the submit): the worker's figures would miss the time the request
         * sat in the worker's socket while a step ran, and span one run only after a replay */
        e.queue_ms += r->t_dispatch - r->t_submit;
        e.ttft_ms = r->t_first > 0 ? r->t_first - r->t_submit : 0;
        e.total_ms = proto_clock_ms() - r->t_submit;
        e.name = (proto_str){w->name, (uint32_t)strlen(w->name)};
        e.has |= PROTO_HAS(PF_NAME);
        if (m->finish == PROTO_FINISH_ERROR) b->errors_total++, metrics_error(&b->met, proto_clock_ms());
    } else {
        b->errors_total++;
        metrics_error(&b->met, proto_clock_ms());
    }
    request_log_end(b, r, &e);
    request_free(b, r);
    client_after_final(b, c, send_client(b, c->ident, c->ident_len, &e));
}

static void on_worker_message(broker *b, proto_frame *f) {
    proto_msg m;
    char err[256];
    int rc = proto_decode(&m, proto_frame_data(f), proto_frame_size(f), err, sizeof(err));
    worker *w = worker_find(b, f->ident, f->ident_len);
    if (!w && worker_is_fenced(b, f->ident, f->ident_len)) { /* ignored, not answered */
        proto_msg_destroy(&m);
        return;
    }
    if (rc < 0) {
        unsigned long skipped;
        if (proto_log_allow(&b->log_worker_bad, &skipped))
            proto_log(b->log, PROTO_LOG_WARN, "worker %s: undecodable message dropped: %s (%lu more not logged)",
                      w ? w->name : "(unregistered)", err, skipped);
        proto_msg_destroy(&m);
        return;
    }
    if (m.type == PROTO_T_READY) {
        on_worker_ready(b, f, &m);
        dispatch(b);
        proto_msg_destroy(&m);
        return;
    }
    if (m.type == PROTO_T_ERROR && !(m.has & PROTO_HAS(PF_RID))) {
        on_worker_cannot_start(b, &m);
        proto_msg_destroy(&m);
        return;
    }
    if (!w) {
        /* not (or no longer) registered: tell it to start over */
        proto_msg d;
        proto_msg_init(&d, PROTO_T_DISCONNECT);
        char e2[64];
        proto_sock_send(b->back, f->ident, f->ident_len, &d, ZMQ_DONTWAIT, &b->sb, e2, sizeof(e2));
        proto_msg_destroy(&m);
        return;
    }
    w->expiry_ms = proto_clock_ms() + (double)PROTO_HEARTBEAT_MS * PROTO_LIVENESS;
    switch (m.type) {
    case PROTO_T_HB:
        if (m.has & PROTO_HAS(PF_KV)) w->kv = m.kv;
        break;
    case PROTO_T_CREDIT:
        w->credit += m.credit;
        if (w->credit > w->slots - w->running) w->credit = w->slots - w->running > 0 ? w->slots - w->running : 0;
        dispatch(b);
        break;
    case PROTO_T_TOKEN:
        if (m.has & PROTO_HAS(PF_RID)) on_worker_token(b, w, &m);
        break;
    case PROTO_T_DONE:
    case PROTO_T_ERROR:
        if (m.has & PROTO_HAS(PF_RID)) on_worker_end(b, w, &m);
        break;
    default:
        proto_log(b->log, PROTO_LOG_WARN, "worker %s: unexpected %s dropped", w->name, proto_type_name(m.type));
    }
    proto_msg_destroy(&m);
}

/* ============================================================================================== */
/* the client link                                                                                 */
/* ============================================================================================== */

static void on_client_submit(broker *b, proto_frame *f, const proto_msg *m) {
    if (b->draining) {
        send_error(b, f->ident, f->ident_len, &m->id, PROTO_R_SHUTTING_DOWN, "the broker is shutting down");
        return;
    }
    unsigned char key[CID_KEY_MAX];
    size_t klen = cid_key(f->ident, f->ident_len, &m->id, key);
    if (table_get(b->by_cid, key, klen)) {
        send_error_field(b, f->ident, f->ident_len, &m->id, PROTO_R_DUPLICATE_ID, "id", "this id is already live");
        return;
    }
    client *known = client_get(b, f->ident, f->ident_len, 0);
    if (known && known->n_reqs >= b->max_client_requests) {
        b->overloaded_total++;
        char msg[128];
        snprintf(msg, sizeof(msg), "this client has %d requests in flight (the limit); retry later", known->n_reqs);
        send_error(b, f->ident, f->ident_len, &m->id, PROTO_R_CLIENT_LIMIT, msg);
        return;
    }
    /* admission: each client waiting gets a fair share of the queue, max_queue / (clients waiting,
     * counting this one). Over it: client_limit. Under it but the queue is full: the newest waiting
     * request of a client over its share makes room (it ends with client_limit), so one flooding
     * client cannot get every other one refused; if no client is over its share: queue_full. */
    if (total_credit(b) == 0) {
        int mine = known ? known->n_waiting : 0;
        int clients = b->n_clients_waiting + (mine == 0);
        int share = b->cfg->max_queue / clients > 0 ? b->cfg->max_queue / clients : 1;
        if (mine >= share && clients > 1) {
            b->overloaded_total++;
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "this client has %d requests waiting, its fair share of the queue (%d clients waiting); retry "
                     "later",
                     mine, clients);
            send_error(b, f->ident, f->ident_len, &m->id, PROTO_R_CLIENT_LIMIT, msg);
            return;
        }
        if (b->q_len >= b->cfg->max_queue) {
            request *victim = b->q_tail;
            while (victim && (victim->n_replays > 0 || victim->cl->n_waiting <= share)) victim = victim->prev;
            b->overloaded_total++;
            if (!victim) {
                char msg[128];
                snprintf(msg, sizeof(msg), "queue full (%d waiting, %d workers); retry later", b->q_len, b->n_workers);
                send_error(b, f->ident, f->ident_len, &m->id, PROTO_R_QUEUE_FULL, msg);
                return;
            }
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "made room in a full queue: this client had %d requests waiting, more than its fair share; "
                     "retry later",
                     victim->cl->n_waiting);
            request_fail(b, victim, PROTO_R_CLIENT_LIMIT, msg);
        }
    }
    /* the worker's request: the same fields under our rid */
    proto_msg q = *m;
    q.zone = NULL;
    q.type = PROTO_T_REQUEST;
    q.rid = ++b->next_rid;
    q.has = PROTO_HAS(PF_RID) | (m->has & (PROTO_HAS(PF_PROMPT) | PROTO_HAS(PF_PROMPT_IDS) | PROTO_HAS(PF_TOP_LOGPROBS)));
    char err[256];
    msgpack_sbuffer_clear(&b->sb);
    request *r = calloc(1, sizeof(*r));
    client *c = NULL;
    if (!r || proto_encode(&q, &b->sb, err, sizeof(err)) < 0 || !(r->wire = malloc(b->sb.size)) ||
        !(c = client_get(b, f->ident, f->ident_len, 1))) {
        if (r) free(r->wire);
        free(r);
        send_error(b, f->ident, f->ident_len, &m->id, PROTO_R_INTERNAL, "cannot queue the request");
        return;
    }
    memcpy(r->wire, b->sb.data, b->sb.size);
    r->wire_len = b->sb.size;
    r->rid = q.rid;
    r->cl = c;
    r->cid = m->id;
    if (m->id.is_str) {
        memcpy(r->cid_buf, m->id.str.ptr, m->id.str.len);
        r->cid.str.ptr = r->cid_buf;
    }
    r->stream = m->stream;
    r->max_tokens = m->max_tokens;
    r->priority = (uint8_t)m->priority;
    r->t_submit = r->t_last = proto_clock_ms();
    if (table_put(b->by_rid, &r->rid, sizeof(r->rid), r) < 0 || table_put(b->by_cid, key, klen, r) < 0) {
        table_del(b->by_rid, &r->rid, sizeof(r->rid));
        free(r->wire);
        free(r);
        client_release_if_idle(b, c);
        send_error(b, f->ident, f->ident_len, &m->id, PROTO_R_INTERNAL, "cannot queue the request");
        return;
    }
    r->cnext = c->reqs;
    if (c->reqs) c->reqs->cprev = r;
    c->reqs = r;
    c->n_reqs++;
    q_push(b, r, 0);
    b->requests_total++;
    metrics_request(&b->met, proto_clock_ms());
    dispatch(b);
}

static void on_client_cancel(broker *b, proto_frame *f, const proto_msg *m) {
    unsigned char key[CID_KEY_MAX];
    request *r = table_get(b->by_cid, key, cid_key(f->ident, f->ident_len, &m->id, key));
    if (!r) return; /* already ended: its done frame is on the way or delivered */
    if (r->running) {
        request_cancel_on_worker(b, r); /* the worker's done (cancelled) is forwarded as usual */
        return;
    }
    client *c = r->cl;
    proto_msg d;
    proto_msg_init(&d, PROTO_T_DONE);
    d.id = m->id;
    d.has = PROTO_HAS(PF_ID);
    d.finish = PROTO_FINISH_CANCELLED;
    d.queue_ms = 0; /* it never got a slot (PROTOCOL.md: 0 for what did not happen) */
    d.total_ms = proto_clock_ms() - r->t_submit;
    request_log_end(b, r, &d);
    request_free(b, r);
    client_after_final(b, c, send_client(b, c->ident, c->ident_len, &d)); /* c->ident is f's */
}

static void on_client_stats(broker *b, proto_frame *f) {
    /* a stats reply is the largest frame a client can ask for at no cost: a few a second each */
    client *c = table_get(b->clients, f->ident, f->ident_len);
    if (c) {
        double now = proto_clock_ms();
        if (now - c->stats_window_ms >= 1000.0) {
            c->stats_window_ms = now;
            c->stats_in_window = 0;
        }
        if (++c->stats_in_window > PROTO_CLIENT_STATS_PER_S) {
            char msg[96];
            snprintf(msg, sizeof(msg), "at most %d stats requests a second", PROTO_CLIENT_STATS_PER_S);
            send_error(b, f->ident, f->ident_len, NULL, PROTO_R_CLIENT_LIMIT, msg);
            return;
        }
    }
    proto_msg s;
    proto_msg_init(&s, PROTO_T_STATS_REPLY);
    double now = proto_clock_ms();
    int n = b->n_workers > PROTO_MAX_WORKERS ? PROTO_MAX_WORKERS : b->n_workers;
    proto_worker_info *wl = calloc(n > 0 ? (size_t)n : 1, sizeof(*wl));
    if (!wl) return;
    int i = 0, running = 0;
    for (worker *w = b->workers; w; w = w->next) {
        running += w->running;
        if (i == n) continue;
        wl[i].name = (proto_str){w->name, (uint32_t)strlen(w->name)};
        wl[i].pid = w->pid;
        wl[i].slots = w->slots;
        wl[i].credit = w->credit;
        wl[i].running = w->running;
        wl[i].local = (uint8_t)w->local;
        wl[i].tokens = w->tokens;
        wl[i].kv = w->kv;
        i++;
    }
    s.name = (proto_str){"gpt2d", 5};
    s.uptime_s = (now - b->met.start_ms) / 1000.0;
    s.queue = b->q_len;
    s.max_queue = b->cfg->max_queue;
    s.running = running;
    s.requests_total = b->requests_total;
    s.tokens_total = b->tokens_total;
    s.errors_total = b->errors_total;
    s.overloaded_total = b->overloaded_total;
    s.tokens_per_s = metrics_rate(&b->met, now);
    s.ttft_pct = metrics_ttft_pct(&b->met);
    s.itl_pct = metrics_itl_pct(&b->met);
    s.ttft_hist = b->met.ttft_hist;
    s.itl_hist = b->met.itl_hist;
    s.total_hist = b->met.total_hist;
    s.queue_hist = b->met.queue_hist;
    s.totals = b->met.totals;
    s.error_reasons = b->met.reasons;
    s.recent = metrics_recent(&b->met, now);
    s.has |= PROTO_HAS(PF_TTFT_HIST) | PROTO_HAS(PF_ITL_HIST) | PROTO_HAS(PF_TOTAL_HIST) | PROTO_HAS(PF_RECENT) |
             PROTO_HAS(PF_QUEUE_HIST) | PROTO_HAS(PF_TOTALS) | PROTO_HAS(PF_ERROR_REASONS);
    s.worker_list = wl;
    s.n_worker_list = (uint32_t)n;
    send_client(b, f->ident, f->ident_len, &s);
    free(wl);
}

/* 1 for a known type that clients may not send. */
static int broker_not_client_type(proto_type t) {
    return t != PROTO_T_NONE && t != PROTO_T_HELLO && t != PROTO_T_SUBMIT && t != PROTO_T_CANCEL &&
           t != PROTO_T_STATS && t != PROTO_T_HB;
}

static void on_client_message(broker *b, proto_frame *f) {
    /* every client that talks to us is known while it does: what it may have queued is accounted */
    client *c = client_get(b, f->ident, f->ident_len, 1);
    if (c) {
        c->last_recv_ms = proto_clock_ms();
        int fd = zmq_msg_get(&f->body, ZMQ_SRCFD);
        if (fd >= 0) c->fd = fd;
    }
    proto_msg m;
    char err[256];
    int rc = proto_decode(&m, proto_frame_data(f), proto_frame_size(f), err, sizeof(err));
    if (rc < 0 && rc != PROTO_E_VERSION && broker_not_client_type(m.type)) {
        /* a worker-link or reply type: that is the error, whatever its fields */
        snprintf(err, sizeof(err), "'%s' is not a client message", proto_type_name(m.type));
        send_error(b, f->ident, f->ident_len, NULL, PROTO_R_NOT_CLIENT_MESSAGE, err);
        proto_msg_destroy(&m);
        return;
    }
    if (rc < 0) {
        proto_log(b->log, PROTO_LOG_DEBUG, "client message refused: %s", err);
        const proto_cid *id = (m.has & PROTO_HAS(PF_ID)) ? &m.id : NULL;
        send_error_field(b, f->ident, f->ident_len, id, m.fail, m.fail_field, err);
        proto_msg_destroy(&m);
        return;
    }
    switch (m.type) {
    case PROTO_T_HELLO: {
        proto_msg w;
        proto_msg_init(&w, PROTO_T_WELCOME);
        w.name = (proto_str){"gpt2d", 5};
        w.workers = b->n_workers;
        w.max_queue = b->cfg->max_queue;
        send_client(b, f->ident, f->ident_len, &w);
        break;
    }
    case PROTO_T_SUBMIT: on_client_submit(b, f, &m); break;
    case PROTO_T_CANCEL:
        if (m.has & PROTO_HAS(PF_ID)) on_client_cancel(b, f, &m);
        else send_error_field(b, f->ident, f->ident_len, NULL, PROTO_R_MISSING_FIELD, "id", "cancel: clients use 'id'");
        break;
    case PROTO_T_STATS: on_client_stats(b, f); break;
    case PROTO_T_HB: break;
    default: {
        snprintf(err, sizeof(err), "'%s' is not a client message", proto_type_name(m.type));
        const proto_cid *id = (m.has & PROTO_HAS(PF_ID)) ? &m.id : NULL;
        send_error(b, f->ident, f->ident_len, id, PROTO_R_NOT_CLIENT_MESSAGE, err);
    }
    }
    proto_msg_destroy(&m);
}

/* ============================================================================================== */
/* timers                                                                                          */
/* ============================================================================================== */

static void on_child_exit(void *user, pid_t pid) {
    broker *b = user;
    if (!b->draining) b->met.totals.worker_restarts++; /* the supervisor restarts it */
    b->worker_exits++;
    for (worker *w = b->workers; w; w = w->next) {
        if (w->local && w->pid == pid) {
            worker_lost(b, w, "process exited");
            return;
        }
    }
}

/* Deadlines: a request waiting longer than the queue timeout, or alive longer than the request
 * timeout, fails with timeout (cancelled on its worker); with no worker connected for
 * PROTO_NO_WORKER_MS, every waiting request fails with no_worker. The absence is counted from the
 * moment the last worker left, or the first local worker process exited, or the start with no local
 * workers to wait for (local workers still loading are not starvation). */
static void broker_deadlines(broker *b, double now) {
    if (b->n_workers > 0)
        b->t_no_worker = 0;
    else if (b->t_no_worker == 0 && (b->had_worker || b->worker_exits > 0 || b->cfg->workers == 0))
        b->t_no_worker = now; /* no local worker is loading: absence counts from now */
    int starved = b->t_no_worker > 0 && now - b->t_no_worker >= PROTO_NO_WORKER_MS;
    char starved_msg[640];
    if (starved)
        snprintf(starved_msg, sizeof(starved_msg), "%s%s%s",
                 b->had_worker ? "no worker has been connected for 10 s" : "no worker has ever connected",
                 b->load_error[0] ? "; the last worker failed to start: " : "", b->load_error);
    /* One pass over each list. Failing a request may end its client's other requests too (when the
     * client turns out to be gone), so the walk goes on from the next request of another client
     * then; otherwise only r was freed and its successor stands. */
    for (request *r = b->q_head, *next; r; r = next) {
        proto_reason why = PROTO_R_NONE;
        const char *msg = NULL;
        if (starved) why = PROTO_R_NO_WORKER, msg = starved_msg;
        else if (now - r->t_submit >= b->request_timeout_ms)
            why = PROTO_R_REQUEST_TIMEOUT, msg = "the request timeout passed";
        else if (r->n_replays == 0 && now - r->t_submit >= b->queue_timeout_ms)
            why = PROTO_R_QUEUE_TIMEOUT, msg = "no slot became free within the queue timeout";
        next = r->next;
        if (why == PROTO_R_NONE) continue;
        request *other = next;
        while (other && other->cl == r->cl) other = other->next;
        if (request_fail(b, r, why, msg)) next = other;
    }
    for (worker *w = b->workers; w; w = w->next) {
        for (request *r = w->reqs, *next; r; r = next) {
            next = r->next;
            if (now - r->t_submit < b->request_timeout_ms) continue;
            request *other = next;
            while (other && other->cl == r->cl) other = other->next;
            request_cancel_on_worker(b, r);
            if (request_fail(b, r, PROTO_R_REQUEST_TIMEOUT, "the request timeout passed")) next = other;
        }
    }
}

/* Heartbeats to idle peers, and the death of silent workers. */
static void broker_tick(broker *b, double now) {
    broker_deadlines(b, now);
    proto_msg hb;
    proto_msg_init(&hb, PROTO_T_HB);
    worker *w = b->workers;
    while (w) {
        worker *next = w->next;
        if (now >= w->expiry_ms) {
            /* tell it, in case it is alive but slow: it will start over */
            proto_msg d;
            proto_msg_init(&d, PROTO_T_DISCONNECT);
            char e2[64];
            proto_sock_send(b->back, w->ident, w->ident_len, &d, ZMQ_DONTWAIT, &b->sb, e2, sizeof(e2));
            worker_lost(b, w, "silent");
        } else if (now - w->last_send_ms >= PROTO_HEARTBEAT_MS && send_worker(b, w, &hb) < 0) {
            worker_lost(b, w, "unreachable");
        }
        w = next;
    }
    client *c = b->client_list;
    while (c) {
        client *next = c->next;
        /* a quiet client is forgotten; a busy one hears from us after HEARTBEAT - 2 ticks of
         * silence: the tick's lateness keeps the gap within the PROTO_HEARTBEAT_MS PROTOCOL.md promises */
        if (c->n_reqs == 0) client_release_if_idle(b, c);
        else if (now - c->last_send_ms >= PROTO_HEARTBEAT_MS - 2 * BROKER_TICK_MS &&
                 send_client(b, c->ident, c->ident_len, &hb) < 0)
            client_vanished(b, c->ident, c->ident_len);
        c = next;
    }
    dispatch(b);
}

/* ============================================================================================== */
/* the loop                                                                                        */
/* ============================================================================================== */

/* Reads up to BROKER_BATCH messages from sock. -1 on a fatal socket error. */
static int broker_drain(broker *b, void *sock, void (*handle)(broker *, proto_frame *)) {
    for (int i = 0; i < BROKER_BATCH; i++) {
        proto_frame f;
        int rc = proto_sock_recv(sock, 1, &f, ZMQ_DONTWAIT);
        if (rc == -2) continue; /* wrong frame count: dropped */
        if (rc < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        handle(b, &f);
        proto_frame_close(&f);
    }
    return 0;
}

/* ============================================================================================== */
/* the service manager's view, and the graceful shutdown                                           */
/* ============================================================================================== */

static int broker_running(const broker *b) {
    int n = 0;
    for (const worker *w = b->workers; w; w = w->next) n += w->running;
    return n;
}

static void broker_pulse(broker *b) {
    if (!b->on_tick) return;
    double now = proto_clock_ms();
    broker_status st = {
        .ready = b->notified_ready,
        .draining = b->draining,
        .local_ready = b->n_local_ready,
        .local_wanted = b->cfg->workers,
        .workers = b->n_workers,
        .running = broker_running(b),
        .queued = b->q_len,
        .tokens_per_s = metrics_rate(&b->met, now),
    };
    b->on_tick(b->tick_user, &st);
}

void broker_on_tick(broker *b, broker_tick_fn fn, void *user) {
    b->on_tick = fn;
    b->tick_user = user;
}

/* SIGTERM: refuse new submits, end the waiting ones, let the running ones finish. */
static void broker_shutdown_begin(broker *b, double now) {
    b->draining = 1;
    b->drain_end_ms = now + b->cfg->shutdown_grace_ms;
    proto_log(b->log, PROTO_LOG_INFO,
              "shutting down: %d running request(s) may finish within %d ms; %d waiting request(s) end now",
              broker_running(b), b->cfg->shutdown_grace_ms, b->q_len);
    while (b->q_head) request_fail(b, b->q_head, PROTO_R_SHUTTING_DOWN, "the broker is shutting down");
    broker_pulse(b);
}

/* 1 when the drain is over: nothing runs any more, or the grace passed, every running request was
 * cancelled, and the workers had PROTO_CANCEL_GRACE_MS to send their "cancelled" done frames. */
static int broker_shutdown_done(broker *b, double now) {
    int running = broker_running(b);
    if (running == 0 && !b->q_head) return 1;
    if (b->drain_cancel_end_ms == 0 && now >= b->drain_end_ms) {
        proto_log(b->log, PROTO_LOG_WARN, "shutdown grace over: cancelling %d running request(s)", running);
        for (worker *w = b->workers; w; w = w->next)
            for (request *r = w->reqs; r; r = r->next) request_cancel_on_worker(b, r);
        b->drain_cancel_end_ms = now + PROTO_CANCEL_GRACE_MS;
    }
    return b->drain_cancel_end_ms > 0 && now >= b->drain_cancel_end_ms;
}

int broker_run(broker *b, volatile sig_atomic_t *stop, volatile sig_atomic_t *child) {
    b->next_tick_ms = proto_clock_ms();
    for (;;) {
        double now = proto_clock_ms();
        if (b->fatal) {
            proto_log(b->log, PROTO_LOG_ERROR, "no worker can load the model: %s", b->load_error);
            return -1;
        }
        if (*stop && !b->draining) broker_shutdown_begin(b, now);
        if (b->draining && *stop > 1) { /* a second SIGINT/SIGTERM: the drain ends now */
            proto_log(b->log, PROTO_LOG_WARN, "second stop signal: ending %d running request(s) now",
                      broker_running(b));
            break;
        }
        if (b->draining && broker_shutdown_done(b, now)) break;
        if (*child) {
            *child = 0;
            supervisor_reap(b->sup, now, on_child_exit, b);
            if (b->http_sup) supervisor_reap(b->http_sup, now, NULL, NULL);
            dispatch(b);
        }
        int due = b->draining ? -1 : supervisor_tick(b->sup, now); /* no restarts while stopping */
        if (b->http_sup && !b->draining) {
            int hdue = supervisor_tick(b->http_sup, now);
            if (hdue >= 0 && (due < 0 || hdue < due)) due = hdue;
        }
        if (now >= b->next_tick_ms) {
            broker_tick(b, now);
            broker_pulse(b);
            b->next_tick_ms = now + BROKER_TICK_MS;
        }
        long timeout = (long)(b->next_tick_ms - now) + 1;
        if (due >= 0 && due < timeout) timeout = due;
        zmq_pollitem_t items[6] = {{b->back, 0, ZMQ_POLLIN, 0}, {b->front, 0, ZMQ_POLLIN, 0}};
        int n_items = 2;
        void *socks[4];
        int n = conns_poll_sockets(b->conns, socks, 2); /* the connection monitors */
        if (b->auth) n += auth_poll_sockets(b->auth, socks + n, 2); /* the ZAP handler */
        for (int i = 0; i < n; i++) items[n_items++] = (zmq_pollitem_t){socks[i], 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(items, n_items, timeout);
        if (rc < 0) {
            if (errno == EINTR) continue;
            proto_log(b->log, PROTO_LOG_ERROR, "zmq_poll: %s", zmq_strerror(errno));
            return -1;
        }
        conns_handle(b->conns); /* first: a connection over a limit is shut before it is served */
        if (b->auth) auth_handle(b->auth);
        /* workers first: their credits and ends make room for what clients send */
        if ((items[0].revents & ZMQ_POLLIN) && broker_drain(b, b->back, on_worker_message) < 0) return -1;
        if ((items[1].revents & ZMQ_POLLIN) && broker_drain(b, b->front, on_client_message) < 0) return -1;
    }
    proto_log(b->log, PROTO_LOG_INFO, "stopping: %d request(s) still running end with shutting_down",
              broker_running(b));
    return 0;
}

/* ============================================================================================== */
/* construction                                                                                    */
/* ============================================================================================== */

/* mkdir -p for the runtime directory of an ipc:// endpoint (mode 0700). */
static int broker_ipc_dir(const char *endpoint, char *err, size_t errlen) {
    if (strncmp(endpoint, "ipc://", 6) != 0) return 0;
    char path[512];
    snprintf(path, sizeof(path), "%s", endpoint + 6);
    char *slash = strrchr(path, '/');
    if (!slash || slash == path) return 0;
    *slash = 0;
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(path, 0700);
        *p = '/';
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "mkdir %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The options of the client socket: a client that stops reading costs at most
 * PROTO_CLIENT_SNDHWM frames before it is dropped (see send_client), an unread backlog at most
 * PROTO_CLIENT_RCVHWM frames, and a frame over the limit is answered rather than dropped in silence
 * (up to PROTO_MAX_FRAME_BYTES). 0 or -1. */
static int broker_front_options(void *s) {
    int sndhwm = PROTO_CLIENT_SNDHWM, rcvhwm = PROTO_CLIENT_RCVHWM;
    int64_t maxmsg = PROTO_MAX_FRAME_BYTES;
    return zmq_setsockopt(s, ZMQ_SNDHWM, &sndhwm, sizeof(sndhwm)) < 0 ||
                   zmq_setsockopt(s, ZMQ_RCVHWM, &rcvhwm, sizeof(rcvhwm)) < 0 ||
                   zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) < 0
               ? -1
               : 0;
}

/* Takes <path>.lock beside an ipc:// socket file, the way PostgreSQL's postmaster.pid guards a data
 * directory: binding an ipc:// endpoint silently replaces another process's socket file, so a
 * second gpt2d would steal the first one's clients. The lock is an flock() held for the broker's
 * life (so a crashed broker's lock and socket are simply taken over) and the file holds its pid.
 * The fd; 0 for an endpoint that is not an ipc:// file (tcp://, abstract ipc://@); -1 with err
 * naming the running broker's pid. */
static int broker_ipc_lock(const char *endpoint, char *err, size_t errlen) {
    if (strncmp(endpoint, "ipc://", 6) != 0 || endpoint[6] == '@') return 0;
    char path[600];
    snprintf(path, sizeof(path), "%s.lock", endpoint + 6);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        close(fd);
        snprintf(err, errlen,
                 "%s is in use: another gpt2d (pid %s) is serving it (lock file %s). Stop it first, or "
                 "give this one other endpoints (--listen / --worker-listen)",
                 endpoint, pid[0] ? pid : "?", path);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        /* the pid is only for the other broker's message: the flock is what counts */
    }
    return fd;
}

/* A bound ROUTER for clients (front) or workers. With CURVE configured it is a CURVE server whose
 * ZAP domain ("clients" / "workers") selects the allow-list. An ipc:// socket file is made 0660 for
 * clients (the directory's group may be the clients'), 0600 for workers: only the service user may
 * connect a worker there. A default runtime directory must be ours and 0700 (proto_runtime.h). */
static void *broker_bind(broker *b, const char *endpoint, int front, char *err, size_t errlen) {
    if (proto_runtime_check_endpoint(endpoint, !front, 1, err, errlen) < 0) return NULL;
    if (broker_ipc_dir(endpoint, err, errlen) < 0) return NULL;
    int lock = broker_ipc_lock(endpoint, err, errlen);
    if (lock < 0) return NULL;
    if (lock > 0) {
        b->lock_fd[front] = lock;
        snprintf(b->ipc_file[front], sizeof(b->ipc_file[front]), "%s", endpoint + strlen("ipc://"));
    }
    void *s = proto_sock_new(b->ctx, ZMQ_ROUTER, err, errlen);
    if (!s) return NULL;
    if (front && broker_front_options(s) < 0) {
        snprintf(err, errlen, "zmq_setsockopt: %s", zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    if (b->auth && auth_server_socket(b->auth, s, front ? AUTH_DOMAIN_CLIENTS : AUTH_DOMAIN_WORKERS, err, errlen) < 0) {
        zmq_close(s);
        return NULL;
    }
    mode_t old_mask = umask(077); /* the socket file is never more open than its final mode */
    int rc = zmq_bind(s, endpoint);
    umask(old_mask);
    if (rc < 0) {
        snprintf(err, errlen, "bind %s: %s", endpoint, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    if (strncmp(endpoint, "ipc://", 6) == 0 && endpoint[6] != '@' && chmod(endpoint + 6, front ? 0660 : 0600) < 0) {
        snprintf(err, errlen, "chmod %s: %s", endpoint + 6, strerror(errno));
        zmq_close(s);
        return NULL;
    }
    if (b->conns && conns_watch(b->conns, s, front, front ? AUTH_DOMAIN_CLIENTS : AUTH_DOMAIN_WORKERS) < 0)
        proto_log(b->log, PROTO_LOG_WARN, "%s: no connection monitor (%s): connections are not limited",
                  endpoint, zmq_strerror(errno));
    return s;
}

/* The endpoint local workers connect to: the bound one, with a wildcard host made loopback. */
static void broker_worker_endpoint(broker *b) {
    char last[512];
    size_t len = sizeof(last);
    if (zmq_getsockopt(b->back, ZMQ_LAST_ENDPOINT, last, &len) < 0) {
        snprintf(b->worker_connect, sizeof(b->worker_connect), "%s", b->cfg->worker_listen);
        return;
    }
    const char *wild = strstr(last, "://0.0.0.0:");
    if (wild)
        snprintf(b->worker_connect, sizeof(b->worker_connect), "%.*s://127.0.0.1:%s", (int)(wild - last), last,
                 wild + 11);
    else
        snprintf(b->worker_connect, sizeof(b->worker_connect), "%s", last);
}

/* The local worker command line: the engine options of cfg (eopt.h's table), those not at their
 * default. */
static char **broker_worker_argv(broker *b) {
    const config *c = b->cfg;
    char **v = calloc(40, sizeof(char *));
    if (!v) return NULL;
    int n = 0;
#define ARG(s) (v[n++] = strdup(s))
    ARG(c->worker_bin);
    ARG("--model");
    ARG(c->model ? c->model : ""); /* NULL only with --workers 0 */
    ARG("--connect");
    ARG(b->worker_connect);
    ARG("--log-level");
    ARG(c->log_level);
    if (eopt_argv(&c->engine, v, &n, 30) < 0) v[n++] = NULL; /* out of memory or room: cleaned below */
    if (b->auth) { /* local workers authenticate with the broker's own key pair */
        ARG("--curve-key");
        ARG(c->curve_secret);
        ARG("--server-key");
        ARG(auth_public_key(b->auth));
    }
#undef ARG
    for (int i = 0; i < n; i++)
        if (!v[i]) {
            for (int k = 0; k < n; k++) free(v[k]);
            free(v);
            return NULL;
        }
    return v;
}

/* The endpoint a local client (the gateway) connects to: the bound client one, wildcard made loopback. */
static void broker_client_endpoint(broker *b, char *out, size_t cap) {
    char last[512];
    size_t len = sizeof(last);
    if (zmq_getsockopt(b->front, ZMQ_LAST_ENDPOINT, last, &len) < 0) {
        snprintf(out, cap, "%s", b->cfg->listen);
        return;
    }
    const char *wild = strstr(last, "://0.0.0.0:");
    if (wild) snprintf(out, cap, "%.*s://127.0.0.1:%s", (int)(wild - last), last, wild + 11);
    else snprintf(out, cap, "%s", last);
}

/* The gateway's command line (gpt2d-http): the http-* settings, the client endpoint, the model's
 * name (the model directory's, unless http-model-name), and CURVE with the broker's own key pair. */
static char **broker_http_argv(broker *b) {
    const config *c = b->cfg;
    broker_client_endpoint(b, b->http_connect, sizeof(b->http_connect));
    const char *name = c->http_model_name;
    if (!name) {
        snprintf(b->http_model_name, sizeof(b->http_model_name), "%s", c->model ? c->model : "gpt2");
        size_t n = strlen(b->http_model_name);
        while (n > 1 && b->http_model_name[n - 1] == '/') b->http_model_name[--n] = 0;
        const char *slash = strrchr(b->http_model_name, '/');
        name = slash && slash[1] ? slash + 1 : b->http_model_name;
    }
    char **v = calloc(32, sizeof(char *));
    if (!v) return NULL;
    int n = 0;
    char num[64];
#define ARG(s) (v[n++] = strdup(s))
#define ARGI(flag, x) (ARG(flag), snprintf(num, sizeof(num), "%d", (x)), ARG(num))
    ARG(c->http_bin);
    ARG("--listen");
    ARG(c->http_listen);
    ARG("--connect");
    ARG(b->http_connect);
    ARG("--model-name");
    ARG(name);
    ARGI("--max-connections", c->http_max_connections);
    ARGI("--idle-timeout-s", c->http_idle_timeout_s);
    ARGI("--stream-buffer-kb", c->http_stream_buffer_kb);
    ARG("--log-level");
    ARG(c->log_level);
    if (c->http_api_keys) {
        ARG("--api-keys");
        ARG(c->http_api_keys);
    }
    if (c->http_chat_template) {
        ARG("--chat-template");
        ARG(c->http_chat_template);
    }
    if (b->auth) {
        ARG("--curve-key");
        ARG(c->curve_secret);
        ARG("--server-key");
        ARG(auth_public_key(b->auth));
    }
#undef ARG
#undef ARGI
    for (int i = 0; i < n; i++)
        if (!v[i]) {
            for (int k = 0; k < n; k++) free(v[k]);
            free(v);
            return NULL;
        }
    return v;
}

broker *broker_new(const config *cfg, const proto_logger *log, char *err, size_t errlen) {
    broker *b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->cfg = cfg;
    b->log = log;
    b->lock_fd[0] = b->lock_fd[1] = -1;
    b->queue_timeout_ms = cfg->queue_timeout_ms > 0 ? cfg->queue_timeout_ms : PROTO_QUEUE_TIMEOUT_MS;
    b->request_timeout_ms = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : PROTO_REQUEST_TIMEOUT_MS;
    b->max_client_requests = cfg->max_client_requests > 0 ? cfg->max_client_requests : PROTO_MAX_CLIENT_REQUESTS;
    msgpack_sbuffer_init(&b->sb);
    metrics_init(&b->met, proto_clock_ms());
    b->clients = table_new();
    b->by_rid = table_new();
    b->by_cid = table_new();
    b->ctx = zmq_ctx_new();
    if (!b->clients || !b->by_rid || !b->by_cid || !b->ctx) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (cfg->curve_secret && !(b->auth = auth_new(b->ctx, cfg, log, err, errlen))) goto fail;
    if (!(b->conns = conns_new(b->ctx, log, cfg->max_connections, cfg->max_connections_per_uid))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (b->auth) conns_on_handshake(b->conns, auth_log_handshake, b->auth);
    /* the start secret: local workers inherit it, and so prove in ready that we started them */
    unsigned char rnd[PROTO_SECRET_HEX / 2];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        snprintf(err, errlen, "getrandom: %s", strerror(errno));
        goto fail;
    }
    for (size_t i = 0; i < sizeof(rnd); i++) snprintf(b->secret + 2 * i, 3, "%02x", rnd[i]);
    setenv("GPT2D_WORKER_SECRET", b->secret, 1);
    b->worker_tcp = strncmp(cfg->worker_listen, "tcp://", 6) == 0;
    if (!(b->back = broker_bind(b, cfg->worker_listen, 0, err, errlen))) goto fail;
    if (!(b->front = broker_bind(b, cfg->listen, 1, err, errlen))) goto fail;
    broker_worker_endpoint(b);
    if (!(b->worker_argv = broker_worker_argv(b)) ||
        !(b->sup = supervisor_new(cfg->workers, b->worker_argv, cfg->restart_max_ms, log))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (cfg->http_listen) {
        if (!(b->http_argv = broker_http_argv(b)) ||
            !(b->http_sup = supervisor_new(1, b->http_argv, cfg->restart_max_ms, log))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        supervisor_set_names(b->http_sup, "gateway", "http-");
    }
    proto_log(log, PROTO_LOG_INFO, "clients on %s, workers on %s; %d local worker(s), max queue %d%s%s",
              cfg->listen, b->worker_connect, cfg->workers, cfg->max_queue, cfg->http_listen ? "; HTTP on " : "",
              cfg->http_listen ? cfg->http_listen : "");
    maybe_notify_ready(b);
    return b;
fail:
    broker_free(b);
    return NULL;
}

void broker_free(broker *b) {
    if (!b) return;
    /* every live request ends with a frame, never silence */
    if (b->front) {
        while (b->client_list) {
            client *c = b->client_list;
            if (!c->reqs) {
                client_free(b, c);
                continue;
            }
            request *r = c->reqs;
            if (r->running) request_cancel_on_worker(b, r);
            request_fail(b, r, PROTO_R_SHUTTING_DOWN, "the broker is shutting down"); /* may free c */
        }
    }
    while (b->workers) worker_free(b, b->workers);
    if (b->http_sup) supervisor_stop(b->http_sup); /* first: it is a client of ours */
    supervisor_free(b->http_sup);
    if (b->http_argv) {
        for (int i = 0; b->http_argv[i]; i++) free(b->http_argv[i]);
        free(b->http_argv);
    }
    if (b->sup) supervisor_stop(b->sup);
    supervisor_free(b->sup);
    if (b->worker_argv) {
        for (int i = 0; b->worker_argv[i]; i++) free(b->worker_argv[i]);
        free(b->worker_argv);
    }
    conns_stop(b->conns);
    if (b->front) { /* the final frames just sent still reach their clients */
        int linger = PROTO_CANCEL_GRACE_MS;
        zmq_setsockopt(b->front, ZMQ_LINGER, &linger, sizeof(linger));
    }
    proto_sock_close(&b->front);
    proto_sock_close(&b->back);
    conns_free(b->conns);
    auth_free(b->auth);
    if (b->ctx) zmq_ctx_term(b->ctx);
    table_free(b->clients);
    table_free(b->by_rid);
    table_free(b->by_cid);
    msgpack_sbuffer_destroy(&b->sb);
    /* after zmq_ctx_term the sockets are closed; the socket files would stay behind and make a
     * client wait for a broker that is gone. Removed while the lock is still ours, so a newer broker's
     * file is never touched. */
    for (int i = 0; i < 2; i++)
        if (b->lock_fd[i] >= 0) {
            if (b->ipc_file[i][0]) unlink(b->ipc_file[i]);
            close(b->lock_fd[i]);
        }
    free(b);
}
