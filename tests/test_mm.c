/* test_mm.c — the matmul kernels (worker/kernels) against one independent definition, bit for bit.
 *
 * The reference is matmul.h's definition written here without panels, from the test's own copy of
 * the weights in each format: fp32 as given; bf16 rounded here (to nearest even, bit arithmetic);
 * int8 quantized here (fp16 scales through the CPU's F16C instructions, not the library's
 * converter; activations quantized here too), with the integer block sums and the float chain in
 * the documented order. The packed panels must hold exactly those values (read through the
 * documented mm_i8_block layout and mm_at), and every kernel family (avx512 where the CPU has it,
 * avx2, scalar) on every shape (M from 1 through past a 96-row block, N not a multiple of 16, K odd
 * and not a multiple of the 32-weight block, strided rows), with and without the pool and a bias,
 * in each mode, must give exactly the reference's bits; fp32 and bf16 also on the model's shapes
 * (M up to 512, K up to 3072, every remainder of the SIMD micro-kernels and partial panel groups),
 * and the fused GELU against vm_gelu on a million inputs and the special values. Also: fp16
 * conversion against F16C on all 65536 halves and on floats around every boundary, the family
 * choice (auto, forced, unknown), the format names, and that int8 stays close to fp32 (the
 * quantization error is bounded). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>

#include "check.h"
#include "cpu.h"
#include "matmul.h"
#include "vmath.h"

static float frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return ((float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f) * 0.5f;
}

static float bf16_round(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static float f16c_round(float f) { return _cvtsh_ss(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)); }

/* The test's own int8 copy of W (K, N): q (Kp, N) and d (nb, N) as fp32 values of the fp16 scales. */
static void quantize_weights(const float *W, int K, int N, signed char *q, float *d) {
    int nb = (K + 31) / 32;
    for (int b = 0; b < nb; b++)
        for (int n = 0; n < N; n++) {
            float amax = 0;
            for (int k = b * 32; k < b * 32 + 32 && k < K; k++) amax = fmaxf(amax, fabsf(W[(size_t)k * N + n]));
            float s = f16c_round(amax / 127.0f);
            d[(size_t)b * N + n] = s;
            for (int k = b * 32; k < b * 32 + 32; k++) {
                float v = k < K && s > 0 ? nearbyintf(W[(size_t)k * N + n] / s) : 0;
                q[(size_t)k * N + n] = (signed char)fmaxf(-127, fminf(127, v));
            }
        }
}

static void quantize_acts(const float *x, int K, signed char *q, float *d) {
    int nb = (K + 31) / 32;
    for (int b = 0; b < nb; b++) {
        float amax = 0;
        for (int k = b * 32; k < b * 32 + 32 && k < K; k++) amax = fmaxf(amax, fabsf(x[k]));
        d[b] = amax / 127.0f;
        float id = amax > 0 ? 127.0f / amax : 0;
        for (int k = b * 32; k < b * 32 + 32; k++) q[k] = (signed char)(k < K ? nearbyintf(x[k] * id) : 0);
    }
}

typedef struct {
    int dt, K, N;
    const float *Wf;         /* fp32 or bf16-rounded (K, N) */
    const signed char *q;    /* int8: (Kp, N) */
    const float *d;          /* int8: (nb, N) */
} ref_weight;

static void reference(const ref_weight *r, const float *x, int ldx, const float *bias, float *out, int ldo, int M,
                      int mode) {
    int K = r->K, N = r->N, nb = (K + 31) / 32;
    signed char *xq = malloc((size_t)nb * 32);
    float *dx = malloc(sizeof(float) * nb);
    for (int m = 0; m < M; m++) {
        if (r->dt == MM_I8) quantize_acts(x + (size_t)m * ldx, K, xq, dx);
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            if (r->dt == MM_I8) {
                for (int b = 0; b < nb; b++) {
                    int isum = 0;
                    for (int k = b * 32; k < b * 32 + 32; k++) isum += xq[k] * r->q[(size_t)k * N + n];
                    acc = fmaf((float)isum, dx[b] * r->d[(size_t)b * N + n], acc);
                }
            } else {
                for (int k = 0; k < K; k++) acc = fmaf(x[(size_t)m * ldx + k], r->Wf[(size_t)k * N + n], acc);
            }
            float v = bias ? acc + bias[n] : acc;
            float *o = &out[(size_t)m * ldo + n];
            if (mode == MM_GELU) *o = vm_gelu1(v);
            else if (mode == MM_ADD) *o += v;
            else *o = v;
        }
    }
    free(xq), free(dx);
}

