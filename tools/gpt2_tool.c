/* gpt2-tool — the offline utility: make models, tokenize, inspect logits, generate, run batches.
 *
 *   gpt2-tool mkmodel --out DIR --layers L --embd D --heads H --ctx C [--vocab V] [--seed S]
 *   gpt2-tool info --model DIR                            validate a model directory
 *   gpt2-tool tokenize --model DIR [--allow-special]      text on stdin -> ids on stdout
 *   gpt2-tool detokenize --model DIR                      ids on stdin -> exact bytes on stdout
 *   gpt2-tool logits --model DIR --ids 464,2068 [--out FILE]
 *   gpt2-tool generate --model DIR --prompt TEXT -n N [sampling flags]
 *   gpt2-tool batch --model DIR --input IN.jsonl --concurrency N --output OUT.jsonl
 * Sampling flags: --temperature T --top-k K --top-p P --min-p P --repetition-penalty R
 *   --presence-penalty P --frequency-penalty F --seed S --stop STR (repeatable) --ignore-eos
 *   --logit-bias ID:VALUE (repeatable). Engine flags: proto/eopt.h's table (the same as gpt2d's and
 *   gpt2d-worker's: --max-running --kv-budget-mb --prefix-cache --kv-dtype --slots --ctx
 *   --max-batch-tokens --threads --blas --weights-cache --isa ...). Exit status: 0 success, 1 runtime failure, 2 bad usage. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "batchfile.h"
#include "bpe.h"
#include "checkpoint.h"
#include "cpu.h"
#include "engine.h"
#include "eopt.h"
#include "gpt2.h"
#include "kv.h"
#include "matmul.h"
#include "proto_version.h"

#ifndef GPT2D_DATADIR
#define GPT2D_DATADIR "data"
#endif

/* ---------------------------------------------------------------------------------------------
 * Flags. */

typedef struct {
    int argc;
    char **argv;
} args;

static void usage(void) {
    fputs("usage: gpt2-tool mkmodel|info|tokenize|detokenize|logits|generate|batch [flags]\n"
          "  mkmodel    --out DIR --layers L --embd D --heads H --ctx C [--vocab 50257] [--seed S]\n"
          "             [--tokenizer DIR]\n"
          "  info       --model DIR                     (validate and print the shape)\n"
          "  tokenize   --model DIR [--allow-special]   (text on stdin, ids on stdout)\n"
          "  detokenize --model DIR                     (ids on stdin, bytes on stdout)\n"
          "  logits     --model DIR --ids 464,2068,7586 [--out FILE]\n"
          "  generate   --model DIR --prompt TEXT -n N [sampling flags] [engine flags]\n"
          "  batch      --model DIR --input IN.jsonl [--concurrency N] --output OUT.jsonl\n"
          "sampling: --temperature T --top-k K --top-p P --min-p P --repetition-penalty R\n"
          "          --presence-penalty P --frequency-penalty F --seed S --stop STR (repeatable)\n"
          "          --ignore-eos --logit-bias ID:VALUE (repeatable) --allow-special\n"
          "engine (generate, batch, logits):\n",
          stderr);
    eopt_usage(stderr);
}

/* The value of flag `name` (last occurrence), or NULL. */
static const char *flag(const args *a, const char *name) {
    const char *v = NULL;
    for (int i = 2; i + 1 < a->argc; i++)
        if (strcmp(a->argv[i], name) == 0) v = a->argv[i + 1];
    return v;
}

static int has_flag(const args *a, const char *name) {
    for (int i = 2; i < a->argc; i++)
        if (strcmp(a->argv[i], name) == 0) return 1;
    return 0;
}

