/* test_e2e.c — the whole service: gpt2d with local gpt2d-worker processes on a small random model,
 * driven through the wire protocol (ZeroMQ DEALER clients) and through gpt2c.
 *
 * Shown here: 64 concurrent clients each get exactly what `gpt2-tool generate` prints for the same
 * request (batch invariance through the whole stack), and streamed text equals the done frame's
 * text; `gpt2c batch` matches `gpt2-tool batch` field for field; a cancel mid-stream frees the slot
 * (the next request is admitted); a full queue answers overloaded at once; a client that vanishes
 * mid-stream has its request cancelled on the worker; a worker killed with SIGKILL is replaced,
 * each of its in-flight requests is replayed on the other worker and completes, and the daemon
 * keeps serving (tests/test_chaos.c checks replays byte for byte); hostile
 * frames get error frames; gpt2c's exit codes. Every wait has a timeout, everything binds to
 * ipc:// in $GPT2D_TMP, and every process started is killed at exit.
 * Env: BUILD (binaries), GPT2D_TMP (scratch). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "tutil.h"

/* ============================================================================================== */
/* requests                                                                                        */
/* ============================================================================================== */

typedef struct {
    const char *prompt;
    int max_tokens;
    float temperature;
    int top_k;
    float top_p;
    uint64_t seed;
    const char *stop;
} treq;

static int tc_submit(tu_client *c, uint64_t id, const treq *r) {
    proto_msg m;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.id = (proto_cid){0, id, {0}};
    m.prompt = (proto_str){r->prompt, (uint32_t)strlen(r->prompt)};
    m.has = PROTO_HAS(PF_PROMPT);
    m.max_tokens = r->max_tokens;
    m.temperature = r->temperature;
    m.top_k = r->top_k;
    m.top_p = r->top_p > 0 ? r->top_p : 1.0f;
    m.seed = r->seed;
    if (r->stop) {
        m.stop[0] = (proto_str){r->stop, (uint32_t)strlen(r->stop)};
        m.n_stop = 1;
    }
    return tu_send(c, &m);
}

/* The outcome of one request, gathered from its frames. */
typedef struct {
    char *streamed;
    size_t streamed_len;
    char *text;              /* the done frame's text */
    size_t text_len;
    int n_tokens, done, error_code, bad_index;
    proto_finish finish;
    double t_first_ms, t_end_ms;
} tresult;

static void tresult_free(tresult *r) {
    free(r->streamed);
    free(r->text);
    memset(r, 0, sizeof(*r));
}

/* Folds one frame into r. 1 if the request ended. */
static int tresult_add(tresult *r, const proto_msg *m) {
    if (m->type == PROTO_T_TOKEN) {
        if (m->index != r->n_tokens) r->bad_index = 1;
        r->n_tokens++;
        if (r->t_first_ms == 0) r->t_first_ms = proto_clock_ms();
        r->streamed = realloc(r->streamed, r->streamed_len + m->text.len + 1);
        if (m->text.len) memcpy(r->streamed + r->streamed_len, m->text.ptr, m->text.len);
        r->streamed_len += m->text.len;
        r->streamed[r->streamed_len] = 0;
        return 0;
    }
    if (m->type == PROTO_T_DONE) {
        r->done = 1;
        r->finish = m->finish;
        r->text = malloc(m->text.len + 1);
        if (m->text.len) memcpy(r->text, m->text.ptr, m->text.len);
        r->text[m->text.len] = 0;
        r->text_len = m->text.len;
        r->t_end_ms = proto_clock_ms();
        return 1;
    }
    if (m->type == PROTO_T_ERROR) {
        r->error_code = m->code;
        r->t_end_ms = proto_clock_ms();
        return 1;
    }
    return 0;
}

/* ============================================================================================== */
/* the daemon                                                                                      */
/* ============================================================================================== */

/* gpt2d with `workers` local workers, a queue of max_queue, and a step delay (so that requests
 * stay in flight long enough to be cancelled, killed or vanished from). */
