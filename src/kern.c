/* kern: matrix products y[T, n_out] = x[T, n_in] · Wᵀ for W of type F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K.
 *
 * Two implementations of every inner kernel, chosen at run time: a portable scalar one and an AVX2/FMA/F16C one
 * (functions with __attribute__((target(...))), used when the CPU has the features and MOEC_KERN != "scalar"); on
 * CPUs with AVX-512 F/BW/VL/VNNI the decode dot products (Q8_0, Q4_0, F32/F16/BF16) and the float GEMM tile come from
 * kern_avx512.c instead (MOEC_KERN=avx2 keeps the AVX2 ones), and with AVX512_BF16 too, BF16 weights are multiplied
 * natively (VDPBF16PS) by the activations rounded to BF16 once per call (ACT_BF16 below; MOEC_KERN=avx512 keeps the
 * fp32 arithmetic).
 *
 * Float weights (F32/F16/BF16):
 *   T < 3: one dot product per (row, token), weights converted on the fly (memory bound: decode; software prefetch
 *          1 KB ahead).
 *   T >= 3: cache-blocked GEMM. Work items are (block of KB_ROWS rows) x (block of KB_TOK tokens), each owned by one
 *           thread (so y needs no synchronisation). Inside an item, the k dimension is cut in panels of KB_K;
 *           panels are packed (F16/BF16 converted) to contiguous fp32 rows once into a thread buffer; a register-tiled
 *           micro-kernel computes 3 tokens x 4 rows of dot products (12 accumulators) per panel.
 *   BF16 on the avx512bf16 path, any T: the same 3x4 tiling over whole rows, read in place (no panels, no k split),
 *          32 BF16 pairs per VDPBF16PS; so a token gets the same bits in decode and in prefill.
 * Quantized weights: the activations are quantized once per call to kq8 blocks (32 int8 + fp32 scale + the sums
 *   of each 16-half), then integer dot products (maddubs/madd) per weight block, scaled in fp32. One weight row is
 *   dotted with up to 4 tokens at a time so the unpacked weights are reused from registers. Q4_0 instead puts 8 rows
 *   in the vector lanes (nibbles transposed as dwords, activations broadcast; see q4_0_rows8_body), unpacked once
 *   per work item into a panel when the item has more than 4 tokens, with a linear software prefetch.
 * Threads: kern_matmul_multi runs any number of independent products in one OpenMP parallel region (kern_matmul is
 *   one job), only when the call has enough work to pay for it; work items (row blocks x token blocks of every job)
 *   are split into one contiguous range per thread, taken one at a time, and a thread done with its range takes
 *   the others' items. Per-element arithmetic never depends on the item boundaries or the thread count.
 * kern_gemm_acc (C += A·B, fp32, the backward pass): work items are (256 columns of C) x (a group of 96-row blocks),
 *   the groups sized so there are ~3 items per thread. Per k chunk of 256 an item packs its B panel once into 16-column
 *   strips, then per row block packs A into 6-row k-major strips (register transposes) and runs a 6x16 FMA
 *   micro-kernel (12 accumulators, k unrolled by 4). Each element of C gets the same operations in the same order
 *   whatever the items and threads: per chunk a sum over k ascending from 0, added to C.
 * Buffers (quantized activations, panels) are per-thread scratch that grows and is reused: no malloc per call. */
#include "kern.h"
#include "kern_impl.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "util.h"

/* No implicit a*b+c fusion (clang contracts by default; gcc does not in ISO C mode): the scalar parts of a kernel
 * (e.g. the per-token correction sums) must round the same way in every instantiation (1..4 tokens per pass), so a
 * token's result does not depend on how many tokens share its call. Explicit _mm256_fmadd_ps is unaffected. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#if KERN_X86
#include <cpuid.h>
#include <immintrin.h>
#endif

#ifndef KB_K
#define KB_K 1024     /* k panel (floats) */
#endif
#ifndef KB_ROWS
#define KB_ROWS 32    /* rows per work item (float GEMM) */
#endif
#ifndef KB_TOK
#define KB_TOK 256     /* tokens per work item (float GEMM) */
#endif
#define KQ_TOK 64     /* tokens per work item (quantized) */
#define KQ_ROWS 64    /* rows per work item (quantized) */
#define KERN_MAX_RANGES 256 /* work ranges of kern_matmul_multi: its parallel regions use at most this many threads */
#ifndef PAR_MIN_MACS
#define PAR_MIN_MACS 262144.0 /* below this many multiply-adds (512x512 at T=1) a call runs on the calling thread */
#endif

/* ---------------------------------------------------------------------------------------------- */
/* helpers                                                                                        */


static int type_is_quant(ggml_type t) {
    return t == GGML_Q8_0 || t == GGML_Q4_0 || t == GGML_Q4_1 || t == GGML_Q4_K || t == GGML_Q6_K;
}

/* The path of this process (KP_*). The CPU's features and MOEC_KERN (scalar | avx2 | avx512 | avx512bf16: the most
 * the path may use) are read once, at the first call (CPUID traps to the hypervisor in a VM and costs ~20 us, far
 * more than a small matmul; getenv on every call showed in profiles). state: 0 = not probed yet, else path + 1;
 * racing first calls compute and store the same value. */
static int probe_simd(void) {
#if KERN_X86 && defined(__GNUC__)
    static _Atomic int state;
    int v = state;
    if (v == 0) {
        const char *e = getenv("MOEC_KERN");
        int cap = !e || !*e               ? KP_AVX512BF16
                  : !strcmp(e, "scalar") ? KP_SCALAR
                  : !strcmp(e, "avx2")   ? KP_AVX2
                  : !strcmp(e, "avx512") ? KP_AVX512
                                         : KP_AVX512BF16;
        __builtin_cpu_init();
        unsigned a, b, c, d; /* F16C: CPUID leaf 1, ECX bit 29 (not every compiler knows "f16c" as a feature name) */
        int lvl = KP_SCALAR;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __get_cpuid(1, &a, &b, &c, &d) &&
            (c & (1u << 29))) {
            lvl = KP_AVX2;
            /* libgcc reports the AVX-512 features only when the OS saves the opmask and ZMM state (XCR0) */
            if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
                lvl = __builtin_cpu_supports("avx512bf16") ? KP_AVX512BF16 : KP_AVX512;
        }
        v = (lvl < cap ? lvl : cap) + 1;
        state = v;
    }
    return v - 1;
#else
    return KP_SCALAR;
#endif
}

static _Thread_local int tl_force_scalar; /* kern_force_scalar (test hook), per calling thread */

/* The path of a call made on this thread (KP_*). */
static int use_simd(void) { return tl_force_scalar ? KP_SCALAR : probe_simd(); }

int kern_force_scalar(int on) {
    int old = tl_force_scalar;
    tl_force_scalar = on != 0;
    return old;
}

const char *kern_path(void) {
    static const char *const name[] = {"scalar", "avx2", "avx512", "avx512bf16"};
    return name[use_simd()];
}

int kern_row_to_f32(float *dst, const void *src, ggml_type t, int64_t n) {
    if (ggml_row_bytes(t, n) == 0 && n != 0) return moec_wrap_error("kern_row_to_f32");
    switch (t) {
    case GGML_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return 0;
    case GGML_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = moec_f16_to_f32(ld16((const uint8_t *)src + 2 * i));
        return 0;
    case GGML_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = moec_bf16_to_f32(ld16((const uint8_t *)src + 2 * i));
        return 0;
    case GGML_Q8_0: quant_deq_q8_0(src, dst, n); return 0;
    case GGML_Q4_0: quant_deq_q4_0(src, dst, n); return 0;
    case GGML_Q4_1: quant_deq_q4_1(src, dst, n); return 0;
    case GGML_Q4_K: quant_deq_q4_k(src, dst, n); return 0;
    case GGML_Q6_K: quant_deq_q6_k(src, dst, n); return 0;
    default: return moec_set_error("kern: unsupported weight type %s", ggml_type_name(t));
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* activation quantization                                                                        */

/* Round to nearest, ties to even, for |v| < 2^22 (adding and subtracting 1.5*2^23 leaves the integer part; float
 * arithmetic in float precision, FLT_EVAL_METHOD 0, default rounding mode). NaN stays NaN. */
static inline float round_even(float v) {
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    if (!(fabsf(v) < 4194304.0f)) return v; /* large, inf or NaN: left to the clamp */
    float r = v + 12582912.0f;
    return r - 12582912.0f;
#else
    return nearbyintf(v);
#endif
}

/* x[n] (n % 32 == 0) -> n/32 kq8 blocks: d = amax/127, id = 1/d (0 when d = 0), q = clamp(round_even(x*id), ±127)
 * with NaN -> 0 (NaN inputs are ignored by amax). The AVX2 version gives the same bytes. */
static void quantize_act_scalar(kq8 *b, const float *x, int64_t n) {
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            float a = fabsf(x[j]);
            if (a > amax) amax = a;
        }
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int s0 = 0, s1 = 0;
        for (int j = 0; j < 32; j++) {
            float p = x[j] * id;
            float v = round_even(p);
            if (v != v) v = 0.0f;
            if (v < -127.0f) v = -127.0f;
            if (v > 127.0f) v = 127.0f;
            b[i].q[j] = (int8_t)v;
            if (j < 16) s0 += (int)v;
            else s1 += (int)v;
        }
        b[i].d = d;
        b[i].ds = d * (float)(s0 + s1);
        b[i].s[0] = (int16_t)s0;
        b[i].s[1] = (int16_t)s1;
    }
}

