/* kern: kern_matmul for every weight type, both code paths (MOEC_KERN=scalar and the SIMD path of the CPU: AVX2, or
 * AVX-512 when tests/test_avx512.sh runs it in the emulator), on shapes that hit every edge (k tails, partial register
 * tiles, several k panels / row blocks / token blocks).
 * Oracles, in double precision: (1) the dequantized weights times the exact activations (float types: tight; quantized
 * types: within the 8-bit activation-rounding bound); (2) for quantized types, the dequantized weights times the
 * dequantized 8-bit activations, which the integer kernels must match to fp32 rounding. On the avx512bf16 path BF16
 * weights meet activations rounded to BF16 (VCVTNEPS2BF16's rule, written out below): (2) is then the weights times
 * the rounded activations, and (1) holds within the rounding bound sum |w| |x - bf16(x)|. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "kern.h"
#include "quant.h"
#include "test.h"
#include "util.h"
#include "test_weights.h"

typedef struct {
    float d, ds;
    int16_t s[2];
    int8_t q[32];
} act_blk; /* layout documented in kern.h */

static int g_fail_shown;

/* fp32 -> BF16 -> fp32 as VCVTNEPS2BF16 rounds: to nearest even, zero and denormals to signed zero, NaN quiet. */
static float bf16_hw(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0) u &= 0x80000000u;
    else if ((u & 0x7F800000u) == 0x7F800000u) u = (u & 0x7FFFFFu) ? (u | 0x400000u) & 0xFFFF0000u : u;
    else u = (u + 0x7FFFu + ((u >> 16) & 1)) & 0xFFFF0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* Does kern_matmul round the activations of weight type t to BF16 (the avx512bf16 path)? */
static int bf16_acts(ggml_type t, int scalar) {
    return t == GGML_BF16 && !scalar && !strcmp(kern_path(), "avx512bf16");
}

