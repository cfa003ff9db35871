/* engine.h — continuous-batching GPT-2 inference: submit / step / cancel, tokens out by callback.
 *
 * No I/O and no threads of its own beyond the model's compute pool. One engine borrows the weights
 * and the tokenizer (both immutable: several engines may share them, and they must outlive it) and
 * owns a forward-pass state, a paged KV cache with a prefix cache (kv.h), and a queue of waiting
 * requests.
 * Admission (interactive before bulk, first come first served within each): the head of the queue runs once a KV sequence is free
 * (max_running) and the cache can reserve every page the request can reach (prompt + max_tokens,
 * capped at the context), less the pages of its longest cached prompt prefix, which it shares and
 * does not compute again (result.cached_tokens). Otherwise it waits until a running request ends:
 * a running request never fails or stalls for memory. It also waits (a few steps) while a running
 * request computes the next page of the prefix it shares, to share that page rather than compute it. Output is bit-identical with or without
 * prefix-cache hits (the kernels are batch-invariant, so cached K/V are what a prefill computes).
 * engine_step() builds ONE forward batch: one decode token for every running request plus prefill
 * chunks of waiting/prefilling requests (admitted as above), then samples, stops, and reports through the callbacks.
 * Order: interactive requests before bulk ones (engine_request.priority), first come first served
 * within a priority, both for the free slots and for the prefill chunks; a step that prefills an
 * interactive request carries no bulk prefill (it stays short). The step's prefill budget
 * adapts to how many requests decode (D): engine_prefill_budget() below; chunking never changes
 * a request's output (the kernels are batch-invariant). The callbacks:
 *   on_token(user, req_id, index, token, piece, piece_len, logprob)  for every generated token
 *     (piece: the newly complete UTF-8 text; stop-string candidates are held back);
 *   on_done(user, req_id, result)                                    exactly once per accepted request.
 * A request's tokens and logits are bit-for-bit the same whatever else is batched with it.
 * Preemption (cfg.should_yield): a long step must not hold back a person. A step that prefills no
 * interactive request runs in units: its layers, then its logits in a few pieces (the lm_head of a
 * large batch is several layers' worth); after each unit but the last the engine asks should_yield
 * (the worker: "is a message waiting?"). On 1, engine_step returns with the step SUSPENDED (its
 * batch, the unit it reached, its half-computed logits, its requests' KV pages kept). The caller
 * handles its input (engine_submit and engine_cancel work as usual) and calls engine_step again,
 * which first runs one EXPRESS step if there is interactive work outside the suspended step (waiting
 * interactive requests, admitted and prefilled; interactive requests running that are not in it),
 * on a second set of activations, reporting its tokens; then (or at once when there is none) the
 * suspended step resumes where it stopped. Between steps too, while bulk requests run, interactive
 * prefill goes to an express step before the next step, which then carries none (so it can always
 * yield). At most one express step runs between two units of the step's, so bulk work always
 * advances. An express step touches only its own requests' KV pages (admission never takes a page a
 * sequence holds, and pages are shared only once published, which the suspended step's are not
 * yet); an express admission does not wait for a prefix page another request is computing: it
 * computes its own copy. A cancel of a request in the suspended step takes effect when that step
 * completes (no token, on_done "cancelled"). Every request's tokens and logits are bit-for-bit the
 * same suspended, expressed or neither. Cost: the second activations (max_batch tokens) and logits.
 * engine_submit() refuses a request at once for invalid parameters or a prompt that cannot fit the
 * context, with a typed error (engine_error) naming the field at fault and a message. engine_cancel() ends a request within one step (on_done with
 * finish "cancelled"; a waiting request ends at once). Not thread-safe: one thread drives an engine,
 * and callbacks must not call back into it. Every generated token gets one on_token, EOS included
 * (its piece carries only text held back until then, never "<|endoftext|>"); the concatenated
 * pieces equal the result's text. */
#ifndef GPT2D_ENGINE_H
#define GPT2D_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "bpe.h"
#include "eopt.h"
#include "kv.h"
#include "sampler.h"
#include "weights.h"

#define ENGINE_MAX_STOPS 8      /* stop strings per request */
#define ENGINE_MAX_STOP_LEN 64  /* bytes per stop string */
#define ENGINE_MAX_TOP 5        /* top_n alternatives per token */