/* The packed panels hold the reference's values: via mm_at, and for int8 via the documented blocks. */
static int packed_as_defined(const mm_weight *w, const ref_weight *r) {
    int ok = 1, K = r->K, N = r->N, nb = (K + 31) / 32;
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) {
            float want = r->dt == MM_I8 ? r->q[(size_t)k * N + n] * r->d[(size_t)(k / 32) * N + n] : r->Wf[(size_t)k * N + n];
            ok &= mm_at(w, k, n) == want;
        }
    if (r->dt == MM_I8) {
        for (int n = 0; n < N; n++)
            for (int b = 0; b < nb; b++) {
                const mm_i8_block *blk = (const mm_i8_block *)w->panels + (size_t)(n / 16) * nb + b;
                ok &= _cvtsh_ss(blk->d[n % 16]) == r->d[(size_t)b * N + n];
                for (int i = 0; i < 32; i++) ok &= blk->q[i / 4][n % 16][i % 4] == r->q[(size_t)(b * 32 + i) * N + n];
            }
    }
    return ok;
}

static void test_fp16(void) {
    int bad = 0;
    for (unsigned h = 0; h < 65536; h++) {
        float want = _cvtsh_ss((unsigned short)h), got = mm_fp16_to_fp32((uint16_t)h);
        if (!(memcmp(&want, &got, 4) == 0 || (want != want && got != got))) bad++;
    }
    check(bad == 0, "fp16 -> fp32: all 65536 halves as F16C converts them (%d differ)", bad);
    bad = 0;
    unsigned seed = 99;
    for (int i = 0; i < 200000; i++) {
        /* around every fp16 value (ties included), through the subnormal and overflow boundaries */
        seed = seed * 1103515245u + 12345u;
        unsigned h = (seed >> 8) & 0x7fff;
        float base = _cvtsh_ss((unsigned short)h);
        unsigned u;
        memcpy(&u, &base, 4);
        u += (int)((seed >> 3) % 8192) - 4096;
        float f;
        memcpy(&f, &u, 4);
        if (i & 1) f = -f;
        if (f != f) continue;
        if (mm_fp32_to_fp16(f) != _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)) bad++;
    }
    static const float edge[] = {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, 1e9f, 6.1035156e-05f, 6.0e-05f,
                                 5.9604645e-08f, 2.98e-08f, 2.9802322e-08f, 1e-30f, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof edge / sizeof *edge; i++)
        if (mm_fp32_to_fp16(edge[i]) != _cvtss_sh(edge[i], _MM_FROUND_TO_NEAREST_INT)) bad++;
    check(bad == 0, "fp32 -> fp16: rounding as F16C does, subnormals and overflow included (%d differ)", bad);
}

/* x: a row of K floats of kind `kind` (0 ordinary, 1 with specials: zeros, denormals, huge, inf, NaN,
 * rounding ties; 2 a whole row of denormals; 3 all zero). */
static void special_row(float *x, int K, int kind, unsigned *seed) {
    static const float sp[] = {0.0f, -0.0f, 1e-40f, -1e-42f, 1.4e-45f, 1.17549435e-38f, 3e38f, -3.4028235e38f,
                               INFINITY, -INFINITY, NAN, -NAN, 0.5f, -0.5f, 1.5f, 2.5f, 126.5f, -126.5f, 1e-30f, 65504.0f};
    for (int k = 0; k < K; k++) {
        float v = frand(seed);
        if (kind == 1) {
            *seed = *seed * 1103515245u + 12345u;
            unsigned r = (*seed >> 8) % 23;
            if (r < sizeof sp / sizeof *sp) v = sp[r];
            else if (r == 20) v *= 1e-37f;  /* a block of tiny (partly subnormal) values */
            else if (r == 21) v *= 1e30f;
        } else if (kind == 2) {
            v *= 1e-39f;
        } else if (kind == 3) {
            v = 0.0f;
        }
        x[k] = v;
    }
    if (kind == 0 && K >= 64) /* a block whose amax is 127 x (an exact tie) */
        for (int k = 32; k < 64; k++) x[k] = (float)((k % 7) - 3) * 0.5f;
}

/* Each family's vectorized quantizer writes the bytes of mm_quantize_rows (the definition), and those
 * are the documented layout: dx as the test's own quantizer, xc = -128 * sum(q), q its int8s. */
