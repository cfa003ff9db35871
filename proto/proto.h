/* proto.h — gpt2d's wire protocol: messages, limits, timings, error codes; encode and decode.
 *
 * Every message is ONE ZeroMQ frame holding ONE msgpack map (proto/PROTOCOL.md is the full spec).
 * The map always has "t" (type name) and "v" (protocol version); the other keys depend on the type
 * and are listed once, in the field table of proto.c, which drives both the encoder and the decoder.
 *
 * Decoding is strict and total: proto_decode() turns any byte string into either a valid message
 * or a specific negative status with a message naming the offending field; it never crashes, and it
 * allocates at most O(PROTO_MAX_OBJECTS) bytes (input longer than PROTO_MAX_MSG_BYTES, deeper than
 * PROTO_MAX_DEPTH or declaring more elements than it has bytes is refused before msgpack-c sees it).
 * A decoded message's strings point INTO the decoded buffer (keep it alive while you use them);
 * arrays live in the message's zone: release both with proto_msg_destroy().
 * Encoding: fill a proto_msg (proto_msg_init() sets the type's defaults), set PROTO_HAS() bits for the
 * optional fields you send, call proto_encode(). All protocol constants live in this header. */
#ifndef GPT2D_PROTO_H
#define GPT2D_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

/* ---- version ---------------------------------------------------------------------------------- */
#define PROTO_VERSION 1 /* the only version this code speaks; "v" of every message */

/* ---- limits ----------------------------------------------------------------------------------- */
#define PROTO_MAX_MSG_BYTES (1u << 20)    /* one frame; larger frames are refused (ZMQ_MAXMSGSIZE) */
#define PROTO_MAX_OBJECTS 16640           /* msgpack objects in one message (bounds decode memory) */
#define PROTO_MAX_DEPTH 6                 /* map/array nesting */
#define PROTO_MAX_PROMPT_BYTES (256u << 10) /* prompt text */
#define PROTO_MAX_TEXT_BYTES (512u << 10) /* generated text in a done frame, one token piece */
#define PROTO_MAX_IDS 4096                /* prompt_ids, resume_ids, tokens */
#define PROTO_MAX_TOKEN_ID 1048575        /* ids are checked against the model's vocab by the worker */
#define PROTO_MAX_MAX_TOKENS 4096         /* max_tokens upper bound */
#define PROTO_MAX_STOPS 8                 /* stop strings per request */
#define PROTO_MAX_STOP_BYTES 64           /* bytes per stop string (at least 1) */
#define PROTO_MAX_BIAS 64                 /* logit_bias entries */
#define PROTO_MAX_ID_BYTES 64             /* a client's string request id */
#define PROTO_MAX_NAME_BYTES 128          /* worker / client / server names */
#define PROTO_MAX_FINGERPRINT_BYTES 64    /* ready: a worker's numerics fingerprint */
#define PROTO_MAX_MESSAGE_BYTES 1024      /* error messages */
#define PROTO_MAX_WORKERS 256             /* worker entries in a stats reply */
#define PROTO_MAX_SLOTS 4096              /* slots a worker may announce */
#define PROTO_MAX_TOP_LOGPROBS 5          /* top_logprobs: alternatives per token */
#define PROTO_MAX_PIECE_BYTES 4096        /* text of one token frame from a worker (the contract) */
#define PROTO_SECRET_HEX 64               /* ready.secret: the broker's per-start secret, hex */

/* ---- defaults of a submit ------------------------------------------------------------------------ */
#define PROTO_DEFAULT_MAX_TOKENS 16     /* as gpt2-tool generate -n */
#define PROTO_DEFAULT_TEMPERATURE 0.0f  /* greedy, as gpt2-tool generate */

