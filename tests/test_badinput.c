/* test_badinput.c — hostile input while a normal load runs: each case gets its specific error,
 * normal requests are unaffected, no process dies.
 *
 * A broker with 2 local workers (small random model, context 256) first runs 48 normal requests
 * alone (the reference); then runs them again while other clients send every invalid case of the
 * protocol (malformed msgpack, wrong types, unknown type or version, oversized frames, empty or
 * non-UTF-8 prompts, prompts longer than the context, token ids out of range, bad max_tokens /
 * temperature / top_p / top_k, too many or too long stop strings, duplicate ids, ...) and
 * thousands of random frames. Each case must be answered with an error frame carrying the
 * expected code, reason and field (addressed to the request id when the id was readable); the
 * normal requests' outputs must be byte-identical to the reference (while a client that never
 * reads its frames also has requests running); the broker and its workers keep their pids. Env: BUILD, GPT2D_TMP. */
#include <math.h>

#include "check.h"
#include "tutil.h"

#define N_NORMAL 48
#define N_GARBAGE 3000

/* ============================================================================================== */
/* the cases                                                                                       */
/* ============================================================================================== */

static void pstr(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* {"t": "submit", "v": 1, "id": id, ["prompt": "Hello",] + extra pairs the caller packs}. */
static void submit_head(msgpack_packer *pk, uint64_t id, int with_prompt, int extra) {
    msgpack_pack_map(pk, (size_t)(3 + with_prompt + extra));
    pstr(pk, "t");
    pstr(pk, "submit");
    pstr(pk, "v");
    msgpack_pack_uint8(pk, 1);
    pstr(pk, "id");
    msgpack_pack_uint64(pk, id);
    if (with_prompt) {
        pstr(pk, "prompt");
        pstr(pk, "Hello");
    }
}

typedef enum {
    C_NOT_MSGPACK, C_TRUNCATED, C_TRAILING, C_NOT_MAP, C_TOO_DEEP, C_TOO_MANY_OBJECTS, C_OVERSIZED,
    C_UNKNOWN_TYPE, C_NO_TYPE, C_BAD_VERSION, C_NO_VERSION, C_WORKER_MESSAGE, C_UNKNOWN_FIELD,
    C_DUPLICATE_FIELD, C_MISSING_ID, C_BOTH_PROMPTS, C_NO_PROMPT, C_WRONG_TYPE_MAX_TOKENS,
    C_WRONG_TYPE_STREAM, C_WRONG_TYPE_PROMPT, C_BAD_ID, C_EMPTY_PROMPT, C_EMPTY_PROMPT_IDS,
    C_INVALID_UTF8, C_PROMPT_TOO_LONG_IDS, C_PROMPT_TOO_LONG_TEXT, C_TOKEN_OUT_OF_VOCAB,
    C_TOKEN_OUT_OF_PROTO, C_TOKEN_NEGATIVE, C_BIAS_OUT_OF_VOCAB, C_MAX_TOKENS_ZERO,
    C_MAX_TOKENS_NEGATIVE, C_MAX_TOKENS_OVER_CONTEXT, C_MAX_TOKENS_OVER_LIMIT, C_TEMPERATURE_NEGATIVE,
    C_TEMPERATURE_NAN, C_TEMPERATURE_INF, C_TOP_P_ZERO, C_TOP_P_OVER_ONE, C_TOP_K_NEGATIVE,
    C_TOO_MANY_STOPS, C_STOP_TOO_LONG, C_STOP_EMPTY, C_PROMPT_OVER_LIMIT, C_COUNT
} case_id;

typedef struct {
    const char *name;
    int code;
    const char *reason;
    const char *field; /* NULL: no field expected */
    int with_id;       /* the error is addressed to the request's id */
} expect;

static const expect g_expect[C_COUNT] = {
    [C_NOT_MSGPACK] = {"not msgpack", 400, "malformed", NULL, 0},
    [C_TRUNCATED] = {"truncated map", 400, "malformed", NULL, 0},
    [C_TRAILING] = {"bytes after the map", 400, "malformed", NULL, 0},
    [C_NOT_MAP] = {"an array, not a map", 400, "not_map", NULL, 0},
    [C_TOO_DEEP] = {"nested too deep", 400, "malformed", NULL, 0},
    [C_TOO_MANY_OBJECTS] = {"too many objects", 413, "too_large", NULL, 0},
    [C_OVERSIZED] = {"a frame over 1 MiB", 413, "too_large", NULL, 0},
    [C_UNKNOWN_TYPE] = {"unknown message type", 400, "unknown_type", NULL, 0},
    [C_NO_TYPE] = {"no message type", 400, "unknown_type", NULL, 0},
    [C_BAD_VERSION] = {"protocol version 2", 426, "bad_version", NULL, 1},
    [C_NO_VERSION] = {"no protocol version", 426, "bad_version", NULL, 1},
    [C_WORKER_MESSAGE] = {"a worker-link message", 400, "not_client_message", NULL, 0},
    [C_UNKNOWN_FIELD] = {"misspelt field", 400, "unknown_field", NULL, 1},
    [C_DUPLICATE_FIELD] = {"a field twice", 400, "duplicate_field", "max_tokens", 1},
    [C_MISSING_ID] = {"submit without id", 400, "missing_field", "id", 0},
    [C_BOTH_PROMPTS] = {"prompt and prompt_ids", 400, "prompt_choice", "prompt", 1},
    [C_NO_PROMPT] = {"no prompt", 400, "prompt_choice", "prompt", 1},
    [C_WRONG_TYPE_MAX_TOKENS] = {"max_tokens as a string", 400, "wrong_type", "max_tokens", 1},
    [C_WRONG_TYPE_STREAM] = {"stream as 1", 400, "wrong_type", "stream", 1},
    [C_WRONG_TYPE_PROMPT] = {"prompt as a number", 400, "wrong_type", "prompt", 1},
    [C_BAD_ID] = {"an id of 65 bytes", 400, "bad_id", "id", 0},
    [C_EMPTY_PROMPT] = {"empty prompt", 422, "empty_prompt", "prompt", 1},
    [C_EMPTY_PROMPT_IDS] = {"empty prompt_ids", 422, "empty_prompt", "prompt_ids", 1},
    [C_INVALID_UTF8] = {"prompt not UTF-8", 400, "invalid_utf8", "prompt", 1},
    [C_PROMPT_TOO_LONG_IDS] = {"300 prompt ids, context 256", 422, "prompt_too_long", "prompt_ids", 1},
    [C_PROMPT_TOO_LONG_TEXT] = {"a 2000-token prompt, context 256", 422, "prompt_too_long", "prompt", 1},
    [C_TOKEN_OUT_OF_VOCAB] = {"token id 50257", 422, "token_out_of_range", "prompt_ids", 1},
    [C_TOKEN_OUT_OF_PROTO] = {"token id 2000000", 422, "token_out_of_range", "prompt_ids", 1},
    [C_TOKEN_NEGATIVE] = {"token id -1", 422, "token_out_of_range", "prompt_ids", 1},
    [C_BIAS_OUT_OF_VOCAB] = {"logit_bias for token 60000", 422, "token_out_of_range", "logit_bias", 1},
    [C_MAX_TOKENS_ZERO] = {"max_tokens 0", 400, "out_of_range", "max_tokens", 1},
    [C_MAX_TOKENS_NEGATIVE] = {"max_tokens -5", 400, "out_of_range", "max_tokens", 1},
    [C_MAX_TOKENS_OVER_CONTEXT] = {"max_tokens 300, context 256", 422, "max_tokens_over_context", "max_tokens", 1},
    [C_MAX_TOKENS_OVER_LIMIT] = {"max_tokens 5000", 400, "out_of_range", "max_tokens", 1},
    [C_TEMPERATURE_NEGATIVE] = {"temperature -0.5", 400, "out_of_range", "temperature", 1},
    [C_TEMPERATURE_NAN] = {"temperature NaN", 400, "not_finite", "temperature", 1},
    [C_TEMPERATURE_INF] = {"temperature inf", 400, "not_finite", "temperature", 1},
    [C_TOP_P_ZERO] = {"top_p 0", 400, "out_of_range", "top_p", 1},
    [C_TOP_P_OVER_ONE] = {"top_p 1.5", 400, "out_of_range", "top_p", 1},
    [C_TOP_K_NEGATIVE] = {"top_k -1", 400, "out_of_range", "top_k", 1},
    [C_TOO_MANY_STOPS] = {"9 stop strings", 400, "too_many", "stop", 1},
    [C_STOP_TOO_LONG] = {"a stop string of 65 bytes", 400, "too_long", "stop", 1},
    [C_STOP_EMPTY] = {"an empty stop string", 400, "empty", "stop", 1},
    [C_PROMPT_OVER_LIMIT] = {"a prompt over 256 KiB", 400, "too_long", "prompt", 1},
};

/* Packs case c (request id `id`) into sb. */
static void build_case(case_id c, uint64_t id, msgpack_sbuffer *sb) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    char big[400];
    switch (c) {
    case C_NOT_MSGPACK: msgpack_sbuffer_write(sb, "\xc1\xc1\xc1", 3); break;
    case C_TRUNCATED:
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "max_tokens"); /* the value is missing */
        break;
    case C_TRAILING:
        submit_head(&pk, id, 1, 0);
        msgpack_pack_nil(&pk);
        break;
    case C_NOT_MAP:
        msgpack_pack_array(&pk, 2);
        pstr(&pk, "submit");
        msgpack_pack_uint8(&pk, 1);
        break;
    case C_TOO_DEEP:
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "logit_bias");
        for (int i = 0; i < 10; i++) msgpack_pack_array(&pk, 1);
        msgpack_pack_uint8(&pk, 1);
        break;
    case C_TOO_MANY_OBJECTS:
        submit_head(&pk, id, 0, 1);
        pstr(&pk, "prompt_ids");
        msgpack_pack_array(&pk, 20000);
        for (int i = 0; i < 20000; i++) msgpack_pack_uint8(&pk, 1);
        break;
    case C_OVERSIZED: {
        size_t n = (PROTO_MAX_MSG_BYTES * 3) / 2;
        char *p = malloc(n);
        memset(p, 'a', n);
        submit_head(&pk, id, 0, 1);
        pstr(&pk, "prompt");
        msgpack_pack_str(&pk, n);
        msgpack_pack_str_body(&pk, p, n);
        free(p);
        break;
    }
    case C_UNKNOWN_TYPE:
        msgpack_pack_map(&pk, 2);
        pstr(&pk, "t");
        pstr(&pk, "launch_missiles");
        pstr(&pk, "v");
        msgpack_pack_uint8(&pk, 1);
        break;
    case C_NO_TYPE:
        msgpack_pack_map(&pk, 1);
        pstr(&pk, "v");
        msgpack_pack_uint8(&pk, 1);
        break;
    case C_BAD_VERSION:
    case C_NO_VERSION:
        msgpack_pack_map(&pk, c == C_BAD_VERSION ? 4 : 3);
        pstr(&pk, "t");
        pstr(&pk, "submit");
        if (c == C_BAD_VERSION) {
            pstr(&pk, "v");
            msgpack_pack_uint8(&pk, 2);
        }
        pstr(&pk, "id");
        msgpack_pack_uint64(&pk, id);
        pstr(&pk, "prompt");
        pstr(&pk, "Hello");
        break;
    case C_WORKER_MESSAGE:
        msgpack_pack_map(&pk, 3);
        pstr(&pk, "t");
        pstr(&pk, "credit");
        pstr(&pk, "v");
        msgpack_pack_uint8(&pk, 1);
        pstr(&pk, "credit");
        msgpack_pack_uint8(&pk, 1);
        break;
    case C_UNKNOWN_FIELD:
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "temprature");
        msgpack_pack_float(&pk, 0.5f);
        break;
    case C_DUPLICATE_FIELD:
        submit_head(&pk, id, 1, 2);
        pstr(&pk, "max_tokens");
        msgpack_pack_uint8(&pk, 4);
        pstr(&pk, "max_tokens");
        msgpack_pack_uint8(&pk, 5);
        break;
    case C_MISSING_ID:
        msgpack_pack_map(&pk, 3);
        pstr(&pk, "t");
        pstr(&pk, "submit");
        pstr(&pk, "v");
        msgpack_pack_uint8(&pk, 1);
        pstr(&pk, "prompt");
        pstr(&pk, "Hello");
        break;
    case C_BOTH_PROMPTS:
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "prompt_ids");
        msgpack_pack_array(&pk, 1);
        msgpack_pack_uint8(&pk, 1);
        break;
    case C_NO_PROMPT: submit_head(&pk, id, 0, 0); break;
    case C_WRONG_TYPE_MAX_TOKENS:
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "max_tokens");
        pstr(&pk, "ten");
        break;
    case C_WRONG_TYPE_STREAM:
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "stream");
        msgpack_pack_uint8(&pk, 1);
        break;
    case C_WRONG_TYPE_PROMPT:
        submit_head(&pk, id, 0, 1);
        pstr(&pk, "prompt");
        msgpack_pack_uint8(&pk, 7);
        break;
    case C_BAD_ID:
        memset(big, 'x', 65);
        big[65] = 0;
        msgpack_pack_map(&pk, 4);
        pstr(&pk, "t");
        pstr(&pk, "submit");
        pstr(&pk, "v");
        msgpack_pack_uint8(&pk, 1);
        pstr(&pk, "id");
        pstr(&pk, big);
        pstr(&pk, "prompt");
        pstr(&pk, "Hello");
        break;
    case C_EMPTY_PROMPT:
        submit_head(&pk, id, 0, 1);
        pstr(&pk, "prompt");
        pstr(&pk, "");
        break;
    case C_EMPTY_PROMPT_IDS:
        submit_head(&pk, id, 0, 1);
        pstr(&pk, "prompt_ids");
        msgpack_pack_array(&pk, 0);
        break;
    case C_INVALID_UTF8:
        submit_head(&pk, id, 0, 1);
        pstr(&pk, "prompt");
        msgpack_pack_str(&pk, 4);
        msgpack_pack_str_body(&pk, "a\xff\xfe" "b", 4);
        break;
    case C_PROMPT_TOO_LONG_IDS:
        submit_head(&pk, id, 0, 1);
        pstr(&pk, "prompt_ids");
        msgpack_pack_array(&pk, 300);
        for (int i = 0; i < 300; i++) msgpack_pack_uint16(&pk, (uint16_t)(100 + i));
        break;
    case C_PROMPT_TOO_LONG_TEXT: {
        submit_head(&pk, id, 0, 1);
        pstr(&pk, "prompt");
        size_t n = 2000 * 6;
        char *p = malloc(n);
        for (size_t i = 0; i < n; i += 6) memcpy(p + i, " word.", 6);
        msgpack_pack_str(&pk, n);
        msgpack_pack_str_body(&pk, p, n);
        free(p);
        break;
    }
    case C_TOKEN_OUT_OF_VOCAB:
    case C_TOKEN_OUT_OF_PROTO:
    case C_TOKEN_NEGATIVE:
        submit_head(&pk, id, 0, 1);
        pstr(&pk, "prompt_ids");
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint8(&pk, 1);
        if (c == C_TOKEN_NEGATIVE) msgpack_pack_int8(&pk, -1);
        else msgpack_pack_uint32(&pk, c == C_TOKEN_OUT_OF_VOCAB ? 50257 : 2000000);
        break;
    case C_BIAS_OUT_OF_VOCAB:
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "logit_bias");
        msgpack_pack_array(&pk, 1);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint32(&pk, 60000);
        msgpack_pack_float(&pk, 1.0f);
        break;
    case C_MAX_TOKENS_ZERO:
    case C_MAX_TOKENS_NEGATIVE:
    case C_MAX_TOKENS_OVER_CONTEXT:
    case C_MAX_TOKENS_OVER_LIMIT:
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "max_tokens");
        msgpack_pack_int32(&pk, c == C_MAX_TOKENS_ZERO ? 0 : c == C_MAX_TOKENS_NEGATIVE ? -5
                                : c == C_MAX_TOKENS_OVER_CONTEXT ? 300 : 5000);
        break;
    case C_TEMPERATURE_NEGATIVE:
    case C_TEMPERATURE_NAN:
    case C_TEMPERATURE_INF:
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "temperature");
        msgpack_pack_double(&pk, c == C_TEMPERATURE_NEGATIVE ? -0.5 : c == C_TEMPERATURE_NAN ? NAN : INFINITY);
        break;
    case C_TOP_P_ZERO:
    case C_TOP_P_OVER_ONE:
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "top_p");
        msgpack_pack_double(&pk, c == C_TOP_P_ZERO ? 0.0 : 1.5);
        break;
    case C_TOP_K_NEGATIVE:
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "top_k");
        msgpack_pack_int8(&pk, -1);
        break;
    case C_TOO_MANY_STOPS:
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "stop");
        msgpack_pack_array(&pk, 9);
        for (int i = 0; i < 9; i++) pstr(&pk, "x");
        break;
    case C_STOP_TOO_LONG:
    case C_STOP_EMPTY:
        memset(big, 's', 65);
        big[c == C_STOP_TOO_LONG ? 65 : 0] = 0;
        submit_head(&pk, id, 1, 1);
        pstr(&pk, "stop");
        msgpack_pack_array(&pk, 1);
        pstr(&pk, big);
        break;
    case C_PROMPT_OVER_LIMIT: {
        size_t n = PROTO_MAX_PROMPT_BYTES + 1;
        char *p = malloc(n);
        memset(p, 'a', n);
        submit_head(&pk, id, 0, 1);
        pstr(&pk, "prompt");
        msgpack_pack_str(&pk, n);
        msgpack_pack_str_body(&pk, p, n);
        free(p);
        break;
    }
    case C_COUNT: break;
    }
}

