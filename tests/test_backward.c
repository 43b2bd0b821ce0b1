/* ops_backward: every backward op against central finite differences of the real forward op (loss = Σ r·out with
 * random r), on tiny shapes; plus bitwise determinism across thread counts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kern.h"
#include "moe.h"
#include "ops.h"
#include "ops_backward.h"
#include "test.h"
#include "util.h"

static moec_rng rng;
static void fill(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] = s * moec_rng_normal(&rng);
}

/* The op under test: recompute out from the current inputs. */
typedef void (*fwd_fn)(float *out);
static double loss_of(fwd_fn f, float *out, const float *r, size_t n_out) {
    f(out);
    double s = 0.0;
    for (size_t i = 0; i < n_out; i++) s += (double)r[i] * out[i];
    return s;
}

/* Compare the analytic gradient g of input x (n elements) with central differences (all elements, n small). */
static void fd_check(const char *name, float *x, size_t n, const float *g, fwd_fn f, float *out, const float *r,
                     size_t n_out, float h) {
    double gmax = 0.0, worst = 0.0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(g[i]));
    for (size_t i = 0; i < n; i++) {
        float x0 = x[i];
        x[i] = x0 + h;
        double lp = loss_of(f, out, r, n_out);
        x[i] = x0 - h;
        double lm = loss_of(f, out, r, n_out);
        x[i] = x0;
        double num = (lp - lm) / ((double)(x0 + h) - (double)(x0 - h));
        double err = fabs(num - g[i]) / (1e-2 * fabs(g[i]) + 2e-3 * gmax + 1e-6);
        if (err > worst) worst = err, wi = i;
    }
    T_CHECK(worst <= 1.0 && gmax > 0, "%s: worst element %zu off by %.3g of the tolerance (gmax %.3g)", name, wi,
            worst, gmax);
    printf("%-28s gmax %.3e worst/tol %.3f\n", name, gmax, worst);
}

/* ---- ops under test (inputs in statics) ---- */
enum { T_ = 5, C_ = 6, O_ = 4, NH = 4, NKV = 2, D_ = 6, E_ = 5, K_ = 2, V_ = 7 };
static float X[T_ * 64], W[64 * 64], Wt[64], B1[64], Q[T_ * NH * D_], Kk[T_ * NKV * D_], Vv[T_ * NKV * D_];
static float G[T_ * 64], U[T_ * 64], CS[T_ * 8], SN[T_ * 8], SCR[4 * T_];
static int32_t IDS[T_], TGT[T_], SEL[T_ * K_];
static float MASK[T_];
static int pairing;

static void f_matmul(float *out) { kern_matmul(out, X, W, GGML_F32, T_, C_, O_); }
static void f_rmsnorm(float *out) { ops_rmsnorm(out, NULL, X, Wt, T_, C_, 1e-6f); }
static void f_rope(float *out) {
    memcpy(out, X, sizeof(float) * T_ * 2 * 8);
    ops_rope(out, T_, 2, 8, 6, pairing, CS, SN);
}
static void f_attn(float *out) {
    ops_attention(out, NULL, Q, Kk, Vv, NKV * D_, 0, T_, NH, NKV, D_, 0.4f, SCR, 1);
}
static void f_swiglu(float *out) { ops_swiglu(out, G, U, T_ * C_); }
static void f_conv(float *out) { /* out[t] = b + W0·x[t-1] + W1·x[t], C_ -> O_ */
    for (int t = 0; t < T_; t++)
        for (int o = 0; o < O_; o++) {
            float s = B1[o];
            for (int i = 0; i < C_; i++) {
                s += W[O_ * C_ + o * C_ + i] * X[t * C_ + i];
                if (t > 0) s += W[o * C_ + i] * X[(t - 1) * C_ + i];
            }
            out[t * O_ + o] = s;
        }
}
static void f_router(float *out) { moe_router_attn(out, NULL, Q, Kk, Vv, T_, E_); }
static void f_topk(float *out) {
    int32_t sel[T_ * K_];
    moe_topk(sel, out, X, T_, E_, K_);
}
static void f_ce(float *out) { out[0] = (float)ops_cross_entropy(NULL, X, TGT, MASK, T_, V_, 1.0f); }
static void f_embed(float *out) { ops_embed(out, IDS, T_, W, GGML_F32, C_); }

