/* moe: mixture-of-experts routing and expert dispatch (forward; backward goes next to each op).
 * Routers: attention (Yuan 2.0-M32) and linear (Mixtral). Top-k with renormalised weights, deterministic ties
 * (lower expert id wins). Experts run once each over the tokens routed to them: the gate and up products of all
 * active experts are one kern_matmul_multi call (one fork/join), their down products another. */
#ifndef MOEC_MOE_H
#define MOEC_MOE_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

/* Attention router: logits[t, i] = Σ_j softmax_j(q[t,i]·k[t,j]) · v[t,j] (no scaling, fp32 softmax).
 * inner: NULL, or [T, E, E] receives softmax_j(q[t,i]·k[t,j]) at [t, i, j]. */
// logits: [T, E], q, k, v: [T, E]
void moe_router_attn(float *logits, float *inner, const float *q, const float *k, const float *v, int64_t T,
                     int64_t E);

/* Top-k of each row (descending logit; equal logits: lower id first; NaN never beats a number) and the
 * renormalised weights w = softmax over the k selected logits (= softmax over all E, then divided by the sum
 * of the selected). */
// sel, w: [T, k], logits: [T, E]
void moe_topk(int32_t *sel, float *w, const float *logits, int64_t T, int64_t E, int64_t k);

/* Group the T·k routed slots by expert: order[start[e] .. start[e+1]) lists the slots r = t·k + s routed to
 * expert e, in increasing t. */
// order: [T·k], start: [2E+1] (the last E are scratch), sel: [T, k]
void moe_group(int32_t *order, int32_t *start, const int32_t *sel, int64_t T, int64_t E, int64_t k);

/* Expert weights: E pointers per matrix (gate, up: F rows of H; down: H rows of F). */
typedef struct {
    const void *const *gate, *const *up, *const *down;
    ggml_type t_gate, t_up, t_down;
    int64_t E, H, F;
} moe_experts;

/* Scratch floats/ints moe_experts_forward needs for T tokens with top-k routing. */
size_t moe_scratch_floats(int64_t T, int64_t H, int64_t F, int64_t k);
size_t moe_scratch_ints(int64_t T, int64_t E, int64_t k);

/* out[t] += Σ_s w[t,s] · W2_e(silu(W1g_e·u[t]) ⊙ W1u_e·u[t]), e = sel[t,s]. Each expert runs once over its tokens;
 * the sum over s is taken in ascending expert order. Saves (each NULL or [T·k, ·], row t·k+s): gate and up
 * pre-activations, hidden = silu(gate)·up, expert output y before weighting. */
// out: [T, H], u: [T, H], sel, w: [T, k]
int moe_experts_forward(float *out, const float *u, const int32_t *sel, const float *w, int64_t T, int64_t k,
                        const moe_experts *ex, float *scratch, int32_t *iscratch, float *save_gate, float *save_up,
                        float *save_hid, float *save_y);

#endif
