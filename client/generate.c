/* generate.c — `gpt2c "prompt"`: one streamed request; pieces go to stdout as they arrive.
 * Ctrl-C sends cancel and waits up to PROTO_CANCEL_GRACE_MS for the cancelled done frame. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpt2c.h"
#include "gpt2c_json.h"

/* The whole of stdin, NUL-terminated; NULL on failure. */
static char *read_stdin(size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, stdin);
        n += got;
        if (got == 0) break;
        if (cap - n - 1 == 0) {
            char *p = cap < PROTO_MAX_PROMPT_BYTES * 2 ? realloc(buf, cap * 2) : NULL;
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
    }
    if (buf) buf[n] = 0;
    *len = n;
    return buf;
}

/* What has been printed of the text, so that a terminal's prompt starts on a new line. */
typedef struct {
    int printed;    /* some text went to stdout */
    char last;      /* its last byte */
} gen_out;

/* With --logprobs and no --json: one line per token (index, id, logprob, piece as a JSON string). */
static void gen_logprob_line(const proto_msg *m) {
    json_t *piece = json_text(m->text.ptr ? m->text.ptr : "", m->text.len);
    char *ps = piece ? json_dumps(piece, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;
    if (m->has & PROTO_HAS(PF_LOGPROB))
        printf("%5d %6d %10.4f  %s\n", m->index, m->token, m->logprob, ps ? ps : "\"\"");
    else
        printf("%5d %6d %10s  %s\n", m->index, m->token, "-", ps ? ps : "\"\"");
    free(ps);
    json_decref(piece);
}

/* Prints a frame for the user. Returns -1 while the request runs, else the exit code. */
static int gen_frame(const gpt2c_options *o, const proto_msg *m, int interrupted, gen_out *out) {
    switch (m->type) {
    case PROTO_T_TOKEN:
        if (o->json) {
            json_print_line(stdout, json_token_frame(m));
        } else if (o->req.logprobs) {
            gen_logprob_line(m);
        } else if (m->text.len) {
            fwrite(m->text.ptr, 1, m->text.len, stdout);
            out->printed = 1;
            out->last = m->text.ptr[m->text.len - 1];
        }
        fflush(stdout);
        return -1;
    case PROTO_T_DONE: {
        if (o->json) {
            json_t *r = json_result(json_cid(&m->id), m);
            if (r) json_object_set_new(r, "type", json_string("done"));
            json_print_line(stdout, r);
        }
        fflush(stdout);
        if (m->finish == PROTO_FINISH_ERROR) {
            fprintf(stderr, "gpt2c: generation failed: %.*s\n", (int)m->message.len, m->message.ptr ? m->message.ptr : "");
            return GPT2C_SERVER_ERROR;
        }
        if (m->finish == PROTO_FINISH_CANCELLED) return interrupted ? GPT2C_INTERRUPTED : GPT2C_SERVER_ERROR;
        return GPT2C_OK;
    }
    case PROTO_T_ERROR:
        if (o->json) json_print_line(stdout, json_error_frame(m));
        fprintf(stderr, "gpt2c: %s (%d%s%.*s%s%.*s): %.*s\n", proto_code_name(m->code), m->code,
                m->reason.len ? ", " : "", (int)m->reason.len, m->reason.ptr ? m->reason.ptr : "",
                m->field.len ? " in " : "", (int)m->field.len, m->field.ptr ? m->field.ptr : "", (int)m->message.len,
                m->message.ptr ? m->message.ptr : "");
        return gpt2c_code_exit(m->code);
    default: return -1; /* hb, welcome */
    }
}

int cmd_generate(gpt2c_options *o, volatile sig_atomic_t *interrupted) {
    if (o->n_args != (o->prompt ? 0 : 1)) {
        options_usage(stderr);
        return GPT2C_USAGE;
    }
    char *owned = NULL;
    const char *prompt = o->prompt ? o->prompt : o->args[0];
    size_t len = strlen(prompt);
    if (strcmp(prompt, "-") == 0) {
        prompt = owned = read_stdin(&len);
        if (!owned) {
            fprintf(stderr, "gpt2c: cannot read the prompt from stdin\n");
            return GPT2C_USAGE;
        }
    } else if (!o->no_escape) { /* "\n" typed on the command line means a newline */
        if (!(owned = strdup(prompt))) return GPT2C_USAGE;
        len = options_unescape(owned);
        prompt = owned;
    }
    gen_out out = {0, 0};
    conn c;
    memset(&c, 0, sizeof(c));
    int rc = endpoint_resolve(o);
    if (rc != 0) goto out;
    rc = conn_open(&c, o->connect);
    if (rc != 0) goto out;
    proto_msg *q = &o->req;
    q->id = (proto_cid){0, 1, {0}};
    q->prompt = (proto_str){prompt, (uint32_t)len};
    q->has |= PROTO_HAS(PF_PROMPT);
    q->stream = 1;
    rc = GPT2C_USAGE;
    if (conn_send(&c, q) < 0) goto out;
    double cancel_deadline = 0;
    for (rc = -1; rc < 0;) {
        if (*interrupted && cancel_deadline == 0) {
            proto_msg x;
            proto_msg_init(&x, PROTO_T_CANCEL);
            x.id = q->id;
            x.has = PROTO_HAS(PF_ID);
            conn_send(&c, &x);
            cancel_deadline = proto_clock_ms() + PROTO_CANCEL_GRACE_MS;
        }
        if (cancel_deadline > 0 && (proto_clock_ms() > cancel_deadline || *interrupted > 1)) {
            rc = GPT2C_INTERRUPTED;
            break;
        }
        proto_msg m;
        int got = conn_recv(&c, &m, cancel_deadline > 0 ? 50 : PROTO_HEARTBEAT_MS);
        if (got < 0 || (got == 0 && conn_broker_dead(&c))) {
            fprintf(stderr, "gpt2c: lost the broker at %s\n", o->connect);
            rc = GPT2C_UNREACHABLE;
            break;
        }
        if (got == 0) continue;
        rc = gen_frame(o, &m, *interrupted != 0, &out);
        proto_msg_destroy(&m);
    }
out:
    if (out.printed && out.last != '\n' && isatty(STDOUT_FILENO)) fputc('\n', stdout);
    fflush(stdout);
    conn_close(&c);
    free(owned);
    return rc;
}