/* Attention backward on a longer sequence (several query blocks, a partial last one) against the textbook formulas
 * in double: dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P⊙(dP − rowsum(P⊙dP))·scale, dQ = dS·K, dK = dSᵀ·Q (GQA 4 over 2 heads). */
static void attention_long(void) {
    enum { TL = 150, NHL = 4, NKL = 2, DL = 16 };
    const int64_t P = NHL * DL, Pk = NKL * DL, g = NHL / NKL;
    float *q = malloc(sizeof(float) * TL * P), *k = malloc(sizeof(float) * TL * Pk), *v = malloc(sizeof(float) * TL * Pk),
          *go = malloc(sizeof(float) * TL * P), *out = malloc(sizeof(float) * TL * P),
          *pr = malloc(sizeof(float) * NHL * TL * TL), *scr = malloc(sizeof(float) * 4 * TL * 64),
          *dq = malloc(sizeof(float) * TL * P), *dk = malloc(sizeof(float) * TL * Pk), *dv = malloc(sizeof(float) * TL * Pk);
    double *rq = calloc(TL * P, sizeof(double)), *rk = calloc(TL * Pk, sizeof(double)), *rv = calloc(TL * Pk, sizeof(double));
    fill(q, TL * P, 1), fill(k, TL * Pk, 1), fill(v, TL * Pk, 1), fill(go, TL * P, 1);
    const float sc = 0.25f;
    ops_attention(out, pr, q, k, v, Pk, 0, TL, NHL, NKL, DL, sc, scr, 1);
    T_CHECK(ops_attention_backward(dq, dk, dv, go, q, k, v, pr, TL, NHL, NKL, DL, sc) == 0, "long attention backward");
    for (int64_t h = 0; h < NHL; h++) {
        int64_t ko = (h / g) * DL, qo = h * DL;
        for (int64_t t = 0; t < TL; t++) {
            const float *p = pr + (h * TL + t) * TL;
            double dp[TL], sum = 0;
            for (int64_t j = 0; j <= t; j++) {
                dp[j] = 0;
                for (int64_t c = 0; c < DL; c++) dp[j] += (double)go[t * P + qo + c] * v[j * Pk + ko + c];
                sum += p[j] * dp[j];
            }
            for (int64_t j = 0; j <= t; j++) {
                double ds = p[j] * (dp[j] - sum) * sc;
                for (int64_t c = 0; c < DL; c++) {
                    rv[j * Pk + ko + c] += p[j] * (double)go[t * P + qo + c];
                    rq[t * P + qo + c] += ds * k[j * Pk + ko + c];
                    rk[j * Pk + ko + c] += ds * q[t * P + qo + c];
                }
            }
        }
    }
    double e[3] = {0, 0, 0}, m[3] = {0, 0, 0};
    for (int64_t i = 0; i < TL * P; i++) e[0] = fmax(e[0], fabs(dq[i] - rq[i])), m[0] = fmax(m[0], fabs(rq[i]));
    for (int64_t i = 0; i < TL * Pk; i++) {
        e[1] = fmax(e[1], fabs(dk[i] - rk[i])), m[1] = fmax(m[1], fabs(rk[i]));
        e[2] = fmax(e[2], fabs(dv[i] - rv[i])), m[2] = fmax(m[2], fabs(rv[i]));
    }
    for (int i = 0; i < 3; i++)
        T_CHECK(m[i] > 0.1 && e[i] < 2e-5 * m[i], "long attention d%c: max error %.3g of max %.3g", "qkv"[i], e[i], m[i]);
#ifdef _OPENMP
    {
        float *dq2 = malloc(sizeof(float) * TL * P), *dk2 = malloc(sizeof(float) * TL * Pk),
              *dv2 = malloc(sizeof(float) * TL * Pk);
        int nt = omp_get_max_threads();
        omp_set_num_threads(nt > 1 ? 1 : 2);
        ops_attention_backward(dq2, dk2, dv2, go, q, k, v, pr, TL, NHL, NKL, DL, sc);
        omp_set_num_threads(nt);
        T_CHECK(!memcmp(dq, dq2, sizeof(float) * TL * P) && !memcmp(dk, dk2, sizeof(float) * TL * Pk) &&
                    !memcmp(dv, dv2, sizeof(float) * TL * Pk),
                "long attention backward bitwise equal across thread counts");
        free(dq2), free(dk2), free(dv2);
    }
#endif
    free(q), free(k), free(v), free(go), free(out), free(pr), free(scr), free(dq), free(dk), free(dv);
    free(rq), free(rk), free(rv);
}

