/* matmul.h — batch-invariant matrix multiply for the forward pass: out = x · W + b, with the kernels
 * for each instruction set behind one table chosen once at load.
 *
 * Format MM_F32 (the only one so far; bf16 / int8 formats go beside it, each with its own panel
 * layout described here and a slot in mm_kernels.forward): weights are repacked once into column
 * panels of 16 outputs: panel j holds W[k][16j..16j+15] for k = 0..K-1, contiguous (K·16 floats,
 * 64-byte aligned). Every output element is computed by the same sequence of operations whatever
 * the number of rows M, the row's position in the batch, the micro-kernel shape, the thread or the
 * kernel family that runs it:
 *     acc = 0;  for k in 0..K-1: acc = fma(x[m][k], W[k][n], acc);  out[m][n] = acc + b[n]
 * That fixed order is what makes a request's logits bit-for-bit identical alone or in a crowd.
 * (OpenBLAS sgemm does not promise this: it picks other kernels and K-splits by shape.)
 * matmul_scalar.c is that definition in plain C (the baseline every other family is tested
 * against, bit for bit); matmul_avx2.c has the AVX2+FMA micro-kernels. mm_kernels_select() picks a
 * family once: the best the CPU has, or the one named (GPT2D_ISA=scalar forces the baseline). */
#ifndef GPT2D_MATMUL_H
#define GPT2D_MATMUL_H

#include <stddef.h>

#include "pool.h"

#define MM_PANEL 16 /* outputs per panel */

typedef enum { MM_F32 = 0, MM_N_DTYPES } mm_dtype;

typedef struct {
    int K, N;             /* in, out */
    int n_panels;         /* ceil(N / 16) */
    mm_dtype dtype;       /* panel format */
    const float *panels;  /* MM_F32: (n_panels, K, 16); columns past N are zero */
    const float *bias;    /* (N) or NULL */
} mm_weight;

/* What happens to acc + bias (fused into the kernel, saving a pass over the output). */
enum { MM_STORE = 0, MM_GELU = 1, MM_ADD = 2 };

/* out (M, ldo) = x (M, ldx) · W + bias, first N columns of each out row written; with MM_GELU
 * out = gelu(x W + b) (vmath.h's GELU), with MM_ADD out += x W + b (the residual add). Splits the
 * work over the pool's threads (p may be NULL). */
typedef void (*mm_forward_fn)(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo,
                              int M, int mode);

typedef struct {
    const char *name;                    /* the kernel family: "avx2", "scalar" */
    mm_forward_fn forward[MM_N_DTYPES];  /* by weight format; NULL: format not supported */
} mm_kernels;

extern const mm_kernels mm_kernels_avx2;   /* matmul_avx2.c */
extern const mm_kernels mm_kernels_scalar; /* matmul_scalar.c */

/* The family named isa ("avx2", "scalar"), or for NULL / "" / "auto" the best this CPU runs.
 * NULL with err if the name is unknown or the CPU lacks what the family needs. */
const mm_kernels *mm_kernels_select(const char *isa, char *err, size_t errlen);

/* Floats of panel storage for a K x N MM_F32 weight. */
size_t mm_packed_floats(int K, int N);

/* Packs W into dst (mm_packed_floats(K, N) floats) as MM_F32. transposed = 0: W is (K, N)
 * row-major (Conv1D [in,out]); transposed = 1: W is (N, K) row-major (an nn.Linear / tied lm_head). */
void mm_pack(mm_weight *w, float *dst, const float *W, int K, int N, int transposed,
             const float *bias);

/* Describes panels already packed (e.g. in a mapped image) without touching them. */
void mm_bind(mm_weight *w, const float *panels, int K, int N, const float *bias);

/* Element (k, n) of a packed MM_F32 weight (for embedding lookups from a packed lm_head). */
static inline float mm_at(const mm_weight *w, int k, int n) {
    return w->panels[((size_t)(n / MM_PANEL) * w->K + k) * MM_PANEL + n % MM_PANEL];
}

/* Runs w through family k. */
static inline void mm_forward(const mm_kernels *k, pool *p, const mm_weight *w, const float *x, int ldx,
                              float *out, int ldo, int M, int mode) {
    k->forward[w->dtype](p, w, x, ldx, out, ldo, M, mode);
}

#endif
