/* safetensors.c — parse/validate a safetensors image and build headers; see safetensors.h. */
#include "safetensors.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- dtypes */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[ST_NDTYPES] = {
    [ST_F32] = {"F32", 4},   [ST_F16] = {"F16", 2},   [ST_BF16] = {"BF16", 2},
    [ST_F64] = {"F64", 8},   [ST_I64] = {"I64", 8},   [ST_U64] = {"U64", 8},
    [ST_I32] = {"I32", 4},   [ST_U32] = {"U32", 4},   [ST_I16] = {"I16", 2},
    [ST_U16] = {"U16", 2},   [ST_I8] = {"I8", 1},     [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};

size_t st_dtype_size(st_dtype dtype) {
    return (unsigned)dtype < ST_NDTYPES ? st_dtypes[dtype].size : 0;
}

const char *st_dtype_name(st_dtype dtype) {
    return (unsigned)dtype < ST_NDTYPES ? st_dtypes[dtype].name : "?";
}

/* The dtype spelled s, or -1. */
static int st_dtype_parse(const char *s) {
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) return i;
    return -1;
}

/* ---------------------------------------------------------------- parsing */

static int st_fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* A JSON integer >= 0 into *out; 0, or -1 if j is anything else. */
static int st_json_u64(const json_t *j, uint64_t *out) {
    if (!json_is_integer(j) || json_integer_value(j) < 0) return -1;
    *out = (uint64_t)json_integer_value(j);
    return 0;
}

/* Fills t->ndim, shape, numel from the JSON shape array. 0 / -1 with err. */
static int st_parse_shape(st_tensor *t, const json_t *shape, char *err, size_t errlen) {
    if (!json_is_array(shape))
        return st_fail(err, errlen, "tensor %s: \"shape\" is missing or not an array", t->name);
    size_t nd = json_array_size(shape);
    if (nd > ST_MAX_DIMS)
        return st_fail(err, errlen, "tensor %s: shape has %zu dimensions (at most %d)", t->name, nd,
                       ST_MAX_DIMS);
    t->ndim = (int)nd;
    t->numel = 1;
    for (size_t d = 0; d < nd; d++) {
        if (st_json_u64(json_array_get(shape, d), &t->shape[d]) != 0)
            return st_fail(err, errlen, "tensor %s: shape[%zu] is not a non-negative integer",
                           t->name, d);
        if (__builtin_mul_overflow(t->numel, t->shape[d], &t->numel))
            return st_fail(err, errlen, "tensor %s: shape overflows 64 bits", t->name);
    }
    return 0;
}

/* Validates one header entry and points t at its bytes in data[0..data_len). 0 / -1 with err. */
static int st_parse_entry(st_tensor *t, const char *name, const json_t *e, const uint8_t *data,
                          size_t data_len, char *err, size_t errlen) {
    t->name = name;
    if (!json_is_object(e)) return st_fail(err, errlen, "tensor %s: entry is not an object", name);
    const char *dt = json_string_value(json_object_get(e, "dtype"));
    if (!dt) return st_fail(err, errlen, "tensor %s: \"dtype\" is missing or not a string", name);
    int dtype = st_dtype_parse(dt);
    if (dtype < 0) return st_fail(err, errlen, "tensor %s: unknown dtype %.32s", name, dt);
    t->dtype = (st_dtype)dtype;
    if (st_parse_shape(t, json_object_get(e, "shape"), err, errlen) != 0) return -1;
    const json_t *off = json_object_get(e, "data_offsets");
    uint64_t begin, end;
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        st_json_u64(json_array_get(off, 0), &begin) != 0 ||
        st_json_u64(json_array_get(off, 1), &end) != 0 || begin > end)
        return st_fail(err, errlen,
                       "tensor %s: \"data_offsets\" is not [begin, end] with 0 <= begin <= end",
                       name);
    if (end > data_len)
        return st_fail(err, errlen,
                       "tensor %s: data_offsets [%llu, %llu] run past the end of the %zu-byte data "
                       "area (file truncated or header wrong)",
                       name, (unsigned long long)begin, (unsigned long long)end, data_len);
    uint64_t want;
    if (__builtin_mul_overflow(t->numel, (uint64_t)st_dtype_size(t->dtype), &want) ||
        end - begin != want)
        return st_fail(err, errlen,
                       "tensor %s: data_offsets [%llu, %llu] hold %llu bytes but %llu elements "
                       "of %s need %llu",
                       name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)(end - begin), (unsigned long long)t->numel, dt,
                       (unsigned long long)want);
    t->data = data + begin;
    t->nbytes = (size_t)want;
    return 0;
}

static int st_cmp_offset(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    return (x->data > y->data) - (x->data < y->data);
}

