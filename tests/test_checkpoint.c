/* test_checkpoint.c — checkpoint.h: random checkpoints written and read back, dtype variants,
 * and every malformed input refused with a specific message (run it under SAN=1 for leaks).
 *
 * The file's bytes are read back here independently (fread + jansson), variants are written by
 * this file's own safetensors writer, and a tiny scalar forward measures how peaked the logits of
 * a random 2-layer model are. Works in $GPT2D_TMP (else a fresh /tmp dir); removes what it made. */
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "checkpoint.h"

#define SMALL_CFG {.n_layer = 2, .n_embd = 128, .n_head = 4, .n_ctx = 64, .n_vocab = 50257, \
                   .ln_eps = 1e-5f}

/* ================================================================ files */

/* printf into a PATH_MAX buffer (paths here are short; truncation would only fail a check). */
__attribute__((format(printf, 2, 3))) static void pathf(char *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, PATH_MAX, fmt, ap);
    va_end(ap);
}

/* The whole file at path into a malloc'd *buf of *len bytes. 0 / -1. */
static int file_read(const char *path, uint8_t **buf, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    *buf = malloc(n > 0 ? (size_t)n : 1);
    *len = (size_t)n;
    int ok = *buf && fread(*buf, 1, *len, fp) == *len;
    fclose(fp);
    if (!ok) free(*buf);
    return ok ? 0 : -1;
}

static int file_write(const char *path, const void *buf, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    int ok = fwrite(buf, 1, len, fp) == len;
    return (fclose(fp) == 0 && ok) ? 0 : -1;
}

static int file_write_str(const char *dir, const char *name, const char *text) {
    char path[PATH_MAX];
    pathf(path, "%s/%s", dir, name);
    return file_write(path, text, strlen(text));
}

/* 1 if the two files hold the same bytes. */
static int file_same(const char *a, const char *b) {
    uint8_t *x, *y;
    size_t nx, ny;
    if (file_read(a, &x, &nx) != 0) return 0;
    if (file_read(b, &y, &ny) != 0) {
        free(x);
        return 0;
    }
    int same = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void rm_rf(const char *path) { nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* dir = root/name, created empty. */
static void case_dir(char *dir, const char *root, const char *name) {
    pathf(dir, "%s/%s", root, name);
    rm_rf(dir);
    mkdir(dir, 0755);
}

/* ================================================================ an independent safetensors reader/writer */

typedef struct {
    char name[96];
    char dtype[16];
    int ndim;
    uint64_t shape[4];
    uint8_t *data;      /* owned */
    size_t nbytes;
    long long lie_begin, lie_end; /* added to the offsets written in the header */
} vtensor;

typedef struct {
    vtensor t[256];
    int n;
} vfile;

static void vfile_free(vfile *v) {
    for (int i = 0; i < v->n; i++) free(v->t[i].data);
    v->n = 0;
}

/* Reads a safetensors file with jansson alone, tensors in offset order. 0 / -1. */
static int vfile_read(vfile *v, const char *path) {
    uint8_t *buf;
    size_t len;
    v->n = 0;
    if (file_read(path, &buf, &len) != 0) return -1;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    json_t *root = json_loadb((const char *)buf + 8, hlen, 0, NULL);
    const char *key;
    json_t *e;
    json_object_foreach(root, key, e) {
        if (strcmp(key, "__metadata__") == 0 || v->n == 256) continue;
        vtensor *t = &v->t[v->n++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", key);
        snprintf(t->dtype, sizeof t->dtype, "%s", json_string_value(json_object_get(e, "dtype")));
        json_t *sh = json_object_get(e, "shape"), *off = json_object_get(e, "data_offsets");
        t->ndim = (int)json_array_size(sh);
        for (int d = 0; d < t->ndim; d++) t->shape[d] = (uint64_t)json_integer_value(json_array_get(sh, d));
        size_t b = (size_t)json_integer_value(json_array_get(off, 0));
        t->nbytes = (size_t)json_integer_value(json_array_get(off, 1)) - b;
        t->data = malloc(t->nbytes ? t->nbytes : 1);
        memcpy(t->data, buf + 8 + hlen + b, t->nbytes);
    }
    json_decref(root);
    free(buf);
    return v->n > 0 ? 0 : -1;
}

static vtensor *vfile_get(vfile *v, const char *name) {
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->t[i].name, name) == 0) return &v->t[i];
    return NULL;
}

/* Writes v as a safetensors file (offsets back to back plus each tensor's lies). 0 / -1. */
static int vfile_write(const vfile *v, const char *path) {
    json_t *root = json_object();
    json_object_set_new(root, "__metadata__", json_pack("{s:s}", "format", "pt"));
    long long off = 0;
    for (int i = 0; i < v->n; i++) {
        const vtensor *t = &v->t[i];
        json_t *sh = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(sh, json_integer((json_int_t)t->shape[d]));
        long long b = off + t->lie_begin, e = off + (long long)t->nbytes + t->lie_end;
        json_object_set_new(root, t->name, json_pack("{s:s,s:o,s:[I,I]}", "dtype", t->dtype, "shape",
                                                     sh, "data_offsets", b, e));
        off += (long long)t->nbytes;
    }
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    size_t tl = strlen(text), hl = (tl + 7) & ~(size_t)7;
    FILE *fp = fopen(path, "wb");
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(hl >> (8 * i));
    fwrite(len8, 1, 8, fp);
    fwrite(text, 1, tl, fp);
    for (size_t i = tl; i < hl; i++) fputc(' ', fp);
    for (int i = 0; i < v->n; i++) fwrite(v->t[i].data, 1, v->t[i].nbytes, fp);
    free(text);
    return fclose(fp);
}

/* Writes v into dir/model.safetensors and copies config.json from src. */
static void vfile_case(const vfile *v, const char *src, const char *dir) {
    char a[PATH_MAX], b[PATH_MAX];
    pathf(a, "%s/config.json", src);
    pathf(b, "%s/config.json", dir);
    uint8_t *buf;
    size_t len;
    if (file_read(a, &buf, &len) == 0) {
        file_write(b, buf, len);
        free(buf);
    }
    pathf(b, "%s/model.safetensors", dir);
    vfile_write(v, b);
}

/* ================================================================ reference half conversions */

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* IEEE half -> float, bit-exact (subnormals, infinities; NaNs quieted as x86 does). */
static float ref_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man ? 0x400000u | man << 13 : 0));
    if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in float */
        float f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    }
    return bits_f32(sign | (exp + 112) << 23 | man << 13);
}

