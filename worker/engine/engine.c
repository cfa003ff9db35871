/* engine.c — see engine.h. Sections: requests, submit/cancel, stop strings, the step. */
#include "engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpt2.h"
#include "kv.h"
#include "pool.h"

/* ---------------------------------------------------------------------------------------------
 * Requests. */

typedef enum { REQ_WAITING, REQ_PREFILL, REQ_DECODE } req_state;

typedef struct request {
    uint64_t id;
    req_state state;
    int slot;                   /* KV sequence, -1 while waiting */
    int cancelled;
    int *ids;                   /* (n_ctx + 1) prompt (+ resumed) ids, then generated ids */
    int n_prompt;               /* ids fed as prompt (prompt + resumed) */
    int n_ids;                  /* ids known: prompt + generated */
    int n_past;                 /* ids whose K/V are in its KV pages (cached ones included) */
    int n_cached;               /* of those, taken from the prefix cache */
    int n_resume;               /* generated index of the first new token */
    int priority;               /* ENGINE_PRIORITY_*: waiting and prefill order */
    int in_pass;                /* has rows in a pass under way (a suspended step): not reaped, not
                                   batched again until that pass completes */
    uint64_t admit_seq;         /* admission order (prefill order within a priority) */
    int n_gen;                  /* generated tokens (resumed included) */
    int max_gen;                /* stop at this n_gen */
    int user_prompt_tokens;     /* prompt tokens as the user gave them (usage) */
    sampler_params sampling;
    int ignore_eos, want_logprobs;
    int want_top, top_n;        /* on_top with top_n alternatives */
    int n_stops;
    char stops[ENGINE_MAX_STOPS][ENGINE_MAX_STOP_LEN + 1];
    int stop_len[ENGINE_MAX_STOPS];
    bpe_stream stream;
    char *text;                 /* generated text, complete UTF-8 */
    size_t text_len, text_cap;
    size_t emitted;             /* bytes of text already passed to on_token */
    double t_submit, t_admit, t_first;
    struct request *next;       /* waiting queue link (priority, then arrival) */
} request;

/* One forward batch and the model state that runs it: the step's pass, and the express pass that
 * runs interactive work while the step's is suspended between layers. */
typedef struct {
    gpt2_state *model;          /* the express pass's is a twin of the step's (gpt2_state_twin) */
    int *token, *pos, *slot, *out;  /* (max_batch) the batch's rows */
    request **req;              /* (max_batch) request of each logits row */
    float *logits;              /* (n_run, V) its own: a suspended step's are half computed */
    gpt2_batch b;               /* the batch over those arrays */
    int n_out;                  /* logits rows */
    int layer;                  /* units computed so far: blocks, then (yieldable) logits pieces */
    int yieldable;              /* may stop between units (cfg.should_yield) */
} engine_pass;

struct engine {
    engine_config cfg;
    engine_callbacks cb;
    engine_top_fn on_top;       /* optional: top logprobs of want_top requests */
    gpt2_state *model;          /* = step.model */
    const gpt2_weights *w;      /* borrowed */
    bpe_tokenizer *tok;         /* borrowed */
    kv_arena *kv;
    int n_vocab, n_ctx, max_batch;
    int n_run;                  /* max_running: KV sequences */
    int n_running;              /* requests holding one */
    size_t max_token_bytes;     /* longest token in bytes (text buffer sizing) */
    request **running;          /* (n_run) by KV sequence; NULL when free */
    request *wait_head, *wait_tail;
    int n_waiting;
    uint64_t admitted;          /* requests admitted so far (admit_seq) */
    int n_layer;
    int n_logit_parts;          /* a yieldable step computes its logits in this many column ranges */
    engine_pass step;           /* the step's pass */
    engine_pass express;        /* interactive work while step is suspended (only with should_yield) */
    int suspended;              /* step stopped between layers; engine_step resumes it */
    int expressed;              /* an express pass ran since the step's last layer: the step goes next */
    /* step scratch, sized at start-up */
    request **prefill;                        /* (n_run) prefilling requests, admission order */
    char *sampler_scratch;                    /* (threads, scratch_size): one per compute thread */
    size_t scratch_size;
    int *s_token;                             /* (n_run) sampled token of each logits row */
    float *s_logprob;                         /* (n_run) */
    int *s_top_id;                            /* (n_run, 1 + ENGINE_MAX_TOP) for want_top rows */
    float *s_top_lp;                          /* (n_run, 1 + ENGINE_MAX_TOP) */
    int *s_top_n;                             /* (n_run) entries in those rows */
    engine_stats stats;
};

#define ENGINE_DEFAULT_BATCH_TOKENS 512
#define ENGINE_DEFAULT_PREFILL_MIN 64
#define ENGINE_DEFAULT_PREFILL_HALF 16

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void request_free(request *r) {
    if (!r) return;
    free(r->ids);
    free(r->text);
    free(r);
}

/* ---------------------------------------------------------------------------------------------
 * Construction. */

/* The KV cache's pages: kv_budget_mb's worth, else n_slots (or 64) whole contexts. 0, or -1 with err
 * when the budget does not hold one whole context (a request that fits the context must fit). */
