/* test_proto_json.c — the shared JSON -> submit mapper (proto/proto_json.h): strict keys with the
 * field named, the caller's extra keys, integers kept exact (seeds >= 2^53), the protocol's ranges
 * applied before any allocation, defaults from a template, and agreement with the wire decoder. */
#include <string.h>

#include "check.h"
#include "proto_json.h"

static int parse(proto_json_submit *s, const char *text, const proto_msg *d, const char *const *extra,
                 proto_json_error *e) {
    return proto_json_submit_parse(s, text, strlen(text), d, extra, NULL, e);
}

static void test_unknown_field(void) {
    proto_json_submit s;
    proto_json_error e;
    int rc = parse(&s, "{\"id\":\"a\",\"prompt\":\"hi\",\"temprature\":0.9}", NULL, NULL, &e);
    check(rc == -1, "a misspelt key is refused");
    check(e.reason == PROTO_R_UNKNOWN_FIELD, "reason unknown_field (got %s)", proto_reason_name(e.reason));
    check(strcmp(e.field, "temprature") == 0, "the field is named (got '%s')", e.field);
    check(strstr(e.message, "temprature") != NULL, "the message names it: %s", e.message);
    /* "t" and "v" are the wire's envelope, not fields of a JSON request */
    rc = parse(&s, "{\"id\":1,\"prompt\":\"hi\",\"t\":\"submit\"}", NULL, NULL, &e);
    check(rc == -1 && e.reason == PROTO_R_UNKNOWN_FIELD && strcmp(e.field, "t") == 0, "\"t\" is refused");
}

static void test_extra_keys(void) {
    static const char *const extra[] = {"arrival_step", "model", NULL};
    proto_json_submit s;
    proto_json_error e;
    json_t *o = NULL;
    const char *t = "{\"id\":\"x\",\"prompt\":\"hi\",\"model\":\"gpt2\",\"arrival_step\":3}";
    int rc = proto_json_submit_parse(&s, t, strlen(t), NULL, extra, &o, &e);
    check(rc == 0, "extra keys are left to the caller: %s", e.message);
    check(o && json_integer_value(json_object_get(o, "arrival_step")) == 3, "the caller reads its extras");
    json_decref(o);
    if (rc == 0) proto_json_submit_free(&s);
    rc = parse(&s, "{\"id\":\"x\",\"prompt\":\"hi\",\"arrival_stp\":3}", NULL, extra, &e);
    check(rc == -1 && strcmp(e.field, "arrival_stp") == 0, "a key in neither list is still refused");
}

static void test_seed_exact(void) {
    proto_json_submit s;
    proto_json_error e;
    /* 2^53 + 1 is not representable as a double: a double path gives 2^53 */
    int rc = parse(&s, "{\"id\":1,\"prompt\":\"hi\",\"seed\":9007199254740993}", NULL, NULL, &e);
    check(rc == 0, "seed 2^53+1 accepted: %s", e.message);
    check(rc == 0 && s.msg.seed == 9007199254740993ull, "seed exact (got %llu)", (unsigned long long)s.msg.seed);
    if (rc == 0) proto_json_submit_free(&s);
    rc = parse(&s, "{\"id\":1,\"prompt\":\"hi\",\"seed\":9223372036854775807}", NULL, NULL, &e);
    check(rc == 0 && s.msg.seed == 9223372036854775807ull, "seed 2^63-1 exact");
    if (rc == 0) proto_json_submit_free(&s);
    rc = parse(&s, "{\"id\":1,\"prompt\":\"hi\",\"seed\":-1}", NULL, NULL, &e);
    check(rc == -1 && strcmp(e.field, "seed") == 0 && e.reason == PROTO_R_WRONG_TYPE, "negative seed refused: %s",
          e.message);
    rc = parse(&s, "{\"id\":1,\"prompt\":\"hi\",\"seed\":1.5}", NULL, NULL, &e);
    check(rc == -1 && strcmp(e.field, "seed") == 0, "a real seed is refused, not truncated: %s", e.message);
}