/* Sends case c and checks its answer. 1 if it matched. */
static int run_case(tu_client *c, case_id k, uint64_t id) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    build_case(k, id, &sb);
    tu_send_raw(c, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    const expect *e = &g_expect[k];
    proto_msg m;
    int ok = 0;
    if (tu_recv(c, &m, 10000)) {
        char reason[64], field[80];
        snprintf(reason, sizeof(reason), "%.*s", (int)m.reason.len, m.reason.ptr ? m.reason.ptr : "");
        snprintf(field, sizeof(field), "%.*s", (int)m.field.len, m.field.ptr ? m.field.ptr : "");
        int has_id = (m.has & PROTO_HAS(PF_ID)) && !m.id.is_str && m.id.num == id;
        ok = m.type == PROTO_T_ERROR && m.code == e->code && strcmp(reason, e->reason) == 0 &&
             (e->field ? strcmp(field, e->field) == 0 : 1) && has_id == e->with_id;
        if (!ok)
            printf("  %s: got %s code %d reason '%s' field '%s' id %d (%.*s); want %d %s %s id %d\n", e->name,
                   proto_type_name(m.type), m.code, reason, field, has_id, (int)m.message.len,
                   m.message.ptr ? m.message.ptr : "", e->code, e->reason, e->field ? e->field : "-", e->with_id);
        proto_msg_destroy(&m);
    } else {
        printf("  %s: no answer\n", e->name);
    }
    return ok;
}

