/* proto_runtime.c — see proto_runtime.h. */
#include "proto_runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto.h"

int proto_runtime_is_derived(void) {
    const char *env = getenv("GPT2D_RUNTIME_DIR");
    return !env || !*env;
}

int proto_runtime_check(const char *dir, int create, char *err, size_t errlen) {
    struct stat st;
    if (lstat(dir, &st) < 0) {
        if (errno != ENOENT) {
            snprintf(err, errlen, "runtime directory %s: %s", dir, strerror(errno));
            return -1;
        }
        if (!create) return 0;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "runtime directory %s: mkdir: %s", dir, strerror(errno));
            return -1;
        }
        if (lstat(dir, &st) < 0) {
            snprintf(err, errlen, "runtime directory %s: %s", dir, strerror(errno));
            return -1;
        }
    }
    const char *fix = "remove it (or set GPT2D_RUNTIME_DIR to a directory of your own)";
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "runtime directory %s is not a directory%s: refusing to use it; %s", dir,
                 S_ISLNK(st.st_mode) ? " (a symbolic link)" : "", fix);
        return -1;
    }
    if (st.st_uid != getuid()) {
        snprintf(err, errlen,
                 "runtime directory %s is owned by uid %u, not by you (uid %u): another user could read "
                 "your prompts through it; refusing to use it; %s",
                 dir, (unsigned)st.st_uid, (unsigned)getuid(), fix);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "runtime directory %s has mode %04o: others may use it; refusing to use it; chmod 700 %s or %s",
                 dir, (unsigned)(st.st_mode & 07777), dir, fix);
        return -1;
    }
    return 0;
}

int proto_runtime_check_endpoint(const char *ep, int worker_side, int create, char *err, size_t errlen) {
    if (!proto_runtime_is_derived()) return 0;
    char def[600], dir[512];
    if (!proto_default_endpoint(worker_side, def, sizeof(def), dir, sizeof(dir)) || strcmp(ep, def) != 0) return 0;
    return proto_runtime_check(dir, create, err, errlen);
}
