/* main.c — gpt2d-http: the HTTP front door of gpt2d (see gw.h for the design, docs/HTTP.md for the
 * API). Reads the options, binds the listening socket itself (so port 0 works and the real port is
 * logged in one fixed line), starts libmicrohttpd in external-select epoll mode and runs the one
 * loop that owns both MHD and the broker link. SIGINT/SIGTERM only set a flag. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>

#include "gw.h"

static volatile sig_atomic_t g_stop; /* SIGINT / SIGTERM seen: counts them (1: drain, 2: end now) */

static void on_stop(int sig) {
    (void)sig;
    if (g_stop < 2) g_stop++;
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* Splits "HOST:PORT" / "[V6]:PORT" and binds + listens. The fd, or -1 after logging why. *loopback
 * tells whether the address is a loopback one; url receives http://HOST:PORT with the real port. */
static int listen_on(gw *g, const char *spec, int *loopback, char *url, size_t urlcap) {
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec) {
        proto_log(&g->log, PROTO_LOG_ERROR, "--listen %s: want HOST:PORT", spec);
        return -1;
    }
    const char *h = spec;
    size_t hlen = (size_t)(colon - spec);
    if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    snprintf(host, sizeof(host), "%.*s", (int)hlen, h);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, colon + 1, &hints, &ai);
    if (rc != 0) {
        proto_log(&g->log, PROTO_LOG_ERROR, "--listen %s: %s", spec, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 256) < 0) {
        proto_log(&g->log, PROTO_LOG_ERROR, "--listen %s: %s", spec, strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    char nhost[200], nport[16];
    getnameinfo((struct sockaddr *)&ss, sl, nhost, sizeof(nhost), nport, sizeof(nport), NI_NUMERICHOST | NI_NUMERICSERV);
    if (ss.ss_family == AF_INET6) snprintf(url, urlcap, "http://[%s]:%s", nhost, nport);
    else snprintf(url, urlcap, "http://%s:%s", nhost, nport);
    if (ss.ss_family == AF_INET)
        *loopback = (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    else
        *loopback = IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr);
    freeaddrinfo(ai);
    return fd;
}

/* A watched socket reported a hang-up (the peer shut its side, or reset): EOF or an error means the
 * client is gone; data first (a pipelined request) means it still talks, and the edge is spent. */
static void on_watch(gw *g, hcall *c) {
    if (c->gone) return;
    char b;
    ssize_t r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EINTR))) return;
    if (c->n_open > 0)
        proto_log(&g->log, PROTO_LOG_INFO, "%s: client hung up: cancelling %d request(s)", c->cid[0] ? c->cid : "call",
                  c->n_open);
    link_forget(g, c);
    c->gone = 1;
    routes_wake(g, c);
}

/* libmicrohttpd's own messages ("closing connection" after we refuse one, ...) go to our log at debug. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    gw *g = cls;
    if (PROTO_LOG_DEBUG > g->log.level) return;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = 0;
    proto_log(&g->log, PROTO_LOG_DEBUG, "libmicrohttpd: %s", msg);
}

/* Hang-ups on the watched sockets (g->watch_ep). */
static void watch_events(gw *g) {
    struct epoll_event ev[64];
    int n;
    do {
        n = epoll_wait(g->watch_ep, ev, 64, 0);
        for (int i = 0; i < n; i++) on_watch(g, ev[i].data.ptr);
    } while (n == 64);
}

/* SIGTERM (first): no new connections (the listening socket is closed: a client is refused at
 * once), new requests on open ones get 503 shutting_down; the calls open may finish. */
static void gw_drain_begin(gw *g) {
    g->draining = 1;
    proto_log(&g->log, PROTO_LOG_INFO, "stopping: %d call(s) open may finish within %d ms; new requests get 503",
              g->n_calls, g->cfg->shutdown_grace_ms);
    MHD_socket s = MHD_quiesce_daemon(g->mhd);
    if (s != MHD_INVALID_SOCKET && s == g->listen_fd) {
        close(g->listen_fd);
        g->listen_fd = -1;
    }
}

/* The grace is over (or a second signal came): every choice still open ends with shutting_down,
 * so each call gets its one terminal answer (an error event and the stream's end, or a 503). */
static void gw_drain_end(gw *g) {
    if (g->n_open_choices > 0)
        proto_log(&g->log, PROTO_LOG_WARN, "shutdown grace over: ending %d open request(s) with shutting_down",
                  g->n_open_choices);
    link_fail_open(g, PROTO_CODE_SHUTTING_DOWN, "shutting_down", "the gateway is shutting down");
}

/* Runs until a stop signal, then drains: until every call is answered and sent (g->n_calls 0),
 * or the grace passes (the open ones then end with shutting_down and get GW_FLUSH_MS to reach
 * their clients), or a second signal. */
