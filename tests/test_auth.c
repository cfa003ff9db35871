/* test_auth.c — CurveZMQ with an allow-list: nobody unlisted gets in.
 *
 * A broker on tcp://127.0.0.1 with --curve-secret (a key pair from `gpt2c keygen`), an allow-list
 * with one client key and none for workers (its local worker uses the broker's own key pair).
 * A listed client is served (through the wire protocol and through gpt2c); a client with an
 * unlisted key, one with no key (plain ZeroMQ) and one sending garbage instead of a handshake are
 * refused; a worker with an unlisted key is never registered; each refusal is logged; the broker
 * keeps serving the listed client. Env: BUILD, GPT2D_TMP. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "check.h"
#include "tutil.h"

static char g_srv_key[700], g_srv_pub[64], g_port[16], g_ep[64];

/* gpt2c keygen path; the public key into pub. 0 or -1. */
static int keygen(const char *path, char *pub) {
    char bin[600], log[700];
    snprintf(bin, sizeof(bin), "%s/gpt2c", tu.build);
    snprintf(log, sizeof(log), "%s/keygen.out", tu.tmp);
    unlink(log);
    char *argv[] = {bin, "keygen", (char *)path, NULL};
    if (tu_run(argv, log, 10000) != 0) return -1;
    FILE *f = fopen(log, "r");
    if (!f) return -1;
    int ok = fscanf(f, "%40s", pub) == 1 && strlen(pub) == 40;
    fclose(f);
    return ok ? 0 : -1;
}

/* A DEALER to the broker, with CURVE if keyfile is given. */
static int open_client(tu_client *c, const char *keyfile) {
    return tu_client_open_curve(c, g_ep, keyfile, keyfile ? g_srv_pub : NULL);
}

/* hello -> welcome within ms? 1 if welcomed. */
static int welcomed(tu_client *c, int ms) {
    proto_msg h, m;
    proto_msg_init(&h, PROTO_T_HELLO);
    if (tu_send(c, &h) < 0) return 0;
    int ok = tu_recv(c, &m, ms) && m.type == PROTO_T_WELCOME;
    if (ok) proto_msg_destroy(&m);
    return ok;
}

/* Runs one short request to its done frame. 1 on success. */
static int served(tu_client *c, uint64_t id) {
    tu_req r;
    tu_req_make(&r, (int)id, 4);
    tu_submit(c, id, &r);
    tu_result res = {0};
    proto_msg m;
    while (!res.done && !res.error_code && tu_recv(c, &m, 20000)) {
        if (m.id.num == id) tu_result_add(&res, &m);
        proto_msg_destroy(&m);
    }
    int ok = res.done && res.n_tokens == r.max_tokens;
    tu_result_free(&res);
    return ok;
}

/* The broker's registered workers, through a listed client. -1 on no answer. */
static int n_workers(tu_client *c) {
    proto_msg m;
    if (!tu_stats(c, &m)) return -1;
    int n = (int)m.n_worker_list;
    proto_msg_destroy(&m);
    return n;
}

static int count_lines(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f)) n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* Writes random bytes to the broker's TCP port instead of a ZMTP greeting. 1 if the broker
 * closed the connection. */
