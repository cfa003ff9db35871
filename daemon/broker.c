/* broker.c — see broker.h. Reads top to bottom: state, bookkeeping, sending, the worker link, the
 * client link, timers, the loop, construction. */
#include "broker.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "metrics.h"
#include "proto.h"
#include "proto_sock.h"
#include "supervisor.h"
#include "table.h"

#define BROKER_TICK_MS (PROTO_HEARTBEAT_MS / 4) /* timer resolution of heartbeats and expiry */
#define BROKER_BATCH 256                        /* messages read per socket per loop turn */

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
    double last_send_ms;
    client *prev, *next;         /* broker's list of clients with live requests */
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
    table *clients;              /* ident -> client */
    table *by_rid;               /* rid -> request */
    table *by_cid;               /* (ident, client id) -> request */
    client *client_list;
    request *q_head, *q_tail;    /* waiting requests, FIFO */
    int q_len;
    worker *workers;
    int n_workers, n_local_ready;
    uint64_t next_rid;
    uint64_t requests_total, tokens_total, errors_total, overloaded_total;
    metrics met;
    msgpack_sbuffer sb;          /* encode scratch */
    double next_tick_ms;
    double t_no_worker;          /* ms since when no worker has been connected (0: some are) */
    int had_worker;              /* a worker has registered once (before that, startup: no clock) */
    int queue_timeout_ms, request_timeout_ms, max_client_requests; /* cfg, defaults applied */
    int notified_ready;
    int draining;                /* SIGTERM seen: submits refused, running requests may finish */
    double drain_end_ms;         /* then they are cancelled at this time ... */
    double drain_cancel_end_ms;  /* ... and the loop ends at this one (0: not cancelled yet) */
    broker_tick_fn on_tick;      /* main.c's hook (sd_notify), called every tick */
    void *tick_user;
    char worker_connect[512];    /* the endpoint local workers connect to */
    char **worker_argv;
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

static void q_unlink(broker *b, request *r) {
    if (r->prev) r->prev->next = r->next;
    else b->q_head = r->next;
    if (r->next) r->next->prev = r->prev;
    else b->q_tail = r->prev;
    r->prev = r->next = NULL;
    b->q_len--;
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
    c->last_send_ms = proto_clock_ms();
    if (table_put(b->clients, ident, len, c) < 0) {
        free(c);
        return NULL;
    }
    c->next = b->client_list;
    if (b->client_list) b->client_list->prev = c;
    b->client_list = c;
    return c;
}

/* Frees the client once it has no live request (it is re-created by its next submit). */
static void client_release_if_idle(broker *b, client *c) {
    if (!c || c->n_reqs > 0) return;
    table_del(b->clients, c->ident, c->ident_len);
    if (c->prev) c->prev->next = c->next;
    else b->client_list = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c);
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

/* The worker with the most free credit that may run r (any worker, or for a pinned replay one with
 * r's fingerprint), or NULL if none. */
