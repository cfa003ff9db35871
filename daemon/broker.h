/* broker.h — gpt2d's event loop: clients on one ROUTER, workers on another, a bounded FIFO between.
 *
 * Clients submit requests under ids of their choosing; the broker maps (client, id) to its own u64
 * rid, queues the request (at most cfg->max_queue waiting; beyond that "overloaded" at once), and
 * hands it to the worker with the most credit (credit = free slots the worker announced, so a
 * worker is never given more than it can run). Token, done and error frames come back by rid and
 * are forwarded to the client as they arrive. A client that cancels, or that the ROUTER can no
 * longer reach, has its request cancelled on the worker. Heartbeats both ways (any traffic
 * refreshes liveness); a worker silent for PROTO_LIVENESS intervals (then fenced: its later frames
 * are ignored), or a local worker process that exits, is lost: each of its requests is replayed on
 * a live worker with the tokens already streamed (resume_ids), so the client's stream goes on
 * unchanged (PROTOCOL.md, "Crash-transparent streaming"). Deadlines (queue, total), a per-client
 * limit on requests in flight and the no-worker timeout end requests with specific errors; with
 * --curve-secret both sockets are CURVE servers behind the ZAP allow-list of auth.h. Local workers
 * are run and restarted by the supervisor; remote ones connect to the worker endpoint themselves.
 * Trust boundaries (docs/SECURITY.md): connections are limited per endpoint and per local user
 * (conns.h); a worker registers only with the start secret, over ipc (socket 0600), or with CURVE,
 * and is fenced when it breaks the contract; each client has a fair share of the queue and a byte
 * bound on what it may have queued unread. */
#ifndef GPT2D_BROKER_H
#define GPT2D_BROKER_H

#include <signal.h>

#include "config.h"
#include "proto_log.h"

typedef struct broker broker;

/* Binds both endpoints (creating the runtime directory for ipc:// defaults, and holding an flock on
 * <socket>.lock beside each ipc:// socket file so that a second broker cannot take it over) and
 * prepares the supervisor. NULL with err on failure (e.g. naming the pid of the broker holding an
 * endpoint). */
broker *broker_new(const config *cfg, const proto_logger *log, char *err, size_t errlen);

/* Ends every live request with a shutting_down error, stops local workers, closes the sockets. */
void broker_free(broker *b); /* NULL-safe */

/* Serves until *stop is set (by a signal handler) and the drain is over: from then on a submit is
 * refused with shutting_down and waiting requests end with it; running requests may finish for
 * cfg->shutdown_grace_ms, then are cancelled (their done "cancelled" frame is forwarded, waited for
 * up to PROTO_CANCEL_GRACE_MS). A second signal (*stop > 1) ends the drain at once: the requests
 * still live get shutting_down from broker_free. *child is set by the SIGCHLD handler; the loop
 * clears it and reaps. Returns 0, or -1 on a fatal socket error or when no worker can load the
 * model (broker_failure). */
int broker_run(broker *b, volatile sig_atomic_t *stop, volatile sig_atomic_t *child);

/* Why broker_run returned -1 because no worker can load the model (a local worker reported a
 * permanent failure before any worker came up), or NULL. */
const char *broker_failure(const broker *b);

/* The broker's state, for the service manager (sd_notify STATUS=, READY=1, STOPPING=1). */
typedef struct {
    int ready;                     /* every local worker has loaded the model and can serve */
    int draining;                  /* stopping: submits are refused */
    int local_ready, local_wanted; /* local workers announced / configured */
    int workers, running, queued;  /* workers connected, requests on them, requests waiting */
    double tokens_per_s;           /* over the last seconds */
} broker_status;

typedef void (*broker_tick_fn)(void *user, const broker_status *st);

/* fn is called from the event loop every tick (PROTO_HEARTBEAT_MS / 4), and at once when the
 * broker becomes ready or starts draining: it is the loop's pulse (sd_notify WATCHDOG=1). */
void broker_on_tick(broker *b, broker_tick_fn fn, void *user);

#endif