#if KERN_X86 && defined(__GNUC__)
__attribute__((target("avx2,fma,f16c"))) static void quantize_act_avx2(kq8 *b, const float *x, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t i = 0; i < n / 32; i++, x += 32) {
        __m256 v[4];
        for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
        /* max(a, m) returns m when a is NaN: NaN inputs are ignored, as in the scalar loop */
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) m = _mm256_max_ps(_mm256_andnot_ps(sign, v[k]), m);
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m256 idv = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            __m256 p = _mm256_round_ps(_mm256_mul_ps(v[k], idv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            p = _mm256_and_ps(p, _mm256_cmp_ps(p, p, _CMP_ORD_Q)); /* NaN -> 0 */
            p = _mm256_min_ps(_mm256_max_ps(p, lo), hi);
            q[k] = _mm256_cvtps_epi32(p);
        }
        __m256i s01 = _mm256_add_epi32(q[0], q[1]), s23 = _mm256_add_epi32(q[2], q[3]);
        __m256i q8 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)b[i].q, _mm256_permutevar8x32_epi32(q8, perm));
        /* the two half sums: 8 lanes each, exact in int32 */
        __m256i hs = _mm256_hadd_epi32(s01, s23); /* [s01 pairs lo, s23 pairs lo, s01 pairs hi, s23 pairs hi] */
        hs = _mm256_hadd_epi32(hs, hs);
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(hs), _mm256_extracti128_si256(hs, 1));
        int s0 = _mm_cvtsi128_si32(h), s1 = _mm_extract_epi32(h, 1);
        b[i].d = d;
        b[i].ds = d * (float)(s0 + s1);
        b[i].s[0] = (int16_t)s0;
        b[i].s[1] = (int16_t)s1;
    }
}
#endif

static void quantize_act(int simd, kq8 *dst, const float *x, int64_t n) {
#if KERN_X86 && defined(__GNUC__)
    if (simd) {
        quantize_act_avx2(dst, x, n);
        return;
    }
#endif
    (void)simd;
    quantize_act_scalar(dst, x, n);
}

void kern_quantize_act(void *dst, const float *x, int64_t n) { quantize_act(use_simd(), dst, x, n); }

size_t kern_act_bytes(int64_t n) { return (size_t)(n / 32) * sizeof(kq8); }

/* ---------------------------------------------------------------------------------------------- */
/* scalar kernels                                                                                 */

/* dot of a weight row of type t (n elements) with fp32 x */
static float dot_f_scalar(const void *w, ggml_type t, const float *x, int64_t n) {
    const uint8_t *p = w;
    double s = 0.0;
    float acc[8] = {0};
    if (t == GGML_F32) {
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) {
                float v;
                memcpy(&v, p + 4 * (i + j), 4);
                acc[j] += v * x[i + j];
            }
        for (; i < n; i++) {
            float v;
            memcpy(&v, p + 4 * i, 4);
            acc[0] += v * x[i];
        }
    } else {
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) {
                uint16_t h = ld16(p + 2 * (i + j));
                acc[j] += (t == GGML_F16 ? moec_f16_to_f32(h) : moec_bf16_to_f32(h)) * x[i + j];
            }
        for (; i < n; i++) {
            uint16_t h = ld16(p + 2 * i);
            acc[0] += (t == GGML_F16 ? moec_f16_to_f32(h) : moec_bf16_to_f32(h)) * x[i];
        }
    }
    for (int j = 0; j < 8; j++) s += acc[j];
    return (float)s;
}

/* dot of one quantized weight row (nb32 = n/32 blocks of 32) with nt (<= 4) quantized activation rows */
static void dot_q_scalar(float *out, const void *w, ggml_type t, const kq8 *const *a, int nt, int64_t nb32) {
    const uint8_t *p = w;
    for (int i = 0; i < nt; i++) {
        float acc = 0.0f;
        if (t == GGML_Q8_0) {
            for (int64_t b = 0; b < nb32; b++) {
                const uint8_t *blk = p + b * 34;
                int s = 0;
                for (int j = 0; j < 32; j++) s += (int8_t)blk[2 + j] * a[i][b].q[j];
                acc += (float)s * (moec_f16_to_f32(ld16(blk)) * a[i][b].d);
            }
        } else if (t == GGML_Q4_0) {
            for (int64_t b = 0; b < nb32; b++) {
                const uint8_t *blk = p + b * 18;
                int s = 0;
                for (int j = 0; j < 16; j++)
                    s += ((blk[2 + j] & 15) - 8) * a[i][b].q[j] + ((blk[2 + j] >> 4) - 8) * a[i][b].q[j + 16];
                acc += (float)s * (moec_f16_to_f32(ld16(blk)) * a[i][b].d);
            }
        } else if (t == GGML_Q4_1) {
            for (int64_t b = 0; b < nb32; b++) {
                const uint8_t *blk = p + b * 20;
                int s = 0;
                for (int j = 0; j < 16; j++) s += (blk[4 + j] & 15) * a[i][b].q[j] + (blk[4 + j] >> 4) * a[i][b].q[j + 16];
                acc += (float)s * (moec_f16_to_f32(ld16(blk)) * a[i][b].d) + moec_f16_to_f32(ld16(blk + 2)) * a[i][b].ds;
            }
        } else if (t == GGML_Q4_K) {
            for (int64_t sb = 0; sb < nb32 / 8; sb++) {
                const uint8_t *blk = p + sb * 144, *qs = blk + 16;
                float d = moec_f16_to_f32(ld16(blk)), dmin = moec_f16_to_f32(ld16(blk + 2));
                for (int j = 0; j < 8; j++) {
                    const kq8 *ab = &a[i][sb * 8 + j];
                    uint8_t sc, m;
                    quant_q4_k_scale_min(blk + 4, j, &sc, &m);
                    int s = 0;
                    for (int l = 0; l < 32; l++) {
                        uint8_t byte = qs[32 * (j / 2) + l];
                        s += (j & 1 ? byte >> 4 : byte & 15) * ab->q[l];
                    }
                    acc += ab->d * (d * sc * (float)s - dmin * m * (float)(ab->s[0] + ab->s[1]));
                }
            }
        } else { /* Q6_K */
            for (int64_t sb = 0; sb < nb32 / 8; sb++) {
                const uint8_t *blk = p + sb * 210;
                const int8_t *sc = (const int8_t *)(blk + 192);
                float d = moec_f16_to_f32(ld16(blk + 208));
                for (int h = 0; h < 2; h++) {
                    const uint8_t *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
                    for (int k = 0; k < 4; k++) {
                        const kq8 *ab = &a[i][sb * 8 + 4 * h + k];
                        int s[2] = {0, 0};
                        for (int l = 0; l < 32; l++) {
                            uint8_t lb = ql[l + 32 * (k & 1)];
                            int q = ((k < 2 ? lb & 15 : lb >> 4) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
                            s[l / 16] += q * ab->q[l];
                        }
                        acc += d * ab->d * (float)(sc[8 * h + 2 * k] * s[0] + sc[8 * h + 2 * k + 1] * s[1]);
                    }
                }
            }
        }
        out[i] = acc;
    }
}

/* fp32 tile: y[t][o] (+)= dot(x[t][0..kc), w[o][0..kc)) for mt tokens, nr rows */
static void tile_f32_scalar(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t ldw, int mt,
                            int nr, int64_t kc, int accumulate) {
    for (int t = 0; t < mt; t++)
        for (int o = 0; o < nr; o++) {
            float acc[8] = {0};
            const float *xt = x + t * ldx, *wo = w + o * ldw;
            int64_t k = 0;
            for (; k + 8 <= kc; k += 8)
                for (int j = 0; j < 8; j++) acc[j] += xt[k + j] * wo[k + j];
            float s = 0.0f;
            for (; k < kc; k++) s += xt[k] * wo[k];
            for (int j = 0; j < 8; j++) s += acc[j];
            if (accumulate) y[t * ldy + o] += s;
            else y[t * ldy + o] = s;
        }
}

/* ---------------------------------------------------------------------------------------------- */
/* AVX2 kernels                                                                                   */

#if KERN_X86 && defined(__GNUC__)
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static inline __m256 load8_f16(const uint8_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
AVX2 static inline __m256 load8_bf16(const uint8_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
AVX2 static inline float f16s(const uint8_t *p) { return _cvtsh_ss(ld16(p)); }


AVX2 static inline __attribute__((always_inline)) float dot_f_avx2(const void *w, ggml_type t, const float *x,
                                                                   int64_t n) {
    const uint8_t *p = w;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t i = 0;
    float tail = 0.0f;
    if (t == GGML_F32) {
        for (; i + 32 <= n; i += 32) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(p + 4 * i)), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(p + 4 * i + 32)), _mm256_loadu_ps(x + i + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(p + 4 * i + 64)), _mm256_loadu_ps(x + i + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(p + 4 * i + 96)), _mm256_loadu_ps(x + i + 24), a3);
        }
        for (; i + 8 <= n; i += 8)
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(p + 4 * i)), _mm256_loadu_ps(x + i), a0);
        for (; i < n; i++) {
            float v;
            memcpy(&v, p + 4 * i, 4);
            tail += v * x[i];
        }
    } else if (t == GGML_F16) {
        for (; i + 32 <= n; i += 32) {
            KPF((uintptr_t)p + 2 * i + KPF_DIST);
            a0 = _mm256_fmadd_ps(load8_f16(p + 2 * i), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(load8_f16(p + 2 * i + 16), _mm256_loadu_ps(x + i + 8), a1);
            a2 = _mm256_fmadd_ps(load8_f16(p + 2 * i + 32), _mm256_loadu_ps(x + i + 16), a2);
            a3 = _mm256_fmadd_ps(load8_f16(p + 2 * i + 48), _mm256_loadu_ps(x + i + 24), a3);
        }
        for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load8_f16(p + 2 * i), _mm256_loadu_ps(x + i), a0);
        for (; i < n; i++) tail += _cvtsh_ss(ld16(p + 2 * i)) * x[i];
    } else {
        for (; i + 32 <= n; i += 32) {
            KPF((uintptr_t)p + 2 * i + KPF_DIST);
            a0 = _mm256_fmadd_ps(load8_bf16(p + 2 * i), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(load8_bf16(p + 2 * i + 16), _mm256_loadu_ps(x + i + 8), a1);
            a2 = _mm256_fmadd_ps(load8_bf16(p + 2 * i + 32), _mm256_loadu_ps(x + i + 16), a2);
            a3 = _mm256_fmadd_ps(load8_bf16(p + 2 * i + 48), _mm256_loadu_ps(x + i + 24), a3);
        }
        for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load8_bf16(p + 2 * i), _mm256_loadu_ps(x + i), a0);
        for (; i < n; i++) tail += moec_bf16_to_f32(ld16(p + 2 * i)) * x[i];
    }
    return hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))) + tail;
}

