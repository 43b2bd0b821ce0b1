/* quant: ggml block quantizers/dequantizers. See quant.h. Our own code, written from the format description. */
#include "quant.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kern.h"
#include "util.h"

static inline uint16_t rd16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

void quant_q8_0(const float *x, void *dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / QUANT_QK; b++, x += QUANT_QK, out += 34) {
        float amax = 0.0f;
        for (int j = 0; j < QUANT_QK; j++) {
            float a = fabsf(x[j]);
            if (a > amax) amax = a; /* NaN never compares greater: ignored */
        }
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        wr16(out, moec_f32_to_f16(d));
        for (int j = 0; j < QUANT_QK; j++) {
            float v = roundf(x[j] * id);
            if (!(v >= -127.0f)) v = v > 0 ? 127.0f : (v < 0 ? -127.0f : 0.0f); /* NaN -> 0, guard range */
            if (v > 127.0f) v = 127.0f;
            out[2 + j] = (uint8_t)(int8_t)v;
        }
    }
}

void quant_q4_0(const float *x, void *dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t b = 0; b < n / QUANT_QK; b++, x += QUANT_QK, out += 18) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QUANT_QK; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        wr16(out, moec_f32_to_f16(d));
        for (int j = 0; j < QUANT_QK / 2; j++) {
            uint8_t q[2];
            for (int h = 0; h < 2; h++) {
                float v = x[j + 16 * h] * id + 8.5f;
                if (!(v >= 0.0f)) v = 0.0f; /* NaN or below range (cannot happen for finite x) */
                int qi = (int)v;            /* truncation, as the reference */
                q[h] = (uint8_t)(qi > 15 ? 15 : qi);
            }
            out[2 + j] = (uint8_t)(q[0] | (q[1] << 4));
        }
    }
}

void quant_deq_q8_0(const void *src, float *x, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / QUANT_QK; b++, p += 34, x += QUANT_QK) {
        float d = moec_f16_to_f32(rd16(p));
        for (int j = 0; j < QUANT_QK; j++) x[j] = d * (float)(int8_t)p[2 + j];
    }
}

void quant_deq_q4_0(const void *src, float *x, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / QUANT_QK; b++, p += 18, x += QUANT_QK) {
        float d = moec_f16_to_f32(rd16(p));
        for (int j = 0; j < 16; j++) {
            x[j] = d * (float)((p[2 + j] & 15) - 8);
            x[j + 16] = d * (float)((p[2 + j] >> 4) - 8);
        }
    }
}

void quant_deq_q4_1(const void *src, float *x, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / QUANT_QK; b++, p += 20, x += QUANT_QK) {
        float d = moec_f16_to_f32(rd16(p)), m = moec_f16_to_f32(rd16(p + 2));
        for (int j = 0; j < 16; j++) {
            x[j] = d * (float)(p[4 + j] & 15) + m;
            x[j + 16] = d * (float)(p[4 + j] >> 4) + m;
        }
    }
}

void quant_q4_k_scale_min(const uint8_t *s, int j, uint8_t *sc, uint8_t *m) {
    /* bytes 0..3: low 6 bits = scale of sub-blocks 0..3, top 2 bits = high bits of scale 4..7;
     * bytes 4..7: same for the mins; bytes 8..11: low nibble = low 4 bits of scale 4..7, high nibble = of min 4..7 */
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

void quant_deq_q4_k(const void *src, float *x, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / QUANT_QKK; b++, p += 144) {
        float d = moec_f16_to_f32(rd16(p)), dmin = moec_f16_to_f32(rd16(p + 2));
        const uint8_t *sc = p + 4, *qs = p + 16;
        for (int g = 0; g < 4; g++) { /* 64 elements per group: sub-blocks 2g (low nibbles), 2g+1 (high) */
            uint8_t s0, m0, s1, m1;
            quant_q4_k_scale_min(sc, 2 * g, &s0, &m0);
            quant_q4_k_scale_min(sc, 2 * g + 1, &s1, &m1);
            float d0 = d * s0, d1 = d * s1, o0 = dmin * m0, o1 = dmin * m1;
            for (int l = 0; l < 32; l++) {
                x[l] = d0 * (float)(qs[32 * g + l] & 15) - o0;
                x[32 + l] = d1 * (float)(qs[32 * g + l] >> 4) - o1;
            }
            x += 64;
        }
    }
}