/* Run kern_matmul and compare with the oracles. */
static void check_case(ggml_type t, int64_t T, int64_t n_in, int64_t n_out, int scalar, moec_rng *r) {
    void *w = t_random_weights(t, n_in, n_out, r);
    float *x = malloc(sizeof(float) * (size_t)(T * n_in)), *y = malloc(sizeof(float) * (size_t)(T * n_out));
    float *wf = malloc(sizeof(float) * (size_t)(n_in * n_out)), *xq = malloc(sizeof(float) * (size_t)(T * n_in));
    for (int64_t i = 0; i < T * n_in; i++) x[i] = moec_rng_normal(r);
    for (int64_t i = 0; i < T * n_out; i++) y[i] = NAN; /* must be overwritten */
    size_t rb = ggml_row_bytes(t, n_in);
    for (int64_t o = 0; o < n_out; o++) kern_row_to_f32(wf + o * n_in, (const uint8_t *)w + rb * (size_t)o, t, n_in);
    int quant = t == GGML_Q8_0 || t == GGML_Q4_0 || t == GGML_Q4_1 || t == GGML_Q4_K || t == GGML_Q6_K;
    const int bfx = bf16_acts(t, scalar), rounded = quant || bfx; /* rounded: oracle (2) applies */
    for (int64_t i = 0; bfx && i < T * n_in; i++) xq[i] = bf16_hw(x[i]);
    if (quant) { /* dequantized activations, from the documented block layout */
        act_blk *a = malloc(kern_act_bytes(n_in));
        for (int64_t tt = 0; tt < T; tt++) {
            kern_quantize_act(a, x + tt * n_in, n_in);
            for (int64_t i = 0; i < n_in; i++) xq[tt * n_in + i] = a[i / 32].d * a[i / 32].q[i % 32];
            for (int64_t b = 0; b < n_in / 32; b++) {
                int s0 = 0, s1 = 0;
                for (int j = 0; j < 16; j++) s0 += a[b].q[j], s1 += a[b].q[16 + j];
                if (s0 != a[b].s[0] || s1 != a[b].s[1] || a[b].ds != a[b].d * (float)(s0 + s1))
                    T_CHECK(0, "activation block sums");
            }
        }
        free(a);
    }
    float *amax = calloc((size_t)(T * (n_in / 32) + 1), sizeof(float));
    for (int64_t i = 0; quant && i < T * n_in; i++) amax[i / 32] = fmaxf(amax[i / 32], fabsf(x[i]));
    if (scalar) kern_force_scalar(1);
    else kern_force_scalar(0);
    int rc = kern_matmul(y, x, w, t, T, n_in, n_out);
    kern_force_scalar(0);
    T_CHECK(rc == 0, "kern_matmul %s: %s", ggml_type_name(t), moec_last_error());
    int bad = 0;
    double worst = 0;
    for (int64_t tt = 0; tt < T; tt++)
        for (int64_t o = 0; o < n_out; o++) {
            double ex = 0, mag = 0, exq = 0, magq = 0, bound = 0;
            for (int64_t i = 0; i < n_in; i++) {
                double wv = wf[o * n_in + i], xv = x[tt * n_in + i];
                ex += wv * xv;
                mag += fabs(wv * xv);
                if (rounded) {
                    double xqv = xq[tt * n_in + i];
                    exq += wv * xqv;
                    magq += fabs(wv * xqv);
                    /* quantized: |x - xq| <= d_a/2 per element; BF16: the rounding error itself */
                    bound += fabs(wv) * (quant ? amax[tt * (n_in / 32) + i / 32] / 127.0 * 0.5 : fabs(xv - xqv));
                }
            }
            double got = y[tt * n_out + o];
            double err = rounded ? fabs(got - exq) / (magq + 1e-30) : fabs(got - ex) / (mag + 1e-30);
            if (err > worst) worst = err;
            int ok = err <= 2e-5 && (!rounded || fabs(got - ex) <= bound * 1.001 + 1e-4 * mag);
            if (!ok && g_fail_shown++ < 8)
                T_CHECK(0, "%s %s T=%lld n_in=%lld n_out=%lld: y[%lld][%lld] = %.7g, want %.7g (exact-x %.7g)",
                        scalar ? "scalar" : "simd", ggml_type_name(t), (long long)T, (long long)n_in,
                        (long long)n_out, (long long)tt, (long long)o, got, rounded ? exq : ex, ex);
            if (!ok) bad++;
        }
    T_CHECK(bad == 0, "%s %s T=%lld n_in=%lld n_out=%lld: %d wrong outputs (worst rel err %.2g)",
            scalar ? "scalar" : "simd", ggml_type_name(t), (long long)T, (long long)n_in, (long long)n_out, bad, worst);
    moec_free(w);
    free(x);
    free(y);
    free(wf);
    free(xq);
    free(amax);
}