/* Register tile of MT tokens x NR rows over kc (the k tail is done in scalar). Inlined with constant MT/NR. */
AVX2 static inline __attribute__((always_inline)) void tile_f32_avx2_body(float *y, int64_t ldy, const float *x,
                                                                           int64_t ldx, const float *w, int64_t ldw,
                                                                           int MT, int NR, int64_t kc,
                                                                           int accumulate) {
    __m256 acc[3][4];
    _Pragma("GCC unroll 4")
    for (int t = 0; t < MT; t++)
        _Pragma("GCC unroll 4")
        for (int o = 0; o < NR; o++) acc[t][o] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 xv[3];
        _Pragma("GCC unroll 4")
        for (int t = 0; t < MT; t++) xv[t] = _mm256_loadu_ps(x + t * ldx + k);
        _Pragma("GCC unroll 4")
        for (int o = 0; o < NR; o++) {
            __m256 wv = _mm256_loadu_ps(w + o * ldw + k);
            _Pragma("GCC unroll 4")
            for (int t = 0; t < MT; t++) acc[t][o] = _mm256_fmadd_ps(xv[t], wv, acc[t][o]);
        }
    }
    _Pragma("GCC unroll 4")
    for (int t = 0; t < MT; t++)
        _Pragma("GCC unroll 4")
        for (int o = 0; o < NR; o++) {
            float s = hsum8(acc[t][o]);
            for (int64_t kk = k; kk < kc; kk++) s += x[t * ldx + kk] * w[o * ldw + kk];
            if (accumulate) y[t * ldy + o] += s;
            else y[t * ldy + o] = s;
        }
}

AVX2 static void tile_f32_avx2_3x4(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t ldw,
                                   int64_t kc, int accumulate) {
    tile_f32_avx2_body(y, ldy, x, ldx, w, ldw, 3, 4, kc, accumulate);
}

AVX2 static void tile_f32_avx2(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t ldw, int mt,
                               int nr, int64_t kc, int accumulate) {
    if (mt == 3 && nr == 4) {
        tile_f32_avx2_3x4(y, ldy, x, ldx, w, ldw, kc, accumulate);
        return;
    }
    /* edge tiles: one token at a time, up to 4 rows */
    for (int t = 0; t < mt; t++) {
        switch (nr) {
        case 4: tile_f32_avx2_body(y + t * ldy, ldy, x + t * ldx, ldx, w, ldw, 1, 4, kc, accumulate); break;
        case 3: tile_f32_avx2_body(y + t * ldy, ldy, x + t * ldx, ldx, w, ldw, 1, 3, kc, accumulate); break;
        case 2: tile_f32_avx2_body(y + t * ldy, ldy, x + t * ldx, ldx, w, ldw, 1, 2, kc, accumulate); break;
        default: tile_f32_avx2_body(y + t * ldy, ldy, x + t * ldx, ldx, w, ldw, 1, 1, kc, accumulate); break;
        }
    }
}

/* Convert rows [0, nr) x k [k0, k0+kc) of a F16/BF16 matrix (row stride rb bytes) into dst (stride kc floats). */
AVX2 static void panel_to_f32_avx2(float *dst, const uint8_t *w, size_t rb, ggml_type t, int nr, int64_t k0,
                                   int64_t kc) {
    for (int o = 0; o < nr; o++) {
        const uint8_t *p = w + (size_t)o * rb + 2 * k0;
        float *d = dst + o * kc;
        int64_t k = 0;
        if (t == GGML_F16) {
            for (; k + 8 <= kc; k += 8) _mm256_storeu_ps(d + k, load8_f16(p + 2 * k));
            for (; k < kc; k++) d[k] = _cvtsh_ss(ld16(p + 2 * k));
        } else {
            for (; k + 8 <= kc; k += 8) _mm256_storeu_ps(d + k, load8_bf16(p + 2 * k));
            for (; k < kc; k++) d[k] = moec_bf16_to_f32(ld16(p + 2 * k));
        }
    }
}

/* Sum of the 8 int32 lanes of madd(maddubs(u, s), 1) as floats: u unsigned bytes, s signed bytes. */
AVX2 static inline __m256 mul_sum_us8(__m256i u, __m256i s) {
    __m256i p16 = _mm256_maddubs_epi16(u, s);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

AVX2 static inline __attribute__((always_inline)) void dot_q_avx2_body(float *out, const uint8_t *p, ggml_type t,
                                                                        const kq8 *const *a, int NT, int64_t nb32) {
    __m256 acc[4], acc2[4]; /* two chains per token: the FMA latency, not throughput, bounds a single chain */
    float corr[4];
    _Pragma("GCC unroll 4")
    for (int i = 0; i < NT; i++) acc[i] = acc2[i] = _mm256_setzero_ps(), corr[i] = 0.0f;
    const __m256i m4 = _mm256_set1_epi8(15);
    if (t == GGML_Q8_0) {
        /* blocks in pairs, even blocks into acc, odd into acc2: two independent FMA chains (one chain is bound by the
         * FMA latency, ~5 cycles per block, below the memory bandwidth at T = 1) */
        int64_t b = 0;
        for (; b + 2 <= nb32; b += 2) {
            const uint8_t *blk = p + b * 34;
            KPF((uintptr_t)blk + KPF_QDIST);
            KPF((uintptr_t)blk + KPF_QDIST + 64);
            __m256i wq0 = _mm256_loadu_si256((const __m256i *)(blk + 2)),
                    wq1 = _mm256_loadu_si256((const __m256i *)(blk + 36));
            __m256i wa0 = _mm256_abs_epi8(wq0), wa1 = _mm256_abs_epi8(wq1);
            float dw0 = f16s(blk), dw1 = f16s(blk + 34);
            _Pragma("GCC unroll 4")
            for (int i = 0; i < NT; i++) {
                __m256i aq0 = _mm256_loadu_si256((const __m256i *)a[i][b].q),
                        aq1 = _mm256_loadu_si256((const __m256i *)a[i][b + 1].q);
                __m256 s0 = mul_sum_us8(wa0, _mm256_sign_epi8(aq0, wq0)), s1 = mul_sum_us8(wa1, _mm256_sign_epi8(aq1, wq1));
                acc[i] = _mm256_fmadd_ps(s0, _mm256_set1_ps(dw0 * a[i][b].d), acc[i]);
                acc2[i] = _mm256_fmadd_ps(s1, _mm256_set1_ps(dw1 * a[i][b + 1].d), acc2[i]);
            }
        }
        for (; b < nb32; b++) {
            const uint8_t *blk = p + b * 34;
            __m256i wq = _mm256_loadu_si256((const __m256i *)(blk + 2));
            __m256i wa = _mm256_abs_epi8(wq);
            float dw = f16s(blk);
            _Pragma("GCC unroll 4")
            for (int i = 0; i < NT; i++) {
                __m256i aq = _mm256_loadu_si256((const __m256i *)a[i][b].q);
                __m256 s = mul_sum_us8(wa, _mm256_sign_epi8(aq, wq));
                acc[i] = _mm256_fmadd_ps(s, _mm256_set1_ps(dw * a[i][b].d), acc[i]);
            }
        }
    } else if (t == GGML_Q4_1) { /* x = d*q + m, q in 0..15: d*da*Σq·a + m*da*Σa */
        for (int64_t b = 0; b < nb32; b++) {
            const uint8_t *blk = p + b * 20;
            if (b % 3 == 0) KPF((uintptr_t)blk + KPF_QDIST);
            __m128i v = _mm_loadu_si128((const __m128i *)(blk + 4));
            __m256i wu = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), m4);
            float dw = f16s(blk), mw = f16s(blk + 2);
            _Pragma("GCC unroll 4")
            for (int i = 0; i < NT; i++) {
                __m256i aq = _mm256_loadu_si256((const __m256i *)a[i][b].q);
                acc[i] = _mm256_fmadd_ps(mul_sum_us8(wu, aq), _mm256_set1_ps(dw * a[i][b].d), acc[i]);
                corr[i] -= mw * a[i][b].ds;
            }
        }
    } else if (t == GGML_Q4_K) {
        for (int64_t sb = 0; sb < nb32 / 8; sb++) {
            const uint8_t *blk = p + sb * 144;
            for (int l = 0; l < 3; l++) KPF((uintptr_t)blk + KPF_QDIST + 64 * l);
            float d = f16s(blk), dmin = f16s(blk + 2);
            /* the 8 six-bit scales and mins, branch-free on 32-bit words (layout: quant_q4_k_scale_min) */
            uint32_t u[3], scw[2], mnw[2];
            memcpy(u, blk + 4, 12);
            scw[0] = u[0] & 0x3f3f3f3fu;
            mnw[0] = u[1] & 0x3f3f3f3fu;
            scw[1] = (u[2] & 0x0f0f0f0fu) | ((u[0] >> 2) & 0x30303030u);
            mnw[1] = ((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 2) & 0x30303030u);
            uint8_t sc[8], mn[8];
            memcpy(sc, scw, 8);
            memcpy(mn, mnw, 8);
            _Pragma("GCC unroll 4")
            for (int g = 0; g < 4; g++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * g));
                __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                float d0 = d * sc[2 * g], d1 = d * sc[2 * g + 1], m0 = dmin * mn[2 * g], m1 = dmin * mn[2 * g + 1];
                _Pragma("GCC unroll 4")
                for (int i = 0; i < NT; i++) {
                    const kq8 *b0 = &a[i][sb * 8 + 2 * g], *b1 = b0 + 1;
                    __m256 s0 = mul_sum_us8(lo, _mm256_loadu_si256((const __m256i *)b0->q));
                    __m256 s1 = mul_sum_us8(hi, _mm256_loadu_si256((const __m256i *)b1->q));
                    acc[i] = _mm256_fmadd_ps(s0, _mm256_set1_ps(d0 * b0->d), acc[i]);
                    acc2[i] = _mm256_fmadd_ps(s1, _mm256_set1_ps(d1 * b1->d), acc2[i]);
                    corr[i] += m0 * b0->ds + m1 * b1->ds;
                }
            }
        }
    } else { /* Q6_K */
        const __m256i m2 = _mm256_set1_epi8(3);
        for (int64_t sb = 0; sb < nb32 / 8; sb++) {
            const uint8_t *blk = p + sb * 210;
            const int8_t *sc = (const int8_t *)(blk + 192);
            float d = f16s(blk + 208);
            for (int l = 0; l < 4; l++) KPF((uintptr_t)blk + KPF_QDIST + 64 * l);
            for (int h = 0; h < 2; h++) {
                __m256i l0 = _mm256_loadu_si256((const __m256i *)(blk + 64 * h));
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(blk + 64 * h + 32));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * h));
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
                _Pragma("GCC unroll 4")
                for (int k = 0; k < 4; k++) {
                    int s0 = sc[8 * h + 2 * k], s1 = sc[8 * h + 2 * k + 1];
                    __m256i scv = _mm256_set_m128i(_mm_set1_epi16((short)s1), _mm_set1_epi16((short)s0));
                    _Pragma("GCC unroll 4")
                    for (int i = 0; i < NT; i++) {
                        const kq8 *ab = &a[i][sb * 8 + 4 * h + k];
                        __m256i p16 = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256((const __m256i *)ab->q));
                        __m256 s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, scv));
                        float da = d * ab->d;
                        if (k & 1) acc2[i] = _mm256_fmadd_ps(s, _mm256_set1_ps(da), acc2[i]);
                        else acc[i] = _mm256_fmadd_ps(s, _mm256_set1_ps(da), acc[i]);
                        corr[i] += da * (float)(32 * (s0 * ab->s[0] + s1 * ab->s[1]));
                    }
                }
            }
        }
    }
    _Pragma("GCC unroll 4")
    for (int i = 0; i < NT; i++) out[i] = hsum8(_mm256_add_ps(acc[i], acc2[i])) - corr[i];
}

