/* init: random initialisation of a model_create'd model and writing it as GGUF. See init.h. */
#include "init.h"

#include <math.h>
#include <string.h>

#include "quant.h"
#include "util.h"

static bool has(const char *name, const char *part) { return strstr(name, part) != NULL; }

void init_rule(const model *m, const model_param *p, float std, init_kind *kind, float *a) {
    const char *n = p->name;
    if (has(n, "lfa_conv")) {
        /* weight {in, out, 2}: fan_in = in·2; bias of conv1 {H/2} has in = H, bias of conv2 {H} has in = H/2 */
        int64_t in = p->n_dims >= 2 ? p->ne[0] : (has(n, "lfa_conv1") ? m->hp.n_embd : m->hp.n_embd / 2);
        *kind = INIT_UNIFORM;
        *a = 1.0f / sqrtf((float)(in * 2));
        return;
    }
    if (p->n_dims == 1) { /* every other vector is a norm weight */
        *kind = INIT_ONES;
        *a = 1.0f;
        return;
    }
    *kind = INIT_NORMAL;
    *a = (has(n, "attn_output") || has(n, "ffn_down")) ? std / sqrtf(2.0f * (float)m->hp.n_layer) : std;
}

/* splitmix64 finaliser: mixes (seed, tensor, chunk) into one stream seed */
static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

int init_model_weights(model *m, uint64_t seed, float std) {
    float *flat = model_flat(m);
    if (!flat) return moec_set_error("init: not a model_create'd model");
    if (!(std > 0.0f) || !isfinite(std)) return moec_set_error("init: std %g must be positive", (double)std);
    /* all (tensor, chunk) work items, run in parallel; each is independent and deterministic */
    size_t n_items = 0;
    for (size_t i = 0; i < m->n_params; i++) n_items += (m->params[i].numel + INIT_CHUNK - 1) / INIT_CHUNK;
    size_t *item_p = moec_malloc((n_items ? n_items : 1) * 2 * sizeof(size_t));
    if (!item_p) return -1;
    size_t k = 0;
    for (size_t i = 0; i < m->n_params; i++)
        for (size_t c = 0; c * INIT_CHUNK < m->params[i].numel; c++) item_p[2 * k] = i, item_p[2 * k + 1] = c, k++;
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t it = 0; it < n_items; it++) {
        size_t i = item_p[2 * it], c = item_p[2 * it + 1];
        const model_param *p = &m->params[i];
        init_kind kind;
        float a;
        init_rule(m, p, std, &kind, &a);
        size_t j0 = c * INIT_CHUNK, j1 = j0 + INIT_CHUNK < p->numel ? j0 + INIT_CHUNK : p->numel;
        float *w = flat + p->offset;
        moec_rng rng;
        moec_rng_seed(&rng, mix(mix(seed) ^ mix(((uint64_t)i << 32) ^ (uint64_t)c)));
        for (size_t j = j0; j < j1; j++) {
            if (kind == INIT_ONES) w[j] = 1.0f;
            else if (kind == INIT_NORMAL) w[j] = a * moec_rng_normal(&rng);
            else w[j] = a * (2.0f * moec_rng_uniform(&rng) - 1.0f);
        }
    }
    moec_free(item_p);
    return 0;
}

ggml_type init_tensor_type(const model_param *p, ggml_type type) {
    if (p->n_dims < 2) return GGML_F32;
    if (type != GGML_Q8_0 && type != GGML_Q4_0) return type;
    if (strstr(p->name, "ffn_gate_inp") || strstr(p->name, "ffn_router_") || strstr(p->name, "lfa_conv") ||
        p->ne[0] % QUANT_QK != 0)
        return GGML_F32;
    return type;
}

int init_write_gguf(const model *m, const char *path, ggml_type type, const tok_vocab *vocab) {
    gguf_writer *w = NULL;
    void **conv = NULL;
    model_tensor *saved = NULL;
    size_t n_saved = 0;
    const float *flat = m->flat;
    int rc = -1;
    CHECK(flat && !m->gguf, "init: not a model_create'd model");
    CHECK(type == GGML_F32 || type == GGML_F16 || type == GGML_BF16 || type == GGML_Q8_0 || type == GGML_Q4_0,
          "init: type %s not supported (F32, F16, BF16, Q8_0, Q4_0)", ggml_type_name(type));
    if (vocab)
        CHECK(tok_n_vocab(vocab) == m->hp.n_vocab, "init: tokenizer has %d tokens, the model %lld",
              (int)tok_n_vocab(vocab), (long long)m->hp.n_vocab);
    w = gguf_w_new();
    TRY_PTR(w);
    TRY(gguf_w_set_str(w, "general.name", "moec-init"));
    /* model_gguf_fill writes each parameter from its view: point the matrix views at converted copies for the
     * duration of the fill + write, then restore them (m is logically unchanged). */
    conv = moec_calloc(m->n_params ? m->n_params : 1, sizeof(void *));
    saved = moec_calloc(m->n_params ? m->n_params : 1, sizeof(model_tensor));
    TRY_PTR(conv);
    TRY_PTR(saved);
    for (size_t i = 0; i < m->n_params; i++) {
        const model_param *p = &m->params[i];
        saved[i] = *p->view;
        n_saved = i + 1;
        ggml_type t = init_tensor_type(p, type);
        if (t == GGML_F32) continue;
        const int64_t ne0 = p->ne[0], rows = (int64_t)(p->numel / (size_t)ne0);
        size_t rb = ggml_row_bytes(t, ne0), bytes;
        CHECK(rb > 0 && moec_mul_ok(rb, (size_t)rows, &bytes), "init: tensor %s: bad size for %s", p->name,
              ggml_type_name(t));
        uint8_t *dst = moec_malloc(bytes);
        TRY_PTR(dst);
        conv[i] = dst;
        const float *src = flat + p->offset;
        /* cannot fail: t is writable and ne0 a multiple of its block (init_tensor_type) */
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) (void)quant_row(t, src + r * ne0, dst + (size_t)r * rb, ne0);
        p->view->data = dst;
        p->view->type = t;
    }
    TRY(model_gguf_fill(m, w));
    if (vocab) TRY(tok_write_gguf(vocab, w));
    TRY(gguf_w_write(w, path));
    rc = 0;
fail:
    for (size_t i = 0; i < n_saved; i++) *m->params[i].view = saved[i];
    if (conv)
        for (size_t i = 0; i < m->n_params; i++) moec_free(conv[i]);
    moec_free(conv);
    moec_free(saved);
    gguf_w_free(w);
    if (rc != 0) moec_wrap_error("%s", path);
    return rc;
}
