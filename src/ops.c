/* ops: forward operations on fp32 arrays. See ops.h. */
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kern.h"
#include "util.h"
#include "vmath.h"

int ops_embed(float *out, const int32_t *ids, int64_t T, const void *table, ggml_type type, int64_t H) {
    size_t rb = ggml_row_bytes(type, H);
    if (rb == 0) return -1;
    for (int64_t t = 0; t < T; t++)
        if (kern_row_to_f32(out + t * H, (const uint8_t *)table + (size_t)ids[t] * rb, type, H) != 0) return -1;
    return 0;
}

void ops_rmsnorm(float *out, float *rstd, const float *in, const float *w, int64_t T, int64_t C, float eps) {
    /* threads only for long prefills: below ~2^20 elements a fork/join costs more than it saves (on a shared machine a
     * join can wait for the other core to be scheduled); dynamic chunks so a preempted thread holds up less */
#pragma omp parallel for schedule(dynamic, 32) if (T * C >= 1048576)
    for (int64_t t = 0; t < T; t++) {
        const float *x = in + t * C;
        float *o = out + t * C;
        double ss = 0.0;
        for (int64_t i = 0; i < C; i++) ss += (double)x[i] * x[i];
        float r = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        for (int64_t i = 0; i < C; i++) o[i] = x[i] * r * w[i];
        if (rstd) rstd[t] = r;
    }
}

void ops_rope_table(float *cos_t, float *sin_t, int64_t pos0, int64_t T, int64_t rope_dims, float base, int table) {
    int64_t half = rope_dims / 2;
    for (int64_t i = 0; i < half; i++) {
        float inv = 1.0f / powf(base, (float)(2 * i) / (float)rope_dims);
        if (table == 1) inv = moec_bf16_to_f32(moec_f32_to_bf16(inv));
        for (int64_t t = 0; t < T; t++) {
            float p = (float)(pos0 + t), a;
            if (table == 1) {
                p = moec_bf16_to_f32(moec_f32_to_bf16(p));
                a = moec_bf16_to_f32(moec_f32_to_bf16(p * inv));
                cos_t[t * half + i] = moec_bf16_to_f32(moec_f32_to_bf16((float)cos((double)a)));
                sin_t[t * half + i] = moec_bf16_to_f32(moec_f32_to_bf16((float)sin((double)a)));
            } else {
                a = p * inv;
                cos_t[t * half + i] = (float)cos((double)a);
                sin_t[t * half + i] = (float)sin((double)a);
            }
        }
    }
}

void ops_rope(float *x, int64_t T, int64_t n_heads, int64_t d, int64_t rope_dims, int pairing, const float *cos_t,
              const float *sin_t) {
    int64_t half = rope_dims / 2;
    for (int64_t t = 0; t < T; t++) {
        const float *c = cos_t + t * half, *s = sin_t + t * half;
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * d;
            for (int64_t i = 0; i < half; i++) {
                int64_t ia = pairing == 1 ? i : 2 * i, ib = pairing == 1 ? i + half : 2 * i + 1;
                float a = v[ia], b = v[ib];
                v[ia] = a * c[i] - b * s[i];
                v[ib] = b * c[i] + a * s[i];
            }
        }
    }
}

/* Dot product with 8 independent lanes (vectorizable without -ffast-math), lanes summed pairwise at the end. */
static inline float dot8(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++) acc[i & 7] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* y += a·x (restrict + fixed 8-wide blocks: vectorized at -O2) */
static inline void axpy(float *restrict y, float a, const float *restrict x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) y[i + l] += a * x[i + l];
    for (; i < n; i++) y[i] += a * x[i];
}

/* The AVX2 path (attention, exp) is chosen once per call (the same path for every query, so decode and full pass
 * agree). MOEC_KERN=scalar forces the portable path, as in kern.c. */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#define OPS_X86 1
/* kern's probe (cached, honours MOEC_KERN=scalar): its AVX2 path needs AVX2 + FMA + F16C, so do we */
static int ops_simd(void) { return strcmp(kern_path(), "scalar") != 0; }
#else
#define OPS_X86 0
static int ops_simd(void) { return 0; }
#endif

