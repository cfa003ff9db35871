/* openai.c — the OpenAI API on the protocol: request JSON -> one submit per choice, frames ->
 * response JSON / SSE chunks. Rules (ranges, limits, sampling) are not repeated here: a value the
 * protocol refuses comes back as the protocol's error (reason, field) and is mapped to OpenAI's
 * error shape; this file checks only JSON types and the OpenAI-only keys. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw.h"
#include "proto_json.h"

/* ============================================================================================== */
/* keys                                                                                            */
/* ============================================================================================== */

/* The keys each endpoint accepts; anything else OpenAI defines is "unsupported", the rest "unknown". */
static const char *const completion_keys[] = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "echo", "user", "top_k", "min_p",
    "repetition_penalty", "ignore_eos", "suffix", "best_of", NULL};
static const char *const chat_keys[] = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream",
    "stream_options", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    "top_logprobs", "user", "top_k", "min_p", "repetition_penalty", "ignore_eos", NULL};
/* OpenAI parameters we do not implement: refused by name when given (not null). */
static const char *const unsupported_keys[] = {
    "tools", "tool_choice", "functions", "function_call", "response_format", "parallel_tool_calls", "audio",
    "modalities", "prediction", "store", "metadata", "reasoning_effort", "service_tier", "web_search_options",
    NULL};

static int in_list(const char *const *list, const char *key) {
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], key) == 0) return 1;
    return 0;
}

/* ============================================================================================== */
/* typed getters: null is the same as absent                                                       */
/* ============================================================================================== */

static json_t *jget(const json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

static int bad_type(gw_error *e, const char *key, const char *want) {
    gw_error_set(e, 400, "wrong_type", key, "'%s' must be %s", key, want);
    return -1;
}

static int get_int(const json_t *o, const char *key, long long *x, gw_error *e) {
    json_t *v = jget(o, key);
    if (!v) return 0;
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15) {
        *x = (long long)json_real_value(v); /* 16.0 is an integer too */
        return 1;
    }
    if (!json_is_integer(v)) return bad_type(e, key, "an integer");
    *x = json_integer_value(v);
    return 1;
}

static int get_bool(const json_t *o, const char *key, int *x, gw_error *e) {
    json_t *v = jget(o, key);
    if (!v) return 0;
    if (!json_is_boolean(v)) return bad_type(e, key, "true or false");
    *x = json_is_true(v);
    return 1;
}


/* ============================================================================================== */
/* the sampling fields shared with every JSON client of the protocol                               */
/* ============================================================================================== */

/* What m points to (stop strings, logit bias) while the submits are encoded: the shared mapper's
 * result. */
typedef struct {
    proto_json_submit js;
    int has_js;
} oa_store;

/* THE mapping of the common sampling keys (max_tokens / max_completion_tokens, temperature, top_p,
 * top_k, min_p, repetition_penalty, presence/frequency_penalty, seed, logit_bias, stop, ignore_eos)
 * onto a submit, through the one strict JSON -> submit mapper shared with gpt2c and gpt2-tool
 * (proto/proto_json.h): the OpenAI spellings are translated to the protocol's (logit_bias
 * {"id": bias} -> [[id, bias]], max_completion_tokens -> max_tokens), then every type, range and
 * limit check is the protocol's own. 0, or -1 with e (the protocol's reason as code, the key as param). */
