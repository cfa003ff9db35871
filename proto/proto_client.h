/* proto_client.h — a client's link to the broker: the one implementation shared by gpt2c, the HTTP
 * gateway (gpt2d-http), the tests and the benchmarks.
 *
 * A client is a DEALER socket connected to the broker's client endpoint (ipc:// or tcp://, with
 * CURVE when a key pair and the broker's public key are given). proto_client_open() optionally
 * exchanges hello/welcome: the broker answers within PROTO_CONNECT_TIMEOUT_MS or it is reported
 * unreachable. While requests are outstanding the broker sends something at least every
 * PROTO_HEARTBEAT_MS; proto_client_broker_dead() says when PROTO_LIVENESS intervals passed in silence.
 *
 * The library prints nothing: every failure leaves a one-line explanation in c->err for the caller
 * to show. A received message's strings point into the client's last frame, so a message is valid
 * until the next proto_client_recv() on the same client; release it with proto_msg_destroy(). */
#ifndef GPT2D_PROTO_CLIENT_H
#define GPT2D_PROTO_CLIENT_H

#include <stddef.h>

#include "proto.h"
#include "proto_sock.h"

typedef struct {
    void *ctx;             /* ZeroMQ context: borrowed, or owned when own_ctx */
    void *sock;            /* DEALER connected to the broker */
    int own_ctx;           /* proto_client_close() terminates ctx */
    msgpack_sbuffer sb;    /* encode buffer, reused by every send */
    proto_frame frame;     /* the frame behind the last received message */
    double last_recv_ms;   /* proto_clock_ms() of the last frame from the broker (liveness) */
    long n_undecodable;    /* frames from the broker that failed to decode (skipped) */
    char err[512];         /* the last failure, one line */
} proto_client;

typedef struct {
    void *ctx;              /* a context to share; NULL: the client makes (and ends) its own */
    const char *curve_key;  /* our CURVE key pair file, or NULL/"" for a plain link */
    const char *server_key; /* the broker's public key (40 chars of Z85) or a file holding it */
    const char *hello_name; /* send hello with this name and wait for welcome; NULL: no handshake */
    int timeout_ms;         /* how long to wait for welcome; <= 0: PROTO_CONNECT_TIMEOUT_MS */
} proto_client_opts;

/* proto_client_open() results. */
typedef enum {
    PROTO_CLIENT_OK = 0,
    PROTO_CLIENT_ESETUP = -1,       /* a local problem: bad key file, no context, bad option */
    PROTO_CLIENT_EUNREACHABLE = -2, /* cannot connect, or no welcome in time (a broker refusing our
                                       CURVE key never answers, so that lands here too) */
    PROTO_CLIENT_EREFUSED = -3,     /* the broker answered hello with an error frame (*code) */
} proto_client_status;

/* Connects c to endpoint (opts may be NULL: own context, plain, no handshake). On failure c is
 * already closed, c->err says why and, for PROTO_CLIENT_EREFUSED, *refused_code (if not NULL) is the
 * error frame's code. */
proto_client_status proto_client_open(proto_client *c, const char *endpoint, const proto_client_opts *opts,
                                      int *refused_code);

/* Closes the socket (unsent frames are dropped), ends an owned context. Safe on a closed or
 * failed client, and twice. */
void proto_client_close(proto_client *c);

/* Encodes and sends m; retried on EINTR. 0, or -1 with c->err. */
int proto_client_send(proto_client *c, const proto_msg *m);

/* Sends bytes as they are (tests use it for hostile frames). 0, or -1 with c->err. */
int proto_client_send_raw(proto_client *c, const void *data, size_t len);

/* Flags of proto_client_recv(). */
#define PROTO_CLIENT_SKIP_HB 1 /* do not return heartbeats (they still count as liveness) */

/* Waits up to timeout_ms (0: only what is already there) for one decodable message. 1: m holds it
 * (valid until the next recv on c; destroy it); 0: timeout, or a signal interrupted the wait;
 * -1: the socket failed (c->err). Undecodable frames are skipped and counted in c->n_undecodable,
 * the last one described in c->err. */
int proto_client_recv(proto_client *c, proto_msg *m, int timeout_ms, int flags);

/* Asks for stats and waits up to timeout_ms for the reply, dropping other frames meanwhile (use it
 * on a client with no request in flight). 1 with m filled (as recv), 0 on timeout or failure. */
int proto_client_stats(proto_client *c, proto_msg *m, int timeout_ms);

/* Sends a cancel for the request with this id. 0, or -1 with c->err. */
int proto_client_cancel(proto_client *c, const proto_cid *id);

/* 1 if the broker has been silent longer than PROTO_LIVENESS heartbeats. */
int proto_client_broker_dead(const proto_client *c);

#endif
