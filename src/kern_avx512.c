/* kern_avx512: AVX-512 (F, BW, VL, VNNI) versions of kern's decode and GEMM inner kernels. kern.c calls them when
 * the CPU reports all four and the OS saves the ZMM state (and MOEC_KERN does not cap the path at avx2); types and
 * shapes these do not cover take the AVX2 kernels. Every function has the contract of its kern.c counterpart
 * (kern_impl.h); the results differ from the AVX2 path only by fp32 summation order. With AVX512_BF16 as well (path
 * avx512bf16), BF16 weights take kern_avx512_bf16_rows (last section) in decode and prefill alike. Built with
 * per-function target attributes, so the file compiles with any x86-64 flags (and to nothing elsewhere).
 *
 * Q8_0 / Q4_0: two 32-element blocks per 512-bit vector. The weight bytes w (Q4_0: nibbles minus 8) are made
 * unsigned with the sign trick (|w|, and the activation negated where w < 0: vpdpbusd multiplies unsigned by signed
 * bytes), then one vpdpbusd sums each group of 4 products into an int32 lane (exact, no int16 saturation as in
 * maddubs): lanes 0-7 hold block b, 8-15 block b+1; converted and scaled by dw*da of their block, one FMA. */
#include "kern_impl.h"

#if KERN_X86 && defined(__GNUC__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define INLINE inline __attribute__((always_inline))

int kern_avx512_dot_q_ok(ggml_type t) { return t == GGML_Q8_0 || t == GGML_Q4_0; }

/* 32 bytes at p into the low half of a vector, 32 at q (or zeros if q is NULL) into the high half */
AVX512 static INLINE __m512i ld2x32(const void *p, const void *q) {
    __m512i v = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)p));
    return q ? _mm512_inserti64x4(v, _mm256_loadu_si256((const __m256i *)q), 1) : v;
}

/* Q4_0 blocks at p and q (q NULL: zeros) as signed bytes nibble - 8, in element order (low nibbles = 0..15) */
AVX512 static INLINE __m512i ld2_q4_0(const uint8_t *p, const uint8_t *q) {
    __m128i n0 = _mm_loadu_si128((const __m128i *)(p + 2));
    __m128i n1 = q ? _mm_loadu_si128((const __m128i *)(q + 2)) : _mm_set1_epi8((char)0x88);
    __m512i v = _mm512_inserti32x4(_mm512_castsi128_si512(n0), n0, 1);
    v = _mm512_inserti32x4(_mm512_inserti32x4(v, n1, 2), n1, 3);
    v = _mm512_mask_srli_epi16(v, 0xFF00FF00u, v, 4); /* 128-bit lanes 1 and 3: the high nibbles */
    return _mm512_sub_epi8(_mm512_and_si512(v, _mm512_set1_epi8(15)), _mm512_set1_epi8(8));
}

/* One weight row (nb32 blocks) · NT token rows. */
AVX512 static INLINE void dot_q_body(float *out, const uint8_t *p, ggml_type t, const kq8 *const *a, int NT,
                                     int64_t nb32) {
    __m512 acc[4];
    _Pragma("GCC unroll 4") for (int i = 0; i < NT; i++) acc[i] = _mm512_setzero_ps();
    const size_t bs = t == GGML_Q8_0 ? 34 : 18;
    for (int64_t b = 0; b < nb32; b += 2) {
        const uint8_t *b0 = p + (size_t)b * bs, *b1 = b + 1 < nb32 ? b0 + bs : NULL;
        KPF((uintptr_t)b0 + KPF_QDIST);
        if (t == GGML_Q8_0) KPF((uintptr_t)b0 + KPF_QDIST + 64);
        __m512i w = t == GGML_Q8_0 ? ld2x32(b0 + 2, b1 ? b1 + 2 : NULL) : ld2_q4_0(b0, b1);
        const __m512i wabs = _mm512_abs_epi8(w);
        const __mmask64 wneg = _mm512_movepi8_mask(w);
        const float dw0 = _cvtsh_ss(ld16(b0)), dw1 = b1 ? _cvtsh_ss(ld16(b1)) : 0.0f;
        _Pragma("GCC unroll 4") for (int i = 0; i < NT; i++) {
            const kq8 *ab = a[i] + b;
            __m512i x = ld2x32(ab[0].q, b1 ? ab[1].q : NULL);
            x = _mm512_mask_sub_epi8(x, wneg, _mm512_setzero_si512(), x);
            __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wabs, x);
            __m512 sc = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(dw0 * ab[0].d),
                                             _mm512_set1_ps(b1 ? dw1 * ab[1].d : 0.0f));
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, acc[i]);
        }
    }
    _Pragma("GCC unroll 4") for (int i = 0; i < NT; i++) out[i] = _mm512_reduce_add_ps(acc[i]);
}

