/* proto.c — the message table and the table-driven msgpack encoder and strict decoder.
 *
 * Each field is described once (key, kind, where it lives in proto_msg, its range); each message
 * type lists its fields with a presence rule. The encoder packs exactly those fields; the decoder
 * accepts exactly those keys, converts each value with a type check, then applies the same range
 * check the encoder applies, so what one side sends the other side accepts. */
#include "proto.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto_scan.h"

/* ============================================================================================== */
/* field descriptions                                                                              */
/* ============================================================================================== */

typedef enum {
    K_U64,      /* uint64_t; positive integer */
    K_I32,      /* int32_t in [lo, hi] */
    K_F32,      /* float, finite, in [lo, hi] (lo exclusive with F_LO_OPEN); integers accepted */
    K_F64,      /* double, finite, in [lo, hi] */
    K_BOOL,     /* uint8_t */
    K_STR,      /* proto_str, UTF-8, length in [lo, hi] */
    K_TEXT,     /* proto_str, raw bytes (str or bin), length <= hi */
    K_CID,      /* proto_cid: u64 or 1..PROTO_MAX_ID_BYTES UTF-8 */
    K_IDS,      /* const int32_t * at off, uint32_t count at off2; <= hi ids in [0, PROTO_MAX_TOKEN_ID] */
    K_STOPS,    /* proto_str[PROTO_MAX_STOPS] at off, count at off2 */
    K_BIAS,     /* const proto_bias * at off, count at off2: [[id, bias], ...] */
    K_FINISH,   /* proto_finish as its name */
    K_PRIORITY, /* proto_priority as its name */
    K_CODE,     /* int32_t error code: any known proto_code */
    K_MAP,      /* nested map: sub-fields relative to base + off */
    K_MAPARRAY, /* array of maps: elements of sub_size bytes, pointer at off, count at off2 */
    K_TOP,      /* const proto_top * at off, count at off2 (<= hi): [[id, logprob, bytes], ...] */
} pkind;

enum { F_LO_OPEN = 1 };

typedef struct pfield {
    const char *key;
    uint8_t kind;
    uint8_t flags;
    uint16_t off, off2;
    double lo, hi;
    const struct pfield *sub; /* K_MAP, K_MAPARRAY */
    uint8_t n_sub;
    uint16_t sub_size;
} pfield;

#define M(f) offsetof(proto_msg, f)
#define W(f) offsetof(proto_worker_info, f)
#define P(f) offsetof(proto_pct, f)
#define I32MAX 2147483647.0

static const pfield usage_fields[] = {
    {"prompt_tokens", K_I32, 0, M(prompt_tokens), 0, 0, I32MAX, NULL, 0, 0},
    {"completion_tokens", K_I32, 0, M(completion_tokens), 0, 0, I32MAX, NULL, 0, 0},
    {"cached_tokens", K_I32, 0, M(cached_tokens), 0, 0, I32MAX, NULL, 0, 0},
};
#define KV(f) offsetof(proto_kv_info, f)
static const pfield kv_fields[] = {
    {"pages", K_I32, 0, KV(pages), 0, 0, I32MAX, NULL, 0, 0},
    {"used", K_I32, 0, KV(used), 0, 0, I32MAX, NULL, 0, 0},
    {"cached", K_I32, 0, KV(cached), 0, 0, I32MAX, NULL, 0, 0},
    {"lookup_tokens", K_U64, 0, KV(lookup_tokens), 0, 0, 0, NULL, 0, 0},
    {"hit_tokens", K_U64, 0, KV(hit_tokens), 0, 0, 0, NULL, 0, 0},
};
static const pfield timing_fields[] = {
    {"queue_ms", K_F64, 0, M(queue_ms), 0, 0, 1e12, NULL, 0, 0},
    {"ttft_ms", K_F64, 0, M(ttft_ms), 0, 0, 1e12, NULL, 0, 0},
    {"total_ms", K_F64, 0, M(total_ms), 0, 0, 1e12, NULL, 0, 0},
};
static const pfield pct_fields[] = {
    {"p50", K_F64, 0, P(p50), 0, 0, 1e12, NULL, 0, 0},
    {"p90", K_F64, 0, P(p90), 0, 0, 1e12, NULL, 0, 0},
    {"p99", K_F64, 0, P(p99), 0, 0, 1e12, NULL, 0, 0},
};
static const pfield worker_fields[] = {
    {"name", K_STR, 0, W(name), 0, 0, PROTO_MAX_NAME_BYTES, NULL, 0, 0},
    {"pid", K_I32, 0, W(pid), 0, 0, I32MAX, NULL, 0, 0},
    {"slots", K_I32, 0, W(slots), 0, 0, PROTO_MAX_SLOTS, NULL, 0, 0},
    {"credit", K_I32, 0, W(credit), 0, 0, PROTO_MAX_SLOTS, NULL, 0, 0},
    {"running", K_I32, 0, W(running), 0, 0, I32MAX, NULL, 0, 0},
    {"local", K_BOOL, 0, W(local), 0, 0, 0, NULL, 0, 0},
    {"tokens", K_U64, 0, W(tokens), 0, 0, 0, NULL, 0, 0},
    {"kv_pages", K_I32, 0, W(kv.pages), 0, 0, I32MAX, NULL, 0, 0},
    {"kv_used", K_I32, 0, W(kv.used), 0, 0, I32MAX, NULL, 0, 0},
    {"kv_cached", K_I32, 0, W(kv.cached), 0, 0, I32MAX, NULL, 0, 0},
    {"prefix_lookup_tokens", K_U64, 0, W(kv.lookup_tokens), 0, 0, 0, NULL, 0, 0},
    {"prefix_hit_tokens", K_U64, 0, W(kv.hit_tokens), 0, 0, 0, NULL, 0, 0},
};
#define RC(f) offsetof(proto_recent, f)
static const pfield recent_fields[] = {
    {"window_s", K_F64, 0, RC(window_s), 0, 0, 1e12, NULL, 0, 0},
    {"requests", K_U64, 0, RC(requests), 0, 0, 0, NULL, 0, 0},
    {"tokens", K_U64, 0, RC(tokens), 0, 0, 0, NULL, 0, 0},
    {"errors", K_U64, 0, RC(errors), 0, 0, 0, NULL, 0, 0},
};
#define H(i) (offsetof(proto_hist, n) + (i) * sizeof(uint64_t))
static const pfield hist_fields[PROTO_HIST_BUCKETS + 1] = { /* keys: PROTO_HIST_BOUNDS_MS, "inf", "sum" */
    {"1", K_U64, 0, H(0), 0, 0, 0, NULL, 0, 0},     {"2", K_U64, 0, H(1), 0, 0, 0, NULL, 0, 0},
    {"5", K_U64, 0, H(2), 0, 0, 0, NULL, 0, 0},     {"10", K_U64, 0, H(3), 0, 0, 0, NULL, 0, 0},
    {"20", K_U64, 0, H(4), 0, 0, 0, NULL, 0, 0},    {"50", K_U64, 0, H(5), 0, 0, 0, NULL, 0, 0},
    {"100", K_U64, 0, H(6), 0, 0, 0, NULL, 0, 0},   {"200", K_U64, 0, H(7), 0, 0, 0, NULL, 0, 0},
    {"500", K_U64, 0, H(8), 0, 0, 0, NULL, 0, 0},   {"1000", K_U64, 0, H(9), 0, 0, 0, NULL, 0, 0},
    {"2000", K_U64, 0, H(10), 0, 0, 0, NULL, 0, 0}, {"5000", K_U64, 0, H(11), 0, 0, 0, NULL, 0, 0},
    {"10000", K_U64, 0, H(12), 0, 0, 0, NULL, 0, 0}, {"30000", K_U64, 0, H(13), 0, 0, 0, NULL, 0, 0},
    {"60000", K_U64, 0, H(14), 0, 0, 0, NULL, 0, 0}, {"inf", K_U64, 0, H(15), 0, 0, 0, NULL, 0, 0},
    {"sum", K_F64, 0, offsetof(proto_hist, sum_ms), 0, 0, 1e18, NULL, 0, 0},
};
#define TOT(f) offsetof(proto_totals, f)
static const pfield totals_fields[] = {
    {"prompt_tokens", K_U64, 0, TOT(prompt_tokens), 0, 0, 0, NULL, 0, 0},
    {"replays", K_U64, 0, TOT(replays), 0, 0, 0, NULL, 0, 0},
    {"worker_restarts", K_U64, 0, TOT(worker_restarts), 0, 0, 0, NULL, 0, 0},
    {"finish_length", K_U64, 0, TOT(finish[PROTO_FINISH_LENGTH]), 0, 0, 0, NULL, 0, 0},
    {"finish_stop", K_U64, 0, TOT(finish[PROTO_FINISH_STOP]), 0, 0, 0, NULL, 0, 0},
    {"finish_eos", K_U64, 0, TOT(finish[PROTO_FINISH_EOS]), 0, 0, 0, NULL, 0, 0},
    {"finish_cancelled", K_U64, 0, TOT(finish[PROTO_FINISH_CANCELLED]), 0, 0, 0, NULL, 0, 0},
    {"finish_error", K_U64, 0, TOT(finish[PROTO_FINISH_ERROR]), 0, 0, 0, NULL, 0, 0},
};
#define RCN(r) (offsetof(proto_reason_counts, n) + (r) * sizeof(uint64_t))
#define RCF(name, r) {name, K_U64, 0, RCN(r), 0, 0, 0, NULL, 0, 0}
static const pfield reason_count_fields[] = { /* keys: reason names (as the reasons table below) */
    RCF("malformed", PROTO_R_MALFORMED), RCF("not_map", PROTO_R_NOT_MAP),
    RCF("too_large", PROTO_R_TOO_LARGE), RCF("unknown_type", PROTO_R_UNKNOWN_TYPE),
    RCF("bad_version", PROTO_R_BAD_VERSION), RCF("not_client_message", PROTO_R_NOT_CLIENT_MESSAGE),
    RCF("unknown_field", PROTO_R_UNKNOWN_FIELD), RCF("duplicate_field", PROTO_R_DUPLICATE_FIELD),
    RCF("missing_field", PROTO_R_MISSING_FIELD), RCF("wrong_type", PROTO_R_WRONG_TYPE),
    RCF("not_finite", PROTO_R_NOT_FINITE), RCF("out_of_range", PROTO_R_OUT_OF_RANGE),
    RCF("too_long", PROTO_R_TOO_LONG), RCF("empty", PROTO_R_EMPTY), RCF("too_many", PROTO_R_TOO_MANY),
    RCF("invalid_utf8", PROTO_R_INVALID_UTF8), RCF("bad_id", PROTO_R_BAD_ID),
    RCF("prompt_choice", PROTO_R_PROMPT_CHOICE), RCF("empty_prompt", PROTO_R_EMPTY_PROMPT),
    RCF("prompt_too_long", PROTO_R_PROMPT_TOO_LONG), RCF("token_out_of_range", PROTO_R_TOKEN_OUT_OF_RANGE),
    RCF("max_tokens_over_context", PROTO_R_MAX_TOKENS_OVER_CONTEXT), RCF("duplicate_id", PROTO_R_DUPLICATE_ID),
    RCF("queue_full", PROTO_R_QUEUE_FULL), RCF("client_limit", PROTO_R_CLIENT_LIMIT),
    RCF("queue_timeout", PROTO_R_QUEUE_TIMEOUT), RCF("request_timeout", PROTO_R_REQUEST_TIMEOUT),
    RCF("worker_lost", PROTO_R_WORKER_LOST), RCF("no_worker", PROTO_R_NO_WORKER),
    RCF("shutting_down", PROTO_R_SHUTTING_DOWN), RCF("internal", PROTO_R_INTERNAL),
    RCF("invalid_request", PROTO_R_INVALID_REQUEST), RCF("model_load_failed", PROTO_R_MODEL_LOAD_FAILED),
    RCF("worker_start_failed", PROTO_R_WORKER_START_FAILED), RCF("over_credit", PROTO_R_OVER_CREDIT),
};
#define NSUB(a) (uint8_t)(sizeof(a) / sizeof((a)[0]))
_Static_assert(NSUB(reason_count_fields) == PROTO_R_COUNT - 1, "one error_reasons key per reason");