/* Parses an integer flag into *out (default kept when absent). -1 on a malformed value. */
static int flag_int(const args *a, const char *name, long *out) {
    const char *v = flag(a, name);
    if (!v) return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v) {
        fprintf(stderr, "gpt2-tool: %s expects an integer, got '%s'\n", name, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int flag_float(const args *a, const char *name, float *out) {
    const char *v = flag(a, name);
    if (!v) return 0;
    char *end;
    float x = strtof(v, &end);
    if (*end || end == v) {
        fprintf(stderr, "gpt2-tool: %s expects a number, got '%s'\n", name, v);
        return -1;
    }
    *out = x;
    return 0;
}

static const char *need(const args *a, const char *name) {
    const char *v = flag(a, name);
    if (!v) fprintf(stderr, "gpt2-tool %s: %s is required\n", a->argv[1], name);
    return v;
}

/* Fills sampling parameters and stop strings from flags. -1 on a malformed flag. */
static int parse_sampling(const args *a, engine_request *q) {
    sampler_params *p = &q->sampling;
    sampler_params_default(p);
    long seed = 0, top_k = 0;
    if (flag_float(a, "--temperature", &p->temperature) || flag_int(a, "--top-k", &top_k) ||
        flag_float(a, "--top-p", &p->top_p) || flag_float(a, "--min-p", &p->min_p) ||
        flag_float(a, "--repetition-penalty", &p->repetition_penalty) ||
        flag_float(a, "--presence-penalty", &p->presence_penalty) ||
        flag_float(a, "--frequency-penalty", &p->frequency_penalty) || flag_int(a, "--seed", &seed))
        return -1;
    p->top_k = (int)top_k;
    p->seed = (uint64_t)seed;
    for (int i = 2; i + 1 < a->argc; i++) {
        if (strcmp(a->argv[i], "--stop") == 0) {
            if (q->n_stops >= ENGINE_MAX_STOPS) {
                fprintf(stderr, "gpt2-tool: at most %d --stop\n", ENGINE_MAX_STOPS);
                return -1;
            }
            q->stops[q->n_stops++] = a->argv[i + 1];
        } else if (strcmp(a->argv[i], "--logit-bias") == 0) {
            int id;
            float v;
            if (sscanf(a->argv[i + 1], "%d:%f", &id, &v) != 2 || p->n_bias >= SAMPLER_MAX_BIAS) {
                fprintf(stderr, "gpt2-tool: --logit-bias expects ID:VALUE\n");
                return -1;
            }
            p->bias_id[p->n_bias] = id;
            p->bias[p->n_bias++] = v;
        }
    }
    q->ignore_eos = has_flag(a, "--ignore-eos");
    q->allow_special = has_flag(a, "--allow-special");
    return 0;
}

/* The engine flags (eopt.h's table) among the command's flags into c and wo. -1 on a bad value. */
static int parse_engine(const args *a, engine_config *c, gpt2_weights_opts *wo) {
    eopt_values v;
    eopt_defaults(&v);
    for (int i = 2; i < a->argc; i++) {
        char err[256];
        if (eopt_parse_arg(&v, a->argc, a->argv, &i, err, sizeof err) < 0) {
            fprintf(stderr, "gpt2-tool: %s\n", err);
            return -1;
        }
    }
    engine_options_apply(&v, c, wo);
    return 0;
}

/* The weights and the tokenizer of a model directory. */
typedef struct {
    gpt2_weights *w;
    bpe_tokenizer *tok;
} loaded;

static int load_model(const char *dir, const gpt2_weights_opts *wo, loaded *m, char *err, size_t errlen) {
    m->tok = NULL;
    if (!(m->w = gpt2_weights_load(dir, wo, err, errlen))) return -1;
    if (!(m->tok = bpe_load(dir, err, errlen))) {
        gpt2_weights_free(m->w);
        m->w = NULL;
        return -1;
    }
    return 0;
}

static void unload_model(loaded *m) {
    bpe_free(m->tok);
    gpt2_weights_free(m->w);
}

/* ---------------------------------------------------------------------------------------------
 * mkmodel, tokenize, detokenize, logits. */

/* The tokenizer files mkmodel copies: the source tree's data/ (compiled in), else an installed
 * copy at <dir of this executable>/../share/gpt2d/gpt2-tokenizer. */
static const char *default_tokenizer_dir(char *buf, size_t cap) {
    const char *built = GPT2D_DATADIR "/gpt2-tokenizer";
    snprintf(buf, cap, "%s/vocab.json", built);
    if (access(buf, R_OK) == 0) return built;
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return built;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(buf, cap, "%s/../share/gpt2d/gpt2-tokenizer", exe);
    return buf;
}

static int cmd_mkmodel(const args *a) {
    gpt2_config c = {.n_vocab = 50257, .ln_eps = 1e-5f};
    long L = 0, D = 0, H = 0, T = 0, V = 50257, seed = 0;
    const char *out = need(a, "--out");
    if (!out || flag_int(a, "--layers", &L) || flag_int(a, "--embd", &D) ||
        flag_int(a, "--heads", &H) || flag_int(a, "--ctx", &T) || flag_int(a, "--vocab", &V) ||
        flag_int(a, "--seed", &seed))
        return 2;
    c.n_layer = (int)L;
    c.n_embd = (int)D;
    c.n_head = (int)H;
    c.n_ctx = (int)T;
    c.n_vocab = (int)V;
    char found[4200];
    const char *tokdir = flag(a, "--tokenizer");
    if (!tokdir) tokdir = default_tokenizer_dir(found, sizeof found);
    char err[512];
    if (ckpt_write_random(out, &c, (uint64_t)seed, tokdir, err, sizeof err) != 0) {
        fprintf(stderr, "gpt2-tool mkmodel: %s\n", err);
        return 1;
    }
    fprintf(stderr, "gpt2-tool mkmodel: wrote %s (%d layers, %d wide, %d heads, ctx %d, seed %ld)\n",
            out, c.n_layer, c.n_embd, c.n_head, c.n_ctx, seed);
    return 0;
}

/* Reads all of stdin into a malloc'd, NUL-terminated buffer. NULL on failure. */
static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, stdin)) > 0) {
        n += got;
        if (n == cap - 1) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* info: loads and validates a model directory (checkpoint + tokenizer) and prints its shape. */
static int cmd_info(const args *a) {
    const char *dir = need(a, "--model");
    if (!dir) return 2;
    char err[512];
    gpt2_checkpoint ck = {0};
    if (ckpt_load(&ck, dir, err, sizeof err) != 0) {
        fprintf(stderr, "gpt2-tool info: %s\n", err);
        return 1;
    }
    bpe_tokenizer *t = bpe_load(dir, err, sizeof err);
    if (!t) {
        fprintf(stderr, "gpt2-tool info: %s\n", err);
        ckpt_destroy(&ck);
        return 1;
    }
    const gpt2_config *c = &ck.cfg;
    double params = (double)c->n_vocab * c->n_embd + (double)c->n_ctx * c->n_embd +
                    (double)c->n_layer * (12.0 * c->n_embd * c->n_embd + 13.0 * c->n_embd);
    printf("%s: %d layers, %d wide, %d heads, ctx %d, vocab %d, %.1fM parameters, lm_head %s\n", dir,
           c->n_layer, c->n_embd, c->n_head, c->n_ctx, c->n_vocab, params / 1e6,
           ck.lm_head == ck.wte ? "tied to wte" : "separate");
    bpe_free(t);
    ckpt_destroy(&ck);
    return 0;
}

static int cmd_tokenize(const args *a) {
    const char *dir = need(a, "--model");
    if (!dir) return 2;
    char err[512];
    bpe_tokenizer *t = bpe_load(dir, err, sizeof err);
    if (!t) {
        fprintf(stderr, "gpt2-tool tokenize: %s\n", err);
        return 1;
    }
    size_t len;
    char *text = read_stdin(&len);
    long cap = (long)len + 16;
    int *ids = malloc(sizeof(int) * cap);
    int rc = 1;
    long n = text && ids ? bpe_encode(t, text, len, has_flag(a, "--allow-special"), ids, cap) : -1;
    if (n < 0) {
        fprintf(stderr, "gpt2-tool tokenize: input is not valid UTF-8\n");
    } else {
        for (long i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        rc = 0;
    }
    free(ids);
    free(text);
    bpe_free(t);
    return rc;
}

/* Parses ids separated by spaces, commas or newlines into *ids (malloc'd). Count or -1. */
static long parse_ids(const char *s, int **ids) {
    long cap = 16, n = 0;
    *ids = malloc(sizeof(int) * cap);
    while (*ids && *s) {
        while (*s == ' ' || *s == ',' || *s == '\n' || *s == '\t' || *s == '\r') s++;
        if (!*s) break;
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > 0x7fffffff) {
            fprintf(stderr, "gpt2-tool: bad token id near '%.16s'\n", s);
            free(*ids);
            *ids = NULL;
            return -1;
        }
        if (n == cap) {
            int *nb = realloc(*ids, sizeof(int) * (cap *= 2));
            if (!nb) break;
            *ids = nb;
        }
        (*ids)[n++] = (int)v;
        s = end;
    }
    return *ids ? n : -1;
}

static int cmd_detokenize(const args *a) {
    const char *dir = need(a, "--model");
    if (!dir) return 2;
    char err[512];
    bpe_tokenizer *t = bpe_load(dir, err, sizeof err);
    if (!t) {
        fprintf(stderr, "gpt2-tool detokenize: %s\n", err);
        return 1;
    }
    size_t len;
    char *text = read_stdin(&len);
    int *ids = NULL;
    int rc = 1;
    long n = text ? parse_ids(text, &ids) : -1;
    if (n >= 0) {
        for (long i = 0; i < n; i++) {
            size_t bl;
            const char *b = bpe_token_bytes(t, ids[i], &bl);
            if (!b) {
                fprintf(stderr, "gpt2-tool detokenize: token id %d is out of range\n", ids[i]);
                n = -1;
                break;
            }
            fwrite(b, 1, bl, stdout);
        }
        rc = n >= 0 ? 0 : 1;
    }
    free(ids);
    free(text);
    bpe_free(t);
    return rc;
}

typedef struct {
    float v;
    int id;
} scored;

static int scored_desc(const void *x, const void *y) {
    const scored *a = x, *b = y;
    if (a->v != b->v) return a->v < b->v ? 1 : -1;
    return a->id - b->id;
}

/* Runs ids through the model in one forward call; logits of the last position into out (V). */
static int last_logits(const char *dir, const gpt2_weights_opts *wo, const int *ids, int n, float **out, int *V,
                       char *err, size_t errlen) {
    gpt2_state *m = NULL;
    kv_arena *kv = NULL;
    int *pos = NULL, *slot = NULL, *rows = NULL, rc = -1;
    gpt2_weights *w = gpt2_weights_load(dir, wo, err, errlen);
    if (!w) return -1;
    const gpt2_config *c = gpt2_weights_config(w);
    if (n < 1 || n > c->n_ctx) {
        snprintf(err, errlen, "need 1..%d ids, got %d", c->n_ctx, n);
        goto done;
    }
    *V = c->n_vocab;
    m = gpt2_state_new(w, n, n, 0, err, errlen);
    kv = m ? kv_new_fixed(1, c->n_layer, n, c->n_embd, c->n_head, err, errlen) : NULL;
    if (!kv) goto done;
    pos = malloc(sizeof(int) * n);
    slot = calloc(n, sizeof(int));
    rows = malloc(sizeof(int) * n);
    *out = malloc(sizeof(float) * *V);
    if (!pos || !slot || !rows || !*out) goto done;
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        rows[i] = i == n - 1 ? 0 : -1;
    }
    gpt2_batch b = {n, ids, pos, slot, rows};
    if (gpt2_forward(m, kv, &b, *out) != 0) {
        snprintf(err, errlen, "invalid input (token id out of range?)");
        goto done;
    }
    rc = 0;
done:
    free(pos);
    free(slot);
    free(rows);
    kv_free(kv);
    gpt2_state_free(m);
    gpt2_weights_free(w);
    return rc;
}

