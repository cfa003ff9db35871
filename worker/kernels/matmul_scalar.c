/* matmul_scalar.c — the "scalar" kernel family of matmul.h: the definition every other family must
 * match bit for bit, in plain C (compiled without any -m flag; fmaf is the C library's correctly
 * rounded fused multiply-add). Per output element, in this order:
 *     MM_F32 / MM_BF16: acc = 0;  for k: acc = fmaf(x[m][k], W[k][n], acc)   (bf16 widened exactly)
 *     MM_I8: acc = 0;  for each block b: acc = fmaf((float)isum_b, dx[m][b] * d[b][n], acc)
 *     r = bias ? acc + b[n] : acc
 *     MM_STORE: out = r;  MM_GELU: out = gelu(r);  MM_ADD: out += r
 * Also the one quantizer of activations (mm_quantize_rows) and fp16 conversion, used by every family.
 * gelu is vmath.h's vm_gelu written out operation by operation (the same Cephes exp). Slow: it is the
 * reference and the forced baseline (GPT2D_ISA=scalar), not a production path. */
#include "matmul.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* vm_exp of one lane. */
static float scalar_exp(float x) {
    int under = x < -87.0f;
    x = fminf(fmaxf(x, -87.0f), 88.3762626647949f);
    float fx = floorf(fmaf(x, 1.44269504088896341f, 0.5f));
    x = fmaf(-fx, 0.693359375f, x);
    x = fmaf(-fx, -2.12194440e-4f, x);
    float y = 1.9875691500E-4f;
    y = fmaf(y, x, 1.3981999507E-3f);
    y = fmaf(y, x, 8.3334519073E-3f);
    y = fmaf(y, x, 4.1665795894E-2f);
    y = fmaf(y, x, 1.6666665459E-1f);
    y = fmaf(y, x, 5.0000001201E-1f);
    float x2 = x * x;
    y = fmaf(y, x2, x + 1.0f);
    uint32_t bits = (uint32_t)((int32_t)fx + 127) << 23;
    float pow2;
    memcpy(&pow2, &bits, sizeof pow2);
    return under ? 0.0f : y * pow2;
}

/* vm_gelu of one lane. */
static float scalar_gelu(float x) {
    float x3 = x * x * x;
    float u = 0.7978845608028654f * fmaf(0.044715f, x3, x);
    float e = scalar_exp(u + u);
    float t = 1.0f - 2.0f / (e + 1.0f);
    return 0.5f * x * (1.0f + t);
}

uint16_t mm_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return sign | 0x7e00u;   /* NaN */
    if (x >= 0x477ff000u) return sign | 0x7c00u;  /* rounds past 65504: infinity */
    if (x < 0x38800000u) {                        /* below 2^-14: a subnormal fp16 (or zero) */
        float a;
        memcpy(&a, &x, sizeof a);
        return sign | (uint16_t)nearbyintf(a * 16777216.0f); /* units of 2^-24, exact scaling */
    }
    x = x + 0xfffu + ((x >> 13) & 1u) - 0x38000000u;     /* round to nearest even, rebias 127 -> 15 */
    return sign | (uint16_t)(x >> 13);
}

