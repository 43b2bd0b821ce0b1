/* Quantized weights through the whole forward: every matrix of a yuan2moe model (LFA taps, attention router,
 * 3-D expert tensors) and of a llama MoE model stored as F16 / BF16 / Q8_0 / Q4_0. Oracle: the same model with
 * those weights dequantized to fp32, so the test checks how taps and experts are sliced by row bytes and how the
 * kernels are used, not the quantization error itself. Tolerance (of max|logit|): 1e-4 for F16/BF16; 1e-1 for
 * Q8_0/Q4_0, whose kernels quantize activations to int8 (measured 2-4e-2 through two layers and the routers);
 * a wrong tap or expert slice gives errors of order 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "kern.h"
#include "model.h"
#include "quant.h"
#include "test.h"
#include "util.h"

static double rel_err(const float *a, const float *b, size_t n) {
    double m = 0, d = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(b[i]) > m) m = fabs(b[i]);
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e;
    }
    return d / (m > 0 ? m : 1);
}

/* write m with every matrix as type t; fill deq (a model_create'd copy) with the dequantized weights */
static int write_quant(const model *m, ggml_type t, const char *path, model *deq) {
    gguf_writer *w = gguf_w_new();
    void **bufs = calloc(m->n_params, sizeof(void *));
    int rc = -1;
    if (!w || !bufs) goto out;
    for (size_t i = 0; i < m->n_params; i++) {
        const model_param *p = &m->params[i];
        const float *src = p->view->data;
        float *dst = model_flat(deq) + deq->params[i].offset;
        if (p->n_dims == 1) {
            memcpy(dst, src, p->numel * sizeof(float));
            continue;
        }
        size_t rb = ggml_row_bytes(t, p->ne[0]), rows = p->numel / (size_t)p->ne[0];
        bufs[i] = malloc(rb * rows);
        if (!bufs[i]) goto out;
        for (size_t r = 0; r < rows; r++) {
            uint8_t *q = (uint8_t *)bufs[i] + r * rb;
            if (quant_row(t, src + r * (size_t)p->ne[0], q, p->ne[0]) != 0) goto out;
            if (kern_row_to_f32(dst + r * (size_t)p->ne[0], q, t, p->ne[0]) != 0) goto out;
        }
    }
    /* keys: write the fp32 file, copy its keys, add the quantized tensors */
    char tmpf[600];
    snprintf(tmpf, sizeof tmpf, "%s.f32", path);
    if (model_write_gguf(m, tmpf) != 0) goto out;
    gguf_file *f = gguf_open(tmpf);
    if (!f) goto out;
    for (int64_t i = 0; i < gguf_n_kv(f); i++)
        if (gguf_w_copy_kv(w, f, gguf_key(f, i)) != 0) {
            gguf_close(f);
            goto out;
        }
    for (size_t i = 0; i < m->n_params; i++) {
        const model_param *p = &m->params[i];
        int r = p->n_dims == 1 ? gguf_w_add_tensor(w, p->name, GGML_F32, 1, p->ne, p->view->data)
                               : gguf_w_add_tensor(w, p->name, t, (uint32_t)p->n_dims, p->ne, bufs[i]);
        if (r != 0) {
            gguf_close(f);
            goto out;
        }
    }
    rc = gguf_w_write(w, path);
    gguf_close(f);
    unlink(tmpf);
out:
    if (bufs)
        for (size_t i = 0; i < m->n_params; i++) free(bufs[i]);
    free(bufs);
    gguf_w_free(w);
    return rc;
}