static void test_quantizers(int have_avx512) {
    static const int Ks[] = {1, 5, 31, 32, 33, 64, 95, 100, 768, 3077};
    unsigned seed = 11;
    int bad_avx2 = 0, bad_avx512 = 0, bad_layout = 0, n = 0;
    for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++) {
        int K = Ks[ki], M = 9, ldx = K + 1, nb = (K + 31) / 32;
        size_t bytes = mm_scratch_bytes(M, K);
        float *x = malloc(sizeof(float) * (size_t)M * ldx), *dref = malloc(sizeof(float) * nb);
        signed char *qref = malloc((size_t)nb * 32);
        unsigned char *s0 = aligned_alloc(64, bytes), *s1 = aligned_alloc(64, bytes), *s2 = aligned_alloc(64, bytes);
        for (int m = 0; m < M; m++) special_row(x + (size_t)m * ldx, K, m % 4 == 0 ? 0 : m % 4, &seed);
        for (int m0 = 1; m0 >= 0; m0--) { /* rows 1..M-1 only (nothing else written), then all rows */
            memset(s0, 0xa5, bytes), memset(s1, 0xa5, bytes), memset(s2, 0xa5, bytes);
            mm_quantize_rows(x, ldx, K, m0, M, s0);
            mm_avx2_quantize_rows(x, ldx, K, m0, M, s1);
            if (have_avx512) mm_avx512_quantize_rows(x, ldx, K, m0, M, s2);
            bad_avx2 += memcmp(s0, s1, bytes) != 0;
            bad_avx512 += have_avx512 && memcmp(s0, s2, bytes) != 0;
            n++;
        }
        for (int m = 0; m < M; m++) {
            if (m % 4 == 1 || m % 4 == 2) continue; /* specials, subnormals: the test's quantizer has no NaN / overflow rules */
            const float *dx;
            const signed char *q = (const signed char *)mm_i8_row(s0, K, m, &dx);
            const int32_t *xc = mm_i8_xc(s0, K, m);
            quantize_acts(x + (size_t)m * ldx, K, qref, dref);
            for (int b = 0; b < nb; b++) {
                int sum = 0;
                for (int i = 0; i < 32; i++) sum += q[b * 32 + i];
                bad_layout += dx[b] != dref[b] || xc[b] != -128 * sum || memcmp(q + b * 32, qref + b * 32, 32) != 0;
            }
        }
        free(x), free(dref), free(qref), free(s0), free(s1), free(s2);
    }
    check(bad_layout == 0, "mm_quantize_rows writes the documented layout (dx, xc = -128 sum q, q) with the test's values (%d blocks differ)",
          bad_layout);
    check(bad_avx2 == 0, "avx2 quantizer: the definition's bytes on %d row sets (zeros, subnormals, huge, inf, NaN, ties, K %% 32 != 0); %d differ",
          n, bad_avx2);
    if (have_avx512)
        check(bad_avx512 == 0, "avx512 quantizer: the definition's bytes on %d row sets; %d differ", n, bad_avx512);
}

/* The fused store of every family on arbitrary values: int8 weights with zero activations give
 * acc = 0, so r = 0 + bias exactly, and the bias can be any float (GELU over its whole range,
 * subnormals, infinities, NaN; the residual add against special values too). */
static void test_store_values(const mm_kernels *const *fams, int n_fams) {
    int K = 40, N = 16 * 256 + 7, M = 3, bad = 0;
    float *W = malloc(sizeof(float) * K * N), *bias = malloc(sizeof(float) * N), *x = calloc((size_t)M * K, sizeof(float));
    float *init = malloc(sizeof(float) * M * N), *ref = malloc(sizeof(float) * M * N), *got = malloc(sizeof(float) * M * N);
    unsigned seed = 5;
    for (int i = 0; i < K * N; i++) W[i] = frand(&seed);
    static const float sp[] = {0.0f, -0.0f, 1e-40f, -1e-40f, INFINITY, -INFINITY, NAN, 87.0f, -87.0f, 88.4f, -88.4f,
                               44.0f, -44.0f, 9.5f, -9.5f, 3e38f, -3e38f, 1e-7f, -5.0f, 5.0f};
    for (int n = 0; n < N; n++) {
        unsigned u;
        seed = seed * 1103515245u + 12345u;
        u = seed ^ (seed << 13); /* any bit pattern: every exponent */
        float f;
        memcpy(&f, &u, 4);
        bias[n] = n % 3 == 0 ? (n % 2 ? sp[(n / 6) % (sizeof sp / sizeof *sp)] : frand(&seed) * 200.0f)
                  : n % 3 == 1 ? frand(&seed) * 16.0f /* where tanh is not yet +-1 */ : f;
    }
    for (int i = 0; i < M * N; i++) init[i] = i % 5 == 0 ? sp[i % (sizeof sp / sizeof *sp)] : frand(&seed) * 10.0f;
    void *panels = aligned_alloc(64, mm_packed_bytes(K, N, MM_I8)), *scratch = aligned_alloc(64, mm_scratch_bytes(M, K));
    mm_weight w;
    mm_pack(&w, panels, W, K, N, 0, bias, MM_I8);
    for (int mode = MM_STORE; mode <= MM_ADD; mode++) {
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                float r = 0.0f + bias[n], *o = &ref[(size_t)m * N + n];
                *o = init[(size_t)m * N + n];
                if (mode == MM_GELU) *o = vm_gelu1(r);
                else if (mode == MM_ADD) *o += r;
                else *o = r;
            }
        for (int f = 0; f < n_fams; f++) {
            memcpy(got, init, sizeof(float) * M * N);
            mm_forward(fams[f], NULL, &w, x, K, got, N, M, mode, scratch);
            for (int i = 0; i < M * N; i++)
                if (memcmp(&got[i], &ref[i], 4) != 0 && !(got[i] != got[i] && ref[i] != ref[i]) && bad++ < 5)
                    printf("  %s mode %d at %d: %a, want %a (bias %a)\n", fams[f]->name, mode, i, got[i], ref[i], bias[i % N]);
        }
    }
    check(bad == 0, "int8 fused store (bias add, GELU, residual add) on arbitrary floats: every family gives the definition's bits (%d differ)", bad);
    free(W), free(bias), free(x), free(init), free(ref), free(got), free(panels), free(scratch);
}

