/* test_priority.c — scheduling for latency: priorities, fairness between clients, the adaptive
 * step budget. No timings anywhere: the engine's clock is its step count, the broker's order is
 * what a fake worker receives when every request was queued before it returned any slot.
 *
 *   squeue (daemon/squeue.c)  round robin between clients within a class, classes in order, the
 *                           front of the line, removal from anywhere;
 *   engine                  interactive requests take free slots and prefill chunks ahead of bulk
 *                           ones submitted before them; the per-step prefill budget follows the
 *                           documented formula (max-batch-tokens while nothing decodes, halved at
 *                           prefill_half decoders, never below prefill-min-tokens) and a prompt
 *                           chunked that way generates exactly what it does alone;
 *   broker (gpt2d + fake worker)  interactive before bulk, clients taking turns, one client's flood
 *                           does not delay another's single request beyond its turn, and bulk
 *                           requests leave the interactive reserve free. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "checkpoint.h"
#include "engine.h"
#include "../daemon/squeue.h"
#include "tutil.h"

/* ============================================================================================== */
/* squeue                                                                                          */
/* ============================================================================================== */

typedef struct {
    sq_item it;
    int client, n;
} titem;

#define TI(p) ((titem *)(p))

static void test_squeue(void) {
    squeue s;
    memset(&s, 0, sizeof s);
    sq_flow fa, fb, fc;
    memset(&fa, 0, sizeof fa), memset(&fb, 0, sizeof fb), memset(&fc, 0, sizeof fc);
    titem a[100], b[1], c[2];
    for (int i = 0; i < 100; i++) a[i] = (titem){.client = 'A', .n = i};
    b[0] = (titem){.client = 'B', .n = 0};
    for (int i = 0; i < 2; i++) c[i] = (titem){.client = 'C', .n = i};
    /* A floods, then B sends one, then C two */
    for (int i = 0; i < 100; i++) sq_push(&s, &fa, &a[i].it, SQ_INTERACTIVE, 0);
    sq_push(&s, &fb, &b[0].it, SQ_INTERACTIVE, 0);
    for (int i = 0; i < 2; i++) sq_push(&s, &fc, &c[i].it, SQ_INTERACTIVE, 0);
    char order[16] = "";
    for (int k = 0; k < 7; k++) {
        sq_item *it = sq_next(&s, SQ_INTERACTIVE);
        order[k] = it ? (char)TI(it)->client : '-';
        if (it) sq_take(&s, it);
    }
    check(strcmp(order, "ABCACAA") == 0, "round robin between clients: A B C A C A A (got %s)", order);
    check(s.n[SQ_INTERACTIVE] == 96, "96 of A's left (%d)", s.n[SQ_INTERACTIVE]);
    /* within a client, arrival order: A's next is a[4] */
    sq_item *it = sq_next(&s, SQ_INTERACTIVE);
    check(it && TI(it)->client == 'A' && TI(it)->n == 4, "a client's own requests in arrival order");
    /* a client joining later waits for the current round: B again, then C */
    sq_push(&s, &fb, &b[0].it, SQ_INTERACTIVE, 0);
    sq_take(&s, sq_next(&s, SQ_INTERACTIVE)); /* a[4] */
    it = sq_next(&s, SQ_INTERACTIVE);
    check(it && TI(it)->client == 'B', "a client that joins is served after the one being served");
    /* removal from the middle, and the front of the line */
    sq_remove(&s, &a[50].it);
    sq_remove(&s, &a[50].it); /* not queued: no-op */
    check(s.n[SQ_INTERACTIVE] == 95, "removal from the middle (%d)", s.n[SQ_INTERACTIVE]);
    sq_remove(&s, &b[0].it);
    sq_push(&s, &fa, &a[0].it, SQ_INTERACTIVE, 1);
    it = sq_next(&s, SQ_INTERACTIVE);
    check(it == &a[0].it, "a request put back goes to the front of its client's line");
    /* classes are separate: bulk and replay items do not show in the interactive class */
    titem r = {.client = 'R'}, k = {.client = 'K'};
    sq_push(&s, &fc, &k.it, SQ_BULK, 0);
    sq_push(&s, &fc, &r.it, SQ_REPLAY, 0);
    check(sq_next(&s, SQ_BULK) == &k.it && sq_next(&s, SQ_REPLAY) == &r.it &&
              s.replay.head[SQ_REPLAY] == &r.it && s.n[SQ_BULK] == 1 && s.n[SQ_REPLAY] == 1,
          "each class its own line (the replay class one FIFO)");
    /* drain everything: every ring empties */
    for (int cls = 0; cls < SQ_CLASSES; cls++)
        while ((it = sq_next(&s, cls))) sq_take(&s, it);
    check(s.n[0] == 0 && s.n[1] == 0 && s.n[2] == 0 && !s.turn[0] && !s.turn[1] && !s.turn[2] &&
              !fa.head[SQ_INTERACTIVE] && !fc.rnext[SQ_BULK],
          "drained: no ring left");
}

