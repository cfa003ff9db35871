/* check.h — the tiny test helper every tests/test_*.c uses.
 *
 * check(cond, fmt, ...) counts a pass or prints "FAIL file:line: message" and counts a failure.
 * check_done() prints "<name>: N passed, N failed" and returns the process exit code
 * (0 only if nothing failed and at least one check ran). tests/run.sh sums these lines. */
#ifndef GPT2D_TESTS_CHECK_H
#define GPT2D_TESTS_CHECK_H

#include <stdio.h>

typedef struct {
    int passed;
    int failed;
} check_counts;

static check_counts check_state; /* per test binary; the harness is its own main file */

#define check(cond, ...)                                                            \
    do {                                                                            \
        if (cond) {                                                                 \
            check_state.passed++;                                                   \
        } else {                                                                    \
            check_state.failed++;                                                   \
            fprintf(stdout, "FAIL %s:%d: ", __FILE__, __LINE__);                    \
            fprintf(stdout, __VA_ARGS__);                                           \
            fputc('\n', stdout);                                                    \
            fflush(stdout);                                                         \
        }                                                                           \
    } while (0)

static inline int check_done(const char *name) {
    printf("%s: %d passed, %d failed\n", name, check_state.passed, check_state.failed);
    fflush(stdout);
    return (check_state.failed == 0 && check_state.passed > 0) ? 0 : 1;
}

#endif
