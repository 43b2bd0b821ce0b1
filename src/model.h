/* model: hyper-parameters, read-only weight views, per-sequence state and THE forward pass.
 *
 * One forward (model_forward) serves prefill, token-by-token decode (T = 1, same call), evaluation and training
 * (acts != NULL keeps what backward needs). Architectures differ only by per-layer variants (LFA on/off, RoPE
 * pairing and dims, FFN kind: dense / MoE with linear router / MoE with attention router), see docs/architecture.md.
 *
 * A `model` is read-only after load/create and may be shared by threads. Everything mutable for one sequence
 * (KV cache, LFA carry, position, scratch) lives in a `seq_state`.
 *
 * Weights are views {data, type, shape} in GGUF order: ne[0] is the row length (input dimension), so a matrix
 * with ne = {n_in, n_out} is n_out rows of n_in elements and is used through kern_matmul. A trainer builds a
 * model with model_create() whose views point into one flat fp32 buffer (llm.c style), see model_param. */
#ifndef MOEC_MODEL_H
#define MOEC_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "gguf.h"

typedef enum { MODEL_ARCH_LLAMA = 0, MODEL_ARCH_YUAN2MOE = 1 } model_arch;

/* RoPE pairing: NORMAL rotates adjacent pairs (2i, 2i+1) (llama.cpp "normal", llama2.c); NEOX rotates
 * (i, i + rope_dims/2) ("rotate_half", Yuan/NeoX). Both only touch the first rope_dims dims of each head. */
typedef enum { MODEL_ROPE_NORMAL = 0, MODEL_ROPE_NEOX = 1 } model_rope_pairing;

/* RoPE angle table: FP32 = θ_i = pos · base^(−2i/rope_dims) in fp32 (training math; default);
 * HF = the HF Yuan code's bf16 table (inv_freq, position, angle, cos and sin each rounded to bf16). */
typedef enum { MODEL_ROPE_TABLE_FP32 = 0, MODEL_ROPE_TABLE_HF = 1 } model_rope_table;

/* FFN kind of a layer. */
typedef enum { MODEL_FFN_DENSE = 0, MODEL_FFN_MOE_LINEAR = 1, MODEL_FFN_MOE_ATTN = 2 } model_ffn_kind;

typedef struct {
    model_arch arch;
    int64_t n_vocab;       /* V (from token_embd) */
    int64_t n_embd;        /* H */
    int64_t n_layer;       /* L */
    int64_t n_head;        /* n_h */
    int64_t n_head_kv;     /* n_kv (GQA; = n_h for yuan2moe) */
    int64_t head_dim;      /* d; attention width P = n_h·d may differ from H */
    int64_t n_ctx_train;   /* context_length key */
    int64_t n_ff;          /* FFN size of dense layers (0 if there are none) */
    int64_t n_ff_exp;      /* expert FFN size F (0 if dense) */
    int64_t n_expert;      /* E (0 = dense model) */
    int64_t n_expert_used; /* top-k */
    int64_t n_dense_lead;  /* yuan2moe: the first N layers are dense */
    int64_t rope_dims;     /* rotated dims at the start of each head (even, <= d) */
    float rope_base;
    float norm_eps;        /* every RMSNorm */
    model_rope_table rope_table;
    model_ffn_kind moe_router; /* router of MoE layers: MODEL_FFN_MOE_LINEAR or MODEL_FFN_MOE_ATTN */
    bool lfa;              /* yuan2moe: Localized Filtering-based Attention */
    bool tied;             /* output.weight absent: logits use token_embd */
} model_hparams;

/* Per-layer variant: everything in which architectures differ. */
typedef struct {
    bool lfa;
    model_rope_pairing rope_pairing;
    int64_t rope_dims;
    model_ffn_kind ffn;
} model_variant;

/* A weight view. data is read-only (mmap or a caller/trainer buffer). Unused ne are 1. */
typedef struct {
    const void *data;
    ggml_type type;
    int n_dims;
    int64_t ne[4];
} model_tensor;

