/* test_engine.c — continuous batching: batch invariance and the scheduler's edge cases.
 *
 * Batch invariance: the 64 prompts of workload/emails.jsonl on a small random model, with greedy
 * and seeded sampling (temperature, top-k, top-p, min-p, penalties), staggered arrival steps, stop
 * strings and cancellations, are run (a) one at a time with small prefill chunks, (b) 64 at once,
 * (c) 8 at once with other chunking; every request's text, tokens, finish reason and the hash of
 * every logits row it was sampled from must be identical in all three, and crash replays
 * (resume_ids) continue exactly. The same for bf16 and int8 weights (alone, 64 at once, replays).
 * Edge cases: a prompt exactly at the context limit, one past it, max_tokens reaching the end of
 * the context, cancel before admission / during prefill / during decode, a slot reused at once
 * after a cancel, and requests refused at submit with a specific error. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batchfile.h"
#include "check.h"
#include "checkpoint.h"
#include "engine.h"

static char model_dir[1024];

/* ---------------------------------------------------------------------------------------------
 * Batch invariance over the email workload. */

static char **read_lines(const char *path, int *n) {
    FILE *f = fopen(path, "r");
    char **lines = calloc(256, sizeof(char *)), *line = NULL;
    size_t cap = 0;
    *n = 0;
    while (f && *n < 256 && getline(&line, &cap, f) > 1) lines[(*n)++] = strdup(line);
    free(line);
    if (f) fclose(f);
    return lines;
}

/* Adds sampling, arrival and cancel fields to email line i; stop (may be NULL) as a stop string. */
static char *decorate(const char *line, int i, const char *stop, int arrival) {
    char extra[512] = "";
    int k = 0;
    k += snprintf(extra + k, sizeof extra - k, "\"arrival_step\": %d, \"seed\": %d", arrival, 1000 + i);
    switch (i % 6) {
    case 0: break; /* greedy */
    case 1: k += snprintf(extra + k, sizeof extra - k, ", \"temperature\": 0.9"); break;
    case 2: k += snprintf(extra + k, sizeof extra - k, ", \"temperature\": 0.8, \"top_p\": 0.9"); break;
    case 3: k += snprintf(extra + k, sizeof extra - k, ", \"temperature\": 1.0, \"top_k\": 40, \"repetition_penalty\": 1.2"); break;
    case 4: k += snprintf(extra + k, sizeof extra - k, ", \"temperature\": 0.7, \"min_p\": 0.05, \"presence_penalty\": 0.5, \"frequency_penalty\": 0.3"); break;
    case 5: k += snprintf(extra + k, sizeof extra - k, ", \"temperature\": 0.0, \"frequency_penalty\": 1.0"); break;
    }
    if (i % 11 == 3) k += snprintf(extra + k, sizeof extra - k, ", \"cancel_after\": %d", 3 + i % 5);
    if (stop) {
        k += snprintf(extra + k, sizeof extra - k, ", \"stop\": [\"");
        for (const char *s = stop; *s && k < (int)sizeof extra - 16; s++) {
            unsigned char ch = (unsigned char)*s;
            if (ch == '"' || ch == '\\') k += snprintf(extra + k, sizeof extra - k, "\\%c", ch);
            else if (ch < 0x20) k += snprintf(extra + k, sizeof extra - k, "\\u%04x", ch);
            else extra[k++] = (char)ch, extra[k] = 0;
        }
        k += snprintf(extra + k, sizeof extra - k, "\"]");
    }
    /* shorten max_tokens to keep the test quick: the workload's value / 4 */
    const char *mt = strstr(line, "\"max_tokens\": ");
    int max_tokens = mt ? atoi(mt + 14) / 4 : 32;
    /* the line without its own max_tokens (batch lines refuse a key given twice) */
    json_t *o = json_loads(line, 0, NULL);
    json_object_del(o, "max_tokens");
    char *base = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    size_t len = base ? strlen(base) : 0;
    while (len && (base[len - 1] == '\n' || base[len - 1] == '}')) len--;
    char *out = malloc(len + strlen(extra) + 64);
    memcpy(out, base, len);
    free(base);
    sprintf(out + len, ", %s, \"max_tokens\": %d}", extra, max_tokens);
    return out;
}

