/* worker_main.c — gpt2d-worker: one continuous-batching engine on one DEALER link to the broker.
 *
 *   gpt2d-worker --model DIR [--connect ENDPOINT] [--name NAME] [--log-level L] [engine options]
 *
 * Engine options are proto/eopt.h's table (the same gpt2d passes on). The packed weights come from
 * the shared image cache (weights.h: built once per checkpoint, then mapped read-only by every worker
 * of the machine, so N workers hold one copy and a restart does not repack). READY carries the
 * numerics fingerprint, so the broker replays a lost request only onto a worker that computes the
 * same bits. The loop: while the engine has work, poll the socket without waiting
 * and run one engine_step() between polls; when idle, block in zmq_poll up to the next heartbeat.
 * With --preempt (the default) the engine also polls between the layers of a long step (wk_should_yield)
 * and returns with the step suspended when a message waits: the loop reads it, and the next
 * engine_step gives an interactive request its first token before the step resumes.
 * Engine callbacks turn tokens and results into token / done frames at once (normal blocking
 * sends with a large SNDHWM: the broker link must not drop frames). After a step that ended
 * requests, one credit frame returns their slots. A broker silent for PROTO_LIVENESS heartbeats,
 * or one that answers "disconnect", is left: live requests are cancelled and the worker connects
 * again and re-announces itself with ready. SIGINT/SIGTERM end it cleanly. A request beyond the
 * announced slots is refused (over_credit): the engine's FIFO stays bounded whatever the broker
 * does. A model that cannot load (or a CPU without the kernels' ISA) is reported to the broker in
 * one error frame without rid before the worker exits 1 (PROTOCOL.md, "Worker start-up failure");
 * --check only loads the model and says whether it works. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu.h"
#include "engine.h"
#include "eopt.h"
#include "proto.h"
#include "proto_log.h"
#include "matmul.h"
#include "proto_version.h"
#include "proto_sock.h"

_Static_assert(PROTO_MAX_STOPS == ENGINE_MAX_STOPS, "stop string count: proto and engine agree");
_Static_assert(PROTO_MAX_STOP_BYTES == ENGINE_MAX_STOP_LEN, "stop string length: proto and engine agree");
_Static_assert(PROTO_MAX_BIAS == SAMPLER_MAX_BIAS, "logit_bias entries: proto and sampler agree");
_Static_assert(sizeof(int) == sizeof(int32_t), "token ids are passed to the engine in place");

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

/* ============================================================================================== */
/* options                                                                                         */
/* ============================================================================================== */

typedef struct {
    const char *model, *connect, *name, *log_level;
    const char *curve_key, *server_key; /* CURVE: our key pair file, the broker's public key (or its file) */
    eopt_values engine;                 /* the engine options (eopt.h) */
    int check;          /* --check: load the model as a worker would, report, exit (gpt2d --check-config) */
    char connect_buf[512], name_buf[PROTO_MAX_NAME_BYTES];
} wk_options;

static void wk_usage(FILE *f) {
    fprintf(f, "usage: gpt2d-worker --model DIR [--connect ENDPOINT] [--name NAME] [--log-level L]\n"
               "                    [--curve-key FILE --server-key KEY|FILE] [engine options]\n"
               "Runs one GPT-2 engine for a gpt2d broker (default endpoint ipc://$RUNTIME/worker.sock;\n"
               "a remote machine uses --connect tcp://BROKER:PORT). --check loads the model with these settings\n"
               "(headers, shapes, --ctx within the model's), says what is wrong, and exits 0 or 1 without\n"
               "connecting (gpt2d --check-config runs it). Engine options (--name=VALUE works too):\n");
    eopt_usage(f);
}

