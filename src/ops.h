/* ops: the forward operations of the model as pure functions on fp32 arrays (llm.c style). Shapes are in the
 * comments; rows are tokens. Backward versions (ops_*_backward) go next to each one. Weight products are not
 * here: they go through kern_matmul. */
#ifndef MOEC_OPS_H
#define MOEC_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

/* out[t,:] = table row ids[t] converted to fp32. table: V rows of H elements of type `type`.
 * Ids must be checked by the caller (0 <= id < V). */
// out: [T, H], table: [V, H]
int ops_embed(float *out, const int32_t *ids, int64_t T, const void *table, ggml_type type, int64_t H);

/* RMSNorm: out[t] = in[t] · rstd[t] · w, rstd[t] = 1/sqrt(mean(in[t]²) + eps), accumulated in double.
 * out may equal in. rstd may be NULL. */
// out, in: [T, C], w: [C], rstd: [T]
void ops_rmsnorm(float *out, float *rstd, const float *in, const float *w, int64_t T, int64_t C, float eps);

/* RoPE tables for positions pos0 .. pos0+T-1: cos/sin[t, i] for pair i < rope_dims/2.
 * table 0 (fp32): inv_freq_i = 1 / base^(2i/rope_dims) in fp32, angle = (float)pos · inv_freq_i, cos/sin in fp32.
 * table 1 (hf):   inv = bf16(inv_freq_i), p = bf16(pos), angle = bf16(p · inv), cos = bf16(cos(angle)), sin likewise. */
// cos, sin: [T, rope_dims/2]
void ops_rope_table(float *cos_t, float *sin_t, int64_t pos0, int64_t T, int64_t rope_dims, float base, int table);

/* Rotate the first rope_dims dims of every head in place. pairing 0 (normal): pairs (2i, 2i+1);
 * pairing 1 (neox): pairs (i, i + rope_dims/2). For a pair (a, b): a' = a·cos − b·sin, b' = b·cos + a·sin. */
// x: [T, n_heads·d], cos, sin: [T, rope_dims/2]
void ops_rope(float *x, int64_t T, int64_t n_heads, int64_t d, int64_t rope_dims, int pairing, const float *cos_t,
              const float *sin_t);

/* In-place numerically stable softmax of one row (max subtracted, sum in double). */
// x: [n]
void ops_softmax(float *x, int64_t n);

/* Causal attention of T new queries at positions pos0.. against a cache holding positions 0 .. pos0+T-1.
 * out[t, h·d + :] = Σ_j p[h,t,j] · v[j, (h/g)·d + :], p = softmax_j(q_h[t]·k_{h/g}[j] · scale), j <= pos0 + t,
 * g = n_head / n_kv. scratch: n_thr rows of (pos0 + T) floats (n_thr = threads to use, >= 1).
 * probs: NULL, or [n_head, T, pos0 + T] (zeros where masked). */
// out: [T, n_head·d], q: [T, n_head·d], kc, vc: [pos0+T, kv_stride] (first n_kv·d used)
void ops_attention(float *out, float *probs, const float *q, const float *kc, const float *vc, int64_t kv_stride,
                   int64_t pos0, int64_t T, int64_t n_head, int64_t n_kv, int64_t d, float scale, float *scratch,
                   int n_thr);

/* Same result as ops_attention, with queries in blocks of OPS_ATT_BLOCK (K/V rows loaded once per block: much
 * less memory traffic for long prefills), any cache layout and an fp32 or f16 cache (kv_type GGML_F32 or
 * GGML_F16): row j of kv head g is at kc + g·head_stride + j·kv_stride elements (token-major [pos][n_kv·d]:
 * kv_stride = n_kv·d, head_stride = d; head-major [n_kv][n_ctx][d]: kv_stride = d, head_stride = n_ctx·d).
 * scratch: ops_attention_scratch(n_thr, >= pos0 + T, d) floats. */
#define OPS_ATT_BLOCK 16
void ops_attention_blocked(float *out, float *probs, const float *q, const void *kc, const void *vc,
                           ggml_type kv_type, int64_t kv_stride, int64_t head_stride, int64_t pos0, int64_t T,
                           int64_t n_head, int64_t n_kv, int64_t d, float scale, float *scratch, int n_thr);
size_t ops_attention_scratch(int n_thr, int64_t n_ctx, int64_t d);

/* IEEE half <-> fp32 rows (F16C when the CPU has it; round to nearest even). */
void ops_f16_to_f32(float *dst, const uint16_t *src, int64_t n);
void ops_f32_to_f16(uint16_t *dst, const float *src, int64_t n);

/* SwiGLU: out = silu(gate) ⊙ up, silu(z) = z / (1 + e^−z). out may equal gate or up. */
// out, gate, up: [N]
void ops_swiglu(float *out, const float *gate, const float *up, int64_t N);

/* y += x */
// y, x: [N]
void ops_add(float *y, const float *x, int64_t N);
/* y[t] += b for every row */
// y: [T, C], b: [C]
void ops_add_bias(float *y, const float *b, int64_t T, int64_t C);
/* y[t] = (y[t] + x[t]) + b (a two-tap convolution's second tap and bias in one pass) */
// y, x: [T, C], b: [C]
void ops_add_add_bias(float *y, const float *x, const float *b, int64_t T, int64_t C);

#endif
