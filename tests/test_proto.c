/* test_proto.c — the wire protocol: round trips of every message type, and the decoder's answer to
 * truncated, mistyped, out-of-range, oversized, unknown and randomly mutated input (an error, never
 * a crash; ASan/UBSan in `make test SAN=1` watch for the rest). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "proto.h"
#include "proto_scan.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static proto_str S(const char *s) { return (proto_str){s, (uint32_t)strlen(s)}; }

static int str_eq(proto_str a, const char *b) {
    return a.len == strlen(b) && (a.len == 0 || memcmp(a.ptr, b, a.len) == 0);
}

/* Encodes m into sb (cleared). */
static int enc(const proto_msg *m, msgpack_sbuffer *sb) {
    char err[256];
    msgpack_sbuffer_clear(sb);
    int rc = proto_encode(m, sb, err, sizeof(err));
    if (rc < 0) printf("  encode: %s\n", err);
    return rc;
}

/* Decodes and returns the status; out keeps the message (caller destroys). */
static int dec(proto_msg *out, const void *buf, size_t len, char *err, size_t errlen) {
    return proto_decode(out, buf, len, err, errlen);
}

/* A packer that builds raw maps for hostile input. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} raw;

static void raw_init(raw *r) {
    msgpack_sbuffer_init(&r->sb);
    msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
}
static void raw_str(raw *r, const char *s) {
    msgpack_pack_str(&r->pk, strlen(s));
    msgpack_pack_str_body(&r->pk, s, strlen(s));
}
static void raw_head(raw *r, size_t n_keys, const char *type) {
    msgpack_pack_map(&r->pk, n_keys);
    raw_str(r, "t");
    raw_str(r, type);
    raw_str(r, "v");
    msgpack_pack_int(&r->pk, PROTO_VERSION);
}

/* Decodes r's bytes and expects status want; returns the message's has bits. */
static int raw_expect(raw *r, int want, const char *what) {
    proto_msg m;
    char err[256] = "";
    int rc = dec(&m, r->sb.data, r->sb.size, err, sizeof(err));
    check(rc == want, "%s: got %s (%s), want %s", what, proto_status_name(rc), err, proto_status_name(want));
    check(rc == 0 || err[0] != 0, "%s: an error comes with a message", what);
    proto_msg_destroy(&m);
    msgpack_sbuffer_destroy(&r->sb);
    return rc;
}

/* ---- round trips ------------------------------------------------------------------------------ */

static void test_submit_roundtrip(void) {
    static const proto_bias bias[2] = {{50256, -INFINITY}, {11, 2.5f}};
    proto_msg m, d;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.id = (proto_cid){1, 0, S("req-1")};
    m.prompt = S("Hello, wörld");
    m.has = PROTO_HAS(PF_PROMPT);
    m.max_tokens = 32;
    m.temperature = 0.7f;
    m.top_k = 40;
    m.top_p = 0.9f;
    m.min_p = 0.05f;
    m.repetition_penalty = 1.1f;
    m.presence_penalty = 0.5f;
    m.frequency_penalty = -0.25f;
    m.seed = UINT64_MAX;
    m.logit_bias = bias;
    m.n_logit_bias = 2;
    m.stop[0] = S("\n\n");
    m.stop[1] = S("END");
    m.n_stop = 2;
    m.stream = 0;
    m.logprobs = 1;
    m.ignore_eos = 1;
    m.allow_special = 1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    check(enc(&m, &sb) == 0, "submit encodes");
    char err[256];
    int rc = dec(&d, sb.data, sb.size, err, sizeof(err));
    check(rc == 0, "submit decodes: %s", err);
    check(d.type == PROTO_T_SUBMIT && d.v == PROTO_VERSION, "submit type and version");
    check(d.id.is_str && str_eq(d.id.str, "req-1"), "submit id");
    check(str_eq(d.prompt, "Hello, wörld") && (d.has & PROTO_HAS(PF_PROMPT)), "submit prompt");
    check(!(d.has & PROTO_HAS(PF_PROMPT_IDS)), "no prompt_ids");
    check(d.max_tokens == 32 && d.temperature == 0.7f && d.top_k == 40 && d.top_p == 0.9f &&
              d.min_p == 0.05f && d.repetition_penalty == 1.1f && d.presence_penalty == 0.5f &&
              d.frequency_penalty == -0.25f && d.seed == UINT64_MAX,
          "submit sampling parameters");
    check(d.n_logit_bias == 2 && d.logit_bias[0].id == 50256 && isinf(d.logit_bias[0].bias) &&
              d.logit_bias[0].bias < 0 && d.logit_bias[1].id == 11 && d.logit_bias[1].bias == 2.5f,
          "submit logit_bias");
    check(d.n_stop == 2 && str_eq(d.stop[0], "\n\n") && str_eq(d.stop[1], "END"), "submit stop");
    check(d.stream == 0 && d.logprobs == 1 && d.ignore_eos == 1 && d.allow_special == 1, "submit flags");
    proto_msg_destroy(&d);
    proto_msg_destroy(&d); /* safe twice */

    /* defaults: a minimal hand-made submit */
    raw r;
    raw_init(&r);
    raw_head(&r, 4, "submit");
    raw_str(&r, "id");
    msgpack_pack_uint64(&r.pk, 7);
    raw_str(&r, "prompt_ids");
    msgpack_pack_array(&r.pk, 3);
    msgpack_pack_int(&r.pk, 15496);
    msgpack_pack_int(&r.pk, 11);
    msgpack_pack_int(&r.pk, 0);
    rc = dec(&d, r.sb.data, r.sb.size, err, sizeof(err));
    check(rc == 0, "minimal submit decodes: %s", err);
    check(!d.id.is_str && d.id.num == 7, "numeric id");
    check(d.n_prompt_ids == 3 && d.prompt_ids[0] == 15496 && d.prompt_ids[2] == 0, "prompt_ids");
    check(d.max_tokens == PROTO_DEFAULT_MAX_TOKENS && d.temperature == PROTO_DEFAULT_TEMPERATURE &&
              d.top_k == 0 && d.top_p == 1.0f && d.min_p == 0 && d.repetition_penalty == 1.0f &&
              d.seed == 0 && d.n_stop == 0 && d.n_logit_bias == 0 && d.stream == 1 && d.logprobs == 0,
          "submit defaults");
    proto_msg_destroy(&d);
    msgpack_sbuffer_destroy(&r.sb);
    msgpack_sbuffer_destroy(&sb);
}

