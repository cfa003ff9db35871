/* cpu.h — does this CPU (and OS) run the kernels? AVX2, FMA and F16C, with the YMM state enabled.
 *
 * cpu.c is compiled WITHOUT the kernels' ISA flags (see ISA_FLAGS in the Makefile), so the check
 * itself runs on any x86-64; every program that runs the engine calls cpu_check() first thing in
 * main, before any code built with those flags, and exits with its message instead of a SIGILL. */
#ifndef GPT2D_CPU_H
#define GPT2D_CPU_H

#include <stddef.h>

typedef struct {
    int avx2, fma, f16c, os_ymm; /* 1 when present (os_ymm: the OS saves the YMM registers) */
} cpu_features;

/* What this machine has. */
void cpu_detect(cpu_features *f);

/* 0 if f has everything the kernels use; else -1 with a message naming what is missing. */
int cpu_missing(const cpu_features *f, char *err, size_t errlen);

/* cpu_detect + cpu_missing. */
int cpu_check(char *err, size_t errlen);

#endif
