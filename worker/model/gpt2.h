/* gpt2.h — the GPT-2 forward pass over a batch of tokens from many sequences.
 *
 * The weights (weights.h) are immutable and may be shared; a gpt2_state is what one engine owns:
 * every activation buffer for up to max_tokens tokens per call, per-thread scratch and the compute
 * thread pool. gpt2_state_new() allocates it all; gpt2_forward() allocates nothing. The batch is data: token i carries its sequence's KV slot and
 * its position, so one call can mix prefill chunks of several prompts with decode tokens of many
 * running sequences. For each layer all tokens' K/V rows are written to the arena before attention
 * runs, so a prefill chunk attends causally to itself. Logits are computed only for tokens whose
 * `out` index is >= 0, into row out[i] of logits (n_out, V).
 * Every per-token result is independent of the rest of the batch, bit for bit (see matmul.h). */
#ifndef GPT2D_GPT2_H
#define GPT2D_GPT2_H

#include <stddef.h>

#include "kv.h"
#include "weights.h"

typedef struct {
    int n;             /* tokens in the batch */
    const int *token;  /* (n) token ids */
    const int *pos;    /* (n) position of each token in its sequence */
    const int *slot;   /* (n) KV sequence of each token (kv.h), its pages prepared up to pos */
    const int *out;    /* (n) row of logits to write, or -1 for none */
} gpt2_batch;

typedef struct gpt2_state gpt2_state;

/* A forward-pass state over w (which must outlive it) for batches of up to max_tokens tokens and
 * contexts up to max_ctx positions, with n_threads compute threads (0 = all online cores).
 * NULL with err on failure (the rest of the forward pass needs AVX2 + FMA whatever the matmul
 * kernels are). */
gpt2_state *gpt2_state_new(const gpt2_weights *w, int max_tokens, int max_ctx, int n_threads, char *err,
                           size_t errlen);
void gpt2_state_free(gpt2_state *m); /* NULL-safe */
/* A second state over m's weights, compute threads and BLAS mode, with activation buffers of its
 * own for max_tokens tokens: it can run a whole forward pass while m holds a pass suspended between
 * layers (gpt2_forward_layers below). The two share a pool, so one thread drives both; free the twin
 * before m. NULL with err on failure. */
gpt2_state *gpt2_state_twin(gpt2_state *m, int max_tokens, char *err, size_t errlen);

/* Switches multi-row matmuls to OpenBLAS sgemm on the checkpoint's original tensors (w must have
 * been loaded with keep_checkpoint; -1 otherwise). Faster where OpenBLAS beats the panel kernels,
 * but a row's sums then depend on the batch shape: the output is no longer batch-invariant. For
 * measuring what invariance costs. */
int gpt2_use_blas(gpt2_state *m);

const gpt2_config *gpt2_config_of(const gpt2_state *m);
const gpt2_weights *gpt2_weights_of(const gpt2_state *m);
struct pool *gpt2_pool(gpt2_state *m); /* the compute threads, for work between forwards */
int gpt2_max_tokens(const gpt2_state *m);

/* Runs the batch: 0 on success, -1 if the batch is invalid (too many tokens, a token id or position
 * out of range, a sequence not open or a position without its page), with nothing computed. logits: (number of distinct out rows, V). */
int gpt2_forward(gpt2_state *m, kv_arena *kv, const gpt2_batch *b, float *logits);

/* gpt2_forward in pieces, so a caller can stop between layers and resume later: _begin validates the
 * batch (0, or -1 with nothing computed, as above) and embeds it; _layers runs blocks [l_from, l_to);
 * _end (after all n_layer blocks) computes the logits. Between the calls the pass lives in m's
 * activations: the batch's arrays and its sequences' KV pages must stay as they were, and m must not
 * run another pass (a twin can). The result is gpt2_forward's, bit for bit, however it is split. */
int gpt2_forward_begin(gpt2_state *m, kv_arena *kv, const gpt2_batch *b);
void gpt2_forward_layers(gpt2_state *m, kv_arena *kv, const gpt2_batch *b, int l_from, int l_to);
void gpt2_forward_end(gpt2_state *m, const gpt2_batch *b, float *logits);
/* gpt2_forward_end in pieces (the lm_head of a large batch is several layers' worth of work):
 * _norm (the final layer norm), then _logits for vocabulary columns [c0, c1) (c0 a multiple of
 * GPT2_LOGIT_ALIGN) of every out row, the column ranges covering [0, n_vocab) in any order. */
#define GPT2_LOGIT_ALIGN 16
void gpt2_forward_norm(gpt2_state *m, const gpt2_batch *b);
void gpt2_forward_logits(gpt2_state *m, const gpt2_batch *b, float *logits, int c0, int c1);

#endif
