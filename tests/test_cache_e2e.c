/* test_cache_e2e.c — the prefix cache through gpt2d (one local worker):
 *  - done.usage.cached_tokens: 0 for a cold prompt, the whole pages of its prompt but the last
 *    token once the same prompt ran, and the same tokens both times;
 *  - the worker's KV pages and prefix-cache counters reach the broker's stats and `gpt2c stats`;
 *  - after the worker is SIGKILLed and restarted by the broker, the cache is cold (0 cached) and
 *    the output is still the same. */
#include "check.h"
#include "tutil.h"

enum { N_IDS = 80 };

typedef struct {
    int cached, n_tokens, done;
    int32_t tokens[64];
} outcome;

/* Submits the fixed 80-id prompt (greedy, 12 tokens) as id and waits for its done. 1 on success. */
static int run_once(tu_client *c, uint64_t id, outcome *o) {
    static int32_t ids[N_IDS];
    for (int i = 0; i < N_IDS; i++) ids[i] = (i * 7919 + 11) % 50000;
    proto_msg m;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.id = (proto_cid){0, id, {0}};
    m.prompt_ids = ids;
    m.n_prompt_ids = N_IDS;
    m.has = PROTO_HAS(PF_PROMPT_IDS);
    m.max_tokens = 12;
    m.ignore_eos = 1;
    memset(o, 0, sizeof *o);
    if (tu_send(c, &m) != 0) return 0;
    double deadline = proto_clock_ms() + 30000;
    while (!o->done && proto_clock_ms() < deadline) {
        proto_msg r;
        if (tu_recv(c, &r, 500) != 1) continue;
        if (r.type == PROTO_T_DONE && r.id.num == id) {
            o->done = 1;
            o->cached = r.cached_tokens;
            o->n_tokens = r.n_tokens < 64 ? (int)r.n_tokens : 64;
            memcpy(o->tokens, r.tokens, sizeof(int32_t) * o->n_tokens);
        } else if (r.type == PROTO_T_ERROR) {
            o->done = -1;
        }
        proto_msg_destroy(&r);
    }
    return o->done == 1;
}

static int same(const outcome *a, const outcome *b) {
    return a->n_tokens == 12 && a->n_tokens == b->n_tokens && memcmp(a->tokens, b->tokens, sizeof(int32_t) * 12) == 0;
}

/* Waits until the broker's stats show the worker's hit counter at least `hits`; fills kv. */
static int wait_stats(tu_client *c, uint64_t hits, proto_kv_info *kv) {
    double deadline = proto_clock_ms() + 8000;
    while (proto_clock_ms() < deadline) {
        proto_msg m;
        if (tu_stats(c, &m)) {
            int ok = m.n_worker_list == 1 && m.worker_list[0].kv.hit_tokens >= hits && m.worker_list[0].kv.pages > 0;
            if (m.n_worker_list == 1) *kv = m.worker_list[0].kv;
            proto_msg_destroy(&m);
            if (ok) return 1;
        }
        tu_sleep_ms(100);
    }
    return 0;
}

int main(void) {
    if (tu_init("cache_e2e", 120) != 0) {
        check(0, "test environment (model, ZeroMQ)");
        return check_done("test_cache_e2e");
    }
    tu_daemon d;
    char *extra[] = {"--max-running", "8", NULL};
    int up = tu_daemon_start(&d, "cache", 1, 2, extra);
    check(up, "gpt2d starts with 1 worker (2 contexts of KV, 8 running)");
    if (!up) return check_done("test_cache_e2e");
    tu_client c;
    tu_client_open(&c, d.client_ep);
    outcome cold, warm, restarted;
    check(run_once(&c, 1, &cold) && cold.cached == 0 && cold.n_tokens == 12, "cold: 12 tokens, 0 cached (%d)",
          cold.cached);
    check(run_once(&c, 2, &warm) && warm.cached == 64 && same(&cold, &warm),
          "the same prompt again: 64 of 80 prompt tokens cached (%d), the same tokens", warm.cached);
    proto_kv_info kv = {0};
    check(wait_stats(&c, 64, &kv) && kv.lookup_tokens == 160 && kv.hit_tokens == 64 && kv.used == 0 && kv.cached > 0,
          "stats: the worker's KV (%d pages, %d used, %d cached) and prefix cache (%llu of %llu prompt tokens)",
          kv.pages, kv.used, kv.cached, (unsigned long long)kv.hit_tokens, (unsigned long long)kv.lookup_tokens);
    char gpt2c[600], *out = NULL;
    size_t out_len = 0;
    snprintf(gpt2c, sizeof gpt2c, "%s/gpt2c", tu.build);
    char *argv[] = {gpt2c, "stats", "--connect", d.client_ep, NULL};
    int rc = tu_run_capture(argv, &out, &out_len, 10000);
    check(rc == 0 && out && strstr(out, "prefix cache: 64 of 160 prompt tokens reused (40.0%)") &&
              strstr(out, "KV pages used/cached/free"),
          "gpt2c stats prints the hit rate and the KV pages:\n%s", out ? out : "");
    free(out);
    pid_t pids[4];
    int running[4];
    int n = tu_worker_pids(&c, pids, running, 4);
    check(n == 1 && pids[0] > 0 && kill(pids[0], SIGKILL) == 0, "the worker is SIGKILLed");
    int back = 0;
    for (int i = 0; i < 300 && !back; i++) { /* a new worker process registered */
        pid_t now[4];
        back = tu_worker_pids(&c, now, running, 4) == 1 && now[0] > 0 && now[0] != pids[0];
        if (!back) tu_sleep_ms(100);
    }
    check(back && tu_wait_workers(&d, 1, 30000), "the broker restarts it");
    check(run_once(&c, 3, &restarted) && restarted.cached == 0 && same(&cold, &restarted),
          "after the restart: cold (%d cached) and the same tokens", restarted.cached);
    tu_client_close(&c);
    check(tu_daemon_stop(&d), "gpt2d stops cleanly");
    check(!tu_log_contains(d.log, "Sanitizer") && !tu_log_contains(d.log, "runtime error:"), "no sanitizer report");
    tu_kill_all();
    zmq_ctx_term(tu.ctx);
    return check_done("test_cache_e2e");
}