/* ---- timings ---------------------------------------------------------------------------------- */
#define PROTO_HEARTBEAT_MS 1000        /* a peer with nothing else to send sends "hb" this often */
#define PROTO_LIVENESS 5               /* heartbeat intervals of silence before a peer is declared dead */
#define PROTO_CONNECT_TIMEOUT_MS 3000  /* a client waits this long for "welcome" */
#define PROTO_CANCEL_GRACE_MS 1000     /* a client that cancels waits this long for the done frames */
#define PROTO_RESTART_MIN_MS 250       /* first restart delay of a crashed local worker */
#define PROTO_RESTART_MAX_MS 30000     /* the delay doubles up to this */
#define PROTO_RESTART_RESET_MS 60000   /* a worker that ran this long restarts with the minimum delay */
#define PROTO_STOP_GRACE_MS 5000       /* SIGTERM -> SIGKILL for local workers at shutdown */
#define PROTO_MAX_REPLAYS 16           /* a request is moved off dying workers at most this often */
#define PROTO_NO_WORKER_MS 10000       /* queued requests fail (no_worker) after this long without any worker */
#define PROTO_QUEUE_TIMEOUT_MS 60000   /* default deadline for getting a slot (--queue-timeout-ms) */
#define PROTO_REQUEST_TIMEOUT_MS 600000 /* default deadline from submit to done (--request-timeout-ms) */
#define PROTO_MAX_CLIENT_REQUESTS 1024 /* default requests in flight per client (--max-client-requests) */

/* ---- ZeroMQ socket settings -------------------------------------------------------------------- */
#define PROTO_SNDHWM 100000 /* frames queued per peer before a send would block / fail */
#define PROTO_RCVHWM 100000
/* The broker's client ROUTER: a client that stops reading fills its pipe after this many frames,
 * and is then treated as gone (its requests cancelled) so it cannot hold memory or block others.
 * Its receive side bounds what one client may have queued unread at the broker. */
#define PROTO_CLIENT_SNDHWM 4000
#define PROTO_CLIENT_RCVHWM 1000
/* Bytes one client may have queued at the broker: the sizes of the last PROTO_CLIENT_SNDHWM frames
 * sent to it bound what its pipe can hold; a send that would take that sum over this while the
 * connection's kernel buffer is full (the client is not reading) is not made, and the client is
 * treated as gone. */
#define PROTO_CLIENT_QUEUE_BYTES (2u << 20)
#define PROTO_CLIENT_STATS_PER_S 20 /* stats replies per client per second; more: client_limit */
/* ZMQ_MAXMSGSIZE of the broker's client socket: a frame over PROTO_MAX_MSG_BYTES but within this is
 * read and answered too_large (413); a larger one makes ZeroMQ drop the connection. */
#define PROTO_MAX_FRAME_BYTES (2u * PROTO_MAX_MSG_BYTES)

/* ---- message types ---------------------------------------------------------------------------- */
typedef enum {
    PROTO_T_NONE = 0,
    PROTO_T_HELLO,       /* client -> broker: optional greeting; answered by welcome */
    PROTO_T_WELCOME,     /* broker -> client */
    PROTO_T_SUBMIT,      /* client -> broker: a generation request */
    PROTO_T_CANCEL,      /* client -> broker (id), broker -> worker (rid) */
    PROTO_T_STATS,       /* client -> broker: asks for stats_reply */
    PROTO_T_STATS_REPLY, /* broker -> client */
    PROTO_T_TOKEN,       /* worker -> broker (rid), broker -> client (id) */
    PROTO_T_DONE,        /* worker -> broker (rid), broker -> client (id): the request's end */
    PROTO_T_ERROR,       /* any direction: a request (id/rid) or the link (neither) failed */
    PROTO_T_HB,          /* heartbeat, both links, both directions */
    PROTO_T_READY,       /* worker -> broker: I exist, with this many slots */
    PROTO_T_CREDIT,      /* worker -> broker: this many more slots are free */
    PROTO_T_REQUEST,     /* broker -> worker: run this (rid) */
    PROTO_T_DISCONNECT,  /* broker -> worker: I do not know you; reconnect and send ready */
    PROTO_T_COUNT
} proto_type;