static int daemon_start(tu_daemon *d, const char *name, int workers, int slots, int max_queue, int delay_ms) {
    char q[16], dl[16];
    snprintf(q, sizeof(q), "%d", max_queue);
    snprintf(dl, sizeof(dl), "%d", delay_ms);
    char *extra[] = {"--max-queue", q, "--debug-step-delay-ms", dl, "--log-level", "debug", NULL};
    return tu_daemon_start(d, name, workers, slots, extra);
}

/* ============================================================================================== */
/* scenarios                                                                                       */
/* ============================================================================================== */

#define N_CONCURRENT 64

static const char *const g_prompts[] = {
    "Hello, my name is", "The quick brown fox", "Dear team,\n\nThanks for", "Once upon a time",
    "In 1998, the", "Subject: Partnership opportunity\n\n", "def main():\n    ", "The weather today",
};

static treq make_req(int i, char *prompt_buf, size_t cap) {
    snprintf(prompt_buf, cap, "%s %d", g_prompts[i % 8], i);
    treq r = {prompt_buf, 8 + (i * 7) % 40, 0, 0, 0, (uint64_t)i, NULL};
    if (i % 4 != 0) { /* sampled: temperature, top-k, top-p, per-request seed */
        r.temperature = 0.7f + 0.1f * (float)(i % 5);
        r.top_k = (i % 3) * 20;
        r.top_p = (i % 2) ? 0.9f : 1.0f;
    }
    if (i % 8 == 5) r.stop = "a";
    return r;
}

/* What gpt2-tool generate prints for r. */
static int reference(const treq *r, char **out, size_t *len) {
    char bin[600], n[16], t[32], k[16], p[32], s[32];
    snprintf(bin, sizeof(bin), "%s/gpt2-tool", tu.build);
    snprintf(n, sizeof(n), "%d", r->max_tokens);
    snprintf(t, sizeof(t), "%.9g", r->temperature);
    snprintf(k, sizeof(k), "%d", r->top_k);
    snprintf(p, sizeof(p), "%.9g", r->top_p > 0 ? r->top_p : 1.0f);
    snprintf(s, sizeof(s), "%llu", (unsigned long long)r->seed);
    char *argv[24] = {bin, "generate", "--model", tu.model, "--prompt", (char *)r->prompt, "-n", n,
                      "--temperature", t, "--top-k", k, "--top-p", p, "--seed", s, "--threads", "1"};
    int a = 18;
    if (r->stop) {
        argv[a++] = "--stop";
        argv[a++] = (char *)r->stop;
    }
    argv[a] = NULL;
    return tu_run_capture(argv, out, len, 60000);
}

/* Reads the frames of n clients (client i's request has id base + i) until every request ended
 * or ms passed. Returns how many are still open. */
static int collect(tu_client *cl, tresult *res, int n, uint64_t base, int ms) {
    zmq_pollitem_t items[N_CONCURRENT];
    int left = 0;
    for (int i = 0; i < n; i++) left += !(res[i].done || res[i].error_code);
    double deadline = proto_clock_ms() + ms;
    while (left > 0 && proto_clock_ms() < deadline) {
        for (int i = 0; i < n; i++) items[i] = (zmq_pollitem_t){cl[i].sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(items, n, 200) <= 0) continue;
        for (int i = 0; i < n; i++) {
            if (!(items[i].revents & ZMQ_POLLIN)) continue;
            proto_msg m;
            while (tu_recv(&cl[i], &m, 0)) {
                if (m.id.num == base + (uint64_t)i && !(res[i].done || res[i].error_code) && tresult_add(&res[i], &m))
                    left--;
                proto_msg_destroy(&m);
            }
        }
    }
    return left;
}