typedef struct {
    int max_running;       /* requests running at once (KV sequences); 0: n_slots if set, else 256 */
    int n_slots;           /* compatibility (--slots N): max_running N and, without kv_budget_mb, a KV
                              cache of N whole contexts (today's slot arena's memory) */
    size_t kv_budget_mb;   /* KV cache size; 0: n_slots (else 64) whole contexts of n_ctx positions.
                              Must hold at least one whole context */
    int n_ctx;             /* positions a request may reach; 0 = the model's n_ctx */
    int max_batch_tokens;  /* tokens per step (decode + prefill chunks); default 512: the prefill
                              chunk while nothing decodes */
    int prefill_min_tokens;/* the prefill budget's floor while many decode; default 64 */
    int prefill_half;      /* the prefill budget halves at this many decoding requests; default 16;
                              < 0: off (every step filled up to max_batch_tokens) */
    int n_threads;         /* compute threads; 0 = all cores */
    int use_blas;          /* 0 (default): batch-invariant kernels; 1: OpenBLAS sgemm for multi-row
                              matmuls, not batch-invariant (the baseline invariance is measured against);
                              needs weights loaded with keep_checkpoint */
    int prefix_cache_off;  /* 1: no prefix cache (--prefix-cache off); it is on by default */
    kv_hash_fn prefix_hash;/* tests only: the prefix cache's page hash (NULL: kv_hash_default) */
    int kv_dtype;          /* kv_dtype (kv.h): KV_F32 (0, the default), KV_F16, KV_BF16: half the KV bytes,
                              different numerics (in the fingerprint), invariant within the dtype;
                              -1: an unknown name (engine_new refuses it) */
    int (*should_yield)(void *user); /* preemption (see "Preemption" above): asked after each layer
                              (and logits piece) of a step that prefills no interactive request; 1
                              suspends the step there. Keep it cheap (about n_layer + 4 calls a
                              step). NULL: never */
    void *yield_user;      /* should_yield's argument */
} engine_config;

/* Why engine_submit refused a request, or engine_step failed (0 = none). */
typedef enum {
    ENGINE_OK = 0,
    ENGINE_E_PARAM = -1,          /* a parameter out of range; field names it */
    ENGINE_E_EMPTY_PROMPT = -2,
    ENGINE_E_PROMPT_TOO_LONG = -3,/* prompt (+ resumed tokens) do not fit the context */
    ENGINE_E_TOKEN_RANGE = -4,    /* a token id outside the vocabulary (field: prompt_ids, resume_ids) */
    ENGINE_E_BAD_UTF8 = -5,       /* prompt text is not UTF-8 */
    ENGINE_E_DUPLICATE_ID = -6,   /* req_id is already live */
    ENGINE_E_NO_MEMORY = -7,
    ENGINE_E_INTERNAL = -8,       /* engine_step: the forward pass refused a batch (a bug) */
    ENGINE_E_OVER_CONTEXT = -9,   /* fit_ctx: prompt + max_tokens do not fit the context (field max_tokens) */
} engine_error;
#define ENGINE_N_ERRORS 10

typedef struct {
    engine_error code;
    const char *field;            /* the request field at fault ("prompt", "max_tokens", "top_p", ...), or NULL */
    char message[256];            /* one sentence for a person */
} engine_refusal;

/* "bad_parameter", "empty_prompt", "prompt_too_long", "token_out_of_range", "bad_utf8", "duplicate_id",
 * "no_memory", "internal" ("ok" for 0; "unknown" outside the enum). */
const char *engine_error_name(engine_error e);

typedef enum {
    ENGINE_FINISH_LENGTH = 0, /* max_tokens reached */
    ENGINE_FINISH_STOP,       /* a stop string matched */
    ENGINE_FINISH_EOS,        /* token 50256 */
    ENGINE_FINISH_CTX,        /* the context is full (reported as "length") */
    ENGINE_FINISH_CANCELLED,
    ENGINE_FINISH_ERROR,
} engine_finish;

typedef struct {
    const char *prompt;      /* UTF-8 text, or NULL when prompt_ids is given */
    size_t prompt_len;
    const int *prompt_ids;   /* token ids instead of text */
    int n_prompt_ids;
    const int *resume_ids;   /* tokens already generated (crash replay): fed as prompt, not re-emitted;
                                generation index continues at n_resume_ids, and text, stop-string
                                hold-back and sampling continue exactly as in the first run */
    int n_resume_ids;
    int max_tokens;          /* >= 1; counts resumed tokens too (a replay resends the original
                                request plus resume_ids): n_resume_ids < max_tokens */
    sampler_params sampling;
    int n_stops;
    const char *stops[ENGINE_MAX_STOPS];
    int ignore_eos;
    int want_logprobs;
    int want_top;            /* on_top for every generated token: the sampled token's model logprob
                                and the top_n (0..ENGINE_MAX_TOP) most likely tokens */
    int top_n;
    int allow_special;       /* `<|endoftext|>` in prompt text is the special token */
    int priority;            /* ENGINE_PRIORITY_INTERACTIVE (0, default) or ENGINE_PRIORITY_BULK */
    int fit_ctx;             /* 1: refuse at submit, with an error naming max_tokens, when the prompt
                                plus max_tokens cannot fit the context (the service's rule); 0: stop
                                with finish length where the context ends */
} engine_request;

#define ENGINE_PRIORITY_INTERACTIVE 0 /* admitted and prefilled ahead of ... */
#define ENGINE_PRIORITY_BULK 1        /* ... these */
#define ENGINE_N_PRIORITIES 2

/* The prefill tokens a step may carry beside d decoding requests under cfg (defaults applied as
 * engine_new does), before the step's room (max(max_batch_tokens, n_slots) - d) caps it:
 *   max(prefill_min_tokens, max_batch_tokens * H / (H + d)),  H = prefill_half
 * so the whole step goes to prefill while nothing decodes (time to first token near the prefill
 * bound), half of it at H decoders, and at least prefill_min_tokens while many decode (their
 * inter-token latency bounded). With prefill_half < 0: max_batch_tokens - d (a fixed step). */