/* ============================================================================================== */
/* engine                                                                                          */
/* ============================================================================================== */

static gpt2_weights *g_w;
static bpe_tokenizer *g_tok;

typedef struct {
    int step;             /* the clock: engine_step calls so far */
    int first_step[32];   /* step of each request's first token (-1: none yet) */
    int n_done;
    int tokens[32][64], n_tokens[32];
} eng_state;

static void on_tok(void *u, uint64_t id, int index, int token, const char *p, size_t n, float lp) {
    (void)index, (void)p, (void)n, (void)lp;
    eng_state *s = u;
    if (id >= 32) return;
    if (s->first_step[id] < 0) s->first_step[id] = s->step;
    if (s->n_tokens[id] < 64) s->tokens[id][s->n_tokens[id]++] = token;
}

static void on_done(void *u, uint64_t id, const engine_result *r) {
    (void)id, (void)r;
    ((eng_state *)u)->n_done++;
}

static engine_request ids_req(const int *ids, int n, int max_tokens, int priority) {
    engine_request q;
    memset(&q, 0, sizeof q);
    q.prompt_ids = ids;
    q.n_prompt_ids = n;
    q.max_tokens = max_tokens;
    q.ignore_eos = 1;
    q.priority = priority;
    sampler_params_default(&q.sampling);
    return q;
}

static engine *eng_new(eng_state *s, engine_config *cfg) {
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 32; i++) s->first_step[i] = -1;
    engine_callbacks cb = {on_tok, on_done, NULL, s};
    char err[512];
    engine *e = engine_new(g_w, g_tok, cfg, &cb, err, sizeof err);
    if (!e) printf("  engine: %s\n", err);
    return e;
}

static void eng_step(engine *e, eng_state *s) {
    s->step++;
    engine_step(e);
}

static int ids[512];

