/* proto_json.c — see proto_json.h. The JSON object becomes one msgpack submit map (the defaults'
 * fields the object does not give, then the object's own), which proto_decode() then judges. */
#include "proto_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PJ_MAX_DEPTH 8 /* deeper JSON is refused before recursion (the protocol allows less) */

static int pj_fail(proto_json_error *e, proto_reason why, const char *field, const char *fmt, ...) {
    e->reason = why;
    snprintf(e->field, sizeof(e->field), "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return -1;
}

static int pj_is_extra(const char *key, const char *const *extra) {
    for (; extra && *extra; extra++)
        if (strcmp(key, *extra) == 0) return 1;
    return 0;
}

/* Packs a JSON value as msgpack. Integers stay integers (uint64 when non-negative). -1 if too deep. */
static int pj_pack(msgpack_packer *pk, const json_t *v, int depth) {
    if (depth > PJ_MAX_DEPTH) return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        msgpack_pack_map(pk, json_object_size(v));
        json_object_foreach((json_t *)v, k, x) {
            size_t n = strlen(k);
            msgpack_pack_str(pk, n);
            msgpack_pack_str_body(pk, k, n);
            if (pj_pack(pk, x, depth + 1) < 0) return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        msgpack_pack_array(pk, json_array_size(v));
        json_array_foreach(v, i, x) if (pj_pack(pk, x, depth + 1) < 0) return -1;
        return 0;
    }
    case JSON_STRING: {
        size_t n = json_string_length(v);
        msgpack_pack_str(pk, n);
        msgpack_pack_str_body(pk, json_string_value(v), n);
        return 0;
    }
    case JSON_INTEGER: {
        json_int_t i = json_integer_value(v);
        if (i >= 0) msgpack_pack_uint64(pk, (uint64_t)i);
        else msgpack_pack_int64(pk, (int64_t)i);
        return 0;
    }
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(v)); return 0;
    case JSON_TRUE: msgpack_pack_true(pk); return 0;
    case JSON_FALSE: msgpack_pack_false(pk); return 0;
    case JSON_NULL: msgpack_pack_nil(pk); return 0;
    }
    return -1;
}

static int pj_key_is(const msgpack_object *k, const char *s) {
    size_t n = strlen(s);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, s, n) == 0;
}

