/* test_firsthour.c — the daemon on the paths a new user walks in the first hour (issue 10), with
 * real processes: a second gpt2d on the same ipc:// endpoint is refused and names the first one's
 * pid, a crashed one's stale socket is taken over; a model that cannot load is reported (gpt2d
 * exits non-zero with the reason, a waiting request gets the reason at once, --check-config loads
 * the model); a broker with no worker answers no_worker, also when a worker registered and died
 * between two ticks; Ctrl-C (SIGINT to the daemon's whole process group, as a terminal sends it)
 * does not reach the workers, and a second signal ends the drain at once with shutting_down; a
 * final frame that cannot be encoded ends with internal; the broker bounds a stream by max_tokens;
 * a worker refuses requests beyond the credit it announced; kv_seq_close catches a double
 * release; the CPU check names F16C. A fake worker / fake broker is a DEALER / ROUTER in this
 * process. Env: BUILD, GPT2D_TMP. */
#include "check.h"
#include "cpu.h"
#include "kv.h"
#include "tutil.h"

/* ============================================================================================== */
/* helpers                                                                                         */
/* ============================================================================================== */

/* Starts gpt2d with argv after the binary (NULL-terminated), in its own process group (as a
 * terminal's foreground job), output appended to log. */
static pid_t start_gpt2d(const char *log, char *const *args) {
    static char bin[600];
    snprintf(bin, sizeof(bin), "%s/gpt2d", tu.build);
    char *argv[64] = {bin};
    int n = 1;
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    static const tu_spawn_how own_group = {.own_group = 1};
    return tu_spawn_opts(argv, log, &own_group);
}

static void eps(const char *name, char *client, char *worker, size_t cap) {
    snprintf(client, cap, "ipc://%s/%s-client.sock", tu.tmp, name);
    snprintf(worker, cap, "ipc://%s/%s-worker.sock", tu.tmp, name);
}

/* 1 if the broker at ep answers hello within ms. */
static int answers_hello(const char *ep, int ms) {
    tu_client c;
    if (tu_client_open(&c, ep) < 0) return 0;
    proto_msg h, m;
    proto_msg_init(&h, PROTO_T_HELLO);
    int ok = 0;
    if (tu_send(&c, &h) == 0 && tu_recv(&c, &m, ms)) {
        ok = m.type == PROTO_T_WELCOME;
        proto_msg_destroy(&m);
    }
    tu_client_close(&c);
    return ok;
}