/* float -> half, round to nearest even (finite normal-range inputs and subnormal results). */
static uint16_t ref_f32_to_f16(float f) {
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000;
    float a = fabsf(f);
    if (a >= 65520.0f) return (uint16_t)(sign | 0x7c00);
    if (a < 0x1p-14f) /* subnormal half: a multiple of 2^-24, rounded to even by rintf */
        return (uint16_t)(sign | (uint32_t)rintf(a * 0x1p24f));
    uint32_t x = f32_bits(a), man = x & 0x7fffff, exp = (x >> 23) - 112;
    uint32_t h = exp << 10 | man >> 13, rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++; /* carries into the exponent correctly */
    return (uint16_t)(sign | h);
}

static uint16_t ref_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

/* Converts every F32 tensor of v to dtype ("F16" / "BF16"). */
static void vfile_to_half(vfile *v, const char *dtype) {
    int bf = strcmp(dtype, "BF16") == 0;
    for (int i = 0; i < v->n; i++) {
        vtensor *t = &v->t[i];
        size_t n = t->nbytes / 4;
        uint16_t *h = malloc(2 * n);
        for (size_t k = 0; k < n; k++) {
            float f;
            memcpy(&f, t->data + 4 * k, 4);
            h[k] = bf ? ref_f32_to_bf16(f) : ref_f32_to_f16(f);
        }
        free(t->data);
        t->data = (uint8_t *)h;
        t->nbytes = 2 * n;
        snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    }
}

/* ================================================================ checking a loaded checkpoint */

/* The loader's tensors in file order, paired with their HF names (without prefix). */
static int ck_tensors(const gpt2_checkpoint *ck, const float **p, char (*names)[64], int cap) {
    int n = 0;
#define ADD(ptr, ...) do { if (n < cap) { p[n] = (ptr); snprintf(names[n], 64, __VA_ARGS__); n++; } } while (0)
    ADD(ck->wte, "wte.weight");
    ADD(ck->wpe, "wpe.weight");
    for (int i = 0; i < ck->cfg.n_layer; i++) {
        const gpt2_layer_tensors *l = &ck->layers[i];
        ADD(l->ln_1_w, "h.%d.ln_1.weight", i);            ADD(l->ln_1_b, "h.%d.ln_1.bias", i);
        ADD(l->c_attn_w, "h.%d.attn.c_attn.weight", i);   ADD(l->c_attn_b, "h.%d.attn.c_attn.bias", i);
        ADD(l->attn_proj_w, "h.%d.attn.c_proj.weight", i); ADD(l->attn_proj_b, "h.%d.attn.c_proj.bias", i);
        ADD(l->ln_2_w, "h.%d.ln_2.weight", i);            ADD(l->ln_2_b, "h.%d.ln_2.bias", i);
        ADD(l->c_fc_w, "h.%d.mlp.c_fc.weight", i);        ADD(l->c_fc_b, "h.%d.mlp.c_fc.bias", i);
        ADD(l->mlp_proj_w, "h.%d.mlp.c_proj.weight", i);  ADD(l->mlp_proj_b, "h.%d.mlp.c_proj.bias", i);
    }
    ADD(ck->ln_f_w, "ln_f.weight");
    ADD(ck->ln_f_b, "ln_f.bias");
#undef ADD
    return n;
}

