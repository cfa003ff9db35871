/* test_chaos.c — crash-transparent streaming: requests survive their workers.
 *
 * A broker with 2 local workers (small random model) runs the same 200 requests at 64 concurrent
 * twice: undisturbed, then while a killer SIGKILLs a worker at random moments (at least 10 kills).
 * Every request of the second run must complete, and its streamed text, done text, tokens, finish
 * and usage must be byte-identical to the first run's (the broker replays a lost worker's requests
 * with the tokens already streamed; batch invariance and the counter-based sampler make the
 * continuation exact). The workload mixes greedy and sampled requests, multi-byte stop strings
 * and multi-byte UTF-8. Then: a worker that stops (SIGSTOP) without exiting is fenced after the
 * liveness timeout and its requests finish elsewhere, identical; and when the last worker dies,
 * the client gets a no_worker error within a bounded time instead of silence.
 * Prints: requests, kills, replays, mismatches. Env: BUILD, GPT2D_TMP. */
#include "check.h"
#include "tutil.h"

#define N_REQ 200
#define CONCURRENCY 64
#define MIN_KILLS 10
#define MAX_KILLS 16

/* Runs requests [0, n) with `concurrency` in flight on one connection; with kill, SIGKILLs a busy
 * worker every 400..900 ms (random) while requests remain, MAX_KILLS at most. Returns the kills. */
static int run_load(const tu_daemon *d, tu_result *res, int n, int concurrency, int kill_mode, unsigned *seed) {
    tu_client c, s;
    tu_client_open(&c, d->client_ep);
    tu_client_open(&s, d->client_ep);
    int next = 0, ended = 0, inflight = 0, kills = 0;
    double deadline = proto_clock_ms() + 150000, next_kill = proto_clock_ms() + 300;
    while (ended < n && proto_clock_ms() < deadline) {
        while (inflight < concurrency && next < n) {
            tu_req r;
            tu_req_make(&r, next, 24);
            tu_submit(&c, (uint64_t)next + 1, &r);
            next++;
            inflight++;
        }
        proto_msg m;
        if (tu_recv(&c, &m, 20)) {
            if ((m.has & PROTO_HAS(PF_ID)) && !m.id.is_str && m.id.num >= 1 && m.id.num <= (uint64_t)n) {
                tu_result *r = &res[m.id.num - 1];
                if (!r->done && !r->error_code && tu_result_add(r, &m)) {
                    ended++;
                    inflight--;
                }
            }
            proto_msg_destroy(&m);
        }
        if (kill_mode && kills < MAX_KILLS && proto_clock_ms() >= next_kill) {
            pid_t pids[8];
            int running[8];
            int nw = tu_worker_pids(&s, pids, running, 8);
            int busy = 0;
            for (int i = 0; i < nw; i++) busy += running[i] > 0;
            if (busy > 0) { /* a worker with requests on it, at random */
                int pick = (int)(rand_r(seed) % (unsigned)busy);
                for (int i = 0; i < nw; i++)
                    if (running[i] > 0 && pick-- == 0) {
                        kill(pids[i], SIGKILL);
                        kills++;
                        break;
                    }
            }
            next_kill = proto_clock_ms() + 400 + (double)(rand_r(seed) % 500);
        }
    }
    tu_client_close(&c);
    tu_client_close(&s);
    return kills;
}

