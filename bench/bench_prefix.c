/* bench_prefix — the paged KV cache and the prefix cache (issue 12), in-process engine.
 *
 * 1. Campaign: N email requests (default 256 = 4 per unit of capacity) that share a ~300-token
 *    preamble, each followed by its own line and the start of an email from EMAILS.jsonl, C in
 *    flight (default 64 = max_running, so no request waits for capacity), M new tokens each
 *    (default 64), run with the prefix cache off and on, same engine settings. Printed: prompt
 *    tokens actually computed, TTFT p50/p99 (all requests; and the first wave of C), campaign wall
 *    time, and whether every output (tokens, finish, and the hash of every logits row) is
 *    bit-identical on vs off. Targets (issue 12): computed -70%, TTFT <= 0.4x, total <= 0.75x.
 * 2. Memory: at the KV budget of today's 64 slots x n_ctx positions (same dtype), how many email
 *    requests (prompt <= 160 tokens, 192 new tokens) run at once with whole-context slots vs pages;
 *    each run goes until every admitted request is decoding, then cancels. Printed: peak running,
 *    the ratio (target >= 2.5x), and KV bytes resident / reserved per request.
 * 3. KV dtype accuracy (issue 14): along the fp32-KV greedy path of every EMAILS prompt (first 128
 *    tokens, G = 32 new), the logits with an fp16 and a bf16 KV cache against fp32: top-1 agreement,
 *    mean and max KL(fp32 || dtype) per position, max |delta logit|, and the KV bytes per position.
 * usage: bench_prefix MODEL_DIR EMAILS.jsonl [--requests N] [--inflight C] [--max-tokens M]
 *                     [--skip-memory] [--skip-accuracy] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <math.h>

#include "bench_util.h"
#include "engine.h"
#include "gpt2.h"

enum { MAX_REQ = 4096, MAX_PROMPT = 512 };

static const char *PREAMBLE =
    "You are writing on behalf of the customer success team at Acme Logistics. Follow these rules for every "
    "reply in this campaign. Be warm, specific and brief: no more than three short paragraphs. Thank the "
    "customer by name for their message and refer to the exact subject they raised. Never promise delivery "
    "dates, discounts or refunds that are not stated in the thread; if the customer asks for one, say that "
    "their account manager will confirm within two business days. Mention the spring service update only "
    "once: new tracking pages, text alerts for every delivery window, and a single support number that "
    "reaches a person in under five minutes. Do not use exclamation marks, jargon or internal team names. "
    "If the thread mentions a problem, apologise once, state what we are doing about it and what the customer "
    "can expect next. Close with the standard signature block: the writer's first name, Customer Success, "
    "Acme Logistics, the support number 0800 555 0199 and the address support@acme-logistics.example. "
    "Write in plain British English and keep the formatting of the original thread. Use the customer's "
    "preferred name if the thread shows one, and never their account number. When the customer writes on "
    "behalf of a company, address the reply to the person but refer to the company by its registered name. "
    "If the thread is longer than one message, answer the most recent question first and the older ones "
    "after it, in the order they were asked. The email to answer follows, after the customer's reference line.";

typedef struct {
    int ids[MAX_PROMPT], n;
} prompt_ids;

typedef struct {
    int n_tokens, done, cached, first_seen;
    engine_finish finish;
    uint64_t logits_hash, tokens_hash;
    double ttft_ms, queue_ms;
} outcome;

typedef struct {
    outcome *out;
    int first_tokens;
} run_state;

static void on_token(void *u, uint64_t id, int index, int token, const char *p, size_t n, float lp) {
    (void)p, (void)n, (void)lp;
    run_state *st = u;
    outcome *o = &st->out[id];
    o->tokens_hash = (o->tokens_hash ^ (uint64_t)(uint32_t)token) * 1099511628211ull;
    o->n_tokens = index + 1;
    if (!o->first_seen) o->first_seen = 1, st->first_tokens++;
}
static void on_done(void *u, uint64_t id, const engine_result *r) {
    outcome *o = &((run_state *)u)->out[id];
    o->done = 1;
    o->finish = r->finish;
    o->cached = r->cached_tokens;
    o->ttft_ms = r->ttft_ms;
    o->queue_ms = r->queue_ms;
}
static void on_logits(void *u, uint64_t id, int index, const float *lg, int V) {
    (void)index;
    outcome *o = &((run_state *)u)->out[id];
    uint64_t h = o->logits_hash;
    const uint32_t *w = (const uint32_t *)lg;
    for (int i = 0; i < V; i++) h = (h ^ w[i]) * 1099511628211ull;
    o->logits_hash = h;
}

static char **read_prompts(const char *path, int *n) {
    FILE *f = fopen(path, "r");
    char **out = calloc(256, sizeof(char *)), *line = NULL;
    size_t cap = 0;
    *n = 0;
    while (f && *n < 256 && getline(&line, &cap, f) > 1) {
        /* the "prompt" string, JSON-unescaped for the common escapes */
        char *p = strstr(line, "\"prompt\": \"");
        if (!p) continue;
        p += 11;
        char *o = malloc(strlen(p) + 1), *q = o;
        for (; *p && *p != '"'; p++) {
            if (*p == '\\' && p[1]) {
                p++;
                *q++ = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
            } else {
                *q++ = *p;
            }
        }
        *q = 0;
        out[(*n)++] = o;
    }
    free(line);
    if (f) fclose(f);
    return out;
}