/* Indexed by proto_field_id. */
static const pfield fields[PF_COUNT] = {
    [PF_ID] = {"id", K_CID, 0, M(id), 0, 0, 0, NULL, 0, 0},
    [PF_RID] = {"rid", K_U64, 0, M(rid), 0, 0, 0, NULL, 0, 0},
    [PF_PROMPT] = {"prompt", K_STR, 0, M(prompt), 0, 0, PROTO_MAX_PROMPT_BYTES, NULL, 0, 0},
    [PF_PROMPT_IDS] = {"prompt_ids", K_IDS, 0, M(prompt_ids), M(n_prompt_ids), 0, PROTO_MAX_IDS, NULL, 0, 0},
    [PF_RESUME_IDS] = {"resume_ids", K_IDS, 0, M(resume_ids), M(n_resume_ids), 0, PROTO_MAX_IDS, NULL, 0, 0},
    [PF_MAX_TOKENS] = {"max_tokens", K_I32, 0, M(max_tokens), 0, 1, PROTO_MAX_MAX_TOKENS, NULL, 0, 0},
    [PF_TEMPERATURE] = {"temperature", K_F32, 0, M(temperature), 0, 0, 100, NULL, 0, 0},
    [PF_TOP_K] = {"top_k", K_I32, 0, M(top_k), 0, 0, PROTO_MAX_TOKEN_ID + 1, NULL, 0, 0},
    [PF_TOP_P] = {"top_p", K_F32, F_LO_OPEN, M(top_p), 0, 0, 1, NULL, 0, 0},
    [PF_MIN_P] = {"min_p", K_F32, 0, M(min_p), 0, 0, 1, NULL, 0, 0},
    [PF_REPETITION_PENALTY] = {"repetition_penalty", K_F32, F_LO_OPEN, M(repetition_penalty), 0, 0, 100, NULL, 0, 0},
    /* [-2, 2]: OpenAI's range, and the sampler's (a wider one would pass here and fail there) */
    [PF_PRESENCE_PENALTY] = {"presence_penalty", K_F32, 0, M(presence_penalty), 0, -2, 2, NULL, 0, 0},
    [PF_FREQUENCY_PENALTY] = {"frequency_penalty", K_F32, 0, M(frequency_penalty), 0, -2, 2, NULL, 0, 0},
    [PF_SEED] = {"seed", K_U64, 0, M(seed), 0, 0, 0, NULL, 0, 0},
    [PF_LOGIT_BIAS] = {"logit_bias", K_BIAS, 0, M(logit_bias), M(n_logit_bias), -100, 100, NULL, 0, 0},
    [PF_STOP] = {"stop", K_STOPS, 0, M(stop), M(n_stop), 1, PROTO_MAX_STOP_BYTES, NULL, 0, 0},
    [PF_STREAM] = {"stream", K_BOOL, 0, M(stream), 0, 0, 0, NULL, 0, 0},
    [PF_LOGPROBS] = {"logprobs", K_BOOL, 0, M(logprobs), 0, 0, 0, NULL, 0, 0},
    [PF_IGNORE_EOS] = {"ignore_eos", K_BOOL, 0, M(ignore_eos), 0, 0, 0, NULL, 0, 0},
    [PF_ALLOW_SPECIAL] = {"allow_special", K_BOOL, 0, M(allow_special), 0, 0, 0, NULL, 0, 0},
    [PF_INDEX] = {"index", K_I32, 0, M(index), 0, 0, I32MAX, NULL, 0, 0},
    [PF_TOKEN] = {"token", K_I32, 0, M(token), 0, 0, PROTO_MAX_TOKEN_ID, NULL, 0, 0},
    [PF_TEXT] = {"text", K_TEXT, 0, M(text), 0, 0, PROTO_MAX_TEXT_BYTES, NULL, 0, 0},
    [PF_LOGPROB] = {"logprob", K_F32, 0, M(logprob), 0, -1e30, 1, NULL, 0, 0},
    [PF_FINISH] = {"finish", K_FINISH, 0, M(finish), 0, 0, 0, NULL, 0, 0},
    [PF_TOKENS] = {"tokens", K_IDS, 0, M(tokens), M(n_tokens), 0, PROTO_MAX_IDS, NULL, 0, 0},
    [PF_USAGE] = {"usage", K_MAP, 0, 0, 0, 0, 0, usage_fields, NSUB(usage_fields), 0},
    [PF_TIMINGS] = {"timings", K_MAP, 0, 0, 0, 0, 0, timing_fields, NSUB(timing_fields), 0},
    [PF_CODE] = {"code", K_CODE, 0, M(code), 0, 0, 0, NULL, 0, 0},
    [PF_MESSAGE] = {"message", K_STR, 0, M(message), 0, 0, PROTO_MAX_MESSAGE_BYTES, NULL, 0, 0},
    [PF_NAME] = {"name", K_STR, 0, M(name), 0, 0, PROTO_MAX_NAME_BYTES, NULL, 0, 0},
    [PF_PID] = {"pid", K_I32, 0, M(pid), 0, 0, I32MAX, NULL, 0, 0},
    [PF_SLOTS] = {"slots", K_I32, 0, M(slots), 0, 1, PROTO_MAX_SLOTS, NULL, 0, 0},
    [PF_N_CTX] = {"n_ctx", K_I32, 0, M(n_ctx), 0, 0, I32MAX, NULL, 0, 0},
    [PF_CREDIT] = {"credit", K_I32, 0, M(credit), 0, 1, PROTO_MAX_SLOTS, NULL, 0, 0},
    [PF_RUNNING] = {"running", K_I32, 0, M(running), 0, 0, I32MAX, NULL, 0, 0},
    [PF_WAITING] = {"waiting", K_I32, 0, M(waiting), 0, 0, I32MAX, NULL, 0, 0},
    [PF_STEPS] = {"steps", K_U64, 0, M(steps), 0, 0, 0, NULL, 0, 0},
    [PF_TOKENS_GENERATED] = {"tokens_generated", K_U64, 0, M(tokens_generated), 0, 0, 0, NULL, 0, 0},
    [PF_WORKERS] = {"workers", K_I32, 0, M(workers), 0, 0, I32MAX, NULL, 0, 0},
    [PF_MAX_QUEUE] = {"max_queue", K_I32, 0, M(max_queue), 0, 0, I32MAX, NULL, 0, 0},
    [PF_QUEUE] = {"queue", K_I32, 0, M(queue), 0, 0, I32MAX, NULL, 0, 0},
    [PF_REQUESTS_TOTAL] = {"requests_total", K_U64, 0, M(requests_total), 0, 0, 0, NULL, 0, 0},
    [PF_TOKENS_TOTAL] = {"tokens_total", K_U64, 0, M(tokens_total), 0, 0, 0, NULL, 0, 0},
    [PF_ERRORS_TOTAL] = {"errors_total", K_U64, 0, M(errors_total), 0, 0, 0, NULL, 0, 0},
    [PF_OVERLOADED_TOTAL] = {"overloaded_total", K_U64, 0, M(overloaded_total), 0, 0, 0, NULL, 0, 0},
    [PF_TOKENS_PER_S] = {"tokens_per_s", K_F64, 0, M(tokens_per_s), 0, 0, 1e12, NULL, 0, 0},
    [PF_TTFT_MS] = {"ttft_ms", K_MAP, 0, M(ttft_pct), 0, 0, 0, pct_fields, NSUB(pct_fields), 0},
    [PF_ITL_MS] = {"itl_ms", K_MAP, 0, M(itl_pct), 0, 0, 0, pct_fields, NSUB(pct_fields), 0},
    [PF_UPTIME_S] = {"uptime_s", K_F64, 0, M(uptime_s), 0, 0, 1e12, NULL, 0, 0},
    [PF_WORKER_LIST] = {"worker_list", K_MAPARRAY, 0, M(worker_list), M(n_worker_list), 0,
                        PROTO_MAX_WORKERS, worker_fields, NSUB(worker_fields),
                        sizeof(proto_worker_info)},
    [PF_REASON] = {"reason", K_STR, 0, M(reason), 0, 0, 32, NULL, 0, 0},
    [PF_FIELD] = {"field", K_STR, 0, M(field), 0, 0, 64, NULL, 0, 0},
    [PF_TTFT_HIST] = {"ttft_hist", K_MAP, 0, M(ttft_hist), 0, 0, 0, hist_fields, NSUB(hist_fields), 0},
    [PF_ITL_HIST] = {"itl_hist", K_MAP, 0, M(itl_hist), 0, 0, 0, hist_fields, NSUB(hist_fields), 0},
    [PF_TOTAL_HIST] = {"total_hist", K_MAP, 0, M(total_hist), 0, 0, 0, hist_fields, NSUB(hist_fields), 0},
    [PF_TOP_LOGPROBS] = {"top_logprobs", K_I32, 0, M(top_logprobs), 0, 0, PROTO_MAX_TOP_LOGPROBS, NULL, 0, 0},
    [PF_TOP] = {"top", K_TOP, 0, M(top), M(n_top), 0, PROTO_MAX_TOP_LOGPROBS + 1, NULL, 0, 0},
    [PF_TOTALS] = {"totals", K_MAP, 0, M(totals), 0, 0, 0, totals_fields, NSUB(totals_fields), 0},
    [PF_ERROR_REASONS] = {"error_reasons", K_MAP, 0, M(error_reasons), 0, 0, 0, reason_count_fields,
                          NSUB(reason_count_fields), 0},
    [PF_QUEUE_HIST] = {"queue_hist", K_MAP, 0, M(queue_hist), 0, 0, 0, hist_fields, NSUB(hist_fields), 0},
    [PF_RECENT] = {"recent", K_MAP, 0, M(recent), 0, 0, 0, recent_fields, NSUB(recent_fields), 0},
    [PF_FINGERPRINT] = {"fingerprint", K_STR, 0, M(fingerprint), 0, 0, PROTO_MAX_FINGERPRINT_BYTES, NULL, 0, 0},
    [PF_SECRET] = {"secret", K_STR, 0, M(secret), 0, 0, PROTO_SECRET_HEX, NULL, 0, 0},
    [PF_PRIORITY] = {"priority", K_PRIORITY, 0, M(priority), 0, 0, 0, NULL, 0, 0},
    [PF_KV] = {"kv", K_MAP, 0, M(kv), 0, 0, 0, kv_fields, NSUB(kv_fields), 0},
};