#if OPS_X86
__attribute__((target("avx2,fma,f16c"))) static void f16_to_f32_f16c(float *dst, const uint16_t *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = moec_f16_to_f32(src[i]);
}
__attribute__((target("avx2,fma,f16c"))) static void f32_to_f16_f16c(uint16_t *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = moec_f32_to_f16(src[i]);
}
static int ops_f16c(void) { return ops_simd(); }
#endif

/* ---- AVX2 attention and exp kernels ---- */
#if OPS_X86
#define AVX __attribute__((target("avx2,fma,f16c")))

AVX static void swiglu_avx2(float *out, const float *gate, const float *up, int64_t N) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= N; i += 8) {
        __m256 z = _mm256_loadu_ps(gate + i);
        __m256 e = vmath_exp8(_mm256_sub_ps(_mm256_setzero_ps(), z));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(z, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    if (i < N) { /* tail through the same lanes (padded), so every element gets the same arithmetic */
        float z[8] = {0}, u[8] = {0}, o[8];
        memcpy(z, gate + i, (size_t)(N - i) * sizeof(float));
        memcpy(u, up + i, (size_t)(N - i) * sizeof(float));
        __m256 zv = _mm256_loadu_ps(z);
        __m256 e = vmath_exp8(_mm256_sub_ps(_mm256_setzero_ps(), zv));
        _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_div_ps(zv, _mm256_add_ps(one, e)), _mm256_loadu_ps(u)));
        memcpy(out + i, o, (size_t)(N - i) * sizeof(float));
    }
}

/* In-place softmax of x[0..n): max, exp8 of x − max, sum in double (4 + 4 lanes, fixed order), scale. */
AVX static void softmax_avx2(float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > mx) mx = x[i];
    __m256 m = _mm256_set1_ps(mx);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = vmath_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    if (i < n) {
        float t[8];
        for (int l = 0; l < 8; l++) t[l] = i + l < n ? x[i + l] : -INFINITY;
        __m256 e = vmath_exp8(_mm256_sub_ps(_mm256_loadu_ps(t), m)); /* exp(-inf) = 0: padding adds nothing */
        _mm256_storeu_ps(t, e);
        memcpy(x + i, t, (size_t)(n - i) * sizeof(float));
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    s0 = _mm256_add_pd(s0, s1);
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s0), _mm256_extractf128_pd(s0, 1));
    double sum = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= (float)(1.0 / sum);
}

/* horizontal sums of 4 vectors: lane c of the result = sum of c's 8 lanes, the same tree for every c */
AVX static inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* Scores of 1 or 2 queries against 4 key rows (fp32 or f16): r[qi][c] = q_qi · k_c. Each (query, key) pair has
 * its own accumulator (8 lanes over d in steps of 8, then hsum4, then the scalar tail d % 8), so a pair's value
 * does not depend on which other pairs are computed alongside (blocked == per-query, bit for bit). */
#define ATT_SCORES(NAME, KT, LDK, KV)                                                                                \
    AVX static void NAME(float r[2][4], const float *qa, const float *qb, const KT *const k[4], int64_t d) {         \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;             \
        int64_t i = 0;                                                                                               \
        if (qb) {                                                                                                    \
            for (; i + 8 <= d; i += 8) {                                                                             \
                __m256 x = _mm256_loadu_ps(qa + i), y = _mm256_loadu_ps(qb + i), kv;                                 \
                kv = LDK(k[0] + i), a0 = _mm256_fmadd_ps(x, kv, a0), b0 = _mm256_fmadd_ps(y, kv, b0);               \
                kv = LDK(k[1] + i), a1 = _mm256_fmadd_ps(x, kv, a1), b1 = _mm256_fmadd_ps(y, kv, b1);               \
                kv = LDK(k[2] + i), a2 = _mm256_fmadd_ps(x, kv, a2), b2 = _mm256_fmadd_ps(y, kv, b2);               \
                kv = LDK(k[3] + i), a3 = _mm256_fmadd_ps(x, kv, a3), b3 = _mm256_fmadd_ps(y, kv, b3);               \
            }                                                                                                        \
            _mm_storeu_ps(r[1], hsum4(b0, b1, b2, b3));                                                              \
        } else {                                                                                                     \
            for (; i + 8 <= d; i += 8) {                                                                             \
                __m256 x = _mm256_loadu_ps(qa + i);                                                                  \
                a0 = _mm256_fmadd_ps(x, LDK(k[0] + i), a0);                                                          \
                a1 = _mm256_fmadd_ps(x, LDK(k[1] + i), a1);                                                          \
                a2 = _mm256_fmadd_ps(x, LDK(k[2] + i), a2);                                                          \
                a3 = _mm256_fmadd_ps(x, LDK(k[3] + i), a3);                                                          \
            }                                                                                                        \
        }                                                                                                            \
        _mm_storeu_ps(r[0], hsum4(a0, a1, a2, a3));                                                                  \
        for (; i < d; i++)                                                                                           \
            for (int c = 0; c < 4; c++) {                                                                            \
                r[0][c] += qa[i] * KV(k[c][i]);                                                                      \
                if (qb) r[1][c] += qb[i] * KV(k[c][i]);                                                              \
            }                                                                                                        \
    }
