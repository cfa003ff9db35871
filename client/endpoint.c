/* endpoint.c — which broker gpt2c talks to; see endpoint_resolve() in gpt2c.h.
 * The search lets the same gpt2c reach `make run`'s daemon (/tmp/gpt2d-$UID) and the installed
 * service (/run/gpt2d) with no flag, and a missing socket is reported at once with a hint, instead
 * of a 3 s wait for a welcome that cannot come. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "gpt2c.h"
#include "proto_runtime.h"

#define IPC "ipc://"

static const char *ipc_path(const char *ep) {
    return strncmp(ep, IPC, strlen(IPC)) == 0 ? ep + strlen(IPC) : NULL;
}

/* 0 if a process listens on the socket file; else errno: ENOENT (no file), EACCES, or ECONNREFUSED
 * (a file left behind by a broker that is gone: connecting to it would only wait). Abstract sockets
 * (ipc://@name) are not files and are not probed. */
static int socket_state(const char *ep) {
    const char *p = ipc_path(ep);
    struct stat st;
    if (!p || p[0] == '@') return 0;
    if (stat(p, &st) != 0) return errno;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (!S_ISSOCK(st.st_mode) || strlen(p) >= sizeof(a.sun_path)) return 0; /* let ZeroMQ say what is wrong */
    memcpy(a.sun_path, p, strlen(p) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int rc = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 ? 0 : errno;
    close(fd);
    return rc == ECONNREFUSED || rc == EACCES ? rc : 0;
}

static int no_socket(const char *tried, int err) {
    if (err == EACCES) {
        fprintf(stderr,
                "gpt2c: permission denied on %s\n"
                "hint: the installed service's socket is for group gpt2d: sudo usermod -aG gpt2d $USER,\n"
                "      then log in again\n", tried);
        return GPT2C_UNREACHABLE;
    }
    if (err == ECONNREFUSED)
        fprintf(stderr, "gpt2c: no gpt2d is listening on %s (a socket file left by one that stopped)\n", tried);
    else
        fprintf(stderr, "gpt2c: no gpt2d is listening: no socket at %s\n", tried);
    fprintf(stderr,
            "hint: start one with `make run` (in the source tree) or `sudo systemctl start gpt2d`\n"
            "      (installed service), or point gpt2c at one with --connect EP or $GPT2D_ENDPOINT\n");
    return GPT2C_UNREACHABLE;
}

int endpoint_resolve(gpt2c_options *o) {
    const char *ep = o->connect;
    if (!ep || !*ep) ep = getenv("GPT2D_ENDPOINT");
    if (ep && *ep) {
        if (!strstr(ep, "://")) { /* a bare socket path */
            int n = snprintf(o->connect_buf, sizeof(o->connect_buf), IPC "%s", ep);
            if (n < 0 || (size_t)n >= sizeof(o->connect_buf)) {
                fprintf(stderr, "gpt2c: endpoint path too long\n");
                return GPT2C_USAGE;
            }
            ep = o->connect_buf;
        } else if (!ipc_path(ep) && strncmp(ep, "tcp://", 6) != 0) {
            fprintf(stderr, "gpt2c: endpoint '%s': use ipc://PATH, tcp://HOST:PORT or a socket PATH\n", ep);
            return GPT2C_USAGE;
        }
        o->connect = ep;
        int err = socket_state(ep);
        return err ? no_socket(ipc_path(ep), err) : 0;
    }
    /* the search: the user's runtime directory, then the installed service */
    char cand[4][512];
    int n = 0;
    const char *rt = getenv("GPT2D_RUNTIME_DIR"), *xdg = getenv("XDG_RUNTIME_DIR");
    if (rt && *rt) {
        snprintf(cand[n++], sizeof(cand[0]), IPC "%s/client.sock", rt);
    } else {
        if (xdg && *xdg) snprintf(cand[n++], sizeof(cand[0]), IPC "%s/gpt2d/client.sock", xdg);
        snprintf(cand[n++], sizeof(cand[0]), IPC "/tmp/gpt2d-%u/client.sock", (unsigned)getuid());
        snprintf(cand[n++], sizeof(cand[0]), "%s", GPT2C_SYSTEM_ENDPOINT);
    }
    char tried[2048] = "";
    int denied = 0;
    for (int i = 0; i < n; i++) {
        int err = socket_state(cand[i]);
        /* the user's derived directories must be theirs (proto_runtime.h): a directory somebody else
         * made in /tmp could hold their listener; GPT2D_RUNTIME_DIR and the installed service's
         * /run/gpt2d (made by systemd) are taken as given */
        if (!(rt && *rt) && strcmp(cand[i], GPT2C_SYSTEM_ENDPOINT) != 0) { /* a missing dir passes */
            char dir[512], why[600];
            snprintf(dir, sizeof(dir), "%.*s", (int)(strrchr(cand[i], '/') - ipc_path(cand[i])), ipc_path(cand[i]));
            if (proto_runtime_check(dir, 0, why, sizeof(why)) < 0) {
                fprintf(stderr, "gpt2c: %s\n", why);
                return GPT2C_USAGE;
            }
        }
        if (err == 0) {
            memcpy(o->connect_buf, cand[i], strlen(cand[i]) + 1); /* 512 < 1024 */
            o->connect = o->connect_buf;
            return 0;
        }
        denied |= err == EACCES;
        size_t len = strlen(tried);
        snprintf(tried + len, sizeof(tried) - len, "%s%s%s", i ? ", " : "", ipc_path(cand[i]),
                 err == ECONNREFUSED ? " (a socket file left by a gpt2d that stopped)" : "");
    }
    return no_socket(tried, denied ? EACCES : ENOENT);
}