static engine_request request_of(const prompt_ids *p, int max_tokens) {
    engine_request q = {0};
    q.prompt_ids = p->ids;
    q.n_prompt_ids = p->n;
    q.max_tokens = max_tokens;
    q.ignore_eos = 1;
    sampler_params_default(&q.sampling);
    return q;
}

typedef struct {
    double wall_s, ttft50, ttft99, wave50, wave99;
    uint64_t prefilled, prompt_tokens, hit_tokens;
} campaign_figures;

/* Runs the prompts with `inflight` live at a time; fills out[] and f. 0 or -1. */
static int run_campaign(const gpt2_weights *w, bpe_tokenizer *tok, const prompt_ids *ps, int n, int inflight,
                        int max_tokens, int cache, outcome *out, campaign_figures *f) {
    run_state st = {out, 0};
    engine_callbacks cb = {on_token, on_done, on_logits, &st};
    engine_config cfg = {.max_running = inflight, .prefix_cache_off = !cache};
    char err[512];
    engine *e = engine_new(w, tok, &cfg, &cb, err, sizeof err);
    if (!e) {
        fprintf(stderr, "bench_prefix: %s\n", err);
        return -1;
    }
    for (int i = 0; i < n; i++) memset(&out[i], 0, sizeof out[i]), out[i].logits_hash = out[i].tokens_hash = 1469598103934665603ull;
    int next = 0, live = 0, rc = 0;
    double t0 = bench_now();
    while (next < n || engine_has_work(e)) {
        while (next < n && live < inflight) {
            engine_request q = request_of(&ps[next], max_tokens);
            if (engine_submit(e, (uint64_t)next, &q, NULL) != 0) {
                rc = -1;
                break;
            }
            next++, live++;
        }
        if (rc != 0 || engine_step(e) < 0) {
            rc = -1;
            break;
        }
        live = 0;
        for (int i = 0; i < next; i++) live += !out[i].done;
    }
    f->wall_s = bench_now() - t0;
    engine_stats s;
    engine_get_stats(e, &s);
    f->prefilled = s.tokens_prefilled;
    f->prompt_tokens = s.kv.lookup_tokens;
    f->hit_tokens = s.kv.hit_tokens;
    double *t = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) t[i] = out[i].ttft_ms;
    f->ttft50 = bench_quantile(t, n, 0.5), f->ttft99 = bench_quantile(t, n, 0.99);
    int wave = n < inflight ? n : inflight;
    for (int i = 0; i < wave; i++) t[i] = out[i].ttft_ms;
    f->wave50 = bench_quantile(t, wave, 0.5), f->wave99 = bench_quantile(t, wave, 0.99);
    free(t);
    engine_free(e);
    return rc;
}

