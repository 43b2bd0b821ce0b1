/* train: loss, backward orchestration, optimizers, schedules, checkpoints. See train.h. */
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kern.h"
#include "moe.h"
#include "ops.h"
#include "ops_backward.h"

/* ---- optimizers ------------------------------------------------------------------------------------------ */

void train_opt_defaults(train_opt_cfg *c) {
    memset(c, 0, sizeof *c);
    c->kind = TRAIN_OPT_ADAMW;
    c->beta1 = 0.9f;
    c->beta2 = 0.95f;
    c->eps = 1e-8f;
    c->weight_decay = 0.1f;
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#define TRAIN_X86 1
/* AdamW over the first n/8·8 of n elements, AVX2 (no FMA: every operation rounds as the scalar loop's, so both
 * give the same bits); returns how many it did (the caller's scalar loop does the rest). */
__attribute__((target("avx2"))) static int64_t adamw_avx2(float *p, const float *g, float *m, float *v, int64_t n,
                                                      float gs, float b1, float b2, float bc1, float bc2, float lr,
                                                      float eps, float wd) {
    const __m256 vgs = _mm256_set1_ps(gs), vb1 = _mm256_set1_ps(b1), va1 = _mm256_set1_ps(1.0f - b1),
                 vb2 = _mm256_set1_ps(b2), va2 = _mm256_set1_ps(1.0f - b2), vc1 = _mm256_set1_ps(bc1),
                 vc2 = _mm256_set1_ps(bc2), vlr = _mm256_set1_ps(lr), veps = _mm256_set1_ps(eps),
                 vwd = _mm256_set1_ps(wd);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), vgs), pi = _mm256_loadu_ps(p + i);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(va1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(va2, gi), gi));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 mh = _mm256_div_ps(mi, vc1), vh = _mm256_div_ps(vi, vc2);
        __m256 u = _mm256_add_ps(_mm256_div_ps(mh, _mm256_add_ps(_mm256_sqrt_ps(vh), veps)), _mm256_mul_ps(vwd, pi));
        _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_mul_ps(vlr, u)));
    }
    return i;
}
#else
#define TRAIN_X86 0
#endif

#define OPT_CHUNK 16384 /* elements per work item of the optimizer */

/* One update with the gradient multiplied by gs (the clipping factor; 1 = none: x·1 is exact). */
static void opt_step_scaled(const train_opt_cfg *c, float lr, int64_t t, float *p, const float *g, float *m, float *v,
                            const train_segment *seg, size_t n_seg, float gs) {
    float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
#if TRAIN_X86
    const bool simd = c->kind == TRAIN_OPT_ADAMW && strcmp(kern_path(), "scalar") != 0;
#endif
    for (size_t s = 0; s < n_seg; s++) {
        float wd = seg[s].decay ? c->weight_decay : 0.0f;
        float *ps = p + seg[s].offset, *ms = m ? m + seg[s].offset : NULL, *vs = v ? v + seg[s].offset : NULL;
        const float *gs_ = g + seg[s].offset;
        int64_t n = (int64_t)seg[s].numel, nch = (n + OPT_CHUNK - 1) / OPT_CHUNK;
        /* chunks are independent element ranges: the same bits for any thread count */
#pragma omp parallel for schedule(static) if (nch > 4)
        for (int64_t ch = 0; ch < nch; ch++) {
            int64_t lo = ch * OPT_CHUNK, hi = lo + OPT_CHUNK < n ? lo + OPT_CHUNK : n;
            if (c->kind == TRAIN_OPT_ADAMW) {
                int64_t i = lo;
#if TRAIN_X86
                if (simd)
                    i += adamw_avx2(ps + lo, gs_ + lo, ms + lo, vs + lo, hi - lo, gs, b1, b2, bc1, bc2, lr, eps,
                                    wd);
#endif
                for (; i < hi; i++) {
                    float gi = gs_[i] * gs;
                    float mi = b1 * ms[i] + (1.0f - b1) * gi;
                    float vi = b2 * vs[i] + (1.0f - b2) * gi * gi;
                    ms[i] = mi;
                    vs[i] = vi;
                    float mh = mi / bc1, vh = vi / bc2;
                    ps[i] -= lr * (mh / (sqrtf(vh) + eps) + wd * ps[i]);
                }
            } else {
                for (int64_t i = lo; i < hi; i++) {
                    float gi = gs_[i] * gs + wd * ps[i];
                    if (c->momentum != 0.0f && ms) {
                        /* torch: buf = g at the first step, then buf = μ·buf + g */
                        gi = t <= 1 ? gi : c->momentum * ms[i] + gi;
                        ms[i] = gi;
                    }
                    ps[i] -= lr * gi;
                }
            }
        }
    }
}

void train_opt_step(const train_opt_cfg *c, float lr, int64_t t, float *p, const float *g, float *m, float *v,
                    const train_segment *seg, size_t n_seg) {
    opt_step_scaled(c, lr, t, p, g, m, v, seg, n_seg, 1.0f);
}

double train_clip_step(const train_opt_cfg *c, float lr, int64_t t, float max_norm, bool update, float *p,
                       const float *g, float *m, float *v, const train_segment *seg, size_t n_seg, size_t n) {
    double norm = train_grad_norm(g, n);
    float gs = max_norm > 0 && norm > max_norm ? (float)(max_norm / norm) : 1.0f;
    if (update) opt_step_scaled(c, lr, t, p, g, m, v, seg, n_seg, gs);
    return norm;
}