typedef struct {
    model_variant var;
    model_tensor attn_norm;               /* {H} */
    model_tensor wq, wk, wv;              /* {H, n_h·d}, {H, n_kv·d}, {H, n_kv·d} */
    model_tensor wo;                      /* {n_h·d, H} */
    model_tensor lfa_c1, lfa_b1;          /* {H, H/2, 2} (tap 0 = previous token, tap 1 = current), {H/2} */
    model_tensor lfa_c2, lfa_b2;          /* {H/2, H, 2}, {H} */
    model_tensor lfa_norm;                /* {H} */
    model_tensor ffn_norm;                /* {H} */
    model_tensor router_q, router_k, router_v; /* {H, E} attention router */
    model_tensor gate_inp;                /* {H, E} linear router */
    model_tensor gate_exps, up_exps;      /* {H, F, E} */
    model_tensor down_exps;               /* {F, H, E} */
    model_tensor ffn_gate, ffn_up;        /* {H, F'} dense */
    model_tensor ffn_down;                /* {F', H} */
    /* Expert e's matrices (E pointers each; into the 3-D tensors, or the per-expert tensors of old files). */
    const void **exp_gate, **exp_up, **exp_down;
} model_layer;

/* One parameter tensor: its GGUF name, shape, and the view it binds. For a model_create'd model, `offset` is
 * its position (in floats) inside the flat fp32 buffer; numel = ne[0]·ne[1]·ne[2]·ne[3]. */
typedef struct {
    char name[64];
    int n_dims;
    int64_t ne[4];
    size_t numel;
    size_t offset;
    model_tensor *view;
} model_param;

typedef struct model {
    model_hparams hp;
    model_tensor tok_embd;    /* {H, V} */
    model_tensor output_norm; /* {H} */
    model_tensor output;      /* {H, V}; = tok_embd when tied */
    model_layer *layers;      /* [L] */
    model_param *params;      /* every parameter tensor, in file order */
    size_t n_params;          /* number of tensors */
    size_t n_floats;          /* total elements of all parameters */
    /* ownership (internal) */
    gguf_file *gguf;          /* when loaded from a file */
    gguf_file *meta;          /* model_create'd models: optional file whose general.* and tokenizer.* keys
                                 model_gguf_fill writes with the model (e.g. the file training started from); owned */
    float *flat;              /* model_create: the flat fp32 buffer (owned if flat_owned) */
    bool flat_owned;
    float *conv_buf;          /* loaded non-F32 1-D tensors converted to fp32 */
    const void **exp_ptrs;    /* backing of layers[].exp_* */
} model;

/* ---- loading / creating ------------------------------------------------------------------------------ */

typedef struct {
    int rope_table; /* -1: from the file (yuan2moe.rope.table, default fp32); else a model_rope_table */
    bool no_mmap;   /* read the file into anonymous memory (transparent huge pages) instead of mapping it: start-up
                       reads it all, decode streams the weights with fewer TLB misses (docs/performance.md) */
} model_load_opts;

/* Load a GGUF model (architectures yuan2moe and llama). Every tensor's presence, type and shape is validated.
 * NULL + one clear error line on any problem. opts may be NULL. */
model *model_load(const char *path, const model_load_opts *opts);
void model_free(model *m);

/* Check hyper-parameters for sanity (positive, bounded, consistent). -1 + error naming the bad value. */
int model_hparams_check(const model_hparams *hp);
/* Variant of layer il. */
model_variant model_layer_variant(const model_hparams *hp, int64_t il);

/* A model whose weights are fp32 views into one flat buffer of model->n_floats floats. flat NULL: allocate an
 * owned zeroed buffer; else bind to the caller's buffer (not freed by model_free). Parameters are laid out in
 * m->params order (offsets computed there). Weights are NOT initialised (zeros if owned). */
model *model_create(const model_hparams *hp, float *flat);
/* The parameter table of a model with these hyper-parameters, without weights (views have data NULL, type F32):
 * for sizes and accounting (model_get_stats) before anything large is allocated. Not usable for forward. */