/* ============================================================================================== */
/* message types                                                                                   */
/* ============================================================================================== */

/* Presence rules of a field within a type:
 *   R  required: always sent; missing on decode is an error;
 *   D  defaulted: always sent; missing on decode leaves proto_msg_init()'s default;
 *   O  optional: sent only if its PROTO_HAS() bit is set. */
enum { R = 0x80, D = 0x40, O = 0x00 };
#define FLD(rule, f) ((uint8_t)(rule)), ((uint8_t)(f))

typedef struct {
    const char *name;
    const uint8_t *f; /* pairs: rule, proto_field_id */
    int n;
} ptype;

#define SAMPLING                                                                              \
    FLD(D, PF_MAX_TOKENS), FLD(D, PF_TEMPERATURE), FLD(D, PF_TOP_K), FLD(D, PF_TOP_P),           \
        FLD(D, PF_MIN_P), FLD(D, PF_REPETITION_PENALTY), FLD(D, PF_PRESENCE_PENALTY),            \
        FLD(D, PF_FREQUENCY_PENALTY), FLD(D, PF_SEED), FLD(D, PF_LOGIT_BIAS), FLD(D, PF_STOP),   \
        FLD(D, PF_LOGPROBS), FLD(D, PF_IGNORE_EOS), FLD(D, PF_ALLOW_SPECIAL), FLD(D, PF_PRIORITY)

static const uint8_t t_hello[] = {FLD(O, PF_NAME)};
static const uint8_t t_welcome[] = {FLD(D, PF_NAME), FLD(D, PF_WORKERS), FLD(D, PF_MAX_QUEUE)};
static const uint8_t t_submit[] = {FLD(R, PF_ID), FLD(O, PF_PROMPT), FLD(O, PF_PROMPT_IDS), SAMPLING,
                                   FLD(D, PF_STREAM), FLD(O, PF_TOP_LOGPROBS)};
static const uint8_t t_request[] = {FLD(R, PF_RID), FLD(O, PF_PROMPT), FLD(O, PF_PROMPT_IDS),
                                    FLD(O, PF_RESUME_IDS), SAMPLING, FLD(O, PF_TOP_LOGPROBS)};
static const uint8_t t_cancel[] = {FLD(O, PF_ID), FLD(O, PF_RID)};
static const uint8_t t_stats[] = {0, 0};
static const uint8_t t_stats_reply[] = {
    FLD(D, PF_NAME), FLD(D, PF_UPTIME_S), FLD(D, PF_QUEUE), FLD(D, PF_MAX_QUEUE), FLD(D, PF_RUNNING),
    FLD(D, PF_REQUESTS_TOTAL), FLD(D, PF_TOKENS_TOTAL), FLD(D, PF_ERRORS_TOTAL),
    FLD(D, PF_OVERLOADED_TOTAL), FLD(D, PF_TOKENS_PER_S), FLD(D, PF_TTFT_MS), FLD(D, PF_ITL_MS),
    FLD(D, PF_WORKER_LIST), FLD(O, PF_TTFT_HIST), FLD(O, PF_ITL_HIST), FLD(O, PF_TOTAL_HIST),
    FLD(O, PF_RECENT), FLD(O, PF_QUEUE_HIST), FLD(O, PF_TOTALS),
    FLD(O, PF_ERROR_REASONS)};
static const uint8_t t_token[] = {FLD(O, PF_ID), FLD(O, PF_RID), FLD(R, PF_INDEX), FLD(R, PF_TOKEN),
                                  FLD(R, PF_TEXT), FLD(O, PF_LOGPROB), FLD(O, PF_TOP)};
static const uint8_t t_done[] = {FLD(O, PF_ID), FLD(O, PF_RID), FLD(R, PF_FINISH), FLD(D, PF_TEXT),
                                 FLD(D, PF_TOKENS), FLD(D, PF_USAGE), FLD(D, PF_TIMINGS),
                                 FLD(O, PF_MESSAGE), FLD(O, PF_NAME)};
static const uint8_t t_error[] = {FLD(O, PF_ID), FLD(O, PF_RID), FLD(R, PF_CODE), FLD(D, PF_MESSAGE),
                                  FLD(O, PF_REASON), FLD(O, PF_FIELD), FLD(O, PF_NAME)};
static const uint8_t t_hb[] = {FLD(O, PF_RUNNING), FLD(O, PF_WAITING), FLD(O, PF_STEPS),
                               FLD(O, PF_TOKENS_GENERATED), FLD(O, PF_KV)};
static const uint8_t t_ready[] = {FLD(R, PF_SLOTS), FLD(D, PF_NAME), FLD(D, PF_PID), FLD(D, PF_N_CTX),
                                  FLD(O, PF_FINGERPRINT), FLD(O, PF_SECRET)};
static const uint8_t t_credit[] = {FLD(R, PF_CREDIT)};
static const uint8_t t_disconnect[] = {FLD(O, PF_MESSAGE)};

#define T(name, arr) {name, arr, (int)(sizeof(arr) / 2)}
static const ptype types[PROTO_T_COUNT] = {
    [PROTO_T_NONE] = {"?", NULL, 0},
    [PROTO_T_HELLO] = T("hello", t_hello),
    [PROTO_T_WELCOME] = T("welcome", t_welcome),
    [PROTO_T_SUBMIT] = T("submit", t_submit),
    [PROTO_T_CANCEL] = T("cancel", t_cancel),
    [PROTO_T_STATS] = {"stats", t_stats, 0},
    [PROTO_T_STATS_REPLY] = T("stats_reply", t_stats_reply),
    [PROTO_T_TOKEN] = T("token", t_token),
    [PROTO_T_DONE] = T("done", t_done),
    [PROTO_T_ERROR] = T("error", t_error),
    [PROTO_T_HB] = T("hb", t_hb),
    [PROTO_T_READY] = T("ready", t_ready),
    [PROTO_T_CREDIT] = T("credit", t_credit),
    [PROTO_T_REQUEST] = T("request", t_request),
    [PROTO_T_DISCONNECT] = T("disconnect", t_disconnect),
};

/* ============================================================================================== */
/* names                                                                                           */
/* ============================================================================================== */

static const char *const finish_names[PROTO_FINISH_COUNT] = {"length", "stop", "eos", "cancelled",
                                                             "error"};
static const char *const priority_names[PROTO_PRIORITY_COUNT] = {"interactive", "bulk"};