static void test_stream_roundtrip(void) {
    static const int32_t toks[3] = {1, 2, 50256};
    static const char bad_utf8[] = {'a', (char)0xe2, (char)0x82}; /* ends mid-character */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[256];
    proto_msg m, d;

    proto_msg_init(&m, PROTO_T_TOKEN);
    m.rid = 123456789012ull;
    m.has = PROTO_HAS(PF_RID) | PROTO_HAS(PF_LOGPROB);
    m.index = 5;
    m.token = 50256;
    m.text = S(" piece");
    m.logprob = -1.5f;
    check(enc(&m, &sb) == 0, "token encodes");
    check(dec(&d, sb.data, sb.size, err, sizeof(err)) == 0, "token decodes: %s", err);
    check(d.rid == 123456789012ull && d.index == 5 && d.token == 50256 && str_eq(d.text, " piece") &&
              d.logprob == -1.5f && (d.has & PROTO_HAS(PF_LOGPROB)) && !(d.has & PROTO_HAS(PF_ID)),
          "token fields");
    proto_msg_destroy(&d);

    proto_msg_init(&m, PROTO_T_DONE);
    m.id = (proto_cid){0, 42, {0}};
    m.has = PROTO_HAS(PF_ID) | PROTO_HAS(PF_NAME);
    m.finish = PROTO_FINISH_STOP;
    m.text = (proto_str){bad_utf8, 3};
    m.tokens = toks;
    m.n_tokens = 3;
    m.prompt_tokens = 9;
    m.completion_tokens = 3;
    m.cached_tokens = 2;
    m.queue_ms = 0.25;
    m.ttft_ms = 12.5;
    m.total_ms = 40;
    m.name = S("w1");
    check(enc(&m, &sb) == 0, "done encodes");
    check(dec(&d, sb.data, sb.size, err, sizeof(err)) == 0, "done decodes: %s", err);
    check(d.id.num == 42 && d.finish == PROTO_FINISH_STOP && d.text.len == 3 &&
              memcmp(d.text.ptr, bad_utf8, 3) == 0,
          "done: raw text survives (sent as bin)");
    check(d.n_tokens == 3 && d.tokens[2] == 50256 && d.prompt_tokens == 9 && d.completion_tokens == 3 &&
              d.cached_tokens == 2 &&
              d.queue_ms == 0.25 && d.ttft_ms == 12.5 && d.total_ms == 40 && str_eq(d.name, "w1"),
          "done fields");
    proto_msg_destroy(&d);

    proto_msg_init(&m, PROTO_T_ERROR);
    m.code = PROTO_CODE_OVERLOADED;
    m.message = S("queue full");
    check(enc(&m, &sb) == 0, "error without id encodes");
    check(dec(&d, sb.data, sb.size, err, sizeof(err)) == 0, "error decodes: %s", err);
    check(d.code == PROTO_CODE_OVERLOADED && str_eq(d.message, "queue full") &&
              !(d.has & (PROTO_HAS(PF_ID) | PROTO_HAS(PF_RID))),
          "error fields");
    proto_msg_destroy(&d);
    msgpack_sbuffer_destroy(&sb);
}

