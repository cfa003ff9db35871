/* config.h — gpt2d's settings: one option table (config.c: name, type, default, help) drives the
 * command line, the `key = value` configuration file, --help and the commented default file.
 *
 * Precedence: table default < configuration file (--config FILE) < command-line flag. Every setting
 * is both a file key ("workers = 2") and a flag ("--workers 2"). Engine options are passed on to
 * every local worker unchanged; they are declared once, in proto/eopt.h's table, which this table
 * takes in whole. Adding a setting: one line in the table plus a field here. */
#ifndef GPT2D_CONFIG_H
#define GPT2D_CONFIG_H

#include <stdio.h>

#include "eopt.h"

typedef struct {
    const char *model;        /* model DIR: what local workers load */
    int workers;              /* local worker processes (0: only remote workers) */
    const char *listen;       /* client endpoint (default ipc://<runtime>/client.sock) */
    const char *worker_listen;/* worker endpoint (default ipc://<runtime>/worker.sock) */
    int max_queue;            /* requests waiting for a slot before "overloaded" */
    const char *worker_bin;   /* default gpt2d-worker next to gpt2d */
    const char *log_level;    /* error|warn|info|debug */
    const char *log_file;     /* append logs here instead of stderr; reopened on SIGHUP */
    int shutdown_grace_ms;    /* SIGTERM: running requests may finish this long, then are cancelled */
    int start_timeout_s;      /* systemd: extend the start timeout while workers load, up to this */
    eopt_values engine;       /* engine options (proto/eopt.h), passed to local workers;
                                 engine.threads 0 becomes cores / workers */
    /* deadlines, limits and CurveZMQ (0 / NULL: the PROTO_ default, or off) */
    int queue_timeout_ms;     /* a request waiting longer for a slot fails with timeout */
    int request_timeout_ms;   /* a request not done this long after submit fails with timeout */
    int max_client_requests;  /* requests in flight per client connection */
    int interactive_reserve;  /* slots of each worker that bulk requests leave to interactive ones */
    int restart_max_ms;       /* cap of a crashing local worker's restart delay */
    const char *curve_secret; /* file with the broker's CURVE key pair: CURVE on both links */
    const char *curve_clients;/* file of client public keys allowed in (with curve_secret) */
    const char *curve_workers;/* file of worker public keys allowed in (with curve_secret) */
    /* the HTTP gateway (gpt2d-http), run and restarted by gpt2d when http_listen is set */
    const char *http_listen;  /* HOST:PORT (NULL: no gateway) */
    const char *http_bin;     /* default gpt2d-http beside gpt2d */
    const char *http_api_keys;/* file of API keys (NULL: none) */
    const char *http_model_name; /* /v1/models id (NULL: the model directory's name) */
    const char *http_chat_template; /* chat template file (NULL: built in) */
    int http_max_connections; /* open HTTP connections at most */
    int http_idle_timeout_s;  /* silent connections are closed after this */
    int http_stream_buffer_kb;/* a stream this far behind its client is cancelled */
    int allow_plain_workers;  /* no CURVE: workers without the start secret may register over TCP */
    int max_connections;      /* client connections at once (0: from the fd limit) */
    int max_connections_per_uid; /* client connections of one uid at once (0: half of the above) */
    /* command-line only */
    const char *config_file;  /* --config FILE (NULL: none) */
    int check_config;         /* --check-config: validate and exit */
    /* storage */
    char *file_text;          /* the configuration file, values point into it (config_destroy) */
    char listen_buf[512], worker_listen_buf[512], runtime_dir[512], worker_bin_buf[4200], http_bin_buf[4200];
} config;

/* Fills cfg from the table defaults, the file named by --config, then argv.
 * 0 to run (or, with cfg->check_config, to report success); 1 if --help, --version or
 * --print-config was printed (exit 0); -1 after printing the error to stderr — a file error as
 * "FILE:LINE: message" (exit 2). Release with config_destroy() whatever it returned. */
int config_parse(config *cfg, int argc, char **argv);

/* Re-reads cfg->config_file into fresh (the command line argv still wins) for SIGHUP. Same return
 * values as config_parse (never 1); fresh needs config_destroy() either way. */
int config_reload(const config *cfg, config *fresh, int argc, char **argv);

/* --check-config's deeper checks: the worker executable exists and loads the model directory with
 * these settings (gpt2d-worker --check: headers, shapes, ctx within the model's). 0, or -1 after
 * printing what is wrong to stderr. */
int config_check(const config *cfg);

/* Writes the fully commented configuration file for cfg: every option with its help and default;
 * settings that differ from the default are written active, the others commented out. */
void config_write(const config *cfg, FILE *f);

void config_destroy(config *cfg); /* frees file_text; safe twice */

#endif
