/* test_fleet.c — a mixed fleet: workers whose numerics fingerprints differ, and where the broker
 * replays a lost worker's requests.
 *
 * gpt2d runs with no local worker; three gpt2d-worker processes join it on its worker endpoint:
 *   A  avx2 kernels, slow steps (--debug-step-delay-ms), 4 slots: takes the 4 requests and streams
 *      tokens until it is SIGKILLed;
 *   B  forced to the scalar kernels (--isa scalar: another fingerprint), 8 slots: the most credit,
 *      so a broker that ignored fingerprints would replay onto it;
 *   C  avx2 (A's fingerprint), 4 slots.
 * After the kill every request must end on C (the done frame names the worker), complete, and be
 * identical to the same request run again undisturbed; the broker log must show the replays and
 * the workers' fingerprints. Env: BUILD, GPT2D_TMP. */
#include "check.h"
#include "tutil.h"

#define N_REQ 4

/* Starts a worker joining d. */
static pid_t start_worker(const tu_daemon *d, const char *name, int slots, const char *isa, int delay_ms) {
    static char bin[600];
    char log[800], s[16], dl[32], isa_flag[32];
    snprintf(bin, sizeof bin, "%s/gpt2d-worker", tu.build);
    snprintf(log, sizeof log, "%s/%s.log", tu.tmp, name);
    snprintf(s, sizeof s, "%d", slots);
    snprintf(dl, sizeof dl, "--debug-step-delay-ms=%d", delay_ms);
    snprintf(isa_flag, sizeof isa_flag, "--isa=%s", isa);
    char *argv[] = {bin, "--model", tu.model, "--connect", (char *)d->worker_ep, "--name", (char *)name,
                    "--slots", s, "--threads", "1", dl, isa_flag, "--log-level", "info", NULL};
    return tu_spawn(argv, log);
}

/* Waits until the broker log has a line with both a and b. 1, or 0 after ms. */
static int wait_log2(const char *path, const char *a, const char *b, int ms) {
    for (int t = 0; t < ms; t += 50) {
        FILE *f = fopen(path, "r");
        char line[4096];
        int found = 0;
        while (f && !found && fgets(line, sizeof line, f)) found = strstr(line, a) && strstr(line, b);
        if (f) fclose(f);
        if (found) return 1;
        tu_sleep_ms(50);
    }
    return 0;
}

typedef struct {
    tu_result r;
    char worker[64]; /* the done frame's worker name */
} outcome;

/* Reads frames on c until every request in [0, n) ended or ms passed; ids are base + i. */
static int collect(tu_client *c, outcome *o, int n, uint64_t base, int ms) {
    int ended = 0;
    double deadline = proto_clock_ms() + ms;
    while (ended < n && proto_clock_ms() < deadline) {
        proto_msg m;
        if (!tu_recv(c, &m, 500)) continue;
        uint64_t i = m.id.num - base;
        if (i < (uint64_t)n && !o[i].r.done && !o[i].r.error_code) {
            if (m.type == PROTO_T_DONE)
                snprintf(o[i].worker, sizeof o[i].worker, "%.*s", (int)m.name.len, m.name.ptr ? m.name.ptr : "");
            ended += tu_result_add(&o[i].r, &m);
        }
        proto_msg_destroy(&m);
    }
    return ended;
}

static int count_lines(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
    if (f) fclose(f);
    return n;
}

