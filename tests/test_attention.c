/* test_attention.c — attn_head (worker/model/attention.c) against attention.h's definition, bit for bit.
 *
 * The reference here is that definition written as plain scalar C: K and V read back through the
 * arena's own accessors (kv_run + kv_widen), every dot product as 8 fma lanes summed in vm_hsum's
 * tree then the tail, the softmax denominator in vm_sum's scheme, and one fma chain per output
 * element over the positions in order. It must give exactly the kernel's bits for every KV dtype
 * (fp32, fp16, bf16), head sizes that are not multiples of 8 or of 64 (1, 5, 20, 32, 64, 72, 100,
 * 136: tails, 4- and 8-vector column blocks), every position through several pages (partial
 * pages and partial groups of 8), and sequences whose pages interleave in the arena. A textbook
 * double-precision attention bounds how far the fixed order may stray (printed). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "check.h"
#include "kv.h"
#include "vmath.h"

enum { L = 2, H = 3, T = 75, NSEQ = 2 };

static float frand(unsigned *s, float amp) {
    *s = *s * 1103515245u + 12345u;
    return ((float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f) * amp;
}

/* Row t of (seq, layer, head)'s K (which 0) or V (which 1) as floats, through the arena's accessors. */
static void read_row(const kv_arena *kv, int seq, int layer, int head, int t, int which, int hd, float *out) {
    const void *k, *v;
    size_t stride;
    kv_run(kv, seq, layer, head, t, 1, &k, &v, &stride);
    kv_widen(kv_dtype_of(kv), which ? v : k, stride, 1, hd, out);
}

static float lanes_sum(const float l[8]) { return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])); }

static float ref_dot(const float *a, const float *b, int n) {
    float l[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) l[j] = fmaf(a[i + j], b[i + j], l[j]);
    float s = lanes_sum(l);
    for (; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}

static void ref_head(const kv_arena *kv, int seq, int layer, int head, int pos, const float *q, float *out) {
    int hd = kv_head_dim(kv), n = pos + 1;
    float *s = malloc(sizeof(float) * n), *row = malloc(sizeof(float) * hd);
    for (int t = 0; t < n; t++) {
        read_row(kv, seq, layer, head, t, 0, hd, row);
        s[t] = ref_dot(q, row, hd) * (1.0f / sqrtf((float)hd));
    }
    float m = s[0];
    for (int t = 1; t < n; t++) m = s[t] > m ? s[t] : m;
    for (int t = 0; t < n; t++) s[t] = vm_exp1(s[t] - m);
    float l[8] = {0};
    int t = 0;
    for (; t + 8 <= n; t += 8)
        for (int j = 0; j < 8; j++) l[j] += s[t + j];
    float z = lanes_sum(l);
    for (; t < n; t++) z += s[t];
    float inv = 1.0f / z;
    for (int d = 0; d < hd; d++) out[d] = 0.0f;
    for (t = 0; t < n; t++) {
        read_row(kv, seq, layer, head, t, 1, hd, row);
        float p = s[t] * inv;
        for (int d = 0; d < hd; d++) out[d] = fmaf(p, row[d], out[d]);
    }
    free(s);
    free(row);
}

/* Textbook attention in double from the same stored K/V: the fixed order's distance from exact. */
static double exact_err(const kv_arena *kv, int seq, int layer, int head, int pos, const float *q,
                        const float *got) {
    int hd = kv_head_dim(kv), n = pos + 1;
    double *s = malloc(sizeof(double) * n), m = -INFINITY, z = 0, err = 0;
    float *row = malloc(sizeof(float) * hd);
    for (int t = 0; t < n; t++) {
        read_row(kv, seq, layer, head, t, 0, hd, row);
        double d = 0;
        for (int i = 0; i < hd; i++) d += (double)q[i] * row[i];
        s[t] = d / sqrt(hd);
        m = s[t] > m ? s[t] : m;
    }
    for (int t = 0; t < n; t++) z += s[t] = exp(s[t] - m);
    for (int d = 0; d < hd; d++) {
        double o = 0;
        for (int t = 0; t < n; t++) {
            read_row(kv, seq, layer, head, t, 1, hd, row);
            o += s[t] / z * row[d];
        }
        err = fmax(err, fabs(o - got[d]));
    }
    free(s);
    free(row);
    return err;
}

static void one_shape(kv_dtype dt, int hd) {
    int C = H * hd;
    char err[256];
    kv_config kc = {.n_layer = L, .n_ctx = T, .n_embd = C, .n_head = H, .n_pages = NSEQ * kv_pages_for(T),
                    .max_seqs = NSEQ, .dtype = dt};
    kv_arena *kv = kv_new(&kc, err, sizeof err);
    check(kv != NULL, "kv_new: %s", err);
    if (!kv) return;
    int ids[1] = {0}, cached;
    for (int s = 0; s < NSEQ; s++) check(kv_seq_open(kv, ids, 1, T, &cached) == s, "open %d", s);
    /* pages taken alternately, so each sequence's runs are scattered through the arena */
    for (int p = KV_PAGE; p < T + KV_PAGE; p += KV_PAGE)
        for (int s = 0; s < NSEQ; s++) kv_seq_prepare(kv, s, p < T ? p : T);
    unsigned seed = (unsigned)(dt * 1000 + hd);
    float *k = malloc(sizeof(float) * C), *v = malloc(sizeof(float) * C), *q = malloc(sizeof(float) * hd);
    float *got = malloc(sizeof(float) * hd), *want = malloc(sizeof(float) * hd), *scores = malloc(sizeof(float) * T);
    for (int s = 0; s < NSEQ; s++)
        for (int l = 0; l < L; l++)
            for (int t = 0; t < T; t++) {
                for (int i = 0; i < C; i++) k[i] = frand(&seed, 2.0f), v[i] = frand(&seed, 1.0f);
                kv_store(kv, s, l, t, k, v);
            }
    int bad = 0, runs = 0;
    double worst = 0;
    for (int s = 0; s < NSEQ; s++)
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++)
                for (int pos = 0; pos < T; pos++) {
                    for (int i = 0; i < hd; i++) q[i] = frand(&seed, 1.5f);
                    attn_head(kv, s, l, h, pos, q, got, scores);
                    ref_head(kv, s, l, h, pos, q, want);
                    runs++;
                    if (memcmp(got, want, sizeof(float) * hd) != 0 && bad++ == 0)
                        check(0, "%s hd %d seq %d layer %d head %d pos %d: differs from the definition",
                              kv_dtype_name(dt), hd, s, l, h, pos);
                    if (pos % 7 == 0 || pos == T - 1) worst = fmax(worst, exact_err(kv, s, l, h, pos, q, got));
                }
    check(bad == 0, "%s hd %d: %d of %d heads bit-identical to the definition", kv_dtype_name(dt), hd,
          runs - bad, runs);
    check(worst < 1e-5, "%s hd %d: max |diff| from exact attention %.3g", kv_dtype_name(dt), hd, worst);
    printf("%s hd %3d: %d heads, bit-identical %d, max |diff| from exact %.3g\n", kv_dtype_name(dt), hd, runs,
           runs - bad, worst);
    free(k), free(v), free(q), free(got), free(want), free(scores);
    kv_free(kv);
}

int main(void) {
    static const int hds[] = {1, 5, 20, 32, 64, 72, 100, 136};
    for (int dt = KV_F32; dt <= KV_BF16; dt++)
        for (size_t i = 0; i < sizeof hds / sizeof hds[0]; i++) one_shape((kv_dtype)dt, hds[i]);
    return check_done("test_attention");
}
