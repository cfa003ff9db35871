/* sampler.h — turns one row of logits into the next token, reproducibly.
 *
 * Order of operations (each step skipped at its neutral value): logit bias; repetition penalty
 * (CTRL-style: a seen token's logit is divided by the penalty if positive, multiplied if negative);
 * presence and frequency penalties (OpenAI-style, subtracted); then greedy (temperature == 0) takes
 * the argmax (lowest id on ties); otherwise temperature scaling, top-k, softmax, top-p (nucleus),
 * min-p, and one draw. The draw for the i-th generated token of a request is a pure function of
 * (seed, i): a counter-based generator (splitmix64 of a seed/counter mix), so the result never
 * depends on batching, timing, threads or the process that runs it. Candidates are ordered by
 * edited logit descending (the same as by probability at any temperature), ties by lower id, so
 * the order is deterministic too; top-k keeps the first k, top-p the shortest prefix whose
 * probability reaches top_p, min-p the tokens with p >= min_p * p_max (applied as the logit
 * threshold max + T ln min_p); the draw u = sampler_uniform(seed, i) walks the kept prefix until
 * the running probability exceeds u. Probabilities come from one vectorized exp (AVX2 + FMA,
 * explicit, no libm), so a draw has the same bits on every machine that runs the server.
 * A logit of -inf (e.g. from a -inf bias) or NaN is banned: that token is never returned.
 * No allocation and no global state: the caller provides scratch of sampler_scratch_size(V) bytes
 * (any alignment, any content, e.g. plain malloc), one scratch per concurrent caller. */
#ifndef GPT2D_SAMPLER_H
#define GPT2D_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#define SAMPLER_MAX_BIAS 64 /* logit_bias entries per request */

typedef struct {
    float temperature;        /* 0 = greedy; >= 0 */
    int top_k;                /* 0 = off; keep the k most likely */
    float top_p;              /* 1 = off; (0, 1] */
    float min_p;              /* 0 = off; [0, 1]: drop p < min_p * p_max */
    float repetition_penalty; /* 1 = off; > 0 */
    float presence_penalty;   /* 0 = off */
    float frequency_penalty;  /* 0 = off */
    uint64_t seed;            /* the request's seed */
    int n_bias;               /* entries used in bias_id / bias */
    int bias_id[SAMPLER_MAX_BIAS];
    float bias[SAMPLER_MAX_BIAS]; /* added to the logit; -inf bans */
} sampler_params;

/* Neutral parameters: greedy, every filter and penalty off, seed 0. */
void sampler_params_default(sampler_params *p);

/* Checks ranges: temperature >= 0 and finite, top_k >= 0, top_p in (0, 1], min_p in [0, 1],
 * repetition_penalty > 0 and finite, presence/frequency penalties in [-2, 2], n_bias in
 * [0, SAMPLER_MAX_BIAS], bias ids in [0, n_vocab), bias values not NaN (+-inf allowed).
 * 0 if valid, else -1 with a message in err (names the parameter, e.g.
 * "top_p must be in (0, 1], got 1.5"); err may be NULL. */
int sampler_params_validate(const sampler_params *p, int n_vocab, char *err, size_t errlen);
/* The same, and *field (if not NULL) names the first invalid parameter ("temperature", "top_k",
 * "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "logit_bias";
 * NULL when valid or when n_vocab is). */
int sampler_params_check(const sampler_params *p, int n_vocab, const char **field, char *err, size_t errlen);

/* Bytes of scratch sampler_sample needs for a vocabulary of n_vocab (32 * n_vocab + 4 KiB:
 * 1.6 MB for GPT-2). */
size_t sampler_scratch_size(int n_vocab);

/* The uniform draw in [0, 1) for (seed, i). */
double sampler_uniform(uint64_t seed, uint64_t i);

/* Samples the token for generated index i. p must have passed sampler_params_validate.
 * logits (V) are modified in place: they end biased and penalized (temperature not applied).
 * history (n_hist ids: prompt and generated so far; ids outside [0, V) ignored) feeds the
 * penalties; penalties apply once to each distinct id in history, O(n_hist) not O(V).
 * Returns the token id, or -1 if every logit is -inf or NaN (nothing can be drawn). If logprob is
 * not NULL it receives log p(token) under the final distribution (after penalties, temperature
 * and filters, renormalized; 0 for greedy and on -1). Cost for V = 50257: greedy and top-k
 * ~10-50 us; top-k off ~0.1 ms on peaked logits, up to ~0.5 ms on near-uniform ones. */
int sampler_sample(const sampler_params *p, float *logits, int n_vocab, const int *history,
                   int n_hist, uint64_t i, void *scratch, float *logprob);

/* Log-probabilities under the distribution softmax(logits) (temperature 1, no filters; pass the
 * logits sampler_sample left: biased and penalized): out_id[0] / out_lp[0] = token itself, then
 * out_id[1..n] / out_lp[1..n] = the n most likely tokens, most likely first, ties by lower id.
 * -inf and NaN logits count as probability 0 (logprob -inf). Returns the entries written (1 + n,
 * fewer if the vocabulary is smaller), or 0 if token is outside [0, n_vocab) or nothing is finite. */
int sampler_top_logprobs(const float *logits, int n_vocab, int token, int n, int *out_id, float *out_lp);

#endif