static void test_concurrent(const tu_daemon *d) {
    static tu_client cl[N_CONCURRENT];
    static tresult res[N_CONCURRENT];
    static char prompts[N_CONCURRENT][96];
    treq reqs[N_CONCURRENT];
    for (int i = 0; i < N_CONCURRENT; i++) {
        reqs[i] = make_req(i, prompts[i], sizeof(prompts[i]));
        tu_client_open(&cl[i], d->client_ep);
        memset(&res[i], 0, sizeof(res[i]));
    }
    for (int i = 0; i < N_CONCURRENT; i++) tc_submit(&cl[i], 1000 + (uint64_t)i, &reqs[i]);
    int left = collect(cl, res, N_CONCURRENT, 1000, 120000);
    check(left == 0, "all %d concurrent requests ended (%d left)", N_CONCURRENT, left);
    int same = 0, stream_ok = 0, index_ok = 0;
    for (int i = 0; i < N_CONCURRENT; i++) {
        char *ref;
        size_t ref_len;
        int rc = reference(&reqs[i], &ref, &ref_len);
        int ok = rc == 0 && res[i].done && res[i].streamed_len == ref_len &&
                 (ref_len == 0 || memcmp(res[i].streamed, ref, ref_len) == 0);
        if (!ok)
            printf("  request %d differs: daemon '%s' vs gpt2-tool '%s' (rc %d, done %d, error %d)\n", i,
                   res[i].streamed ? res[i].streamed : "", ref ? ref : "", rc, res[i].done, res[i].error_code);
        same += ok;
        int sok = res[i].done && res[i].text_len == res[i].streamed_len &&
                  (res[i].text_len == 0 || memcmp(res[i].text, res[i].streamed, res[i].text_len) == 0);
        if (!sok && res[i].done) printf("  request %d: streamed '%s' != final '%s'\n", i, res[i].streamed, res[i].text);
        stream_ok += sok;
        index_ok += !res[i].bad_index;
        free(ref);
    }
    check(same == N_CONCURRENT, "%d/%d concurrent clients got exactly gpt2-tool generate's output", same,
          N_CONCURRENT);
    check(stream_ok == N_CONCURRENT, "%d/%d: streamed text == done text", stream_ok, N_CONCURRENT);
    check(index_ok == N_CONCURRENT, "%d/%d: token indexes are 0, 1, 2, ...", index_ok, N_CONCURRENT);
    for (int i = 0; i < N_CONCURRENT; i++) {
        tresult_free(&res[i]);
        tu_client_close(&cl[i]);
    }
}