/* 0 to run, 1 after --help, -1 on a usage error. */
static int wk_parse(wk_options *o, int argc, char **argv) {
    memset(o, 0, sizeof(*o));
    eopt_defaults(&o->engine);
    o->log_level = "info";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char err[256];
        int rc = eopt_parse_arg(&o->engine, argc, argv, &i, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "gpt2d-worker: %s\n", err);
            return -1;
        }
        if (rc > 0) continue;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            wk_usage(stdout);
            return 1;
        } else if (strcmp(a, "--version") == 0) {
            char kerr[256];
            const mm_kernels *k = mm_kernels_select(getenv("GPT2D_ISA"), kerr, sizeof(kerr));
            proto_version_print(stdout, "gpt2d-worker", k ? k->name : kerr);
            return 1;
        } else if (strcmp(a, "--check") == 0) {
            o->check = 1;
            continue;
        } else if (strcmp(a, "--model") == 0) o->model = v;
        else if (strcmp(a, "--connect") == 0) o->connect = v;
        else if (strcmp(a, "--name") == 0) o->name = v;
        else if (strcmp(a, "--log-level") == 0) o->log_level = v;
        else if (strcmp(a, "--curve-key") == 0) o->curve_key = v;
        else if (strcmp(a, "--server-key") == 0) o->server_key = v;
        else {
            fprintf(stderr, "gpt2d-worker: unknown option '%s'\n", a);
            return -1;
        }
        if (!v) {
            fprintf(stderr, "gpt2d-worker: %s needs a value\n", a);
            return -1;
        }
        i++;
    }
    if (!o->model) {
        fprintf(stderr, "gpt2d-worker: --model DIR is required\n");
        return -1;
    }
    if (!o->curve_key != !o->server_key) {
        fprintf(stderr, "gpt2d-worker: --curve-key and --server-key go together\n");
        return -1;
    }
    if (!o->log_level || proto_log_parse_level(o->log_level) < 0) {
        fprintf(stderr, "gpt2d-worker: --log-level must be error, warn, info or debug\n");
        return -1;
    }
    if (!o->connect) {
        if (!proto_default_endpoint(1, o->connect_buf, sizeof(o->connect_buf), NULL, 0)) return -1;
        o->connect = o->connect_buf;
    }
    if (!o->name) {
        char host[64] = "localhost";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = 0;
        snprintf(o->name_buf, sizeof(o->name_buf), "%s:%d", host, (int)getpid());
        o->name = o->name_buf;
    }
    return 0;
}

/* ============================================================================================== */
/* worker state                                                                                    */
/* ============================================================================================== */

typedef struct {
    uint64_t rid;
    uint8_t logprobs; /* token frames carry logprob */
} wk_live;

typedef struct {
    const wk_options *opt;
    proto_logger log;
    gpt2_weights *weights; /* the packed weights (mapped shared from the image cache) */
    bpe_tokenizer *tok;
    engine *e;
    void *ctx, *sock;
    msgpack_sbuffer sb;
    wk_live *live;        /* requests in the engine */
    int n_live, cap_live;
    int freed;            /* slots freed since the last credit frame */
    int slots;            /* the engine's KV slots: the capacity announced in ready */
    int n_ctx;            /* the engine's context (engine_n_ctx) */
    int n_vocab;          /* the model's vocabulary (engine_n_vocab) */
    char fingerprint[PROTO_MAX_FINGERPRINT_BYTES + 1]; /* numerics fingerprint, announced in ready */
    double broker_expiry_ms, last_send_ms;
    proto_top top[1 + PROTO_MAX_TOP_LOGPROBS]; /* on_top's entries for the next token frame */
    int n_top;
    uint64_t top_rid;
    int top_index;
    double last_hb_ms;    /* last hb sent */
} worker;

static wk_live *wk_live_find(worker *w, uint64_t rid) {
    for (int i = 0; i < w->n_live; i++)
        if (w->live[i].rid == rid) return &w->live[i];
    return NULL;
}

static int wk_live_add(worker *w, uint64_t rid, int logprobs) {
    if (w->n_live == w->cap_live) {
        int cap = w->cap_live ? 2 * w->cap_live : 64;
        wk_live *p = realloc(w->live, (size_t)cap * sizeof(*p));
        if (!p) return -1;
        w->live = p;
        w->cap_live = cap;
    }
    w->live[w->n_live++] = (wk_live){rid, (uint8_t)logprobs};
    return 0;
}

static void wk_live_del(worker *w, uint64_t rid) {
    wk_live *l = wk_live_find(w, rid);
    if (l) *l = w->live[--w->n_live];
}

/* Sends m to the broker (blocking: the link must not lose frames). 0; -1 if the link failed;
 * -2 if m could not be encoded. */
static int wk_send(worker *w, const proto_msg *m) {
    char err[256];
    if (!w->sock) return -1; /* between links: frames of cancelled requests are dropped */
    for (;;) {
        if (proto_sock_send(w->sock, NULL, 0, m, 0, &w->sb, err, sizeof(err)) == 0) {
            w->last_send_ms = proto_clock_ms();
            return 0;
        }
        if (errno == EINTR && !g_stop) continue;
        if (errno == EINVAL) {
            proto_log(&w->log, PROTO_LOG_ERROR, "cannot encode %s: %s", proto_type_name(m->type), err);
            return -2;
        }
        proto_log(&w->log, PROTO_LOG_ERROR, "send %s: %s", proto_type_name(m->type), zmq_strerror(errno));
        return -1;
    }
}

/* ============================================================================================== */
/* engine callbacks -> frames                                                                      */
/* ============================================================================================== */

