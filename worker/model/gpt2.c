/* gpt2.c — see gpt2.h. Reads top to bottom: weights, buffers, one function per layer, forward. */
#include "gpt2.h"
#include "cpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cblas.h>

#include "attention.h"
#include "matmul.h"
#include "pool.h"
#include "vmath.h"

/* ---------------------------------------------------------------------------------------------
 * State: the weights' tensors (read-only, shared) and this engine's buffers. */

struct gpt2_state {
    const gpt2_weights *w;
    gpt2_config cfg;
    const mm_kernels *kern;         /* the weights' kernel family */
    int max_tokens, max_ctx;
    pool *pool;
    int owns_pool;                  /* 0 for a twin (gpt2_state_twin): the pool is its parent's */
    const float *wpe;               /* (T, C) */
    const float *ln_f_w, *ln_f_b;   /* (C) */
    const float *wte;               /* (V, C) plain copy, only when lm_head is untied */
    const mm_weight *lm_head;       /* C -> V (also the token embedding table when tied) */
    const gpt2_checkpoint *blas;    /* original tensors for OpenBLAS mode, else NULL */
    /* activations, max_tokens = B rows */
    float *x;                       /* (B, C) residual stream */
    float *h;                       /* (B, C) layer-norm output */
    float *qkv;                     /* (B, 3C) */
    float *att;                     /* (B, C) attention output, heads concatenated */
    float *tmp;                     /* (B, C) projection output before the residual add */
    float *fc;                      /* (B, 4C) MLP hidden */
    float *scores;                  /* (threads, max_ctx) attention scores per thread */
    void *mm_scratch;               /* the matmuls' scratch (matmul.h: int8 activations), or NULL */
};

/* gpt2_state_new, or with shared != NULL a state whose compute threads are shared's. */
static gpt2_state *state_new(const gpt2_weights *w, int max_tokens, int max_ctx, int n_threads, pool *shared,
                             char *err, size_t errlen) {
    const gpt2_config *c = gpt2_weights_config(w);
    if (cpu_check(err, errlen) < 0) return NULL;
    if (max_tokens < 1 || max_ctx < 1 || max_ctx > c->n_ctx) {
        snprintf(err, errlen, "model: invalid limits (max_tokens %d, ctx %d; the model's ctx is %d)",
                 max_tokens, max_ctx, c->n_ctx);
        return NULL;
    }
    gpt2_state *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->w = w;
    m->cfg = *c;
    m->kern = gpt2_weights_kernels(w);
    m->max_tokens = max_tokens;
    m->max_ctx = max_ctx;
    m->wpe = gpt2_weights_wpe(w);
    m->ln_f_w = gpt2_weights_ln_f(w, &m->ln_f_b);
    m->wte = gpt2_weights_wte(w);
    m->lm_head = gpt2_weights_lm_head(w);
    if (n_threads <= 0) n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    m->owns_pool = !shared;
    m->pool = shared ? shared : pool_new(n_threads);
    if (!m->pool) goto oom;
    size_t B = max_tokens, C = c->n_embd;
    m->x = malloc(B * C * sizeof(float));
    m->h = malloc(B * C * sizeof(float));
    m->qkv = malloc(B * 3 * C * sizeof(float));
    m->att = malloc(B * C * sizeof(float));
    m->tmp = malloc(B * C * sizeof(float));
    m->fc = malloc(B * 4 * C * sizeof(float));
    m->scores = malloc((size_t)pool_threads(m->pool) * max_ctx * sizeof(float));
    if (gpt2_weights_dtype(w) == MM_I8)
        m->mm_scratch = aligned_alloc(64, mm_scratch_bytes(max_tokens, 4 * c->n_embd));
    if (!m->x || !m->h || !m->qkv || !m->att || !m->tmp || !m->fc || !m->scores ||
        (gpt2_weights_dtype(w) == MM_I8 && !m->mm_scratch))
        goto oom;
    return m;
oom:
    snprintf(err, errlen, "model: out of memory");
    gpt2_state_free(m);
    return NULL;
}

gpt2_state *gpt2_state_new(const gpt2_weights *w, int max_tokens, int max_ctx, int n_threads, char *err,
                           size_t errlen) {
    return state_new(w, max_tokens, max_ctx, n_threads, NULL, err, errlen);
}

