/* soak.c — `make soak`: a bounded soak of the whole service (not part of `make test`).
 *
 * A broker with 2 local workers (the small random model) serves a closed loop of 64 concurrent
 * requests (the chaos test's mixed workload: greedy and sampled, stop strings, multi-byte UTF-8)
 * for SOAK_S seconds (default 900). RSS of the broker and of each worker is sampled from /proc
 * after a warm-up (10% of the run, at most 60 s) and at the end. Passes if no request was lost
 * (every submit ended with exactly one done or error frame), none failed, and no process's RSS
 * grew by more than 10% + 4 MiB over the measured part. Prints one line per minute and a summary.
 * Env: BUILD (binaries), SOAK_S (seconds), SOAK_CONCURRENCY (default 64), GPT2D_TMP (scratch). */
#include "check.h"
#include "tutil.h"

typedef struct {
    pid_t pid;
    long rss_start_kb, rss_end_kb;
} proc_rss;

/* VmRSS of pid in KiB, or -1. */
static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *e = getenv("SOAK_S");
    int soak_s = e && atoi(e) > 0 ? atoi(e) : 900;
    e = getenv("SOAK_CONCURRENCY");
    int conc = e && atoi(e) > 0 ? atoi(e) : 64;
    check(tu_init("soak", soak_s + 300) == 0, "the small model is made");
    tu_daemon d;
    int up = tu_daemon_start(&d, "soak", 2, 32, NULL);
    check(up, "gpt2d starts with 2 workers");
    if (!up) return check_done("soak");

    tu_client c, s;
    tu_client_open(&c, d.client_ep);
    tu_client_open(&s, d.client_ep);
    proc_rss procs[3] = {{d.pid, 0, 0}};
    pid_t wp[8];
    int running[8];
    int nw = tu_worker_pids(&s, wp, running, 8);
    for (int i = 0; i < nw && i < 2; i++) procs[1 + i].pid = wp[i];
    int n_procs = 1 + (nw < 2 ? nw : 2);

    /* live[i]: the request index behind id i + 1, or -1 */
    enum { MAX_CONC = 1024 };
    if (conc > MAX_CONC) conc = MAX_CONC;
    static int live[MAX_CONC];
    for (int i = 0; i < conc; i++) live[i] = -1;
    uint64_t submitted = 0, done = 0, failed = 0, tokens = 0, stray = 0;
    double t0 = proto_clock_ms(), end = t0 + soak_s * 1000.0;
    double warm = t0 + 1000.0 * (soak_s / 10 < 60 ? soak_s / 10 : 60), next_report = t0 + 60000;
    int measured = 0, inflight = 0;
    while (proto_clock_ms() < end || inflight > 0) {
        double now = proto_clock_ms();
        for (int i = 0; i < conc && now < end; i++) {
            if (live[i] >= 0) continue;
            tu_req r;
            live[i] = (int)(submitted % 100000);
            tu_req_make(&r, live[i], 24);
            tu_submit(&c, (uint64_t)i + 1, &r);
            submitted++;
            inflight++;
        }
        if (!measured && now >= warm) {
            for (int i = 0; i < n_procs; i++) procs[i].rss_start_kb = rss_kb(procs[i].pid);
            measured = 1;
        }
        if (now >= next_report) {
            printf("  %4.0f s: %llu submitted, %llu done, %llu failed, %llu tokens; RSS broker %ld KiB\n",
                   (now - t0) / 1000, (unsigned long long)submitted, (unsigned long long)done,
                   (unsigned long long)failed, (unsigned long long)tokens, rss_kb(d.pid));
            next_report += 60000;
        }
        if (now > end + 120000) break; /* the drain is bounded too */
        proto_msg m;
        if (!tu_recv(&c, &m, 50)) continue;
        int slot = (m.has & PROTO_HAS(PF_ID)) && !m.id.is_str ? (int)m.id.num - 1 : -1;
        if (slot < 0 || slot >= conc || live[slot] < 0) {
            stray += m.type != PROTO_T_ERROR || slot >= 0;
        } else if (m.type == PROTO_T_TOKEN) {
            tokens++;
        } else if (m.type == PROTO_T_DONE || m.type == PROTO_T_ERROR) {
            if (m.type == PROTO_T_DONE && m.finish != PROTO_FINISH_ERROR) done++;
            else {
                failed++;
                if (failed <= 5) printf("  request failed: code %d %.*s\n", m.code, (int)m.message.len, m.message.ptr);
            }
            live[slot] = -1;
            inflight--;
        }
        proto_msg_destroy(&m);
    }
    for (int i = 0; i < n_procs; i++) procs[i].rss_end_kb = rss_kb(procs[i].pid);
    double secs = (proto_clock_ms() - t0) / 1000;
    uint64_t lost = submitted - done - failed;
    printf("soak: %.0f s at %d concurrent: %llu requests, %llu done, %llu failed, %llu lost, %llu stray frames, "
           "%llu tokens (%.0f tokens/s)\n",
           secs, conc, (unsigned long long)submitted, (unsigned long long)done, (unsigned long long)failed,
           (unsigned long long)lost, (unsigned long long)stray, (unsigned long long)tokens, tokens / secs);
    int flat = 1;
    for (int i = 0; i < n_procs; i++) {
        long a = procs[i].rss_start_kb, b = procs[i].rss_end_kb;
        int ok = a > 0 && b > 0 && b <= a + a / 10 + 4096;
        flat &= ok;
        printf("soak: RSS %-8s pid %-7d start %6ld KiB, end %6ld KiB (%+ld KiB)%s\n", i == 0 ? "broker" : "worker",
               (int)procs[i].pid, a, b, b - a, ok ? "" : "  GREW");
    }
    check(lost == 0, "no request lost (%llu)", (unsigned long long)lost);
    check(failed == 0, "no request failed (%llu)", (unsigned long long)failed);
    check(stray == 0, "no frame for an unknown request (%llu)", (unsigned long long)stray);
    check(flat, "RSS of the broker and the workers stayed flat");
    check(n_procs == 3, "both workers were measured");
    tu_client_close(&c);
    tu_client_close(&s);
    check(tu_daemon_stop(&d), "gpt2d stops cleanly");
    check(!tu_log_contains(d.log, "Sanitizer"), "no sanitizer report");
    zmq_ctx_term(tu.ctx);
    tu_kill_all();
    return check_done("soak");
}
