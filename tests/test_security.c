/* test_security.c — trust boundaries and resource bounds (issue 13, docs/SECURITY.md).
 *
 * A real second local user is made with useradd at the start and removed at the end (also on a
 * failed check, a timeout or a signal), and plays the attacker from forked children that drop to
 * its uid/gid:
 *   runtime_dir   a default runtime directory made first by the other user (0777), or ours but
 *                 0755, is refused by gpt2d and gpt2c with a message saying why; ours 0700 is used;
 *   worker_ipc    in the systemd layout (socket directory of the clients' group, setgid) the other
 *                 user may connect to client.sock but not to worker.sock;
 *   worker_tcp    on a loopback TCP worker endpoint without CURVE, the other user's READY (named
 *                 local-0, or anything) is refused: it gets no request and is not listed;
 *   fd_flood      against a broker whose fd limit is 128, the other user opens 1,000 connections:
 *                 the broker stays up, a client connected before and a new one are served, and
 *                 after the flood ends a new connection is served;
 *   memory        16 clients that never read send 6,000 stats and 2,000 bad frames each: the
 *                 broker's RSS grows less than MEM_BOUND_MB while they hold it (old: ~80 MiB);
 *   bad_frames    unknown keys that are not UTF-8, or cut inside a character at 64 bytes, are
 *                 answered with an error frame; 2,000 undecodable frames on the worker link from an
 *                 unregistered peer write at most a few log lines;
 *   lying_worker  a fake worker (this program, speaking the worker protocol) that skips a token
 *                 index, sends an 8 KiB piece, ends with more tokens than max_tokens, or names a rid
 *                 it was not given, is fenced at once (it keeps heartbeating: silence is not what
 *                 fences it): its requests complete on the real worker identical to a reference
 *                 run, each with exactly one final frame;
 *   fair_share    a client that floods the queue gets 429s, another client's requests are admitted
 *                 into the full queue (not 429: the flooder's newest make room) and complete.
 * Env: BUILD, GPT2D_TMP. Needs root (useradd, setuid). */
#include <grp.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <poll.h>

#include "check.h"
#include "tutil.h"

#define MEM_BOUND_MB 40 /* 16 x (4,000 small error frames + kernel buffers); old main: ~80 MiB */
#define N_FLOOD 1000

static char g_user[32];           /* the second user ("" until made) */
static uid_t g_uid;
static gid_t g_gid;
static char g_pub[64];            /* a scratch directory the second user can reach (0711) */

/* ============================================================================================== */
/* the second user                                                                                 */
/* ============================================================================================== */

/* fork + execv + waitpid only: safe from a signal handler. */
static int run_quiet(char *const argv[]) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void cleanup(void) {
    tu_kill_all();
    if (g_user[0]) {
        char *del[] = {"/usr/sbin/userdel", "-f", g_user, NULL};
        run_quiet(del);
        g_user[0] = 0;
    }
    if (g_pub[0]) {
        char *rm[] = {"/bin/rm", "-rf", g_pub, NULL};
        run_quiet(rm);
        g_pub[0] = 0;
    }
}