int main(void) {
    if (tu_init("fleet", 150) != 0) {
        check(0, "test environment (model, ZeroMQ)");
        return check_done("test_fleet");
    }
    tu_daemon d;
    check(tu_daemon_start(&d, "fleet", 0, 4, NULL), "gpt2d starts with no local worker");
    pid_t a = start_worker(&d, "wa", 4, "avx2", 150);
    check(wait_log2(d.log, "worker wa", "fingerprint f32/avx2/", 60000), "A (avx2) ready with its fingerprint");

    tu_client c;
    tu_client_open(&c, d.client_ep);
    tu_req req[N_REQ];
    outcome o[N_REQ];
    memset(o, 0, sizeof o);
    for (int i = 0; i < N_REQ; i++) {
        tu_req_make(&req[i], i, 24);
        req[i].max_tokens = 24;
        tu_submit(&c, 100 + (uint64_t)i, &req[i]);
    }
    /* every request streams a few tokens on A */
    double deadline = proto_clock_ms() + 30000;
    int streaming = 0;
    while (streaming < N_REQ && proto_clock_ms() < deadline) {
        proto_msg m;
        if (!tu_recv(&c, &m, 500)) continue;
        uint64_t i = m.id.num - 100;
        if (i < N_REQ) tu_result_add(&o[i].r, &m);
        proto_msg_destroy(&m);
        streaming = 0;
        for (int k = 0; k < N_REQ; k++) streaming += o[k].r.n_tokens >= 2;
    }
    check(streaming == N_REQ, "all %d requests streaming on A (%d)", N_REQ, streaming);

    pid_t b = start_worker(&d, "wb-scalar", 8, "scalar", 0);
    pid_t cc = start_worker(&d, "wc", 4, "avx2", 0);
    check(wait_log2(d.log, "worker wb-scalar", "fingerprint f32/scalar/", 60000),
          "B (forced scalar) ready with another fingerprint");
    check(wait_log2(d.log, "worker wc", "fingerprint f32/avx2/", 60000), "C (avx2) ready with A's fingerprint");
    check(a > 0 && b > 0 && cc > 0 && kill(a, SIGKILL) == 0, "A SIGKILLed while running the requests");
    tu_reap(a, 5000);

    int ended = collect(&c, o, N_REQ, 100, 60000);
    check(ended == N_REQ, "every request ended (%d of %d)", ended, N_REQ);
    int on_c = 0, on_b = 0;
    for (int i = 0; i < N_REQ; i++) {
        on_c += o[i].r.done && strcmp(o[i].worker, "wc") == 0;
        on_b += strcmp(o[i].worker, "wb-scalar") == 0;
    }
    check(on_c == N_REQ && on_b == 0, "replays went only to the matching fingerprint: %d on C, %d on B", on_c, on_b);
    check(count_lines(d.log, "replayed after") >= N_REQ, "the broker logged %d replays (want >= %d)",
          count_lines(d.log, "replayed after"), N_REQ);

    /* the same requests again, undisturbed (B, the scalar baseline, computes the same bits: the
     * kernel families are bit-identical by design; the fingerprint is conservative) */
    outcome ref[N_REQ];
    memset(ref, 0, sizeof ref);
    for (int i = 0; i < N_REQ; i++) tu_submit(&c, 200 + (uint64_t)i, &req[i]);
    check(collect(&c, ref, N_REQ, 200, 60000) == N_REQ, "reference runs ended");
    int same = 0, on_b_ref = 0;
    for (int i = 0; i < N_REQ; i++) {
        same += tu_result_same(&o[i].r, &ref[i].r);
        on_b_ref += strcmp(ref[i].worker, "wb-scalar") == 0;
    }
    check(same == N_REQ, "replayed outcomes equal the undisturbed ones bit for bit (%d of %d)", same, N_REQ);
    check(on_b_ref > 0, "fresh requests do go to B (%d of %d): it was only replays it was kept from", on_b_ref, N_REQ);
    for (int i = 0; i < N_REQ; i++) {
        tu_result_free(&o[i].r);
        tu_result_free(&ref[i].r);
    }
    tu_client_close(&c);
    kill(b, SIGTERM);
    kill(cc, SIGTERM);
    tu_reap(b, 10000);
    tu_reap(cc, 10000);
    check(tu_daemon_stop(&d), "gpt2d stops cleanly");
    return check_done("test_fleet");
}