/* SwiGLU backward on 1003 gates over [-100, 100] (both vector paths and the tail) against the formula in double. */
static void swiglu_wide(void) {
    enum { N = 1003 };
    float *g = malloc(N * 4), *u = malloc(N * 4), *go = malloc(N * 4), *dg = malloc(N * 4), *du = malloc(N * 4);
    for (int i = 0; i < N; i++) {
        g[i] = -100.0f + 200.0f * (float)i / (N - 1);
        if (i % 3 == 0) g[i] *= 0.05f; /* many in [-5, 5] */
        u[i] = 0.5f + 0.001f * (float)i, go[i] = 1.0f - 0.0015f * (float)i;
    }
    double worst = 0;
    for (int path = 0; path < 2; path++) {
        int old = kern_force_scalar(path);
        ops_swiglu_backward(dg, du, go, g, u, N);
        kern_force_scalar(old);
        for (int i = 0; i < N; i++) {
            double z = g[i], sg = 1.0 / (1.0 + exp(-z));
            double rdu = go[i] * z * sg, rdg = (double)go[i] * u[i] * sg * (1.0 + z * (1.0 - sg));
            /* dg relative to the size of its terms (1 + z(1 − sg) crosses 0 near z = −1.28: cancellation) */
            double sdg = fabs((double)go[i] * u[i] * sg) * (1.0 + fabs(z) * (1.0 - sg));
            double e1 = fabs(du[i] - rdu) / (fabs(rdu) + 1e-30), e2 = fabs(dg[i] - rdg) / (sdg + 1e-30);
            if (fabs(rdu) < 1e-30) e1 = fabs(du[i]) < 1e-30 ? 0 : 1;
            if (sdg < 1e-30) e2 = fabs(dg[i]) < 1e-30 ? 0 : 1;
            worst = fmax(worst, fmax(e1, e2));
        }
    }
    T_CHECK(worst < 2e-6, "swiglu backward over [-100, 100]: worst relative error %.3g", worst);
    free(g), free(u), free(go), free(dg), free(du);
}