/* Waits for pid to exit within ms. Its exit status, or -1 (killed after ms). */
static int wait_exit(pid_t pid, int ms) {
    int st = tu_reap(pid, ms);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int submit_simple(tu_client *c, uint64_t id, const char *prompt, int max_tokens) {
    proto_msg m;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.id = (proto_cid){0, id, {0}};
    m.prompt = (proto_str){prompt, (uint32_t)strlen(prompt)};
    m.has = PROTO_HAS(PF_PROMPT);
    m.max_tokens = max_tokens;
    return tu_send(c, &m);
}

/* Reads frames of request id until its end (within ms) into r; returns 1 if it ended. The error's
 * message goes to msg (may be NULL). */
static int outcome(tu_client *c, uint64_t id, tu_result *r, char *msg, size_t cap, int ms) {
    double deadline = proto_clock_ms() + ms;
    memset(r, 0, sizeof(*r));
    for (;;) {
        long left = (long)(deadline - proto_clock_ms());
        proto_msg m;
        if (left <= 0 || !tu_recv(c, &m, (int)left)) return 0;
        int end = 0;
        if ((m.has & PROTO_HAS(PF_ID)) && !m.id.is_str && m.id.num == id) {
            if (m.type == PROTO_T_ERROR && msg)
                snprintf(msg, cap, "%.*s", (int)m.message.len, m.message.ptr ? m.message.ptr : "");
            end = tu_result_add(r, &m);
        }
        proto_msg_destroy(&m);
        if (end) return 1;
    }
}

/* A fake worker: a DEALER on the broker's worker endpoint. */
typedef struct {
    tu_client c;
} fake_worker;

static int fw_ready(fake_worker *w, const char *ep, int slots) { return tu_fake_worker_ready(&w->c, ep, slots); }

/* The next request's rid and max_tokens, within ms. 1 or 0. */
static int fw_request(fake_worker *w, uint64_t *rid, int *max_tokens, int ms) {
    double deadline = proto_clock_ms() + ms;
    for (;;) {
        long left = (long)(deadline - proto_clock_ms());
        proto_msg m;
        if (left <= 0 || !tu_recv(&w->c, &m, (int)left)) return 0;
        int got = m.type == PROTO_T_REQUEST;
        if (got) {
            *rid = m.rid;
            *max_tokens = m.max_tokens;
        }
        proto_msg_destroy(&m);
        if (got) return 1;
    }
}

static void fw_token(fake_worker *w, uint64_t rid, int index) {
    proto_msg t;
    proto_msg_init(&t, PROTO_T_TOKEN);
    t.rid = rid;
    t.has = PROTO_HAS(PF_RID);
    t.index = index;
    t.token = 40 + index;
    t.text = (proto_str){"x", 1};
    tu_send(&w->c, &t);
}

/* ============================================================================================== */
/* a second daemon on the same ipc:// endpoint; a stale socket                                     */
/* ============================================================================================== */

static void test_ipc_lock(void) {
    char cep[700], wep[700], log[700], log2[700], log3[700];
    eps("lock", cep, wep, sizeof(cep));
    snprintf(log, sizeof(log), "%s/lock-a.log", tu.tmp);
    snprintf(log2, sizeof(log2), "%s/lock-b.log", tu.tmp);
    snprintf(log3, sizeof(log3), "%s/lock-c.log", tu.tmp);
    char *args[] = {"--workers", "0", "--listen", cep, "--worker-listen", wep, NULL};
    pid_t a = start_gpt2d(log, args);
    check(answers_hello(cep, 5000), "the first gpt2d serves %s", cep);
    pid_t b = start_gpt2d(log2, args);
    int rc = wait_exit(b, 5000);
    check(rc > 0, "a second gpt2d on the same ipc endpoints exits non-zero at once (status %d)", rc);
    char pid[32];
    snprintf(pid, sizeof(pid), "pid %d", (int)a);
    check(tu_log_contains(log2, pid) && tu_log_contains(log2, "another gpt2d"),
          "its message names the running one (%s): see %s", pid, log2);
    check(answers_hello(cep, 3000), "the first one still serves its clients");
    /* a crashed broker leaves its socket file and lock file: the next one takes them over */
    kill(a, SIGKILL);
    tu_reap(a, 5000);
    pid_t c = start_gpt2d(log3, args);
    check(answers_hello(cep, 5000), "after a crash (SIGKILL) a new gpt2d takes the stale socket over");
    kill(c, SIGTERM);
    check(wait_exit(c, 5000) == 0, "and stops cleanly");
    struct stat st;
    check(stat(cep + strlen("ipc://"), &st) != 0 && errno == ENOENT,
          "a clean exit removes the socket file (a client then fails at once instead of waiting)");
}

/* ============================================================================================== */
/* a model that cannot load                                                                        */
/* ============================================================================================== */

static void test_model_cannot_load(void) {
    char cep[700], wep[700], log[700], log2[700], wlog[700], wbin[600];
    snprintf(wbin, sizeof(wbin), "%s/gpt2d-worker", tu.build);
    /* local workers with a ctx the model does not have: gpt2d exits non-zero saying why */
    eps("noload", cep, wep, sizeof(cep));
    snprintf(log, sizeof(log), "%s/noload.log", tu.tmp);
    char *args[] = {"--workers", "1", "--model", tu.model, "--ctx", "512", "--worker-bin", wbin, "--threads", "1",
                    "--listen", cep, "--worker-listen", wep, NULL};
    double t0 = proto_clock_ms();
    pid_t d = start_gpt2d(log, args);
    int rc = wait_exit(d, 20000);
    check(rc > 0, "gpt2d whose workers cannot load the model exits non-zero (status %d, after %.0f ms)", rc,
          proto_clock_ms() - t0);
    check(tu_log_contains(log, "cannot start") && tu_log_contains(log, "exceeds the model's context"),
          "and says why (the worker's reason): see %s", log);

    /* a remote worker that cannot load: the waiting request gets its reason at once */
    eps("noload2", cep, wep, sizeof(cep));
    snprintf(log2, sizeof(log2), "%s/noload2.log", tu.tmp);
    char *args2[] = {"--workers", "0", "--listen", cep, "--worker-listen", wep, NULL};
    d = start_gpt2d(log2, args2);
    tu_client c;
    tu_client_open(&c, cep);
    check(answers_hello(cep, 5000), "broker up");
    submit_simple(&c, 1, "Hello", 4);
    tu_sleep_ms(200);
    snprintf(wlog, sizeof(wlog), "%s/noload2-worker.log", tu.tmp);
    char *wargv[] = {wbin, "--model", tu.model, "--ctx", "512", "--connect", wep + 0, "--name", "remote-x", NULL};
    pid_t w = tu_spawn(wargv, wlog);
    tu_result r;
    char msg[1100] = "";
    int ended = outcome(&c, 1, &r, msg, sizeof(msg), 5000);
    check(ended && r.error_code == 502 && strcmp(r.reason, "model_load_failed") == 0 && strstr(msg, "exceeds"),
          "the waiting request ends at once with model_load_failed and the worker's reason (ended %d, %d %s: %s)",
          ended, r.error_code, r.reason, msg);
    tu_result_free(&r);
    check(wait_exit(w, 5000) == 1, "the worker exits 1");
    check(answers_hello(cep, 3000), "a remote worker's failure does not stop the broker");
    tu_client_close(&c);
    kill(d, SIGTERM);
    wait_exit(d, 5000);

    /* --check-config loads the model the way a worker will */
    char bin[600], clog[700];
    snprintf(bin, sizeof(bin), "%s/gpt2d", tu.build);
    snprintf(clog, sizeof(clog), "%s/checkconfig.log", tu.tmp);
    char *ok[] = {bin, "--check-config", "--model", tu.model, "--worker-bin", wbin, NULL};
    check(tu_run(ok, clog, 20000) == 0, "--check-config passes on a good model");
    char *bad_ctx[] = {bin, "--check-config", "--model", tu.model, "--ctx", "512", "--worker-bin", wbin, NULL};
    check(tu_run(bad_ctx, clog, 20000) > 0 && tu_log_contains(clog, "exceeds the model's context"),
          "--check-config refuses ctx 512 on a 256-position model, saying so");
    /* a model directory whose safetensors is truncated */
    char broken[700], cmd[2200];
    snprintf(broken, sizeof(broken), "%s/broken-model", tu.tmp);
    snprintf(cmd, sizeof(cmd), "cp -r '%s' '%s' && truncate -s 1000 '%s/model.safetensors'", tu.model, broken, broken);
    check(system(cmd) == 0, "broken model made");
    char *bad[] = {bin, "--check-config", "--model", broken, "--worker-bin", wbin, NULL};
    check(tu_run(bad, clog, 20000) > 0 && tu_log_contains(clog, "model.safetensors"),
          "--check-config refuses a truncated model.safetensors, naming it (see %s)", clog);
}

/* ============================================================================================== */
/* no worker                                                                                       */
/* ============================================================================================== */

static void test_no_worker(void) {
    char cep[700], wep[700], cep2[700], wep2[700], log[700], log2[700];
    eps("never", cep, wep, sizeof(cep));
    eps("blink", cep2, wep2, sizeof(cep2));
    snprintf(log, sizeof(log), "%s/never.log", tu.tmp);
    snprintf(log2, sizeof(log2), "%s/blink.log", tu.tmp);
    char *args[] = {"--workers", "0", "--listen", cep, "--worker-listen", wep, NULL};
    char *args2[] = {"--workers", "0", "--listen", cep2, "--worker-listen", wep2, NULL};
    pid_t d1 = start_gpt2d(log, args), d2 = start_gpt2d(log2, args2);
    check(answers_hello(cep, 5000) && answers_hello(cep2, 5000), "brokers up");
    tu_client c1, c2;
    tu_client_open(&c1, cep);
    tu_client_open(&c2, cep2);
    submit_simple(&c1, 1, "Hello", 4); /* a broker that never had a worker */
    submit_simple(&c2, 1, "Hello", 4);
    tu_sleep_ms(100);
    /* a worker that registers and is gone before the broker's next tick: the broker hands it the
     * request, cannot reach it, and must start the no-worker countdown right then */
    fake_worker fw;
    fw_ready(&fw, wep2, 1);
    int linger = 1000;
    zmq_setsockopt(fw.c.sock, ZMQ_LINGER, &linger, sizeof(linger));
    tu_client_close(&fw.c);
    tu_result r1, r2;
    char m1[1100] = "", m2[1100] = "";
    int e1 = outcome(&c1, 1, &r1, m1, sizeof(m1), 15000);
    check(e1 && r1.error_code == 502 && strcmp(r1.reason, "no_worker") == 0 && strstr(m1, "ever"),
          "a broker that never had a worker answers no_worker, saying none ever connected (%d %s: %s)",
          r1.error_code, r1.reason, m1);
    int e2 = outcome(&c2, 1, &r2, m2, sizeof(m2), 15000);
    check(e2 && strcmp(r2.reason, "no_worker") == 0,
          "a worker that registered and vanished between ticks still starts the countdown (%d %s: %s)",
          r2.error_code, r2.reason, m2);
    tu_result_free(&r1);
    tu_result_free(&r2);
    tu_client_close(&c1);
    tu_client_close(&c2);
    kill(d1, SIGTERM);
    kill(d2, SIGTERM);
    wait_exit(d1, 5000);
    wait_exit(d2, 5000);
}

/* ============================================================================================== */
/* Ctrl-C                                                                                          */
/* ============================================================================================== */

static int count_lines(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f)) n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