static void on_fatal(int sig) {
    for (int i = 0; i < tu.n_pids; i++)
        if (tu.pids[i] > 0) kill(tu.pids[i], SIGKILL);
    if (g_user[0]) {
        char *del[] = {"/usr/sbin/userdel", "-f", g_user, NULL};
        run_quiet(del);
    }
    if (g_pub[0]) {
        char *rm[] = {"/bin/rm", "-rf", g_pub, NULL};
        run_quiet(rm);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static int user_make(void) {
    snprintf(g_user, sizeof(g_user), "g2dsec%d", (int)(getpid() % 1000000));
    char *add[] = {"/usr/sbin/useradd", "-M", "-U", "-s", "/usr/sbin/nologin", g_user, NULL};
    if (run_quiet(add) != 0) {
        g_user[0] = 0;
        return -1;
    }
    struct passwd *pw = getpwnam(g_user);
    if (!pw) return -1;
    g_uid = pw->pw_uid;
    g_gid = pw->pw_gid;
    return 0;
}

/* In a forked child: become the second user. */
static void become_user(void) {
    if (setgroups(0, NULL) < 0 || setgid(g_gid) < 0 || setuid(g_uid) < 0) _exit(120);
}

/* Runs fn(arg) as the second user in a child; the child's exit status (or -1). */
static int as_user(int (*fn)(void *), void *arg, int ms) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        alarm(30);
        become_user();
        _exit(fn(arg));
    }
    if (tu.n_pids < TU_MAX_PIDS) tu.pids[tu.n_pids++] = pid;
    int st = tu_reap(pid, ms);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ============================================================================================== */
/* helpers                                                                                         */
/* ============================================================================================== */

/* Starts gpt2d with argv (NULL-terminated, argv[0] filled here) and an fd limit (0: unchanged),
 * output to log. The pid. */
static pid_t start_gpt2d(char **argv, const char *log, int nofile) {
    static char bin[600];
    snprintf(bin, sizeof(bin), "%s/gpt2d", tu.build);
    argv[0] = bin;
    tu_spawn_how how = {.nofile = nofile};
    return tu_spawn_opts(argv, log, &how);
}

static int alive(pid_t pid) {
    int st;
    return waitpid(pid, &st, WNOHANG) == 0;
}

static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

static int log_count(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f)) n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* One request end to end on c (id), greedy, max_tokens n: 1 if it ends with a done frame. */
static int serve_one(tu_client *c, uint64_t id, int n) {
    tu_req r;
    tu_req_make(&r, (int)id, n);
    r.max_tokens = n;
    if (tu_submit(c, id, &r) < 0) return 0;
    tu_result res = {0};
    double deadline = proto_clock_ms() + 15000;
    int ok = 0;
    while (proto_clock_ms() < deadline) {
        proto_msg m;
        if (!tu_recv(c, &m, 500)) continue;
        int mine = (m.has & PROTO_HAS(PF_ID)) && !m.id.is_str && m.id.num == id;
        int end = mine && tu_result_add(&res, &m);
        proto_msg_destroy(&m);
        if (end) {
            ok = res.done;
            if (!ok) printf("  request %llu: error %d %s\n", (unsigned long long)id, res.error_code, res.reason);
            break;
        }
    }
    tu_result_free(&res);
    return ok;
}