static int garbage_handshake(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        if (fd >= 0) close(fd);
        return 0;
    }
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    unsigned seed = 99;
    unsigned char buf[512];
    for (size_t i = 0; i < sizeof(buf); i++) buf[i] = (unsigned char)rand_r(&seed);
    buf[0] = 0xff; /* looks like the start of a ZMTP signature, then nonsense */
    ssize_t w = write(fd, buf, sizeof(buf));
    (void)w;
    int closed = 0;
    for (int i = 0; i < 100 && !closed; i++) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) closed = 1;
        else if (r < 0) break; /* timeout */
    }
    close(fd);
    return closed;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    check(tu_init("auth", 240) == 0, "the small model is made");
    if (!zmq_has("curve")) {
        printf("  libzmq without CURVE: nothing to test\n");
        check(0, "libzmq supports CURVE");
        return check_done("test_auth");
    }
    char a_key[700], b_key[700], w_key[700], clients[700], workers[700], a_pub[64], b_pub[64], w_pub[64];
    snprintf(g_srv_key, sizeof(g_srv_key), "%s/broker.key", tu.tmp);
    snprintf(a_key, sizeof(a_key), "%s/alice.key", tu.tmp);
    snprintf(b_key, sizeof(b_key), "%s/mallory.key", tu.tmp);
    snprintf(w_key, sizeof(w_key), "%s/rogue-worker.key", tu.tmp);
    snprintf(clients, sizeof(clients), "%s/clients.allow", tu.tmp);
    snprintf(workers, sizeof(workers), "%s/workers.allow", tu.tmp);
    check(keygen(g_srv_key, g_srv_pub) == 0 && keygen(a_key, a_pub) == 0 && keygen(b_key, b_pub) == 0 &&
              keygen(w_key, w_pub) == 0,
          "gpt2c keygen makes key pairs");
    struct stat st;
    check(stat(a_key, &st) == 0 && (st.st_mode & 0777) == 0600, "a key pair file is 0600");
    FILE *f = fopen(clients, "w");
    if (f) {
        fprintf(f, "# clients allowed in\n%s  # alice\n", a_pub);
        fclose(f);
    }
    f = fopen(workers, "w");
    if (f) fclose(f); /* no remote worker is allowed */

    int port = 20000 + (int)(getpid() % 30000);
    snprintf(g_port, sizeof(g_port), "%d", port);
    snprintf(g_ep, sizeof(g_ep), "tcp://127.0.0.1:%d", port);
    tu_daemon d;
    snprintf(d.worker_ep, sizeof(d.worker_ep), "ipc://%s/auth-worker.sock", tu.tmp);
    snprintf(d.log, sizeof(d.log), "%s/auth.log", tu.tmp);
    char bin[600], wbin[600];
    snprintf(bin, sizeof(bin), "%s/gpt2d", tu.build);
    snprintf(wbin, sizeof(wbin), "%s/gpt2d-worker", tu.build);
    char *argv[] = {bin, "--model", tu.model, "--workers", "1", "--slots", "4", "--listen", g_ep, "--worker-listen",
                    d.worker_ep, "--worker-bin", wbin, "--threads", "1", "--curve-secret", g_srv_key,
                    "--curve-clients", clients, "--curve-workers", workers, NULL};
    d.pid = tu_spawn(argv, d.log);

    /* the listed client: welcomed and served (once the local worker, on the broker's key, is in) */
    tu_client a;
    open_client(&a, a_key);
    int ok = 0;
    for (int i = 0; i < 5 && !ok; i++) ok = welcomed(&a, 3000);
    check(ok, "a client with a listed key is welcomed");
    int nw = 0;
    for (double t0 = proto_clock_ms(); nw < 1 && proto_clock_ms() - t0 < 30000;) {
        nw = n_workers(&a);
        if (nw < 1) tu_sleep_ms(100);
    }
    check(nw == 1, "the local worker (broker's own key) is admitted on the CURVE worker link");
    check(served(&a, 1), "a listed client is served");

    /* an unlisted key, no key at all, garbage instead of a handshake */
    tu_client b, n;
    open_client(&b, b_key);
    check(!welcomed(&b, 2000), "a client with an unlisted key is refused");
    open_client(&n, NULL);
    check(!welcomed(&n, 2000), "a client with no key (plain ZeroMQ) is refused");
    check(garbage_handshake(port), "garbage instead of a handshake: the broker closes the connection");
    tu_client_close(&b);
    tu_client_close(&n);

    /* a worker with an unlisted key never joins */
    char wlog[700];
    snprintf(wlog, sizeof(wlog), "%s/rogue-worker.log", tu.tmp);
    char *wargv[] = {wbin, "--model", tu.model, "--connect", d.worker_ep, "--slots", "2", "--threads", "1",
                     "--curve-key", w_key, "--server-key", g_srv_pub, "--name", "rogue", NULL};
    pid_t rogue = tu_spawn(wargv, wlog);
    tu_sleep_ms(2500);
    check(n_workers(&a) == 1, "a worker with an unlisted key is not registered");
    kill(rogue, SIGKILL);
    tu_reap(rogue, 5000);

    /* gpt2c: listed key served, unlisted key unreachable (exit 4) */
    char cbin[600], clog[700];
    snprintf(cbin, sizeof(cbin), "%s/gpt2c", tu.build);
    snprintf(clog, sizeof(clog), "%s/gpt2c.log", tu.tmp);
    char *c_ok[] = {cbin, "--connect", g_ep, "--curve-key", a_key, "--server-key", g_srv_pub, "-n", "3", "Hi", NULL};
    check(tu_run(c_ok, clog, 20000) == 0, "gpt2c with a listed key is served");
    char *c_bad[] = {cbin, "--connect", g_ep, "--curve-key", b_key, "--server-key", g_srv_pub, "-n", "3", "Hi", NULL};
    int rc = tu_run(c_bad, clog, 20000);
    check(rc == 4, "gpt2c with an unlisted key is refused (exit %d, want 4)", rc);

    check(served(&a, 2), "the listed client is still served");
    tu_client_close(&a);
    int refused_keys = count_lines(d.log, "auth: refused clients peer");
    int refused_workers = count_lines(d.log, "auth: refused workers peer");
    int handshakes = count_lines(d.log, "auth: clients link:");
    printf("auth: refusals logged: %d client key(s), %d worker key(s), %d failed handshake(s)\n", refused_keys,
           refused_workers, handshakes);
    check(refused_keys >= 1 && tu_log_contains(d.log, b_pub), "the unlisted client key is refused and logged");
    check(refused_workers >= 1 && tu_log_contains(d.log, w_pub), "the unlisted worker key is refused and logged");
    check(handshakes >= 1, "failed handshakes (no key, garbage) are logged");
    check(kill(d.pid, SIGTERM) == 0 && WIFEXITED(tu_reap(d.pid, 40000)), "the broker stops cleanly");
    check(!tu_log_contains(d.log, "Sanitizer") && !tu_log_contains(d.log, "runtime error:"), "no sanitizer report");
    zmq_ctx_term(tu.ctx);
    tu_kill_all();
    return check_done("test_auth");
}