static void test_ctrl_c(void) {
    char cep[700], wep[700], log[700], wbin[600];
    snprintf(wbin, sizeof(wbin), "%s/gpt2d-worker", tu.build);
    eps("ctrlc", cep, wep, sizeof(cep));
    snprintf(log, sizeof(log), "%s/ctrlc.log", tu.tmp);
    char *args[] = {"--workers", "1", "--slots", "2", "--model", tu.model, "--worker-bin", wbin, "--threads", "1",
                    "--debug-step-delay-ms", "25", "--listen", cep, "--worker-listen", wep, NULL};
    pid_t d = start_gpt2d(log, args);
    tu_daemon td = {.pid = d};
    snprintf(td.client_ep, sizeof(td.client_ep), "%s", cep);
    check(tu_wait_workers(&td, 1, 30000), "daemon with one local worker up");
    tu_client c;
    tu_client_open(&c, cep);
    submit_simple(&c, 7, "Hello", 40); /* about a second at 25 ms a step */
    proto_msg m;
    int got = tu_recv(&c, &m, 5000);
    if (got) proto_msg_destroy(&m);
    /* the terminal's Ctrl-C: SIGINT to the whole foreground process group */
    kill(-d, SIGINT);
    tu_result r;
    int ended = outcome(&c, 7, &r, NULL, 0, 10000);
    check(ended && r.done && r.finish == PROTO_FINISH_LENGTH && r.n_done_tokens == 40,
          "the running request finishes normally during the drain (ended %d, done %d, %d tokens, error %s)", ended,
          r.done, r.n_done_tokens, r.reason);
    tu_result_free(&r);
    double t0 = proto_clock_ms();
    int rc = wait_exit(d, 10000);
    double ms = proto_clock_ms() - t0;
    check(rc == 0, "then gpt2d exits 0 (status %d)", rc);
    check(ms < 2500, "an idle daemon stops at once (%.0f ms; under a second when the machine is quiet)", ms);
    check(count_lines(log, "lost") == 0 && count_lines(log, "restarting") == 0 && count_lines(log, "started pid") == 1,
          "the worker did not take the terminal's SIGINT: not lost, not restarted (see %s)", log);
    tu_client_close(&c);

    /* a second SIGTERM ends the drain at once: the running request gets shutting_down */
    eps("twice", cep, wep, sizeof(cep));
    snprintf(log, sizeof(log), "%s/twice.log", tu.tmp);
    char *args2[] = {"--workers", "1", "--slots", "2", "--model", tu.model, "--worker-bin", wbin, "--threads", "1",
                     "--debug-step-delay-ms", "25", "--listen", cep, "--worker-listen", wep, NULL};
    d = start_gpt2d(log, args2);
    td.pid = d;
    snprintf(td.client_ep, sizeof(td.client_ep), "%s", cep);
    check(tu_wait_workers(&td, 1, 30000), "second daemon up");
    tu_client_open(&c, cep);
    submit_simple(&c, 8, "Hello", 240); /* about 6 s */
    got = tu_recv(&c, &m, 5000);
    if (got) proto_msg_destroy(&m);
    kill(d, SIGTERM);
    tu_sleep_ms(300);
    t0 = proto_clock_ms();
    kill(d, SIGTERM);
    char msg[1100] = "";
    ended = outcome(&c, 8, &r, msg, sizeof(msg), 3000);
    check(ended && r.error_code == 503 && strcmp(r.reason, "shutting_down") == 0,
          "after the second SIGTERM the running request ends with shutting_down at once (ended %d, %d %s, done %d)",
          ended, r.error_code, r.reason, r.done);
    tu_result_free(&r);
    rc = wait_exit(d, 5000);
    check(rc == 0, "and gpt2d exits (status %d, %.0f ms after the second signal)", rc, proto_clock_ms() - t0);
    tu_client_close(&c);
}

