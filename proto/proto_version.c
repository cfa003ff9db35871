/* proto_version.c — see proto_version.h. */
#include "proto_version.h"

#include <cpuid.h>

#include "proto.h"

#ifndef GPT2D_GIT_REV
#define GPT2D_GIT_REV "unknown"
#endif

const char *proto_git_revision(void) { return GPT2D_GIT_REV; }

void proto_version_print(FILE *f, const char *prog) {
    fprintf(f, "%s %s (git %s)\n", prog, GPT2D_RELEASE, proto_git_revision());
    fprintf(f, "protocol %d\n", PROTO_VERSION);
    /* One kernel set exists (worker/matmul.c, sampler.c, vmath.h): AVX2 + FMA, F16C for fp16 weights.
     * The worker refuses to start without them; say here whether this CPU has them. */
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2"), fma = __builtin_cpu_supports("fma");
    unsigned a = 0, b = 0, c = 0, d = 0;
    int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    fprintf(f, "kernels: avx2+fma+f16c (the worker's only set); this CPU: avx2 %s, fma %s, f16c %s%s\n",
            avx2 ? "yes" : "NO", fma ? "yes" : "NO", f16c ? "yes" : "NO",
            avx2 && fma && f16c ? "" : " -> gpt2d-worker cannot run here");
}