static int engine_kv_pages(const engine *e, const gpt2_config *mc, int *n_pages, char *err, size_t errlen) {
    size_t page_bytes = (size_t)mc->n_layer * 2 * KV_PAGE * mc->n_embd * kv_dtype_size((kv_dtype)e->cfg.kv_dtype);
    int ctx_pages = kv_pages_for(e->n_ctx);
    if (e->cfg.kv_budget_mb == 0) {
        *n_pages = (e->cfg.n_slots > 0 ? e->cfg.n_slots : 64) * ctx_pages;
        return 0;
    }
    size_t n = (e->cfg.kv_budget_mb << 20) / page_bytes;
    if (n < (size_t)ctx_pages) {
        snprintf(err, errlen, "engine: a KV budget of %zu MB holds %zu pages of %d positions; one context of %d "
                 "positions needs %d (%.1f MB)", e->cfg.kv_budget_mb, n, KV_PAGE, e->n_ctx, ctx_pages,
                 (double)ctx_pages * page_bytes / (1 << 20));
        return -1;
    }
    *n_pages = n > (1u << 30) ? 1 << 30 : (int)n;
    return 0;
}

/* The batch arrays of a pass for up to cap rows and n_out rows of V logits (its model is set by
 * the caller). 0 or -1. */
static int pass_alloc(engine_pass *p, int cap, int n_out, int V) {
    p->token = malloc(sizeof(int) * cap);
    p->pos = malloc(sizeof(int) * cap);
    p->slot = malloc(sizeof(int) * cap);
    p->out = malloc(sizeof(int) * cap);
    p->req = malloc(sizeof(request *) * cap);
    p->logits = malloc(sizeof(float) * (size_t)n_out * V);
    p->b = (gpt2_batch){0, p->token, p->pos, p->slot, p->out};
    return p->token && p->pos && p->slot && p->out && p->req && p->logits ? 0 : -1;
}

static void pass_free(engine_pass *p) {
    gpt2_state_free(p->model);
    free(p->token);
    free(p->pos);
    free(p->slot);
    free(p->out);
    free(p->req);
    free(p->logits);
    memset(p, 0, sizeof *p);
}

engine *engine_new(const gpt2_weights *w, bpe_tokenizer *tok, const engine_config *cfg,
                   const engine_callbacks *cb, char *err, size_t errlen) {
    const gpt2_config *mc = gpt2_weights_config(w);
    engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "engine: out of memory");
        return NULL;
    }
    e->cfg = *cfg;
    e->cb = *cb;
    e->w = w;
    e->tok = tok;
    if (e->cfg.max_batch_tokens <= 0) e->cfg.max_batch_tokens = ENGINE_DEFAULT_BATCH_TOKENS;
    if (e->cfg.prefill_min_tokens <= 0) e->cfg.prefill_min_tokens = ENGINE_DEFAULT_PREFILL_MIN;
    if (e->cfg.prefill_half == 0) e->cfg.prefill_half = ENGINE_DEFAULT_PREFILL_HALF;
    e->n_vocab = mc->n_vocab;
    e->n_ctx = cfg->n_ctx > 0 ? cfg->n_ctx : mc->n_ctx;
    if (e->n_ctx > mc->n_ctx) {
        snprintf(err, errlen, "engine: --ctx %d exceeds the model's context of %d", e->n_ctx, mc->n_ctx);
        goto fail;
    }
    if (cfg->kv_dtype < KV_F32 || cfg->kv_dtype > KV_BF16) {
        snprintf(err, errlen, "engine: --kv-dtype must be fp32, fp16 or bf16");
        goto fail;
    }
    e->n_run = cfg->max_running > 0 ? cfg->max_running : cfg->n_slots > 0 ? cfg->n_slots : 256;
    kv_config kc = {.n_layer = mc->n_layer, .n_ctx = e->n_ctx, .n_embd = mc->n_embd, .n_head = mc->n_head,
                    .max_seqs = e->n_run, .prefix_cache = !cfg->prefix_cache_off, .hash = cfg->prefix_hash,
                    .dtype = (kv_dtype)cfg->kv_dtype};
    if (engine_kv_pages(e, mc, &kc.n_pages, err, errlen) != 0) goto fail;
    /* every running request contributes one decode token, so a step must hold at least n_run */
    e->max_batch = e->cfg.max_batch_tokens > e->n_run ? e->cfg.max_batch_tokens : e->n_run;
    if (bpe_vocab_size(e->tok) > e->n_vocab) {
        snprintf(err, errlen, "engine: the tokenizer has %d tokens but the model only %d",
                 bpe_vocab_size(e->tok), e->n_vocab);
        goto fail;
    }
    e->model = e->step.model = gpt2_state_new(w, e->max_batch, e->n_ctx, cfg->n_threads, err, errlen);
    if (!e->model) goto fail;
    if (cfg->use_blas && gpt2_use_blas(e->model) != 0) {
        snprintf(err, errlen, "engine: OpenBLAS mode needs the weights loaded with their checkpoint kept");
        goto fail;
    }
    e->n_layer = mc->n_layer;
    /* the lm_head is V / (12 C) layers' worth of work (a block: 12 C^2 per row): about one per piece */
    e->n_logit_parts = (mc->n_vocab + 6 * mc->n_embd) / (12 * mc->n_embd);
    if (e->n_logit_parts < 1) e->n_logit_parts = 1;
    if (e->n_logit_parts > 8) e->n_logit_parts = 8;
    if (pass_alloc(&e->step, e->max_batch, e->n_run, e->n_vocab) != 0) goto oom;
    if (cfg->should_yield) { /* a second set of activations for the express pass, the same threads */
        e->express.model = gpt2_state_twin(e->model, e->max_batch, err, errlen);
        if (!e->express.model) goto fail;
        if (pass_alloc(&e->express, e->max_batch, e->n_run, e->n_vocab) != 0) goto oom;
    }
    e->kv = kv_new(&kc, err, errlen);
    if (!e->kv) goto fail;
    for (int id = 0; id < bpe_vocab_size(e->tok); id++) {
        size_t len = 0;
        bpe_token_bytes(e->tok, id, &len);
        if (len > e->max_token_bytes) e->max_token_bytes = len;
    }
    int S = e->n_run;
    e->running = calloc(S, sizeof *e->running);
    e->prefill = malloc(sizeof(request *) * S);
    e->scratch_size = (sampler_scratch_size(e->n_vocab) + 63) / 64 * 64;
    e->sampler_scratch = malloc(e->scratch_size * pool_threads(gpt2_pool(e->model)));
    e->s_token = malloc(sizeof(int) * S);
    e->s_logprob = malloc(sizeof(float) * S);
    e->s_top_id = malloc(sizeof(int) * S * (1 + ENGINE_MAX_TOP));
    e->s_top_lp = malloc(sizeof(float) * S * (1 + ENGINE_MAX_TOP));
    e->s_top_n = malloc(sizeof(int) * S);
    if (!e->running || !e->prefill || !e->sampler_scratch || !e->s_token || !e->s_logprob ||
        !e->s_top_id || !e->s_top_lp || !e->s_top_n)
        goto oom;
    e->stats.n_slots = S;
    e->stats.kv_bytes = kv_bytes(e->kv);
    return e;
