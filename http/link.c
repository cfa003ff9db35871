/* link.c — the gateway's one link to the broker (proto_client): submits and cancels choices,
 * asks for stats, and routes the frames that come back to their call by request id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "table.h"

int link_open(gw *g) {
    proto_client_opts o = {0};
    o.curve_key = g->cfg->curve_key;
    o.server_key = g->cfg->server_key;
    int refused = 0;
    /* no handshake: the broker may start after us (under gpt2d it is already up), and a DEALER
     * connects whenever the broker comes; /ready tells whether it answers */
    if (proto_client_open(&g->link, g->cfg->connect, &o, &refused) != PROTO_CLIENT_OK) {
        proto_log(&g->log, PROTO_LOG_ERROR, "broker link %s: %s", g->cfg->connect, g->link.err);
        return -1;
    }
    if (!(g->by_id = table_new())) {
        proto_client_close(&g->link);
        return -1;
    }
    proto_msg h;
    proto_msg_init(&h, PROTO_T_HELLO);
    h.name = (proto_str){g->cfg->name, (uint32_t)strnlen(g->cfg->name, PROTO_MAX_NAME_BYTES)};
    h.has = PROTO_HAS(PF_NAME);
    proto_client_send(&g->link, &h); /* the welcome is read (and ignored) by link_drain */
    g->linked = 1;
    return 0;
}

void link_close(gw *g) {
    if (!g->linked) return;
    /* the cancels just sent still reach the broker (bounded: the broker may be gone) */
    int linger = 500;
    zmq_setsockopt(g->link.sock, ZMQ_LINGER, &linger, sizeof(linger));
    proto_client_close(&g->link);
    table_free(g->by_id);
    g->by_id = NULL;
    g->linked = 0;
}

int link_submit(gw *g, hcall *c, int k, proto_msg *m) {
    gw_choice *ch = &c->ch[k];
    if (g->n_open_choices == 0) g->link.last_recv_ms = proto_clock_ms(); /* liveness counts from now */
    ch->id = ++g->next_id;
    m->id = (proto_cid){0, ch->id, {NULL, 0}};
    m->has |= PROTO_HAS(PF_ID);
    if (table_put(g->by_id, &ch->id, sizeof(ch->id), c) < 0 || proto_client_send(&g->link, m) < 0) {
        table_del(g->by_id, &ch->id, sizeof(ch->id));
        gw_error_set(&ch->err, 502, "broker_unreachable", "", "cannot reach the broker: %s", g->link.err);
        ch->id = 0;
        return -1;
    }
    g->n_open_choices++;
    return 0;
}

/* Marks choice k ended and no longer routed. */
static void link_end_choice(gw *g, hcall *c, int k) {
    gw_choice *ch = &c->ch[k];
    if (ch->ended) return;
    ch->ended = 1;
    c->n_open--;
    if (ch->id) {
        table_del(g->by_id, &ch->id, sizeof(ch->id));
        g->n_open_choices--;
    }
}

void link_forget(gw *g, hcall *c) {
    for (int k = 0; k < c->n_choices; k++) {
        gw_choice *ch = &c->ch[k];
        if (ch->ended) continue;
        if (ch->id) {
            proto_cid id = {0, ch->id, {NULL, 0}};
            proto_client_cancel(&g->link, &id);
            proto_log(&g->log, PROTO_LOG_DEBUG, "request %llu cancelled (client gone or call ended)",
                      (unsigned long long)ch->id);
        }
        link_end_choice(g, c, k);
    }
}

void link_stats(gw *g) {
    if (g->stats_pending) return;
    proto_msg q;
    proto_msg_init(&q, PROTO_T_STATS);
    if (proto_client_send(&g->link, &q) == 0) {
        g->stats_pending = 1;
        g->stats_sent_ms = proto_clock_ms();
    }
}

/* Wakes every call waiting for stats (they read g->stats, or see it stale). */
static void link_stats_arrived(gw *g) {
    g->stats_pending = 0;
    for (hcall *c = g->calls; c; c = c->next)
        if (c->kind == CALL_STATS && c->stats_wait) {
            c->stats_wait = 0;
            routes_wake(g, c);
        }
}