/* Rows [o0, o1) of W (row stride rb) dotted with NT token rows: y[i*ldy + o] = (or +=) the dot of row o, token i. */
AVX2 static inline __attribute__((always_inline)) void dot_q_rows_body(float *y, int64_t ldy, int accu, const uint8_t *w,
                                                                        size_t rb, ggml_type t, const kq8 *const *a,
                                                                        int NT, int64_t o0, int64_t o1, int64_t nb32) {
    for (int64_t o = o0; o < o1; o++) {
        float r[4];
        dot_q_avx2_body(r, w + (size_t)o * rb, t, a, NT, nb32);
        kern_put_row(y, ldy, accu, o, r, NT);
    }
}

/* Q4_0, 8 rows per pass with the rows in the vector lanes (no horizontal sums, one vector of scales): per block,
 * the 16 nibble bytes of 8 rows are transposed as dwords (register j, lane r = bytes 4j..4j+3 of row r, i.e.
 * elements 4j..4j+3 in the low nibbles and 16+4j.. in the high ones); each nibble vector meets the same 4 activation
 * bytes broadcast to every lane (maddubs: unsigned nibbles 0..15 x signed activations); the 8 products per 16-bit
 * lane are summed in int16 (|sum| <= 8*2*15*127 = 30480), then madd to int32, minus 8 * (sum of the activations)
 * (the nibble offset), converted and scaled by dw[r] * da. Rows past o1 repeat the last row (never stored). Every
 * row's result depends only on its own data, so any row grouping or thread count gives the same bits. */
/* The 8 rows rp[0..7] at block offset off: v[j] (lane r = nibble bytes 4j..4j+3 of row r) and their 8 scales. */
AVX2 static inline __attribute__((always_inline)) void q4_0_load8(const uint8_t *const *rp, size_t off, __m256i v[4],
                                                                   __m256 *dwv) {
#define LD2(r0, r1)                                                                                                    \
    _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(rp[r0] + off + 2))),             \
                            _mm_loadu_si128((const __m128i *)(rp[r1] + off + 2)), 1)
    __m256i y04 = LD2(0, 4), y15 = LD2(1, 5), y26 = LD2(2, 6), y37 = LD2(3, 7);
#undef LD2
    __m256i t0 = _mm256_unpacklo_epi32(y04, y15), t1 = _mm256_unpackhi_epi32(y04, y15);
    __m256i t2 = _mm256_unpacklo_epi32(y26, y37), t3 = _mm256_unpackhi_epi32(y26, y37);
    v[0] = _mm256_unpacklo_epi64(t0, t2);
    v[1] = _mm256_unpackhi_epi64(t0, t2);
    v[2] = _mm256_unpacklo_epi64(t1, t3);
    v[3] = _mm256_unpackhi_epi64(t1, t3);
    __m128i sc = _mm_setr_epi16((short)ld16(rp[0] + off), (short)ld16(rp[1] + off), (short)ld16(rp[2] + off),
                                (short)ld16(rp[3] + off), (short)ld16(rp[4] + off), (short)ld16(rp[5] + off),
                                (short)ld16(rp[6] + off), (short)ld16(rp[7] + off));
    *dwv = _mm256_cvtph_ps(sc);
}

/* One block of 8 rows (nibbles lo[j], hi[j], j = 0..3, scales dwv) times NT tokens' block b, into acc[]. The
 * arithmetic of every lane is fixed (the same in both callers below), so the panel and the direct path agree. */
#define Q4_0_BLOCK(LO, HI)                                                                                             \
    do {                                                                                                               \
        __m256i p[4];                                                                                                  \
        _Pragma("GCC unroll 4") for (int i = 0; i < NT; i++) p[i] = _mm256_setzero_si256();                            \
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {                                                          \
            __m256i lo = (LO), hi = (HI);                                                                              \
            _Pragma("GCC unroll 4") for (int i = 0; i < NT; i++) {                                                     \
                int32_t al, ah;                                                                                        \
                memcpy(&al, a[i][b].q + 4 * j, 4);                                                                     \
                memcpy(&ah, a[i][b].q + 16 + 4 * j, 4);                                                                \
                p[i] = _mm256_add_epi16(p[i], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(al)));                        \
                p[i] = _mm256_add_epi16(p[i], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(ah)));                        \
            }                                                                                                          \
        }                                                                                                              \
        _Pragma("GCC unroll 4") for (int i = 0; i < NT; i++) {                                                         \
            const kq8 *ab = &a[i][b];                                                                                  \
            int32_t s01; /* the int16 pair s[0], s[1]: madd with 8s gives 8 * (s[0] + s[1]) in every lane */           \
            memcpy(&s01, ab->s, 4);                                                                                    \
            __m256i is = _mm256_sub_epi32(_mm256_madd_epi16(p[i], ones),                                               \
                                          _mm256_madd_epi16(_mm256_set1_epi32(s01), eights));                          \
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(dwv, _mm256_set1_ps(ab->d)), acc[i]);       \
        }                                                                                                              \
    } while (0)

AVX2 static inline __attribute__((always_inline)) void q4_0_store8(float *y, int64_t ldy, int accu, const __m256 *acc,
                                                                    int NT, int nr) {
    _Pragma("GCC unroll 4")
    for (int i = 0; i < NT; i++) {
        float out[8];
        _mm256_storeu_ps(out, acc[i]);
        float *yo = y + i * ldy;
        if (accu)
            for (int r = 0; r < nr; r++) yo[r] += out[r];
        else
            for (int r = 0; r < nr; r++) yo[r] = out[r];
    }
}

/* Q4_0, 8 rows per pass with the rows in the vector lanes (no horizontal sums, one vector of scales): per block,
 * the 16 nibble bytes of 8 rows are transposed as dwords (register j, lane r = bytes 4j..4j+3 of row r, i.e.
 * elements 4j..4j+3 in the low nibbles and 16+4j.. in the high ones); each nibble vector meets the same 4 activation
 * bytes broadcast to every lane (maddubs: unsigned nibbles 0..15 x signed activations); the 8 products per 16-bit
 * lane are summed in int16 (|sum| <= 8*2*15*127 = 30480), then madd to int32, minus 8 * (sum of the activations)
 * (the nibble offset), converted and scaled by dw[r] * da. Rows past o1 repeat the last row (never stored). Every
 * row's result depends only on its own data, so any row grouping or thread count gives the same bits. */
AVX2 static inline __attribute__((always_inline)) void q4_0_rows8_body(float *y, int64_t ldy, int accu,
                                                                        const uint8_t *w, size_t rb,
                                                                        const kq8 *const *a, int NT, int64_t o0,
                                                                        int64_t o1, int64_t nb32) {
    const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1), eights = _mm256_set1_epi16(8);
    for (int64_t og = o0; og < o1; og += 8) {
        const int nr = o1 - og < 8 ? (int)(o1 - og) : 8;
        const uint8_t *rp[8];
        for (int r = 0; r < 8; r++) rp[r] = w + (size_t)(og + (r < nr ? r : nr - 1)) * rb;
        __m256 acc[4];
        _Pragma("GCC unroll 4")
        for (int i = 0; i < NT; i++) acc[i] = _mm256_setzero_ps();
        /* The 8 rows are read as 8 short streams (a 1024-wide row is 9 cache lines), which the hardware prefetcher
         * does not follow well: prefetch the rows two groups ahead (contiguous, 8*rb bytes per group) as one linear
         * stream, 144 bytes per block step. prefetch never faults; the address is formed as an integer. */
        const uintptr_t pf = (uintptr_t)w + (uintptr_t)(og + 16) * rb;
        for (int64_t b = 0; b < nb32; b++) {
            __m256i v[4];
            __m256 dwv;
            const uintptr_t pb = pf + (uintptr_t)b * 144;
            _mm_prefetch((const char *)pb, _MM_HINT_T0);
            _mm_prefetch((const char *)(pb + 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(pb + 128), _MM_HINT_T0);
            q4_0_load8(rp, (size_t)b * 18, v, &dwv);
            Q4_0_BLOCK(_mm256_and_si256(v[j], m4), _mm256_and_si256(_mm256_srli_epi16(v[j], 4), m4));
        }
        q4_0_store8(y + og, ldy, accu, acc, NT, nr);
    }
}

