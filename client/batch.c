/* batch.c — `gpt2c batch IN.jsonl -c N -o OUT.jsonl`: every line of IN is one request, at most N
 * in flight.
 *
 * Input: each line is mapped by proto_json (proto/proto_json.h), the same strict mapper as
 * `gpt2-tool batch` and the HTTP gateway; flags give the defaults, and an id defaults to the line's
 * index among the requests ("0", "1", ...). A line that does not map (bad JSON, an unknown key, a
 * value out of range) is reported as FILE:LINE with the field, and goes to the error file; the
 * other lines still run.
 * Output: OUT gets one result line per request that succeeded, in input order (gpt2-tool batch's
 * fields). It is opened only once the broker has answered (a run that cannot start leaves OUT as it
 * was), and it may not be the input. Requests that fail (refused by the broker, finish "error") go
 * to the error file (-e, default OUT.errors; without -o they are result lines on stdout, as
 * before), one JSON object per line: {"line", "id", "error", "reason", "field", "input"} where
 * "input" is the line as it was, so it can be fixed and run again.
 * --resume: ids that already have a result in OUT are skipped, new results are appended.
 * Overloaded (429) requests are retried with backoff. Requests stream, so the progress bar on stderr
 * (requests done / total, tokens/s, ETA from the tokens still to generate) moves with every token.
 * Ctrl-C: in-flight requests are cancelled, every finished result is written, and what did not
 * finish is listed (run again with --resume to finish them). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpt2c.h"
#include "gpt2c_json.h"
#include "proto_json.h"

#define BATCH_RETRY_MIN_MS 50
#define BATCH_RETRY_MAX_MS 2000
#define BATCH_MAX_REPORTED 10 /* bad lines described on stderr; the rest are counted */

typedef enum { JOB_PENDING, JOB_SKIPPED, JOB_OK, JOB_FAILED, JOB_UNFINISHED } job_state;

typedef struct {
    json_t *id;               /* the output id: the input's id, else the index as a string */
    int lineno;               /* in the input file */
    char *input;              /* the line as it was (for the error file) */
    proto_json_submit sub;    /* the mapped submit; its id is replaced by the job index */
    int mapped;               /* sub holds a submit */
    job_state state;
    int in_flight;
    int retries;
    double retry_at;          /* ms; 0 = not waiting for a retry */
    uint32_t streamed;        /* tokens seen in token frames */
    char *line;               /* the result line, once ended OK */
    char *bad_msg;            /* a line that did not map: why, and the field */
    proto_reason bad_reason;
    char bad_field[PROTO_JSON_FIELD_BYTES];
} batch_job;

typedef struct {
    batch_job *jobs;
    int n;
    int next;                 /* the first never-submitted job */
    int in_flight, done, failed, written, skipped, to_run;
    int n_retry;              /* jobs waiting for a retry */
    uint64_t tokens;          /* generated, counted as token frames arrive */
    uint64_t work_total, work_done; /* max_tokens of the jobs to run; of the ended ones + streamed */
    double t0, last_progress;
    int concurrency_limit;    /* -c */
    FILE *out, *err;
    int err_is_out;           /* failed results go to out as result lines (no -o, no -e) */
    int progress;
    const char *path;         /* the input, for messages */
} batch;

/* ---- input -------------------------------------------------------------------------------------- */

static void batch_free(batch *b) {
    for (int i = 0; i < b->n; i++) {
        batch_job *j = &b->jobs[i];
        json_decref(j->id);
        free(j->input);
        if (j->mapped) proto_json_submit_free(&j->sub);
        free(j->line);
        free(j->bad_msg);
    }
    free(b->jobs);
}

/* An error-file line for job j. */
static void batch_error_line(batch *b, batch_job *j, const char *msg, const char *reason, const char *field,
                             int code) {
    if (b->err_is_out) {
        json_t *r = json_error_result(json_incref(j->id), code, msg);
        if (r && reason && *reason) json_object_set_new(r, "reason", json_string(reason));
        if (r && field && *field) json_object_set_new(r, "field", json_string(field));
        j->line = r ? json_dumps(r, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        json_decref(r);
        return; /* written in order with the results */
    }
    json_t *in = json_text(j->input, strlen(j->input)); /* verbatim: jq -r .input gives the line back */
    json_t *o = json_pack("{s:i, s:O?, s:s, s:s, s:s, s:o}", "line", j->lineno, "id", j->id, "error", msg, "reason",
                          reason ? reason : "", "field", field ? field : "", "input", in);
    json_print_line(b->err, o);
    fflush(b->err);
}

static char *strip_newline(const char *s, size_t n) {
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = 0;
    }
    return c;
}

