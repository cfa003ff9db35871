/* kv.h — the KV cache: a paged arena with an exact prefix cache.
 *
 * Memory: one mapping made at start-up (huge pages advised, resident only as written), carved into
 * n_pages PAGES of KV_PAGE positions x every layer x K and V. No allocation after kv_new.
 * A SEQUENCE (a running request; handle 0..max_seqs-1, the model's "slot") has a page table: page
 * i holds its positions [i * KV_PAGE, (i + 1) * KV_PAGE). The model never computes addresses: it
 * stores a position's K and V rows with kv_store and reads one head back as runs of consecutive
 * positions (kv_run, never crossing a page), in position order, so attention's sums are the same
 * operations in the same order as with one contiguous slot: outputs are bit-identical.
 * Layout of a page (private): [layer][K | V][head][KV_PAGE positions][head_dim], in the arena's dtype.
 *
 * Memory policy (admission control, no preemption, nothing fails mid-stream): kv_seq_open RESERVES
 * every page the request can ever reach (prompt + max_tokens, capped at the context) or refuses
 * with KV_E_NO_PAGES, and the caller waits until a sequence closes. Reserved pages are taken on
 * demand (kv_seq_prepare) from the free list, else by evicting the least recently used cached page;
 * the reservation guarantees that never fails. A request that does not fit an empty arena is the
 * caller's to refuse at submit (kv_pages_for).
 *
 * Prefix cache (unless disabled): a FULL page of prompt positions, once computed, is PUBLISHED
 * (kv_seq_publish) under a hash chained over the token ids of the page and of every page before it.
 * kv_seq_open looks the prompt up page by page and shares the longest cached prefix, leaving at
 * least one prompt token to compute. A lookup matches a page only if its hash, its own token ids AND
 * its parent (the matched previous page, by index and generation) all agree, so a hash collision can
 * never return another prefix's K/V. Because the kernels are batch-invariant, a cached page holds
 * bit for bit what a fresh prefill would have written: the prefix cache is exact.
 *
 * Page ownership rules (kv_check verifies them all; tests call it after every operation):
 *  - The arena owns every page; each page is in exactly one state:
 *      FREE    on the free list: refcount 0, not published;
 *      USED    refcount >= 1 (one reference per sequence whose page table holds it);
 *      CACHED  refcount 0 and published: on the LRU list, evictable.
 *  - Who allocates: only kv_seq_prepare, out of its sequence's reservation. Who frees: kv_seq_close
 *    drops the sequence's references and its unused reservation; a page whose refcount reaches 0
 *    becomes CACHED if published, else FREE. Eviction (an allocation with no FREE page) takes the
 *    LRU head, unpublishes it and bumps its generation, so stale children can no longer match.
 *  - Writes: kv_store writes only a page its sequence allocated and has not published (refcount 1).
 *    Published pages are read-only forever (until evicted); shared pages are always published.
 *  - Accounting: free + used + cached = total; sum of sequences' unused reservations = reserved
 *    <= free + cached. */
#ifndef GPT2D_KV_H
#define GPT2D_KV_H

#include <stddef.h>
#include <stdint.h>

#define KV_PAGE 16 /* positions per page */

/* How K and V are stored. fp32: exactly what the model computed. fp16 (IEEE half, F16C) and bf16
 * (bfloat16): half the bytes, rounded to nearest even when stored; attention widens them back to
 * float, so outputs differ from fp32 but stay batch-invariant within the dtype. */
typedef enum { KV_F32 = 0, KV_F16, KV_BF16 } kv_dtype;
const char *kv_dtype_name(kv_dtype t);           /* "fp32", "fp16", "bf16" */
int kv_dtype_parse(const char *s);               /* NULL/"" -> KV_F32; a name -> its kv_dtype; else -1 */
size_t kv_dtype_size(kv_dtype t);                /* bytes per element */

/* Chained page hash: hash of one page's KV_PAGE ids given the hash of the pages before it (0 for
 * the first page). Tests may plug a degenerate one to force collisions. */
typedef uint64_t (*kv_hash_fn)(uint64_t prev, const int *ids, int n);
uint64_t kv_hash_default(uint64_t prev, const int *ids, int n);

typedef struct {
    int n_layer, n_ctx, n_embd, n_head; /* model shape; n_ctx: positions a sequence may reach */
    int n_pages;                        /* pages in the arena (>= one context's worth) */
    int max_seqs;                       /* sequences open at once */
    int prefix_cache;                   /* 1: publish and share prompt pages */
    kv_hash_fn hash;                    /* NULL: kv_hash_default */
    kv_dtype dtype;                     /* element type of K and V */
} kv_config;

