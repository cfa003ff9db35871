/* test_mm.c — the matmul kernels (worker/kernels) against one independent definition, bit for bit.
 *
 * The reference is the loop matmul.h states, written here without panels: for each (m, n),
 * acc = fmaf(x[m][k], W[k][n], acc) for k = 0..K-1, then + bias, then the mode (store, vm_gelu,
 * add). Every kernel family (avx2, scalar) on every shape (M from 1 through past a 96-row block, N
 * not a multiple of 16, K odd, strided rows), with and without the pool and a bias, must give exactly
 * those bits. Also: packing both layouts, mm_at, and the family choice (auto, forced, unknown). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "matmul.h"
#include "vmath.h"

static float frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return ((float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f) * 0.5f;
}

static void reference(const float *W, const float *x, int ldx, const float *bias, float *out, int ldo, int M, int K,
                      int N, int mode) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) acc = fmaf(x[(size_t)m * ldx + k], W[(size_t)k * N + n], acc);
            float r = bias ? acc + bias[n] : acc;
            float *o = &out[(size_t)m * ldo + n];
            if (mode == MM_GELU) *o = vm_gelu1(r);
            else if (mode == MM_ADD) *o += r;
            else *o = r;
        }
}

int main(void) {
    char err[256];
    const mm_kernels *fams[2] = {&mm_kernels_avx2, &mm_kernels_scalar};
    pool *p = pool_new(3);
    static const int Ms[] = {1, 2, 5, 6, 7, 13, 97}, Ns[] = {1, 15, 16, 17, 64, 70}, Ks[] = {1, 7, 64};
    unsigned seed = 7;
    int cases = 0, bad = 0;
    for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
        for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++) {
            int K = Ks[ki], N = Ns[ni], ldx = K + 3, ldo = N + 5;
            float *W = malloc(sizeof(float) * K * N), *Wt = malloc(sizeof(float) * K * N), *b = malloc(sizeof(float) * N);
            float *panels = aligned_alloc(64, mm_packed_floats(K, N) * sizeof(float) + 64);
            float *panels_t = aligned_alloc(64, mm_packed_floats(K, N) * sizeof(float) + 64);
            for (int i = 0; i < K * N; i++) W[i] = frand(&seed);
            for (int k = 0; k < K; k++)
                for (int n = 0; n < N; n++) Wt[(size_t)n * K + k] = W[(size_t)k * N + n];
            for (int n = 0; n < N; n++) b[n] = frand(&seed);
            mm_weight w, wt;
            for (int use_bias = 0; use_bias < 2; use_bias++) {
                mm_pack(&w, panels, W, K, N, 0, use_bias ? b : NULL);
                mm_pack(&wt, panels_t, Wt, K, N, 1, use_bias ? b : NULL);
                int at_ok = memcmp(panels, panels_t, mm_packed_floats(K, N) * sizeof(float)) == 0;
                for (int k = 0; k < K; k++)
                    for (int n = 0; n < N; n++) at_ok &= mm_at(&w, k, n) == W[(size_t)k * N + n];
                check(at_ok, "packing K %d N %d: both layouts give the same panels; mm_at reads W back", K, N);
                for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                    int M = Ms[mi];
                    float *x = malloc(sizeof(float) * M * ldx), *init = malloc(sizeof(float) * M * ldo);
                    float *ref = malloc(sizeof(float) * M * ldo), *got = malloc(sizeof(float) * M * ldo);
                    for (int i = 0; i < M * ldx; i++) x[i] = frand(&seed);
                    for (int i = 0; i < M * ldo; i++) init[i] = frand(&seed);
                    for (int mode = MM_STORE; mode <= MM_ADD; mode++) {
                        memcpy(ref, init, sizeof(float) * M * ldo);
                        reference(W, x, ldx, use_bias ? b : NULL, ref, ldo, M, K, N, mode);
                        for (int f = 0; f < 2; f++)
                            for (int pooled = 0; pooled < 2; pooled++) {
                                memcpy(got, init, sizeof(float) * M * ldo);
                                mm_forward(fams[f], pooled ? p : NULL, &w, x, ldx, got, ldo, M, mode);
                                cases++;
                                if (memcmp(got, ref, sizeof(float) * M * ldo) != 0) {
                                    if (bad++ < 5)
                                        check(0, "%s M %d K %d N %d mode %d bias %d pool %d differs from the definition",
                                              fams[f]->name, M, K, N, mode, use_bias, pooled);
                                }
                            }
                    }
                    free(x), free(init), free(ref), free(got);
                }
            }
            free(W), free(Wt), free(b), free(panels), free(panels_t);
        }
    printf("mm: %d kernel runs, %d differ from the definition\n", cases, bad);
    check(bad == 0 && cases > 1000, "every kernel family, shape, mode: bit-identical to the definition (%d runs)", cases);
    /* special values go through GELU the same way */
    {
        float W1[16], x1[4] = {100.0f, -100.0f, 0.0f, -0.0f}, ref[4 * 16], got[4 * 16];
        for (int n = 0; n < 16; n++) W1[n] = n % 2 ? 1.0f : -1.0f;
        float *pan = aligned_alloc(64, 16 * sizeof(float));
        mm_weight w1;
        mm_pack(&w1, pan, W1, 1, 16, 0, NULL);
        reference(W1, x1, 1, NULL, ref, 16, 4, 1, 16, MM_GELU);
        for (int f = 0; f < 2; f++) {
            mm_forward(fams[f], NULL, &w1, x1, 1, got, 16, 4, MM_GELU);
            check(memcmp(got, ref, sizeof ref) == 0, "%s: GELU of +-100 and +-0 as defined", fams[f]->name);
        }
        free(pan);
    }
    check(mm_kernels_select("scalar", err, sizeof err) == &mm_kernels_scalar, "scalar can be forced");
    check(mm_kernels_select(NULL, err, sizeof err) == &mm_kernels_avx2 &&
              mm_kernels_select("auto", err, sizeof err) == &mm_kernels_avx2,
          "auto picks avx2 on this CPU");
    check(mm_kernels_select("avx512", err, sizeof err) == NULL && strstr(err, "avx512"), "unknown family refused: %s", err);
    pool_free(p);
    return check_done("test_mm");
}