static const struct {
    int code;
    const char *name;
} code_names[] = {
    {PROTO_CODE_BAD_REQUEST, "bad_request"},
    {PROTO_CODE_DUPLICATE_ID, "duplicate_id"},
    {PROTO_CODE_TOO_LARGE, "too_large"},
    {PROTO_CODE_INVALID_REQUEST, "invalid_request"},
    {PROTO_CODE_UNSUPPORTED_VERSION, "unsupported_version"},
    {PROTO_CODE_OVERLOADED, "overloaded"},
    {PROTO_CODE_INTERNAL, "internal"},
    {PROTO_CODE_WORKER_LOST, "worker_lost"},
    {PROTO_CODE_SHUTTING_DOWN, "shutting_down"},
    {PROTO_CODE_TIMEOUT, "timeout"},
};

static const struct {
    const char *name;
    int code;
} reasons[PROTO_R_COUNT] = {
    [PROTO_R_NONE] = {"?", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_MALFORMED] = {"malformed", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_NOT_MAP] = {"not_map", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_TOO_LARGE] = {"too_large", PROTO_CODE_TOO_LARGE},
    [PROTO_R_UNKNOWN_TYPE] = {"unknown_type", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_BAD_VERSION] = {"bad_version", PROTO_CODE_UNSUPPORTED_VERSION},
    [PROTO_R_NOT_CLIENT_MESSAGE] = {"not_client_message", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_UNKNOWN_FIELD] = {"unknown_field", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_DUPLICATE_FIELD] = {"duplicate_field", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_MISSING_FIELD] = {"missing_field", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_WRONG_TYPE] = {"wrong_type", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_NOT_FINITE] = {"not_finite", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_OUT_OF_RANGE] = {"out_of_range", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_TOO_LONG] = {"too_long", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_EMPTY] = {"empty", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_TOO_MANY] = {"too_many", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_INVALID_UTF8] = {"invalid_utf8", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_BAD_ID] = {"bad_id", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_PROMPT_CHOICE] = {"prompt_choice", PROTO_CODE_BAD_REQUEST},
    [PROTO_R_EMPTY_PROMPT] = {"empty_prompt", PROTO_CODE_INVALID_REQUEST},
    [PROTO_R_PROMPT_TOO_LONG] = {"prompt_too_long", PROTO_CODE_INVALID_REQUEST},
    [PROTO_R_TOKEN_OUT_OF_RANGE] = {"token_out_of_range", PROTO_CODE_INVALID_REQUEST},
    [PROTO_R_MAX_TOKENS_OVER_CONTEXT] = {"max_tokens_over_context", PROTO_CODE_INVALID_REQUEST},
    [PROTO_R_DUPLICATE_ID] = {"duplicate_id", PROTO_CODE_DUPLICATE_ID},
    [PROTO_R_QUEUE_FULL] = {"queue_full", PROTO_CODE_OVERLOADED},
    [PROTO_R_CLIENT_LIMIT] = {"client_limit", PROTO_CODE_OVERLOADED},
    [PROTO_R_QUEUE_TIMEOUT] = {"queue_timeout", PROTO_CODE_TIMEOUT},
    [PROTO_R_REQUEST_TIMEOUT] = {"request_timeout", PROTO_CODE_TIMEOUT},
    [PROTO_R_WORKER_LOST] = {"worker_lost", PROTO_CODE_WORKER_LOST},
    [PROTO_R_NO_WORKER] = {"no_worker", PROTO_CODE_WORKER_LOST},
    [PROTO_R_SHUTTING_DOWN] = {"shutting_down", PROTO_CODE_SHUTTING_DOWN},
    [PROTO_R_INTERNAL] = {"internal", PROTO_CODE_INTERNAL},
    [PROTO_R_INVALID_REQUEST] = {"invalid_request", PROTO_CODE_INVALID_REQUEST},
    [PROTO_R_MODEL_LOAD_FAILED] = {"model_load_failed", PROTO_CODE_WORKER_LOST},
    [PROTO_R_WORKER_START_FAILED] = {"worker_start_failed", PROTO_CODE_WORKER_LOST},
    [PROTO_R_OVER_CREDIT] = {"over_credit", PROTO_CODE_OVERLOADED},
};

proto_reason proto_reason_from_name(const char *name, size_t len) {
    for (int r = 1; r < PROTO_R_COUNT; r++)
        if (name && strlen(reasons[r].name) == len && memcmp(reasons[r].name, name, len) == 0) return (proto_reason)r;
    return PROTO_R_NONE;
}

const char *proto_reason_name(proto_reason r) {
    return ((unsigned)r < PROTO_R_COUNT && r != PROTO_R_NONE) ? reasons[r].name : "?";
}

int proto_reason_code(proto_reason r) {
    return ((unsigned)r < PROTO_R_COUNT) ? reasons[r].code : PROTO_CODE_INTERNAL;
}

const char *proto_type_name(proto_type t) {
    return (t > PROTO_T_NONE && t < PROTO_T_COUNT) ? types[t].name : "?";
}

const char *proto_finish_name(proto_finish f) {
    return ((unsigned)f < PROTO_FINISH_COUNT) ? finish_names[f] : "?";
}

const char *proto_priority_name(proto_priority p) {
    return ((unsigned)p < PROTO_PRIORITY_COUNT) ? priority_names[p] : "?";
}

int proto_priority_parse(const char *s, size_t len) {
    for (int i = 0; i < PROTO_PRIORITY_COUNT; i++)
        if (s && len == strlen(priority_names[i]) && memcmp(s, priority_names[i], len) == 0) return i;
    return -1;
}

const char *proto_code_name(int code) {
    for (size_t i = 0; i < sizeof(code_names) / sizeof(code_names[0]); i++)
        if (code_names[i].code == code) return code_names[i].name;
    return "?";
}

const char *proto_status_name(int status) {
    switch (status) {
    case PROTO_OK: return "ok";
    case PROTO_E_TOO_LARGE: return "too_large";
    case PROTO_E_MALFORMED: return "malformed";
    case PROTO_E_NOT_MAP: return "not_map";
    case PROTO_E_VERSION: return "version";
    case PROTO_E_TYPE: return "type";
    case PROTO_E_FIELD: return "field";
    case PROTO_E_NOMEM: return "nomem";
    default: return "?";
    }
}

int proto_status_code(int status) {
    switch (status) {
    case PROTO_E_TOO_LARGE: return PROTO_CODE_TOO_LARGE;
    case PROTO_E_VERSION: return PROTO_CODE_UNSUPPORTED_VERSION;
    case PROTO_E_NOMEM: return PROTO_CODE_INTERNAL;
    default: return PROTO_CODE_BAD_REQUEST;
    }
}

/* ============================================================================================== */
/* small helpers                                                                                   */
/* ============================================================================================== */

int proto_utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t n;
        unsigned min;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) { n = 1; min = 0x80; c &= 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { n = 2; min = 0x800; c &= 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 3; min = 0x10000; c &= 0x07; }
        else return 0;
        if (len - i - 1 < n) return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return 0;
            c = (c << 6) | (p[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
        i += n + 1;
    }
    return 1;
}

size_t proto_utf8_sanitize(const char *s, size_t len, char *out, size_t cap) {
    size_t n = 0;
    if (cap == 0) return 0;
    for (size_t i = 0; i < len;) {
        size_t k = 1; /* the length of the character at i, if it is one */
        unsigned c = (unsigned char)s[i];
        if (c >= 0xc2 && c <= 0xdf) k = 2;
        else if (c >= 0xe0 && c <= 0xef) k = 3;
        else if (c >= 0xf0 && c <= 0xf4) k = 4;
        int ok = c < 0x80 || (k > 1 && k <= len - i && proto_utf8_valid(s + i, k));
        if (!ok) k = 1;
        if (n + (ok ? k : 1) > cap - 1) break;
        if (ok) memcpy(out + n, s + i, k);
        else out[n] = '?';
        n += ok ? k : 1;
        i += k;
    }
    out[n] = 0;
    return n;
}

const char *proto_cid_str(const proto_cid *id, char *buf, size_t cap) {
    if (cap == 0) return buf;
    if (id->is_str)
        snprintf(buf, cap, "%.*s", (int)id->str.len, id->str.ptr ? id->str.ptr : "");
    else
        snprintf(buf, cap, "%llu", (unsigned long long)id->num);
    return buf;
}

int proto_cid_equal(const proto_cid *a, const proto_cid *b) {
    if (a->is_str != b->is_str) return 0;
    if (!a->is_str) return a->num == b->num;
    return a->str.len == b->str.len && (a->str.len == 0 || memcmp(a->str.ptr, b->str.ptr, a->str.len) == 0);
}

const char *proto_default_endpoint(int worker_side, char *buf, size_t cap, char *dir, size_t dircap) {
    char d[512];
    const char *env = getenv("GPT2D_RUNTIME_DIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;
    if (env && *env)
        n = snprintf(d, sizeof(d), "%s", env);
    else if (xdg && *xdg)
        n = snprintf(d, sizeof(d), "%s/gpt2d", xdg);
    else
        n = snprintf(d, sizeof(d), "/tmp/gpt2d-%u", (unsigned)getuid());
    if (n < 0 || (size_t)n >= sizeof(d)) return NULL;
    if (dir) {
        if ((size_t)n >= dircap) return NULL;
        memcpy(dir, d, (size_t)n + 1);
    }
    n = snprintf(buf, cap, "ipc://%s/%s.sock", d, worker_side ? "worker" : "client");
    return (n < 0 || (size_t)n >= cap) ? NULL : buf;
}

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ============================================================================================== */
/* init / destroy                                                                                  */
/* ============================================================================================== */

void proto_msg_init(proto_msg *m, proto_type type) {
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->v = PROTO_VERSION;
    m->max_tokens = PROTO_DEFAULT_MAX_TOKENS;
    m->temperature = PROTO_DEFAULT_TEMPERATURE;
    m->top_p = 1.0f;
    m->repetition_penalty = 1.0f;
    m->stream = 1;
}

void proto_msg_destroy(proto_msg *m) {
    if (m->zone) msgpack_zone_free(m->zone);
    m->zone = NULL;
}

/* ============================================================================================== */
/* range checks shared by encoder and decoder                                                      */
/* ============================================================================================== */

static int check_number(const pfield *f, double x, char *err, size_t errlen) {
    bool lo_ok = (f->flags & F_LO_OPEN) ? x > f->lo : x >= f->lo;
    if (!isfinite(x) || !lo_ok || x > f->hi) {
        seterr(err, errlen, "field '%s': %g out of range %s%g, %g]", f->key, x,
               (f->flags & F_LO_OPEN) ? "(" : "[", f->lo, f->hi);
        return isfinite(x) ? -PROTO_R_OUT_OF_RANGE : -PROTO_R_NOT_FINITE;
    }
    return 0;
}

static int check_str(const pfield *f, const proto_str *s, bool utf8, char *err, size_t errlen) {
    if (s->len < f->lo || s->len > f->hi) {
        seterr(err, errlen, "field '%s': length %u out of range [%g, %g]", f->key, s->len, f->lo, f->hi);
        return s->len > f->hi ? -PROTO_R_TOO_LONG : -PROTO_R_EMPTY;
    }
    if (s->len && !s->ptr) {
        seterr(err, errlen, "field '%s': NULL string", f->key);
        return -PROTO_R_MALFORMED;
    }
    if (utf8 && !proto_utf8_valid(s->ptr, s->len)) {
        seterr(err, errlen, "field '%s': not valid UTF-8", f->key);
        return -PROTO_R_INVALID_UTF8;
    }
    return 0;
}

static int check_cid(const pfield *f, const proto_cid *id, char *err, size_t errlen) {
    if (!id->is_str) return 0;
    if (id->str.len < 1 || id->str.len > PROTO_MAX_ID_BYTES || !id->str.ptr ||
        !proto_utf8_valid(id->str.ptr, id->str.len)) {
        seterr(err, errlen, "field '%s': a string id must be 1..%d bytes of UTF-8", f->key,
               PROTO_MAX_ID_BYTES);
        return -PROTO_R_BAD_ID;
    }
    return 0;
}

static int check_ids(const pfield *f, const int32_t *ids, uint32_t n, char *err, size_t errlen) {
    if (n > f->hi || (n && !ids)) {
        seterr(err, errlen, "field '%s': %u ids, at most %g", f->key, n, f->hi);
        return -PROTO_R_TOO_MANY;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] > PROTO_MAX_TOKEN_ID) {
            seterr(err, errlen, "field '%s': id %d at %u out of range [0, %d]", f->key, (int)ids[i], i,
                   PROTO_MAX_TOKEN_ID);
            return -PROTO_R_TOKEN_OUT_OF_RANGE;
        }
    }
    return 0;
}