/* The fp32 and bf16 kernels on the model's shapes and every edge of the SIMD families' blocking:
 * M = 1 (decode), 2..8 and 13 (every remainder of a 6-row micro-kernel), 64, 65, 97 (past a 96-row
 * task block), 512; K = 1, 31, 768, 3072; N = 40, 90, 110, 145 (3, 6, 7 and 10 panels: partial
 * groups of 4 and of 8 panels, each ending in a partial panel). Strided rows, every mode, with and
 * without bias, alone and on the pool (the big shapes on the pool only). The definition's chains
 * are formed once per shape (acc), then finished per mode and bias. The SIMD families only: the
 * scalar family is the definition written out (checked on main's grid) and would take seconds here. */
static void test_model_shapes(const mm_kernels *const *fams, int n_fams, pool *p) {
    static const int Ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 13, 64, 65, 97, 512}, Ks[] = {1, 31, 768, 3072},
                     Ns[] = {40, 90, 110, 145};
    unsigned seed = 11;
    int runs = 0, bad = 0, shapes = 0;
    for (int dt = MM_F32; dt <= MM_BF16; dt++)
        for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
            for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++) {
                int K = Ks[ki], N = Ns[ni], ldx = K + 3, ldo = N + 5;
                float *W = malloc(sizeof(float) * K * N), *b = malloc(sizeof(float) * N);
                for (int i = 0; i < K * N; i++) W[i] = frand(&seed) * 0.2f;
                for (int n = 0; n < N; n++) b[n] = frand(&seed);
                void *panels = aligned_alloc(64, mm_packed_bytes(K, N, (mm_dtype)dt));
                mm_weight w;
                for (int i = 0; dt == MM_BF16 && i < K * N; i++) W[i] = bf16_round(W[i]);
                for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                    int M = Ms[mi];
                    if ((double)M * K * N > 64e6) continue; /* 512 x 3072 x 100: seconds, not new paths */
                    shapes++;
                    float *x = malloc(sizeof(float) * M * ldx), *acc = malloc(sizeof(float) * M * N);
                    float *init = malloc(sizeof(float) * M * ldo), *ref = malloc(sizeof(float) * M * ldo);
                    float *got = malloc(sizeof(float) * M * ldo);
                    for (int i = 0; i < M * ldx; i++) x[i] = frand(&seed);
                    for (int i = 0; i < M * ldo; i++) init[i] = frand(&seed);
                    for (int m = 0; m < M; m++) { /* each element's chain in k order (rows of W in turn) */
                        float *a = acc + (size_t)m * N;
                        for (int n = 0; n < N; n++) a[n] = 0.0f;
                        for (int k = 0; k < K; k++)
                            for (int n = 0; n < N; n++) a[n] = fmaf(x[(size_t)m * ldx + k], W[(size_t)k * N + n], a[n]);
                    }
                    for (int use_bias = 0; use_bias < 2; use_bias++) {
                        mm_pack(&w, panels, W, K, N, 0, use_bias ? b : NULL, (mm_dtype)dt);
                        for (int mode = MM_STORE; mode <= MM_ADD; mode++) {
                            memcpy(ref, init, sizeof(float) * M * ldo);
                            for (int m = 0; m < M; m++)
                                for (int n = 0; n < N; n++) {
                                    float v = acc[(size_t)m * N + n], *o = &ref[(size_t)m * ldo + n];
                                    if (use_bias) v = v + b[n];
                                    if (mode == MM_GELU) *o = vm_gelu1(v);
                                    else if (mode == MM_ADD) *o += v;
                                    else *o = v;
                                }
                            for (int f = 0; f < n_fams; f++) {
                                if (fams[f] == &mm_kernels_scalar) continue;
                                /* big shapes on the pool only (the split never changes a result; seconds) */
                                for (int pooled = (double)M * K * N > 4e6; pooled < 2; pooled++) {
                                    memcpy(got, init, sizeof(float) * M * ldo);
                                    mm_forward(fams[f], pooled ? p : NULL, &w, x, ldx, got, ldo, M, mode, NULL);
                                    runs++;
                                    if (memcmp(got, ref, sizeof(float) * M * ldo) != 0 && bad++ < 5)
                                        check(0, "%s %s M %d K %d N %d mode %d bias %d pool %d differs from the definition",
                                              fams[f]->name, mm_dtype_name(dt), M, K, N, mode, use_bias, pooled);
                                }
                            }
                        }
                    }
                    free(x), free(acc), free(init), free(ref), free(got);
                }
                free(W), free(b), free(panels);
            }
    check(bad == 0 && shapes > 250, "fp32 and bf16 on the model's shapes (M up to 512, K up to 3072, partial panel groups): "
          "%d runs over %d shapes, every family bit-identical to the definition (%d differ)", runs, shapes, bad);
}