/* Expected fp32 value of element k of a file tensor (F32/F16/BF16 as stored). */
static float vt_value(const vtensor *t, size_t k) {
    if (strcmp(t->dtype, "F32") == 0) {
        float f;
        memcpy(&f, t->data + 4 * k, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, t->data + 2 * k, 2);
    return strcmp(t->dtype, "F16") == 0 ? ref_f16_to_f32(h) : bits_f32((uint32_t)h << 16);
}

/* Every tensor of ck is bit-equal to the file's (names optionally prefixed). Returns mismatches. */
static int ck_matches(const gpt2_checkpoint *ck, vfile *v, const char *prefix, const char *what) {
    const float *p[4096];
    char names[4096][64];
    int n = ck_tensors(ck, p, names, 4096), bad = 0;
    for (int i = 0; i < n; i++) {
        char full[PATH_MAX];
        pathf(full, "%s%s", prefix, names[i]);
        vtensor *t = vfile_get(v, full);
        size_t numel = t ? t->nbytes / (strcmp(t->dtype, "F32") == 0 ? 4 : 2) : 0;
        size_t k = 0;
        for (; t && p[i] && k < numel; k++)
            if (f32_bits(p[i][k]) != f32_bits(vt_value(t, k))) break;
        if (!t || !p[i] || k < numel) {
            bad++;
            printf("  %s: tensor %s differs at element %zu\n", what, full, k);
        }
    }
    check(bad == 0 && n == 12 * ck->cfg.n_layer + 4, "%s: %d of %d tensors differ", what, bad, n);
    return bad;
}

static double mean_std(const float *x, size_t n, double *mean) {
    double s = 0, ss = 0;
    for (size_t i = 0; i < n; i++) s += x[i], ss += (double)x[i] * x[i];
    *mean = s / n;
    return sqrt(ss / n - *mean * *mean);
}

/* ================================================================ a tiny scalar GPT-2 forward */

/* out = layernorm(x) * w + b over C. */
static void fwd_layernorm(float *out, const float *x, const float *w, const float *b, int C,
                          float eps) {
    double mean = 0, var = 0;
    for (int i = 0; i < C; i++) mean += x[i];
    mean /= C;
    for (int i = 0; i < C; i++) var += (x[i] - mean) * (x[i] - mean);
    double rstd = 1.0 / sqrt(var / C + eps);
    for (int i = 0; i < C; i++) out[i] = (float)((x[i] - mean) * rstd) * w[i] + b[i];
}

/* out (m) = x (n) @ W (n, m) + bias (m). */
static void fwd_matvec(float *out, const float *x, const float *W, const float *bias, int n, int m) {
    for (int j = 0; j < m; j++) out[j] = bias[j];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) out[j] += x[i] * W[(size_t)i * m + j];
}

static float fwd_gelu(float x) {
    return 0.5f * x * (1.0f + tanhf(0.7978845608f * (x + 0.044715f * x * x * x)));
}

/* Causal self-attention of position t over qkv (T, 3C) into out (C); att: (T) scratch. */
static void fwd_attend(float *out, const float *qkv, int t, int C, int H, float *att) {
    int hs = C / H;
    for (int h = 0; h < H; h++) {
        const float *q = qkv + (size_t)t * 3 * C + h * hs;
        float mx = -INFINITY, sum = 0;
        for (int s = 0; s <= t; s++) {
            const float *k = qkv + (size_t)s * 3 * C + C + h * hs;
            float d = 0;
            for (int i = 0; i < hs; i++) d += q[i] * k[i];
            att[s] = d / sqrtf((float)hs);
            mx = att[s] > mx ? att[s] : mx;
        }
        for (int s = 0; s <= t; s++) sum += att[s] = expf(att[s] - mx);
        for (int i = 0; i < hs; i++) out[h * hs + i] = 0;
        for (int s = 0; s <= t; s++)
            for (int i = 0; i < hs; i++) out[h * hs + i] += att[s] / sum * qkv[(size_t)s * 3 * C + 2 * C + h * hs + i];
    }
}

/* One block over x (T, C) in place. Scratch: qkv (T, 3C), buf (4C), hid (4C), att (T). */
static void fwd_block(float *x, const gpt2_layer_tensors *l, const gpt2_config *c, int T,
                      float *qkv, float *buf, float *hid, float *att) {
    int C = c->n_embd;
    for (int t = 0; t < T; t++) {
        fwd_layernorm(buf, x + (size_t)t * C, l->ln_1_w, l->ln_1_b, C, c->ln_eps);
        fwd_matvec(qkv + (size_t)t * 3 * C, buf, l->c_attn_w, l->c_attn_b, C, 3 * C);
    }
    for (int t = 0; t < T; t++) {
        fwd_attend(buf, qkv, t, C, c->n_head, att);
        fwd_matvec(hid, buf, l->attn_proj_w, l->attn_proj_b, C, C);
        for (int i = 0; i < C; i++) x[(size_t)t * C + i] += hid[i];
    }
    for (int t = 0; t < T; t++) {
        fwd_layernorm(buf, x + (size_t)t * C, l->ln_2_w, l->ln_2_b, C, c->ln_eps);
        fwd_matvec(hid, buf, l->c_fc_w, l->c_fc_b, C, 4 * C);
        for (int i = 0; i < 4 * C; i++) hid[i] = fwd_gelu(hid[i]);
        fwd_matvec(buf, hid, l->mlp_proj_w, l->mlp_proj_b, 4 * C, C);
        for (int i = 0; i < C; i++) x[(size_t)t * C + i] += buf[i];
    }
}

/* logits (T, V) of tokens[0..T). 0, or -1 when out of memory. */
static int fwd_logits(const gpt2_checkpoint *ck, const int *tokens, int T, float *logits) {
    const gpt2_config *c = &ck->cfg;
    int C = c->n_embd, V = c->n_vocab, rc = -1;
    float *x = malloc(sizeof(float) * (size_t)T * C), *qkv = malloc(sizeof(float) * (size_t)T * 3 * C);
    float *buf = malloc(sizeof(float) * 4 * C), *hid = malloc(sizeof(float) * 4 * C);
    float *att = malloc(sizeof(float) * (size_t)T);
    if (!x || !qkv || !buf || !hid || !att) goto out;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < C; i++)
            x[(size_t)t * C + i] = ck->wte[(size_t)tokens[t] * C + i] + ck->wpe[(size_t)t * C + i];
    for (int l = 0; l < c->n_layer; l++) fwd_block(x, &ck->layers[l], c, T, qkv, buf, hid, att);
    for (int t = 0; t < T; t++) {
        fwd_layernorm(buf, x + (size_t)t * C, ck->ln_f_w, ck->ln_f_b, C, c->ln_eps);
        for (int v = 0; v < V; v++) {
            float d = 0;
            for (int i = 0; i < C; i++) d += buf[i] * ck->lm_head[(size_t)v * C + i];
            logits[(size_t)t * V + v] = d;
        }
    }
    rc = 0;