/* Activation quantization, both paths: the same bytes, and the documented rule checked in double precision. */
static void check_quantize_act(moec_rng *r) {
    enum { NB = 64, N = NB * 32 };
    float *x = malloc(sizeof(float) * N);
    for (int b = 0; b < NB; b++) {
        float *xb = x + 32 * b;
        float scale = b < 8 ? 1.0f : b < 16 ? 1e-30f : b < 24 ? 1e30f : (float)(1 + b);
        for (int j = 0; j < 32; j++) xb[j] = moec_rng_normal(r) * scale;
        switch (b % 8) {
        case 0: /* ties: amax 127 -> d = 1, id = 1, x = k + 0.5 exactly */
            for (int j = 0; j < 32; j++) xb[j] = (float)(j - 16) + 0.5f;
            xb[5] = 127.0f;
            break;
        case 1: for (int j = 0; j < 32; j++) xb[j] = 0.0f; break;  /* amax 0 */
        case 2: xb[3] = NAN; xb[20] = -NAN; break;                   /* NaN ignored, -> 0 */
        case 3: xb[7] = INFINITY; break;                              /* d = inf, id = 0 */
        case 4: xb[1] = -INFINITY; xb[2] = NAN; break;
        case 5: for (int j = 0; j < 32; j++) xb[j] = 1e-45f * (float)(j % 5); break; /* denormals: id = inf */
        case 6: for (int j = 0; j < 32; j++) xb[j] = (j & 1 ? 1.0f : -1.0f) * 254.0f * (float)j / 31.0f; break;
        default: break;
        }
    }
    uint8_t *qa = malloc(kern_act_bytes(N)), *qs = malloc(kern_act_bytes(N));
    kern_quantize_act(qa, x, N);
    kern_force_scalar(1);
    kern_quantize_act(qs, x, N);
    kern_force_scalar(0);
    T_CHECK(!memcmp(qa, qs, kern_act_bytes(N)), "kern_quantize_act: %s and scalar bytes differ", kern_path());
    const act_blk *a = (const act_blk *)qs;
    int bad = 0;
    for (int b = 0; b < NB; b++) {
        const float *xb = x + 32 * b;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            if (fabsf(xb[j]) > amax) amax = fabsf(xb[j]);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        bad += memcmp(&a[b].d, &d, 4) != 0;
        int s0 = 0, s1 = 0;
        for (int j = 0; j < 32; j++) {
            double p = (double)(float)(xb[j] * id), q = rint(p); /* rint: ties to even (default mode) */
            if (isnan(q)) q = 0;
            q = q < -127 ? -127 : q > 127 ? 127 : q;
            bad += a[b].q[j] != (int)q;
            if (j < 16) s0 += (int)q;
            else s1 += (int)q;
        }
        bad += a[b].s[0] != s0 || a[b].s[1] != s1;
        if (b % 8 == 0) bad += a[b].q[0] != -16 || a[b].q[1] != -14 || a[b].q[17] != 2; /* -15.5, -14.5, 1.5 */
    }
    T_CHECK(bad == 0, "kern_quantize_act: %d values differ from the documented rule", bad);
    free(x);
    free(qa);
    free(qs);
}

/* kern_gemm_acc against an exact emulation of its documented summation order: per element, per k chunk of 256
 * (ascending) a sum over k ascending started at 0, then added to C. The AVX2 path fuses each multiply-add (FMA)
 * except in the last N % 16 columns of each 256-column block; the scalar path never fuses. Bitwise equal for 1 and
 * all threads, on odd shapes: M < 6, M across row blocks of 96, N with column tails, K tails and several chunks,
 * row-major, transposed (a_rs = 1) and general strides (padded rows). */