/* The fused GELU of every family gives vm_gelu's bits (the definition's GELU) on a million inputs:
 * through a 16 x 16 identity weight (each output is one input: its chain adds only zeros), random bit
 * patterns over every finite exponent and dense values in [-12, 12] (where exp's clamps, the floor
 * and the division turn); through a 1 x 16 weight of ones, the special values (infinities, NaNs,
 * extremes, subnormals, zeros), which the identity would smear over a whole row. */
static void test_gelu_inputs(const mm_kernels *const *fams, int n_fams, pool *p) {
    enum { ROWS = 65536 };
    float I[16 * 16] = {0}, ones[16];
    for (int i = 0; i < 16; i++) I[i * 16 + i] = 1.0f, ones[i] = 1.0f;
    float *x = malloc(sizeof(float) * ROWS * 16), *ref = malloc(sizeof(float) * ROWS * 16);
    float *got = malloc(sizeof(float) * ROWS * 16);
    unsigned seed = 5;
    for (int i = 0; i < ROWS * 16; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned u = seed ^ (seed >> 15) * 2654435761u;
        float f;
        memcpy(&f, &u, 4);
        if (i % 2) f = ((float)(u >> 8) / 16777216.0f - 0.5f) * 24.0f;
        x[i] = isfinite(f) ? f : 1.5f;
    }
    static const float special[] = {INFINITY, -INFINITY, NAN, -NAN, 3.4028235e38f, -3.4028235e38f, 1e-45f, -1e-45f,
                                    1.1754942e-38f, -1.1754942e-38f, 0.0f, -0.0f, 88.0f, -88.0f, 1e20f, -1e20f};
    int bad = 0, n_special = (int)(sizeof special / sizeof *special);
    for (int dt = MM_F32; dt <= MM_BF16; dt++) {
        void *pan = aligned_alloc(64, mm_packed_bytes(16, 16, (mm_dtype)dt));
        mm_weight w;
        mm_pack(&w, pan, I, 16, 16, 0, NULL, (mm_dtype)dt);
        ref_weight r = {dt, 16, 16, I, NULL, NULL};
        reference(&r, x, 16, NULL, ref, 16, ROWS, MM_GELU);
        for (int f = 0; f < n_fams; f++) {
            mm_forward(fams[f], p, &w, x, 16, got, 16, ROWS, MM_GELU, NULL);
            if (memcmp(got, ref, sizeof(float) * ROWS * 16) != 0 && bad++ < 5)
                check(0, "%s %s: GELU of the identity's inputs differs from vm_gelu", fams[f]->name, mm_dtype_name(dt));
        }
        mm_pack(&w, pan, ones, 1, 16, 0, NULL, (mm_dtype)dt);
        ref_weight r1 = {dt, 1, 16, ones, NULL, NULL};
        reference(&r1, special, 1, NULL, ref, 16, n_special, MM_GELU);
        for (int f = 0; f < n_fams; f++) {
            mm_forward(fams[f], NULL, &w, special, 1, got, 16, n_special, MM_GELU, NULL);
            if (memcmp(got, ref, sizeof(float) * n_special * 16) != 0 && bad++ < 5)
                check(0, "%s %s: GELU of infinities, NaNs and extremes differs from vm_gelu", fams[f]->name,
                      mm_dtype_name(dt));
        }
        free(pan);
    }
    check(bad == 0, "fused GELU: every family gives vm_gelu's bits on %d inputs and %d special values", ROWS * 16,
          n_special);
    free(x), free(ref), free(got);
}