static void link_copy_stats(gw *g, const proto_msg *m) {
    gw_stats *s = &g->stats;
    s->m = *m;
    s->m.zone = NULL;
    s->m.worker_list = NULL;
    s->m.name = (proto_str){NULL, 0};
    s->n_workers = (int)(m->n_worker_list < PROTO_MAX_WORKERS ? m->n_worker_list : PROTO_MAX_WORKERS);
    for (int i = 0; i < s->n_workers; i++) {
        s->workers[i] = m->worker_list[i];
        snprintf(s->names[i], sizeof(s->names[i]), "%.*s", (int)m->worker_list[i].name.len,
                 m->worker_list[i].name.ptr ? m->worker_list[i].name.ptr : "");
        s->workers[i].name = (proto_str){s->names[i], (uint32_t)strlen(s->names[i])};
    }
    s->valid = 1;
    s->at_ms = proto_clock_ms();
}

static void link_dispatch(gw *g, const proto_msg *m) {
    if (m->type == PROTO_T_STATS_REPLY) {
        link_copy_stats(g, m);
        link_stats_arrived(g);
        return;
    }
    if (m->type != PROTO_T_TOKEN && m->type != PROTO_T_DONE && m->type != PROTO_T_ERROR) return;
    if (!(m->has & PROTO_HAS(PF_ID)) || m->id.is_str) {
        if (m->type == PROTO_T_ERROR)
            proto_log(&g->log, PROTO_LOG_WARN, "broker error without a request: %d %.*s", m->code,
                      (int)m->message.len, m->message.ptr ? m->message.ptr : "");
        return;
    }
    uint64_t id = m->id.num;
    hcall *c = table_get(g->by_id, &id, sizeof(id));
    if (!c) return; /* a call already over: late frames of a cancelled request */
    int k = 0;
    while (k < c->n_choices && c->ch[k].id != id) k++;
    if (k == c->n_choices) return;
    if (m->type == PROTO_T_TOKEN) {
        oa_on_token(g, c, k, m);
        return;
    }
    link_end_choice(g, c, k);
    oa_on_end(g, c, k, m);
}

void link_drain(gw *g) {
    if (!g->linked) return;
    for (int i = 0; i < 4096; i++) { /* bounded: MHD gets its turn */
        proto_msg m;
        int rc = proto_client_recv(&g->link, &m, 0, PROTO_CLIENT_SKIP_HB);
        if (rc <= 0) {
            if (rc < 0) proto_log(&g->log, PROTO_LOG_ERROR, "broker link: %s", g->link.err);
            return;
        }
        link_dispatch(g, &m);
        proto_msg_destroy(&m);
    }
}

void link_fail_open(gw *g, int code, const char *reason, const char *message) {
    for (hcall *c = g->calls; c; c = c->next) {
        for (int k = 0; k < c->n_choices; k++) {
            if (c->ch[k].ended || !c->ch[k].id) continue;
            proto_msg e;
            proto_msg_init(&e, PROTO_T_ERROR);
            e.code = code;
            e.message = (proto_str){message, (uint32_t)strlen(message)};
            e.reason = (proto_str){reason, (uint32_t)strlen(reason)};
            e.has = PROTO_HAS(PF_REASON);
            proto_cid id = {0, c->ch[k].id, {NULL, 0}};
            proto_client_cancel(&g->link, &id);
            link_end_choice(g, c, k);
            oa_on_end(g, c, k, &e); /* the call's other choices end (forgotten) with it */
        }
    }
}

void link_tick(gw *g, double now) {
    if (g->stats_pending && now - g->stats_sent_ms > GW_STATS_TIMEOUT_MS) {
        g->stats.valid = 0; /* stale: readers answer 503 */
        link_stats_arrived(g);
    }
    if (g->n_open_choices > 0 && proto_client_broker_dead(&g->link)) {
        proto_log(&g->log, PROTO_LOG_ERROR, "the broker has been silent for %d ms: failing %d open request(s)",
                  PROTO_HEARTBEAT_MS * PROTO_LIVENESS, g->n_open_choices);
        link_fail_open(g, PROTO_CODE_WORKER_LOST, "broker_unreachable", "the broker stopped answering");
    }
}
