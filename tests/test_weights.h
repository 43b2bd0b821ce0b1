/* Random weight matrices of any kern type, shared by the kern tests (include after test.h, kern.h, quant.h, util.h). */
#ifndef MOEC_TEST_WEIGHTS_H
#define MOEC_TEST_WEIGHTS_H

/* w: [n_out rows of ggml_row_bytes(t, n_in)] of type t: float types and Q8_0/Q4_0 through quant_row of N(0, 0.1²)
 * values; Q4_1/Q4_K/Q6_K as random bytes with sane block scales (d in [0.002, 0.004), small mins). NULL if out of
 * memory; free with moec_free. */
static void *t_random_weights(ggml_type t, int64_t n_in, int64_t n_out, moec_rng *r) {
    size_t rb = ggml_row_bytes(t, n_in);
    uint8_t *w = moec_malloc(rb * (size_t)n_out);
    float *row = malloc((size_t)n_in * sizeof(float));
    if (!w || !row) {
        moec_free(w);
        free(row);
        return NULL;
    }
    for (int64_t o = 0; o < n_out; o++) {
        uint8_t *p = w + rb * (size_t)o;
        if (t == GGML_Q4_K || t == GGML_Q6_K || t == GGML_Q4_1) {
            for (size_t i = 0; i < rb; i++) p[i] = (uint8_t)moec_rng_u64(r);
            for (size_t b = 0; b < rb; b += t == GGML_Q4_K ? 144 : t == GGML_Q4_1 ? 20 : 210) {
                uint16_t d = moec_f32_to_f16(0.002f * (1.0f + moec_rng_uniform(r)));
                uint16_t dm = moec_f32_to_f16(0.004f * moec_rng_uniform(r));
                if (t == GGML_Q4_K || t == GGML_Q4_1) {
                    if (t == GGML_Q4_1) dm = moec_f32_to_f16(0.02f * (moec_rng_uniform(r) - 0.5f));
                    memcpy(p + b, &d, 2);
                    memcpy(p + b + 2, &dm, 2);
                } else {
                    memcpy(p + b + 208, &d, 2);
                }
            }
        } else {
            for (int64_t i = 0; i < n_in; i++) row[i] = moec_rng_normal(r) * 0.1f;
            quant_row(t, row, p, n_in);
        }
    }
    free(row);
    return w;
}

#endif
