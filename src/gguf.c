/* gguf: GGUF v3 reader and writer. See gguf.h. */
#include "gguf.h"

#include "util.h"

int ggml_type_block(ggml_type t, size_t *block_elems, size_t *block_bytes) {
    size_t e = 0, b = 0;
    switch (t) {
    case GGML_F32: e = 1, b = 4; break;
    case GGML_F16: e = 1, b = 2; break;
    case GGML_BF16: e = 1, b = 2; break;
    case GGML_Q4_0: e = 32, b = 18; break;
    case GGML_Q4_1: e = 32, b = 20; break;
    case GGML_Q8_0: e = 32, b = 34; break;
    case GGML_Q4_K: e = 256, b = 144; break;
    case GGML_Q6_K: e = 256, b = 210; break;
    default: return moec_set_error("unknown ggml tensor type %d", (int)t);
    }
    if (block_elems) *block_elems = e;
    if (block_bytes) *block_bytes = b;
    return 0;
}

const char *ggml_type_name(ggml_type t) {
    switch (t) {
    case GGML_F32: return "F32";
    case GGML_F16: return "F16";
    case GGML_BF16: return "BF16";
    case GGML_Q4_0: return "Q4_0";
    case GGML_Q4_1: return "Q4_1";
    case GGML_Q8_0: return "Q8_0";
    case GGML_Q4_K: return "Q4_K";
    case GGML_Q6_K: return "Q6_K";
    }
    return "?";
}

size_t ggml_row_bytes(ggml_type t, int64_t n) {
    size_t be = 1, bb = 0, r;
    if (ggml_type_block(t, &be, &bb) != 0) return 0;
    if (n < 0 || (size_t)n % be != 0) {
        moec_set_error("row of %lld elements is not a multiple of the %s block size %zu", (long long)n,
                       ggml_type_name(t), be);
        return 0;
    }
    if (!moec_mul_ok((size_t)n / be, bb, &r)) {
        moec_set_error("row size overflow");
        return 0;
    }
    return r;
}
