/* test_protoword.c — the protocol keeps its word: every promise of proto/PROTOCOL.md that issue 10
 * found broken, checked against the decoder, against PROTOCOL.md itself (its tables are read at run
 * time and compared with proto.c's), and against gpt2d with a real worker: penalty ranges, the
 * reason of each refusal and its `field`, text cut inside a UTF-8 character, `tokens` at EOS and
 * when a stop string ends inside a token, a 409, a cancelled queued request's queue_ms, heartbeat
 * spacing, float widths and key order. Env: BUILD, GPT2D_TMP, GPT2D_ROOT (PROTOCOL.md). */
#include <math.h>

#include "check.h"
#include "tutil.h"

/* ============================================================================================== */
/* hand-made msgpack                                                                               */
/* ============================================================================================== */

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} mp;

static void mp_begin(mp *b, int n_keys, const char *type) {
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&b->pk, (size_t)n_keys);
    if (!type) return;
    msgpack_pack_str_with_body(&b->pk, "t", 1);
    msgpack_pack_str_with_body(&b->pk, type, strlen(type));
    msgpack_pack_str_with_body(&b->pk, "v", 1);
    msgpack_pack_int(&b->pk, 1);
}

static void mp_key(mp *b, const char *k) { msgpack_pack_str_with_body(&b->pk, k, strlen(k)); }

/* Decodes b; returns the status, m filled (destroy it). */
static int mp_decode(mp *b, proto_msg *m, char *err, size_t cap) {
    int rc = proto_decode(m, b->sb.data, b->sb.size, err, cap);
    return rc;
}

/* A submit {t, v, id: 1, prompt: "Hi", <key>: <one value packed by fn>} decoded: its fail reason. */
typedef void (*packfn)(msgpack_packer *pk);
static proto_reason submit_with(const char *key, packfn fn, const char **field, char *err, size_t cap) {
    mp b;
    mp_begin(&b, 5, "submit");
    mp_key(&b, "id");
    msgpack_pack_int(&b.pk, 1);
    mp_key(&b, "prompt");
    msgpack_pack_str_with_body(&b.pk, "Hi", 2);
    mp_key(&b, key);
    fn(&b.pk);
    proto_msg m;
    int rc = mp_decode(&b, &m, err, cap);
    proto_reason r = rc == 0 ? PROTO_R_NONE : m.fail;
    static char fbuf[80];
    snprintf(fbuf, sizeof(fbuf), "%s", m.fail_field ? m.fail_field : "");
    if (field) *field = fbuf;
    proto_msg_destroy(&m);
    msgpack_sbuffer_destroy(&b.sb);
    return r;
}

static void pk_5(msgpack_packer *pk) { msgpack_pack_double(pk, 5.0); }
static void pk_m3(msgpack_packer *pk) { msgpack_pack_double(pk, -3.0); }
static void pk_1_5(msgpack_packer *pk) { msgpack_pack_float(pk, 1.5f); }
static void pk_true(msgpack_packer *pk) { msgpack_pack_true(pk); }
static void pk_float(msgpack_packer *pk) { msgpack_pack_double(pk, 1.0); }
static void pk_bias(msgpack_packer *pk, int64_t id, double bias) {
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_int64(pk, id);
    msgpack_pack_double(pk, bias);
}
static void pk_bias_inf(msgpack_packer *pk) { pk_bias(pk, 1, INFINITY); }
static void pk_bias_nan(msgpack_packer *pk) { pk_bias(pk, 1, NAN); }
static void pk_bias_ban(msgpack_packer *pk) { pk_bias(pk, 1, -INFINITY); }
static void pk_bias_neg_id(msgpack_packer *pk) { pk_bias(pk, -1, 1.0); }
static void pk_bias_big_id(msgpack_packer *pk) { pk_bias(pk, 2000000, 1.0); }
static void pk_bias_200(msgpack_packer *pk) { pk_bias(pk, 1, 200.0); }

