/* matmul.h — batch-invariant matrix multiply for the forward pass: out = x · W + b.
 *
 * Weights are repacked once into column panels of 16 outputs: panel j holds W[k][16j..16j+15] for
 * k = 0..K-1, contiguous (K·16 floats), in huge-page memory. Every output element is computed by
 * the same sequence of operations whatever the number of rows M, the row's position in the batch,
 * the micro-kernel shape or the thread that runs it:
 *     acc = 0;  for k in 0..K-1: acc = fma(x[m][k], W[k][n], acc);  out[m][n] = acc + b[n]
 * That fixed order is what makes a request's logits bit-for-bit identical alone or in a crowd.
 * (OpenBLAS sgemm does not promise this: it picks other kernels and K-splits by shape.)
 * mm_forward() splits the panels over the pool's threads. */
#ifndef GPT2D_MATMUL_H
#define GPT2D_MATMUL_H

#include <stddef.h>

#include "pool.h"

#define MM_PANEL 16 /* outputs per panel */

typedef struct {
    int K, N;            /* in, out */
    int n_panels;        /* ceil(N / 16) */
    float *panels;       /* (n_panels, K, 16); columns past N are zero */
    const float *bias;   /* (N) or NULL */
} mm_weight;

/* Bytes of panel storage for a K x N weight. */
size_t mm_packed_floats(int K, int N);

/* Packs W into dst (mm_packed_floats(K, N) floats). transposed = 0: W is (K, N) row-major
 * (Conv1D [in,out]); transposed = 1: W is (N, K) row-major (an nn.Linear / tied lm_head). */
void mm_pack(mm_weight *w, float *dst, const float *W, int K, int N, int transposed,
             const float *bias);

/* Element (k, n) of a packed weight (for embedding lookups from a packed lm_head). */
static inline float mm_at(const mm_weight *w, int k, int n) {
    return w->panels[((size_t)(n / MM_PANEL) * w->K + k) * MM_PANEL + n % MM_PANEL];
}

/* What happens to acc + bias (fused into the kernel, saving a pass over the output). */
enum { MM_STORE = 0, MM_GELU = 1, MM_ADD = 2 };

/* out (M, ldo) = x (M, ldx) · W + bias, first N columns of each out row written; with MM_GELU
 * out = gelu(x W + b), with MM_ADD out += x W + b (the residual add). Uses the pool (may be NULL). */
void mm_forward(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo, int M,
                int mode);

#endif
