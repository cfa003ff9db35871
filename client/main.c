/* main.c — gpt2c, the command-line client of gpt2d.
 *   gpt2c [flags] "prompt"                     stream a continuation to stdout
 *   gpt2c batch IN.jsonl [-c N] [-o OUT.jsonl]  many requests with bounded concurrency
 *   gpt2c stats                                the broker's live state
 *   gpt2c keygen FILE                          a CURVE key pair for --curve-key / allow-lists
 * Flags may come anywhere (getopt_long permutes): the first argument that is not a flag is the
 * command word, or the prompt. SIGINT/SIGTERM only set a flag: the command cancels its requests
 * and exits 130. */
#include <signal.h>
#include <string.h>

#include "gpt2c.h"
#include "proto_version.h"

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
    gpt2c_options o;
    if (options_parse(&o, argc, argv) < 0) return GPT2C_USAGE;
    if (o.help) {
        options_usage(stdout);
        return GPT2C_OK;
    }
    if (o.version) {
        proto_version_print(stdout, "gpt2c", NULL);
        return GPT2C_OK;
    }
    const char *cmd = o.n_args > 0 && !o.prompt ? o.args[0] : "";
    if (strcmp(cmd, "keygen") == 0) return cmd_keygen(o.n_args - 1, (char **)o.args + 1);
    if (strcmp(cmd, "batch") == 0 || strcmp(cmd, "stats") == 0) {
        memmove(o.args, o.args + 1, sizeof(o.args[0]) * (size_t)(o.n_args - 1));
        o.n_args--;
        if (strcmp(cmd, "batch") == 0) return cmd_batch(&o, &g_interrupted);
        if (o.n_args != 0) {
            fprintf(stderr, "gpt2c stats: no arguments expected (got '%s')\n", o.args[0]);
            return GPT2C_USAGE;
        }
        int rc = endpoint_resolve(&o);
        return rc ? rc : cmd_stats(&o);
    }
    return cmd_generate(&o, &g_interrupted);
}