/* ---- error codes carried by error frames (HTTP-like numbers, stable) -------------------------- */
typedef enum {
    PROTO_CODE_BAD_REQUEST = 400,         /* undecodable message or invalid field */
    PROTO_CODE_DUPLICATE_ID = 409,        /* submit with an id already live for this client */
    PROTO_CODE_TOO_LARGE = 413,           /* message over a limit */
    PROTO_CODE_INVALID_REQUEST = 422,     /* the engine refused it (e.g. prompt longer than context) */
    PROTO_CODE_UNSUPPORTED_VERSION = 426, /* "v" is not one the receiver speaks */
    PROTO_CODE_OVERLOADED = 429,          /* the broker's queue is full: retry later */
    PROTO_CODE_INTERNAL = 500,
    PROTO_CODE_WORKER_LOST = 502,         /* the worker running the request died */
    PROTO_CODE_SHUTTING_DOWN = 503,       /* the broker is stopping */
    PROTO_CODE_TIMEOUT = 504,             /* the request's queue or total deadline passed */
} proto_code;

/* ---- reasons: the specific cause carried by an error frame's "reason" (stable names) ------------ */
typedef enum {
    PROTO_R_NONE = 0,
    PROTO_R_MALFORMED,          /* not msgpack, truncated, trailing bytes, nested too deep, empty */
    PROTO_R_NOT_MAP,            /* the top object is not a map */
    PROTO_R_TOO_LARGE,          /* frame over PROTO_MAX_MSG_BYTES or more than PROTO_MAX_OBJECTS */
    PROTO_R_UNKNOWN_TYPE,       /* "t" missing, not a string, or not a known type */
    PROTO_R_BAD_VERSION,        /* "v" missing or not PROTO_VERSION */
    PROTO_R_NOT_CLIENT_MESSAGE, /* a known type a client may not send (worker-link, replies) */
    PROTO_R_UNKNOWN_FIELD,      /* a key the type does not have */
    PROTO_R_DUPLICATE_FIELD,    /* a key twice */
    PROTO_R_MISSING_FIELD,      /* a required key absent */
    PROTO_R_WRONG_TYPE,         /* a value of the wrong msgpack type */
    PROTO_R_NOT_FINITE,         /* NaN or an infinity in a number field */
    PROTO_R_OUT_OF_RANGE,       /* a number outside its range */
    PROTO_R_TOO_LONG,           /* a string longer than its limit */
    PROTO_R_EMPTY,              /* a string shorter than its minimum (e.g. an empty stop string) */
    PROTO_R_TOO_MANY,           /* an array with more entries than its limit */
    PROTO_R_INVALID_UTF8,       /* a str field that is not UTF-8 */
    PROTO_R_BAD_ID,             /* a request id that is neither u64 nor 1..64 bytes of UTF-8 */
    PROTO_R_PROMPT_CHOICE,      /* not exactly one of prompt / prompt_ids */
    PROTO_R_EMPTY_PROMPT,       /* prompt "" or prompt_ids [] */
    PROTO_R_PROMPT_TOO_LONG,    /* the prompt does not fit the worker's context */
    PROTO_R_TOKEN_OUT_OF_RANGE, /* a token id >= the model's vocabulary */
    PROTO_R_MAX_TOKENS_OVER_CONTEXT, /* max_tokens larger than the context */
    PROTO_R_DUPLICATE_ID,       /* the id is live for this client */
    PROTO_R_QUEUE_FULL,         /* overloaded: the queue is full */
    PROTO_R_CLIENT_LIMIT,       /* overloaded: this client has too many requests in flight */
    PROTO_R_QUEUE_TIMEOUT,      /* waited longer than the queue deadline */
    PROTO_R_REQUEST_TIMEOUT,    /* ran longer than the total deadline */
    PROTO_R_WORKER_LOST,        /* the request could not be moved to a live worker */
    PROTO_R_NO_WORKER,          /* no worker connected for too long */
    PROTO_R_SHUTTING_DOWN,
    PROTO_R_INTERNAL,
    PROTO_R_INVALID_REQUEST,    /* the engine refused it for another reason */
    PROTO_R_MODEL_LOAD_FAILED,  /* a worker cannot load the model: bad files or settings (it will not
                                   get better by restarting) */
    PROTO_R_WORKER_START_FAILED, /* a worker could not start for a reason that may pass (memory) */
    PROTO_R_OVER_CREDIT,        /* a worker was given a request beyond the credit it announced */
    PROTO_R_COUNT
} proto_reason;