/* Q4_0 panel of rows [o0, o1): per group of 8 rows and block, the unpacked nibble vectors lo0, hi0, .. lo3, hi3 and
 * the 8 scales (288 bytes), built once per work item and reused by all its tokens. */
#define Q4P_BYTES 288
AVX2 static void q4_0_pack(uint8_t *panel, const uint8_t *w, size_t rb, int64_t o0, int64_t o1, int64_t nb32) {
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int64_t og = o0; og < o1; og += 8) {
        const int nr = o1 - og < 8 ? (int)(o1 - og) : 8;
        const uint8_t *rp[8];
        for (int r = 0; r < 8; r++) rp[r] = w + (size_t)(og + (r < nr ? r : nr - 1)) * rb;
        uint8_t *pg = panel + (size_t)((og - o0) / 8) * (size_t)nb32 * Q4P_BYTES;
        for (int64_t b = 0; b < nb32; b++) {
            __m256i v[4];
            __m256 dwv;
            q4_0_load8(rp, (size_t)b * 18, v, &dwv);
            uint8_t *pb = pg + (size_t)b * Q4P_BYTES;
            for (int j = 0; j < 4; j++) {
                _mm256_store_si256((__m256i *)(pb + 64 * j), _mm256_and_si256(v[j], m4));
                _mm256_store_si256((__m256i *)(pb + 64 * j + 32), _mm256_and_si256(_mm256_srli_epi16(v[j], 4), m4));
            }
            _mm256_store_ps((float *)(pb + 256), dwv);
        }
    }
}

AVX2 static inline __attribute__((always_inline)) void q4_0_panel_body(float *y, int64_t ldy, int accu,
                                                                        const uint8_t *panel, const kq8 *const *a,
                                                                        int NT, int64_t o0, int64_t o1, int64_t nb32) {
    const __m256i ones = _mm256_set1_epi16(1), eights = _mm256_set1_epi16(8);
    for (int64_t og = o0; og < o1; og += 8) {
        const int nr = o1 - og < 8 ? (int)(o1 - og) : 8;
        const uint8_t *pg = panel + (size_t)((og - o0) / 8) * (size_t)nb32 * Q4P_BYTES;
        __m256 acc[4];
        _Pragma("GCC unroll 4")
        for (int i = 0; i < NT; i++) acc[i] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb32; b++) {
            const uint8_t *pb = pg + (size_t)b * Q4P_BYTES;
            const __m256 dwv = _mm256_load_ps((const float *)(pb + 256));
            Q4_0_BLOCK(_mm256_load_si256((const __m256i *)(pb + 64 * j)),
                       _mm256_load_si256((const __m256i *)(pb + 64 * j + 32)));
        }
        q4_0_store8(y + og, ldy, accu, acc, NT, nr);
    }
}

/* tokens [0, nt) (nt any) of rows [o0, o1) from a packed panel, 4 tokens per pass */
AVX2 static void q4_0_panel_rows(float *y, int64_t ldy, int accu, const uint8_t *panel, const kq8 *const *a, int nt,
                                 int64_t o0, int64_t o1, int64_t nb32) {
    switch (nt) {
    case 4: q4_0_panel_body(y, ldy, accu, panel, a, 4, o0, o1, nb32); break;
    case 3: q4_0_panel_body(y, ldy, accu, panel, a, 3, o0, o1, nb32); break;
    case 2: q4_0_panel_body(y, ldy, accu, panel, a, 2, o0, o1, nb32); break;
    default: q4_0_panel_body(y, ldy, accu, panel, a, 1, o0, o1, nb32); break;
    }
}

AVX2 static void dot_q_rows_avx2(float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, ggml_type t,
                                 const kq8 *const *a, int nt, int64_t o0, int64_t o1, int64_t nb32) {
    switch (t) {
    case GGML_Q8_0: KERN_DQ_NT(dot_q_rows_body, GGML_Q8_0); break;
    case GGML_Q4_0:
        switch (nt) {
        case 4: q4_0_rows8_body(y, ldy, accu, w, rb, a, 4, o0, o1, nb32); break;
        case 3: q4_0_rows8_body(y, ldy, accu, w, rb, a, 3, o0, o1, nb32); break;
        case 2: q4_0_rows8_body(y, ldy, accu, w, rb, a, 2, o0, o1, nb32); break;
        default: q4_0_rows8_body(y, ldy, accu, w, rb, a, 1, o0, o1, nb32); break;
        }
        break;
    case GGML_Q4_1: KERN_DQ_NT(dot_q_rows_body, GGML_Q4_1); break;
    case GGML_Q4_K: KERN_DQ_NT(dot_q_rows_body, GGML_Q4_K); break;
    default: KERN_DQ_NT(dot_q_rows_body, GGML_Q6_K); break;
    }
}
#endif

/* ---------------------------------------------------------------------------------------------- */
/* dispatch                                                                                       */

/* Rows [o0, o1) of a float W (row stride rb) x tokens [t0, t1) of x (row stride ldx): y[t*ldy + o] (+)= dot. */
static void dot_f_rows_scalar(float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, ggml_type t,
                              const float *x, int64_t ldx, int64_t n, int64_t o0, int64_t o1, int64_t t0, int64_t t1) {
    KERN_DF_ROWS(dot_f_scalar)
}
#if KERN_X86 && defined(__GNUC__)
AVX2 static void dot_f_rows_avx2(float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, ggml_type t,
                                 const float *x, int64_t ldx, int64_t n, int64_t o0, int64_t o1, int64_t t0,
                                 int64_t t1) {
    KERN_DF_ROWS(dot_f_avx2)
}
#endif
static void dot_f_rows(int simd, float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, ggml_type t,
                       const float *x, int64_t ldx, int64_t n, int64_t o0, int64_t o1, int64_t t0, int64_t t1) {
#if KERN_X86 && defined(__GNUC__)
    if (simd >= KP_AVX512) {
        kern_avx512_dot_f_rows(y, ldy, accu, w, rb, t, x, ldx, n, o0, o1, t0, t1);
        return;
    }
    if (simd) {
        dot_f_rows_avx2(y, ldy, accu, w, rb, t, x, ldx, n, o0, o1, t0, t1);
        return;
    }
#endif
    (void)simd;
    dot_f_rows_scalar(y, ldy, accu, w, rb, t, x, ldx, n, o0, o1, t0, t1);
}

/* Rows [o0, o1) of a quantized W (row stride rb) with nt (<= 4) quantized token rows a[i]:
 * y[i*ldy + o] = (accu: +=) dot(W row o, token i). */
static void dot_q_rows(int simd, float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, ggml_type t,
                       const kq8 *const *a, int nt, int64_t o0, int64_t o1, int64_t nb32) {
#if KERN_X86 && defined(__GNUC__)
    if (simd >= KP_AVX512 && kern_avx512_dot_q_ok(t)) {
        kern_avx512_dot_q_rows(y, ldy, accu, w, rb, t, a, nt, o0, o1, nb32);
        return;
    }
    if (simd) {
        dot_q_rows_avx2(y, ldy, accu, w, rb, t, a, nt, o0, o1, nb32);
        return;
    }
#endif
    (void)simd;
    for (int64_t o = o0; o < o1; o++) {
        float r[4];
        dot_q_scalar(r, w + (size_t)o * rb, t, a, nt, nb32);
        kern_put_row(y, ldy, accu, o, r, nt);
    }
}

static void tile_f32(int simd, float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t ldw, int mt,
                     int nr, int64_t kc, int accumulate) {
#if KERN_X86 && defined(__GNUC__)
    if (simd >= KP_AVX512) {
        kern_avx512_tile_f32(y, ldy, x, ldx, w, ldw, mt, nr, kc, accumulate);
        return;
    }
    if (simd) {
        tile_f32_avx2(y, ldy, x, ldx, w, ldw, mt, nr, kc, accumulate);
        return;
    }
#endif
    (void)simd;
    tile_f32_scalar(y, ldy, x, ldx, w, ldw, mt, nr, kc, accumulate);
}

static void panel_to_f32(int simd, float *dst, const uint8_t *w, size_t rb, ggml_type t, int nr, int64_t k0,
                         int64_t kc) {
#if KERN_X86 && defined(__GNUC__)
    if (simd) {
        panel_to_f32_avx2(dst, w, rb, t, nr, k0, kc);
        return;
    }
#endif
    (void)simd;
    for (int o = 0; o < nr; o++)
        for (int64_t k = 0; k < kc; k++) {
            uint16_t h = ld16(w + (size_t)o * rb + 2 * (k0 + k));
            dst[o * kc + k] = t == GGML_F16 ? moec_f16_to_f32(h) : moec_bf16_to_f32(h);
        }
}

/* ---------------------------------------------------------------------------------------------- */
/* per-thread scratch buffers                                                                     */

/* Each thread keeps a few buffers that grow on demand and are reused by every call (no malloc per call). They are
 * freed when the thread exits (a pthread key destructor) or by kern_release_scratch() on the calling thread.
 * KS_META and KS_ACT belong to the thread that calls kern_matmul_multi; KS_PANEL and KS_ACC are used by every team
 * thread inside the parallel region (the caller is team thread 0: distinct slots, so no aliasing), KS_QPANEL too (Q4_0
 * panels; a failed allocation there falls back to the direct kernel); KS_GEMM by
 * kern_gemm_acc's team. */
enum { KS_META, KS_ACT, KS_PANEL, KS_ACC, KS_QPANEL, KS_GEMM, KS_N };
typedef struct {
    void *p;
    size_t cap;
} kbuf;
static _Thread_local kbuf tl_buf[KS_N];
static _Thread_local int tl_registered;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;
static int tl_key_ok; /* written once under pthread_once */

static void tl_destroy(void *arg) {
    kbuf *b = arg;
    for (int i = 0; i < KS_N; i++) {
        moec_free(b[i].p);
        b[i].p = NULL;
        b[i].cap = 0;
    }
}
static void tl_init(void) { tl_key_ok = pthread_key_create(&tl_key, tl_destroy) == 0; }

/* The calling thread's buffer `slot` with room for n bytes (64-byte aligned), or NULL (error set). The previous
 * contents are not kept when it grows. */
