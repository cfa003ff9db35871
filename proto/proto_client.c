/* proto_client.c — a client's link to the broker; see proto_client.h. */
#include "proto_client.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

proto_client_status proto_client_open(proto_client *c, const char *endpoint, const proto_client_opts *opts,
                                      int *refused_code) {
    static const proto_client_opts defaults = {0};
    const proto_client_opts *o = opts ? opts : &defaults;
    memset(c, 0, sizeof(*c));
    msgpack_sbuffer_init(&c->sb);
    c->ctx = o->ctx;
    if (!c->ctx) {
        c->ctx = zmq_ctx_new();
        c->own_ctx = 1;
    }
    char err[256];
    if (!c->ctx) {
        snprintf(c->err, sizeof(c->err), "cannot create a ZeroMQ context");
        goto fail_setup;
    }
    if (!(c->sock = proto_sock_new(c->ctx, ZMQ_DEALER, err, sizeof(err)))) {
        snprintf(c->err, sizeof(c->err), "%s", err);
        goto fail_setup;
    }
    int has_key = o->curve_key && *o->curve_key;
    if (has_key && (!o->server_key || !*o->server_key)) {
        snprintf(c->err, sizeof(c->err), "a CURVE key pair needs the broker's public key (--server-key)");
        goto fail_setup;
    }
    if (has_key && proto_curve_client(c->sock, o->curve_key, o->server_key, err, sizeof(err)) < 0) {
        snprintf(c->err, sizeof(c->err), "%s", err);
        goto fail_setup;
    }
    if (zmq_connect(c->sock, endpoint) < 0) {
        snprintf(c->err, sizeof(c->err), "cannot connect to %s: %s", endpoint, zmq_strerror(errno));
        proto_client_close(c);
        return PROTO_CLIENT_EUNREACHABLE;
    }
    c->last_recv_ms = proto_clock_ms();
    if (!o->hello_name) return PROTO_CLIENT_OK;

    proto_msg h;
    proto_msg_init(&h, PROTO_T_HELLO);
    h.name = (proto_str){o->hello_name, (uint32_t)strnlen(o->hello_name, PROTO_MAX_NAME_BYTES)};
    h.has = PROTO_HAS(PF_NAME);
    if (proto_client_send(c, &h) < 0) {
        proto_client_close(c);
        return PROTO_CLIENT_EUNREACHABLE;
    }
    int timeout = o->timeout_ms > 0 ? o->timeout_ms : PROTO_CONNECT_TIMEOUT_MS;
    double deadline = proto_clock_ms() + timeout;
    for (;;) {
        double left = deadline - proto_clock_ms();
        if (left <= 0) break;
        proto_msg m;
        int rc = proto_client_recv(c, &m, (int)left, PROTO_CLIENT_SKIP_HB);
        if (rc < 0) break;
        if (rc == 0) continue;
        proto_type t = m.type;
        int code = m.code;
        proto_msg_destroy(&m);
        if (t == PROTO_T_WELCOME) return PROTO_CLIENT_OK;
        if (t == PROTO_T_ERROR) {
            snprintf(c->err, sizeof(c->err), "the broker refused hello: %d %s", code, proto_code_name(code));
            if (refused_code) *refused_code = code;
            proto_client_close(c);
            return PROTO_CLIENT_EREFUSED;
        }
    }
    snprintf(c->err, sizeof(c->err), "no broker answered at %s within %d ms", endpoint, timeout);
    proto_client_close(c);
    return PROTO_CLIENT_EUNREACHABLE;

fail_setup:;
    char keep[sizeof(c->err)];
    memcpy(keep, c->err, sizeof(keep));
    proto_client_close(c);
    memcpy(c->err, keep, sizeof(keep));
    return PROTO_CLIENT_ESETUP;
}