static batchfile *make_batch(char **lines, int n, char **stops, int staggered) {
    char **dec = calloc(n > 0 ? n : 1, sizeof(char *));
    for (int i = 0; i < n; i++) dec[i] = decorate(lines[i], i, stops ? stops[i] : NULL, staggered ? (i * 5) % 23 : 0);
    char err[512];
    batchfile *bf = batchfile_parse((const char *const *)dec, n, err, sizeof err);
    if (!bf) printf("batch parse: %s\n", err);
    else bf->hash_logits = 1;
    for (int i = 0; i < n; i++) free(dec[i]);
    free(dec);
    return bf;
}

/* The model's weights (plain, and with the checkpoint kept for OpenBLAS mode) and tokenizer, loaded
 * once by main. */
static gpt2_weights *g_weights, *g_weights_blas;
static gpt2_weights *g_run; /* the weights run_batch uses (the format under test) */
static bpe_tokenizer *g_tok;

/* engine_submit with the refusal's message into err. */
static int submit(engine *e, uint64_t id, const engine_request *q, char *err, size_t errlen) {
    engine_refusal why;
    int rc = engine_submit(e, id, q, &why);
    if (rc != 0) snprintf(err, errlen, "%s", why.message);
    return rc;
}

static int run_batch_mode(batchfile *bf, int concurrency, int slots, int max_batch_tokens, int blas) {
    engine_config cfg = {.n_slots = slots, .n_ctx = 0, .max_batch_tokens = max_batch_tokens, .use_blas = blas};
    char err[512];
    int rc = batchfile_run(bf, blas ? g_weights_blas : g_run, g_tok, &cfg, concurrency, err, sizeof err);
    if (rc != 0) printf("run: %s\n", err);
    return rc;
}

static int run_batch(batchfile *bf, int concurrency, int slots, int max_batch_tokens) {
    return run_batch_mode(bf, concurrency, slots, max_batch_tokens, 0);
}

static int same_job(const batch_job *a, const batch_job *b) {
    return a->finish == b->finish && a->n_tokens == b->n_tokens && a->text_len == b->text_len &&
           memcmp(a->text, b->text, a->text_len) == 0 &&
           memcmp(a->tokens, b->tokens, sizeof(int) * a->n_tokens) == 0 &&
           a->logits_hash == b->logits_hash && a->n_logits == b->n_logits;
}

/* Crash replay: the same request resubmitted with the first k generated tokens as resume_ids
 * continues exactly: the rest of the tokens, the finish reason and the final text are the alone
 * run's, and the first run's pieces for tokens < k followed by the replay's pieces give the text. */
static void test_resume(char **lines, int n, char **stops, batchfile *alone, int stride, const char *fmt) {
    int cases = 0, bad = 0;
    for (int i = 0; i < n; i += stride) {
        batch_job *a = &alone->jobs[i];
        if (a->finish == ENGINE_FINISH_CANCELLED || a->n_tokens < 3) continue;
        int ks[3] = {1, a->n_tokens / 2, a->n_tokens - 1};
        for (int c = 0; c < 3; c++) {
            int k = ks[c];
            char *line = decorate(lines[i], i, stops ? stops[i] : NULL, 0), err[256];
            batchfile *r = batchfile_parse((const char *const *)&line, 1, err, sizeof err);
            free(line);
            if (!r) continue;
            r->jobs[0].req.resume_ids = a->tokens;
            r->jobs[0].req.n_resume_ids = k;
            run_batch(r, 1, 1, 16);
            batch_job *b = &r->jobs[0];
            size_t pre = a->piece_end[k - 1];
            int ok = b->finish == a->finish && b->n_tokens == a->n_tokens &&
                     memcmp(b->tokens, a->tokens, sizeof(int) * a->n_tokens) == 0 &&
                     b->text_len == a->text_len && memcmp(b->text, a->text, a->text_len) == 0 &&
                     pre + b->streamed_len == a->text_len && memcmp(a->text, a->streamed, pre) == 0 &&
                     memcmp(a->text + pre, b->streamed, b->streamed_len) == 0;
            if (!ok)
                printf("resume %s at %d of %d: finish %s/%s, tokens %d/%d, text %zu/%zu, pieces %zu+%zu\n",
                       a->id, k, a->n_tokens, engine_finish_name(b->finish), engine_finish_name(a->finish),
                       b->n_tokens, a->n_tokens, b->text_len, a->text_len, pre, b->streamed_len);
            bad += !ok;
            cases++;
            batchfile_free(r);
        }
    }
    printf("%s crash replay: %d resumed requests (k = 1, n/2, n-1), %d differ from the undisturbed run\n", fmt, cases,
           bad);
    check(cases >= 90 / stride && bad == 0, "%s: resumed requests continue exactly (%d of %d differ)", fmt, bad, cases);
}