#define LDK_F32(p) _mm256_loadu_ps(p)
#define LDK_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define KV_F32(v) (v)
#define KV_F16(v) moec_f16_to_f32(v)
ATT_SCORES(scores_f32, float, LDK_F32, KV_F32)
ATT_SCORES(scores_f16, uint16_t, LDK_F16, KV_F16)

/* o[0..d) (+)= Σ_{j0 <= j < j1} p[j] · v_j, v_j = v + j·stride (fp32 or f16); start from 0 when first. Every
 * element is one chain of fused multiply-adds over j ascending (the tail d % 8: a += p·v unfused), held in
 * registers across j: the same arithmetic as a j-outer axpy loop, without the loads/stores of o per key. */
#define ATT_PV(NAME, VT, LDV, KV)                                                                                    \
    AVX static void NAME(float *o, const float *p, const VT *v, int64_t stride, int64_t j0, int64_t j1, int64_t d,  \
                         int first) {                                                                                \
        int64_t c = 0;                                                                                               \
        for (; c + 64 <= d; c += 64) {                                                                               \
            __m256 s[8]; /* unrolled, so s stays in registers */                                                    \
            _Pragma("GCC unroll 8") for (int u = 0; u < 8; u++) s[u] =                                               \
                first ? _mm256_setzero_ps() : _mm256_loadu_ps(o + c + 8 * u);                                        \
            for (int64_t j = j0; j < j1; j++) {                                                                      \
                __m256 pj = _mm256_broadcast_ss(p + j);                                                              \
                const VT *vr = v + j * stride + c;                                                                   \
                s[0] = _mm256_fmadd_ps(pj, LDV(vr), s[0]);                                                           \
                s[1] = _mm256_fmadd_ps(pj, LDV(vr + 8), s[1]);                                                       \
                s[2] = _mm256_fmadd_ps(pj, LDV(vr + 16), s[2]);                                                      \
                s[3] = _mm256_fmadd_ps(pj, LDV(vr + 24), s[3]);                                                      \
                s[4] = _mm256_fmadd_ps(pj, LDV(vr + 32), s[4]);                                                      \
                s[5] = _mm256_fmadd_ps(pj, LDV(vr + 40), s[5]);                                                      \
                s[6] = _mm256_fmadd_ps(pj, LDV(vr + 48), s[6]);                                                      \
                s[7] = _mm256_fmadd_ps(pj, LDV(vr + 56), s[7]);                                                      \
            }                                                                                                        \
            _Pragma("GCC unroll 8") for (int u = 0; u < 8; u++) _mm256_storeu_ps(o + c + 8 * u, s[u]);              \
        }                                                                                                            \
        for (; c + 16 <= d; c += 16) {                                                                               \
            __m256 s0 = first ? _mm256_setzero_ps() : _mm256_loadu_ps(o + c),                                        \
                   s1 = first ? _mm256_setzero_ps() : _mm256_loadu_ps(o + c + 8);                                    \
            for (int64_t j = j0; j < j1; j++) {                                                                      \
                __m256 pj = _mm256_broadcast_ss(p + j);                                                              \
                s0 = _mm256_fmadd_ps(pj, LDV(v + j * stride + c), s0);                                               \
                s1 = _mm256_fmadd_ps(pj, LDV(v + j * stride + c + 8), s1);                                           \
            }                                                                                                        \
            _mm256_storeu_ps(o + c, s0);                                                                             \
            _mm256_storeu_ps(o + c + 8, s1);                                                                         \
        }                                                                                                            \
        for (; c + 8 <= d; c += 8) {                                                                                 \
            __m256 s0 = first ? _mm256_setzero_ps() : _mm256_loadu_ps(o + c);                                        \
            for (int64_t j = j0; j < j1; j++)                                                                        \
                s0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), LDV(v + j * stride + c), s0);                       \
            _mm256_storeu_ps(o + c, s0);                                                                             \
        }                                                                                                            \
        for (; c < d; c++) {                                                                                         \
            float a = first ? 0.0f : o[c];                                                                           \
            for (int64_t j = j0; j < j1; j++) a += p[j] * KV(v[j * stride + c]);                                     \
            o[c] = a;                                                                                                \
        }                                                                                                            \
    }
