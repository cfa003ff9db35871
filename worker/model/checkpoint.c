/* checkpoint.c — load/validate HF GPT-2 checkpoints, write seeded random ones; see checkpoint.h.
 *
 * Reading order: config.json (parse + validate), the tensor table shared by loader and writer,
 * the loader (map, parse, resolve names/shapes/dtypes, materialize fp32), then the writer
 * (deterministic generator, safetensors + config.json + tokenizer copy, each via *.tmp + rename). */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <immintrin.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

#define CKPT_MAX_LAYER 256
#define CKPT_MAX_EMBD 16384
#define CKPT_MAX_CTX 65536
#define CKPT_MAX_VOCAB (1 << 20)
#define CKPT_LN_F_GAIN 16.0f /* random checkpoints' ln_f gain: top-1 margin > 0.5 at ~75% of positions */

static int ckpt_fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* ================================================================ config.json */

/* Bounds and consistency of a shape; who names where cfg came from ("x/config.json", "config").
 * 0 / -1 with err. */
static int ckpt_config_check(const gpt2_config *c, const char *who, char *err, size_t errlen) {
    const struct { const char *key; int v, max; } f[] = {
        {"n_layer", c->n_layer, CKPT_MAX_LAYER},   {"n_embd", c->n_embd, CKPT_MAX_EMBD},
        {"n_head", c->n_head, CKPT_MAX_EMBD},      {"n_positions", c->n_ctx, CKPT_MAX_CTX},
        {"vocab_size", c->n_vocab, CKPT_MAX_VOCAB},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v < 1 || f[i].v > f[i].max)
            return ckpt_fail(err, errlen, "%s: %s=%d is outside [1, %d]", who, f[i].key, f[i].v,
                             f[i].max);
    if (c->n_embd % c->n_head != 0)
        return ckpt_fail(err, errlen, "%s: n_embd=%d is not divisible by n_head=%d", who,
                         c->n_embd, c->n_head);
    if (!(c->ln_eps > 0.0f && c->ln_eps < 1.0f))
        return ckpt_fail(err, errlen, "%s: layer_norm_epsilon=%g is outside (0, 1)", who,
                         (double)c->ln_eps);
    return 0;
}

/* root[key] as an int in *out. Absent: 1 (nothing written). Not an integer in int range: -1. */
static int ckpt_json_int(const json_t *root, const char *key, int *out, const char *path,
                         char *err, size_t errlen) {
    const json_t *j = json_object_get(root, key);
    if (!j) return 1;
    if (!json_is_integer(j)) return ckpt_fail(err, errlen, "%s: %s is not an integer", path, key);
    if (json_integer_value(j) < INT_MIN || json_integer_value(j) > INT_MAX)
        return ckpt_fail(err, errlen, "%s: %s=%lld is out of range", path, key,
                         (long long)json_integer_value(j));
    *out = (int)json_integer_value(j);
    return 0;
}

/* The integer fields of config.json into c (n_positions, else n_ctx). 0 / -1 with err. */
static int ckpt_config_ints(const json_t *root, gpt2_config *c, const char *path, char *err,
                            size_t errlen) {
    const char *keys[] = {"n_layer", "n_embd", "n_head", "vocab_size"};
    int *dst[] = {&c->n_layer, &c->n_embd, &c->n_head, &c->n_vocab};
    for (int i = 0; i < 4; i++) {
        int rc = ckpt_json_int(root, keys[i], dst[i], path, err, errlen);
        if (rc > 0) return ckpt_fail(err, errlen, "%s: missing %s", path, keys[i]);
        if (rc < 0) return -1;
    }
    int rc = ckpt_json_int(root, "n_positions", &c->n_ctx, path, err, errlen);
    if (rc > 0) rc = ckpt_json_int(root, "n_ctx", &c->n_ctx, path, err, errlen);
    if (rc > 0) return ckpt_fail(err, errlen, "%s: missing n_positions (or n_ctx)", path);
    return rc;
}

/* Options of HF's GPT2Config that would change the computation: refused unless at the GPT-2
 * values the model implements (absent means the default, which is GPT-2's). 0 / -1 with err. */
