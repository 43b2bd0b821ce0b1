/* kern_impl: what kern.c shares with its CPU-specific kernel files (kern_avx512.c). Internal, not installed. */
#ifndef MOEC_KERN_IMPL_H
#define MOEC_KERN_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gguf.h"

#if defined(__x86_64__) || defined(__i386__)
#define KERN_X86 1
#else
#define KERN_X86 0
#endif

/* The kernel path of a call: KP_SCALAR (portable C), KP_AVX2 (AVX2 + FMA + F16C), KP_AVX512 (those plus AVX-512 F,
 * BW, VL and VNNI; the kernels kern_avx512.c has, the AVX2 ones for the rest), KP_AVX512BF16 (also AVX512_BF16: BF16
 * weights are multiplied in BF16, activations rounded to BF16 once per call; everything else as KP_AVX512). */
enum { KP_SCALAR = 0, KP_AVX2 = 1, KP_AVX512 = 2, KP_AVX512BF16 = 3 };

/* Activation block: 32 int8 values, x ≈ d*q; s[h] = sum of q[16h .. 16h+15]; ds = d * (s[0] + s[1]). */
typedef struct {
    float d, ds;
    int16_t s[2];
    int8_t q[32];
} kq8;

/* A little-endian 16-bit value (an F16/BF16 weight or block scale) at any alignment. */
static inline uint16_t ld16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* y[i*ldy + o] = r[i] (accu: +=) for the nt tokens of output row o. */
static inline void kern_put_row(float *y, int64_t ldy, int accu, int64_t o, const float *r, int nt) {
    for (int i = 0; i < nt; i++) {
        if (accu) y[i * ldy + o] += r[i];
        else y[i * ldy + o] = r[i];
    }
}

/* Calls BODY(y, ldy, accu, w, rb, TYPE, a, NT, o0, o1, nb32) with a constant NT = nt (1..4): one inlined copy per
 * (type, token count), so the type tests and the token loops fold away. Used inside the quantized row kernels. */
#define KERN_DQ_NT(BODY, TYPE)                                                                                         \
    switch (nt) {                                                                                                      \
    case 4: BODY(y, ldy, accu, w, rb, TYPE, a, 4, o0, o1, nb32); break;                                               \
    case 3: BODY(y, ldy, accu, w, rb, TYPE, a, 3, o0, o1, nb32); break;                                               \
    case 2: BODY(y, ldy, accu, w, rb, TYPE, a, 2, o0, o1, nb32); break;                                               \
    default: BODY(y, ldy, accu, w, rb, TYPE, a, 1, o0, o1, nb32); break;                                              \
    }

/* Rows [o0, o1) of a float W (row stride rb, n elements) x tokens [t0, t1) of x (row stride ldx):
 * y[t*ldy + o] (accu: +=) DOT(row, TYPE, token, n), one inlined copy per weight type (F32, F16, BF16: variable t), so
 * DOT's type tests fold away. The body of the float decode row kernels (scalar, AVX2, AVX-512). */
#define KERN_DF_LOOP(DOT, TYPE)                                                                                        \
    for (int64_t o = o0; o < o1; o++)                                                                                  \
        for (int64_t tt = t0; tt < t1; tt++) {                                                                         \
            const float r_ = DOT(w + (size_t)o * rb, TYPE, x + tt * ldx, n);                                           \
            if (accu) y[tt * ldy + o] += r_;                                                                           \
            else y[tt * ldy + o] = r_;                                                                                 \
        }
#define KERN_DF_ROWS(DOT)                                                                                              \
    switch (t) {                                                                                                       \
    case GGML_F32: KERN_DF_LOOP(DOT, GGML_F32); break;                                                                 \
    case GGML_F16: KERN_DF_LOOP(DOT, GGML_F16); break;                                                                 \
    default: KERN_DF_LOOP(DOT, GGML_BF16); break;                                                                      \
    }

/* Software prefetch KPF_DIST / KPF_QDIST bytes ahead of the weights being read, one line per 64 bytes consumed: a
 * linear stream that runs on into the next rows (the matrix is contiguous). prefetch never faults; the address is
 * formed as an integer, so it may lie past the end of the matrix. */
#if KERN_X86
#include <immintrin.h>
#define KPF(addr) _mm_prefetch((const char *)(addr), _MM_HINT_T0)
#endif
#ifndef KPF_DIST
#define KPF_DIST 1024  /* float rows (F16 decode, moe-llama-f16: 1024 +5-10%, 2048 slower than none) */
#endif
#ifndef KPF_QDIST
#define KPF_QDIST 2048 /* quantized rows (Q8_0 decode, moe-llama-q8_0: +13-20%) */
#endif

#if KERN_X86 && defined(__GNUC__)
/* AVX-512 kernels (kern_avx512.c); the contracts are those of kern.c's dot_q_rows / dot_f_rows / tile_f32:
 * kern_avx512_dot_q_rows: rows [o0, o1) of a Q8_0 or Q4_0 W (row stride rb, nb32 blocks per row) with nt <= 4
 *   quantized token rows a[i]: y[i*ldy + o] = (accu: +=) dot(row o, token i).
 * kern_avx512_dot_f_rows: rows [o0, o1) of an F32/F16/BF16 W x tokens [t0, t1) of x (row stride ldx, n elements):
 *   y[t*ldy + o] (accu: +=) dot.
 * kern_avx512_tile_f32: y[t*ldy + o] (accumulate: +=) dot(x[t*ldx + 0..kc), w[o*ldw + 0..kc)), mt <= 3 tokens,
 *   nr <= 4 rows. */
int kern_avx512_dot_q_ok(ggml_type t); /* does kern_avx512_dot_q_rows take this type? */
void kern_avx512_dot_q_rows(float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, ggml_type t,
                            const kq8 *const *a, int nt, int64_t o0, int64_t o1, int64_t nb32);
void kern_avx512_dot_f_rows(float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, ggml_type t, const float *x,
                            int64_t ldx, int64_t n, int64_t o0, int64_t o1, int64_t t0, int64_t t1);
void kern_avx512_tile_f32(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t ldw, int mt,
                          int nr, int64_t kc, int accumulate);
/* AVX512_BF16 kernels (kern_avx512.c), KP_AVX512BF16 only:
 * kern_avx512_to_bf16: dst[0..n) = x rounded to BF16 the way VCVTNEPS2BF16 rounds (to nearest even; denormals to
 *   signed zero; NaN stays NaN).
 * kern_avx512_bf16_rows: rows [o0, o1) of a BF16 W (row stride rb bytes, n elements) x BF16 tokens [t0, t1) of xb (row
 *   stride ldxb elements): y[t*ldy + o] (accu: +=) sum over k of w[o][k] * xb[t][k] in fp32 (VDPBF16PS pairs, 32
 *   elements per step, one chain per (token, row) in k order). A token's result does not depend on t0, t1, o0, o1:
 *   decode and prefill give the same bits. */
void kern_avx512_to_bf16(uint16_t *dst, const float *x, int64_t n);
void kern_avx512_bf16_rows(float *y, int64_t ldy, int accu, const uint8_t *w, size_t rb, const uint16_t *xb,
                           int64_t ldxb, int64_t n, int64_t o0, int64_t o1, int64_t t0, int64_t t1);
#endif

#endif