static void wk_on_token(void *user, uint64_t rid, int index, int token, const char *piece, size_t piece_len,
                        float logprob) {
    worker *w = user;
    wk_live *l = wk_live_find(w, rid);
    proto_msg m;
    proto_msg_init(&m, PROTO_T_TOKEN);
    m.rid = rid;
    m.has = PROTO_HAS(PF_RID);
    m.index = index;
    m.token = token;
    m.text = (proto_str){piece_len ? piece : NULL, (uint32_t)piece_len};
    if (l && l->logprobs) {
        m.logprob = logprob;
        m.has |= PROTO_HAS(PF_LOGPROB);
    }
    if (w->n_top > 0 && w->top_rid == rid && w->top_index == index) {
        m.top = w->top;
        m.n_top = (uint32_t)w->n_top;
        m.has |= PROTO_HAS(PF_TOP);
    }
    w->n_top = 0;
    wk_send(w, &m);
}

/* The top_logprobs entries of the token on_token sends next (requests with top_logprobs). */
static void wk_on_top(void *user, uint64_t rid, int index, const int *ids, const float *logprobs, int n) {
    worker *w = user;
    w->n_top = 0;
    for (int i = 0; i < n && i < 1 + PROTO_MAX_TOP_LOGPROBS; i++) {
        size_t len = 0;
        const char *bytes = engine_token_bytes(w->e, ids[i], &len);
        w->top[i] = (proto_top){ids[i], logprobs[i], {len ? bytes : NULL, (uint32_t)len}};
        w->n_top++;
    }
    w->top_rid = rid;
    w->top_index = index;
}

static proto_finish wk_finish(engine_finish f) {
    switch (f) {
    case ENGINE_FINISH_LENGTH:
    case ENGINE_FINISH_CTX: return PROTO_FINISH_LENGTH;
    case ENGINE_FINISH_STOP: return PROTO_FINISH_STOP;
    case ENGINE_FINISH_EOS: return PROTO_FINISH_EOS;
    case ENGINE_FINISH_CANCELLED: return PROTO_FINISH_CANCELLED;
    default: return PROTO_FINISH_ERROR;
    }
}

static void wk_on_done(void *user, uint64_t rid, const engine_result *r) {
    worker *w = user;
    proto_msg m;
    proto_msg_init(&m, PROTO_T_DONE);
    m.rid = rid;
    m.has = PROTO_HAS(PF_RID);
    m.finish = wk_finish(r->finish);
    m.text = (proto_str){r->text_len ? r->text : NULL, (uint32_t)r->text_len};
    m.tokens = (const int32_t *)r->tokens;
    m.n_tokens = r->completion_tokens > 0 ? (uint32_t)r->completion_tokens : 0;
    m.prompt_tokens = r->prompt_tokens;
    m.completion_tokens = r->completion_tokens;
    m.cached_tokens = r->cached_tokens;
    m.queue_ms = r->queue_ms;
    m.ttft_ms = r->ttft_ms;
    m.total_ms = r->total_ms;
    if (r->finish == ENGINE_FINISH_ERROR && r->error) {
        size_t n = strlen(r->error);
        m.message = (proto_str){r->error, (uint32_t)(n > PROTO_MAX_MESSAGE_BYTES ? PROTO_MAX_MESSAGE_BYTES : n)};
        m.has |= PROTO_HAS(PF_MESSAGE);
    }
    if (wk_send(w, &m) == -2) {
        /* a result the protocol cannot carry still ends with a frame */
        proto_msg e;
        proto_msg_init(&e, PROTO_T_ERROR);
        e.rid = rid;
        e.has = PROTO_HAS(PF_RID);
        e.code = PROTO_CODE_INTERNAL;
        e.message = (proto_str){"result exceeds the protocol's limits", 36};
        wk_send(w, &e);
    }
    wk_live_del(w, rid);
    w->freed++;
}

/* ============================================================================================== */
/* broker link                                                                                     */
/* ============================================================================================== */

static void wk_send_ready(worker *w) {
    proto_msg m;
    proto_msg_init(&m, PROTO_T_READY);
    m.slots = w->slots;
    m.name = (proto_str){w->opt->name, (uint32_t)strlen(w->opt->name)};
    if (m.name.len > PROTO_MAX_NAME_BYTES) m.name.len = PROTO_MAX_NAME_BYTES;
    m.pid = (int32_t)getpid();
    m.n_ctx = w->n_ctx;
    m.fingerprint = (proto_str){w->fingerprint, (uint32_t)strlen(w->fingerprint)};
    m.has |= PROTO_HAS(PF_FINGERPRINT);
    /* a local worker proves it was started by this broker (see PROTOCOL.md, "Worker authentication") */
    const char *secret = getenv("GPT2D_WORKER_SECRET");
    if (secret && strlen(secret) == PROTO_SECRET_HEX) {
        m.secret = (proto_str){secret, PROTO_SECRET_HEX};
        m.has |= PROTO_HAS(PF_SECRET);
    }
    wk_send(w, &m);
}