/* A 1-slot, 1-queue-place daemon: A runs, B waits, C is refused at once; cancelling A lets B run. */
static void test_cancel_and_overload(void) {
    tu_daemon d;
    check(daemon_start(&d, "small", 1, 1, 1, 20), "1-slot daemon starts");
    tu_client a, b, c;
    tu_client_open(&a, d.client_ep);
    tu_client_open(&b, d.client_ep);
    tu_client_open(&c, d.client_ep);
    treq longr = {"A long story", 200, 0, 0, 0, 0, NULL};
    tresult ra = {0}, rb = {0}, rc = {0};
    proto_msg m;
    tc_submit(&a, 1, &longr);
    int got_first = 0;
    while (!got_first && tu_recv(&a, &m, 10000)) {
        tresult_add(&ra, &m);
        got_first = m.type == PROTO_T_TOKEN;
        proto_msg_destroy(&m);
    }
    check(got_first, "A streams");
    tc_submit(&b, 2, &longr); /* queued: the queue holds 1 */
    tu_sleep_ms(100);
    double t0 = proto_clock_ms();
    tc_submit(&c, 3, &longr);
    int refused = tu_recv(&c, &m, 5000) && m.type == PROTO_T_ERROR && m.code == PROTO_CODE_OVERLOADED &&
                  m.id.num == 3;
    double dt = proto_clock_ms() - t0;
    if (refused) proto_msg_destroy(&m);
    check(refused, "a full queue answers overloaded");
    check(dt < 500, "overloaded comes at once (%.1f ms)", dt);

    /* cancel A mid-stream: it ends cancelled, and B (waiting) is admitted */
    tu_cancel(&a, 1);
    while (!ra.done && !ra.error_code && tu_recv(&a, &m, 10000)) {
        tresult_add(&ra, &m);
        proto_msg_destroy(&m);
    }
    check(ra.done && ra.finish == PROTO_FINISH_CANCELLED, "A ends with finish cancelled");
    check(ra.n_tokens < 200, "A was cut short (%d tokens)", ra.n_tokens);
    int b_runs = 0;
    while (!b_runs && tu_recv(&b, &m, 10000)) {
        b_runs = m.type == PROTO_T_TOKEN;
        tresult_add(&rb, &m);
        proto_msg_destroy(&m);
    }
    check(b_runs, "after the cancel the waiting request is admitted");
    /* cancelling a request that is still queued ends it at once */
    tc_submit(&c, 4, &longr);
    tu_sleep_ms(50);
    tu_cancel(&c, 4);
    int c_done = tu_recv(&c, &m, 5000) && m.type == PROTO_T_DONE && m.finish == PROTO_FINISH_CANCELLED;
    if (c_done) proto_msg_destroy(&m);
    check(c_done, "a queued request cancels at once");
    tu_cancel(&b, 2);
    while (!rb.done && !rb.error_code && tu_recv(&b, &m, 10000)) {
        tresult_add(&rb, &m);
        proto_msg_destroy(&m);
    }
    check(rb.done && rb.finish == PROTO_FINISH_CANCELLED, "B cancelled");
    treq shortr = {"Short", 4, 0, 0, 0, 0, NULL};
    tc_submit(&c, 5, &shortr);
    while (!rc.done && !rc.error_code && tu_recv(&c, &m, 10000)) {
        tresult_add(&rc, &m);
        proto_msg_destroy(&m);
    }
    check(rc.done && rc.finish == PROTO_FINISH_LENGTH && rc.n_tokens == 4, "the freed slot serves the next request");

    /* gpt2c: overloaded -> exit 3 while the slot and the queue are both taken */
    tc_submit(&a, 6, &longr);
    int a_runs = 0;
    while (!a_runs && tu_recv(&a, &m, 10000)) {
        a_runs = m.type == PROTO_T_TOKEN;
        proto_msg_destroy(&m);
    }
    tc_submit(&b, 7, &longr);
    tu_sleep_ms(100);
    char bin[600], *out;
    size_t out_len;
    snprintf(bin, sizeof(bin), "%s/gpt2c", tu.build);
    char *argv[] = {bin, "--connect", d.client_ep, "x", NULL};
    int code = tu_run_capture(argv, &out, &out_len, 10000);
    free(out);
    check(code == 3, "gpt2c exits 3 on overloaded (got %d)", code);
    tresult_free(&ra);
    tresult_free(&rb);
    tresult_free(&rc);
    tu_client_close(&a);
    tu_client_close(&b);
    tu_client_close(&c);
    check(tu_daemon_stop(&d), "the small daemon stops cleanly on SIGTERM");
}

/* A client that disappears mid-stream: the broker cancels its request on the worker. */
static void test_vanish(const tu_daemon *d) {
    tu_client a;
    tu_client_open(&a, d->client_ep);
    treq longr = {"Vanishing act", 200, 0, 0, 0, 0, NULL};
    tc_submit(&a, 77, &longr);
    proto_msg m;
    int streaming = 0;
    while (!streaming && tu_recv(&a, &m, 10000)) {
        streaming = m.type == PROTO_T_TOKEN;
        proto_msg_destroy(&m);
    }
    check(streaming, "the soon-to-vanish client streams");
    tu_client_close(&a); /* gone, without a cancel */
    tu_client s;
    tu_client_open(&s, d->client_ep);
    int freed = 0;
    double t0 = proto_clock_ms();
    while (!freed && proto_clock_ms() - t0 < 3000) {
        if (tu_stats(&s, &m)) {
            int credit = 0, slots = 0;
            for (uint32_t i = 0; i < m.n_worker_list; i++) {
                credit += m.worker_list[i].credit;
                slots += m.worker_list[i].slots;
            }
            freed = m.running == 0 && credit == slots;
            proto_msg_destroy(&m);
        }
        if (!freed) tu_sleep_ms(20);
    }
    /* 200 tokens at >= 10 ms a step would take > 2 s: freed sooner means it was cancelled */
    check(freed, "the vanished client's slot is free again after %.0f ms", proto_clock_ms() - t0);
    check(tu_log_contains(d->log, "cancelled by the broker"), "the worker logged the cancel");
    tu_client_close(&s);
}

/* SIGKILL a worker with requests in flight: each of them ends with an error frame, the others
 * finish, a new worker replaces it, and the daemon keeps serving. */
