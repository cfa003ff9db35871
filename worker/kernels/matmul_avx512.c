/* matmul_avx512.c — the "avx512" kernel family of matmul.h, for CPUs with AVX-512 F/BW/VL and
 * AVX512-VNNI (compiled with those flags, this file only): the MM_I8 kernels of matmul_simd.h with
 * the block dot as one vpdpbusd per 4 k and row: (x + 128) unsigned x w signed, 4 products per
 * int32 lane, no saturation, less 128 * sum(w) per block (MM_I8_BIASED), where AVX2 needs abs,
 * sign, maddubs, madd and add. fp32 and bf16 run the AVX2 family's
 * kernels: a wider register would not change their bits, and their decode is bound by memory.
 * AVX512-BF16's vdpbf16ps is not used (matmul.h says why). Bit-identical to every other family. */
#include "matmul.h"

#include <immintrin.h>

#include "matmul_simd.h"

const mm_kernels mm_kernels_avx512 = {
    "avx512", {[MM_F32] = mm_avx2_forward_f32, [MM_BF16] = mm_avx2_forward_bf16, [MM_I8] = mm_avx512_forward_i8}};
