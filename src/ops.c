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

int ops_embed(float *out, const int32_t *ids, int64_t T, const void *table, ggml_type type, int64_t H) {
    size_t rb = ggml_row_bytes(type, H);
    if (rb == 0) return -1;
    for (int64_t t = 0; t < T; t++)
        if (kern_row_to_f32(out + t * H, (const uint8_t *)table + (size_t)ids[t] * rb, type, H) != 0) return -1;
    return 0;
}

void ops_rmsnorm(float *out, float *rstd, const float *in, const float *w, int64_t T, int64_t C, float eps) {
#pragma omp parallel for schedule(static) if (T * C > 32768)
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

void ops_softmax(float *x, int64_t n) {
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

/* AVX2+FMA versions of dot8/axpy for the attention loops, chosen once per call (the same path for every
 * query, so decode and full pass still agree). MOEC_KERN=scalar forces the portable path, as in kern.c. */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#define OPS_X86 1
__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s0 = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}
__attribute__((target("avx2,fma"))) static void axpy_avx2(float *restrict y, float a, const float *restrict x,
                                                          int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}
/* kern's probe (cached, honours MOEC_KERN=scalar): its AVX2 path needs AVX2 + FMA + F16C, so do we */
static int ops_simd(void) { return strcmp(kern_path(), "avx2") == 0; }
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
/* fused f16-row versions: the row is converted in registers */
__attribute__((target("avx2,fma,f16c"))) static float dot_f16_f16c(const float *a, const uint16_t *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i))), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i + 8))),
                             s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i))), s0);
    s0 = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++) r += a[i] * moec_f16_to_f32(b[i]);
    return r;
}
__attribute__((target("avx2,fma,f16c"))) static void axpy_f16_f16c(float *restrict y, float a,
                                                                  const uint16_t *restrict x, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * moec_f16_to_f32(x[i]);
}
static int ops_f16c(void) { return ops_simd(); }
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

/* the converter chosen once per attention call */
static inline void att_cvt(int f16c, float *dst, const uint16_t *src, int64_t n) {
#if OPS_X86
    if (f16c) {
        f16_to_f32_f16c(dst, src, n);
        return;
    }
#endif
    (void)f16c;
    for (int64_t i = 0; i < n; i++) dst[i] = moec_f16_to_f32(src[i]);
}

static inline float att_dot(int simd, const float *a, const float *b, int64_t n) {
#if OPS_X86
    if (simd) return dot_avx2(a, b, n);
#endif
    (void)simd;
    return dot8(a, b, n);
}
static inline void att_axpy(int simd, float *restrict y, float a, const float *restrict x, int64_t n) {
#if OPS_X86
    if (simd) {
        axpy_avx2(y, a, x, n);
        return;
    }
#endif
    (void)simd;
    axpy(y, a, x, n);
}

/* Core of both attention entry points: queries are processed in blocks of B of the same head, so each K and V
 * row is loaded once per block (B dots / B axpys), instead of once per query. Per query the arithmetic (and its
 * order) is the same for every B, so results do not depend on B. The cache holds fp32 or f16 (f16 rows are
 * converted to fp32 once per block). scratch per thread: B x (pos0+T) floats (+ 2d for an f16 cache). */
static void attention_core(float *out, float *probs, const float *q, const void *kc, const void *vc, int kv_f16,
                           int64_t kv_stride, int64_t head_stride, int64_t pos0, int64_t T, int64_t n_head,
                           int64_t n_kv, int64_t d, float scale, float *scratch, int n_thr, int64_t B) {
    int64_t g = n_head / n_kv, Tk = pos0 + T, nb = (T + B - 1) / B;
    const int simd = ops_simd();
#if OPS_X86
    const int f16c = kv_f16 && ops_f16c();
#else
    const int f16c = 0;
#endif
    size_t per_thr = (size_t)B * (size_t)Tk + (kv_f16 ? 2 * (size_t)d : 0);
#pragma omp parallel for collapse(2) schedule(dynamic, 1) num_threads(n_thr) if (n_head * T * Tk * d > 65536)
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t b = 0; b < nb; b++) {
            int th = 0;
#ifdef _OPENMP
            th = omp_get_thread_num();
#endif
            float *sc = scratch + (size_t)th * per_thr, *row = sc + (size_t)B * (size_t)Tk;
            int64_t t0 = b * B, t1 = t0 + B < T ? t0 + B : T, nq = t1 - t0, kvo = (h / g) * head_stride,
                    nmax = pos0 + t1;
            /* scores: query t sees keys j <= pos0 + t */
            for (int64_t j = 0; j < nmax; j++) {
                const float *kj;
#if OPS_X86
                if (f16c) { /* fused: no row conversion */
                    const uint16_t *kh = (const uint16_t *)kc + j * kv_stride + kvo;
                    int64_t q0 = j - pos0 - t0 > 0 ? j - pos0 - t0 : 0;
                    for (int64_t qi = q0; qi < nq; qi++)
                        sc[qi * Tk + j] = dot_f16_f16c(q + ((t0 + qi) * n_head + h) * d, kh, d) * scale;
                    continue;
                }
#endif
                if (kv_f16) {
                    att_cvt(f16c, row, (const uint16_t *)kc + j * kv_stride + kvo, d);
                    kj = row;
                } else {
                    kj = (const float *)kc + j * kv_stride + kvo;
                }
                int64_t q0 = j - pos0 - t0 > 0 ? j - pos0 - t0 : 0;
                for (int64_t qi = q0; qi < nq; qi++)
                    sc[qi * Tk + j] = att_dot(simd, q + ((t0 + qi) * n_head + h) * d, kj, d) * scale;
            }
            for (int64_t qi = 0; qi < nq; qi++) {
                float *o = out + ((t0 + qi) * n_head + h) * d;
                memset(o, 0, (size_t)d * sizeof(float));
                ops_softmax(sc + qi * Tk, pos0 + t0 + qi + 1);
            }
            for (int64_t j = 0; j < nmax; j++) {
                const float *vj;
#if OPS_X86
                if (f16c) {
                    const uint16_t *vh = (const uint16_t *)vc + j * kv_stride + kvo;
                    int64_t q0 = j - pos0 - t0 > 0 ? j - pos0 - t0 : 0;
                    for (int64_t qi = q0; qi < nq; qi++)
                        axpy_f16_f16c(out + ((t0 + qi) * n_head + h) * d, sc[qi * Tk + j], vh, d);
                    continue;
                }
#endif
                if (kv_f16) {
                    att_cvt(f16c, row + d, (const uint16_t *)vc + j * kv_stride + kvo, d);
                    vj = row + d;
                } else {
                    vj = (const float *)vc + j * kv_stride + kvo;
                }
                int64_t q0 = j - pos0 - t0 > 0 ? j - pos0 - t0 : 0;
                for (int64_t qi = q0; qi < nq; qi++)
                    att_axpy(simd, out + ((t0 + qi) * n_head + h) * d, sc[qi * Tk + j], vj, d);
            }
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
#pragma omp parallel for schedule(static) if (N > 65536)
    for (int64_t i = 0; i < N; i++) {
        float z = gate[i];
        out[i] = z / (1.0f + expf(-z)) * up[i];
    }
}

void ops_add(float *y, const float *x, int64_t N) {
    for (int64_t i = 0; i < N; i++) y[i] += x[i];
}

void ops_add_bias(float *y, const float *b, int64_t T, int64_t C) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < C; i++) y[t * C + i] += b[i];
}
