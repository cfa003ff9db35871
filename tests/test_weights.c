/* test_weights.c — the packed weight image cache (weights.h, wimage.h).
 *
 * On a small random checkpoint, with a cache directory of its own:
 *   - the first load builds the image file, the next maps it (MAP_SHARED, read-only, seen in
 *     /proc/self/maps), and both give logits bit-identical to a private copy (cache off);
 *   - a corrupted byte in the image, a truncated file and a bad header are each detected, the file
 *     rebuilt (never used), and the rebuilt one maps again;
 *   - a changed checkpoint gets a new image (another file, another fingerprint), the old one left;
 *   - four processes loading at once build one image (the lock) and leave no temp file;
 *   - an unusable cache directory falls back to a private copy with a note; --isa scalar changes the
 *     fingerprint, not the logits; an unknown isa is refused. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "gpt2.h"
#include "wimage.h"

static char model[1024], cache[1200];

/* Logits of a fixed 5-token prompt (last position) through w, into out (V). 0 or -1. */
static int logits(const gpt2_weights *w, float *out) {
    char err[256];
    const gpt2_config *c = gpt2_weights_config(w);
    gpt2_state *m = gpt2_state_new(w, 8, 16, 2, err, sizeof err);
    kv_arena *kv = m ? kv_new_fixed(1, c->n_layer, 16, c->n_embd, c->n_head, err, sizeof err) : NULL;
    int tok[5] = {464, 2068, 7586, 21831, 18045}, pos[5] = {0, 1, 2, 3, 4}, slot[5] = {0}, o[5] = {-1, -1, -1, -1, 0};
    gpt2_batch b = {5, tok, pos, slot, o};
    int rc = kv ? gpt2_forward(m, kv, &b, out) : -1;
    kv_free(kv);
    gpt2_state_free(m);
    return rc;
}

static gpt2_weights *load(const char *dir, const char *isa, char *err, size_t n) {
    gpt2_weights_opts o = {.cache_dir = dir, .isa = isa};
    return gpt2_weights_load(model, &o, err, n);
}

static int mapped_shared(const char *path) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[8192];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) found |= strstr(line, path) && strstr(line, " r--s ");
    if (f) fclose(f);
    return found;
}

/* Files in cache ending in suffix. */
static int count_files(const char *suffix) {
    DIR *d = opendir(cache);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name), s = strlen(suffix);
        n += l >= s && strcmp(e->d_name + l - s, suffix) == 0;
    }
    if (d) closedir(d);
    return n;
}

static void damage(const char *path, off_t off, const char *bytes, size_t n) {
    int fd = open(path, O_WRONLY);
    if (fd >= 0) {
        ssize_t w = pwrite(fd, bytes, n, off);
        (void)w;
        close(fd);
    }
}

/* Loads again after damage: rebuilt with a note naming `why`, then maps clean with equal logits. */
static void expect_rebuilt(const char *what, const char *why, const float *want, float *got, int V) {
    char err[256];
    gpt2_weights *w = load(cache, NULL, err, sizeof err);
    const gpt2_weights_info *in = w ? gpt2_weights_info_of(w) : NULL;
    check(in && in->source == GPT2_IMAGE_REBUILT && strstr(in->note, why), "%s: detected and rebuilt (note: %s)", what,
          in ? in->note : err);
    gpt2_weights_free(w);
    w = load(cache, NULL, err, sizeof err);
    in = w ? gpt2_weights_info_of(w) : NULL;
    check(in && in->source == GPT2_IMAGE_MAPPED && logits(w, got) == 0 && memcmp(got, want, sizeof(float) * V) == 0,
          "%s: the rebuilt image maps and computes the same logits", what);
    gpt2_weights_free(w);
}