/* Reads every line of path and maps it. 0, or -1 after printing the problem (a file error; a bad
 * line is not fatal: it is a failed job). */
static int batch_read(batch *b, const char *path, const proto_msg *tmpl) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "gpt2c batch: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int cap_jobs = 0, lineno = 0, rc = 0, bad = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len) continue;
        if (b->n == cap_jobs) {
            cap_jobs = cap_jobs ? 2 * cap_jobs : 64;
            batch_job *p = realloc(b->jobs, (size_t)cap_jobs * sizeof(*p));
            if (!p) {
                rc = -1;
                break;
            }
            b->jobs = p;
        }
        batch_job *j = &b->jobs[b->n];
        memset(j, 0, sizeof(*j));
        int index = b->n++;
        j->lineno = lineno;
        j->input = strip_newline(line, (size_t)len);
        char idx[32];
        snprintf(idx, sizeof(idx), "%d", index);
        proto_msg d = *tmpl;
        d.id = (proto_cid){1, 0, {idx, (uint32_t)strlen(idx)}};
        proto_json_error e;
        json_t *obj = NULL;
        if (proto_json_submit_parse(&j->sub, line, (size_t)len, &d, NULL, &obj, &e) == 0) {
            j->mapped = 1;
            j->id = json_cid(&j->sub.msg.id);
            j->sub.msg.id = (proto_cid){0, (uint64_t)index, {0}};
            j->sub.msg.stream = 1; /* token frames drive the progress bar; done still has the text */
        } else {
            /* the id, if the line has a usable one, else the index */
            json_t *id = json_object_get(obj, "id");
            j->id = json_is_string(id) || json_is_integer(id) ? json_incref(id) : json_string(idx);
            j->state = JOB_FAILED;
            const char *msg = e.message; /* names the field */
            if (bad++ < BATCH_MAX_REPORTED)
                fprintf(stderr, "gpt2c batch: %s:%d: %s (%s)\n", path, lineno, msg, proto_reason_name(e.reason));
            /* the error file is opened later (once the broker answers): keep what it needs */
            j->bad_msg = strdup(msg);
            j->bad_reason = e.reason;
            snprintf(j->bad_field, sizeof(j->bad_field), "%s", e.field);
        }
        json_decref(obj);
    }
    if (bad > BATCH_MAX_REPORTED)
        fprintf(stderr, "gpt2c batch: %s: %d more bad lines (see the error file)\n", path, bad - BATCH_MAX_REPORTED);
    free(line);
    if (f != stdin) fclose(f);
    return rc;
}

/* ---- --resume: ids already in OUT ------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The id of a JSON value as a canonical string (compact JSON), for comparing ids. */
static char *id_key(const json_t *id) { return json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY); }

/* Marks jobs whose id has a result line in path as skipped. 0, or -1 after printing. */
static int batch_resume(batch *b, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? 0 : (fprintf(stderr, "gpt2c batch: %s: %s\n", path, strerror(errno)), -1);
    char **keys = NULL, *line = NULL;
    size_t n = 0, cap = 0, lcap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len) continue;
        json_t *o = json_loadb(line, (size_t)len, 0, NULL);
        json_t *id = json_object_get(o, "id");
        if (!id) { /* a torn last line (killed mid-write) is tolerated: it is rewritten */
            fprintf(stderr, "gpt2c batch: %s:%d: not a result line; ignored\n", path, lineno);
            json_decref(o);
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            char **p = realloc(keys, cap * sizeof(*p));
            if (!p) {
                json_decref(o);
                rc = -1;
                break;
            }
            keys = p;
        }
        keys[n] = id_key(id);
        if (keys[n]) n++;
        json_decref(o);
    }
    free(line);
    fclose(f);
    qsort(keys, n, sizeof(*keys), cmp_str);
    for (int i = 0; rc == 0 && i < b->n; i++) {
        batch_job *j = &b->jobs[i];
        if (j->state != JOB_PENDING) continue;
        char *k = id_key(j->id);
        if (k && bsearch(&k, keys, n, sizeof(*keys), cmp_str)) {
            j->state = JOB_SKIPPED;
            b->skipped++;
        }
        free(k);
    }
    for (size_t i = 0; i < n; i++) free(keys[i]);
    free(keys);
    return rc;
}

/* ---- running -------------------------------------------------------------------------------------- */

