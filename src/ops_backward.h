/* ops_backward: the backward of every forward op of ops.h / moe.h and of the weight products, on fp32 arrays.
 * Conventions: "d" prefixes are gradients of the loss; weight gradients are ACCUMULATED (+=), input gradients
 * are accumulated too unless the comment says "overwritten". Every function is deterministic and gives the same
 * bits for any thread count: each output element is summed by one thread in a fixed order. */
#ifndef MOEC_OPS_BACKWARD_H
#define MOEC_OPS_BACKWARD_H

#include <stddef.h>
#include <stdint.h>

/* Backward of y = x·Wᵀ (kern_matmul): dx += dy·W, dw += dyᵀ·x. dx or dw may be NULL (not needed).
 * W is fp32 [n_out rows of n_in]. Runs kern_matmul_backward (blocked GEMM). -1 + error on out of memory. */
// dx, x: [T, n_in], dw, w: [n_out, n_in], dy: [T, n_out]
int ops_matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t T,
                        int64_t n_in, int64_t n_out);

/* Backward of ops_embed: dtable[ids[t]] += dout[t] (in token order). */
// dtable: [V, H], dout: [T, H]
void ops_embed_backward(float *dtable, const float *dout, const int32_t *ids, int64_t T, int64_t H);

/* Backward of ops_rmsnorm (out = in·rstd·w): din += rstd·(dout⊙w) − rstd³/C · in · Σ(dout⊙w⊙in); dw += Σ_t dout⊙in·rstd.
 * rstd as saved by the forward. */
// din, dout, in: [T, C], w, dw: [C], rstd: [T]
void ops_rmsnorm_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                          const float *rstd, int64_t T, int64_t C);

/* Backward of ops_rope: rotate the gradient by the opposite angle (in place), same pairing / dims. */
// dx: [T, n_heads·d], cos, sin: [T, rope_dims/2]
void ops_rope_backward(float *dx, int64_t T, int64_t n_heads, int64_t d, int64_t rope_dims, int pairing,
                       const float *cos_t, const float *sin_t);

/* Backward of ops_attention for a sequence starting at position 0 (training): p = probs saved by the forward.
 * dq, dk, dv are OVERWRITTEN. Parallel over kv heads; blocked GEMMs (kern_gemm_acc). -1 + error on out of memory. */
// dq, q: [T, n_head·d], dk, dv, k, v: [T, n_kv·d], dout: [T, n_head·d], probs: [n_head, T, T]
int ops_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                           const float *v, const float *probs, int64_t T, int64_t n_head, int64_t n_kv, int64_t d,
                           float scale);

/* Backward of ops_swiglu (out = silu(g)·u): dg (+)= dout·u·silu'(g), du (+)= dout·silu(g). OVERWRITES dg, du. */
// dg, du, dout, g, u: [N]
void ops_swiglu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, int64_t N);

/* Backward of the LFA causal kernel-2 convolution out[t] = b + W0·in[t-1] + W1·in[t] (in[-1] = 0), W0/W1 the
 * taps (tap 0 = previous token). din += W1ᵀ·dout[t] + W0ᵀ·dout[t+1]; dw0 += Σ dout[t]·in[t-1]ᵀ;
 * dw1 += Σ dout[t]·in[t]ᵀ; db += Σ_t dout[t]. din may be NULL. -1 + error on out of memory. */
// din, in: [T, C_in], dout: [T, C_out], w0, w1, dw0, dw1: [C_out, C_in], db: [C_out]
int ops_conv2_causal_backward(float *din, float *dw0, float *dw1, float *db, const float *dout, const float *in,
                              const float *w0, const float *w1, int64_t T, int64_t C_in, int64_t C_out);

/* Backward of the attention router (moe_router_attn): logits[i] = Σ_j a_ij v_j, a_ij = softmax_j(q_i k_j).
 * dq, dk, dv are OVERWRITTEN. inner: the a saved by the forward. */
// dq, dk, dv, q, k, v, dlogits: [T, E], inner: [T, E, E]
void ops_router_attn_backward(float *dq, float *dk, float *dv, const float *dlogits, const float *q,
                              const float *k, const float *v, const float *inner, int64_t T, int64_t E);

/* Backward of moe_topk's renormalised weights w = softmax over the k selected logits (selection has no gradient):
 * dlogits[t, sel[t,s]] += w_s·(dw_s − Σ_r w_r dw_r); other logits get nothing. */
// dlogits: [T, E], sel, w, dw: [T, k]
void ops_topk_softmax_backward(float *dlogits, const int32_t *sel, const float *w, const float *dw, int64_t T,
                               int64_t E, int64_t k);

/* Cross-entropy of each row with optional loss mask: loss_t = logsumexp(logits[t]) − logits[t, target[t]].
 * Returns Σ_t mask_t·loss_t (double). If dlogits != NULL, dlogits[t] = scale·mask_t·(softmax(logits[t]) − onehot)
 * (overwritten; rows with mask 0 become 0). dlogits may equal logits. mask NULL = all 1. */
// logits, dlogits: [T, V], target, mask: [T]
double ops_cross_entropy(float *dlogits, const float *logits, const int32_t *target, const float *mask, int64_t T,
                         int64_t V, float scale);

#endif