/* ============================================================================================== */
/* the normal load                                                                                 */
/* ============================================================================================== */

typedef struct {
    tu_client c;
    tu_result res[N_NORMAL];
    int next, ended;
} load;

static void load_start(load *l, const char *ep) {
    memset(l, 0, sizeof(*l));
    tu_client_open(&l->c, ep);
    for (int i = 0; i < N_NORMAL; i++) {
        tu_req r;
        tu_req_make(&r, i, 32);
        tu_submit(&l->c, 100 + (uint64_t)i, &r);
    }
}

/* Reads what has arrived (up to ms). 1 when every request ended. */
static int load_pump(load *l, int ms) {
    proto_msg m;
    while (l->ended < N_NORMAL && tu_recv(&l->c, &m, ms)) {
        if (!m.id.is_str && m.id.num >= 100 && m.id.num < 100 + N_NORMAL) {
            tu_result *r = &l->res[m.id.num - 100];
            if (!r->done && !r->error_code && tu_result_add(r, &m)) l->ended++;
        }
        proto_msg_destroy(&m);
        ms = 0;
    }
    return l->ended == N_NORMAL;
}

static void load_free(load *l) {
    for (int i = 0; i < N_NORMAL; i++) tu_result_free(&l->res[i]);
    tu_client_close(&l->c);
}