static void batch_progress(batch *b, int final) {
    double now = proto_clock_ms();
    if (!b->progress || (!final && now - b->last_progress < 100)) return;
    b->last_progress = now;
    double el = (now - b->t0) / 1000.0;
    double rate = el > 0 ? (double)b->tokens / el : 0;
    /* ETA from the work left: max_tokens of what has not ended, at the rate work got done so far */
    double left = (double)(b->work_total - b->work_done);
    double eta = b->work_done > 0 ? el * left / (double)b->work_done : 0;
    int width = 30, fill = b->to_run ? width * b->done / b->to_run : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r[%s] %d/%d  %llu tok  %.1f tok/s  ETA %d:%02d  ", bar, b->done, b->to_run,
            (unsigned long long)b->tokens, rate, (int)eta / 60, (int)eta % 60);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

/* Writes the results that are next in input order (all finished ones when `all`). */
static void batch_flush(batch *b, int all) {
    while (b->written < b->n) {
        batch_job *j = &b->jobs[b->written];
        int ended = j->state != JOB_PENDING;
        if (!ended && !all) break;
        if (j->line && (j->state == JOB_OK || (b->err_is_out && j->state == JOB_FAILED))) {
            fputs(j->line, b->out);
            fputc('\n', b->out);
        }
        free(j->line);
        j->line = NULL;
        b->written++;
    }
    fflush(b->out);
}

static void batch_end(batch *b, batch_job *j, job_state st) {
    if (j->in_flight) b->in_flight--;
    j->in_flight = 0;
    j->state = st;
    b->done++;
    b->failed += st == JOB_FAILED;
    b->work_done += (uint64_t)j->sub.msg.max_tokens - j->streamed;
    batch_flush(b, 0);
}

/* The job to submit next: a due retry first, else the next new one. */
static batch_job *batch_pick(batch *b, double now) {
    for (int i = 0; b->n_retry > 0 && i < b->next; i++) {
        batch_job *j = &b->jobs[i];
        if (j->retry_at > 0 && j->retry_at <= now) return j;
    }
    while (b->next < b->n && b->jobs[b->next].state != JOB_PENDING) b->next++;
    return b->next < b->n ? &b->jobs[b->next] : NULL;
}

static void batch_submit(batch *b, conn *c, double now) {
    while (b->in_flight < b->concurrency_limit) {
        batch_job *j = batch_pick(b, now);
        if (!j) return;
        if (j == &b->jobs[b->next]) b->next++;
        if (j->retry_at > 0) b->n_retry--;
        j->retry_at = 0;
        if (conn_send(c, &j->sub.msg) < 0) { /* refused locally: a failed result */
            batch_error_line(b, j, c->err, "", "", PROTO_CODE_BAD_REQUEST);
            batch_end(b, j, JOB_FAILED);
            continue;
        }
        j->in_flight = 1;
        b->in_flight++;
    }
}