static int oa_map_sampling(const json_t *body, proto_msg *m, oa_store *st, gw_error *e) {
    static const char *const same[] = {"max_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                                       "presence_penalty", "frequency_penalty", "seed", "stop", "ignore_eos", NULL};
    json_t *pj = json_object();
    for (int i = 0; same[i]; i++) {
        json_t *v = jget(body, same[i]);
        if (v) json_object_set(pj, same[i], v);
    }
    json_t *mct = jget(body, "max_completion_tokens");
    if (mct) json_object_set(pj, "max_tokens", mct);
    json_t *lb = jget(body, "logit_bias");
    if (lb && json_is_object(lb)) {
        json_t *arr = json_array();
        const char *key;
        json_t *val;
        json_object_foreach(lb, key, val) {
            char *end;
            long id = strtol(key, &end, 10);
            if (!*key || *end || id < 0) {
                json_decref(arr);
                json_decref(pj);
                gw_error_set(e, 400, "token_out_of_range", "logit_bias", "'logit_bias' key '%.32s' is not a token id",
                             key);
                return -1;
            }
            json_array_append_new(arr, json_pack("[I,O]", (json_int_t)id, val));
        }
        json_object_set_new(pj, "logit_bias", arr);
    } else if (lb) {
        json_object_set(pj, "logit_bias", lb); /* not an object: the mapper names the type error */
    }
    json_object_set_new(pj, "prompt", json_string("x")); /* the prompts are the caller's */
    proto_msg defaults;
    proto_msg_init(&defaults, PROTO_T_SUBMIT);
    defaults.id = (proto_cid){0, 1, {NULL, 0}};
    defaults.has = PROTO_HAS(PF_ID);
    proto_json_error je;
    int rc = proto_json_submit_from(&st->js, pj, &defaults, NULL, &je);
    json_decref(pj);
    if (rc < 0) {
        const char *param = strcmp(je.field, "prompt_ids") == 0 ? "prompt" : je.field;
        int status = proto_reason_code(je.reason);
        gw_error_set(e, status == PROTO_CODE_INTERNAL ? 500 : status, proto_reason_name(je.reason), param, "%s",
                     je.message);
        return -1;
    }
    st->has_js = 1;
    const proto_msg *q = &st->js.msg;
    m->max_tokens = q->max_tokens;
    m->temperature = q->temperature;
    m->top_k = q->top_k;
    m->top_p = q->top_p;
    m->min_p = q->min_p;
    m->repetition_penalty = q->repetition_penalty;
    m->presence_penalty = q->presence_penalty;
    m->frequency_penalty = q->frequency_penalty;
    m->seed = q->seed;
    m->logit_bias = q->logit_bias;
    m->n_logit_bias = q->n_logit_bias;
    m->n_stop = q->n_stop;
    memcpy(m->stop, q->stop, sizeof(m->stop));
    m->ignore_eos = q->ignore_eos;
    return 0;
}

/* ============================================================================================== */
/* the OpenAI-only keys and the prompts                                                            */
/* ============================================================================================== */

static int check_keys(const json_t *body, call_kind kind, gw_error *e) {
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)body, key, val) {
        if (in_list(kind == CALL_CHAT ? chat_keys : completion_keys, key)) continue;
        if (json_is_null(val)) continue;
        if (in_list(unsupported_keys, key) || (kind == CALL_CHAT && (!strcmp(key, "prompt") || !strcmp(key, "echo") ||
                                                                     !strcmp(key, "suffix") || !strcmp(key, "best_of")))) {
            gw_error_set(e, 400, "unsupported_parameter", key, "'%s' is not supported by gpt2d", key);
            return -1;
        }
        gw_error_set(e, 400, "unknown_parameter", key, "unrecognized request argument supplied: %s", key);
        return -1;
    }
    return 0;
}

/* A prompt of the call: text, or token ids. */
typedef struct {
    const char *text;
    size_t len;
    int32_t *ids;
    uint32_t n_ids;
    char *owned; /* chat: the rendered prompt */
} oa_prompt;

static int ids_of(const json_t *arr, oa_prompt *p, gw_error *e) {
    size_t n = json_array_size(arr);
    if (n > PROTO_MAX_IDS) {
        gw_error_set(e, 400, "too_many", "prompt", "a token-id prompt has %zu ids, at most %d", n, PROTO_MAX_IDS);
        return -1;
    }
    p->ids = malloc((n ? n : 1) * sizeof(int32_t));
    if (!p->ids) {
        gw_error_set(e, 500, "internal", "", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v)) return bad_type(e, "prompt", "a string, an array of strings or of token ids");
        json_int_t id = json_integer_value(v);
        if (id < 0 || id > PROTO_MAX_TOKEN_ID) {
            gw_error_set(e, 422, "token_out_of_range", "prompt", "token id %lld is outside the vocabulary",
                         (long long)id);
            return -1;
        }
        p->ids[i] = (int32_t)id;
    }
    p->n_ids = (uint32_t)n;
    return 0;
}

/* The prompts of a completion request (p: GW_MAX_CHOICES entries). Count, or -1 with e. */
static int completion_prompts(const json_t *body, oa_prompt *p, gw_error *e) {
    json_t *v = jget(body, "prompt");
    if (!v) {
        gw_error_set(e, 400, "missing_field", "prompt", "'prompt' is required");
        return -1;
    }
    if (json_is_string(v)) {
        p[0].text = json_string_value(v);
        p[0].len = json_string_length(v);
        return 1;
    }
    if (!json_is_array(v) || json_array_size(v) == 0) {
        if (json_is_array(v)) gw_error_set(e, 422, "empty_prompt", "prompt", "'prompt' is an empty array");
        else bad_type(e, "prompt", "a string, an array of strings or of token ids");
        return -1;
    }
    json_t *first = json_array_get(v, 0);
    if (json_is_integer(first)) return ids_of(v, &p[0], e) < 0 ? -1 : 1;
    size_t n = json_array_size(v);
    if (n > GW_MAX_CHOICES) {
        gw_error_set(e, 400, "too_many", "prompt", "%zu prompts, at most %d", n, GW_MAX_CHOICES);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(v, i);
        if (json_is_string(x) && json_is_string(first)) {
            p[i].text = json_string_value(x);
            p[i].len = json_string_length(x);
        } else if (json_is_array(x) && json_is_array(first)) {
            if (ids_of(x, &p[i], e) < 0) return -1;
        } else {
            bad_type(e, "prompt", "a string, an array of strings, of token ids, or of arrays of token ids");
            return -1;
        }
    }
    return (int)n;
}