static void test_worker_and_stats_roundtrip(void) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[256];
    proto_msg m, d;
    static const int32_t resume[2] = {5, 6};

    proto_msg_init(&m, PROTO_T_REQUEST);
    m.rid = 9;
    m.prompt = S("x");
    m.resume_ids = resume;
    m.n_resume_ids = 2;
    m.has = PROTO_HAS(PF_PROMPT) | PROTO_HAS(PF_RESUME_IDS);
    check(enc(&m, &sb) == 0, "request encodes");
    check(dec(&d, sb.data, sb.size, err, sizeof(err)) == 0, "request decodes: %s", err);
    check(d.rid == 9 && d.n_resume_ids == 2 && d.resume_ids[1] == 6 && str_eq(d.prompt, "x"), "request fields");
    proto_msg_destroy(&d);

    proto_msg_init(&m, PROTO_T_READY);
    m.slots = 64;
    m.name = S("host:123");
    m.pid = 123;
    m.n_ctx = 1024;
    check(enc(&m, &sb) == 0, "ready encodes");
    check(dec(&d, sb.data, sb.size, err, sizeof(err)) == 0 && d.slots == 64 && d.pid == 123 &&
              d.n_ctx == 1024 && str_eq(d.name, "host:123"),
          "ready round trip: %s", err);
    proto_msg_destroy(&d);

    proto_msg_init(&m, PROTO_T_CREDIT);
    m.credit = 3;
    check(enc(&m, &sb) == 0 && dec(&d, sb.data, sb.size, err, sizeof(err)) == 0 && d.credit == 3,
          "credit round trip");
    proto_msg_destroy(&d);
    m.credit = 0;
    check(proto_encode(&m, &sb, err, sizeof(err)) < 0 && strstr(err, "credit"), "credit 0 is refused by the encoder");

    proto_msg_init(&m, PROTO_T_HB);
    check(enc(&m, &sb) == 0 && dec(&d, sb.data, sb.size, err, sizeof(err)) == 0 && d.type == PROTO_T_HB,
          "hb round trip");
    proto_msg_destroy(&d);
    proto_msg_init(&m, PROTO_T_HB);
    m.kv = (proto_kv_info){1000, 40, 25, 5000, 3100};
    m.has = PROTO_HAS(PF_KV);
    check(enc(&m, &sb) == 0 && dec(&d, sb.data, sb.size, err, sizeof(err)) == 0 && (d.has & PROTO_HAS(PF_KV)) &&
              d.kv.pages == 1000 && d.kv.used == 40 && d.kv.cached == 25 && d.kv.lookup_tokens == 5000 &&
              d.kv.hit_tokens == 3100,
          "hb carries the worker's KV pages and prefix-cache counters");
    proto_msg_destroy(&d);

    static const proto_worker_info wl[2] = {
        {{"a", 1}, 10, 64, 60, 4, 1, 1000, {4096, 300, 120, 9000, 6000}},
        {{"b", 1}, 0, 8, 8, 0, 0, 0, {0, 0, 0, 0, 0}},
    };
    proto_msg_init(&m, PROTO_T_STATS_REPLY);
    m.name = S("gpt2d");
    m.queue = 3;
    m.max_queue = 256;
    m.running = 4;
    m.tokens_per_s = 1234.5;
    m.ttft_pct = (proto_pct){10, 20, 30};
    m.itl_pct = (proto_pct){1, 2, 3};
    m.worker_list = wl;
    m.n_worker_list = 2;
    m.requests_total = 77;
    check(enc(&m, &sb) == 0, "stats_reply encodes");
    check(dec(&d, sb.data, sb.size, err, sizeof(err)) == 0, "stats_reply decodes: %s", err);
    check(d.queue == 3 && d.max_queue == 256 && d.running == 4 && d.tokens_per_s == 1234.5 &&
              d.ttft_pct.p90 == 20 && d.itl_pct.p99 == 3 && d.requests_total == 77,
          "stats_reply scalars");
    check(d.n_worker_list == 2 && str_eq(d.worker_list[0].name, "a") && d.worker_list[0].slots == 64 &&
              d.worker_list[0].credit == 60 && d.worker_list[0].local == 1 && d.worker_list[0].tokens == 1000 &&
              d.worker_list[1].pid == 0,
          "stats_reply workers");
    check(d.worker_list[0].kv.pages == 4096 && d.worker_list[0].kv.used == 300 && d.worker_list[0].kv.cached == 120 &&
              d.worker_list[0].kv.lookup_tokens == 9000 && d.worker_list[0].kv.hit_tokens == 6000 &&
              d.worker_list[1].kv.pages == 0,
          "stats_reply workers: KV pages and prefix-cache counters");
    proto_msg_destroy(&d);

    for (int t = PROTO_T_NONE + 1; t < PROTO_T_COUNT; t++)
        check(strcmp(proto_type_name((proto_type)t), "?") != 0, "type %d has a name", t);
    check(strcmp(proto_code_name(PROTO_CODE_WORKER_LOST), "worker_lost") == 0, "code names");
    check(strcmp(proto_code_name(12345), "?") == 0, "unknown code name");
    msgpack_sbuffer_destroy(&sb);
}

