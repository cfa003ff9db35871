/* matmul.h — batch-invariant matrix multiply for the forward pass: out = x · W + b, with the kernels
 * for each instruction set behind one table chosen once at load.
 *
 * Every output element is computed by the same sequence of operations whatever the number of rows M,
 * the row's position in the batch, the micro-kernel shape, the thread or the kernel family that runs
 * it. That fixed order is what makes a request's logits bit-for-bit identical alone or in a crowd.
 * (OpenBLAS sgemm does not promise this: it picks other kernels and K-splits by shape.)
 * Weights are repacked once into column panels of 16 outputs (MM_PANEL); the panel format is the
 * weight format (mm_dtype):
 *
 * MM_F32  panel j holds W[k][16j..16j+15] for k = 0..K-1, contiguous (K·16 floats, 64-byte aligned).
 *         out[m][n]:  acc = 0;  for k in 0..K-1: acc = fma(x[m][k], W[k][n], acc);  r = acc + b[n]
 * MM_BF16 the same panels with each weight stored as bfloat16 (the top half of its fp32 bits,
 *         rounded to nearest even): K·16·2 bytes per panel, half of fp32's read per token. A bf16
 *         widens to fp32 exactly, so the order is MM_F32's with w = widen(W16[k][n]). Not the
 *         AVX512-BF16 vdpbf16ps instruction: it would round the activations to bf16 too and sum
 *         pairs in its own order (another numerics family); no family here uses it.
 * MM_I8   see mm_i8_block below: blocks of 32 weights along K, int8 with one fp16 scale per
 *         (block, output); activations quantized per row and block of 32 (mm_quantize_rows);
 *         exact int32 block sums, then a fixed-order float chain over the blocks.
 *
 * Then, for every format, the mode: MM_STORE out = r, MM_GELU out = gelu(r) (vmath.h), MM_ADD
 * out += r. matmul_scalar.c is this definition in plain C (the baseline every other family is tested
 * against, bit for bit); matmul_avx2.c has the AVX2+FMA micro-kernels for fp32/bf16 and
 * matmul_i8_avx2.c for int8 (maddubs + madd); the avx512 family has 512-bit fp32/bf16 kernels
 * (matmul_f32_avx512.c: one zmm per 16-wide panel row, R rows x 4 panels per micro-kernel) and
 * 512-bit AVX512-VNNI int8 kernels (matmul_i8_avx512.c: one vpdpbusd per 16 outputs x 4 k, the
 * weights made unsigned, the activations' sums from the quantizer correcting for it). Each SIMD family
 * also has its own vectorized quantizer, writing mm_quantize_rows' bytes.
 * Bit-identical across families: every format, since none changes the order above (a wider vector
 * spans more outputs, never more k: no kernel splits K into partial sums; integer block sums are
 * exact whatever instruction forms them). The fingerprint (weights.h) still names the family.
 * mm_kernels_select() picks a family once: the best the CPU has, or the one named (GPT2D_ISA /
 * --isa: scalar, avx2, avx512). */
#ifndef GPT2D_MATMUL_H
#define GPT2D_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "pool.h"

#define MM_PANEL 16 /* outputs per panel */
#define MM_QK 32    /* MM_I8: weights (and activations) per block along K */

typedef enum { MM_F32 = 0, MM_BF16 = 1, MM_I8 = 2, MM_N_DTYPES } mm_dtype;

/* MM_I8 format. Panel j of a K x N weight is ceil(K/32) of these blocks, block b covering
 * k = 32b .. 32b+31 of outputs n = 16j .. 16j+15 (544 bytes, so every block is 32-byte aligned):
 *   d[c]      fp16 scale of output column c in this block: amax_k |W[k][n]| / 127, rounded to fp16
 *   q[g][c][i] int8 of W[32b + 4g + i][16j + c] = round(W / d[c]) in [-127, 127] (0 where d is 0,
 *             past K or past N); groups of 4 consecutive k per column, so one 32-bit lane of a
 *             vector holds 4 k of one output (what maddubs+madd and vpdpbusd consume).
 * Activations (mm_quantize_rows): row m, block b: dx = amax_i |x| / 127 (fp32), xq = round(x / dx)
 * (x · (127 / amax), rounded to nearest even) in [-127, 127]; zero past K.
 * Dot product, in this order:
 *   acc = 0
 *   for b in 0 .. ceil(K/32)-1:
 *       isum = sum_i xq[m][32b+i] · q[32b+i][n]           (int32, exact: at most 32·127·127)
 *       acc  = fma((float)isum, dx[m][b] · fp32(d[b][n]), acc)   (the product rounded to fp32 first)
 *   r = acc + b[n]
 * The integer sum is exact in any order, so kernels form it however their ISA likes. */
typedef struct {
    uint16_t d[MM_PANEL];              /* fp16 scales */
    int8_t q[MM_QK / 4][MM_PANEL][4];  /* [group of 4 k][column][k within group] */
} mm_i8_block;

typedef struct {
    int K, N;             /* in, out */
    int n_panels;         /* ceil(N / 16) */
    mm_dtype dtype;       /* panel format */
    const void *panels;   /* n_panels panels in dtype's layout; columns past N are zero */
    const float *bias;    /* (N) or NULL */
} mm_weight;

/* What happens to acc + bias (fused into the kernel, saving a pass over the output). */
enum { MM_STORE = 0, MM_GELU = 1, MM_ADD = 2 };