/* messages -> one prompt through the chat template. 1, or -1 with e. */
static int chat_prompt(const gw *g, const json_t *body, oa_prompt *p, gw_error *e) {
    json_t *msgs = jget(body, "messages");
    if (!msgs) {
        gw_error_set(e, 400, "missing_field", "messages", "'messages' is required");
        return -1;
    }
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        gw_error_set(e, 400, json_is_array(msgs) ? "empty_prompt" : "wrong_type", "messages",
                     "'messages' must be a non-empty array of {\"role\", \"content\"}");
        return -1;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        int r = json_is_string(role) ? chat_role_of(json_string_value(role)) : -1;
        if (r < 0) {
            free(buf);
            gw_error_set(e, 400, "wrong_type", "messages", "messages[%zu].role must be system, user or assistant", i);
            return -1;
        }
        /* content: a string, or an array of {"type": "text", "text": ...} parts */
        char *text = NULL;
        size_t tn = 0, tcap = 0;
        if (json_is_string(content)) {
            chat_append_raw(json_string_value(content), json_string_length(content), &text, &tn, &tcap);
        } else if (json_is_array(content)) {
            for (size_t k = 0; k < json_array_size(content); k++) {
                json_t *part = json_array_get(content, k), *t = json_object_get(part, "text");
                if (!json_is_string(t) || !json_is_string(json_object_get(part, "type")) ||
                    strcmp(json_string_value(json_object_get(part, "type")), "text") != 0) {
                    free(text);
                    free(buf);
                    gw_error_set(e, 400, "unsupported_parameter", "messages",
                                 "messages[%zu].content: only text parts are supported", i);
                    return -1;
                }
                chat_append_raw(json_string_value(t), json_string_length(t), &text, &tn, &tcap);
            }
        } else if (!json_is_null(content) || r != CHAT_ASSISTANT) {
            free(buf);
            gw_error_set(e, 400, "wrong_type", "messages", "messages[%zu].content must be a string", i);
            return -1;
        }
        int rc = chat_append(&g->tmpl, (chat_role)r, text ? text : "", tn, &buf, &n, &cap);
        free(text);
        if (rc < 0) {
            free(buf);
            gw_error_set(e, 500, "internal", "", "out of memory");
            return -1;
        }
    }
    if (chat_append_raw(g->tmpl.generation, strlen(g->tmpl.generation), &buf, &n, &cap) < 0) {
        free(buf);
        gw_error_set(e, 500, "internal", "", "out of memory");
        return -1;
    }
    p->owned = buf;
    p->text = buf;
    p->len = n;
    return 1;
}