static void wk_send_hb(worker *w) {
    engine_stats st;
    engine_get_stats(w->e, &st);
    proto_msg m;
    proto_msg_init(&m, PROTO_T_HB);
    m.running = st.n_running;
    m.waiting = st.n_waiting;
    m.steps = st.steps;
    m.tokens_generated = st.tokens_generated;
    m.kv = (proto_kv_info){st.kv.pages_total, st.kv.pages_used, st.kv.pages_cached, st.kv.lookup_tokens,
                           st.kv.hit_tokens};
    m.has = PROTO_HAS(PF_RUNNING) | PROTO_HAS(PF_WAITING) | PROTO_HAS(PF_STEPS) | PROTO_HAS(PF_TOKENS_GENERATED) |
            PROTO_HAS(PF_KV);
    wk_send(w, &m);
}

/* (Re)opens the DEALER, connects and announces the worker. 0 or -1. */
static int wk_connect(worker *w) {
    char err[256];
    proto_sock_close(&w->sock);
    w->sock = proto_sock_new(w->ctx, ZMQ_DEALER, err, sizeof(err));
    if (!w->sock) {
        proto_log(&w->log, PROTO_LOG_ERROR, "%s", err);
        return -1;
    }
    if (w->opt->curve_key && proto_curve_client(w->sock, w->opt->curve_key, w->opt->server_key, err, sizeof(err)) < 0) {
        proto_log(&w->log, PROTO_LOG_ERROR, "%s", err);
        return -1;
    }
    if (zmq_connect(w->sock, w->opt->connect) < 0) {
        proto_log(&w->log, PROTO_LOG_ERROR, "connect %s: %s", w->opt->connect, zmq_strerror(errno));
        return -1;
    }
    w->broker_expiry_ms = proto_clock_ms() + (double)PROTO_HEARTBEAT_MS * PROTO_LIVENESS;
    wk_send_ready(w);
    proto_log(&w->log, PROTO_LOG_INFO, "connected to %s as %s (%d slots)", w->opt->connect, w->opt->name,
              w->slots);
    return 0;
}

/* The broker is gone or disowned us: cancel everything (their frames go nowhere: the socket is
 * closed first), then connect again. */
static int wk_reconnect(worker *w, const char *why) {
    proto_log(&w->log, PROTO_LOG_WARN, "leaving the broker (%s); cancelling %d request(s)", why, w->n_live);
    proto_sock_close(&w->sock);
    int n = w->n_live;
    uint64_t *rids = malloc((size_t)(n > 0 ? n : 1) * sizeof(uint64_t));
    if (!rids) return -1;
    for (int i = 0; i < n; i++) rids[i] = w->live[i].rid;
    for (int i = 0; i < n; i++) engine_cancel(w->e, rids[i]); /* waiting ones end at once */
    free(rids);
    while (w->n_live > 0 && engine_has_work(w->e)) /* running ones end within a step */
        if (engine_step(w->e) < 0) return -1;
    w->n_live = 0;
    w->freed = 0;
    return wk_connect(w);
}

/* An error frame for rid with a reason (its code) and the field at fault (may be NULL). */
static void wk_send_refusal(worker *w, uint64_t rid, proto_reason why, const char *field, const char *msg) {
    proto_msg e;
    proto_msg_init(&e, PROTO_T_ERROR);
    e.rid = rid;
    e.has = PROTO_HAS(PF_RID) | PROTO_HAS(PF_REASON);
    e.code = proto_reason_code(why);
    const char *rname = proto_reason_name(why);
    e.reason = (proto_str){rname, (uint32_t)strlen(rname)};
    if (field) {
        e.field = (proto_str){field, (uint32_t)strlen(field)};
        e.has |= PROTO_HAS(PF_FIELD);
    }
    size_t n = strlen(msg);
    e.message = (proto_str){msg, (uint32_t)(n > PROTO_MAX_MESSAGE_BYTES ? PROTO_MAX_MESSAGE_BYTES : n)};
    wk_send(w, &e);
}

/* The checks that need the model: a specific reason for each refusal the engine would give.
 * PROTO_R_NONE if the request may go to the engine; else *field names the field. */
