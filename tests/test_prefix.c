/* test_prefix.c — the engine over the paged KV cache with the prefix cache, against the same engine
 * with the cache off (the reference: every prompt token computed) on a small random model:
 *  - invariance with and without hits at every page boundary: prompts sharing a cached prefix of
 *    page*k-1, page*k and page*k+1 tokens (k = 1..3), and prompts that ARE a cached prefix, greedy
 *    and sampled: tokens, finish and the hash of every logits row identical to the reference, and
 *    cached_tokens exactly the whole pages of the shared prefix (never the last prompt token);
 *  - the same with a degenerate page hash (every page collides): still exact, same hits;
 *  - a restart (a new engine, as a new worker process has): cold, no hit, the same outputs;
 *  - requests sharing a prefix submitted together: one computes it, the others wait and share it;
 *  - random submit / cancel / finish under a tight page budget with kv_check after every step:
 *    no leak or double free, the free + cached count returns to the total, outputs exact;
 *  - fp16 / bf16 KV: invariant within the dtype (alone = batched with hits = replayed), and different
 *    numerics from fp32 (so the dtype is really applied) named in the fingerprint;
 *  - admission by memory: at one KV budget, short requests run several times more at once than
 *    whole-context slots allowed; the rest wait and all finish (nothing fails mid-stream). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "checkpoint.h"
#include "engine.h"

enum { MAXREQ = 64, CTX = 256 };

typedef struct {
    int n_tokens, tokens[CTX];
    uint64_t logits_hash;
    int done, cached;
    engine_finish finish;
} outcome;

typedef struct {
    outcome out[MAXREQ];
    int peak_running;
} run_state;

static void on_token(void *u, uint64_t id, int index, int token, const char *p, size_t n, float lp) {
    (void)p, (void)n, (void)lp;
    outcome *o = &((run_state *)u)->out[id];
    if (index < CTX) o->tokens[index] = token;
    o->n_tokens = index + 1;
}
static void on_done(void *u, uint64_t id, const engine_result *r) {
    outcome *o = &((run_state *)u)->out[id];
    o->done++;
    o->cached = r->cached_tokens;
    o->finish = r->finish;
}
static void on_logits(void *u, uint64_t id, int index, const float *lg, int V) {
    (void)index;
    outcome *o = &((run_state *)u)->out[id];
    const unsigned char *b = (const unsigned char *)lg;
    for (size_t i = 0; i < (size_t)V * sizeof(float); i++) o->logits_hash = (o->logits_hash ^ b[i]) * 1099511628211ull;
}

static gpt2_weights *g_w;
static bpe_tokenizer *g_tok;

static uint64_t degenerate_hash(uint64_t prev, const int *ids, int n) {
    (void)prev, (void)ids, (void)n;
    return 7;
}

static engine *new_engine_dtype(run_state *st, int cache, kv_hash_fn hash, int slots, int max_running, int dtype) {
    engine_callbacks cb = {on_token, on_done, on_logits, st};
    engine_config cfg = {.n_slots = slots, .max_running = max_running, .n_ctx = CTX, .max_batch_tokens = 48,
                         .prefix_cache_off = !cache, .prefix_hash = hash, .kv_dtype = dtype};
    char err[512];
    engine *e = engine_new(g_w, g_tok, &cfg, &cb, err, sizeof err);
    if (!e) printf("engine_new: %s\n", err);
    return e;
}

static engine *new_engine(run_state *st, int cache, kv_hash_fn hash, int slots, int max_running) {
    return new_engine_dtype(st, cache, hash, slots, max_running, KV_F32);
}

typedef struct {
    int ids[CTX], n, max_tokens, sampled;
} prompt;

static engine_request to_request(const prompt *p) {
    engine_request q = {0};
    q.prompt_ids = p->ids;
    q.n_prompt_ids = p->n;
    q.max_tokens = p->max_tokens;
    q.ignore_eos = 1;
    sampler_params_default(&q.sampling);
    if (p->sampled) q.sampling.temperature = 0.8f, q.sampling.top_k = 40, q.sampling.seed = 77;
    return q;
}

/* Runs prompts [0, n) with ids first_id.. on e, `together` at a time. 0, or -1 on a stall. */
static int run(engine *e, run_state *st, const prompt *ps, int n, int first_id, int together, int check_kv) {
    int next = 0, live = 0, ok = 1;
    for (int steps = 0; steps < 20000; steps++) {
        while (next < n && live < together) {
            engine_request q = to_request(&ps[next]);
            memset(&st->out[first_id + next], 0, sizeof st->out[0]);
            st->out[first_id + next].logits_hash = 1469598103934665603ull;
            if (engine_submit(e, (uint64_t)(first_id + next), &q, NULL) != 0) return -1;
            next++, live++;
        }
        if (engine_step(e) < 0) return -1;
        engine_stats s;
        engine_get_stats(e, &s);
        if (s.n_running > st->peak_running) st->peak_running = s.n_running;
        if (check_kv) {
            char err[256];
            if (engine_kv_check(e, err, sizeof err) != 0) {
                if (ok) printf("kv_check: %s\n", err);
                ok = 0;
            }
        }
        live = 0;
        for (int i = 0; i < next; i++) live += !st->out[first_id + i].done;
        if (next == n && live == 0) return ok ? 0 : -1;
    }
    return -1;
}

