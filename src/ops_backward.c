/* ops_backward: backward of the forward ops. See ops_backward.h. Deterministic for any thread count. */
#include "ops_backward.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kern.h"
#include "ops.h"
#include "util.h"
#include "vmath.h"

/* backward of kern_matmul (y = x·Wᵀ): the blocked fp32 GEMM of kern (deterministic for any thread count) */
int ops_matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t T,
                        int64_t n_in, int64_t n_out) {
    return kern_matmul_backward(dx, dw, dy, x, w, T, n_in, n_out);
}

/* backward of ops_embed */
void ops_embed_backward(float *dtable, const float *dout, const int32_t *ids, int64_t T, int64_t H) {
    for (int64_t t = 0; t < T; t++) {
        float *row = dtable + (size_t)ids[t] * (size_t)H;
        const float *g = dout + t * H;
        for (int64_t i = 0; i < H; i++) row[i] += g[i];
    }
}

/* backward of ops_rmsnorm */
void ops_rmsnorm_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                          const float *rstd, int64_t T, int64_t C) {
#pragma omp parallel for schedule(static) if (T * C > 32768)
    for (int64_t t = 0; t < T; t++) {
        const float *g = dout + t * C, *x = in + t * C;
        float *dx = din + t * C;
        double dot = 0.0;
        for (int64_t i = 0; i < C; i++) dot += (double)g[i] * w[i] * x[i];
        float r = rstd[t];
        float c = (float)(dot * (double)r * r * r / (double)C);
        for (int64_t i = 0; i < C; i++) dx[i] += r * g[i] * w[i] - c * x[i];
    }
    if (dw)
        for (int64_t t = 0; t < T; t++) {
            const float *g = dout + t * C, *x = in + t * C;
            float r = rstd[t];
            for (int64_t i = 0; i < C; i++) dw[i] += g[i] * x[i] * r;
        }
}

/* backward of ops_rope: the transpose of a rotation is the rotation by −θ */
void ops_rope_backward(float *dx, int64_t T, int64_t n_heads, int64_t d, int64_t rope_dims, int pairing,
                       const float *cos_t, const float *sin_t) {
    int64_t half = rope_dims / 2;
    for (int64_t t = 0; t < T; t++) {
        const float *c = cos_t + t * half, *s = sin_t + t * half;
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = dx + (t * n_heads + h) * d;
            for (int64_t i = 0; i < half; i++) {
                int64_t ia = pairing == 1 ? i : 2 * i, ib = pairing == 1 ? i + half : 2 * i + 1;
                float ga = v[ia], gb = v[ib];
                v[ia] = ga * c[i] + gb * s[i];
                v[ib] = gb * c[i] - ga * s[i];
            }
        }
    }
}

#define ATT_BQ 64 /* query rows per block of the attention backward */

/* backward of ops_attention (pos0 = 0), per kv head and per block I of ATT_BQ query rows over the keys [0, e) it
 * sees (e = end of the block; probs are 0 above the diagonal, so the masked part contributes exact zeros):
 *   dPᵀ = V[0:e]·dO_Iᵀ, dS = P ⊙ (dP − Σ_j P dP)·scale, dQ_I = dS·K[0:e], dV[0:e] += P_Iᵀ·dO_I, dK[0:e] += dSᵀ·Q_I,
 * each a kern_gemm_acc (fixed summation order) on contiguous per-head copies. */
