/* checkpoint.h — GPT-2 checkpoints in the Hugging Face layout: load, validate, and make random ones.
 *
 * A model directory holds config.json, model.safetensors and the tokenizer (vocab.json + merges.txt,
 * or OpenAI's encoder.json + vocab.bpe; the tokenizer is bpe.h's business). ckpt_load() reads the
 * shape from config.json alone (n_layer, n_embd, n_head, n_positions/n_ctx, vocab_size,
 * layer_norm_epsilon), memory-maps model.safetensors, validates every byte it relies on, and hands out
 * fp32 tensors in the file's own layout (Conv1D weights are [in, out] row-major). Tensor names are HF's
 * (`h.0.attn.c_attn.weight`, `wte.weight`, `wpe.weight`, `ln_f.weight`, ...), with or without the
 * `transformer.` prefix; lm_head is tied to wte unless `lm_head.weight` is present. F32 tensors are
 * used in place when 4-byte aligned (else copied); F16/BF16 tensors are converted once into one
 * owned buffer. Every failure (missing file, truncated file, a header that lies about offsets, shapes
 * or dtypes, a missing tensor, a config that disagrees with the tensors) returns -1 with one message
 * in err naming the file and the problem; nothing crashes and nothing leaks.
 * ckpt_write_random() writes a seeded random-weight checkpoint of any GPT-2 shape in the same layout. */
#ifndef GPT2D_CHECKPOINT_H
#define GPT2D_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n_layer;   /* transformer blocks */
    int n_embd;    /* C: model width */
    int n_head;    /* attention heads; n_embd % n_head == 0 */
    int n_ctx;     /* T max: positions in wpe */
    int n_vocab;   /* V: rows of wte (50257 for GPT-2) */
    float ln_eps;  /* layer_norm_epsilon (1e-5) */
} gpt2_config;

typedef struct {
    const float *ln_1_w, *ln_1_b;        /* (C) */
    const float *c_attn_w;               /* (C, 3C) Conv1D [in,out]: q | k | v */
    const float *c_attn_b;               /* (3C) */
    const float *attn_proj_w;            /* (C, C) */
    const float *attn_proj_b;            /* (C) */
    const float *ln_2_w, *ln_2_b;        /* (C) */
    const float *c_fc_w;                 /* (C, 4C) */
    const float *c_fc_b;                 /* (4C) */
    const float *mlp_proj_w;             /* (4C, C) */
    const float *mlp_proj_b;             /* (C) */
} gpt2_layer_tensors;

typedef struct {
    gpt2_config cfg;
    const float *wte;                    /* (V, C) token embeddings */
    const float *wpe;                    /* (T, C) position embeddings */
    gpt2_layer_tensors *layers;          /* [n_layer] */
    const float *ln_f_w, *ln_f_b;        /* (C) */
    const float *lm_head;                /* (V, C); == wte when tied */
    /* ownership (private) */
    void *map;                           /* mmap of model.safetensors */
    size_t map_len;
    float *owned;                        /* converted / realigned tensors */
    size_t owned_len;                    /* floats in owned */
} gpt2_checkpoint;

/* Loads dir/config.json + dir/model.safetensors into ck (zeroed first). 0 on success;
 * -1 with a message in err (naming the file and the problem) on any failure, ck left empty.
 * The file's layer count (from the h.<i>. names) must equal n_layer; tensors the model does not use
 * (attn.bias / masked_bias buffers, any dtype) are ignored. The tensors stay valid until
 * ckpt_destroy(); those used in place point into a read-only mapping. */
int ckpt_load(gpt2_checkpoint *ck, const char *dir, char *err, size_t errlen);

/* Releases everything ckpt_load() took; safe on a zeroed or already destroyed ck. */
void ckpt_destroy(gpt2_checkpoint *ck);

/* Parses only dir/config.json into cfg (n_positions, else n_ctx; layer_norm_epsilon defaults to
 * 1e-5). Refuses out-of-range or inconsistent shapes and the GPT2Config options that would change
 * the computation (n_inner != 4*n_embd, a non-tanh GELU, other attention scalings).
 * 0 / -1 with err (cfg zeroed). */
int ckpt_read_config(gpt2_config *cfg, const char *dir, char *err, size_t errlen);

/* Writes a GPT-2 checkpoint with seeded random weights to dir (created if needed): config.json,
 * model.safetensors (F32, HF tensor names without prefix, lm_head tied) and the tokenizer files
 * vocab.json + merges.txt copied from tokenizer_dir (NULL: none copied). Weights are N(0, 0.02) as
 * GPT-2's init (c_proj weights / sqrt(2 n_layer)), wpe N(0, 0.01), biases N(0, 0.01), LN gains 1,
 * except ln_f whose gain is 16 so that logits are peaked (top-1 ahead of top-2 by > 0.5 at ~3/4 of
 * positions: greedy decoding is then stable and comparisons meaningful). The normal draws are
 * Irwin-Hall sums of four uniforms from a counter-based splitmix64 (integer arithmetic only), so the
 * same (cfg, seed) writes byte-identical files on every machine. Each file is written to *.tmp and
 * renamed into place (a process that has the old model mapped keeps it). 0 / -1 with err. */
int ckpt_write_random(const char *dir, const gpt2_config *cfg, uint64_t seed,
                      const char *tokenizer_dir, char *err, size_t errlen);

#endif
