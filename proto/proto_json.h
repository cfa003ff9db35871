/* proto_json.h — the one JSON -> submit mapper, shared by `gpt2c batch`, `gpt2-tool batch` and the
 * HTTP gateway, so that a JSON request means the same thing everywhere and is exactly as strict as
 * the wire protocol.
 *
 * Contract:
 * - Input: one JSON object whose keys are submit fields with their wire names and JSON types
 *   (proto/PROTOCOL.md §3): "id" (string or non-negative integer), "prompt" (string) or "prompt_ids"
 *   (array of integers), "max_tokens", "temperature", "top_k", "top_p", "min_p",
 *   "repetition_penalty", "presence_penalty", "frequency_penalty", "seed", "logit_bias"
 *   ([[id, bias], ...]), "stop" (an array of strings; a single string is accepted as a one-element
 *   array), "stream", "logprobs", "ignore_eos", "allow_special", "priority" ("interactive" or "bulk").
 * - How: the object is converted to its msgpack form (integers stay integers, never through a
 *   double, so a seed >= 2^53 is exact; JSON reals become float64) and decoded by proto_decode(),
 *   so every type and range check, limit and reason is the protocol's own: max_tokens is bounded
 *   by PROTO_MAX_MAX_TOKENS before anything is allocated for it.
 * - Unknown keys are errors (reason unknown_field, field = the key), except the keys listed in
 *   `extra` (a NULL-terminated list, may be NULL): those are skipped here and left to the caller,
 *   who reads them from the same json_t (the gateway's OpenAI fields, gpt2-tool's load shaping).
 * - Defaults: fields absent from the object take their value from `defaults` (a submit made with
 *   proto_msg_init(), e.g. filled from command-line flags; NULL: the protocol's defaults). Its id is
 *   the request's id when the object has none (NULL defaults: "id" is then required). Its prompt and
 *   prompt_ids are never used. The defaults must themselves be valid (proto_encode accepts them).
 * - Errors: -1 with *e filled: reason (a proto_reason; PROTO_R_MALFORMED for JSON syntax or a line
 *   that is not an object), field (the key at fault, "" when none) and a one-line message naming it.
 * - JSON integers are limited to what jansson holds (a signed 64-bit integer): a seed above 2^63-1
 *   is a JSON syntax error ("too big integer"). JSON has no infinities: a logit_bias entry cannot
 *   ban a token here (use a large negative bias such as -100).
 * - Result: s->msg is a decoded PROTO_T_SUBMIT; its strings and arrays point into s's own buffers
 *   (not into the json_t), so the json_t may be released at once. The struct may be copied or moved
 *   (it holds only heap pointers); release it exactly once with proto_json_submit_free(). The caller
 *   may change s->msg's scalar fields (e.g. id, stream) before sending it. */
#ifndef GPT2D_PROTO_JSON_H
#define GPT2D_PROTO_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "proto.h"

#define PROTO_JSON_FIELD_BYTES 65 /* a key name, cut to 64 bytes */

typedef struct {
    proto_reason reason;                /* why (PROTO_R_MALFORMED for JSON syntax) */
    char field[PROTO_JSON_FIELD_BYTES]; /* the key at fault, "" if none */
    char message[320];                  /* one line, names the field */
} proto_json_error;

typedef struct {
    proto_msg msg;       /* the decoded submit */
    msgpack_sbuffer buf; /* its msgpack form, which msg's strings point into */
} proto_json_submit;

/* Maps obj (must be a JSON object). 0, or -1 with *e (s needs no release then). */
int proto_json_submit_from(proto_json_submit *s, const json_t *obj, const proto_msg *defaults,
                           const char *const *extra, proto_json_error *e);

/* Parses len bytes of JSON text (one object; duplicate keys refused) and maps it. 0, or -1 with *e.
 * If obj is not NULL it receives the parsed object (a new reference, also on a mapping failure when
 * the text was an object; else NULL) for the caller's extra keys. */
int proto_json_submit_parse(proto_json_submit *s, const char *text, size_t len, const proto_msg *defaults,
                            const char *const *extra, json_t **obj, proto_json_error *e);

void proto_json_submit_free(proto_json_submit *s);

#endif