oom:
    snprintf(err, errlen, "engine: out of memory");
fail:
    engine_free(e);
    return NULL;
}

void engine_free(engine *e) {
    if (!e) return;
    for (request *r = e->wait_head, *n; r; r = n) {
        n = r->next;
        request_free(r);
    }
    if (e->running)
        for (int s = 0; s < e->n_run; s++) request_free(e->running[s]);
    free(e->running);
    kv_free(e->kv);
    pass_free(&e->express);
    pass_free(&e->step); /* the twin first: it borrows the step's threads */
    free(e->prefill);
    free(e->sampler_scratch);
    free(e->s_token);
    free(e->s_logprob);
    free(e->s_top_id);
    free(e->s_top_lp);
    free(e->s_top_n);
    free(e);
}

void engine_set_callbacks(engine *e, const engine_callbacks *cb) { e->cb = *cb; }

const char *engine_finish_name(engine_finish f) {
    switch (f) {
    case ENGINE_FINISH_LENGTH: return "length";
    case ENGINE_FINISH_STOP: return "stop";
    case ENGINE_FINISH_EOS: return "eos";
    case ENGINE_FINISH_CTX: return "length";
    case ENGINE_FINISH_CANCELLED: return "cancelled";
    case ENGINE_FINISH_ERROR: return "error";
    }
    return "error";
}

static size_t stop_hold(const struct request *r, const char *s, size_t n);

/* ---------------------------------------------------------------------------------------------
 * Submit and cancel. */

static request *find_request(engine *e, uint64_t id, request **prev_out) {
    request *prev = NULL;
    for (request *r = e->wait_head; r; prev = r, r = r->next)
        if (r->id == id) {
            if (prev_out) *prev_out = prev;
            return r;
        }
    for (int s = 0; s < e->n_run; s++)
        if (e->running[s] && e->running[s]->id == id) return e->running[s];
    return NULL;
}

