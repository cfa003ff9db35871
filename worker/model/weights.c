/* weights.c — see weights.h. Reads top to bottom: the image layout, private memory, the cache,
 * loading. */
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "wimage.h"

struct gpt2_weights {
    gpt2_config cfg;
    int tied;                       /* lm_head is wte (HF gpt2) */
    const mm_kernels *kern;
    mm_dtype dtype;                 /* the matrices' panel format */
    char fingerprint[GPT2_FINGERPRINT_MAX];
    gpt2_weights_info info;
    char *mem;                      /* private image (anonymous mapping), or NULL */
    size_t mem_bytes;
    wimage_mapping file;            /* shared image (cache file), or zeroed */
    size_t image_bytes;
    const float *wpe;               /* (T, C) */
    const float *ln_f_w, *ln_f_b;   /* (C) */
    const float *wte;               /* (V, C) plain copy, only when lm_head is untied */
    gpt2_layer *layers;             /* [L] */
    mm_weight lm_head;              /* C -> V (also the token embedding table when tied) */
    gpt2_checkpoint ck;             /* with keep_checkpoint */
};

/* ---------------------------------------------------------------------------------------------
 * The image: every tensor at a 64-byte aligned offset, in a fixed order that depends only on the
 * shape, on tying and on the matrices' format (dtype; vectors, wpe and an untied wte stay fp32);
 * build and map walk the same order (layout_image). */

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static size_t image_bytes(const gpt2_config *c, int tied, mm_dtype t) {
    size_t C = c->n_embd, n = 0, f = sizeof(float);
    if (!tied) n += round_up((size_t)c->n_vocab * C * f, 64);
    n += round_up((size_t)c->n_ctx * C * f, 64) + 2 * round_up(C * f, 64);
    size_t per = 4 * round_up(C * f, 64) + 4 * round_up(4 * C * f, 64);
    per += mm_packed_bytes(C, 3 * C, t) + mm_packed_bytes(C, C, t) + mm_packed_bytes(C, 4 * C, t) +
           mm_packed_bytes(4 * C, C, t);
    n += per * c->n_layer + mm_packed_bytes(C, c->n_vocab, t);
    return n;
}

/* The next n floats of the image at *off (bytes); copies src there when building (src != NULL). */
static const float *take(char *base, size_t *off, size_t n, const float *src) {
    float *p = (float *)(base + *off);
    *off += round_up(n * sizeof(float), 64);
    if (src) memcpy(p, src, n * sizeof(float));
    return p;
}

/* One matrix: packs it from ck when building, else describes the packed panels in place. */
static void take_matrix(mm_weight *w, mm_dtype t, char *base, size_t *off, const float *W, int K, int N,
                        int transposed, const float *bias, int build) {
    char *p = base + *off;
    *off += mm_packed_bytes(K, N, t);
    if (build) mm_pack(w, p, W, K, N, transposed, bias, t);
    else mm_bind(w, p, K, N, bias, t);
}

/* Points every tensor of w into base; with ck, copies and packs the checkpoint there first. */
static void layout_image(gpt2_weights *w, char *base, const gpt2_checkpoint *ck) {
    const gpt2_config *c = &w->cfg;
    int C = c->n_embd, b = ck != NULL;
    size_t off = 0;
#define SRC(x) (b ? (x) : NULL)
    w->wpe = take(base, &off, (size_t)c->n_ctx * C, SRC(ck->wpe));
    w->ln_f_w = take(base, &off, C, SRC(ck->ln_f_w));
    w->ln_f_b = take(base, &off, C, SRC(ck->ln_f_b));
    if (!w->tied) w->wte = take(base, &off, (size_t)c->n_vocab * C, SRC(ck->wte));
    for (int l = 0; l < c->n_layer; l++) {
        const gpt2_layer_tensors *t = b ? &ck->layers[l] : NULL;
        gpt2_layer *L = &w->layers[l];
        L->ln_1_w = take(base, &off, C, SRC(t->ln_1_w));
        L->ln_1_b = take(base, &off, C, SRC(t->ln_1_b));
        L->ln_2_w = take(base, &off, C, SRC(t->ln_2_w));
        L->ln_2_b = take(base, &off, C, SRC(t->ln_2_b));
        const float *b_attn = take(base, &off, 3 * C, SRC(t->c_attn_b));
        const float *b_proj = take(base, &off, C, SRC(t->attn_proj_b));
        const float *b_fc = take(base, &off, 4 * C, SRC(t->c_fc_b));
        const float *b_mlp = take(base, &off, C, SRC(t->mlp_proj_b));
        take_matrix(&L->c_attn, w->dtype, base, &off, SRC(t->c_attn_w), C, 3 * C, 0, b_attn, b);
        take_matrix(&L->attn_proj, w->dtype, base, &off, SRC(t->attn_proj_w), C, C, 0, b_proj, b);
        take_matrix(&L->c_fc, w->dtype, base, &off, SRC(t->c_fc_w), C, 4 * C, 0, b_fc, b);
        take_matrix(&L->mlp_proj, w->dtype, base, &off, SRC(t->mlp_proj_w), 4 * C, C, 0, b_mlp, b);
    }
    take_matrix(&w->lm_head, w->dtype, base, &off, SRC(ck->lm_head), C, c->n_vocab, 1, NULL, b);
#undef SRC
}

