/* matmul_scalar.c — the "scalar" kernel family of matmul.h: the definition every other family must
 * match bit for bit, in plain C (compiled without any -m flag; fmaf is the C library's correctly
 * rounded fused multiply-add). Per output element, in this order:
 *     acc = 0;  for k: acc = fmaf(x[m][k], W[k][n], acc);  r = bias ? acc + b[n] : acc
 *     MM_STORE: out = r;  MM_GELU: out = gelu(r);  MM_ADD: out += r
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

typedef struct {
    const mm_weight *w;
    const float *x;
    float *out;
    int ldx, ldo, M, mode;
} scalar_job;

/* Task j: panel j (16 output columns) for every row. */
static void scalar_task(void *ctx, int begin, int end, int tid) {
    (void)tid;
    const scalar_job *j = ctx;
    const mm_weight *w = j->w;
    for (int p = begin; p < end; p++) {
        const float *panel = w->panels + (size_t)p * w->K * MM_PANEL;
        for (int m = 0; m < j->M; m++) {
            const float *x = j->x + (size_t)m * j->ldx;
            float *out = j->out + (size_t)m * j->ldo;
            for (int c = 0; c < MM_PANEL && p * MM_PANEL + c < w->N; c++) {
                int n = p * MM_PANEL + c;
                float acc = 0.0f;
                for (int k = 0; k < w->K; k++) acc = fmaf(x[k], panel[(size_t)k * MM_PANEL + c], acc);
                float r = w->bias ? acc + w->bias[n] : acc;
                if (j->mode == MM_GELU) out[n] = scalar_gelu(r);
                else if (j->mode == MM_ADD) out[n] += r;
                else out[n] = r;
            }
        }
    }
}

static void scalar_forward_f32(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo,
                               int M, int mode) {
    scalar_job j = {w, x, out, ldx, ldo, M, mode};
    if (p)
        pool_run(p, scalar_task, &j, w->n_panels, 1);
    else
        scalar_task(&j, 0, w->n_panels, 0);
}

const mm_kernels mm_kernels_scalar = {"scalar", {[MM_F32] = scalar_forward_f32}};