/* ---- finish reasons of a done frame ------------------------------------------------------------ */
typedef enum {
    PROTO_FINISH_LENGTH = 0, /* max_tokens reached, or the context is full */
    PROTO_FINISH_STOP,       /* a stop string matched (excluded from text) */
    PROTO_FINISH_EOS,        /* the model emitted <|endoftext|> */
    PROTO_FINISH_CANCELLED,
    PROTO_FINISH_ERROR,      /* see "message" */
    PROTO_FINISH_COUNT
} proto_finish;

/* stats_reply "error_reasons": error frames sent to clients, by reason (index: proto_reason). */
typedef struct {
    uint64_t n[PROTO_R_COUNT];
} proto_reason_counts;

/* ---- priorities of a submit (PROTOCOL.md, "Priorities") --------------------------------------- */
typedef enum {
    PROTO_PRIORITY_INTERACTIVE = 0, /* the default: a person waits for it; admitted and prefilled first */
    PROTO_PRIORITY_BULK,            /* a batch job: runs in what interactive requests leave */
    PROTO_PRIORITY_COUNT
} proto_priority;

/* ---- decode status (negative) -------------------------------------------------------------------- */
typedef enum {
    PROTO_OK = 0,
    PROTO_E_TOO_LARGE = -1,     /* longer than PROTO_MAX_MSG_BYTES, or too many objects */
    PROTO_E_MALFORMED = -2,     /* not msgpack, truncated, trailing bytes, too deep */
    PROTO_E_NOT_MAP = -3,       /* the top object is not a map */
    PROTO_E_VERSION = -4,       /* "v" missing or not PROTO_VERSION */
    PROTO_E_TYPE = -5,          /* "t" missing or unknown */
    PROTO_E_FIELD = -6,         /* unknown, duplicate, mistyped, out-of-range or missing field */
    PROTO_E_NOMEM = -7,
} proto_status;

/* ---- fields: one bit each in proto_msg.has -------------------------------------------------------- */
typedef enum {
    PF_ID, PF_RID, PF_PROMPT, PF_PROMPT_IDS, PF_RESUME_IDS, PF_MAX_TOKENS, PF_TEMPERATURE, PF_TOP_K,
    PF_TOP_P, PF_MIN_P, PF_REPETITION_PENALTY, PF_PRESENCE_PENALTY, PF_FREQUENCY_PENALTY, PF_SEED,
    PF_LOGIT_BIAS, PF_STOP, PF_STREAM, PF_LOGPROBS, PF_IGNORE_EOS, PF_ALLOW_SPECIAL, PF_INDEX,
    PF_TOKEN, PF_TEXT, PF_LOGPROB, PF_FINISH, PF_TOKENS, PF_USAGE, PF_TIMINGS, PF_CODE, PF_MESSAGE,
    PF_NAME, PF_PID, PF_SLOTS, PF_N_CTX, PF_CREDIT, PF_RUNNING, PF_WAITING, PF_STEPS,
    PF_TOKENS_GENERATED, PF_WORKERS, PF_MAX_QUEUE, PF_QUEUE, PF_REQUESTS_TOTAL, PF_TOKENS_TOTAL,
    PF_ERRORS_TOTAL, PF_OVERLOADED_TOTAL, PF_TOKENS_PER_S, PF_TTFT_MS, PF_ITL_MS, PF_UPTIME_S,
    PF_WORKER_LIST, PF_REASON, PF_FIELD, PF_TTFT_HIST, PF_ITL_HIST, PF_TOTAL_HIST, PF_FINGERPRINT, PF_SECRET,
    PF_RECENT, PF_KV, PF_TOP_LOGPROBS, PF_TOP, PF_TOTALS, PF_ERROR_REASONS, PF_QUEUE_HIST,
    PF_PRIORITY,
    PF_COUNT
} proto_field_id;
/* One bit per field in proto_msg.has. There are more than 64 fields, so the set is 128 bits wide (a
 * GCC/Clang extension, on every target we build for). */