/* ============================================================================================== */
/* the scenario                                                                                    */
/* ============================================================================================== */

static void test_bad_input(const tu_daemon *d) {
    static load ref, busy;
    load_start(&ref, d->client_ep);
    double deadline = proto_clock_ms() + 120000;
    while (!load_pump(&ref, 100) && proto_clock_ms() < deadline) {}
    check(ref.ended == N_NORMAL, "the reference load completes (%d/%d)", ref.ended, N_NORMAL);

    tu_client s;
    tu_client_open(&s, d->client_ep);
    pid_t before[8], after[8];
    int running[8];
    int nw_before = tu_worker_pids(&s, before, running, 8);

    /* a client that submits and never reads: it must not hold up anyone */
    tu_client stalled;
    tu_client_open(&stalled, d->client_ep);
    for (int i = 0; i < 8; i++) {
        tu_req r;
        tu_req_make(&r, 1000 + i, 100);
        r.max_tokens = 200;
        tu_submit(&stalled, 7000 + (uint64_t)i, &r);
    }
    load_start(&busy, d->client_ep);
    tu_client bad;
    tu_client_open(&bad, d->client_ep);
    int matched = 0;
    for (int k = 0; k < C_COUNT; k++) {
        matched += run_case(&bad, (case_id)k, 5000 + (uint64_t)k);
        load_pump(&busy, 0);
    }
    check(matched == C_COUNT, "every invalid case got its specific error (%d/%d)", matched, C_COUNT);

    /* a duplicate id: the first is live (long), the second is refused; the first is unaffected */
    tu_req longr;
    tu_req_make(&longr, 0, 60);
    longr.max_tokens = 120;
    tu_submit(&bad, 77, &longr);
    tu_submit(&bad, 77, &longr);
    proto_msg m;
    int dup = 0, first_done = 0;
    while ((!dup || !first_done) && tu_recv(&bad, &m, 20000)) {
        if (m.type == PROTO_T_ERROR && m.code == PROTO_CODE_DUPLICATE_ID && m.id.num == 77 &&
            m.reason.len == 12 && memcmp(m.reason.ptr, "duplicate_id", 12) == 0)
            dup = 1;
        if (m.type == PROTO_T_DONE && m.id.num == 77) first_done = 1;
        proto_msg_destroy(&m);
        load_pump(&busy, 0);
    }
    check(dup, "a second submit with a live id gets 409 duplicate_id");
    check(first_done, "the first request with that id completes");

    /* random garbage, and garbage that starts like a map */
    unsigned seed = 12345;
    int replies = 0;
    for (int i = 0; i < N_GARBAGE; i++) {
        unsigned char buf[256];
        size_t n = 1 + rand_r(&seed) % sizeof(buf);
        for (size_t k = 0; k < n; k++) buf[k] = (unsigned char)rand_r(&seed);
        if (i % 2) buf[0] = (unsigned char)(0x80 | (buf[0] & 0x0f)); /* a fixmap header */
        tu_send_raw(&bad, buf, n);
        if (i % 64 == 63) load_pump(&busy, 0);
    }
    while (replies < N_GARBAGE && tu_recv(&bad, &m, 5000)) {
        replies += m.type == PROTO_T_ERROR && (m.code == 400 || m.code == 413 || m.code == 426);
        proto_msg_destroy(&m);
    }
    check(replies == N_GARBAGE, "each of %d garbage frames got an error frame (%d)", N_GARBAGE, replies);

    /* a frame far over the limit: the connection is dropped, the broker lives on */
    {
        size_t n = 4u << 20;
        char *p = calloc(1, n);
        tu_client huge;
        tu_client_open(&huge, d->client_ep);
        tu_send_raw(&huge, p, n);
        free(p);
        tu_sleep_ms(200);
        tu_client_close(&huge);
    }

    deadline = proto_clock_ms() + 120000;
    while (!load_pump(&busy, 100) && proto_clock_ms() < deadline) {}
    int same = 0;
    for (int i = 0; i < N_NORMAL; i++) same += tu_result_same(&busy.res[i], &ref.res[i]);
    printf("bad input: %d/%d cases answered with their specific error, %d/%d garbage frames answered, "
           "%d/%d normal requests identical\n", matched, C_COUNT, replies, N_GARBAGE, same, N_NORMAL);
    check(busy.ended == N_NORMAL, "the normal load completed during the attack (%d/%d)", busy.ended, N_NORMAL);
    check(same == N_NORMAL, "its outputs are byte-identical to the undisturbed run (%d/%d)", same, N_NORMAL);

    int nw_after = tu_worker_pids(&s, after, running, 8);
    int kept = nw_after == nw_before;
    for (int i = 0; kept && i < nw_before; i++) {
        int found = 0;
        for (int k = 0; k < nw_after; k++) found |= after[k] == before[i];
        kept &= found;
    }
    check(nw_before == 2 && kept, "no worker died or restarted (%d before, %d after)", nw_before, nw_after);
    check(kill(d->pid, 0) == 0, "the broker is alive");
    check(!tu_log_contains(d->log, "exited with status") && !tu_log_contains(d->log, "killed by signal"),
          "no worker exit in the log");
    tu_client_close(&stalled);
    load_free(&ref);
    load_free(&busy);
    tu_client_close(&bad);
    tu_client_close(&s);
}

int main(void) {
    check(tu_init("badinput", 400) == 0, "the small model is made");
    tu_daemon d;
    char *extra[] = {"--debug-step-delay-ms", "5", NULL};
    int up = tu_daemon_start(&d, "bad", 2, 32, extra);
    check(up, "gpt2d starts with 2 workers");
    if (up) {
        test_bad_input(&d);
        check(tu_daemon_stop(&d), "gpt2d stops cleanly on SIGTERM");
        check(!tu_log_contains(d.log, "Sanitizer") && !tu_log_contains(d.log, "runtime error:"),
              "no sanitizer report");
    }
    zmq_ctx_term(tu.ctx);
    tu_kill_all();
    return check_done("test_badinput");
}
