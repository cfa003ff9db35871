/* gw.h — gpt2d-http's shared state: the gateway (one per process), an HTTP API call and its choices.
 *
 * Threading: ONE thread does everything. The main loop (main.c) polls the broker's DEALER socket,
 * libmicrohttpd's epoll descriptor (external-select mode) and the gateway's own epoll set of the
 * sockets of generation calls (EPOLLRDHUP, edge-triggered, registered once per call: to see a
 * client hang up while its request waits for tokens, without polling every socket each turn),
 * then runs MHD and drains the broker link. So the ZeroMQ socket, the calls and MHD's connections are never shared between
 * threads, and nothing spins: a connection with nothing to send is suspended and resumed when a
 * frame for it arrives.
 *
 * Lifecycle of a generation call: routes.c creates it when the request's headers arrive (the MHD
 * connection's con_cls), gathers the body, openai.c maps it to one protocol submit per choice and
 * link.c sends them; the connection is suspended. Frames come back through link.c to openai.c,
 * which fills the choices (and, for a stream, appends SSE events to the call's output buffer) and
 * resumes the connection when it has something to say. MHD's completion callback frees the call;
 * every choice not yet ended is cancelled at the broker first. */
#ifndef GPT2D_HTTP_GW_H
#define GPT2D_HTTP_GW_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "apikeys.h"
#include "chat.h"
#include "config.h"
#include "proto.h"
#include "proto_client.h"
#include "proto_log.h"

#define GW_MAX_BODY_BYTES (1u << 20) /* request bodies above this are 413 */
#define GW_MAX_N 16                  /* "n" choices per prompt */
#define GW_MAX_CHOICES 64            /* prompts x n per call */
#define GW_STATS_TIMEOUT_MS 2000     /* /metrics, /v1/stats, /ready wait this long for the broker */
#define GW_RETRY_AFTER_S "1"         /* Retry-After of a 429 */

typedef struct gw gw;
typedef struct hcall hcall;

/* An error for the client: the HTTP status, OpenAI "code" and "param", and the message. */
typedef struct {
    int status;        /* 0: no error */
    char code[40];     /* a protocol reason name, or the gateway's own (unknown_parameter, ...) */
    char param[64];    /* "" when none */
    char message[512];
} gw_error;

/* One logprobs entry of a generated token (the sampled token, then the alternatives). */
typedef struct {
    int n;                                      /* entries in id/lp/bytes */
    int32_t id[1 + PROTO_MAX_TOP_LOGPROBS];
    float lp[1 + PROTO_MAX_TOP_LOGPROBS];
    char *bytes[1 + PROTO_MAX_TOP_LOGPROBS];    /* malloc'd, NUL-terminated (raw token bytes) */
    uint32_t len[1 + PROTO_MAX_TOP_LOGPROBS];
    size_t text_offset;                         /* bytes of choice text before this token */
} gw_tokinfo;

typedef struct {
    uint64_t id;          /* the broker request id (0: not submitted) */
    int prompt;           /* index of its prompt in the call */
    uint8_t started;      /* a first frame (token, done or error) arrived */
    uint8_t ended;        /* done or error arrived (or it was cancelled and forgotten) */
    uint8_t role_sent;    /* chat stream: the first delta (role) was sent */
    proto_finish finish;
    gw_error err;         /* status != 0: this choice failed */
    char *text;           /* generated text so far (raw bytes; non-streaming calls) */
    size_t text_len, text_cap;
    size_t text_sent;     /* bytes of text streamed (text_offset of the next token) */
    int prompt_tokens, completion_tokens;
    double queue_ms, ttft_ms, total_ms; /* the broker's timings of the done frame */
    gw_tokinfo *toks;     /* logprobs of each generated token (when asked) */
    int n_toks, cap_toks;
} gw_choice;

typedef enum { CALL_COMPLETIONS, CALL_CHAT, CALL_STATS, CALL_OTHER } call_kind;
typedef enum { STATS_FOR_METRICS, STATS_FOR_JSON, STATS_FOR_READY } stats_use;

struct hcall {
    gw *g;
    struct MHD_Connection *conn;
    call_kind kind;
    stats_use stats_for;   /* CALL_STATS: which answer */
    char *body;            /* the request body (NUL-terminated) */
    size_t body_len, body_cap;
    uint8_t too_large;     /* the body passed GW_MAX_BODY_BYTES: answer 413 */
    uint8_t answered;      /* a response was queued (or the connection is being closed) */
    uint8_t submitted;     /* the choices went to the broker */
    uint8_t suspended;     /* the connection is suspended (waiting for frames) */
    uint8_t gone;          /* the client hung up: close without answering */
    uint8_t watched;       /* fd is in g->watch_ep: a hang-up wakes the loop */
    uint8_t stats_wait;    /* CALL_STATS: waiting for the broker's stats reply */
    uint8_t streaming;     /* SSE headers were queued */
    uint8_t finished;      /* every choice ended and the stream's tail was written */
    int fd;                /* the connection's socket */
    double t_start;        /* proto_clock_ms() at the headers */
    /* the mapped request */
    int stream, include_usage, echo;
    int logprobs;          /* -1: none; 0..5: alternatives per token */
    int n;                 /* choices per prompt */
    int n_prompts;
    char **prompt_text;    /* (n_prompts) the prompt as text, or NULL for token ids (echo) */
    gw_choice *ch;         /* (n_choices) choice index = prompt * n + i */
    int n_choices, n_open; /* choices, choices not ended */
    char cid[48];          /* "cmpl-<hex>" / "chatcmpl-<hex>" */
    long long created;     /* unix seconds */
    /* stream output: SSE bytes not yet handed to MHD */
    char *out;
    size_t out_len, out_off, out_cap;
    hcall *prev, *next;    /* gw's list of live calls */
};

