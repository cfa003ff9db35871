/* matmul_avx512.c — the "avx512" kernel family of matmul.h, for CPUs with AVX-512 F/BW/VL and
 * AVX512-VNNI (compiled with those flags, as matmul_f32_avx512.c: these two files only): the MM_I8 kernels of matmul_simd.h with
 * the block dot as one vpdpbusd per 4 k and row: (x + 128) unsigned x w signed, 4 products per
 * int32 lane, no saturation, less 128 * sum(w) per block (MM_I8_BIASED), where AVX2 needs abs,
 * sign, maddubs, madd and add. fp32 and bf16 have their own 512-bit kernels (matmul_f32_avx512.c):
 * the wider register spans 16 outputs, each with its own k-ordered chain, so their bits are the
 * AVX2 family's. AVX512-BF16's vdpbf16ps is not used (matmul.h says why). Bit-identical to every other family. */
#include "matmul.h"

#include <immintrin.h>

#define MM_I8_DOT(acc, xa, ws) _mm256_dpbusd_epi32((acc), (xa), (ws))
#define MM_I8_BIASED 1
#define MM_I8_FN(name) avx512_i8_##name
#include "matmul_simd.h"

const mm_kernels mm_kernels_avx512 = {
    "avx512", {[MM_F32] = mm_avx512_forward_f32, [MM_BF16] = mm_avx512_forward_bf16, [MM_I8] = avx512_i8_forward}};