#define NORM_BLOCK 65536
/* Σ g[i]² over [0, n) in double, as 8 lanes (lane l sums the elements i ≡ l mod 8 in order), combined as
 * ((l0+l4)+(l1+l5))+((l2+l6)+(l3+l7)). The AVX2 and the scalar code do exactly these operations: same bits. */
#if TRAIN_X86
__attribute__((target("avx2"))) static double sumsq_avx2(const float *g, size_t n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256d lo = _mm256_cvtps_pd(_mm_loadu_ps(g + i)), hi = _mm256_cvtps_pd(_mm_loadu_ps(g + i + 4));
        a0 = _mm256_add_pd(a0, _mm256_mul_pd(lo, lo));
        a1 = _mm256_add_pd(a1, _mm256_mul_pd(hi, hi));
    }
    double l[8];
    _mm256_storeu_pd(l, a0);
    _mm256_storeu_pd(l + 4, a1);
    for (size_t k = 0; i < n; i++, k++) l[k] += (double)g[i] * g[i];
    return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}
#endif

static double sumsq_scalar(const float *g, size_t n) {
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) l[k] += (double)g[i + k] * g[i + k];
    for (size_t k = 0; i < n; i++, k++) l[k] += (double)g[i] * g[i];
    return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
}

static double sumsq(const float *g, size_t n, bool simd) {
#if TRAIN_X86
    if (simd) return sumsq_avx2(g, n);
#endif
    (void)simd;
    return sumsq_scalar(g, n);
}

double train_grad_norm(const float *g, size_t n) {
    int64_t nb = (int64_t)((n + NORM_BLOCK - 1) / NORM_BLOCK);
    double total = 0.0;
    const bool simd = strcmp(kern_path(), "scalar") != 0;
    double *part = malloc((size_t)(nb > 0 ? nb : 1) * sizeof(double));
    /* fixed blocks, each summed by one thread, combined in block order: the same bits for any thread count */
#pragma omp parallel for schedule(static) if (part && nb > 1)
    for (int64_t b = 0; b < nb; b++) {
        size_t lo = (size_t)b * NORM_BLOCK, hi = lo + NORM_BLOCK < n ? lo + NORM_BLOCK : n;
        double v = sumsq(g + lo, hi - lo, simd);
        if (part) part[b] = v;
        else total += v; /* no memory for the partial sums: serial, same order */
    }
    if (part)
        for (int64_t b = 0; b < nb; b++) total += part[b];
    free(part);
    return sqrt(total);
}

double train_clip_grad(float *g, size_t n, float max_norm) {
    double norm = train_grad_norm(g, n);
    if (max_norm > 0 && norm > max_norm) {
        float s = (float)(max_norm / norm);
        for (size_t i = 0; i < n; i++) g[i] *= s;
    }
    return norm;
}

float train_lr_at(int64_t step, int64_t warmup, int64_t total, float lr, float lr_min) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (total <= warmup + 1) return total <= warmup ? lr : lr_min;
    if (step >= total - 1) return lr_min;
    double frac = (double)(step - warmup) / (double)(total - 1 - warmup);
    return lr_min + (float)(0.5 * (1.0 + cos(M_PI * frac))) * (lr - lr_min);
}

/* ---- trainer --------------------------------------------------------------------------------------------- */

/* Backward scratch layout (floats) for groups of G rows of T tokens: per row dh, du, dselw, drl, the expert order
 * (ints); shared by the rows one after another: the rest; the expert gather buffers hold the tokens of all G rows. */
typedef struct {
    size_t dh, du, dselw, drl, order, row; /* per row r: offset + r·row */
    size_t dx, df, dtmp, dhn, datty, dq, dk, dv, do1, cs, sn, drq, drk, drv, xg, dxg, yg, hidg, gg, ug, dhid, dgg,
        dug, auxf, auxp, total;
} bwd_layout;

static void bwd_layout_for(const model_hparams *hp, int64_t T, int64_t G, bwd_layout *L) {
    size_t t = (size_t)T, g = (size_t)G, H = (size_t)hp->n_embd, P = (size_t)(hp->n_head * hp->head_dim),
           Pkv = (size_t)(hp->n_head_kv * hp->head_dim), E = (size_t)(hp->n_expert > 0 ? hp->n_expert : 1),
           K = (size_t)(hp->n_expert_used > 0 ? hp->n_expert_used : 1),
           F = (size_t)(hp->n_ff_exp > (int64_t)hp->n_ff ? hp->n_ff_exp : hp->n_ff), R = (size_t)hp->rope_dims / 2 + 1;
    size_t o = 0;
#define A_(f, n) (L->f = o, o += ((n) + 15) & ~(size_t)15)
    A_(dh, t * H);
    A_(du, t * H);
    A_(dselw, t * K);
    A_(drl, t * E);
    A_(order, t * K + 2 * E + 1); /* int32 order [T·K] + start [E+1] */
    L->row = o;
    o *= g;
    A_(dx, t * H);
    A_(df, t * H);
    A_(dtmp, t * H);
    A_(dhn, t * H);
    A_(datty, t * P);
    A_(dq, t * P);
    A_(dk, t * Pkv);
    A_(dv, t * Pkv);
    A_(do1, t * H);
    A_(cs, t * R);
    A_(sn, t * R);
    A_(drq, t * E);
    A_(drk, t * E);
    A_(drv, t * E);
    A_(xg, g * t * K * H);
    A_(dxg, g * t * K * H);
    A_(yg, g * t * K * H);
    A_(hidg, g * t * K * F);
    A_(gg, g * t * K * F);
    A_(ug, g * t * K * F);
    A_(dhid, g * t * K * F);
    A_(dgg, g * t * K * F);
    A_(dug, g * t * K * F);
    A_(auxf, E);
    A_(auxp, E);
#undef A_
    L->total = o;
}