static proto_reason wk_check_request(const worker *w, const proto_msg *m, const char **field, char *msg,
                                     size_t cap) {
    int by_ids = (m->has & PROTO_HAS(PF_PROMPT_IDS)) != 0;
    *field = by_ids ? "prompt_ids" : "prompt";
    if (by_ids ? m->n_prompt_ids == 0 : m->prompt.len == 0) {
        snprintf(msg, cap, "the prompt is empty");
        return PROTO_R_EMPTY_PROMPT;
    }
    {
        for (uint32_t i = 0; i < m->n_prompt_ids; i++)
            if (m->prompt_ids[i] >= w->n_vocab) {
                snprintf(msg, cap, "prompt_ids[%u] = %d is not below the vocabulary size %d", i,
                         (int)m->prompt_ids[i], w->n_vocab);
                return PROTO_R_TOKEN_OUT_OF_RANGE;
            }
        for (uint32_t i = 0; i < m->n_logit_bias; i++)
            if (m->logit_bias[i].id >= w->n_vocab) {
                *field = "logit_bias";
                snprintf(msg, cap, "logit_bias[%u] names token %d, not below the vocabulary size %d", i,
                         (int)m->logit_bias[i].id, w->n_vocab);
                return PROTO_R_TOKEN_OUT_OF_RANGE;
            }
    }
    if (m->max_tokens > w->n_ctx) {
        *field = "max_tokens";
        snprintf(msg, cap, "max_tokens %d is beyond the context of %d positions", (int)m->max_tokens, w->n_ctx);
        return PROTO_R_MAX_TOKENS_OVER_CONTEXT;
    }
    return PROTO_R_NONE;
}

/* The protocol's reason for an engine refusal. */
static proto_reason wk_reason(engine_error e) {
    switch (e) {
    case ENGINE_E_PROMPT_TOO_LONG: return PROTO_R_PROMPT_TOO_LONG;
    case ENGINE_E_OVER_CONTEXT: return PROTO_R_MAX_TOKENS_OVER_CONTEXT;
    case ENGINE_E_EMPTY_PROMPT: return PROTO_R_EMPTY_PROMPT;
    case ENGINE_E_TOKEN_RANGE: return PROTO_R_TOKEN_OUT_OF_RANGE;
    case ENGINE_E_BAD_UTF8: return PROTO_R_INVALID_UTF8;
    case ENGINE_E_NO_MEMORY:
    case ENGINE_E_INTERNAL: return PROTO_R_INTERNAL;
    default: return PROTO_R_INVALID_REQUEST;
    }
}

static void wk_on_request(worker *w, const proto_msg *m) {
    const char *field;
    char why_msg[256];
    if (w->n_live >= w->slots) { /* the broker broke the credit rule: bound our FIFO, say so */
        snprintf(why_msg, sizeof(why_msg), "worker %s runs %d requests, all the %d slots it announced",
                 w->opt->name, w->n_live, w->slots);
        proto_log(&w->log, PROTO_LOG_WARN, "rid %llu refused: %s", (unsigned long long)m->rid, why_msg);
        wk_send_refusal(w, m->rid, PROTO_R_OVER_CREDIT, NULL, why_msg);
        return; /* no credit back: the broker had none to spend */
    }
    proto_reason why = wk_check_request(w, m, &field, why_msg, sizeof(why_msg));
    if (why != PROTO_R_NONE) {
        wk_send_refusal(w, m->rid, why, field, why_msg);
        w->freed++;
        return;
    }
    engine_request q;
    memset(&q, 0, sizeof(q));
    char stops[PROTO_MAX_STOPS][PROTO_MAX_STOP_BYTES + 1];
    if (m->has & PROTO_HAS(PF_PROMPT)) {
        q.prompt = m->prompt.len ? m->prompt.ptr : "";
        q.prompt_len = m->prompt.len;
    } else {
        q.prompt_ids = (const int *)m->prompt_ids;
        q.n_prompt_ids = (int)m->n_prompt_ids;
    }
    q.resume_ids = (const int *)m->resume_ids;
    q.n_resume_ids = (int)m->n_resume_ids;
    q.max_tokens = m->max_tokens;
    sampler_params_default(&q.sampling);
    q.sampling.temperature = m->temperature;
    q.sampling.top_k = m->top_k;
    q.sampling.top_p = m->top_p;
    q.sampling.min_p = m->min_p;
    q.sampling.repetition_penalty = m->repetition_penalty;
    q.sampling.presence_penalty = m->presence_penalty;
    q.sampling.frequency_penalty = m->frequency_penalty;
    q.sampling.seed = m->seed;
    q.sampling.n_bias = (int)m->n_logit_bias;
    for (uint32_t i = 0; i < m->n_logit_bias; i++) {
        q.sampling.bias_id[i] = m->logit_bias[i].id;
        q.sampling.bias[i] = m->logit_bias[i].bias;
    }
    q.n_stops = (int)m->n_stop;
    for (uint32_t i = 0; i < m->n_stop; i++) {
        memcpy(stops[i], m->stop[i].ptr, m->stop[i].len);
        stops[i][m->stop[i].len] = 0;
        q.stops[i] = stops[i];
    }
    q.ignore_eos = m->ignore_eos;
    q.want_logprobs = m->logprobs;
    q.want_top = (m->has & PROTO_HAS(PF_TOP_LOGPROBS)) != 0;
    q.top_n = m->top_logprobs;
    q.allow_special = m->allow_special;
    q.priority = m->priority == PROTO_PRIORITY_BULK ? ENGINE_PRIORITY_BULK : ENGINE_PRIORITY_INTERACTIVE;
    q.fit_ctx = 1; /* the service refuses what cannot fit rather than cut it short */
    engine_refusal no;
    int rc = wk_live_add(w, m->rid, m->logprobs);
    if (rc == 0) rc = engine_submit(w->e, m->rid, &q, &no);
    else no = (engine_refusal){ENGINE_E_NO_MEMORY, NULL, "out of memory"};
    if (rc == 0) {
        proto_log(&w->log, PROTO_LOG_DEBUG, "rid %llu admitted", (unsigned long long)m->rid);
        return;
    }
    wk_live_del(w, m->rid);
    wk_send_refusal(w, m->rid, wk_reason(no.code), no.field, no.message);
    w->freed++;
}

