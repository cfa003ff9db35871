/* main.c — gpt2c, the command-line client of gpt2d.
 *   gpt2c [flags] "prompt"                     stream a continuation to stdout
 *   gpt2c batch IN.jsonl [-c N] [-o OUT.jsonl]  many requests with bounded concurrency
 *   gpt2c stats                                the broker's live state
 *   gpt2c keygen FILE                          a CURVE key pair for --curve-key / allow-lists
 * SIGINT/SIGTERM only set a flag: the command cancels its requests and exits 130. */
#include <signal.h>
#include <string.h>

#include "gpt2c.h"

static volatile sig_atomic_t g_interrupted; /* count of SIGINT/SIGTERM received */

static void on_interrupt(int sig) {
    (void)sig;
    g_interrupted = g_interrupted + 1;
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_interrupt;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            options_usage(stdout);
            return 0;
        }
    }
    const char *cmd = argc > 1 ? argv[1] : "";
    if (strcmp(cmd, "keygen") == 0) return cmd_keygen(argc - 2, argv + 2);
    int skip = (strcmp(cmd, "batch") == 0 || strcmp(cmd, "stats") == 0) ? 2 : 1;
    gpt2c_options o;
    if (options_parse(&o, argc - skip, argv + skip) < 0) return GPT2C_USAGE;
    if (strcmp(cmd, "batch") == 0) return cmd_batch(&o, &g_interrupted);
    if (strcmp(cmd, "stats") == 0) return cmd_stats(&o);
    return cmd_generate(&o, &g_interrupted);
}