/* The email workload on weights w (format fmt): alone, 64 at once, (full: 8 at once) and crash
 * replays all identical; full adds the OpenBLAS sensitivity check. Returns the alone run (the caller
 * frees it), or NULL. */
static batchfile *test_invariance(gpt2_weights *w, const char *fmt, int full) {
    g_run = w;
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/emails.jsonl", getenv("GPT2D_ROOT") ? getenv("GPT2D_ROOT") : ".");
    int n = 0;
    char **lines = read_lines(path, &n);
    check(n == 64, "64 email prompts read from %s (got %d)", path, n);
    if (n == 0) return NULL;
    /* pass 0: derive stop strings from an undisturbed run: a 4-byte piece from the middle of the
     * text of every fourth request, so those requests really do stop */
    batchfile *probe = make_batch(lines, n, NULL, 0);
    char **stops = calloc(n, sizeof(char *));
    if (probe && run_batch(probe, 64, 64, 256) == 0) {
        for (int i = 0; i < n; i++) {
            batch_job *j = &probe->jobs[i];
            if (i % 4 == 2 && j->text_len >= 12) {
                size_t at = j->text_len / 2;
                while (at < j->text_len && ((unsigned char)j->text[at] & 0xC0) == 0x80) at++;
                if (at + 4 <= j->text_len) stops[i] = strndup(j->text + at, 4);
            }
        }
    }
    batchfile_free(probe);
    batchfile *alone = make_batch(lines, n, stops, 0);
    batchfile *crowd = make_batch(lines, n, stops, 1);
    batchfile *eight = make_batch(lines, n, stops, 1);
    check(alone && crowd && eight, "batches built");
    if (!alone || !crowd || !eight) return NULL;
    check(run_batch(alone, 1, 1, 7) == 0, "%s: run alone (1 at a time, prefill chunks of 7)", fmt);
    check(run_batch(crowd, 64, 64, 256) == 0, "%s: run 64 concurrent (staggered arrivals)", fmt);
    if (full) check(run_batch(eight, 8, 8, 40) == 0, "run 8 concurrent (prefill chunks of <= 40)");
    int mismatches = 0, stopped = 0, cancelled = 0, sampled = 0, tokens = 0;
    for (int i = 0; i < n; i++) {
        batch_job *a = &alone->jobs[i], *c = &crowd->jobs[i], *e = &eight->jobs[i];
        if (!same_job(a, c) || (full && !same_job(a, e))) {
            mismatches++;
            printf("mismatch %s: alone %d tokens (%s) hash %016llx; 64: %d (%s) %016llx; 8: %d (%s) %016llx\n",
                   a->id, a->n_tokens, engine_finish_name(a->finish), (unsigned long long)a->logits_hash,
                   c->n_tokens, engine_finish_name(c->finish), (unsigned long long)c->logits_hash,
                   e->n_tokens, engine_finish_name(e->finish), (unsigned long long)e->logits_hash);
        }
        check(a->streamed_len == a->text_len && memcmp(a->streamed, a->text, a->text_len) == 0,
              "%s: streamed pieces concatenate to the final text", a->id);
        if (stops[i]) {
            check(a->finish == ENGINE_FINISH_STOP, "%s: stops at its stop string", a->id);
            check(!strstr(a->text, stops[i]), "%s: the stop string is not in the text", a->id);
        }
        stopped += a->finish == ENGINE_FINISH_STOP;
        cancelled += a->finish == ENGINE_FINISH_CANCELLED;
        sampled += i % 6 != 0 && i % 6 != 5;
        tokens += a->n_tokens;
    }
    printf("%s invariance: %d requests (%d sampled, %d stopped, %d cancelled, %d tokens), "
           "mismatches alone vs 64%s: %d; peak live %d\n",
           fmt, n, sampled, stopped, cancelled, tokens, full ? " vs 8" : "", mismatches, crowd->peak_running);
    check(mismatches == 0, "%s: every request identical alone, among 64%s (%d mismatches)", fmt,
          full ? " and among 8" : "", mismatches);
    check(stopped >= 10 && cancelled >= 4, "the mix really has stops (%d) and cancels (%d)", stopped, cancelled);
    check(crowd->peak_running >= 32, "the crowd run really ran many at once (peak %d)", crowd->peak_running);
    test_resume(lines, n, stops, alone, full ? 3 : 6, fmt);
    batchfile_free(crowd), batchfile_free(eight);
    if (!full) goto out;

    /* the check is sensitive: OpenBLAS sgemm for multi-row matmuls (not batch-invariant) must
     * make some logits rows differ from the alone run */
    batchfile *blas = make_batch(lines, n, stops, 1);
    int blas_diff = 0;
    if (blas && run_batch_mode(blas, 64, 64, 256, 1) == 0)
        for (int i = 0; i < n; i++) blas_diff += !same_job(&alone->jobs[i], &blas->jobs[i]);
    printf("sensitivity: with OpenBLAS sgemm (not invariant) %d of %d requests differ from alone\n", blas_diff, n);
    check(blas_diff > 0, "the invariance check detects a non-invariant matmul");
    batchfile_free(blas);
out:
    for (int i = 0; i < n; i++) free(lines[i]), free(stops[i]);
    free(lines), free(stops);
    return alone;
}