/* int8 on the model's shapes: K = 768 and 3072 (24 and 96 blocks), M = 1 (decode, groups of 4 panels),
 * 2..8 (row runs), 64, 65, 97 (past a 96-row task block), 512; N = 40 and 145 (3 and 10 panels: a
 * partial group of 4, an odd panel after the pairs, a partial last panel). Every mode with a bias,
 * the SIMD families (alone for small shapes, on the pool), against the test's own int8 definition. */
static void test_i8_model_shapes(const mm_kernels *const *fams, int n_fams, pool *p) {
    static const int Ms[] = {1, 2, 3, 7, 8, 64, 65, 97, 512}, Ks[] = {768, 3072}, Ns[] = {40, 145};
    unsigned seed = 23;
    int runs = 0, bad = 0;
    for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
        for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++) {
            int K = Ks[ki], N = Ns[ni], nb = K / 32, ldx = K + 3, ldo = N + 5;
            float *W = malloc(sizeof(float) * K * N), *b = malloc(sizeof(float) * N), *d = malloc(sizeof(float) * nb * N);
            signed char *q = malloc((size_t)K * N);
            for (int i = 0; i < K * N; i++) W[i] = frand(&seed) * 0.2f;
            for (int n = 0; n < N; n++) b[n] = frand(&seed);
            quantize_weights(W, K, N, q, d);
            ref_weight r = {MM_I8, K, N, NULL, q, d};
            void *panels = aligned_alloc(64, mm_packed_bytes(K, N, MM_I8));
            mm_weight w;
            mm_pack(&w, panels, W, K, N, 0, b, MM_I8);
            for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                int M = Ms[mi];
                if ((double)M * K * N > 64e6) continue; /* 512 x 3072: seconds, no new path */
                float *x = malloc(sizeof(float) * M * ldx), *init = malloc(sizeof(float) * M * ldo);
                float *ref = malloc(sizeof(float) * M * ldo), *got = malloc(sizeof(float) * M * ldo);
                void *scratch = aligned_alloc(64, mm_scratch_bytes(M, K));
                for (int i = 0; i < M * ldx; i++) x[i] = frand(&seed);
                for (int i = 0; i < M * ldo; i++) init[i] = frand(&seed);
                for (int mode = MM_STORE; mode <= MM_ADD; mode++) {
                    memcpy(ref, init, sizeof(float) * M * ldo);
                    reference(&r, x, ldx, b, ref, ldo, M, mode);
                    for (int f = 0; f < n_fams; f++) {
                        if (fams[f] == &mm_kernels_scalar) continue;
                        for (int pooled = (double)M * K * N > 4e6; pooled < 2; pooled++) {
                            memcpy(got, init, sizeof(float) * M * ldo);
                            mm_forward(fams[f], pooled ? p : NULL, &w, x, ldx, got, ldo, M, mode, scratch);
                            runs++;
                            if (memcmp(got, ref, sizeof(float) * M * ldo) != 0 && bad++ < 5)
                                check(0, "%s int8 M %d K %d N %d mode %d pool %d differs from the definition",
                                      fams[f]->name, M, K, N, mode, pooled);
                        }
                    }
                }
                free(x), free(init), free(ref), free(got), free(scratch);
            }
            free(W), free(b), free(d), free(q), free(panels);
        }
    check(bad == 0 && runs > 100, "int8 on the model's shapes (K 768 and 3072, M up to 512, partial panel groups): "
          "%d runs, every SIMD family bit-identical to the definition (%d differ)", runs, bad);
}

