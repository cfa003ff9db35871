/* matmul.c — see matmul.h: packing (the same for every kernel family), format names and the choice
 * of family. */
#include "matmul.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cpu.h"

static const char *const dtype_names[MM_N_DTYPES] = {"fp32", "bf16", "int8"};
static const char *const dtype_tags[MM_N_DTYPES] = {"f32", "bf16", "i8"};

const char *mm_dtype_name(mm_dtype t) { return t < MM_N_DTYPES ? dtype_names[t] : "?"; }
const char *mm_dtype_tag(mm_dtype t) { return t < MM_N_DTYPES ? dtype_tags[t] : "?"; }

int mm_dtype_parse(const char *name, mm_dtype *out) {
    for (int t = 0; t < MM_N_DTYPES; t++)
        if (strcmp(name, dtype_names[t]) == 0) {
            *out = (mm_dtype)t;
            return 0;
        }
    return -1;
}

static size_t n_blocks(int K) { return (size_t)(K + MM_QK - 1) / MM_QK; }

size_t mm_packed_bytes(int K, int N, mm_dtype t) {
    size_t panels = (size_t)(N + MM_PANEL - 1) / MM_PANEL, b;
    switch (t) {
    case MM_BF16: b = panels * K * MM_PANEL * 2; break;
    case MM_I8: b = panels * n_blocks(K) * sizeof(mm_i8_block); break;
    default: b = panels * K * MM_PANEL * 4; break;
    }
    return (b + 63) / 64 * 64;
}

size_t mm_scratch_bytes(int M, int K) {
    return ((size_t)M * MM_I8_ROW_BYTES(n_blocks(K)) + 63) / 64 * 64;
}

void mm_bind(mm_weight *w, const void *panels, int K, int N, const float *bias, mm_dtype t) {
    w->K = K;
    w->N = N;
    w->n_panels = (N + MM_PANEL - 1) / MM_PANEL;
    w->dtype = t;
    w->panels = panels;
    w->bias = bias;
}

/* bf16 of f, rounded to nearest even (a NaN stays a quiet NaN). */
static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Packs one MM_I8 panel's block: columns n0 .. n0+15, k0 .. k0+31 (clipped to K, N). */
static void pack_i8_block(mm_i8_block *blk, const float *W, int K, int N, int transposed, int n0, int k0) {
    memset(blk, 0, sizeof *blk);
    for (int c = 0; c < MM_PANEL && n0 + c < N; c++) {
        int n = n0 + c;
        float v[MM_QK], amax = 0.0f;
        for (int i = 0; i < MM_QK; i++) {
            int k = k0 + i;
            v[i] = k < K ? (transposed ? W[(size_t)n * K + k] : W[(size_t)k * N + n]) : 0.0f;
            amax = fmaxf(amax, fabsf(v[i]));
        }
        blk->d[c] = mm_fp32_to_fp16(amax / 127.0f);
        float d = mm_fp16_to_fp32(blk->d[c]);
        for (int i = 0; i < MM_QK && d > 0.0f; i++) {
            float q = nearbyintf(v[i] / d);
            blk->q[i / 4][c][i % 4] = (int8_t)(q > 127.0f ? 127 : q < -127.0f ? -127 : q);
        }
    }
}

void mm_pack(mm_weight *w, void *dst, const float *W, int K, int N, int transposed, const float *bias,
             mm_dtype t) {
    mm_bind(w, dst, K, N, bias, t);
    memset(dst, 0, mm_packed_bytes(K, N, t));
    for (int j = 0; j < w->n_panels; j++) {
        if (t == MM_I8) {
            mm_i8_block *blk = (mm_i8_block *)dst + (size_t)j * n_blocks(K);
            for (size_t b = 0; b < n_blocks(K); b++) pack_i8_block(blk + b, W, K, N, transposed, j * MM_PANEL, (int)b * MM_QK);
            continue;
        }
        for (int k = 0; k < K; k++) {
            for (int c = 0; c < MM_PANEL; c++) {
                int n = j * MM_PANEL + c;
                float v = 0.0f;
                if (n < N) v = transposed ? W[(size_t)n * K + k] : W[(size_t)k * N + n];
                size_t at = ((size_t)j * K + k) * MM_PANEL + c;
                if (t == MM_BF16) ((uint16_t *)dst)[at] = to_bf16(v);
                else ((float *)dst)[at] = v;
            }
        }
    }
}

void mm_view_panels(mm_weight *view, const mm_weight *w, int p0, int p1) {
    size_t panel = w->dtype == MM_I8   ? n_blocks(w->K) * sizeof(mm_i8_block)
                   : w->dtype == MM_BF16 ? (size_t)w->K * MM_PANEL * 2
                                         : (size_t)w->K * MM_PANEL * 4;
    int n1 = p1 * MM_PANEL < w->N ? p1 * MM_PANEL : w->N;
    *view = *w;
    view->N = n1 - p0 * MM_PANEL;
    view->n_panels = p1 - p0;
    view->panels = (const char *)w->panels + (size_t)p0 * panel;
    view->bias = w->bias ? w->bias + (size_t)p0 * MM_PANEL : NULL;
}

float mm_at(const mm_weight *w, int k, int n) {
    size_t j = (size_t)(n / MM_PANEL);
    int c = n % MM_PANEL;
    if (w->dtype == MM_I8) {
        const mm_i8_block *blk = (const mm_i8_block *)w->panels + j * n_blocks(w->K) + k / MM_QK;
        int i = k % MM_QK;
        return (float)blk->q[i / 4][c][i % 4] * mm_fp16_to_fp32(blk->d[c]);
    }
    size_t at = (j * w->K + k) * MM_PANEL + c;
    if (w->dtype == MM_BF16) return from_bf16(((const uint16_t *)w->panels)[at]);
    return ((const float *)w->panels)[at];
}

/* What the families need, from cpu.c (cpuid, and xgetbv for the registers the OS saves). */
static int cpu_has_avx2(void) {
    cpu_features f;
    char err[8];
    cpu_detect(&f);
    return cpu_missing(&f, err, sizeof err) == 0;
}

static int cpu_has_avx512(void) {
    cpu_features f;
    cpu_detect(&f);
    return cpu_avx512_ok(&f);
}

const mm_kernels *mm_kernels_select(const char *isa, char *err, size_t errlen) {
    if (!isa || !*isa || strcmp(isa, "auto") == 0) {
        if (cpu_has_avx512()) return &mm_kernels_avx512;
        if (cpu_has_avx2()) return &mm_kernels_avx2;
        return &mm_kernels_scalar;
    }
    if (strcmp(isa, "scalar") == 0) return &mm_kernels_scalar;
    if (strcmp(isa, "avx2") == 0) {
        if (cpu_has_avx2()) return &mm_kernels_avx2;
        snprintf(err, errlen, "kernels: avx2 asked for, but this CPU lacks AVX2, FMA or F16C (or the OS the YMM state)");
        return NULL;
    }
    if (strcmp(isa, "avx512") == 0) {
        if (cpu_has_avx512()) return &mm_kernels_avx512;
        snprintf(err, errlen, "kernels: avx512 asked for, but this CPU lacks AVX-512 F/BW/VL or AVX512-VNNI (or the OS the ZMM state)");
        return NULL;
    }
    snprintf(err, errlen, "kernels: unknown instruction set '%s' (auto, avx512, avx2 or scalar)", isa);
    return NULL;
}
