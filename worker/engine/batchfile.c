/* batchfile.c — see batchfile.h. */
#include "batchfile.h"

#include "proto_json.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void job_clear_results(batch_job *j) {
    free(j->error);
    free(j->text);
    free(j->streamed);
    free(j->tokens);
    j->error = j->text = j->streamed = NULL;
    j->tokens = NULL;
    j->text_len = j->streamed_len = j->streamed_cap = 0;
    j->n_tokens = j->prompt_tokens = j->cached_tokens = 0;
    j->submitted = j->finished = 0;
    j->logits_hash = 1469598103934665603ull;
    j->n_logits = 0;
    j->queue_ms = j->ttft_ms = j->total_ms = 0;
}

static void job_free(batch_job *j) {
    job_clear_results(j);
    free(j->id);
    free(j->prompt);
    free(j->token_ms);
    free(j->piece_end);
    free(j->prompt_ids);
    for (int i = 0; i < ENGINE_MAX_STOPS; i++) free(j->stops[i]);
}

void batchfile_free(batchfile *bf) {
    if (!bf) return;
    for (int i = 0; i < bf->n; i++) job_free(&bf->jobs[i]);
    free(bf->jobs);
    free(bf);
}

void batchfile_reset(batchfile *bf) {
    for (int i = 0; i < bf->n; i++) job_clear_results(&bf->jobs[i]);
    bf->wall_ms = 0;
    bf->peak_running = 0;
}

/* The keys gpt2-tool batch handles itself (load shaping, tests); every other key is a submit field
 * judged by the shared mapper (proto/proto_json.h). */
static const char *const batch_extra_keys[] = {"arrival_step", "cancel_after", "cancel_at_step", NULL};

/* An optional integer extra key of o into *out. 0, or -1 with err naming it. */
static int get_extra(json_t *o, const char *key, int lo, int *out, char *err, size_t errlen) {
    json_t *v = json_object_get(o, key);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > 1000000000) {
        snprintf(err, errlen, "field \"%s\": an integer in [%d, 1e9]", key, lo);
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

/* Fills job j from one JSON line. 0 or -1 with err (naming the field). */
static int job_from_json(batch_job *j, const char *line, int index, char *err, size_t errlen) {
    char idbuf[32];
    snprintf(idbuf, sizeof idbuf, "%d", index);
    proto_msg d;
    proto_msg_init(&d, PROTO_T_SUBMIT);
    d.id = (proto_cid){1, 0, {idbuf, (uint32_t)strlen(idbuf)}};
    proto_json_submit sub;
    proto_json_error e;
    json_t *o = NULL;
    if (proto_json_submit_parse(&sub, line, strlen(line), &d, batch_extra_keys, &o, &e) < 0) {
        snprintf(err, errlen, "%s", e.message);
        json_decref(o);
        return -1;
    }
    j->arrival_step = 0;
    j->cancel_after = j->cancel_at_step = -1;
    int rc = get_extra(o, "arrival_step", 0, &j->arrival_step, err, errlen);
    if (rc == 0) rc = get_extra(o, "cancel_after", -1, &j->cancel_after, err, errlen);
    if (rc == 0) rc = get_extra(o, "cancel_at_step", -1, &j->cancel_at_step, err, errlen);
    json_decref(o);
    const proto_msg *m = &sub.msg;
    char cid[PROTO_MAX_ID_BYTES + 32];
    engine_request *q = &j->req;
    if (rc < 0) goto out;
    rc = -1;
    j->id = strdup(proto_cid_str(&m->id, cid, sizeof cid));
    if (!j->id) goto oom;
    if (m->has & PROTO_HAS(PF_PROMPT)) {
        if (!(j->prompt = malloc(m->prompt.len + 1))) goto oom;
        memcpy(j->prompt, m->prompt.ptr ? m->prompt.ptr : "", m->prompt.len);
        j->prompt[m->prompt.len] = 0;
        q->prompt = j->prompt;
        q->prompt_len = m->prompt.len;
    } else {
        if (!(j->prompt_ids = malloc(sizeof(int) * (m->n_prompt_ids + 1)))) goto oom;
        for (uint32_t i = 0; i < m->n_prompt_ids; i++) j->prompt_ids[i] = m->prompt_ids[i];
        q->prompt_ids = j->prompt_ids;
        q->n_prompt_ids = (int)m->n_prompt_ids;
    }
    q->max_tokens = m->max_tokens; /* within [1, PROTO_MAX_MAX_TOKENS]: the mapper checked it */
    sampler_params_default(&q->sampling);
    q->sampling.temperature = m->temperature;
    q->sampling.top_k = m->top_k;
    q->sampling.top_p = m->top_p;
    q->sampling.min_p = m->min_p;
    q->sampling.repetition_penalty = m->repetition_penalty;
    q->sampling.presence_penalty = m->presence_penalty;
    q->sampling.frequency_penalty = m->frequency_penalty;
    q->sampling.seed = m->seed;
    q->sampling.n_bias = (int)m->n_logit_bias;
    for (uint32_t i = 0; i < m->n_logit_bias; i++) {
        q->sampling.bias_id[i] = m->logit_bias[i].id;
        q->sampling.bias[i] = m->logit_bias[i].bias;
    }
    for (uint32_t i = 0; i < m->n_stop && i < ENGINE_MAX_STOPS; i++) {
        if (!(j->stops[i] = strndup(m->stop[i].ptr, m->stop[i].len))) goto oom;
        q->stops[i] = j->stops[i];
        q->n_stops = (int)i + 1;
    }
    q->ignore_eos = m->ignore_eos;
    q->allow_special = m->allow_special;
    j->token_ms = calloc((size_t)q->max_tokens, sizeof(double));
    j->piece_end = calloc((size_t)q->max_tokens, sizeof(size_t));
    if (!j->token_ms || !j->piece_end) goto oom;
    job_clear_results(j);
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    proto_json_submit_free(&sub);
    return rc;
}

batchfile *batchfile_parse(const char *const *lines, int n, char *err, size_t errlen) {
    batchfile *bf = calloc(1, sizeof *bf);
    if (!bf || !(bf->jobs = calloc(n > 0 ? n : 1, sizeof *bf->jobs))) {
        free(bf);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        char e2[384];
        bf->n = i + 1;
        if (job_from_json(&bf->jobs[i], lines[i], i, e2, sizeof e2) != 0) {
            snprintf(err, errlen, "line %d: %s", i + 1, e2);
            batchfile_free(bf);
            return NULL;
        }
    }
    return bf;
}

batchfile *batchfile_read(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return NULL;
    }
    char **lines = NULL, *line = NULL;
    size_t cap = 0;
    int n = 0, ncap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        if (len <= 1 && (len == 0 || line[0] == '\n')) continue;
        if (n == ncap) {
            char **nl = realloc(lines, sizeof(char *) * (ncap = ncap ? ncap * 2 : 64));
            if (!nl) break;
            lines = nl;
        }
        lines[n++] = strdup(line);
    }
    free(line);
    fclose(f);
    char e2[384];
    batchfile *bf = batchfile_parse((const char *const *)lines, n, e2, sizeof e2);
    if (!bf) snprintf(err, errlen, "%s: %s", path, e2);
    for (int i = 0; i < n; i++) free(lines[i]);
    free(lines);
    return bf;
}