static int campaign(const gpt2_weights *w, bpe_tokenizer *tok, char **emails, int n_emails, int n, int inflight,
                    int max_tokens) {
    static prompt_ids ps[MAX_REQ];
    int pre[MAX_PROMPT];
    long n_pre = bpe_encode(tok, PREAMBLE, strlen(PREAMBLE), 0, pre, MAX_PROMPT);
    if (n_pre > 300) n_pre = 300;
    for (int i = 0; i < n; i++) {
        char line[64];
        snprintf(line, sizeof line, "\n\nCustomer reference AC-%05d:\n", 10007 * (i + 1) % 99991);
        prompt_ids *p = &ps[i];
        memcpy(p->ids, pre, sizeof(int) * n_pre);
        p->n = (int)n_pre;
        long k = bpe_encode(tok, line, strlen(line), 0, p->ids + p->n, MAX_PROMPT - p->n);
        p->n += (int)k;
        const char *em = emails[i % n_emails];
        int room = MAX_PROMPT - p->n;
        int tmp[MAX_PROMPT];
        k = bpe_encode(tok, em, strlen(em), 0, tmp, MAX_PROMPT);
        if (k > 48) k = 48; /* the email's start: ~60 tokens of each prompt are its own */
        if (k > room) k = room;
        memcpy(p->ids + p->n, tmp, sizeof(int) * k);
        p->n += (int)k;
    }
    long total = 0;
    for (int i = 0; i < n; i++) total += ps[i].n;
    printf("campaign: %d requests, %d in flight (max_running %d), preamble %ld tokens, prompts %.0f tokens on "
           "average, %d new tokens each\n", n, inflight, inflight, n_pre, (double)total / n, max_tokens);
    outcome *off = calloc(n, sizeof *off), *on = calloc(n, sizeof *on);
    campaign_figures fo, fn;
    if (run_campaign(w, tok, ps, n, inflight, max_tokens, 0, off, &fo) != 0 ||
        run_campaign(w, tok, ps, n, inflight, max_tokens, 1, on, &fn) != 0) {
        free(off), free(on);
        return -1;
    }
    int differ = 0;
    for (int i = 0; i < n; i++)
        differ += off[i].finish != on[i].finish || off[i].n_tokens != on[i].n_tokens ||
                  off[i].tokens_hash != on[i].tokens_hash || off[i].logits_hash != on[i].logits_hash;
    double comp = (double)fn.prefilled / (double)fo.prefilled;
    printf("  %-34s %12s %12s %9s\n", "", "cache off", "cache on", "on/off");
    printf("  %-34s %12llu %12llu %9.3f   (target <= 0.30: -%.0f%%)\n", "prompt tokens computed",
           (unsigned long long)fo.prefilled, (unsigned long long)fn.prefilled, comp, 100 * (1 - comp));
    printf("  %-34s %12llu %12llu\n", "prompt tokens from the cache", (unsigned long long)fo.hit_tokens,
           (unsigned long long)fn.hit_tokens);
    printf("  %-34s %12.1f %12.1f %9.3f   (target <= 0.40)\n", "TTFT p50 ms, all requests", fo.ttft50, fn.ttft50,
           fn.ttft50 / fo.ttft50);
    printf("  %-34s %12.1f %12.1f %9.3f   (target <= 0.40)\n", "TTFT p99 ms, all requests", fo.ttft99, fn.ttft99,
           fn.ttft99 / fo.ttft99);
    printf("  %-34s %12.1f %12.1f %9.3f\n", "TTFT p50 ms, first wave", fo.wave50, fn.wave50, fn.wave50 / fo.wave50);
    printf("  %-34s %12.1f %12.1f %9.3f\n", "TTFT p99 ms, first wave", fo.wave99, fn.wave99, fn.wave99 / fo.wave99);
    printf("  %-34s %12.2f %12.2f %9.3f   (target <= 0.75)\n", "campaign wall time s", fo.wall_s, fn.wall_s,
           fn.wall_s / fo.wall_s);
    printf("  outputs bit-identical cache on vs off (tokens, finish, every logits row): %s (%d of %d differ)\n",
           differ ? "NO" : "yes", differ, n);
    printf("  (every request is admitted on arrival: in flight = max_running, so none waits for capacity)\n");
    free(off), free(on);
    return differ ? -1 : 0;
}