/* ---- hostile input ---------------------------------------------------------------------------- */

static void test_truncations(void) {
    proto_msg m, d;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.id = (proto_cid){1, 0, S("abc")};
    m.prompt = S("The quick brown fox");
    m.has = PROTO_HAS(PF_PROMPT);
    m.stop[0] = S("x");
    m.n_stop = 1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    enc(&m, &sb);
    int bad = 0;
    for (size_t n = 0; n < sb.size; n++) {
        char *copy = malloc(n ? n : 1); /* exact size: ASan catches a read past the end */
        memcpy(copy, sb.data, n);
        char err[256];
        if (dec(&d, copy, n, err, sizeof(err)) == PROTO_OK) bad++;
        proto_msg_destroy(&d);
        free(copy);
    }
    check(bad == 0, "every proper prefix of a %zu-byte submit is refused (%d accepted)", sb.size, bad);
    /* trailing bytes */
    msgpack_sbuffer_write(&sb, "\xc0", 1);
    char err[256];
    check(dec(&d, sb.data, sb.size, err, sizeof(err)) == PROTO_E_MALFORMED, "trailing byte refused");
    proto_msg_destroy(&d);
    msgpack_sbuffer_destroy(&sb);
}

static void test_mistyped(void) {
    raw r;
    /* temperature as a string; the id is still recovered for the error reply */
    raw_init(&r);
    raw_head(&r, 5, "submit");
    raw_str(&r, "id"); raw_str(&r, "r1");
    raw_str(&r, "prompt"); raw_str(&r, "hi");
    raw_str(&r, "temperature"); raw_str(&r, "hot");
    {
        proto_msg d;
        char err[256];
        int rc = dec(&d, r.sb.data, r.sb.size, err, sizeof(err));
        check(rc == PROTO_E_FIELD && strstr(err, "temperature"), "mistyped temperature: %s", err);
        check(d.type == PROTO_T_SUBMIT && (d.has & PROTO_HAS(PF_ID)) && str_eq(d.id.str, "r1"),
              "id recovered from a refused submit");
        proto_msg_destroy(&d);
        msgpack_sbuffer_destroy(&r.sb);
    }
    raw_init(&r);
    raw_head(&r, 4, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); msgpack_pack_int(&r.pk, 5);
    raw_expect(&r, PROTO_E_FIELD, "prompt as an integer");

    raw_init(&r);
    raw_head(&r, 5, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_str(&r, "max_tokens"); msgpack_pack_double(&r.pk, 3.0);
    raw_expect(&r, PROTO_E_FIELD, "max_tokens as a float");

    raw_init(&r);
    raw_head(&r, 3, "submit");
    raw_str(&r, "id"); msgpack_pack_true(&r.pk);
    raw_expect(&r, PROTO_E_FIELD, "id as a boolean");

    raw_init(&r);
    raw_head(&r, 3, "submit");
    raw_str(&r, "id"); msgpack_pack_int(&r.pk, -1);
    raw_expect(&r, PROTO_E_FIELD, "negative id");

    raw_init(&r);
    raw_head(&r, 4, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt_ids"); msgpack_pack_array(&r.pk, 2); msgpack_pack_int(&r.pk, 1); raw_str(&r, "2");
    raw_expect(&r, PROTO_E_FIELD, "prompt_ids with a string element");

    raw_init(&r);
    raw_head(&r, 5, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_str(&r, "stop"); raw_str(&r, "\n");
    raw_expect(&r, PROTO_E_FIELD, "stop as a string, not an array");

    raw_init(&r);
    raw_head(&r, 5, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_str(&r, "logit_bias"); msgpack_pack_array(&r.pk, 1); msgpack_pack_array(&r.pk, 3);
    msgpack_pack_int(&r.pk, 1); msgpack_pack_int(&r.pk, 1); msgpack_pack_int(&r.pk, 1);
    raw_expect(&r, PROTO_E_FIELD, "logit_bias triple");

    raw_init(&r);
    raw_head(&r, 5, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_str(&r, "stream"); msgpack_pack_int(&r.pk, 1);
    raw_expect(&r, PROTO_E_FIELD, "stream as an integer");

    raw_init(&r);
    raw_head(&r, 5, "done");
    raw_str(&r, "rid"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "finish"); raw_str(&r, "exploded");
    raw_str(&r, "usage"); msgpack_pack_array(&r.pk, 0);
    raw_expect(&r, PROTO_E_FIELD, "unknown finish reason");

    raw_init(&r);
    raw_head(&r, 5, "done");
    raw_str(&r, "rid"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "finish"); raw_str(&r, "eos");
    raw_str(&r, "usage"); msgpack_pack_map(&r.pk, 1); raw_str(&r, "bogus"); msgpack_pack_int(&r.pk, 1);
    raw_expect(&r, PROTO_E_FIELD, "unknown key in a nested map");

    raw_init(&r);
    raw_head(&r, 3, "error");
    raw_str(&r, "code"); msgpack_pack_int(&r.pk, 999);
    raw_expect(&r, PROTO_E_FIELD, "unknown error code");

    raw_init(&r);
    msgpack_pack_map(&r.pk, 2);
    msgpack_pack_int(&r.pk, 1);
    msgpack_pack_int(&r.pk, 2);
    raw_str(&r, "t"); raw_str(&r, "hb");
    raw_expect(&r, PROTO_E_VERSION, "integer key, no version");
}

static void test_ranges(void) {
    struct {
        const char *key;
        double val;
    } bad[] = {
        {"max_tokens", 0}, {"max_tokens", PROTO_MAX_MAX_TOKENS + 1}, {"temperature", -0.5},
        {"top_p", 0}, {"top_p", 1.5}, {"min_p", -0.1}, {"min_p", 1.01}, {"repetition_penalty", 0},
        {"top_k", -1}, {"temperature", NAN}, {"temperature", INFINITY}, {"presence_penalty", 1e9},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        raw r;
        raw_init(&r);
        raw_head(&r, 5, "submit");
        raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
        raw_str(&r, "prompt"); raw_str(&r, "x");
        raw_str(&r, bad[i].key);
        if (strcmp(bad[i].key, "max_tokens") == 0 || strcmp(bad[i].key, "top_k") == 0)
            msgpack_pack_int64(&r.pk, (int64_t)bad[i].val);
        else
            msgpack_pack_double(&r.pk, bad[i].val);
        char what[64];
        snprintf(what, sizeof(what), "%s = %g", bad[i].key, bad[i].val);
        raw_expect(&r, PROTO_E_FIELD, what);
    }
    /* integers are accepted for float fields, and the boundaries themselves are valid */
    raw r;
    raw_init(&r);
    raw_head(&r, 7, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_str(&r, "temperature"); msgpack_pack_int(&r.pk, 0);
    raw_str(&r, "top_p"); msgpack_pack_int(&r.pk, 1);
    raw_str(&r, "max_tokens"); msgpack_pack_int(&r.pk, PROTO_MAX_MAX_TOKENS);
    raw_expect(&r, PROTO_OK, "boundary values and integer floats");

    char long_id[PROTO_MAX_ID_BYTES + 2];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = 0;
    raw_init(&r);
    raw_head(&r, 4, "submit");
    raw_str(&r, "id"); raw_str(&r, long_id);
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_expect(&r, PROTO_E_FIELD, "id one byte too long");

    raw_init(&r);
    raw_head(&r, 4, "submit");
    raw_str(&r, "id"); raw_str(&r, "");
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_expect(&r, PROTO_E_FIELD, "empty string id");

    raw_init(&r);
    raw_head(&r, 4, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); raw_str(&r, "bad \xc3\x28 utf8");
    raw_expect(&r, PROTO_E_FIELD, "invalid UTF-8 prompt");

    raw_init(&r);
    raw_head(&r, 5, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_str(&r, "stop");
    msgpack_pack_array(&r.pk, PROTO_MAX_STOPS + 1);
    for (int i = 0; i <= PROTO_MAX_STOPS; i++) raw_str(&r, "s");
    raw_expect(&r, PROTO_E_FIELD, "too many stop strings");

    char long_stop[PROTO_MAX_STOP_BYTES + 2];
    memset(long_stop, 's', sizeof(long_stop) - 1);
    long_stop[sizeof(long_stop) - 1] = 0;
    raw_init(&r);
    raw_head(&r, 5, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_str(&r, "stop"); msgpack_pack_array(&r.pk, 1); raw_str(&r, long_stop);
    raw_expect(&r, PROTO_E_FIELD, "stop string too long");

    raw_init(&r);
    raw_head(&r, 5, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_str(&r, "stop"); msgpack_pack_array(&r.pk, 1); raw_str(&r, "");
    raw_expect(&r, PROTO_E_FIELD, "empty stop string");

    raw_init(&r);
    raw_head(&r, 4, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt_ids"); msgpack_pack_array(&r.pk, 1); msgpack_pack_int(&r.pk, PROTO_MAX_TOKEN_ID + 1);
    raw_expect(&r, PROTO_E_FIELD, "token id out of range");

    raw_init(&r);
    raw_head(&r, 3, "ready");
    raw_str(&r, "slots"); msgpack_pack_int(&r.pk, 0);
    raw_expect(&r, PROTO_E_FIELD, "ready with 0 slots");
}

static void test_structure(void) {
    raw r;
    raw_init(&r);
    raw_head(&r, 5, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_str(&r, "temprature"); msgpack_pack_double(&r.pk, 1);
    raw_expect(&r, PROTO_E_FIELD, "unknown (misspelt) field");

    raw_init(&r);
    raw_head(&r, 5, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_str(&r, "prompt"); raw_str(&r, "y");
    raw_expect(&r, PROTO_E_FIELD, "duplicate field");

    raw_init(&r);
    raw_head(&r, 4, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 2);
    raw_expect(&r, PROTO_E_FIELD, "duplicate id");

    raw_init(&r);
    raw_head(&r, 3, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_expect(&r, PROTO_E_FIELD, "submit without a prompt");

    raw_init(&r);
    raw_head(&r, 5, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_str(&r, "prompt_ids"); msgpack_pack_array(&r.pk, 0);
    raw_expect(&r, PROTO_E_FIELD, "submit with both prompt and prompt_ids");

    raw_init(&r);
    raw_head(&r, 3, "submit");
    raw_str(&r, "prompt"); raw_str(&r, "x");
    raw_expect(&r, PROTO_E_FIELD, "submit without an id");

    raw_init(&r);
    raw_head(&r, 2, "cancel");
    raw_expect(&r, PROTO_E_FIELD, "cancel without id or rid");

    raw_init(&r);
    raw_head(&r, 4, "cancel");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "rid"); msgpack_pack_uint64(&r.pk, 1);
    raw_expect(&r, PROTO_E_FIELD, "cancel with both id and rid");

    raw_init(&r);
    raw_head(&r, 2, "launch_missiles");
    raw_expect(&r, PROTO_E_TYPE, "unknown message type");

    raw_init(&r);
    msgpack_pack_map(&r.pk, 1);
    raw_str(&r, "v"); msgpack_pack_int(&r.pk, 1);
    raw_expect(&r, PROTO_E_TYPE, "missing type");

    raw_init(&r);
    msgpack_pack_map(&r.pk, 1);
    raw_str(&r, "t"); raw_str(&r, "stats");
    raw_expect(&r, PROTO_E_VERSION, "missing version");

    raw_init(&r);
    msgpack_pack_map(&r.pk, 3);
    raw_str(&r, "t"); raw_str(&r, "cancel");
    raw_str(&r, "v"); msgpack_pack_int(&r.pk, PROTO_VERSION + 1);
    raw_str(&r, "id"); raw_str(&r, "abc");
    {
        proto_msg d;
        char err[256];
        int rc = dec(&d, r.sb.data, r.sb.size, err, sizeof(err));
        check(rc == PROTO_E_VERSION, "future version refused");
        check(proto_status_code(rc) == PROTO_CODE_UNSUPPORTED_VERSION, "maps to unsupported_version");
        check(d.type == PROTO_T_CANCEL && str_eq(d.id.str, "abc"), "type and id known for the reply");
        proto_msg_destroy(&d);
        msgpack_sbuffer_destroy(&r.sb);
    }

    raw_init(&r);
    msgpack_pack_array(&r.pk, 2);
    raw_str(&r, "t"); raw_str(&r, "hb");
    raw_expect(&r, PROTO_E_NOT_MAP, "an array, not a map");

    raw_init(&r);
    msgpack_pack_int(&r.pk, 5);
    raw_expect(&r, PROTO_E_NOT_MAP, "an integer");

    raw_init(&r);
    raw_expect(&r, PROTO_E_MALFORMED, "empty input");
}

static void test_oversized(void) {
    proto_msg d;
    char err[256];
    /* headers that declare far more elements than there are bytes: refused before any allocation */
    static const unsigned char arr32[] = {0x81, 0xa1, 't', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01};
    check(dec(&d, arr32, sizeof(arr32), err, sizeof(err)) == PROTO_E_MALFORMED, "array32 of 2^32-1 refused");
    proto_msg_destroy(&d);
    static const unsigned char map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02};
    check(dec(&d, map32, sizeof(map32), err, sizeof(err)) == PROTO_E_MALFORMED, "map32 of 2^32-1 refused");
    proto_msg_destroy(&d);
    static const unsigned char str32[] = {0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'};
    check(dec(&d, str32, sizeof(str32), err, sizeof(err)) == PROTO_E_MALFORMED, "str32 past the end refused");
    proto_msg_destroy(&d);
    static const unsigned char c1[] = {0xc1};
    check(dec(&d, c1, 1, err, sizeof(err)) == PROTO_E_MALFORMED, "reserved byte 0xc1 refused");
    proto_msg_destroy(&d);

    /* too long */
    size_t big = PROTO_MAX_MSG_BYTES + 1;
    unsigned char *buf = calloc(1, big);
    check(dec(&d, buf, big, err, sizeof(err)) == PROTO_E_TOO_LARGE, "over PROTO_MAX_MSG_BYTES refused");
    proto_msg_destroy(&d);
    /* too many objects: an array of PROTO_MAX_OBJECTS nils */
    raw r;
    raw_init(&r);
    msgpack_pack_array(&r.pk, PROTO_MAX_OBJECTS);
    for (int i = 0; i < PROTO_MAX_OBJECTS; i++) msgpack_pack_nil(&r.pk);
    raw_expect(&r, PROTO_E_TOO_LARGE, "too many objects");
    /* too deep */
    raw_init(&r);
    for (int i = 0; i < PROTO_MAX_DEPTH + 1; i++) msgpack_pack_array(&r.pk, 1);
    msgpack_pack_nil(&r.pk);
    raw_expect(&r, PROTO_E_MALFORMED, "too deep");
    /* a prompt over its limit inside a message under the frame limit */
    size_t plen = PROTO_MAX_PROMPT_BYTES + 1;
    memset(buf, 'a', plen);
    raw_init(&r);
    raw_head(&r, 4, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt"); msgpack_pack_str(&r.pk, plen); msgpack_pack_str_body(&r.pk, buf, plen);
    raw_expect(&r, PROTO_E_FIELD, "prompt over PROTO_MAX_PROMPT_BYTES");
    /* too many prompt ids */
    raw_init(&r);
    raw_head(&r, 4, "submit");
    raw_str(&r, "id"); msgpack_pack_uint64(&r.pk, 1);
    raw_str(&r, "prompt_ids"); msgpack_pack_array(&r.pk, PROTO_MAX_IDS + 1);
    for (int i = 0; i <= PROTO_MAX_IDS; i++) msgpack_pack_int(&r.pk, 1);
    raw_expect(&r, PROTO_E_FIELD, "too many prompt ids");
    /* the encoder refuses to build what the decoder would refuse */
    proto_msg m;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.prompt = (proto_str){(const char *)buf, (uint32_t)plen};
    m.has = PROTO_HAS(PF_PROMPT);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    check(proto_encode(&m, &sb, err, sizeof(err)) < 0 && sb.size == 0, "encoder refuses an oversized prompt");
    msgpack_sbuffer_destroy(&sb);
    free(buf);
    check(proto_scan("\x91\x91\xc0", 3, 1, 100) == PROTO_SCAN_TOO_DEEP, "scan depth limit");
    check(proto_scan("\x92\xc0", 2, 4, 100) == PROTO_SCAN_TRUNCATED, "scan: missing element");
    check(proto_scan("\x90", 1, 4, 100) == PROTO_SCAN_OK, "scan: empty array");
}

/* Random mutations of valid messages: whatever the decoder accepts must re-encode, and the
 * re-encoding must decode again (the decoder never accepts what the encoder would refuse). */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void test_mutations(void) {
    msgpack_sbuffer seeds[4];
    proto_msg m;
    for (int i = 0; i < 4; i++) msgpack_sbuffer_init(&seeds[i]);
    proto_msg_init(&m, PROTO_T_SUBMIT);
    m.id = (proto_cid){0, 3, {0}};
    m.prompt = S("Once upon a time");
    m.has = PROTO_HAS(PF_PROMPT);
    m.stop[0] = S("\n");
    m.n_stop = 1;
    enc(&m, &seeds[0]);
    proto_msg_init(&m, PROTO_T_TOKEN);
    m.id = (proto_cid){1, 0, S("x")};
    m.has = PROTO_HAS(PF_ID);
    m.text = S("abc");
    enc(&m, &seeds[1]);
    static const int32_t toks[2] = {3, 4};
    proto_msg_init(&m, PROTO_T_DONE);
    m.rid = 5;
    m.has = PROTO_HAS(PF_RID);
    m.tokens = toks;
    m.n_tokens = 2;
    enc(&m, &seeds[2]);
    static const proto_worker_info wl[1] = {{{"w", 1}, 1, 2, 3, 4, 1, 5, {6, 2, 1, 9, 3}}};
    proto_msg_init(&m, PROTO_T_STATS_REPLY);
    m.worker_list = wl;
    m.n_worker_list = 1;
    enc(&m, &seeds[3]);

    uint64_t rng = 1;
    int accepted = 0, unstable = 0;
    unsigned char buf[512];
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (int it = 0; it < 200000; it++) {
        msgpack_sbuffer *s = &seeds[it % 4];
        size_t n = s->size < sizeof(buf) ? s->size : sizeof(buf);
        memcpy(buf, s->data, n);
        int k = 1 + (int)(rng_next(&rng) % 4);
        for (int j = 0; j < k; j++) {
            uint64_t r = rng_next(&rng);
            size_t pos = (size_t)(r >> 8) % n;
            switch (r & 3) {
            case 0: buf[pos] = (unsigned char)(r >> 40); break;
            case 1: buf[pos] ^= (unsigned char)(1u << ((r >> 40) & 7)); break;
            case 2: n = pos + 1; break;
            case 3: if (n < sizeof(buf)) { memmove(buf + pos + 1, buf + pos, n - pos); n++; } break;
            }
        }
        proto_msg d, d2;
        char err[256];
        if (proto_decode(&d, buf, n, err, sizeof(err)) == PROTO_OK) {
            accepted++;
            msgpack_sbuffer_clear(&sb);
            if (proto_encode(&d, &sb, err, sizeof(err)) < 0 ||
                proto_decode(&d2, sb.data, sb.size, err, sizeof(err)) != PROTO_OK || d2.type != d.type)
                unstable++;
            proto_msg_destroy(&d2);
        }
        proto_msg_destroy(&d);
    }
    check(unstable == 0, "accepted mutants re-encode and decode (%d of %d unstable)", unstable, accepted);
    check(accepted > 0, "some mutants are still valid (%d)", accepted);
    msgpack_sbuffer_destroy(&sb);
    for (int i = 0; i < 4; i++) msgpack_sbuffer_destroy(&seeds[i]);
}

static void test_misc(void) {
    check(proto_utf8_valid("h\xc3\xa9llo", 6) == 1, "utf8 valid");
    check(proto_utf8_valid("\xc0\xaf", 2) == 0, "utf8 overlong refused");
    check(proto_utf8_valid("\xed\xa0\x80", 3) == 0, "utf8 surrogate refused");
    check(proto_utf8_valid("\xf4\x90\x80\x80", 4) == 0, "utf8 above U+10FFFF refused");
    check(proto_utf8_valid("\xe2\x82", 2) == 0, "utf8 truncated refused");
    char buf[128], dir[128];
    setenv("GPT2D_RUNTIME_DIR", "/tmp/x", 1);
    check(proto_default_endpoint(0, buf, sizeof(buf), dir, sizeof(dir)) &&
              strcmp(buf, "ipc:///tmp/x/client.sock") == 0 && strcmp(dir, "/tmp/x") == 0,
          "default client endpoint: %s", buf);
    check(proto_default_endpoint(1, buf, sizeof(buf), NULL, 0) && strcmp(buf, "ipc:///tmp/x/worker.sock") == 0,
          "default worker endpoint");
    proto_cid a = {1, 0, S("q")}, b = {1, 0, S("q")}, c = {0, 7, {0}};
    check(proto_cid_equal(&a, &b) && !proto_cid_equal(&a, &c), "cid equality");
    check(strcmp(proto_cid_str(&c, buf, sizeof(buf)), "7") == 0, "cid as text");
}

int main(void) {
    test_submit_roundtrip();
    test_stream_roundtrip();
    test_worker_and_stats_roundtrip();
    test_truncations();
    test_mistyped();
    test_ranges();
    test_structure();
    test_oversized();
    test_mutations();
    test_misc();
    return check_done("test_proto");
}