/* The broker's numbers from its last stats_reply, copied out of the frame. */
typedef struct {
    int valid;             /* a reply arrived */
    double at_ms;          /* when */
    proto_msg m;           /* scalars and histograms (pointers cleared) */
    int n_workers;
    proto_worker_info workers[PROTO_MAX_WORKERS];
    char names[PROTO_MAX_WORKERS][PROTO_MAX_NAME_BYTES + 1];
} gw_stats;

struct gw {
    const gw_config *cfg;
    proto_logger log;
    struct MHD_Daemon *mhd;
    int listen_fd;
    int watch_ep;           /* epoll set of calls' sockets, for hang-ups (routes_watch) */
    char url[300];          /* http://HOST:PORT actually bound */
    apikeys *keys;          /* NULL: no API keys */
    chat_template tmpl;
    proto_client link;
    int linked;             /* link is open */
    uint64_t next_id;       /* broker request ids */
    void *by_id;            /* table: u64 id -> hcall (choice found by scan) */
    hcall *calls;           /* live calls */
    int n_calls;
    int n_open_choices;     /* choices in flight at the broker */
    int stats_pending;      /* a stats request is outstanding */
    double stats_sent_ms;
    gw_stats stats;
    /* the gateway's own counters */
    uint64_t http_requests;             /* requests answered */
    uint64_t http_by_status[6];         /* by status class 1xx..5xx (index status/100) */
    uint64_t http_status_counts[600];   /* by exact status */
    int connections;                    /* open HTTP connections */
    int draining;                       /* SIGTERM seen: new requests get 503 shutting_down */
    int stream_buffer_bytes;            /* cap of a call's unread SSE bytes */
};

/* ---- link.c: the broker link ------------------------------------------------------------------- */
/* Connects to cfg->connect (hello / welcome). 0, or -1 after logging why. */
int link_open(gw *g);
void link_close(gw *g);
/* Sends m (a submit; m->id is set here) for choice k of call c. 0, or -1 with c->ch[k].err set. */
int link_submit(gw *g, hcall *c, int k, proto_msg *m);
/* Cancels every choice of c still open and forgets them (late frames are ignored). */
void link_forget(gw *g, hcall *c);
/* Asks the broker for stats (once at a time). */
void link_stats(gw *g);
/* Reads every frame waiting on the link and dispatches it. */
void link_drain(gw *g);
/* Timers: stats that never came, a broker silent while choices are open. */
void link_tick(gw *g, double now);
/* Ends every open choice as if the broker had sent an error frame (code, reason, message), and
 * cancels it at the broker: a stream gets an error event and its end, any other call the error. */
void link_fail_open(gw *g, int code, const char *reason, const char *message);

/* ---- openai.c: OpenAI <-> protocol ------------------------------------------------------------- */
/* Parses c->body for c->kind and submits the choices. 0 (submitted), or -1 with *e set. */
int oa_start(gw *g, hcall *c, gw_error *e);
/* Frames of choice k. */
void oa_on_token(gw *g, hcall *c, int k, const proto_msg *m);
void oa_on_end(gw *g, hcall *c, int k, const proto_msg *m);
/* The whole JSON answer of a finished non-streaming call (malloc'd), or NULL on allocation failure. */
char *oa_render_final(gw *g, hcall *c);
/* The first choice error of c, or NULL. */
const gw_error *oa_first_error(const hcall *c);

/* ---- sse.c: the stream ------------------------------------------------------------------------ */
/* Appends "data: <json>\n\n" (json is consumed) or "data: [DONE]\n\n" (json NULL). 0, or -1 when the
 * client is more than g->stream_buffer_bytes behind (the call is then cancelled). */
int sse_event(gw *g, hcall *c, json_t *json);
/* The MHD response that streams c->out (status 200, text/event-stream). */
struct MHD_Response *sse_response(hcall *c);

/* ---- routes.c: HTTP ------------------------------------------------------------------------------ */
enum MHD_Result routes_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **con_cls);
void routes_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe);
void routes_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode toe);
/* Adds c's socket to g->watch_ep (once per call): the loop sees the client hang up. */
void routes_watch(gw *g, hcall *c);
/* Wakes c's connection if it is suspended (something to send or to decide). */
void routes_wake(gw *g, hcall *c);
/* Error body {"error": {...}} (malloc'd). */
char *routes_error_json(const gw_error *e);
/* Fills e. */
void gw_error_set(gw_error *e, int status, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The OpenAI "type" for a status. */
const char *gw_error_type(int status);

/* ---- stats.c: /metrics, /v1/stats, /ready ----------------------------------------------------------- */
char *stats_render_prometheus(const gw *g); /* malloc'd text, NULL on allocation failure */
char *stats_render_json(const gw *g);       /* malloc'd JSON */
/* 1 if at least one worker serves (g->stats); else 0 with the reason code/message in e. */
int stats_ready(const gw *g, gw_error *e);

#endif