static int check_bias(const pfield *f, const proto_bias *b, uint32_t n, char *err, size_t errlen) {
    if (n > PROTO_MAX_BIAS || (n && !b)) {
        seterr(err, errlen, "field '%s': %u entries, at most %d", f->key, n, PROTO_MAX_BIAS);
        return -PROTO_R_TOO_MANY;
    }
    for (uint32_t i = 0; i < n; i++) {
        bool ban = isinf(b[i].bias) && b[i].bias < 0;
        if (b[i].id < 0 || b[i].id > PROTO_MAX_TOKEN_ID) {
            seterr(err, errlen, "field '%s': entry %u: token id %d is not in [0, %d]", f->key, i, (int)b[i].id,
                   PROTO_MAX_TOKEN_ID);
            return -PROTO_R_TOKEN_OUT_OF_RANGE;
        }
        if (!ban && !isfinite(b[i].bias)) {
            seterr(err, errlen, "field '%s': entry %u: the bias is NaN or +inf (only -inf, a ban, is allowed)",
                   f->key, i);
            return -PROTO_R_NOT_FINITE;
        }
        if (!ban && (b[i].bias < f->lo || b[i].bias > f->hi)) {
            seterr(err, errlen, "field '%s': entry %u: bias %g is not in [%g, %g] (or -inf)", f->key, i,
                   (double)b[i].bias, f->lo, f->hi);
            return -PROTO_R_OUT_OF_RANGE;
        }
    }
    return 0;
}

static int check_top(const pfield *f, const proto_top *t, uint32_t n, char *err, size_t errlen) {
    if (n > f->hi || (n && !t)) {
        seterr(err, errlen, "field '%s': %u entries, at most %g", f->key, n, f->hi);
        return -PROTO_R_TOO_MANY;
    }
    for (uint32_t i = 0; i < n; i++) {
        bool neg_inf = isinf(t[i].logprob) && t[i].logprob < 0;
        if (t[i].id < 0 || t[i].id > PROTO_MAX_TOKEN_ID || (!neg_inf && !(t[i].logprob <= 0)) ||
            t[i].bytes.len > PROTO_MAX_STOP_BYTES * 4 || (t[i].bytes.len && !t[i].bytes.ptr)) {
            seterr(err, errlen, "field '%s': entry %u: id in [0, %d], logprob <= 0, bytes <= %d", f->key, i,
                   PROTO_MAX_TOKEN_ID, PROTO_MAX_STOP_BYTES * 4);
            return -PROTO_R_OUT_OF_RANGE;
        }
    }
    return 0;
}

static int check_code(const pfield *f, int32_t code, char *err, size_t errlen) {
    if (strcmp(proto_code_name(code), "?") == 0) {
        seterr(err, errlen, "field '%s': unknown error code %d", f->key, (int)code);
        return -PROTO_R_OUT_OF_RANGE;
    }
    return 0;
}

static int check_sub(const pfield *sub, int n, const char *base, char *err, size_t errlen);

/* Checks the C value of field f stored at base. 0 or -1 with err. */
static int check_field(const pfield *f, const char *base, char *err, size_t errlen) {
    const char *p = base + f->off;
    switch (f->kind) {
    case K_U64: case K_BOOL: return 0;
    case K_I32: return check_number(f, *(const int32_t *)p, err, errlen);
    case K_F32: return check_number(f, *(const float *)p, err, errlen);
    case K_F64: return check_number(f, *(const double *)p, err, errlen);
    case K_STR: return check_str(f, (const proto_str *)p, true, err, errlen);
    case K_TEXT: return check_str(f, (const proto_str *)p, false, err, errlen);
    case K_CID: return check_cid(f, (const proto_cid *)p, err, errlen);
    case K_IDS:
        return check_ids(f, *(const int32_t *const *)p, *(const uint32_t *)(base + f->off2), err, errlen);
    case K_BIAS:
        return check_bias(f, *(const proto_bias *const *)p, *(const uint32_t *)(base + f->off2), err,
                          errlen);
    case K_STOPS: {
        uint32_t n = *(const uint32_t *)(base + f->off2);
        if (n > PROTO_MAX_STOPS) {
            seterr(err, errlen, "field '%s': %u strings, at most %d", f->key, n, PROTO_MAX_STOPS);
            return -PROTO_R_TOO_MANY;
        }
        for (uint32_t i = 0; i < n; i++) {
            int rc = check_str(f, (const proto_str *)p + i, true, err, errlen);
            if (rc < 0) return rc;
        }
        return 0;
    }
    case K_FINISH:
        if ((unsigned)*(const proto_finish *)p >= PROTO_FINISH_COUNT) {
            seterr(err, errlen, "field '%s': unknown finish reason", f->key);
            return -PROTO_R_OUT_OF_RANGE;
        }
        return 0;
    case K_PRIORITY:
        if ((unsigned)*(const proto_priority *)p >= PROTO_PRIORITY_COUNT) {
            seterr(err, errlen, "field '%s': unknown priority", f->key);
            return -PROTO_R_OUT_OF_RANGE;
        }
        return 0;
    case K_CODE: return check_code(f, *(const int32_t *)p, err, errlen);
    case K_TOP: return check_top(f, *(const proto_top *const *)p, *(const uint32_t *)(base + f->off2), err, errlen);
    case K_MAP: return check_sub(f->sub, f->n_sub, p, err, errlen);
    case K_MAPARRAY: {
        const char *arr = *(const char *const *)p;
        uint32_t n = *(const uint32_t *)(base + f->off2);
        if (n > f->hi || (n && !arr)) {
            seterr(err, errlen, "field '%s': %u entries, at most %g", f->key, n, f->hi);
            return -PROTO_R_TOO_MANY;
        }
        for (uint32_t i = 0; i < n; i++) {
            int rc = check_sub(f->sub, f->n_sub, arr + (size_t)i * f->sub_size, err, errlen);
            if (rc < 0) return rc;
        }
        return 0;
    }
    }
    return -PROTO_R_MALFORMED;
}

static int check_sub(const pfield *sub, int n, const char *base, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        int rc = check_field(&sub[i], base, err, errlen);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Cross-field rules, after every field passed its own check. */
static int check_message(const proto_msg *m, char *err, size_t errlen) {
    uint64_t ids = m->has & (PROTO_HAS(PF_ID) | PROTO_HAS(PF_RID));
    uint64_t prompts = m->has & (PROTO_HAS(PF_PROMPT) | PROTO_HAS(PF_PROMPT_IDS));
    switch (m->type) {
    case PROTO_T_SUBMIT:
    case PROTO_T_REQUEST:
        if (prompts == 0 || prompts == (PROTO_HAS(PF_PROMPT) | PROTO_HAS(PF_PROMPT_IDS))) {
            seterr(err, errlen, "%s: exactly one of 'prompt' and 'prompt_ids' is required",
                   proto_type_name(m->type));
            return -1;
        }
        return 0;
    case PROTO_T_CANCEL:
    case PROTO_T_TOKEN:
    case PROTO_T_DONE:
        if (ids == 0 || ids == (PROTO_HAS(PF_ID) | PROTO_HAS(PF_RID))) {
            seterr(err, errlen, "%s: exactly one of 'id' and 'rid' is required", proto_type_name(m->type));
            return -1;
        }
        return 0;
    case PROTO_T_ERROR:
        if (ids == (PROTO_HAS(PF_ID) | PROTO_HAS(PF_RID))) {
            seterr(err, errlen, "error: at most one of 'id' and 'rid'");
            return -1;
        }
        return 0;
    default: return 0;
    }
}

/* ============================================================================================== */
/* encoder                                                                                         */
/* ============================================================================================== */

static void pack_key(msgpack_packer *pk, const char *key) {
    size_t n = strlen(key);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, key, n);
}

