/* table.h — a small hash table from byte-string keys to pointers (the broker's indexes:
 * clients by routing id, requests by broker id and by (client, client id)).
 * Keys are copied; values are borrowed. Chained buckets, doubled when the load passes 1. */
#ifndef GPT2D_TABLE_H
#define GPT2D_TABLE_H

#include <stddef.h>

typedef struct table table;

table *table_new(void);          /* NULL on allocation failure */
void table_free(table *t);       /* NULL-safe; values are not freed */

void *table_get(const table *t, const void *key, size_t len); /* NULL if absent */
/* Inserts or replaces. 0, or -1 on allocation failure (table unchanged). */
int table_put(table *t, const void *key, size_t len, void *val);
/* Removes the key; returns its value or NULL. */
void *table_del(table *t, const void *key, size_t len);
size_t table_count(const table *t);

#endif
