/* proto_sock.c — see proto_sock.h. */
#include "proto_sock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

void *proto_sock_new(void *ctx, int type, char *err, size_t errlen) {
    void *s = zmq_socket(ctx, type);
    if (!s) {
        snprintf(err, errlen, "zmq_socket: %s", zmq_strerror(errno));
        return NULL;
    }
    int linger = 0, sndhwm = PROTO_SNDHWM, rcvhwm = PROTO_RCVHWM, one = 1;
    int64_t maxmsg = PROTO_MAX_MSG_BYTES;
    if (zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger)) < 0 ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) < 0 ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &sndhwm, sizeof(sndhwm)) < 0 ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &rcvhwm, sizeof(rcvhwm)) < 0 ||
        (type == ZMQ_ROUTER && zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof(one)) < 0)) {
        snprintf(err, errlen, "zmq_setsockopt: %s", zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

void proto_sock_close(void **sock) {
    if (sock && *sock) {
        zmq_close(*sock);
        *sock = NULL;
    }
}

int proto_sock_send(void *sock, const void *ident, size_t ident_len, const proto_msg *m, int flags,
                    msgpack_sbuffer *sb, char *err, size_t errlen) {
    msgpack_sbuffer_clear(sb);
    if (proto_encode(m, sb, err, errlen) < 0) {
        errno = EINVAL;
        return -1;
    }
    return proto_sock_send_raw(sock, ident, ident_len, sb->data, sb->size, flags);
}

int proto_sock_send_raw(void *sock, const void *ident, size_t ident_len, const void *data, size_t len,
                        int flags) {
    if (ident_len > 0 && zmq_send(sock, ident, ident_len, ZMQ_SNDMORE | flags) < 0) return -1;
    /* with a routing id frame queued, the body cannot fail for lack of room (atomic multipart) */
    if (zmq_send(sock, data, len, flags) < 0) return -1;
    return 0;
}

/* Reads and drops the rest of a multipart message. */
static void sock_drain(void *sock) {
    int more = 1;
    size_t len = sizeof(more);
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int rc = zmq_msg_recv(&m, sock, 0);
        zmq_msg_close(&m);
        if (rc < 0) break;
        len = sizeof(more);
    }
}

static int sock_more(void *sock) {
    int more = 0;
    size_t len = sizeof(more);
    return zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more;
}

int proto_sock_recv(void *sock, int router, proto_frame *f, int flags) {
    f->ident_len = 0;
    f->open = 0;
    if (router) {
        zmq_msg_t id;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, sock, flags) < 0) {
            int e = errno;
            zmq_msg_close(&id);
            errno = e;
            return -1;
        }
        size_t n = zmq_msg_size(&id);
        if (n > PROTO_MAX_IDENT) n = PROTO_MAX_IDENT;
        memcpy(f->ident, zmq_msg_data(&id), n);
        f->ident_len = n;
        zmq_msg_close(&id);
        if (!sock_more(sock)) return -2;
        flags = 0; /* the rest of a multipart message is already here */
    }
    zmq_msg_init(&f->body);
    if (zmq_msg_recv(&f->body, sock, flags) < 0) {
        int e = errno;
        zmq_msg_close(&f->body);
        errno = e;
        return -1;
    }
    f->open = 1;
    if (sock_more(sock)) {
        sock_drain(sock);
        proto_frame_close(f);
        return -2;
    }
    return 0;
}

void proto_frame_close(proto_frame *f) {
    if (f->open) zmq_msg_close(&f->body);
    f->open = 0;
}

double proto_clock_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}
