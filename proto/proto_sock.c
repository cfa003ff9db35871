/* proto_sock.c — see proto_sock.h. */
#include "proto_sock.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void *proto_sock_new(void *ctx, int type, char *err, size_t errlen) {
    void *s = zmq_socket(ctx, type);
    if (!s) {
        snprintf(err, errlen, "zmq_socket: %s", zmq_strerror(errno));
        return NULL;
    }
    int linger = 0, sndhwm = PROTO_SNDHWM, rcvhwm = PROTO_RCVHWM, one = 1;
    int64_t maxmsg = PROTO_MAX_MSG_BYTES;
    if (zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger)) < 0 ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) < 0 ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &sndhwm, sizeof(sndhwm)) < 0 ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &rcvhwm, sizeof(rcvhwm)) < 0 ||
        (type == ZMQ_ROUTER && zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof(one)) < 0)) {
        snprintf(err, errlen, "zmq_setsockopt: %s", zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

void proto_sock_close(void **sock) {
    if (sock && *sock) {
        zmq_close(*sock);
        *sock = NULL;
    }
}

int proto_sock_send(void *sock, const void *ident, size_t ident_len, const proto_msg *m, int flags,
                    msgpack_sbuffer *sb, char *err, size_t errlen) {
    msgpack_sbuffer_clear(sb);
    if (proto_encode(m, sb, err, errlen) < 0) {
        errno = EINVAL;
        return -1;
    }
    return proto_sock_send_raw(sock, ident, ident_len, sb->data, sb->size, flags);
}

int proto_sock_send_raw(void *sock, const void *ident, size_t ident_len, const void *data, size_t len,
                        int flags) {
    if (ident_len > 0 && zmq_send(sock, ident, ident_len, ZMQ_SNDMORE | flags) < 0) return -1;
    /* with a routing id frame queued, the body cannot fail for lack of room (atomic multipart) */
    if (zmq_send(sock, data, len, flags) < 0) return -1;
    return 0;
}

/* Reads and drops the rest of a multipart message. */
static void sock_drain(void *sock) {
    int more = 1;
    size_t len = sizeof(more);
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int rc = zmq_msg_recv(&m, sock, 0);
        zmq_msg_close(&m);
        if (rc < 0) break;
        len = sizeof(more);
    }
}

static int sock_more(void *sock) {
    int more = 0;
    size_t len = sizeof(more);
    return zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more;
}

int proto_sock_recv(void *sock, int router, proto_frame *f, int flags) {
    f->ident_len = 0;
    f->open = 0;
    if (router) {
        zmq_msg_t id;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, sock, flags) < 0) {
            int e = errno;
            zmq_msg_close(&id);
            errno = e;
            return -1;
        }
        size_t n = zmq_msg_size(&id);
        if (n > PROTO_MAX_IDENT) n = PROTO_MAX_IDENT;
        memcpy(f->ident, zmq_msg_data(&id), n);
        f->ident_len = n;
        zmq_msg_close(&id);
        if (!sock_more(sock)) return -2;
        flags = 0; /* the rest of a multipart message is already here */
    }
    zmq_msg_init(&f->body);
    if (zmq_msg_recv(&f->body, sock, flags) < 0) {
        int e = errno;
        zmq_msg_close(&f->body);
        errno = e;
        return -1;
    }
    f->open = 1;
    if (sock_more(sock)) {
        sock_drain(sock);
        proto_frame_close(f);
        return -2;
    }
    return 0;
}

void proto_frame_close(proto_frame *f) {
    if (f->open) zmq_msg_close(&f->body);
    f->open = 0;
}

double proto_clock_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- CurveZMQ keys ------------------------------------------------------------------------------- */

static int z85_char(int c) {
    return c > 32 && c < 127 && c != '"' && c != '\'' && c != ',' && c != ';' && c != '\\' && c != '_' &&
           c != '`' && c != '|' && c != '~';
}