static int st_cmp_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* No two tensors share a byte, and the data area ends where the last tensor does. Reorders f. */
static int st_check_layout(st_file *f, const uint8_t *data, size_t data_len, char *err,
                           size_t errlen) {
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, st_cmp_offset);
    size_t end = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        size_t begin = (size_t)(t->data - data);
        if (begin < end && t->nbytes > 0)
            return st_fail(err, errlen, "tensor %s: data_offsets overlap tensor %s", t->name,
                           f->tensors[i - 1].name);
        if (begin + t->nbytes > end) end = begin + t->nbytes;
    }
    if (end != data_len)
        return st_fail(err, errlen,
                       "data area is %zu bytes but the tensors end at byte %zu (trailing bytes)",
                       data_len, end);
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, st_cmp_name);
    return 0;
}

/* Reads and bounds-checks the 8-byte header length. 0 / -1 with err. */
static int st_header_len(const uint8_t *p, size_t len, uint64_t *hlen, char *err, size_t errlen) {
    if (len < 8)
        return st_fail(err, errlen, "file is %zu bytes, shorter than the 8-byte header length",
                       len);
    *hlen = 0;
    for (int i = 7; i >= 0; i--) *hlen = (*hlen << 8) | p[i];
    if (*hlen > ST_MAX_HEADER)
        return st_fail(err, errlen, "header length %llu exceeds the %u-byte limit",
                       (unsigned long long)*hlen, ST_MAX_HEADER);
    if (*hlen > len - 8)
        return st_fail(err, errlen, "header length %llu exceeds the file size (%zu bytes)",
                       (unsigned long long)*hlen, len);
    if (*hlen < 2) return st_fail(err, errlen, "header length %llu is too small",
                                  (unsigned long long)*hlen);
    return 0;
}

int st_parse(st_file *f, const void *bytes, size_t len, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    const uint8_t *p = bytes;
    uint64_t hlen = 0;
    if (st_header_len(p, len, &hlen, err, errlen) != 0) return -1;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return st_fail(err, errlen, "header is not valid JSON: %s (line %d, column %d)", jerr.text,
                       jerr.line, jerr.column);
    f->json = root;
    if (!json_is_object(root)) {
        st_fail(err, errlen, "header is not a JSON object");
        goto fail;
    }
    size_t n = json_object_size(root) - (json_object_get(root, "__metadata__") != NULL);
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors) {
        st_fail(err, errlen, "out of memory for %zu tensors", n);
        goto fail;
    }
    const uint8_t *data = p + 8 + hlen;
    size_t data_len = len - 8 - (size_t)hlen;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        if (st_parse_entry(&f->tensors[f->n_tensors], key, val, data, data_len, err, errlen) != 0)
            goto fail;
        f->n_tensors++;
    }
    if (st_check_layout(f, data, data_len, err, errlen) != 0) goto fail;
    return 0;
fail:
    st_destroy(f);
    return -1;
}

void st_destroy(st_file *f) {
    if (!f) return;
    free(f->tensors);
    json_decref(f->json);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    if (!f->tensors) return NULL;
    st_tensor key = {.name = name};
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, st_cmp_name);
}

/* ---------------------------------------------------------------- writing */

/* {"dtype": ..., "shape": [...], "data_offsets": [begin, end]} for e, or NULL. */
static json_t *st_entry_json(const st_entry *e, uint64_t begin, uint64_t *end) {
    if ((unsigned)e->dtype >= ST_NDTYPES || e->ndim < 0 || e->ndim > ST_MAX_DIMS) return NULL;
    uint64_t bytes = st_dtype_size(e->dtype);
    json_t *shape = json_array();
    for (int d = 0; d < e->ndim; d++) {
        bytes *= e->shape[d];
        json_array_append_new(shape, json_integer((json_int_t)e->shape[d]));
    }
    *end = begin + bytes;
    json_t *off = json_pack("[II]", (json_int_t)begin, (json_int_t)*end);
    return json_pack("{s:s, s:o, s:o}", "dtype", st_dtype_name(e->dtype), "shape", shape,
                     "data_offsets", off);
}

uint8_t *st_header_build(const st_entry *entries, int n, size_t *len, uint64_t *data_len) {
    uint8_t *out = NULL;
    char *text = NULL;
    json_t *root = json_pack("{s:{s:s}}", "__metadata__", "format", "pt");
    uint64_t off = 0;
    for (int i = 0; root && i < n; i++) {
        if (!entries[i].name || json_object_get(root, entries[i].name)) goto fail;
        json_t *e = st_entry_json(&entries[i], off, &off);
        if (!e || json_object_set_new(root, entries[i].name, e) != 0) goto fail;
    }
    text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    if (!text) goto fail;
    size_t tlen = strlen(text), padded = (tlen + 7) & ~(size_t)7;
    out = malloc(8 + padded);
    if (!out) goto fail;
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(out + 8, text, tlen);
    memset(out + 8 + tlen, ' ', padded - tlen);
    *len = 8 + padded;
    *data_len = off;
fail:
    free(text);
    json_decref(root);
    return out;
}
