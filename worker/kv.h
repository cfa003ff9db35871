/* kv.h — the KV-cache arena: one allocation made at start-up, carved into slots.
 *
 * A request holds one slot from admission to its end; a released slot is reusable at once. The
 * model never computes addresses itself: it writes a position's K and V rows through kv_k_row /
 * kv_v_row and reads a sequence back as runs of consecutive positions (kv_run), so a paged layout
 * with prefix sharing can replace slot-per-request without touching the model.
 * Memory: n_slots * n_layer * 2 * n_ctx * n_embd floats, mapped once (huge pages advised); pages
 * become resident only as positions are written. No allocation after kv_new. */
#ifndef GPT2D_KV_H
#define GPT2D_KV_H

#include <stddef.h>

typedef struct kv_arena kv_arena;

/* NULL with err if the mapping fails or the shape is invalid. */
kv_arena *kv_new(int n_slots, int n_layer, int n_ctx, int n_embd, char *err, size_t errlen);
void kv_free(kv_arena *a); /* NULL-safe */

int kv_alloc_slot(kv_arena *a);                /* a free slot, or -1 if all are taken */
void kv_release_slot(kv_arena *a, int slot);   /* the slot is free again */
int kv_slots(const kv_arena *a);
int kv_slots_used(const kv_arena *a);
int kv_ctx(const kv_arena *a);                 /* positions per slot */
size_t kv_bytes(const kv_arena *a);            /* arena size */

/* The n_embd floats of K (or V) for (slot, layer, pos), to write or read. */
float *kv_k_row(kv_arena *a, int slot, int layer, int pos);
float *kv_v_row(kv_arena *a, int slot, int layer, int pos);

/* The longest run of consecutive positions [pos, pos + n) with n <= n_max stored contiguously:
 * K row i of the run is *k + i * *stride (same for V). Returns n (>= 1 when n_max >= 1). */
int kv_run(kv_arena *a, int slot, int layer, int pos, int n_max, const float **k, const float **v,
           size_t *stride);

#endif