static double prof_now(const train_state *s) {
    if (!s->prof_cpu) return moec_time();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void prof_mark(train_state *s, int k, double *tp) {
    double t = prof_now(s);
    s->prof[k] += t - *tp;
    *tp = t;
}

static float *gptr(const train_state *s, const void *view) { return s->grads + ((const float *)view - s->params); }

/* Activations and scratch for groups of G rows. */
static int alloc_group(train_state *s, int64_t G) {
    const model *m = s->m;
    for (int64_t r = 0; r < G; r++) {
        s->acts_g[r] = model_acts_new(m, s->T);
        if (!s->acts_g[r]) return -1;
    }
    bwd_layout bl;
    bwd_layout_for(&m->hp, s->T, G, &bl);
    s->buf_n = bl.total;
    s->buf = moec_alloc(s->buf_n * sizeof(float));
    if (!s->buf) return -1;
    s->acts = s->acts_g[0];
    s->G = G;
    return 0;
}

static void free_group(train_state *s) {
    for (int64_t r = 0; r < TRAIN_MAX_GROUP; r++) {
        model_acts_free(s->acts_g[r]);
        s->acts_g[r] = NULL;
    }
    moec_free(s->buf);
    s->buf = NULL;
    s->acts = NULL;
    s->G = 0;
}

train_state *train_new(model *m, int64_t T) {
    train_state *s = moec_calloc(1, sizeof *s);
    if (!s) return NULL;
    CHECK(model_flat(m) != NULL, "train: the model must be model_create'd (fp32 flat parameters)");
    CHECK(T >= 1, "train: sequence length must be >= 1");
    s->m = m;
    s->T = T;
    s->n = m->n_floats;
    size_t bytes;
    CHECK(moec_mul_ok(s->n, sizeof(float), &bytes), "train: model too large");
    s->params = model_flat(m); /* the model's own flat buffer (its views point into it): no copy */
    s->grads = moec_alloc(bytes);
    s->m1 = moec_alloc(bytes);
    s->m2 = moec_alloc(bytes);
    TRY_PTR(s->grads);
    TRY_PTR(s->m1);
    TRY_PTR(s->m2);
    s->seg = moec_calloc(m->n_params, sizeof *s->seg);
    TRY_PTR(s->seg);
    for (size_t i = 0; i < m->n_params; i++) {
        const model_param *p = &m->params[i];
        s->seg[s->n_seg++] = (train_segment){p->offset, p->numel, p->n_dims >= 2};
    }
    TRY(alloc_group(s, 1));
    s->seq = model_seq_new(m, T);
    TRY_PTR(s->seq);
    size_t nl;
    CHECK(moec_mul_ok((size_t)T, (size_t)m->hp.n_vocab, &nl) && moec_mul_ok(nl, sizeof(float), &bytes),
          "train: logits too large");
    s->logits = moec_alloc(bytes);
    TRY_PTR(s->logits);
    s->expert_load = moec_calloc((size_t)(m->hp.n_layer * (m->hp.n_expert > 0 ? m->hp.n_expert : 1)), sizeof(double));
    TRY_PTR(s->expert_load);
    return s;
fail:
    moec_wrap_error("train");
    train_free(s);
    return NULL;
}

double train_row_bytes(const model *m, int64_t T) {
    const model_hparams *hp = &m->hp;
    double H = (double)hp->n_embd, P = (double)(hp->n_head * hp->head_dim), E = (double)hp->n_expert,
           K = (double)(hp->n_expert_used > 0 ? hp->n_expert_used : 1),
           F = (double)(hp->n_ff_exp > (int64_t)hp->n_ff ? hp->n_ff_exp : hp->n_ff);
    /* per layer and token: ~10 rows of H (inputs, norms, LFA), q/k/v/attention output, the k experts' hidden,
     * gate, up and output (or the dense FFN's), attention probabilities over T keys, router softmaxes */
    double per_tok = 10.0 * H + 4.0 * P + K * (3.0 * F + H) + (double)hp->n_head * (double)T + E * E + 4.0 * E;
    /* plus the group's backward scratch per row: gathered expert rows and per-row gradients */
    double scratch = (double)T * (K * (3.0 * H + 6.0 * F) + 2.0 * H + K + E);
    return 4.0 * ((double)hp->n_layer * (double)T * per_tok + scratch);
}

int train_set_group(train_state *s, int64_t G) {
    CHECK(G >= 1 && G <= TRAIN_MAX_GROUP, "train: group of %lld rows (1..%d)", (long long)G, TRAIN_MAX_GROUP);
    if (G == s->G) return 0;
    free_group(s);
    if (alloc_group(s, G) == 0) return 0;
    free_group(s);
    if (alloc_group(s, 1) != 0) free_group(s);
fail:
    return moec_wrap_error("train: activations for %lld rows", (long long)G);
}

void train_free(train_state *s) {
    if (!s) return;
    moec_free(s->grads);
    moec_free(s->m1);
    moec_free(s->m2);
    moec_free(s->seg);
    free_group(s);
    model_seq_free(s->seq);
    moec_free(s->logits);
    moec_free(s->expert_load);
    moec_free(s);
}

void train_zero_grad(train_state *s) { memset(s->grads, 0, s->n * sizeof(float)); }

void train_load_reset(train_state *s) {
    memset(s->expert_load, 0,
           (size_t)(s->m->hp.n_layer * (s->m->hp.n_expert > 0 ? s->m->hp.n_expert : 1)) * sizeof(double));
}

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

/* Auxiliary router losses of one layer (Switch load balancing, z-loss), weight w: adds to drl, returns the loss.
 * f, P: scratch [E]. */
static double aux_losses(const train_state *s, float *drl, const float *rl, const int32_t *sel, int64_t T, float w,
                         float *f, float *P) {
    int64_t E = s->m->hp.n_expert, K = s->m->hp.n_expert_used;
    double loss = 0.0, a = (double)s->aux.aux_lb * w, b = (double)s->aux.aux_z * w;
    memset(f, 0, (size_t)E * sizeof(float));
    memset(P, 0, (size_t)E * sizeof(float));
    for (int64_t r = 0; r < T * K; r++) f[sel[r]] += 1.0f;
    for (int64_t e = 0; e < E; e++) f[e] /= (float)(T * K);
    for (int64_t t = 0; t < T; t++) {
        const float *l = rl + t * E;
        float mx = -INFINITY;
        for (int64_t e = 0; e < E; e++) mx = l[e] > mx ? l[e] : mx;
        double sum = 0.0;
        for (int64_t e = 0; e < E; e++) sum += exp((double)(l[e] - mx));
        double lse = (double)mx + log(sum);
        /* p_e = softmax; load balancing: dL/dp_e = a·E·f_e/T (then through the softmax); z-loss: L = b/T·lse²,
         * dL/dl_e = 2b/T·lse·p_e */
        double dot = 0.0;
        for (int64_t e = 0; e < E; e++) {
            double p = exp((double)l[e] - lse);
            P[e] += (float)(p / (double)T);
            dot += p * (a * (double)E * f[e] / (double)T);
        }
        for (int64_t e = 0; e < E; e++) {
            double p = exp((double)l[e] - lse);
            drl[t * E + e] += (float)(p * (a * (double)E * f[e] / (double)T - dot) + 2.0 * b / (double)T * lse * p);
        }
        loss += b / (double)T * lse * lse;
    }
    for (int64_t e = 0; e < E; e++) loss += a * (double)E * f[e] * P[e];
    return loss;
}

/* Backward of one MoE FFN over the G rows of a group: dffo[r] = gradient of row r's FFN output; du[r] += gradient
 * of its input. Each expert runs once over the tokens of all rows routed to it (rows in order, tokens in order). */
static int moe_backward(train_state *s, int64_t l, int64_t G, float *const *dffo, float *const *du, int64_t T,
                        const bwd_layout *bl, const float *aux_w) {
    const model *m = s->m;
    const model_layer *L = &m->layers[l];
    int64_t H = m->hp.n_embd, E = m->hp.n_expert, K = m->hp.n_expert_used, F = m->hp.n_ff_exp;
    float *B = s->buf;
    float *xg = B + bl->xg, *dxg = B + bl->dxg, *yg = B + bl->yg, *hidg = B + bl->hidg, *gg = B + bl->gg,
          *ug = B + bl->ug, *dhid = B + bl->dhid, *dgg = B + bl->dgg, *dug = B + bl->dug;
    for (int64_t g = 0; g < G; g++) {
        const model_layer_acts *la = &s->acts_g[g]->layers[l];
        float *dselw = B + bl->dselw + g * bl->row;
        int32_t *order = (int32_t *)(B + bl->order + g * bl->row), *start = order + T * K;
        /* d(selw) = dffo[t]·y[r] */
        for (int64_t r = 0; r < T * K; r++) {
            const float *gr = dffo[g] + (r / K) * H, *y = la->e_y + r * H;
            double acc = 0.0;
            for (int64_t j = 0; j < H; j++) acc += (double)gr[j] * y[j];
            dselw[r] = (float)acc;
        }
        moe_group(order, start, la->sel, T, E, K);
    }
    for (int64_t e = 0; e < E; e++) {
        int64_t n = 0, n0[TRAIN_MAX_GROUP + 1];
        for (int64_t g = 0; g < G; g++) {
            const int32_t *order = (const int32_t *)(B + bl->order + g * bl->row), *start = order + T * K;
            n0[g] = n;
            n += start[e + 1] - start[e];
            s->expert_load[l * E + e] += (double)(start[e + 1] - start[e]);
        }
        n0[G] = n;
        if (n == 0) continue;
        /* gather the slots of every row routed to e (row g's slots at [n0[g], n0[g+1])) */
#pragma omp parallel for schedule(static) if (n * F > 65536)
        for (int64_t i = 0; i < n; i++) {
            int64_t g = 0;
            while (i >= n0[g + 1]) g++;
            const model_layer_acts *la = &s->acts_g[g]->layers[l];
            const int32_t *order = (const int32_t *)(B + bl->order + g * bl->row), *start = order + T * K;
            int64_t r = order[start[e] + (i - n0[g])], t = r / K;
            float w = la->selw[r];
            const float *dy = dffo[g] + t * H;
            for (int64_t j = 0; j < H; j++) yg[i * H + j] = w * dy[j];
            memcpy(xg + i * H, la->u + t * H, (size_t)H * sizeof(float));
            memcpy(hidg + i * F, la->e_hid + r * F, (size_t)F * sizeof(float));
            memcpy(gg + i * F, la->e_gate + r * F, (size_t)F * sizeof(float));
            memcpy(ug + i * F, la->e_up + r * F, (size_t)F * sizeof(float));
        }
        zero(dhid, (size_t)(n * F));
        TRY(ops_matmul_backward(dhid, gptr(s, L->exp_down[e]), yg, hidg, L->exp_down[e], n, F, H));
        ops_swiglu_backward(dgg, dug, dhid, gg, ug, n * F);
        zero(dxg, (size_t)(n * H));
        TRY(ops_matmul_backward(dxg, gptr(s, L->exp_gate[e]), dgg, xg, L->exp_gate[e], n, H, F));
        TRY(ops_matmul_backward(dxg, gptr(s, L->exp_up[e]), dug, xg, L->exp_up[e], n, H, F));
        /* scatter: a token meets expert e in one slot at most, so the target rows are distinct */
#pragma omp parallel for schedule(static) if (n * H > 65536)
        for (int64_t i = 0; i < n; i++) {
            int64_t g = 0;
            while (i >= n0[g + 1]) g++;
            const int32_t *order = (const int32_t *)(B + bl->order + g * bl->row), *start = order + T * K;
            float *d = du[g] + (order[start[e] + (i - n0[g])] / K) * H;
            const float *src = dxg + i * H;
            for (int64_t j = 0; j < H; j++) d[j] += src[j];
        }
    }
    for (int64_t g = 0; g < G; g++) {
        const model_layer_acts *la = &s->acts_g[g]->layers[l];
        const float *u = la->u;
        float *drl = B + bl->drl + g * bl->row, *dselw = B + bl->dselw + g * bl->row;
        zero(drl, (size_t)(T * E));
        ops_topk_softmax_backward(drl, la->sel, la->selw, dselw, T, E, K);
        if (s->aux.aux_lb != 0.0f || s->aux.aux_z != 0.0f)
            s->aux_loss += aux_losses(s, drl, la->rlogits, la->sel, T, aux_w[g], B + bl->auxf, B + bl->auxp);
        if (L->var.ffn == MODEL_FFN_MOE_ATTN) {
            float *drq = B + bl->drq, *drk = B + bl->drk, *drv = B + bl->drv;
            ops_router_attn_backward(drq, drk, drv, drl, la->rq, la->rk, la->rv, la->rinner, T, E);
            TRY(ops_matmul_backward(du[g], gptr(s, L->router_q.data), drq, u, L->router_q.data, T, H, E));
            TRY(ops_matmul_backward(du[g], gptr(s, L->router_k.data), drk, u, L->router_k.data, T, H, E));
            TRY(ops_matmul_backward(du[g], gptr(s, L->router_v.data), drv, u, L->router_v.data, T, H, E));
        } else {
            TRY(ops_matmul_backward(du[g], gptr(s, L->gate_inp.data), drl, u, L->gate_inp.data, T, H, E));
        }
    }
    return 0;
fail:
    return -1;
}

/* Forward + backward of G <= s->G rows of T tokens (in, target, mask: [G, T]). */
static int train_group(train_state *s, const int32_t *in, const int32_t *target, const float *mask, int64_t G,
                       int64_t T, float scale, double *ce_sum) {
    model *m = s->m;
    const model_hparams *hp = &m->hp;
    int64_t H = hp->n_embd, Hh = H / 2, V = hp->n_vocab, nh = hp->n_head, nkv = hp->n_head_kv, d = hp->head_dim,
            P = nh * d, Pkv = nkv * d, Fd = hp->n_ff;
    bwd_layout bl;
    bwd_layout_for(hp, T, s->G, &bl);
    float *B = s->buf;
    float *dh[TRAIN_MAX_GROUP], *du[TRAIN_MAX_GROUP], aux_w[TRAIN_MAX_GROUP];
    float *dx = B + bl.dx, *df = B + bl.df, *dhn = B + bl.dhn, *datty = B + bl.datty, *dq = B + bl.dq,
          *dk = B + bl.dk, *dv = B + bl.dv, *do1 = B + bl.do1, *cs = B + bl.cs, *sn = B + bl.sn;
    double tp = prof_now(s);
    s->aux_loss = 0.0;
    *ce_sum = 0.0;
    /* per row: forward with activations, loss, output head and final norm backward -> dh[g] */
    for (int64_t g = 0; g < G; g++) {
        const int32_t *rin = in + g * T, *rtg = target + g * T;
        const float *rmk = mask ? mask + g * T : NULL;
        model_acts *A = s->acts_g[g];
        dh[g] = B + bl.dh + g * bl.row;
        du[g] = B + bl.du + g * bl.row;
        model_seq_reset(s->seq);
        TRY(model_forward(m, s->seq, rin, T, s->logits, 0, A));
        prof_mark(s, TRAIN_PROF_FORWARD, &tp);
        double msum = 0.0;
        for (int64_t t = 0; t < T; t++) msum += rmk ? rmk[t] : 1.0f;
        aux_w[g] = scale * (float)msum;
        *ce_sum += ops_cross_entropy(s->logits, s->logits, rtg, rmk, T, V, scale);
        prof_mark(s, TRAIN_PROF_LOSS, &tp);
        /* output layer (tied: the gradient lands in the embedding) */
        zero(dhn, (size_t)(T * H));
        TRY(ops_matmul_backward(dhn, gptr(s, m->output.data), s->logits, A->hn, m->output.data, T, H, V));
        zero(dh[g], (size_t)(T * H));
        ops_rmsnorm_backward(dh[g], gptr(s, m->output_norm.data), dhn, A->h_out, m->output_norm.data, A->rstd_out, T,
                             H);
        prof_mark(s, TRAIN_PROF_OUTPUT, &tp);
    }
    if (hp->rope_dims > 0) ops_rope_table(cs, sn, 0, T, hp->rope_dims, hp->rope_base, (int)hp->rope_table);
    float scale_att = 1.0f / sqrtf((float)d);

    for (int64_t l = hp->n_layer - 1; l >= 0; l--) {
        const model_layer *L = &m->layers[l];
        /* ---- FFN: h = h_mid + ffn(rmsnorm(h_mid)) ---- */
        for (int64_t g = 0; g < G; g++) zero(du[g], (size_t)(T * H));
        if (L->var.ffn == MODEL_FFN_DENSE) {
            float *dhid = B + bl.dhid, *dgg = B + bl.dgg, *dug = B + bl.dug;
            for (int64_t g = 0; g < G; g++) {
                const model_layer_acts *la = &s->acts_g[g]->layers[l];
                zero(dhid, (size_t)(T * Fd));
                TRY(ops_matmul_backward(dhid, gptr(s, L->ffn_down.data), dh[g], la->d_hid, L->ffn_down.data, T, Fd, H));
                ops_swiglu_backward(dgg, dug, dhid, la->d_gate, la->d_up, T * Fd);
                TRY(ops_matmul_backward(du[g], gptr(s, L->ffn_gate.data), dgg, la->u, L->ffn_gate.data, T, H, Fd));
                TRY(ops_matmul_backward(du[g], gptr(s, L->ffn_up.data), dug, la->u, L->ffn_up.data, T, H, Fd));
            }
        } else {
            TRY(moe_backward(s, l, G, dh, du, T, &bl, aux_w));
        }
        for (int64_t g = 0; g < G; g++) {
            const model_layer_acts *la = &s->acts_g[g]->layers[l];
            ops_rmsnorm_backward(dh[g], gptr(s, L->ffn_norm.data), du[g], la->h_mid, L->ffn_norm.data, la->rstd_u, T,
                                 H);
        }
        prof_mark(s, TRAIN_PROF_FFN, &tp);
        for (int64_t g = 0; g < G; g++) {
            const model_layer_acts *la = &s->acts_g[g]->layers[l];
            /* ---- attention: h_mid = h_in + Wo·attn(...) ---- */
            zero(datty, (size_t)(T * P));
            TRY(ops_matmul_backward(datty, gptr(s, L->wo.data), dh[g], la->atty, L->wo.data, T, P, H));
            prof_mark(s, TRAIN_PROF_ATTN_MM, &tp);
            TRY(ops_attention_backward(dq, dk, dv, datty, la->q, la->k, la->v, la->att, T, nh, nkv, d, scale_att));
            if (L->var.rope_dims > 0) {
                ops_rope_backward(dq, T, nh, d, L->var.rope_dims, (int)L->var.rope_pairing, cs, sn);
                ops_rope_backward(dk, T, nkv, d, L->var.rope_dims, (int)L->var.rope_pairing, cs, sn);
            }
            prof_mark(s, TRAIN_PROF_ATTN_CORE, &tp);
            zero(dx, (size_t)(T * H));
            TRY(ops_matmul_backward(dx, gptr(s, L->wv.data), dv, la->x, L->wv.data, T, H, Pkv));
            float *dff = L->var.lfa ? df : dx;
            if (L->var.lfa) zero(df, (size_t)(T * H));
            TRY(ops_matmul_backward(dff, gptr(s, L->wq.data), dq, la->f, L->wq.data, T, H, P));
            TRY(ops_matmul_backward(dff, gptr(s, L->wk.data), dk, la->f, L->wk.data, T, H, Pkv));
            prof_mark(s, TRAIN_PROF_ATTN_MM, &tp);
            if (L->var.lfa) {
                float *dlin = B + bl.dtmp;
                zero(dlin, (size_t)(T * H));
                ops_rmsnorm_backward(dlin, gptr(s, L->lfa_norm.data), df, la->lfa_in, L->lfa_norm.data, la->rstd_lfa,
                                     T, H);
                ops_add(dx, dlin, T * H); /* lfa_in = o2 + x */
                const float *c1 = L->lfa_c1.data, *c2 = L->lfa_c2.data;
                float *gc1 = gptr(s, c1), *gc2 = gptr(s, c2);
                zero(do1, (size_t)(T * Hh));
                TRY(ops_conv2_causal_backward(do1, gc2, gc2 + Hh * H, gptr(s, L->lfa_b2.data), dlin, la->o1, c2,
                                              c2 + Hh * H, T, Hh, H));
                TRY(ops_conv2_causal_backward(dx, gc1, gc1 + Hh * H, gptr(s, L->lfa_b1.data), do1, la->x, c1,
                                              c1 + Hh * H, T, H, Hh));
            }
            ops_rmsnorm_backward(dh[g], gptr(s, L->attn_norm.data), dx, la->h_in, L->attn_norm.data, la->rstd_x, T, H);
            prof_mark(s, TRAIN_PROF_LFA, &tp);
        }
    }
    for (int64_t g = 0; g < G; g++) ops_embed_backward(gptr(s, m->tok_embd.data), dh[g], in + g * T, T, H);
    prof_mark(s, TRAIN_PROF_LFA, &tp);
    return 0;
fail:
    return -1;
}

int train_rows(train_state *s, const int32_t *in, const int32_t *target, const float *mask, int64_t n_rows,
               int64_t T, float scale, double *ce_sum) {
    const model_hparams *hp = &s->m->hp;
    double ce = 0.0, aux = 0.0;
    CHECK(s->G >= 1 && s->buf, "train: no activations (a failed train_set_group)");
    CHECK(T >= 1 && T <= s->T, "train: sequence of %lld tokens (max %lld)", (long long)T, (long long)s->T);
    for (int64_t i = 0; i < n_rows * T; i++)
        CHECK(target[i] >= 0 && target[i] < hp->n_vocab, "train: target id %d out of range", (int)target[i]);
    for (int64_t r0 = 0; r0 < n_rows; r0 += s->G) {
        int64_t G = n_rows - r0 < s->G ? n_rows - r0 : s->G;
        double c;
        TRY(train_group(s, in + r0 * T, target + r0 * T, mask ? mask + r0 * T : NULL, G, T, scale, &c));
        ce += c;
        aux += s->aux_loss;
    }
    s->aux_loss = aux;
    if (ce_sum) *ce_sum = ce;
    return 0;
fail:
    return -1;
}

int train_seq(train_state *s, const int32_t *in, const int32_t *target, const float *mask, int64_t T, float scale,
              double *ce_sum) {
    return train_rows(s, in, target, mask, 1, T, scale, ce_sum);
}

int train_eval_seq(train_state *s, const int32_t *in, const int32_t *target, const float *mask, int64_t T,
                   double *ce_sum) {
    CHECK(T >= 1 && T <= s->T, "eval: sequence of %lld tokens (max %lld)", (long long)T, (long long)s->T);
    for (int64_t t = 0; t < T; t++)
        CHECK(target[t] >= 0 && target[t] < s->m->hp.n_vocab, "eval: target id %d out of range", (int)target[t]);
    model_seq_reset(s->seq);
    TRY(model_forward(s->m, s->seq, in, T, s->logits, 0, NULL));
    *ce_sum = ops_cross_entropy(NULL, s->logits, target, mask, T, s->m->hp.n_vocab, 1.0f);
    return 0;
fail:
    return -1;
}

double train_flops_per_token(const model *m, int64_t T) {
    model_stats st;
    model_get_stats(m, 0, &st);
    const model_hparams *hp = &m->hp;
    double att = 4.0 * (double)hp->n_layer * (double)hp->n_head * (double)hp->head_dim * (double)(T + 1) / 2.0;
    return 3.0 * (2.0 * st.matmul_params + att);
}

double train_gemm_peak(void) {
    const int64_t n = 512;
    float *a = moec_malloc((size_t)(3 * n * n) * sizeof(float));
    if (!a) return 0.0;
    float *b = a + n * n, *c = b + n * n;
    for (int64_t i = 0; i < 3 * n * n; i++) a[i] = (float)((i * 7 + 3) % 17) * 0.01f;
    double best = 0.0, t_all = moec_time();
    for (int rep = 0; rep < 50 && (rep < 3 || moec_time() - t_all < 0.2); rep++) {
        double t0 = moec_time();
        if (kern_gemm_acc(c, a, n, 1, b, n, n, n) != 0) break;
        double dt = moec_time() - t0;
        if (rep > 0 && dt > 0 && 2.0 * (double)(n * n * n) / dt > best) best = 2.0 * (double)(n * n * n) / dt;
    }
    moec_free(a);
    return best * 1e-9;
}

/* ---- checkpoints ----------------------------------------------------------------------------------------- */

int train_save(const train_state *s, const train_progress *pr, const char *path) {
    gguf_writer *w = gguf_w_new();
    if (!w) return -1;
    int64_t ne[4] = {(int64_t)s->n, 1, 1, 1};
    uint64_t dpos[3] = {pr->data.epoch, pr->data.item, pr->data.off};
    TRY(model_gguf_fill(s->m, w));
    TRY(gguf_w_set_u64(w, "train.step", (uint64_t)pr->step));
    TRY(gguf_w_set_u64(w, "train.tokens", pr->tokens));
    TRY(gguf_w_set_arr(w, "train.rng", GGUF_U64, 4, pr->rng.s));
    TRY(gguf_w_set_arr(w, "train.data", GGUF_U64, 3, dpos));
    TRY(gguf_w_set_i32(w, "train.opt", pr->opt_kind));
    TRY(gguf_w_set_f32(w, "train.lr", pr->lr));
    TRY(gguf_w_set_f32(w, "train.lr_min", pr->lr_min));
    TRY(gguf_w_add_tensor(w, "train.m1", GGML_F32, 1, ne, s->m1));
    TRY(gguf_w_add_tensor(w, "train.m2", GGML_F32, 1, ne, s->m2));
    TRY(gguf_w_write(w, path));
    gguf_w_free(w);
    return 0;
fail:
    gguf_w_free(w);
    return moec_wrap_error("checkpoint %s", path);
}

static int get_u64_arr(const gguf_file *f, const char *key, uint64_t *out, uint64_t n) {
    gguf_vtype et;
    uint64_t cnt;
    const void *d;
    if (gguf_get_arr(f, key, &et, &cnt, &d) != 0) return -1;
    if (et != GGUF_U64 || cnt != n) return moec_set_error("key %s: expected %llu u64 values", key, (unsigned long long)n);
    memcpy(out, d, n * sizeof(uint64_t));
    return 0;
}

/* Give back the pages of a read-only private file mapping (the GGUF being loaded) that lie wholly inside
 * [p, p+n): they were read once and are copied; the file stays mapped (re-read on access). Keeps the peak RSS
 * of a training run at the trainer's own buffers. */
static void drop_pages(const void *p, size_t n) {
#if defined(MADV_DONTNEED) && defined(_SC_PAGESIZE)
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0) return;
    uintptr_t a = (uintptr_t)p, b = a + n, u = (uintptr_t)pg;
    a = (a + u - 1) / u * u;
    b = b / u * u;
    if (b > a) (void)madvise((void *)a, (size_t)(b - a), MADV_DONTNEED);
#else
    (void)p, (void)n;
#endif
}