static void test_decoder(void) {
    char err[256];
    const char *field;
    proto_reason r = submit_with("presence_penalty", pk_5, &field, err, sizeof(err));
    check(r == PROTO_R_OUT_OF_RANGE && strcmp(field, "presence_penalty") == 0,
          "presence_penalty 5 is refused by the decoder, naming the field (%s, '%s')", proto_reason_name(r), field);
    r = submit_with("frequency_penalty", pk_m3, &field, err, sizeof(err));
    check(r == PROTO_R_OUT_OF_RANGE && strcmp(field, "frequency_penalty") == 0, "frequency_penalty -3 too (%s)",
          proto_reason_name(r));
    check(submit_with("presence_penalty", pk_1_5, NULL, err, sizeof(err)) == PROTO_R_NONE, "1.5 is in range");

    /* the id: the whole submit is {t, v, id, prompt, id2}; a non-str/int id needs its own message */
    mp b;
    mp_begin(&b, 4, "submit");
    mp_key(&b, "id");
    pk_true(&b.pk);
    mp_key(&b, "prompt");
    msgpack_pack_str_with_body(&b.pk, "Hi", 2);
    proto_msg m;
    int rc = mp_decode(&b, &m, err, sizeof(err));
    check(rc < 0 && m.fail == PROTO_R_BAD_ID && m.fail_field && strcmp(m.fail_field, "id") == 0,
          "an id that is a bool is bad_id (%s)", proto_reason_name(m.fail));
    proto_msg_destroy(&m);
    msgpack_sbuffer_destroy(&b.sb);
    mp_begin(&b, 4, "submit");
    mp_key(&b, "id");
    pk_float(&b.pk);
    mp_key(&b, "prompt");
    msgpack_pack_str_with_body(&b.pk, "Hi", 2);
    rc = mp_decode(&b, &m, err, sizeof(err));
    check(rc < 0 && m.fail == PROTO_R_BAD_ID, "an id that is a float is bad_id (%s)", proto_reason_name(m.fail));
    proto_msg_destroy(&m);
    msgpack_sbuffer_destroy(&b.sb);

    r = submit_with("logit_bias", pk_bias_inf, &field, err, sizeof(err));
    check(r == PROTO_R_NOT_FINITE && strcmp(field, "logit_bias") == 0, "a +inf bias is not_finite (%s)",
          proto_reason_name(r));
    r = submit_with("logit_bias", pk_bias_nan, &field, err, sizeof(err));
    check(r == PROTO_R_NOT_FINITE, "a NaN bias is not_finite (%s)", proto_reason_name(r));
    check(submit_with("logit_bias", pk_bias_ban, NULL, err, sizeof(err)) == PROTO_R_NONE, "-inf (a ban) is fine");
    r = submit_with("logit_bias", pk_bias_neg_id, &field, err, sizeof(err));
    check(r == PROTO_R_TOKEN_OUT_OF_RANGE && proto_reason_code(r) == 422 && strstr(err, "token id"),
          "a negative bias id is token_out_of_range, 422 (%s, %d: %s)", proto_reason_name(r), proto_reason_code(r),
          err);
    r = submit_with("logit_bias", pk_bias_big_id, &field, err, sizeof(err));
    check(r == PROTO_R_TOKEN_OUT_OF_RANGE, "a bias id over the id limit too (%s)", proto_reason_name(r));
    r = submit_with("logit_bias", pk_bias_200, &field, err, sizeof(err));
    check(r == PROTO_R_OUT_OF_RANGE, "a bias of 200 is out_of_range (%s)", proto_reason_name(r));

    /* a repeated "t" */
    mp_begin(&b, 4, "submit");
    mp_key(&b, "t");
    msgpack_pack_str_with_body(&b.pk, "submit", 6);
    mp_key(&b, "prompt");
    msgpack_pack_str_with_body(&b.pk, "Hi", 2);
    rc = mp_decode(&b, &m, err, sizeof(err));
    check(rc < 0 && m.fail == PROTO_R_DUPLICATE_FIELD && m.fail_field && strcmp(m.fail_field, "t") == 0,
          "a repeated t is duplicate_field 't' (%s)", proto_reason_name(m.fail));
    proto_msg_destroy(&m);
    msgpack_sbuffer_destroy(&b.sb);

    /* unknown_field names the field */
    r = submit_with("temprature", pk_1_5, &field, err, sizeof(err));
    check(r == PROTO_R_UNKNOWN_FIELD && strcmp(field, "temprature") == 0, "unknown_field carries field '%s'", field);

    /* key order is free; floats may be any width */
    mp_begin(&b, 6, NULL);
    mp_key(&b, "top_p");
    msgpack_pack_float(&b.pk, 0.9f);
    mp_key(&b, "temperature");
    msgpack_pack_double(&b.pk, 0.7);
    mp_key(&b, "prompt");
    msgpack_pack_str_with_body(&b.pk, "Hi", 2);
    mp_key(&b, "id");
    msgpack_pack_int(&b.pk, 3);
    mp_key(&b, "v");
    msgpack_pack_int(&b.pk, 1);
    mp_key(&b, "t");
    msgpack_pack_str_with_body(&b.pk, "submit", 6);
    rc = mp_decode(&b, &m, err, sizeof(err));
    check(rc == 0 && m.temperature == 0.7f && m.top_p == 0.9f && m.id.num == 3,
          "keys in any order, float32 and float64 both read (rc %d: %s)", rc, err);
    proto_msg_destroy(&m);
    msgpack_sbuffer_destroy(&b.sb);
    /* what gpt2d sends: float32 for the sampling numbers and logprob, float64 for timings and stats */
    proto_msg t;
    proto_msg_init(&t, PROTO_T_TOKEN);
    t.id = (proto_cid){0, 1, {0}};
    t.has = PROTO_HAS(PF_ID) | PROTO_HAS(PF_LOGPROB);
    t.logprob = -0.5f;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    check(proto_encode(&t, &sb, err, sizeof(err)) == 0 && memchr(sb.data, 0xca, sb.size) &&
              !memchr(sb.data, 0xcb, sb.size),
          "logprob goes out as float32 (0xca)");
    msgpack_sbuffer_clear(&sb);
    proto_msg d;
    proto_msg_init(&d, PROTO_T_DONE);
    d.id = t.id;
    d.has = PROTO_HAS(PF_ID);
    d.total_ms = 1.5;
    check(proto_encode(&d, &sb, err, sizeof(err)) == 0 && memchr(sb.data, 0xcb, sb.size),
          "timings go out as float64 (0xcb)");
    msgpack_sbuffer_destroy(&sb);
}