static void test_kills(const tu_daemon *d, tu_result *ref) {
    unsigned seed = (unsigned)time(NULL);
    printf("  killer seed %u\n", seed);
    static tu_result res[N_REQ];
    double t0 = proto_clock_ms();
    int ref_kills = run_load(d, ref, N_REQ, CONCURRENCY, 0, &seed);
    printf("  undisturbed run: %.1f s\n", (proto_clock_ms() - t0) / 1000);
    int ref_ok = 0;
    for (int i = 0; i < N_REQ; i++) ref_ok += ref[i].done && !ref[i].bad_index;
    check(ref_kills == 0 && ref_ok == N_REQ, "the undisturbed run completes (%d/%d)", ref_ok, N_REQ);
    check(tu_wait_workers(d, 2, 30000), "workers idle before the chaos run");

    t0 = proto_clock_ms();
    int kills = run_load(d, res, N_REQ, CONCURRENCY, 1, &seed);
    printf("  chaos run: %.1f s\n", (proto_clock_ms() - t0) / 1000);
    int completed = 0, mismatches = 0, errors = 0;
    for (int i = 0; i < N_REQ; i++) {
        completed += res[i].done;
        errors += res[i].error_code != 0;
        if (!tu_result_same(&res[i], &ref[i])) {
            mismatches++;
            if (mismatches <= 5)
                printf("  request %d differs: '%s' (%d tokens, finish %d, error %d %s) vs undisturbed '%s' (%d tokens, finish %d)\n",
                       i, res[i].streamed ? res[i].streamed : "", res[i].n_tokens, (int)res[i].finish,
                       res[i].error_code, res[i].reason, ref[i].streamed ? ref[i].streamed : "", ref[i].n_tokens,
                       (int)ref[i].finish);
        }
    }
    /* how many requests the broker moved: one log line per replay */
    int replays = 0;
    FILE *f = fopen(d->log, "r");
    char line[4096];
    while (f && fgets(line, sizeof(line), f)) replays += strstr(line, "replayed after") != NULL;
    if (f) fclose(f);
    printf("chaos: requests %d, kills %d, replays %d, completed %d, errors %d, mismatches %d\n", N_REQ, kills,
           replays, completed, errors, mismatches);
    check(kills >= MIN_KILLS, "at least %d workers killed with SIGKILL mid-run (%d)", MIN_KILLS, kills);
    check(replays > 0, "requests were replayed on another worker (%d)", replays);
    check(completed == N_REQ, "every request completed (%d/%d)", completed, N_REQ);
    check(mismatches == 0, "every output byte-identical to the undisturbed run (%d mismatches)", mismatches);
    check(tu_wait_workers(d, 2, 30000), "both workers are back");
    for (int i = 0; i < N_REQ; i++) tu_result_free(&res[i]);
}

/* A worker that hangs (SIGSTOP) is fenced after PROTO_LIVENESS heartbeats: its requests finish on
 * the other worker, identical; once it runs again its stale frames are ignored and it rejoins. */
static void test_fence(const tu_daemon *d, const tu_result *ref) {
    enum { N = 12 };
    tu_result res[N];
    memset(res, 0, sizeof(res));
    tu_client c, s;
    tu_client_open(&c, d->client_ep);
    tu_client_open(&s, d->client_ep);
    for (int i = 0; i < N; i++) {
        tu_req r;
        tu_req_make(&r, i, 24);
        tu_submit(&c, 9000 + (uint64_t)i, &r);
    }
    proto_msg m;
    int streaming = 0;
    while (!streaming && tu_recv(&c, &m, 10000)) {
        if (m.id.num >= 9000 && m.id.num < 9000 + N) tu_result_add(&res[m.id.num - 9000], &m);
        streaming = m.type == PROTO_T_TOKEN;
        proto_msg_destroy(&m);
    }
    pid_t pids[8], victim = 0;
    int running[8];
    int nw = tu_worker_pids(&s, pids, running, 8);
    for (int i = 0; i < nw; i++)
        if (running[i] > 0 && !victim) victim = pids[i];
    check(victim > 0, "a busy worker to stop");
    if (victim > 0) kill(victim, SIGSTOP);
    double t_stop = proto_clock_ms();
    int ended = 0;
    for (int i = 0; i < N; i++) ended += res[i].done || res[i].error_code;
    while (ended < N && proto_clock_ms() - t_stop < 30000) {
        if (!tu_recv(&c, &m, 200)) continue;
        if (!m.id.is_str && m.id.num >= 9000 && m.id.num < 9000 + N) {
            tu_result *r = &res[m.id.num - 9000];
            if (!r->done && !r->error_code && tu_result_add(r, &m)) ended++;
        }
        proto_msg_destroy(&m);
    }
    double dt = proto_clock_ms() - t_stop;
    if (victim > 0) kill(victim, SIGCONT);
    int same = 0;
    for (int i = 0; i < N; i++) same += tu_result_same(&res[i], &ref[i]);
    printf("  fence: all ended %.1f s after SIGSTOP\n", dt / 1000);
    check(ended == N, "every request of the stopped worker ended (%d/%d)", ended, N);
    check(same == N, "identical to the undisturbed run (%d/%d)", same, N);
    check(tu_log_contains(d->log, "lost: silent"), "the silent worker was fenced (logged)");
    check(tu_wait_workers(d, 2, 20000), "after SIGCONT the fenced worker rejoins with a new link");
    for (int i = 0; i < N; i++) tu_result_free(&res[i]);
    tu_client_close(&c);
    tu_client_close(&s);
}

