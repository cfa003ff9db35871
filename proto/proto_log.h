/* proto_log.h — the one logging function of gpt2d, gpt2d-worker and gpt2c: levels, to stderr.
 *
 * The level is checked before anything is formatted (proto_log() is a macro). Line format on a
 * terminal or file:   2025-01-31T12:00:00.123Z gpt2d[1234] info: message
 * and under systemd (JOURNAL_STREAM set), journald's own prefix form:   <6>info: message
 * (journald adds time and pid itself and maps <N> to the priority). Levels are syslog's numbers. */
#ifndef GPT2D_PROTO_LOG_H
#define GPT2D_PROTO_LOG_H

enum { PROTO_LOG_ERROR = 3, PROTO_LOG_WARN = 4, PROTO_LOG_INFO = 6, PROTO_LOG_DEBUG = 7 };

typedef struct {
    int level;        /* messages above this are dropped */
    const char *prog; /* "gpt2d", "gpt2d-worker", ... */
    int journal;      /* stderr is the journal: use <N> prefixes */
} proto_logger;

void proto_log_init(proto_logger *lg, const char *prog, int level);

/* "error", "warn", "info", "debug" -> level; -1 for anything else. */
int proto_log_parse_level(const char *s);

void proto_log_write(const proto_logger *lg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define proto_log(lg, lvl, ...)                                              \
    do {                                                                     \
        if ((lvl) <= (lg)->level) proto_log_write((lg), (lvl), __VA_ARGS__); \
    } while (0)

#endif
