/* auth.c — see auth.h. */
#include "auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "proto_sock.h"

#define AUTH_MAX_MONITORS 2 /* links whose handshake failures are logged: clients, workers */

typedef struct {
    char (*keys)[PROTO_CURVE_KEY_Z85 + 1]; /* Z85 public keys */
    int n;
} auth_list;

struct auth {
    const proto_logger *log;
    void *ctx;
    void *zap;                        /* REP on inproc://zeromq.zap.01 */
    char public_key[PROTO_CURVE_KEY_Z85 + 1], secret_key[PROTO_CURVE_KEY_Z85 + 1];
    auth_list clients, workers;
    unsigned long refused, admitted;
    /* log flood control: a refused peer reconnects every 100 ms or so */
    char last_refused[PROTO_CURVE_KEY_Z85 + 1]; /* key (or "" for no key) of the last refusal logged */
    double last_refused_ms, mon_last_ms[AUTH_MAX_MONITORS];
    unsigned long suppressed, mon_suppressed[AUTH_MAX_MONITORS];
};

#define AUTH_LOG_REPEAT_MS 10000.0 /* the same refusal is logged at most this often */

/* ---- allow-lists ------------------------------------------------------------------------------- */

/* Reads one Z85 public key per line ('#' comments, blank lines; a "public-key = KEY" line of a key
 * file counts too). 0, or -1 with err. */
static int auth_list_load(auth_list *l, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    l->keys = calloc(AUTH_MAX_KEYS, sizeof(*l->keys));
    if (!l->keys) {
        fclose(f);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char line[512];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        lineno++;
        char key[PROTO_CURVE_KEY_Z85 + 1];
        int got = proto_curve_parse_line(line, "public-key", key);
        if (got == 0) continue;
        if (got < 0) {
            snprintf(err, errlen, "%s:%d: not a Z85 public key (40 characters)", path, lineno);
            rc = -1;
        } else if (l->n == AUTH_MAX_KEYS) {
            snprintf(err, errlen, "%s: more than %d keys", path, AUTH_MAX_KEYS);
            rc = -1;
        } else {
            memcpy(l->keys[l->n++], key, sizeof(key));
        }
    }
    fclose(f);
    return rc;
}

static int auth_list_has(const auth_list *l, const char *key) {
    for (int i = 0; i < l->n; i++)
        if (memcmp(l->keys[i], key, PROTO_CURVE_KEY_Z85) == 0) return 1;
    return 0;
}

/* ---- construction ------------------------------------------------------------------------------- */

auth *auth_new(void *ctx, const config *cfg, const proto_logger *log, char *err, size_t errlen) {
    if (!zmq_has("curve")) {
        snprintf(err, errlen, "curve-secret: this libzmq was built without CURVE support");
        return NULL;
    }
    auth *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->log = log;
    a->ctx = ctx;
    if (proto_curve_load(cfg->curve_secret, a->public_key, a->secret_key, err, errlen) < 0) goto fail;
    if (!a->secret_key[0]) {
        snprintf(err, errlen, "%s: no secret-key line (make one with gpt2c keygen)", cfg->curve_secret);
        goto fail;
    }
    if (cfg->curve_clients && auth_list_load(&a->clients, cfg->curve_clients, err, errlen) < 0) goto fail;
    if (cfg->curve_workers && auth_list_load(&a->workers, cfg->curve_workers, err, errlen) < 0) goto fail;
    a->zap = zmq_socket(ctx, ZMQ_REP);
    int linger = 0;
    if (!a->zap || zmq_setsockopt(a->zap, ZMQ_LINGER, &linger, sizeof(linger)) < 0 ||
        zmq_bind(a->zap, "inproc://zeromq.zap.01") < 0) {
        snprintf(err, errlen, "ZAP handler: %s", zmq_strerror(errno));
        goto fail;
    }
    proto_log(log, PROTO_LOG_INFO, "CURVE on: broker key %s, %d client key(s), %d worker key(s) allowed",
              a->public_key, a->clients.n, a->workers.n);
    return a;
fail:
    auth_free(a);
    return NULL;
}

void auth_free(auth *a) {
    if (!a) return;
    if (a->zap) zmq_close(a->zap);
    free(a->clients.keys);
    free(a->workers.keys);
    memset(a->secret_key, 0, sizeof(a->secret_key));
    free(a);
}

int auth_server_socket(auth *a, void *sock, const char *domain, char *err, size_t errlen) {
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof(one)) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, a->secret_key, PROTO_CURVE_KEY_Z85 + 1) < 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, domain, strlen(domain)) < 0) {
        snprintf(err, errlen, "CURVE server options: %s", zmq_strerror(errno));
        return -1;
    }
    return 0; /* handshake failures reach auth_log_handshake() through conns.c's monitor */
}

int auth_poll_sockets(const auth *a, void **socks, int cap) {
    int n = 0;
    if (a->zap && n < cap) socks[n++] = a->zap;
    return n;
}