static void pack_strv(msgpack_packer *pk, const proto_str *s, bool raw) {
    if (raw && !proto_utf8_valid(s->ptr, s->len)) {
        msgpack_pack_bin(pk, s->len);
        msgpack_pack_bin_body(pk, s->ptr, s->len);
    } else {
        msgpack_pack_str(pk, s->len);
        msgpack_pack_str_body(pk, s->ptr, s->len);
    }
}

static void pack_sub(msgpack_packer *pk, const pfield *sub, int n, const char *base);

static void pack_value(msgpack_packer *pk, const pfield *f, const char *base) {
    const char *p = base + f->off;
    switch (f->kind) {
    case K_U64: msgpack_pack_uint64(pk, *(const uint64_t *)p); break;
    case K_I32: case K_CODE: msgpack_pack_int32(pk, *(const int32_t *)p); break;
    case K_F32: msgpack_pack_float(pk, *(const float *)p); break;
    case K_F64: msgpack_pack_double(pk, *(const double *)p); break;
    case K_BOOL: if (*(const uint8_t *)p) msgpack_pack_true(pk); else msgpack_pack_false(pk); break;
    case K_STR: pack_strv(pk, (const proto_str *)p, false); break;
    case K_TEXT: pack_strv(pk, (const proto_str *)p, true); break;
    case K_CID: {
        const proto_cid *id = (const proto_cid *)p;
        if (id->is_str) pack_strv(pk, &id->str, false);
        else msgpack_pack_uint64(pk, id->num);
        break;
    }
    case K_IDS: {
        const int32_t *ids = *(const int32_t *const *)p;
        uint32_t n = *(const uint32_t *)(base + f->off2);
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++) msgpack_pack_int32(pk, ids[i]);
        break;
    }
    case K_STOPS: {
        uint32_t n = *(const uint32_t *)(base + f->off2);
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++) pack_strv(pk, (const proto_str *)p + i, false);
        break;
    }
    case K_BIAS: {
        const proto_bias *b = *(const proto_bias *const *)p;
        uint32_t n = *(const uint32_t *)(base + f->off2);
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++) {
            msgpack_pack_array(pk, 2);
            msgpack_pack_int32(pk, b[i].id);
            msgpack_pack_float(pk, b[i].bias);
        }
        break;
    }
    case K_FINISH: {
        const char *s = proto_finish_name(*(const proto_finish *)p);
        pack_strv(pk, &(proto_str){s, (uint32_t)strlen(s)}, false);
        break;
    }
    case K_TOP: {
        const proto_top *t = *(const proto_top *const *)p;
        uint32_t n = *(const uint32_t *)(base + f->off2);
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++) {
            msgpack_pack_array(pk, 3);
            msgpack_pack_int32(pk, t[i].id);
            msgpack_pack_float(pk, t[i].logprob);
            pack_strv(pk, &t[i].bytes, true);
        }
        break;
    }
    case K_PRIORITY: {
        const char *s = proto_priority_name(*(const proto_priority *)p);
        pack_strv(pk, &(proto_str){s, (uint32_t)strlen(s)}, false);
        break;
    }
    case K_MAP: pack_sub(pk, f->sub, f->n_sub, p); break;
    case K_MAPARRAY: {
        const char *arr = *(const char *const *)p;
        uint32_t n = *(const uint32_t *)(base + f->off2);
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++) pack_sub(pk, f->sub, f->n_sub, arr + (size_t)i * f->sub_size);
        break;
    }
    }
}

static void pack_sub(msgpack_packer *pk, const pfield *sub, int n, const char *base) {
    msgpack_pack_map(pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        pack_key(pk, sub[i].key);
        pack_value(pk, &sub[i], base);
    }
}

static bool type_field_sent(const proto_msg *m, uint8_t rule, uint8_t fid) {
    return (rule & (R | D)) || (m->has & PROTO_HAS(fid));
}

int proto_encode(const proto_msg *m, msgpack_sbuffer *sb, char *err, size_t errlen) {
    if (m->type <= PROTO_T_NONE || m->type >= PROTO_T_COUNT) {
        seterr(err, errlen, "encode: unknown message type %d", (int)m->type);
        return -1;
    }
    const ptype *t = &types[m->type];
    size_t n_keys = 2;
    for (int i = 0; i < t->n; i++) {
        uint8_t rule = t->f[2 * i], fid = t->f[2 * i + 1];
        if (!type_field_sent(m, rule, fid)) continue;
        if (check_field(&fields[fid], (const char *)m, err, errlen) < 0) return -1;
        n_keys++;
    }
    if (check_message(m, err, errlen) < 0) return -1;

    size_t start = sb->size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n_keys);
    pack_key(&pk, "t");
    pack_strv(&pk, &(proto_str){t->name, (uint32_t)strlen(t->name)}, false);
    pack_key(&pk, "v");
    msgpack_pack_uint32(&pk, m->v);
    for (int i = 0; i < t->n; i++) {
        uint8_t rule = t->f[2 * i], fid = t->f[2 * i + 1];
        if (!type_field_sent(m, rule, fid)) continue;
        pack_key(&pk, fields[fid].key);
        pack_value(&pk, &fields[fid], (const char *)m);
    }
    if (sb->size - start > PROTO_MAX_MSG_BYTES) {
        seterr(err, errlen, "encode: %s message of %zu bytes exceeds %u", t->name, sb->size - start,
               PROTO_MAX_MSG_BYTES);
        sb->size = start;
        return -1;
    }
    return 0;
}

/* ============================================================================================== */
/* decoder                                                                                         */
/* ============================================================================================== */

typedef struct {
    proto_msg *m;
    char *err;
    size_t errlen;
} dec_ctx;

static bool key_is(const msgpack_object *k, const char *s) {
    size_t n = strlen(s);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, s, n) == 0;
}

/* Records the specific cause of a field failure; returns PROTO_E_FIELD. */
static int dec_fail(dec_ctx *c, proto_reason why, const char *key) {
    c->m->fail = why;
    c->m->fail_field = key;
    return PROTO_E_FIELD;
}

static int wrong_type(dec_ctx *c, const char *key, const char *want) {
    seterr(c->err, c->errlen, "field '%s': expected %s", key, want);
    return dec_fail(c, PROTO_R_WRONG_TYPE, key);
}

/* An integer or float object as a double. 0 or -1 if it is neither. */
static int obj_number(const msgpack_object *o, double *x) {
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *x = (double)o->via.u64; return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *x = (double)o->via.i64; return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *x = o->via.f64; return 0;
    default: return -1;
    }
}

static int obj_int(const msgpack_object *o, int64_t *x) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > INT64_MAX) return -1;
        *x = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) { *x = o->via.i64; return 0; }
    return -1;
}

static int obj_str(const msgpack_object *o, proto_str *s, bool allow_bin) {
    if (o->type == MSGPACK_OBJECT_STR) {
        *s = (proto_str){o->via.str.size ? o->via.str.ptr : NULL, o->via.str.size};
        return 0;
    }
    if (allow_bin && o->type == MSGPACK_OBJECT_BIN) {
        *s = (proto_str){o->via.bin.size ? o->via.bin.ptr : NULL, o->via.bin.size};
        return 0;
    }
    return -1;
}

static void *zone_alloc(dec_ctx *c, size_t n) {
    if (!c->m->zone) {
        c->m->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
        if (!c->m->zone) return NULL;
    }
    return msgpack_zone_malloc(c->m->zone, n ? n : 1);
}

static int dec_sub(dec_ctx *c, const pfield *sub, int n, char *base, const msgpack_object *o,
                   const char *key);

