/* cpu.h — does this CPU (and OS) run the kernels? AVX2, FMA and F16C, with the YMM state enabled;
 * and may the "avx512" family run (AVX-512 F/BW/VL and AVX512-VNNI, with the ZMM and mask state)?
 *
 * cpu.c is compiled WITHOUT the kernels' ISA flags (see ISA_FLAGS in the Makefile), so the check
 * itself runs on any x86-64; every program that runs the engine calls cpu_check() first thing in
 * main, before any code built with those flags, and exits with its message instead of a SIGILL. */
#ifndef GPT2D_CPU_H
#define GPT2D_CPU_H

#include <stddef.h>

typedef struct {
    int avx2, fma, f16c, os_ymm; /* 1 when present (os_ymm: the OS saves the YMM registers) */
    int avx512f, avx512bw, avx512vl, avx512vnni;
    int os_zmm; /* the OS saves the opmask and all 512-bit registers (XCR0 bits 5-7, and YMM) */
} cpu_features;

/* What this machine has. */
void cpu_detect(cpu_features *f);

/* 0 if f has everything the kernels use; else -1 with a message naming what is missing. */
int cpu_missing(const cpu_features *f, char *err, size_t errlen);

/* 1 if f runs the "avx512" kernel family (the *_avx512.c files, built with -mavx512f -mavx512bw
 * -mavx512vl -mavx512vnni on top of the AVX2 flags): everything cpu_missing asks for, those four,
 * and the OS state for them. */
int cpu_avx512_ok(const cpu_features *f);

/* cpu_detect + cpu_missing. */
int cpu_check(char *err, size_t errlen);

#endif