ATT_PV(pv_f32, float, LDK_F32, KV_F32)
ATT_PV(pv_f16, uint16_t, LDK_F16, KV_F16)

#define ATT_JC 256 /* keys per PV pass: the block's queries reuse these V rows from cache */

/* One (head, query block) of attention_core on the AVX2 path: queries t0 .. t0+nq-1 of head h (query/output rows
 * qs = n_head·d floats apart), or with grouped: the nq heads h .. h+nq-1 that share one KV head, all at the single
 * position pos0 + t0 (decode; rows qs = d apart), so that each K and V row is read from memory once per group.
 * Per (query, key) the arithmetic is the same either way. sc: nq rows of Tk floats. */
AVX static void attention_block_avx2(float *out, const float *q, const void *kc, const void *vc, int kv_f16,
                                     int64_t kv_stride, int64_t kvo, int64_t pos0, int64_t t0, int64_t nq,
                                     int64_t Tk, int64_t n_head, int64_t h, int64_t d, float scale, float *sc,
                                     int grouped) {
    const int64_t qs = grouped ? d : n_head * d, nmax = pos0 + t0 + (grouped ? 1 : nq);
    const float *qbase = q + (t0 * n_head + h) * d;
    float *obase = out + (t0 * n_head + h) * d;
    for (int64_t j0 = 0; j0 < nmax; j0 += 4) {
        const float *kf[4];
        const uint16_t *kh[4];
        for (int c = 0; c < 4; c++) { /* past the last key: repeat it (computed, not stored) */
            int64_t j = j0 + c < nmax ? j0 + c : nmax - 1;
            kf[c] = (const float *)kc + j * kv_stride + kvo;
            kh[c] = (const uint16_t *)kc + j * kv_stride + kvo;
        }
        /* first query that sees key j0 (causal; every query of a group sees them all) */
        int64_t q0 = grouped || j0 - pos0 - t0 <= 0 ? 0 : j0 - pos0 - t0;
        for (int64_t qi = q0; qi < nq; qi += 2) {
            float r[2][4];
            const float *qa = qbase + qi * qs, *qb = qi + 1 < nq ? qa + qs : NULL;
            if (kv_f16) scores_f16(r, qa, qb, kh, d);
            else scores_f32(r, qa, qb, kf, d);
            for (int c = 0; c < 4 && j0 + c < nmax; c++) {
                sc[qi * Tk + j0 + c] = r[0][c] * scale;
                if (qb) sc[(qi + 1) * Tk + j0 + c] = r[1][c] * scale;
            }
        }
    }
    for (int64_t qi = 0; qi < nq; qi++) softmax_avx2(sc + qi * Tk, grouped ? nmax : pos0 + t0 + qi + 1);
    for (int64_t jc = 0; jc < nmax; jc += ATT_JC)
        for (int64_t qi = 0; qi < nq; qi++) {
            int64_t n = grouped ? nmax : pos0 + t0 + qi + 1, j1 = jc + ATT_JC < n ? jc + ATT_JC : n;
            if (jc >= j1) continue;
            float *o = obase + qi * qs;
            if (kv_f16) pv_f16(o, sc + qi * Tk, (const uint16_t *)vc + kvo, kv_stride, jc, j1, d, jc == 0);
            else pv_f32(o, sc + qi * Tk, (const float *)vc + kvo, kv_stride, jc, j1, d, jc == 0);
        }
}
#endif