static void test_engine_priority(void) {
    /* 2 slots; four bulk requests, then one interactive: the interactive one takes the first free
     * slot and is prefilled first, in chunks of 16 */
    engine_config cfg = {.n_slots = 2, .n_ctx = 256, .max_batch_tokens = 16, .prefill_half = -1};
    eng_state s;
    engine *e = eng_new(&s, &cfg);
    if (!e) return;
    engine_request q;
    for (int i = 1; i <= 4; i++) {
        q = ids_req(ids + 10 * i, 40, 3, ENGINE_PRIORITY_BULK);
        check(engine_submit(e, (uint64_t)i, &q, NULL) == 0, "bulk %d accepted", i);
    }
    q = ids_req(ids + 100, 40, 3, ENGINE_PRIORITY_INTERACTIVE);
    check(engine_submit(e, 9, &q, NULL) == 0, "interactive accepted");
    for (int k = 0; k < 3; k++) eng_step(e, &s);
    engine_stats st;
    engine_get_stats(e, &st);
    check(st.last_prefill == 8, "the step that ends the interactive prefill carries no bulk prefill (%d tokens)",
          st.last_prefill);
    for (int k = 0; k < 60 && s.n_done < 5; k++) eng_step(e, &s);
    check(s.n_done == 5, "all five done (%d)", s.n_done);
    /* 40 tokens in chunks of 16: the interactive request's first token comes at step 3 */
    check(s.first_step[9] == 3, "the interactive request submitted last is prefilled first (first token at step %d)",
          s.first_step[9]);
    check(s.first_step[1] > s.first_step[9] && s.first_step[2] > s.first_step[1] &&
              s.first_step[3] > s.first_step[2] && s.first_step[4] > s.first_step[3],
          "bulk ones after it, in their order (%d %d %d %d)", s.first_step[1], s.first_step[2], s.first_step[3],
          s.first_step[4]);
    engine_free(e);

    /* 4 slots: two bulk requests are admitted and start prefilling; an interactive one that arrives
     * then still gets its prefill chunks ahead of theirs */
    cfg = (engine_config){.n_slots = 4, .n_ctx = 256, .max_batch_tokens = 16, .prefill_half = -1};
    e = eng_new(&s, &cfg);
    if (!e) return;
    for (int i = 1; i <= 2; i++) {
        q = ids_req(ids + 10 * i, 48, 2, ENGINE_PRIORITY_BULK);
        engine_submit(e, (uint64_t)i, &q, NULL);
    }
    eng_step(e, &s); /* 16 tokens of bulk 1 */
    q = ids_req(ids + 200, 32, 2, ENGINE_PRIORITY_INTERACTIVE);
    engine_submit(e, 9, &q, NULL);
    for (int k = 0; k < 40 && s.n_done < 3; k++) eng_step(e, &s);
    check(s.first_step[9] == 3 && s.first_step[1] > 3 && s.first_step[2] > s.first_step[1],
          "an interactive request admitted later overtakes bulk prefills under way (first tokens at %d; bulk %d %d)",
          s.first_step[9], s.first_step[1], s.first_step[2]);
    engine_free(e);
}

