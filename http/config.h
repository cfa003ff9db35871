/* config.h — gpt2d-http's settings: one option table (config.c) drives the command line and --help.
 * gpt2d passes its http-* keys as these flags when it runs the gateway (--http-listen). */
#ifndef GPT2D_HTTP_CONFIG_H
#define GPT2D_HTTP_CONFIG_H

typedef struct {
    const char *listen;        /* HOST:PORT to serve HTTP on (port 0: any free port) */
    const char *connect;       /* the broker's client endpoint */
    const char *api_keys;      /* file of API keys (NULL: no auth) */
    const char *model_name;    /* the id in /v1/models */
    const char *chat_template; /* template file (NULL: the built-in one) */
    int max_connections;       /* open HTTP connections at most */
    int idle_timeout_s;        /* a connection silent this long is closed */
    int stream_buffer_kb;      /* a stream this far behind is cancelled */
    int shutdown_grace_ms;     /* SIGTERM: open calls may finish this long */
    const char *curve_key;     /* our CURVE key pair file (with server_key) */
    const char *server_key;    /* the broker's public key */
    const char *name;          /* our name at the broker (hello) */
    const char *log_level;
    char connect_buf[512];
} gw_config;

/* Fills cfg from the table defaults and argv. 0 to run; 1 if --help or --version was printed;
 * -1 after printing the error to stderr. */
int gw_config_parse(gw_config *cfg, int argc, char **argv);

#endif