int ops_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                           const float *v, const float *probs, int64_t T, int64_t n_head, int64_t n_kv, int64_t d,
                           float scale) {
    int64_t g = n_head / n_kv, P = n_head * d, Pkv = n_kv * d, BQ = T < ATT_BQ ? T : ATT_BQ;
    int bad = 0;
#pragma omp parallel if (n_kv > 1 && T * T * d * g > 65536)
    {
        /* per thread: Kh, dKh, dVh [T, d]; Qi, dOi, dOt, dQi [BQ, d]; dSt [T, BQ] */
        float *sc = moec_malloc((size_t)(3 * T * d + 4 * BQ * d + T * BQ) * sizeof(float));
        float *Kh = sc, *dKh = Kh + T * d, *dVh = dKh + T * d, *Qi = dVh + T * d, *dOi = Qi + BQ * d,
              *dOt = dOi + BQ * d, *dQi = dOt + BQ * d, *dSt = dQi + BQ * d;
        if (!sc) {
#pragma omp atomic write
            bad = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t kvh = 0; kvh < n_kv; kvh++) {
            if (!sc) continue;
            int64_t ko = kvh * d;
            int err = 0;
            for (int64_t t = 0; t < T; t++) memcpy(Kh + t * d, k + t * Pkv + ko, (size_t)d * sizeof(float));
            memset(dKh, 0, (size_t)(2 * T * d) * sizeof(float)); /* dKh and dVh */
            for (int64_t hh = 0; hh < g && !err; hh++) {
                int64_t h = kvh * g + hh, qo = h * d;
                for (int64_t i0 = 0; i0 < T && !err; i0 += BQ) {
                    int64_t bq = T - i0 < BQ ? T - i0 : BQ, e = i0 + bq;
                    for (int64_t i = 0; i < bq; i++) {
                        memcpy(Qi + i * d, q + (i0 + i) * P + qo, (size_t)d * sizeof(float));
                        memcpy(dOi + i * d, dout + (i0 + i) * P + qo, (size_t)d * sizeof(float));
                        for (int64_t c = 0; c < d; c++) dOt[c * bq + i] = dOi[i * d + c];
                    }
                    const float *Pi = probs + (h * T + i0) * T; /* rows i0.. of head h, [bq, T] */
                    memset(dSt, 0, (size_t)(e * bq) * sizeof(float));
                    err |= kern_gemm_acc(dSt, v + ko, Pkv, 1, dOt, e, bq, d); /* dPᵀ [e, bq] */
                    for (int64_t i = 0; i < bq; i++) {
                        const float *pr = Pi + i * T;
                        double sum = 0.0; /* Σ_j p_j dp_j */
                        for (int64_t j = 0; j <= i0 + i; j++) sum += (double)pr[j] * dSt[j * bq + i];
                        float fs = (float)sum;
                        for (int64_t j = 0; j < e; j++) dSt[j * bq + i] = pr[j] * (dSt[j * bq + i] - fs) * scale;
                    }
                    memset(dQi, 0, (size_t)(bq * d) * sizeof(float));
                    err |= kern_gemm_acc(dQi, dSt, 1, bq, Kh, bq, d, e);
                    for (int64_t i = 0; i < bq; i++) memcpy(dq + (i0 + i) * P + qo, dQi + i * d, (size_t)d * sizeof(float));
                    err |= kern_gemm_acc(dVh, Pi, 1, T, dOi, e, d, bq);
                    err |= kern_gemm_acc(dKh, dSt, bq, 1, Qi, e, d, bq);
                }
            }
            if (err) {
#pragma omp atomic write
                bad = 1;
                continue;
            }
            for (int64_t t = 0; t < T; t++) {
                memcpy(dk + t * Pkv + ko, dKh + t * d, (size_t)d * sizeof(float));
                memcpy(dv + t * Pkv + ko, dVh + t * d, (size_t)d * sizeof(float));
            }
        }
        moec_free(sc);
    }
    return bad ? moec_set_error("attention backward: out of memory") : 0;
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#define OPSB_X86 1
#define AVX2FMA __attribute__((target("avx2,fma")))
/* SwiGLU backward over [lo, hi) (the tail < 8 through padded lanes: the same arithmetic for every element) */
AVX2FMA static void swiglu_bwd_avx2(float *dg, float *du, const float *dout, const float *g, const float *u,
                                    int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 8) {
        float tz[8] = {0}, to[8] = {0}, tu[8] = {0}, rg[8], ru[8];
        const bool full = i + 8 <= n;
        if (!full) {
            memcpy(tz, g + i, (size_t)(n - i) * sizeof(float));
            memcpy(to, dout + i, (size_t)(n - i) * sizeof(float));
            memcpy(tu, u + i, (size_t)(n - i) * sizeof(float));
        }
        __m256 z = _mm256_loadu_ps(full ? g + i : tz), go = _mm256_loadu_ps(full ? dout + i : to),
               uu = _mm256_loadu_ps(full ? u + i : tu);
        __m256 sg = _mm256_div_ps(one, _mm256_add_ps(one, vmath_exp8(_mm256_sub_ps(_mm256_setzero_ps(), z))));
        __m256 vdu = _mm256_mul_ps(go, _mm256_mul_ps(z, sg));
        __m256 vdg = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(go, uu), sg),
                                   _mm256_add_ps(one, _mm256_mul_ps(z, _mm256_sub_ps(one, sg))));
        _mm256_storeu_ps(full ? du + i : ru, vdu);
        _mm256_storeu_ps(full ? dg + i : rg, vdg);
        if (!full) {
            memcpy(du + i, ru, (size_t)(n - i) * sizeof(float));
            memcpy(dg + i, rg, (size_t)(n - i) * sizeof(float));
        }
    }
}
#else
#define OPSB_X86 0
#endif