__extension__ typedef unsigned __int128 proto_fields;
#define PROTO_HAS(f) ((proto_fields)1 << (f))
_Static_assert(PF_COUNT <= 128, "proto_msg.has holds at most 128 field bits");

typedef struct {
    const char *ptr; /* not NUL-terminated; NULL only when len == 0 */
    uint32_t len;
} proto_str;

typedef struct {
    uint8_t is_str; /* 1: str is the id; 0: num is */
    uint64_t num;
    proto_str str;  /* 1..PROTO_MAX_ID_BYTES bytes of UTF-8 */
} proto_cid;

typedef struct {
    int32_t id;
    float bias; /* -inf bans the token */
} proto_bias;

typedef struct {
    double p50, p90, p99; /* milliseconds */
} proto_pct;

/* One entry of a token frame's "top": a token, its log-probability under the model's distribution
 * (log-softmax of the logits after logit_bias and penalties, temperature 1, no filters) and its
 * bytes (raw: a token need not be UTF-8 on its own). */
typedef struct {
    int32_t id;
    float logprob;
    proto_str bytes;
} proto_top;

/* stats_reply "totals": counters since the broker started. */
typedef struct {
    uint64_t prompt_tokens;   /* prompt tokens of requests that ended with done */
    uint64_t replays;         /* requests moved off a lost worker */
    uint64_t worker_restarts; /* local worker processes restarted */
    uint64_t finish[PROTO_FINISH_COUNT]; /* final frames to clients: done by finish reason, error
                                            frames for a request as PROTO_FINISH_ERROR */
} proto_totals;

/* Latency histograms of stats_reply: n[i] counts samples in (bound[i-1], bound[i]] ms, the last
 * bucket everything above PROTO_HIST_BOUNDS_MS's last bound; sum_ms is the samples' sum. On the
 * wire a map from the bound ("1", "2", ..., "60000", "inf") to the count, and "sum" (absent from
 * older brokers: 0). Since the broker started. */
#define PROTO_HIST_BUCKETS 16
#define PROTO_HIST_BOUNDS_MS {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000}
typedef struct {
    uint64_t n[PROTO_HIST_BUCKETS];
    double sum_ms;
} proto_hist;

/* stats_reply "recent": what happened in the last window_s seconds (PROTO_RECENT_WINDOW_S, or
 * less just after start), beside the since-start totals. */
#define PROTO_RECENT_WINDOW_S 60
typedef struct {
    double window_s;
    uint64_t requests, tokens, errors;
} proto_recent;

/* A worker's KV cache (hb "kv", stats_reply worker entries): pages of 16 positions, and the prefix
 * cache's prompt tokens looked up / found since the worker started. */
typedef struct {
    int32_t pages, used, cached;  /* total; held by running requests; kept for reuse (evictable) */
    uint64_t lookup_tokens, hit_tokens;
} proto_kv_info;

typedef struct {
    proto_str name;
    int32_t pid;       /* 0 if unknown */
    int32_t slots;     /* announced capacity */
    int32_t credit;    /* free slots the broker may still fill */
    int32_t running;   /* requests the broker has given it and not seen end */
    uint8_t local;     /* spawned and supervised by this broker */
    uint64_t tokens;   /* tokens it generated since it connected */
    proto_kv_info kv;  /* from its last heartbeat (zeros before the first) */
} proto_worker_info;