void quant_deq_q6_k(const void *src, float *x, int64_t n) {
    const uint8_t *p = src;
    for (int64_t b = 0; b < n / QUANT_QKK; b++, p += 210) {
        const uint8_t *ql = p, *qh = p + 128;
        const int8_t *sc = (const int8_t *)(p + 192);
        float d = moec_f16_to_f32(rd16(p + 208));
        /* two halves of 128: element l + 32*k (k = 0..3) takes ql[l (+32 for k odd)] low (k < 2) or high nibble,
         * and bits 2k..2k+1 of qh[l]; scale index = l/16 + 2k */
        for (int h = 0; h < 2; h++) {
            for (int l = 0; l < 32; l++) {
                int q0 = (ql[l] & 15) | (((qh[l] >> 0) & 3) << 4);
                int q1 = (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4);
                int q2 = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                int q3 = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                int is = l / 16;
                x[l] = d * sc[is] * (float)(q0 - 32);
                x[l + 32] = d * sc[is + 2] * (float)(q1 - 32);
                x[l + 64] = d * sc[is + 4] * (float)(q2 - 32);
                x[l + 96] = d * sc[is + 6] * (float)(q3 - 32);
            }
            x += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

int quant_can_write(ggml_type t) {
    return t == GGML_F32 || t == GGML_F16 || t == GGML_BF16 || t == GGML_Q8_0 || t == GGML_Q4_0;
}

int quant_row(ggml_type t, const float *x, void *dst, int64_t n) {
    if (!quant_can_write(t)) return moec_set_error("quant: cannot write type %s", ggml_type_name(t));
    if (ggml_row_bytes(t, n) == 0) return -1;
    uint8_t *o = dst;
    switch (t) {
    case GGML_F32: memcpy(dst, x, (size_t)n * 4); break;
    case GGML_F16: for (int64_t i = 0; i < n; i++) wr16(o + 2 * i, moec_f32_to_f16(x[i])); break;
    case GGML_BF16: for (int64_t i = 0; i < n; i++) wr16(o + 2 * i, moec_f32_to_bf16(x[i])); break;
    case GGML_Q8_0: quant_q8_0(x, dst, n); break;
    case GGML_Q4_0: quant_q4_0(x, dst, n); break;
    default: break;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* model files                                                                                    */

int quant_file_type(ggml_type t) {
    switch (t) {
    case GGML_F32: return 0;
    case GGML_F16: return 1;
    case GGML_Q4_0: return 2;
    case GGML_Q8_0: return 7;
    case GGML_BF16: return 32;
    default: return -1;
    }
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

ggml_type quant_pick_type(const char *name, uint32_t n_dims, int64_t ne0, ggml_type cur, ggml_type target) {
    if (n_dims < 2 || !ends_with(name, ".weight") || strncmp(name, "train.", 6) == 0) return cur;
    if (ends_with(name, "_norm.weight") || strstr(name, "ffn_gate_inp") || strstr(name, "ffn_router_")) return cur;
    ggml_type t = target;
    /* the most sensitive matrices keep 8 bits at Q4_0: embedding, output, and the LFA convolutions (every token's
     * attention input passes through them; 2·H² weights per layer, too many bytes to leave in F16/F32) */
    if (target == GGML_Q4_0 &&
        (!strcmp(name, "token_embd.weight") || !strcmp(name, "output.weight") || strstr(name, "lfa_conv")))
        t = GGML_Q8_0;
    size_t be = 1;
    if (ggml_type_block(t, &be, NULL) != 0 || ne0 % (int64_t)be != 0) return cur;
    return t;
}

typedef struct {
    const gguf_tensor *src;
    ggml_type dst;
    size_t src_rb, dst_rb;
} quant_job;

/* gguf_fill_fn: rows [row0, row0+nrows) of src converted to dst */
static int quant_fill(void *user, void *dst, int64_t row0, int64_t nrows) {
    const quant_job *j = user;
    int64_t n = j->src->ne[0];
    int bad = 0;
#pragma omp parallel if (nrows * n >= 65536)
    {
        float *row = moec_malloc((size_t)n * sizeof(float));
        if (!row) {
#pragma omp atomic write
            bad = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < nrows; r++) {
            if (!row) continue;
            const uint8_t *s = (const uint8_t *)j->src->data + (size_t)(row0 + r) * j->src_rb;
            uint8_t *d = (uint8_t *)dst + (size_t)r * j->dst_rb;
            if (kern_row_to_f32(row, s, j->src->type, n) != 0 || quant_row(j->dst, row, d, n) != 0) {
#pragma omp atomic write
                bad = 1;
            }
        }
        moec_free(row);
    }
    return bad ? moec_set_error("converting rows to %s failed", ggml_type_name(j->dst)) : 0;
}

int quant_model_file(const char *in, const char *out, ggml_type target, int64_t *n_changed) {
    gguf_file *f = NULL;
    gguf_writer *w = NULL;
    quant_job *jobs = NULL;
    int64_t changed = 0;
    bool any_quant = false;
    CHECK(quant_can_write(target), "quantize: cannot write type %s (f32, f16, bf16, q8_0, q4_0)",
          ggml_type_name(target));
    TRY_PTR(f = gguf_open(in));
    TRY_PTR(w = gguf_w_new());
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        const char *k = gguf_key(f, i);
        if (!strcmp(k, "general.file_type") || !strcmp(k, "general.quantization_version")) continue;
        TRY(gguf_w_copy_kv(w, f, k));
    }
    int64_t nt = gguf_n_tensors(f);
    jobs = moec_calloc(nt ? (size_t)nt : 1, sizeof(quant_job));
    TRY_PTR(jobs);
    for (int64_t i = 0; i < nt; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        ggml_type dt = quant_pick_type(t->name_z, t->n_dims, t->ne[0], t->type, target);
        if (dt == GGML_Q8_0 || dt == GGML_Q4_0 || dt == GGML_Q4_K || dt == GGML_Q6_K || dt == GGML_Q4_1)
            any_quant = true;
        if (dt == t->type) {
            TRY(gguf_w_add_tensor(w, t->name_z, t->type, t->n_dims, t->ne, t->data));
            continue;
        }
        CHECK(t->type == GGML_F32 || t->type == GGML_F16 || t->type == GGML_BF16 || t->type == GGML_Q8_0 ||
                  t->type == GGML_Q4_0 || t->type == GGML_Q4_1 || t->type == GGML_Q4_K || t->type == GGML_Q6_K,
              "%s: tensor '%s' has type %s, which moec cannot convert", in, t->name_z, ggml_type_name(t->type));
        jobs[i] = (quant_job){t, dt, ggml_row_bytes(t->type, t->ne[0]), ggml_row_bytes(dt, t->ne[0])};
        TRY(gguf_w_add_tensor_fill(w, t->name_z, dt, t->n_dims, t->ne, quant_fill, &jobs[i]));
        changed++;
    }
    TRY(gguf_w_set_u32(w, "general.file_type", (uint32_t)quant_file_type(target)));
    if (any_quant) TRY(gguf_w_set_u32(w, "general.quantization_version", 2));
    TRY(gguf_w_write(w, out));
    if (n_changed) *n_changed = changed;
    gguf_w_free(w);
    moec_free(jobs);
    gguf_close(f);
    return 0;
fail:
    gguf_w_free(w);
    moec_free(jobs);
    gguf_close(f);
    return -1;
}
