/* matmul_simd.h — code shared by the SIMD kernel families (matmul_avx2.c, matmul_avx512.c and their
 * per-format files), each compiling it with its own flags: the fused store of 16 results and the
 * families' forwards, which each family's table names.
 * Every element is computed as matmul.h defines it: the store is the same operations in the same
 * order as matmul_scalar.c. */
#ifndef GPT2D_MATMUL_SIMD_H
#define GPT2D_MATMUL_SIMD_H

#include <immintrin.h>
#include <string.h>

#include "matmul.h"
#include "vmath.h"

/* The AVX2 family's fp32 and bf16 forwards (matmul_avx2.c). */
void mm_avx2_forward_f32(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                         int mode, void *scratch);
void mm_avx2_forward_bf16(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                          int mode, void *scratch);
/* The AVX-512 family's fp32 and bf16 forwards (matmul_f32_avx512.c). */
void mm_avx512_forward_f32(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                           int mode, void *scratch);
void mm_avx512_forward_bf16(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                            int mode, void *scratch);
/* The MM_I8 forwards: matmul_i8_avx2.c, matmul_i8_avx512.c. */
void mm_avx2_forward_i8(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M, int mode,
                        void *scratch);
void mm_avx512_forward_i8(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M, int mode,
                          void *scratch);

/* Finishes 16 results of one row into out[n0 .. n0+16), clipped at N:
 *   MM_STORE: out = acc + bias;  MM_GELU: out = gelu(acc + bias);  MM_ADD: out = out + (acc + bias).
 * Each element's operations are the same whatever kernel produced acc. */
static inline void store16(float *out, int n0, int N, const float *bias, int mode, __m256 a0,
                           __m256 a1) {
    if (N - n0 >= 16) { /* the whole 16: straight from registers */
        if (bias) {
            a0 = _mm256_add_ps(a0, _mm256_loadu_ps(bias + n0));
            a1 = _mm256_add_ps(a1, _mm256_loadu_ps(bias + n0 + 8));
        }
        if (mode == MM_GELU) {
            a0 = vm_gelu(a0);
            a1 = vm_gelu(a1);
        } else if (mode == MM_ADD) {
            a0 = _mm256_add_ps(_mm256_loadu_ps(out + n0), a0);
            a1 = _mm256_add_ps(_mm256_loadu_ps(out + n0 + 8), a1);
        }
        _mm256_storeu_ps(out + n0, a0);
        _mm256_storeu_ps(out + n0 + 8, a1);
        return;
    }
    float tmp[16];
    int n = N - n0;
    _mm256_storeu_ps(tmp, a0);
    _mm256_storeu_ps(tmp + 8, a1);
    if (bias)
        for (int c = 0; c < n; c++) tmp[c] += bias[n0 + c];
    if (mode == MM_GELU) {
        a0 = vm_gelu(_mm256_loadu_ps(tmp));
        a1 = vm_gelu(_mm256_loadu_ps(tmp + 8));
        _mm256_storeu_ps(tmp, a0);
        _mm256_storeu_ps(tmp + 8, a1);
    }
    if (mode == MM_ADD) {
        for (int c = 0; c < n; c++) out[n0 + c] += tmp[c];
    } else {
        memcpy(out + n0, tmp, (size_t)n * sizeof(float));
    }
}

#endif