out:
    free(x), free(qkv), free(buf), free(hid), free(att);
    return rc;
}

/* Top-1 minus top-2 of row[0..V). */
static float top_margin(const float *row, int V) {
    float a = -INFINITY, b = -INFINITY;
    for (int v = 0; v < V; v++) {
        if (row[v] > a) b = a, a = row[v];
        else if (row[v] > b) b = row[v];
    }
    return a - b;
}

/* ================================================================ the tests */

/* Loads dir, expecting success. */
static int load_ok(gpt2_checkpoint *ck, const char *dir, const char *what) {
    char err[512] = "";
    int rc = ckpt_load(ck, dir, err, sizeof err);
    check(rc == 0, "%s: ckpt_load failed: %s", what, err);
    return rc;
}

/* Loads dir, expecting -1 with want in the message and ck left empty. */
static void load_fails(const char *dir, const char *want, const char *what) {
    gpt2_checkpoint ck;
    char err[512] = "";
    int rc = ckpt_load(&ck, dir, err, sizeof err);
    check(rc == -1 && strstr(err, want) != NULL, "%s: rc %d, err \"%s\" (want \"%s\")", what, rc,
          err, want);
    check(ck.map == NULL && ck.layers == NULL && ck.owned == NULL && ck.wte == NULL &&
          ck.cfg.n_layer == 0, "%s: ck not left empty", what);
    if (rc == 0) ckpt_destroy(&ck);
}

static void test_write_and_load(const char *root, const char *tok, vfile *base) {
    gpt2_config cfg = SMALL_CFG;
    char a[PATH_MAX], b[PATH_MAX], c[PATH_MAX], pa[PATH_MAX], pb[PATH_MAX], err[512] = "";
    pathf(a, "%s/a", root);
    pathf(b, "%s/b/nested", root);
    pathf(c, "%s/c", root);
    check(ckpt_write_random(a, &cfg, 7, tok, err, sizeof err) == 0, "write a: %s", err);
    check(ckpt_write_random(b, &cfg, 7, tok, err, sizeof err) == 0, "write b (mkdir -p): %s", err);
    check(ckpt_write_random(c, &cfg, 8, tok, err, sizeof err) == 0, "write c: %s", err);
    const char *files[] = {"model.safetensors", "config.json", "vocab.json", "merges.txt"};
    for (int i = 0; i < 4; i++) {
        pathf(pa, "%s/%s", a, files[i]);
        pathf(pb, "%s/%s", b, files[i]);
        check(file_same(pa, pb), "same seed: %s differs", files[i]);
    }
    pathf(pa, "%s/model.safetensors", a);
    pathf(pb, "%s/model.safetensors", c);
    check(!file_same(pa, pb), "different seed: model.safetensors identical");
    pathf(pb, "%s/vocab.json", tok);
    pathf(pa, "%s/vocab.json", a);
    check(file_same(pa, pb), "vocab.json copied");
    pathf(pa, "%s/model.safetensors.tmp", a);
    check(access(pa, F_OK) != 0, "no .tmp left behind");
    pathf(pa, "%s/model.safetensors", a);
    check(vfile_read(base, pa) == 0 && base->n == 12 * 2 + 4, "re-read: %d tensors", base->n);
    check(vfile_get(base, "lm_head.weight") == NULL, "no lm_head written (tied)");

    gpt2_checkpoint ck;
    if (load_ok(&ck, a, "load a") != 0) return;
    gpt2_config g = ck.cfg;
    check(g.n_layer == 2 && g.n_embd == 128 && g.n_head == 4 && g.n_ctx == 64 && g.n_vocab == 50257 &&
          g.ln_eps == 1e-5f, "config read back: %d %d %d %d %d %g", g.n_layer, g.n_embd, g.n_head,
          g.n_ctx, g.n_vocab, (double)g.ln_eps);
    ck_matches(&ck, base, "", "F32 in place");
    check(ck.owned == NULL && ck.owned_len == 0, "aligned F32 used in place (owned %zu)", ck.owned_len);
    check((const void *)ck.wte > ck.map && (const void *)ck.wte < (const void *)((char *)ck.map + ck.map_len),
          "wte points into the map");
    check(ck.lm_head == ck.wte, "lm_head tied to wte");
    double m, s;
    s = mean_std(ck.wte, (size_t)50257 * 128, &m);
    check(fabs(m) < 1e-4 && fabs(s - 0.02) < 0.0005, "wte ~ N(0, 0.02): mean %g std %g", m, s);
    s = mean_std(ck.layers[1].mlp_proj_w, 512 * 128, &m);
    check(fabs(s - 0.01) < 0.0005, "c_proj std 0.02/sqrt(2L) = 0.01: %g", s);
    s = mean_std(ck.layers[0].c_fc_b, 512, &m);
    check(s > 0.005 && s < 0.015, "biases small: std %g", s);
    check(ck.layers[1].ln_2_w[5] == 1.0f && ck.layers[1].ln_2_b[5] == 0.0f && ck.ln_f_b[0] == 0.0f,
          "ln gains 1, biases 0");
    check(ck.ln_f_w[0] > 4.0f, "ln_f gain scaled up: %g", (double)ck.ln_f_w[0]);
    printf("  ln_f gain %g\n", (double)ck.ln_f_w[0]);
    ckpt_destroy(&ck);
    ckpt_destroy(&ck); /* twice is safe */
    check(ck.map == NULL, "destroy zeroes");
}