/* A broker with local workers, client and worker endpoints given. 1 when its workers are up. */
static int daemon_up(tu_daemon *d, const char *name, const char *client_ep, const char *worker_ep, int workers,
                     char *const *extra, int nofile) {
    snprintf(d->client_ep, sizeof(d->client_ep), "%s", client_ep);
    snprintf(d->worker_ep, sizeof(d->worker_ep), "%s", worker_ep);
    snprintf(d->log, sizeof(d->log), "%s/%s.log", tu.tmp, name);
    static char wbin[600], nw[16];
    snprintf(wbin, sizeof(wbin), "%s/gpt2d-worker", tu.build);
    snprintf(nw, sizeof(nw), "%d", workers);
    char *argv[48] = {NULL, "--model", tu.model, "--workers", nw, "--slots", "4", "--listen", d->client_ep,
                      "--worker-listen", d->worker_ep, "--worker-bin", wbin, "--threads", "1", "--log-level",
                      "info", "--restart-max-ms", "300"};
    int n = 19;
    for (int i = 0; extra && extra[i] && n < 46; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    d->pid = start_gpt2d(argv, d->log, nofile);
    return d->pid > 0 && (workers == 0 || tu_wait_workers(d, workers, 60000));
}

/* ============================================================================================== */
/* 3. the runtime directory                                                                        */
/* ============================================================================================== */

static int mkdir_as_user(void *arg) {
    umask(0);
    return mkdir((const char *)arg, 0777) == 0 ? 0 : 1;
}

/* gpt2d (workers 0) and gpt2c with XDG_RUNTIME_DIR=xdg: their exit codes; out: gpt2d's log. */
static void run_both(const char *xdg, const char *tag, int *d_rc, int *c_rc, char *dlog, char *clog) {
    setenv("XDG_RUNTIME_DIR", xdg, 1);
    unsetenv("GPT2D_RUNTIME_DIR");
    unsetenv("GPT2D_ENDPOINT");
    snprintf(dlog, 700, "%s/rt-%s-d.log", tu.tmp, tag);
    snprintf(clog, 700, "%s/rt-%s-c.log", tu.tmp, tag);
    char *dargv[] = {NULL, "--workers", "0", NULL};
    pid_t pid = start_gpt2d(dargv, dlog, 0);
    /* a daemon that accepted the directory runs: give it 1.5 s, then stop it */
    int st = -1;
    for (int t = 0; t < 1500 && waitpid(pid, &st, WNOHANG) == 0; t += 20) tu_sleep_ms(20);
    if (alive(pid)) {
        *d_rc = 0; /* running: it used the directory */
        kill(pid, SIGTERM);
        tu_reap(pid, 5000);
    } else {
        tu_reap(pid, 10);
        *d_rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        if (*d_rc == 0) *d_rc = -1;
    }
    char cbin[600];
    snprintf(cbin, sizeof(cbin), "%s/gpt2c", tu.build);
    char *cargv[] = {cbin, "-n", "1", "hi", NULL};
    *c_rc = tu_run(cargv, clog, 8000);
    unsetenv("XDG_RUNTIME_DIR");
}

static void test_runtime_dir(void) {
    char xdg[128], dir[160], dlog[700], clog[700];
    snprintf(xdg, sizeof(xdg), "%s/xdg", g_pub);
    snprintf(dir, sizeof(dir), "%s/gpt2d", xdg);
    mkdir(xdg, 0755);
    chmod(xdg, 01777); /* like /tmp: anyone may make the directory first */
    check(as_user(mkdir_as_user, dir, 5000) == 0, "the other user makes %s (0777) first", dir);
    int d_rc, c_rc;
    run_both(xdg, "squat", &d_rc, &c_rc, dlog, clog);
    check(d_rc > 0 && tu_log_contains(dlog, "is owned by uid"), "gpt2d refuses a runtime dir of another user (rc %d)",
          d_rc);
    check(c_rc > 0 && tu_log_contains(clog, "is owned by uid"), "gpt2c refuses it too (rc %d)", c_rc);
    rmdir(dir);
    mkdir(dir, 0755);
    chmod(dir, 0755);
    run_both(xdg, "mode", &d_rc, &c_rc, dlog, clog);
    check(d_rc > 0 && tu_log_contains(dlog, "has mode 0755"), "gpt2d refuses our runtime dir when it is 0755");
    check(c_rc > 0 && tu_log_contains(clog, "has mode 0755"), "gpt2c refuses it too");
    chmod(dir, 0700);
    run_both(xdg, "ok", &d_rc, &c_rc, dlog, clog);
    check(d_rc == 0, "gpt2d uses our own 0700 runtime dir");
}

/* ============================================================================================== */
/* 2. workers: who may register                                                                    */
/* ============================================================================================== */

static int connect_unix(const char *path) {
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    int rc = connect(s, (struct sockaddr *)&a, sizeof(a));
    int e = errno;
    close(s);
    return rc == 0 ? 0 : e;
}

typedef struct {
    char client[256], worker[256];
} two_paths;

/* as the user: 0 if client.sock connects and worker.sock is refused with EACCES; a code else */
static int try_sockets(void *arg) {
    const two_paths *p = arg;
    int c = connect_unix(p->client), w = connect_unix(p->worker);
    return c != 0 ? 10 : w == 0 ? 11 : w == EACCES ? 0 : 12;
}

static void test_worker_ipc(void) {
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/svc", g_pub);
    mkdir(dir, 02770);
    chown(dir, 0, g_gid); /* the systemd layout: RuntimeDirectory of the clients' group */
    chmod(dir, 02770);
    two_paths p;
    snprintf(p.client, sizeof(p.client), "%s/client.sock", dir);
    snprintf(p.worker, sizeof(p.worker), "%s/worker.sock", dir);
    char cep[300], wep[300];
    snprintf(cep, sizeof(cep), "ipc://%s", p.client);
    snprintf(wep, sizeof(wep), "ipc://%s", p.worker);
    tu_daemon d;
    int up = daemon_up(&d, "svc", cep, wep, 0, NULL, 0);
    struct stat st;
    for (int t = 0; t < 10000 && (stat(p.client, &st) < 0 || stat(p.worker, &st) < 0); t += 50) tu_sleep_ms(50);
    tu_sleep_ms(200);
    check(up && alive(d.pid), "gpt2d serves in a group runtime directory");
    int rc = as_user(try_sockets, &p, 5000);
    check(rc == 0, "a client-group user reaches client.sock but not worker.sock (code %d: 10 no client, 11 worker "
                   "connected, 12 other error)", rc);
    tu_daemon_stop(&d);
}

typedef struct {
    char ep[128];
} rogue_arg;

/* as the user: two DEALERs announce themselves ("local-0" and "rogue", 8 slots each) on the TCP
 * worker endpoint and wait 4 s; the exit status is the number of request frames received. */
static int rogue_worker(void *arg) {
    const rogue_arg *a = arg;
    void *ctx = zmq_ctx_new();
    char err[128];
    void *s[2];
    const char *names[2] = {"local-0", "rogue"};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (int i = 0; i < 2; i++) {
        s[i] = proto_sock_new(ctx, ZMQ_DEALER, err, sizeof(err));
        if (!s[i] || zmq_connect(s[i], a->ep) < 0) return 100;
        proto_msg m;
        proto_msg_init(&m, PROTO_T_READY);
        m.slots = 8;
        m.name = (proto_str){names[i], (uint32_t)strlen(names[i])};
        m.pid = 4242 + i;
        m.n_ctx = 256;
        proto_sock_send(s[i], NULL, 0, &m, 0, &sb, err, sizeof(err));
        usleep(1100 * 1000); /* past the broker's log flood control: both refusals are logged */
    }
    int got = 0;
    double end = proto_clock_ms() + 4000;
    while (proto_clock_ms() < end) {
        zmq_pollitem_t it[2] = {{s[0], 0, ZMQ_POLLIN, 0}, {s[1], 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 2, 100) <= 0) continue;
        for (int i = 0; i < 2; i++) {
            if (!(it[i].revents & ZMQ_POLLIN)) continue;
            proto_frame f;
            if (proto_sock_recv(s[i], 0, &f, ZMQ_DONTWAIT) < 0) continue;
            proto_msg m;
            if (proto_decode(&m, proto_frame_data(&f), proto_frame_size(&f), err, sizeof(err)) == 0 &&
                m.type == PROTO_T_REQUEST)
                got++;
            proto_msg_destroy(&m);
            proto_frame_close(&f);
        }
    }
    for (int i = 0; i < 2; i++) proto_sock_close(&s[i]);
    zmq_ctx_term(ctx);
    msgpack_sbuffer_destroy(&sb);
    return got > 99 ? 99 : got;
}

static int free_tcp_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    bind(s, (struct sockaddr *)&a, sizeof(a));
    getsockname(s, (struct sockaddr *)&a, &len);
    close(s);
    return ntohs(a.sin_port);
}

