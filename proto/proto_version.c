/* proto_version.c — see proto_version.h. */
#include "proto_version.h"

#include <cpuid.h>
#include <stdlib.h>

#include "proto.h"

#ifndef GPT2D_GIT_REV
#define GPT2D_GIT_REV "unknown"
#endif

const char *proto_git_revision(void) { return GPT2D_GIT_REV; }

void proto_version_print(FILE *f, const char *prog, const char *isa_in_use) {
    fprintf(f, "%s %s (git %s)\n", prog, GPT2D_RELEASE, proto_git_revision());
    fprintf(f, "protocol %d\n", PROTO_VERSION);
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2"), fma = __builtin_cpu_supports("fma");
    unsigned a = 0, b = 0, c = 0, d = 0;
    int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    const char *forced = getenv("GPT2D_ISA");
    if (isa_in_use)
        fprintf(f, "kernels: %s in use", isa_in_use);
    else /* the daemon and the client link no kernels: what a worker here would pick by default */
        fprintf(f, "kernels: a worker on this CPU picks %s", avx2 && fma ? "avx2" : "scalar");
    fprintf(f, "%s%s%s (CPU: avx2 %s, fma %s, f16c %s)\n", forced && *forced ? " (GPT2D_ISA=" : "",
            forced && *forced ? forced : "", forced && *forced ? ")" : "", avx2 ? "yes" : "no", fma ? "yes" : "no",
            f16c ? "yes" : "no");
}
