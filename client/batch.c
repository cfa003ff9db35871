/* batch.c — `gpt2c batch IN.jsonl -c N -o OUT.jsonl`: every line of IN is one request, at most N
 * in flight. Input lines use gpt2-tool batch's fields ({"id", "prompt" or "prompt_ids",
 * "max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
 * "presence_penalty", "frequency_penalty", "seed", "stop", "ignore_eos", "allow_special", "priority"}; other
 * fields are ignored); flags give the defaults. Output: one result line per input line, in input
 * order, with gpt2-tool batch's fields. A request refused as overloaded is retried with backoff;
 * other errors become result lines with finish_reason "error". A progress bar (done / total,
 * tokens/s, ETA) goes to stderr when it is a terminal. Ctrl-C cancels what is in flight. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpt2c.h"
#include "gpt2c_json.h"

#define BATCH_RETRY_MIN_MS 50
#define BATCH_RETRY_MAX_MS 2000

typedef struct {
    char *id;                 /* output id: the input's string id, else the line index */
    proto_msg req;            /* the submit, with strings owned below */
    char *prompt;
    int32_t *prompt_ids;
    char stops[PROTO_MAX_STOPS][PROTO_MAX_STOP_BYTES + 1];
    int in_flight;
    int retries;
    double retry_at;          /* ms; 0 = not waiting for a retry */
    char *line;               /* the result line, once ended */
} batch_job;

typedef struct {
    batch_job *jobs;
    int n;
    int next;                 /* the first never-submitted job */
    int in_flight, done, failed, written;
    int n_retry;              /* jobs waiting for a retry */
    uint64_t tokens;
    double t0, last_progress;
    int concurrency_limit;    /* -c */
    FILE *out;
    int progress;
} batch;

/* ---- input -------------------------------------------------------------------------------------- */

static int job_num(json_t *o, const char *key, double *x) {
    json_t *v = json_object_get(o, key);
    if (!v) return 0;
    if (!json_is_number(v)) return -1;
    *x = json_number_value(v);
    return 0;
}