gpt2_state *gpt2_state_twin(gpt2_state *m, int max_tokens, char *err, size_t errlen) {
    gpt2_state *t = state_new(m->w, max_tokens, m->max_ctx, pool_threads(m->pool), m->pool, err, errlen);
    if (t) t->blas = m->blas;
    return t;
}

void gpt2_state_free(gpt2_state *m) {
    if (!m) return;
    if (m->owns_pool) pool_free(m->pool);
    free(m->x);
    free(m->h);
    free(m->qkv);
    free(m->att);
    free(m->tmp);
    free(m->fc);
    free(m->scores);
    free(m->mm_scratch);
    free(m);
}

int gpt2_use_blas(gpt2_state *m) {
    m->blas = gpt2_weights_checkpoint(m->w);
    if (!m->blas) return -1;
    openblas_set_num_threads(pool_threads(m->pool));
    return 0;
}

const gpt2_config *gpt2_config_of(const gpt2_state *m) { return &m->cfg; }
const gpt2_weights *gpt2_weights_of(const gpt2_state *m) { return m->w; }
pool *gpt2_pool(gpt2_state *m) { return m->pool; }
int gpt2_max_tokens(const gpt2_state *m) { return m->max_tokens; }

/* ---------------------------------------------------------------------------------------------
 * Layers. */

/* x (n, C) = wte[token] + wpe[pos]. */
static void embed_forward(gpt2_state *m, const gpt2_batch *b) {
    int C = m->cfg.n_embd;
    for (int i = 0; i < b->n; i++) {
        float *x = m->x + (size_t)i * C;
        const float *pe = m->wpe + (size_t)b->pos[i] * C;
        if (m->wte) {
            const float *te = m->wte + (size_t)b->token[i] * C;
            for (int k = 0; k < C; k++) x[k] = te[k] + pe[k];
        } else {
            for (int k = 0; k < C; k++) x[k] = mm_at(m->lm_head, k, b->token[i]) + pe[k];
        }
    }
}

/* out (C) = (x - mean) / sqrt(var + eps) * w + b for one row. */
static void layernorm_row(float *out, const float *x, const float *w, const float *b, int C,
                          float eps) {
    float mean = vm_sum(x, C) / C;
    __m256 acc = _mm256_setzero_ps(), mv = _mm256_set1_ps(mean);
    int k = 0;
    for (; k + 8 <= C; k += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + k), mv);
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    float var = vm_hsum(acc);
    for (; k < C; k++) var += (x[k] - mean) * (x[k] - mean);
    var /= C;
    float rstd = 1.0f / sqrtf(var + eps);
    __m256 rv = _mm256_set1_ps(rstd);
    for (k = 0; k + 8 <= C; k += 8) {
        __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + k), mv), rv);
        _mm256_storeu_ps(out + k, _mm256_add_ps(_mm256_mul_ps(d, _mm256_loadu_ps(w + k)), _mm256_loadu_ps(b + k)));
    }
    for (; k < C; k++) out[k] = (x[k] - mean) * rstd * w[k] + b[k];
}

/* out (n, C) = LN(x (n, C)). */
static void layernorm_forward(float *out, const float *x, const float *w, const float *b, int n,
                              int C, float eps) {
    for (int i = 0; i < n; i++)
        layernorm_row(out + (size_t)i * C, x + (size_t)i * C, w, b, C, eps);
}