float mm_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
    if (e == 0) {
        float v = (float)m * 5.9604644775390625e-8f; /* m * 2^-24, exact */
        return sign ? -v : v;
    }
    bits = e == 31 ? sign | 0x7f800000u | (m << 13) : sign | ((e + 112) << 23) | (m << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void mm_quantize_rows(const float *x, int ldx, int K, int m0, int m1, void *scratch) {
    int nb = (K + MM_QK - 1) / MM_QK;
    for (int m = m0; m < m1; m++) {
        const float *row = x + (size_t)m * ldx;
        const float *dxc;
        int8_t *q = (int8_t *)mm_i8_row(scratch, K, m, &dxc);
        float *dx = (float *)dxc;
        int32_t *xc = (int32_t *)mm_i8_xc(scratch, K, m);
        for (int b = 0; b < nb; b++) {
            float amax = 0.0f;
            for (int i = 0; i < MM_QK && b * MM_QK + i < K; i++) amax = fmaxf(amax, fabsf(row[b * MM_QK + i]));
            float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            dx[b] = amax / 127.0f;
            int32_t sum = 0;
            for (int i = 0; i < MM_QK; i++) {
                int k = b * MM_QK + i;
                float v = k < K ? row[k] * id : 0.0f;
                float r = (v + 12582912.0f) - 12582912.0f; /* round to nearest even (|v| < 2^22) */
                r = r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r;
                q[k] = (int8_t)(r == r ? r : 0.0f);
                sum += q[k];
            }
            xc[b] = -128 * sum;
        }
    }
}

typedef struct {
    const mm_weight *w;
    const float *x;
    float *out;
    int ldx, ldo, M, mode;
    const void *xq; /* MM_I8: quantized rows */
} scalar_job;

static float bf16_at(const uint16_t *p) {
    uint32_t u = (uint32_t)*p << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* acc for (row m, column c of panel p) as matmul.h defines it for w's format. */
static float scalar_dot(const scalar_job *j, int p, int m, int c) {
    const mm_weight *w = j->w;
    const float *x = j->x + (size_t)m * j->ldx;
    float acc = 0.0f;
    if (w->dtype == MM_F32) {
        const float *panel = (const float *)w->panels + (size_t)p * w->K * MM_PANEL;
        for (int k = 0; k < w->K; k++) acc = fmaf(x[k], panel[(size_t)k * MM_PANEL + c], acc);
    } else if (w->dtype == MM_BF16) {
        const uint16_t *panel = (const uint16_t *)w->panels + (size_t)p * w->K * MM_PANEL;
        for (int k = 0; k < w->K; k++) acc = fmaf(x[k], bf16_at(panel + (size_t)k * MM_PANEL + c), acc);
    } else {
        int nb = (w->K + MM_QK - 1) / MM_QK;
        const mm_i8_block *blk = (const mm_i8_block *)w->panels + (size_t)p * nb;
        const float *dx;
        const int8_t *xq = mm_i8_row(j->xq, w->K, m, &dx);
        for (int b = 0; b < nb; b++) {
            int32_t isum = 0;
            for (int i = 0; i < MM_QK; i++) isum += (int32_t)xq[b * MM_QK + i] * blk[b].q[i / 4][c][i % 4];
            float s = dx[b] * mm_fp16_to_fp32(blk[b].d[c]);
            acc = fmaf((float)isum, s, acc);
        }
    }
    return acc;
}

/* Task j: panel j (16 output columns) for every row. */
static void scalar_task(void *ctx, int begin, int end, int tid) {
    (void)tid;
    const scalar_job *j = ctx;
    const mm_weight *w = j->w;
    for (int p = begin; p < end; p++) {
        for (int m = 0; m < j->M; m++) {
            float *out = j->out + (size_t)m * j->ldo;
            for (int c = 0; c < MM_PANEL && p * MM_PANEL + c < w->N; c++) {
                int n = p * MM_PANEL + c;
                float acc = scalar_dot(j, p, m, c);
                float r = w->bias ? acc + w->bias[n] : acc;
                if (j->mode == MM_GELU) out[n] = scalar_gelu(r);
                else if (j->mode == MM_ADD) out[n] += r;
                else out[n] = r;
            }
        }
    }
}

static void scalar_forward(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                           int mode, void *scratch) {
    scalar_job j = {w, x, out, ldx, ldo, M, mode, scratch};
    if (w->dtype == MM_I8) mm_quantize_rows(x, ldx, w->K, 0, M, scratch);
    if (p)
        pool_run(p, scalar_task, &j, w->n_panels, 1);
    else
        scalar_task(&j, 0, w->n_panels, 0);
}

const mm_kernels mm_kernels_scalar = {
    "scalar", {[MM_F32] = scalar_forward, [MM_BF16] = scalar_forward, [MM_I8] = scalar_forward}};