/* n, stream, stream_options, echo, logprobs (and chat's top_logprobs), suffix, best_of, model. */
static int map_openai_keys(const gw *g, const json_t *body, hcall *c, gw_error *e) {
    long long i;
    int b, rc;
    json_t *model = jget(body, "model");
    if (model && (!json_is_string(model) || strcmp(json_string_value(model), g->cfg->model_name) != 0)) {
        gw_error_set(e, 404, "model_not_found", "model", "the model '%s' does not exist; this server serves '%s'",
                     json_is_string(model) ? json_string_value(model) : "?", g->cfg->model_name);
        return -1;
    }
    c->n = 1;
    if ((rc = get_int(body, "n", &i, e)) < 0) return -1;
    if (rc && (i < 1 || i > GW_MAX_N)) {
        gw_error_set(e, 400, "out_of_range", "n", "'n' must be in [1, %d], got %lld", GW_MAX_N, i);
        return -1;
    }
    if (rc) c->n = (int)i;
    if (c->kind == CALL_COMPLETIONS) {
        if ((rc = get_int(body, "best_of", &i, e)) < 0) return -1;
        if (rc && i != c->n) {
            gw_error_set(e, 400, "unsupported_parameter", "best_of", "'best_of' other than n is not supported");
            return -1;
        }
        json_t *suffix = jget(body, "suffix");
        if (suffix && !(json_is_string(suffix) && json_string_length(suffix) == 0)) {
            gw_error_set(e, 400, "unsupported_parameter", "suffix", "'suffix' is not supported by gpt2d");
            return -1;
        }
    }
    if (get_bool(body, "stream", &c->stream, e) < 0) return -1;
    json_t *so = jget(body, "stream_options");
    if (so) {
        if (!json_is_object(so)) return bad_type(e, "stream_options", "an object");
        if (!c->stream) {
            gw_error_set(e, 400, "invalid_request", "stream_options", "'stream_options' needs 'stream': true");
            return -1;
        }
        const char *key;
        json_t *val;
        json_object_foreach(so, key, val) {
            if (strcmp(key, "include_usage") != 0) {
                gw_error_set(e, 400, "unknown_parameter", "stream_options", "stream_options.%s is not supported", key);
                return -1;
            }
        }
        if (get_bool(so, "include_usage", &c->include_usage, e) < 0) return -1;
    }
    json_t *user = jget(body, "user");
    if (user && !json_is_string(user)) return bad_type(e, "user", "a string");
    c->logprobs = -1;
    if (c->kind == CALL_COMPLETIONS) {
        if (get_bool(body, "echo", &c->echo, e) < 0) return -1;
        if ((rc = get_int(body, "logprobs", &i, e)) < 0) return -1;
        if (rc && (i < 0 || i > PROTO_MAX_TOP_LOGPROBS)) {
            gw_error_set(e, 400, "out_of_range", "logprobs", "'logprobs' must be in [0, %d]", PROTO_MAX_TOP_LOGPROBS);
            return -1;
        }
        if (rc) c->logprobs = (int)i;
    } else {
        b = 0;
        if (get_bool(body, "logprobs", &b, e) < 0) return -1;
        if ((rc = get_int(body, "top_logprobs", &i, e)) < 0) return -1;
        if (rc && (i < 0 || i > PROTO_MAX_TOP_LOGPROBS)) {
            gw_error_set(e, 400, "out_of_range", "top_logprobs", "'top_logprobs' must be in [0, %d]",
                         PROTO_MAX_TOP_LOGPROBS);
            return -1;
        }
        if (rc && !b) {
            gw_error_set(e, 400, "invalid_request", "top_logprobs", "'top_logprobs' needs 'logprobs': true");
            return -1;
        }
        if (b) c->logprobs = rc ? (int)i : 0;
    }
    return 0;
}