int main(void) {
    const char *tmp = getenv("GPT2D_TMP") ? getenv("GPT2D_TMP") : "/tmp";
    snprintf(model, sizeof model, "%s/weights-model", tmp);
    snprintf(cache, sizeof cache, "%s/weights-cache-test", tmp);
    gpt2_config c = {.n_layer = 2, .n_embd = 64, .n_head = 4, .n_ctx = 64, .n_vocab = 50257, .ln_eps = 1e-5f};
    char err[512];
    check(ckpt_write_random(model, &c, 5, NULL, err, sizeof err) == 0, "model written: %s", err);
    int V = c.n_vocab;
    float *want = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * V);

    gpt2_weights *wp = load("off", NULL, err, sizeof err);
    check(wp && gpt2_weights_info_of(wp)->source == GPT2_IMAGE_PRIVATE && !gpt2_weights_info_of(wp)->path[0] &&
              logits(wp, want) == 0,
          "cache off: a private copy (%s)", wp ? "ok" : err);
    char fp[GPT2_FINGERPRINT_MAX];
    snprintf(fp, sizeof fp, "%s", wp ? gpt2_weights_fingerprint(wp) : "");
    gpt2_weights_free(wp);
    char want_fp[64];
    const mm_kernels *best = mm_kernels_select(NULL, err, sizeof err);
    snprintf(want_fp, sizeof want_fp, "f32/%s/", best ? best->name : "?");
    check(strncmp(fp, want_fp, strlen(want_fp)) == 0 && strlen(fp) == strlen(want_fp) + 16,
          "fingerprint %s: dtype/kernels/checkpoint", fp);

    gpt2_weights *w1 = load(cache, NULL, err, sizeof err);
    const gpt2_weights_info *i1 = w1 ? gpt2_weights_info_of(w1) : NULL;
    check(i1 && i1->source == GPT2_IMAGE_BUILT && i1->path[0] && access(i1->path, R_OK) == 0,
          "first load builds the image file (%s)", i1 ? i1->path : err);
    char path[4096];
    snprintf(path, sizeof path, "%s", i1 ? i1->path : "");
    gpt2_weights *w2 = load(cache, NULL, err, sizeof err);
    const gpt2_weights_info *i2 = w2 ? gpt2_weights_info_of(w2) : NULL;
    check(i2 && i2->source == GPT2_IMAGE_MAPPED && strcmp(i2->path, path) == 0, "second load maps the same file");
    check(mapped_shared(path), "the image is mapped read-only and shared (r--s in /proc/self/maps)");
    check(w1 && logits(w1, got) == 0 && memcmp(got, want, sizeof(float) * V) == 0 && w2 && logits(w2, got) == 0 &&
              memcmp(got, want, sizeof(float) * V) == 0,
          "built and mapped images compute the private copy's logits, bit for bit");
    check(w2 && strcmp(gpt2_weights_fingerprint(w2), fp) == 0, "same fingerprint shared or private");
    gpt2_weights_free(w1);
    gpt2_weights_free(w2);

    /* damage, each detected */
    damage(path, (off_t)WIMAGE_DATA_OFF + 4096, "\x7f\x7f\x7f\x7f", 4);
    expect_rebuilt("a corrupted image byte", "checksum", want, got, V);
    if (truncate(path, (off_t)WIMAGE_DATA_OFF + 1000) != 0) check(0, "truncate");
    expect_rebuilt("a truncated file", "size", want, got, V);
    damage(path, 0, "XXXX", 4);
    expect_rebuilt("a bad magic", "magic", want, got, V);
    damage(path, 40, "\x01", 1);
    expect_rebuilt("a header byte", "header", want, got, V);

    /* four processes at once: one build, no temp file left */
    char cache2[1100];
    cache[1000] = 0;
    snprintf(cache2, sizeof cache2, "%.1000s-race", cache);
    pid_t kids[4];
    for (int k = 0; k < 4; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            gpt2_weights_opts o = {.cache_dir = cache2};
            gpt2_weights *w = gpt2_weights_load(model, &o, err, sizeof err);
            int built = w && gpt2_weights_info_of(w)->source == GPT2_IMAGE_BUILT;
            int mapped = w && gpt2_weights_info_of(w)->source == GPT2_IMAGE_MAPPED;
            gpt2_weights_free(w);
            _exit(built ? 10 : mapped ? 11 : 1);
        }
    }
    int n_built = 0, n_mapped = 0;
    for (int k = 0; k < 4; k++) {
        int st = 0;
        waitpid(kids[k], &st, 0);
        n_built += WIFEXITED(st) && WEXITSTATUS(st) == 10;
        n_mapped += WIFEXITED(st) && WEXITSTATUS(st) == 11;
    }
    snprintf(cache, sizeof cache, "%s", cache2);
    check(n_built == 1 && n_mapped == 3 && count_files(".img") == 1 && count_files(".tmp") == 0,
          "4 concurrent loads: %d built, %d mapped; %d image, no temp file", n_built, n_mapped, count_files(".img"));

    /* a changed checkpoint: a new image, the old one untouched */
    check(ckpt_write_random(model, &c, 6, NULL, err, sizeof err) == 0, "checkpoint rewritten with another seed");
    gpt2_weights *w3 = load(cache, NULL, err, sizeof err);
    const gpt2_weights_info *i3 = w3 ? gpt2_weights_info_of(w3) : NULL;
    check(i3 && i3->source == GPT2_IMAGE_BUILT && strcmp(i3->path, path) != 0 && count_files(".img") == 2,
          "a changed checkpoint gets a new image (%s)", i3 ? i3->path : err);
    check(w3 && strcmp(gpt2_weights_fingerprint(w3), fp) != 0 && logits(w3, got) == 0 &&
              memcmp(got, want, sizeof(float) * V) != 0,
          "... with another fingerprint (%s) and other logits", w3 ? gpt2_weights_fingerprint(w3) : "");
    memcpy(want, got, sizeof(float) * V);
    gpt2_weights_free(w3);

    /* the kernel family is part of the fingerprint, not of the bits */
    gpt2_weights *ws = load(cache, "scalar", err, sizeof err);
    check(ws && strncmp(gpt2_weights_fingerprint(ws), "f32/scalar/", 11) == 0 &&
              gpt2_weights_info_of(ws)->source == GPT2_IMAGE_MAPPED && logits(ws, got) == 0 &&
              memcmp(got, want, sizeof(float) * V) == 0,
          "isa scalar: fingerprint %s, the same image, the same logits", ws ? gpt2_weights_fingerprint(ws) : err);
    gpt2_weights_free(ws);
    check(load(cache, "mmx", err, sizeof err) == NULL && strstr(err, "mmx"), "unknown isa refused: %s", err);

    /* an unusable cache directory: a private copy, and a note */
    gpt2_weights *wn = load("/proc/gpt2d-no-such-dir", NULL, err, sizeof err);
    check(wn && gpt2_weights_info_of(wn)->source == GPT2_IMAGE_PRIVATE && gpt2_weights_info_of(wn)->note[0] &&
              logits(wn, got) == 0 && memcmp(got, want, sizeof(float) * V) == 0,
          "unusable cache dir: private copy (%s)", wn ? gpt2_weights_info_of(wn)->note : err);
    gpt2_weights_free(wn);

    /* the weight format keys the image too: each its own file and fingerprint, fp32's left alone */
    static const char *const fmts[] = {"bf16", "int8"}, *const tags[] = {"bf16/", "i8/"};
    for (int f = 0; f < 2; f++) {
        gpt2_weights_opts o = {.cache_dir = cache, .weights = fmts[f]};
        gpt2_weights *wq = gpt2_weights_load(model, &o, err, sizeof err);
        const gpt2_weights_info *iq = wq ? gpt2_weights_info_of(wq) : NULL;
        float *lq = malloc(sizeof(float) * V);
        int ok = iq && iq->source == GPT2_IMAGE_BUILT && strcmp(iq->path, path) != 0 && strstr(iq->path, fmts[f][0] == 'b' ? "-bf16.img" : "-i8.img") &&
                 strncmp(gpt2_weights_fingerprint(wq), tags[f], strlen(tags[f])) == 0 && logits(wq, lq) == 0 &&
                 memcmp(lq, want, sizeof(float) * V) != 0;
        check(ok, "%s: its own image file (%s), fingerprint %s, other logits than fp32", fmts[f], iq ? iq->path : err,
              wq ? gpt2_weights_fingerprint(wq) : "");
        gpt2_weights *wq2 = gpt2_weights_load(model, &o, err, sizeof err);
        check(wq2 && gpt2_weights_info_of(wq2)->source == GPT2_IMAGE_MAPPED && logits(wq2, got) == 0 &&
                  memcmp(got, lq, sizeof(float) * V) == 0,
              "%s: the next load maps it and computes the same logits, bit for bit", fmts[f]);
        gpt2_weights_free(wq2);
        gpt2_weights_free(wq);
        free(lq);
    }
    check(access(path, R_OK) == 0, "the fp32 image is still there");
    gpt2_weights_opts bad = {.cache_dir = cache, .weights = "int4"};
    check(gpt2_weights_load(model, &bad, err, sizeof err) == NULL && strstr(err, "int4"), "unknown format refused: %s", err);
    free(want);
    free(got);
    return check_done("test_weights");
}