static void test_worker_kill(const tu_daemon *d) {
    enum { N = 8 };
    tu_client cl[N];
    tresult res[N];
    treq longr = {"Kill switch", 150, 0, 0, 0, 0, NULL};
    for (int i = 0; i < N; i++) {
        tu_client_open(&cl[i], d->client_ep);
        memset(&res[i], 0, sizeof(res[i]));
        tc_submit(&cl[i], 500 + (uint64_t)i, &longr);
    }
    /* all streaming */
    for (int i = 0; i < N; i++) {
        proto_msg m;
        while (res[i].n_tokens == 0 && !res[i].error_code && tu_recv(&cl[i], &m, 10000)) {
            tresult_add(&res[i], &m);
            proto_msg_destroy(&m);
        }
    }
    tu_client s;
    tu_client_open(&s, d->client_ep);
    proto_msg m;
    pid_t victim = 0;
    int victim_running = 0;
    if (tu_stats(&s, &m)) {
        for (uint32_t i = 0; i < m.n_worker_list; i++)
            if (m.worker_list[i].running > victim_running) {
                victim = m.worker_list[i].pid;
                victim_running = m.worker_list[i].running;
            }
        proto_msg_destroy(&m);
    }
    check(victim > 0 && victim_running > 0, "a worker with requests in flight (%d)", victim_running);
    if (victim > 0) kill(victim, SIGKILL);
    /* its requests are replayed on the other worker: every stream goes on, without a gap or a repeat */
    int ended = 0, completed = 0, contiguous = 0, same_text = 0;
    collect(cl, res, N, 500, 60000);
    for (int i = 0; i < N; i++) {
        ended += res[i].done || res[i].error_code;
        completed += res[i].done && res[i].finish == PROTO_FINISH_LENGTH && res[i].n_tokens == 150;
        contiguous += !res[i].bad_index;
        same_text += res[i].done && res[i].text_len == res[i].streamed_len &&
                     (res[i].text_len == 0 || memcmp(res[i].text, res[i].streamed, res[i].text_len) == 0);
    }
    check(ended == N, "every request ended with a frame (%d/%d)", ended, N);
    check(completed == N, "every request completed all 150 tokens, the killed worker's %d included (%d/%d)",
          victim_running, completed, N);
    check(contiguous == N, "token indexes stayed 0, 1, 2, ... across the replay (%d/%d)", contiguous, N);
    check(same_text == N, "streamed text == done text across the replay (%d/%d)", same_text, N);
    check(tu_wait_workers(d, 2, 30000), "the killed worker is replaced");
    treq shortr = {"After the storm", 6, 0, 0, 0, 0, NULL};
    tresult r = {0};
    tc_submit(&s, 9, &shortr);
    while (!r.done && !r.error_code && tu_recv(&s, &m, 10000)) {
        tresult_add(&r, &m);
        proto_msg_destroy(&m);
    }
    check(r.done && r.n_tokens == 6, "the daemon keeps serving");
    tresult_free(&r);
    for (int i = 0; i < N; i++) {
        tresult_free(&res[i]);
        tu_client_close(&cl[i]);
    }
    tu_client_close(&s);
}

