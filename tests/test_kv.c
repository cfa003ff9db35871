/* test_kv.c — the KV-cache arena: slot accounting, what kv_store writes is what kv_run reads back
 * for every (slot, layer, head, position), slots do not overlap, runs never pass the context, and
 * bad shapes are refused with a message. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kv.h"

/* The value stored for K (kind 0) or V (kind 1) of (slot, layer, pos), element e of the row. */
static float val(int kind, int slot, int layer, int pos, int e) {
    return (float)(((kind * 7 + slot) * 13 + layer) * 1000 + pos) + (float)e / 1024.0f;
}

int main(void) {
    char err[256];
    check(kv_new(0, 2, 8, 16, 4, err, sizeof err) == NULL && strstr(err, "invalid"), "0 slots refused: %s", err);
    check(kv_new(2, 2, 8, 18, 4, err, sizeof err) == NULL, "n_embd not a multiple of n_head refused");
    int S = 3, L = 2, T = 10, C = 16, H = 4, hd = C / H;
    kv_arena *a = kv_new(S, L, T, C, H, err, sizeof err);
    check(a != NULL, "arena: %s", a ? "ok" : err);
    if (!a) return check_done("test_kv");
    check(kv_slots(a) == S && kv_ctx(a) == T && kv_bytes(a) == (size_t)S * L * 2 * T * C * sizeof(float),
          "shape and size (%zu bytes)", kv_bytes(a));
    int s0 = kv_alloc_slot(a), s1 = kv_alloc_slot(a), s2 = kv_alloc_slot(a);
    check(s0 == 0 && s1 == 1 && s2 == 2 && kv_alloc_slot(a) == -1 && kv_slots_used(a) == 3,
          "slots handed out 0, 1, 2, then none (%d %d %d)", s0, s1, s2);
    kv_release_slot(a, 1);
    check(kv_slots_used(a) == 2 && kv_alloc_slot(a) == 1, "a released slot is handed out again");
    float k[16], v[16];
    for (int s = 0; s < S; s++)
        for (int l = 0; l < L; l++)
            for (int p = 0; p < T; p++) {
                for (int e = 0; e < C; e++) k[e] = val(0, s, l, p, e), v[e] = val(1, s, l, p, e);
                kv_store(a, s, l, p, k, v);
            }
    int ok = 1, runs_ok = 1;
    for (int s = 0; s < S; s++)
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++)
                for (int p = 0; p < T; p++) {
                    const float *kr, *vr;
                    size_t stride;
                    int n = kv_run(a, s, l, h, p, T - p, &kr, &vr, &stride);
                    runs_ok &= n >= 1 && n <= T - p;
                    for (int i = 0; i < n; i++)
                        for (int d = 0; d < hd; d++) {
                            ok &= kr[i * stride + d] == val(0, s, l, p + i, h * hd + d);
                            ok &= vr[i * stride + d] == val(1, s, l, p + i, h * hd + d);
                        }
                    runs_ok &= kv_run(a, s, l, h, p, 1, &kr, &vr, &stride) == 1;
                }
    check(ok, "every (slot, layer, head, position) reads back what was stored, K and V apart");
    check(runs_ok, "runs stay within [pos, ctx) and n_max");
    kv_free(a);
    kv_free(NULL);
    return check_done("test_kv");
}
