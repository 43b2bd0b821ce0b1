/* train: loss, backward orchestration, optimizers, schedules and checkpoints.
 *
 * Memory follows llm.c: one flat fp32 buffer each for the parameters, gradients and the two optimizer moments,
 * laid out like model->params (model_create binds the model's views to the parameter buffer). The optimizer,
 * clipping and checkpointing are loops over those arrays.
 *
 * Loss of a step = Σ(ce·mask) / Σmask over every token of every sequence of the step (Megatron's rule), plus the
 * optional Switch load-balancing loss and router z-loss (default off, as in Yuan 2.0-M32 training).
 * Backward = model_forward(..., acts) then ops_backward layer by layer, each expert over the tokens routed to it.
 * Everything is deterministic: same inputs and thread count -> same bits (needed for bitwise resume). */
#ifndef MOEC_TRAIN_H
#define MOEC_TRAIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "data.h"
#include "model.h"
#include "util.h"

/* ---- optimizers over flat buffers -------------------------------------------------------------------- */

typedef enum { TRAIN_OPT_ADAMW = 0, TRAIN_OPT_SGD = 1 } train_opt_kind;

/* A contiguous range of the flat buffer with one weight-decay rule (decay: matrices yes, norms/biases no). */
typedef struct {
    size_t offset, numel;
    bool decay;
} train_segment;

typedef struct {
    train_opt_kind kind;
    float beta1, beta2, eps; /* AdamW */
    float momentum;          /* SGD (0 = plain) */
    float weight_decay;      /* decoupled (AdamW: p -= lr·wd·p), SGD: added to the gradient */
} train_opt_cfg;

/* AdamW β = (0.9, 0.95), eps 1e-8, wd 0.1 (Yuan 2.0-M32's settings). */
void train_opt_defaults(train_opt_cfg *c);

/* One update at learning rate lr; t = 1-based step number (Adam bias correction). m, v: moments (v unused by SGD;
 * m unused by SGD without momentum). Same formulas as torch.optim.AdamW / torch.optim.SGD. */
// p, g, m, v: [n] covering every segment
void train_opt_step(const train_opt_cfg *c, float lr, int64_t t, float *p, const float *g, float *m, float *v,
                    const train_segment *seg, size_t n_seg);

/* Global L2 norm of g, deterministic (fixed blocks summed in double, combined in order). */
double train_grad_norm(const float *g, size_t n);
/* If the norm exceeds max_norm > 0, scale g by max_norm / norm. Returns the norm before clipping. */
double train_clip_grad(float *g, size_t n, float max_norm);

/* Global-norm clipping fused into the update (one pass less over the gradients): norm = train_grad_norm(g); if
 * update, train_opt_step with g scaled by max_norm / norm when max_norm > 0 and norm > max_norm. g is not modified.
 * Same bits as train_clip_grad followed by train_opt_step. Returns the norm before clipping. */
double train_clip_step(const train_opt_cfg *c, float lr, int64_t t, float max_norm, bool update, float *p,
                       const float *g, float *m, float *v, const train_segment *seg, size_t n_seg, size_t n);

/* Learning rate at 0-based step: linear warm-up lr·(step+1)/warmup for step < warmup, then cosine decay from lr to
 * lr_min at step total-1 (constant lr_min after). total <= warmup: constant lr after warm-up. */
float train_lr_at(int64_t step, int64_t warmup, int64_t total, float lr, float lr_min);

/* ---- trainer ------------------------------------------------------------------------------------------ */

#define TRAIN_MAX_GROUP 16 /* rows whose backward runs together (train_set_group) */

typedef struct {
    float aux_lb;  /* Switch load-balancing loss coefficient (0 = off): α·E·Σ_e f_e·P_e per sequence */
    float aux_z;   /* router z-loss coefficient (0 = off): β·mean_t logsumexp(router logits)² */
} train_aux_cfg;

/* Wall time of train_seq's phases (seconds, summed over calls; diagnostics for moec train MOEC_TRAIN_PROFILE=1). */
enum {
    TRAIN_PROF_FORWARD,   /* model_forward with activations */
    TRAIN_PROF_LOSS,      /* cross-entropy and its gradient */
    TRAIN_PROF_OUTPUT,    /* output head and final norm backward */
    TRAIN_PROF_FFN,       /* FFN / MoE backward (experts, routers, norm) */
    TRAIN_PROF_ATTN_MM,   /* Wo, Wq, Wk, Wv backward */
    TRAIN_PROF_ATTN_CORE, /* softmax attention and RoPE backward */
    TRAIN_PROF_LFA,       /* LFA, input norm, embedding backward */
    TRAIN_PROF_N
};