/* Top-1 margin of the random 2-layer model at every position of a few token sequences. */
static void test_logits_peaked(const char *root) {
    char dir[PATH_MAX];
    pathf(dir, "%s/a", root);
    gpt2_checkpoint ck;
    if (load_ok(&ck, dir, "load for forward") != 0) return;
    enum { T = 16, SEQS = 4 };
    int V = ck.cfg.n_vocab, clear = 0, echo = 0;
    float *logits = malloc(sizeof(float) * T * (size_t)V), min_m = INFINITY;
    uint64_t r = 12345;
    for (int q = 0; q < SEQS && logits; q++) {
        int tok[T];
        for (int t = 0; t < T; t++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            tok[t] = (int)((r >> 33) % (uint64_t)V);
        }
        if (fwd_logits(&ck, tok, T, logits) != 0) break;
        for (int t = 0; t < T; t++) {
            const float *row = logits + (size_t)t * V;
            float mg = top_margin(row, V);
            clear += mg > 0.5f;
            min_m = mg < min_m ? mg : min_m;
            int best = 0;
            for (int v = 1; v < V; v++) best = row[v] > row[best] ? v : best;
            echo += best == tok[t];
        }
    }
    printf("  top-1 margin > 0.5 at %d of %d positions (smallest %.3f); top-1 == input token at %d\n",
           clear, T * SEQS, (double)min_m, echo);
    check(clear >= T * SEQS * 2 / 3, "logits peaked: margin > 0.5 at only %d of %d positions", clear,
          T * SEQS);
    free(logits);
    ckpt_destroy(&ck);
}

static void test_variants(const char *root, vfile *base) {
    char src[PATH_MAX], dir[PATH_MAX], model[PATH_MAX];
    pathf(src, "%s/a", root);
    pathf(model, "%s/model.safetensors", src);
    gpt2_checkpoint ck;
    vfile v = {0};

    /* transformer. prefix */
    for (int i = 0; i < base->n; i++) {
        v.t[i] = base->t[i];
        snprintf(v.t[i].name, sizeof v.t[i].name, "transformer.%s", base->t[i].name);
    }
    v.n = base->n;
    case_dir(dir, root, "prefix");
    vfile_case(&v, src, dir);
    v.n = 0; /* data borrowed from base */
    if (load_ok(&ck, dir, "prefix") == 0) {
        ck_matches(&ck, base, "", "transformer. prefix");
        ckpt_destroy(&ck);
    }

    /* F16 and BF16, with special values in h.0.ln_1.bias */
    const char *dts[] = {"F16", "BF16"};
    const uint16_t special[2][8] = {{0x0001, 0x03ff, 0x8001, 0x7c00, 0xfc00, 0x7e00, 0x7d00, 0x8000},
                                    {0x0001, 0x807f, 0x7f80, 0xff80, 0x7fc0, 0x7f81, 0x8000, 0x3f80}};
    for (int d = 0; d < 2; d++) {
        vfile_read(&v, model);
        vfile_to_half(&v, dts[d]);
        memcpy(vfile_get(&v, "h.0.ln_1.bias")->data, special[d], sizeof special[d]);
        case_dir(dir, root, dts[d]);
        vfile_case(&v, src, dir);
        if (load_ok(&ck, dir, dts[d]) == 0) {
            ck_matches(&ck, &v, "", dts[d]);
            check(ck.owned != NULL && ck.owned_len >= (size_t)50257 * 128, "%s converted into owned",
                  dts[d]);
            check(ck.lm_head == ck.wte, "%s: lm_head tied", dts[d]);
            ckpt_destroy(&ck);
        }
        vfile_free(&v);
    }

    /* misaligned F32 (a 2-byte U8 buffer first), ignored buffers, an explicit lm_head */
    vfile_read(&v, model);
    memmove(&v.t[1], &v.t[0], sizeof v.t[0] * (size_t)v.n++);
    v.t[0] = (vtensor){.name = "h.0.attn.masked_bias", .dtype = "U8", .ndim = 1, .shape = {2},
                       .data = calloc(1, 2), .nbytes = 2};
    vtensor *wte = vfile_get(&v, "wte.weight"), *lm = &v.t[v.n++], *bias = &v.t[v.n++];
    *lm = *wte;
    snprintf(lm->name, sizeof lm->name, "lm_head.weight");
    lm->data = malloc(wte->nbytes);
    for (size_t k = 0; k < wte->nbytes / 4; k++) ((float *)(void *)lm->data)[k] = (float)(k % 97) * 0.01f;
    *bias = (vtensor){.name = "h.1.attn.bias", .dtype = "F32", .ndim = 4, .shape = {1, 1, 64, 64},
                      .data = calloc(64 * 64, 4), .nbytes = 64 * 64 * 4};
    case_dir(dir, root, "lm_head");
    vfile_case(&v, src, dir);
    if (load_ok(&ck, dir, "lm_head + misaligned") == 0) {
        ck_matches(&ck, &v, "", "misaligned F32");
        check(ck.owned != NULL, "misaligned F32 copied into owned");
        check(ck.lm_head != ck.wte && ck.lm_head[96] == 96.0f * 0.01f && ck.lm_head[97] == 0.0f,
              "explicit lm_head used");
        ckpt_destroy(&ck);
    }
    vfile_free(&v);
}