/* ---------------------------------------------------------------------------------------------
 * Running. */

typedef struct {
    batchfile *bf;
    double t0;
    int live;
    int *to_cancel;   /* job indexes whose cancel_after was reached during the step */
    int n_cancel;
} run_state;

static void on_token(void *user, uint64_t id, int index, int token, const char *piece, size_t len,
                     float logprob) {
    (void)token, (void)logprob;
    run_state *rs = user;
    batch_job *j = &rs->bf->jobs[id - 1];
    if (j->streamed_len + len + 1 > j->streamed_cap) {
        size_t nc = (j->streamed_len + len + 1) * 2;
        char *ns = realloc(j->streamed, nc);
        if (!ns) return;
        j->streamed = ns;
        j->streamed_cap = nc;
    }
    memcpy(j->streamed + j->streamed_len, piece, len);
    j->streamed_len += len;
    if (index < j->req.max_tokens) {
        j->token_ms[index] = now_ms() - rs->t0;
        j->piece_end[index] = j->streamed_len;
    }
    if (j->cancel_after > 0 && index + 1 == j->cancel_after) rs->to_cancel[rs->n_cancel++] = (int)(id - 1);
}

static void on_logits(void *user, uint64_t id, int index, const float *logits, int V) {
    (void)index;
    run_state *rs = user;
    batch_job *j = &rs->bf->jobs[id - 1];
    const unsigned char *p = (const unsigned char *)logits;
    uint64_t h = j->logits_hash;
    for (size_t i = 0; i < (size_t)V * sizeof(float); i++) h = (h ^ p[i]) * 1099511628211ull;
    j->logits_hash = h;
    j->n_logits++;
}

static void on_done(void *user, uint64_t id, const engine_result *r) {
    run_state *rs = user;
    batch_job *j = &rs->bf->jobs[id - 1];
    j->finished = 1;
    rs->live--;
    j->finish = r->finish;
    j->error = r->error ? strdup(r->error) : NULL;
    j->text = malloc(r->text_len + 1);
    if (j->text) {
        memcpy(j->text, r->text, r->text_len);
        j->text[r->text_len] = 0;
        j->text_len = r->text_len;
    }
    j->tokens = malloc(sizeof(int) * (r->completion_tokens + 1));
    if (j->tokens) {
        memcpy(j->tokens, r->tokens, sizeof(int) * r->completion_tokens);
        j->n_tokens = r->completion_tokens;
    }
    j->prompt_tokens = r->prompt_tokens;
    j->cached_tokens = r->cached_tokens;
    j->queue_ms = r->queue_ms;
    j->ttft_ms = r->ttft_ms;
    j->total_ms = r->total_ms;
}

