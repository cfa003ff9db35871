/* main.c — gpt2d: the GPT-2 generation broker. Reads the settings (table defaults, --config file,
 * flags), opens the log, installs the signal handlers (they only set flags), runs the broker until
 * SIGINT/SIGTERM and its drain are over, and cleans up. The broker's loop calls on_tick() every
 * tick: that is where SIGHUP is acted on and where systemd hears from us (notify.h). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "broker.h"
#include "config.h"
#include "notify.h"
#include "proto_log.h"
#include "proto_sock.h"

static volatile sig_atomic_t g_stop;  /* SIGINT / SIGTERM: drain and exit; counts them (2: at once) */
static volatile sig_atomic_t g_child; /* SIGCHLD: reap */
static volatile sig_atomic_t g_hup;   /* SIGHUP: reopen the log file, reload what can be */

static void on_stop(int sig) {
    (void)sig;
    if (g_stop < 2) g_stop = g_stop + 1;
}

static void on_child(int sig) {
    (void)sig;
    g_child = 1;
}

static void on_hup(int sig) {
    (void)sig;
    g_hup = 1;
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sa.sa_flags = 0;
    sigaction(SIGPIPE, &sa, NULL);
}

/* What on_tick needs. */
typedef struct {
    config *cfg;
    proto_logger *log;
    notify *nt;
    int argc;
    char **argv;
} daemon_ctx;

/* SIGHUP: reopen the log file (after a rotation) and take log-level, max-queue and
 * shutdown-grace-ms from the re-read configuration file; the rest needs a restart. */
static void daemon_reload(daemon_ctx *d) {
    if (d->cfg->log_file && proto_log_reopen(d->log, d->cfg->log_file) < 0)
        proto_log(d->log, PROTO_LOG_ERROR, "SIGHUP: cannot reopen %s: %s", d->cfg->log_file, strerror(errno));
    config fresh;
    if (config_reload(d->cfg, &fresh, d->argc, d->argv) < 0) {
        proto_log(d->log, PROTO_LOG_ERROR, "SIGHUP: configuration not reloaded (see the error above)");
    } else {
        d->log->level = proto_log_parse_level(fresh.log_level);
        d->cfg->max_queue = fresh.max_queue;
        d->cfg->shutdown_grace_ms = fresh.shutdown_grace_ms;
        proto_log(d->log, PROTO_LOG_INFO, "SIGHUP: reloaded: log-level %s, max-queue %d, shutdown-grace-ms %d",
                  fresh.log_level, fresh.max_queue, fresh.shutdown_grace_ms);
    }
    config_destroy(&fresh);
}

static void on_tick(void *user, const broker_status *st) {
    daemon_ctx *d = user;
    if (g_hup) {
        g_hup = 0;
        daemon_reload(d);
    }
    notify_update(d->nt, st, proto_clock_ms());
}

int main(int argc, char **argv) {
    config cfg;
    int rc = config_parse(&cfg, argc, argv);
    if (rc != 0 || cfg.check_config) {
        if (rc == 0) rc = config_check(&cfg);
        if (rc == 0) printf("gpt2d: %s: configuration OK\n", cfg.config_file ? cfg.config_file : "flags");
        config_destroy(&cfg);
        return rc < 0 ? 2 : 0;
    }
    proto_logger log;
    proto_log_init(&log, "gpt2d", proto_log_parse_level(cfg.log_level));
    log.component = "broker";
    if (cfg.log_file && proto_log_reopen(&log, cfg.log_file) < 0) {
        fprintf(stderr, "gpt2d: log-file %s: %s\n", cfg.log_file, strerror(errno));
        config_destroy(&cfg);
        return 1;
    }
    install_signals();
    notify nt;
    notify_init(&nt, proto_clock_ms(), cfg.start_timeout_s);
    daemon_ctx d = {&cfg, &log, &nt, argc, argv};
    char err[512];
    broker *b = broker_new(&cfg, &log, err, sizeof(err));
    if (!b) {
        proto_log(&log, PROTO_LOG_ERROR, "%s", err);
        notify_status(&nt, err);
        config_destroy(&cfg);
        return 1;
    }
    broker_on_tick(b, on_tick, &d);
    rc = broker_run(b, &g_stop, &g_child);
    if (broker_failure(b)) { /* the journal / the terminal says why the start failed */
        snprintf(err, sizeof(err), "cannot start: no worker can load the model: %s", broker_failure(b));
        fprintf(stderr, "gpt2d: %s\n", err);
        notify_status(&nt, err);
    }
    notify_stopping(&nt);
    broker_free(b);
    proto_log(&log, PROTO_LOG_INFO, "exit %d", rc == 0 ? 0 : 1);
    config_destroy(&cfg);
    return rc == 0 ? 0 : 1;
}