/* ---------------------------------------------------------------------------------------------
 * Private memory: anonymous, transparent huge pages advised (GPT2D_NO_HUGEPAGES=1: 4 KB pages). */

static int no_huge(void) {
    const char *no = getenv("GPT2D_NO_HUGEPAGES");
    return no && *no == '1';
}

static char *map_private(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    madvise(p, bytes, no_huge() ? MADV_NOHUGEPAGE : MADV_HUGEPAGE);
    return p;
}

/* Packs ck into fresh private memory. 0 or -1 with err. */
static int build_private(gpt2_weights *w, const gpt2_checkpoint *ck, char *err, size_t errlen) {
    w->mem_bytes = round_up(w->image_bytes, (size_t)2 << 20);
    w->mem = map_private(w->mem_bytes);
    if (!w->mem) {
        snprintf(err, errlen, "weights: cannot map %zu MiB", w->mem_bytes >> 20);
        return -1;
    }
    layout_image(w, w->mem, ck);
    return 0;
}

static void drop_private(gpt2_weights *w) {
    if (w->mem) munmap(w->mem, w->mem_bytes);
    w->mem = NULL;
}

/* ---------------------------------------------------------------------------------------------
 * The cache. */

const char *gpt2_weights_default_cache(char *buf, size_t cap) {
    const char *v;
    if ((v = getenv("GPT2D_WEIGHTS_CACHE")) && *v) snprintf(buf, cap, "%s", v);
    else if ((v = getenv("CACHE_DIRECTORY")) && *v) snprintf(buf, cap, "%.*s", (int)strcspn(v, ":"), v);
    else if ((v = getenv("XDG_CACHE_HOME")) && *v) snprintf(buf, cap, "%s/gpt2d", v);
    else if ((v = getenv("HOME")) && *v) snprintf(buf, cap, "%s/.cache/gpt2d", v);
    else snprintf(buf, cap, "/tmp/gpt2d-cache-%d", (int)getuid());
    return buf;
}