/* Converts o into field f at base (type check only; ranges come after). */
static int dec_value(dec_ctx *c, const pfield *f, char *base, const msgpack_object *o) {
    char *p = base + f->off;
    int64_t i64;
    double x;
    switch (f->kind) {
    case K_U64:
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return wrong_type(c, f->key, "a non-negative integer");
        *(uint64_t *)p = o->via.u64;
        return 0;
    case K_I32:
    case K_CODE:
        if (obj_int(o, &i64) < 0) return wrong_type(c, f->key, "an integer");
        if (i64 < INT32_MIN || i64 > INT32_MAX) {
            seterr(c->err, c->errlen, "field '%s': %lld out of range", f->key, (long long)i64);
            return dec_fail(c, PROTO_R_OUT_OF_RANGE, f->key);
        }
        *(int32_t *)p = (int32_t)i64;
        return 0;
    case K_F32:
        if (obj_number(o, &x) < 0) return wrong_type(c, f->key, "a number");
        if (!isfinite(x)) {
            seterr(c->err, c->errlen, "field '%s': NaN and infinities are refused", f->key);
            return dec_fail(c, PROTO_R_NOT_FINITE, f->key);
        }
        *(float *)p = (float)x;
        if (isfinite(*(float *)p)) return 0;
        seterr(c->err, c->errlen, "field '%s': %g overflows a float", f->key, x);
        return dec_fail(c, PROTO_R_OUT_OF_RANGE, f->key);
    case K_F64:
        if (obj_number(o, &x) < 0) return wrong_type(c, f->key, "a number");
        *(double *)p = x;
        return 0;
    case K_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN) return wrong_type(c, f->key, "a boolean");
        *(uint8_t *)p = o->via.boolean ? 1 : 0;
        return 0;
    case K_STR:
    case K_TEXT:
        if (obj_str(o, (proto_str *)p, f->kind == K_TEXT) < 0) return wrong_type(c, f->key, "a string");
        return 0;
    case K_CID: {
        proto_cid *id = (proto_cid *)p;
        memset(id, 0, sizeof(*id));
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            id->num = o->via.u64;
            return 0;
        }
        if (obj_str(o, &id->str, false) < 0) {
            seterr(c->err, c->errlen, "field '%s': expected a non-negative integer or 1..%d bytes of UTF-8", f->key,
                   PROTO_MAX_ID_BYTES);
            return dec_fail(c, PROTO_R_BAD_ID, f->key);
        }
        id->is_str = 1;
        return 0;
    }
    case K_IDS: {
        if (o->type != MSGPACK_OBJECT_ARRAY) return wrong_type(c, f->key, "an array of token ids");
        uint32_t n = o->via.array.size;
        if (n > f->hi) {
            seterr(c->err, c->errlen, "field '%s': %u ids, at most %g", f->key, n, f->hi);
            return dec_fail(c, PROTO_R_TOO_MANY, f->key);
        }
        int32_t *ids = zone_alloc(c, (size_t)n * sizeof(int32_t));
        if (!ids) return PROTO_E_NOMEM;
        for (uint32_t i = 0; i < n; i++) {
            if (obj_int(&o->via.array.ptr[i], &i64) < 0 || i64 < 0 || i64 > PROTO_MAX_TOKEN_ID) {
                seterr(c->err, c->errlen, "field '%s': element %u is not a token id in [0, %d]", f->key, i,
                       PROTO_MAX_TOKEN_ID);
                return dec_fail(c, obj_int(&o->via.array.ptr[i], &i64) < 0 ? PROTO_R_WRONG_TYPE
                                                                           : PROTO_R_TOKEN_OUT_OF_RANGE, f->key);
            }
            ids[i] = (int32_t)i64;
        }
        *(const int32_t **)p = ids;
        *(uint32_t *)(base + f->off2) = n;
        return 0;
    }
    case K_STOPS: {
        if (o->type != MSGPACK_OBJECT_ARRAY) return wrong_type(c, f->key, "an array of strings");
        uint32_t n = o->via.array.size;
        if (n > PROTO_MAX_STOPS) {
            seterr(c->err, c->errlen, "field '%s': %u strings, at most %d", f->key, n, PROTO_MAX_STOPS);
            return dec_fail(c, PROTO_R_TOO_MANY, f->key);
        }
        for (uint32_t i = 0; i < n; i++)
            if (obj_str(&o->via.array.ptr[i], (proto_str *)p + i, false) < 0)
                return wrong_type(c, f->key, "an array of strings");
        *(uint32_t *)(base + f->off2) = n;
        return 0;
    }
    case K_BIAS: {
        if (o->type != MSGPACK_OBJECT_ARRAY) return wrong_type(c, f->key, "an array of [id, bias] pairs");
        uint32_t n = o->via.array.size;
        if (n > PROTO_MAX_BIAS) {
            seterr(c->err, c->errlen, "field '%s': %u entries, at most %d", f->key, n, PROTO_MAX_BIAS);
            return dec_fail(c, PROTO_R_TOO_MANY, f->key);
        }
        proto_bias *b = zone_alloc(c, (size_t)n * sizeof(proto_bias));
        if (!b) return PROTO_E_NOMEM;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *e = &o->via.array.ptr[i];
            if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2 ||
                obj_int(&e->via.array.ptr[0], &i64) < 0 || obj_number(&e->via.array.ptr[1], &x) < 0)
                return wrong_type(c, f->key, "an array of [id, bias] pairs");
            if (i64 < 0 || i64 > PROTO_MAX_TOKEN_ID) {
                seterr(c->err, c->errlen, "field '%s': entry %u: token id %lld is not in [0, %d]", f->key, i,
                       (long long)i64, PROTO_MAX_TOKEN_ID);
                return dec_fail(c, PROTO_R_TOKEN_OUT_OF_RANGE, f->key);
            }
            b[i].id = (int32_t)i64;
            b[i].bias = (float)x;
        }
        *(const proto_bias **)p = b;
        *(uint32_t *)(base + f->off2) = n;
        return 0;
    }
    case K_FINISH: {
        proto_str s;
        if (obj_str(o, &s, false) < 0) return wrong_type(c, f->key, "a finish reason string");
        for (int i = 0; i < PROTO_FINISH_COUNT; i++) {
            if (s.len == strlen(finish_names[i]) && memcmp(s.ptr, finish_names[i], s.len) == 0) {
                *(proto_finish *)p = (proto_finish)i;
                return 0;
            }
        }
        seterr(c->err, c->errlen, "field '%s': unknown finish reason", f->key);
        return dec_fail(c, PROTO_R_OUT_OF_RANGE, f->key);
    }
    case K_TOP: {
        if (o->type != MSGPACK_OBJECT_ARRAY) return wrong_type(c, f->key, "an array of [id, logprob, bytes]");
        uint32_t n = o->via.array.size;
        if (n > f->hi) {
            seterr(c->err, c->errlen, "field '%s': %u entries, at most %g", f->key, n, f->hi);
            return dec_fail(c, PROTO_R_TOO_MANY, f->key);
        }
        proto_top *t = zone_alloc(c, (size_t)n * sizeof(proto_top) + 1);
        if (!t) return PROTO_E_NOMEM;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *e = &o->via.array.ptr[i];
            if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 3 ||
                obj_int(&e->via.array.ptr[0], &i64) < 0 || i64 < 0 || i64 > PROTO_MAX_TOKEN_ID ||
                obj_number(&e->via.array.ptr[1], &x) < 0 || obj_str(&e->via.array.ptr[2], &t[i].bytes, true) < 0)
                return wrong_type(c, f->key, "an array of [id, logprob, bytes]");
            t[i].id = (int32_t)i64;
            t[i].logprob = (float)x;
        }
        *(const proto_top **)p = t;
        *(uint32_t *)(base + f->off2) = n;
        return 0;
    }
    case K_PRIORITY: {
        proto_str s;
        if (obj_str(o, &s, false) < 0) return wrong_type(c, f->key, "\"interactive\" or \"bulk\"");
        int pr = proto_priority_parse(s.ptr, s.len);
        if (pr < 0) {
            seterr(c->err, c->errlen, "field '%s': unknown priority (\"interactive\" or \"bulk\")", f->key);
            return dec_fail(c, PROTO_R_OUT_OF_RANGE, f->key);
        }
        *(proto_priority *)p = (proto_priority)pr;
        return 0;
    }
    case K_MAP: return dec_sub(c, f->sub, f->n_sub, p, o, f->key);
    case K_MAPARRAY: {
        if (o->type != MSGPACK_OBJECT_ARRAY) return wrong_type(c, f->key, "an array of maps");
        uint32_t n = o->via.array.size;
        if (n > f->hi) {
            seterr(c->err, c->errlen, "field '%s': %u entries, at most %g", f->key, n, f->hi);
            return dec_fail(c, PROTO_R_TOO_MANY, f->key);
        }
        char *arr = zone_alloc(c, (size_t)n * f->sub_size);
        if (!arr) return PROTO_E_NOMEM;
        memset(arr, 0, (size_t)n * f->sub_size);
        for (uint32_t i = 0; i < n; i++) {
            int rc = dec_sub(c, f->sub, f->n_sub, arr + (size_t)i * f->sub_size, &o->via.array.ptr[i], f->key);
            if (rc < 0) return rc;
        }
        *(const char **)p = arr;
        *(uint32_t *)(base + f->off2) = n;
        return 0;
    }
    }
    return dec_fail(c, PROTO_R_MALFORMED, f->key);
}