int proto_curve_parse_line(const char *line, const char *name, char key[PROTO_CURVE_KEY_Z85 + 1]) {
    const char *p = line;
    while (isspace((unsigned char)*p)) p++;
    if (*p == 0 || *p == '#') return 0;
    /* "public-key = KEY" / "secret-key = KEY" ('=' is also a Z85 character: match the name first) */
    static const char *const names[] = {"public-key", "secret-key"};
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(names[i]);
        if (strncmp(p, names[i], n) != 0) continue;
        const char *q = p + n;
        while (*q == ' ' || *q == '\t') q++;
        if (*q != '=') continue;
        if (strcmp(names[i], name) != 0) return 0;
        p = q + 1;
        while (isspace((unsigned char)*p)) p++;
        break;
    }
    size_t n = 0;
    while (p[n] && !isspace((unsigned char)p[n])) n++;
    const char *rest = p + n;
    while (isspace((unsigned char)*rest)) rest++;
    if (n != PROTO_CURVE_KEY_Z85 || (*rest && *rest != '#')) return -1;
    for (size_t i = 0; i < n; i++)
        if (!z85_char((unsigned char)p[i])) return -1;
    uint8_t bin[32];
    char tmp[PROTO_CURVE_KEY_Z85 + 1];
    memcpy(tmp, p, n);
    tmp[n] = 0;
    if (!zmq_z85_decode(bin, tmp)) return -1;
    memcpy(key, tmp, n + 1);
    return 1;
}

int proto_curve_load(const char *path, char pub[PROTO_CURVE_KEY_Z85 + 1], char sec[PROTO_CURVE_KEY_Z85 + 1],
                     char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    pub[0] = sec[0] = 0;
    char line[512];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        lineno++;
        char key[PROTO_CURVE_KEY_Z85 + 1];
        int a = proto_curve_parse_line(line, "public-key", key);
        if (a > 0) {
            memcpy(pub, key, sizeof(key));
            continue;
        }
        int b = proto_curve_parse_line(line, "secret-key", key);
        if (b > 0) memcpy(sec, key, sizeof(key));
        else if (a < 0 && b < 0) {
            snprintf(err, errlen, "%s:%d: not a 40-character Z85 key", path, lineno);
            rc = -1;
        }
    }
    fclose(f);
    if (rc == 0 && !pub[0]) {
        snprintf(err, errlen, "%s: no public-key line", path);
        rc = -1;
    }
    return rc;
}

int proto_curve_client(void *sock, const char *keyfile, const char *server_key, char *err, size_t errlen) {
    char pub[PROTO_CURVE_KEY_Z85 + 1], sec[PROTO_CURVE_KEY_Z85 + 1], server[PROTO_CURVE_KEY_Z85 + 1];
    if (proto_curve_load(keyfile, pub, sec, err, errlen) < 0) return -1;
    if (!sec[0]) {
        snprintf(err, errlen, "%s: no secret-key line (make a key pair with gpt2c keygen)", keyfile);
        return -1;
    }
    if (proto_curve_parse_line(server_key, "public-key", server) != 1) {
        char spare[PROTO_CURVE_KEY_Z85 + 1];
        if (proto_curve_load(server_key, server, spare, err, errlen) < 0) return -1;
    }
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server, PROTO_CURVE_KEY_Z85 + 1) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, PROTO_CURVE_KEY_Z85 + 1) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, PROTO_CURVE_KEY_Z85 + 1) < 0) {
        snprintf(err, errlen, "CURVE client options: %s", zmq_strerror(errno));
        return -1;
    }
    memset(sec, 0, sizeof(sec));
    return 0;
}

int proto_curve_keygen(const char *path, char pub[PROTO_CURVE_KEY_Z85 + 1], char *err, size_t errlen) {
    char sec[PROTO_CURVE_KEY_Z85 + 1];
    if (zmq_curve_keypair(pub, sec) < 0) {
        snprintf(err, errlen, "zmq_curve_keypair: %s", zmq_strerror(errno));
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char text[256];
    int n = snprintf(text, sizeof(text),
                     "# gpt2d CURVE key pair (gpt2c keygen). Keep secret; give out the public key.\n"
                     "public-key = %s\nsecret-key = %s\n", pub, sec);
    int ok = write(fd, text, (size_t)n) == n;
    memset(text, 0, sizeof(text));
    memset(sec, 0, sizeof(sec));
    if (close(fd) < 0 || !ok) {
        snprintf(err, errlen, "%s: write failed", path);
        return -1;
    }
    return 0;
}
