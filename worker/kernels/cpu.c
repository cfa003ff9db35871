/* cpu.c — see cpu.h. Compiled without -mavx2/-mfma/-mf16c: it must run on CPUs without them. */
#include "cpu.h"

#include <cpuid.h>
#include <stdio.h>
#include <string.h>

void cpu_detect(cpu_features *f) {
    unsigned a, b, c, d;
    memset(f, 0, sizeof(*f));
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    f->fma = (c >> 12) & 1;
    f->f16c = (c >> 29) & 1;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (osxsave && avx) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        f->os_ymm = (lo & 6) == 6;       /* XMM and YMM state enabled by the OS */
        f->os_zmm = (lo & 0xe6) == 0xe6; /* and opmask, ZMM0-15 upper halves, ZMM16-31 */
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        f->avx2 = (b >> 5) & 1;
        f->avx512f = (b >> 16) & 1;
        f->avx512bw = (b >> 30) & 1;
        f->avx512vl = (b >> 31) & 1;
        f->avx512vnni = (c >> 11) & 1;
    }
}

int cpu_avx512_ok(const cpu_features *f) {
    char err[8];
    return cpu_missing(f, err, sizeof err) == 0 && f->avx512f && f->avx512bw && f->avx512vl && f->avx512vnni &&
           f->os_zmm;
}

int cpu_missing(const cpu_features *f, char *err, size_t errlen) {
    char miss[64] = "";
    if (!f->avx2) strcat(miss, " AVX2");
    if (!f->fma) strcat(miss, " FMA");
    if (!f->f16c) strcat(miss, " F16C");
    if (!f->os_ymm) strcat(miss, " OS-AVX-state");
    if (!miss[0]) return 0;
    snprintf(err, errlen,
             "this CPU lacks%s, which the GPT-2 kernels need (x86-64 with AVX2, FMA and F16C: Intel "
             "Haswell / AMD Zen or newer)",
             miss);
    return -1;
}

int cpu_check(char *err, size_t errlen) {
    cpu_features f;
    cpu_detect(&f);
    return cpu_missing(&f, err, errlen);
}