static int ckpt_config_variant(const json_t *root, const gpt2_config *c, const char *path,
                               char *err, size_t errlen) {
    const json_t *inner = json_object_get(root, "n_inner");
    if (inner && !json_is_null(inner) &&
        !(json_is_integer(inner) && json_integer_value(inner) == 4 * (json_int_t)c->n_embd))
        return ckpt_fail(err, errlen, "%s: n_inner must be null or 4*n_embd=%d", path,
                         4 * c->n_embd);
    const json_t *act = json_object_get(root, "activation_function");
    const char *a = act ? json_string_value(act) : "gelu_new";
    if (!a || (strcmp(a, "gelu_new") && strcmp(a, "gelu_pytorch_tanh") && strcmp(a, "gelu_fast")))
        return ckpt_fail(err, errlen, "%s: activation_function must be gelu_new (tanh GELU)", path);
    if (json_is_true(json_object_get(root, "scale_attn_by_inverse_layer_idx")) ||
        json_is_false(json_object_get(root, "scale_attn_weights")))
        return ckpt_fail(err, errlen, "%s: only GPT-2's 1/sqrt(head_dim) attention scaling is "
                         "supported", path);
    return 0;
}

/* Fills c from a parsed config.json object. 0 / -1 with err. */
static int ckpt_config_from_json(const json_t *root, gpt2_config *c, const char *path, char *err,
                                 size_t errlen) {
    if (!json_is_object(root)) return ckpt_fail(err, errlen, "%s: not a JSON object", path);
    if (ckpt_config_ints(root, c, path, err, errlen) != 0) return -1;
    const json_t *eps = json_object_get(root, "layer_norm_epsilon");
    if (eps && !json_is_number(eps))
        return ckpt_fail(err, errlen, "%s: layer_norm_epsilon is not a number", path);
    c->ln_eps = eps ? (float)json_number_value(eps) : 1e-5f;
    if (ckpt_config_check(c, path, err, errlen) != 0) return -1;
    return ckpt_config_variant(root, c, path, err, errlen);
}

int ckpt_read_config(gpt2_config *cfg, const char *dir, char *err, size_t errlen) {
    char path[PATH_MAX];
    memset(cfg, 0, sizeof *cfg);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *fp = fopen(path, "rb");
    if (!fp) return ckpt_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    json_error_t jerr;
    json_t *root = json_loadf(fp, JSON_REJECT_DUPLICATES, &jerr);
    fclose(fp);
    if (!root)
        return ckpt_fail(err, errlen, "%s: not valid JSON: %s (line %d)", path, jerr.text,
                         jerr.line);
    gpt2_config c = {0};
    int rc = ckpt_config_from_json(root, &c, path, err, errlen);
    json_decref(root);
    if (rc == 0) *cfg = c;
    return rc;
}

/* ================================================================ the tensor table */

/* One tensor of the model: its HF name and shape, where the loader puts it, how the writer makes it. */
typedef struct {
    char name[48];
    int ndim;
    uint64_t shape[2];
    const float **dst;       /* loader: the gpt2_checkpoint field it fills */
    int optional;            /* lm_head.weight: absent means tied */
    float std;               /* writer: N(0, std) when > 0 ... */
    float value;             /* ... else every element = value */
    const st_tensor *t;      /* loader: the file's tensor (NULL while unresolved / absent) */
    size_t owned_off;        /* loader: float offset in owned, or SIZE_MAX when used in place */
} ckpt_spec;

static void ckpt_spec_set(ckpt_spec *s, const char *name, uint64_t d0, uint64_t d1,
                          const float **dst, float std, float value) {
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = d1 ? 2 : 1;
    s->shape[0] = d0;
    s->shape[1] = d1;
    s->dst = dst;
    s->std = std;
    s->value = value;
    s->owned_off = SIZE_MAX;
}

