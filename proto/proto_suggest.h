/* proto_suggest.h — "did you mean": the known name closest to a misspelt one (Levenshtein distance,
 * within max(2, len/3) edits), used by gpt2c for flags and by gpt2d for flags and config keys. */
#ifndef GPT2D_PROTO_SUGGEST_H
#define GPT2D_PROTO_SUGGEST_H

#include <stddef.h>

/* The name among names[0..n) (a NULL entry is skipped) closest to word (its first len bytes), or
 * NULL if none is close enough. */
const char *proto_suggest(const char *word, size_t len, const char *const *names, size_t n);

/* The same over an array of structs whose first member is the name (stride bytes apart). */
const char *proto_suggest_table(const char *word, size_t len, const void *table, size_t n, size_t stride);

#endif