/* A nested map: every key must be one of sub[], once; missing ones stay 0. */
static int dec_sub(dec_ctx *c, const pfield *sub, int n, char *base, const msgpack_object *o,
                   const char *key) {
    if (o->type != MSGPACK_OBJECT_MAP) return wrong_type(c, key, "a map");
    proto_fields seen = 0;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        int j = 0;
        while (j < n && !key_is(&kv->key, sub[j].key)) j++;
        if (j == n) {
            seterr(c->err, c->errlen, "field '%s': unknown key", key);
            return dec_fail(c, PROTO_R_UNKNOWN_FIELD, key);
        }
        if (seen & PROTO_HAS(j)) {
            seterr(c->err, c->errlen, "field '%s.%s': duplicate key", key, sub[j].key);
            return dec_fail(c, PROTO_R_DUPLICATE_FIELD, key);
        }
        seen |= PROTO_HAS(j);
        int rc = dec_value(c, &sub[j], base, &kv->val);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Finds the top-level type name, or PROTO_T_NONE. */
static proto_type dec_type(const msgpack_object *o) {
    proto_str s;
    if (obj_str(o, &s, false) < 0) return PROTO_T_NONE;
    for (int t = PROTO_T_NONE + 1; t < PROTO_T_COUNT; t++)
        if (s.len == strlen(types[t].name) && memcmp(s.ptr, types[t].name, s.len) == 0) return (proto_type)t;
    return PROTO_T_NONE;
}

/* Index of fid in type t's list, or -1. */
static int type_field_index(const ptype *t, const msgpack_object *key) {
    for (int i = 0; i < t->n; i++)
        if (key_is(key, fields[t->f[2 * i + 1]].key)) return i;
    return -1;
}

int proto_type_has_field(proto_type t, const char *key, size_t len) {
    if (t <= PROTO_T_NONE || t >= PROTO_T_COUNT || !key) return 0;
    for (int i = 0; i < types[t].n; i++) {
        const char *k = fields[types[t].f[2 * i + 1]].key;
        if (strlen(k) == len && memcmp(k, key, len) == 0) return 1;
    }
    return 0;
}

/* Pass 1: "t", "v", and the request id, so that even a refused message can be answered. */
static int dec_header(dec_ctx *c, const msgpack_object *top) {
    proto_msg *m = c->m;
    const msgpack_object *tv = NULL, *vv = NULL;
    for (uint32_t i = 0; i < top->via.map.size; i++) {
        const msgpack_object_kv *kv = &top->via.map.ptr[i];
        if (key_is(&kv->key, "t")) {
            if (tv) { seterr(c->err, c->errlen, "duplicate field 't'"); return dec_fail(c, PROTO_R_DUPLICATE_FIELD, "t"); }
            tv = &kv->val;
        } else if (key_is(&kv->key, "v")) {
            if (vv) { seterr(c->err, c->errlen, "duplicate field 'v'"); return dec_fail(c, PROTO_R_DUPLICATE_FIELD, "v"); }
            vv = &kv->val;
        }
    }
    if (!tv) { seterr(c->err, c->errlen, "missing message type 't'"); return PROTO_E_TYPE; }
    m->type = dec_type(tv);
    if (m->type == PROTO_T_NONE) { seterr(c->err, c->errlen, "unknown message type"); return PROTO_E_TYPE; }
    proto_type type = m->type;
    proto_msg_init(m, type); /* the type's defaults; zone is still NULL here */
    /* the id, best effort: a well-formed one is kept even if the rest is refused */
    for (uint32_t i = 0; i < top->via.map.size; i++) {
        const msgpack_object_kv *kv = &top->via.map.ptr[i];
        int fid = key_is(&kv->key, "id") ? PF_ID : key_is(&kv->key, "rid") ? PF_RID : -1;
        if (fid < 0 || type_field_index(&types[type], &kv->key) < 0) continue;
        char scratch[8];
        dec_ctx quiet = {m, scratch, sizeof(scratch)};
        if (m->has & PROTO_HAS(fid)) { m->has &= ~PROTO_HAS(fid); break; } /* duplicate: pass 2 says so */
        if (dec_value(&quiet, &fields[fid], (char *)m, &kv->val) == 0 &&
            check_field(&fields[fid], (const char *)m, NULL, 0) == 0)
            m->has |= PROTO_HAS(fid);
    }
    if (!vv || vv->type != MSGPACK_OBJECT_POSITIVE_INTEGER || vv->via.u64 != PROTO_VERSION) {
        seterr(c->err, c->errlen, "unsupported protocol version (this peer speaks v=%d)", PROTO_VERSION);
        return PROTO_E_VERSION;
    }
    return 0;
}

/* Pass 2: every other key, strictly. */
static int dec_fields(dec_ctx *c, const msgpack_object *top) {
    proto_msg *m = c->m;
    const ptype *t = &types[m->type];
    proto_fields header_ids = m->has;
    proto_fields seen = 0;
    m->fail = PROTO_R_NONE; /* pass 1's quiet id decoding may have set it */
    m->fail_field = NULL;
    for (uint32_t i = 0; i < top->via.map.size; i++) {
        const msgpack_object_kv *kv = &top->via.map.ptr[i];
        if (key_is(&kv->key, "t") || key_is(&kv->key, "v")) continue;
        int idx = type_field_index(t, &kv->key);
        if (idx < 0) {
            if (kv->key.type != MSGPACK_OBJECT_STR) {
                seterr(c->err, c->errlen, "%s: a key is not a string", t->name);
                return dec_fail(c, PROTO_R_UNKNOWN_FIELD, NULL);
            }
            /* the key as "field", printable ASCII only (the rest becomes '?'), at most 64 bytes */
            uint32_t n = kv->key.via.str.size < sizeof(m->fail_key) - 1 ? kv->key.via.str.size
                                                                        : (uint32_t)sizeof(m->fail_key) - 1;
            for (uint32_t k = 0; k < n; k++) {
                unsigned char ch = (unsigned char)kv->key.via.str.ptr[k];
                m->fail_key[k] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
            }
            m->fail_key[n] = 0;
            /* the message quotes it as valid UTF-8, cut on a character boundary: the error must encode */
            char quoted[65];
            proto_utf8_sanitize(kv->key.via.str.ptr, kv->key.via.str.size, quoted, sizeof(quoted));
            seterr(c->err, c->errlen, "%s: unknown field '%s'", t->name, quoted);
            return dec_fail(c, PROTO_R_UNKNOWN_FIELD, m->fail_key);
        }
        uint8_t fid = t->f[2 * idx + 1];
        const pfield *f = &fields[fid];
        if (seen & PROTO_HAS(fid)) {
            seterr(c->err, c->errlen, "%s: duplicate field '%s'", t->name, f->key);
            return dec_fail(c, PROTO_R_DUPLICATE_FIELD, f->key);
        }
        seen |= PROTO_HAS(fid);
        if (header_ids & PROTO_HAS(fid)) continue; /* decoded and checked in pass 1 */
        int rc = dec_value(c, f, (char *)m, &kv->val);
        if (rc < 0) return rc;
        rc = check_field(f, (const char *)m, c->err, c->errlen);
        if (rc < 0) return dec_fail(c, (proto_reason)-rc, f->key);
        m->has |= PROTO_HAS(fid);
    }
    for (int i = 0; i < t->n; i++) {
        if ((t->f[2 * i] & R) && !(m->has & PROTO_HAS(t->f[2 * i + 1]))) {
            seterr(c->err, c->errlen, "%s: missing field '%s'", t->name, fields[t->f[2 * i + 1]].key);
            return dec_fail(c, PROTO_R_MISSING_FIELD, fields[t->f[2 * i + 1]].key);
        }
    }
    if (check_message(m, c->err, c->errlen) < 0) {
        bool prompt = m->type == PROTO_T_SUBMIT || m->type == PROTO_T_REQUEST;
        return dec_fail(c, prompt ? PROTO_R_PROMPT_CHOICE : PROTO_R_MISSING_FIELD, prompt ? "prompt" : "id");
    }
    return PROTO_OK;
}

/* Fills m->fail for the statuses that are not about one field. */
static void dec_reason(proto_msg *m, int status) {
    switch (status) {
    case PROTO_E_TOO_LARGE: m->fail = PROTO_R_TOO_LARGE; break;
    case PROTO_E_MALFORMED: m->fail = PROTO_R_MALFORMED; break;
    case PROTO_E_NOT_MAP: m->fail = PROTO_R_NOT_MAP; break;
    case PROTO_E_VERSION: m->fail = PROTO_R_BAD_VERSION; break;
    case PROTO_E_TYPE: m->fail = PROTO_R_UNKNOWN_TYPE; break;
    case PROTO_E_NOMEM: m->fail = PROTO_R_INTERNAL; break;
    default:
        if (m->fail == PROTO_R_NONE) m->fail = PROTO_R_MALFORMED;
        return;
    }
    m->fail_field = NULL;
}

static int dec_all(proto_msg *m, const void *buf, size_t len, char *err, size_t errlen) {
    memset(m, 0, sizeof(*m));
    if (err && errlen) err[0] = 0;
    if (len > PROTO_MAX_MSG_BYTES) {
        seterr(err, errlen, "message of %zu bytes exceeds %u", len, PROTO_MAX_MSG_BYTES);
        return PROTO_E_TOO_LARGE;
    }
    if (len == 0) {
        seterr(err, errlen, "empty message");
        return PROTO_E_MALFORMED;
    }
    switch (proto_scan(buf, len, PROTO_MAX_DEPTH, PROTO_MAX_OBJECTS)) {
    case PROTO_SCAN_OK: break;
    case PROTO_SCAN_TOO_MANY:
        seterr(err, errlen, "more than %d msgpack objects", PROTO_MAX_OBJECTS);
        return PROTO_E_TOO_LARGE;
    case PROTO_SCAN_TOO_DEEP:
        seterr(err, errlen, "nested deeper than %d", PROTO_MAX_DEPTH);
        return PROTO_E_MALFORMED;
    case PROTO_SCAN_TRAILING:
        seterr(err, errlen, "trailing bytes after the message");
        return PROTO_E_MALFORMED;
    default:
        seterr(err, errlen, "not a complete msgpack object");
        return PROTO_E_MALFORMED;
    }
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (!zone) return PROTO_E_NOMEM;
    msgpack_object top;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack(buf, len, &off, zone, &top);
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        msgpack_zone_free(zone);
        seterr(err, errlen, "msgpack: %s", ur == MSGPACK_UNPACK_NOMEM_ERROR ? "out of memory" : "parse error");
        return ur == MSGPACK_UNPACK_NOMEM_ERROR ? PROTO_E_NOMEM : PROTO_E_MALFORMED;
    }
    int rc;
    dec_ctx c = {m, err, errlen};
    if (top.type != MSGPACK_OBJECT_MAP) {
        seterr(err, errlen, "a message must be a msgpack map");
        rc = PROTO_E_NOT_MAP;
    } else {
        rc = dec_header(&c, &top);
        if (rc == 0) rc = dec_fields(&c, &top);
    }
    /* arrays we copied live in m->zone; the msgpack objects themselves are no longer needed */
    msgpack_zone_free(zone);
    return rc;
}

int proto_decode(proto_msg *m, const void *buf, size_t len, char *err, size_t errlen) {
    int rc = dec_all(m, buf, len, err, errlen);
    if (rc < 0) dec_reason(m, rc);
    return rc;
}
