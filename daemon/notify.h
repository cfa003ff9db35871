/* notify.h — gpt2d and its service manager (systemd's sd_notify protocol, Type=notify).
 *
 * notify_update() is called from the broker's event loop on every tick with the broker's state:
 *   READY=1                once every local worker has loaded the model and announced its slots;
 *   STATUS=...             whenever the one-line summary changes ("2 workers, 37 running, 5 queued,
 *                          612 tok/s"; "starting: ...", "stopping: ...");
 *   WATCHDOG=1             every half of WATCHDOG_USEC, so a wedged loop gets the unit restarted;
 *   EXTEND_TIMEOUT_USEC=   every second while workers load (up to start-timeout-s) and while
 *                          running requests drain at shutdown, so the unit's timeouts can stay short;
 *   STOPPING=1             once, when the broker starts draining.
 * Without NOTIFY_SOCKET in the environment every call is a cheap no-op. Caller-owned struct. */
#ifndef GPT2D_NOTIFY_H
#define GPT2D_NOTIFY_H

#include <stdint.h>

#include "broker.h"

#define NOTIFY_EXTEND_EVERY_MS 1000 /* how often EXTEND_TIMEOUT_USEC is repeated */
#define NOTIFY_EXTEND_USEC 5000000  /* each one grants this much */

typedef struct {
    int active;                /* NOTIFY_SOCKET is set */
    uint64_t watchdog_usec;    /* WATCHDOG_USEC (0: no watchdog) */
    double next_watchdog_ms, next_extend_ms;
    double start_deadline_ms;  /* no more start-up extensions after this */
    int ready_sent, stopping_sent;
    char status[256];          /* the last STATUS= sent */
} notify;

void notify_init(notify *n, double now_ms, int start_timeout_s);

/* Sends whatever st and the clock call for (see above). */
void notify_update(notify *n, const broker_status *st, double now_ms);

/* STATUS=text (e.g. the reason start-up failed); sent even if unchanged. */
void notify_status(notify *n, const char *text);

/* STOPPING=1 if not sent yet. */
void notify_stopping(notify *n);

#endif
