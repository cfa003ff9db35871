/* table.c — see table.h. */
#include "table.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *next;
    void *val;
    uint64_t hash;
    size_t len;
    unsigned char key[]; /* len bytes */
} entry;

struct table {
    entry **buckets;
    size_t n_buckets; /* power of two */
    size_t count;
};

static uint64_t table_hash(const void *key, size_t len) {
    const unsigned char *p = key;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

table *table_new(void) {
    table *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    t->n_buckets = 64;
    t->buckets = calloc(t->n_buckets, sizeof(entry *));
    if (!t->buckets) {
        free(t);
        return NULL;
    }
    return t;
}

void table_free(table *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_buckets; i++) {
        entry *e = t->buckets[i];
        while (e) {
            entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(t->buckets);
    free(t);
}

static entry **table_find(const table *t, const void *key, size_t len, uint64_t h) {
    entry **pp = &t->buckets[h & (t->n_buckets - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->key, key, len) == 0))
        pp = &(*pp)->next;
    return pp;
}

void *table_get(const table *t, const void *key, size_t len) {
    entry **pp = table_find(t, key, len, table_hash(key, len));
    return *pp ? (*pp)->val : NULL;
}

/* Doubles the bucket array; on allocation failure the table just stays denser. */
static void table_grow(table *t) {
    size_t n = t->n_buckets * 2;
    entry **b = calloc(n, sizeof(entry *));
    if (!b) return;
    for (size_t i = 0; i < t->n_buckets; i++) {
        entry *e = t->buckets[i];
        while (e) {
            entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->n_buckets = n;
}

int table_put(table *t, const void *key, size_t len, void *val) {
    uint64_t h = table_hash(key, len);
    entry **pp = table_find(t, key, len, h);
    if (*pp) {
        (*pp)->val = val;
        return 0;
    }
    entry *e = malloc(sizeof(*e) + len);
    if (!e) return -1;
    e->next = NULL;
    e->val = val;
    e->hash = h;
    e->len = len;
    memcpy(e->key, key, len);
    *pp = e;
    if (++t->count > t->n_buckets) table_grow(t);
    return 0;
}

void *table_del(table *t, const void *key, size_t len) {
    entry **pp = table_find(t, key, len, table_hash(key, len));
    entry *e = *pp;
    if (!e) return NULL;
    void *val = e->val;
    *pp = e->next;
    free(e);
    t->count--;
    return val;
}

size_t table_count(const table *t) { return t->count; }