/* Fills j from one JSON line; defaults come from tmpl. 0 or -1 with err. */
static int job_parse(batch_job *j, const proto_msg *tmpl, json_t *o, int index, char *err, size_t errlen) {
    j->req = *tmpl;
    proto_msg *q = &j->req;
    q->id = (proto_cid){0, (uint64_t)index, {0}};
    q->stream = 0; /* the done frame carries text and tokens */
    json_t *id = json_object_get(o, "id"), *prompt = json_object_get(o, "prompt");
    json_t *ids = json_object_get(o, "prompt_ids");
    char idx[32];
    snprintf(idx, sizeof(idx), "%d", index);
    j->id = strdup(json_is_string(id) ? json_string_value(id) : idx);
    if (!j->id) goto oom;
    q->has &= ~(PROTO_HAS(PF_PROMPT) | PROTO_HAS(PF_PROMPT_IDS));
    if (json_is_string(prompt)) {
        size_t n = json_string_length(prompt);
        if (!(j->prompt = malloc(n + 1))) goto oom;
        memcpy(j->prompt, json_string_value(prompt), n + 1);
        q->prompt = (proto_str){j->prompt, (uint32_t)n};
        q->has |= PROTO_HAS(PF_PROMPT);
    } else if (json_is_array(ids)) {
        size_t n = json_array_size(ids);
        if (n > PROTO_MAX_IDS || !(j->prompt_ids = malloc((n ? n : 1) * sizeof(int32_t)))) {
            snprintf(err, errlen, "\"prompt_ids\": at most %d ids", PROTO_MAX_IDS);
            return -1;
        }
        for (size_t i = 0; i < n; i++) j->prompt_ids[i] = (int32_t)json_integer_value(json_array_get(ids, i));
        q->prompt_ids = j->prompt_ids;
        q->n_prompt_ids = (uint32_t)n;
        q->has |= PROTO_HAS(PF_PROMPT_IDS);
    } else {
        snprintf(err, errlen, "\"prompt\" (a string) or \"prompt_ids\" (an array) is required");
        return -1;
    }
    double mt = q->max_tokens, t = q->temperature, tk = q->top_k, tp = q->top_p, mp = q->min_p,
           rp = q->repetition_penalty, pp = q->presence_penalty, fp = q->frequency_penalty, seed = (double)q->seed;
    if (job_num(o, "max_tokens", &mt) || job_num(o, "temperature", &t) || job_num(o, "top_k", &tk) ||
        job_num(o, "top_p", &tp) || job_num(o, "min_p", &mp) || job_num(o, "repetition_penalty", &rp) ||
        job_num(o, "presence_penalty", &pp) || job_num(o, "frequency_penalty", &fp) || job_num(o, "seed", &seed)) {
        snprintf(err, errlen, "a numeric field has a non-numeric value");
        return -1;
    }
    q->max_tokens = (int32_t)mt;
    q->temperature = (float)t;
    q->top_k = (int32_t)tk;
    q->top_p = (float)tp;
    q->min_p = (float)mp;
    q->repetition_penalty = (float)rp;
    q->presence_penalty = (float)pp;
    q->frequency_penalty = (float)fp;
    if (json_object_get(o, "seed")) q->seed = (uint64_t)json_integer_value(json_object_get(o, "seed"));
    if (json_object_get(o, "ignore_eos")) q->ignore_eos = json_is_true(json_object_get(o, "ignore_eos"));
    if (json_object_get(o, "allow_special")) q->allow_special = json_is_true(json_object_get(o, "allow_special"));
    json_t *prio = json_object_get(o, "priority");
    if (prio) {
        const char *ps = json_string_value(prio);
        int pr = ps ? proto_priority_parse(ps, strlen(ps)) : -1;
        if (pr < 0) {
            snprintf(err, errlen, "\"priority\": \"interactive\" or \"bulk\"");
            return -1;
        }
        q->priority = (proto_priority)pr;
    }
    json_t *stop = json_object_get(o, "stop");
    if (stop) {
        json_t *arr = json_is_string(stop) ? json_pack("[O]", stop) : json_incref(stop);
        q->n_stop = 0;
        if (!json_is_array(arr) || json_array_size(arr) > PROTO_MAX_STOPS) {
            json_decref(arr);
            snprintf(err, errlen, "\"stop\": a string or up to %d strings", PROTO_MAX_STOPS);
            return -1;
        }
        for (size_t i = 0; i < json_array_size(arr); i++) {
            json_t *s = json_array_get(arr, i);
            size_t n = json_is_string(s) ? json_string_length(s) : 0;
            if (n < 1 || n > PROTO_MAX_STOP_BYTES) {
                json_decref(arr);
                snprintf(err, errlen, "\"stop\": strings of 1..%d bytes", PROTO_MAX_STOP_BYTES);
                return -1;
            }
            memcpy(j->stops[i], json_string_value(s), n + 1);
            q->stop[q->n_stop++] = (proto_str){j->stops[i], (uint32_t)n};
        }
        json_decref(arr);
    } else {
        for (uint32_t i = 0; i < q->n_stop; i++) {
            memcpy(j->stops[i], q->stop[i].ptr, q->stop[i].len);
            j->stops[i][q->stop[i].len] = 0;
            q->stop[i].ptr = j->stops[i];
        }
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static void batch_free(batch *b) {
    for (int i = 0; i < b->n; i++) {
        free(b->jobs[i].id);
        free(b->jobs[i].prompt);
        free(b->jobs[i].prompt_ids);
        free(b->jobs[i].line);
    }
    free(b->jobs);
}

/* Reads every line of path. 0 or -1 after printing the problem. */
static int batch_read(batch *b, const char *path, const proto_msg *tmpl) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "gpt2c batch: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int cap_jobs = 0, lineno = 0, rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len) continue;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je);
        if (!json_is_object(o)) {
            fprintf(stderr, "gpt2c batch: %s:%d: not a JSON object: %s\n", path, lineno, o ? "" : je.text);
            json_decref(o);
            rc = -1;
            break;
        }
        if (b->n == cap_jobs) {
            cap_jobs = cap_jobs ? 2 * cap_jobs : 64;
            batch_job *p = realloc(b->jobs, (size_t)cap_jobs * sizeof(*p));
            if (!p) {
                json_decref(o);
                rc = -1;
                break;
            }
            b->jobs = p;
        }
        batch_job *j = &b->jobs[b->n];
        memset(j, 0, sizeof(*j));
        b->n++;
        char err[256];
        if (job_parse(j, tmpl, o, b->n - 1, err, sizeof(err)) < 0) {
            fprintf(stderr, "gpt2c batch: %s:%d: %s\n", path, lineno, err);
            rc = -1;
        }
        json_decref(o);
    }
    free(line);
    if (f != stdin) fclose(f);
    return rc;
}

/* ---- running -------------------------------------------------------------------------------------- */

static void batch_progress(batch *b, int final) {
    double now = proto_clock_ms();
    if (!b->progress || (!final && now - b->last_progress < 100)) return;
    b->last_progress = now;
    double el = (now - b->t0) / 1000.0;
    double rate = el > 0 ? (double)b->tokens / el : 0;
    double eta = b->done > 0 ? el * (b->n - b->done) / b->done : 0;
    int width = 30, fill = b->n ? width * b->done / b->n : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r[%s] %d/%d  %.1f tok/s  ETA %d:%02d  ", bar, b->done, b->n, rate, (int)eta / 60,
            (int)eta % 60);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