/* Hostile and mistaken frames get specific error frames; the broker stays up. */
static void test_bad_frames(const tu_daemon *d) {
    tu_client c;
    tu_client_open(&c, d->client_ep);
    proto_msg m;
    tu_send_raw(&c, "\xc1garbage", 8);
    int ok = tu_recv(&c, &m, 3000) && m.type == PROTO_T_ERROR && m.code == PROTO_CODE_BAD_REQUEST &&
             !(m.has & PROTO_HAS(PF_ID));
    if (ok) proto_msg_destroy(&m);
    check(ok, "garbage gets bad_request without an id");

    /* a submit from a future protocol version: unsupported_version, addressed to its id */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "t", 1);
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "submit", 6);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "v", 1);
    msgpack_pack_int(&pk, 99);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "id", 2);
    msgpack_pack_str(&pk, 3);
    msgpack_pack_str_body(&pk, "abc", 3);
    tu_send_raw(&c, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    ok = tu_recv(&c, &m, 3000) && m.type == PROTO_T_ERROR && m.code == PROTO_CODE_UNSUPPORTED_VERSION &&
         m.id.is_str && m.id.str.len == 3 && memcmp(m.id.str.ptr, "abc", 3) == 0;
    if (ok) proto_msg_destroy(&m);
    check(ok, "a future version gets unsupported_version with the request's id");

    /* a prompt the engine refuses (longer than the context) */
    static char big[8192];
    memset(big, 'x', sizeof(big) - 1);
    for (size_t i = 0; i + 1 < sizeof(big); i += 2) big[i] = ' ';
    treq r = {big, 4, 0, 0, 0, 0, NULL};
    tc_submit(&c, 11, &r);
    ok = tu_recv(&c, &m, 5000) && m.type == PROTO_T_ERROR && m.code == PROTO_CODE_INVALID_REQUEST && m.id.num == 11;
    if (ok) proto_msg_destroy(&m);
    check(ok, "a prompt longer than the context gets invalid_request");

    /* duplicate id while live */
    treq longr = {"Twice", 100, 0, 0, 0, 0, NULL};
    tc_submit(&c, 12, &longr);
    tc_submit(&c, 12, &longr);
    int dup = 0, done = 0;
    while (!(dup && done) && tu_recv(&c, &m, 10000)) {
        if (m.type == PROTO_T_ERROR && m.code == PROTO_CODE_DUPLICATE_ID) dup = 1;
        if (m.type == PROTO_T_TOKEN && m.index == 0) tu_cancel(&c, 12);
        if (m.type == PROTO_T_DONE) done = 1;
        proto_msg_destroy(&m);
    }
    check(dup, "a second submit with a live id gets duplicate_id");
    check(done, "the first one still ends");
    /* a worker-only message on the client link */
    proto_msg_init(&m, PROTO_T_CREDIT);
    m.credit = 5;
    tu_send(&c, &m);
    ok = tu_recv(&c, &m, 3000) && m.type == PROTO_T_ERROR && m.code == PROTO_CODE_BAD_REQUEST;
    if (ok) proto_msg_destroy(&m);
    check(ok, "a worker message from a client gets bad_request");
    tu_client_close(&c);
}