train_state *train_load(const char *path, int64_t T, train_progress *pr) {
    model *lm = NULL, *mc = NULL;
    train_state *s = NULL;
    memset(pr, 0, sizeof *pr);
    lm = model_load(path, NULL);
    TRY_PTR(lm);
    mc = model_create(&lm->hp, NULL);
    TRY_PTR(mc);
    float *flat = model_flat(mc);
    for (size_t i = 0; i < mc->n_params; i++) {
        const model_param *p = &mc->params[i];
        const model_param *q = NULL;
        for (size_t j = 0; j < lm->n_params; j++)
            if (!strcmp(lm->params[j].name, p->name)) q = &lm->params[j];
        CHECK(q && q->numel == p->numel, "%s: tensor %s missing or of another size", path, p->name);
        size_t rows = p->numel / (size_t)p->ne[0], rb = ggml_row_bytes(q->view->type, p->ne[0]);
        CHECK(rb > 0, "%s: tensor %s has an unsupported type", path, p->name);
        for (size_t r = 0; r < rows; r++)
            TRY(kern_row_to_f32(flat + p->offset + r * (size_t)p->ne[0], (const uint8_t *)q->view->data + r * rb,
                                q->view->type, p->ne[0]));
        drop_pages(q->view->data, rows * rb);
    }
    s = train_new(mc, T);
    TRY_PTR(s);
    const gguf_file *f = lm->gguf;
    if (gguf_find_key(f, "train.step") >= 0) {
        uint64_t step, dpos[3];
        int32_t opt = 0;
        int64_t oi;
        TRY(gguf_get_i64(f, "train.step", (int64_t *)&step));
        TRY(gguf_get_i64(f, "train.tokens", (int64_t *)&pr->tokens));
        TRY(get_u64_arr(f, "train.rng", pr->rng.s, 4));
        TRY(get_u64_arr(f, "train.data", dpos, 3));
        TRY(gguf_get_i64(f, "train.opt", &oi));
        opt = (int32_t)oi;
        TRY(gguf_get_f32_or(f, "train.lr", 0, &pr->lr));
        TRY(gguf_get_f32_or(f, "train.lr_min", 0, &pr->lr_min));
        pr->step = (int64_t)step;
        pr->opt_kind = opt;
        pr->data = (data_pos){dpos[0], dpos[1], dpos[2]};
        CHECK(pr->step >= 0, "%s: bad train.step", path);
        const char *names[2] = {"train.m1", "train.m2"};
        float *dst[2] = {s->m1, s->m2};
        for (int i = 0; i < 2; i++) {
            const gguf_tensor *t = gguf_find_tensor(f, names[i]);
            CHECK(t && t->type == GGML_F32 && t->n_dims == 1 && t->ne[0] == (int64_t)s->n,
                  "%s: tensor %s missing or not F32 [%zu]", path, names[i], s->n);
            memcpy(dst[i], t->data, s->n * sizeof(float));
            drop_pages(t->data, s->n * sizeof(float));
        }
    }
    mc->meta = lm->gguf; /* checkpoints and exports keep the tokenizer and general.* keys */
    lm->gguf = NULL;
    model_free(lm);
    return s;
fail:
    if (s) train_free(s);
    model_free(mc);
    model_free(lm);
    return NULL;
}

int train_export(const char *ckpt, const char *out) {
    gguf_file *f = gguf_open(ckpt);
    gguf_writer *w = NULL;
    if (!f) return -1;
    w = gguf_w_new();
    TRY_PTR(w);
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        const char *k = gguf_key(f, i);
        if (!strncmp(k, "train.", 6) || !strcmp(k, "general.alignment")) continue;
        TRY(gguf_w_copy_kv(w, f, k));
    }
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (!strncmp(t->name_z, "train.", 6)) continue;
        TRY(gguf_w_add_tensor(w, t->name_z, t->type, t->n_dims, t->ne, t->data));
    }
    TRY(gguf_w_write(w, out));
    gguf_w_free(w);
    gguf_close(f);
    return 0;
fail:
    gguf_w_free(w);
    gguf_close(f);
    return -1;
}