int proto_json_submit_from(proto_json_submit *s, const json_t *obj, const proto_msg *defaults,
                           const char *const *extra, proto_json_error *e) {
    memset(s, 0, sizeof(*s));
    memset(e, 0, sizeof(*e));
    if (!json_is_object(obj)) return pj_fail(e, PROTO_R_NOT_MAP, NULL, "not a JSON object");

    /* 1. every key must be a submit field or one the caller handles */
    const char *k;
    json_t *v;
    size_t n_keys = 2; /* "t", "v" */
    json_object_foreach((json_t *)obj, k, v) {
        if (pj_is_extra(k, extra)) continue;
        if (!proto_type_has_field(PROTO_T_SUBMIT, k, strlen(k)))
            return pj_fail(e, PROTO_R_UNKNOWN_FIELD, k, "unknown field \"%.64s\"", k);
        n_keys++;
    }

    /* 2. the defaults' fields the object does not give (their msgpack form, as sent on the wire) */
    msgpack_sbuffer dsb;
    msgpack_sbuffer_init(&dsb);
    msgpack_unpacked du;
    msgpack_unpacked_init(&du);
    const msgpack_object *dmap = NULL;
    if (defaults) {
        proto_msg d = *defaults;
        d.type = PROTO_T_SUBMIT;
        d.v = PROTO_VERSION;
        d.has = (d.has & ~PROTO_HAS(PF_PROMPT_IDS)) | PROTO_HAS(PF_ID) | PROTO_HAS(PF_PROMPT);
        d.prompt = (proto_str){"x", 1};
        d.n_prompt_ids = 0;
        char err[256];
        if (proto_encode(&d, &dsb, err, sizeof(err)) < 0 ||
            msgpack_unpack_next(&du, dsb.data, dsb.size, NULL) != MSGPACK_UNPACK_SUCCESS ||
            du.data.type != MSGPACK_OBJECT_MAP) {
            msgpack_unpacked_destroy(&du);
            msgpack_sbuffer_destroy(&dsb);
            return pj_fail(e, PROTO_R_INTERNAL, NULL, "invalid defaults: %s", err);
        }
        dmap = &du.data;
    }
    uint32_t n_from_defaults = 0;
    for (uint32_t i = 0; dmap && i < dmap->via.map.size; i++) {
        const msgpack_object *key = &dmap->via.map.ptr[i].key;
        if (pj_key_is(key, "t") || pj_key_is(key, "v") || pj_key_is(key, "prompt") ||
            pj_key_is(key, "prompt_ids"))
            continue;
        char name[PROTO_JSON_FIELD_BYTES];
        snprintf(name, sizeof(name), "%.*s", (int)key->via.str.size, key->via.str.ptr);
        if (json_object_get(obj, name)) continue;
        n_from_defaults++;
    }

    /* 3. one map: t, v, the defaults' remaining fields, the object's fields */
    msgpack_sbuffer_init(&s->buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &s->buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n_keys + n_from_defaults);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "t", 1);
    msgpack_pack_str(&pk, 6);
    msgpack_pack_str_body(&pk, "submit", 6);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "v", 1);
    msgpack_pack_uint32(&pk, PROTO_VERSION);
    for (uint32_t i = 0; dmap && i < dmap->via.map.size; i++) {
        const msgpack_object_kv *kv = &dmap->via.map.ptr[i];
        if (pj_key_is(&kv->key, "t") || pj_key_is(&kv->key, "v") || pj_key_is(&kv->key, "prompt") ||
            pj_key_is(&kv->key, "prompt_ids"))
            continue;
        char name[PROTO_JSON_FIELD_BYTES];
        snprintf(name, sizeof(name), "%.*s", (int)kv->key.via.str.size, kv->key.via.str.ptr);
        if (json_object_get(obj, name)) continue;
        msgpack_pack_object(&pk, kv->key);
        msgpack_pack_object(&pk, kv->val);
    }
    msgpack_unpacked_destroy(&du);
    msgpack_sbuffer_destroy(&dsb);
    json_object_foreach((json_t *)obj, k, v) {
        if (pj_is_extra(k, extra)) continue;
        size_t n = strlen(k);
        msgpack_pack_str(&pk, n);
        msgpack_pack_str_body(&pk, k, n);
        int rc;
        if (strcmp(k, "stop") == 0 && json_is_string(v)) { /* "stop": "x" means ["x"] */
            msgpack_pack_array(&pk, 1);
            rc = pj_pack(&pk, v, 1);
        } else {
            rc = pj_pack(&pk, v, 1);
        }
        if (rc < 0) {
            msgpack_sbuffer_destroy(&s->buf);
            return pj_fail(e, PROTO_R_MALFORMED, k, "field \"%.64s\": nested too deep", k);
        }
    }

    /* 4. the protocol's own decoder judges it */
    char err[256];
    int rc = proto_decode(&s->msg, s->buf.data, s->buf.size, err, sizeof(err));
    if (rc < 0) {
        proto_reason why = s->msg.fail != PROTO_R_NONE ? s->msg.fail
                           : rc == PROTO_E_TOO_LARGE  ? PROTO_R_TOO_LARGE
                                                      : PROTO_R_MALFORMED;
        pj_fail(e, why, s->msg.fail_field, "%s", err);
        proto_json_submit_free(s);
        return -1;
    }
    return 0;
}

int proto_json_submit_parse(proto_json_submit *s, const char *text, size_t len, const proto_msg *defaults,
                            const char *const *extra, json_t **obj, proto_json_error *e) {
    memset(s, 0, sizeof(*s));
    memset(e, 0, sizeof(*e));
    if (obj) *obj = NULL;
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!o)
        return pj_fail(e, strstr(je.text, "duplicate") ? PROTO_R_DUPLICATE_FIELD : PROTO_R_MALFORMED, NULL,
                       "invalid JSON at column %d: %s", je.column, je.text);
    if (!json_is_object(o)) {
        json_decref(o);
        return pj_fail(e, PROTO_R_NOT_MAP, NULL, "not a JSON object");
    }
    int rc = proto_json_submit_from(s, o, defaults, extra, e);
    if (obj) *obj = o;
    else json_decref(o);
    return rc;
}

void proto_json_submit_free(proto_json_submit *s) {
    proto_msg_destroy(&s->msg);
    msgpack_sbuffer_destroy(&s->buf);
    memset(s, 0, sizeof(*s));
}
