/* test_preempt.c — preemption at layer boundaries (engine.h, "Preemption"). No timings: a fake
 * should_yield suspends the step at chosen layers, and the test acts while it is suspended, as the
 * worker does when a message is waiting. On a 4-layer model, for fp32, int8 and bf16 weights and an
 * fp16 KV cache:
 *   order      an interactive request submitted while a bulk step is suspended gets its first token
 *              from an express step before that step completes (no bulk token in between); it
 *              decodes in a second express step when the step yields again (halfway through its
 *              logits, which it computes in pieces); a yield with no interactive work resumes the
 *              step at once; between steps, beside running bulk work, an interactive prefill goes
 *              to express passes alternating with the bulk steps (and with none running, the step
 *              prefills it first, as without preemption);
 *   cancel     a request inside the suspended step ends when the step completes (no token from it),
 *              an express request cancelled mid-prefill ends within the next call, a waiting one at once;
 *   prefix     an express request whose prompt a suspended bulk prefill is computing shares only
 *              the pages already published (cached_tokens 48) and computes the rest itself; a later
 *              request shares all of them (96);
 *   outputs    every request's tokens and raw logits are bit-identical to the same request alone, and
 *              to the same script run without yields;
 *   accounting one on_done per request, kv_check after every call, every KV page returned, and a
 *              suspended engine freed (ASan: nothing leaks).
 * Then gpt2d end to end (preemption on, the worker's zmq_poll hook): interactive requests sent one
 * by one beside a bulk batch generate what they generate alone, with one final frame each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine.h"
#include "tutil.h"

#define MAX_ID 32
#define MAX_TOK 40

static bpe_tokenizer *g_tok;
static int ids[512];

/* What the callbacks saw, per request id. */
typedef struct {
    int tokens[MAX_ID][MAX_TOK], n_tokens[MAX_ID];
    uint64_t logits[MAX_ID][MAX_TOK]; /* FNV-1a of each token's raw logits */
    int n_logits[MAX_ID];
    int done[MAX_ID], cached[MAX_ID];
    engine_finish finish[MAX_ID];
    int bulk_tokens;                  /* tokens of bulk requests (ids 1..9), in order of emission */
} rec;