/* Email requests (prompt <= 160, 192 new tokens) submitted at once until every admitted one is
 * decoding; the peak running and KV per request. */
static int memory_run(const gpt2_weights *w, bpe_tokenizer *tok, const prompt_ids *ps, int n, engine_config *cfg,
                      const char *label, int *peak_out) {
    outcome *out = calloc(n, sizeof *out);
    run_state st = {out, 0};
    engine_callbacks cb = {on_token, on_done, NULL, &st};
    char err[512];
    engine *e = engine_new(w, tok, cfg, &cb, err, sizeof err);
    if (!e) {
        fprintf(stderr, "bench_prefix: %s\n", err);
        free(out);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        engine_request q = request_of(&ps[i], 192);
        engine_submit(e, (uint64_t)i, &q, NULL);
    }
    engine_stats s;
    int peak = 0;
    double t0 = bench_now();
    for (int steps = 0; steps < 100000; steps++) {
        if (engine_step(e) < 0) break;
        engine_get_stats(e, &s);
        if (s.n_running > peak) peak = s.n_running;
        if (st.first_tokens >= s.n_running) break; /* every admitted request is decoding */
    }
    engine_get_stats(e, &s);
    double per_req_pages = (double)s.kv.pages_used / (s.n_running ? s.n_running : 1);
    double reserved = (double)(s.kv.pages_used + s.kv.pages_reserved) / (s.n_running ? s.n_running : 1);
    printf("  %-28s %4d running at once (%d waiting); %.1f s until all decode\n", label, peak, s.n_waiting,
           bench_now() - t0);
    if (cfg->max_running > 0) /* pages: what a request holds now and what it reserved (prompt + max_tokens) */
        printf("  %-28s KV resident %.2f MB/request (%.1f pages of %d positions), reserved %.2f MB/request\n", "",
               per_req_pages * s.kv.page_bytes / 1048576.0, per_req_pages, KV_PAGE,
               reserved * s.kv.page_bytes / 1048576.0);
    for (int i = 0; i < n; i++) engine_cancel(e, (uint64_t)i);
    engine_step(e);
    engine_free(e);
    free(out);
    *peak_out = peak;
    return 0;
}

