/* proto_suggest.c — see proto_suggest.h. */
#include "proto_suggest.h"

#include <string.h>

#define SUGGEST_MAX 64 /* longer words are never matched */

static size_t edit_distance(const char *a, size_t la, const char *b) {
    size_t lb = strlen(b);
    if (la >= SUGGEST_MAX || lb >= SUGGEST_MAX) return SUGGEST_MAX;
    size_t row[SUGGEST_MAX + 1];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *proto_suggest_table(const char *word, size_t len, const void *table, size_t n, size_t stride) {
    const char *best = NULL;
    size_t best_d = SUGGEST_MAX, limit = len / 3 > 2 ? len / 3 : 2;
    for (size_t i = 0; i < n; i++) {
        const char *name = *(const char *const *)((const char *)table + i * stride);
        if (!name) continue;
        size_t d = edit_distance(word, len, name);
        if (d <= limit && d < best_d) {
            best = name;
            best_d = d;
        }
    }
    return best;
}

const char *proto_suggest(const char *word, size_t len, const char *const *names, size_t n) {
    return proto_suggest_table(word, len, names, n, sizeof(names[0]));
}
