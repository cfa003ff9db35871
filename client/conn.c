/* conn.c — gpt2c's link to the broker; see gpt2c.h. */
#include <errno.h>
#include <string.h>

#include "gpt2c.h"

int conn_open(conn *c, const char *endpoint) {
    char err[256];
    memset(c, 0, sizeof(*c));
    msgpack_sbuffer_init(&c->sb);
    c->ctx = zmq_ctx_new();
    if (!c->ctx || !(c->sock = proto_sock_new(c->ctx, ZMQ_DEALER, err, sizeof(err)))) {
        fprintf(stderr, "gpt2c: %s\n", c->ctx ? err : "cannot create a ZeroMQ context");
        return GPT2C_USAGE;
    }
    const char *key = getenv("GPT2D_CURVE_KEY"), *server = getenv("GPT2D_SERVER_KEY");
    if (key && *key && (!server || !*server)) {
        fprintf(stderr, "gpt2c: --curve-key needs --server-key (the broker's public key)\n");
        return GPT2C_USAGE;
    }
    if (key && *key && proto_curve_client(c->sock, key, server, err, sizeof(err)) < 0) {
        fprintf(stderr, "gpt2c: %s\n", err);
        return GPT2C_USAGE;
    }
    if (zmq_connect(c->sock, endpoint) < 0) {
        fprintf(stderr, "gpt2c: cannot connect to %s: %s\n", endpoint, zmq_strerror(errno));
        return GPT2C_UNREACHABLE;
    }
    proto_msg h;
    proto_msg_init(&h, PROTO_T_HELLO);
    h.name = (proto_str){"gpt2c", 5};
    h.has = PROTO_HAS(PF_NAME);
    if (conn_send(c, &h) < 0) return GPT2C_UNREACHABLE;
    double deadline = proto_clock_ms() + PROTO_CONNECT_TIMEOUT_MS;
    for (;;) {
        double left = deadline - proto_clock_ms();
        if (left <= 0) break;
        proto_msg m;
        int rc = conn_recv(c, &m, (int)left);
        if (rc < 0) break;
        if (rc == 0) continue;
        proto_type t = m.type;
        int code = m.code;
        proto_msg_destroy(&m);
        if (t == PROTO_T_WELCOME) return 0;
        if (t == PROTO_T_ERROR) {
            fprintf(stderr, "gpt2c: the broker refused hello: %s\n", proto_code_name(code));
            return gpt2c_code_exit(code);
        }
    }
    fprintf(stderr, "gpt2c: no broker answered at %s within %d ms\n", endpoint, PROTO_CONNECT_TIMEOUT_MS);
    return GPT2C_UNREACHABLE;
}

void conn_close(conn *c) {
    proto_frame_close(&c->frame);
    proto_sock_close(&c->sock);
    if (c->ctx) zmq_ctx_term(c->ctx);
    c->ctx = NULL;
    msgpack_sbuffer_destroy(&c->sb);
    memset(&c->sb, 0, sizeof(c->sb));
}

int conn_send(conn *c, const proto_msg *m) {
    char err[256];
    for (;;) {
        if (proto_sock_send(c->sock, NULL, 0, m, 0, &c->sb, err, sizeof(err)) == 0) return 0;
        if (errno == EINTR) continue;
        fprintf(stderr, "gpt2c: cannot send %s: %s\n", proto_type_name(m->type),
                errno == EINVAL ? err : zmq_strerror(errno));
        return -1;
    }
}

int conn_recv(conn *c, proto_msg *m, int timeout_ms) {
    proto_frame_close(&c->frame);
    double deadline = proto_clock_ms() + timeout_ms;
    for (;;) {
        long left = (long)(deadline - proto_clock_ms());
        zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, left > 0 ? left : 0);
        if (rc < 0) return errno == EINTR ? 0 : -1;
        if (rc == 0) return 0;
        rc = proto_sock_recv(c->sock, 0, &c->frame, ZMQ_DONTWAIT);
        if (rc == -2) continue;
        if (rc < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        c->last_recv_ms = proto_clock_ms();
        char err[256];
        rc = proto_decode(m, proto_frame_data(&c->frame), proto_frame_size(&c->frame), err, sizeof(err));
        if (rc == PROTO_OK) return 1;
        fprintf(stderr, "gpt2c: undecodable message from the broker skipped: %s\n", err);
        proto_msg_destroy(m);
        proto_frame_close(&c->frame);
    }
}

int conn_broker_dead(const conn *c) {
    return proto_clock_ms() - c->last_recv_ms > (double)PROTO_HEARTBEAT_MS * PROTO_LIVENESS;
}

int gpt2c_code_exit(int code) {
    switch (code) {
    case PROTO_CODE_OVERLOADED: return GPT2C_OVERLOADED;
    default: return GPT2C_SERVER_ERROR;
    }
}

int cmd_keygen(int argc, char **argv) {
    if (argc != 1) {
        fprintf(stderr, "usage: gpt2c keygen FILE   (writes a CURVE key pair, prints the public key)\n");
        return GPT2C_USAGE;
    }
    char pub[PROTO_CURVE_KEY_Z85 + 1], err[512];
    if (!zmq_has("curve")) {
        fprintf(stderr, "gpt2c: this libzmq was built without CURVE support\n");
        return GPT2C_USAGE;
    }
    if (proto_curve_keygen(argv[0], pub, err, sizeof(err)) < 0) {
        fprintf(stderr, "gpt2c: %s\n", err);
        return GPT2C_USAGE;
    }
    printf("%s\n", pub);
    return GPT2C_OK;
}