#define GW_FLUSH_MS 1000
static void gw_loop(gw *g) {
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(g->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    int epfd = di ? di->epoll_fd : -1;
    zmq_pollitem_t items[3];
    double grace_end = 0, flush_end = 0;
    for (;;) {
        if (g_stop && !g->draining) {
            gw_drain_begin(g);
            grace_end = proto_clock_ms() + g->cfg->shutdown_grace_ms;
        }
        if (g->draining) {
            double now = proto_clock_ms();
            if (flush_end == 0 && (now >= grace_end || g_stop > 1)) {
                gw_drain_end(g);
                flush_end = now + GW_FLUSH_MS;
            }
            if (g->n_calls == 0 || (flush_end > 0 && now >= flush_end)) break;
        }
        link_drain(g);
        MHD_run(g->mhd);
        double now = proto_clock_ms();
        link_tick(g, now);
        MHD_UNSIGNED_LONG_LONG mt = 0;
        long timeout = g->draining ? 20 : 250;
        if (MHD_get_timeout(g->mhd, &mt) == MHD_YES && (long long)mt < timeout) timeout = (long)mt;
        items[0] = (zmq_pollitem_t){g->link.sock, 0, ZMQ_POLLIN, 0};
        items[1] = (zmq_pollitem_t){NULL, epfd, ZMQ_POLLIN, 0};
        items[2] = (zmq_pollitem_t){NULL, g->watch_ep, ZMQ_POLLIN, 0};
        int rc = zmq_poll(items, 3, timeout);
        if (rc < 0 && errno != EINTR) {
            proto_log(&g->log, PROTO_LOG_ERROR, "zmq_poll: %s", zmq_strerror(errno));
            break;
        }
        if (rc > 0 && (items[2].revents & ZMQ_POLLIN)) watch_events(g);
    }
}

/* Stop: what is still open (a client that did not read its answer within the flush time) is
 * cancelled at the broker, suspended connections resumed so MHD can close them. */
static void gw_shutdown(gw *g) {
    for (hcall *c = g->calls; c; c = c->next) {
        link_forget(g, c);
        c->gone = 1;
        routes_wake(g, c);
    }
    for (int i = 0; i < 4; i++) MHD_run(g->mhd);
    MHD_stop_daemon(g->mhd);
    g->mhd = NULL;
}

int main(int argc, char **argv) {
    gw_config cfg;
    int rc = gw_config_parse(&cfg, argc, argv);
    if (rc != 0) return rc < 0 ? 2 : 0;
    static gw g; /* large (stats copy): not on the stack */
    g.cfg = &cfg;
    proto_log_init(&g.log, "gpt2d-http", proto_log_parse_level(cfg.log_level));
    g.log.component = "http";
    g.stream_buffer_bytes = cfg.stream_buffer_kb * 1024;
    chat_default(&g.tmpl);
    char err[512];
    if (cfg.chat_template && chat_load(&g.tmpl, cfg.chat_template, err, sizeof(err)) < 0) {
        proto_log(&g.log, PROTO_LOG_ERROR, "%s", err);
        return 1;
    }
    if (cfg.api_keys && !(g.keys = apikeys_load(cfg.api_keys, err, sizeof(err)))) {
        proto_log(&g.log, PROTO_LOG_ERROR, "%s", err);
        return 1;
    }
    install_signals();
    int loopback = 1;
    g.listen_fd = listen_on(&g, cfg.listen, &loopback, g.url, sizeof(g.url));
    if (g.listen_fd < 0) return 1;
    if (!loopback && !g.keys)
        proto_log(&g.log, PROTO_LOG_WARN,
                  "serving %s on a non-loopback address WITHOUT API keys: anyone who can reach it can generate "
                  "(set --api-keys FILE)",
                  g.url);
    g.watch_ep = epoll_create1(EPOLL_CLOEXEC);
    if (g.watch_ep < 0) {
        proto_log(&g.log, PROTO_LOG_ERROR, "epoll_create1: %s", strerror(errno));
        return 1;
    }
    if (link_open(&g) < 0) return 1;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    g.mhd = MHD_start_daemon(flags, 0, NULL, NULL, routes_access, &g, MHD_OPTION_LISTEN_SOCKET, g.listen_fd,
                             MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg.max_connections,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg.idle_timeout_s,
                             MHD_OPTION_NOTIFY_COMPLETED, routes_completed, &g, MHD_OPTION_NOTIFY_CONNECTION,
                             routes_connection, &g, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, &g, MHD_OPTION_END);
    if (!g.mhd) {
        proto_log(&g.log, PROTO_LOG_ERROR, "cannot start the HTTP server on %s", g.url);
        link_close(&g);
        return 1;
    }
    proto_log(&g.log, PROTO_LOG_INFO, "listening on %s (broker %s, model %s%s)", g.url, cfg.connect, cfg.model_name,
              g.keys ? ", API keys required" : "");
    gw_loop(&g);
    proto_log(&g.log, PROTO_LOG_INFO, "stopped: %d call(s) still open", g.n_calls);
    gw_shutdown(&g);
    link_close(&g);
    if (g.listen_fd >= 0) close(g.listen_fd);
    close(g.watch_ep);
    apikeys_free(g.keys);
    return 0;
}
