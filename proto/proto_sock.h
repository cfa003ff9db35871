/* proto_sock.h — ZeroMQ sockets configured the one way the protocol wants, and one-message I/O.
 *
 * A message is one frame (one msgpack map); a ROUTER prefixes it with the peer's routing id.
 * proto_sock_new() sets ZMQ_LINGER 0, ZMQ_MAXMSGSIZE (PROTO_MAX_MSG_BYTES), the HWMs, and on a
 * ROUTER ZMQ_ROUTER_MANDATORY, so that a send to a vanished peer fails with EHOSTUNREACH
 * instead of being dropped in silence (that is how the broker learns a client is gone). */
#ifndef GPT2D_PROTO_SOCK_H
#define GPT2D_PROTO_SOCK_H

#include <stddef.h>

#include <msgpack.h>
#include <zmq.h>

#include "proto.h"

#define PROTO_MAX_IDENT 255 /* ZeroMQ routing ids are at most 255 bytes */

/* A received message: the routing id (ROUTER only) and the body. */
typedef struct {
    unsigned char ident[PROTO_MAX_IDENT];
    size_t ident_len;
    zmq_msg_t body;
    int open; /* body must be closed */
} proto_frame;

/* A socket of the given type with the protocol's options. NULL with err on failure. */
void *proto_sock_new(void *ctx, int type, char *err, size_t errlen);

/* Closes *sock (LINGER 0: unsent messages are dropped) and sets it to NULL; NULL-safe. */
void proto_sock_close(void **sock);

/* Encodes m into sb (cleared first) and sends it, prefixed by ident when ident_len > 0.
 * flags: 0 or ZMQ_DONTWAIT. 0, or -1 with errno: EHOSTUNREACH (ROUTER: peer gone), EAGAIN
 * (DONTWAIT and the peer's queue is full), EINVAL (m could not be encoded; err says why). */
int proto_sock_send(void *sock, const void *ident, size_t ident_len, const proto_msg *m, int flags,
                    msgpack_sbuffer *sb, char *err, size_t errlen);

/* Sends len bytes already encoded (e.g. a stored request), prefixed by ident. As proto_sock_send(). */
int proto_sock_send_raw(void *sock, const void *ident, size_t ident_len, const void *data, size_t len,
                        int flags);

/* Receives one message. router: expect a routing id frame first. 0 with f filled (close it with
 * proto_frame_close()); -1 with errno EAGAIN / EINTR / ...; -2 if the message had the wrong number
 * of frames (it was read and dropped). */
int proto_sock_recv(void *sock, int router, proto_frame *f, int flags);
void proto_frame_close(proto_frame *f); /* safe twice */

/* Body bytes of a received frame. */
static inline const void *proto_frame_data(proto_frame *f) { return zmq_msg_data(&f->body); }
static inline size_t proto_frame_size(proto_frame *f) { return zmq_msg_size(&f->body); }

/* ---- CurveZMQ keys ------------------------------------------------------------------------------
 * A key pair file (gpt2c keygen; mode 0600) has two lines, "public-key = Z85" and "secret-key = Z85"
 * ('#' comments allowed). A public-key file or an allow-list line is just the 40-character key. */
#define PROTO_CURVE_KEY_Z85 40

/* One line: "name = KEY" (name must match) or a bare KEY. 1 with key filled (NUL-terminated), 0 for
 * a blank, comment or other-name line, -1 if the value is not a 40-character Z85 key. */
int proto_curve_parse_line(const char *line, const char *name, char key[PROTO_CURVE_KEY_Z85 + 1]);

/* Reads a key file: pub from "public-key" (or a bare key), sec from "secret-key" ("" if absent).
 * 0, or -1 with err naming the file. */
int proto_curve_load(const char *path, char pub[PROTO_CURVE_KEY_Z85 + 1], char sec[PROTO_CURVE_KEY_Z85 + 1],
                     char *err, size_t errlen);

/* Makes sock (before connect) a CURVE client: our key pair from keyfile; the server's public key is
 * server_key itself if it is 40 characters of Z85, else read from that file. 0, or -1 with err. */
int proto_curve_client(void *sock, const char *keyfile, const char *server_key, char *err, size_t errlen);

/* Writes a new key pair to path (created 0600, not overwritten) and its public key into pub.
 * 0, or -1 with err. */
int proto_curve_keygen(const char *path, char pub[PROTO_CURVE_KEY_Z85 + 1], char *err, size_t errlen);

/* Milliseconds on the monotonic clock (all protocol timings use it). */
double proto_clock_ms(void);

#endif
