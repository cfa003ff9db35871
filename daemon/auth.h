/* auth.h — who may connect: CurveZMQ on both broker sockets, checked by a ZAP handler.
 *
 * With --curve-secret FILE (a key pair written by `gpt2c keygen`) both ROUTERs are CURVE servers:
 * traffic is encrypted and every peer proves it holds the secret key of its public key. The ZAP
 * handler (RFC 27, a REP socket on inproc://zeromq.zap.01 in the broker's context, polled by the
 * broker loop: no thread) admits a client only if its public key is in --curve-clients FILE, a
 * worker only if its key is in --curve-workers FILE or is the broker's own (local workers use the
 * broker's key pair). Anything else — another mechanism (no key), an unlisted key — is refused
 * and logged with the peer's address. Garbage that is not even a ZMTP handshake never reaches ZAP:
 * ZeroMQ drops it; the socket monitor of conns.h reports those failures to auth_log_handshake(). */
#ifndef GPT2D_AUTH_H
#define GPT2D_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "proto_log.h"

#define AUTH_DOMAIN_CLIENTS "clients"
#define AUTH_DOMAIN_WORKERS "workers"
#define AUTH_MAX_KEYS 4096 /* keys per allow-list */

typedef struct auth auth;

/* Reads the key pair and the allow-lists of cfg and binds the ZAP handler in ctx. NULL with err
 * (naming the file and the problem) on failure, or if libzmq lacks CURVE. */
auth *auth_new(void *ctx, const config *cfg, const proto_logger *log, char *err, size_t errlen);

/* Closes the handler's sockets; NULL-safe. Call before zmq_ctx_term. */
void auth_free(auth *a);

/* Makes sock (before bind) a CURVE server of the given domain.
 * 0, or -1 with err. */
int auth_server_socket(auth *a, void *sock, const char *domain, char *err, size_t errlen);

/* The sockets the loop polls for input (the ZAP handler); returns how many were
 * written to socks (at most cap). */
int auth_poll_sockets(const auth *a, void **socks, int cap);

/* Answers every pending ZAP request, without blocking. */
void auth_handle(auth *a);

/* Logs a failed handshake (a conns_handshake_fn; user is the auth), at most one line a second per
 * link. */
void auth_log_handshake(void *user, const char *domain, uint16_t event, uint32_t value, const char *address);

/* The broker's public key (Z85, 40 characters), for local workers' --server-key. */
const char *auth_public_key(const auth *a);

#endif