/* ============================================================================================== */
/* PROTOCOL.md against proto.c                                                                     */
/* ============================================================================================== */

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (p) p[n] = 0;
    fclose(f);
    return p;
}

static void test_doc(void) {
    char path[700];
    const char *root = getenv("GPT2D_ROOT");
    snprintf(path, sizeof(path), "%s/proto/PROTOCOL.md", root && *root ? root : ".");
    char *doc = slurp(path);
    check(doc != NULL, "read %s", path);
    if (!doc) return;
    /* the reason table: each reason's row gives the code proto_reason_code() uses */
    for (int r = 1; r < PROTO_R_COUNT; r++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "`%s`", proto_reason_name((proto_reason)r));
        int code = -1;
        for (char *line = doc; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
            if (line[0] != '|') continue;
            char *bar = strchr(line + 1, '|'), *eol = strchr(line, '\n');
            if (!bar || (eol && bar > eol)) continue;
            *bar = 0;
            int here = strstr(line, needle) != NULL;
            *bar = '|';
            int c;
            if (here && sscanf(bar + 1, " %d |", &c) == 1) {
                code = c;
                break;
            }
        }
        check(code == proto_reason_code((proto_reason)r), "PROTOCOL.md's reason table: %s -> %d (code says %d)",
              needle, code, proto_reason_code((proto_reason)r));
    }
    /* the code table's 422 row does not claim what the reason table gives 400 */
    char *row = strstr(doc, "\n| 422 |");
    char *eol = row ? strchr(row + 1, '\n') : NULL;
    if (eol) *eol = 0;
    check(row && !strstr(row, "UTF-8"), "the 422 row does not list invalid UTF-8 (a 400): %s", row ? row : "(none)");
    if (eol) *eol = '\n';
    check(strstr(doc, "| `presence_penalty` | number [-2, 2]") && strstr(doc, "| `frequency_penalty` | number [-2, 2]"),
          "the penalties' range is the decoder's and the sampler's, [-2, 2]");
    check(strstr(doc, "U+FFFD") != NULL, "§2 says what gpt2d sends for text cut inside a character");
    check(strstr(doc, "409") && strstr(doc, "live request"), "what a client does with a 409 is said");
    free(doc);
}

