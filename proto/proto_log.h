/* proto_log.h — the one logging function of gpt2d, gpt2d-worker and gpt2c: levels, to stderr.
 *
 * The level is checked before anything is formatted (proto_log() is a macro). One line per call,
 * written with a single write so lines of several processes sharing stderr never mix:
 *   on a terminal or file:  2025-01-31T12:00:00.123Z gpt2d[1234] info broker: message
 *   under systemd (JOURNAL_STREAM names stderr):  <6>info broker: message
 * (journald adds time, program and pid itself and maps <N> to the priority). Levels are syslog's
 * numbers. The component ("broker", "supervisor", ...) is optional. Messages about one request
 * are logfmt, `request id=q1 rid=41 finish=length ...`, so `journalctl -u gpt2d | grep id=q1` works. */
#ifndef GPT2D_PROTO_LOG_H
#define GPT2D_PROTO_LOG_H

enum { PROTO_LOG_ERROR = 3, PROTO_LOG_WARN = 4, PROTO_LOG_INFO = 6, PROTO_LOG_DEBUG = 7 };

typedef struct {
    int level;             /* messages above this are dropped */
    const char *prog;      /* "gpt2d", "gpt2d-worker", ... */
    const char *component; /* NULL, or the part of the program speaking ("broker") */
    int journal;           /* stderr is the journal: use <N> prefixes */
} proto_logger;

void proto_log_init(proto_logger *lg, const char *prog, int level);

/* "error", "warn", "info", "debug" -> level; -1 for anything else. */
int proto_log_parse_level(const char *s);

/* Points stderr (fd 2) at path, opened for appending (created 0640): for --log-file, and again on
 * SIGHUP after a log rotation. 0, or -1 with errno (stderr unchanged). */
int proto_log_reopen(proto_logger *lg, const char *path);

void proto_log_write(const proto_logger *lg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Flood control for a line that a peer can make us write at will (an undecodable frame, a refused
 * worker): at most one such line per interval; the ones in between are counted, and the next line
 * written says how many were not. */
typedef struct {
    double last_ms;           /* when the last line was written (monotonic ms) */
    unsigned long suppressed; /* lines not written since */
} proto_log_limit;

#define PROTO_LOG_LIMIT_MS 1000.0

/* 1 if a line may be written now (then *suppressed says how many were dropped before it, and the
 * count restarts); 0 if it is to be dropped (counted). */
int proto_log_allow(proto_log_limit *l, unsigned long *suppressed);

#define proto_log(lg, lvl, ...)                                              \
    do {                                                                     \
        if ((lvl) <= (lg)->level) proto_log_write((lg), (lvl), __VA_ARGS__); \
    } while (0)

#endif