static void check(const model_hparams *hp, ggml_type t, double tol, const char *name) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/moec_test_quant_%d.gguf", (int)getpid());
    model *m = model_create(hp, NULL), *deq = model_create(hp, NULL), *q = NULL;
    T_CHECK(m && deq && model_init_random(m, 11, 0.2f) == 0, "%s: create", name);
    if (!m || !deq) goto out;
    T_CHECK(write_quant(m, t, path, deq) == 0, "%s: write: %s", name, moec_last_error());
    q = model_load(path, NULL);
    T_CHECK(q != NULL, "%s: load: %s", name, moec_last_error());
    if (!q) goto out;
    T_CHECK(q->layers[0].wq.type == t, "%s: matrices stored as %s", name, ggml_type_name(t));
    enum { T = 6 };
    int32_t ids[T] = {3, 17, 60, 2, 33, 9};
    int64_t V = hp->n_vocab;
    float *a = calloc((size_t)(T * V), sizeof(float)), *b = calloc((size_t)(T * V), sizeof(float)),
          *c = calloc((size_t)(T * V), sizeof(float));
    seq_state *s1 = model_seq_new(q, 8), *s2 = model_seq_new(deq, 8), *s3 = model_seq_new(q, 8);
    T_CHECK(a && b && c && s1 && s2 && s3, "alloc");
    if (a && b && c && s1 && s2 && s3) {
        T_CHECK(model_forward(q, s1, ids, T, a, 0, NULL) == 0, "%s: forward: %s", name, moec_last_error());
        T_CHECK(model_forward(deq, s2, ids, T, b, 0, NULL) == 0, "%s: forward deq", name);
        for (int i = 0; i < T; i++) T_CHECK(model_forward(q, s3, ids + i, 1, c + i * V, 0, NULL) == 0, "step");
        double e = rel_err(a, b, (size_t)(T * V)), e2 = rel_err(c, a, (size_t)(T * V));
        printf("%s: quantized vs dequantized-fp32 model: %.2e of max|logit|; decode vs full %.2e\n", name, e, e2);
        T_CHECK(e <= tol, "%s: quantized forward differs by %.3g (tol %.3g)", name, e, tol);
        T_CHECK(e2 <= tol, "%s: quantized decode vs full pass differ by %.3g", name, e2);
    }
    model_seq_free(s1);
    model_seq_free(s2);
    model_seq_free(s3);
    free(a);
    free(b);
    free(c);
out:
    unlink(path);
    model_free(m);
    model_free(deq);
    model_free(q);
}

int main(void) {
    model_hparams y = {0};
    y.arch = MODEL_ARCH_YUAN2MOE;
    y.n_vocab = 96, y.n_embd = 64, y.n_layer = 2, y.n_head = 2, y.n_head_kv = 2, y.head_dim = 32;
    y.n_ctx_train = 64, y.n_ff = 64, y.n_ff_exp = 64, y.n_expert = 4, y.n_expert_used = 2, y.n_dense_lead = 1;
    y.rope_dims = 16, y.rope_base = 10000, y.norm_eps = 1e-6f, y.moe_router = MODEL_FFN_MOE_ATTN, y.lfa = true;
    y.tied = true;
    model_hparams l = {0};
    l.arch = MODEL_ARCH_LLAMA;
    l.n_vocab = 96, l.n_embd = 64, l.n_layer = 2, l.n_head = 4, l.n_head_kv = 2, l.head_dim = 16;
    l.n_ctx_train = 64, l.n_ff_exp = 96, l.n_expert = 3, l.n_expert_used = 2, l.rope_dims = 16;
    l.rope_base = 10000, l.norm_eps = 1e-5f, l.moe_router = MODEL_FFN_MOE_LINEAR, l.tied = false;
    const struct {
        ggml_type t;
        double tol;
    } types[] = {{GGML_F16, 1e-4}, {GGML_BF16, 1e-4}, {GGML_Q8_0, 1e-1}, {GGML_Q4_0, 1e-1}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (!quant_can_write(types[i].t)) continue;
        char n1[64], n2[64];
        snprintf(n1, sizeof n1, "yuan2moe %s", ggml_type_name(types[i].t));
        snprintf(n2, sizeof n2, "llama MoE %s", ggml_type_name(types[i].t));
        check(&y, types[i].t, types[i].tol, n1);
        check(&l, types[i].t, types[i].tol, n2);
    }
    return t_done("test_model_quant");
}