/* Fills s[0..12) for layer i. dst pointers go into l (may be a scratch struct for the writer). */
static void ckpt_specs_layer(ckpt_spec *s, int i, const gpt2_config *c, gpt2_layer_tensors *l) {
    uint64_t C = (uint64_t)c->n_embd;
    float w = 0.02f, b = 0.01f, proj = (float)(0.02 / sqrt(2.0 * c->n_layer));
    const struct { const char *n; uint64_t d0, d1; const float **dst; float std, value; } t[12] = {
        {"ln_1.weight", C, 0, &l->ln_1_w, 0, 1},          {"ln_1.bias", C, 0, &l->ln_1_b, 0, 0},
        {"attn.c_attn.weight", C, 3 * C, &l->c_attn_w, w, 0},
        {"attn.c_attn.bias", 3 * C, 0, &l->c_attn_b, b, 0},
        {"attn.c_proj.weight", C, C, &l->attn_proj_w, proj, 0},
        {"attn.c_proj.bias", C, 0, &l->attn_proj_b, b, 0},
        {"ln_2.weight", C, 0, &l->ln_2_w, 0, 1},          {"ln_2.bias", C, 0, &l->ln_2_b, 0, 0},
        {"mlp.c_fc.weight", C, 4 * C, &l->c_fc_w, w, 0},  {"mlp.c_fc.bias", 4 * C, 0, &l->c_fc_b, b, 0},
        {"mlp.c_proj.weight", 4 * C, C, &l->mlp_proj_w, proj, 0},
        {"mlp.c_proj.bias", C, 0, &l->mlp_proj_b, b, 0},
    };
    for (int k = 0; k < 12; k++) {
        char name[48];
        snprintf(name, sizeof name, "h.%d.%s", i, t[k].n);
        ckpt_spec_set(&s[k], name, t[k].d0, t[k].d1, t[k].dst, t[k].std, t[k].value);
    }
}

/* The model's tensors in file order (wte, wpe, h.0 ... h.L-1, ln_f, then the optional lm_head),
 * with destinations in ck (whose layers array must hold n_layer entries). Returns a malloc'd
 * array of *n specs, or NULL when out of memory. */
static ckpt_spec *ckpt_specs(const gpt2_config *c, gpt2_checkpoint *ck, int *n) {
    int total = 12 * c->n_layer + 5;
    ckpt_spec *s = malloc((size_t)total * sizeof *s);
    if (!s) return NULL;
    uint64_t C = (uint64_t)c->n_embd, V = (uint64_t)c->n_vocab, T = (uint64_t)c->n_ctx;
    ckpt_spec_set(&s[0], "wte.weight", V, C, &ck->wte, 0.02f, 0);
    ckpt_spec_set(&s[1], "wpe.weight", T, C, &ck->wpe, 0.01f, 0);
    for (int i = 0; i < c->n_layer; i++) ckpt_specs_layer(&s[2 + 12 * i], i, c, &ck->layers[i]);
    ckpt_spec_set(&s[total - 3], "ln_f.weight", C, 0, &ck->ln_f_w, 0, CKPT_LN_F_GAIN);
    ckpt_spec_set(&s[total - 2], "ln_f.bias", C, 0, &ck->ln_f_b, 0, 0);
    ckpt_spec_set(&s[total - 1], "lm_head.weight", V, C, &ck->lm_head, 0, 0);
    s[total - 1].optional = 1;
    *n = total;
    return s;
}

/* ================================================================ loading */

/* Maps path read-only into ck->map / map_len; a file under 8 bytes is left unmapped (map NULL)
 * for st_parse to reject. 0 / -1 with err. */
static int ckpt_map(gpt2_checkpoint *ck, const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ckpt_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ckpt_fail(err, errlen, "%s: not a regular file", path);
    }
    ck->map_len = (size_t)st.st_size;
    if (ck->map_len >= 8) {
        void *m = mmap(NULL, ck->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            ck->map_len = 0;
            return ckpt_fail(err, errlen, "%s: cannot map: %s", path, strerror(errno));
        }
        ck->map = m;
    }
    close(fd);
    return 0;
}