static void test_worker_tcp(void) {
    char cep[700];
    rogue_arg ra;
    snprintf(cep, sizeof(cep), "ipc://%s/tcpw-client.sock", tu.tmp);
    snprintf(ra.ep, sizeof(ra.ep), "tcp://127.0.0.1:%d", free_tcp_port());
    tu_daemon d;
    int up = daemon_up(&d, "tcpw", cep, ra.ep, 1, NULL, 0);
    check(up, "gpt2d with a loopback TCP worker endpoint and its local worker");
    if (!up) return;
    pid_t rogue = fork(); /* the rogue runs while we submit */
    if (rogue == 0) {
        alarm(30);
        become_user();
        _exit(rogue_worker(&ra));
    }
    if (tu.n_pids < TU_MAX_PIDS) tu.pids[tu.n_pids++] = rogue;
    tu_sleep_ms(2500); /* its READYs are in */
    tu_client c;
    tu_client_open(&c, d.client_ep);
    pid_t pids[8];
    int running[8];
    int nw = tu_worker_pids(&c, pids, running, 8);
    int ok = 1;
    for (int i = 0; i < 6; i++) ok &= serve_one(&c, 100 + (uint64_t)i, 4);
    check(ok, "6 requests complete while the other user tries to register");
    check(nw == 1 && pids[0] != 4242 && pids[0] != 4243, "only the broker's own worker is listed (%d workers)", nw);
    int st = tu_reap(rogue, 10000);
    int got = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    check(got == 0, "the other user's fake workers got no request (got %d)", got);
    check(tu_log_contains(d.log, "refused: the name local-N is reserved") &&
              tu_log_contains(d.log, "refused: a TCP worker link without CURVE"),
          "both refusals are logged with the reason");
    tu_client_close(&c);
    tu_daemon_stop(&d);
}

/* ============================================================================================== */
/* 1. connection flood                                                                             */
/* ============================================================================================== */

typedef struct {
    char path[100];
    int report; /* pipe to tell how many connects succeeded */
} flood_arg;

static int flood(void *arg) {
    const flood_arg *a = arg;
    int ok = 0;
    double end = proto_clock_ms() + 3000;
    for (int i = 0; i < N_FLOOD && proto_clock_ms() < end;) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (s < 0) break;
        struct sockaddr_un u = {.sun_family = AF_UNIX};
        snprintf(u.sun_path, sizeof(u.sun_path), "%s", a->path);
        if (connect(s, (struct sockaddr *)&u, sizeof(u)) == 0) {
            ok++;
            i++;
        } else {
            close(s);
            tu_sleep_ms(1); /* backlog full: the broker is accepting (or refusing) */
        }
    }
    if (write(a->report, &ok, sizeof(ok)) < 0) return 1;
    pause(); /* hold them until killed */
    return 0;
}