typedef struct {
    proto_type type;
    uint32_t v;          /* protocol version (PROTO_VERSION once decoded) */
    proto_fields has;    /* PROTO_HAS() bits of the fields present */

    proto_cid id;        /* the client's request id (client link) */
    uint64_t rid;        /* the broker's request id (worker link) */

    /* submit / request */
    proto_str prompt;              /* UTF-8 text, or ... */
    const int32_t *prompt_ids;     /* ... token ids (exactly one of the two) */
    uint32_t n_prompt_ids;
    const int32_t *resume_ids;     /* request only: tokens already streamed (replay) */
    uint32_t n_resume_ids;
    int32_t max_tokens;            /* 1..PROTO_MAX_MAX_TOKENS */
    float temperature;             /* >= 0; 0 = greedy */
    int32_t top_k;                 /* 0 = off */
    float top_p;                   /* (0, 1]; 1 = off */
    float min_p;                   /* [0, 1]; 0 = off */
    float repetition_penalty;      /* > 0; 1 = off */
    float presence_penalty;        /* 0 = off */
    float frequency_penalty;       /* 0 = off */
    uint64_t seed;
    const proto_bias *logit_bias;
    uint32_t n_logit_bias;
    proto_str stop[PROTO_MAX_STOPS];
    uint32_t n_stop;
    uint8_t stream;                /* submit: send token frames (default 1) */
    uint8_t logprobs;              /* token frames carry logprob */
    uint8_t ignore_eos;
    uint8_t allow_special;         /* "<|endoftext|>" in the prompt is the special token */
    int32_t top_logprobs;          /* optional (PF_TOP_LOGPROBS): token frames carry "top" with the
                                      sampled token and this many (0..5) most likely ones */
    proto_priority priority;       /* "interactive" (default) or "bulk" */

    /* token / done */
    int32_t index;                 /* generated token index, from 0 */
    int32_t token;
    proto_str text;                /* token: the new text piece; done: the whole text (raw bytes) */
    float logprob;
    const proto_top *top;          /* token, optional: the sampled token, then the top alternatives */
    uint32_t n_top;
    proto_finish finish;
    const int32_t *tokens;         /* done: generated ids */
    uint32_t n_tokens;
    int32_t prompt_tokens, completion_tokens;      /* done: "usage" */
    int32_t cached_tokens;                         /* done: "usage": prompt tokens from the prefix cache */
    double queue_ms, ttft_ms, total_ms;            /* done: "timings" */

    /* error */
    int32_t code;                  /* proto_code */
    proto_str message;
    proto_str reason;              /* optional: a proto_reason name */
    proto_str field;               /* optional: the field at fault */

    /* decoder output on failure: the specific cause and the field (a static key name, fail_key for
     * an unknown key, or NULL) */
    proto_reason fail;
    const char *fail_field;
    char fail_key[65];             /* an unknown key, printable ASCII ('?' for other bytes) */

    /* hello / welcome / ready / credit / hb */
    proto_str name;                /* peer name (client, server or worker) */
    int32_t pid;
    int32_t slots;                 /* ready: capacity */
    proto_str secret;              /* ready, optional: the broker's per-start secret (local workers) */
    int32_t n_ctx;                 /* ready: positions per slot */
    proto_str fingerprint;         /* ready: numerics fingerprint ("f32/avx2/<ckpt hash>"); replays
                                      go only to a worker with the same one */
    int32_t credit;                /* credit: newly free slots (>= 1) */
    int32_t running, waiting;      /* hb (worker): engine load */
    uint64_t steps, tokens_generated;
    proto_kv_info kv;              /* hb (worker): KV pages and prefix cache */

    /* welcome / stats_reply */
    int32_t workers;               /* welcome: workers ready; stats: entries below */
    int32_t max_queue, queue;
    uint64_t requests_total, tokens_total, errors_total, overloaded_total;
    double tokens_per_s, uptime_s;
    proto_pct ttft_pct, itl_pct;
    proto_hist ttft_hist, itl_hist, total_hist; /* stats_reply, optional */
    proto_hist queue_hist;         /* stats_reply, optional: submit -> slot */
    proto_totals totals;           /* stats_reply, optional */
    proto_reason_counts error_reasons; /* stats_reply, optional */
    proto_recent recent;                        /* stats_reply, optional */
    const proto_worker_info *worker_list;
    uint32_t n_worker_list;

    msgpack_zone *zone;            /* decoder-owned arrays (NULL for encoded messages) */
} proto_msg;