static void job_refused(batch_job *j, const char *msg) {
    j->finished = 1;
    j->finish = ENGINE_FINISH_ERROR;
    j->error = strdup(msg);
    j->text = strdup("");
}

int batchfile_run_on(batchfile *bf, engine *e, int concurrency, char *err, size_t errlen) {
    (void)err, (void)errlen;
    run_state rs = {.bf = bf, .t0 = now_ms()};
    rs.to_cancel = malloc(sizeof(int) * (bf->n + 1));
    if (!rs.to_cancel) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    engine_callbacks cb = {on_token, on_done, bf->hash_logits ? on_logits : NULL, &rs};
    engine_set_callbacks(e, &cb);
    if (concurrency < 1) concurrency = 1;
    int next = 0, step = 0, done = 0;
    while (done < bf->n) {
        int may_admit = !bf->static_batching || rs.live == 0;
        while (may_admit && next < bf->n && rs.live < concurrency && bf->jobs[next].arrival_step <= step) {
            batch_job *j = &bf->jobs[next];
            engine_refusal why;
            if (engine_submit(e, (uint64_t)next + 1, &j->req, &why) != 0) {
                job_refused(j, why.message);
            } else {
                j->submitted = 1;
                rs.live++;
                if (j->cancel_after == 0) engine_cancel(e, (uint64_t)next + 1);
            }
            next++;
        }
        for (int i = 0; i < bf->n; i++)
            if (bf->jobs[i].cancel_at_step == step && bf->jobs[i].submitted && !bf->jobs[i].finished)
                engine_cancel(e, (uint64_t)i + 1);
        if (rs.live > bf->peak_running) bf->peak_running = rs.live;
        if (engine_step(e) < 0) break;
        for (int c = 0; c < rs.n_cancel; c++) engine_cancel(e, (uint64_t)rs.to_cancel[c] + 1);
        rs.n_cancel = 0;
        step++;
        done = 0;
        for (int i = 0; i < bf->n; i++) done += bf->jobs[i].finished;
    }
    bf->wall_ms = now_ms() - rs.t0;
    free(rs.to_cancel);
    return 0;
}

int batchfile_run(batchfile *bf, const gpt2_weights *w, bpe_tokenizer *tok, const engine_config *cfg,
                  int concurrency, char *err, size_t errlen) {
    engine_callbacks cb = {0};
    engine *e = engine_new(w, tok, cfg, &cb, err, errlen);
    if (!e) return -1;
    int rc = batchfile_run_on(bf, e, concurrency, err, errlen);
    engine_get_stats(e, &bf->engine_stats);
    engine_free(e);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Output. */

static json_t *job_json(const batch_job *j) {
    json_t *toks = json_array();
    for (int i = 0; i < j->n_tokens; i++) json_array_append_new(toks, json_integer(j->tokens[i]));
    json_t *o = json_pack("{s:s, s:s%, s:o, s:s, s:{s:i, s:i, s:i}, s:{s:f, s:f, s:f}}", "id", j->id,
                          "text", j->text ? j->text : "", j->text ? j->text_len : 0, "tokens", toks,
                          "finish_reason", engine_finish_name(j->finish), "usage", "prompt_tokens",
                          j->prompt_tokens, "completion_tokens", j->n_tokens, "cached_tokens", j->cached_tokens,
                          "timings", "queue_ms",
                          j->queue_ms, "ttft_ms", j->ttft_ms, "total_ms", j->total_ms);
    if (o && j->error) json_object_set_new(o, "error", json_string(j->error));
    return o;
}

int batchfile_write(const batchfile *bf, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create", path);
        return -1;
    }
    for (int i = 0; i < bf->n; i++) {
        json_t *o = job_json(&bf->jobs[i]);
        char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        if (s) fprintf(f, "%s\n", s);
        free(s);
        json_decref(o);
    }
    if (fclose(f) != 0) {
        snprintf(err, errlen, "%s: write failed", path);
        return -1;
    }
    return 0;
}

void batchfile_summary(const batchfile *bf, FILE *f) {
    long toks = 0;
    for (int i = 0; i < bf->n; i++) toks += bf->jobs[i].n_tokens;
    fprintf(f, "%d requests, %ld tokens generated in %.2f s: %.1f tokens/s (peak %d live)\n", bf->n,
            toks, bf->wall_ms / 1e3, toks / (bf->wall_ms / 1e3 + 1e-9), bf->peak_running);
    const engine_stats *s = &bf->engine_stats;
    if (s->n_slots)
        fprintf(f, "KV cache: %d pages of %d positions (%.0f MB mapped, resident as used), up to %d running; "
                "%llu steps, %llu tokens prefilled, %llu generated; prefix cache %llu of %llu prompt tokens\n",
                s->kv.pages_total, KV_PAGE, s->kv_bytes / 1048576.0, s->n_slots, (unsigned long long)s->steps,
                (unsigned long long)s->tokens_prefilled, (unsigned long long)s->tokens_generated,
                (unsigned long long)s->kv.hit_tokens, (unsigned long long)s->kv.lookup_tokens);
}