static int same(const outcome *a, const outcome *b) {
    return a->done == 1 && b->done == 1 && a->finish == b->finish && a->n_tokens == b->n_tokens &&
           memcmp(a->tokens, b->tokens, sizeof(int) * a->n_tokens) == 0 && a->logits_hash == b->logits_hash;
}

/* Prompts around every page boundary of a shared base: prefix lengths 16k-1, 16k, 16k+1 followed by
 * their own suffix, and prompts that are exactly the base's first 16k tokens. Expected hits in want. */
static int boundary_prompts(prompt *ps, int *want) {
    static int base[128];
    for (int i = 0; i < 128; i++) base[i] = (i * 7919 + 13) % 50000;
    int n = 0;
    /* the warmer: the whole base (publishes its first 7 pages) */
    memcpy(ps[n].ids, base, sizeof(int) * 120);
    ps[n].n = 120, ps[n].max_tokens = 4, ps[n].sampled = 0, want[n++] = 0;
    for (int k = 1; k <= 3; k++)
        for (int d = -1; d <= 1; d++) {
            int L = KV_PAGE * k + d;
            prompt *p = &ps[n];
            memcpy(p->ids, base, sizeof(int) * L);
            for (int j = 0; j < 9; j++) p->ids[L + j] = 40000 + n * 10 + j;
            p->n = L + 9, p->max_tokens = 12, p->sampled = n % 2;
            want[n++] = L / KV_PAGE * KV_PAGE;
        }
    for (int k = 1; k <= 3; k++) { /* the prompt is a cached prefix: its last token is computed */
        prompt *p = &ps[n];
        memcpy(p->ids, base, sizeof(int) * KV_PAGE * k);
        p->n = KV_PAGE * k, p->max_tokens = 12, p->sampled = n % 2;
        want[n++] = KV_PAGE * (k - 1);
    }
    return n;
}

