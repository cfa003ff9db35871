/* notify.c — see notify.h. */
#include "notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

void notify_init(notify *n, double now_ms, int start_timeout_s) {
    memset(n, 0, sizeof(*n));
    const char *sock = getenv("NOTIFY_SOCKET");
    n->active = sock && *sock;
    uint64_t usec = 0;
    if (n->active && sd_watchdog_enabled(0, &usec) > 0) n->watchdog_usec = usec;
    n->next_watchdog_ms = now_ms;
    n->next_extend_ms = now_ms;
    n->start_deadline_ms = now_ms + 1000.0 * start_timeout_s;
}

/* The one-line summary of st. */
static void notify_format(const broker_status *st, char *buf, size_t cap) {
    if (st->draining)
        snprintf(buf, cap, "stopping: %d running, %d queued; new requests refused", st->running, st->queued);
    else if (!st->ready)
        snprintf(buf, cap, "starting: %d of %d local workers ready (loading the model)", st->local_ready,
                 st->local_wanted);
    else
        snprintf(buf, cap, "%d worker%s, %d running, %d queued, %.0f tok/s", st->workers, st->workers == 1 ? "" : "s",
                 st->running, st->queued, st->tokens_per_s);
}

void notify_update(notify *n, const broker_status *st, double now_ms) {
    if (!n->active) return;
    char status[sizeof(n->status)];
    notify_format(st, status, sizeof(status));
    if (st->draining) notify_stopping(n);
    if (strcmp(status, n->status) != 0) notify_status(n, status);
    if (st->ready && !st->draining && !n->ready_sent) {
        n->ready_sent = 1;
        sd_notify(0, "READY=1");
    }
    int loading = !st->ready && now_ms < n->start_deadline_ms;
    if ((loading || st->draining) && now_ms >= n->next_extend_ms) {
        sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%d", NOTIFY_EXTEND_USEC);
        n->next_extend_ms = now_ms + NOTIFY_EXTEND_EVERY_MS;
    }
    if (n->watchdog_usec && now_ms >= n->next_watchdog_ms) {
        sd_notify(0, "WATCHDOG=1");
        n->next_watchdog_ms = now_ms + (double)n->watchdog_usec / 2000.0;
    }
}

void notify_status(notify *n, const char *text) {
    if (!n->active) return;
    snprintf(n->status, sizeof(n->status), "%s", text);
    sd_notifyf(0, "STATUS=%s", n->status);
}

void notify_stopping(notify *n) {
    if (!n->active || n->stopping_sent) return;
    n->stopping_sent = 1;
    sd_notify(0, "STOPPING=1");
}
