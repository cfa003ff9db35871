/* supervisor.h — runs N local gpt2d-worker processes and restarts crashed ones with backoff.
 *
 * Slot k runs `argv... --name local-k`. A worker that exits is restarted after a delay that starts
 * at PROTO_RESTART_MIN_MS and doubles up to PROTO_RESTART_MAX_MS; a worker that ran at least
 * PROTO_RESTART_RESET_MS restarts after the minimum again. Children get PR_SET_PDEATHSIG, so they
 * die with the daemon, and their own session (setsid), so a terminal's Ctrl-C reaches only the
 * daemon, which stops them itself. Not thread-safe; the broker's loop drives it. */
#ifndef GPT2D_SUPERVISOR_H
#define GPT2D_SUPERVISOR_H

#include <sys/types.h>

#include "proto_log.h"

typedef struct supervisor supervisor;

/* argv: the worker command line without --name (copied, NULL-terminated). restart_max_ms caps the
 * restart delay (0: PROTO_RESTART_MAX_MS; tests shorten it). NULL on failure. */
supervisor *supervisor_new(int n, char *const *argv, int restart_max_ms, const proto_logger *log);
void supervisor_free(supervisor *s); /* NULL-safe; does not stop the children (see _stop) */

/* Names the children "<prefix><k>" (default "local-") and calls them kind (default "worker") in
 * the log; before the first tick. kind and prefix must outlive s. */
void supervisor_set_names(supervisor *s, const char *kind, const char *prefix);

/* Starts every slot whose restart time has come. Returns the ms until the next one is due
 * (-1 if none is waiting). */
int supervisor_tick(supervisor *s, double now_ms);

/* Reaps its own exited children (by pid: other children of the process are left alone) without
 * blocking; calls on_exit(user, pid) for each, and schedules its restart unless stopping. */
void supervisor_reap(supervisor *s, double now_ms, void (*on_exit)(void *user, pid_t pid), void *user);

/* 1 if pid is one of our running children. */
int supervisor_owns(const supervisor *s, pid_t pid);

/* SIGTERM to every child, then SIGKILL to those still alive after PROTO_STOP_GRACE_MS; reaps all. */
void supervisor_stop(supervisor *s);

#endif
