/* gpt2c.h — what the parts of the gpt2c client share: exit codes, the connection to the broker,
 * the request flags, and the three commands (generate, batch, stats).
 *
 * Connection: a DEALER socket; "hello" is answered by "welcome" within PROTO_CONNECT_TIMEOUT_MS or
 * the broker is unreachable. While requests are outstanding the broker sends something at least
 * every PROTO_HEARTBEAT_MS; PROTO_LIVENESS intervals of silence mean it is gone. */
#ifndef GPT2D_GPT2C_H
#define GPT2D_GPT2C_H

#include <signal.h>
#include <stdio.h>

#include "proto.h"
#include "proto_client.h"
#include "proto_sock.h"

/* Exit codes. */
enum {
    GPT2C_OK = 0,
    GPT2C_USAGE = 1,        /* bad command line or local failure (file, memory) */
    GPT2C_SERVER_ERROR = 2, /* an error frame (other than overloaded), or finish "error" */
    GPT2C_OVERLOADED = 3,   /* the broker's queue was full */
    GPT2C_UNREACHABLE = 4,  /* no broker answered, or it fell silent */
    GPT2C_INTERRUPTED = 130 /* Ctrl-C: requests were cancelled */
};

/* ---- connection (conn.c) -------------------------------------------------------------------- */
/* The link is proto_client (proto/proto_client.h); these wrappers print its failures on stderr
 * and map them to exit codes. */
typedef proto_client conn;

/* Connects to endpoint and exchanges hello/welcome. With $GPT2D_CURVE_KEY (a key pair file) and
 * $GPT2D_SERVER_KEY (the broker's public key, or a file holding it) the link uses CURVE; a broker
 * that refuses our key never answers hello, so that is reported as unreachable. 0, or a GPT2C_*
 * code with a message on stderr. */
int conn_open(conn *c, const char *endpoint);
void conn_close(conn *c); /* safe on a failed or closed conn */

/* 0, or -1 with a message on stderr. */
int conn_send(conn *c, const proto_msg *m);

/* Waits up to timeout_ms for one valid message. 1: m holds it (valid until the next conn_recv;
 * call proto_msg_destroy); 0: timeout or a signal; -1: socket failure. Undecodable frames are
 * reported on stderr and skipped. */
int conn_recv(conn *c, proto_msg *m, int timeout_ms);

/* 1 if the broker has been silent longer than PROTO_LIVENESS heartbeats. */
int conn_broker_dead(const conn *c);

/* ---- request flags (options.c) ---------------------------------------------------------------- */
/* The installed service's socket (systemd/gpt2d.service: RuntimeDirectory=gpt2d). */
#define GPT2C_SYSTEM_ENDPOINT "ipc:///run/gpt2d/client.sock"

typedef struct {
    proto_msg req;                     /* a submit with every sampling field set from flags */
    char stop_buf[PROTO_MAX_STOPS][4 * PROTO_MAX_STOP_BYTES + 1]; /* unescaped in place */
    const char *stop_raw[PROTO_MAX_STOPS]; /* as typed, for messages */
    proto_bias bias[PROTO_MAX_BIAS];
    const char *connect;               /* --connect, else $GPT2D_ENDPOINT, else the default search */
    const char *curve_key;             /* --curve-key FILE: our CURVE key pair (exported as $GPT2D_CURVE_KEY) */
    const char *server_key;            /* --server-key KEY|FILE: the broker's public key ($GPT2D_SERVER_KEY) */
    const char *prompt;                /* --prompt TEXT */
    char connect_buf[1024];
    int json;                          /* --json */
    int no_escape;                     /* --no-escape */
    int concurrency;                   /* batch -c */
    const char *output;                /* batch -o */
    const char *errors;                /* batch -e */
    int resume;                        /* batch --resume */
    int progress;                      /* batch: -1 auto (tty), 0 off, 1 on */
    int version, help;
    const char *args[4];               /* positional arguments (the command word included) */
    int n_args;
} gpt2c_options;

/* Parses argv (options anywhere, getopt_long). 0, or -1 after printing the problem. */
int options_parse(gpt2c_options *o, int argc, char **argv);
void options_usage(FILE *f);
/* Interprets C escapes (\n \t \r \\ \" \' \xHH) in place; unknown ones stay. The new length. */
size_t options_unescape(char *s);

/* ---- endpoint (endpoint.c) ---------------------------------------------------------------------- */
/* Sets o->connect: --connect (a bare PATH means ipc://PATH), else $GPT2D_ENDPOINT, else the first
 * existing socket of $GPT2D_RUNTIME_DIR/client.sock (only it, when set), $XDG_RUNTIME_DIR/gpt2d/,
 * /tmp/gpt2d-$UID/, GPT2C_SYSTEM_ENDPOINT. An ipc:// socket file that does not exist fails at once
 * with a hint on how to start gpt2d. 0, or a GPT2C_* exit code after printing why. */
int endpoint_resolve(gpt2c_options *o);

/* ---- commands ----------------------------------------------------------------------------------- */
int cmd_generate(gpt2c_options *o, volatile sig_atomic_t *interrupted);
int cmd_batch(gpt2c_options *o, volatile sig_atomic_t *interrupted);
int cmd_stats(gpt2c_options *o);
/* gpt2c keygen FILE: writes a new CURVE key pair (0600) and prints its public key. */
int cmd_keygen(int argc, char **argv);

/* Exit code for an error frame's code. */
int gpt2c_code_exit(int code);

#endif