const char *auth_public_key(const auth *a) { return a->public_key; }

/* ---- ZAP ------------------------------------------------------------------------------------------ */

#define ZAP_FRAMES 8 /* version, request id, domain, address, identity, mechanism, credentials... */

static void zap_reply(auth *a, const zmq_msg_t *req_id, const char *code, const char *text, const char *user) {
    zmq_send(a->zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(a->zap, zmq_msg_data((zmq_msg_t *)req_id), zmq_msg_size((zmq_msg_t *)req_id), ZMQ_SNDMORE);
    zmq_send(a->zap, code, strlen(code), ZMQ_SNDMORE);
    zmq_send(a->zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(a->zap, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(a->zap, "", 0, 0);
}

/* Reads one ZAP request (all its frames) and answers it. 0, or -1 when none is pending. */
static int zap_one(auth *a) {
    zmq_msg_t f[ZAP_FRAMES];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t tmp;
        zmq_msg_init(&tmp);
        if (zmq_msg_recv(&tmp, a->zap, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&tmp);
            if (n == 0) return -1;
            break;
        }
        more = zmq_msg_more(&tmp);
        if (n < ZAP_FRAMES) f[n++] = tmp;
        else zmq_msg_close(&tmp);
    }
    char domain[32] = "", address[64] = "", mech[16] = "", key[PROTO_CURVE_KEY_Z85 + 1] = "";
#define ZSTR(buf, i)                                                                                     \
    snprintf(buf, sizeof(buf), "%.*s", (int)(n > (i) ? zmq_msg_size(&f[i]) : 0),                        \
             n > (i) ? (const char *)zmq_msg_data(&f[i]) : "")
    ZSTR(domain, 2);
    ZSTR(address, 3);
    ZSTR(mech, 5);
#undef ZSTR
    int ok_version = n >= 6 && zmq_msg_size(&f[0]) == 3 && memcmp(zmq_msg_data(&f[0]), "1.0", 3) == 0;
    int is_curve = strcmp(mech, "CURVE") == 0 && n >= 7 && zmq_msg_size(&f[6]) == 32;
    if (is_curve) zmq_z85_encode(key, zmq_msg_data(&f[6]), 32);
    int clients = strcmp(domain, AUTH_DOMAIN_CLIENTS) == 0, workers = strcmp(domain, AUTH_DOMAIN_WORKERS) == 0;
    /* the broker's own key: its local workers, and its HTTP gateway on the client side */
    int own = memcmp(key, a->public_key, PROTO_CURVE_KEY_Z85) == 0;
    int allowed = ok_version && is_curve &&
                  ((clients && (auth_list_has(&a->clients, key) || own)) ||
                   (workers && (auth_list_has(&a->workers, key) || own)));
    if (n >= 2) {
        if (allowed) {
            a->admitted++;
            proto_log(a->log, PROTO_LOG_DEBUG, "auth: %s key %s from %s admitted", domain, key, address);
            zap_reply(a, &f[1], "200", "OK", key);
        } else {
            a->refused++;
            double now = proto_clock_ms();
            if (strcmp(key, a->last_refused) != 0 || now - a->last_refused_ms >= AUTH_LOG_REPEAT_MS) {
                proto_log(a->log, PROTO_LOG_WARN, "auth: refused %s peer from %s: %s (%lu repeat(s) not logged)",
                          domain[0] ? domain : "?", address[0] ? address : "?",
                          !is_curve ? "not a CURVE handshake (no key)" : "public key not on the allow-list",
                          a->suppressed);
                if (is_curve) proto_log(a->log, PROTO_LOG_WARN, "auth: the refused key is %s", key);
                memcpy(a->last_refused, key, sizeof(key));
                a->last_refused_ms = now;
                a->suppressed = 0;
            } else {
                a->suppressed++;
            }
            zap_reply(a, &f[1], "400", "not allowed", "");
        }
    }
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
    return 0;
}

void auth_log_handshake(void *user, const char *domain, uint16_t event, uint32_t value, const char *address) {
    auth *a = user;
    int i = strcmp(domain, AUTH_DOMAIN_WORKERS) == 0;
    double now = proto_clock_ms();
    if (now - a->mon_last_ms[i] < 1000.0) {
        a->mon_suppressed[i]++; /* at most one line a second per link */
        return;
    }
    a->mon_last_ms[i] = now;
    const char *what = event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? "authentication refused"
                       : event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? "not a valid handshake"
                                                                    : "handshake failed";
    proto_log(a->log, PROTO_LOG_WARN, "auth: %s link: %s on %s (code %u; %lu more in the last second)", domain,
              what, address, (unsigned)value, a->mon_suppressed[i]);
    a->mon_suppressed[i] = 0;
}

void auth_handle(auth *a) {
    for (int k = 0; k < 256 && zap_one(a) == 0; k++) {}
}