typedef struct {
    model *m;                 /* model_create'd; views into params */
    float *params;            /* = model_flat(m), the model's own buffer */
    float *grads, *m1, *m2;   /* flat [n] */
    size_t n;
    train_segment *seg;       /* one per parameter tensor (tied output shares the embedding) */
    size_t n_seg;
    int64_t T;                /* max sequence length */
    train_aux_cfg aux;
    double aux_loss;          /* aux losses (already weighted) of the last train_seq */
    /* per-layer expert load: tokens routed to each expert since train_load_reset, [L·E] */
    double *expert_load;
    double prof[TRAIN_PROF_N]; /* see TRAIN_PROF_* */
    bool prof_cpu;             /* prof counts process CPU time instead of wall time */
    /* internal */
    model_acts *acts;         /* = acts_g[0] */
    model_acts *acts_g[TRAIN_MAX_GROUP]; /* activations of the rows of a group */
    int64_t G;                /* rows per group (train_set_group) */
    seq_state *seq;
    float *logits;            /* [T, V] */
    float *buf;               /* backward scratch */
    size_t buf_n;
} train_state;

/* Trainer over a model_create'd model: allocates grads/moments and binds the model to its parameter buffer
 * (the model's current weights are copied in). T: longest sequence. NULL + error. */
train_state *train_new(model *m, int64_t T);
void train_free(train_state *s); /* does not free the model */

void train_zero_grad(train_state *s);

/* Forward + backward of one sequence of T <= s->T tokens: grads += ∂/∂θ (scale·Σ_t mask_t·ce_t + aux losses).
 * *ce_sum (may be NULL) receives Σ_t mask_t·ce_t. mask NULL = all ones. */
// in, target, mask: [T]
int train_seq(train_state *s, const int32_t *in, const int32_t *target, const float *mask, int64_t T, float scale,
              double *ce_sum);
/* Same over n_rows rows of T tokens (in, target, mask: [n_rows, T]), in groups of s->G rows: each row runs its
 * forward, then the layers' backward runs over the group, each expert once over the tokens of all its rows (bigger
 * matrix products: faster than row by row; the sum order differs from train_seq's, by rounding only).
 * *ce_sum (may be NULL) = Σ over all rows; s->aux_loss = the rows' aux losses. */
int train_rows(train_state *s, const int32_t *in, const int32_t *target, const float *mask, int64_t n_rows,
               int64_t T, float scale, double *ce_sum);
/* Rows per group (1..TRAIN_MAX_GROUP; train_new sets 1): G sets of activations (model_acts_new) and scratch. On
 * failure (out of memory) the trainer is left with one row per group. */
int train_set_group(train_state *s, int64_t G);
/* Estimated bytes one more row of a group costs (its activations and its share of the backward scratch). */
double train_row_bytes(const model *m, int64_t T);

/* Forward only: Σ_t mask_t·ce_t of one sequence (no gradient). */
int train_eval_seq(train_state *s, const int32_t *in, const int32_t *target, const float *mask, int64_t T,
                   double *ce_sum);

void train_load_reset(train_state *s);

/* Training FLOPs per token of a step over sequences of T tokens, counting matrix products only: 3 x the forward's
 * (forward 2·W, backward 4·W: dx and dW) for the W matmul weights a token meets (model_get_stats: k of E experts,
 * routers, LFA taps, the output head), plus the causal attention 3 x 4·L·n_head·d·c at the mean context
 * c = (T+1)/2 (QKᵀ and PV). This is the count of the "peak" share in moec train's progress line. */
double train_flops_per_token(const model *m, int64_t T);

/* GFLOP/s of moec's fp32 GEMM (kern_gemm_acc, the kernel of the backward) on a [512 x 512] x [512 x 512] product
 * with the current OpenMP threads, best of ~0.2 s of runs: the "matmul peak" moec train reports its share of.
 * Returns 0 if it cannot be measured (out of memory). */
double train_gemm_peak(void);

/* ---- checkpoints ------------------------------------------------------------------------------------ */

/* Training progress saved with the weights. */
typedef struct {
    int64_t step;          /* optimizer steps done */
    uint64_t tokens;       /* tokens trained on */
    moec_rng rng;
    data_pos data;         /* position of the training loader */
    float lr, lr_min;      /* informative */
    int32_t opt_kind;
} train_progress;

/* Checkpoint = GGUF: the model (model_gguf_fill) + F32 tensors train.m1 / train.m2 (flat moments, [n]) +
 * keys train.step, train.tokens, train.rng (u64[4]), train.data (u64[3] epoch,item,off), train.opt.
 * Written atomically. */
int train_save(const train_state *s, const train_progress *pr, const char *path);
/* Load a checkpoint (or a plain model file: then moments are zero and progress is zero). Returns a new trainer
 * owning a model_create'd model; free with train_free + model_free(s->m). */
train_state *train_load(const char *path, int64_t T, train_progress *pr);

/* Copy a GGUF file without its train.* keys and tensors (moec export). */
int train_export(const char *ckpt, const char *out);

#endif