static uint64_t fnv(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void on_tok(void *u, uint64_t id, int index, int token, const char *p, size_t n, float lp) {
    (void)index, (void)p, (void)n, (void)lp;
    rec *r = u;
    if (id >= MAX_ID) return;
    if (r->n_tokens[id] < MAX_TOK) r->tokens[id][r->n_tokens[id]++] = token;
    if (id >= 1 && id <= 9) r->bulk_tokens++;
}

static void on_logits(void *u, uint64_t id, int index, const float *logits, int n_vocab) {
    rec *r = u;
    if (id >= MAX_ID || index >= MAX_TOK) return;
    r->logits[id][index] = fnv(logits, sizeof(float) * (size_t)n_vocab);
    r->n_logits[id] = index + 1;
}

static void on_done(void *u, uint64_t id, const engine_result *res) {
    rec *r = u;
    if (id >= MAX_ID) return;
    r->done[id]++;
    r->finish[id] = res->finish;
    r->cached[id] = res->cached_tokens;
}

/* The fake hook: yields (in mode 1; mode 0 only records it) when its countdown reaches 0. */
typedef struct {
    int mode, countdown, fired, calls;
} fake_yield;

static int fy_hook(void *u) {
    fake_yield *f = u;
    f->calls++;
    if (f->countdown > 0 && --f->countdown == 0) {
        f->fired++;
        return f->mode;
    }
    return 0;
}

typedef struct {
    const char *name, *weights;
    int kv_dtype;
} format;

/* The requests of the script: prompt offset in ids, length, max_tokens, priority. */
typedef struct {
    int off, len, max_tokens, priority;
} req_spec;

#define P_OFF 300 /* prompt P: 100 tokens (6 whole pages + 4), bulk 5, interactive 12 and 14 */
static const req_spec g_spec[MAX_ID] = {
    [1] = {10, 40, 30, ENGINE_PRIORITY_BULK},  [2] = {20, 40, 30, ENGINE_PRIORITY_BULK},
    [3] = {30, 40, 30, ENGINE_PRIORITY_BULK},  [4] = {40, 40, 30, ENGINE_PRIORITY_BULK},
    [5] = {P_OFF, 100, 6, ENGINE_PRIORITY_BULK},
    [11] = {200, 20, 5, ENGINE_PRIORITY_INTERACTIVE},
    [12] = {P_OFF, 100, 6, ENGINE_PRIORITY_INTERACTIVE},
    [13] = {400, 24, 8, ENGINE_PRIORITY_INTERACTIVE},
    [14] = {P_OFF, 100, 4, ENGINE_PRIORITY_INTERACTIVE},
    [15] = {450, 10, 4, ENGINE_PRIORITY_INTERACTIVE},
    [16] = {100, 150, 3, ENGINE_PRIORITY_INTERACTIVE}, /* test_boundary's */
};
static const int g_script[] = {1, 2, 3, 4, 5, 11, 12, 13, 14, 15}; /* scenario()'s requests */
#define N_SCRIPT (int)(sizeof g_script / sizeof g_script[0])

static int submit(engine *e, int id) {
    const req_spec *s = &g_spec[id];
    engine_request q;
    memset(&q, 0, sizeof q);
    q.prompt_ids = ids + s->off;
    q.n_prompt_ids = s->len;
    q.max_tokens = s->max_tokens;
    q.ignore_eos = 1;
    q.priority = s->priority;
    sampler_params_default(&q.sampling);
    if (id % 2) { /* sampled ones too: the draw depends on (seed, index) only */
        q.sampling.temperature = 0.9f;
        q.sampling.seed = (uint64_t)id * 31;
    }
    return engine_submit(e, (uint64_t)id, &q, NULL);
}

static engine *eng_new(const format *f, rec *r, fake_yield *fy, gpt2_weights *w) {
    memset(r, 0, sizeof *r);
    engine_config cfg = {.n_slots = 8, .n_ctx = 256, .max_batch_tokens = 64, .prefill_half = -1,
                         .kv_dtype = f->kv_dtype, .should_yield = fy ? fy_hook : NULL, .yield_user = fy};
    engine_callbacks cb = {on_tok, on_done, on_logits, r};
    char err[512];
    engine *e = engine_new(w, g_tok, &cfg, &cb, err, sizeof err);
    if (!e) printf("  engine: %s\n", err);
    return e;
}

static int g_kv_ok;

/* One engine_step, then the KV cache's ownership rules. */
static void step(engine *e) {
    engine_step(e);
    char err[256];
    if (engine_kv_check(e, err, sizeof err) != 0) {
        if (g_kv_ok) printf("  kv_check: %s\n", err);
        g_kv_ok = 0;
    }
}

/* Arms the hook to fire at its n-th call from now and steps until it fires (bounded). 1 if it did. */
static int step_until_fired(engine *e, fake_yield *fy, int n) {
    int before = fy->fired;
    fy->countdown = n;
    for (int k = 0; k < 20 && fy->fired == before; k++) step(e);
    fy->countdown = 0;
    return fy->fired > before;
}

static void run_to_end(engine *e) {
    for (int k = 0; k < 400 && engine_has_work(e); k++) step(e);
}

/* Each request of the script alone on a fresh engine (no hook): the reference. */
static void reference(const format *f, gpt2_weights *w, rec *ref) {
    memset(ref, 0, sizeof *ref);
    for (int id = 1; id < MAX_ID; id++) {
        if (!g_spec[id].len) continue;
        rec r;
        engine *e = eng_new(f, &r, NULL, w);
        if (!e) return;
        submit(e, id);
        run_to_end(e);
        memcpy(ref->tokens[id], r.tokens[id], sizeof r.tokens[id]);
        memcpy(ref->logits[id], r.logits[id], sizeof r.logits[id]);
        ref->n_tokens[id] = r.n_tokens[id];
        ref->n_logits[id] = r.n_logits[id];
        engine_free(e);
    }
}

/* The script. mode 1: the hook suspends; mode 0: the same actions, each after the step completes. */
static void scenario(const format *f, gpt2_weights *w, int mode, rec *r) {
    fake_yield fy = {.mode = mode};
    engine *e = eng_new(f, r, &fy, w);
    if (!e) {
        check(0, "%s: engine", f->name);
        return;
    }
    g_kv_ok = 1;
    const char *m = mode ? "yields" : "no yields";
    for (int id = 1; id <= 4; id++) submit(e, id);
    for (int k = 0; k < 20 && !(r->n_tokens[1] && r->n_tokens[2] && r->n_tokens[3] && r->n_tokens[4]); k++)
        step(e);

    /* 1. a decode step of the four bulk requests, suspended after layer 1 */
    check(step_until_fired(e, &fy, 1), "%s, %s: the hook is asked between layers", f->name, m);
    if (mode) check(engine_suspended(e) && engine_has_work(e), "%s: the step is suspended (and has work)", f->name);
    int bulk = r->bulk_tokens;
    check(submit(e, 11) == 0, "%s, %s: an interactive request accepted while suspended", f->name, m);
    if (mode) {
        fy.countdown = 5; /* the step, resumed, yields again after layers 2, 3, 4 and two of the
                             eight pieces of its logits (the lm_head is cut so it can yield) */
        step(e);
        check(r->n_tokens[11] == 1 && r->bulk_tokens == bulk && engine_suspended(e),
              "%s: (a) its first token comes from an express step before the suspended step's tokens "
              "(tokens %d, bulk %d -> %d)", f->name, r->n_tokens[11], bulk, r->bulk_tokens);
        step(e);
        check(engine_suspended(e) && fy.fired == 2 && r->bulk_tokens == bulk,
              "%s: the step resumes and yields again halfway through its logits", f->name);
        step(e);
        check(r->n_tokens[11] == 2 && r->bulk_tokens == bulk,
              "%s: a second express step decodes the request running outside the suspended step (%d tokens)",
              f->name, r->n_tokens[11]);
        step(e);
        check(!engine_suspended(e) && r->bulk_tokens == bulk + 4 && r->n_tokens[11] == 2,
              "%s: then the step completes: one token for each of the 4 bulk requests (%d)", f->name,
              r->bulk_tokens - bulk);
    }

    /* 2. a yield with no interactive work (a bulk request arrives): the step resumes at once; this
     * one after the last layer, before the logits */
    check(step_until_fired(e, &fy, 4), "%s, %s: second yield", f->name, m);
    engine_stats st;
    engine_get_stats(e, &st);
    uint64_t express = st.express_steps;
    bulk = r->bulk_tokens;
    submit(e, 5);
    if (mode) {
        step(e);
        engine_get_stats(e, &st);
        check(!engine_suspended(e) && st.express_steps == express && r->bulk_tokens > bulk,
              "%s: nothing interactive to run: the step, suspended after its last layer, resumes and "
              "completes in the same call", f->name);
    }
    step(e); /* bulk 5 admitted: its first chunk, 3 pages published */

    /* 3. the step with the rest of bulk 5's prefill, suspended after layer 2 */
    check(step_until_fired(e, &fy, 2), "%s, %s: third yield", f->name, m);
    if (mode) check(engine_suspended(e), "%s: suspended during a bulk prefill", f->name);
    bulk = r->bulk_tokens;
    int n2 = r->n_tokens[2];
    submit(e, 12); /* the prompt bulk 5 is prefilling */
    submit(e, 13);
    submit(e, 15);
    check(engine_cancel(e, 15) == 0 && r->done[15] == 1 && r->finish[15] == ENGINE_FINISH_CANCELLED,
          "%s, %s: (c) a waiting request cancelled ends at once", f->name, m);
    check(engine_cancel(e, 2) == 0, "%s, %s: cancel of a running bulk request", f->name, m);
    if (mode) check(r->done[2] == 0, "%s: (c) ... inside the suspended step: not ended yet", f->name);
    step(e); /* mode 1: express (12 whole, 13 partly); mode 0: a fresh step */
    if (mode)
        check(r->n_tokens[12] == 1 && r->n_tokens[13] == 0 && r->bulk_tokens == bulk && engine_suspended(e) &&
                  r->done[2] == 0,
              "%s: the express step prefills the interactive request whose prompt the suspended step "
              "is computing, and gives its first token first", f->name);
    check(engine_cancel(e, 13) == 0, "%s, %s: cancel of an interactive request mid-prefill", f->name, m);
    step(e);
    check(r->done[13] == 1 && r->finish[13] == ENGINE_FINISH_CANCELLED && r->n_tokens[13] <= (mode ? 0 : 1),
          "%s, %s: (c) the express request ends cancelled within the next call", f->name, m);
    check(r->done[2] == 1 && r->finish[2] == ENGINE_FINISH_CANCELLED && r->n_tokens[2] == n2,
          "%s, %s: (c) the request cancelled inside the suspended step ended with it, no token after "
          "the cancel (%d -> %d)", f->name, m, n2, r->n_tokens[2]);
    if (mode) check(!engine_suspended(e) && r->n_tokens[5] == 1, "%s: the suspended step completed", f->name);

    run_to_end(e);
    submit(e, 14); /* P again, now that all of it is published */
    run_to_end(e);
    if (mode) {
        check(r->cached[12] == 48 && r->cached[14] == 96,
              "%s: (e) the express request shared only the published pages (cached %d of 48), the last "
              "one all six (%d of 96)", f->name, r->cached[12], r->cached[14]);
        engine_get_stats(e, &st);
        check(st.suspends == 4 && st.express_steps == 3, "%s: 4 suspensions, 3 express steps (%llu, %llu)",
              f->name, (unsigned long long)st.suspends, (unsigned long long)st.express_steps);
    }
    int want[MAX_ID] = {0}, once = 1;
    for (int i = 0; i < N_SCRIPT; i++) want[g_script[i]] = 1;
    for (int id = 0; id < MAX_ID; id++) once &= r->done[id] == want[id];
    check(once, "%s, %s: (d) exactly one on_done per request", f->name, m);
    engine_get_stats(e, &st);
    check(g_kv_ok && st.kv.pages_used == 0 && st.kv.pages_reserved == 0 && st.kv.seqs_open == 0 && !engine_has_work(e),
          "%s, %s: (d) kv_check after every call; every page returned (used %d, reserved %d, open %d)", f->name, m,
          st.kv.pages_used, st.kv.pages_reserved, st.kv.seqs_open);
    engine_free(e);
}

/* 1 if r's tokens and logits for id equal ref's (a prefix of them when cancelled). */
static int same(const rec *r, const rec *ref, int id, int prefix) {
    int n = r->n_tokens[id];
    if (!prefix && (n != ref->n_tokens[id] || r->n_logits[id] != ref->n_logits[id])) return 0;
    if (n > ref->n_tokens[id] || r->n_logits[id] > ref->n_logits[id]) return 0;
    return memcmp(r->tokens[id], ref->tokens[id], sizeof(int) * (size_t)n) == 0 &&
           memcmp(r->logits[id], ref->logits[id], sizeof(uint64_t) * (size_t)r->n_logits[id]) == 0;
}

static void test_engine(const format *f) {
    char err[512];
    gpt2_weights_opts o = {.weights = f->weights};
    gpt2_weights *w = gpt2_weights_load(tu.model, &o, err, sizeof err);
    if (!w) {
        check(0, "%s: weights: %s", f->name, err);
        return;
    }
    static rec ref, yes, no;
    reference(f, w, &ref);
    scenario(f, w, 1, &yes);
    scenario(f, w, 0, &no);
    int ok = 1, okn = 1;
    for (int i = 0; i < N_SCRIPT; i++) {
        int id = g_script[i];
        int cancelled = id == 2 || id == 13 || id == 15;
        if (!cancelled && ref.n_tokens[id] != g_spec[id].max_tokens) ok = 0;
        if (!same(&yes, &ref, id, cancelled)) {
            printf("  %s: request %d differs from alone with yields\n", f->name, id);
            ok = 0;
        }
        if (!same(&no, &ref, id, cancelled)) {
            printf("  %s: request %d differs from alone without yields\n", f->name, id);
            okn = 0;
        }
    }
    check(ok, "%s: (b) every request's tokens and logits with suspensions and express steps = alone", f->name);
    check(okn, "%s: (b) ... = the same script without yields", f->name);

    /* a suspended engine can be freed (ASan: no leak), and engine_has_work holds while suspended */
    fake_yield fy = {.mode = 1};
    rec r;
    engine *e = eng_new(f, &r, &fy, w);
    if (e) {
        submit(e, 1);
        submit(e, 3);
        step(e);
        fy.countdown = 3;
        step(e);
        check(engine_suspended(e) && engine_has_work(e) && fy.fired == 1, "%s: suspended after layer 3", f->name);
        engine_free(e);
    }
    gpt2_weights_free(w);
}

/* Between steps: an interactive request submitted while bulk requests decode is prefilled by express
 * passes before the next step, which carries no interactive prefill (so it can always yield); a
 * prompt longer than one express pass alternates with the bulk steps (bulk work is never starved). */
static void test_boundary(const format *f) {
    char err[512];
    gpt2_weights_opts o = {.weights = f->weights};
    gpt2_weights *w = gpt2_weights_load(tu.model, &o, err, sizeof err);
    if (!w) return;
    static rec r, ref;
    fake_yield fy = {.mode = 1}; /* never armed: no suspension, only step boundaries */
    engine *e = eng_new(f, &r, &fy, w);
    engine *alone = eng_new(f, &ref, NULL, w);
    if (!e || !alone) return;
    submit(alone, 16);
    run_to_end(alone);
    g_kv_ok = 1;
    /* nothing running yet: bulk and interactive arrive together; the first step prefills the
     * interactive one alone, as without preemption */
    submit(e, 1);
    submit(e, 11);
    step(e);
    check(r.n_tokens[11] == 1 && r.n_tokens[1] == 0, "%s: with no bulk work running before, the interactive "
          "request is prefilled first, in the step (tokens %d, bulk %d)", f->name, r.n_tokens[11], r.n_tokens[1]);
    run_to_end(e);
    memset(&r, 0, sizeof r); /* the same ids again */
    submit(e, 1);
    submit(e, 3);
    for (int k = 0; k < 10 && !(r.n_tokens[1] && r.n_tokens[3]); k++) step(e);
    submit(e, 16); /* 150 prompt tokens; an express pass takes 64 */
    char seq[16] = "";
    engine_stats st;
    for (int k = 0; k < 5; k++) {
        int bulk = r.bulk_tokens;
        uint64_t x;
        engine_get_stats(e, &st);
        x = st.express_steps;
        step(e);
        engine_get_stats(e, &st);
        seq[k] = st.express_steps > x && r.bulk_tokens == bulk ? 'X' /* express only */
                 : st.express_steps == x && r.bulk_tokens == bulk + 2 && st.last_prefill == 0 ? 'S' /* a bulk step */
                                                                                                : '?';
    }
    check(strcmp(seq, "XSXSX") == 0 && r.n_tokens[16] == 1 && r.bulk_tokens >= 2,
          "%s: express (64), bulk step, express (64), bulk step, express (22) and its first token (%s, %d)", f->name,
          seq, r.n_tokens[16]);
    run_to_end(e);
    check(r.n_tokens[16] == 3 && same(&r, &ref, 16, 0) && g_kv_ok,
          "%s: ... generating what it does alone, bit for bit", f->name);
    engine_free(alone);
    engine_free(e);
    gpt2_weights_free(w);
}

/* ============================================================================================== */
/* gpt2d end to end                                                                                */
/* ============================================================================================== */

static void submit_svc(tu_client *c, uint64_t id, const tu_req *q, proto_priority pr) {
    proto_msg m;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.id = (proto_cid){0, id, {0}};
    m.prompt = (proto_str){q->prompt, (uint32_t)strlen(q->prompt)};
    m.has = PROTO_HAS(PF_PROMPT);
    m.max_tokens = q->max_tokens;
    m.temperature = q->temperature;
    m.top_k = q->top_k;
    m.top_p = q->top_p;
    m.seed = q->seed;
    m.ignore_eos = 1;
    m.priority = pr;
    tu_send(c, &m);
}

/* Receives on c until request id ended (others' frames folded into res[other - base] when in
 * range). 1 if it ended. */
static int wait_end(tu_client *c, uint64_t id, tu_result *res, uint64_t base, int n, int ms) {
    double deadline = proto_clock_ms() + ms;
    while (proto_clock_ms() < deadline) {
        proto_msg m;
        if (!tu_recv(c, &m, 1000)) continue;
        int ended = 0;
        if (m.id.num >= base && m.id.num < base + (uint64_t)n) ended = tu_result_add(&res[m.id.num - base], &m);
        int mine = m.id.num == id;
        proto_msg_destroy(&m);
        if (mine && ended) return 1;
    }
    return 0;
}

static void test_service(void) {
    tu_daemon d;
    char *extra[] = {"--interactive-reserve", "1", NULL};
    if (!tu_daemon_start(&d, "preempt", 1, 6, extra)) {
        check(0, "gpt2d started (1 worker, 6 slots)");
        return;
    }
    tu_client c;
    if (tu_client_open(&c, d.client_ep) != 0) {
        check(0, "client");
        tu_daemon_stop(&d);
        return;
    }
    enum { N_I = 6, N_B = 5 };
    tu_req qi[N_I], qb[N_B];
    for (int i = 0; i < N_I; i++) {
        tu_req_make(&qi[i], i, 8);
        qi[i].stop[0] = qi[i].stop[1] = NULL;
    }
    for (int i = 0; i < N_B; i++) {
        tu_req_make(&qb[i], 10 + i, 60);
        qb[i].stop[0] = qb[i].stop[1] = NULL;
    }
    /* alone first: each interactive request on an idle service */
    tu_result alone[N_I], busy[N_I], bres[N_B];
    memset(alone, 0, sizeof alone), memset(busy, 0, sizeof busy), memset(bres, 0, sizeof bres);
    int ok = 1;
    for (int i = 0; i < N_I; i++) {
        submit_svc(&c, 100 + (uint64_t)i, &qi[i], PROTO_PRIORITY_INTERACTIVE);
        ok &= wait_end(&c, 100 + (uint64_t)i, alone, 100, N_I, 60000);
    }
    check(ok, "the interactive requests alone");
    /* then one by one beside a bulk batch (5 bulk of 60-120 tokens on 6 slots, reserve 1) */
    for (int i = 0; i < N_B; i++) submit_svc(&c, 300 + (uint64_t)i, &qb[i], PROTO_PRIORITY_BULK);
    for (int k = 0; k < 200; k++) { /* wait until the bulk batch streams */
        proto_msg m;
        if (!tu_recv(&c, &m, 1000)) continue;
        int tok = m.id.num >= 300 && m.id.num < 300 + N_B;
        if (tok) tu_result_add(&bres[m.id.num - 300], &m);
        proto_msg_destroy(&m);
        if (tok) break;
    }
    ok = 1;
    for (int i = 0; i < N_I; i++) {
        submit_svc(&c, 200 + (uint64_t)i, &qi[i], PROTO_PRIORITY_INTERACTIVE);
        /* fold bulk frames on the way: they share the connection */
        double deadline = proto_clock_ms() + 60000;
        int ended = 0;
        while (!ended && proto_clock_ms() < deadline) {
            proto_msg m;
            if (!tu_recv(&c, &m, 1000)) continue;
            if (m.id.num == 200 + (uint64_t)i) ended = tu_result_add(&busy[i], &m);
            else if (m.id.num >= 300 && m.id.num < 300 + N_B) tu_result_add(&bres[m.id.num - 300], &m);
            proto_msg_destroy(&m);
        }
        ok &= ended;
    }
    check(ok, "the interactive requests beside the bulk batch ended");
    int same_all = 1;
    for (int i = 0; i < N_I; i++) same_all &= tu_result_same(&alone[i], &busy[i]);
    check(same_all, "each generates beside a bulk batch what it generates alone (text, tokens, usage)");
    int bulk_done = 0;
    double deadline = proto_clock_ms() + 120000;
    for (int i = 0; i < N_B; i++) bulk_done += bres[i].done;
    while (bulk_done < N_B && proto_clock_ms() < deadline) {
        proto_msg m;
        if (!tu_recv(&c, &m, 1000)) continue;
        if (m.id.num >= 300 && m.id.num < 300 + N_B && tu_result_add(&bres[m.id.num - 300], &m)) bulk_done++;
        proto_msg_destroy(&m);
    }
    int lengths = 1;
    for (int i = 0; i < N_B; i++)
        lengths &= bres[i].done && bres[i].n_tokens == qb[i].max_tokens && bres[i].n_done_tokens == qb[i].max_tokens &&
                   !bres[i].bad_index;
    check(bulk_done == N_B && lengths, "every bulk request ends once, with all its tokens in order (%d of %d)",
          bulk_done, N_B);
    for (int i = 0; i < N_I; i++) tu_result_free(&alone[i]), tu_result_free(&busy[i]);
    for (int i = 0; i < N_B; i++) tu_result_free(&bres[i]);
    tu_client_close(&c);
    check(tu_daemon_stop(&d), "gpt2d stops cleanly");
}

int main(void) {
    if (tu_init("preempt", 300) < 0) {
        check(0, "test environment (model)");
        return check_done("test_preempt");
    }
    /* a 4-layer model: three yield points per step */
    char tool[600], log[700];
    snprintf(tool, sizeof tool, "%s/gpt2-tool", tu.build);
    snprintf(log, sizeof log, "%s/mkmodel4.log", tu.tmp);
    snprintf(tu.model, sizeof tu.model, "%s/model4", tu.tmp);
    char *mk[] = {tool, "mkmodel", "--out", tu.model, "--layers", "4", "--embd", "128", "--heads", "4", "--ctx",
                  "256", "--seed", "3", NULL};
    if (tu_run(mk, log, 120000) != 0) {
        check(0, "4-layer model");
        return check_done("test_preempt");
    }
    char err[512];
    g_tok = bpe_load(tu.model, err, sizeof err);
    check(g_tok != NULL, "tokenizer: %s", g_tok ? "ok" : err);
    for (int i = 0; i < 512; i++) ids[i] = (i * 7919 + 13) % 50000;
    if (g_tok) {
        const format fmts[] = {{"fp32", "fp32", KV_F32}, {"int8", "int8", KV_F32}, {"bf16", "bf16", KV_F32},
                               {"fp32+kv fp16", "fp32", KV_F16}};
        for (int f = 0; f < 4; f++) test_engine(&fmts[f]);
        test_boundary(&fmts[0]);
    }
    bpe_free(g_tok);
    test_service();
    return check_done("test_preempt");
}
