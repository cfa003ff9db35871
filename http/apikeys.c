/* apikeys.c — see apikeys.h. */
#include "apikeys.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct apikeys {
    int n;
    size_t len[APIKEYS_MAX];
    unsigned char key[APIKEYS_MAX][APIKEYS_MAX_LEN];
};

apikeys *apikeys_load(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "api-keys %s: %s", path, strerror(errno));
        return NULL;
    }
    apikeys *k = calloc(1, sizeof(*k));
    char line[4096];
    int line_no = 0;
    while (k && fgets(line, sizeof(line), f)) {
        line_no++;
        char *s = line;
        while (isspace((unsigned char)*s)) s++;
        size_t n = strlen(s);
        while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = 0;
        if (n == 0 || *s == '#') continue;
        if (n > APIKEYS_MAX_LEN || k->n == APIKEYS_MAX) {
            snprintf(err, errlen, "api-keys %s:%d: %s", path, line_no,
                     n > APIKEYS_MAX_LEN ? "key longer than 256 bytes" : "more than 1024 keys");
            apikeys_free(k);
            fclose(f);
            return NULL;
        }
        memcpy(k->key[k->n], s, n);
        k->len[k->n++] = n;
    }
    fclose(f);
    if (!k) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (k->n == 0) {
        snprintf(err, errlen, "api-keys %s: no key in the file", path);
        apikeys_free(k);
        return NULL;
    }
    return k;
}

void apikeys_free(apikeys *k) { free(k); }

int apikeys_count(const apikeys *k) { return k ? k->n : 0; }

/* 0 if a (len la) equals key (len lk), else nonzero; time depends only on lk. */
static unsigned ct_diff(const unsigned char *a, size_t la, const unsigned char *key, size_t lk) {
    unsigned diff = (unsigned)(la ^ lk);
    for (size_t i = 0; i < lk; i++) diff |= (unsigned)(key[i] ^ (i < la ? a[i] : 0));
    return diff;
}

int apikeys_check(const apikeys *k, const char *authorization) {
    if (!k || !authorization || strncasecmp(authorization, "Bearer ", 7) != 0) return 0;
    const unsigned char *tok = (const unsigned char *)authorization + 7;
    while (*tok == ' ') tok++;
    size_t n = strnlen((const char *)tok, APIKEYS_MAX_LEN + 1);
    unsigned ok = 0;
    for (int i = 0; i < k->n; i++) ok |= ct_diff(tok, n, k->key[i], k->len[i]) == 0;
    return ok != 0;
}