/* bf16 and int8 (forced onto the AVX2 baseline kernels; test_mm shows every family gives the same
 * bits): the same invariance, and they really are other weights (their greedy logits differ from
 * fp32's, their fingerprints name them). */
static void test_formats(batchfile *f32_alone) {
    static const char *const fmts[] = {"bf16", "int8"}, *const isas[] = {NULL, "avx2"}, *const tags[] = {"bf16/", "i8/"};
    for (int f = 0; f < 2; f++) {
        char err[512];
        gpt2_weights_opts o = {.weights = fmts[f], .isa = isas[f]};
        gpt2_weights *w = gpt2_weights_load(model_dir, &o, err, sizeof err);
        check(w && strncmp(gpt2_weights_fingerprint(w), tags[f], strlen(tags[f])) == 0, "%s weights load: %s", fmts[f],
              w ? gpt2_weights_fingerprint(w) : err);
        if (!w) continue;
        batchfile *alone = test_invariance(w, fmts[f], 0);
        int differ = 0;
        for (int i = 0; alone && f32_alone && i < alone->n; i++)
            differ += alone->jobs[i].logits_hash != f32_alone->jobs[i].logits_hash;
        check(differ > 0, "%s: logits differ from fp32's (%d of 64 requests): the format is really in use", fmts[f], differ);
        batchfile_free(alone);
        gpt2_weights_free(w);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Edge cases, on the engine API directly. */

typedef struct {
    int n_done;
    uint64_t last_id;
    engine_result last;
    int tokens[4096];
    int n_tokens_seen[16];
} edge_state;

static void edge_token(void *u, uint64_t id, int index, int token, const char *p, size_t n, float lp) {
    (void)index, (void)p, (void)n, (void)lp;
    edge_state *s = u;
    if (id < 16) s->n_tokens_seen[id]++;
    (void)token;
}
static void edge_done(void *u, uint64_t id, const engine_result *r) {
    edge_state *s = u;
    s->n_done++;
    s->last_id = id;
    s->last = *r;
    s->last.text = NULL;
    s->last.tokens = NULL;
    s->last.error = NULL;
}

static engine_request ids_request(const int *ids, int n, int max_tokens) {
    engine_request q = {0};
    q.prompt_ids = ids;
    q.n_prompt_ids = n;
    q.max_tokens = max_tokens;
    q.ignore_eos = 1;
    sampler_params_default(&q.sampling);
    return q;
}

static int run_until_done(engine *e, edge_state *s, int want_done, int max_steps) {
    for (int i = 0; i < max_steps && s->n_done < want_done; i++)
        if (engine_step(e) < 0) return -1;
    return s->n_done >= want_done ? 0 : -1;
}

static void test_edges(void) {
    edge_state s = {0};
    engine_callbacks cb = {edge_token, edge_done, NULL, &s};
    engine_config cfg = {.n_slots = 1, .n_ctx = 64, .max_batch_tokens = 16};
    char err[512];
    engine *e = engine_new(g_weights, g_tok, &cfg, &cb, err, sizeof err);
    check(e != NULL, "engine with 1 slot, ctx 64: %s", e ? "ok" : err);
    if (!e) return;
    int ids[200];
    for (int i = 0; i < 200; i++) ids[i] = (i * 7919) % 50000;

    /* a prompt exactly at the context limit: accepted, one token, finish length */
    engine_request q = ids_request(ids, 64, 10);
    check(submit(e, 1, &q, err, sizeof err) == 0, "prompt of exactly ctx tokens accepted (%s)", err);
    check(run_until_done(e, &s, 1, 100) == 0 && s.last.completion_tokens == 1 &&
              s.last.finish == ENGINE_FINISH_CTX && strcmp(engine_finish_name(s.last.finish), "length") == 0,
          "prompt at the limit: one token then 'length' (got %d tokens, %s)", s.last.completion_tokens,
          engine_finish_name(s.last.finish));
    /* one past the limit: refused at submit */
    q = ids_request(ids, 65, 10);
    err[0] = 0;
    check(submit(e, 2, &q, err, sizeof err) != 0 && strstr(err, "context"),
          "prompt of ctx+1 tokens refused with a context error ('%s')", err);
    /* max_tokens beyond the context: ends at the context end */
    q = ids_request(ids, 10, 1000);
    s.n_done = 0;
    check(submit(e, 3, &q, err, sizeof err) == 0, "long max_tokens accepted");
    check(run_until_done(e, &s, 1, 200) == 0 && s.last.completion_tokens == 64 - 10 + 1 &&
              s.last.finish == ENGINE_FINISH_CTX,
          "max_tokens reaching the context end: %d tokens (want 55), %s", s.last.completion_tokens,
          engine_finish_name(s.last.finish));

    /* cancel during prefill: a 60-token prompt in chunks of 16 */
    s.n_done = 0;
    q = ids_request(ids, 60, 5);
    submit(e, 4, &q, err, sizeof err);
    engine_step(e);
    engine_stats st;
    engine_get_stats(e, &st);
    check(st.slots_used == 1 && s.n_done == 0 && st.tokens_prefilled == 64 + 10 + 16,
          "prefilling holds the slot (%d used, %llu prefilled)", st.slots_used, (unsigned long long)st.tokens_prefilled);
    check(engine_cancel(e, 4) == 0, "cancel during prefill accepted");
    engine_step(e);
    engine_get_stats(e, &st);
    check(s.n_done == 1 && s.last_id == 4 && s.last.finish == ENGINE_FINISH_CANCELLED &&
              s.last.completion_tokens == 0 && st.slots_used == 0,
          "cancel during prefill ends it within one step and frees the slot");

    /* cancel during decode, with another request waiting: the slot is reused at once */
    s.n_done = 0;
    q = ids_request(ids, 8, 50);
    engine_request q2 = ids_request(ids + 20, 8, 6);
    submit(e, 5, &q, err, sizeof err);
    submit(e, 6, &q2, err, sizeof err);
    engine_request q3 = ids_request(ids + 40, 8, 6);
    submit(e, 7, &q3, err, sizeof err);
    /* cancel before admission: 7 waits behind 5 and 6 */
    check(engine_cancel(e, 7) == 0 && s.n_done == 1 && s.last_id == 7 &&
              s.last.finish == ENGINE_FINISH_CANCELLED && s.last.completion_tokens == 0,
          "cancel before admission ends the request at once");
    for (int i = 0; i < 3; i++) engine_step(e); /* prefill + first token, then two decodes */
    check(s.n_tokens_seen[5] == 3 && s.n_tokens_seen[6] == 0, "5 decodes while 6 waits (%d, %d)",
          s.n_tokens_seen[5], s.n_tokens_seen[6]);
    engine_cancel(e, 5);
    engine_step(e); /* 5 is reaped, 6 admitted and prefilled in the same step */
    engine_get_stats(e, &st);
    check(s.last_id == 5 && s.last.finish == ENGINE_FINISH_CANCELLED && s.last.completion_tokens == 3,
          "cancel during decode: finish cancelled with the 3 tokens streamed");
    check(s.n_tokens_seen[6] == 1 && st.slots_used == 1, "the freed slot is reused in the same step");
    check(run_until_done(e, &s, 3, 50) == 0 && s.last_id == 6 && s.last.completion_tokens == 6,
          "the request admitted into the reused slot completes");
    check(engine_cancel(e, 99) == -1, "cancel of an unknown id is refused");

    /* refused at submit, each with its own message */
    struct {
        engine_request q;
        const char *want;
    } bad[6];
    for (int i = 0; i < 6; i++) bad[i].q = ids_request(ids, 4, 4);
    bad[0].q.max_tokens = 0, bad[0].want = "max_tokens";
    bad[1].q.sampling.temperature = -1, bad[1].want = "temperature";
    bad[2].q.sampling.top_p = 1.5f, bad[2].want = "top_p";
    bad[3].q.n_prompt_ids = 0, bad[3].want = "empty";
    int bad_ids[2] = {5, 60000};
    bad[4].q.prompt_ids = bad_ids, bad[4].q.n_prompt_ids = 2, bad[4].want = "60000";
    bad[5].q.prompt_ids = NULL, bad[5].q.prompt = "\xff\xfe", bad[5].q.prompt_len = 2, bad[5].want = "UTF-8";
    for (int i = 0; i < 6; i++) {
        err[0] = 0;
        int rc = submit(e, 100 + i, &bad[i].q, err, sizeof err);
        check(rc != 0 && strstr(err, bad[i].want), "bad request %d refused mentioning '%s' (got '%s')", i,
              bad[i].want, err);
    }
    /* the same refusals, typed: the code and the field at fault, no English to parse */
    static const struct {
        engine_error code;
        const char *field;
    } typed[6] = {{ENGINE_E_PARAM, "max_tokens"}, {ENGINE_E_PARAM, "temperature"}, {ENGINE_E_PARAM, "top_p"},
                  {ENGINE_E_EMPTY_PROMPT, "prompt_ids"}, {ENGINE_E_TOKEN_RANGE, "prompt_ids"},
                  {ENGINE_E_BAD_UTF8, "prompt"}};
    for (int i = 0; i < 6; i++) {
        engine_refusal why;
        int rc = engine_submit(e, 200 + i, &bad[i].q, &why);
        check(rc == (int)typed[i].code && why.code == typed[i].code && why.field &&
                  strcmp(why.field, typed[i].field) == 0,
              "bad request %d: %s on %s (got %s on %s)", i, engine_error_name(typed[i].code), typed[i].field,
              engine_error_name(why.code), why.field ? why.field : "-");
    }
    engine_refusal why;
    q = ids_request(ids, 65, 10);
    check(engine_submit(e, 300, &q, &why) == ENGINE_E_PROMPT_TOO_LONG && strcmp(why.field, "prompt_ids") == 0,
          "ctx+1 prompt: prompt_too_long on prompt_ids (got %s)", engine_error_name(why.code));
    q = ids_request(ids, 4, 4);
    check(engine_submit(e, 301, &q, &why) == 0 && engine_submit(e, 301, &q, &why) == ENGINE_E_DUPLICATE_ID,
          "a live id again: duplicate_id");
    engine_cancel(e, 301);
    check(engine_n_ctx(e) == 64 && engine_n_vocab(e) == 50257, "accessors: n_ctx %d, n_vocab %d",
          engine_n_ctx(e), engine_n_vocab(e));
    check(!engine_has_work(e), "nothing left running");
    engine_free(e);
}

int main(void) {
    const char *tmp = getenv("GPT2D_TMP") ? getenv("GPT2D_TMP") : "/tmp";
    const char *root = getenv("GPT2D_ROOT") ? getenv("GPT2D_ROOT") : ".";
    snprintf(model_dir, sizeof model_dir, "%s/model-engine-small", tmp);
    gpt2_config c = {.n_layer = 2, .n_embd = 128, .n_head = 4, .n_ctx = 512, .n_vocab = 50257, .ln_eps = 1e-5f};
    char tokdir[1024], err[512];
    snprintf(tokdir, sizeof tokdir, "%s/data/gpt2-tokenizer", root);
    check(ckpt_write_random(model_dir, &c, 3, tokdir, err, sizeof err) == 0, "small model written");
    gpt2_weights_opts keep = {.keep_checkpoint = 1};
    g_weights = gpt2_weights_load(model_dir, NULL, err, sizeof err);
    g_weights_blas = g_weights ? gpt2_weights_load(model_dir, &keep, err, sizeof err) : NULL;
    g_tok = g_weights_blas ? bpe_load(model_dir, err, sizeof err) : NULL;
    check(g_tok != NULL, "weights and tokenizer load: %s", g_tok ? "ok" : err);
    if (!g_tok) return check_done("test_engine");
    test_edges();
    batchfile *f32_alone = test_invariance(g_weights, "fp32", 1);
    test_formats(f32_alone);
    batchfile_free(f32_alone);
    bpe_free(g_tok);
    gpt2_weights_free(g_weights_blas);
    gpt2_weights_free(g_weights);
    return check_done("test_engine");
}