void ops_f16_to_f32(float *dst, const uint16_t *src, int64_t n) {
#if OPS_X86
    if (ops_f16c()) {
        f16_to_f32_f16c(dst, src, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) dst[i] = moec_f16_to_f32(src[i]);
}

void ops_f32_to_f16(uint16_t *dst, const float *src, int64_t n) {
#if OPS_X86
    if (ops_f16c()) {
        f32_to_f16_f16c(dst, src, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) dst[i] = moec_f32_to_f16(src[i]);
}

void ops_softmax(float *x, int64_t n) {
#if OPS_X86
    if (ops_simd()) {
        softmax_avx2(x, n);
        return;
    }
#endif
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

/* f16 row -> fp32 on the portable attention path */
static inline void att_cvt(float *dst, const uint16_t *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = moec_f16_to_f32(src[i]);
}

/* Core of both attention entry points: queries are processed in blocks of B of the same head, so each K and V
 * row is loaded once per block instead of once per query. Per query the arithmetic (and its order) is the same
 * for every B, so results do not depend on B. AVX2 path: scores 2 queries x 4 keys at a time, exp8 softmax, PV
 * accumulated in registers (attention_block_avx2); a decode step (T = 1, no probs) takes the g query heads that
 * share a KV head as one block instead, so K and V are read once per KV head. Portable path: dot8/axpy per
 * (query, key); f16 rows are converted to fp32 once per block. scratch per thread: B x (pos0+T) floats (+ 2d for
 * an f16 cache). Threads from 2^18 score multiply-adds on, as kern_matmul (a decode step with 16 heads of 64 at
 * context 256: 1 MB of fp32 K and V, ~70 us on one core; below that a fork/join on a busy machine costs about as
 * much as it saves). */
static void attention_core(float *out, float *probs, const float *q, const void *kc, const void *vc, int kv_f16,
                           int64_t kv_stride, int64_t head_stride, int64_t pos0, int64_t T, int64_t n_head,
                           int64_t n_kv, int64_t d, float scale, float *scratch, int n_thr, int64_t B) {
    int64_t g = n_head / n_kv, Tk = pos0 + T, nb = (T + B - 1) / B;
    const int simd = ops_simd();
    size_t per_thr = (size_t)B * (size_t)Tk + (kv_f16 ? 2 * (size_t)d : 0);
#if OPS_X86
    /* decode with shared KV heads: one item per KV head, its g query heads together (K/V read once per group) */
    if (simd && T == 1 && g > 1 && g <= B && !probs) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_thr) if (n_head * Tk * d >= 262144)
        for (int64_t kh = 0; kh < n_kv; kh++) {
            int th = 0;
#ifdef _OPENMP
            th = omp_get_thread_num();
#endif
            attention_block_avx2(out, q, kc, vc, kv_f16, kv_stride, kh * head_stride, pos0, 0, g, Tk, n_head, kh * g,
                                 d, scale, scratch + (size_t)th * per_thr, 1);
        }
        return;
    }
#endif
#pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(n_thr) if (n_head * T * Tk * d >= 262144)
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t b = 0; b < nb; b++) {
            int th = 0;
#ifdef _OPENMP
            th = omp_get_thread_num();
#endif
            float *sc = scratch + (size_t)th * per_thr, *row = sc + (size_t)B * (size_t)Tk;
            int64_t t0 = b * B, t1 = t0 + B < T ? t0 + B : T, nq = t1 - t0, kvo = (h / g) * head_stride,
                    nmax = pos0 + t1;
#if OPS_X86
            if (simd) {
                attention_block_avx2(out, q, kc, vc, kv_f16, kv_stride, kvo, pos0, t0, nq, Tk, n_head, h, d, scale,
                                     sc, 0);
                goto done;
            }
#endif
            /* scores: query t sees keys j <= pos0 + t */
            for (int64_t j = 0; j < nmax; j++) {
                const float *kj;
                if (kv_f16) {
                    att_cvt(row, (const uint16_t *)kc + j * kv_stride + kvo, d);
                    kj = row;
                } else {
                    kj = (const float *)kc + j * kv_stride + kvo;
                }
                int64_t q0 = j - pos0 - t0 > 0 ? j - pos0 - t0 : 0;
                for (int64_t qi = q0; qi < nq; qi++) sc[qi * Tk + j] = dot8(q + ((t0 + qi) * n_head + h) * d, kj, d) * scale;
            }
            for (int64_t qi = 0; qi < nq; qi++) {
                float *o = out + ((t0 + qi) * n_head + h) * d;
                memset(o, 0, (size_t)d * sizeof(float));
                ops_softmax(sc + qi * Tk, pos0 + t0 + qi + 1);
            }
            for (int64_t j = 0; j < nmax; j++) {
                const float *vj;
                if (kv_f16) {
                    att_cvt(row + d, (const uint16_t *)vc + j * kv_stride + kvo, d);
                    vj = row + d;
                } else {
                    vj = (const float *)vc + j * kv_stride + kvo;
                }
                int64_t q0 = j - pos0 - t0 > 0 ? j - pos0 - t0 : 0;
                for (int64_t qi = q0; qi < nq; qi++) axpy(out + ((t0 + qi) * n_head + h) * d, sc[qi * Tk + j], vj, d);
            }
#if OPS_X86
        done:
#endif
            if (probs)
                for (int64_t qi = 0; qi < nq; qi++) {
                    int64_t n = pos0 + t0 + qi + 1;
                    float *pr = probs + (h * T + t0 + qi) * Tk;
                    memcpy(pr, sc + qi * Tk, (size_t)n * sizeof(float));
                    memset(pr + n, 0, (size_t)(Tk - n) * sizeof(float));
                }
        }
}

