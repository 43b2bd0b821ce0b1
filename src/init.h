/* init: random initialisation of a model_create'd model, as the Yuan 2.0 training recipe prescribes
 * (spec yuan2-m32.md §2 "Initialization"), and writing it as GGUF with a chosen matrix type.
 *
 *   token_embd, output, attn_q/k/v, routers (ffn_gate_inp, ffn_router_q/k/v), ffn_gate/up(_exps)  N(0, std)
 *   attn_output, ffn_down(_exps)  ("output layers")                                          N(0, std/sqrt(2L))
 *   lfa_conv1/2 weight and bias: PyTorch's default Conv2d init, kaiming_uniform(a=sqrt(5))
 *                                = U(-1/sqrt(fan_in), +1/sqrt(fan_in)), fan_in = in_channels * 2 (kernel (2,1)):
 *                                conv1 fan_in = 2H, conv2 fan_in = H
 *   norms (attn_norm, lfa_norm, ffn_norm, output_norm)                                      1
 *
 * Deterministic: parameter i's chunk c (INIT_CHUNK elements) draws from its own stream seeded by (seed, i, c),
 * so the result does not depend on the number of threads, and changing one tensor does not shift the others. */
#ifndef MOEC_INIT_H
#define MOEC_INIT_H

#include <stdint.h>

#include "gguf.h"
#include "model.h"
#include "tok.h"

#define INIT_CHUNK (1u << 20)

/* How a parameter is initialised. */
typedef enum {
    INIT_ONES = 0,    /* norms */
    INIT_NORMAL = 1,  /* N(0, a) */
    INIT_UNIFORM = 2, /* U(-a, a) */
} init_kind;

/* The rule for parameter p of model m with base std: kind and scale a (std or bound). */
void init_rule(const model *m, const model_param *p, float std, init_kind *kind, float *a);

/* Fill every parameter of a model_create'd model (m->flat) by the rules above. std: 0.02 in the recipe.
 * -1 + error if m is not a model_create'd model or std is not positive. */
int init_model_weights(model *m, uint64_t seed, float std);

/* Storage type of parameter p when writing with matrix type `type`: vectors F32; matrices `type`, except that
 * for Q8_0/Q4_0 the routers (ffn_gate_inp, ffn_router_*, small and precision-critical; llama.cpp's quantizer
 * also keeps ffn_gate_inp), the LFA convs and matrices whose rows are not a multiple of 32 stay F32. */
ggml_type init_tensor_type(const model_param *p, ggml_type type);

/* Write m (a model_create'd model) to path as GGUF, each tensor stored as init_tensor_type(p, type) (type: F32,
 * F16, BF16, Q8_0 or Q4_0); tokenizer keys from vocab when vocab != NULL (its size must equal m's n_vocab).
 * The flat buffer is not modified (converted copies are made and freed). Atomic write. */
int init_write_gguf(const model *m, const char *path, ggml_type type, const tok_vocab *vocab);

#endif