static void test_boundaries(void) {
    static prompt ps[32];
    int want[32], n = boundary_prompts(ps, want);
    static run_state ref, on, col, cold;
    engine *e = new_engine(&ref, 0, NULL, 4, 0);
    check(e && run(e, &ref, ps, n, 0, 1, 1) == 0, "reference run (cache off, one at a time)");
    engine_stats s;
    engine_get_stats(e, &s);
    check(s.kv.hit_tokens == 0, "cache off: no hits (%llu)", (unsigned long long)s.kv.hit_tokens);
    engine_free(e);
    struct {
        run_state *st;
        kv_hash_fn hash;
        const char *label;
        int together;
    } modes[2] = {{&on, NULL, "cache on", 1}, {&col, degenerate_hash, "cache on, every page hash colliding", 1}};
    for (int m = 0; m < 2; m++) {
        run_state *st = modes[m].st;
        e = new_engine(st, 1, modes[m].hash, 4, 0);
        /* warm with the base alone, then the rest 4 at a time */
        int ok = e && run(e, st, ps, 1, 0, 1, 1) == 0 && run(e, st, ps + 1, n - 1, 1, 4, 1) == 0;
        check(ok, "%s: run", modes[m].label);
        int bad = 0, hits_ok = 1;
        for (int i = 0; i < n; i++) {
            if (!same(&ref.out[i], &st->out[i])) {
                bad++;
                printf("%s: prompt %d (%d tokens) differs from the reference\n", modes[m].label, i, ps[i].n);
            }
            if (st->out[i].cached != want[i]) {
                hits_ok = 0;
                printf("%s: prompt %d: %d cached tokens, want %d\n", modes[m].label, i, st->out[i].cached, want[i]);
            }
        }
        check(bad == 0, "%s: %d prompts around page boundaries (prefix 16k-1, 16k, 16k+1, and = 16k) identical "
              "to the cache-off reference (%d differ)", modes[m].label, n, bad);
        check(hits_ok, "%s: cached_tokens = the shared prefix's whole pages, never the last prompt token", modes[m].label);
        engine_get_stats(e, &s);
        check(s.kv.hit_tokens > 0 && s.tokens_prefilled + s.kv.hit_tokens == s.kv.lookup_tokens,
              "%s: prefilled %llu + cached %llu = prompt tokens %llu", modes[m].label,
              (unsigned long long)s.tokens_prefilled, (unsigned long long)s.kv.hit_tokens,
              (unsigned long long)s.kv.lookup_tokens);
        engine_free(e);
    }
    /* a restart: a new engine (a new worker process) has a cold cache and the same outputs */
    e = new_engine(&cold, 1, NULL, 4, 0);
    int ok = e && run(e, &cold, ps + 1, n - 1, 1, 1, 1) == 0, bad = 0;
    for (int i = 1; i < n; i++) bad += !same(&ref.out[i], &cold.out[i]);
    check(ok && cold.out[1].cached == 0 && bad == 0,
          "after a restart: the first request is cold (%d cached), all %d identical (%d differ)", cold.out[1].cached,
          n - 1, bad);
    engine_free(e);
}

/* Random prompts from 3 families sharing 0..70 tokens, random cancels, a tight budget. */
static void test_random(void) {
    static prompt ps[MAXREQ];
    unsigned rng = 99;
#define RND(n) ((int)((rng = rng * 1103515245u + 12345u) >> 8) % (n))
    int n = 48;
    for (int i = 0; i < n; i++) {
        int fam = RND(3), shared = RND(70), len = 1 + RND(100);
        for (int j = 0; j < len; j++) ps[i].ids[j] = j < shared ? (fam * 1000 + j * 31) % 50000 : RND(50000);
        ps[i].n = len, ps[i].max_tokens = 1 + RND(40), ps[i].sampled = RND(2);
    }
    static run_state ref, on;
    engine *e = new_engine(&ref, 0, NULL, 2, 8);
    check(e && run(e, &ref, ps, n, 0, 8, 0) == 0, "random: reference run");
    engine_free(e);
    /* 2 contexts of pages (32) for up to 8 running: requests wait for pages, cached pages are evicted */
    e = new_engine(&on, 1, NULL, 2, 8);
    int ok = e != NULL, next = 0, cancels = 0, steps = 0;
    char err[256];
    while (ok && steps++ < 20000) {
        while (next < n && RND(3) == 0) {
            engine_request q = to_request(&ps[next]);
            memset(&on.out[next], 0, sizeof on.out[0]);
            on.out[next].logits_hash = 1469598103934665603ull;
            ok &= engine_submit(e, (uint64_t)next, &q, NULL) == 0;
            next++;
        }
        if (next > 0 && RND(8) == 0) {
            int victim = RND(next);
            if (!on.out[victim].done && engine_cancel(e, (uint64_t)victim) == 0) cancels++;
        }
        ok &= engine_step(e) >= 0;
        engine_stats now;
        engine_get_stats(e, &now);
        if (now.n_running > on.peak_running) on.peak_running = now.n_running;
        if (engine_kv_check(e, err, sizeof err) != 0) {
            printf("kv_check at step %d: %s\n", steps, err);
            ok = 0;
        }
        if (next == n && !engine_has_work(e)) break;
    }
#undef RND
    int bad = 0, finished = 0, hits = 0;
    for (int i = 0; i < n; i++) {
        if (on.out[i].finish == ENGINE_FINISH_CANCELLED) continue;
        finished++;
        hits += on.out[i].cached > 0;
        bad += !same(&ref.out[i], &on.out[i]);
    }
    engine_stats s;
    engine_get_stats(e, &s);
    printf("random: %d requests, %d cancelled, %d finished (%d with hits), %llu evictions, peak %d running; end: "
           "%d free + %d cached of %d pages\n", n, cancels, finished, hits, (unsigned long long)s.kv.evictions,
           on.peak_running, s.kv.pages_free, s.kv.pages_cached, s.kv.pages_total);
    check(ok, "random submit / cancel / finish: kv_check holds after every step");
    check(cancels >= 5 && hits >= 5 && s.kv.evictions > 0, "the run cancelled (%d), hit (%d) and evicted (%llu)", cancels,
          hits, (unsigned long long)s.kv.evictions);
    check(bad == 0, "every finished request identical to the cache-off reference (%d differ)", bad);
    check(s.kv.pages_used == 0 && s.kv.pages_reserved == 0 && s.kv.pages_free + s.kv.pages_cached == s.kv.pages_total,
          "idle: free + cached = total (%d + %d of %d), nothing reserved", s.kv.pages_free, s.kv.pages_cached,
          s.kv.pages_total);
    engine_free(e);
}