/* Handles one message from the broker. 1 if the worker must reconnect. */
static int wk_on_message(worker *w, proto_frame *f) {
    proto_msg m;
    char err[256];
    int rc = proto_decode(&m, proto_frame_data(f), proto_frame_size(f), err, sizeof(err));
    int reconnect = 0;
    w->broker_expiry_ms = proto_clock_ms() + (double)PROTO_HEARTBEAT_MS * PROTO_LIVENESS;
    if (rc < 0) {
        proto_log(&w->log, PROTO_LOG_WARN, "undecodable message from the broker dropped: %s", err);
        /* a request we cannot read still ends with a frame, if we know its rid */
        if (m.type == PROTO_T_REQUEST && (m.has & PROTO_HAS(PF_RID))) {
            proto_msg e;
            proto_msg_init(&e, PROTO_T_ERROR);
            e.rid = m.rid;
            e.has = PROTO_HAS(PF_RID);
            e.code = proto_status_code(rc);
            e.message = (proto_str){err, (uint32_t)strlen(err)};
            wk_send(w, &e);
            w->freed++;
        }
        proto_msg_destroy(&m);
        return 0;
    }
    switch (m.type) {
    case PROTO_T_REQUEST: wk_on_request(w, &m); break;
    case PROTO_T_CANCEL:
        if ((m.has & PROTO_HAS(PF_RID)) && engine_cancel(w->e, m.rid) == 0)
            proto_log(&w->log, PROTO_LOG_INFO, "rid %llu cancelled by the broker", (unsigned long long)m.rid);
        break;
    case PROTO_T_HB: break;
    case PROTO_T_DISCONNECT: reconnect = 1; break;
    default: proto_log(&w->log, PROTO_LOG_WARN, "unexpected %s from the broker", proto_type_name(m.type));
    }
    proto_msg_destroy(&m);
    return reconnect;
}

static void wk_send_credit(worker *w) {
    if (w->freed <= 0) return;
    proto_msg m;
    proto_msg_init(&m, PROTO_T_CREDIT);
    m.credit = w->freed > PROTO_MAX_SLOTS ? PROTO_MAX_SLOTS : w->freed;
    w->freed -= m.credit;
    wk_send(w, &m);
}