static void check_gemm_acc(moec_rng *r) {
    const int64_t shapes[][4] = {/* M, N, K, layout: 0 row-major, 1 transposed, 2 general */
                                 {5, 37, 600, 0}, {97, 300, 257, 1}, {13, 16, 8, 0}, {400, 48, 300, 1},
                                 {1, 1, 1, 0},    {7, 17, 9, 2},     {203, 33, 70, 0}, {11, 40, 513, 1}};
    const int nthr = omp_get_max_threads();
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], lay = shapes[s][3];
        int64_t ars = lay == 0 ? K + 3 : lay == 1 ? 1 : 2 * K + 1, acs = lay == 0 ? 1 : lay == 1 ? M + 5 : 2;
        size_t na = (size_t)((M - 1) * ars + (K - 1) * acs + 1);
        float *a = malloc(sizeof(float) * na), *b = malloc(sizeof(float) * K * N), *c0 = malloc(sizeof(float) * M * N),
              *c = malloc(sizeof(float) * M * N), *e = malloc(sizeof(float) * M * N);
        for (size_t i = 0; i < na; i++) a[i] = moec_rng_normal(r);
        for (int64_t i = 0; i < K * N; i++) b[i] = moec_rng_normal(r);
        for (int64_t i = 0; i < M * N; i++) c0[i] = moec_rng_normal(r);
        for (int scalar = 0; scalar < 2; scalar++) {
            kern_force_scalar(scalar);
            int fused = strcmp(kern_path(), "scalar") != 0; /* kern_gemm_acc: AVX2 on both SIMD paths */
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    int64_t jb = j / 256 * 256, nc = N - jb < 256 ? N - jb : 256;
                    int fma_j = fused && j - jb < nc / 16 * 16;
                    float v = c0[i * N + j];
                    for (int64_t k0 = 0; k0 < K; k0 += 256) {
                        float acc = 0.0f;
                        for (int64_t k = k0; k < K && k < k0 + 256; k++) {
                            float x = a[i * ars + k * acs], y = b[k * N + j];
                            if (fma_j) {
                                acc = fmaf(x, y, acc);
                            } else {
                                float p = x * y;
                                acc += p;
                            }
                        }
                        v += acc;
                    }
                    e[i * N + j] = v;
                }
            for (int th = 0; th < 2; th++) {
                omp_set_num_threads(th ? nthr : 1);
                memcpy(c, c0, sizeof(float) * M * N);
                T_CHECK(kern_gemm_acc(c, a, ars, acs, b, M, N, K) == 0, "gemm_acc");
                int64_t bad = 0;
                for (int64_t i = 0; i < M * N; i++) bad += memcmp(&c[i], &e[i], sizeof(float)) != 0;
                T_CHECK(bad == 0, "kern_gemm_acc %s M=%lld N=%lld K=%lld layout %lld threads %d: %lld values differ "
                        "from the documented summation order", kern_path(), (long long)M, (long long)N, (long long)K,
                        (long long)lay, th ? nthr : 1, (long long)bad);
            }
            omp_set_num_threads(nthr);
            kern_force_scalar(0);
        }
        free(a), free(b), free(c0), free(c), free(e);
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--path") == 0) { /* child: the path chosen from MOEC_KERN at the first call */
        printf("%s\n", kern_path());
        return 0;
    }
    if (argc > 2 && strcmp(argv[1], "--kern") == 0) setenv("MOEC_KERN", argv[2], 1); /* before the first call */
    moec_rng r;
    moec_rng_seed(&r, 1234);
    printf("kern path: %s\n", kern_path());
    const ggml_type ft[3] = {GGML_F32, GGML_F16, GGML_BF16};
    const ggml_type qt[5] = {GGML_Q8_0, GGML_Q4_0, GGML_Q4_1, GGML_Q4_K, GGML_Q6_K};
    for (int scalar = 0; scalar < 2; scalar++) {
        /* float types: odd n_in (k tails), partial 3x4 tiles, > 1 k panel (1024), > 1 row block (32), > 1 token block (256) */
        const int64_t fs[][3] = {{1, 35, 7}, {2, 8, 1}, {3, 16, 4}, {5, 37, 9}, {7, 1030, 67}, {100, 520, 70},
                                 {1, 1024, 130}, {4, 1, 3}, {300, 40, 37}};
        for (int k = 0; k < 3; k++)
            for (size_t s = 0; s < sizeof fs / sizeof fs[0]; s++)
                check_case(ft[k], fs[s][0], fs[s][1], fs[s][2], scalar, &r);
        const int64_t qs[][3] = {{1, 256, 5}, {2, 512, 3}, {3, 256, 9}, {5, 768, 70}, {70, 256, 65}, {1, 1024, 130}};
        for (int k = 0; k < 5; k++)
            for (size_t s = 0; s < sizeof qs / sizeof qs[0]; s++) {
                if (k < 3 || qs[s][1] % 256 == 0) check_case(qt[k], qs[s][0], qs[s][1], qs[s][2], scalar, &r);
            }
        /* Q8_0/Q4_0 with n_in not a multiple of 256 */
        check_case(GGML_Q8_0, 4, 96, 11, scalar, &r);
        check_case(GGML_Q4_0, 4, 160, 11, scalar, &r);
    }
    /* scalar and simd agree closely on the same data */
    {
        int64_t T = 9, n_in = 512, n_out = 33;
        float *x = malloc(sizeof(float) * T * n_in), *y1 = malloc(sizeof(float) * T * n_out),
              *y2 = malloc(sizeof(float) * T * n_out);
        for (int64_t i = 0; i < T * n_in; i++) x[i] = moec_rng_normal(&r);
        const ggml_type all[8] = {GGML_F32, GGML_F16, GGML_BF16, GGML_Q8_0, GGML_Q4_0, GGML_Q4_1, GGML_Q4_K, GGML_Q6_K};
        for (int k = 0; k < 8; k++) {
            void *w = t_random_weights(all[k], n_in, n_out, &r);
            kern_force_scalar(1);
            kern_matmul(y1, x, w, all[k], T, n_in, n_out);
            kern_force_scalar(0);
            kern_matmul(y2, x, w, all[k], T, n_in, n_out);
            double md = 0, mm = 0;
            for (int64_t i = 0; i < T * n_out; i++) md = fmax(md, fabs(y1[i] - y2[i])), mm = fmax(mm, fabs(y1[i]));
            /* (BF16 on avx512bf16: the activations rounded to 8 bits, ~2^-9 relative per element) */
            const double tol = bf16_acts(all[k], 0) ? 1.0 / 128 : 1e-5;
            T_CHECK(md <= tol * mm, "%s: scalar vs %s differ by %g (max %g)", ggml_type_name(all[k]), kern_path(), md,
                    mm);
            moec_free(w);
        }
        free(x);
        free(y1);
        free(y2);
    }
    /* avx512bf16: a token's BF16 product has the same bits in a call of 1 token (decode) as of 7 (prefill) */
    if (bf16_acts(GGML_BF16, 0)) {
        const int64_t T = 7, n_in = 100, n_out = 13;
        float *x = malloc(sizeof(float) * T * n_in), *y7 = malloc(sizeof(float) * T * n_out), y1[13];
        for (int64_t i = 0; i < T * n_in; i++) x[i] = moec_rng_normal(&r);
        void *w = t_random_weights(GGML_BF16, n_in, n_out, &r);
        T_CHECK(kern_matmul(y7, x, w, GGML_BF16, T, n_in, n_out) == 0, "%s", moec_last_error());
        int same = 1;
        for (int64_t t = 0; t < T; t++) {
            T_CHECK(kern_matmul(y1, x + t * n_in, w, GGML_BF16, 1, n_in, n_out) == 0, "%s", moec_last_error());
            same &= !memcmp(y1, y7 + t * n_out, sizeof y1);
        }
        T_CHECK(same, "BF16 on avx512bf16: decode and prefill give different bits for a token");
        moec_free(w), free(x), free(y7);
    }
    /* kern_matmul_backward (via kern_gemm_acc): dx += dy·W, dw += dyᵀ·x against double loops, both paths, and the
     * same bits for 1 and 2 threads */
    {
        const int64_t shapes[][3] = {{1, 20, 7}, {7, 37, 19}, {50, 300, 70}, {13, 64, 600}};
        const int nthr = omp_get_max_threads();
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t T = shapes[s][0], n_in = shapes[s][1], n_out = shapes[s][2];
            float *x = malloc(sizeof(float) * T * n_in), *w = malloc(sizeof(float) * n_out * n_in),
                  *dy = malloc(sizeof(float) * T * n_out);
            for (int64_t i = 0; i < T * n_in; i++) x[i] = moec_rng_normal(&r);
            for (int64_t i = 0; i < n_out * n_in; i++) w[i] = moec_rng_normal(&r);
            for (int64_t i = 0; i < T * n_out; i++) dy[i] = moec_rng_normal(&r);
            float *dx[3], *dw[3];
            for (int v = 0; v < 3; v++) {
                dx[v] = malloc(sizeof(float) * T * n_in);
                dw[v] = malloc(sizeof(float) * n_out * n_in);
                for (int64_t i = 0; i < T * n_in; i++) dx[v][i] = 0.5f; /* accumulates */
                for (int64_t i = 0; i < n_out * n_in; i++) dw[v][i] = -1.0f;
                if (v == 1) kern_force_scalar(1);
                if (v == 2) omp_set_num_threads(1);
                T_CHECK(kern_matmul_backward(dx[v], dw[v], dy, x, w, T, n_in, n_out) == 0, "backward");
                kern_force_scalar(0);
                omp_set_num_threads(nthr);
            }
            int bad = 0;
            for (int64_t t = 0; t < T; t++)
                for (int64_t i = 0; i < n_in; i++) {
                    double e = 0.5, m = 0;
                    for (int64_t o = 0; o < n_out; o++) e += (double)dy[t * n_out + o] * w[o * n_in + i], m += fabs(dy[t * n_out + o] * w[o * n_in + i]);
                    for (int v = 0; v < 2; v++) bad += fabs(dx[v][t * n_in + i] - e) > 1e-5 * (m + 1);
                }
            for (int64_t o = 0; o < n_out; o++)
                for (int64_t i = 0; i < n_in; i++) {
                    double e = -1.0, m = 0;
                    for (int64_t t = 0; t < T; t++) e += (double)dy[t * n_out + o] * x[t * n_in + i], m += fabs(dy[t * n_out + o] * x[t * n_in + i]);
                    for (int v = 0; v < 2; v++) bad += fabs(dw[v][o * n_in + i] - e) > 1e-5 * (m + 1);
                }
            T_CHECK(bad == 0, "backward T=%lld n_in=%lld n_out=%lld: %d wrong values", (long long)T, (long long)n_in,
                    (long long)n_out, bad);
            T_CHECK(!memcmp(dx[0], dx[2], sizeof(float) * T * n_in) && !memcmp(dw[0], dw[2], sizeof(float) * n_out * n_in),
                    "backward depends on the thread count");
            for (int v = 0; v < 3; v++) free(dx[v]), free(dw[v]);
            free(x);
            free(w);
            free(dy);
        }
    }
    check_gemm_acc(&r);
    check_quantize_act(&r);
    /* MOEC_KERN=scalar is read at the first call: a child process started with it takes the scalar path */
    {
        if (access("/bin/sh", X_OK) == 0) { /* (not in the emulator's initramfs, tests/bochs) */
            char cmd[4200], out[64] = {0};
            snprintf(cmd, sizeof cmd, "MOEC_KERN=scalar '%s' --path", argv[0]);
            FILE *f = popen(cmd, "r");
            T_CHECK(f && fgets(out, sizeof out, f) && strcmp(out, "scalar\n") == 0, "MOEC_KERN=scalar child: path %s",
                    out);
            if (f) pclose(f);
        }
        kern_force_scalar(1);
        T_CHECK(strcmp(kern_path(), "scalar") == 0, "kern_force_scalar");
        T_CHECK(kern_force_scalar(0) == 1, "kern_force_scalar returns the previous setting");
    }
    /* errors */
    float x[64] = {0}, y[4];
    uint8_t w[256] = {0};
    T_CHECK(kern_matmul(y, x, w, (ggml_type)6, 1, 32, 1) != 0 && strstr(moec_last_error(), "unknown"), "type 6 unknown: %s",
            moec_last_error());
    T_CHECK(kern_matmul(y, x, w, GGML_Q8_0, 1, 48, 1) != 0, "n_in not a multiple of the block");
    T_CHECK(kern_matmul(y, x, w, (ggml_type)77, 1, 32, 1) != 0, "unknown type");
    T_CHECK(kern_matmul(y, x, w, GGML_F32, 0, 32, 1) == 0, "T = 0 is a no-op");
    return t_done("test_kern");
}