/* Writes the results that are next in input order. */
static void batch_flush(batch *b) {
    while (b->written < b->n && b->jobs[b->written].line) {
        fputs(b->jobs[b->written].line, b->out);
        fputc('\n', b->out);
        free(b->jobs[b->written].line);
        b->jobs[b->written].line = NULL;
        b->written++;
    }
    fflush(b->out);
}

static void batch_end(batch *b, batch_job *j, json_t *result, int failed) {
    char *s = result ? json_dumps(result, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(result);
    j->line = s ? s : strdup("{}");
    j->in_flight = 0;
    b->in_flight--;
    b->done++;
    b->failed += failed;
    batch_flush(b);
}

/* The job to submit next: a due retry first, else the next new one. */
static batch_job *batch_pick(batch *b, double now) {
    for (int i = 0; b->n_retry > 0 && i < b->next; i++) {
        batch_job *j = &b->jobs[i];
        if (j->retry_at > 0 && j->retry_at <= now) return j;
    }
    return b->next < b->n ? &b->jobs[b->next] : NULL;
}

static int batch_submit(batch *b, conn *c, double now) {
    while (b->in_flight < b->concurrency_limit) {
        batch_job *j = batch_pick(b, now);
        if (!j) return 0;
        if (j == &b->jobs[b->next]) b->next++;
        if (j->retry_at > 0) b->n_retry--;
        j->retry_at = 0;
        if (conn_send(c, &j->req) < 0) {
            /* refused locally (e.g. a prompt over the protocol's limits): a failed result */
            b->in_flight++;
            batch_end(b, j, json_error_result(json_string(j->id), PROTO_CODE_BAD_REQUEST, "cannot send"), 1);
            continue;
        }
        j->in_flight = 1;
        b->in_flight++;
    }
    return 0;
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
    if (m->type == PROTO_T_DONE) {
        b->tokens += (uint64_t)m->completion_tokens;
        batch_end(b, j, json_result(json_string(j->id), m), m->finish == PROTO_FINISH_ERROR);
    } else if (m->type == PROTO_T_ERROR && m->code == PROTO_CODE_OVERLOADED) {
        int delay = BATCH_RETRY_MIN_MS << (j->retries < 6 ? j->retries : 6);
        j->retries++;
        j->retry_at = now + (delay < BATCH_RETRY_MAX_MS ? delay : BATCH_RETRY_MAX_MS);
        j->in_flight = 0;
        b->in_flight--;
        b->n_retry++;
    } else if (m->type == PROTO_T_ERROR) {
        char msg[PROTO_MAX_MESSAGE_BYTES + 64];
        snprintf(msg, sizeof(msg), "%s: %.*s", proto_code_name(m->code), (int)m->message.len,
                 m->message.ptr ? m->message.ptr : "");
        batch_end(b, j, json_error_result(json_string(j->id), m->code, msg), 1);
    }
}

/* Cancels what is in flight and waits briefly for the ends. */
static void batch_cancel_all(batch *b, conn *c) {
    for (int i = 0; i < b->n; i++) {
        if (!b->jobs[i].in_flight) continue;
        proto_msg x;
        proto_msg_init(&x, PROTO_T_CANCEL);
        x.id = b->jobs[i].req.id;
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

int cmd_batch(gpt2c_options *o, volatile sig_atomic_t *interrupted) {
    if (o->n_args != 1 || o->concurrency < 1) {
        options_usage(stderr);
        return GPT2C_USAGE;
    }
    batch b;
    memset(&b, 0, sizeof(b));
    b.concurrency_limit = o->concurrency;
    if (batch_read(&b, o->args[0], &o->req) < 0) {
        batch_free(&b);
        return GPT2C_USAGE;
    }
    b.out = o->output ? fopen(o->output, "w") : stdout;
    if (!b.out) {
        fprintf(stderr, "gpt2c batch: %s: %s\n", o->output, strerror(errno));
        batch_free(&b);
        return GPT2C_USAGE;
    }
    b.progress = o->progress < 0 ? isatty(STDERR_FILENO) : o->progress;
    conn c;
    int rc = conn_open(&c, o->connect);
    b.t0 = proto_clock_ms();
    while (rc == 0 && b.done < b.n) {
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
    if (rc == 0 && b.failed > 0) rc = GPT2C_SERVER_ERROR;
    if (b.out != stdout && fclose(b.out) != 0 && rc == 0) rc = GPT2C_USAGE;
    fprintf(stderr, "gpt2c batch: %d/%d done, %d failed, %llu tokens in %.2f s\n", b.done, b.n, b.failed,
            (unsigned long long)b.tokens, (proto_clock_ms() - b.t0) / 1000.0);
    conn_close(&c);
    batch_free(&b);
    return rc;
}
