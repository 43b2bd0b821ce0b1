/* kern: the hot kernels. Matrix products against weights of any supported type, threaded with OpenMP.
 * Weight matrices are stored as in GGUF: W has n_out rows of n_in elements (ne[0] = n_in), row-major,
 * each row ggml_row_bytes(type, n_in) bytes. Activations are fp32. */
#ifndef MOEC_KERN_H
#define MOEC_KERN_H

#include <stddef.h>
#include <stdint.h>
#include "gguf.h"

/* y[T, n_out] = x[T, n_in] · Wᵀ, W: [n_out, n_in] of type wtype. y is overwritten.
 * Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K (n_in a multiple of the block size). For quantized W the
 * activations are quantized to 8 bits per 32-block first (as ggml does). Threaded with OpenMP when the call is big
 * enough; env MOEC_KERN=scalar forces the portable path (read once, at the first call). Returns -1 (error set) for an
 * unsupported type/shape. Results do not depend on the thread count. */
int kern_matmul(float *y, const float *x, const void *w, ggml_type wtype, int64_t T, int64_t n_in, int64_t n_out);

/* One matmul of kern_matmul_multi: y[T, n_out] (=|+=) x[T, n_in] · Wᵀ, W: [n_out, n_in] of type wtype.
 * The fields after n_out are optional (zero = the plain kern_matmul): use a designated initializer,
 * (kern_mm){.y = y, .x = x, .w = w, .wtype = t, .T = T, .n_in = n_in, .n_out = n_out}, which leaves them zero
 * (a positional one with 7 values trips -Wmissing-field-initializers under -Wextra). */
typedef struct {
    float *y;          /* [T, n_out], row t at y + t*ldy */
    const float *x;    /* [T, n_in], row t at x + t*ldx */
    const void *w;     /* [n_out, n_in] of type wtype, rows ggml_row_bytes(wtype, n_in) apart */
    ggml_type wtype;
    int64_t T, n_in, n_out;
    int accumulate;    /* 0: y = x·Wᵀ; 1: y += x·Wᵀ, bitwise equal to y + (what kern_matmul would store) */
    int64_t ldy, ldx;  /* row strides in floats, 0 = dense (n_out resp. n_in); ldy >= n_out, ldx >= n_in */
} kern_mm;

/* Runs n independent matmuls in ONE OpenMP parallel region (one fork/join for all): the row blocks of every job
 * are work items handed out dynamically to the team. Every job's y gets exactly the bits kern_matmul (plus the
 * accumulate/stride options) gives for it alone, for any thread count and any mix of jobs. Quantized jobs with the
 * same (x, ldx, T, n_in) quantize their activations once. Jobs must be independent: no job's y may overlap another
 * job's x or y, with one exception: several jobs may name the same y (same T, n_out, ldy) if every one after the
 * first has accumulate = 1; they then run in job order on each block of y (e.g. two conv taps summed into one
 * output: {.. accumulate = 0}, {.. accumulate = 1}). Jobs with T = 0 or n_out = 0 are skipped. Everything is
 * validated before anything is written; returns 0, or -1 with the error set (bad shape/type/stride, a same-y
 * violation, out of memory). Not for calling from inside an active parallel region (it would run on one thread). */
int kern_matmul_multi(const kern_mm *jobs, int n);

/* kern keeps per-thread scratch buffers (activation quantization, GEMM panels) that grow to the largest call and
 * are reused; they are freed when the thread exits. This frees the calling thread's buffers now (optional). */
void kern_release_scratch(void);

/* Dequantize/convert one row of n elements of type t to fp32. */
int kern_row_to_f32(float *dst, const void *src, ggml_type t, int64_t n);

/* C[M, N] += A[M, K] · B[K, N], fp32, B and C row-major and contiguous (row stride N), A(i, k) = a[i*a_rs + k*a_cs]
 * (so a transposed A is a_rs = 1, a_cs = M). AVX2 + OpenMP over tiles of C; the summation order of each element
 * is fixed (k ascending in chunks of 256), so results do not depend on the thread count. */
int kern_gemm_acc(float *c, const float *a, int64_t a_rs, int64_t a_cs, const float *b, int64_t M, int64_t N,
                  int64_t K);
/* Backward of kern_matmul with fp32 W (y[T, n_out] = x[T, n_in] · Wᵀ): dx[T, n_in] += dy · W and
 * dw[n_out, n_in] += dyᵀ · x (either may be NULL). Deterministic for any thread count. */
int kern_matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int64_t T,
                         int64_t n_in, int64_t n_out);

/* "avx512bf16", "avx512", "avx2" or "scalar": the path kern_matmul takes on this CPU for a call made on this thread.
 * The CPU and MOEC_KERN are probed once per process; MOEC_KERN names the most the path may use (scalar: the portable
 * path; avx2 keeps an AVX-512 CPU on the AVX2 kernels; avx512: no BF16 arithmetic). "avx512" needs AVX-512 F, BW, VL
 * and VNNI enabled by the OS (the other kernels of that path are the AVX2 ones); "avx512bf16" also AVX512_BF16, and
 * then BF16 weights are multiplied by the activations rounded to BF16 (to nearest even) with fp32 sums, as llama.cpp
 * does on such CPUs: about 2^-9 relative error per element more than the exact fp32 product of the other paths. */
const char *kern_path(void);
/* Test hook: on != 0 makes kern calls made on the calling thread take the portable scalar path (as MOEC_KERN=scalar
 * would for the whole process); on = 0 restores the default. Returns the previous setting. */
int kern_force_scalar(int on);

/* Activation quantization used by kern_matmul (exposed for tests/bench): x[n] (n % 32 == 0) -> kern_act_bytes(n)
 * bytes of blocks {f32 d; f32 ds; i16 s[2]; i8 q[32]} with d = amax/127 (NaN ignored), id = 1/d (0 if d = 0),
 * q = x*id (fp32 product) rounded to nearest with ties to even, clamped to [-127, 127], NaN -> 0; s[h] = sum of
 * q[16h..16h+15], ds = d*(s[0]+s[1]). Both paths give the same bytes. */
void kern_quantize_act(void *dst, const float *x, int64_t n);
size_t kern_act_bytes(int64_t n);

#endif