/* Finds "field 'NAME'" in a protocol message, for "param". */
static void param_from_message(const char *msg, char *param, size_t cap) {
    const char *p = strstr(msg, "field '");
    if (!p) return;
    p += 7;
    size_t n = strcspn(p, "'");
    snprintf(param, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
}

int oa_start(gw *g, hcall *c, gw_error *e) {
    json_error_t jerr;
    json_t *body = json_loadb(c->body ? c->body : "", c->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body) {
        gw_error_set(e, 400, "invalid_json", "", "the body is not valid JSON: %s (line %d, column %d)", jerr.text,
                     jerr.line, jerr.column);
        return -1;
    }
    oa_prompt prompts[GW_MAX_CHOICES];
    memset(prompts, 0, sizeof(prompts));
    int n_prompts = -1, rc = -1;
    oa_store *st = calloc(1, sizeof(*st));
    proto_msg m;
    proto_msg_init(&m, PROTO_T_SUBMIT);
    if (!st) {
        gw_error_set(e, 500, "internal", "", "out of memory");
        goto out;
    }
    if (!json_is_object(body)) {
        gw_error_set(e, 400, "invalid_json", "", "the body must be a JSON object");
        goto out;
    }
    if (check_keys(body, c->kind, e) < 0 || map_openai_keys(g, body, c, e) < 0 ||
        oa_map_sampling(body, &m, st, e) < 0)
        goto out;
    n_prompts = c->kind == CALL_CHAT ? chat_prompt(g, body, &prompts[0], e) : completion_prompts(body, prompts, e);
    if (n_prompts < 0) goto out;
    if (n_prompts * c->n > GW_MAX_CHOICES) {
        gw_error_set(e, 400, "too_many", "n", "%d prompts x n %d = %d choices, at most %d", n_prompts, c->n,
                     n_prompts * c->n, GW_MAX_CHOICES);
        goto out;
    }
    if (c->kind == CALL_CHAT)
        for (int s = 0; s < g->tmpl.n_stop && m.n_stop < PROTO_MAX_STOPS; s++)
            m.stop[m.n_stop++] = (proto_str){g->tmpl.stop[s], (uint32_t)strlen(g->tmpl.stop[s])};
    m.stream = c->stream || c->logprobs >= 0; /* token frames carry the logprobs */
    if (c->logprobs >= 0) {
        m.top_logprobs = c->logprobs;
        m.has |= PROTO_HAS(PF_TOP_LOGPROBS);
    }
    c->n_prompts = n_prompts;
    c->n_choices = n_prompts * c->n;
    c->ch = calloc((size_t)c->n_choices, sizeof(gw_choice));
    c->prompt_text = calloc((size_t)n_prompts, sizeof(char *));
    if (!c->ch || !c->prompt_text) {
        gw_error_set(e, 500, "internal", "", "out of memory");
        goto out;
    }
    for (int p = 0; p < n_prompts; p++) {
        if (c->echo && !prompts[p].text) {
            gw_error_set(e, 400, "unsupported_parameter", "echo", "'echo' needs text prompts (not token ids)");
            goto out;
        }
        if (prompts[p].text && c->echo && !(c->prompt_text[p] = strndup(prompts[p].text, prompts[p].len))) {
            gw_error_set(e, 500, "internal", "", "out of memory");
            goto out;
        }
    }
    /* one submit per choice: prompt p, seed + i (documented in docs/HTTP.md) */
    uint64_t seed = m.seed;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (int k = 0; k < c->n_choices && rc != -2; k++) {
        oa_prompt *p = &prompts[k / c->n];
        c->ch[k].prompt = k / c->n;
        m.has &= ~(PROTO_HAS(PF_PROMPT) | PROTO_HAS(PF_PROMPT_IDS));
        if (p->text) {
            m.prompt = (proto_str){p->len ? p->text : NULL, (uint32_t)(p->len > UINT32_MAX ? UINT32_MAX : p->len)};
            m.has |= PROTO_HAS(PF_PROMPT);
        } else {
            m.prompt_ids = p->ids;
            m.n_prompt_ids = p->n_ids;
            m.has |= PROTO_HAS(PF_PROMPT_IDS);
        }
        m.seed = seed + (uint64_t)(k % c->n);
        m.id = (proto_cid){0, 1, {NULL, 0}};
        char err[512];
        msgpack_sbuffer_clear(&sb);
        if (k == 0 && proto_encode(&m, &sb, err, sizeof(err)) < 0) { /* the protocol's own limits */
            char param[64] = "";
            param_from_message(err, param, sizeof(param));
            gw_error_set(e, 400, strstr(err, "out of range") || strstr(err, "must be") ? "out_of_range" : "invalid_request",
                         param, "%s", err);
            rc = -2;
        }
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc == -2) {
        rc = -1;
        goto out;
    }
    c->n_open = c->n_choices;
    for (int k = 0; k < c->n_choices; k++) {
        oa_prompt *p = &prompts[k / c->n];
        m.has &= ~(PROTO_HAS(PF_PROMPT) | PROTO_HAS(PF_PROMPT_IDS));
        if (p->text) {
            m.prompt = (proto_str){p->len ? p->text : NULL, (uint32_t)p->len};
            m.has |= PROTO_HAS(PF_PROMPT);
        } else {
            m.prompt_ids = p->ids;
            m.n_prompt_ids = p->n_ids;
            m.has |= PROTO_HAS(PF_PROMPT_IDS);
        }
        m.seed = seed + (uint64_t)(k % c->n);
        if (link_submit(g, c, k, &m) < 0) {
            *e = c->ch[k].err;
            c->ch[k].ended = 1;
            c->n_open--;
            for (int j = k + 1; j < c->n_choices; j++) {
                c->ch[j].ended = 1;
                c->n_open--;
            }
            link_forget(g, c);
            goto out;
        }
    }
    c->submitted = 1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c->created = (long long)ts.tv_sec;
    snprintf(c->cid, sizeof(c->cid), "%s-%llx%llx", c->kind == CALL_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)ts.tv_nsec, (unsigned long long)g->next_id);
    rc = 0;
out:
    for (int p = 0; p < GW_MAX_CHOICES; p++) {
        free(prompts[p].ids);
        free(prompts[p].owned);
    }
    if (st && st->has_js) proto_json_submit_free(&st->js);
    free(st);
    json_decref(body);
    return rc;
}

/* ============================================================================================== */
/* text and logprobs as JSON                                                                       */
/* ============================================================================================== */

/* s (len bytes) as a JSON string, invalid UTF-8 replaced by U+FFFD. */
static json_t *json_text(const char *s, size_t len) {
    if (proto_utf8_valid(s, len)) return json_stringn(s ? s : "", len);
    char *buf = malloc(3 * len + 1);
    if (!buf) return json_string("");
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t k = 1;
        unsigned char b = (unsigned char)s[i];
        if (b >= 0xc0) k = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
        if (i + k <= len && proto_utf8_valid(s + i, k)) {
            memcpy(buf + n, s + i, k);
            n += k;
            i += k;
        } else {
            memcpy(buf + n, "\xef\xbf\xbd", 3);
            n += 3;
            i += 1;
        }
    }
    json_t *j = json_stringn(buf, n);
    free(buf);
    return j;
}