/* The layer count the file's names imply: 1 + the largest i in "[transformer.]h.<i>.". */
static int ckpt_file_layers(const st_file *f) {
    int n = 0;
    for (int k = 0; k < f->n_tensors; k++) {
        const char *s = f->tensors[k].name;
        if (strncmp(s, "transformer.", 12) == 0) s += 12;
        if (strncmp(s, "h.", 2) != 0) continue;
        s += 2;
        long i = 0;
        int digits = 0;
        for (; *s >= '0' && *s <= '9' && digits < 7; s++, digits++) i = 10 * i + (*s - '0');
        if (digits > 0 && *s == '.' && i + 1 > n) n = (int)(i + 1);
    }
    return n;
}

/* "[d0,d1]" of a shape into buf. */
static void ckpt_shape_str(char *buf, size_t len, int ndim, const uint64_t *shape) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, "%s%llu", d ? "," : "", (unsigned long long)shape[d]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* Finds s in f (as named, else with the "transformer." prefix) and checks its dtype and shape.
 * A missing optional tensor leaves s->t NULL. 0 / -1 with err. */
static int ckpt_resolve(ckpt_spec *s, const st_file *f, const char *path, char *err, size_t errlen) {
    char pre[64];
    snprintf(pre, sizeof pre, "transformer.%s", s->name);
    s->t = st_find(f, s->name);
    if (!s->t) s->t = st_find(f, pre);
    if (!s->t)
        return s->optional ? 0 : ckpt_fail(err, errlen, "%s: missing tensor %s", path, s->name);
    const st_tensor *t = s->t;
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return ckpt_fail(err, errlen, "%s: tensor %s has unsupported dtype %s (need F32, F16 or "
                         "BF16)", path, t->name, st_dtype_name(t->dtype));
    if (t->ndim != s->ndim || memcmp(t->shape, s->shape, (size_t)s->ndim * sizeof s->shape[0])) {
        char got[128], want[64];
        ckpt_shape_str(got, sizeof got, t->ndim, t->shape);
        ckpt_shape_str(want, sizeof want, s->ndim, s->shape);
        return ckpt_fail(err, errlen, "%s: tensor %s has shape %s, config.json says %s", path,
                         t->name, got, want);
    }
    return 0;
}

/* n halves (F16 or BF16 bit patterns) at src, any alignment, into fp32 at dst. Exact: F16C
 * handles subnormals, infinities and NaNs; BF16 is the top half of an fp32. */
static void ckpt_convert(float *dst, const uint8_t *src, size_t n, st_dtype dtype) {
    size_t i = 0;
    if (dtype == ST_F16)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        if (dtype == ST_F16) {
            dst[i] = _cvtsh_ss(h);
        } else {
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&dst[i], &bits, 4);
        }
    }
}

/* Resolves every spec; those not usable in place (F16, BF16, misaligned F32) get a 64-byte aligned
 * slot in owned, whose total size in floats goes to *owned. 0 / -1 with err. */
static int ckpt_resolve_all(ckpt_spec *s, int n, const st_file *f, const char *path,
                            size_t *owned, char *err, size_t errlen) {
    *owned = 0;
    for (int k = 0; k < n; k++) {
        if (ckpt_resolve(&s[k], f, path, err, errlen) != 0) return -1;
        if (!s[k].t) continue;
        if (s[k].t->dtype == ST_F32 && ((uintptr_t)s[k].t->data & 3) == 0) continue;
        s[k].owned_off = *owned;
        *owned += (s[k].t->numel + 15) & ~(uint64_t)15;
    }
    return 0;
}

/* Points every resolved spec's destination at its fp32 data, converting into ck->owned. */
static void ckpt_materialize(gpt2_checkpoint *ck, const ckpt_spec *s, int n) {
    for (int k = 0; k < n; k++) {
        const st_tensor *t = s[k].t;
        if (!t) continue;
        if (s[k].owned_off == SIZE_MAX) {
            *s[k].dst = (const float *)(const void *)t->data;
            continue;
        }
        float *dst = ck->owned + s[k].owned_off;
        if (t->dtype == ST_F32)
            memcpy(dst, t->data, t->nbytes);
        else
            ckpt_convert(dst, t->data, t->numel, t->dtype);
        *s[k].dst = dst;
    }
}