static int memory(const gpt2_weights *w, bpe_tokenizer *tok, char **emails, int n_emails) {
    const gpt2_config *c = gpt2_weights_config(w);
    int n = 320;
    static prompt_ids ps[MAX_REQ];
    for (int i = 0; i < n; i++) {
        char tag[48];
        snprintf(tag, sizeof tag, "[%d] ", i);
        long k = bpe_encode(tok, tag, strlen(tag), 0, ps[i].ids, 160);
        const char *em = emails[i % n_emails];
        long m = bpe_encode(tok, em, strlen(em), 0, ps[i].ids + k, MAX_PROMPT - (int)k);
        ps[i].n = (int)(k + m > 160 ? 160 : k + m);
    }
    size_t slot_bytes = (size_t)c->n_layer * 2 * c->n_ctx * c->n_embd * sizeof(float);
    size_t budget_mb = (64 * slot_bytes) >> 20;
    printf("memory: KV budget %zu MB (64 slots x %d positions, fp32), %d email requests (prompt <= 160 tokens, "
           "192 new) submitted at once\n", budget_mb, c->n_ctx, n);
    engine_config slots = {.n_slots = 64, .prefix_cache_off = 1};
    engine_config pages = {.max_running = n, .kv_budget_mb = budget_mb, .prefix_cache_off = 1};
    int a = 0, b = 0;
    if (memory_run(w, tok, ps, n, &slots, "whole-context slots (64):", &a) != 0 ||
        memory_run(w, tok, ps, n, &pages, "pages, same budget:", &b) != 0)
        return -1;
    printf("  concurrent requests, pages / slots: %.2fx   (target >= 2.5x)\n", (double)b / (a ? a : 1));
    printf("  (a slot holds a whole context: %.1f MB per request)\n", slot_bytes / 1048576.0);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * KV dtype accuracy. */

enum { ACC_PROMPT = 128, ACC_GEN = 32 };

/* Logits (gen rows) of positions n_prompt-1 .. n-2 of ids (n), in one forward over a KV of dtype t. */
static int path_logits(gpt2_state *m, const gpt2_config *c, kv_dtype t, const int *ids, int n, int n_prompt,
                       float *out) {
    kv_config kc = {.n_layer = c->n_layer, .n_ctx = n, .n_embd = c->n_embd, .n_head = c->n_head,
                    .n_pages = kv_pages_for(n), .max_seqs = 1, .dtype = t};
    char err[256];
    kv_arena *kv = kv_new(&kc, err, sizeof err);
    int cached, pos[ACC_PROMPT + ACC_GEN], seq[ACC_PROMPT + ACC_GEN], rows[ACC_PROMPT + ACC_GEN], rc = -1;
    if (kv && kv_seq_open(kv, ids, n, n, &cached) == 0 && kv_seq_prepare(kv, 0, n) == 0) {
        for (int i = 0; i < n; i++) pos[i] = i, seq[i] = 0, rows[i] = i >= n_prompt - 1 ? i - (n_prompt - 1) : -1;
        gpt2_batch b = {n, ids, pos, seq, rows};
        rc = gpt2_forward(m, kv, &b, out);
    }
    kv_free(kv);
    return rc;
}

typedef struct {
    long positions, agree;
    double kl_sum, kl_max, dlogit_max;
} acc_figures;

static void compare_rows(const float *ref, const float *x, int V, acc_figures *f) {
    int a = 0, b = 0;
    double mr = ref[0], mx = x[0];
    for (int i = 1; i < V; i++) {
        if (ref[i] > ref[a]) a = i;
        if (x[i] > x[b]) b = i;
    }
    mr = ref[a], mx = x[b];
    double zr = 0, zx = 0, kl = 0;
    for (int i = 0; i < V; i++) zr += exp(ref[i] - mr), zx += exp(x[i] - mx);
    for (int i = 0; i < V; i++) {
        double lp = ref[i] - mr - log(zr), lq = x[i] - mx - log(zx);
        kl += exp(lp) * (lp - lq);
        double d = fabs((double)ref[i] - x[i]);
        if (d > f->dlogit_max) f->dlogit_max = d;
    }
    f->positions++;
    f->agree += a == b;
    f->kl_sum += kl;
    if (kl > f->kl_max) f->kl_max = kl;
}

static void acc_on_token(void *u, uint64_t id, int index, int token, const char *p, size_t n, float lp) {
    (void)p, (void)n, (void)lp;
    if (index < ACC_GEN) ((int *)u)[id * ACC_GEN + index] = token;
}
static void acc_on_done(void *u, uint64_t id, const engine_result *r) { (void)u, (void)id, (void)r; }

static int accuracy(const gpt2_weights *w, bpe_tokenizer *tok, char **emails, int n_emails) {
    const gpt2_config *c = gpt2_weights_config(w);
    int n = n_emails > 64 ? 64 : n_emails, V = c->n_vocab;
    static prompt_ids ps[64];
    int *path = calloc((size_t)n * ACC_GEN, sizeof(int));
    for (int i = 0; i < n; i++) {
        long k = bpe_encode(tok, emails[i], strlen(emails[i]), 0, ps[i].ids, MAX_PROMPT);
        ps[i].n = (int)(k > ACC_PROMPT ? ACC_PROMPT : k);
    }
    /* the fp32 greedy paths, all at once (batch-invariant: the same as one at a time) */
    engine_callbacks cb = {acc_on_token, acc_on_done, NULL, path};
    engine_config cfg = {.max_running = n};
    char err[512];
    engine *e = engine_new(w, tok, &cfg, &cb, err, sizeof err);
    if (!e) {
        fprintf(stderr, "bench_prefix: %s\n", err);
        free(path);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        engine_request q = request_of(&ps[i], ACC_GEN);
        engine_submit(e, (uint64_t)i, &q, NULL);
    }
    while (engine_has_work(e))
        if (engine_step(e) < 0) break;
    engine_free(e);
    gpt2_state *m = gpt2_state_new(w, ACC_PROMPT + ACC_GEN, c->n_ctx, 0, err, sizeof err);
    float *ref = malloc(sizeof(float) * ACC_GEN * V), *x = malloc(sizeof(float) * ACC_GEN * V);
    acc_figures f[3] = {{0}};
    int ids[ACC_PROMPT + ACC_GEN], rc = m && ref && x ? 0 : -1;
    for (int i = 0; rc == 0 && i < n; i++) {
        int np = ps[i].n, len = np + ACC_GEN - 1;
        memcpy(ids, ps[i].ids, sizeof(int) * np);
        memcpy(ids + np, path + (size_t)i * ACC_GEN, sizeof(int) * (ACC_GEN - 1));
        rc = path_logits(m, c, KV_F32, ids, len, np, ref);
        for (int t = KV_F16; rc == 0 && t <= KV_BF16; t++) {
            rc = path_logits(m, c, (kv_dtype)t, ids, len, np, x);
            for (int r = 0; rc == 0 && r < ACC_GEN; r++) compare_rows(ref + (size_t)r * V, x + (size_t)r * V, V, &f[t]);
        }
    }
    if (rc == 0) {
        printf("KV dtype accuracy vs fp32 KV, along the fp32 greedy paths of %d email prompts (<= %d prompt tokens, "
               "%d new):\n", n, ACC_PROMPT, ACC_GEN);
        printf("  %-6s %12s %10s %12s %12s %14s %16s\n", "dtype", "positions", "top-1", "mean KL", "max KL",
               "max |dlogit|", "KV bytes/pos");
        for (int t = KV_F16; t <= KV_BF16; t++)
            printf("  %-6s %12ld %9.2f%% %12.3g %12.3g %14.4g %16zu\n", kv_dtype_name((kv_dtype)t), f[t].positions,
                   100.0 * f[t].agree / f[t].positions, f[t].kl_sum / f[t].positions, f[t].kl_max, f[t].dlogit_max,
                   (size_t)c->n_layer * 2 * c->n_embd * kv_dtype_size((kv_dtype)t));
        printf("  (fp32: %zu bytes per position; fp16 / bf16 halve what attention reads)\n",
               (size_t)c->n_layer * 2 * c->n_embd * 4);
    }
    gpt2_state_free(m);
    free(ref), free(x), free(path);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_prefix MODEL_DIR EMAILS.jsonl [--requests N] [--inflight C] [--max-tokens M] "
                        "[--skip-memory] [--skip-accuracy]\n");
        return 2;
    }
    int n = 256, inflight = 64, max_tokens = 64, skip_memory = 0, skip_accuracy = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--requests") && i + 1 < argc) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--inflight") && i + 1 < argc) inflight = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-tokens") && i + 1 < argc) max_tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--skip-memory")) skip_memory = 1;
        else if (!strcmp(argv[i], "--skip-accuracy")) skip_accuracy = 1;
        else {
            fprintf(stderr, "bench_prefix: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (n < 1 || n > MAX_REQ || inflight < 1 || max_tokens < 1) {
        fprintf(stderr, "bench_prefix: --requests 1..%d, --inflight >= 1, --max-tokens >= 1\n", MAX_REQ);
        return 2;
    }
    char err[512];
    gpt2_weights *w = gpt2_weights_load(argv[1], NULL, err, sizeof err);
    bpe_tokenizer *tok = w ? bpe_load(argv[1], err, sizeof err) : NULL;
    int n_emails = 0;
    char **emails = read_prompts(argv[2], &n_emails);
    if (!tok || n_emails == 0) {
        fprintf(stderr, "bench_prefix: %s\n", !tok ? err : "no prompts read");
        return 1;
    }
    int rc = campaign(w, tok, emails, n_emails, n, inflight, max_tokens);
    if (rc == 0 && !skip_memory) rc = memory(w, tok, emails, n_emails);
    if (rc == 0 && !skip_accuracy) rc = accuracy(w, tok, emails, n_emails);
    for (int i = 0; i < n_emails; i++) free(emails[i]);
    free(emails);
    bpe_free(tok);
    gpt2_weights_free(w);
    return rc ? 1 : 0;
}