void proto_client_close(proto_client *c) {
    proto_frame_close(&c->frame);
    proto_sock_close(&c->sock);
    if (c->own_ctx && c->ctx) zmq_ctx_term(c->ctx);
    c->ctx = NULL;
    c->own_ctx = 0;
    msgpack_sbuffer_destroy(&c->sb);
    memset(&c->sb, 0, sizeof(c->sb));
}

int proto_client_send(proto_client *c, const proto_msg *m) {
    char err[256];
    for (;;) {
        if (proto_sock_send(c->sock, NULL, 0, m, 0, &c->sb, err, sizeof(err)) == 0) return 0;
        if (errno == EINTR) continue;
        snprintf(c->err, sizeof(c->err), "cannot send %s: %s", proto_type_name(m->type),
                 errno == EINVAL ? err : zmq_strerror(errno));
        return -1;
    }
}

int proto_client_send_raw(proto_client *c, const void *data, size_t len) {
    for (;;) {
        if (zmq_send(c->sock, data, len, 0) >= 0) return 0;
        if (errno == EINTR) continue;
        snprintf(c->err, sizeof(c->err), "cannot send: %s", zmq_strerror(errno));
        return -1;
    }
}

int proto_client_recv(proto_client *c, proto_msg *m, int timeout_ms, int flags) {
    proto_frame_close(&c->frame);
    double deadline = proto_clock_ms() + timeout_ms;
    for (;;) {
        /* a frame already waiting is taken at once: a poll (a system call) only when there is none */
        int rc = proto_sock_recv(c->sock, 0, &c->frame, ZMQ_DONTWAIT);
        if (rc == -2) continue;
        if (rc < 0 && errno == EAGAIN) {
            long left = (long)(deadline - proto_clock_ms());
            if (left <= 0) return 0;
            zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
            rc = zmq_poll(&item, 1, left);
            if (rc < 0) {
                if (errno == EINTR) return 0;
                snprintf(c->err, sizeof(c->err), "poll: %s", zmq_strerror(errno));
                return -1;
            }
            if (rc == 0) return 0;
            continue;
        }
        if (rc < 0) {
            if (errno == EINTR) return 0;
            snprintf(c->err, sizeof(c->err), "receive: %s", zmq_strerror(errno));
            return -1;
        }
        c->last_recv_ms = proto_clock_ms();
        char err[256];
        if (proto_decode(m, proto_frame_data(&c->frame), proto_frame_size(&c->frame), err, sizeof(err)) != PROTO_OK) {
            c->n_undecodable++;
            snprintf(c->err, sizeof(c->err), "undecodable message from the broker skipped: %s", err);
            proto_msg_destroy(m);
            proto_frame_close(&c->frame);
            continue;
        }
        if ((flags & PROTO_CLIENT_SKIP_HB) && m->type == PROTO_T_HB) {
            proto_msg_destroy(m);
            proto_frame_close(&c->frame);
            continue;
        }
        return 1;
    }
}

int proto_client_stats(proto_client *c, proto_msg *m, int timeout_ms) {
    proto_msg q;
    proto_msg_init(&q, PROTO_T_STATS);
    if (proto_client_send(c, &q) < 0) return 0;
    double deadline = proto_clock_ms() + timeout_ms;
    for (;;) {
        double left = deadline - proto_clock_ms();
        if (left <= 0) return 0;
        int rc = proto_client_recv(c, m, (int)left, PROTO_CLIENT_SKIP_HB);
        if (rc < 0) return 0;
        if (rc == 0) continue;
        if (m->type == PROTO_T_STATS_REPLY) return 1;
        proto_msg_destroy(m);
    }
}

int proto_client_cancel(proto_client *c, const proto_cid *id) {
    proto_msg m;
    proto_msg_init(&m, PROTO_T_CANCEL);
    m.id = *id;
    m.has = PROTO_HAS(PF_ID);
    return proto_client_send(c, &m);
}

int proto_client_broker_dead(const proto_client *c) {
    return proto_clock_ms() - c->last_recv_ms > (double)PROTO_HEARTBEAT_MS * PROTO_LIVENESS;
}
