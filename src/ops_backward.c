/* ops_backward: backward of the forward ops. See ops_backward.h. Deterministic for any thread count. */
#include "ops_backward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kern.h"

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

static float dot_f32(const float *restrict a, const float *restrict b, int64_t n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* backward of ops_attention (pos0 = 0) */
void ops_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                            const float *v, const float *probs, int64_t T, int64_t n_head, int64_t n_kv, int64_t d,
                            float scale) {
    int64_t g = n_head / n_kv, P = n_head * d, Pkv = n_kv * d;
    memset(dq, 0, (size_t)(T * P) * sizeof(float));
    memset(dk, 0, (size_t)(T * Pkv) * sizeof(float));
    memset(dv, 0, (size_t)(T * Pkv) * sizeof(float));
#pragma omp parallel
    {
        /* dp_j = dout_t·v_j, kept per thread (recomputed if the row cannot be allocated: same bits) */
        float *dpb = malloc((size_t)T * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t kvh = 0; kvh < n_kv; kvh++) {
            int64_t ko = kvh * d;
            for (int64_t hh = 0; hh < g; hh++) {
                int64_t h = kvh * g + hh, qo = h * d;
                for (int64_t t = 0; t < T; t++) {
                    const float *p = probs + (h * T + t) * T;
                    const float *restrict go = dout + t * P + qo;
                    double sum = 0.0; /* Σ_j p_j dp_j */
                    for (int64_t j = 0; j <= t; j++) {
                        float dp = dot_f32(go, v + j * Pkv + ko, d);
                        if (dpb) dpb[j] = dp;
                        sum += (double)p[j] * dp;
                    }
                    float *restrict dqt = dq + t * P + qo;
                    const float *restrict qt = q + t * P + qo;
                    for (int64_t j = 0; j <= t; j++) {
                        const float *restrict kj = k + j * Pkv + ko;
                        float dp = dpb ? dpb[j] : dot_f32(go, v + j * Pkv + ko, d);
                        float pj = p[j];
                        float ds = pj * (dp - (float)sum) * scale;
                        float *restrict dkj = dk + j * Pkv + ko, *restrict dvj = dv + j * Pkv + ko;
#pragma omp simd
                        for (int64_t i = 0; i < d; i++) {
                            dvj[i] += pj * go[i];
                            dqt[i] += ds * kj[i];
                            dkj[i] += ds * qt[i];
                        }
                    }
                }
            }
        }
        free(dpb);
    }
}

/* backward of ops_swiglu */
void ops_swiglu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, int64_t N) {
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

double ops_cross_entropy(float *dlogits, const float *logits, const int32_t *target, const float *mask, int64_t T,
                         int64_t V, float scale) {
    double total = 0.0;
    for (int64_t t = 0; t < T; t++) {
        float mk = mask ? mask[t] : 1.0f;
        const float *l = logits + t * V;
        if (mk == 0.0f) {
            if (dlogits) memset(dlogits + t * V, 0, (size_t)V * sizeof(float));
            continue;
        }
        float mx = -INFINITY;
        for (int64_t i = 0; i < V; i++)
            if (l[i] > mx) mx = l[i];
        double sum = 0.0;
        for (int64_t i = 0; i < V; i++) sum += exp((double)(l[i] - mx));
        double lse = (double)mx + log(sum);
        total += (double)mk * (lse - (double)l[target[t]]);
        if (dlogits) {
            float *dl = dlogits + t * V;
            float c = scale * mk;
            for (int64_t i = 0; i < V; i++) dl[i] = c * (float)(exp((double)l[i] - lse));
            dl[target[t]] -= c;
        }
    }
    return total;
}