/* The documented formula, and the chunks a step actually takes. */
static void test_engine_budget(void) {
    engine_config d = {0};
    check(engine_prefill_budget(&d, 0) == 512 && engine_prefill_budget(&d, 16) == 256 &&
              engine_prefill_budget(&d, 48) == 128 && engine_prefill_budget(&d, 64) == 102 &&
              engine_prefill_budget(&d, 200) == 64 && engine_prefill_budget(&d, 4000) == 64,
          "defaults: 512 idle, 256 at 16 decoding, 128 at 48, 102 at 64, floor 64 (%d %d %d %d %d)",
          engine_prefill_budget(&d, 0), engine_prefill_budget(&d, 16), engine_prefill_budget(&d, 48),
          engine_prefill_budget(&d, 64), engine_prefill_budget(&d, 200));
    engine_config off = {.max_batch_tokens = 128, .prefill_half = -1};
    check(engine_prefill_budget(&off, 0) == 128 && engine_prefill_budget(&off, 100) == 28 &&
              engine_prefill_budget(&off, 200) == 0,
          "prefill_half off: a fixed step of max_batch_tokens");

    /* in a running engine: 8 slots, 64 per step, floor 8, halved at 2 decoders */
    engine_config cfg = {.n_slots = 8, .n_ctx = 256, .max_batch_tokens = 64, .prefill_min_tokens = 8, .prefill_half = 2};
    eng_state s;
    engine *e = eng_new(&s, &cfg);
    if (!e) return;
    engine_request q = ids_req(ids, 100, 30, 0);
    engine_submit(e, 1, &q, NULL);
    eng_step(e, &s);
    engine_stats st;
    engine_get_stats(e, &st);
    check(st.last_decode == 0 && st.last_prefill == 64, "nothing decoding: a 64-token chunk (%d + %d)",
          st.last_decode, st.last_prefill);
    eng_step(e, &s); /* the rest of request 1: 36 tokens */
    for (int i = 2; i <= 5; i++) {
        q = ids_req(ids + i, 20, 30, 0);
        engine_submit(e, (uint64_t)i, &q, NULL);
    }
    eng_step(e, &s); /* 1 decodes: budget 64 * 2 / 3 = 42 -> requests 2, 3 (40 tokens) and 2 of 4 */
    engine_get_stats(e, &st);
    check(st.last_decode == 1 && st.last_prefill == 42, "one decoding: 42 prefill tokens (%d + %d)", st.last_decode,
          st.last_prefill);
    eng_step(e, &s); /* 3 decode: 64 * 2 / 5 = 25 -> the 18 left of 4 and 7 of 5 */
    engine_get_stats(e, &st);
    check(st.last_decode == 3 && st.last_prefill == 25, "three decoding: 25 (%d + %d)", st.last_decode,
          st.last_prefill);
    for (int i = 6; i <= 8; i++) {
        q = ids_req(ids + 30 + i, 60, 30, 0);
        engine_submit(e, (uint64_t)i, &q, NULL);
    }
    eng_step(e, &s); /* 4 decode: 64 * 2 / 6 = 21 */
    engine_get_stats(e, &st);
    check(st.last_decode == 4 && st.last_prefill == 21, "four decoding: 21 (%d + %d)", st.last_decode,
          st.last_prefill);
    for (int k = 0; k < 200 && s.n_done < 8; k++) eng_step(e, &s);
    check(s.n_done == 8, "all eight done");
    engine_free(e);

    /* chunking does not change outputs: request 1 (100 prompt tokens, 30 generated) alone with one
     * chunk of 512 vs above (64 + 36, then decoding beside prefills of others) */
    eng_state s2;
    engine_config one = {.n_slots = 1, .n_ctx = 256};
    engine *e2 = eng_new(&s2, &one);
    if (!e2) return;
    q = ids_req(ids, 100, 30, 0);
    engine_submit(e2, 1, &q, NULL);
    for (int k = 0; k < 60 && s2.n_done < 1; k++) eng_step(e2, &s2);
    check(s2.n_tokens[1] == 30 && s.n_tokens[1] == 30 && memcmp(s2.tokens[1], s.tokens[1], 30 * sizeof(int)) == 0,
          "the same 30 tokens alone in one chunk as chunked beside others");
    engine_free(e2);
}

/* ============================================================================================== */
/* broker                                                                                          */
/* ============================================================================================== */

typedef struct {
    tu_client c;
} fake_worker;

static int fw_ready(fake_worker *w, const char *ep, int slots) { return tu_fake_worker_ready(&w->c, ep, slots); }

/* The next request within ms: its rid and prompt (into p). 1 or 0. */
static int fw_request(fake_worker *w, uint64_t *rid, char *p, size_t cap, int ms) {
    double deadline = proto_clock_ms() + ms;
    for (;;) {
        long left = (long)(deadline - proto_clock_ms());
        proto_msg m;
        if (left <= 0 || !tu_recv(&w->c, &m, (int)left)) return 0;
        int got = m.type == PROTO_T_REQUEST;
        if (got) {
            *rid = m.rid;
            snprintf(p, cap, "%.*s", (int)m.prompt.len, m.prompt.ptr ? m.prompt.ptr : "");
        }
        proto_msg_destroy(&m);
        if (got) return 1;
    }
}

/* Ends rid with a done frame and gives its slot back. */
static void fw_finish(fake_worker *w, uint64_t rid) {
    proto_msg d;
    proto_msg_init(&d, PROTO_T_DONE);
    d.rid = rid;
    d.has = PROTO_HAS(PF_RID);
    d.finish = PROTO_FINISH_LENGTH;
    tu_send(&w->c, &d);
    proto_msg c;
    proto_msg_init(&c, PROTO_T_CREDIT);
    c.credit = 1;
    tu_send(&w->c, &c);
}