static void batch_on_message(batch *b, const proto_msg *m, double now) {
    if (!(m->has & PROTO_HAS(PF_ID)) || m->id.is_str || m->id.num >= (uint64_t)b->n) {
        if (m->type == PROTO_T_ERROR)
            fprintf(stderr, "gpt2c batch: broker error %s: %.*s\n", proto_code_name(m->code), (int)m->message.len,
                    m->message.ptr ? m->message.ptr : "");
        return;
    }
    batch_job *j = &b->jobs[m->id.num];
    if (!j->in_flight) return;
    if (m->type == PROTO_T_TOKEN) {
        j->streamed++;
        b->tokens++;
        b->work_done++;
    } else if (m->type == PROTO_T_DONE) {
        if (m->completion_tokens > (int32_t)j->streamed) { /* tokens the stream did not show */
            b->tokens += (uint64_t)m->completion_tokens - j->streamed;
            b->work_done += (uint64_t)m->completion_tokens - j->streamed;
            j->streamed = (uint32_t)m->completion_tokens;
        }
        if (m->finish == PROTO_FINISH_CANCELLED) {
            batch_end(b, j, JOB_UNFINISHED);
        } else if (m->finish == PROTO_FINISH_ERROR) {
            char msg[PROTO_MAX_MESSAGE_BYTES + 8];
            snprintf(msg, sizeof(msg), "%.*s", (int)m->message.len, m->message.ptr ? m->message.ptr : "");
            batch_error_line(b, j, msg, "", "", PROTO_CODE_INTERNAL);
            if (b->err_is_out) {
                free(j->line);
                json_t *r = json_result(json_incref(j->id), m);
                j->line = r ? json_dumps(r, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
                json_decref(r);
            }
            batch_end(b, j, JOB_FAILED);
        } else {
            json_t *r = json_result(json_incref(j->id), m);
            j->line = r ? json_dumps(r, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
            json_decref(r);
            batch_end(b, j, JOB_OK);
        }
    } else if (m->type == PROTO_T_ERROR && m->code == PROTO_CODE_OVERLOADED) {
        int delay = BATCH_RETRY_MIN_MS << (j->retries < 6 ? j->retries : 6);
        j->retries++;
        j->retry_at = now + (delay < BATCH_RETRY_MAX_MS ? delay : BATCH_RETRY_MAX_MS);
        j->in_flight = 0;
        b->in_flight--;
        b->n_retry++;
        b->tokens -= j->streamed; /* a refused request streamed nothing; keep the counts honest */
        b->work_done -= j->streamed;
        j->streamed = 0;
    } else if (m->type == PROTO_T_ERROR) {
        char msg[PROTO_MAX_MESSAGE_BYTES + 64], reason[64], field[64];
        snprintf(msg, sizeof(msg), "%s: %.*s", proto_code_name(m->code), (int)m->message.len,
                 m->message.ptr ? m->message.ptr : "");
        snprintf(reason, sizeof(reason), "%.*s", (int)m->reason.len, m->reason.ptr ? m->reason.ptr : "");
        snprintf(field, sizeof(field), "%.*s", (int)m->field.len, m->field.ptr ? m->field.ptr : "");
        batch_error_line(b, j, msg, reason, field, m->code);
        batch_end(b, j, JOB_FAILED);
    }
}

/* Cancels what is in flight and waits briefly for the ends. */
static void batch_cancel_all(batch *b, conn *c) {
    for (int i = 0; i < b->n; i++) {
        if (!b->jobs[i].in_flight) continue;
        proto_msg x;
        proto_msg_init(&x, PROTO_T_CANCEL);
        x.id = b->jobs[i].sub.msg.id;
        x.has = PROTO_HAS(PF_ID);
        conn_send(c, &x);
    }
    double deadline = proto_clock_ms() + PROTO_CANCEL_GRACE_MS;
    while (b->in_flight > 0 && proto_clock_ms() < deadline) {
        proto_msg m;
        if (conn_recv(c, &m, 50) == 1) {
            batch_on_message(b, &m, proto_clock_ms());
            proto_msg_destroy(&m);
        }
    }
}

/* 1 if a and b name the same existing file. */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (strcmp(a, b) == 0) return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* After an interrupt: what did not finish, by id. */
static void batch_report_unfinished(const batch *b) {
    int n = 0;
    for (int i = 0; i < b->n; i++) n += b->jobs[i].state == JOB_PENDING || b->jobs[i].state == JOB_UNFINISHED;
    if (!n) return;
    fprintf(stderr, "gpt2c batch: interrupted: %d request%s did not finish:", n, n == 1 ? "" : "s");
    int shown = 0;
    for (int i = 0; i < b->n && shown < 20; i++) {
        const batch_job *j = &b->jobs[i];
        if (j->state != JOB_PENDING && j->state != JOB_UNFINISHED) continue;
        char *k = id_key(j->id);
        fprintf(stderr, " %s", k ? k : "?");
        free(k);
        shown++;
    }
    fprintf(stderr, "%s\n", n > shown ? " ..." : "");
    fprintf(stderr, "gpt2c batch: finished results are written; run the same command with --resume to do the rest\n");
}

int cmd_batch(gpt2c_options *o, volatile sig_atomic_t *interrupted) {
    if (o->n_args != 1 || o->concurrency < 1) {
        options_usage(stderr);
        return GPT2C_USAGE;
    }
    const char *in = o->args[0];
    if (o->output && strcmp(in, "-") != 0 && same_file(in, o->output)) {
        fprintf(stderr, "gpt2c batch: the output %s is the input: refused (it would be overwritten)\n", o->output);
        return GPT2C_USAGE;
    }
    if (o->resume && !o->output) {
        fprintf(stderr, "gpt2c batch: --resume needs -o OUT.jsonl (the results to keep)\n");
        return GPT2C_USAGE;
    }
    char errpath[1100];
    if (o->errors) snprintf(errpath, sizeof(errpath), "%s", o->errors);
    else if (o->output) snprintf(errpath, sizeof(errpath), "%s.errors", o->output);
    else errpath[0] = 0;
    if (errpath[0] && ((strcmp(in, "-") != 0 && same_file(in, errpath)) || (o->output && same_file(o->output, errpath)))) {
        fprintf(stderr, "gpt2c batch: the error file %s is the input or the output: refused\n", errpath);
        return GPT2C_USAGE;
    }
    batch b;
    memset(&b, 0, sizeof(b));
    b.concurrency_limit = o->concurrency;
    b.path = in;
    b.err_is_out = !errpath[0];
    if (batch_read(&b, in, &o->req) < 0 || (o->resume && batch_resume(&b, o->output) < 0)) {
        batch_free(&b);
        return GPT2C_USAGE;
    }
    for (int i = 0; i < b.n; i++)
        if (b.jobs[i].state == JOB_PENDING) {
            b.to_run++;
            b.work_total += (uint64_t)b.jobs[i].sub.msg.max_tokens;
        }
    int bad_lines = 0;
    for (int i = 0; i < b.n; i++) bad_lines += b.jobs[i].state == JOB_FAILED;
    b.progress = o->progress < 0 ? isatty(STDERR_FILENO) : o->progress;

    /* the broker first: OUT is opened only once it has answered */
    conn c;
    memset(&c, 0, sizeof(c));
    int rc = b.to_run > 0 ? endpoint_resolve(o) : 0;
    if (rc == 0 && b.to_run > 0) rc = conn_open(&c, o->connect);
    if (rc != 0) {
        fprintf(stderr, "gpt2c batch: nothing run; %s left as it was\n", o->output ? o->output : "the output");
        conn_close(&c);
        batch_free(&b);
        return rc;
    }
    b.out = o->output ? fopen(o->output, o->resume ? "a" : "w") : stdout;
    b.err = errpath[0] ? fopen(errpath, o->resume ? "a" : "w") : NULL;
    if (!b.out || (errpath[0] && !b.err)) {
        fprintf(stderr, "gpt2c batch: %s: %s\n", !b.out ? o->output : errpath, strerror(errno));
        if (b.out && b.out != stdout) fclose(b.out);
        conn_close(&c);
        batch_free(&b);
        return GPT2C_USAGE;
    }
    /* the lines that did not map: their error lines */
    for (int i = 0; i < b.n; i++) {
        batch_job *j = &b.jobs[i];
        if (j->state != JOB_FAILED) continue;
        batch_error_line(&b, j, j->bad_msg ? j->bad_msg : "invalid", proto_reason_name(j->bad_reason), j->bad_field,
                         proto_reason_code(j->bad_reason));
        b.failed++;
    }
    batch_flush(&b, 0);
    b.t0 = proto_clock_ms();
    while (rc == 0 && b.done < b.to_run) {
        double now = proto_clock_ms();
        if (*interrupted) {
            batch_cancel_all(&b, &c);
            rc = GPT2C_INTERRUPTED;
            break;
        }
        batch_submit(&b, &c, now);
        proto_msg m;
        int got = conn_recv(&c, &m, 50);
        if (got < 0 || (got == 0 && b.in_flight > 0 && conn_broker_dead(&c))) {
            fprintf(stderr, "\ngpt2c batch: lost the broker at %s\n", o->connect);
            rc = GPT2C_UNREACHABLE;
            break;
        }
        if (got == 1) {
            batch_on_message(&b, &m, proto_clock_ms());
            proto_msg_destroy(&m);
        }
        batch_progress(&b, 0);
    }
    batch_progress(&b, 1);
    batch_flush(&b, 1); /* after an interrupt: every finished result, even past an unfinished one */
    if (rc != 0) batch_report_unfinished(&b);
    if (rc == 0 && b.failed > 0) rc = GPT2C_SERVER_ERROR;
    if (b.out != stdout && fclose(b.out) != 0 && rc == 0) rc = GPT2C_USAGE;
    if (b.err && fclose(b.err) != 0 && rc == 0) rc = GPT2C_USAGE;
    fprintf(stderr, "gpt2c batch: %d/%d done, %d failed (%d bad lines)%s%s, %d skipped (--resume), %llu tokens in %.2f s\n",
            b.done, b.to_run, b.failed, bad_lines, b.failed && errpath[0] ? ", see " : "",
            b.failed && errpath[0] ? errpath : "", b.skipped, (unsigned long long)b.tokens,
            (proto_clock_ms() - b.t0) / 1000.0);
    conn_close(&c);
    batch_free(&b);
    return rc;
}