/* An odd width (C = 20: tails past the 8-wide conversion) in F16, written without a tokenizer. */
static void test_odd_width(const char *root) {
    gpt2_config cfg = {.n_layer = 1, .n_embd = 20, .n_head = 4, .n_ctx = 9, .n_vocab = 51,
                       .ln_eps = 1e-6f};
    char src[PATH_MAX], dir[PATH_MAX], path[PATH_MAX], err[512] = "";
    pathf(src, "%s/odd", root);
    check(ckpt_write_random(src, &cfg, 1, NULL, err, sizeof err) == 0, "write odd: %s", err);
    vfile v = {0};
    pathf(path, "%s/model.safetensors", src);
    vfile_read(&v, path);
    vfile_to_half(&v, "F16");
    memcpy(vfile_get(&v, "h.0.ln_1.bias")->data + 32, (const uint16_t[]){0x0001, 0x7c00, 0x7e01, 0x83ff}, 8);
    case_dir(dir, root, "odd16");
    vfile_case(&v, src, dir);
    gpt2_checkpoint ck;
    if (load_ok(&ck, dir, "odd F16") == 0) {
        check(ck.cfg.ln_eps == 1e-6f && ck.cfg.n_ctx == 9, "odd config");
        ck_matches(&ck, &v, "", "odd F16");
        ckpt_destroy(&ck);
    }
    vfile_free(&v);
}

/* A copy of base as root/name with edit applied to the tensor called tname (if any). */
static void bad_tensor_case(const char *root, const vfile *base, const char *name, const char *tname,
                            void (*edit)(vtensor *), char *dir) {
    vfile v = *base;
    for (int i = 0; i < v.n; i++)
        if (strcmp(v.t[i].name, tname) == 0) edit(&v.t[i]);
    char src[PATH_MAX];
    pathf(src, "%s/a", root);
    case_dir(dir, root, name);
    vfile_case(&v, src, dir);
}

static void edit_beyond(vtensor *t) { t->lie_begin = t->lie_end = 1ll << 30; }
static void edit_inconsistent(vtensor *t) { t->lie_end = -4; }
static void edit_i64(vtensor *t) { snprintf(t->dtype, sizeof t->dtype, "I64"), t->shape[1] /= 2; }
static void edit_unknown(vtensor *t) { snprintf(t->dtype, sizeof t->dtype, "Q4"); }
static void edit_missing(vtensor *t) { snprintf(t->name, sizeof t->name, "h.1.ln_2.bias_renamed"); }
static void edit_dims(vtensor *t) { t->shape[0] = 256, t->shape[1] = 256; } /* same bytes, wrong shape */
static void edit_overlap(vtensor *t) { t->lie_begin = t->lie_end = -8; }