model *model_plan(const model_hparams *hp);
/* Rebind every view of a model_create'd model to another flat buffer (e.g. the trainer's). */
int model_bind_flat(model *m, float *flat);
/* Writable flat buffer of a model_create'd model (NULL for a loaded model). */
float *model_flat(model *m);
/* Seeded initialisation of a model_create'd model as Yuan's training code does it: matrices N(0, std) (0.02 in
 * Megatron), output projections (attn_output, ffn_down*) N(0, std/sqrt(2L)), the LFA convolutions (weights and
 * biases) PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = 2·in_channels, norms 1. */
int model_init_random(model *m, uint64_t seed, float std);

/* Add the architecture keys and every parameter tensor (referenced, not copied: keep m alive until written) to a
 * GGUF writer. If m was loaded from a file, its general.* (except architecture) and tokenizer.* keys are copied. */
int model_gguf_fill(const model *m, gguf_writer *w);
/* model_gguf_fill + atomic write. */
int model_write_gguf(const model *m, const char *path);

const char *model_arch_name(model_arch a);

/* ---- per-sequence state ---------------------------------------------------------------------------------- */

typedef struct seq_state {
    const model *m;
    int64_t n_ctx;     /* capacity in positions */
    int64_t pos;       /* tokens processed so far (= position of the next token) */
    ggml_type kv_type; /* GGML_F32 (default) or GGML_F16 */
    void *k_cache;     /* [L][n_kv][n_ctx][d] (head-major) of kv_type, after RoPE */
    void *v_cache;     /* [L][n_kv][n_ctx][d] */
    float *lfa_carry;  /* [L][2][H]: conv1 output o1[pos-1] (first H/2), normed input x[pos-1] (zeros at the start) */
    /* scratch, grown on demand for the largest T seen (internal) */
    float *scratch;
    size_t scratch_cap;
    int64_t scratch_T;
    int64_t scratch_ctx; /* positions the attention scratch was sized for */
    int32_t *iscratch;
    size_t iscratch_cap;
    int att_threads;   /* per-thread attention score rows allocated in scratch */
} seq_state;

/* New state for up to n_ctx positions, fp32 KV cache. NULL + error (e.g. cache too large). */
seq_state *model_seq_new(const model *m, int64_t n_ctx);
/* Same with the KV cache stored as kv_type: GGML_F32, or GGML_F16 (half the memory and decode bandwidth; K and
 * V rounded to f16, so logits move by ~1e-3 relative; decode and full pass agree to that rounding). */
seq_state *model_seq_new_ex(const model *m, int64_t n_ctx, ggml_type kv_type);
void model_seq_free(seq_state *s);
/* Forget the sequence: pos = 0, carry zeroed (the cache is overwritten as it refills). */
void model_seq_reset(seq_state *s);

/* Copy the state of src (position, KV rows [0, pos), LFA carry) into dst, a state of the same model with
 * dst->n_ctx >= src->pos: fork a sequence (prefix sharing, beam search, speculative decoding). */
int model_seq_copy(seq_state *dst, const seq_state *src);

/* ---- training activations ---------------------------------------------------------------------------- */

/* What backward needs, per layer, for a forward of T tokens starting at position 0. Rows are tokens.
 * Pointers are NULL where the layer variant has no such activation. */
