/* proto_log.c — see proto_log.h. */
#include "proto_log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *level_name(int level) {
    switch (level) {
    case PROTO_LOG_ERROR: return "error";
    case PROTO_LOG_WARN: return "warn";
    case PROTO_LOG_INFO: return "info";
    default: return "debug";
    }
}

/* JOURNAL_STREAM is "DEVICE:INODE" of the journal's stream; it is ours only if fd 2 is that file
 * (a child whose stderr was redirected inherits the variable but not the stream). */
static int stderr_is_journal(void) {
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0) return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void proto_log_init(proto_logger *lg, const char *prog, int level) {
    lg->level = level;
    lg->prog = prog;
    lg->component = NULL;
    lg->journal = stderr_is_journal();
}

int proto_log_parse_level(const char *s) {
    static const int levels[] = {PROTO_LOG_ERROR, PROTO_LOG_WARN, PROTO_LOG_INFO, PROTO_LOG_DEBUG};
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (strcmp(s, level_name(levels[i])) == 0) return levels[i];
    return -1;
}

int proto_log_reopen(proto_logger *lg, const char *path) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) return -1;
    if (fd != 2 && dup2(fd, 2) < 0) {
        close(fd);
        return -1;
    }
    if (fd != 2) close(fd);
    lg->journal = 0;
    return 0;
}

void proto_log_write(const proto_logger *lg, int level, const char *fmt, ...) {
    char msg[2048], line[2300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *comp = lg->component ? lg->component : "";
    const char *sep = lg->component ? " " : "";
    int n;
    if (lg->journal) {
        n = snprintf(line, sizeof(line), "<%d>%s%s%s: %s\n", level, level_name(level), sep, comp, msg);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        char when[32];
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        n = snprintf(line, sizeof(line), "%s.%03ldZ %s[%d] %s%s%s: %s\n", when, ts.tv_nsec / 1000000, lg->prog,
                     (int)getpid(), level_name(level), sep, comp, msg);
    }
    if (n < 0) return;
    if ((size_t)n >= sizeof(line)) {
        n = (int)sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    /* one write per line: lines from several processes sharing the stream do not mix */
    ssize_t w = write(2, line, (size_t)n);
    (void)w;
}

int proto_log_allow(proto_log_limit *l, unsigned long *suppressed) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
    if (l->last_ms > 0 && now - l->last_ms < PROTO_LOG_LIMIT_MS) {
        l->suppressed++;
        return 0;
    }
    *suppressed = l->suppressed;
    l->suppressed = 0;
    l->last_ms = now;
    return 1;
}