/* ============================================================================================== */
/* frames the broker must not pass on                                                              */
/* ============================================================================================== */

static void test_broker_bounds(void) {
    char cep[700], wep[700], log[700];
    eps("bounds", cep, wep, sizeof(cep));
    snprintf(log, sizeof(log), "%s/bounds.log", tu.tmp);
    char *args[] = {"--workers", "0", "--listen", cep, "--worker-listen", wep, NULL};
    pid_t d = start_gpt2d(log, args);
    check(answers_hello(cep, 5000), "broker up");
    tu_client c;
    tu_client_open(&c, cep);
    submit_simple(&c, 1, "Hello", 2);
    submit_simple(&c, 2, "Hello", 2);
    tu_sleep_ms(100); /* they wait: queue_ms > 0 */
    fake_worker fw;
    fw_ready(&fw, wep, 2);
    uint64_t rid[2] = {0, 0};
    int mt[2] = {0, 0};
    int got = fw_request(&fw, &rid[0], &mt[0], 3000) && fw_request(&fw, &rid[1], &mt[1], 3000);
    check(got && mt[0] == 2 && mt[1] == 2, "the fake worker got both requests");
    /* request 1: a done frame whose timings, plus the broker's queue wait, break the encoder's limit */
    proto_msg dn;
    proto_msg_init(&dn, PROTO_T_DONE);
    dn.rid = rid[0];
    dn.has = PROTO_HAS(PF_RID);
    dn.finish = PROTO_FINISH_LENGTH;
    dn.queue_ms = dn.total_ms = 1e12; /* the largest the protocol allows */
    tu_send(&fw.c, &dn);
    /* request 2: one token more than max_tokens */
    for (int i = 0; i < 3; i++) fw_token(&fw, rid[1], i);
    tu_result r1, r2;
    char msg[1100] = "";
    int e1 = outcome(&c, 1, &r1, msg, sizeof(msg), 3000);
    check(e1 && r1.error_code == 500 && strcmp(r1.reason, "internal") == 0,
          "a final frame that cannot be encoded reaches the client as an internal error (ended %d, %d %s: %s)", e1,
          r1.error_code, r1.reason, msg);
    /* the worker broke its contract (docs/SECURITY.md): it is fenced and the request waits for a
     * replay elsewhere; the client never sees more than max_tokens tokens */
    int e2 = outcome(&c, 2, &r2, msg, sizeof(msg), 1500);
    check(!e2 && r2.n_tokens == 2 && tu_log_contains(log, "broke the protocol contract"),
          "a worker sending more than max_tokens tokens is fenced: the client sees max_tokens of them (ended %d, "
          "%d tokens)",
          e2, r2.n_tokens);
    tu_result_free(&r1);
    tu_result_free(&r2);
    tu_client_close(&fw.c);
    tu_client_close(&c);
    kill(d, SIGTERM);
    wait_exit(d, 5000);
}