static int cmd_logits(const args *a) {
    const char *dir = need(a, "--model"), *ids_s = need(a, "--ids");
    if (!dir || !ids_s) return 2;
    int *ids = NULL, V = 0;
    engine_config ec;
    gpt2_weights_opts wo;
    if (parse_engine(a, &ec, &wo)) return 2;
    long n = parse_ids(ids_s, &ids);
    if (n < 0) return 2;
    float *lg = NULL;
    char err[512];
    int rc = 1;
    if (last_logits(dir, &wo, ids, (int)n, &lg, &V, err, sizeof err) != 0) {
        fprintf(stderr, "gpt2-tool logits: %s\n", err);
    } else if (flag(a, "--out")) {
        FILE *f = fopen(flag(a, "--out"), "wb");
        if (f && fwrite(lg, sizeof(float), V, f) == (size_t)V && fclose(f) == 0) {
            rc = 0;
        } else {
            fprintf(stderr, "gpt2-tool logits: cannot write %s\n", flag(a, "--out"));
        }
    } else {
        scored *s = malloc(sizeof(scored) * V);
        if (s) {
            for (int i = 0; i < V; i++) s[i] = (scored){lg[i], i};
            qsort(s, V, sizeof *s, scored_desc);
            for (int i = 0; i < 20 && i < V; i++) printf("%d %.6f\n", s[i].id, s[i].v);
            rc = 0;
        }
        free(s);
    }
    free(lg);
    free(ids);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * generate: one request through the engine, streamed to stdout. */

typedef struct {
    int done;
    engine_finish finish;
    int prompt_tokens, completion_tokens;
} gen_state;

static void gen_token(void *user, uint64_t id, int index, int token, const char *piece, size_t len,
                      float logprob) {
    (void)user, (void)id, (void)index, (void)token, (void)logprob;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
}

static void gen_done(void *user, uint64_t id, const engine_result *r) {
    (void)id;
    gen_state *g = user;
    g->done = 1;
    g->finish = r->finish;
    g->prompt_tokens = r->prompt_tokens;
    g->completion_tokens = r->completion_tokens;
    if (r->finish == ENGINE_FINISH_ERROR) fprintf(stderr, "gpt2-tool generate: %s\n", r->error);
}

static int cmd_generate(const args *a) {
    const char *dir = need(a, "--model"), *prompt = need(a, "--prompt");
    long n = 16;
    engine_config ec;
    gpt2_weights_opts wo;
    engine_request q = {0};
    if (!dir || !prompt || flag_int(a, "-n", &n) || parse_engine(a, &ec, &wo) || parse_sampling(a, &q))
        return 2;
    if (ec.n_slots <= 0 && ec.max_running <= 0) ec.n_slots = 1;
    q.prompt = prompt;
    q.prompt_len = strlen(prompt);
    q.max_tokens = (int)n;
    gen_state g = {0};
    engine_callbacks cb = {.on_token = gen_token, .on_done = gen_done, .user = &g};
    char err[512];
    loaded m;
    engine *e = NULL;
    if (load_model(dir, &wo, &m, err, sizeof err) != 0 || !(e = engine_new(m.w, m.tok, &ec, &cb, err, sizeof err))) {
        fprintf(stderr, "gpt2-tool generate: %s\n", err);
        if (m.w) unload_model(&m);
        return 1;
    }
    engine_refusal why;
    if (engine_submit(e, 1, &q, &why) != 0) {
        fprintf(stderr, "gpt2-tool generate: %s\n", why.message);
        engine_free(e);
        unload_model(&m);
        return 1;
    }
    while (!g.done && engine_step(e) >= 0) {
    }
    engine_free(e);
    unload_model(&m);
    fflush(stdout);
    if (has_flag(a, "--verbose"))
        fprintf(stderr, "\n[finish %s, prompt %d tokens, generated %d]\n",
                engine_finish_name(g.finish), g.prompt_tokens, g.completion_tokens);
    return g.finish == ENGINE_FINISH_ERROR ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------------
 * batch: a JSONL file through the engine with continuous batching. */

static int cmd_batch(const args *a) {
    const char *dir = need(a, "--model"), *in = need(a, "--input"), *out = need(a, "--output");
    long conc = 64;
    engine_config ec;
    gpt2_weights_opts wo;
    if (!dir || !in || !out || flag_int(a, "--concurrency", &conc) || parse_engine(a, &ec, &wo)) return 2;
    if (ec.n_slots <= 0 && ec.max_running <= 0 && !ec.kv_budget_mb) ec.n_slots = (int)(conc > 0 ? conc : 1);
    struct stat si, so;
    if (strcmp(in, out) == 0 ||
        (stat(in, &si) == 0 && stat(out, &so) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino)) {
        fprintf(stderr, "gpt2-tool batch: the output %s is the input: refused (it would be overwritten)\n", out);
        return 1;
    }
    char err[512];
    batchfile *bf = batchfile_read(in, err, sizeof err);
    if (!bf) {
        fprintf(stderr, "gpt2-tool batch: %s\n", err);
        return 1;
    }
    loaded m;
    int rc = load_model(dir, &wo, &m, err, sizeof err);
    if (rc == 0) {
        rc = batchfile_run(bf, m.w, m.tok, &ec, (int)conc, err, sizeof err);
        unload_model(&m);
    }
    if (rc != 0) fprintf(stderr, "gpt2-tool batch: %s\n", err);
    if (rc == 0 && batchfile_write(bf, out, err, sizeof err) != 0) {
        fprintf(stderr, "gpt2-tool batch: %s\n", err);
        rc = 1;
    }
    if (rc == 0) batchfile_summary(bf, stderr);
    batchfile_free(bf);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    args a = {argc, argv};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    char cpu_err[256];
    if (cpu_check(cpu_err, sizeof(cpu_err)) < 0) { /* before any code built with the kernels' ISA */
        fprintf(stderr, "gpt2-tool: %s\n", cpu_err);
        return 1;
    }
    const char *c = argv[1];
    if (strcmp(c, "--version") == 0 || strcmp(c, "-V") == 0) {
        char kerr[256];
        const mm_kernels *k = mm_kernels_select(getenv("GPT2D_ISA"), kerr, sizeof(kerr));
        proto_version_print(stdout, "gpt2-tool", k ? k->name : kerr);
        return 0;
    }
    if (strcmp(c, "mkmodel") == 0) return cmd_mkmodel(&a);
    if (strcmp(c, "info") == 0) return cmd_info(&a);
    if (strcmp(c, "tokenize") == 0) return cmd_tokenize(&a);
    if (strcmp(c, "detokenize") == 0) return cmd_detokenize(&a);
    if (strcmp(c, "logits") == 0) return cmd_logits(&a);
    if (strcmp(c, "generate") == 0) return cmd_generate(&a);
    if (strcmp(c, "batch") == 0) return cmd_batch(&a);
    fprintf(stderr, "gpt2-tool: unknown command '%s'\n", c);
    usage();
    return 2;
}