/* Everything after config.json: map, parse, check the layer count, resolve, convert. */
static int ckpt_load_tensors(gpt2_checkpoint *ck, const char *path, char *err, size_t errlen) {
    st_file f = {0};
    ckpt_spec *specs = NULL;
    int n = 0, rc = -1;
    static const uint8_t none[8];
    if (ckpt_map(ck, path, err, errlen) != 0) goto fail;
    if (st_parse(&f, ck->map ? ck->map : none, ck->map_len, err, errlen) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", err);
        ckpt_fail(err, errlen, "%s: %s", path, msg);
        goto fail;
    }
    int file_layers = ckpt_file_layers(&f);
    if (file_layers != ck->cfg.n_layer) {
        ckpt_fail(err, errlen, "%s: config.json says n_layer=%d but the file has tensors for %d "
                  "layers", path, ck->cfg.n_layer, file_layers);
        goto fail;
    }
    ck->layers = calloc((size_t)ck->cfg.n_layer, sizeof *ck->layers);
    specs = ck->layers ? ckpt_specs(&ck->cfg, ck, &n) : NULL;
    if (!specs) {
        ckpt_fail(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    if (ckpt_resolve_all(specs, n, &f, path, &ck->owned_len, err, errlen) != 0) goto fail;
    if (ck->owned_len) {
        ck->owned = aligned_alloc(64, ck->owned_len * sizeof(float));
        if (!ck->owned) {
            ckpt_fail(err, errlen, "%s: out of memory for %zu converted floats", path, ck->owned_len);
            goto fail;
        }
    }
    ckpt_materialize(ck, specs, n);
    if (!ck->lm_head) ck->lm_head = ck->wte;
    rc = 0;
fail:
    free(specs);
    st_destroy(&f);
    return rc;
}

int ckpt_load(gpt2_checkpoint *ck, const char *dir, char *err, size_t errlen) {
    char path[PATH_MAX];
    memset(ck, 0, sizeof *ck);
    if (ckpt_read_config(&ck->cfg, dir, err, errlen) != 0) goto fail;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (ckpt_load_tensors(ck, path, err, errlen) != 0) goto fail;
    return 0;
fail:
    ckpt_destroy(ck);
    return -1;
}

void ckpt_destroy(gpt2_checkpoint *ck) {
    if (!ck) return;
    if (ck->map) munmap(ck->map, ck->map_len);
    free(ck->owned);
    free(ck->layers);
    memset(ck, 0, sizeof *ck);
}

/* ================================================================ random weights */

/* splitmix64's finalizer: a bijective 64-bit mix. */
static uint64_t ckpt_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A per-tensor key from the seed and the tensor's name (FNV-1a), so streams never overlap. */
static uint64_t ckpt_tensor_key(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *name; name++) h = (h ^ (uint8_t)*name) * 0x100000001b3ull;
    return ckpt_mix(ckpt_mix(seed) ^ h);
}

/* Elements [i0, i0+n) of a tensor's values into out. Normal-ish draws are Irwin-Hall sums of four
 * 16-bit uniforms of one splitmix64 output (mean 0, variance 1 after scaling, tails at 3.46 sigma):
 * integer arithmetic plus one correctly rounded multiply, so every machine writes the same bytes. */
static void ckpt_fill(float *out, size_t n, uint64_t i0, uint64_t key, float std, float value) {
    if (std <= 0) {
        for (size_t i = 0; i < n; i++) out[i] = value;
        return;
    }
    /* variance of a uniform on {0..65535} is (65536^2 - 1) / 12; four of them sum to a third of that */
    double scale = (double)std / sqrt((65536.0 * 65536.0 - 1.0) / 3.0);
    for (size_t i = 0; i < n; i++) {
        uint64_t r = ckpt_mix(key + (i0 + i + 1) * 0x9e3779b97f4a7c15ull);
        int64_t s = (int64_t)(r & 0xffff) + (int64_t)((r >> 16) & 0xffff) +
                    (int64_t)((r >> 32) & 0xffff) + (int64_t)(r >> 48) - 2 * 65535;
        out[i] = (float)((double)s * scale);
    }
}

/* mkdir -p. 0 / -1 with err. */
static int ckpt_mkdirs(const char *dir, char *err, size_t errlen) {
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return ckpt_fail(err, errlen, "%s: path too long", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return ckpt_fail(err, errlen, "%s: cannot create: %s", p, strerror(errno));
        *s = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        return ckpt_fail(err, errlen, "%s: cannot create: %s", p, strerror(errno));
    struct stat st;
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
        return ckpt_fail(err, errlen, "%s: not a directory", p);
    return 0;
}

/* Closes fp (flushing) and renames tmp to path; on any failure removes tmp. 0 / -1 with err. */
static int ckpt_commit(FILE *fp, const char *tmp, const char *path, char *err, size_t errlen) {
    int bad = ferror(fp);
    if (fclose(fp) != 0 || bad) {
        remove(tmp);
        return ckpt_fail(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        remove(tmp);
        return ckpt_fail(err, errlen, "%s: cannot rename into place: %s", path, strerror(errno));
    }
    return 0;
}

/* Opens dir/name.tmp for writing; the final and temporary paths go to path / tmp. */
static FILE *ckpt_create(const char *dir, const char *name, char *path, char *tmp, char *err,
                         size_t errlen) {
    snprintf(path, PATH_MAX, "%s/%s", dir, name);
    snprintf(tmp, PATH_MAX, "%s/%s.tmp", dir, name);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) ckpt_fail(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    return fp;
}

/* Copies src_dir/name to dst_dir/name. 0 / -1 with err. */
static int ckpt_copy_file(const char *src_dir, const char *dst_dir, const char *name, char *err,
                          size_t errlen) {
    char src[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX], buf[1 << 16];
    snprintf(src, sizeof src, "%s/%s", src_dir, name);
    FILE *in = fopen(src, "rb");
    if (!in) return ckpt_fail(err, errlen, "%s: cannot open: %s", src, strerror(errno));
    FILE *out = ckpt_create(dst_dir, name, path, tmp, err, errlen);
    if (!out) {
        fclose(in);
        return -1;
    }
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, got, out) != got) break;
    int bad = ferror(in);
    fclose(in);
    if (bad) {
        fclose(out);
        remove(tmp);
        return ckpt_fail(err, errlen, "%s: read failed", src);
    }
    return ckpt_commit(out, tmp, path, err, errlen);
}

/* Writes the header then every spec's values (lm_head excluded: tied) to fp. 0 / -1. */
static int ckpt_write_tensors(FILE *fp, const ckpt_spec *s, int n, uint64_t seed) {
    st_entry *e = calloc((size_t)n, sizeof *e);
    enum { CHUNK = 1 << 20 };
    float *buf = malloc(CHUNK * sizeof *buf);
    uint8_t *hdr = NULL;
    size_t hlen = 0;
    uint64_t dlen = 0;
    int rc = -1;
    if (!e || !buf) goto fail;
    for (int k = 0; k < n; k++)
        e[k] = (st_entry){.name = s[k].name, .dtype = ST_F32, .ndim = s[k].ndim,
                          .shape = {s[k].shape[0], s[k].shape[1]}};
    hdr = st_header_build(e, n, &hlen, &dlen);
    if (!hdr || fwrite(hdr, 1, hlen, fp) != hlen) goto fail;
    for (int k = 0; k < n; k++) {
        uint64_t numel = s[k].shape[0] * (s[k].ndim == 2 ? s[k].shape[1] : 1);
        uint64_t key = ckpt_tensor_key(seed, s[k].name);
        for (uint64_t i = 0; i < numel; i += CHUNK) {
            size_t m = numel - i < CHUNK ? (size_t)(numel - i) : CHUNK;
            ckpt_fill(buf, m, i, key, s[k].std, s[k].value);
            if (fwrite(buf, sizeof *buf, m, fp) != m) goto fail;
        }
    }
    rc = 0;
fail:
    free(hdr);
    free(buf);
    free(e);
    return rc;
}

/* dir/model.safetensors for cfg and seed. 0 / -1 with err. */
static int ckpt_write_model(const char *dir, const gpt2_config *cfg, uint64_t seed, char *err,
                            size_t errlen) {
    char path[PATH_MAX], tmp[PATH_MAX];
    gpt2_checkpoint scratch = {0};   /* the specs' destinations: unused by the writer */
    int n = 0;
    ckpt_spec *specs = NULL;
    FILE *fp = NULL;
    scratch.layers = calloc((size_t)cfg->n_layer, sizeof *scratch.layers);
    specs = scratch.layers ? ckpt_specs(cfg, &scratch, &n) : NULL;
    if (!specs) {
        ckpt_fail(err, errlen, "%s: out of memory", dir);
        goto fail;
    }
    fp = ckpt_create(dir, "model.safetensors", path, tmp, err, errlen);
    if (!fp) goto fail;
    setvbuf(fp, NULL, _IOFBF, 1 << 22);
    if (ckpt_write_tensors(fp, specs, n - 1, seed) != 0) {
        fclose(fp);
        remove(tmp);
        ckpt_fail(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        goto fail;
    }
    free(specs);
    free(scratch.layers);
    return ckpt_commit(fp, tmp, path, err, errlen);
fail:
    free(specs);
    free(scratch.layers);
    return -1;
}

/* The shortest "%g" spelling of x that reads back as the same float. */
static void ckpt_float_str(char *buf, size_t len, float x) {
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, len, "%.*g", prec, (double)x);
        if (strtof(buf, NULL) == x) return;
    }
}