/* Fills *why (may be NULL) and returns code. */
__attribute__((format(printf, 4, 5))) static int refuse(engine_refusal *why, engine_error code, const char *field,
                                                        const char *fmt, ...) {
    if (why) {
        why->code = code;
        why->field = field;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why->message, sizeof why->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Tokenizes or copies the prompt (+ resumed tokens) into r->ids. 0 or a refusal. */
static int request_prompt(engine *e, request *r, const engine_request *q, engine_refusal *why) {
    int n = 0, cap = e->n_ctx + 1;
    const char *field = q->prompt ? "prompt" : "prompt_ids";
    if (q->prompt) {
        long got = bpe_encode(e->tok, q->prompt, q->prompt_len, q->allow_special, r->ids, cap);
        if (got < 0) return refuse(why, ENGINE_E_BAD_UTF8, field, "prompt is not valid UTF-8");
        n = got > cap ? cap : (int)got;
        if (got > e->n_ctx)
            return refuse(why, ENGINE_E_PROMPT_TOO_LONG, field, "prompt is %ld tokens; the context holds %d", got,
                          e->n_ctx);
    } else {
        if (q->n_prompt_ids > e->n_ctx)
            return refuse(why, ENGINE_E_PROMPT_TOO_LONG, field, "prompt is %d tokens; the context holds %d",
                          q->n_prompt_ids, e->n_ctx);
        for (int i = 0; i < q->n_prompt_ids; i++) {
            if (q->prompt_ids[i] < 0 || q->prompt_ids[i] >= e->n_vocab)
                return refuse(why, ENGINE_E_TOKEN_RANGE, field, "prompt token %d is %d, outside [0, %d)", i,
                              q->prompt_ids[i], e->n_vocab);
            r->ids[n++] = q->prompt_ids[i];
        }
    }
    if (n == 0) return refuse(why, ENGINE_E_EMPTY_PROMPT, field, "prompt is empty");
    r->user_prompt_tokens = n;
    if (q->fit_ctx && (long)n + q->max_tokens > (long)e->n_ctx + 1) /* the last token needs no position */
        return refuse(why, ENGINE_E_OVER_CONTEXT, "max_tokens",
                      "prompt of %d tokens plus max_tokens %d exceed the context of %d positions (at most %d new "
                      "tokens fit)", n, q->max_tokens, e->n_ctx, e->n_ctx + 1 - n);
    if (q->n_resume_ids < 0 || n + q->n_resume_ids > e->n_ctx)
        return refuse(why, ENGINE_E_PROMPT_TOO_LONG, "resume_ids",
                      "prompt plus %d resumed tokens exceed the context of %d", q->n_resume_ids, e->n_ctx);
    for (int i = 0; i < q->n_resume_ids; i++) {
        if (q->resume_ids[i] < 0 || q->resume_ids[i] >= e->n_vocab)
            return refuse(why, ENGINE_E_TOKEN_RANGE, "resume_ids", "resumed token %d is out of range", i);
        r->ids[n++] = q->resume_ids[i];
    }
    r->n_prompt = r->n_ids = n;
    r->n_resume = r->n_gen = q->n_resume_ids;
    return 0;
}

static int request_stops(request *r, const engine_request *q, engine_refusal *why) {
    if (q->n_stops < 0 || q->n_stops > ENGINE_MAX_STOPS)
        return refuse(why, ENGINE_E_PARAM, "stop", "at most %d stop strings", ENGINE_MAX_STOPS);
    for (int i = 0; i < q->n_stops; i++) {
        size_t len = q->stops[i] ? strlen(q->stops[i]) : 0;
        if (len == 0 || len > ENGINE_MAX_STOP_LEN)
            return refuse(why, ENGINE_E_PARAM, "stop", "stop string %d must be 1..%d bytes", i, ENGINE_MAX_STOP_LEN);
        memcpy(r->stops[i], q->stops[i], len + 1);
        r->stop_len[i] = (int)len;
    }
    r->n_stops = q->n_stops;
    return 0;
}

/* Replays resumed tokens through the stream decoder and the stop-string hold-back exactly as
 * emit_token did when they were first generated, so text, held bytes and what counts as already
 * emitted continue where the first run left off (crash replay). */
static void request_replay(engine *e, request *r) {
    for (int i = r->n_prompt - r->n_resume; i < r->n_prompt; i++) {
        int n = bpe_stream_push(&r->stream, e->tok, r->ids[i], r->text + r->text_len,
                                r->text_cap - r->text_len);
        if (n > 0) r->text_len += n;
        size_t end = r->text_len - stop_hold(r, r->text + r->emitted, r->text_len - r->emitted);
        if (end > r->emitted) r->emitted = end;
    }
}

/* Queues r behind every waiting request of its priority or a higher one (bulk after interactive,
 * first come first served within each). */
static void wait_insert(engine *e, request *r) {
    request *prev = NULL;
    if (e->wait_tail && e->wait_tail->priority > r->priority)
        for (request *p = e->wait_head; p && p->priority <= r->priority; p = p->next) prev = p;
    else
        prev = e->wait_tail;
    r->next = prev ? prev->next : e->wait_head;
    if (prev) prev->next = r;
    else e->wait_head = r;
    if (!r->next) e->wait_tail = r;
    e->n_waiting++;
}

int engine_submit(engine *e, uint64_t req_id, const engine_request *q, engine_refusal *why) {
    if (why) memset(why, 0, sizeof *why);
    if (find_request(e, req_id, NULL))
        return refuse(why, ENGINE_E_DUPLICATE_ID, "id", "request id %llu is already live", (unsigned long long)req_id);
    if (q->max_tokens < 1)
        return refuse(why, ENGINE_E_PARAM, "max_tokens", "max_tokens must be >= 1, got %d", q->max_tokens);
    char msg[256];
    const char *field = NULL;
    if (sampler_params_check(&q->sampling, e->n_vocab, &field, msg, sizeof msg) != 0)
        return refuse(why, ENGINE_E_PARAM, field, "%s", msg);
    request *r = calloc(1, sizeof *r);
    if (!r) goto oom;
    r->id = req_id;
    r->slot = -1;
    r->ids = malloc(sizeof(int) * (e->n_ctx + 2));
    if (!r->ids) goto oom;
    int rc = request_prompt(e, r, q, why);
    if (rc == 0) rc = request_stops(r, q, why);
    if (rc == 0 && q->n_resume_ids >= q->max_tokens)
        rc = refuse(why, ENGINE_E_PARAM, "max_tokens", "%d resumed tokens leave nothing to generate (max_tokens %d)",
                    q->n_resume_ids, q->max_tokens);
    if (rc != 0) {
        request_free(r);
        return rc;
    }
    r->max_gen = q->max_tokens;
    r->sampling = q->sampling;
    r->ignore_eos = q->ignore_eos;
    r->want_logprobs = q->want_logprobs;
    r->want_top = q->want_top;
    r->top_n = q->top_n < 0 ? 0 : q->top_n > ENGINE_MAX_TOP ? ENGINE_MAX_TOP : q->top_n;
    int gen_cap = r->max_gen < e->n_ctx + 1 ? r->max_gen : e->n_ctx + 1;
    /* an invalid byte becomes U+FFFD (3 bytes): room for 3x the longest token per token */
    r->text_cap = (size_t)gen_cap * (3 * e->max_token_bytes + 4) + 64;
    r->text = malloc(r->text_cap);
    if (!r->text) goto oom;
    bpe_stream_init(&r->stream);
    request_replay(e, r);
    r->t_submit = now_ms();
    r->state = REQ_WAITING;
    r->priority = q->priority == ENGINE_PRIORITY_BULK ? ENGINE_PRIORITY_BULK : ENGINE_PRIORITY_INTERACTIVE;
    wait_insert(e, r);
    return 0;
oom:
    request_free(r);
    return refuse(why, ENGINE_E_NO_MEMORY, NULL, "out of memory");
}

const char *engine_error_name(engine_error err) {
    static const char *const names[ENGINE_N_ERRORS] = {
        "ok", "bad_parameter", "empty_prompt", "prompt_too_long", "token_out_of_range", "bad_utf8",
        "duplicate_id", "no_memory", "internal", "max_tokens_over_context",
    };
    return err <= 0 && -err < ENGINE_N_ERRORS ? names[-err] : "unknown";
}

const char *engine_fingerprint(const engine *e, char *buf, size_t cap) {
    const char *fp = gpt2_weights_fingerprint(e->w);
    char mods[32];
    snprintf(mods, sizeof mods, "%s%s%s", e->cfg.use_blas ? "+blas" : "", e->cfg.kv_dtype ? "+kv" : "",
             e->cfg.kv_dtype ? kv_dtype_name((kv_dtype)e->cfg.kv_dtype) : "");
    if (!*mods) {
        snprintf(buf, cap, "%s", fp);
        return buf;
    }
    const char *slash = strchr(fp, '/'), *second = slash ? strchr(slash + 1, '/') : NULL;
    if (second) snprintf(buf, cap, "%.*s%s%s", (int)(second - fp), fp, mods, second);
    else snprintf(buf, cap, "%s%s", fp, mods);
    return buf;
}

void engine_options_apply(const eopt_values *v, engine_config *c, gpt2_weights_opts *wo) {
    memset(c, 0, sizeof *c);
    c->n_slots = v->slots;
    c->max_running = v->max_running;
    c->prefix_cache_off = !v->prefix_cache;
    c->kv_dtype = kv_dtype_parse(v->kv_dtype);
    c->kv_budget_mb = v->kv_budget_mb > 0 ? (size_t)v->kv_budget_mb : 0;
    c->n_ctx = v->ctx;
    c->max_batch_tokens = v->max_batch_tokens;
    c->prefill_min_tokens = v->prefill_min_tokens;
    c->prefill_half = v->prefill_half > 0 ? v->prefill_half : -1; /* 0 in the table: off */
    c->n_threads = v->threads;
    c->use_blas = v->blas;
    memset(wo, 0, sizeof *wo);
    wo->cache_dir = v->weights_cache;
    wo->isa = v->isa;
    wo->weights = v->weights;
    wo->keep_checkpoint = v->blas;
}

int engine_n_vocab(const engine *e) { return e->n_vocab; }
int engine_n_ctx(const engine *e) { return e->n_ctx; }
const gpt2_weights *engine_weights(const engine *e) { return e->w; }

/* Ends r: on_done with its result, frees its slot and the record. r is already unlinked. */
static void request_finish(engine *e, request *r, engine_finish f, const char *error) {
    double t = now_ms();
    engine_result res = {
        .finish = f,
        .error = error,
        .prompt_tokens = r->user_prompt_tokens,
        .completion_tokens = r->n_gen,
        .cached_tokens = r->n_cached,
        .queue_ms = (r->t_admit > 0 ? r->t_admit : t) - r->t_submit,
        .ttft_ms = r->t_first > 0 ? r->t_first - r->t_submit : 0,
        .total_ms = t - r->t_submit,
        .text = r->text,
        .text_len = r->text_len,
        .tokens = r->ids + r->n_prompt - r->n_resume,
    };
    if (r->slot >= 0) {
        e->running[r->slot] = NULL;
        kv_seq_close(e->kv, r->slot);
        e->n_running--;
    }
    e->cb.on_done(e->cb.user, r->id, &res);
    request_free(r);
}

int engine_cancel(engine *e, uint64_t req_id) {
    request *prev = NULL;
    request *r = find_request(e, req_id, &prev);
    if (!r) return -1;
    if (r->state != REQ_WAITING) {
        r->cancelled = 1; /* ended at the start of the next step */
        return 0;
    }
    if (prev)
        prev->next = r->next;
    else
        e->wait_head = r->next;
    if (e->wait_tail == r) e->wait_tail = prev;
    e->n_waiting--;
    request_finish(e, r, ENGINE_FINISH_CANCELLED, NULL);
    return 0;
}

int engine_has_work(const engine *e) {
    return e->n_waiting > 0 || e->n_running > 0;
}

void engine_get_stats(const engine *e, engine_stats *s) {
    *s = e->stats;
    s->slots_used = s->n_running = e->n_running;
    s->n_waiting = e->n_waiting;
    kv_get_stats(e->kv, &s->kv);
}

int engine_kv_check(const engine *e, char *err, size_t errlen) { return kv_check(e->kv, err, errlen); }

/* ---------------------------------------------------------------------------------------------
 * Stop strings: text that might begin a stop string is held back; a match ends the request and
 * the stop string is not emitted. */

/* Length of the longest suffix of s[0..n) that is a proper prefix of some stop string. */
static size_t stop_hold(const request *r, const char *s, size_t n) {
    size_t best = 0;
    for (int i = 0; i < r->n_stops; i++) {
        size_t L = (size_t)r->stop_len[i];
        for (size_t k = (n < L - 1 ? n : L - 1); k > best; k--)
            if (memcmp(s + n - k, r->stops[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

/* Offset (>= from) of the earliest stop string match in r->text, or -1. */
static long stop_find(const request *r, size_t from) {
    long best = -1;
    for (int i = 0; i < r->n_stops; i++) {
        const char *hay = r->text + from;
        size_t n = r->text_len - from;
        const char *p = memmem(hay, n, r->stops[i], r->stop_len[i]);
        if (p && (best < 0 || p - r->text < best)) best = p - r->text;
    }
    return best;
}

/* ---------------------------------------------------------------------------------------------
 * The step. */

/* The positions r can write: its prompt, then every generated token but the last, within the context. */
static int request_reach(const engine *e, const request *r) {
    int n = r->n_prompt + (r->max_gen - r->n_resume) - 1;
    return n < e->n_ctx ? n : e->n_ctx;
}

/* Admits waiting requests in queue order (interactive, then bulk; first come first served within
 * each) while a KV sequence and the pages they can reach
 * are available (kv.h); the head waits otherwise, and everything behind it. The head also waits
 * while a running request is computing the next page of the prefix it shares (a campaign's common
 * preamble): it is admitted a few steps later with those pages cached instead of computing them too.
 * express (a step is suspended): interactive requests only, and without that wait: the page may be
 * the suspended step's to compute, and waiting for it is waiting for the step; the request computes
 * its own copy (kv_seq_publish keeps one), bit for bit the same. Admission never takes a page a
 * sequence holds (kv.h), so the suspended step's pages are safe. */
static void admit_waiting(engine *e, int express) {
    while (e->wait_head) {
        request *r = e->wait_head;
        if (express ? r->priority != ENGINE_PRIORITY_INTERACTIVE : kv_prefix_pending(e->kv, r->ids, r->n_prompt))
            return;
        int cached = 0, seq = kv_seq_open(e->kv, r->ids, r->n_prompt, request_reach(e, r), &cached);
        if (seq < 0) return;
        e->wait_head = r->next;
        if (!e->wait_head) e->wait_tail = NULL;
        r->next = NULL;
        e->n_waiting--;
        r->slot = seq;
        r->n_past = r->n_cached = cached;
        r->state = REQ_PREFILL;
        r->t_admit = now_ms();
        r->admit_seq = e->admitted++;
        e->running[seq] = r;
        e->n_running++;
    }
}

/* Ends the running requests that were cancelled, except those in a suspended step (it completes
 * first: their sequences' pages are its to write). */
static void reap_cancelled(engine *e) {
    for (int s = 0; s < e->n_run; s++) {
        request *r = e->running[s];
        if (r && r->cancelled && !r->in_pass) request_finish(e, r, ENGINE_FINISH_CANCELLED, NULL);
    }
}

static void batch_add(engine_pass *p, request *r, int token, int pos, int logits) {
    int n = p->b.n++;
    p->token[n] = token;
    p->pos[n] = pos;
    p->slot[n] = r->slot;
    p->out[n] = logits ? p->n_out : -1;
    if (logits) p->req[p->n_out++] = r;
    r->in_pass = 1;
}

/* 1 if r may get rows in the pass being built: not in a pass already; in an express pass, only
 * interactive requests. */
static int batchable(const request *r, int express) {
    return !r->in_pass && (!express || r->priority == ENGINE_PRIORITY_INTERACTIVE);
}

/* 1 if a prefills before b: interactive before bulk, then in admission order. */
static int prefill_before(const request *a, const request *b) {
    return a->priority != b->priority ? a->priority < b->priority : a->admit_seq < b->admit_seq;
}

/* Prefilling requests that may join the pass (batchable), in prefill order (prefill_before). */
static int prefill_order(engine *e, request **order, int express) {
    int n = 0;
    for (int s = 0; s < e->n_run; s++)
        if (e->running[s] && e->running[s]->state == REQ_PREFILL && batchable(e->running[s], express))
            order[n++] = e->running[s];
    for (int i = 1; i < n; i++) /* insertion sort: few prefill at once */
        for (int j = i; j > 0 && prefill_before(order[j], order[j - 1]); j--) {
            request *t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    return n;
}

int engine_prefill_budget(const engine_config *cfg, int d) {
    int t = cfg->max_batch_tokens > 0 ? cfg->max_batch_tokens : ENGINE_DEFAULT_BATCH_TOKENS;
    int lo = cfg->prefill_min_tokens > 0 ? cfg->prefill_min_tokens : ENGINE_DEFAULT_PREFILL_MIN;
    int h = cfg->prefill_half == 0 ? ENGINE_DEFAULT_PREFILL_HALF : cfg->prefill_half;
    if (d < 0) d = 0;
    if (h < 0) return t > d ? t - d : 0;
    long p = (long)t * h / (h + d);
    return p > lo ? (int)p : lo;
}

/* 1 if a bulk request is running (a step would carry its rows). */
static int bulk_running(const engine *e) {
    for (int s = 0; s < e->n_run; s++)
        if (e->running[s] && e->running[s]->priority == ENGINE_PRIORITY_BULK) return 1;
    return 0;
}

/* 1 if there is work for an express pass: an interactive request waiting, or running outside the
 * step and still prefilling (while the step is suspended, or decoding). */
static int express_work(const engine *e) {
    if (e->wait_head && e->wait_head->priority == ENGINE_PRIORITY_INTERACTIVE) return 1;
    for (int s = 0; s < e->n_run; s++) {
        const request *r = e->running[s];
        if (r && !r->in_pass && !r->cancelled && r->priority == ENGINE_PRIORITY_INTERACTIVE &&
            (r->state == REQ_PREFILL || e->suspended))
            return 1;
    }
    return 0;
}

/* Fills pass p: every batchable decoding request's next token, then prefill chunks within the
 * budget (engine_prefill_budget, capped by the step's room), with the KV pages they write. hold: a
 * step beside bulk work that was already running leaves interactive prefill to express passes (one
 * ran just before it), so it can always yield; otherwise a step may yield if it prefills no
 * interactive request. The number of rows, or -1 if a page could not be had (a bug: admission
 * reserved them). */
static int build_batch(engine *e, engine_pass *p, int express, int hold) {
    p->b.n = p->n_out = p->layer = 0;
    p->yieldable = e->cfg.should_yield != NULL && !express;
    int hold_interactive = p->yieldable && hold;
    for (int s = 0; s < e->n_run; s++) {
        request *r = e->running[s];
        if (!r || r->state != REQ_DECODE || !batchable(r, express)) continue;
        if (kv_seq_prepare(e->kv, r->slot, r->n_past + 1) != 0) return -1;
        batch_add(p, r, r->ids[r->n_past], r->n_past, 1);
    }
    int n_decode = p->b.n;
    int limit = n_decode + engine_prefill_budget(&e->cfg, n_decode);
    if (limit > e->max_batch) limit = e->max_batch;
    request **pre = e->prefill;
    int n_pre = prefill_order(e, pre, express);
    int first = -1; /* the priority prefilled */
    for (int i = 0; i < n_pre && p->b.n < limit; i++) {
        request *r = pre[i];
        if (hold_interactive && r->priority == ENGINE_PRIORITY_INTERACTIVE) continue; /* an express pass's */
        if (first < 0) first = r->priority;
        if (r->priority != first) break; /* no bulk prefill beside an interactive one: a short step,
                                            its first token sooner */
        if (r->priority == ENGINE_PRIORITY_INTERACTIVE) p->yieldable = 0; /* short already */
        int chunk = r->n_prompt - r->n_past;
        if (chunk > limit - p->b.n) chunk = limit - p->b.n;
        if (kv_seq_prepare(e->kv, r->slot, r->n_past + chunk) != 0) return -1;
        for (int c = 0; c < chunk; c++) {
            int pos = r->n_past + c;
            batch_add(p, r, r->ids[pos], pos, pos == r->n_prompt - 1);
        }
    }
    e->stats.last_decode = n_decode;
    e->stats.last_prefill = p->b.n - n_decode;
    return p->b.n;
}

/* Appends token's text to r, decides whether r ends, and emits the token's piece. Returns 1 if
 * r finished (and was freed). */
static int emit_token(engine *e, request *r, int token, float logprob, const int *top_id, const float *top_lp,
                      int top_n) {
    int index = r->n_gen++;
    r->ids[r->n_ids++] = token;
    if (r->t_first == 0) r->t_first = now_ms();
    engine_finish fin = ENGINE_FINISH_LENGTH;
    int done = 0;
    if (token == BPE_EOT && !r->ignore_eos) {
        fin = ENGINE_FINISH_EOS;
        done = 1;
    } else {
        int w = bpe_stream_push(&r->stream, e->tok, token, r->text + r->text_len, r->text_cap - r->text_len);
        if (w > 0) r->text_len += w;
    }
    long stop_at = r->n_stops ? stop_find(r, r->emitted) : -1;
    if (stop_at >= 0) {
        r->text_len = (size_t)stop_at;
        fin = ENGINE_FINISH_STOP;
        done = 1;
    } else if (!done && r->n_gen >= r->max_gen) {
        done = 1;
    } else if (!done && r->n_ids > e->n_ctx) {
        fin = ENGINE_FINISH_CTX; /* no position left to feed this token */
        done = 1;
    }
    if (done && fin != ENGINE_FINISH_STOP) {
        int w = bpe_stream_flush(&r->stream, r->text + r->text_len, r->text_cap - r->text_len);
        if (w > 0) r->text_len += w;
    }
    size_t end = done ? r->text_len : r->text_len - stop_hold(r, r->text + r->emitted, r->text_len - r->emitted);
    if (end < r->emitted) end = r->emitted;
    if (r->want_top && e->on_top && top_n > 0) e->on_top(e->cb.user, r->id, index, top_id, top_lp, top_n);
    if (e->cb.on_token)
        e->cb.on_token(e->cb.user, r->id, index, token, r->text + r->emitted, end - r->emitted,
                       r->want_logprobs ? logprob : 0.0f);
    r->emitted = end;
    e->stats.tokens_generated++;
    if (done) request_finish(e, r, fin, NULL);
    return done;
}

typedef struct {
    engine *e;
    const engine_pass *p;
} sample_job;

/* Samples logits rows [begin, end) with thread tid's scratch. */
static void sample_task(void *ctx, int begin, int end, int tid) {
    const sample_job *j = ctx;
    engine *e = j->e;
    void *scratch = e->sampler_scratch + (size_t)tid * e->scratch_size;
    for (int o = begin; o < end; o++) {
        request *r = j->p->req[o];
        e->s_logprob[o] = 0.0f;
        float *logits = j->p->logits + (size_t)o * e->n_vocab; /* the sampler works in place */
        e->s_token[o] = sampler_sample(&r->sampling, logits, e->n_vocab,
                                       r->ids, r->n_ids, (uint64_t)r->n_gen, scratch, &e->s_logprob[o]);
        e->s_top_n[o] = r->want_top ? sampler_top_logprobs(logits, e->n_vocab,
                                                           e->s_token[o], r->top_n,
                                                           e->s_top_id + (size_t)o * (1 + ENGINE_MAX_TOP),
                                                           e->s_top_lp + (size_t)o * (1 + ENGINE_MAX_TOP))
                                    : 0;
    }
}

/* Ends every running request with an internal error (a suspended step with them). */
static void fail_running(engine *e, const char *why) {
    e->suspended = 0;
    for (int s = 0; s < e->n_run; s++)
        if (e->running[s]) request_finish(e, e->running[s], ENGINE_FINISH_ERROR, why);
}

/* The end of a pass whose logits are computed: KV positions, sampling, callbacks. Cancels that came
 * while it was suspended take effect here: those requests get no token, they end. */
static int pass_complete(engine *e, engine_pass *p) {
    e->stats.steps++;
    /* advance KV positions for every row; full prompt pages go to the prefix cache */
    for (int i = 0; i < p->b.n; i++) {
        request *r = e->running[p->slot[i]];
        r->in_pass = 0;
        r->n_past++;
        if (r->state != REQ_PREFILL) continue;
        e->stats.tokens_prefilled++;
        if (r->n_past % KV_PAGE == 0 || r->n_past == r->n_prompt) kv_seq_publish(e->kv, r->slot, r->ids, r->n_past);
        if (r->n_past == r->n_prompt) r->state = REQ_DECODE;
    }
    int n_out = p->n_out;
    if (e->cb.on_logits)
        for (int o = 0; o < n_out; o++)
            if (!p->req[o]->cancelled)
                e->cb.on_logits(e->cb.user, p->req[o]->id, p->req[o]->n_gen, p->logits + (size_t)o * e->n_vocab,
                                e->n_vocab);
    /* sample every row on the compute threads (a row's draw depends only on its own logits,
     * history and (seed, index)), then emit in batch order on this thread */
    sample_job job = {e, p};
    pool_run(gpt2_pool(e->model), sample_task, &job, n_out, 1);
    for (int o = 0; o < n_out; o++) {
        request *r = p->req[o];
        if (r->cancelled) continue;
        if (e->s_token[o] < 0) {
            request_finish(e, r, ENGINE_FINISH_ERROR, "no token can be sampled: every logit is -inf or NaN");
            continue;
        }
        emit_token(e, r, e->s_token[o], e->s_logprob[o], e->s_top_id + (size_t)o * (1 + ENGINE_MAX_TOP),
                   e->s_top_lp + (size_t)o * (1 + ENGINE_MAX_TOP), e->s_top_n[o]);
    }
    reap_cancelled(e);
    return p->b.n;
}

/* Unit u of pass p: block u, then (a yieldable pass) piece u - n_layer of its logits, column ranges
 * of whole panels (the first with the final layer norm). */
static void pass_unit(engine *e, engine_pass *p, int u) {
    if (u < e->n_layer) {
        gpt2_forward_layers(p->model, e->kv, &p->b, u, u + 1);
        return;
    }
    int k = u - e->n_layer, n = e->n_logit_parts, align = GPT2_LOGIT_ALIGN;
    int per = ((e->n_vocab + align - 1) / align + n - 1) / n * align; /* columns per piece */
    if (k == 0) gpt2_forward_norm(p->model, &p->b);
    gpt2_forward_logits(p->model, &p->b, p->logits, k * per, (k + 1) * per);
}

/* Computes p from the unit it reached: its blocks, then its logits (in n_logit_parts pieces when it
 * may yield: the lm_head of a large batch is several layers' worth). After each unit but the last, a
 * yieldable pass asks cfg.should_yield and, when told to, stops there: the step is suspended (0).
 * Else completes it: the rows it computed. */
static int pass_run(engine *e, engine_pass *p) {
    int units = e->n_layer + (p->yieldable ? e->n_logit_parts : 0);
    while (p->layer < units) {
        pass_unit(e, p, p->layer++);
        if (p == &e->step) e->expressed = 0; /* the step went on: an express pass may run again */
        if (p->yieldable && p->layer < units && e->cfg.should_yield(e->cfg.yield_user)) {
            e->suspended = 1;
            e->stats.suspends++;
            return 0;
        }
    }
    if (p == &e->step) e->suspended = 0;
    if (!p->yieldable) gpt2_forward_end(p->model, &p->b, p->logits);
    return pass_complete(e, p);
}

/* Builds pass p (express: interactive work outside the suspended step; hold: see build_batch) and
 * starts it: rows (0 when there is nothing to batch) or ENGINE_E_INTERNAL. */
static int pass_start(engine *e, engine_pass *p, int express, int hold) {
    reap_cancelled(e);
    admit_waiting(e, express);
    int n = build_batch(e, p, express, hold);
    if (n < 0) {
        fail_running(e, "internal error: a KV page was not reserved");
        return ENGINE_E_INTERNAL;
    }
    if (n == 0) return 0;
    if (gpt2_forward_begin(p->model, e->kv, &p->b) != 0) {
        fail_running(e, "internal error: invalid batch");
        return ENGINE_E_INTERNAL;
    }
    if (express) e->stats.express_steps++;
    return pass_run(e, p);
}

int engine_step(engine *e) {
    /* preemption: interactive work first, in an express pass, while the step is suspended or before
     * a step that would carry bulk rows; at most once between two layers of the step's, so bulk
     * work always advances */
    int bulk = e->cfg.should_yield && !e->suspended && bulk_running(e);
    if (e->cfg.should_yield && !e->expressed && (e->suspended || bulk) && express_work(e)) {
        e->expressed = 1;
        int n = pass_start(e, &e->express, 1, 0);
        if (n != 0) return n; /* else nothing could be admitted: the step goes on */
    }
    return e->suspended ? pass_run(e, &e->step) : pass_start(e, &e->step, 0, bulk);
}

int engine_suspended(const engine *e) { return e->suspended; }

const char *engine_token_bytes(const engine *e, int id, size_t *len) {
    if (id < 0 || id >= bpe_vocab_size(e->tok)) return NULL;
    return bpe_token_bytes(e->tok, id, len);
}

void engine_set_top_callback(engine *e, engine_top_fn fn) { e->on_top = fn; }
