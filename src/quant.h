/* quant: ggml block formats. Quantizers for Q8_0 and Q4_0 (ggml's reference rounding rules) and
 * dequantizers for Q8_0, Q4_0, Q4_1, Q4_K, Q6_K. Layouts (../shared/spec/formats.md, little-endian, packed):
 *   Q8_0 (32 elems, 34 B): f16 d; int8 q[32];                       x = d * q
 *   Q4_0 (32 elems, 18 B): f16 d; u8 qs[16];                         x[j] = d * ((qs[j] & 15) - 8),
 *                                                                    x[j+16] = d * ((qs[j] >> 4) - 8)
 *   Q4_K (256 elems, 144 B): f16 d, f16 dmin, u8 scales[12], u8 qs[128]; 8 sub-blocks of 32 with 6-bit
 *        scale sc and min m: x = d*sc*q - dmin*m, q 4-bit (sub-blocks 2g / 2g+1 = low / high nibbles of qs[32g..])
 *   Q6_K (256 elems, 210 B): u8 ql[128], u8 qh[64], int8 scales[16], f16 d; x = d * scales[i/16] * (q - 32),
 *        q 6-bit = 4 low bits from ql + 2 high bits from qh.
 * All functions take n = number of elements, a multiple of the type's block size. */
#ifndef MOEC_QUANT_H
#define MOEC_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include "gguf.h"

#define QUANT_QK 32   /* Q8_0 / Q4_0 block */
#define QUANT_QKK 256 /* K-quant super-block */

/* x[n] -> Q8_0 blocks: d = amax/127, q = round(x/d) (round half away from zero). */
void quant_q8_0(const float *x, void *dst, int64_t n);
/* x[n] -> Q4_0 blocks: d = max/-8 (max = the signed value of largest magnitude), q = min(15, (int)(x/d + 8.5)). */
void quant_q4_0(const float *x, void *dst, int64_t n);

/* Blocks -> x[n]. */
void quant_deq_q8_0(const void *src, float *x, int64_t n);
void quant_deq_q4_0(const void *src, float *x, int64_t n);
void quant_deq_q4_1(const void *src, float *x, int64_t n); /* Q4_1 (32, 20 B): f16 d, f16 m, u8 qs[16]; x = d*q + m */
void quant_deq_q4_k(const void *src, float *x, int64_t n);
void quant_deq_q6_k(const void *src, float *x, int64_t n);

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K block's 12-byte scales field. */
void quant_q4_k_scale_min(const uint8_t *scales, int j, uint8_t *sc, uint8_t *m);

/* Convert an fp32 row of n elements to type t (F32, F16, BF16, Q8_0, Q4_0). -1 + error for other types
 * or an n that is not a multiple of the block size. dst holds ggml_row_bytes(t, n) bytes. */
int quant_row(ggml_type t, const float *x, void *dst, int64_t n);
/* Can quant_row produce this type? */
int quant_can_write(ggml_type t);

/* llama.cpp's general.file_type value for a model whose matrices are mostly of type t (F32 0, F16 1, Q4_0 2,
 * Q8_0 7, BF16 32); -1 for other types. */
int quant_file_type(ggml_type t);

/* The storage type `moec quantize` gives tensor `name` (n_dims, ne[0]) of current type `cur` when the requested
 * type is `target` (docs/quantization.md):
 *   - 1-D tensors, non-".weight" tensors, norms (*_norm.weight), routers (ffn_gate_inp, ffn_router_*), LFA
 *     convolutions (lfa_conv*), and training state (train.*) keep their type;
 *   - rows whose length is not a multiple of the target's block size keep their type;
 *   - token_embd.weight and output.weight become Q8_0 when the target is Q4_0 (sensitive, and looked up by row);
 *   - every other matrix (2-D and 3-D expert stacks) becomes `target`. */
ggml_type quant_pick_type(const char *name, uint32_t n_dims, int64_t ne0, ggml_type cur, ggml_type target);

/* Convert a GGUF model: every KV copied, tensors converted per quant_pick_type (dequantize -> fp32 -> target,
 * or a byte copy when the type does not change), general.file_type set, general.quantization_version = 2 when a
 * tensor is quantized. Streams (the output is never held in memory) and writes atomically.
 * n_changed (may be NULL): number of tensors whose type changed. */
int quant_model_file(const char *in, const char *out, ggml_type target, int64_t *n_changed);

#endif