static int submit_p(tu_client *c, uint64_t id, const char *prompt, proto_priority pr) {
    proto_msg m;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.id = (proto_cid){0, id, {0}};
    m.prompt = (proto_str){prompt, (uint32_t)strlen(prompt)};
    m.has = PROTO_HAS(PF_PROMPT);
    m.max_tokens = 1;
    m.priority = pr;
    return tu_send(c, &m);
}

/* Waits until the broker has n requests queued. 1 or 0. */
static int wait_queued(tu_client *c, int n, int ms) {
    double deadline = proto_clock_ms() + ms;
    while (proto_clock_ms() < deadline) {
        proto_msg m;
        int q = -1;
        if (tu_stats(c, &m)) {
            q = m.queue;
            proto_msg_destroy(&m);
        }
        if (q == n) return 1;
        tu_sleep_ms(20);
    }
    return 0;
}

/* Serves n requests one at a time (each slot returned after the next is asked for), recording the
 * prompts in order, space-separated, into out. The number served. */
static int fw_serve(fake_worker *w, int n, char *out, size_t cap) {
    out[0] = 0;
    int k = 0;
    for (; k < n; k++) {
        uint64_t rid;
        char p[64];
        if (!fw_request(w, &rid, p, sizeof p, 5000)) break;
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", len ? " " : "", p);
        fw_finish(w, rid);
    }
    return k;
}

/* Drains what the clients were sent (their done frames), so nothing piles up. */
static void drain(tu_client *c, int n) {
    for (int i = 0; i < n; i++) {
        proto_msg m;
        if (!tu_recv(c, &m, 2000)) return;
        proto_msg_destroy(&m);
    }
}