/* dir/config.json in HF's layout (keys sorted). 0 / -1 with err. */
static int ckpt_write_config(const char *dir, const gpt2_config *c, uint64_t seed, char *err,
                             size_t errlen) {
    char path[PATH_MAX], tmp[PATH_MAX], eps[32];
    FILE *fp = ckpt_create(dir, "config.json", path, tmp, err, errlen);
    if (!fp) return -1;
    ckpt_float_str(eps, sizeof eps, c->ln_eps);
    fprintf(fp,
            "{\n"
            "  \"activation_function\": \"gelu_new\",\n"
            "  \"architectures\": [\n    \"GPT2LMHeadModel\"\n  ],\n"
            "  \"bos_token_id\": 50256,\n"
            "  \"eos_token_id\": 50256,\n"
            "  \"gpt2d_random_seed\": \"%llu\",\n"
            "  \"initializer_range\": 0.02,\n"
            "  \"layer_norm_epsilon\": %s,\n"
            "  \"model_type\": \"gpt2\",\n"
            "  \"n_ctx\": %d,\n  \"n_embd\": %d,\n  \"n_head\": %d,\n  \"n_inner\": null,\n"
            "  \"n_layer\": %d,\n  \"n_positions\": %d,\n"
            "  \"tie_word_embeddings\": true,\n"
            "  \"vocab_size\": %d\n"
            "}\n",
            (unsigned long long)seed, eps, c->n_ctx, c->n_embd, c->n_head, c->n_layer, c->n_ctx,
            c->n_vocab);
    return ckpt_commit(fp, tmp, path, err, errlen);
}

int ckpt_write_random(const char *dir, const gpt2_config *cfg, uint64_t seed,
                      const char *tokenizer_dir, char *err, size_t errlen) {
    if (ckpt_config_check(cfg, "config", err, errlen) != 0) return -1;
    if (ckpt_mkdirs(dir, err, errlen) != 0) return -1;
    if (tokenizer_dir && (ckpt_copy_file(tokenizer_dir, dir, "vocab.json", err, errlen) != 0 ||
                          ckpt_copy_file(tokenizer_dir, dir, "merges.txt", err, errlen) != 0))
        return -1;
    if (ckpt_write_model(dir, cfg, seed, err, errlen) != 0) return -1;
    return ckpt_write_config(dir, cfg, seed, err, errlen);
}
