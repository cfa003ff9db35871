/* apikeys.h — optional API keys of gpt2d-http: a file of keys, one per line ('#' comments, blank
 * lines and surrounding spaces ignored), checked against "Authorization: Bearer KEY".
 * The comparison takes the same time whichever key matches and wherever two keys differ (no early
 * exit), so response times do not leak a key byte by byte. Keys are never logged. */
#ifndef GPT2D_HTTP_APIKEYS_H
#define GPT2D_HTTP_APIKEYS_H

#include <stddef.h>

#define APIKEYS_MAX 1024      /* keys per file */
#define APIKEYS_MAX_LEN 256   /* bytes per key */

typedef struct apikeys apikeys;

/* Loads path. NULL with err on failure (unreadable, no key, a key too long). */
apikeys *apikeys_load(const char *path, char *err, size_t errlen);
void apikeys_free(apikeys *k); /* NULL-safe */
int apikeys_count(const apikeys *k);

/* 1 if the Authorization header value (may be NULL) is "Bearer <one of the keys>", else 0. */
int apikeys_check(const apikeys *k, const char *authorization);

#endif
