/* weights.h — a GPT-2 checkpoint's weights as the forward pass reads them: immutable, packed
 * (matmul.h panels), with the kernel family that runs them chosen once here.
 *
 * gpt2_weights_load() reads a model directory and gives the packed image in one of two ways:
 *   - shared (the default): the image lives in a cache file (wimage.h) keyed by the checkpoint's
 *     content hash and the packing version, built once (atomically, under a lock) and mapped
 *     read-only MAP_SHARED by every process that loads the same checkpoint: N workers hold one copy.
 *     A restart maps the file instead of repacking. A cache file that fails its checks (header,
 *     size, checksum) is rebuilt, never used.
 *   - private (cache_dir "off", or keep_checkpoint): packed into this process's own anonymous
 *     huge-page memory, as before.
 * Huge pages: both ask for 2 MB pages (MADV_HUGEPAGE; single-sequence decode streams every weight
 * once per token and ran 1.3x faster on them). A file mapping gets them only where the filesystem
 * caches files in large folios (ext4 on Linux >= 6.16, xfs, tmpfs mounted huge=...); the load
 * reports how much of the image is PMD-mapped (info.huge_bytes) and the caller logs a fall-back.
 * GPT2D_NO_HUGEPAGES=1 advises 4 KB pages instead (for measuring).
 * The matrices (the four of each layer and lm_head, which is also the token embedding when tied) are
 * packed in the format opts.weights names (matmul.h: fp32, bf16, int8); the image file is keyed by
 * it too. The numerics fingerprint "<dtype tag>/<kernel family>/<checkpoint hash>" (f32, bf16, i8)
 * names what decides the bits a forward pass produces: two loads with the same fingerprint compute
 * the same logits, bit for bit. (Every format is in fact bit-identical across the kernel families,
 * see matmul.h; the family stays in the fingerprint as the conservative choice.)
 * A gpt2_weights is read-only after load: any number of engines (threads) may share one. */
#ifndef GPT2D_WEIGHTS_H
#define GPT2D_WEIGHTS_H

#include <stddef.h>

#include "checkpoint.h"
#include "matmul.h"

#define GPT2_PACKING_VERSION 1   /* bump when the image layout or packing changes (the dtype is keyed apart) */
#define GPT2_FINGERPRINT_MAX 64  /* bytes, with the NUL */

typedef struct {
    const float *ln_1_w, *ln_1_b;   /* (C) */
    mm_weight c_attn;               /* C -> 3C */
    mm_weight attn_proj;            /* C -> C */
    const float *ln_2_w, *ln_2_b;   /* (C) */
    mm_weight c_fc;                 /* C -> 4C */
    mm_weight mlp_proj;             /* 4C -> C */
} gpt2_layer;

typedef struct {
    const char *cache_dir;  /* image cache directory; NULL or "": gpt2_weights_default_cache(); "off":
                               no cache, a private copy */
    const char *isa;        /* kernel family (matmul.h); NULL / "" / "auto": $GPT2D_ISA, else the best */
    const char *weights;    /* the matrices' format (matmul.h): "fp32" (NULL / ""), "bf16" or "int8" */
    int keep_checkpoint;    /* keep the original tensors too (OpenBLAS mode needs them); implies private */
} gpt2_weights_opts;

typedef enum {
    GPT2_IMAGE_PRIVATE = 0, /* packed into private memory */
    GPT2_IMAGE_MAPPED,      /* an existing cache file, mapped */
    GPT2_IMAGE_BUILT,       /* no cache file yet: built, then mapped */
    GPT2_IMAGE_REBUILT,     /* the cache file failed its checks (note says why): rebuilt, then mapped */
} gpt2_image_source;

typedef struct {
    gpt2_image_source source;
    char path[4096];        /* the cache file ("" when private) */
    char note[512];         /* why it was rebuilt, or why the cache was not used; "" if nothing to say */
    size_t bytes;           /* the packed image */
    size_t huge_bytes;      /* of which mapped with 2 MB pages (as the kernel reports it) */
    char ckpt_hash[33];     /* 128-bit content hash of config.json + model.safetensors, hex */
} gpt2_weights_info;

typedef struct gpt2_weights gpt2_weights;

/* Loads dir's checkpoint into packed weights. NULL with err on failure (a checkpoint error as
 * ckpt_load's; an unusable cache directory is not an error: the image is then private and
 * info.note says why). */
gpt2_weights *gpt2_weights_load(const char *dir, const gpt2_weights_opts *o, char *err, size_t errlen);
void gpt2_weights_free(gpt2_weights *w); /* NULL-safe */

/* The default cache directory into buf: $GPT2D_WEIGHTS_CACHE, else $CACHE_DIRECTORY (systemd's
 * CacheDirectory=), else $XDG_CACHE_HOME/gpt2d, else $HOME/.cache/gpt2d, else /tmp/gpt2d-cache-UID.
 * (Not the runtime directory: tmpfs usually gives 4 KB pages, see above.) */
const char *gpt2_weights_default_cache(char *buf, size_t cap);

const gpt2_config *gpt2_weights_config(const gpt2_weights *w);
const gpt2_weights_info *gpt2_weights_info_of(const gpt2_weights *w);
const char *gpt2_weights_fingerprint(const gpt2_weights *w); /* e.g. "f32/avx2/0123456789abcdef", "i8/avx512/..." */
mm_dtype gpt2_weights_dtype(const gpt2_weights *w);          /* the matrices' format */
const mm_kernels *gpt2_weights_kernels(const gpt2_weights *w);
size_t gpt2_weights_streamed_bytes(const gpt2_weights *w);    /* packed weights read per forward */
const gpt2_checkpoint *gpt2_weights_checkpoint(const gpt2_weights *w); /* with keep_checkpoint, else NULL */

/* The packed tensors (pointers into the image). */
const gpt2_layer *gpt2_weights_layer(const gpt2_weights *w, int l);
const float *gpt2_weights_wpe(const gpt2_weights *w);      /* (T, C) */
const float *gpt2_weights_wte(const gpt2_weights *w);      /* (V, C) when lm_head is untied, else NULL */
const mm_weight *gpt2_weights_lm_head(const gpt2_weights *w); /* C -> V (the tied wte, packed) */
const float *gpt2_weights_ln_f(const gpt2_weights *w, const float **bias); /* (C) gain; *bias (C) */

#endif
