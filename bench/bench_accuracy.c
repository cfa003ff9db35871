/* bench_accuracy — each weight format against fp32 on the email prompts.
 *
 * For every prompt of EMAILS.jsonl: prefill the prompt, then follow fp32's greedy path for
 * --tokens G tokens (teacher-forced: every format is fed fp32's argmax tokens, so each position
 * compares the same context). At each of the G + 1 positions with logits (the prompt's last, then
 * each generated one) the format's logits l' are compared with fp32's l:
 *   top-1 agreement   argmax l' == argmax l
 *   KL(p || p')       p = softmax(l), p' = softmax(l') over the vocabulary (nats, in double)
 *   max |l' - l|      over the vocabulary
 * Sequences run in groups of 8, batched (the kernels are batch-invariant, so a row is what it would
 * be alone), every format in lockstep with fp32. Prints one table row per format and whether the
 * top-1 target (>= 99%) is met.
 * usage: bench_accuracy MODEL_DIR EMAILS.jsonl [--tokens G (48)] [--formats bf16,int8] [--isa ISA] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batchfile.h"
#include "bench_util.h"
#include "bpe.h"
#include "gpt2.h"
#include "kv.h"

#define GROUP 8
#define MAX_FMT 4

typedef struct {
    const char *name;
    gpt2_weights *w;
    gpt2_state *m;
    kv_arena *kv;
    long positions, top1;
    double kl_sum, kl_max, dlogit_max;
} fmt_run;

static int argmax(const float *l, int V) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (l[v] > l[best]) best = v;
    return best;
}

/* Adds one position's comparison of lq against l (V) to f. */
static void compare(fmt_run *f, const float *l, const float *lq, int V) {
    double m = l[0], mq = lq[0], z = 0, zq = 0, kl = 0, dmax = 0;
    for (int v = 1; v < V; v++) m = l[v] > m ? l[v] : m, mq = lq[v] > mq ? lq[v] : mq;
    for (int v = 0; v < V; v++) z += exp(l[v] - m), zq += exp(lq[v] - mq);
    double lz = log(z), lzq = log(zq);
    for (int v = 0; v < V; v++) {
        double lp = l[v] - m - lz, lpq = lq[v] - mq - lzq;
        kl += exp(lp) * (lp - lpq);
        double d = fabs((double)lq[v] - l[v]);
        dmax = d > dmax ? d : dmax;
    }
    f->positions++;
    f->top1 += argmax(l, V) == argmax(lq, V);
    f->kl_sum += kl;
    f->kl_max = kl > f->kl_max ? kl : f->kl_max;
    f->dlogit_max = dmax > f->dlogit_max ? dmax : f->dlogit_max;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_accuracy MODEL_DIR EMAILS.jsonl [--tokens G] [--formats bf16,int8] [--isa ISA]\n");
        return 2;
    }
    int G = 48;
    char formats[256] = "bf16,int8";
    const char *isa = NULL;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--tokens") == 0) G = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--formats") == 0) snprintf(formats, sizeof formats, "%s", argv[i + 1]);
        else if (strcmp(argv[i], "--isa") == 0) isa = argv[i + 1];
        else {
            fprintf(stderr, "bench_accuracy: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    if (G < 1 || G > 256) G = 48;
    char err[512];
    batchfile *bf = batchfile_read(argv[2], err, sizeof err);
    bpe_tokenizer *tok = bf ? bpe_load(argv[1], err, sizeof err) : NULL;
    if (!tok) {
        fprintf(stderr, "bench_accuracy: %s\n", err);
        return 1;
    }
    int n = bf->n, threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int **ids = calloc(n, sizeof(int *)), *n_ids = calloc(n, sizeof(int)), max_prompt = 1;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(bf->jobs[i].prompt);
        ids[i] = malloc(sizeof(int) * (len + 1));
        long k = bpe_encode(tok, bf->jobs[i].prompt, len, 0, ids[i], (long)len + 1);
        n_ids[i] = k > 0 ? (int)k : 0;
        max_prompt = n_ids[i] > max_prompt ? n_ids[i] : max_prompt;
    }
    fmt_run runs[MAX_FMT + 1];
    int nf = 0;
    memset(runs, 0, sizeof runs);
    runs[nf++].name = "fp32";
    for (char *save = NULL, *f = strtok_r(formats, ",", &save); f && nf <= MAX_FMT; f = strtok_r(NULL, ",", &save))
        runs[nf++].name = f;
    int ctx = max_prompt + G + 1;
    for (int f = 0; f < nf; f++) {
        gpt2_weights_opts o = {.weights = runs[f].name, .isa = isa};
        runs[f].w = gpt2_weights_load(argv[1], &o, err, sizeof err);
        const gpt2_config *c = runs[f].w ? gpt2_weights_config(runs[f].w) : NULL;
        if (c && ctx > c->n_ctx) ctx = c->n_ctx;
        runs[f].m = c ? gpt2_state_new(runs[f].w, max_prompt > GROUP ? max_prompt : GROUP, ctx, threads, err, sizeof err) : NULL;
        runs[f].kv = runs[f].m ? kv_new_fixed(GROUP, c->n_layer, ctx, c->n_embd, c->n_head, err, sizeof err) : NULL;
        if (!runs[f].kv) {
            fprintf(stderr, "bench_accuracy: %s: %s\n", runs[f].name, err);
            return 1;
        }
    }
    int V = gpt2_weights_config(runs[0].w)->n_vocab;
    float *ref = malloc(sizeof(float) * GROUP * V), *got = malloc(sizeof(float) * GROUP * V);
    int *pos = malloc(sizeof(int) * (max_prompt + GROUP)), *slot = malloc(sizeof(int) * (max_prompt + GROUP));
    int *out = malloc(sizeof(int) * (max_prompt + GROUP)), next[GROUP], step_tok[GROUP], len[GROUP];
    int slots[MAX_FMT + 1][GROUP]; /* each format's arena: sequences 0..GROUP-1, open for the whole run */
    double t0 = bench_now();
    for (int g0 = 0; g0 < n; g0 += GROUP) {
        int gn = n - g0 < GROUP ? n - g0 : GROUP;
        for (int f = 0; f < nf; f++)
            for (int s = 0; s < gn; s++) slots[f][s] = s;
        /* prefill each prompt (truncated to leave room for G tokens), logits of its last token */
        for (int s = 0; s < gn; s++) {
            int P = n_ids[g0 + s] < ctx - G ? n_ids[g0 + s] : ctx - G;
            if (P < 1) P = 1, ids[g0 + s][0] = 50256;
            len[s] = P;
            for (int i = 0; i < P; i++) pos[i] = i, out[i] = i == P - 1 ? 0 : -1;
            gpt2_batch b = {P, ids[g0 + s], pos, slot, out};
            for (int f = 0; f < nf; f++) {
                for (int i = 0; i < P; i++) slot[i] = slots[f][s];
                gpt2_forward(runs[f].m, runs[f].kv, &b, f ? got : ref);
                if (f) compare(&runs[f], ref, got, V);
            }
            next[s] = argmax(ref, V);
        }
        /* G greedy steps of fp32, all formats fed the same tokens */
        for (int t = 0; t < G; t++) {
            for (int s = 0; s < gn; s++) step_tok[s] = next[s], pos[s] = len[s] + t, out[s] = s;
            gpt2_batch b = {gn, step_tok, pos, slots[0], out};
            gpt2_forward(runs[0].m, runs[0].kv, &b, ref);
            for (int f = 1; f < nf; f++) {
                b.slot = slots[f];
                gpt2_forward(runs[f].m, runs[f].kv, &b, got);
                for (int s = 0; s < gn; s++) compare(&runs[f], ref + (size_t)s * V, got + (size_t)s * V, V);
            }
            for (int s = 0; s < gn; s++) next[s] = argmax(ref + (size_t)s * V, V);
        }
    }
    printf("accuracy vs fp32: %d email prompts, fp32's greedy path of %d tokens each (teacher-forced), "
           "%ld positions per format (%.0f s)\n", n, G, nf > 1 ? runs[1].positions : 0, bench_now() - t0);
    printf("  %-6s %-30s %10s %12s %12s %14s  %s\n", "format", "fingerprint", "top-1 agr", "mean KL", "max KL",
           "max |dlogit|", "(target top-1 >= 99%)");
    for (int f = 1; f < nf; f++) {
        fmt_run *r = &runs[f];
        double top1 = r->positions ? 100.0 * r->top1 / r->positions : 0;
        printf("  %-6s %-30s %9.2f%% %12.3g %12.3g %14.4g  %s\n", r->name, gpt2_weights_fingerprint(r->w), top1,
               r->positions ? r->kl_sum / r->positions : 0, r->kl_max, r->dlogit_max, top1 >= 99.0 ? "met" : "NOT met");
    }
    for (int f = 0; f < nf; f++) {
        kv_free(runs[f].kv);
        gpt2_state_free(runs[f].m);
        gpt2_weights_free(runs[f].w);
    }
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids), free(n_ids), free(ref), free(got), free(pos), free(slot), free(out);
    bpe_free(tok);
    batchfile_free(bf);
    return 0;
}