static void test_bad_tensors(const char *root, const vfile *base) {
    char dir[PATH_MAX];
    const struct { const char *name, *tensor; void (*edit)(vtensor *); const char *want; } c[] = {
        {"beyond", "h.0.ln_1.weight", edit_beyond, "run past the end of the"},
        {"inconsistent", "h.0.attn.c_attn.bias", edit_inconsistent, "hold 1532 bytes but 384 elements of F32 need 1536"},
        {"i64", "h.1.attn.c_attn.weight", edit_i64, "tensor h.1.attn.c_attn.weight has unsupported dtype I64"},
        {"unknown", "wpe.weight", edit_unknown, "tensor wpe.weight: unknown dtype Q4"},
        {"missing", "h.1.ln_2.bias", edit_missing, "missing tensor h.1.ln_2.bias"},
        {"shape", "h.0.mlp.c_fc.weight", edit_dims,
         "tensor h.0.mlp.c_fc.weight has shape [256,256], config.json says [128,512]"},
        {"overlap", "h.1.ln_1.bias", edit_overlap, "overlap"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        bad_tensor_case(root, base, c[i].name, c[i].tensor, c[i].edit, dir);
        load_fails(dir, c[i].want, c[i].name);
    }
}

/* Writes a copy of root/a's model.safetensors to root/name cut or patched; bytes[0..n) at off. */
static void bad_file_case(const char *root, const char *name, long cut, size_t off, const void *bytes,
                          size_t n, char *dir) {
    char src[PATH_MAX], path[PATH_MAX];
    uint8_t *buf;
    size_t len;
    pathf(src, "%s/a/model.safetensors", root);
    if (file_read(src, &buf, &len) != 0) return;
    case_dir(dir, root, name);
    if (bytes) memcpy(buf + off, bytes, n);
    pathf(path, "%s/model.safetensors", dir);
    file_write(path, buf, cut >= 0 ? (size_t)cut : len);
    free(buf);
    pathf(src, "%s/a/config.json", root);
    pathf(path, "%s/config.json", dir);
    if (file_read(src, &buf, &len) == 0) {
        file_write(path, buf, len);
        free(buf);
    }
}

static void test_bad_files(const char *root) {
    char dir[PATH_MAX], src[PATH_MAX];
    pathf(src, "%s/a/model.safetensors", root);
    struct stat st;
    long size = stat(src, &st) == 0 ? (long)st.st_size : 0;
    uint8_t big[8] = {0}, huge[8] = {0, 0, 0, 0x40, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++) big[i] = (uint8_t)((uint64_t)(size + 1) >> (8 * i));

    bad_file_case(root, "short", 5, 0, NULL, 0, dir);
    load_fails(dir, "shorter than the 8-byte header length", "file of 5 bytes");
    bad_file_case(root, "empty", 0, 0, NULL, 0, dir);
    load_fails(dir, "model.safetensors: file is 0 bytes", "empty file");
    bad_file_case(root, "hdrbig", -1, 0, big, 8, dir);
    load_fails(dir, "exceeds the file size", "header length beyond the file");
    bad_file_case(root, "hdrhuge", -1, 0, huge, 8, dir);
    load_fails(dir, "exceeds the 104857600-byte limit", "header length over 100 MB");
    bad_file_case(root, "notjson", -1, 8, "x", 1, dir);
    load_fails(dir, "header is not valid JSON", "header not JSON");
    bad_file_case(root, "array", -1, 8, "[", 1, dir);
    load_fails(dir, "header is not valid JSON", "header with mismatched brackets");
    bad_file_case(root, "truncated", size / 2, 0, NULL, 0, dir);
    load_fails(dir, "file truncated", "file cut in the middle");
    bad_file_case(root, "truncated4", size - 4, 0, NULL, 0, dir);
    load_fails(dir, "run past the end", "file missing its last 4 bytes");

    char path[PATH_MAX];
    bad_file_case(root, "trailing", -1, 0, NULL, 0, dir);
    pathf(path, "%s/model.safetensors", dir);
    FILE *fp = fopen(path, "ab");
    if (fp) fputs("junk", fp), fclose(fp);
    load_fails(dir, "trailing bytes", "trailing bytes");

    bad_file_case(root, "nomodel", -1, 0, NULL, 0, dir);
    pathf(path, "%s/model.safetensors", dir);
    remove(path);
    load_fails(dir, "model.safetensors: cannot open", "missing model.safetensors");
}

static void test_bad_headers(const char *root) {
    char dir[PATH_MAX];
    const struct { const char *name, *json, *want; } c[] = {
        {"hdr-array", "[1, 2]", "header is not a JSON object"},
        {"hdr-neg", "{\"wte.weight\": {\"dtype\": \"F32\", \"shape\": [-1, 2], \"data_offsets\": [0, 0]}}",
         "shape[0] is not a non-negative integer"},
        {"hdr-noshape", "{\"wte.weight\": {\"dtype\": \"F32\", \"data_offsets\": [0, 0]}}",
         "\"shape\" is missing"},
        {"hdr-nodtype", "{\"wte.weight\": {\"shape\": [], \"data_offsets\": [0, 4]}}", "\"dtype\" is missing"},
        {"hdr-offs", "{\"wte.weight\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}",
         "\"data_offsets\" is not [begin, end]"},
        {"hdr-dup", "{\"a\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}, "
                    "\"a\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}}",
         "duplicate object key"},
        {"hdr-ovf", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}}",
         "overflows 64 bits"},
        {"hdr-layers", "{\"__metadata__\": {\"format\": \"pt\"}}", "the file has tensors for 0 layers"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        size_t n = strlen(c[i].json);
        uint8_t *buf = malloc(8 + n + 4);
        for (int k = 0; k < 8; k++) buf[k] = (uint8_t)(n >> (8 * k));
        memcpy(buf + 8, c[i].json, n);
        memset(buf + 8 + n, 0, 4);
        case_dir(dir, root, c[i].name);
        char path[PATH_MAX], src[PATH_MAX];
        pathf(path, "%s/model.safetensors", dir);
        file_write(path, buf, 8 + n + (strstr(c[i].json, "[0, 4]") ? 4 : 0));
        free(buf);
        pathf(src, "%s/a", root);
        uint8_t *cj;
        size_t cl;
        pathf(path, "%s/config.json", src);
        if (file_read(path, &cj, &cl) == 0) {
            pathf(path, "%s/config.json", dir);
            file_write(path, cj, cl);
            free(cj);
        }
        load_fails(dir, c[i].want, c[i].name);
    }
}