/* ============================================================================================== */
/* against gpt2d                                                                                   */
/* ============================================================================================== */

/* Sends raw bytes, returns the first non-hb reply (m), 1 or 0. */
static int raw_ask(tu_client *c, mp *b, proto_msg *m) {
    tu_send_raw(c, b->sb.data, b->sb.size);
    msgpack_sbuffer_destroy(&b->sb);
    return tu_recv(c, m, 3000);
}

static int str_is(proto_str s, const char *z) { return s.len == strlen(z) && memcmp(s.ptr, z, s.len) == 0; }

static void test_link_errors(tu_client *c) {
    mp b;
    proto_msg m;
    mp_begin(&b, 2, "credit"); /* a worker-link type, without its required field */
    int got = raw_ask(c, &b, &m);
    check(got && m.type == PROTO_T_ERROR && str_is(m.reason, "not_client_message"),
          "a credit frame from a client is not_client_message, not missing_field (%.*s)", (int)m.reason.len,
          m.reason.ptr);
    if (got) proto_msg_destroy(&m);
    mp_begin(&b, 4, "submit");
    mp_key(&b, "id");
    msgpack_pack_int(&b.pk, 9);
    mp_key(&b, "temprature");
    msgpack_pack_float(&b.pk, 0.9f);
    got = raw_ask(c, &b, &m);
    check(got && m.type == PROTO_T_ERROR && str_is(m.reason, "unknown_field") && str_is(m.field, "temprature"),
          "the broker's unknown_field error carries field 'temprature' (%.*s)", (int)m.field.len, m.field.ptr);
    if (got) proto_msg_destroy(&m);
}

/* Submits and gathers: token pieces (concatenated, with the start offset of each), done frame. */
typedef struct {
    tu_result r;
    size_t start[64];
    char raw_done[4096];
    size_t raw_len;
} run;

static int submit_run(tu_client *c, uint64_t id, const char *prompt, int max_tokens, int32_t bias_id,
                      const char *stop, run *out) {
    proto_msg q;
    proto_msg_init(&q, PROTO_T_SUBMIT);
    q.id = (proto_cid){0, id, {0}};
    q.prompt = (proto_str){prompt, (uint32_t)strlen(prompt)};
    q.has = PROTO_HAS(PF_PROMPT);
    q.max_tokens = max_tokens;
    proto_bias bias = {bias_id, 100.0f};
    if (bias_id >= 0) {
        q.logit_bias = &bias;
        q.n_logit_bias = 1;
    }
    if (stop) q.stop[q.n_stop++] = (proto_str){stop, (uint32_t)strlen(stop)};
    memset(out, 0, sizeof(*out));
    if (tu_send(c, &q) < 0) return 0;
    for (;;) {
        proto_msg m;
        if (!tu_recv(c, &m, 10000)) return 0;
        if (m.type == PROTO_T_TOKEN && m.index < 64) out->start[m.index] = out->r.streamed_len;
        if (m.type == PROTO_T_DONE && proto_frame_size(&c->frame) <= sizeof(out->raw_done)) {
            out->raw_len = proto_frame_size(&c->frame);
            memcpy(out->raw_done, proto_frame_data(&c->frame), out->raw_len);
        }
        int end = tu_result_add(&out->r, &m);
        proto_msg_destroy(&m);
        if (end) return 1;
    }
}