/* x (n, C) += y (n, C). */
static void residual_forward(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

typedef struct {
    float *a;
    int n_cols;
} gelu_job;

static void gelu_task(void *ctx, int begin, int end, int tid) {
    (void)tid;
    const gelu_job *j = ctx;
    for (int r = begin; r < end; r++) {
        float *a = j->a + (size_t)r * j->n_cols;
        int k = 0;
        for (; k + 8 <= j->n_cols; k += 8) _mm256_storeu_ps(a + k, vm_gelu(_mm256_loadu_ps(a + k)));
        for (; k < j->n_cols; k++) a[k] = vm_gelu1(a[k]);
    }
}

/* a (n, 4C) = gelu(a), in place. */
static void gelu_forward(gpt2_state *m, float *a, int n, int n_cols) {
    gelu_job j = {a, n_cols};
    pool_run(m->pool, gelu_task, &j, n, 8);
}

/* Writes every token's K and V (from qkv) into its sequence's page at its position. */
static void kv_store_forward(gpt2_state *m, kv_arena *kv, const gpt2_batch *b, int layer) {
    int C = m->cfg.n_embd;
    for (int i = 0; i < b->n; i++) {
        const float *qkv = m->qkv + (size_t)i * 3 * C;
        kv_store(kv, b->slot[i], layer, b->pos[i], qkv + C, qkv + 2 * C);
    }
}

typedef struct {
    gpt2_state *m;
    kv_arena *kv;
    const gpt2_batch *b;
    int layer;
} attn_job;

/* Tasks [begin, end) = (token, head) pairs; scores is this thread's scratch (attention.h). */
static void attention_task(void *ctx, int begin, int end, int tid) {
    const attn_job *j = ctx;
    const gpt2_state *m = j->m;
    int H = m->cfg.n_head, C = m->cfg.n_embd, hd = C / H;
    float *scores = m->scores + (size_t)tid * m->max_ctx;
    for (int t = begin; t < end; t++) {
        int i = t / H, h = t % H;
        attn_head(j->kv, j->b->slot[i], j->layer, h, j->b->pos[i], m->qkv + (size_t)i * 3 * C + h * hd,
                  m->att + (size_t)i * C + h * hd, scores);
    }
}

/* att (n, C) = softmax(q k^T / sqrt(hd)) v per head, causal over each token's own sequence.
 * Tasks go out up to 4 at a time, fewer when there are few (one token's 12 heads: one at a time,
 * so two threads get 6 each rather than 8 and 4). */
static void attention_forward(gpt2_state *m, kv_arena *kv, const gpt2_batch *b, int layer) {
    attn_job j = {m, kv, b, layer};
    int n_tasks = b->n * m->cfg.n_head, grain = n_tasks / (8 * pool_threads(m->pool));
    pool_run(m->pool, attention_task, &j, n_tasks, grain < 1 ? 1 : grain > 4 ? 4 : grain);
}

/* out (n, ldo) = x (n, ldx) W + b through the panel kernels, or OpenBLAS in BLAS mode (n > 1):
 * raw is W in its original layout ((K, N), or (N, K) when transposed). */
static void linear_forward(gpt2_state *m, const mm_weight *w, const float *raw, int transposed,
                           const float *x, int ldx, float *out, int ldo, int n) {
    if (!m->blas || n == 1) {
        mm_forward(m->kern, m->pool, w, x, ldx, out, ldo, n, MM_STORE, m->mm_scratch);
        return;
    }
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * ldo;
        if (w->bias)
            memcpy(o, w->bias, sizeof(float) * w->N);
        else
            memset(o, 0, sizeof(float) * w->N);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, transposed ? CblasTrans : CblasNoTrans, n, w->N, w->K,
                1.0f, x, ldx, raw, transposed ? w->K : w->N, 1.0f, out, ldo);
}

#define RAW(l, field) (m->blas ? m->blas->layers[l].field : NULL)

/* One pre-LN transformer block on x (n, C), in place. The panel kernels fuse GELU and the
 * residual adds into their stores; BLAS mode does them as separate passes. */
static void block_forward(gpt2_state *m, kv_arena *kv, const gpt2_batch *b, int l) {
    const gpt2_layer *L = gpt2_weights_layer(m->w, l);
    int n = b->n, C = m->cfg.n_embd;
    float eps = m->cfg.ln_eps;
    layernorm_forward(m->h, m->x, L->ln_1_w, L->ln_1_b, n, C, eps);
    linear_forward(m, &L->c_attn, RAW(l, c_attn_w), 0, m->h, C, m->qkv, 3 * C, n);
    kv_store_forward(m, kv, b, l);
    attention_forward(m, kv, b, l);
    if (m->blas && n > 1) {
        linear_forward(m, &L->attn_proj, RAW(l, attn_proj_w), 0, m->att, C, m->tmp, C, n);
        residual_forward(m->x, m->tmp, (size_t)n * C);
    } else {
        mm_forward(m->kern, m->pool, &L->attn_proj, m->att, C, m->x, C, n, MM_ADD, m->mm_scratch);
    }
    layernorm_forward(m->h, m->x, L->ln_2_w, L->ln_2_b, n, C, eps);
    if (m->blas && n > 1) {
        linear_forward(m, &L->c_fc, RAW(l, c_fc_w), 0, m->h, C, m->fc, 4 * C, n);
        gelu_forward(m, m->fc, n, 4 * C);
        linear_forward(m, &L->mlp_proj, RAW(l, mlp_proj_w), 0, m->fc, 4 * C, m->tmp, C, n);
        residual_forward(m->x, m->tmp, (size_t)n * C);
    } else {
        mm_forward(m->kern, m->pool, &L->c_fc, m->h, C, m->fc, 4 * C, n, MM_GELU, m->mm_scratch);
        mm_forward(m->kern, m->pool, &L->mlp_proj, m->fc, 4 * C, m->x, C, n, MM_ADD, m->mm_scratch);
    }
}