/* backward of ops_swiglu (AVX2: exp through vmath_exp8; chunks of 4096 in parallel) */
void ops_swiglu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, int64_t N) {
#if OPSB_X86
    if (strcmp(kern_path(), "scalar") != 0) {
        int64_t nch = (N + 4095) / 4096;
#pragma omp parallel for schedule(static) if (N > 65536)
        for (int64_t c = 0; c < nch; c++) {
            int64_t lo = c * 4096, len = N - lo < 4096 ? N - lo : 4096;
            swiglu_bwd_avx2(dg + lo, du + lo, dout + lo, g + lo, u + lo, len);
        }
        return;
    }
#endif
#pragma omp parallel for schedule(static) if (N > 65536)
    for (int64_t i = 0; i < N; i++) {
        float z = g[i], sg = 1.0f / (1.0f + expf(-z)), silu = z * sg;
        float go = dout[i];
        du[i] = go * silu;
        dg[i] = go * u[i] * sg * (1.0f + z * (1.0f - sg));
    }
}

/* backward of the LFA conv (model_forward's two kern_matmul taps + bias) */
int ops_conv2_causal_backward(float *din, float *dw0, float *dw1, float *db, const float *dout, const float *in,
                              const float *w0, const float *w1, int64_t T, int64_t C_in, int64_t C_out) {
    /* tap 1 (current token): plain matmul backward over all rows */
    if (ops_matmul_backward(din, dw1, dout, in, w1, T, C_in, C_out) != 0) return -1;
    /* tap 0: out[t] gets W0·in[t-1] for t >= 1, i.e. rows dout[1..T) against in[0..T-1) */
    if (T > 1 && ops_matmul_backward(din, dw0, dout + C_out, in, w0, T - 1, C_in, C_out) != 0) return -1;
    if (db)
        for (int64_t t = 0; t < T; t++)
            for (int64_t o = 0; o < C_out; o++) db[o] += dout[t * C_out + o];
    return 0;
}

