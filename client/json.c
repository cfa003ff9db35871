/* json.c — gpt2c's JSON shapes for frames and batch results (jansson). A result line has the same
 * fields as `gpt2-tool batch`: id, text, tokens, finish_reason, usage, timings (+ error). */
#include <string.h>

#include "gpt2c.h"
#include "gpt2c_json.h"

json_t *json_text(const char *p, size_t n) {
    if (proto_utf8_valid(p, n)) return json_stringn(n ? p : "", n);
    /* raw bytes (a generation cut inside a character): invalid bytes become U+FFFD */
    char *buf = malloc(3 * n + 1);
    if (!buf) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t len = 1;
        unsigned char c = (unsigned char)p[i];
        if (c >= 0xc2 && c <= 0xdf) len = 2;
        else if (c >= 0xe0 && c <= 0xef) len = 3;
        else if (c >= 0xf0 && c <= 0xf4) len = 4;
        if (c >= 0x80 && (i + len > n || !proto_utf8_valid(p + i, len))) {
            memcpy(buf + k, "\xef\xbf\xbd", 3);
            k += 3;
            i++;
            continue;
        }
        memcpy(buf + k, p + i, len);
        k += len;
        i += len;
    }
    json_t *s = json_stringn(buf, k);
    free(buf);
    return s;
}

json_t *json_cid(const proto_cid *id) {
    return id->is_str ? json_text(id->str.ptr, id->str.len) : json_integer((json_int_t)id->num);
}

json_t *json_token_frame(const proto_msg *m) {
    json_t *o = json_pack("{s:s, s:o, s:i, s:i, s:o}", "type", "token", "id", json_cid(&m->id), "index", m->index,
                          "token", m->token, "text", json_text(m->text.ptr, m->text.len));
    if (o && (m->has & PROTO_HAS(PF_LOGPROB))) json_object_set_new(o, "logprob", json_real(m->logprob));
    return o;
}

json_t *json_result(json_t *id, const proto_msg *m) {
    json_t *toks = json_array();
    for (uint32_t i = 0; i < m->n_tokens; i++) json_array_append_new(toks, json_integer(m->tokens[i]));
    json_t *o = json_pack("{s:o, s:o, s:o, s:s, s:{s:i, s:i, s:i}, s:{s:f, s:f, s:f}}", "id", id, "text",
                          json_text(m->text.ptr, m->text.len), "tokens", toks, "finish_reason",
                          proto_finish_name(m->finish), "usage", "prompt_tokens", m->prompt_tokens,
                          "completion_tokens", m->completion_tokens, "cached_tokens", m->cached_tokens,
                          "timings", "queue_ms", m->queue_ms,
                          "ttft_ms", m->ttft_ms, "total_ms", m->total_ms);
    if (o && (m->has & PROTO_HAS(PF_MESSAGE)))
        json_object_set_new(o, "error", json_text(m->message.ptr, m->message.len));
    return o;
}

json_t *json_error_result(json_t *id, int code, const char *message) {
    return json_pack("{s:o, s:s, s:[], s:s, s:{s:i, s:i}, s:{s:f, s:f, s:f}, s:s, s:i}", "id", id, "text", "",
                     "tokens", "finish_reason", "error", "usage", "prompt_tokens", 0, "completion_tokens", 0,
                     "timings", "queue_ms", 0.0, "ttft_ms", 0.0, "total_ms", 0.0, "error", message, "code", code);
}

json_t *json_error_frame(const proto_msg *m) {
    json_t *o = json_pack("{s:s, s:i, s:s, s:o}", "type", "error", "code", m->code, "error", proto_code_name(m->code),
                          "message", json_text(m->message.ptr, m->message.len));
    if (o && (m->has & PROTO_HAS(PF_ID))) json_object_set_new(o, "id", json_cid(&m->id));
    return o;
}

void json_print_line(FILE *f, json_t *o) {
    if (!o) return;
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s) {
        fputs(s, f);
        fputc('\n', f);
        free(s);
    }
    json_decref(o);
}
