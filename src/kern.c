#include "kern.h"

#include "util.h"

int kern_row_to_f32(float *dst, const void *src, ggml_type t, int64_t n) {
    switch (t) {
    case GGML_F32:
        for (int64_t i = 0; i < n; i++) dst[i] = ((const float *)src)[i];
        return 0;
    case GGML_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = moec_f16_to_f32(((const uint16_t *)src)[i]);
        return 0;
    case GGML_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = moec_bf16_to_f32(((const uint16_t *)src)[i]);
        return 0;
    default:
        return moec_set_error("kern: unsupported weight type %s", ggml_type_name(t));
    }
}

/* Simple reference path: convert each weight row once, dot it with every token. */
int kern_matmul(float *y, const float *x, const void *w, ggml_type wtype, int64_t T, int64_t n_in, int64_t n_out) {
    size_t rb = ggml_row_bytes(wtype, n_in);
    if (rb == 0) return -1;
    int bad = 0;
#pragma omp parallel
    {
        float *row = moec_malloc((size_t)n_in * sizeof(float));
        if (!row) {
#pragma omp atomic write
            bad = 1;
        }
#pragma omp for schedule(static)
        for (int64_t o = 0; o < n_out; o++) {
            if (!row || kern_row_to_f32(row, (const uint8_t *)w + (size_t)o * rb, wtype, n_in) != 0) {
#pragma omp atomic write
                bad = 1;
                continue;
            }
            for (int64_t t = 0; t < T; t++) {
                const float *xt = x + t * n_in;
                float s = 0.0f;
                for (int64_t i = 0; i < n_in; i++) s += row[i] * xt[i];
                y[t * n_out + o] = s;
            }
        }
        moec_free(row);
    }
    return bad ? moec_set_error("kern_matmul: unsupported weight type %s or out of memory", ggml_type_name(wtype)) : 0;
}
