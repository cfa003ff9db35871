/* conn.c — gpt2c's link to the broker; see gpt2c.h. */
#include <stdlib.h>
#include <string.h>

#include "gpt2c.h"

int conn_open(conn *c, const char *endpoint) {
    proto_client_opts o = {
        .curve_key = getenv("GPT2D_CURVE_KEY"),
        .server_key = getenv("GPT2D_SERVER_KEY"),
        .hello_name = "gpt2c",
    };
    int code = 0;
    switch (proto_client_open(c, endpoint, &o, &code)) {
    case PROTO_CLIENT_OK: return 0;
    case PROTO_CLIENT_ESETUP: fprintf(stderr, "gpt2c: %s\n", c->err); return GPT2C_USAGE;
    case PROTO_CLIENT_EREFUSED: fprintf(stderr, "gpt2c: %s\n", c->err); return gpt2c_code_exit(code);
    case PROTO_CLIENT_EUNREACHABLE: break;
    }
    fprintf(stderr, "gpt2c: %s\n", c->err);
    return GPT2C_UNREACHABLE;
}

void conn_close(conn *c) { proto_client_close(c); }

int conn_send(conn *c, const proto_msg *m) {
    if (proto_client_send(c, m) == 0) return 0;
    fprintf(stderr, "gpt2c: %s\n", c->err);
    return -1;
}

int conn_recv(conn *c, proto_msg *m, int timeout_ms) {
    long before = c->n_undecodable;
    int rc = proto_client_recv(c, m, timeout_ms, 0);
    if (c->n_undecodable != before) fprintf(stderr, "gpt2c: %s\n", c->err);
    if (rc < 0) fprintf(stderr, "gpt2c: %s\n", c->err);
    return rc;
}

int conn_broker_dead(const conn *c) { return proto_client_broker_dead(c); }

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