int main(void) {
    moec_rng_seed(&rng, 1234);
    float out[T_ * 64], r[T_ * 64], dx[T_ * 64], dw[64 * 64], db[64], probs[NH * T_ * T_];
    /* matmul: dX = dY·W, dW = dYᵀ·X */
    fill(X, T_ * C_, 1), fill(W, O_ * C_, 1), fill(r, T_ * O_, 1);
    memset(dx, 0, sizeof dx), memset(dw, 0, sizeof dw);
    ops_matmul_backward(dx, dw, r, X, W, T_, C_, O_);
    fd_check("matmul dX", X, T_ * C_, dx, f_matmul, out, r, T_ * O_, 1e-2f);
    fd_check("matmul dW", W, O_ * C_, dw, f_matmul, out, r, T_ * O_, 1e-2f);
    /* rmsnorm */
    fill(X, T_ * C_, 1), fill(Wt, C_, 1), fill(r, T_ * C_, 1);
    float rstd[T_];
    ops_rmsnorm(out, rstd, X, Wt, T_, C_, 1e-6f);
    memset(dx, 0, sizeof dx), memset(dw, 0, sizeof dw);
    ops_rmsnorm_backward(dx, dw, r, X, Wt, rstd, T_, C_);
    fd_check("rmsnorm dx", X, T_ * C_, dx, f_rmsnorm, out, r, T_ * C_, 1e-2f);
    fd_check("rmsnorm dw", Wt, C_, dw, f_rmsnorm, out, r, T_ * C_, 1e-2f);
    /* rope, both pairings, 2 heads of 8 dims, 6 rotated (2 pass through) */
    ops_rope_table(CS, SN, 0, T_, 6, 10000.0f, 0);
    for (pairing = 0; pairing < 2; pairing++) {
        fill(X, T_ * 16, 1), fill(r, T_ * 16, 1);
        memcpy(dx, r, sizeof(float) * T_ * 16);
        ops_rope_backward(dx, T_, 2, 8, 6, pairing, CS, SN);
        fd_check(pairing ? "rope neox" : "rope normal", X, T_ * 16, dx, f_rope, out, r, T_ * 16, 1e-2f);
    }
    /* causal attention with GQA (4 query heads over 2 kv heads) */
    fill(Q, sizeof Q / 4, 1), fill(Kk, sizeof Kk / 4, 1), fill(Vv, sizeof Vv / 4, 1), fill(r, T_ * NH * D_, 1);
    ops_attention(out, probs, Q, Kk, Vv, NKV * D_, 0, T_, NH, NKV, D_, 0.4f, SCR, 1);
    float dq[T_ * NH * D_], dk[T_ * NKV * D_], dv[T_ * NKV * D_];
    ops_attention_backward(dq, dk, dv, r, Q, Kk, Vv, probs, T_, NH, NKV, D_, 0.4f);
    fd_check("attention dq", Q, sizeof Q / 4, dq, f_attn, out, r, T_ * NH * D_, 1e-2f);
    fd_check("attention dk", Kk, sizeof Kk / 4, dk, f_attn, out, r, T_ * NH * D_, 1e-2f);
    fd_check("attention dv", Vv, sizeof Vv / 4, dv, f_attn, out, r, T_ * NH * D_, 1e-2f);
    /* determinism: 1 vs 2 threads give the same bits */
#ifdef _OPENMP
    {
        float dq2[sizeof dq / 4], dk2[sizeof dk / 4], dv2[sizeof dv / 4];
        int nt = omp_get_max_threads();
        omp_set_num_threads(1);
        ops_attention_backward(dq2, dk2, dv2, r, Q, Kk, Vv, probs, T_, NH, NKV, D_, 0.4f);
        omp_set_num_threads(nt > 1 ? nt : 2);
        T_CHECK(!memcmp(dq, dq2, sizeof dq) && !memcmp(dk, dk2, sizeof dk) && !memcmp(dv, dv2, sizeof dv),
                "attention backward bitwise equal across thread counts");
        omp_set_num_threads(nt);
    }
#endif
    /* swiglu */
    fill(G, T_ * C_, 2), fill(U, T_ * C_, 1), fill(r, T_ * C_, 1);
    float dg[T_ * C_], du[T_ * C_];
    ops_swiglu_backward(dg, du, r, G, U, T_ * C_);
    fd_check("swiglu dgate", G, T_ * C_, dg, f_swiglu, out, r, T_ * C_, 1e-2f);
    fd_check("swiglu dup", U, T_ * C_, du, f_swiglu, out, r, T_ * C_, 1e-2f);
    /* LFA kernel-2 causal conv: taps W[0] (previous token) and W[1] (current), bias */
    fill(X, T_ * C_, 1), fill(W, 2 * O_ * C_, 1), fill(B1, O_, 1), fill(r, T_ * O_, 1);
    memset(dx, 0, sizeof dx), memset(dw, 0, sizeof dw), memset(db, 0, sizeof db);
    ops_conv2_causal_backward(dx, dw, dw + O_ * C_, db, r, X, W, W + O_ * C_, T_, C_, O_);
    fd_check("lfa conv dx", X, T_ * C_, dx, f_conv, out, r, T_ * O_, 1e-2f);
    fd_check("lfa conv dw (both taps)", W, 2 * O_ * C_, dw, f_conv, out, r, T_ * O_, 1e-2f);
    fd_check("lfa conv db", B1, O_, db, f_conv, out, r, T_ * O_, 1e-2f);
    /* attention router */
    fill(Q, T_ * E_, 1), fill(Kk, T_ * E_, 1), fill(Vv, T_ * E_, 1), fill(r, T_ * E_, 1);
    float inner[T_ * E_ * E_], drq[T_ * E_], drk[T_ * E_], drv[T_ * E_];
    moe_router_attn(out, inner, Q, Kk, Vv, T_, E_);
    ops_router_attn_backward(drq, drk, drv, r, Q, Kk, Vv, inner, T_, E_);
    fd_check("router attn dq", Q, T_ * E_, drq, f_router, out, r, T_ * E_, 1e-2f);
    fd_check("router attn dk", Kk, T_ * E_, drk, f_router, out, r, T_ * E_, 1e-2f);
    fd_check("router attn dv", Vv, T_ * E_, drv, f_router, out, r, T_ * E_, 1e-2f);
    /* renormalised top-k weights: well separated logits so the selection does not change */
    for (int t = 0; t < T_; t++)
        for (int e = 0; e < E_; e++) X[t * E_ + e] = (float)((e * 3 + t) % E_) * 0.7f + 0.1f * moec_rng_normal(&rng);
    fill(r, T_ * K_, 1);
    float w[T_ * K_];
    moe_topk(SEL, w, X, T_, E_, K_);
    memset(dx, 0, sizeof dx);
    ops_topk_softmax_backward(dx, SEL, w, r, T_, E_, K_);
    fd_check("top-k renormalised softmax", X, T_ * E_, dx, f_topk, out, r, T_ * K_, 1e-2f);
    /* cross-entropy with a loss mask (one masked row) */
    fill(X, T_ * V_, 2);
    for (int t = 0; t < T_; t++) TGT[t] = (t * 3) % V_, MASK[t] = t == 2 ? 0.0f : 1.0f;
    float one = 1.0f, dl[T_ * V_];
    double ce = ops_cross_entropy(dl, X, TGT, MASK, T_, V_, 1.0f);
    T_CHECK(ce > 0, "ce positive");
    fd_check("cross-entropy (masked)", X, T_ * V_, dl, f_ce, out, &one, 1, 1e-2f);
    T_CHECK(dl[2 * V_] == 0.0f && dl[2 * V_ + 3] == 0.0f, "masked row has no gradient");
    /* hand value: logits 0 everywhere, V classes -> ce = log V per row */
    float z[2 * V_];
    memset(z, 0, sizeof z);
    int32_t tz[2] = {1, 2};
    T_CHECK(fabs(ops_cross_entropy(NULL, z, tz, NULL, 2, V_, 1.0f) - 2 * log((double)V_)) < 1e-6, "ce = log V");
    /* embedding (id 1 repeated: gradients add) */
    fill(W, V_ * C_, 1), fill(r, T_ * C_, 1);
    int32_t ids[T_] = {1, 3, 1, 0, 6};
    memcpy(IDS, ids, sizeof ids);
    memset(dw, 0, sizeof dw);
    ops_embed_backward(dw, r, IDS, T_, C_);
    fd_check("embedding", W, V_ * C_, dw, f_embed, out, r, T_ * C_, 1e-2f);
    attention_long();
    swiglu_wide();
    return t_done("test_backward");
}