static void test_fd_flood(void) {
    char dir[80], cep[300], wep[700];
    snprintf(dir, sizeof(dir), "%s/flood", g_pub);
    mkdir(dir, 0755);
    chmod(dir, 0755);
    flood_arg fa;
    snprintf(fa.path, sizeof(fa.path), "%s/client.sock", dir);
    snprintf(cep, sizeof(cep), "ipc://%s", fa.path);
    snprintf(wep, sizeof(wep), "ipc://%s/flood-worker.sock", tu.tmp);
    tu_daemon d;
    int up = daemon_up(&d, "flood", cep, wep, 1, NULL, 128);
    check(up, "gpt2d with RLIMIT_NOFILE 128 and a worker");
    if (!up) return;
    chmod(fa.path, 0666); /* let the other user be a client */
    tu_client before;
    tu_client_open(&before, d.client_ep);
    check(serve_one(&before, 1, 3), "a client is served before the flood");
    int pfd[2];
    if (pipe(pfd) < 0) return;
    fa.report = pfd[1];
    struct rlimit rl = {N_FLOOD + 64, N_FLOOD + 64};
    pid_t fl = fork();
    if (fl == 0) {
        alarm(30);
        setrlimit(RLIMIT_NOFILE, &rl);
        become_user();
        _exit(flood(&fa));
    }
    if (tu.n_pids < TU_MAX_PIDS) tu.pids[tu.n_pids++] = fl;
    close(pfd[1]);
    int opened = -1;
    struct pollfd pp = {pfd[0], POLLIN, 0};
    if (poll(&pp, 1, 10000) == 1 && read(pfd[0], &opened, sizeof(opened)) != sizeof(opened)) opened = -1;
    close(pfd[0]);
    printf("  the other user opened %d connections\n", opened);
    tu_sleep_ms(500);
    check(opened > 200, "the flood opened more connections than the broker has fds (%d)", opened);
    check(alive(d.pid), "the broker survives the flood");
    check(serve_one(&before, 2, 3), "the client connected before the flood is served during it");
    tu_client during;
    tu_client_open(&during, d.client_ep);
    check(serve_one(&during, 3, 3), "a new client of another user (root) is served during the flood");
    tu_client_close(&during);
    kill(fl, SIGKILL);
    tu_reap(fl, 5000);
    tu_sleep_ms(500);
    tu_client after;
    tu_client_open(&after, d.client_ep);
    check(serve_one(&after, 4, 3), "a new client is served after the flood");
    tu_client_close(&after);
    tu_client_close(&before);
    check(alive(d.pid) && tu_log_contains(d.log, "connection of uid"), "excess connections are refused and logged");
    tu_daemon_stop(&d);
}

/* ============================================================================================== */
/* 4. memory across non-reading clients, 5. bad frames                                             */
/* ============================================================================================== */

#define N_DEAF 16

static void test_memory(const tu_daemon *d) {
    long before = rss_kb(d->pid);
    void *s[N_DEAF];
    char bad[128];
    size_t bad_len;
    { /* a submit with a 60-byte unknown key: answered with an error */
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 4);
        msgpack_pack_str_with_body(&pk, "t", 1);
        msgpack_pack_str_with_body(&pk, "submit", 6);
        msgpack_pack_str_with_body(&pk, "v", 1);
        msgpack_pack_int(&pk, 1);
        msgpack_pack_str_with_body(&pk, "id", 2);
        msgpack_pack_int(&pk, 7);
        msgpack_pack_str_with_body(&pk, "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", 60);
        msgpack_pack_int(&pk, 1);
        bad_len = sb.size;
        memcpy(bad, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
    }
    proto_msg st;
    proto_msg_init(&st, PROTO_T_STATS);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[128];
    proto_encode(&st, &sb, err, sizeof(err));
    for (int i = 0; i < N_DEAF; i++) {
        s[i] = zmq_socket(tu.ctx, ZMQ_DEALER);
        int one = 1, small = 4096, zero = 0;
        zmq_setsockopt(s[i], ZMQ_RCVHWM, &one, sizeof(one));
        zmq_setsockopt(s[i], ZMQ_RCVBUF, &small, sizeof(small));
        zmq_setsockopt(s[i], ZMQ_LINGER, &zero, sizeof(zero));
        zmq_connect(s[i], d->client_ep);
    }
    for (int k = 0; k < 8000; k++)
        for (int i = 0; i < N_DEAF; i++) {
            if (k % 4 == 3) zmq_send(s[i], bad, bad_len, 0);
            else zmq_send(s[i], sb.data, sb.size, 0);
        }
    tu_sleep_ms(1500); /* the broker has read and answered what it will */
    long during = rss_kb(d->pid);
    printf("  broker RSS %ld KiB before, %ld KiB with %d non-reading clients (%d frames each)\n", before, during,
           N_DEAF, 8000);
    check(before > 0 && during - before < MEM_BOUND_MB * 1024L,
          "%d clients that never read cost the broker less than %d MiB (%ld KiB)", N_DEAF, MEM_BOUND_MB,
          during - before);
    tu_client c;
    tu_client_open(&c, d->client_ep);
    check(serve_one(&c, 900, 4), "a reading client is served meanwhile");
    tu_client_close(&c);
    for (int i = 0; i < N_DEAF; i++) zmq_close(s[i]);
    msgpack_sbuffer_destroy(&sb);
}