static void *scratch(int slot, size_t n) {
    kbuf *b = &tl_buf[slot];
    if (b->p && b->cap >= n) return b->p;
    if (!tl_registered) {
        pthread_once(&tl_once, tl_init);
        if (tl_key_ok) pthread_setspecific(tl_key, tl_buf);
        tl_registered = 1;
    }
    size_t cap = n + n / 2 + 64;
    if (cap < n) cap = n;
    void *p = moec_alloc(cap);
    if (!p) return NULL;
    moec_free(b->p);
    b->p = p;
    b->cap = cap;
    return p;
}

void kern_release_scratch(void) { tl_destroy(tl_buf); }

/* ---------------------------------------------------------------------------------------------- */
/* matmul driver                                                                                  */

/* One work item of the float GEMM: rows [o0, o1) (<= KB_ROWS) x tokens [t0, t1) (<= KB_TOK), all of k.
 * buf: KB_ROWS*KB_K floats; acct: KB_ROWS*KB_TOK floats, used only when accumulating over several k panels (the
 * product is completed there, then added to y, so y += exactly what kern_matmul would have stored). */
static void gemm_item(int simd, float *y, int64_t ldy, int accumulate, const float *x, int64_t ldx, const uint8_t *w,
                      ggml_type wt, size_t rb, int64_t n_in, int64_t o0, int64_t o1, int64_t t0, int64_t t1,
                      float *buf, float *acct) {
    const int split = accumulate && n_in > KB_K;
    float *yb = split ? acct : y + t0 * ldy + o0;
    const int64_t ldb = split ? o1 - o0 : ldy;
    for (int64_t k0 = 0; k0 < n_in; k0 += KB_K) {
        int64_t kc = n_in - k0 < KB_K ? n_in - k0 : KB_K;
        if (wt == GGML_F32) { /* pack: contiguous panel rows stream better than rows n_in apart */
            for (int64_t o = o0; o < o1; o++)
                memcpy(buf + (o - o0) * kc, (const float *)(w + (size_t)o * rb) + k0, (size_t)kc * sizeof(float));
        } else {
            panel_to_f32(simd, buf, w + (size_t)o0 * rb, rb, wt, (int)(o1 - o0), k0, kc);
        }
        const int acc = k0 > 0 || (accumulate && !split);
        for (int64_t t = t0; t < t1; t += 3) {
            int mt = t1 - t < 3 ? (int)(t1 - t) : 3;
            for (int64_t o = o0; o < o1; o += 4) {
                int nr = o1 - o < 4 ? (int)(o1 - o) : 4;
                tile_f32(simd, yb + (t - t0) * ldb + (o - o0), ldb, x + t * ldx + k0, ldx, buf + (o - o0) * kc, kc, mt,
                         nr, kc, acc);
            }
        }
    }
    if (split)
        for (int64_t t = t0; t < t1; t++)
            for (int64_t o = o0; o < o1; o++) y[t * ldy + o] += acct[(t - t0) * ldb + (o - o0)];
}

/* The form in which a job's kernels read x: ACT_F32 x itself, ACT_Q8 quantized (kq8 blocks, quantized weights),
 * ACT_BF16 rounded to BF16 (BF16 weights on the avx512bf16 path). The last two are converted once per call. */
enum { ACT_F32, ACT_Q8, ACT_BF16 };
static size_t act_row_bytes(int act, int64_t n_in) {
    return act == ACT_Q8 ? kern_act_bytes(n_in) : ((size_t)n_in * 2 + 63) / 64 * 64;
}
static void convert_act(int simd, int act, uint8_t *dst, const float *x, int64_t n) {
#if KERN_X86 && defined(__GNUC__)
    if (act == ACT_BF16) {
        kern_avx512_to_bf16((uint16_t *)(void *)dst, x, n);
        return;
    }
#endif
    quantize_act(simd, (kq8 *)(void *)dst, x, n);
}

/* A validated job of kern_matmul_multi. */
typedef struct {
    const kern_mm *j;
    size_t rb;          /* weight row bytes */
    int64_t ldy, ldx;   /* resolved strides */
    int act, next;      /* act: ACT_*; next: the next job writing the same y (-1: none) */
    const uint8_t *xa;  /* converted activations, T rows of xa_rb bytes (ACT_Q8, ACT_BF16) */
    size_t xa_rb;
} mjob;
/* Jobs writing one y, cut in items of rbk rows x tbk tokens (item i: row block i % n_rb, token block i / n_rb). */
typedef struct {
    int first;
    int64_t rbk, tbk, n_rb, item0; /* item0: index of the group's first item in the whole call */
} mgroup;
/* One distinct activation matrix to convert (shared by the jobs with the same x, ldx, T, n_in and form). */
typedef struct {
    const float *x;
    int64_t ldx, T, n_in, row0; /* row0: its first row among all rows to convert */
    int act;
    size_t rb;                  /* bytes per converted row */
    uint8_t *q;
} mact;

/* Token t's quantized activations (ACT_Q8). */
static const kq8 *act_q8(const mjob *m, int64_t t) { return (const kq8 *)(const void *)(m->xa + (size_t)t * m->xa_rb); }

/* Rows [o0, o1) x tokens [t0, t1) of one job. */
static void run_range(int simd, const mjob *m, int64_t o0, int64_t o1, int64_t t0, int64_t t1, float *panel,
                      float *acct) {
    const kern_mm *j = m->j;
    const uint8_t *wb = j->w;
    const ggml_type t = j->wtype;
    const int accu = j->accumulate != 0;
    if (m->act == ACT_Q8) {
        const int64_t nb32 = j->n_in / 32;
#if KERN_X86 && defined(__GNUC__)
        /* AVX2: unpack the item's rows once for all its tokens (the AVX-512 kernel has no panel form, and one
         * path must use one kernel for every token count) */
        if (simd == KP_AVX2 && t == GGML_Q4_0 && t1 - t0 > 4) {
            uint8_t *qp = scratch(KS_QPANEL, (size_t)((o1 - o0 + 7) / 8) * (size_t)nb32 * Q4P_BYTES);
            if (qp) { /* (without it: the direct kernel below, same bits) */
                q4_0_pack(qp, wb, m->rb, o0, o1, nb32);
                for (int64_t tt = t0; tt < t1; tt += 4) {
                    int nt = t1 - tt < 4 ? (int)(t1 - tt) : 4;
                    const kq8 *a[4];
                    for (int i = 0; i < nt; i++) a[i] = act_q8(m, tt + i);
                    q4_0_panel_rows(j->y + tt * m->ldy, m->ldy, accu, qp, a, nt, o0, o1, nb32);
                }
                return;
            }
        }
#endif
        for (int64_t tt = t0; tt < t1; tt += 4) {
            int nt = t1 - tt < 4 ? (int)(t1 - tt) : 4;
            const kq8 *a[4];
            for (int i = 0; i < nt; i++) a[i] = act_q8(m, tt + i);
            dot_q_rows(simd, j->y + tt * m->ldy, m->ldy, accu, wb, m->rb, t, a, nt, o0, o1, nb32);
        }
    } else if (m->act == ACT_BF16) {
#if KERN_X86 && defined(__GNUC__)
        kern_avx512_bf16_rows(j->y, m->ldy, accu, wb, m->rb, (const uint16_t *)(const void *)m->xa,
                              (int64_t)m->xa_rb / 2, j->n_in, o0, o1, t0, t1);
#endif
    } else if (j->T < 3) {
        dot_f_rows(simd, j->y, m->ldy, accu, wb, m->rb, t, j->x, m->ldx, j->n_in, o0, o1, t0, t1);
    } else {
        for (int64_t tb = t0; tb < t1; tb += KB_TOK)
            for (int64_t ob = o0; ob < o1; ob += KB_ROWS)
                gemm_item(simd, j->y, m->ldy, accu, j->x, m->ldx, wb, t, m->rb, j->n_in, ob,
                          o1 - ob < KB_ROWS ? o1 : ob + KB_ROWS, tb, t1 - tb < KB_TOK ? t1 : tb + KB_TOK, panel, acct);
    }
}

/* Item `it` of the call: find its group (binary search on item0), then run every job of the group in order. */
static void run_item(int simd, const mjob *mj, const mgroup *g, int ng, int64_t it, float *panel, float *acct) {
    int lo = 0, hi = ng - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (g[mid].item0 <= it) lo = mid;
        else hi = mid - 1;
    }
    const mgroup *gr = &g[lo];
    int64_t li = it - gr->item0, o0 = (li % gr->n_rb) * gr->rbk, t0 = (li / gr->n_rb) * gr->tbk;
    const kern_mm *j0 = mj[gr->first].j;
    int64_t o1 = o0 + gr->rbk < j0->n_out ? o0 + gr->rbk : j0->n_out, t1 = t0 + gr->tbk < j0->T ? t0 + gr->tbk : j0->T;
    for (int k = gr->first; k >= 0; k = mj[k].next) run_range(simd, &mj[k], o0, o1, t0, t1, panel, acct);
}