/* out (M, ldo) = x (M, ldx) · W + bias, first N columns of each out row written; with MM_GELU
 * out = gelu(x W + b) (vmath.h's GELU), with MM_ADD out += x W + b (the residual add). Splits the
 * work over the pool's threads (p may be NULL). scratch: mm_scratch_bytes(M, K) bytes, 64-byte
 * aligned, owned by the caller (MM_I8 quantizes the activations there; the kernels allocate nothing);
 * may be NULL for the other formats. */
typedef void (*mm_forward_fn)(pool *p, const mm_weight *w, const float *x, int ldx, float *out, int ldo,
                              int M, int mode, void *scratch);

typedef struct {
    const char *name;                    /* the kernel family: "avx512", "avx2", "scalar" */
    mm_forward_fn forward[MM_N_DTYPES];  /* by weight format; NULL: format not supported */
} mm_kernels;

extern const mm_kernels mm_kernels_avx512; /* matmul_avx512.c */
extern const mm_kernels mm_kernels_avx2;   /* matmul_avx2.c */
extern const mm_kernels mm_kernels_scalar; /* matmul_scalar.c */

/* The family named isa ("avx512", "avx2", "scalar"), or for NULL / "" / "auto" the best this CPU
 * runs. NULL with err if the name is unknown or the CPU lacks what the family needs. */
const mm_kernels *mm_kernels_select(const char *isa, char *err, size_t errlen);

/* Format names: "fp32", "bf16", "int8" (the --weights values); tags for fingerprints and file
 * names: "f32", "bf16", "i8". mm_dtype_parse: 0 with *out, or -1 for an unknown name. */
const char *mm_dtype_name(mm_dtype t);
const char *mm_dtype_tag(mm_dtype t);
int mm_dtype_parse(const char *name, mm_dtype *out);

/* Bytes of panel storage for a K x N weight in format t (a multiple of 64). */
size_t mm_packed_bytes(int K, int N, mm_dtype t);

/* Packs W into dst (mm_packed_bytes(K, N, t) bytes, 64-byte aligned) in format t. transposed = 0:
 * W is (K, N) row-major (Conv1D [in,out]); transposed = 1: W is (N, K) row-major (an nn.Linear /
 * tied lm_head). */
void mm_pack(mm_weight *w, void *dst, const float *W, int K, int N, int transposed, const float *bias,
             mm_dtype t);

/* Describes panels already packed (e.g. in a mapped image) without touching them. */
void mm_bind(mm_weight *w, const void *panels, int K, int N, const float *bias, mm_dtype t);

/* A view of w's output columns [16 p0, min(N, 16 p1)): its panels p0 .. p1-1 and the bias from there
 * (0 <= p0 < p1 <= n_panels). Each output's operations depend on nothing else, so the view computes
 * those columns bit for bit as w does (a large matmul can be run in pieces). */
void mm_view_panels(mm_weight *view, const mm_weight *w, int p0, int p1);

/* Element (k, n) of a packed weight as the kernels see it (dequantized: for MM_I8 q · fp32(d)), for
 * embedding lookups from a packed lm_head. */
float mm_at(const mm_weight *w, int k, int n);

/* Scratch bytes a forward of M rows over K inputs needs (any format). */
size_t mm_scratch_bytes(int M, int K);

/* MM_I8 activations: rows m0 .. m1-1 of x into scratch (the layout mm_i8_row reads). Plain C: the
 * one definition (matmul_scalar.c); each SIMD family has a vectorized copy that writes the same bytes
 * (mm_avx2_quantize_rows, mm_avx512_quantize_rows; tests/test_mm.c compares them byte for byte). */
void mm_quantize_rows(const float *x, int ldx, int K, int m0, int m1, void *scratch);
void mm_avx2_quantize_rows(const float *x, int ldx, int K, int m0, int m1, void *scratch);
void mm_avx512_quantize_rows(const float *x, int ldx, int K, int m0, int m1, void *scratch); /* AVX-512 CPUs only */

/* Row m of quantized activations in scratch, nb = ceil(K/32) blocks: nb fp32 scales dx, then nb int32
 * xc = -128 * (sum of the block's 32 int8s), then the nb * 32 int8s (zero past K). mm_i8_row returns
 * the int8s and sets *dx; mm_i8_xc returns the xc. (xc is what a u8 x s8 dot needs when the weights
 * are made unsigned, w + 128: sum (w + 128) x + xc = sum w x, exactly; see matmul_i8_avx512.c.) */
#define MM_I8_ROW_BYTES(nb) ((size_t)(nb) * (MM_QK + 2 * sizeof(int32_t)))
static inline const int8_t *mm_i8_row(const void *scratch, int K, int m, const float **dx) {
    size_t nb = (size_t)(K + MM_QK - 1) / MM_QK;
    const char *row = (const char *)scratch + (size_t)m * MM_I8_ROW_BYTES(nb);
    *dx = (const float *)row;
    return (const int8_t *)(row + nb * 2 * sizeof(int32_t));
}
static inline const int32_t *mm_i8_xc(const void *scratch, int K, int m) {
    size_t nb = (size_t)(K + MM_QK - 1) / MM_QK;
    return (const int32_t *)((const char *)scratch + (size_t)m * MM_I8_ROW_BYTES(nb) + nb * sizeof(float));
}

/* fp16 <-> fp32 in plain C (round to nearest even; the conversion to fp32 is exact). */
uint16_t mm_fp32_to_fp16(float f);
float mm_fp16_to_fp32(uint16_t h);

/* Runs w through family k. */
static inline void mm_forward(const mm_kernels *k, pool *p, const mm_weight *w, const float *x, int ldx,
                              float *out, int ldo, int M, int mode, void *scratch) {
    k->forward[w->dtype](p, w, x, ldx, out, ldo, M, mode, scratch);
}

#endif
