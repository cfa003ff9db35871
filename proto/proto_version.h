/* proto_version.h — what `--version` prints, the same way in every binary (gpt2d, gpt2d-worker,
 * gpt2c, gpt2-tool): the release, the git revision it was built from (`git describe --always
 * --dirty`, passed by the Makefile as GPT2D_GIT_REV; "unknown" outside git), the protocol version,
 * and the compute kernels in use (or that a worker would pick) with this CPU's features. */
#ifndef GPT2D_PROTO_VERSION_H
#define GPT2D_PROTO_VERSION_H

#include <stdio.h>

#define GPT2D_RELEASE "0.1.0"

/* The git revision compiled in ("unknown" if not built from a git tree). */
const char *proto_git_revision(void);

/* Prints "<prog> 0.1.0 (git REV)", "protocol N" and the kernels line to f: isa_in_use is the kernel
 * family a binary with the engine selected ("avx2", "scalar"); NULL (gpt2d, gpt2c, which link no
 * kernels) prints what a worker on this CPU would pick by default. */
void proto_version_print(FILE *f, const char *prog, const char *isa_in_use);

#endif