int engine_prefill_budget(const engine_config *cfg, int d);

typedef struct {
    engine_finish finish;
    const char *error;        /* message when finish == ENGINE_FINISH_ERROR */
    int prompt_tokens;
    int completion_tokens;
    int cached_tokens;        /* prompt (+ resumed) tokens whose K/V came from the prefix cache */
    double queue_ms;          /* submit -> admitted (KV reserved) */
    double ttft_ms;           /* submit -> first token */
    double total_ms;          /* submit -> done */
    const char *text;         /* the whole generated text (stop string excluded) */
    size_t text_len;
    const int *tokens;        /* generated ids */
} engine_result;

typedef struct {
    void (*on_token)(void *user, uint64_t req_id, int index, int token, const char *piece,
                     size_t piece_len, float logprob);
    void (*on_done)(void *user, uint64_t req_id, const engine_result *r);
    /* optional: the raw logits (V) a token is sampled from, before penalties (tests, debugging) */
    void (*on_logits)(void *user, uint64_t req_id, int index, const float *logits, int n_vocab);
    void *user;
} engine_callbacks;

typedef struct {
    int n_slots, slots_used;  /* max_running, and requests running (the worker's "slots") */
    int n_waiting, n_running;
    size_t kv_bytes;          /* the KV mapping (resident as pages are written) */
    kv_stats kv;              /* pages used / free / cached / reserved, prefix-cache lookups and hits */
    uint64_t steps, tokens_generated, tokens_prefilled; /* tokens_prefilled: computed, not cached */
    int last_decode, last_prefill; /* the last step's decode rows and prefill tokens */
    uint64_t suspends, express_steps; /* steps suspended by should_yield; express steps run */
} engine_stats;

typedef struct engine engine;

/* An engine over w and tok (borrowed: they must outlive it; tok has a word cache, so engines on
 * different threads need their own tokenizer); allocates everything the step loop
 * needs. NULL with err on failure. */
engine *engine_new(const gpt2_weights *w, bpe_tokenizer *tok, const engine_config *cfg,
                   const engine_callbacks *cb, char *err, size_t errlen);
void engine_free(engine *e); /* NULL-safe */

/* Replaces the callbacks (e.g. to reuse one engine for several runs); only while it is idle. */
void engine_set_callbacks(engine *e, const engine_callbacks *cb);

/* For requests with want_top, fn(cb.user, ...) is called just before that token's on_token with n
 * entries: the sampled token, then the top_n most likely (as sampler_top_logprobs() computes them). */
typedef void (*engine_top_fn)(void *user, uint64_t req_id, int index, const int *ids, const float *logprobs,
                              int n);
void engine_set_top_callback(engine *e, engine_top_fn fn);

/* Queues a request under req_id (unique among live requests). ENGINE_OK (0), or a negative
 * engine_error with *why filled (why may be NULL). */
int engine_submit(engine *e, uint64_t req_id, const engine_request *r, engine_refusal *why);

/* Cancels a live request: 0, or -1 if req_id is unknown. on_done fires (now if waiting, else within
 * the next step). */
int engine_cancel(engine *e, uint64_t req_id);

/* Runs one batch. Returns the number of tokens processed (0 when idle), or ENGINE_E_INTERNAL (every
 * running request then ends with finish "error"). With should_yield: runs an express step, or runs
 * (resumes) the step until it completes or is suspended again; a call that suspends returns 0 (and
 * engine_has_work stays 1): loop on engine_has_work, not on the return value. */
int engine_step(engine *e);
/* 1 while a step is suspended between layers (engine_step resumes it). */
int engine_suspended(const engine *e);

int engine_has_work(const engine *e);
/* The numerics fingerprint: the weights' (weights.h), with "+blas" after the kernel family in
 * OpenBLAS mode (whose bits depend on batching) and "+kvfp16" / "+kvbf16" for a half-precision KV cache. Into buf (GPT2_FINGERPRINT_MAX bytes suffice). */
const char *engine_fingerprint(const engine *e, char *buf, size_t cap);

/* The engine and weight settings named by option-table values (proto/eopt.h: gpt2d, gpt2d-worker and
 * gpt2-tool all parse that one table). */
void engine_options_apply(const eopt_values *v, engine_config *c, gpt2_weights_opts *wo);

int engine_n_vocab(const engine *e);   /* the model's vocabulary size */
int engine_n_ctx(const engine *e);     /* the context a request must fit */
const gpt2_weights *engine_weights(const engine *e);
void engine_get_stats(const engine *e, engine_stats *s);
/* Tests: kv_check on the engine's KV cache (its page ownership rules). 0, or -1 with err. */
int engine_kv_check(const engine *e, char *err, size_t errlen);
const char *engine_finish_name(engine_finish f); /* "length", "stop", "eos", "cancelled", "error" */

/* The bytes of token id (not NUL-terminated, *len set), or NULL if id is outside the vocabulary. */
const char *engine_token_bytes(const engine *e, int id, size_t *len);

#endif
