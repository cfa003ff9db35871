/* main.c — gpt2d: the GPT-2 generation broker. Parses the command line, installs the signal
 * handlers (they only set flags), runs the broker until SIGINT/SIGTERM, and cleans up. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "broker.h"
#include "config.h"
#include "proto_log.h"

static volatile sig_atomic_t g_stop;  /* SIGINT / SIGTERM */
static volatile sig_atomic_t g_child; /* SIGCHLD */

static void on_stop(int sig) {
    (void)sig;
    g_stop = 1;
}

static void on_child(int sig) {
    (void)sig;
    g_child = 1;
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sa.sa_flags = 0;
    sigaction(SIGPIPE, &sa, NULL);
}

int main(int argc, char **argv) {
    config cfg;
    int rc = config_parse(&cfg, argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;
    proto_logger log;
    proto_log_init(&log, "gpt2d", proto_log_parse_level(cfg.log_level));
    install_signals();
    char err[512];
    broker *b = broker_new(&cfg, &log, err, sizeof(err));
    if (!b) {
        proto_log(&log, PROTO_LOG_ERROR, "%s", err);
        return 1;
    }
    rc = broker_run(b, &g_stop, &g_child);
    broker_free(b);
    return rc == 0 ? 0 : 1;
}