AVX512 static INLINE void dot_q_rows_body(float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, ggml_type t,
                                          const kq8 *const *a, int NT, int64_t o0, int64_t o1, int64_t nb32) {
    for (int64_t o = o0; o < o1; o++) {
        float r[4];
        dot_q_body(r, w + (size_t)o * rb, t, a, NT, nb32);
        kern_put_row(y, ldy, accu, o, r, NT);
    }
}

AVX512 void kern_avx512_dot_q_rows(float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, ggml_type t,
                                   const kq8 *const *a, int nt, int64_t o0, int64_t o1, int64_t nb32) {
    if (t == GGML_Q8_0) {
        KERN_DQ_NT(dot_q_rows_body, GGML_Q8_0);
    } else {
        KERN_DQ_NT(dot_q_rows_body, GGML_Q4_0);
    }
}

/* 16 weights of type T at element i of row p (m: the elements to load, the rest are 0) as fp32 */
AVX512 static INLINE __m512 ld16w(const uint8_t *p, ggml_type T, int64_t i, __mmask16 m) {
    if (T == GGML_F32) return _mm512_maskz_loadu_ps(m, p + 4 * i);
    __m256i h = _mm256_maskz_loadu_epi16(m, p + 2 * i);
    if (T == GGML_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* dot of a float weight row of type T (n elements) with fp32 x: 4 chains of 16, then 16 at a time, then a masked
 * tail */
AVX512 static INLINE float dot_f_body(const uint8_t *p, ggml_type T, const float *x, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    const int64_t es = T == GGML_F32 ? 4 : 2;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        KPF((uintptr_t)p + es * i + KPF_DIST);
        if (T == GGML_F32) KPF((uintptr_t)p + es * i + KPF_DIST + 64);
        a0 = _mm512_fmadd_ps(ld16w(p, T, i, 0xFFFF), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(ld16w(p, T, i + 16, 0xFFFF), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(ld16w(p, T, i + 32, 0xFFFF), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(ld16w(p, T, i + 48, 0xFFFF), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(ld16w(p, T, i, 0xFFFF), _mm512_loadu_ps(x + i), a0);
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        a1 = _mm512_fmadd_ps(ld16w(p, T, i, m), _mm512_maskz_loadu_ps(m, x + i), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

AVX512 void kern_avx512_dot_f_rows(float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, ggml_type t,
                                   const float *x, int64_t ldx, int64_t n, int64_t o0, int64_t o1, int64_t t0,
                                   int64_t t1) {
    KERN_DF_ROWS(dot_f_body)
}

/* Register tile of MT tokens x NR rows over kc, 16 wide, the k tail masked. Inlined with constant MT/NR. */
AVX512 static INLINE void tile_body(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t ldw,
                                    int MT, int NR, int64_t kc, int accumulate) {
    __m512 acc[3][4];
    _Pragma("GCC unroll 4") for (int t = 0; t < MT; t++)
        _Pragma("GCC unroll 4") for (int o = 0; o < NR; o++) acc[t][o] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k += 16) {
        const __mmask16 m = kc - k >= 16 ? 0xFFFF : (__mmask16)((1u << (kc - k)) - 1);
        __m512 xv[3];
        _Pragma("GCC unroll 4") for (int t = 0; t < MT; t++) xv[t] = _mm512_maskz_loadu_ps(m, x + t * ldx + k);
        _Pragma("GCC unroll 4") for (int o = 0; o < NR; o++) {
            __m512 wv = _mm512_maskz_loadu_ps(m, w + o * ldw + k);
            _Pragma("GCC unroll 4") for (int t = 0; t < MT; t++) acc[t][o] = _mm512_fmadd_ps(xv[t], wv, acc[t][o]);
        }
    }
    _Pragma("GCC unroll 4") for (int t = 0; t < MT; t++)
        _Pragma("GCC unroll 4") for (int o = 0; o < NR; o++) {
            float s = _mm512_reduce_add_ps(acc[t][o]);
            if (accumulate) y[t * ldy + o] += s;
            else y[t * ldy + o] = s;
        }
}

AVX512 static void tile_3x4(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t ldw,
                            int64_t kc, int accumulate) {
    tile_body(y, ldy, x, ldx, w, ldw, 3, 4, kc, accumulate);
}

AVX512 void kern_avx512_tile_f32(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t ldw,
                                 int mt, int nr, int64_t kc, int accumulate) {
    if (mt == 3 && nr == 4) {
        tile_3x4(y, ldy, x, ldx, w, ldw, kc, accumulate);
        return;
    }
    for (int t = 0; t < mt; t++) { /* edge tiles: one token at a time, up to 4 rows */
        float *yt = y + t * ldy;
        const float *xt = x + t * ldx;
        switch (nr) {
        case 4: tile_body(yt, ldy, xt, ldx, w, ldw, 1, 4, kc, accumulate); break;
        case 3: tile_body(yt, ldy, xt, ldx, w, ldw, 1, 3, kc, accumulate); break;
        case 2: tile_body(yt, ldy, xt, ldx, w, ldw, 1, 2, kc, accumulate); break;
        default: tile_body(yt, ldy, xt, ldx, w, ldw, 1, 1, kc, accumulate); break;
        }
    }
}

/* ---- AVX512_BF16 ---------------------------------------------------------------------------------------------- */
#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16,avx2,fma,f16c")))

/* 16 at a time with VCVTNEPS2BF16 (once per activation row and call: its cost does not show). Not the two-source
 * VCVTNE2PS2BF16: the emulator the tests run on (Bochs 3.0) gets the upper half of its result wrong. */
AVX512BF16 void kern_avx512_to_bf16(uint16_t *dst, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

/* MT tokens x NR rows, all n elements: one VDPBF16PS chain per (token, row), 32 elements a step, the tail masked
 * (zeros add nothing). Inlined with constant MT/NR; every instantiation does the same per-(token, row) operations. */
AVX512BF16 static INLINE void bf16_tile(float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, const uint16_t *x,
                                        int64_t ldx, int64_t n, int MT, int NR) {
    __m512 acc[3][4];
    _Pragma("GCC unroll 4") for (int t = 0; t < MT; t++)
        _Pragma("GCC unroll 4") for (int o = 0; o < NR; o++) acc[t][o] = _mm512_setzero_ps();
    for (int64_t k = 0; k < n; k += 32) {
        const __mmask32 m = n - k >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << (n - k)) - 1);
        __m512bh xv[3];
        _Pragma("GCC unroll 4") for (int t = 0; t < MT; t++)
            xv[t] = (__m512bh)_mm512_maskz_loadu_epi16(m, x + t * ldx + k);
        _Pragma("GCC unroll 4") for (int o = 0; o < NR; o++) {
            const uint8_t *p = w + (size_t)o * rb + 2 * (size_t)k;
            KPF((uintptr_t)p + KPF_DIST);
            const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, p);
            _Pragma("GCC unroll 4") for (int t = 0; t < MT; t++) acc[t][o] = _mm512_dpbf16_ps(acc[t][o], xv[t], wv);
        }
    }
    _Pragma("GCC unroll 4") for (int t = 0; t < MT; t++)
        _Pragma("GCC unroll 4") for (int o = 0; o < NR; o++) {
            float r = _mm512_reduce_add_ps(acc[t][o]);
            if (accu) y[t * ldy + o] += r;
            else y[t * ldy + o] = r;
        }
}

AVX512BF16 void kern_avx512_bf16_rows(float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, const uint16_t *xb,
                                      int64_t ldxb, int64_t n, int64_t o0, int64_t o1, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t += 3) {
        const int mt = t1 - t < 3 ? (int)(t1 - t) : 3;
        for (int64_t o = o0; o < o1; o += 4) {
            const int nr = o1 - o < 4 ? (int)(o1 - o) : 4;
            float *yt = y + t * ldy + o;
            const uint8_t *wo = w + (size_t)o * rb;
            const uint16_t *xt = xb + t * ldxb;
            if (mt == 3 && nr == 4) {
                bf16_tile(yt, ldy, accu, wo, rb, xt, ldxb, n, 3, 4);
                continue;
            }
            for (int i = 0; i < mt; i++) /* edges: one token at a time */
                switch (nr) {
                case 4: bf16_tile(yt + i * ldy, ldy, accu, wo, rb, xt + i * ldxb, ldxb, n, 1, 4); break;
                case 3: bf16_tile(yt + i * ldy, ldy, accu, wo, rb, xt + i * ldxb, ldxb, n, 1, 3); break;
                case 2: bf16_tile(yt + i * ldy, ldy, accu, wo, rb, xt + i * ldxb, ldxb, n, 1, 2); break;
                default: bf16_tile(yt + i * ldy, ldy, accu, wo, rb, xt + i * ldxb, ldxb, n, 1, 1); break;
                }
        }
    }
}
#else
typedef int kern_avx512_unused; /* ISO C: a translation unit is not empty */
#endif