/* ============================================================================================== */
/* a worker given more than its credit                                                             */
/* ============================================================================================== */

static void test_worker_credit(void) {
    char ep[700], log[700], wbin[600], err[128];
    snprintf(ep, sizeof(ep), "ipc://%s/fakebroker.sock", tu.tmp);
    snprintf(log, sizeof(log), "%s/credit-worker.log", tu.tmp);
    snprintf(wbin, sizeof(wbin), "%s/gpt2d-worker", tu.build);
    void *router = proto_sock_new(tu.ctx, ZMQ_ROUTER, err, sizeof(err));
    check(router && zmq_bind(router, ep) == 0, "fake broker bound");
    char *argv[] = {wbin, "--model", tu.model, "--connect", ep, "--slots", "2", "--threads", "1",
                    "--debug-step-delay-ms", "20", "--name", "w", NULL};
    pid_t w = tu_spawn(argv, log);
    proto_frame f;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int slots = 0;
    unsigned char ident[256];
    size_t ident_len = 0;
    double deadline = proto_clock_ms() + 30000;
    while (!slots && proto_clock_ms() < deadline) {
        zmq_pollitem_t it = {router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) <= 0 || proto_sock_recv(router, 1, &f, ZMQ_DONTWAIT) < 0) continue;
        proto_msg m;
        if (proto_decode(&m, proto_frame_data(&f), proto_frame_size(&f), err, sizeof(err)) == 0 &&
            m.type == PROTO_T_READY) {
            slots = m.slots;
            ident_len = f.ident_len;
            memcpy(ident, f.ident, f.ident_len);
        }
        proto_msg_destroy(&m);
        proto_frame_close(&f);
    }
    check(slots == 2, "the worker announced 2 slots (%d)", slots);
    for (int i = 1; i <= 4; i++) { /* twice its credit */
        proto_msg q;
        proto_msg_init(&q, PROTO_T_REQUEST);
        q.rid = (uint64_t)i;
        q.has = PROTO_HAS(PF_RID) | PROTO_HAS(PF_PROMPT);
        q.prompt = (proto_str){"Hello", 5};
        q.max_tokens = 10;
        proto_sock_send(router, ident, ident_len, &q, 0, &sb, err, sizeof(err));
    }
    int done = 0, over = 0, other = 0;
    deadline = proto_clock_ms() + 20000;
    while (done + over + other < 4 && proto_clock_ms() < deadline) {
        zmq_pollitem_t it = {router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) <= 0 || proto_sock_recv(router, 1, &f, ZMQ_DONTWAIT) < 0) continue;
        proto_msg m;
        if (proto_decode(&m, proto_frame_data(&f), proto_frame_size(&f), err, sizeof(err)) == 0) {
            if (m.type == PROTO_T_DONE) done++;
            else if (m.type == PROTO_T_ERROR && m.reason.len == 11 && memcmp(m.reason.ptr, "over_credit", 11) == 0)
                over++;
            else if (m.type == PROTO_T_ERROR) other++;
        }
        proto_msg_destroy(&m);
        proto_frame_close(&f);
    }
    check(done == 2 && over == 2 && other == 0,
          "a worker given 4 requests on 2 slots runs 2 and refuses 2 with over_credit (done %d, over_credit %d, "
          "other %d)",
          done, over, other);
    kill(w, SIGTERM);
    tu_reap(w, 5000);
    msgpack_sbuffer_destroy(&sb);
    proto_sock_close(&router);
}