typedef struct {
    float *h_in;            /* [T, H] residual stream entering the layer */
    float *x, *rstd_x;      /* attn_norm output [T, H]; its 1/rms [T] */
    float *o1;              /* LFA conv1 output [T, H/2] (o1[t] = b1 + C1_0·x[t-1] + C1_1·x[t], x[-1] = 0) */
    float *o2;              /* LFA conv2 output [T, H] (o1[-1] = 0) */
    float *lfa_in;          /* o2 + x [T, H]: input of lfa_norm */
    float *rstd_lfa;        /* [T] */
    float *f;               /* lfa_norm output [T, H] (Q/K input; = x when no LFA: then f == x) */
    float *q, *k, *v;       /* after RoPE: [T, n_h·d], [T, n_kv·d]; v [T, n_kv·d] */
    float *att;             /* softmax probabilities [n_h, T, T] (zero above the diagonal) */
    float *atty;            /* attention output before Wo [T, n_h·d] */
    float *h_mid;           /* residual after attention [T, H] */
    float *u, *rstd_u;      /* ffn_norm output [T, H]; [T] */
    /* MoE */
    float *rq, *rk, *rv;    /* attention router projections [T, E] */
    float *rinner;          /* attention router inner softmax [T, E(i), E(j)] = softmax_j(q_i·k_j) */
    float *rlogits;         /* router logits [T, E] */
    int32_t *sel;           /* selected experts [T, k] (descending logit, ties: lower id first) */
    float *selw;            /* renormalised weights [T, k] = softmax over the k selected logits */
    float *e_gate, *e_up;   /* expert pre-activations [T·k, F], row t·k+s is token t's s-th expert */
    float *e_hid;           /* silu(gate)·up [T·k, F] */
    float *e_y;             /* expert outputs before weighting [T·k, H] */
    /* dense FFN */
    float *d_gate, *d_up, *d_hid; /* [T, F'] */
} model_layer_acts;

typedef struct {
    int64_t T;              /* capacity in tokens */
    model_layer_acts *layers; /* [L] */
    float *h_out;           /* [T, H] residual after the last layer */
    float *hn, *rstd_out;   /* output_norm output [T, H]; [T] */
    float *buf;             /* backing (internal) */
    int32_t *ibuf;
    size_t n_floats;
} model_acts;

model_acts *model_acts_new(const model *m, int64_t T);
void model_acts_free(model_acts *a);

/* ---- the forward pass -------------------------------------------------------------------------------- */

enum {
    MODEL_FWD_LAST = 1u << 0, /* logits of the last position only: logits is [1, V] */
};

/* Run T tokens ids[0..T) at positions s->pos .. s->pos+T-1 (the cache holds the earlier ones), then advance
 * s->pos by T. logits: [T, V] (or [1, V] with MODEL_FWD_LAST), or NULL to skip the output layer.
 * acts: NULL, or training storage (model_acts_new(m, >= T)); then s->pos must be 0.
 * Errors: out-of-range id, context full (pos + T > n_ctx), bad acts: checked before anything changes (s is
 * untouched). A failure inside the layers (out of memory in a kernel) leaves s half-updated: reset it. */
int model_forward(const model *m, seq_state *s, const int32_t *ids, int64_t T, float *logits, unsigned flags,
                  model_acts *acts);

/* One step for several sequences at once (batched decode, or prefill of several prompts): sequence seqs[b] takes
 * the n_tok[b] >= 1 ids that follow those of seqs[b-1] in ids, at its own positions, and advances by n_tok[b].
 * All rows share each layer's matrix products (tokens grouped by expert: each expert's weights are read once per
 * step, not once per sequence); RoPE, the KV cache, attention and the LFA carry are per sequence. The states must
 * be distinct and belong to m; the first one's scratch serves the whole batch. logits: [Σ n_tok, V], or with
 * MODEL_FWD_LAST [n_seq, V] (the last row of each sequence), or NULL. Each row equals what model_forward on its
 * sequence alone gives, up to the summation order of the float kernels (more rows take the blocked GEMM path).
 * Errors as model_forward (checked before anything changes). */
int model_forward_batch(const model *m, seq_state *const *seqs, int n_seq, const int32_t *ids, const int64_t *n_tok,
                        float *logits, unsigned flags);

/* ---- accounting (moec info) ------------------------------------------------------------------------------- */
typedef struct {
    double total_params;     /* every parameter (tied embedding counted once) */
    double active_params;    /* per token: all but the unused experts (embedding counted once) */
    double matmul_params;    /* weights multiplied per token (k experts, lm head; not the embedding lookup) */
    double flops_per_token;  /* 2·matmul_params + attention 4·L·n_h·d·ctx at the given context */
    double weight_bytes_per_token; /* bytes of weights read per token (active matrices + one embedding row) */
} model_stats;
void model_get_stats(const model *m, int64_t ctx, model_stats *st);

#endif