/* gpt2c: streaming output equals gpt2-tool's, batch results match gpt2-tool batch, exit codes. */
static void test_cli(const tu_daemon *d) {
    char gpt2c[600], tool[600], *out, *ref;
    size_t out_len, ref_len;
    snprintf(gpt2c, sizeof(gpt2c), "%s/gpt2c", tu.build);
    snprintf(tool, sizeof(tool), "%s/gpt2-tool", tu.build);
    char *a1[] = {gpt2c, "--connect", (char *)d->client_ep, "-n", "30", "--temperature", "0.9", "--top-k", "50",
                  "--seed", "42", "The meaning of life is", NULL};
    char *a2[] = {tool, "generate", "--model", tu.model, "--prompt", "The meaning of life is", "-n", "30",
                  "--temperature", "0.9", "--top-k", "50", "--seed", "42", "--threads", "1", NULL};
    int rc1 = tu_run_capture(a1, &out, &out_len, 30000);
    int rc2 = tu_run_capture(a2, &ref, &ref_len, 30000);
    check(rc1 == 0 && rc2 == 0 && out_len == ref_len && memcmp(out, ref, out_len) == 0,
          "gpt2c prints exactly what gpt2-tool generate prints (rc %d/%d)", rc1, rc2);
    free(out);
    free(ref);

    /* batch: the same input through gpt2c batch and gpt2-tool batch */
    char in[700], o1[700], o2[700];
    snprintf(in, sizeof(in), "%s/batch-in.jsonl", tu.tmp);
    snprintf(o1, sizeof(o1), "%s/batch-gpt2c.jsonl", tu.tmp);
    snprintf(o2, sizeof(o2), "%s/batch-tool.jsonl", tu.tmp);
    FILE *f = fopen(in, "w");
    for (int i = 0; i < 12; i++)
        fprintf(f, "{\"id\": \"b-%d\", \"prompt\": \"Line %d says\", \"max_tokens\": %d, \"temperature\": %s, "
                   "\"seed\": %d, \"top_k\": 40}\n",
                i, i, 5 + i, i % 2 ? "0.8" : "0", i);
    fclose(f);
    char *b1[] = {gpt2c, "batch", in, "--connect", (char *)d->client_ep, "-c", "5", "-o", o1, NULL};
    char *b2[] = {tool, "batch", "--model", tu.model, "--input", in, "--output", o2, "--concurrency", "5",
                  "--threads", "1", NULL};
    rc1 = tu_run_capture(b1, &out, &out_len, 60000);
    free(out);
    rc2 = tu_run_capture(b2, &out, &out_len, 60000);
    free(out);
    check(rc1 == 0 && rc2 == 0, "both batch runs succeed (%d, %d)", rc1, rc2);
    FILE *f1 = fopen(o1, "r"), *f2 = fopen(o2, "r");
    int lines = 0, same = 0;
    char l1[65536], l2[65536];
    while (f1 && f2 && fgets(l1, sizeof(l1), f1) && fgets(l2, sizeof(l2), f2)) {
        lines++;
        json_t *j1 = json_loads(l1, 0, NULL), *j2 = json_loads(l2, 0, NULL);
        int keys_same = json_object_size(j1) == json_object_size(j2);
        const char *key;
        json_t *v;
        json_object_foreach(j1, key, v) keys_same &= json_object_get(j2, key) != NULL;
        static const char *const fields[] = {"id", "text", "tokens", "finish_reason"};
        int vals_same = keys_same;
        for (int k = 0; k < 4; k++) vals_same &= json_equal(json_object_get(j1, fields[k]), json_object_get(j2, fields[k]));
        vals_same &= json_equal(json_object_get(json_object_get(j1, "usage"), "completion_tokens"),
                                json_object_get(json_object_get(j2, "usage"), "completion_tokens"));
        if (!vals_same) printf("  batch line %d differs:\n    %s    %s", lines, l1, l2);
        same += vals_same;
        json_decref(j1);
        json_decref(j2);
    }
    if (f1) fclose(f1);
    if (f2) fclose(f2);
    check(lines == 12 && same == 12, "gpt2c batch == gpt2-tool batch on %d/12 lines (same fields and values)", same);

    /* unreachable broker: exit 4 */
    char nowhere[700];
    snprintf(nowhere, sizeof(nowhere), "ipc://%s/nobody.sock", tu.tmp);
    char *a3[] = {gpt2c, "--connect", nowhere, "x", NULL};
    double t0 = proto_clock_ms();
    rc1 = tu_run_capture(a3, &out, &out_len, 20000);
    free(out);
    check(rc1 == 4, "gpt2c exits 4 when no broker answers (got %d after %.0f ms)", rc1, proto_clock_ms() - t0);
    /* bad flag: exit 1 */
    char *a4[] = {gpt2c, "--temperature", "hot", "x", NULL};
    rc1 = tu_run_capture(a4, &out, &out_len, 5000);
    free(out);
    check(rc1 == 1, "gpt2c exits 1 on a bad flag");
    /* a parameter the protocol refuses: exit 1 before anything is sent (local check) or 2 */
    char *a5[] = {gpt2c, "--connect", (char *)d->client_ep, "--top-p", "0", "x", NULL};
    rc1 = tu_run_capture(a5, &out, &out_len, 10000);
    free(out);
    check(rc1 == 1 || rc1 == 2, "gpt2c refuses top-p 0 (exit %d)", rc1);
    /* stats */
    char *a6[] = {gpt2c, "stats", "--connect", (char *)d->client_ep, NULL};
    rc1 = tu_run_capture(a6, &out, &out_len, 10000);
    check(rc1 == 0 && out && strstr(out, "tokens/s") && strstr(out, "local-0") && strstr(out, "p99"),
          "gpt2c stats prints the broker's state");
    free(out);

    /* Ctrl-C: SIGINT to a streaming gpt2c cancels and exits 130 */
    char log[700];
    snprintf(log, sizeof(log), "%s/gpt2c-int.log", tu.tmp);
    char *a7[] = {gpt2c, "--connect", (char *)d->client_ep, "-n", "200", "Interrupt me", NULL};
    pid_t p = tu_spawn(a7, log);
    tu_sleep_ms(700);
    kill(p, SIGINT);
    int status = tu_reap(p, 5000);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 130, "gpt2c exits 130 on Ctrl-C (status %d)", status);
}