/* ============================================================================================== */
/* units: the KV arena, the CPU check                                                              */
/* ============================================================================================== */

static void test_units(void) {
    char err[256];
    kv_config kc = {.n_layer = 1, .n_ctx = 8, .n_embd = 8, .n_head = 2, .n_pages = 2, .max_seqs = 2};
    kv_arena *a = kv_new(&kc, err, sizeof(err));
    check(a != NULL, "kv arena");
    if (a) {
        int ids[8] = {0}, cached;
        int s0 = kv_seq_open(a, ids, 8, 8, &cached);
        check(kv_seq_prepare(a, s0, 8) == 0 && kv_seq_close(a, s0) == 0, "an open sequence is closed");
        check(kv_seq_close(a, s0) == -1, "closing it again is caught");
        check(kv_check(a, err, sizeof(err)) == 0 && kv_seq_open(a, ids, 8, 8, &cached) >= 0 &&
                  kv_seq_open(a, ids, 8, 8, &cached) >= 0 && kv_seq_open(a, ids, 8, 8, &cached) < 0,
              "and the pages were not freed twice: exactly 2 sequences' worth to hand out");
        check(kv_seq_close(a, 7) == -1 && kv_seq_close(a, -1) == -1, "sequences out of range are refused");
        kv_free(a);
    }
    cpu_features all = {.avx2 = 1, .fma = 1, .f16c = 1, .os_ymm = 1}, no_f16c = {.avx2 = 1, .fma = 1, .os_ymm = 1},
                 old = {.os_ymm = 1};
    check(cpu_missing(&all, err, sizeof(err)) == 0, "AVX2 + FMA + F16C: fine");
    check(cpu_missing(&no_f16c, err, sizeof(err)) < 0 && strstr(err, "F16C"), "a CPU without F16C is named: %s",
          err);
    check(cpu_missing(&old, err, sizeof(err)) < 0 && strstr(err, "AVX2") && strstr(err, "FMA"),
          "an old CPU: the message lists what lacks: %s", err);
}

int main(void) {
    if (tu_init("firsthour", 280) < 0) {
        printf("setup failed (BUILD=%s)\n", tu.build);
        return 1;
    }
    test_units();
    test_ipc_lock();
    test_model_cannot_load();
    test_broker_bounds();
    test_worker_credit();
    test_ctrl_c();
    test_no_worker();
    tu_kill_all();
    return check_done("test_firsthour");
}