/* Maps the cache file into w (tied and the tensors from it). 0, 1 if absent, -1 if unusable (note). */
static int cache_map(gpt2_weights *w, wimage_key *k) {
    int rc = wimage_map(w->info.path, k, no_huge(), &w->file, w->info.note, sizeof w->info.note);
    if (rc != 0) return rc;
    w->tied = (int)k->tied;
    if (k->data_bytes != image_bytes(&w->cfg, w->tied, w->dtype)) {
        snprintf(w->info.note, sizeof w->info.note, "%.400s: image size does not match the shape", w->info.path);
        wimage_unmap(&w->file);
        return -1;
    }
    w->image_bytes = k->data_bytes;
    layout_image(w, (char *)w->file.data, NULL);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Loading. */

/* The cache directory o names (or the default), or NULL when the image is to stay private. */
static const char *cache_dir(const gpt2_weights_opts *o, char *buf, size_t cap) {
    if (o->keep_checkpoint) return NULL;
    const char *d = o->cache_dir && *o->cache_dir ? o->cache_dir : gpt2_weights_default_cache(buf, cap);
    return strcmp(d, "off") == 0 ? NULL : d;
}

/* Packs the checkpoint into private memory and, with a cache, writes it there and maps it instead
 * (the private copy stays when the file cannot be written; note says why). 0 or -1 with err. */
static int build(gpt2_weights *w, const char *dir, wimage_key *k, int keep_ck, char *err, size_t errlen) {
    if (ckpt_load(&w->ck, dir, err, errlen) != 0) return -1;
    w->tied = w->ck.lm_head == w->ck.wte;
    w->image_bytes = image_bytes(&w->cfg, w->tied, w->dtype);
    if (build_private(w, &w->ck, err, errlen) != 0) return -1;
    if (!keep_ck) ckpt_destroy(&w->ck);
    if (!w->info.path[0]) return 0;
    k->tied = (uint32_t)w->tied;
    k->data_bytes = w->image_bytes;
    char why[512];
    int wrote = wimage_write(w->info.path, k, w->mem, why, sizeof why) == 0;
    if (wrote && cache_map(w, k) == 0) {
        drop_private(w);
        return 0;
    }
    if (wrote) snprintf(why, sizeof why, "%s", w->info.note); /* written, but it would not map back */
    snprintf(w->info.note, sizeof w->info.note, "cache not written (%.400s); private copy", why);
    w->info.source = GPT2_IMAGE_PRIVATE;
    w->info.path[0] = 0;
    layout_image(w, w->mem, NULL);
    return 0;
}

gpt2_weights *gpt2_weights_load(const char *dir, const gpt2_weights_opts *o, char *err, size_t errlen) {
    gpt2_weights_opts none = {0};
    char buf[4096];
    int lock = -1;
    if (!o) o = &none;
    gpt2_weights *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "weights: out of memory");
        return NULL;
    }
    const char *isa = o->isa && *o->isa && strcmp(o->isa, "auto") != 0 ? o->isa : getenv("GPT2D_ISA");
    w->kern = mm_kernels_select(isa, err, errlen);
    if (!w->kern || ckpt_read_config(&w->cfg, dir, err, errlen) != 0) goto fail;
    w->dtype = MM_F32;
    if (o->weights && *o->weights && mm_dtype_parse(o->weights, &w->dtype) != 0) {
        snprintf(err, errlen, "weights: unknown format '%.64s' (fp32, bf16 or int8)", o->weights);
        goto fail;
    }
    if (!w->kern->forward[w->dtype]) {
        snprintf(err, errlen, "weights: the %s kernels do not run %s weights", w->kern->name, mm_dtype_name(w->dtype));
        goto fail;
    }
    w->layers = calloc((size_t)w->cfg.n_layer, sizeof *w->layers);
    if (!w->layers) {
        snprintf(err, errlen, "weights: out of memory");
        goto fail;
    }
    wimage_key k = {.packing = GPT2_PACKING_VERSION, .dtype = (uint32_t)w->dtype, .cfg = w->cfg};
    if (wimage_hash_checkpoint(dir, k.ckpt_hash, err, errlen) != 0) goto fail;
    for (int i = 0; i < 16; i++) snprintf(w->info.ckpt_hash + 2 * i, 3, "%02x", k.ckpt_hash[i]);
    snprintf(w->fingerprint, sizeof w->fingerprint, "%s/%s/%.16s", mm_dtype_tag(w->dtype), w->kern->name,
             w->info.ckpt_hash);
    w->info.source = GPT2_IMAGE_PRIVATE;
    const char *cache = cache_dir(o, buf, sizeof buf);
    if (cache && wimage_path(w->info.path, sizeof w->info.path, cache, &k, mm_dtype_tag(w->dtype)) != 0) {
        snprintf(w->info.note, sizeof w->info.note, "cache directory path too long; private copy");
        cache = NULL;
    }
    if (cache && (lock = wimage_lock(cache, w->info.path, buf, sizeof buf)) < 0) {
        snprintf(w->info.note, sizeof w->info.note, "cache not used (%.400s); private copy", buf);
        cache = NULL;
    }
    if (!cache) w->info.path[0] = 0;
    if (cache) {
        int rc = cache_map(w, &k);
        w->info.source = rc == 0 ? GPT2_IMAGE_MAPPED : rc < 0 ? GPT2_IMAGE_REBUILT : GPT2_IMAGE_BUILT;
        if (rc < 0) unlink(w->info.path); /* never used: rebuilt below */
    }
    if (w->info.source != GPT2_IMAGE_MAPPED && build(w, dir, &k, o->keep_checkpoint, err, errlen) != 0) goto fail;
    wimage_unlock(lock);
    w->info.bytes = w->image_bytes;
    w->info.huge_bytes = wimage_huge_bytes(w->mem ? (const void *)w->mem : w->file.data);
    return w;
fail:
    wimage_unlock(lock);
    gpt2_weights_free(w);
    return NULL;
}

void gpt2_weights_free(gpt2_weights *w) {
    if (!w) return;
    drop_private(w);
    wimage_unmap(&w->file);
    ckpt_destroy(&w->ck);
    free(w->layers);
    free(w);
}

const gpt2_config *gpt2_weights_config(const gpt2_weights *w) { return &w->cfg; }
const gpt2_weights_info *gpt2_weights_info_of(const gpt2_weights *w) { return &w->info; }
const char *gpt2_weights_fingerprint(const gpt2_weights *w) { return w->fingerprint; }
const mm_kernels *gpt2_weights_kernels(const gpt2_weights *w) { return w->kern; }
size_t gpt2_weights_streamed_bytes(const gpt2_weights *w) { return w->image_bytes; }
mm_dtype gpt2_weights_dtype(const gpt2_weights *w) { return w->dtype; }
const gpt2_checkpoint *gpt2_weights_checkpoint(const gpt2_weights *w) { return w->ck.map || w->ck.owned ? &w->ck : NULL; }
const gpt2_layer *gpt2_weights_layer(const gpt2_weights *w, int l) { return &w->layers[l]; }
const float *gpt2_weights_wpe(const gpt2_weights *w) { return w->wpe; }
const float *gpt2_weights_wte(const gpt2_weights *w) { return w->wte; }
const mm_weight *gpt2_weights_lm_head(const gpt2_weights *w) { return &w->lm_head; }
const float *gpt2_weights_ln_f(const gpt2_weights *w, const float **bias) {
    *bias = w->ln_f_b;
    return w->ln_f_w;
}
