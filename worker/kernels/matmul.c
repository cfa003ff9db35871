/* matmul.c — see matmul.h: packing (the same for every kernel family) and the choice of family. */
#include "matmul.h"

#include <stdio.h>
#include <string.h>

size_t mm_packed_floats(int K, int N) {
    return (size_t)((N + MM_PANEL - 1) / MM_PANEL) * K * MM_PANEL;
}

void mm_bind(mm_weight *w, const float *panels, int K, int N, const float *bias) {
    w->K = K;
    w->N = N;
    w->n_panels = (N + MM_PANEL - 1) / MM_PANEL;
    w->dtype = MM_F32;
    w->panels = panels;
    w->bias = bias;
}

void mm_pack(mm_weight *w, float *dst, const float *W, int K, int N, int transposed,
             const float *bias) {
    mm_bind(w, dst, K, N, bias);
    for (int j = 0; j < w->n_panels; j++) {
        float *panel = dst + (size_t)j * K * MM_PANEL;
        for (int k = 0; k < K; k++) {
            for (int c = 0; c < MM_PANEL; c++) {
                int n = j * MM_PANEL + c;
                float v = 0.0f;
                if (n < N) v = transposed ? W[(size_t)n * K + k] : W[(size_t)k * N + n];
                panel[(size_t)k * MM_PANEL + c] = v;
            }
        }
    }
}

static int cpu_has_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

const mm_kernels *mm_kernels_select(const char *isa, char *err, size_t errlen) {
    if (!isa || !*isa || strcmp(isa, "auto") == 0) {
        if (cpu_has_avx2()) return &mm_kernels_avx2;
        return &mm_kernels_scalar;
    }
    if (strcmp(isa, "scalar") == 0) return &mm_kernels_scalar;
    if (strcmp(isa, "avx2") == 0) {
        if (cpu_has_avx2()) return &mm_kernels_avx2;
        snprintf(err, errlen, "kernels: avx2 asked for, but this CPU lacks AVX2 or FMA");
        return NULL;
    }
    snprintf(err, errlen, "kernels: unknown instruction set '%s' (auto, avx2 or scalar)", isa);
    return NULL;
}
