/* kv.h — the KV-cache arena: one allocation made at start-up, carved into slots.
 *
 * A request holds one slot from admission to its end; a released slot is reusable at once. The
 * model never computes addresses itself: it stores a position's K and V rows with kv_store and
 * reads one head of a sequence back as runs of consecutive positions (kv_run), so a paged layout
 * with prefix sharing can replace slot-per-request without touching the model.
 * Layout (private): [slot][layer][K | V][head][position][head_dim]: one head's keys for a sequence
 * are contiguous, so attention streams them instead of striding over whole rows.
 * Memory: n_slots * n_layer * 2 * n_ctx * n_embd floats, mapped once (huge pages advised); pages
 * become resident only as positions are written. No allocation after kv_new. */
#ifndef GPT2D_KV_H
#define GPT2D_KV_H

#include <stddef.h>

typedef struct kv_arena kv_arena;

/* NULL with err if the mapping fails or the shape is invalid. */
kv_arena *kv_new(int n_slots, int n_layer, int n_ctx, int n_embd, int n_head, char *err,
                 size_t errlen);
void kv_free(kv_arena *a); /* NULL-safe */

int kv_alloc_slot(kv_arena *a);                /* a free slot, or -1 if all are taken */
/* The slot is free again: 0; -1 (and nothing changes) if slot is out of range or not handed out,
 * e.g. released twice, which would otherwise give one slot to two requests. */
int kv_release_slot(kv_arena *a, int slot);
int kv_slots(const kv_arena *a);
int kv_slots_used(const kv_arena *a);
int kv_ctx(const kv_arena *a);                 /* positions per slot */
size_t kv_bytes(const kv_arena *a);            /* arena size */

/* Stores the K and V rows (n_embd floats each, heads concatenated) of (slot, layer, pos). */
void kv_store(kv_arena *a, int slot, int layer, int pos, const float *k, const float *v);

/* For one head: the longest run of consecutive positions [pos, pos + n), n <= n_max, stored
 * contiguously: the head's K for position pos + i is *k + i * *stride (same for V), head_dim
 * floats. Returns n (>= 1 when n_max >= 1). */
int kv_run(const kv_arena *a, int slot, int layer, int head, int pos, int n_max, const float **k,
           const float **v, size_t *stride);

#endif