static void test_generation(tu_client *c) {
    run a;
    /* token 162 is the single byte 0xE6, the lead byte of a 3-byte character */
    int ok = submit_run(c, 1, "Hello", 1, 162, NULL, &a);
    check(ok && a.r.done && a.r.n_done_tokens == 1 && a.r.tokens[0] == 162, "forced token 162");
    check(ok && a.r.text_len == 3 && memcmp(a.r.text, "\xEF\xBF\xBD", 3) == 0,
          "text cut inside a UTF-8 character ends with U+FFFD, as PROTOCOL.md now says (%zu bytes)", a.r.text_len);
    check(ok && memmem(a.raw_done, a.raw_len, "\xa3\xEF\xBF\xBD", 4) != NULL, "sent as str, valid UTF-8");
    check(ok && a.r.streamed_len == 3 && memcmp(a.r.streamed, a.r.text, 3) == 0,
          "the token pieces still add up to the done text");
    tu_result_free(&a.r);

    ok = submit_run(c, 2, "Hello", 4, 50256, NULL, &a);
    check(ok && a.r.done && a.r.finish == PROTO_FINISH_EOS && a.r.n_done_tokens == 1 && a.r.tokens[0] == 50256 &&
              a.r.completion_tokens == 1 && a.r.text_len == 0,
          "at EOS, tokens ends with 50256 (counted in usage) and text has no <|endoftext|> (finish %d, %d tokens)",
          a.r.finish, a.r.n_done_tokens);
    tu_result_free(&a.r);

    /* a stop string that ends inside a token: a piece of 2+ ASCII bytes without its last byte, where
     * the text before has no match of it */
    run g;
    ok = submit_run(c, 3, "The quick brown fox", 16, -1, NULL, &g);
    int i = -1;
    char stop[64] = "";
    for (int k = 1; ok && k < g.r.n_tokens && k < 63 && i < 0; k++) {
        size_t s = g.start[k], e = k + 1 < g.r.n_tokens ? g.start[k + 1] : g.r.streamed_len, L = e - s - 1;
        if (e - s < 2 || L >= sizeof(stop)) continue;
        int ascii = 1;
        for (size_t j = 0; j < L; j++) ascii &= g.r.streamed[s + j] >= 0x20 && g.r.streamed[s + j] < 0x7f;
        if (!ascii || memmem(g.r.streamed, s + L - 1, g.r.streamed + s, L)) continue;
        memcpy(stop, g.r.streamed + s, L);
        stop[L] = 0;
        i = k;
    }
    check(i > 0, "a token of 2+ bytes to end a stop string inside (greedy run of %d tokens: '%s')", g.r.n_tokens,
          g.r.streamed ? g.r.streamed : "");
    if (i > 0) {
        ok = submit_run(c, 4, "The quick brown fox", 16, -1, stop, &a);
        check(ok && a.r.finish == PROTO_FINISH_STOP && a.r.text_len == g.start[i] &&
                  memcmp(a.r.text, g.r.streamed, g.start[i]) == 0,
              "the text ends before the stop string '%s' (%zu bytes, want %zu)", stop, a.r.text_len, g.start[i]);
        check(ok && a.r.n_done_tokens == i + 1 && memcmp(a.r.tokens, g.r.tokens, (size_t)(i + 1) * 4) == 0,
              "tokens holds every token up to and including the one the stop string ended in (%d, want %d)",
              a.r.n_done_tokens, i + 1);
        tu_result_free(&a.r);
    }
    tu_result_free(&g.r);

    /* 409: the error names the live request's id; that one goes on; the id is free after its end */
    proto_msg q;
    proto_msg_init(&q, PROTO_T_SUBMIT);
    q.id = (proto_cid){0, 5, {0}};
    q.prompt = (proto_str){"Hi", 2};
    q.has = PROTO_HAS(PF_PROMPT);
    q.max_tokens = 20;
    tu_send(c, &q);
    tu_send(c, &q);
    int dup = 0, done = 0;
    for (int n = 0; n < 40 && !done; n++) {
        proto_msg m;
        if (!tu_recv(c, &m, 10000)) break;
        if (m.type == PROTO_T_ERROR && m.code == 409 && m.id.num == 5 && str_is(m.field, "id")) dup++;
        if (m.type == PROTO_T_DONE && m.id.num == 5) done++;
        proto_msg_destroy(&m);
    }
    check(dup == 1 && done == 1, "a repeated live id: one 409 (id 5, field id), and the live request ends normally");
    ok = submit_run(c, 5, "Hi", 2, -1, NULL, &a);
    check(ok && a.r.done, "the id may be reused once its request ended");
    tu_result_free(&a.r);
}

