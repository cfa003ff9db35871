/* test_model.c — the engine against a textbook GPT-2 forward pass.
 *
 * The reference below is written independently of worker/gpt2.c: plain scalar loops, no BLAS, no
 * packing, no KV cache (it recomputes the whole sequence every time, so it checks the cache too),
 * libm tanhf/expf. Two random models made by gpt2-tool's writer:
 *   small (2 layers, 128 wide): the engine's greedy continuation of 64 tokens for several prompts
 *     equals the reference's own greedy continuation (recomputed from scratch each token), and the
 *     logits agree within 1e-3 at every step;
 *   124M shape: last-position logits for several prompts within 1e-3, and a 16-token greedy path
 *     checked position by position against one reference pass over prompt + path.
 * Max |logit difference| is printed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "check.h"
#include "checkpoint.h"
#include "engine.h"

#define TOL 1e-3f

/* ---------------------------------------------------------------------------------------------
 * The reference forward pass: logits (T, V) for every position of ids (T). */

static void ref_layernorm(float *out, const float *x, const float *w, const float *b, int C, float eps) {
    double mean = 0, var = 0;
    for (int i = 0; i < C; i++) mean += x[i];
    mean /= C;
    for (int i = 0; i < C; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= C;
    double rstd = 1.0 / sqrt(var + eps);
    for (int i = 0; i < C; i++) out[i] = (float)((x[i] - mean) * rstd) * w[i] + b[i];
}

/* out (T, N) = x (T, K) @ W (K, N) + b */
static void ref_linear(float *out, const float *x, const float *W, const float *b, int T, int K, int N) {
    for (int t = 0; t < T; t++) {
        float *o = out + (size_t)t * N;
        for (int n = 0; n < N; n++) o[n] = b ? b[n] : 0.0f;
        for (int k = 0; k < K; k++) {
            float xv = x[(size_t)t * K + k];
            const float *w = W + (size_t)k * N;
            for (int n = 0; n < N; n++) o[n] += xv * w[n];
        }
    }
}

static float ref_gelu(float x) {
    return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

/* Logits for positions [first, T) into logits ((T - first), V). */
static void ref_forward(const gpt2_checkpoint *ck, const int *ids, int T, int first, float *logits) {
    const gpt2_config *c = &ck->cfg;
    int C = c->n_embd, H = c->n_head, hd = C / H, V = c->n_vocab;
    float *x = malloc(sizeof(float) * T * C), *h = malloc(sizeof(float) * T * C);
    float *qkv = malloc(sizeof(float) * T * 3 * C), *att = malloc(sizeof(float) * T * C);
    float *tmp = malloc(sizeof(float) * T * C), *fc = malloc(sizeof(float) * T * 4 * C);
    float *p = malloc(sizeof(float) * T);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < C; i++)
            x[t * C + i] = ck->wte[(size_t)ids[t] * C + i] + ck->wpe[(size_t)t * C + i];
    for (int l = 0; l < c->n_layer; l++) {
        const gpt2_layer_tensors *L = &ck->layers[l];
        for (int t = 0; t < T; t++) ref_layernorm(h + t * C, x + t * C, L->ln_1_w, L->ln_1_b, C, c->ln_eps);
        ref_linear(qkv, h, L->c_attn_w, L->c_attn_b, T, C, 3 * C);
        for (int t = 0; t < T; t++)
            for (int hh = 0; hh < H; hh++) {
                const float *q = qkv + t * 3 * C + hh * hd;
                float mx = -INFINITY, sum = 0;
                for (int u = 0; u <= t; u++) {
                    const float *k = qkv + u * 3 * C + C + hh * hd;
                    float s = 0;
                    for (int d = 0; d < hd; d++) s += q[d] * k[d];
                    p[u] = s / sqrtf((float)hd);
                    if (p[u] > mx) mx = p[u];
                }
                for (int u = 0; u <= t; u++) sum += p[u] = expf(p[u] - mx);
                for (int d = 0; d < hd; d++) {
                    float o = 0;
                    for (int u = 0; u <= t; u++) o += p[u] / sum * qkv[u * 3 * C + 2 * C + hh * hd + d];
                    att[t * C + hh * hd + d] = o;
                }
            }
        ref_linear(tmp, att, L->attn_proj_w, L->attn_proj_b, T, C, C);
        for (int i = 0; i < T * C; i++) x[i] += tmp[i];
        for (int t = 0; t < T; t++) ref_layernorm(h + t * C, x + t * C, L->ln_2_w, L->ln_2_b, C, c->ln_eps);
        ref_linear(fc, h, L->c_fc_w, L->c_fc_b, T, C, 4 * C);
        for (int i = 0; i < T * 4 * C; i++) fc[i] = ref_gelu(fc[i]);
        ref_linear(tmp, fc, L->mlp_proj_w, L->mlp_proj_b, T, 4 * C, C);
        for (int i = 0; i < T * C; i++) x[i] += tmp[i];
    }
    for (int t = first; t < T; t++) {
        ref_layernorm(h, x + t * C, ck->ln_f_w, ck->ln_f_b, C, c->ln_eps);
        float *o = logits + (size_t)(t - first) * V;
        for (int v = 0; v < V; v++) {
            const float *w = ck->lm_head + (size_t)v * C;
            float s = 0;
            for (int i = 0; i < C; i++) s += h[i] * w[i];
            o[v] = s;
        }
    }
    free(x), free(h), free(qkv), free(att), free(tmp), free(fc), free(p);
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static float max_abs_diff(const float *a, const float *b, int n) {
    float m = 0;
    for (int i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN counts as a failure */
    }
    return m;
}

/* ---------------------------------------------------------------------------------------------
 * The engine side: one greedy request, recording its tokens and every logits row. */

typedef struct {
    int n_vocab, max;
    int *tokens;
    int n;
    float *logits; /* (max, V) */
    int done;
} capture;

static void cap_token(void *u, uint64_t id, int index, int token, const char *piece, size_t len, float lp) {
    (void)id, (void)piece, (void)len, (void)lp;
    capture *c = u;
    if (index < c->max) c->tokens[index] = token;
    c->n = index + 1;
}
static void cap_logits(void *u, uint64_t id, int index, const float *lg, int V) {
    (void)id;
    capture *c = u;
    if (index < c->max) memcpy(c->logits + (size_t)index * V, lg, sizeof(float) * V);
}
static void cap_done(void *u, uint64_t id, const engine_result *r) {
    (void)id, (void)r;
    ((capture *)u)->done = 1;
}

/* Greedy-generates n tokens for prompt ids with the engine (ignore_eos). 0 on success. */
static int engine_greedy(engine *e, capture *c, const int *ids, int n_ids, int n) {
    engine_request q = {0};
    q.prompt_ids = ids;
    q.n_prompt_ids = n_ids;
    q.max_tokens = n;
    q.ignore_eos = 1;
    sampler_params_default(&q.sampling);
    c->n = 0;
    c->done = 0;
    engine_refusal why;
    static uint64_t next_id = 1;
    if (engine_submit(e, next_id++, &q, &why) != 0) {
        printf("submit: %s\n", why.message);
        return -1;
    }
    while (!c->done)
        if (engine_step(e) < 0) return -1;
    return 0;
}

/* An engine on dir's weights (loaded into *w, freed by stop_engine) and tok. */
static engine *start_engine(const char *dir, bpe_tokenizer *tok, gpt2_weights **w, capture *c, int ctx) {
    engine_config cfg = {.n_slots = 2, .n_ctx = ctx, .max_batch_tokens = 64};
    engine_callbacks cb = {cap_token, cap_done, cap_logits, c};
    char err[512];
    engine *e = NULL;
    if (!(*w = gpt2_weights_load(dir, NULL, err, sizeof err)) || !(e = engine_new(*w, tok, &cfg, &cb, err, sizeof err)))
        printf("engine: %s\n", err);
    return e;
}

static void stop_engine(engine *e, gpt2_weights *w) {
    engine_free(e);
    gpt2_weights_free(w);
}

static const char *prompts[] = {
    "Hello, my name is",
    "From: Maria Cohen <maria.cohen@quillworks.example>\nTo: Chen Nguyen\nSubject: Q3 review\n\nHi Chen,\n\n",
    "The quick brown fox jumps over the lazy dog.",
    "1, 2, 3, 4,",
};
#define N_PROMPTS 4

static void test_small(const char *dir, bpe_tokenizer *tok) {
    gpt2_checkpoint ck = {0};
    char err[512];
    if (ckpt_load(&ck, dir, err, sizeof err) != 0) {
        check(0, "load small: %s", err);
        return;
    }
    int V = ck.cfg.n_vocab, GEN = 64;
    capture c = {.n_vocab = V, .max = GEN};
    c.tokens = malloc(sizeof(int) * GEN);
    c.logits = malloc(sizeof(float) * GEN * V);
    float *ref = malloc(sizeof(float) * V);
    gpt2_weights *w = NULL;
    engine *e = start_engine(dir, tok, &w, &c, 0);
    check(e != NULL, "small engine starts");
    float worst = 0;
    for (int p = 0; e && p < N_PROMPTS; p++) {
        int ids[512];
        int n = (int)bpe_encode(tok, prompts[p], strlen(prompts[p]), 0, ids, 400);
        if (engine_greedy(e, &c, ids, n, GEN) != 0 || c.n != GEN) {
            check(0, "small: engine generated %d of %d tokens", c.n, GEN);
            continue;
        }
        int same = 1, first_diff = -1;
        float diff = 0;
        for (int g = 0; g < GEN; g++) { /* reference greedy, recomputed from scratch */
            ref_forward(&ck, ids, n + g, n + g - 1, ref);
            int want = argmax(ref, V);
            float d = max_abs_diff(ref, c.logits + (size_t)g * V, V);
            if (d > diff) diff = d;
            if (want != c.tokens[g] && same) {
                same = 0;
                first_diff = g;
            }
            ids[n + g] = want; /* the reference follows its own path */
        }
        if (diff > worst) worst = diff;
        check(same, "small prompt %d: greedy continuation differs at token %d", p, first_diff);
        check(diff <= TOL, "small prompt %d: max |logit diff| %.3g > %g", p, diff, TOL);
    }
    printf("small model (2x128): %d prompts x 64 greedy tokens, max |logit diff| = %.3g\n", N_PROMPTS, worst);
    stop_engine(e, w);
    free(c.tokens), free(c.logits), free(ref);
    ckpt_destroy(&ck);
}

static void test_124m(const char *dir, bpe_tokenizer *tok) {
    gpt2_checkpoint ck = {0};
    char err[512];
    if (ckpt_load(&ck, dir, err, sizeof err) != 0) {
        check(0, "load 124M: %s", err);
        return;
    }
    int V = ck.cfg.n_vocab, GEN = 16;
    capture c = {.n_vocab = V, .max = GEN};
    c.tokens = malloc(sizeof(int) * GEN);
    c.logits = malloc(sizeof(float) * GEN * V);
    float *ref = malloc(sizeof(float) * (GEN + 1) * V);
    gpt2_weights *w = NULL;
    engine *e = start_engine(dir, tok, &w, &c, 128);
    check(e != NULL, "124M engine starts");
    float worst = 0;
    for (int p = 0; e && p < N_PROMPTS; p++) {
        int ids[256];
        int n = (int)bpe_encode(tok, prompts[p], strlen(prompts[p]), 0, ids, 100);
        int gen = p == 0 ? GEN : 1; /* the 16-token path on the first prompt; last logits for all */
        if (engine_greedy(e, &c, ids, n, gen) != 0 || c.n != gen) {
            check(0, "124M: engine generated %d of %d tokens", c.n, gen);
            continue;
        }
        for (int g = 0; g < gen; g++) ids[n + g] = c.tokens[g];
        /* one reference pass over prompt + path: position n-1+g predicts token g */
        ref_forward(&ck, ids, n + gen - 1, n - 1, ref);
        float diff = 0;
        int path_ok = 1;
        for (int g = 0; g < gen; g++) {
            const float *r = ref + (size_t)g * V;
            float d = max_abs_diff(r, c.logits + (size_t)g * V, V);
            if (d > diff) diff = d;
            if (argmax(r, V) != c.tokens[g]) path_ok = 0;
        }
        if (diff > worst) worst = diff;
        check(path_ok, "124M prompt %d: engine's greedy path is not the reference's argmax path", p);
        check(diff <= TOL, "124M prompt %d: max |logit diff| %.3g > %g", p, diff, TOL);
    }
    printf("124M-shaped model: %d prompts (last-position logits) + a 16-token greedy path, "
           "max |logit diff| = %.3g\n", N_PROMPTS, worst);
    stop_engine(e, w);
    free(c.tokens), free(c.logits), free(ref);
    ckpt_destroy(&ck);
}

static int make_model(const char *dir, const char *root, int L, int D, int H, int T) {
    gpt2_config c = {.n_layer = L, .n_embd = D, .n_head = H, .n_ctx = T, .n_vocab = 50257, .ln_eps = 1e-5f};
    char tokdir[1024], err[512];
    snprintf(tokdir, sizeof tokdir, "%s/data/gpt2-tokenizer", root);
    if (ckpt_write_random(dir, &c, 7, tokdir, err, sizeof err) != 0) {
        printf("mkmodel: %s\n", err);
        return -1;
    }
    return 0;
}

int main(void) {
    const char *root = getenv("GPT2D_ROOT") ? getenv("GPT2D_ROOT") : ".";
    const char *tmp = getenv("GPT2D_TMP") ? getenv("GPT2D_TMP") : "/tmp";
    char small[1024], big[1024], err[512];
    snprintf(small, sizeof small, "%s/model-ref-small", tmp);
    snprintf(big, sizeof big, "%s/model-ref-124m", tmp);
    check(make_model(small, root, 2, 128, 4, 256) == 0, "small model written");
    bpe_tokenizer *tok = bpe_load(small, err, sizeof err);
    check(tok != NULL, "tokenizer loads: %s", tok ? "" : err);
    if (tok) test_small(small, tok);
    if (tok && !getenv("GPT2D_SKIP_124M")) {
        check(make_model(big, root, 12, 768, 12, 1024) == 0, "124M model written");
        test_124m(big, tok);
        char cmd[2100];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", big);
        if (system(cmd) != 0) printf("could not remove %s\n", big);
    }
    bpe_free(tok);
    return check_done("test_model");
}