static void test_bad_configs(const char *root) {
    char dir[PATH_MAX], src[PATH_MAX], path[PATH_MAX];
    pathf(src, "%s/a/model.safetensors", root);
    const char *good = "{\"n_layer\": 2, \"n_embd\": 128, \"n_head\": 4, \"n_positions\": 64, "
                       "\"vocab_size\": 50257";
    const struct { const char *name, *json, *want; } c[] = {
        {"cfg-missing", NULL, "config.json: cannot open"},
        {"cfg-notjson", "{\"n_layer\": 2,", "config.json: not valid JSON"},
        {"cfg-array", "[2, 128]", "config.json: not a JSON object"},
        {"cfg-noembd", "{\"n_layer\": 2, \"n_head\": 4, \"n_positions\": 64, \"vocab_size\": 50257}",
         "config.json: missing n_embd"},
        {"cfg-noctx", "{\"n_layer\": 2, \"n_embd\": 128, \"n_head\": 4, \"vocab_size\": 50257}",
         "missing n_positions (or n_ctx)"},
        {"cfg-div", "{\"n_layer\": 2, \"n_embd\": 128, \"n_head\": 5, \"n_positions\": 64, \"vocab_size\": 50257}",
         "n_embd=128 is not divisible by n_head=5"},
        {"cfg-str", "{\"n_layer\": \"2\", \"n_embd\": 128, \"n_head\": 4, \"n_positions\": 64, \"vocab_size\": 50257}",
         "n_layer is not an integer"},
        {"cfg-neg", "{\"n_layer\": -2, \"n_embd\": 128, \"n_head\": 4, \"n_positions\": 64, \"vocab_size\": 50257}",
         "n_layer=-2 is outside [1, 256]"},
        {"cfg-huge", "{\"n_layer\": 2, \"n_embd\": 128, \"n_head\": 4, \"n_positions\": 64, \"vocab_size\": 9999999999}",
         "vocab_size=9999999999 is out of range"},
        {"cfg-eps", "X, \"layer_norm_epsilon\": -1}", "layer_norm_epsilon=-1 is outside (0, 1)"},
        {"cfg-inner", "X, \"n_inner\": 100}", "n_inner must be null or 4*n_embd=512"},
        {"cfg-act", "X, \"activation_function\": \"relu\"}", "activation_function must be gelu_new"},
        {"cfg-3layers", "{\"n_layer\": 3, \"n_embd\": 128, \"n_head\": 4, \"n_ctx\": 64, \"vocab_size\": 50257}",
         "config.json says n_layer=3 but the file has tensors for 2 layers"},
        {"cfg-1layer", "{\"n_layer\": 1, \"n_embd\": 128, \"n_head\": 4, \"n_ctx\": 64, \"vocab_size\": 50257}",
         "config.json says n_layer=1 but the file has tensors for 2 layers"},
        {"cfg-ctx", "{\"n_layer\": 2, \"n_embd\": 128, \"n_head\": 4, \"n_positions\": 32, \"n_ctx\": 64, "
                    "\"vocab_size\": 50257}",
         "tensor wpe.weight has shape [64,128], config.json says [32,128]"},
        {"cfg-vocab", "{\"n_layer\": 2, \"n_embd\": 128, \"n_head\": 4, \"n_ctx\": 64, \"vocab_size\": 50000}",
         "tensor wte.weight has shape [50257,128], config.json says [50000,128]"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char json[512];
        if (c[i].json && c[i].json[0] == 'X')
            snprintf(json, sizeof json, "%s%s", good, c[i].json + 1);
        else
            snprintf(json, sizeof json, "%s", c[i].json ? c[i].json : "");
        case_dir(dir, root, c[i].name);
        if (c[i].json) file_write_str(dir, "config.json", json);
        uint8_t *buf;
        size_t len;
        pathf(path, "%s/model.safetensors", dir);
        if (file_read(src, &buf, &len) == 0) file_write(path, buf, len), free(buf);
        load_fails(dir, c[i].want, c[i].name);
    }
    gpt2_config cfg;
    char err[256];
    pathf(dir, "%s/a", root);
    check(ckpt_read_config(&cfg, dir, err, sizeof err) == 0 && cfg.n_embd == 128, "read_config: %s", err);
    pathf(dir, "%s/cfg-missing", root);
    check(ckpt_read_config(&cfg, dir, err, sizeof err) == -1 && cfg.n_layer == 0, "read_config fails");
}

static void test_write_errors(const char *root, const char *tok) {
    char dir[PATH_MAX], err[256] = "";
    gpt2_config bad = SMALL_CFG;
    bad.n_head = 3;
    pathf(dir, "%s/wbad", root);
    check(ckpt_write_random(dir, &bad, 1, tok, err, sizeof err) == -1 && strstr(err, "not divisible"),
          "write refuses a bad shape: %s", err);
    gpt2_config ok = SMALL_CFG;
    check(ckpt_write_random(dir, &ok, 1, "/nonexistent-tokenizer", err, sizeof err) == -1 &&
          strstr(err, "/nonexistent-tokenizer/vocab.json: cannot open"), "missing tokenizer: %s", err);
    pathf(dir, "%s/a/config.json/sub", root);
    check(ckpt_write_random(dir, &ok, 1, tok, err, sizeof err) == -1 && strstr(err, "cannot create"),
          "dir under a file: %s", err);
}

int main(void) {
    const char *env = getenv("GPT2D_TMP"), *groot = getenv("GPT2D_ROOT");
    char root[PATH_MAX], tok[PATH_MAX], made[PATH_MAX] = "";
    if (env && *env) {
        pathf(root, "%s/test_checkpoint.%d", env, (int)getpid());
        mkdir(root, 0755);
    } else {
        pathf(made, "/tmp/gpt2d-ckpt.XXXXXX");
        if (!mkdtemp(made)) return 1;
        pathf(root, "%s", made);
    }
    pathf(tok, "%s/data/gpt2-tokenizer", groot && *groot ? groot : ".");
    vfile *base = calloc(1, sizeof *base);
    test_write_and_load(root, tok, base);
    test_logits_peaked(root);
    test_variants(root, base);
    test_odd_width(root);
    test_bad_tensors(root, base);
    test_bad_files(root);
    test_bad_headers(root);
    test_bad_configs(root);
    test_write_errors(root, tok);
    vfile_free(base);
    free(base);
    rm_rf(root);
    return check_done("test_checkpoint");
}