static void test_limits(void) {
    proto_json_submit s;
    proto_json_error e;
    int rc = parse(&s, "{\"id\":1,\"prompt\":\"hi\",\"max_tokens\":2000000000}", NULL, NULL, &e);
    check(rc == -1 && e.reason == PROTO_R_OUT_OF_RANGE && strcmp(e.field, "max_tokens") == 0,
          "max_tokens 2e9 refused by the protocol limit (%s: %s)", proto_reason_name(e.reason), e.message);
    rc = parse(&s, "{\"id\":1,\"prompt\":\"hi\",\"max_tokens\":2e9}", NULL, NULL, &e);
    check(rc == -1 && strcmp(e.field, "max_tokens") == 0, "max_tokens as a real refused: %s", e.message);
    rc = parse(&s, "{\"id\":1,\"prompt\":\"hi\",\"temperature\":\"hot\"}", NULL, NULL, &e);
    check(rc == -1 && e.reason == PROTO_R_WRONG_TYPE && strcmp(e.field, "temperature") == 0, "wrong type named");
    rc = parse(&s, "{\"id\":1,\"prompt\":\"hi\",\"top_p\":0}", NULL, NULL, &e);
    check(rc == -1 && e.reason == PROTO_R_OUT_OF_RANGE && strcmp(e.field, "top_p") == 0, "top_p 0 refused");
    rc = parse(&s, "{\"id\":1}", NULL, NULL, &e);
    check(rc == -1 && e.reason == PROTO_R_PROMPT_CHOICE, "no prompt refused (%s)", proto_reason_name(e.reason));
    rc = parse(&s, "{\"prompt\":\"hi\"}", NULL, NULL, &e);
    check(rc == -1 && e.reason == PROTO_R_MISSING_FIELD && strcmp(e.field, "id") == 0, "no id and no default");
    rc = parse(&s, "{\"id\":1,\"prompt\":\"a\",\"prompt\":\"b\"}", NULL, NULL, &e);
    check(rc == -1 && e.reason == PROTO_R_DUPLICATE_FIELD, "duplicate key refused: %s", e.message);
    rc = parse(&s, "{\"id\":1,\"prompt\":\"hi\",", NULL, NULL, &e);
    check(rc == -1 && e.reason == PROTO_R_MALFORMED, "truncated JSON: %s", e.message);
    rc = parse(&s, "[1,2]", NULL, NULL, &e);
    check(rc == -1 && e.reason == PROTO_R_NOT_MAP, "an array is not a request");
    rc = parse(&s, "{\"id\":1,\"prompt\":\"hi\",\"stop\":[\"\"]}", NULL, NULL, &e);
    check(rc == -1 && strcmp(e.field, "stop") == 0, "empty stop string refused: %s", e.message);
}

static void test_values_and_defaults(void) {
    proto_msg d;
    proto_msg_init(&d, PROTO_T_SUBMIT);
    d.id = (proto_cid){1, 0, {"dflt", 4}};
    d.temperature = 0.5f;
    d.max_tokens = 7;
    d.stop[0] = (proto_str){"END", 3};
    d.n_stop = 1;
    proto_json_submit s;
    proto_json_error e;
    int rc = parse(&s,
                   "{\"prompt_ids\":[1,2,50256],\"max_tokens\":3,\"top_k\":40,\"stop\":\"\\n\\n\","
                   "\"logit_bias\":[[13,-100]],\"ignore_eos\":true}",
                   &d, NULL, &e);
    check(rc == 0, "valid line accepted: %s", e.message);
    if (rc != 0) return;
    const proto_msg *m = &s.msg;
    check(m->type == PROTO_T_SUBMIT, "a submit");
    check(m->id.is_str && m->id.str.len == 4 && memcmp(m->id.str.ptr, "dflt", 4) == 0, "default id");
    check(m->n_prompt_ids == 3 && m->prompt_ids[2] == 50256, "prompt_ids");
    check(m->max_tokens == 3 && m->top_k == 40, "the line's values win");
    check(m->temperature == 0.5f, "absent fields take the defaults (temperature %g)", m->temperature);
    check(m->n_stop == 1 && m->stop[0].len == 2 && memcmp(m->stop[0].ptr, "\n\n", 2) == 0, "stop string");
    check(m->n_logit_bias == 1 && m->logit_bias[0].id == 13 && m->logit_bias[0].bias == -100.0f, "logit_bias");
    check(m->ignore_eos == 1, "ignore_eos");
    /* the result is sendable as it is: the encoder accepts it */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[256];
    check(proto_encode(m, &sb, err, sizeof(err)) == 0, "the mapped submit encodes: %s", err);
    msgpack_sbuffer_destroy(&sb);
    proto_json_submit s2 = s; /* movable: only heap pointers inside */
    proto_json_submit_free(&s2);
    rc = parse(&s, "{\"prompt\":\"hi\"}", &d, NULL, &e);
    check(rc == 0 && s.msg.max_tokens == 7 && s.msg.n_stop == 1 && s.msg.stop[0].len == 3, "all from defaults");
    if (rc == 0) proto_json_submit_free(&s);
}

int main(void) {
    test_unknown_field();
    test_extra_keys();
    test_seed_exact();
    test_limits();
    test_values_and_defaults();
    return check_done("test_proto_json");
}