int kern_matmul_multi(const kern_mm *jobs, int n) {
    if (n == 0) return 0;
    if (n < 0 || !jobs) return moec_set_error("kern_matmul_multi: bad job list (n=%d)", n);
    const int simd = use_simd();
    /* validate everything before writing anything */
    double macs = 0;
    int n_live = 0;
    for (int i = 0; i < n; i++) {
        const kern_mm *j = &jobs[i];
        if (j->T < 0 || j->n_in <= 0 || j->n_out < 0)
            return moec_set_error("kern_matmul: bad shape T=%lld n_in=%lld n_out=%lld", (long long)j->T,
                                  (long long)j->n_in, (long long)j->n_out);
        if (ggml_row_bytes(j->wtype, j->n_in) == 0) return moec_wrap_error("kern_matmul");
        if (j->wtype != GGML_F32 && j->wtype != GGML_F16 && j->wtype != GGML_BF16 && !type_is_quant(j->wtype))
            return moec_set_error("kern_matmul: unsupported weight type %s", ggml_type_name(j->wtype));
        if (j->T == 0 || j->n_out == 0) continue;
        if (!j->y || !j->x || !j->w) return moec_set_error("kern_matmul: NULL y, x or w (job %d)", i);
        if ((j->ldy != 0 && j->ldy < j->n_out) || (j->ldx != 0 && j->ldx < j->n_in))
            return moec_set_error("kern_matmul: row stride ldy=%lld / ldx=%lld below the row length (job %d)",
                                  (long long)j->ldy, (long long)j->ldx, i);
        macs += (double)j->T * (double)j->n_in * (double)j->n_out;
        n_live++;
    }
    if (n_live == 0) return 0;
    size_t meta_bytes = (size_t)n * (sizeof(mjob) + sizeof(mgroup) + sizeof(mact));
    uint8_t *meta = scratch(KS_META, meta_bytes);
    if (!meta) return moec_wrap_error("kern_matmul");
    mjob *mj = (mjob *)meta;
    mgroup *g = (mgroup *)(meta + (size_t)n * sizeof(mjob));
    mact *ma = (mact *)(meta + (size_t)n * (sizeof(mjob) + sizeof(mgroup)));
    int ng = 0, na = 0;
    int64_t n_items = 0, act_rows = 0;
    size_t act_bytes = 0;
    int need_panel = 0, need_acc = 0;
    for (int i = 0; i < n; i++) {
        const kern_mm *j = &jobs[i];
        mjob *m = &mj[i];
        m->j = j;
        m->next = -1;
        m->xa = NULL;
        if (j->T == 0 || j->n_out == 0) continue;
        m->rb = ggml_row_bytes(j->wtype, j->n_in);
        m->ldy = j->ldy ? j->ldy : j->n_out;
        m->ldx = j->ldx ? j->ldx : j->n_in;
        m->act = type_is_quant(j->wtype)                             ? ACT_Q8
                 : simd == KP_AVX512BF16 && j->wtype == GGML_BF16 ? ACT_BF16
                                                                  : ACT_F32;
        if (m->act == ACT_F32 && j->T >= 3) {
            need_panel = 1;
            if (j->accumulate && j->n_in > KB_K) need_acc = 1;
        }
        /* output group: an earlier live job with the same y */
        int gi = -1;
        for (int k = 0; k < ng; k++)
            if (mj[g[k].first].j->y == j->y) gi = k;
        if (gi >= 0) {
            const mjob *f = &mj[g[gi].first];
            if (!j->accumulate || f->j->T != j->T || f->j->n_out != j->n_out || f->ldy != m->ldy)
                return moec_set_error("kern_matmul_multi: jobs %d and %d write the same y; the later one must "
                                      "accumulate with the same T, n_out and ldy", g[gi].first, i);
            int k = g[gi].first;
            while (mj[k].next >= 0) k = mj[k].next;
            mj[k].next = i;
        } else {
            mgroup *gr = &g[ng++];
            gr->first = i;
            /* decode: blocks of rows handed out dynamically (64 for quantized W: the Q4_0 kernel prefetches two groups
             * of 8 rows ahead, which should be this thread's next rows) */
            if (j->T == 1) gr->rbk = m->act == ACT_Q8 ? 64 : 16, gr->tbk = 1;
            else if (m->act == ACT_Q8) gr->rbk = KQ_ROWS, gr->tbk = KQ_TOK;
            else if (j->T < 3) gr->rbk = 16, gr->tbk = j->T;
            else gr->rbk = KB_ROWS, gr->tbk = KB_TOK;
            gr->n_rb = (j->n_out + gr->rbk - 1) / gr->rbk;
            gr->item0 = n_items;
            n_items += gr->n_rb * ((j->T + gr->tbk - 1) / gr->tbk);
        }
        if (m->act != ACT_F32) { /* activation set: shared by jobs with the same x and form */
            int ai = -1;
            for (int k = 0; k < na; k++)
                if (ma[k].x == j->x && ma[k].ldx == m->ldx && ma[k].T == j->T && ma[k].n_in == j->n_in &&
                    ma[k].act == m->act)
                    ai = k;
            if (ai < 0) {
                ai = na++;
                ma[ai] = (mact){j->x, m->ldx, j->T, j->n_in, act_rows, m->act, act_row_bytes(m->act, j->n_in), NULL};
                act_rows += j->T;
                act_bytes += (size_t)j->T * ma[ai].rb;
            }
            m->xa = (const uint8_t *)(uintptr_t)ai; /* resolved below, once the buffer exists */
            m->xa_rb = ma[ai].rb;
        }
    }
    if (na > 0) {
        uint8_t *ab = scratch(KS_ACT, act_bytes);
        if (!ab) return moec_wrap_error("kern_matmul");
        size_t off = 0;
        for (int k = 0; k < na; k++) {
            ma[k].q = ab + off;
            off += (size_t)ma[k].T * ma[k].rb;
        }
        for (int i = 0; i < n; i++)
            if (mj[i].act != ACT_F32 && jobs[i].T > 0 && jobs[i].n_out > 0) mj[i].xa = ma[(uintptr_t)mj[i].xa].q;
    }
    const int par = macs >= PAR_MIN_MACS && n_items > 1;
    /* activations: cheap (T*n_in); on the calling thread for few rows, saving a barrier */
    const int act_in_region = par && act_rows >= 16;
    if (!act_in_region)
        for (int k = 0; k < na; k++)
            for (int64_t t = 0; t < ma[k].T; t++)
                convert_act(simd, ma[k].act, ma[k].q + (size_t)t * ma[k].rb, ma[k].x + t * ma[k].ldx, ma[k].n_in);
    if (!par) {
        float *panel = need_panel ? scratch(KS_PANEL, (size_t)KB_ROWS * KB_K * sizeof(float)) : NULL;
        float *acct = need_acc ? scratch(KS_ACC, (size_t)KB_ROWS * KB_TOK * sizeof(float)) : NULL;
        if ((need_panel && !panel) || (need_acc && !acct)) return moec_wrap_error("kern_matmul");
        for (int64_t it = 0; it < n_items; it++) run_item(simd, mj, g, ng, it, panel, acct);
        return 0;
    }
    int bad = 0;
    /* work split: thread t owns the contiguous items [start_t, end_t) and takes them one at a time from the front;
     * when its own run out it takes the others' (one at a time, from their fronts). Each thread streams one
     * contiguous stretch of the weights (the prefetchers' best case), and a thread the OS preempts holds the others
     * up by one item at most (dynamic,1 gave the second, static the first). */
    struct {
        _Atomic int64_t next;
        int64_t end;
        char pad[48]; /* one cache line per cursor */
    } cur[KERN_MAX_RANGES];
    int nr = omp_get_max_threads();
    if (nr > KERN_MAX_RANGES) nr = KERN_MAX_RANGES;
    if (nr < 1) nr = 1;
    for (int t = 0; t < nr; t++) {
        atomic_init(&cur[t].next, n_items * t / nr);
        cur[t].end = n_items * (t + 1) / nr;
    }
#pragma omp parallel num_threads(nr)
    {
        if (act_in_region) {
#pragma omp for schedule(static)
            for (int64_t r = 0; r < act_rows; r++) {
                int k = 0;
                while (k + 1 < na && ma[k + 1].row0 <= r) k++;
                int64_t t = r - ma[k].row0;
                convert_act(simd, ma[k].act, ma[k].q + (size_t)t * ma[k].rb, ma[k].x + t * ma[k].ldx, ma[k].n_in);
            }
        }
        float *panel = need_panel ? scratch(KS_PANEL, (size_t)KB_ROWS * KB_K * sizeof(float)) : NULL;
        float *acct = need_acc ? scratch(KS_ACC, (size_t)KB_ROWS * KB_TOK * sizeof(float)) : NULL;
        int ok = !((need_panel && !panel) || (need_acc && !acct));
        if (!ok) {
#pragma omp atomic write
            bad = 1;
        }
        /* own range first, then the others' in turn; the region's join is the only barrier after it */
        const int th = omp_get_thread_num();
        for (int k = 0; k < nr; k++) {
            const int u = (th + k) % nr;
            for (;;) {
                int64_t it = atomic_fetch_add_explicit(&cur[u].next, 1, memory_order_relaxed);
                if (it >= cur[u].end) break;
                if (ok) run_item(simd, mj, g, ng, it, panel, acct);
            }
        }
    }
    return bad ? moec_set_error("kern_matmul: out of memory") : 0;
}

int kern_matmul(float *y, const float *x, const void *w, ggml_type wtype, int64_t T, int64_t n_in, int64_t n_out) {
    kern_mm j = {y, x, w, wtype, T, n_in, n_out, 0, 0, 0};
    return kern_matmul_multi(&j, 1);
}

/* ---------------------------------------------------------------------------------------------- */
/* C += A·B (fp32), for the backward pass                                                         */

#ifndef GN_NB
#define GN_NB 256 /* columns of C per work item */
#endif
#ifndef GN_MB
#define GN_MB 96 /* rows of C per work item */
#endif
#ifndef GN_KC
#define GN_KC 256 /* k chunk */
#endif

/* C[mr x nc] += A[mr x kc] · B[kc x nc], scalar; A(i,k) = a[i*ars + k*acs]. */
static void gnn_tile_scalar(float *c, int64_t ldc, const float *a, int64_t ars, int64_t acs, const float *b,
                            int64_t ldb, int mr, int64_t nc, int64_t kc) {
    for (int i = 0; i < mr; i++)
        for (int64_t j = 0; j < nc; j++) {
            float s = 0.0f;
            for (int64_t k = 0; k < kc; k++) s += a[i * ars + k * acs] * b[k * ldb + j];
            c[i * ldc + j] += s;
        }
}

#if KERN_X86 && defined(__GNUC__)
/* MR rows x 16 columns, broadcast form: per k two B vectors, MR broadcasts of A, 2*MR FMAs. */
AVX2 static inline __attribute__((always_inline)) void gnn_body(float *c, int64_t ldc, const float *a, int64_t ars,
                                                                 int64_t acs, const float *b, int64_t ldb, int MR,
                                                                 int64_t kc) {
    __m256 acc[6][2];
    _Pragma("GCC unroll 6") for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    _Pragma("GCC unroll 4") for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(b + k * ldb), b1 = _mm256_loadu_ps(b + k * ldb + 8);
        _Pragma("GCC unroll 6") for (int i = 0; i < MR; i++) {
            __m256 av = _mm256_broadcast_ss(a + i * ars + k * acs);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
    }
    _Pragma("GCC unroll 6") for (int i = 0; i < MR; i++) {
        _mm256_storeu_ps(c + i * ldc, _mm256_add_ps(_mm256_loadu_ps(c + i * ldc), acc[i][0]));
        _mm256_storeu_ps(c + i * ldc + 8, _mm256_add_ps(_mm256_loadu_ps(c + i * ldc + 8), acc[i][1]));
    }
}

