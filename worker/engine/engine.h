/* engine.h — continuous-batching GPT-2 inference: submit / step / cancel, tokens out by callback.
 *
 * No I/O and no threads of its own beyond the model's compute pool. One engine owns the model, the
 * tokenizer, a KV-cache arena of n_slots slots of n_ctx positions, and a FIFO of waiting requests.
 * engine_step() builds ONE forward batch: one decode token for every running request plus prefill
 * chunks of waiting/prefilling requests (first come, first served while a slot is free), up to
 * max_batch_tokens tokens; it then samples, stops, and reports through the callbacks:
 *   on_token(user, req_id, index, token, piece, piece_len, logprob)  for every generated token
 *     (piece: the newly complete UTF-8 text; stop-string candidates are held back);
 *   on_done(user, req_id, result)                                    exactly once per accepted request.
 * A request's tokens and logits are bit-for-bit the same whatever else is batched with it.
 * engine_submit() refuses a request at once (returns < 0, fills err) for invalid parameters or a
 * prompt that cannot fit the context. engine_cancel() ends a request within one step (on_done with
 * finish "cancelled"; a waiting request ends at once). Not thread-safe: one thread drives an engine,
 * and callbacks must not call back into it. Every generated token gets one on_token, EOS included
 * (its piece carries only text held back until then, never "<|endoftext|>"); the concatenated
 * pieces equal the result's text. */
#ifndef GPT2D_ENGINE_H
#define GPT2D_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "sampler.h"

#define ENGINE_MAX_STOPS 8      /* stop strings per request */
#define ENGINE_MAX_STOP_LEN 64  /* bytes per stop string */

typedef struct {
    const char *model_dir;
    int n_slots;           /* concurrent requests (KV slots); 0: from kv_budget_mb, else 64 */
    size_t kv_budget_mb;   /* with n_slots == 0: as many slots of n_ctx positions as fit in this */
    int n_ctx;             /* positions per slot; 0 = the model's n_ctx */
    int max_batch_tokens;  /* tokens per step (decode + prefill chunks); default 128. Lower keeps
                              inter-token latency flat while prompts prefill; higher fills faster */
    int n_threads;         /* compute threads; 0 = all cores */
    int use_blas;          /* 0 (default): batch-invariant kernels; 1: OpenBLAS sgemm for multi-row
                              matmuls, not batch-invariant (the baseline invariance is measured against) */
} engine_config;

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
    int allow_special;       /* `<|endoftext|>` in prompt text is the special token */
} engine_request;

typedef struct {
    engine_finish finish;
    const char *error;        /* message when finish == ENGINE_FINISH_ERROR */
    int prompt_tokens;
    int completion_tokens;
    double queue_ms;          /* submit -> admitted (slot given) */
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
    int n_slots, slots_used, n_waiting, n_running;
    size_t kv_bytes;          /* arena size */
    uint64_t steps, tokens_generated, tokens_prefilled;
} engine_stats;

typedef struct engine engine;

/* Loads the model and tokenizer and allocates everything the step loop needs.
 * NULL with err on failure. */
engine *engine_new(const engine_config *cfg, const engine_callbacks *cb, char *err, size_t errlen);
void engine_free(engine *e); /* NULL-safe */

/* Replaces the callbacks (e.g. to reuse one engine for several runs); only while it is idle. */
void engine_set_callbacks(engine *e, const engine_callbacks *cb);

/* Queues a request under req_id (unique among live requests). 0 on success; -1 with err. */
int engine_submit(engine *e, uint64_t req_id, const engine_request *r, char *err, size_t errlen);

/* Cancels a live request: 0, or -1 if req_id is unknown. on_done fires (now if waiting, else within
 * the next step). */
int engine_cancel(engine *e, uint64_t req_id);

/* Runs one batch. Returns the number of tokens processed (0 when idle), -1 on internal error. */
int engine_step(engine *e);

int engine_has_work(const engine *e);
void engine_get_stats(const engine *e, engine_stats *s);
const char *engine_finish_name(engine_finish f); /* "length", "stop", "eos", "cancelled", "error" */

#endif