/* Requests sharing a 50-token prefix submitted together on a cold engine: the first computes the
 * prefix, the others wait for its 3 pages and share them (no request computes them twice). */
static void test_inflight(void) {
    static prompt ps[4];
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 60; j++) ps[i].ids[j] = j < 50 ? 300 + j * 17 : 20000 + i * 100 + j;
        ps[i].n = 60, ps[i].max_tokens = 6, ps[i].sampled = i % 2;
    }
    static run_state ref, on;
    engine *e = new_engine(&ref, 0, NULL, 4, 0);
    int ok = e && run(e, &ref, ps, 4, 0, 1, 0) == 0;
    engine_free(e);
    e = new_engine(&on, 1, NULL, 4, 0);
    ok &= e && run(e, &on, ps, 4, 0, 4, 1) == 0;
    int bad = 0;
    for (int i = 0; i < 4; i++) bad += !same(&ref.out[i], &on.out[i]);
    check(ok && on.out[0].cached == 0 && on.out[1].cached == 48 && on.out[2].cached == 48 && on.out[3].cached == 48,
          "submitted together: the first computes the shared 48, the others reuse them (%d %d %d %d)",
          on.out[0].cached, on.out[1].cached, on.out[2].cached, on.out[3].cached);
    check(bad == 0, "and all 4 are identical to the cache-off reference (%d differ)", bad);
    engine_free(e);
}

/* 2 whole contexts of KV (what 2 slots had): requests reaching 32 positions (2 pages) run 16 at once. */
static void test_admission(void) {
    static prompt ps[40];
    for (int i = 0; i < 40; i++) {
        for (int j = 0; j < 20; j++) ps[i].ids[j] = (i * 101 + j * 7) % 50000 + 1;
        ps[i].n = 20, ps[i].max_tokens = 13, ps[i].sampled = 0;
    }
    static run_state st;
    engine *e = new_engine(&st, 0, NULL, 2, 64);
    int ok = e && run(e, &st, ps, 40, 0, 40, 1) == 0, all = 1;
    for (int i = 0; i < 40; i++) all &= st.out[i].done == 1 && st.out[i].finish == ENGINE_FINISH_LENGTH && st.out[i].n_tokens == 13;
    check(ok && all, "40 requests submitted at once over 2 contexts of pages: all finish with 13 tokens");
    check(st.peak_running == 16, "admission by pages: %d ran at once (2 whole-context slots ran 2; want 16)",
          st.peak_running);
    engine_free(e);
}

/* fp16 and bf16 KV: within the dtype, alone (cache off) = 4 at a time with prefix hits = replayed
 * from a crash (resume_ids); and the dtype really changes the numerics (logits differ from fp32). */