void ops_attention(float *out, float *probs, const float *q, const float *kc, const float *vc, int64_t kv_stride,
                   int64_t pos0, int64_t T, int64_t n_head, int64_t n_kv, int64_t d, float scale, float *scratch,
                   int n_thr) {
    attention_core(out, probs, q, kc, vc, 0, kv_stride, d, pos0, T, n_head, n_kv, d, scale, scratch, n_thr, 1);
}

void ops_attention_blocked(float *out, float *probs, const float *q, const void *kc, const void *vc,
                           ggml_type kv_type, int64_t kv_stride, int64_t head_stride, int64_t pos0, int64_t T,
                           int64_t n_head, int64_t n_kv, int64_t d, float scale, float *scratch, int n_thr) {
    attention_core(out, probs, q, kc, vc, kv_type == GGML_F16, kv_stride, head_stride, pos0, T, n_head, n_kv, d,
                   scale, scratch, n_thr, OPS_ATT_BLOCK);
}

size_t ops_attention_scratch(int n_thr, int64_t n_ctx, int64_t d) {
    return (size_t)n_thr * ((size_t)OPS_ATT_BLOCK * (size_t)n_ctx + 2 * (size_t)d);
}

void ops_swiglu(float *out, const float *gate, const float *up, int64_t N) {
#if OPS_X86
    const int simd = ops_simd();
#endif
    /* chunks of 8K elements (a multiple of 8: the same arithmetic for every element whatever the split) */
    int64_t nc = (N + 8191) / 8192;
#pragma omp parallel for schedule(dynamic, 1) if (N >= 1048576) /* see ops_rmsnorm */
    for (int64_t c = 0; c < nc; c++) {
        int64_t i0 = c * 8192, i1 = i0 + 8192 < N ? i0 + 8192 : N;
#if OPS_X86
        if (simd) {
            swiglu_avx2(out + i0, gate + i0, up + i0, i1 - i0);
            continue;
        }
#endif
        for (int64_t i = i0; i < i1; i++) {
            float z = gate[i];
            out[i] = z / (1.0f + expf(-z)) * up[i];
        }
    }
}

void ops_add(float *y, const float *x, int64_t N) {
    for (int64_t i = 0; i < N; i++) y[i] += x[i];
}

void ops_add_bias(float *y, const float *b, int64_t T, int64_t C) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < C; i++) y[t * C + i] += b[i];
}

void ops_add_add_bias(float *y, const float *x, const float *b, int64_t T, int64_t C) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < C; i++) y[t * C + i] = (y[t * C + i] + x[t * C + i]) + b[i];
}