/* A token's bytes as OpenAI writes a token: the text if it is UTF-8, else "bytes:\xNN...". */
static json_t *json_token(const char *s, size_t len) {
    if (proto_utf8_valid(s, len)) return json_stringn(s ? s : "", len);
    char buf[4 * 256 + 8];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "bytes:");
    for (size_t i = 0; i < len && n + 4 < sizeof(buf); i++) n += (size_t)snprintf(buf + n, 5, "\\x%02x", (unsigned char)s[i]);
    return json_stringn(buf, n);
}

static json_t *json_bytes_array(const char *s, size_t len) {
    json_t *a = json_array();
    for (size_t i = 0; i < len; i++) json_array_append_new(a, json_integer((unsigned char)s[i]));
    return a;
}

/* Completions logprobs for tokens [from, to) of choice ch (offset: bytes before the choice's text). */
static json_t *logprobs_completion(const gw_choice *ch, int from, int to, size_t offset) {
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    for (int t = from; t < to; t++) {
        const gw_tokinfo *ti = &ch->toks[t];
        json_array_append_new(tokens, json_token(ti->bytes[0], ti->len[0]));
        json_array_append_new(lps, isfinite(ti->lp[0]) ? json_real(ti->lp[0]) : json_real(-9999.0));
        json_t *top = json_object();
        for (int i = 1; i < ti->n; i++) {
            json_t *key = json_token(ti->bytes[i], ti->len[i]);
            json_object_set_new(top, json_string_value(key), json_real(isfinite(ti->lp[i]) ? ti->lp[i] : -9999.0));
            json_decref(key);
        }
        json_array_append_new(tops, top);
        json_array_append_new(offs, json_integer((json_int_t)(offset + ti->text_offset)));
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

/* Chat logprobs {"content": [...]} for tokens [from, to). */
static json_t *logprobs_chat(const gw_choice *ch, int from, int to) {
    json_t *content = json_array();
    for (int t = from; t < to; t++) {
        const gw_tokinfo *ti = &ch->toks[t];
        json_t *top = json_array();
        for (int i = 1; i < ti->n; i++)
            json_array_append_new(top, json_pack("{s:o,s:f,s:o}", "token", json_token(ti->bytes[i], ti->len[i]),
                                                 "logprob", isfinite(ti->lp[i]) ? ti->lp[i] : -9999.0, "bytes",
                                                 json_bytes_array(ti->bytes[i], ti->len[i])));
        json_array_append_new(content, json_pack("{s:o,s:f,s:o,s:o}", "token", json_token(ti->bytes[0], ti->len[0]),
                                                 "logprob", isfinite(ti->lp[0]) ? ti->lp[0] : -9999.0, "bytes",
                                                 json_bytes_array(ti->bytes[0], ti->len[0]), "top_logprobs", top));
    }
    return json_pack("{s:o}", "content", content);
}

static const char *finish_reason(proto_finish f) {
    switch (f) {
    case PROTO_FINISH_LENGTH: return "length";
    case PROTO_FINISH_STOP:
    case PROTO_FINISH_EOS: return "stop";
    case PROTO_FINISH_CANCELLED: return "cancelled";
    default: return "error";
    }
}

/* ============================================================================================== */
/* frames                                                                                          */
/* ============================================================================================== */

static json_t *chunk_head(const gw *g, const hcall *c) {
    return json_pack("{s:s,s:s,s:I,s:s}", "id", c->cid, "object",
                     c->kind == CALL_CHAT ? "chat.completion.chunk" : "text_completion", "created",
                     (json_int_t)c->created, "model", g->cfg->model_name);
}

/* The broker's timings of a finished choice (an extension, as llama.cpp's server has one): ms from
 * the broker's receipt of the submit to a slot, the first token and the end. */
static json_t *timings_json(const gw_choice *ch) {
    return json_pack("{s:f,s:f,s:f}", "queue_ms", ch->queue_ms, "ttft_ms", ch->ttft_ms, "total_ms", ch->total_ms);
}

/* One streamed chunk of choice k: text piece (may be NULL), logprobs of tokens [from, to), finish. */
static void stream_chunk(gw *g, hcall *c, int k, const char *text, size_t len, int from, int to, const char *finish) {
    gw_choice *ch = &c->ch[k];
    json_t *choice;
    json_t *lp = json_null();
    if (c->logprobs >= 0 && to > from)
        lp = c->kind == CALL_CHAT ? logprobs_chat(ch, from, to) : logprobs_completion(ch, from, to, 0);
    if (c->kind == CALL_CHAT) {
        json_t *delta = json_object();
        if (!ch->role_sent) {
            json_object_set_new(delta, "role", json_string("assistant"));
            if (!text) json_object_set_new(delta, "content", json_string(""));
            ch->role_sent = 1;
        }
        if (text) json_object_set_new(delta, "content", json_text(text, len));
        choice = json_pack("{s:i,s:o,s:o,s:o}", "index", k, "delta", delta, "logprobs", lp, "finish_reason",
                           finish ? json_string(finish) : json_null());
    } else {
        choice = json_pack("{s:i,s:o,s:o,s:o}", "index", k, "text", text ? json_text(text, len) : json_string(""),
                           "logprobs", lp, "finish_reason", finish ? json_string(finish) : json_null());
    }
    if (finish) json_object_set_new(choice, "timings", timings_json(ch));
    json_t *chunk = chunk_head(g, c);
    json_object_set_new(chunk, "choices", json_pack("[o]", choice));
    if (sse_event(g, c, chunk) < 0) {
        proto_log(&g->log, PROTO_LOG_INFO, "%s: client %d KiB behind: stream cancelled", c->cid,
                  g->stream_buffer_bytes >> 10);
        link_forget(g, c);
        c->gone = 1;
    }
}

static int append_text(gw_choice *ch, const char *s, size_t n) {
    if (ch->text_len + n + 1 > ch->text_cap) {
        size_t cap = ch->text_cap ? ch->text_cap * 2 : 256;
        while (cap < ch->text_len + n + 1) cap *= 2;
        char *p = realloc(ch->text, cap);
        if (!p) return -1;
        ch->text = p;
        ch->text_cap = cap;
    }
    if (n) memcpy(ch->text + ch->text_len, s, n);
    ch->text_len += n;
    ch->text[ch->text_len] = 0;
    return 0;
}

static void record_logprobs(gw_choice *ch, const proto_msg *m) {
    if (ch->n_toks == ch->cap_toks) {
        int cap = ch->cap_toks ? 2 * ch->cap_toks : 32;
        gw_tokinfo *p = realloc(ch->toks, (size_t)cap * sizeof(*p));
        if (!p) return;
        ch->toks = p;
        ch->cap_toks = cap;
    }
    gw_tokinfo *ti = &ch->toks[ch->n_toks++];
    memset(ti, 0, sizeof(*ti));
    ti->text_offset = ch->text_sent;
    for (uint32_t i = 0; i < m->n_top && i < 1 + PROTO_MAX_TOP_LOGPROBS; i++) {
        ti->id[i] = m->top[i].id;
        ti->lp[i] = m->top[i].logprob;
        ti->len[i] = m->top[i].bytes.len;
        ti->bytes[i] = strndup(m->top[i].bytes.ptr ? m->top[i].bytes.ptr : "", m->top[i].bytes.len);
        ti->n++;
    }
    if (ti->n == 0) { /* no top entries (should not happen): the token alone, logprob unknown */
        ti->id[0] = m->token;
        ti->lp[0] = m->logprob;
        ti->bytes[0] = strdup("");
        ti->n = 1;
    }
}

void oa_on_token(gw *g, hcall *c, int k, const proto_msg *m) {
    gw_choice *ch = &c->ch[k];
    int first = !ch->started;
    ch->started = 1;
    if (c->logprobs >= 0) record_logprobs(ch, m);
    if (!c->stream) {
        ch->text_sent += m->text.len;
        if (first) routes_wake(g, c);
        return;
    }
    if (first && c->echo && c->prompt_text[ch->prompt])
        stream_chunk(g, c, k, c->prompt_text[ch->prompt], strlen(c->prompt_text[ch->prompt]), 0, 0, NULL);
    if (m->text.len > 0 || c->logprobs >= 0 || (first && c->kind == CALL_CHAT))
        stream_chunk(g, c, k, m->text.ptr, m->text.len, ch->n_toks - (c->logprobs >= 0), ch->n_toks, NULL);
    ch->text_sent += m->text.len;
    routes_wake(g, c);
}

/* The stream's tail when every choice ended: usage (if asked), then [DONE]. */
static void stream_tail(gw *g, hcall *c) {
    if (c->include_usage) {
        int prompt = 0, completion = 0;
        for (int k = 0; k < c->n_choices; k++) {
            if (k % c->n == 0) prompt += c->ch[k].prompt_tokens;
            completion += c->ch[k].completion_tokens;
        }
        json_t *chunk = chunk_head(g, c);
        json_object_set_new(chunk, "choices", json_array());
        json_object_set_new(chunk, "usage", json_pack("{s:i,s:i,s:i}", "prompt_tokens", prompt, "completion_tokens",
                                                      completion, "total_tokens", prompt + completion));
        sse_event(g, c, chunk);
    }
    sse_event(g, c, NULL);
    c->finished = 1;
}

void oa_on_end(gw *g, hcall *c, int k, const proto_msg *m) {
    gw_choice *ch = &c->ch[k];
    int first = !ch->started;
    ch->started = 1;
    if (m->type == PROTO_T_ERROR || m->finish == PROTO_FINISH_ERROR) {
        char reason[40] = "internal";
        if (m->reason.len) snprintf(reason, sizeof(reason), "%.*s", (int)m->reason.len, m->reason.ptr);
        char param[64] = "";
        if (m->field.len) snprintf(param, sizeof(param), "%.*s", (int)m->field.len, m->field.ptr);
        if (strcmp(param, "prompt_ids") == 0) snprintf(param, sizeof(param), "prompt"); /* OpenAI's name */
        int status = m->type == PROTO_T_ERROR ? m->code : 500;
        if (status == PROTO_CODE_UNSUPPORTED_VERSION || status == PROTO_CODE_DUPLICATE_ID) status = 500;
        gw_error_set(&ch->err, status, reason, param, "%.*s", (int)m->message.len,
                     m->message.ptr ? m->message.ptr : "the request failed");
        if (c->stream && c->streaming) { /* the stream is open: an error event, then the end */
            json_t *err = json_pack("{s:{s:s,s:s,s:o,s:s}}", "error", "message", ch->err.message, "type",
                                    gw_error_type(ch->err.status), "param",
                                    ch->err.param[0] ? json_string(ch->err.param) : json_null(), "code", ch->err.code);
            sse_event(g, c, err);
            link_forget(g, c);
            sse_event(g, c, NULL);
            c->finished = 1;
        } else {
            link_forget(g, c); /* the answer is this error: the other choices are of no use */
        }
        routes_wake(g, c);
        return;
    }
    ch->finish = m->finish;
    ch->prompt_tokens = m->prompt_tokens;
    ch->completion_tokens = m->completion_tokens;
    ch->queue_ms = m->queue_ms;
    ch->ttft_ms = m->ttft_ms;
    ch->total_ms = m->total_ms;
    if (!c->stream) {
        ch->text_len = 0;
        append_text(ch, m->text.ptr, m->text.len);
    } else {
        if (first && c->echo && c->prompt_text[ch->prompt])
            stream_chunk(g, c, k, c->prompt_text[ch->prompt], strlen(c->prompt_text[ch->prompt]), 0, 0, NULL);
        stream_chunk(g, c, k, NULL, 0, 0, 0, finish_reason(m->finish));
        if (c->n_open == 0 && !c->finished) stream_tail(g, c);
    }
    routes_wake(g, c);
}

const gw_error *oa_first_error(const hcall *c) {
    for (int k = 0; k < c->n_choices; k++)
        if (c->ch[k].err.status) return &c->ch[k].err;
    return NULL;
}

char *oa_render_final(gw *g, hcall *c) {
    json_t *choices = json_array();
    int prompt = 0, completion = 0;
    for (int k = 0; k < c->n_choices; k++) {
        gw_choice *ch = &c->ch[k];
        if (k % c->n == 0) prompt += ch->prompt_tokens;
        completion += ch->completion_tokens;
        const char *echo = c->echo ? c->prompt_text[ch->prompt] : NULL;
        size_t echo_len = echo ? strlen(echo) : 0;
        json_t *lp = c->logprobs >= 0 ? (c->kind == CALL_CHAT ? logprobs_chat(ch, 0, ch->n_toks)
                                                              : logprobs_completion(ch, 0, ch->n_toks, echo_len))
                                      : json_null();
        json_t *choice;
        if (c->kind == CALL_CHAT) {
            choice = json_pack("{s:i,s:{s:s,s:o},s:o,s:s}", "index", k, "message", "role", "assistant", "content",
                               json_text(ch->text, ch->text_len), "logprobs", lp, "finish_reason",
                               finish_reason(ch->finish));
        } else {
            char *full = NULL;
            size_t n = 0, cap = 0;
            if (echo) chat_append_raw(echo, echo_len, &full, &n, &cap);
            chat_append_raw(ch->text ? ch->text : "", ch->text_len, &full, &n, &cap);
            choice = json_pack("{s:i,s:o,s:o,s:s}", "index", k, "text", json_text(full ? full : "", full ? n : 0),
                               "logprobs", lp, "finish_reason", finish_reason(ch->finish));
            free(full);
        }
        json_object_set_new(choice, "timings", timings_json(ch));
        json_array_append_new(choices, choice);
    }
    json_t *r = json_pack("{s:s,s:s,s:I,s:s,s:o,s:{s:i,s:i,s:i}}", "id", c->cid, "object",
                          c->kind == CALL_CHAT ? "chat.completion" : "text_completion", "created",
                          (json_int_t)c->created, "model", g->cfg->model_name, "choices", choices, "usage",
                          "prompt_tokens", prompt, "completion_tokens", completion, "total_tokens",
                          prompt + completion);
    char *s = r ? json_dumps(r, JSON_COMPACT) : NULL;
    json_decref(r);
    return s;
}