static int batch_valid(const gpt2_state *m, kv_arena *kv, const gpt2_batch *b) {
    if (b->n < 1 || b->n > m->max_tokens) return 0;
    for (int i = 0; i < b->n; i++) {
        if (b->token[i] < 0 || b->token[i] >= m->cfg.n_vocab) return 0;
        if (b->pos[i] < 0 || b->pos[i] >= m->max_ctx || !kv_seq_has(kv, b->slot[i], b->pos[i])) return 0;
        if (b->out[i] >= b->n) return 0;
    }
    return 1;
}

int gpt2_forward_begin(gpt2_state *m, kv_arena *kv, const gpt2_batch *b) {
    if (!batch_valid(m, kv, b)) return -1;
    embed_forward(m, b);
    return 0;
}

void gpt2_forward_layers(gpt2_state *m, kv_arena *kv, const gpt2_batch *b, int l_from, int l_to) {
    if (l_from < 0) l_from = 0;
    if (l_to > m->cfg.n_layer) l_to = m->cfg.n_layer;
    for (int l = l_from; l < l_to; l++) block_forward(m, kv, b, l);
}

_Static_assert(GPT2_LOGIT_ALIGN == MM_PANEL, "logits are computed in whole panels");

/* Rows of logits the batch asks for. */
static int batch_n_out(const gpt2_batch *b) {
    int n_out = 0;
    for (int i = 0; i < b->n; i++)
        if (b->out[i] + 1 > n_out) n_out = b->out[i] + 1;
    return n_out;
}

void gpt2_forward_norm(gpt2_state *m, const gpt2_batch *b) {
    int C = m->cfg.n_embd;
    /* final LN only for the rows that produce logits, gathered in out order */
    for (int i = 0; i < b->n; i++) {
        if (b->out[i] < 0) continue;
        layernorm_row(m->h + (size_t)b->out[i] * C, m->x + (size_t)i * C, m->ln_f_w, m->ln_f_b, C,
                      m->cfg.ln_eps);
    }
}

void gpt2_forward_logits(gpt2_state *m, const gpt2_batch *b, float *logits, int c0, int c1) {
    int C = m->cfg.n_embd, V = m->cfg.n_vocab, n_out = batch_n_out(b);
    if (c1 > V) c1 = V;
    if (n_out == 0 || c0 < 0 || c0 % MM_PANEL != 0 || c0 >= c1) return;
    mm_weight part;
    const mm_weight *w = m->lm_head;
    if (c0 > 0 || c1 < V) { /* panels c0/16 .. ceil(c1/16): columns [c0, c1) */
        mm_view_panels(&part, m->lm_head, c0 / MM_PANEL, (c1 + MM_PANEL - 1) / MM_PANEL);
        w = &part;
    }
    linear_forward(m, w, m->blas ? m->blas->lm_head + (size_t)c0 * C : NULL, 1, m->h, C, logits + c0, V, n_out);
}

void gpt2_forward_end(gpt2_state *m, const gpt2_batch *b, float *logits) {
    gpt2_forward_norm(m, b);
    gpt2_forward_logits(m, b, logits, 0, m->cfg.n_vocab);
}

int gpt2_forward(gpt2_state *m, kv_arena *kv, const gpt2_batch *b, float *logits) {
    if (gpt2_forward_begin(m, kv, b) != 0) return -1;
    gpt2_forward_layers(m, kv, b, 0, m->cfg.n_layer);
    gpt2_forward_end(m, b, logits);
    return 0;
}