/* The only worker (remote, not restarted) dies mid-request: an error frame, not silence. */
static void test_no_worker(void) {
    tu_daemon d;
    check(tu_daemon_start(&d, "lonely", 0, 4, NULL), "a broker without local workers starts");
    char wbin[600], log[700];
    snprintf(wbin, sizeof(wbin), "%s/gpt2d-worker", tu.build);
    snprintf(log, sizeof(log), "%s/lonely-worker.log", tu.tmp);
    char *argv[] = {wbin, "--model", tu.model, "--connect", d.worker_ep, "--slots", "4", "--threads", "1",
                    "--debug-step-delay-ms", "50", NULL};
    pid_t w = tu_spawn(argv, log);
    check(tu_wait_workers(&d, 1, 30000), "the remote worker joins");
    tu_client c;
    tu_client_open(&c, d.client_ep);
    tu_req r;
    tu_req_make(&r, 0, 24);
    r.max_tokens = 200;
    tu_submit(&c, 1, &r);
    proto_msg m;
    tu_result res = {0};
    while (res.n_tokens == 0 && !res.error_code && tu_recv(&c, &m, 10000)) {
        tu_result_add(&res, &m);
        proto_msg_destroy(&m);
    }
    check(res.n_tokens > 0, "the request streams");
    kill(w, SIGKILL);
    tu_reap(w, 5000);
    double t0 = proto_clock_ms();
    while (!res.done && !res.error_code && tu_recv(&c, &m, 30000)) {
        tu_result_add(&res, &m);
        proto_msg_destroy(&m);
    }
    double dt = proto_clock_ms() - t0;
    printf("  no worker: error %d (%s) %.1f s after the kill\n", res.error_code, res.reason, dt / 1000);
    check(res.error_code == PROTO_CODE_WORKER_LOST && strcmp(res.reason, "no_worker") == 0,
          "the client gets worker_lost / no_worker (%d %s)", res.error_code, res.reason);
    check(dt < (PROTO_HEARTBEAT_MS * PROTO_LIVENESS + PROTO_NO_WORKER_MS + 3000),
          "within the bound (liveness + no-worker timeout): %.1f s", dt / 1000);
    tu_result_free(&res);
    tu_client_close(&c);
    check(tu_daemon_stop(&d), "the broker stops cleanly");
}

int main(void) {
    check(tu_init("chaos", 420) == 0, "the small model is made");
    tu_daemon d;
    char *extra[] = {"--restart-max-ms", "300", "--debug-step-delay-ms", "40", NULL};
    int up = tu_daemon_start(&d, "chaos", 2, 32, extra);
    check(up, "gpt2d starts with 2 workers");
    static tu_result ref[N_REQ];
    if (up) {
        test_kills(&d, ref);
        test_fence(&d, ref);
        check(tu_daemon_stop(&d), "gpt2d stops cleanly on SIGTERM");
    }
    test_no_worker();
    static const char *const logs[] = {"chaos.log", "lonely.log", "lonely-worker.log"};
    for (int i = 0; i < 3; i++) {
        char path[800];
        snprintf(path, sizeof(path), "%s/%s", tu.tmp, logs[i]);
        check(!tu_log_contains(path, "Sanitizer") && !tu_log_contains(path, "runtime error:"),
              "%s: no sanitizer report", logs[i]);
    }
    for (int i = 0; i < N_REQ; i++) tu_result_free(&ref[i]);
    zmq_ctx_term(tu.ctx);
    tu_kill_all();
    return check_done("test_chaos");
}