static void wk_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The engine's preemption hook (engine.h), asked between the layers of a long step: 1 if a message
 * from the broker is waiting (a zero-timeout poll, a few microseconds). The step is then suspended;
 * wk_run reads the messages as usual and its next engine_step runs what arrived (an interactive
 * request's first token) before resuming the step. */
static int wk_should_yield(void *user) {
    worker *w = user;
    if (!w->sock) return 0; /* between links (wk_reconnect drains with the socket closed) */
    zmq_pollitem_t item = {w->sock, 0, ZMQ_POLLIN, 0};
    return zmq_poll(&item, 1, 0) > 0;
}

/* The main loop; returns the exit status. */
#define WK_BURST_GAP_MS 1 /* see wk_run: the quiet gap that ends a burst of submits */
#define WK_BURST_MAX_MS 4 /* and the longest a burst is let in before the first step */

/* Reads the frames waiting on the socket (at most 256) and handles them: 1 if the broker does not
 * know us (reconnect), else 0. */
static int wk_read(worker *w) {
    int reconnect = 0;
    for (int i = 0; i < 256 && !reconnect; i++) {
        proto_frame f;
        int r = proto_sock_recv(w->sock, 0, &f, ZMQ_DONTWAIT);
        if (r == -2) continue;
        if (r < 0) break;
        reconnect = wk_on_message(w, &f);
        proto_frame_close(&f);
    }
    return reconnect;
}

static int wk_run(worker *w) {
    while (!g_stop) {
        int busy = engine_has_work(w->e);
        double now = proto_clock_ms();
        long timeout = 0;
        if (!busy) {
            timeout = (long)(w->last_send_ms + PROTO_HEARTBEAT_MS - now);
            if (timeout < 0) timeout = 0;
            if (timeout > PROTO_HEARTBEAT_MS) timeout = PROTO_HEARTBEAT_MS;
        }
        zmq_pollitem_t item = {w->sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, timeout);
        if (rc < 0 && errno != EINTR) {
            proto_log(&w->log, PROTO_LOG_ERROR, "zmq_poll: %s", zmq_strerror(errno));
            return 1;
        }
        int reconnect = rc > 0 ? wk_read(w) : 0;
        /* Idle to busy: a burst of submits (64 emails sent at once, through the gateway a few ms
         * apart) is let in before the first step, which would otherwise start with the first few and
         * keep the rest waiting a whole step. Reads on while frames keep coming within
         * WK_BURST_GAP_MS, at most WK_BURST_MAX_MS in all: a lone request pays one gap. */
        double burst_end = proto_clock_ms() + WK_BURST_MAX_MS;
        while (!busy && !reconnect && engine_has_work(w->e) && proto_clock_ms() < burst_end) {
            if (zmq_poll(&item, 1, WK_BURST_GAP_MS) <= 0) break;
            reconnect = wk_read(w);
        }
        if (reconnect) {
            if (wk_reconnect(w, "the broker does not know us") < 0) return 1;
            continue;
        }
        if (engine_has_work(w->e)) {
            if (engine_step(w->e) < 0) {
                proto_log(&w->log, PROTO_LOG_ERROR, "engine step failed; exiting");
                return 1;
            }
            if (w->opt->engine.step_delay_ms) wk_sleep_ms(w->opt->engine.step_delay_ms);
        }
        wk_send_credit(w);
        now = proto_clock_ms();
        /* an hb after a second of silence, and while busy one a second anyway: it carries the load and
         * KV figures the broker's stats show */
        if (now - w->last_send_ms >= PROTO_HEARTBEAT_MS || (busy && now - w->last_hb_ms >= PROTO_HEARTBEAT_MS)) {
            wk_send_hb(w);
            w->last_hb_ms = now;
        }
        if (now > w->broker_expiry_ms && wk_reconnect(w, "the broker is silent") < 0) return 1;
    }
    proto_log(&w->log, PROTO_LOG_INFO, "stopping");
    return 0;
}

/* Where the weights came from, and a warning when they are not shared or not on huge pages. */
/* The worker cannot load the model: tell the broker why before exiting (PROTOCOL.md, "Worker
 * start-up failure"), so that it can answer its clients and stop restarting us in vain. Best
 * effort: waits at most 2 s for the frame to leave. Built without the kernels' ISA (as all of
 * this file and proto/), so it also runs for a CPU that lacks it. */
static void wk_report_start_failure(const wk_options *o, const char *why) {
    int permanent = !strstr(why, "out of memory") && !strstr(why, "cannot map");
    void *ctx = zmq_ctx_new();
    char err[256];
    void *sock = ctx ? proto_sock_new(ctx, ZMQ_DEALER, err, sizeof(err)) : NULL;
    int linger = 2000;
    if (sock && (!o->curve_key || proto_curve_client(sock, o->curve_key, o->server_key, err, sizeof(err)) == 0) &&
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof(linger)) == 0 && zmq_connect(sock, o->connect) == 0) {
        proto_reason r = permanent ? PROTO_R_MODEL_LOAD_FAILED : PROTO_R_WORKER_START_FAILED;
        proto_msg e;
        proto_msg_init(&e, PROTO_T_ERROR);
        e.code = proto_reason_code(r);
        e.reason = (proto_str){proto_reason_name(r), (uint32_t)strlen(proto_reason_name(r))};
        size_t n = strlen(why), nn = strlen(o->name);
        e.message = (proto_str){why, (uint32_t)(n > PROTO_MAX_MESSAGE_BYTES ? PROTO_MAX_MESSAGE_BYTES : n)};
        e.name = (proto_str){o->name, (uint32_t)(nn > PROTO_MAX_NAME_BYTES ? PROTO_MAX_NAME_BYTES : nn)};
        e.has = PROTO_HAS(PF_REASON) | PROTO_HAS(PF_NAME);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        proto_sock_send(sock, NULL, 0, &e, ZMQ_DONTWAIT, &sb, err, sizeof(err));
        msgpack_sbuffer_destroy(&sb);
    }
    if (sock) zmq_close(sock);
    if (ctx) zmq_ctx_term(ctx);
}