int main(void) {
    char err[256];
    const mm_kernels *fams[3] = {&mm_kernels_avx2, &mm_kernels_scalar, NULL};
    int n_fams = 2;
    if ((fams[2] = mm_kernels_select("avx512", err, sizeof err))) n_fams = 3;
    else printf("no avx512 family on this CPU (%s): avx2 and scalar only\n", err);
    pool *p = pool_new(3);
    test_fp16();
    test_quantizers(n_fams == 3);
    test_store_values(fams, n_fams);
    test_model_shapes(fams, n_fams, p);
    test_i8_model_shapes(fams, n_fams, p);
    test_gelu_inputs(fams, n_fams, p);
    /* M: every row-kernel remainder (1..9), a 64-row batch and either side, past one 96-row block; N:
     * partial panels, 1..4 whole panels of a 64-column group and a partial group; K: partial blocks */
    static const int Ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 63, 64, 65, 97}, Ns[] = {1, 15, 16, 17, 37, 64, 70, 109},
                     Ks[] = {1, 7, 40, 64, 95};
    unsigned seed = 7;
    int cases[MM_N_DTYPES] = {0}, bad = 0, packs_bad = 0;
    for (int dt = 0; dt < MM_N_DTYPES; dt++)
        for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
            for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++) {
                int K = Ks[ki], N = Ns[ni], ldx = K + 3, ldo = N + 5, nb = (K + 31) / 32;
                float *W = malloc(sizeof(float) * K * N), *Wt = malloc(sizeof(float) * K * N), *b = malloc(sizeof(float) * N);
                float *Wr = malloc(sizeof(float) * K * N), *d = malloc(sizeof(float) * nb * N);
                signed char *q = malloc((size_t)nb * 32 * N);
                size_t bytes = mm_packed_bytes(K, N, (mm_dtype)dt);
                void *panels = aligned_alloc(64, bytes), *panels_t = aligned_alloc(64, bytes);
                for (int i = 0; i < K * N; i++) W[i] = frand(&seed) * (i % 13 == 0 ? 4.0f : 1.0f);
                if (K * N > 40) memset(W, 0, sizeof(float) * 32); /* an all-zero block (scale 0) when N == 1 */
                for (int k = 0; k < K; k++)
                    for (int n = 0; n < N; n++) Wt[(size_t)n * K + k] = W[(size_t)k * N + n];
                for (int i = 0; i < K * N; i++) Wr[i] = dt == MM_BF16 ? bf16_round(W[i]) : W[i];
                if (dt == MM_I8) quantize_weights(W, K, N, q, d);
                for (int n = 0; n < N; n++) b[n] = frand(&seed);
                ref_weight r = {dt, K, N, Wr, q, d};
                void *scratch = aligned_alloc(64, mm_scratch_bytes(97, K));
                mm_weight w, wt;
                for (int use_bias = 0; use_bias < 2; use_bias++) {
                    mm_pack(&w, panels, W, K, N, 0, use_bias ? b : NULL, (mm_dtype)dt);
                    mm_pack(&wt, panels_t, Wt, K, N, 1, use_bias ? b : NULL, (mm_dtype)dt);
                    int ok = memcmp(panels, panels_t, bytes) == 0 && packed_as_defined(&w, &r);
                    if (!ok && packs_bad++ < 5)
                        check(0, "%s K %d N %d: both layouts pack to the defined values", mm_dtype_name(dt), K, N);
                    for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                        int M = Ms[mi];
                        float *x = malloc(sizeof(float) * M * ldx), *init = malloc(sizeof(float) * M * ldo);
                        float *ref = malloc(sizeof(float) * M * ldo), *got = malloc(sizeof(float) * M * ldo);
                        for (int i = 0; i < M * ldx; i++) x[i] = frand(&seed);
                        if (M > 1) memset(x + ldx, 0, sizeof(float) * K); /* a zero row: activation scale 0 */
                        for (int i = 0; i < M * ldo; i++) init[i] = frand(&seed);
                        for (int mode = MM_STORE; mode <= MM_ADD; mode++) {
                            memcpy(ref, init, sizeof(float) * M * ldo);
                            reference(&r, x, ldx, use_bias ? b : NULL, ref, ldo, M, mode);
                            for (int f = 0; f < n_fams; f++)
                                for (int pooled = 0; pooled < 2; pooled++) {
                                    memcpy(got, init, sizeof(float) * M * ldo);
                                    mm_forward(fams[f], pooled ? p : NULL, &w, x, ldx, got, ldo, M, mode,
                                               scratch);
                                    cases[dt]++;
                                    if (memcmp(got, ref, sizeof(float) * M * ldo) != 0 && bad++ < 5)
                                        check(0, "%s %s M %d K %d N %d mode %d bias %d pool %d differs from the definition",
                                              fams[f]->name, mm_dtype_name(dt), M, K, N, mode, use_bias, pooled);
                                }
                        }
                        free(x), free(init), free(ref), free(got);
                    }
                }
                free(W), free(Wt), free(b), free(Wr), free(d), free(q), free(panels), free(panels_t), free(scratch);
            }
    printf("mm: %d fp32, %d bf16, %d int8 kernel runs over %d families, %d differ from the definition\n",
           cases[MM_F32], cases[MM_BF16], cases[MM_I8], n_fams, bad);
    check(packs_bad == 0, "every format and shape packs to the defined values");
    for (int dt = 0; dt < MM_N_DTYPES; dt++)
        check(bad == 0 && cases[dt] > 1000, "%s: every kernel family, shape, mode bit-identical to the definition (%d runs)",
              mm_dtype_name(dt), cases[dt]);
    /* special values go through GELU the same way */
    for (int dt = 0; dt < MM_N_DTYPES; dt++) {
        float W1[16], x1[4] = {100.0f, -100.0f, 0.0f, -0.0f}, got[4 * 16], got_s[4 * 16];
        for (int n = 0; n < 16; n++) W1[n] = n % 2 ? 1.0f : -1.0f;
        void *pan = aligned_alloc(64, mm_packed_bytes(1, 16, (mm_dtype)dt)), *scr = aligned_alloc(64, mm_scratch_bytes(4, 1));
        mm_weight w1;
        mm_pack(&w1, pan, W1, 1, 16, 0, NULL, (mm_dtype)dt);
        mm_forward(&mm_kernels_scalar, NULL, &w1, x1, 1, got_s, 16, 4, MM_GELU, scr);
        int same = 1;
        for (int f = 0; f < n_fams; f++) {
            mm_forward(fams[f], NULL, &w1, x1, 1, got, 16, 4, MM_GELU, scr);
            same &= memcmp(got, got_s, sizeof got) == 0;
        }
        int finite = 1;
        for (int i = 0; i < 64; i++) finite &= isfinite(got_s[i]);
        check(same && finite && (dt != MM_F32 || (got_s[1] == 100.0f && got_s[16] == 100.0f && got_s[0] == 0.0f &&
                                                  got_s[32] == 0.0f && got_s[48] == 0.0f)),
              "%s: GELU of +-100 and +-0 the same in every family (fp32: exactly 100 and 0)", mm_dtype_name(dt));
        free(pan), free(scr);
    }
    /* int8 is an approximation of fp32: relative error of a 768-long dot product well under 1% */
    {
        int K = 768, N = 64;
        float *W = malloc(sizeof(float) * K * N), x[768], o8[64], o32[64];
        for (int i = 0; i < K * N; i++) W[i] = frand(&seed);
        for (int k = 0; k < K; k++) x[k] = frand(&seed);
        void *p8 = aligned_alloc(64, mm_packed_bytes(K, N, MM_I8)), *p32 = aligned_alloc(64, mm_packed_bytes(K, N, MM_F32));
        void *scr = aligned_alloc(64, mm_scratch_bytes(1, K));
        mm_weight w8, w32;
        mm_pack(&w8, p8, W, K, N, 0, NULL, MM_I8);
        mm_pack(&w32, p32, W, K, N, 0, NULL, MM_F32);
        mm_forward(&mm_kernels_avx2, NULL, &w8, x, K, o8, N, 1, MM_STORE, scr);
        mm_forward(&mm_kernels_avx2, NULL, &w32, x, K, o32, N, 1, MM_STORE, NULL);
        double num = 0, den = 0;
        for (int n = 0; n < N; n++) num += (o8[n] - o32[n]) * (o8[n] - o32[n]), den += o32[n] * o32[n];
        check(sqrt(num / den) < 0.01, "int8 vs fp32 on a 768 x 64 product: relative error %.4f (< 1%%)", sqrt(num / den));
        free(W), free(p8), free(p32), free(scr);
    }
    check(mm_kernels_select("scalar", err, sizeof err) == &mm_kernels_scalar, "scalar can be forced");
    {
        cpu_features all = {1, 1, 1, 1, 1, 1, 1, 1, 1}, f; /* every field: AVX2 baseline + AVX-512 + OS state */
        int ok = cpu_avx512_ok(&all);
        f = all, f.os_zmm = 0, ok &= !cpu_avx512_ok(&f);      /* an OS that does not save ZMM state */
        f = all, f.avx512vnni = 0, ok &= !cpu_avx512_ok(&f);  /* AVX-512 without VNNI */
        f = all, f.avx512bw = 0, ok &= !cpu_avx512_ok(&f);
        f = all, f.f16c = 0, ok &= !cpu_avx512_ok(&f);        /* the AVX2 baseline too */
        cpu_detect(&f);
        check(ok && cpu_avx512_ok(&f) == (n_fams == 3),
              "the avx512 family needs AVX-512 F/BW/VL + VNNI and the OS ZMM state; chosen exactly when cpu.c says so");
    }
    const mm_kernels *best = n_fams == 3 ? &mm_kernels_avx512 : &mm_kernels_avx2;
    check(mm_kernels_select(NULL, err, sizeof err) == best && mm_kernels_select("auto", err, sizeof err) == best,
          "auto picks %s on this CPU", best->name);
    check(mm_kernels_select("avx1024", err, sizeof err) == NULL && strstr(err, "avx1024"), "unknown family refused: %s", err);
    mm_dtype t;
    check(mm_dtype_parse("int8", &t) == 0 && t == MM_I8 && mm_dtype_parse("bf16", &t) == 0 && t == MM_BF16 &&
              mm_dtype_parse("fp32", &t) == 0 && t == MM_F32 && mm_dtype_parse("q4", &t) == -1 &&
              strcmp(mm_dtype_tag(MM_I8), "i8") == 0,
          "format names parse; unknown refused");
    pool_free(p);
    return check_done("test_mm");
}