static worker *worker_pick(broker *b, const request *r) {
    worker *best = NULL;
    for (worker *w = b->workers; w; w = w->next)
        if (w->credit > 0 && (!best || w->credit > best->credit) &&
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

/* Sends m to a client. 0, or -1 if the client cannot be reached (gone, or not reading). */
static int send_client(broker *b, const unsigned char *ident, size_t len, const proto_msg *m) {
    char err[256];
    if (proto_sock_send(b->front, ident, len, m, ZMQ_DONTWAIT, &b->sb, err, sizeof(err)) == 0) {
        client *c = table_get(b->clients, ident, len);
        if (c) c->last_send_ms = proto_clock_ms();
        return 0;
    }
    if (errno == EINVAL) {
        proto_log(b->log, PROTO_LOG_ERROR, "cannot encode %s for a client: %s", proto_type_name(m->type), err);
        return 0; /* our bug, not the client's absence */
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
    size_t n = strlen(message);
    e.message = (proto_str){message, (uint32_t)(n > PROTO_MAX_MESSAGE_BYTES ? PROTO_MAX_MESSAGE_BYTES : n)};
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

/* Ends r with an error frame to its client and frees it (and the client if it is then idle). */
static void request_fail(broker *b, request *r, proto_reason code, const char *message) {
    client *c = r->cl;
    proto_cid id = r->cid;
    char idbuf[PROTO_MAX_ID_BYTES];
    memcpy(idbuf, r->cid_buf, sizeof(idbuf));
    id.str.ptr = idbuf;
    b->errors_total++;
    proto_msg e;
    proto_msg_init(&e, PROTO_T_ERROR);
    e.reason = (proto_str){proto_reason_name(code), (uint32_t)strlen(proto_reason_name(code))};
    request_log_end(b, r, &e);
    request_free(b, r);
    client_after_final(b, c, send_error(b, c->ident, c->ident_len, &id, code, message));
}

/* Gives waiting requests to workers with credit, oldest request first. */
static void worker_lost(broker *b, worker *w, const char *why);

static void dispatch(broker *b) {
    request *r = b->q_head;
    while (r) {
        request *next = r->next;
        worker *w = worker_pick(b, r);
        if (!w) {
            if (!request_pinned(r)) return; /* no credit anywhere */
            r = next;                       /* a replay waits for its fingerprint; others may pass */
            continue;
        }
        q_unlink(b, r);
        const unsigned char *wire = r->replay ? r->replay : r->wire;
        size_t wire_len = r->replay ? r->replay_len : r->wire_len;
        if (proto_sock_send_raw(b->back, w->ident, w->ident_len, wire, wire_len, ZMQ_DONTWAIT) < 0) {
            q_push(b, r, 1);
            worker_lost(b, w, errno == EHOSTUNREACH ? "unreachable" : "not reading");
            r = b->q_head; /* the queue changed: start over */
            continue;
        }
        w->last_send_ms = proto_clock_ms();
        if (r->t_dispatch == 0) r->t_dispatch = w->last_send_ms;
        if (!request_pinned(r)) memcpy(r->fingerprint, w->fingerprint, sizeof r->fingerprint);
        w->credit--;
        w_link(w, r);
        proto_log(b->log, PROTO_LOG_DEBUG, "rid %llu -> worker %s (credit %d)", (unsigned long long)r->rid,
                  w->name, w->credit);
        r = next;
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
            w_unlink(r);
            q_push(b, r, 1);
            proto_log(b->log, PROTO_LOG_INFO, "rid %llu replayed after %u token(s) (replay %d)",
                      (unsigned long long)r->rid, r->n_streamed, r->n_replays);
        }
    }
    worker_free(b, w);
}

static void broker_pulse(broker *b);

static void maybe_notify_ready(broker *b) {
    if (b->notified_ready || b->n_local_ready < b->cfg->workers) return;
    b->notified_ready = 1;
    proto_log(b->log, PROTO_LOG_INFO, "ready: %d worker(s), clients on %s", b->n_workers, b->cfg->listen);
    broker_pulse(b);
}

static void on_worker_ready(broker *b, const proto_frame *f, const proto_msg *m) {
    worker *w = worker_find(b, f->ident, f->ident_len);
    if (w) worker_lost(b, w, "announced itself again");
    w = calloc(1, sizeof(*w));
    if (!w) return;
    memcpy(w->ident, f->ident, f->ident_len);
    w->ident_len = f->ident_len;
    snprintf(w->name, sizeof(w->name), "%.*s", (int)m->name.len, m->name.ptr ? m->name.ptr : "");
    if (!w->name[0]) snprintf(w->name, sizeof(w->name), "worker-%d", m->pid);
    w->pid = m->pid;
    w->slots = w->credit = m->slots;
    w->n_ctx = m->n_ctx;
    snprintf(w->fingerprint, sizeof(w->fingerprint), "%.*s", (int)m->fingerprint.len,
             m->fingerprint.ptr ? m->fingerprint.ptr : "");
    w->local = strncmp(w->name, "local-", 6) == 0 && supervisor_owns(b->sup, m->pid);
    w->expiry_ms = proto_clock_ms() + (double)PROTO_HEARTBEAT_MS * PROTO_LIVENESS;
    w->last_send_ms = proto_clock_ms();
    w->next = b->workers;
    b->workers = w;
    b->n_workers++;
    if (w->local) b->n_local_ready++;
    proto_log(b->log, PROTO_LOG_INFO, "worker %s (pid %d, %s) ready: %d slots, n_ctx %d, fingerprint %s",
              w->name, w->pid, w->local ? "local" : "remote", w->slots, w->n_ctx,
              w->fingerprint[0] ? w->fingerprint : "-");
    maybe_notify_ready(b);
}

static request *worker_request(broker *b, worker *w, const proto_msg *m) {
    request *r = table_get(b->by_rid, &m->rid, sizeof(m->rid));
    if (!r || r->w != w) return NULL; /* cancelled for a vanished client, or stale */
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
    request *r = worker_request(b, w, m);
    if (!r) return;
    /* a replay generates the last token before the loss again: forward each index once */
    if ((uint32_t)m->index < r->n_streamed) return;
    if ((uint32_t)m->index > r->n_streamed) {
        request_cancel_on_worker(b, r);
        request_fail(b, r, PROTO_R_INTERNAL, "the worker skipped a token index");
        return;
    }
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
    t.has = PROTO_HAS(PF_ID) | (m->has & PROTO_HAS(PF_LOGPROB));
    if (send_client(b, r->cl->ident, r->cl->ident_len, &t) < 0) client_vanished(b, r->cl->ident, r->cl->ident_len);
}

/* done or error from a worker: forward with the client's id and free the request. */
static void on_worker_end(broker *b, worker *w, const proto_msg *m) {
    request *r = worker_request(b, w, m);
    if (!r) return;
    client *c = r->cl;
    proto_msg e = *m;
    e.zone = NULL;
    e.id = r->cid;
    char idbuf[PROTO_MAX_ID_BYTES];
    memcpy(idbuf, r->cid_buf, sizeof(idbuf));
    e.id.str.ptr = idbuf;
    e.has = (m->has & ~PROTO_HAS(PF_RID)) | PROTO_HAS(PF_ID);
    if (m->type == PROTO_T_DONE) {
        /* the worker timed from its own receipt: add the wait in the broker's queue */
        double wait = r->t_dispatch - r->t_submit;
        e.queue_ms += wait;
        e.total_ms += wait;
        if (e.ttft_ms > 0) e.ttft_ms += wait;
        if (r->n_replays > 0) { /* several runs: the broker's own clock */
            e.ttft_ms = r->t_first > 0 ? r->t_first - r->t_submit : 0;
            e.total_ms = proto_clock_ms() - r->t_submit;
        }
        e.name = (proto_str){w->name, (uint32_t)strlen(w->name)};
        e.has |= PROTO_HAS(PF_NAME);
        if (m->finish == PROTO_FINISH_ERROR) b->errors_total++;
    } else {
        b->errors_total++;
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
    if (rc < 0) {
        proto_log(b->log, PROTO_LOG_WARN, "worker %s: undecodable message dropped: %s", w ? w->name : "(unknown)", err);
        proto_msg_destroy(&m);
        return;
    }
    if (m.type == PROTO_T_READY) {
        on_worker_ready(b, f, &m);
        dispatch(b);
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
    if (b->q_len >= b->cfg->max_queue && total_credit(b) == 0) {
        b->overloaded_total++;
        char msg[128];
        snprintf(msg, sizeof(msg), "queue full (%d waiting, %d workers); retry later", b->q_len, b->n_workers);
        send_error(b, f->ident, f->ident_len, &m->id, PROTO_R_QUEUE_FULL, msg);
        return;
    }
    /* the worker's request: the same fields under our rid */
    proto_msg q = *m;
    q.zone = NULL;
    q.type = PROTO_T_REQUEST;
    q.rid = ++b->next_rid;
    q.has = PROTO_HAS(PF_RID) | (m->has & (PROTO_HAS(PF_PROMPT) | PROTO_HAS(PF_PROMPT_IDS)));
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
    d.queue_ms = d.total_ms = proto_clock_ms() - r->t_submit;
    request_log_end(b, r, &d);
    request_free(b, r);
    client_after_final(b, c, send_client(b, c->ident, c->ident_len, &d)); /* c->ident is f's */
}

static void on_client_stats(broker *b, proto_frame *f) {
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
    s.has |= PROTO_HAS(PF_TTFT_HIST) | PROTO_HAS(PF_ITL_HIST) | PROTO_HAS(PF_TOTAL_HIST);
    s.worker_list = wl;
    s.n_worker_list = (uint32_t)n;
    send_client(b, f->ident, f->ident_len, &s);
    free(wl);
}

static void on_client_message(broker *b, proto_frame *f) {
    proto_msg m;
    char err[256];
    int rc = proto_decode(&m, proto_frame_data(f), proto_frame_size(f), err, sizeof(err));
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
    for (worker *w = b->workers; w; w = w->next) {
        if (w->local && w->pid == pid) {
            worker_lost(b, w, "process exited");
            return;
        }
    }
}

/* Deadlines: a request waiting longer than the queue timeout, or alive longer than the request
 * timeout, fails with timeout (cancelled on its worker); with no worker connected for
 * PROTO_NO_WORKER_MS (counted once a first worker has registered: loading is not starvation),
 * every waiting request fails with no_worker. */
static void broker_deadlines(broker *b, double now) {
    if (b->n_workers > 0) {
        b->t_no_worker = 0;
        b->had_worker = 1;
    } else if (b->had_worker && b->t_no_worker == 0) {
        b->t_no_worker = now;
    }
    int starved = b->t_no_worker > 0 && now - b->t_no_worker >= PROTO_NO_WORKER_MS;
    /* failing a request may end its client's others (a vanished client): rescan after each */
    for (int again = 1; again;) {
        again = 0;
        for (request *r = b->q_head; r && !again; r = r->next) {
            if (starved)
                request_fail(b, r, PROTO_R_NO_WORKER, "no worker has been connected for a while");
            else if (now - r->t_submit >= b->request_timeout_ms)
                request_fail(b, r, PROTO_R_REQUEST_TIMEOUT, "the request timeout passed");
            else if (r->n_replays == 0 && now - r->t_submit >= b->queue_timeout_ms)
                request_fail(b, r, PROTO_R_QUEUE_TIMEOUT, "no slot became free within the queue timeout");
            else
                continue;
            again = 1;
        }
        for (worker *w = b->workers; w && !again; w = w->next) {
            for (request *r = w->reqs; r && !again; r = r->next) {
                if (now - r->t_submit < b->request_timeout_ms) continue;
                request_cancel_on_worker(b, r);
                request_fail(b, r, PROTO_R_REQUEST_TIMEOUT, "the request timeout passed");
                again = 1;
            }
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
        if (now - c->last_send_ms >= PROTO_HEARTBEAT_MS && send_client(b, c->ident, c->ident_len, &hb) < 0)
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
        if (*stop && !b->draining) broker_shutdown_begin(b, now);
        if (b->draining && broker_shutdown_done(b, now)) break;
        if (*child) {
            *child = 0;
            supervisor_reap(b->sup, now, on_child_exit, b);
            dispatch(b);
        }
        int due = supervisor_tick(b->sup, now);
        if (now >= b->next_tick_ms) {
            broker_tick(b, now);
            broker_pulse(b);
            b->next_tick_ms = now + BROKER_TICK_MS;
        }
        long timeout = (long)(b->next_tick_ms - now) + 1;
        if (due >= 0 && due < timeout) timeout = due;
        zmq_pollitem_t items[5] = {{b->back, 0, ZMQ_POLLIN, 0}, {b->front, 0, ZMQ_POLLIN, 0}};
        int n_items = 2;
        if (b->auth) { /* the ZAP handler and the handshake monitors */
            void *socks[3];
            int n = auth_poll_sockets(b->auth, socks, 3);
            for (int i = 0; i < n; i++) items[n_items++] = (zmq_pollitem_t){socks[i], 0, ZMQ_POLLIN, 0};
        }
        int rc = zmq_poll(items, n_items, timeout);
        if (rc < 0) {
            if (errno == EINTR) continue;
            proto_log(b->log, PROTO_LOG_ERROR, "zmq_poll: %s", zmq_strerror(errno));
            return -1;
        }
        if (n_items > 2) auth_handle(b->auth);
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

/* A bound ROUTER for clients (front) or workers. With CURVE configured it is a CURVE server whose
 * ZAP domain ("clients" / "workers") selects the allow-list. An ipc:// socket file is made 0660. */
static void *broker_bind(broker *b, const char *endpoint, int front, char *err, size_t errlen) {
    if (broker_ipc_dir(endpoint, err, errlen) < 0) return NULL;
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
    if (zmq_bind(s, endpoint) < 0) {
        snprintf(err, errlen, "bind %s: %s", endpoint, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    if (strncmp(endpoint, "ipc://", 6) == 0 && endpoint[6] != '@') chmod(endpoint + 6, 0660);
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

broker *broker_new(const config *cfg, const proto_logger *log, char *err, size_t errlen) {
    broker *b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->cfg = cfg;
    b->log = log;
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
    if (!(b->back = broker_bind(b, cfg->worker_listen, 0, err, errlen))) goto fail;
    if (!(b->front = broker_bind(b, cfg->listen, 1, err, errlen))) goto fail;
    broker_worker_endpoint(b);
    if (!(b->worker_argv = broker_worker_argv(b)) ||
        !(b->sup = supervisor_new(cfg->workers, b->worker_argv, cfg->restart_max_ms, log))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    proto_log(log, PROTO_LOG_INFO, "clients on %s, workers on %s; %d local worker(s), max queue %d",
              cfg->listen, b->worker_connect, cfg->workers, cfg->max_queue);
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
                client_release_if_idle(b, c);
                continue;
            }
            request *r = c->reqs;
            if (r->running) request_cancel_on_worker(b, r);
            request_fail(b, r, PROTO_R_SHUTTING_DOWN, "the broker is shutting down"); /* may free c */
        }
    }
    while (b->workers) worker_free(b, b->workers);
    if (b->sup) supervisor_stop(b->sup);
    supervisor_free(b->sup);
    if (b->worker_argv) {
        for (int i = 0; b->worker_argv[i]; i++) free(b->worker_argv[i]);
        free(b->worker_argv);
    }
    proto_sock_close(&b->front);
    proto_sock_close(&b->back);
    auth_free(b->auth);
    if (b->ctx) zmq_ctx_term(b->ctx);
    table_free(b->clients);
    table_free(b->by_rid);
    table_free(b->by_cid);
    msgpack_sbuffer_destroy(&b->sb);
    free(b);
}
