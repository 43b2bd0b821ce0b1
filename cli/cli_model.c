/* Helpers shared by the model commands. See cli_model.h. */
#include "cli_model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "util.h"

int cli_parse_token_ids(const char *cmd, const char *s, int32_t **ids, size_t *n) {
    size_t cap = 16, k = 0;
    int32_t *a = malloc(cap * sizeof(int32_t));
    if (!a) {
        cli_usage_error(cmd, "out of memory");
        return -1;
    }
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX ||
            (*end && *end != ' ' && *end != ',' && *end != '\t' && *end != '\n' && *end != '\r')) {
            cli_usage_error(cmd, "--tokens: bad token id near '%.20s'", p);
            free(a);
            return -1;
        }
        if (k == cap) {
            int32_t *b = realloc(a, 2 * cap * sizeof(int32_t));
            if (!b) {
                free(a);
                cli_usage_error(cmd, "out of memory");
                return -1;
            }
            a = b, cap *= 2;
        }
        a[k++] = (int32_t)v;
        p = end;
    }
    *ids = a, *n = k;
    return 0;
}

int cli_parse_rope_table(const char *cmd, const char *s, int *out) {
    if (s && !strcmp(s, "hf")) *out = MODEL_ROPE_TABLE_HF;
    else if (s && !strcmp(s, "fp32")) *out = MODEL_ROPE_TABLE_FP32;
    else {
        cli_usage_error(cmd, "--rope-table needs hf or fp32, got '%s'", s ? s : "");
        return -1;
    }
    return 0;
}

int cli_parse_kv_type(const char *cmd, const char *s, int *out) {
    if (s && !strcmp(s, "f32")) *out = GGML_F32;
    else if (s && !strcmp(s, "f16")) *out = GGML_F16;
    else {
        cli_usage_error(cmd, "--kv needs f32 or f16, got '%s'", s ? s : "");
        return -1;
    }
    return 0;
}

void cli_set_threads(long n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads((int)n);
#else
    (void)n;
#endif
}

int cli_write_npy_f32(const char *path, const float *data, int64_t rows, int64_t cols) {
    char hdr[128];
    int hl = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                      (long long)rows, (long long)cols);
    size_t total_hdr = 10 + (size_t)hl + 1;
    size_t pad = (64 - total_hdr % 64) % 64;
    size_t hlen = (size_t)hl + pad + 1, nbytes = (size_t)rows * (size_t)cols * sizeof(float);
    size_t len = 10 + hlen + nbytes;
    unsigned char *buf = moec_malloc(len);
    if (!buf) return -1;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(hlen & 0xff), buf[9] = (unsigned char)(hlen >> 8);
    memcpy(buf + 10, hdr, (size_t)hl);
    memset(buf + 10 + hl, ' ', pad);
    buf[10 + hl + pad] = '\n';
    memcpy(buf + 10 + hlen, data, nbytes); /* host is little-endian (x86-64/aarch64) */
    int rc = moec_write_file_atomic(path, buf, len);
    moec_free(buf);
    return rc;
}

tok_vocab *cli_load_vocab(const model *m, const char *vocab_path) {
    if (vocab_path) return tok_load(vocab_path);
    if (!m->gguf || gguf_find_key(m->gguf, "tokenizer.ggml.tokens") < 0) {
        moec_set_error("the model file has no tokenizer (tokenizer.ggml.* keys): pass --vocab FILE or --tokens");
        return NULL;
    }
    return tok_load_gguf(m->gguf);
}

#include "sample.h"

#define CLI_PREFILL_CHUNK 512

int cli_generate_loop(const model *m, seq_state *s, struct sampler *sp, const int32_t *ids, size_t n,
                      int64_t n_predict, int64_t n_valid, const int32_t *eos, int n_eos, int (*emit)(int32_t id, void *user),
                      void *user, cli_gen_stats *st) {
    memset(st, 0, sizeof *st);
    int64_t V = m->hp.n_vocab;
    float *logits = moec_malloc((size_t)V * sizeof(float));
    if (!logits) return -1;
    double t0 = moec_time();
    if (n == 0) {
        moec_free(logits);
        return moec_set_error("empty prompt");
    }
    /* prefill in chunks: bounded scratch memory for long prompts, same logits as one pass */
    for (size_t i = 0; i < n; i += CLI_PREFILL_CHUNK) {
        size_t c = n - i < CLI_PREFILL_CHUNK ? n - i : CLI_PREFILL_CHUNK;
        if (model_forward(m, s, ids + i, (int64_t)c, logits, MODEL_FWD_LAST, NULL) != 0) goto fail;
    }
    st->n_prompt = (int64_t)n;
    st->t_prompt = moec_time() - t0;
    t0 = moec_time();
    while (st->n_gen < n_predict) {
        for (int64_t i = n_valid > 0 ? n_valid : V; i < V; i++) logits[i] = -INFINITY;
        int32_t id = sample_next(sp, logits);
        int stop = 0;
        for (int i = 0; i < n_eos; i++)
            if (eos[i] == id) stop = 1;
        if (stop) {
            st->stopped_eos = 1;
            break;
        }
        if (emit(id, user) != 0) goto fail;
        st->n_gen++;
        if (st->n_gen == n_predict) break;
        if (s->pos >= s->n_ctx) {
            st->ctx_full = 1;
            break;
        }
        if (model_forward(m, s, &id, 1, logits, MODEL_FWD_LAST, NULL) != 0) goto fail;
    }
    st->t_gen = moec_time() - t0;
    moec_free(logits);
    return 0;
fail:
    moec_free(logits);
    return -1;
}
