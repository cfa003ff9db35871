/* kv.c — see kv.h. Layout: [slot][layer][K | V][head][n_ctx][head_dim]. */
#include <string.h>

#include "kv.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

struct kv_arena {
    int n_slots, n_layer, n_ctx, n_embd, n_head, head_dim;
    size_t slot_floats;   /* n_layer * 2 * n_ctx * n_embd */
    size_t bytes;
    float *base;          /* the mapping */
    int *free_list;       /* (n_slots) stack of free slots */
    int n_free;
    unsigned char *taken; /* (n_slots) 1 while a slot is handed out: catches a double release */
};

kv_arena *kv_new(int n_slots, int n_layer, int n_ctx, int n_embd, int n_head, char *err,
                 size_t errlen) {
    if (n_slots < 1 || n_layer < 1 || n_ctx < 1 || n_embd < 1 || n_head < 1 || n_embd % n_head) {
        snprintf(err, errlen, "kv arena: invalid shape (slots %d, layers %d, ctx %d, embd %d)",
                 n_slots, n_layer, n_ctx, n_embd);
        return NULL;
    }
    kv_arena *a = calloc(1, sizeof *a);
    if (!a) goto oom;
    a->n_slots = n_slots;
    a->n_layer = n_layer;
    a->n_ctx = n_ctx;
    a->n_embd = n_embd;
    a->n_head = n_head;
    a->head_dim = n_embd / n_head;
    a->slot_floats = (size_t)n_layer * 2 * n_ctx * n_embd;
    a->bytes = a->slot_floats * n_slots * sizeof(float);
    a->free_list = malloc(sizeof(int) * n_slots);
    a->taken = calloc((size_t)n_slots, 1);
    if (!a->free_list || !a->taken) goto oom;
    void *m = mmap(NULL, a->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "kv arena: cannot map %zu MiB for %d slots x %d positions",
                 a->bytes >> 20, n_slots, n_ctx);
        kv_free(a);
        return NULL;
    }
    madvise(m, a->bytes, MADV_HUGEPAGE);
    a->base = m;
    for (int i = 0; i < n_slots; i++) a->free_list[i] = n_slots - 1 - i; /* slot 0 handed out first */
    a->n_free = n_slots;
    return a;
oom:
    snprintf(err, errlen, "kv arena: out of memory");
    kv_free(a);
    return NULL;
}

void kv_free(kv_arena *a) {
    if (!a) return;
    if (a->base) munmap(a->base, a->bytes);
    free(a->free_list);
    free(a->taken);
    free(a);
}

int kv_alloc_slot(kv_arena *a) {
    if (a->n_free == 0) return -1;
    int slot = a->free_list[--a->n_free];
    a->taken[slot] = 1;
    return slot;
}

int kv_release_slot(kv_arena *a, int slot) {
    if (slot < 0 || slot >= a->n_slots || !a->taken[slot]) return -1; /* not ours, or released twice */
    a->taken[slot] = 0;
    a->free_list[a->n_free++] = slot;
    return 0;
}

int kv_slots(const kv_arena *a) { return a->n_slots; }
int kv_slots_used(const kv_arena *a) { return a->n_slots - a->n_free; }
int kv_ctx(const kv_arena *a) { return a->n_ctx; }
size_t kv_bytes(const kv_arena *a) { return a->bytes; }

static float *kv_layer(const kv_arena *a, int slot, int layer) {
    return a->base + (size_t)slot * a->slot_floats + (size_t)layer * 2 * a->n_ctx * a->n_embd;
}

void kv_store(kv_arena *a, int slot, int layer, int pos, const float *k, const float *v) {
    float *K = kv_layer(a, slot, layer), *V = K + (size_t)a->n_ctx * a->n_embd;
    size_t hd = a->head_dim, head_stride = (size_t)a->n_ctx * hd;
    for (int h = 0; h < a->n_head; h++) {
        memcpy(K + h * head_stride + pos * hd, k + h * hd, hd * sizeof(float));
        memcpy(V + h * head_stride + pos * hd, v + h * hd, hd * sizeof(float));
    }
}

int kv_run(const kv_arena *a, int slot, int layer, int head, int pos, int n_max, const float **k,
           const float **v, size_t *stride) {
    const float *K = kv_layer(a, slot, layer);
    size_t hd = a->head_dim, off = (size_t)head * a->n_ctx * hd + (size_t)pos * hd;
    *k = K + off;
    *v = K + (size_t)a->n_ctx * a->n_embd + off;
    *stride = hd;
    int n = a->n_ctx - pos;
    return n < n_max ? n : n_max;
}