static void test_broker(void) {
    tu_daemon d;
    char *extra[] = {"--queue-timeout-ms", "60000", NULL};
    if (!tu_daemon_start(&d, "prio", 0, 1, extra)) {
        check(0, "gpt2d started");
        return;
    }
    tu_client a, b, st;
    check(tu_client_open(&a, d.client_ep) == 0 && tu_client_open(&b, d.client_ep) == 0 &&
              tu_client_open(&st, d.client_ep) == 0,
          "clients connected");

    /* 1) priorities and turns: one slot (a 1-slot worker keeps no reserve). A sends 4 bulk, then 2
     * interactive; B 1 interactive. Bulk 1 goes at once; then interactive ones with A and B taking
     * turns, then A's bulk in order. */
    fake_worker fw;
    check(fw_ready(&fw, d.worker_ep, 1) == 0, "fake worker with 1 slot");
    tu_sleep_ms(200);
    submit_p(&a, 1, "b1", PROTO_PRIORITY_BULK);
    uint64_t rid;
    char p[64], order[512];
    check(fw_request(&fw, &rid, p, sizeof p, 5000) && strcmp(p, "b1") == 0, "the first request goes at once (%s)", p);
    submit_p(&a, 2, "b2", PROTO_PRIORITY_BULK);
    submit_p(&a, 3, "b3", PROTO_PRIORITY_BULK);
    submit_p(&a, 4, "b4", PROTO_PRIORITY_BULK);
    submit_p(&a, 5, "i1", PROTO_PRIORITY_INTERACTIVE);
    submit_p(&a, 6, "i2", PROTO_PRIORITY_INTERACTIVE);
    check(wait_queued(&st, 5, 5000), "five queued behind it");
    submit_p(&b, 7, "j1", PROTO_PRIORITY_INTERACTIVE);
    check(wait_queued(&st, 6, 5000), "six queued");
    fw_finish(&fw, rid);
    int n = fw_serve(&fw, 6, order, sizeof order);
    check(n == 6 && strcmp(order, "i1 j1 i2 b2 b3 b4") == 0,
          "dispatch order: interactive first, clients in turn, then bulk in order (got '%s')", order);
    drain(&a, 6);
    drain(&b, 1);

    /* 2) a flood does not starve a single request: A floods 40 interactive, then B sends one */
    submit_p(&a, 100, "a0", PROTO_PRIORITY_INTERACTIVE);
    check(fw_request(&fw, &rid, p, sizeof p, 5000), "the flood's first goes at once");
    for (int i = 1; i < 40; i++) {
        char q[16];
        snprintf(q, sizeof q, "a%d", i);
        submit_p(&a, 100 + (uint64_t)i, q, PROTO_PRIORITY_INTERACTIVE);
    }
    check(wait_queued(&st, 39, 5000), "39 of A's queued");
    submit_p(&b, 200, "bee", PROTO_PRIORITY_INTERACTIVE);
    check(wait_queued(&st, 40, 5000), "and B's one");
    fw_finish(&fw, rid);
    n = fw_serve(&fw, 40, order, sizeof order);
    check(n == 40 && strncmp(order, "a1 bee a2 a3", 12) == 0,
          "B's single request goes second after a 40-request flood, not 40th (got '%.40s...')", order);
    drain(&a, 40);
    drain(&b, 1);
    tu_client_close(&fw.c);
    tu_daemon_stop(&d);

    /* 3) the interactive reserve: a worker of 3 slots takes only 2 bulk (reserve 1, the default);
     * an interactive request then goes at once, without any slot returned */
    if (!tu_daemon_start(&d, "prio2", 0, 1, extra)) {
        check(0, "gpt2d started again");
        return;
    }
    tu_client c;
    tu_client_open(&c, d.client_ep);
    fake_worker fw3;
    check(fw_ready(&fw3, d.worker_ep, 3) == 0, "fake worker with 3 slots");
    tu_sleep_ms(200);
    for (int i = 0; i < 5; i++) {
        char q[16];
        snprintf(q, sizeof q, "bulk%d", i);
        submit_p(&c, 300 + (uint64_t)i, q, PROTO_PRIORITY_BULK);
    }
    int got = 0;
    uint64_t rids[4];
    while (got < 4 && fw_request(&fw3, &rids[got], p, sizeof p, 1500)) got++;
    check(got == 2, "bulk requests take 2 of 3 slots (got %d)", got);
    submit_p(&c, 400, "live", PROTO_PRIORITY_INTERACTIVE);
    check(fw_request(&fw3, &rid, p, sizeof p, 5000) && strcmp(p, "live") == 0,
          "an interactive request takes the reserved slot at once (%s)", p);
    fw_finish(&fw3, rid);
    fw_finish(&fw3, rids[0]);
    check(fw_request(&fw3, &rid, p, sizeof p, 5000) && strcmp(p, "bulk2") == 0, "a slot freed by bulk goes to bulk");
    tu_client_close(&fw3.c);
    tu_client_close(&c);
    tu_client_close(&a);
    tu_client_close(&b);
    tu_client_close(&st);
    tu_daemon_stop(&d);
}

int main(void) {
    test_squeue();
    if (tu_init("priority", 300) < 0) {
        check(0, "test environment (model)");
        return check_done("test_priority");
    }
    char err[512];
    g_w = gpt2_weights_load(tu.model, NULL, err, sizeof err);
    g_tok = g_w ? bpe_load(tu.model, err, sizeof err) : NULL;
    check(g_tok != NULL, "model loads: %s", g_tok ? "ok" : err);
    for (int i = 0; i < 512; i++) ids[i] = (i * 7919) % 50000;
    if (g_tok) {
        test_engine_priority();
        test_engine_budget();
    }
    test_broker();
    bpe_free(g_tok);
    gpt2_weights_free(g_w);
    return check_done("test_priority");
}