typedef struct {
    int pages_total, pages_used, pages_free, pages_cached, pages_reserved;
    int seqs_open;
    size_t page_bytes;
    uint64_t lookup_tokens, hit_tokens;   /* prompt tokens looked up / found cached, since start */
    uint64_t evictions;
} kv_stats;

enum { KV_E_NO_SEQ = -1, KV_E_NO_PAGES = -2 };

typedef struct kv_arena kv_arena;

/* NULL with err if the mapping fails or the shape is invalid. */
kv_arena *kv_new(const kv_config *c, char *err, size_t errlen);
void kv_free(kv_arena *a); /* NULL-safe */
/* For callers that drive the model directly (tools, tests, benchmarks): n_seqs sequences 0..n_seqs-1
 * already open with every page of n_ctx positions allocated, no prefix cache. NULL with err. */
kv_arena *kv_new_fixed(int n_seqs, int n_layer, int n_ctx, int n_embd, int n_head, char *err, size_t errlen);

/* Pages a sequence of n positions spans. */
int kv_pages_for(int n_positions);
size_t kv_page_bytes(const kv_arena *a);
size_t kv_bytes(const kv_arena *a);   /* the mapping */
int kv_ctx(const kv_arena *a);
int kv_max_seqs(const kv_arena *a);
void kv_get_stats(const kv_arena *a, kv_stats *s);

/* Opens a sequence for a prompt of n_prompt ids that will write at most n_reserve positions
 * (n_prompt <= n_reserve <= n_ctx): shares the longest cached prefix of whole pages (at most
 * n_prompt - 1 positions; *n_cached gets its length) and reserves the rest. Returns the sequence
 * handle, KV_E_NO_SEQ (every handle is open) or KV_E_NO_PAGES (not enough free or evictable pages
 * now; nothing changed). */
int kv_seq_open(kv_arena *a, const int *ids, int n_prompt, int n_reserve, int *n_cached);
/* 1 if the next whole page of this prompt after its longest cached prefix is being computed by an
 * open sequence (same chained hash; a hint only, so the hash alone decides): admitting the prompt
 * after that page is published shares it instead of computing it twice. */
int kv_prefix_pending(kv_arena *a, const int *ids, int n_prompt);
/* Drops the sequence's pages and reservation; the handle is free again: 0. -1 (nothing changes) if
 * seq is out of range or not open, e.g. closed twice, which would otherwise drop references twice. */
int kv_seq_close(kv_arena *a, int seq);
/* Makes positions [0, n) of seq backed by pages (allocating from its reservation). 0, or -1 if n is
 * beyond the reservation (a caller bug; nothing allocated). */
int kv_seq_prepare(kv_arena *a, int seq, int n);
/* Publishes seq's full pages within ids[0, n_done): positions already computed, all prompt. */
void kv_seq_publish(kv_arena *a, int seq, const int *ids, int n_done);
/* 1 if seq is open and position pos is backed by a page. */
int kv_seq_has(const kv_arena *a, int seq, int pos);
/* Pages seq holds now (its resident KV). */
int kv_seq_pages(const kv_arena *a, int seq);

/* Stores the K and V rows (n_embd floats each, heads concatenated) of (seq, layer, pos). */
void kv_store(kv_arena *a, int seq, int layer, int pos, const float *k, const float *v);

/* For one head: the longest run of consecutive positions [pos, pos + n), n <= n_max, stored
 * contiguously: the head's K for position pos + i is element i * *stride of *k (same for V), head_dim
 * elements of kv_dtype_of(a) (floats for KV_F32). Returns n (>= 1 when n_max >= 1); a run never
 * crosses a page. */
int kv_run(const kv_arena *a, int seq, int layer, int head, int pos, int n_max, const void **k,
           const void **v, size_t *stride);
kv_dtype kv_dtype_of(const kv_arena *a);
int kv_head_dim(const kv_arena *a);          /* n_embd / n_head: elements of one head's K or V row */
/* Widens n rows of hd elements of type t (row i at element i * stride of src) to floats, row i at
 * out + i * hd. Exact (every fp16 and bf16 value is a float). */
void kv_widen(kv_dtype t, const void *src, size_t stride, int n, int hd, float *out);

/* Verifies every ownership rule above; 0, or -1 with err naming the first broken one. */
int kv_check(const kv_arena *a, char *err, size_t errlen);

#endif