/* Workers started elsewhere: a broker with --workers 0 queues a request until a worker connects
 * by itself, serves through it, and the worker re-registers with a restarted broker. */
static void test_remote_worker(void) {
    tu_daemon d;
    check(daemon_start(&d, "remote", 0, 4, 8, 0), "a broker without local workers starts");
    tu_client c;
    tu_client_open(&c, d.client_ep);
    treq r = {"Far away", 5, 0, 0, 0, 0, NULL};
    tc_submit(&c, 1, &r);
    tu_sleep_ms(200);
    char wbin[600], wlog[700];
    snprintf(wbin, sizeof(wbin), "%s/gpt2d-worker", tu.build);
    snprintf(wlog, sizeof(wlog), "%s/remote-worker.log", tu.tmp);
    char *argv[] = {wbin, "--model", tu.model, "--connect", d.worker_ep, "--slots", "2", "--threads", "1",
                    "--name", "far-1", NULL};
    pid_t w = tu_spawn(argv, wlog);
    tresult res = {0};
    proto_msg m;
    while (!res.done && !res.error_code && tu_recv(&c, &m, 20000)) {
        tresult_add(&res, &m);
        proto_msg_destroy(&m);
    }
    check(res.done && res.n_tokens == 5, "the queued request is served once a worker connects by itself");
    tresult_free(&res);
    int remote = 0;
    if (tu_stats(&c, &m)) {
        remote = m.n_worker_list == 1 && !m.worker_list[0].local && m.worker_list[0].slots == 2;
        proto_msg_destroy(&m);
    }
    check(remote, "stats lists it as a remote worker with its 2 slots");
    tu_client_close(&c);
    check(tu_daemon_stop(&d), "the broker stops");
    char bin[600];
    snprintf(bin, sizeof(bin), "%s/gpt2d", tu.build);
    char *dargv[] = {bin, "--workers", "0", "--listen", d.client_ep, "--worker-listen", d.worker_ep, NULL};
    d.pid = tu_spawn(dargv, d.log);
    check(tu_wait_workers(&d, 1, 15000), "the worker re-registers with a restarted broker");
    tu_client_open(&c, d.client_ep);
    tc_submit(&c, 2, &r);
    while (!res.done && !res.error_code && tu_recv(&c, &m, 20000)) {
        tresult_add(&res, &m);
        proto_msg_destroy(&m);
    }
    check(res.done && res.n_tokens == 5, "and serves again");
    tresult_free(&res);
    tu_client_close(&c);
    tu_daemon_stop(&d);
    kill(w, SIGTERM);
    int status = tu_reap(w, 10000);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the worker stops cleanly on SIGTERM");
}

int main(void) {
    check(tu_init("e2e", 500) == 0, "gpt2-tool mkmodel makes the small model");

    tu_daemon d;
    int up = daemon_start(&d, "main", 2, 32, 256, 10);
    check(up, "gpt2d starts with 2 workers");
    if (up) {
        test_concurrent(&d);
        test_bad_frames(&d);
        test_vanish(&d);
        test_cli(&d);
        test_worker_kill(&d);
        check(tu_daemon_stop(&d), "gpt2d stops cleanly on SIGTERM");
        check(tu_log_contains(d.log, "ready: 2 worker(s)"), "the daemon logged readiness");
    }
    test_cancel_and_overload();
    test_remote_worker();
    /* under SAN=1 the daemons and workers report memory errors and leaks into their logs */
    static const char *const logs[] = {"main.log", "small.log", "remote.log", "remote-worker.log"};
    for (int i = 0; i < 4; i++) {
        char path[700];
        snprintf(path, sizeof(path), "%s/%s", tu.tmp, logs[i]);
        check(!tu_log_contains(path, "Sanitizer") && !tu_log_contains(path, "runtime error:"),
              "%s: no sanitizer report", logs[i]);
    }
    tu_kill_all();
    zmq_ctx_term(tu.ctx);
    return check_done("test_e2e");
}
