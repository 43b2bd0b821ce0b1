/* ops / moe / sample unit tests against hand-computed values. */
#include <math.h>
#include <string.h>

#include "moe.h"
#include "ops.h"
#include "sample.h"
#include "test.h"
#include "util.h"

#define NEAR(a, b, tol) (fabs((double)(a) - (double)(b)) <= (tol))

int main(void) {
    /* rmsnorm: x = [1, 2, 3, 4], mean(x²) = 7.5, eps 0.5 -> rstd = 1/sqrt(8) */
    {
        float x[4] = {1, 2, 3, 4}, w[4] = {1, 2, 1, 0.5f}, o[4], r;
        ops_rmsnorm(o, &r, x, w, 1, 4, 0.5f);
        float s = 1.0f / sqrtf(8.0f);
        T_CHECK(NEAR(r, s, 1e-7), "rmsnorm rstd %g", r);
        T_CHECK(NEAR(o[0], s, 1e-6) && NEAR(o[1], 4 * s, 1e-6) && NEAR(o[2], 3 * s, 1e-6) && NEAR(o[3], 2 * s, 1e-6),
                "rmsnorm values");
    }
    /* rope tables: base 100, rope_dims 4: inv = [1, 0.1]; pos 2 -> angles [2, 0.2] */
    {
        float c[4], s[4];
        ops_rope_table(c, s, 1, 2, 4, 100.0f, 0);
        T_CHECK(NEAR(c[0], cos(1.0), 1e-6) && NEAR(s[1], sin(0.1), 1e-6), "rope table pos 1");
        T_CHECK(NEAR(c[2], cos(2.0), 1e-6) && NEAR(s[3], sin(0.2), 1e-6), "rope table pos 2");
        /* hf table: pos 257 rounds to 256 in bf16; inv_freq 1 exact: angle bf16(256) = 256 */
        float ch[1], sh[1];
        ops_rope_table(ch, sh, 257, 1, 2, 10000.0f, 1);
        T_CHECK(ch[0] == moec_bf16_to_f32(moec_f32_to_bf16((float)cos(256.0))), "hf rope: position 257 -> 256");
        ops_rope_table(ch, sh, 259, 1, 2, 10000.0f, 1);
        T_CHECK(sh[0] == moec_bf16_to_f32(moec_f32_to_bf16((float)sin(260.0))), "hf rope: position 259 -> 260");
        /* hf inv_freq for i=1 of 4 dims, base 10000: 0.01 -> bf16 0.010009765625; pos 3: angle bf16(0.030029296875) */
        float c4[2], s4[2];
        ops_rope_table(c4, s4, 3, 1, 4, 10000.0f, 1);
        float ang = moec_bf16_to_f32(moec_f32_to_bf16(3.0f * 0.010009765625f));
        T_CHECK(c4[1] == moec_bf16_to_f32(moec_f32_to_bf16((float)cos((double)ang))), "hf rope angle rounding");
    }
    /* rope pairings on one head of 4 dims, rope_dims 4, angles a0, a1 */
    {
        float c[2] = {cosf(0.5f), cosf(0.25f)}, s[2] = {sinf(0.5f), sinf(0.25f)};
        float xn[4] = {1, 2, 3, 4}, xx[4] = {1, 2, 3, 4};
        ops_rope(xn, 1, 1, 4, 4, 0, c, s); /* normal: pairs (0,1) angle a0, (2,3) angle a1 */
        T_CHECK(NEAR(xn[0], 1 * c[0] - 2 * s[0], 1e-6) && NEAR(xn[1], 2 * c[0] + 1 * s[0], 1e-6), "rope normal 0");
        T_CHECK(NEAR(xn[2], 3 * c[1] - 4 * s[1], 1e-6) && NEAR(xn[3], 4 * c[1] + 3 * s[1], 1e-6), "rope normal 1");
        ops_rope(xx, 1, 1, 4, 4, 1, c, s); /* neox: pairs (0,2) angle a0, (1,3) angle a1 */
        T_CHECK(NEAR(xx[0], 1 * c[0] - 3 * s[0], 1e-6) && NEAR(xx[2], 3 * c[0] + 1 * s[0], 1e-6), "rope neox 0");
        T_CHECK(NEAR(xx[1], 2 * c[1] - 4 * s[1], 1e-6) && NEAR(xx[3], 4 * c[1] + 2 * s[1], 1e-6), "rope neox 1");
        /* partial rope: 8-dim head, rope_dims 4 neox: dims 4..7 unchanged */
        float xp[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        ops_rope(xp, 1, 1, 8, 4, 1, c, s);
        T_CHECK(xp[4] == 5 && xp[7] == 8 && NEAR(xp[0], 1 * c[0] - 3 * s[0], 1e-6), "rope partial dims");
    }
    /* softmax */
    {
        float x[3] = {1, 2, 3};
        ops_softmax(x, 3);
        double z = exp(1) + exp(2) + exp(3);
        T_CHECK(NEAR(x[0], exp(1) / z, 1e-7) && NEAR(x[2], exp(3) / z, 1e-7), "softmax");
    }
    /* attention: 1 head, d 2, 2 positions; position 1 attends to both */
    {
        float q[4] = {1, 0, 0, 1}, kc[4] = {1, 0, 0, 2}, vc[4] = {1, 2, 3, 4}, out[4], pr[4], scr[4];
        ops_attention(out, pr, q, kc, vc, 2, 0, 2, 1, 1, 2, 1.0f, scr, 1);
        T_CHECK(NEAR(out[0], 1, 1e-6) && NEAR(out[1], 2, 1e-6), "attention t=0 sees only itself");
        double p0 = exp(0.0) / (exp(0.0) + exp(2.0)); /* q1·k0 = 0, q1·k1 = 2 */
        T_CHECK(NEAR(out[2], p0 * 1 + (1 - p0) * 3, 1e-6) && NEAR(out[3], p0 * 2 + (1 - p0) * 4, 1e-6),
                "attention t=1");
        T_CHECK(pr[1] == 0 && NEAR(pr[2], p0, 1e-6), "attention probs masked");
        /* GQA: 2 query heads share 1 kv head */
        float q2[4] = {1, 0, 1, 0}, o2[4], sc2[2];
        ops_attention(o2, NULL, q2, kc, vc, 2, 0, 1, 2, 1, 2, 1.0f, sc2, 1);
        T_CHECK(o2[0] == 1 && o2[2] == 1 && o2[3] == 2, "attention GQA");
    }
    /* blocked attention == per-query attention, bit for bit, and == a naive double reference: T = 37 queries at
     * positions 5..41 (3 blocks, the last partial), 4 heads sharing 2 kv heads, d = 12 */
    {
        enum { P0 = 5, TQ = 37, TK = P0 + TQ, NH = 4, NKV = 2, D = 12 };
        static float q[TQ * NH * D], kc[TK * NKV * D], vc[TK * NKV * D], o1[TQ * NH * D], o2[TQ * NH * D];
        static float p1[NH * TQ * TK], p2[NH * TQ * TK], scr[2 * (16 * TK + 2 * D)];
        moec_rng r;
        moec_rng_seed(&r, 5);
        for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) q[i] = moec_rng_normal(&r);
        for (size_t i = 0; i < sizeof kc / sizeof kc[0]; i++) kc[i] = moec_rng_normal(&r), vc[i] = moec_rng_normal(&r);
        ops_attention(o1, p1, q, kc, vc, NKV * D, P0, TQ, NH, NKV, D, 0.3f, scr, 2);
        ops_attention_blocked(o2, p2, q, kc, vc, GGML_F32, NKV * D, D, P0, TQ, NH, NKV, D, 0.3f, scr, 2);
        T_CHECK(!memcmp(o1, o2, sizeof o1) && !memcmp(p1, p2, sizeof p1), "blocked attention identical");
        double worst = 0;
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < TQ; t++) {
                int n = P0 + t + 1, kv = h / (NH / NKV);
                double s[TK], mx = -1e300, z = 0;
                for (int j = 0; j < n; j++) {
                    s[j] = 0;
                    for (int i = 0; i < D; i++) s[j] += (double)q[(t * NH + h) * D + i] * kc[j * NKV * D + kv * D + i];
                    s[j] *= 0.3;
                    if (s[j] > mx) mx = s[j];
                }
                for (int j = 0; j < n; j++) z += s[j] = exp(s[j] - mx);
                for (int i = 0; i < D; i++) {
                    double o = 0;
                    for (int j = 0; j < n; j++) o += s[j] / z * vc[j * NKV * D + kv * D + i];
                    double e = fabs(o - o2[(t * NH + h) * D + i]);
                    if (e > worst) worst = e;
                }
            }
        T_CHECK(worst < 1e-5, "attention vs double reference: %g", worst);
        /* f16 cache: equals the fp32 attention on the f16-rounded K and V */
        static uint16_t k16[TK * NKV * D], v16[TK * NKV * D];
        static float kr[TK * NKV * D], vr[TK * NKV * D], o3[TQ * NH * D], o4[TQ * NH * D];
        ops_f32_to_f16(k16, kc, TK * NKV * D);
        ops_f32_to_f16(v16, vc, TK * NKV * D);
        ops_f16_to_f32(kr, k16, TK * NKV * D);
        ops_f16_to_f32(vr, v16, TK * NKV * D);
        int conv_ok = 1;
        for (int i = 0; i < TK * NKV * D; i++)
            conv_ok &= k16[i] == moec_f32_to_f16(kc[i]) && kr[i] == moec_f16_to_f32(k16[i]);
        T_CHECK(conv_ok, "f16 row conversions = scalar reference");
        ops_attention_blocked(o3, NULL, q, k16, v16, GGML_F16, NKV * D, D, P0, TQ, NH, NKV, D, 0.3f, scr, 2);
        ops_attention_blocked(o4, NULL, q, kr, vr, GGML_F32, NKV * D, D, P0, TQ, NH, NKV, D, 0.3f, scr, 2);
        T_CHECK(!memcmp(o3, o4, sizeof o3), "f16 cache = fp32 attention on rounded K, V");
        /* decode (T = 1) of the last query: the heads of a KV group together (probs NULL) = per head (probs
         * asked for), bit for bit, = row TQ-1 of the full pass; fp32 and f16 caches */
        static float od[NH * D], oh[NH * D], pd[NH * TK];
        const float *qlast = q + (TQ - 1) * NH * D;
        for (int f16 = 0; f16 < 2; f16++) {
            const void *kk = f16 ? (const void *)k16 : kc, *vv = f16 ? (const void *)v16 : vc;
            ggml_type kt = f16 ? GGML_F16 : GGML_F32;
            ops_attention_blocked(od, NULL, qlast, kk, vv, kt, NKV * D, D, TK - 1, 1, NH, NKV, D, 0.3f, scr, 2);
            ops_attention_blocked(oh, pd, qlast, kk, vv, kt, NKV * D, D, TK - 1, 1, NH, NKV, D, 0.3f, scr, 2);
            T_CHECK(!memcmp(od, oh, sizeof od) && !memcmp(od, (f16 ? o3 : o2) + (TQ - 1) * NH * D, sizeof od),
                    "decode attention, KV groups together = per head = full pass (%s)", f16 ? "f16" : "f32");
        }
    }
    /* swiglu */
    {
        float g[2] = {0, 2}, u[2] = {5, 3}, o[2];
        ops_swiglu(o, g, u, 2);
        T_CHECK(o[0] == 0 && NEAR(o[1], 2.0 / (1 + exp(-2.0)) * 3, 1e-6), "swiglu");
        /* the vectorized exp: 1003 gates over [-100, 100] (saturation, the 8-lane tail), in place, vs double */
        enum { NS = 1003 };
        static float gz[NS], gu[NS];
        double worst = 0;
        for (int i = 0; i < NS; i++) gz[i] = -100.0f + 200.0f * (float)i / (NS - 1), gu[i] = 0.5f + (float)(i % 7);
        static float ref_in[NS];
        memcpy(ref_in, gz, sizeof gz);
        ops_swiglu(gz, gz, gu, NS);
        for (int i = 0; i < NS; i++) {
            double z = ref_in[i], want = z / (1 + exp(-z)) * gu[i], e = fabs(gz[i] - want) / (fabs(want) + 1e-30);
            if (fabs(want) > 1e-30 && e > worst) worst = e;
        }
        T_CHECK(worst < 4e-7, "swiglu over [-100, 100] vs double: worst relative error %g", worst);
        float nan_in = NAN, nan_out, one = 1;
        ops_swiglu(&nan_out, &nan_in, &one, 1);
        T_CHECK(isnan(nan_out), "swiglu(NaN) is NaN");
        /* softmax of 37 values spanning 120 (some terms underflow) vs double */
        float sx[37];
        double sz = 0, sw = 0;
        for (int i = 0; i < 37; i++) sx[i] = -60.0f + 3.3f * (float)i;
        for (int i = 0; i < 37; i++) sz += exp((double)(float)(sx[i] - sx[36])); /* the fp32 difference, as ops */
        float sx0[37];
        memcpy(sx0, sx, sizeof sx);
        ops_softmax(sx, 37);
        for (int i = 0; i < 37; i++) {
            double want = exp((double)(float)(sx0[i] - sx0[36])) / sz;
            if (want > 1e-30 && fabs(sx[i] - want) / want > sw) sw = fabs(sx[i] - want) / want;
        }
        T_CHECK(sw < 4e-7, "softmax of 37 values vs double: worst relative error %g", sw);
    }
    /* attention router, E = 2: logits_i = Σ_j softmax_j(q_i k_j) v_j */
    {
        float q[2] = {1, 2}, k[2] = {1, -1}, v[2] = {3, 5}, l[2], in[4];
        moe_router_attn(l, in, q, k, v, 1, 2);
        double a0 = exp(1) / (exp(1) + exp(-1)), a1 = exp(2) / (exp(2) + exp(-2));
        T_CHECK(NEAR(l[0], a0 * 3 + (1 - a0) * 5, 1e-6) && NEAR(l[1], a1 * 3 + (1 - a1) * 5, 1e-6), "attn router");
        T_CHECK(NEAR(in[2], a1, 1e-6), "attn router inner softmax");
    }
    /* top-k: ties -> lower id; weights = softmax over the selected */
    {
        float l[10] = {1, 3, 3, 2, 0, /* row 2 */ NAN, 1, 1, 1, 5};
        int32_t sel[4];
        float w[4];
        moe_topk(sel, w, l, 2, 5, 2);
        T_CHECK(sel[0] == 1 && sel[1] == 2, "topk tie: got %d %d", sel[0], sel[1]);
        T_CHECK(NEAR(w[0], 0.5, 1e-7) && NEAR(w[1], 0.5, 1e-7), "topk equal weights");
        T_CHECK(sel[2] == 4 && sel[3] == 1, "topk with NaN: got %d %d", sel[2], sel[3]);
        T_CHECK(NEAR(w[2], exp(4.0) / (1 + exp(4.0)), 1e-6), "topk renormalised weight");
        int32_t order[4], start[2 * 5 + 1];
        moe_group(order, start, sel, 2, 5, 2);
        /* sel = [1,2 | 4,1]: expert 1 <- slots 0, 3; expert 2 <- 1; expert 4 <- 2 */
        T_CHECK(start[0] == 0 && start[1] == 0 && start[2] == 2 && start[3] == 3 && start[4] == 3 && start[5] == 4,
                "group counts");
        T_CHECK(order[0] == 0 && order[1] == 3 && order[2] == 1 && order[3] == 2, "group order");
    }
    /* sampler: greedy, seeded reproducibility, top-k 1 = greedy, top-p tiny = greedy */
    {
        float l[5] = {0.1f, 2.0f, 2.0f, -1.0f, 1.9f};
        T_CHECK(sample_argmax(l, 5) == 1, "argmax ties -> lower id");
        sample_params g = {0, 0, 1};
        sampler *s = sample_new(5, &g, 1);
        T_CHECK(s && sample_next(s, l) == 1, "greedy");
        sample_free(s);
        sample_params k1 = {1.0f, 1, 1};
        s = sample_new(5, &k1, 7);
        int ok = 1;
        for (int i = 0; i < 50; i++) ok &= sample_next(s, l) == 1;
        T_CHECK(ok, "top-k 1 is greedy");
        sample_free(s);
        sample_params p = {1.0f, 0, 0.3f};
        s = sample_new(5, &p, 7);
        ok = 1;
        for (int i = 0; i < 50; i++) ok &= sample_next(s, l) == 1; /* p(1) ≈ 0.36 >= 0.3 */
        T_CHECK(ok, "small top-p keeps the best only");
        sample_free(s);
        sample_params t = {1.0f, 3, 0.95f};
        sampler *a = sample_new(5, &t, 123), *b = sample_new(5, &t, 123);
        int same = 1, cnt[5] = {0};
        for (int i = 0; i < 2000; i++) {
            int32_t x = sample_next(a, l), y = sample_next(b, l);
            same &= x == y;
            cnt[x]++;
        }
        T_CHECK(same, "same seed, same samples");
        T_CHECK(cnt[0] == 0 && cnt[3] == 0, "top-k 3 excludes the rest");
        /* frequencies over {1,2,4}: e^2, e^2, e^1.9 normalised: 0.345, 0.345, 0.31 */
        T_CHECK(cnt[1] > 600 && cnt[2] > 600 && cnt[4] > 500, "frequencies %d %d %d", cnt[1], cnt[2], cnt[4]);
        sample_free(a);
        sample_free(b);
        sample_params bad = {1.0f, 0, 0.0f};
        T_CHECK(sample_new(5, &bad, 1) == NULL, "top-p 0 rejected");
    }
    return t_done("test_ops");
}
