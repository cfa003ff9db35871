/* proto_log.c — see proto_log.h. */
#include "proto_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

void proto_log_init(proto_logger *lg, const char *prog, int level) {
    const char *js = getenv("JOURNAL_STREAM");
    lg->level = level;
    lg->prog = prog;
    lg->journal = js && *js;
}

int proto_log_parse_level(const char *s) {
    static const int levels[] = {PROTO_LOG_ERROR, PROTO_LOG_WARN, PROTO_LOG_INFO, PROTO_LOG_DEBUG};
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (strcmp(s, level_name(levels[i])) == 0) return levels[i];
    return -1;
}

void proto_log_write(const proto_logger *lg, int level, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (lg->journal) {
        fprintf(stderr, "<%d>%s: %s\n", level, level_name(level), msg);
        return;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    /* one fprintf per line: stderr is unbuffered, so lines from several processes do not mix */
    fprintf(stderr, "%s.%03ldZ %s[%d] %s: %s\n", when, ts.tv_nsec / 1000000, lg->prog, (int)getpid(),
            level_name(level), msg);
}