AVX2 static void gnn_strip_avx2(float *c, int64_t ldc, const float *a, int64_t ars, int64_t acs, const float *bp,
                                int mr, int64_t kc) {
    switch (mr) {
    case 6: gnn_body(c, ldc, a, ars, acs, bp, 16, 6, kc); break;
    case 5: gnn_body(c, ldc, a, ars, acs, bp, 16, 5, kc); break;
    case 4: gnn_body(c, ldc, a, ars, acs, bp, 16, 4, kc); break;
    case 3: gnn_body(c, ldc, a, ars, acs, bp, 16, 3, kc); break;
    case 2: gnn_body(c, ldc, a, ars, acs, bp, 16, 2, kc); break;
    default: gnn_body(c, ldc, a, ars, acs, bp, 16, 1, kc); break;
    }
}

/* B panel bt[kc x nc16] (row stride ldb) -> nc16/16 strips of [kc x 16], strip js at dst + js*kc. Reads B rows
 * contiguously. */
AVX2 static void gnn_pack_b(float *dst, const float *bt, int64_t ldb, int64_t nc16, int64_t kc) {
    for (int64_t k = 0; k < kc; k++) {
        const float *src = bt + k * ldb;
        float *d = dst + k * 16;
        for (int64_t js = 0; js < nc16; js += 16) {
            _mm256_storeu_ps(d + js * kc, _mm256_loadu_ps(src + js));
            _mm256_storeu_ps(d + js * kc + 8, _mm256_loadu_ps(src + js + 8));
        }
    }
}

/* A rows [i0, i1) x k [k0, k0 + kc) -> strips of 6 rows, k-major (ps[k*6 + ii]), strip s at dst + 6*s*kc. M = all
 * rows of A (reads stay inside rows < M). Vector stores of 8 floats overlap the next 2 slots, which are written
 * afterwards (strips and k in ascending order): dst needs 8 floats of room after the last strip. */
AVX2 static void gnn_pack_a(float *dst, const float *a, int64_t ars, int64_t acs, int64_t M, int64_t i0, int64_t i1,
                            int64_t k0, int64_t kc) {
    for (int64_t i = i0; i < i1; i += 6) {
        int mr = i1 - i < 6 ? (int)(i1 - i) : 6;
        float *ps = dst + (i - i0) * kc;
        const float *at = a + i * ars + k0 * acs;
        int64_t k = 0;
        if (acs == 1 && mr == 6) { /* rows contiguous along k: 6 rows x 8 k transposed in registers */
            const __m256 z = _mm256_setzero_ps();
            for (; k + 8 <= kc; k += 8) {
                __m256 r0 = _mm256_loadu_ps(at + k), r1 = _mm256_loadu_ps(at + ars + k),
                       r2 = _mm256_loadu_ps(at + 2 * ars + k), r3 = _mm256_loadu_ps(at + 3 * ars + k),
                       r4 = _mm256_loadu_ps(at + 4 * ars + k), r5 = _mm256_loadu_ps(at + 5 * ars + k);
                __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
                __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
                __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
                __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
                __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
                __m256 s4 = _mm256_shuffle_ps(t4, z, 0x44), s5 = _mm256_shuffle_ps(t4, z, 0xEE);
                __m256 s6 = _mm256_shuffle_ps(t5, z, 0x44), s7 = _mm256_shuffle_ps(t5, z, 0xEE);
                float *d = ps + k * 6;
                _mm256_storeu_ps(d, _mm256_permute2f128_ps(s0, s4, 0x20));
                _mm256_storeu_ps(d + 6, _mm256_permute2f128_ps(s1, s5, 0x20));
                _mm256_storeu_ps(d + 12, _mm256_permute2f128_ps(s2, s6, 0x20));
                _mm256_storeu_ps(d + 18, _mm256_permute2f128_ps(s3, s7, 0x20));
                _mm256_storeu_ps(d + 24, _mm256_permute2f128_ps(s0, s4, 0x31));
                _mm256_storeu_ps(d + 30, _mm256_permute2f128_ps(s1, s5, 0x31));
                _mm256_storeu_ps(d + 36, _mm256_permute2f128_ps(s2, s6, 0x31));
                _mm256_storeu_ps(d + 42, _mm256_permute2f128_ps(s3, s7, 0x31));
            }
        } else if (ars == 1 && i + 8 <= M) { /* transposed A: the 6 rows are contiguous at each k */
            for (; k < kc; k++) _mm256_storeu_ps(ps + k * 6, _mm256_loadu_ps(at + k * acs));
        }
        for (; k < kc; k++)
            for (int ii = 0; ii < mr; ii++) ps[k * 6 + ii] = at[ii * ars + k * acs];
    }
}
#endif

int kern_gemm_acc(float *c, const float *a, int64_t a_rs, int64_t a_cs, const float *b, int64_t M, int64_t N,
                  int64_t K) {
    if (M < 0 || N < 0 || K < 0) return moec_set_error("kern_gemm_acc: bad shape");
    if (M == 0 || N == 0 || K == 0) return 0;
    const int simd = use_simd();
    const int par = (double)M * (double)N * (double)K >= PAR_MIN_MACS && !omp_in_parallel();
    /* Work items: (column block of GN_NB) x (group of row blocks of GN_MB). Each item packs its B panel once per k
     * chunk and meets it with every A block of its group. The split only decides which thread computes which
     * elements, never how: each element of C gets, per k chunk of GN_KC (ascending), its own sum over k ascending
     * added to it, so the bits do not depend on the thread count or the groups. */
    const int64_t n_mb = (M + GN_MB - 1) / GN_MB, n_nb = (N + GN_NB - 1) / GN_NB;
    int64_t want = par ? 3 * (int64_t)omp_get_max_threads() : 1; /* items wanted for load balance */
    int64_t n_mg = (want + n_nb - 1) / n_nb;
    if (n_mg > n_mb) n_mg = n_mb;
    if (n_mg < 1) n_mg = 1;
    const int64_t g_mb = (n_mb + n_mg - 1) / n_mg; /* row blocks per group */
    n_mg = (n_mb + g_mb - 1) / g_mb;
    int bad = 0;
#pragma omp parallel if (par)
    {
        /* packed B panel [kc x nc] as nc/16 strips of [kc x 16] (the column tail stays in place), then packed A
         * block [mb x kc] in strips of 6 rows (+ 8 floats of room for the overlapping stores) */
        float *pk = scratch(KS_GEMM, ((size_t)GN_KC * (GN_NB + GN_MB + 6) + 8) * sizeof(float));
        float *pa = pk ? pk + (size_t)GN_KC * GN_NB : NULL;
        if (!pk) {
#pragma omp atomic write
            bad = 1;
        }
#pragma omp for schedule(dynamic, 1) nowait /* the region's join follows */
        for (int64_t it = 0; it < n_mg * n_nb; it++) {
            if (!pk) continue;
            int64_t g0 = (it / n_nb) * g_mb * GN_MB, j0 = (it % n_nb) * GN_NB;
            int64_t g1 = g0 + g_mb * GN_MB < M ? g0 + g_mb * GN_MB : M, nc = j0 + GN_NB < N ? GN_NB : N - j0;
            int64_t nc16 = nc / 16 * 16;
            for (int64_t k0 = 0; k0 < K; k0 += GN_KC) {
                int64_t kc = K - k0 < GN_KC ? K - k0 : GN_KC;
                const float *bt = b + k0 * N + j0;
#if KERN_X86 && defined(__GNUC__)
                if (simd) {
                    gnn_pack_b(pk, bt, N, nc16, kc);
                    for (int64_t i0 = g0; i0 < g1; i0 += GN_MB) {
                        int64_t i1 = i0 + GN_MB < g1 ? i0 + GN_MB : g1;
                        /* each packed B strip (16 KB, stays in L1) meets every A strip of the block */
                        gnn_pack_a(pa, a, a_rs, a_cs, M, i0, i1, k0, kc);
                        for (int64_t js = 0; js < nc16; js += 16)
                            for (int64_t i = i0; i < i1; i += 6) {
                                int mr = i1 - i < 6 ? (int)(i1 - i) : 6;
                                gnn_strip_avx2(c + i * N + j0 + js, N, pa + (i - i0) * kc, 1, 6, pk + js * kc, mr,
                                               kc);
                            }
                        if (nc16 < nc)
                            for (int64_t i = i0; i < i1; i += 6) {
                                int mr = i1 - i < 6 ? (int)(i1 - i) : 6;
                                gnn_tile_scalar(c + i * N + j0 + nc16, N, a + i * a_rs + k0 * a_cs, a_rs, a_cs,
                                                bt + nc16, N, mr, nc - nc16, kc);
                            }
                    }
                    continue;
                }
#endif
                for (int64_t i = g0; i < g1; i += 6) {
                    int mr = g1 - i < 6 ? (int)(g1 - i) : 6;
                    gnn_tile_scalar(c + i * N + j0, N, a + i * a_rs + k0 * a_cs, a_rs, a_cs, bt, N, mr, nc, kc);
                }
            }
        }
    }
    return bad ? moec_set_error("kern_gemm_acc: out of memory") : 0;
}

int kern_matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t T,
                         int64_t n_in, int64_t n_out) {
    /* dx[T, n_in] += dy[T, n_out] · W[n_out, n_in];  dw[n_out, n_in] += dyᵀ[n_out, T] · x[T, n_in] */
    if (dx && kern_gemm_acc(dx, dy, n_out, 1, w, T, n_in, n_out) != 0) return -1;
    if (dw && kern_gemm_acc(dw, dy, 1, n_out, x, n_out, n_in, T) != 0) return -1;
    return 0;
}