/* A submit whose extra key is key (klen bytes): 1 if an error frame with reason unknown_field
 * comes back within 3 s. */
static int bad_key_answered(tu_client *c, const char *key, size_t klen) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "submit", 6);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_int(&pk, 77);
    msgpack_pack_str_with_body(&pk, "prompt", 6);
    msgpack_pack_str_with_body(&pk, "hi", 2);
    msgpack_pack_str_with_body(&pk, key, klen);
    msgpack_pack_int(&pk, 1);
    tu_send_raw(c, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    proto_msg m;
    int ok = 0;
    if (tu_recv(c, &m, 3000)) {
        ok = m.type == PROTO_T_ERROR && m.reason.len == 13 && memcmp(m.reason.ptr, "unknown_field", 13) == 0 &&
             proto_utf8_valid(m.message.ptr, m.message.len);
        proto_msg_destroy(&m);
    }
    return ok;
}

static void test_bad_frames(const tu_daemon *d) {
    tu_client c;
    tu_client_open(&c, d->client_ep);
    check(bad_key_answered(&c, "bad\xff\xfekey", 8), "an unknown key that is not UTF-8 is answered");
    char cut[80];
    memset(cut, 'k', sizeof(cut));
    memcpy(cut + 63, "\xe6\x97\xa5", 3); /* a 3-byte character across byte 64 */
    check(bad_key_answered(&c, cut, 70), "an unknown key cut inside a character at 64 bytes is answered");
    check(bad_key_answered(&c, "plain", 5), "a plain unknown key is answered");
    tu_client_close(&c);
    /* the worker link, from a peer that never registered */
    int before = log_count(d->log, "undecodable");
    void *w = zmq_socket(tu.ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(w, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_connect(w, d->worker_ep);
    for (int i = 0; i < 2000; i++) zmq_send(w, "\xc1garbage", 8, 0);
    tu_sleep_ms(1000);
    zmq_close(w);
    int lines = log_count(d->log, "undecodable") - before;
    check(lines >= 1 && lines <= 5, "2000 undecodable worker frames write %d log line(s) (1..5)", lines);
}

/* ============================================================================================== */
/* 6. a lying worker                                                                               */
/* ============================================================================================== */

enum { LIE_SKIP, LIE_PIECE, LIE_DONE, LIE_RID, N_LIES };
static const char *const lie_names[N_LIES] = {"skips a token index", "sends an 8 KiB piece",
                                              "ends with more tokens than max_tokens", "names a rid it was not given"};
#define N_LIE_REQ 4

/* Submits N_LIE_REQ requests (ids base+i) on c and gathers them; 1 if all ended. Counts final
 * frames per request in finals (more than one is a defect). */
static int run_reqs(tu_client *c, uint64_t base, tu_result *res, int *finals, void *fake, int lie) {
    for (int i = 0; i < N_LIE_REQ; i++) {
        tu_req r;
        tu_req_make(&r, i, 8);
        r.max_tokens = 8;
        tu_submit(c, base + (uint64_t)i, &r);
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[128];
    int ended = 0, lied = fake == NULL;
    double deadline = proto_clock_ms() + 12000, quiet_until = 0, next_hb = 0;
    while (proto_clock_ms() < deadline && (ended < N_LIE_REQ || proto_clock_ms() < quiet_until)) {
        if (fake && proto_clock_ms() >= next_hb) { /* alive: only the contract can get it fenced */
            proto_msg hb;
            proto_msg_init(&hb, PROTO_T_HB);
            proto_sock_send(fake, NULL, 0, &hb, ZMQ_DONTWAIT, &sb, err, sizeof(err));
            next_hb = proto_clock_ms() + 300;
        }
        if (!lied) { /* the fake worker: take the requests, then lie about the first */
            zmq_pollitem_t it = {fake, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, 20) > 0) {
                proto_frame f;
                if (proto_sock_recv(fake, 0, &f, ZMQ_DONTWAIT) == 0) {
                    proto_msg q;
                    if (proto_decode(&q, proto_frame_data(&f), proto_frame_size(&f), err, sizeof(err)) == 0 &&
                        q.type == PROTO_T_REQUEST) {
                        proto_msg m;
                        static char piece[8192];
                        memset(piece, 'x', sizeof(piece));
                        int32_t toks[16] = {0};
                        proto_msg_init(&m, lie == LIE_DONE ? PROTO_T_DONE : PROTO_T_TOKEN);
                        m.rid = lie == LIE_RID ? q.rid + 1000 : q.rid;
                        m.has = PROTO_HAS(PF_RID);
                        m.index = lie == LIE_SKIP ? 3 : 0;
                        m.token = 42;
                        m.text = (proto_str){piece, lie == LIE_PIECE ? 8192u : 1u};
                        if (lie == LIE_DONE) {
                            m.finish = PROTO_FINISH_LENGTH;
                            m.tokens = toks;
                            m.n_tokens = 13;
                            m.completion_tokens = 13;
                        }
                        proto_sock_send(fake, NULL, 0, &m, 0, &sb, err, sizeof(err));
                        lied = 1;
                    }
                    proto_msg_destroy(&q);
                    proto_frame_close(&f);
                }
            }
        }
        proto_msg m;
        if (!tu_recv(c, &m, 20)) continue;
        if ((m.has & PROTO_HAS(PF_ID)) && !m.id.is_str && m.id.num >= base && m.id.num < base + N_LIE_REQ) {
            int i = (int)(m.id.num - base);
            if (m.type == PROTO_T_DONE || m.type == PROTO_T_ERROR) finals[i]++;
            if (finals[i] == 1 && !res[i].done && !res[i].error_code && tu_result_add(&res[i], &m)) {
                if (++ended == N_LIE_REQ) quiet_until = proto_clock_ms() + 300; /* any second final? */
            }
        }
        proto_msg_destroy(&m);
    }
    msgpack_sbuffer_destroy(&sb);
    return ended == N_LIE_REQ;
}

static void test_lying_worker(const tu_daemon *d) {
    tu_client c;
    tu_client_open(&c, d->client_ep);
    tu_result ref[N_LIE_REQ];
    int finals[N_LIE_REQ] = {0};
    memset(ref, 0, sizeof(ref));
    check(run_reqs(&c, 1000, ref, finals, NULL, 0), "reference run on the real worker");
    for (int lie = 0; lie < N_LIES; lie++) {
        char err[128];
        void *fake = proto_sock_new(tu.ctx, ZMQ_DEALER, err, sizeof(err));
        zmq_connect(fake, d->worker_ep);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        proto_msg m;
        proto_msg_init(&m, PROTO_T_READY);
        m.slots = 64; /* more credit than the real worker: it gets the requests */
        m.name = (proto_str){"liar", 4};
        m.pid = 1;
        m.n_ctx = 256;
        proto_sock_send(fake, NULL, 0, &m, 0, &sb, err, sizeof(err));
        msgpack_sbuffer_destroy(&sb);
        int registered = tu_wait_workers(d, 2, 3000);
        tu_result res[N_LIE_REQ];
        memset(res, 0, sizeof(res));
        int fin[N_LIE_REQ] = {0};
        int ended = run_reqs(&c, 2000 + 100 * (uint64_t)lie, res, fin, fake, lie);
        int same = 1, one = 1;
        for (int i = 0; i < N_LIE_REQ; i++) {
            same &= tu_result_same(&res[i], &ref[i]);
            one &= fin[i] == 1;
        }
        check(registered && ended && same && one,
              "a worker that %s is fenced; its requests complete elsewhere identical (registered %d, ended %d, "
              "identical %d, one final frame each %d)",
              lie_names[lie], registered, ended, same, one);
        check(tu_wait_workers(d, 1, 3000), "the liar is no longer listed");
        for (int i = 0; i < N_LIE_REQ; i++) tu_result_free(&res[i]);
        proto_sock_close(&fake);
    }
    check(log_count(d->log, "broke the protocol contract") >= N_LIES, "each fencing is logged with its reason");
    for (int i = 0; i < N_LIE_REQ; i++) tu_result_free(&ref[i]);
    tu_client_close(&c);
}

/* ============================================================================================== */
/* 7. fair share of the queue                                                                      */
/* ============================================================================================== */

static void test_fair_share(void) {
    char cep[700], wep[700];
    snprintf(cep, sizeof(cep), "ipc://%s/fair-client.sock", tu.tmp);
    snprintf(wep, sizeof(wep), "ipc://%s/fair-worker.sock", tu.tmp);
    char *extra[] = {"--max-queue", "8", "--debug-step-delay-ms", "20", NULL};
    tu_daemon d;
    int up = daemon_up(&d, "fair", cep, wep, 1, extra, 0);
    check(up, "gpt2d with max-queue 8");
    if (!up) return;
    tu_client flood, other;
    tu_client_open(&flood, d.client_ep);
    tu_client_open(&other, d.client_ep);
    for (int i = 0; i < 40; i++) {
        tu_req r;
        tu_req_make(&r, i, 50);
        r.max_tokens = 50;
        tu_submit(&flood, 1 + (uint64_t)i, &r);
    }
    int limited = 0;
    double end = proto_clock_ms() + 1000;
    while (proto_clock_ms() < end) {
        proto_msg m;
        if (!tu_recv(&flood, &m, 50)) continue;
        if (m.type == PROTO_T_ERROR && m.code == 429) limited++;
        proto_msg_destroy(&m);
    }
    check(limited >= 20, "the flooding client is refused beyond its share (%d of 40 refused)", limited);
    for (int i = 0; i < 2; i++) {
        tu_req r;
        tu_req_make(&r, i, 2);
        r.max_tokens = 2;
        tu_submit(&other, 500 + (uint64_t)i, &r);
    }
    int refused = 0, done = 0; /* clients take turns (daemon/squeue.h): they may complete already */
    end = proto_clock_ms() + 1000;
    while (proto_clock_ms() < end) {
        proto_msg m;
        if (!tu_recv(&other, &m, 50)) continue;
        if (m.type == PROTO_T_ERROR) refused++;
        if (m.type == PROTO_T_DONE) done++;
        proto_msg_destroy(&m);
    }
    check(refused == 0, "another client's requests are admitted while the queue is full (%d refused)", refused);
    for (int i = 0; i < 40; i++) { /* make way: the flood is cancelled */
        proto_msg m;
        proto_msg_init(&m, PROTO_T_CANCEL);
        m.id = (proto_cid){0, 1 + (uint64_t)i, {0}};
        m.has = PROTO_HAS(PF_ID);
        tu_send(&flood, &m);
    }
    end = proto_clock_ms() + 15000;
    while (done < 2 && proto_clock_ms() < end) {
        proto_msg m;
        if (!tu_recv(&other, &m, 200)) continue;
        if (m.type == PROTO_T_DONE) done++;
        proto_msg_destroy(&m);
    }
    check(done == 2, "and complete (%d of 2)", done);
    tu_client_close(&flood);
    tu_client_close(&other);
    tu_daemon_stop(&d);
}

int main(void) {
    if (geteuid() != 0) {
        printf("test_security needs root (useradd, setuid)\n");
        return 1;
    }
    { /* under ASan, freed memory waits in a quarantine: the RSS bound would measure that */
        const char *a = getenv("ASAN_OPTIONS");
        char opts[512];
        snprintf(opts, sizeof(opts), "%s%squarantine_size_mb=0:thread_local_quarantine_size_kb=0", a ? a : "",
                 a && *a ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
    }
    check(tu_init("security", 170) == 0, "the small model is made");
    atexit(cleanup);
    signal(SIGTERM, on_fatal);
    signal(SIGINT, on_fatal);
    signal(SIGALRM, on_fatal);
    snprintf(g_pub, sizeof(g_pub), "/tmp/gpt2d-sec.XXXXXX");
    if (!mkdtemp(g_pub)) g_pub[0] = 0;
    chmod(g_pub, 0711);
    int have_user = user_make() == 0;
    check(have_user && g_pub[0], "a second local user %s (uid %d) is made", g_user, (int)g_uid);
    if (have_user) {
        test_runtime_dir();
        test_worker_ipc();
        test_worker_tcp();
        test_fd_flood();
    }
    char cep[700], wep[700];
    snprintf(cep, sizeof(cep), "ipc://%s/main-client.sock", tu.tmp);
    snprintf(wep, sizeof(wep), "ipc://%s/main-worker.sock", tu.tmp);
    tu_daemon d;
    int up = daemon_up(&d, "main", cep, wep, 1, NULL, 0);
    check(up, "gpt2d with one worker");
    if (up) {
        test_bad_frames(&d);
        test_lying_worker(&d);
        test_memory(&d);
        check(tu_daemon_stop(&d), "gpt2d stops cleanly on SIGTERM");
    }
    test_fair_share();
    static const char *const logs[] = {"main.log", "flood.log", "tcpw.log", "fair.log", "svc.log"};
    for (int i = 0; i < 5; i++) {
        char path[800];
        snprintf(path, sizeof(path), "%s/%s", tu.tmp, logs[i]);
        check(!tu_log_contains(path, "Sanitizer") && !tu_log_contains(path, "runtime error:"),
              "%s: no sanitizer report", logs[i]);
    }
    zmq_ctx_term(tu.ctx);
    cleanup();
    return check_done("test_security");
}
