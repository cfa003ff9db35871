/* conns.h — how many connections the broker holds, and who holds them: the fd bound of issue 13.
 *
 * Every accepted connection costs the broker a file descriptor; with none left, libzmq's ipc
 * listener would abort the process. Three layers keep that from happening:
 *   1. at start the soft RLIMIT_NOFILE is raised to the hard one, and CONNS_FD_RESERVE fds are kept
 *      out of every connection budget (for the broker's own files, pipes and sockets);
 *   2. a socket monitor on each ROUTER sees every accepted connection (its fd) and every disconnect;
 *      the client endpoint admits at most max_total connections, of which one local user (the
 *      peer's uid from SO_PEERCRED, ipc only) at most max_per_uid; the worker endpoint at most
 *      CONNS_MAX_WORKER_LINKS. A connection over its limit is shut down at once (the peer sees the
 *      connection closed; a ZeroMQ peer retries later) and logged, rate-limited;
 *   3. fdguard.c: should the process still run out (a burst faster than the monitor), the accept
 *      that would fail with EMFILE takes the connection off the backlog with a reserved fd and
 *      closes it, so libzmq sees EAGAIN instead of asserting.
 * Not thread-safe; the broker's loop drives it. */
#ifndef GPT2D_CONNS_H
#define GPT2D_CONNS_H

#include <stdint.h>

#include "proto_log.h"

#define CONNS_FD_RESERVE 64       /* fds never given to connections */
#define CONNS_MAX_WORKER_LINKS 256 /* worker connections at once (at most, within the fd budget) */

typedef struct conns conns;

/* Called for a handshake-failure event of a watched socket (auth.c logs them). */
typedef void (*conns_handshake_fn)(void *user, const char *domain, uint16_t event, uint32_t value,
                                   const char *address);

/* Raises the fd limit and computes the budgets: max_total (0: the fd limit less the reserve and the
 * worker links) and max_per_uid (0: half of max_total). NULL on failure. */
conns *conns_new(void *ctx, const proto_logger *log, int max_total, int max_per_uid);
void conns_free(conns *c); /* NULL-safe; call before zmq_ctx_term */

/* Stops the monitors and reads what they still hold (before the watched sockets are closed). */
void conns_stop(conns *c);

/* Watches sock (after bind): clients 1 for the client endpoint, 0 for the worker one. 0 or -1. */
int conns_watch(conns *c, void *sock, int clients, const char *domain);

void conns_on_handshake(conns *c, conns_handshake_fn fn, void *user);

/* The monitor sockets to poll for input; returns how many were written (at most cap). */
int conns_poll_sockets(const conns *c, void **socks, int cap);

/* Reads pending monitor events and enforces the limits, without blocking. */
void conns_handle(conns *c);

/* Connections held now on the client endpoint, and the budgets (for logs and tests). */
int conns_clients(const conns *c);
int conns_max_total(const conns *c);
int conns_max_per_uid(const conns *c);

#endif