/* With no worker: a queued request's heartbeats, then its cancel. */
static void test_queued(tu_client *c) {
    proto_msg q;
    proto_msg_init(&q, PROTO_T_SUBMIT);
    q.id = (proto_cid){0, 11, {0}};
    q.prompt = (proto_str){"Hi", 2};
    q.has = PROTO_HAS(PF_PROMPT);
    tu_send(c, &q);
    double last = proto_clock_ms(), max_gap = 0, t_end = last + 4000;
    int hbs = 0;
    while (proto_clock_ms() < t_end) {
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        proto_frame f;
        if (proto_sock_recv(c->sock, 0, &f, ZMQ_DONTWAIT) < 0) continue;
        double now = proto_clock_ms();
        if (now - last > max_gap) max_gap = now - last;
        last = now;
        hbs++;
        proto_frame_close(&f);
    }
    check(hbs >= 4 && max_gap <= PROTO_HEARTBEAT_MS,
          "a client with a live request hears from the broker at least every %d ms (%d frames, largest gap %.0f ms)",
          PROTO_HEARTBEAT_MS, hbs, max_gap);
    proto_msg x;
    proto_msg_init(&x, PROTO_T_CANCEL);
    x.id = q.id;
    x.has = PROTO_HAS(PF_ID);
    tu_send(c, &x);
    proto_msg m;
    int got = tu_recv(c, &m, 3000);
    check(got && m.type == PROTO_T_DONE && m.finish == PROTO_FINISH_CANCELLED && m.queue_ms == 0 &&
              m.total_ms >= 3000,
          "a request cancelled while queued: queue_ms 0 (it never got a slot), total_ms the wait (%.1f, %.1f)",
          got ? m.queue_ms : -1, got ? m.total_ms : -1);
    if (got) proto_msg_destroy(&m);
}

int main(void) {
    if (tu_init("protoword", 200) < 0) {
        printf("setup failed (BUILD=%s)\n", tu.build);
        return 1;
    }
    test_decoder();
    test_doc();
    tu_daemon d, idle;
    char *extra[] = {"--debug-step-delay-ms", "5", NULL};
    check(tu_daemon_start(&d, "pw", 1, 4, extra), "gpt2d with one worker");
    tu_client c;
    tu_client_open(&c, d.client_ep);
    test_link_errors(&c);
    test_generation(&c);
    tu_client_close(&c);
    check(tu_daemon_start(&idle, "pw0", 0, 1, NULL), "gpt2d with no worker");
    tu_client_open(&c, idle.client_ep);
    test_queued(&c);
    tu_client_close(&c);
    tu_daemon_stop(&d);
    tu_daemon_stop(&idle);
    tu_kill_all();
    return check_done("test_protoword");
}