/* backward of moe_router_attn */
void ops_router_attn_backward(float *dq, float *dk, float *dv, const float *dlogits, const float *q,
                              const float *k, const float *v, const float *inner, int64_t T, int64_t E) {
#pragma omp parallel for schedule(static) if (T * E * E > 65536)
    for (int64_t t = 0; t < T; t++) {
        const float *qt = q + t * E, *kt = k + t * E, *vt = v + t * E, *gl = dlogits + t * E;
        float *dqt = dq + t * E, *dkt = dk + t * E, *dvt = dv + t * E;
        memset(dqt, 0, (size_t)E * sizeof(float));
        memset(dkt, 0, (size_t)E * sizeof(float));
        memset(dvt, 0, (size_t)E * sizeof(float));
        for (int64_t i = 0; i < E; i++) {
            const float *a = inner + (t * E + i) * E;
            float gi = gl[i];
            /* da_ij = gi·v_j; ds_ij = a_ij (da_ij − Σ_j a_ij da_ij) = gi·a_ij (v_j − logit_i) */
            double li = 0.0;
            for (int64_t j = 0; j < E; j++) li += (double)a[j] * vt[j];
            for (int64_t j = 0; j < E; j++) {
                dvt[j] += gi * a[j];
                float ds = gi * a[j] * (vt[j] - (float)li);
                dqt[i] += ds * kt[j];
                dkt[j] += ds * qt[i];
            }
        }
    }
}

/* backward of moe_topk's weights */
void ops_topk_softmax_backward(float *dlogits, const int32_t *sel, const float *w, const float *dw, int64_t T,
                               int64_t E, int64_t k) {
    for (int64_t t = 0; t < T; t++) {
        const float *wt = w + t * k, *gt = dw + t * k;
        double s = 0.0;
        for (int64_t r = 0; r < k; r++) s += (double)wt[r] * gt[r];
        for (int64_t r = 0; r < k; r++) dlogits[t * E + sel[t * k + r]] += wt[r] * (gt[r] - (float)s);
    }
}

/* Cross-entropy of one row with the gradient: dl = scale·mask·(softmax(l) − onehot) through ops_softmax (AVX2 exp);
 * logsumexp = max − log(p_max) (p_max = 1/Σexp(l − max) >= 1/V: well conditioned). */
static double ce_row_grad(float *dl, const float *l, int32_t tgt, int64_t V, float c) {
    float mx = l[0], lt = l[tgt];
    int64_t imax = 0;
    for (int64_t i = 1; i < V; i++)
        if (l[i] > mx) mx = l[i], imax = i;
    if (dl != l) memcpy(dl, l, (size_t)V * sizeof(float));
    ops_softmax(dl, V);
    double lse = (double)mx - log((double)dl[imax]);
    for (int64_t i = 0; i < V; i++) dl[i] *= c;
    dl[tgt] -= c;
    return lse - (double)lt;
}

/* Cross-entropy of one row without a gradient (exp in double). */
static double ce_row(const float *l, int32_t tgt, int64_t V) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++)
        if (l[i] > mx) mx = l[i];
    double sum = 0.0;
    for (int64_t i = 0; i < V; i++) sum += exp((double)(l[i] - mx));
    return (double)mx + log(sum) - (double)l[tgt];
}

double ops_cross_entropy(float *dlogits, const float *logits, const int32_t *target, const float *mask, int64_t T,
                         int64_t V, float scale) {
    double total = 0.0;
    double *ce = malloc((size_t)(T > 0 ? T : 1) * sizeof(double));
    /* rows in parallel, each row's term stored and summed in order below (same bits for any thread count) */
#pragma omp parallel for schedule(static) if (ce && T * V > 65536)
    for (int64_t t = 0; t < T; t++) {
        float mk = mask ? mask[t] : 1.0f;
        double r = 0.0;
        if (mk == 0.0f) {
            if (dlogits) memset(dlogits + t * V, 0, (size_t)V * sizeof(float));
        } else {
            r = (double)mk * (dlogits ? ce_row_grad(dlogits + t * V, logits + t * V, target[t], V, scale * mk)
                                      : ce_row(logits + t * V, target[t], V));
        }
        if (ce) ce[t] = r;
        else total += r; /* serial fallback (no allocation): the loop above ran on one thread */
    }
    if (ce)
        for (int64_t t = 0; t < T; t++) total += ce[t];
    free(ce);
    return total;
}