/* Zeroes m and sets the type's defaults (submit: max_tokens 16, temperature 0 (greedy), top_p 1,
 * repetition_penalty 1, stream 1; everything else 0 / off), v = PROTO_VERSION, has = 0. */
void proto_msg_init(proto_msg *m, proto_type type);

/* Frees the decoder's zone; safe on an encoded or already destroyed message. */
void proto_msg_destroy(proto_msg *m);

/* Decodes len bytes. PROTO_OK with m filled (release with proto_msg_destroy), or a negative
 * proto_status with a NUL-terminated message in err. Even on failure, m->type and m->id / m->rid
 * are filled when the top map names a known type and a well-formed id, so an error reply can
 * address the request (m->has tells which); m needs proto_msg_destroy() either way. */
int proto_decode(proto_msg *m, const void *buf, size_t len, char *err, size_t errlen);

/* Appends m's msgpack encoding to sb. 0, or -1 with err if m breaks a limit or lacks a
 * required field (so nothing we send is something we would refuse). sb is unchanged on failure. */
int proto_encode(const proto_msg *m, msgpack_sbuffer *sb, char *err, size_t errlen);

/* Name tables. Unknown values give "?". */
const char *proto_type_name(proto_type t);
const char *proto_code_name(int code);
const char *proto_finish_name(proto_finish f);
/* "interactive", "bulk" ("?" otherwise); proto_priority_parse: the priority named by s[0..len), or -1. */
const char *proto_priority_name(proto_priority p);
int proto_priority_parse(const char *s, size_t len);
const char *proto_status_name(int status);
/* The wire error code for a decode status (PROTO_CODE_BAD_REQUEST, _TOO_LARGE, _UNSUPPORTED_VERSION). */
int proto_status_code(int status);

/* The stable name of a reason ("?" if unknown), and the reason of a decode status. */
const char *proto_reason_name(proto_reason r);
/* The reason of a name (as sent in an error frame's "reason"); PROTO_R_NONE if unknown. */
proto_reason proto_reason_from_name(const char *name, size_t len);
/* The error code that goes with a reason (e.g. PROTO_R_QUEUE_FULL -> PROTO_CODE_OVERLOADED). */
int proto_reason_code(proto_reason r);

/* The request id as text, for logs and JSON ("42" or the string), NUL-terminated into buf. */
const char *proto_cid_str(const proto_cid *id, char *buf, size_t cap);
int proto_cid_equal(const proto_cid *a, const proto_cid *b);

/* The default endpoints: ipc://<runtime dir>/{client,worker}.sock, where the runtime dir is
 * $GPT2D_RUNTIME_DIR, else $XDG_RUNTIME_DIR/gpt2d, else /tmp/gpt2d-<uid>. dir (may be NULL)
 * receives the directory. Returns buf, or NULL if it does not fit. */
const char *proto_default_endpoint(int worker_side, char *buf, size_t cap, char *dir, size_t dircap);

/* 1 if key (len bytes) is a field of message type t (not "t" or "v"), else 0. */
int proto_type_has_field(proto_type t, const char *key, size_t len);

/* Checks that s is well-formed UTF-8 (no overlongs, no surrogates). 1 yes, 0 no. */
int proto_utf8_valid(const char *s, size_t len);

/* Copies at most cap-1 bytes of s into out as valid UTF-8 (NUL-terminated): a byte that does not
 * start a valid character becomes '?', and a character that would not fit whole is left out.
 * Returns the length written. For quoting untrusted bytes in messages that must encode. */
size_t proto_utf8_sanitize(const char *s, size_t len, char *out, size_t cap);

#endif
