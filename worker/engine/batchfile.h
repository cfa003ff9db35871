/* batchfile.h — a JSONL file of requests run through the engine with continuous batching.
 *
 * Input lines are submit requests in JSON, mapped by the one strict mapper shared with gpt2c batch
 * and the HTTP gateway (proto/proto_json.h: the protocol's fields, types and limits; an unknown key
 * is an error naming the line and the key; "id" defaults to the line's index):
 *   {"id": "...", "prompt": "..." or "prompt_ids": [...], "max_tokens": N, "temperature": T,
 *    "top_k": K, "top_p": P, "min_p": P, "repetition_penalty": R, "presence_penalty": P,
 *    "frequency_penalty": F, "seed": S, "logit_bias": [[id, bias]], "stop": ["..."] or "...",
 *    "ignore_eos": bool, "allow_special": bool}
 * plus integer fields for tests and load shaping: "arrival_step" (submit at that engine step, default 0),
 * "cancel_after" (cancel once that many tokens have streamed, 0 = right after submit; -1 = never)
 * and "cancel_at_step" (cancel at that engine step if still live; -1 = never).
 * Output lines: {"id", "text", "tokens", "finish_reason", "usage": {"prompt_tokens",
 * "completion_tokens", "cached_tokens"}, "timings": {"queue_ms", "ttft_ms", "total_ms"}} in input order.
 * With concurrency N at most N requests are live at once; a request's output never depends on N.
 * Each job also records a 64-bit hash of every logits row it was sampled from (bitwise checks). */
#ifndef GPT2D_BATCHFILE_H
#define GPT2D_BATCHFILE_H

#include <stdint.h>
#include <stdio.h>

#include "engine.h"

typedef struct {
    char *id;
    char *prompt;
    int *prompt_ids;
    engine_request req;           /* prompt, max_tokens, sampling and stops point into this job */
    char *stops[ENGINE_MAX_STOPS];
    int arrival_step;
    int cancel_after;
    int cancel_at_step;
    /* results */
    int submitted, finished;
    engine_finish finish;
    char *error;
    char *text;                   /* final text */
    size_t text_len;
    char *streamed;               /* concatenated on_token pieces */
    size_t streamed_len, streamed_cap;
    int *tokens;
    int n_tokens;
    int prompt_tokens;
    int cached_tokens;            /* of the prompt, from the prefix cache */
    double queue_ms, ttft_ms, total_ms;
    double *token_ms;             /* (max_tokens) arrival time of each token, ms since run start */
    size_t *piece_end;            /* (max_tokens) streamed_len after each token's piece */
    uint64_t logits_hash;         /* FNV-1a over every logits row, in order */
    int n_logits;
} batch_job;

typedef struct {
    batch_job *jobs;
    int n;
    double wall_ms;               /* the whole run */
    int peak_running;
    engine_stats engine_stats;    /* the engine's counters after batchfile_run */
    int hash_logits;              /* 1: record logits_hash for every job (tests; costs ~1 us/row) */
    int static_batching;          /* 1: admit the next `concurrency` only when all live ones ended
                                     (the baseline continuous batching is measured against) */
} batchfile;

/* Reads a JSONL file; NULL with err naming the file, line and problem. */
batchfile *batchfile_read(const char *path, char *err, size_t errlen);
/* Builds a batchfile from n jobs parsed from in-memory JSON lines (tests). */
batchfile *batchfile_parse(const char *const *lines, int n, char *err, size_t errlen);
void batchfile_free(batchfile *bf);

/* Runs every job through a new engine (w, tok, cfg) keeping at most `concurrency` live. 0, or -1
 * with err (engine start failure). A job refused at submit is recorded with finish error. */
int batchfile_run(batchfile *bf, const gpt2_weights *w, bpe_tokenizer *tok, const engine_config *cfg,
                  int concurrency, char *err, size_t errlen);
/* Same, on an existing engine (reused across runs). */
int batchfile_run_on(batchfile *bf, engine *e, int concurrency, char *err, size_t errlen);

/* Resets results so the batch can be run again. */
void batchfile_reset(batchfile *bf);

int batchfile_write(const batchfile *bf, const char *path, char *err, size_t errlen);
/* One line: requests, generated tokens, wall time, tokens/s. */
void batchfile_summary(const batchfile *bf, FILE *f);

#endif