static void test_dtypes(void) {
    static prompt ps[32];
    int want[32], n = boundary_prompts(ps, want);
    static run_state f32, ref, on, rep;
    engine *e = new_engine(&f32, 0, NULL, 4, 0);
    int ok = e && run(e, &f32, ps, n, 0, 1, 0) == 0;
    engine_free(e);
    for (int t = KV_F16; t <= KV_BF16; t++) {
        const char *name = kv_dtype_name((kv_dtype)t);
        e = new_engine_dtype(&ref, 0, NULL, 4, 0, t);
        ok = e && run(e, &ref, ps, n, 0, 1, 0) == 0;
        char fp[128] = "";
        if (e) engine_fingerprint(e, fp, sizeof fp);
        engine_free(e);
        e = new_engine_dtype(&on, 1, NULL, 4, 0, t);
        ok &= e && run(e, &on, ps, 1, 0, 1, 1) == 0 && run(e, &on, ps + 1, n - 1, 1, 4, 1) == 0;
        engine_free(e);
        int bad = 0, hits = 0, vs32 = 0;
        for (int i = 0; i < n; i++) {
            bad += !same(&ref.out[i], &on.out[i]);
            hits += on.out[i].cached > 0;
            vs32 += ref.out[i].logits_hash != f32.out[i].logits_hash;
        }
        check(ok && bad == 0 && hits >= n - 4, "%s: alone = 4 at a time with prefix hits (%d differ, %d hits)", name,
              bad, hits);
        check(vs32 > 0 && strstr(fp, "+kv") && strstr(fp, name),
              "%s: numerics differ from fp32 (%d of %d prompts), fingerprint %s", name, vs32, n, fp);
        /* replay: resubmitted with the first k tokens as resume_ids, it continues exactly */
        int cases = 0, rbad = 0;
        e = new_engine_dtype(&rep, 1, NULL, 4, 0, t);
        for (int i = 1; e && i < n; i += 3) {
            int k = ref.out[i].n_tokens / 2;
            engine_request q = to_request(&ps[i]);
            q.resume_ids = ref.out[i].tokens;
            q.n_resume_ids = k;
            memset(&rep.out[i], 0, sizeof rep.out[i]);
            rep.out[i].logits_hash = 1469598103934665603ull;
            if (engine_submit(e, (uint64_t)i, &q, NULL) != 0) {
                rbad++;
                continue;
            }
            for (int s2 = 0; s2 < 1000 && !rep.out[i].done; s2++) engine_step(e);
            outcome *a = &ref.out[i], *b = &rep.out[i];
            rbad += !(b->done == 1 && b->finish == a->finish && b->n_tokens == a->n_tokens &&
                      memcmp(b->tokens + k, a->tokens + k, sizeof(int) * (a->n_tokens - k)) == 0);
            cases++;
        }
        engine_free(e);
        check(cases >= 4 && rbad == 0, "%s: %d replays continue exactly (%d differ)", name, cases, rbad);
    }
}

int main(void) {
    const char *tmp = getenv("GPT2D_TMP") ? getenv("GPT2D_TMP") : "/tmp";
    const char *root = getenv("GPT2D_ROOT") ? getenv("GPT2D_ROOT") : ".";
    char model_dir[1024], tokdir[1024], err[512];
    snprintf(model_dir, sizeof model_dir, "%s/model-prefix-small", tmp);
    snprintf(tokdir, sizeof tokdir, "%s/data/gpt2-tokenizer", root);
    gpt2_config c = {.n_layer = 2, .n_embd = 64, .n_head = 4, .n_ctx = CTX, .n_vocab = 50257, .ln_eps = 1e-5f};
    check(ckpt_write_random(model_dir, &c, 5, tokdir, err, sizeof err) == 0, "small model written");
    g_w = gpt2_weights_load(model_dir, NULL, err, sizeof err);
    g_tok = g_w ? bpe_load(model_dir, err, sizeof err) : NULL;
    check(g_tok != NULL, "weights and tokenizer load: %s", g_tok ? "ok" : err);
    if (!g_tok) return check_done("test_prefix");
    test_boundaries();
    test_random();
    test_inflight();
    test_admission();
    test_dtypes();
    bpe_free(g_tok);
    gpt2_weights_free(g_w);
    return check_done("test_prefix");
}
