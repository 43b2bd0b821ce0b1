/* kern: the hot kernels. Matrix products against weights of any supported type, threaded with OpenMP.
 * Weight matrices are stored as in GGUF: W has n_out rows of n_in elements (ne[0] = n_in), row-major,
 * each row ggml_row_bytes(type, n_in) bytes. Activations are fp32. */
#ifndef MOEC_KERN_H
#define MOEC_KERN_H

#include <stddef.h>
#include <stdint.h>
#include "gguf.h"

/* y[T, n_out] = x[T, n_in] · Wᵀ, W: [n_out, n_in] of type wtype. y is overwritten.
 * Supported: F32, F16, BF16 (more types come with quant.c). Returns -1 (error set) for an unsupported type. */
int kern_matmul(float *y, const float *x, const void *w, ggml_type wtype, int64_t T, int64_t n_in, int64_t n_out);

/* Dequantize/convert one row of n elements of type t to fp32. */
int kern_row_to_f32(float *dst, const void *src, ggml_type t, int64_t n);

#endif