static void wk_log_weights(worker *w, double ms) {
    const gpt2_weights_info *in = gpt2_weights_info_of(w->weights);
    static const char *how[] = {"packed into private memory", "mapped from the cache", "packed and cached",
                                "rebuilt in the cache"};
    proto_log(&w->log, PROTO_LOG_INFO, "weights %s in %.0f ms: %.1f MiB, %.0f%% on 2 MB pages%s%s", how[in->source],
              ms, (double)in->bytes / (1 << 20), in->bytes ? 100.0 * (double)in->huge_bytes / (double)in->bytes : 0.0,
              in->path[0] ? ", " : "", in->path);
    if (in->note[0])
        proto_log(&w->log, in->source == GPT2_IMAGE_REBUILT ? PROTO_LOG_WARN : PROTO_LOG_INFO, "weights: %s",
                  in->note);
    if (in->bytes >= (8u << 20) && in->huge_bytes < in->bytes / 2)
        proto_log(&w->log, PROTO_LOG_WARN,
                  "weights: mostly 4 KB pages (decode may run ~1.3x slower); a weights-cache on a filesystem "
                  "with large folios (ext4 on Linux >= 6.16, xfs) or a tmpfs mounted huge=within_size gives 2 MB pages");
}

int main(int argc, char **argv) {
    wk_options opt;
    int rc = wk_parse(&opt, argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;
    char cpu_err[256];
    if (cpu_check(cpu_err, sizeof(cpu_err)) < 0) { /* before any code built with the kernels' ISA */
        fprintf(stderr, "gpt2d-worker: %s\n", cpu_err);
        if (!opt.check) wk_report_start_failure(&opt, cpu_err);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    worker w;
    memset(&w, 0, sizeof(w));
    w.opt = &opt;
    proto_log_init(&w.log, "gpt2d-worker", proto_log_parse_level(opt.log_level));
    msgpack_sbuffer_init(&w.sb);
    engine_config ec;
    gpt2_weights_opts wo;
    engine_options_apply(&opt.engine, &ec, &wo);
    if (opt.check) { /* the same load with one slot, nothing kept */
        ec.n_slots = 1;
        ec.kv_budget_mb = 0;
    }
    engine_callbacks cb = {.on_token = wk_on_token, .on_done = wk_on_done, .user = &w};
    if (opt.engine.preempt && !opt.check) {
        ec.should_yield = wk_should_yield;
        ec.yield_user = &w;
    }
    char err[512];
    rc = 1;
    double t0 = proto_clock_ms();
    double t_weights = 0;
    if (!(w.weights = gpt2_weights_load(opt.model, &wo, err, sizeof(err))) ||
        (t_weights = proto_clock_ms() - t0, !(w.tok = bpe_load(opt.model, err, sizeof(err)))) ||
        !(w.e = engine_new(w.weights, w.tok, &ec, &cb, err, sizeof(err)))) {
        proto_log(&w.log, PROTO_LOG_ERROR, "cannot load the model: %s", err);
        if (!opt.check) wk_report_start_failure(&opt, err);
        goto out;
    }
    if (opt.check) {
        printf("gpt2d-worker: model %s: OK\n", opt.model);
        rc = 0;
        goto out;
    }
    engine_set_top_callback(w.e, wk_on_top);
    wk_log_weights(&w, t_weights);
    engine_stats st;
    engine_get_stats(w.e, &st);
    w.slots = st.n_slots > PROTO_MAX_SLOTS ? PROTO_MAX_SLOTS : st.n_slots;
    w.n_ctx = engine_n_ctx(w.e);
    w.n_vocab = engine_n_vocab(w.e);
    engine_fingerprint(w.e, w.fingerprint, sizeof(w.fingerprint));
    proto_log(&w.log, PROTO_LOG_INFO, "model %s loaded in %.0f ms: %d slots, KV arena %.1f MiB, fingerprint %s",
              opt.model, proto_clock_ms() - t0, st.n_slots, (double)st.kv_bytes / (1 << 20), w.fingerprint);
    w.ctx = zmq_ctx_new();
    if (!w.ctx || wk_connect(&w) < 0) goto out;
    rc = wk_run(&w);
out:
    proto_sock_close(&w.sock);
    if (w.ctx) zmq_ctx_term(w.ctx);
    engine_free(w.e);
    bpe_free(w.tok);
    gpt2_weights_free(w.weights);
    free(w.live);
    msgpack_sbuffer_destroy(&w.sb);
    return rc;
}
