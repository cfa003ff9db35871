/* matmul_avx512.c — the "avx512" kernel family of matmul.h, for CPUs with AVX-512 F/BW/VL and
 * AVX512-VNNI and the OS state for them (cpu.c; compiled with those flags, the *_avx512.c files
 * only). fp32 and bf16 have their own 512-bit kernels (matmul_f32_avx512.c): the wider register
 * spans 16 outputs, each with its own k-ordered chain, so their bits are the AVX2 family's. MM_I8
 * runs matmul_i8_avx512.c's kernels: 512-bit vpdpbusd, one instruction per 16 outputs x 4 k and row
 * (w + 128 unsigned x x signed, 4 products per int32 lane, no saturation, corrected by the
 * quantizer's -128 * sum(x) per row block), where AVX2 needs abs, sign, maddubs, madd and add.
 * AVX512-BF16's vdpbf16ps is not used (matmul.h says why). Bit-identical to every other family. */
#include "matmul.h"

#include <immintrin.h>

#include "matmul_simd.h"

const mm_kernels mm_kernels_avx512 = {
    "avx512", {[MM_F32] = mm_avx512_forward_f32, [MM_BF16] = mm_avx512_forward_bf16, [MM_I8] = mm_avx512_forward_i8}};
