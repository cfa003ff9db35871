/* attention.h — causal self-attention of one token for one head over its sequence's paged K/V.
 *
 * attn_head() reads the head's K and V for positions 0..pos straight from the arena (kv.h: runs of
 * up to KV_PAGE consecutive positions, widened from fp16/bf16 as they are loaded; widening is
 * exact) and computes, with hd = head_dim:
 *   s[t]  = dot(q, K[t]) * (1 / sqrt(hd))                       t = 0..pos
 *   m     = max s[t];  e[t] = vm_exp(s[t] - m)
 *   Z     = sum e[t];  p[t] = e[t] * (1 / Z)
 *   out[d] = p[0] V[0][d] + ... + p[pos] V[pos][d]
 * in one fixed order of operations, which is part of the engine's batch-invariance contract (it
 * depends on pos and hd only, never on the batch or the thread):
 *   dot(a, b):  8 lanes, lane j = fma chain over a[8i+j] b[8i+j], i ascending, from 0; the lanes summed
 *               as ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) (vmath.h vm_hsum), then the
 *               tail elements 8*(hd/8)..hd-1 fma'd into it in index order (= vmath.h vm_dot);
 *   Z:          the same 8-lane scheme as vm_sum over e[0..pos] (lane j adds e[8i+j], i ascending,
 *               lanes summed as above, then the tail e[8*((pos+1)/8)..pos] added in order);
 *   out[d]:     one fma chain per d over t ascending, from 0: out = fma(p[t], V[t][d], out).
 * Which instructions do it (registers, loads fused with widening, several positions at once) is
 * free; the order above is not. tests/test_attention.c checks it bit for bit against a scalar
 * rendering of this definition for every KV dtype and odd head sizes. */
#ifndef GPT2D_ATTENTION_H
#define GPT2D_ATTENTION_H

#include "kv.h"

/* out (hd) = attention of q (hd) at position pos over positions 0..pos of (seq, layer, head).
 * scores: scratch of at least pos + 1 floats. The positions must have been stored (kv_store). */
void attn_head(const kv_arena *kv, int seq, int layer, int head, int pos, const float *q, float *out,
               float *scores);

#endif
