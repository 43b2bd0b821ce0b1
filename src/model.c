/* model: loading, creation, GGUF writing, per-sequence state, and the forward pass. See model.h and
 * docs/architecture.md. */
#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kern.h"
#include "moe.h"
#include "ops.h"
#include "util.h"

const char *model_arch_name(model_arch a) {
    switch (a) {
    case MODEL_ARCH_LLAMA: return "llama";
    case MODEL_ARCH_YUAN2MOE: return "yuan2moe";
    }
    return "?";
}

/* ---- hyper-parameters ------------------------------------------------------------------------------------ */

#define LIM_DIM (INT64_C(1) << 20)

int model_hparams_check(const model_hparams *hp) {
    CHECK(hp->arch == MODEL_ARCH_LLAMA || hp->arch == MODEL_ARCH_YUAN2MOE, "unknown architecture id %d",
          (int)hp->arch);
    CHECK(hp->n_embd >= 1 && hp->n_embd <= LIM_DIM, "embedding_length %lld out of range [1, 2^20]",
          (long long)hp->n_embd);
    CHECK(hp->n_layer >= 1 && hp->n_layer <= 65536, "block_count %lld out of range [1, 65536]",
          (long long)hp->n_layer);
    CHECK(hp->n_head >= 1 && hp->n_head <= 65536, "attention.head_count %lld out of range [1, 65536]",
          (long long)hp->n_head);
    CHECK(hp->n_head_kv >= 1 && hp->n_head_kv <= hp->n_head && hp->n_head % hp->n_head_kv == 0,
          "attention.head_count_kv %lld must divide head_count %lld", (long long)hp->n_head_kv,
          (long long)hp->n_head);
    CHECK(hp->head_dim >= 1 && hp->head_dim <= 65536, "head size %lld out of range [1, 65536]",
          (long long)hp->head_dim);
    CHECK(hp->n_head * hp->head_dim <= (INT64_C(1) << 22), "attention width %lld x %lld too large",
          (long long)hp->n_head, (long long)hp->head_dim);
    CHECK(hp->n_vocab >= 1 && hp->n_vocab <= (INT64_C(1) << 28), "vocabulary size %lld out of range",
          (long long)hp->n_vocab);
    CHECK(hp->n_ctx_train >= 1 && hp->n_ctx_train <= (INT64_C(1) << 31), "context_length %lld out of range",
          (long long)hp->n_ctx_train);
    CHECK(hp->rope_dims >= 0 && hp->rope_dims <= hp->head_dim && hp->rope_dims % 2 == 0,
          "rope.dimension_count %lld must be even and <= the head size %lld", (long long)hp->rope_dims,
          (long long)hp->head_dim);
    CHECK(isfinite(hp->rope_base) && hp->rope_base > 0, "rope.freq_base %g must be positive", hp->rope_base);
    CHECK(isfinite(hp->norm_eps) && hp->norm_eps > 0 && hp->norm_eps < 1, "rms epsilon %g out of range",
          hp->norm_eps);
    CHECK(hp->rope_table == MODEL_ROPE_TABLE_FP32 || hp->rope_table == MODEL_ROPE_TABLE_HF, "bad rope table %d",
          (int)hp->rope_table);
    CHECK(hp->n_expert >= 0 && hp->n_expert <= 65536, "expert_count %lld out of range [0, 65536]",
          (long long)hp->n_expert);
    CHECK(hp->n_dense_lead >= 0 && hp->n_dense_lead <= hp->n_layer, "leading_dense_block_count %lld > block_count",
          (long long)hp->n_dense_lead);
    if (hp->n_expert > 0) {
        CHECK(hp->n_expert_used >= 1 && hp->n_expert_used <= hp->n_expert,
              "expert_used_count %lld must be in [1, expert_count %lld]", (long long)hp->n_expert_used,
              (long long)hp->n_expert);
        CHECK(hp->n_ff_exp >= 1 && hp->n_ff_exp <= (INT64_C(1) << 24), "expert feed_forward_length %lld out of range",
              (long long)hp->n_ff_exp);
        CHECK(hp->moe_router == MODEL_FFN_MOE_LINEAR || hp->moe_router == MODEL_FFN_MOE_ATTN, "bad router kind %d",
              (int)hp->moe_router);
    }
    if (hp->n_expert == 0 || hp->n_dense_lead > 0)
        CHECK(hp->n_ff >= 1 && hp->n_ff <= (INT64_C(1) << 24), "feed_forward_length %lld out of range",
              (long long)hp->n_ff);
    if (hp->arch == MODEL_ARCH_YUAN2MOE) {
        CHECK(hp->n_head_kv == hp->n_head, "yuan2moe: head_count_kv %lld != head_count %lld",
              (long long)hp->n_head_kv, (long long)hp->n_head);
        if (hp->lfa) CHECK(hp->n_embd % 2 == 0, "yuan2moe: LFA needs an even embedding_length, got %lld",
                           (long long)hp->n_embd);
    } else {
        CHECK(!hp->lfa, "llama: LFA is a yuan2moe feature");
        CHECK(hp->n_dense_lead == 0, "llama: leading dense blocks are a yuan2moe feature");
    }
    return 0;
fail:
    return -1;
}

model_variant model_layer_variant(const model_hparams *hp, int64_t il) {
    model_variant v;
    v.lfa = hp->lfa;
    v.rope_pairing = hp->arch == MODEL_ARCH_YUAN2MOE ? MODEL_ROPE_NEOX : MODEL_ROPE_NORMAL;
    v.rope_dims = hp->rope_dims;
    v.ffn = (hp->n_expert == 0 || il < hp->n_dense_lead) ? MODEL_FFN_DENSE : hp->moe_router;
    return v;
}

/* ---- parameter table ------------------------------------------------------------------------------------ */

static void add_param(model *m, model_tensor *view, int n_dims, int64_t a, int64_t b, int64_t c, const char *fmt,
                      ...) MOEC_PRINTF(7, 8);
static void add_param(model *m, model_tensor *view, int n_dims, int64_t a, int64_t b, int64_t c, const char *fmt,
                      ...) {
    model_param *p = &m->params[m->n_params++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->n_dims = n_dims;
    p->ne[0] = a, p->ne[1] = b, p->ne[2] = c, p->ne[3] = 1;
    p->numel = (size_t)a * (size_t)b * (size_t)c;
    p->offset = m->n_floats;
    m->n_floats += p->numel;
    p->view = view;
    view->n_dims = n_dims;
    memcpy(view->ne, p->ne, sizeof p->ne);
    view->type = GGML_F32;
    view->data = NULL;
}

/* Build m->params (and m->layers) from m->hp. */
static int build_params(model *m) {
    const model_hparams *hp = &m->hp;
    int64_t H = hp->n_embd, P = hp->n_head * hp->head_dim, Pkv = hp->n_head_kv * hp->head_dim, V = hp->n_vocab;
    int64_t E = hp->n_expert, F = hp->n_ff_exp, Fd = hp->n_ff, Hh = H / 2;
    m->layers = moec_calloc((size_t)hp->n_layer, sizeof(model_layer));
    m->params = moec_calloc((size_t)hp->n_layer * 24 + 4, sizeof(model_param));
    if (E > 0) m->exp_ptrs = moec_calloc((size_t)hp->n_layer * 3, (size_t)E * sizeof(void *));
    if (!m->layers || !m->params || (E > 0 && !m->exp_ptrs)) return -1;
    m->n_params = 0, m->n_floats = 0;
    add_param(m, &m->tok_embd, 2, H, V, 1, "token_embd.weight");
    for (int64_t l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        L->var = model_layer_variant(hp, l);
        add_param(m, &L->attn_norm, 1, H, 1, 1, "blk.%lld.attn_norm.weight", (long long)l);
        add_param(m, &L->wq, 2, H, P, 1, "blk.%lld.attn_q.weight", (long long)l);
        add_param(m, &L->wk, 2, H, Pkv, 1, "blk.%lld.attn_k.weight", (long long)l);
        add_param(m, &L->wv, 2, H, Pkv, 1, "blk.%lld.attn_v.weight", (long long)l);
        add_param(m, &L->wo, 2, P, H, 1, "blk.%lld.attn_output.weight", (long long)l);
        if (L->var.lfa) {
            add_param(m, &L->lfa_c1, 3, H, Hh, 2, "blk.%lld.lfa_conv1.weight", (long long)l);
            add_param(m, &L->lfa_b1, 1, Hh, 1, 1, "blk.%lld.lfa_conv1.bias", (long long)l);
            add_param(m, &L->lfa_c2, 3, Hh, H, 2, "blk.%lld.lfa_conv2.weight", (long long)l);
            add_param(m, &L->lfa_b2, 1, H, 1, 1, "blk.%lld.lfa_conv2.bias", (long long)l);
            add_param(m, &L->lfa_norm, 1, H, 1, 1, "blk.%lld.lfa_norm.weight", (long long)l);
        }
        add_param(m, &L->ffn_norm, 1, H, 1, 1, "blk.%lld.ffn_norm.weight", (long long)l);
        if (L->var.ffn == MODEL_FFN_DENSE) {
            add_param(m, &L->ffn_gate, 2, H, Fd, 1, "blk.%lld.ffn_gate.weight", (long long)l);
            add_param(m, &L->ffn_up, 2, H, Fd, 1, "blk.%lld.ffn_up.weight", (long long)l);
            add_param(m, &L->ffn_down, 2, Fd, H, 1, "blk.%lld.ffn_down.weight", (long long)l);
        } else {
            if (L->var.ffn == MODEL_FFN_MOE_ATTN) {
                add_param(m, &L->router_q, 2, H, E, 1, "blk.%lld.ffn_router_q.weight", (long long)l);
                add_param(m, &L->router_k, 2, H, E, 1, "blk.%lld.ffn_router_k.weight", (long long)l);
                add_param(m, &L->router_v, 2, H, E, 1, "blk.%lld.ffn_router_v.weight", (long long)l);
            } else {
                add_param(m, &L->gate_inp, 2, H, E, 1, "blk.%lld.ffn_gate_inp.weight", (long long)l);
            }
            add_param(m, &L->gate_exps, 3, H, F, E, "blk.%lld.ffn_gate_exps.weight", (long long)l);
            add_param(m, &L->up_exps, 3, H, F, E, "blk.%lld.ffn_up_exps.weight", (long long)l);
            add_param(m, &L->down_exps, 3, F, H, E, "blk.%lld.ffn_down_exps.weight", (long long)l);
            L->exp_gate = m->exp_ptrs + (size_t)(3 * l + 0) * (size_t)E;
            L->exp_up = m->exp_ptrs + (size_t)(3 * l + 1) * (size_t)E;
            L->exp_down = m->exp_ptrs + (size_t)(3 * l + 2) * (size_t)E;
        }
    }
    add_param(m, &m->output_norm, 1, H, 1, 1, "output_norm.weight");
    if (!hp->tied) add_param(m, &m->output, 2, H, V, 1, "output.weight");
    return 0;
}

static size_t tensor_row_bytes(const model_tensor *t) { return ggml_row_bytes(t->type, t->ne[0]); }

/* Matrix k of a 3-D tensor (tap or expert). */
static const void *tensor_slice(const model_tensor *t, int64_t k) {
    return (const uint8_t *)t->data + (size_t)k * (size_t)t->ne[1] * tensor_row_bytes(t);
}

/* Derived views: tied output, expert pointers (unless loaded from per-expert tensors). */
static void bind_derived(model *m) {
    if (m->hp.tied) m->output = m->tok_embd;
    for (int64_t l = 0; l < m->hp.n_layer; l++) {
        model_layer *L = &m->layers[l];
        if (L->var.ffn == MODEL_FFN_DENSE || !L->gate_exps.data) continue;
        for (int64_t e = 0; e < m->hp.n_expert; e++) {
            L->exp_gate[e] = tensor_slice(&L->gate_exps, e);
            L->exp_up[e] = tensor_slice(&L->up_exps, e);
            L->exp_down[e] = tensor_slice(&L->down_exps, e);
        }
    }
}

void model_free(model *m) {
    if (!m) return;
    if (m->flat_owned) moec_free(m->flat);
    moec_free(m->conv_buf);
    moec_free(m->exp_ptrs);
    moec_free(m->layers);
    moec_free(m->params);
    if (m->gguf) gguf_close(m->gguf);
    if (m->meta) gguf_close(m->meta);
    moec_free(m);
}

/* ---- loading -------------------------------------------------------------------------------------------- */

static int get_int(const gguf_file *f, const char *arch, const char *key, bool required, int64_t def, int64_t *out) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (gguf_find_key(f, k) < 0) {
        if (required) return moec_set_error("missing key %s", k);
        *out = def;
        return 0;
    }
    if (gguf_get_i64(f, k, out) != 0) return moec_wrap_error("key %s", k);
    return 0;
}

static int get_float(const gguf_file *f, const char *arch, const char *key, float def, float *out) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (gguf_get_f32_or(f, k, def, out) != 0) return moec_wrap_error("key %s", k);
    return 0;
}

static int get_strkey(const gguf_file *f, const char *arch, const char *key, const char *def, char *out, size_t cap) {
    char k[128];
    gguf_str s;
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (gguf_find_key(f, k) < 0) {
        snprintf(out, cap, "%s", def);
        return 0;
    }
    if (gguf_get_str(f, k, &s) != 0) return moec_wrap_error("key %s", k);
    if (s.len >= cap) return moec_set_error("key %s: value too long", k);
    memcpy(out, s.s, s.len);
    out[s.len] = 0;
    return 0;
}

static void fmt_shape(char *buf, size_t cap, int n, const int64_t *ne) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Check that a file tensor has the expected shape and a usable type; bind view to it. */
static int bind_file_tensor(const gguf_tensor *t, const char *name, int n_dims, const int64_t *ne_exp,
                            model_tensor *view) {
    int tn = (int)t->n_dims;
    while (tn > 1 && t->ne[tn - 1] == 1) tn--; /* trailing 1s are not significant */
    int en = n_dims;
    while (en > 1 && ne_exp[en - 1] == 1) en--;
    bool ok = tn == en;
    for (int i = 0; ok && i < en; i++) ok = t->ne[i] == ne_exp[i];
    if (!ok) {
        char a[128], b[128];
        fmt_shape(a, sizeof a, (int)t->n_dims, t->ne);
        fmt_shape(b, sizeof b, n_dims, ne_exp);
        return moec_set_error("tensor %s has shape %s, expected %s", name, a, b);
    }
    size_t be, bb;
    if (ggml_type_block(t->type, &be, &bb) != 0) return moec_wrap_error("tensor %s", name);
    if ((uintptr_t)t->data % (bb >= 4 && be == 1 ? 4 : (bb % 2 == 0 ? 2 : 1)) != 0)
        return moec_set_error("tensor %s: misaligned data", name);
    view->data = t->data;
    view->type = t->type;
    return 0;
}

model *model_load(const char *path, const model_load_opts *opts) {
    model *m = moec_calloc(1, sizeof(model));
    float *probe = NULL;
    if (!m) return NULL;
    m->gguf = gguf_open_copy(path, opts && opts->no_mmap);
    TRY_PTR(m->gguf);
    const gguf_file *f = m->gguf;
    gguf_str as;
    char arch[32];
    CHECK(gguf_find_key(f, "general.architecture") >= 0, "missing key general.architecture");
    TRY(gguf_get_str(f, "general.architecture", &as));
    CHECK(as.len < sizeof arch, "unknown architecture '%.*s'", (int)(as.len > 64 ? 64 : as.len), as.s);
    memcpy(arch, as.s, as.len);
    arch[as.len] = 0;
    model_hparams *hp = &m->hp;
    if (!strcmp(arch, "llama")) hp->arch = MODEL_ARCH_LLAMA;
    else if (!strcmp(arch, "yuan2moe")) hp->arch = MODEL_ARCH_YUAN2MOE;
    else CHECK(0, "unknown architecture '%s' (supported: llama, yuan2moe)", arch);
    bool yuan = hp->arch == MODEL_ARCH_YUAN2MOE;

    const gguf_tensor *te = gguf_find_tensor(f, "token_embd.weight");
    CHECK(te, "missing tensor token_embd.weight");
    CHECK(te->n_dims == 2, "tensor token_embd.weight must be 2-D");
    hp->n_vocab = te->ne[1];
    TRY(get_int(f, arch, "embedding_length", true, 0, &hp->n_embd));
    TRY(get_int(f, arch, "block_count", true, 0, &hp->n_layer));
    TRY(get_int(f, arch, "attention.head_count", true, 0, &hp->n_head));
    TRY(get_int(f, arch, "attention.head_count_kv", false, hp->n_head, &hp->n_head_kv));
    CHECK(hp->n_head >= 1 && hp->n_head <= 65536, "attention.head_count %lld out of range [1, 65536]",
          (long long)hp->n_head);
    TRY(get_int(f, arch, "attention.key_length", false, hp->n_embd / hp->n_head, &hp->head_dim));
    TRY(get_int(f, arch, "context_length", false, 4096, &hp->n_ctx_train));
    TRY(get_int(f, arch, "expert_count", false, 0, &hp->n_expert));
    TRY(get_int(f, arch, "expert_used_count", hp->n_expert > 0, 0, &hp->n_expert_used));
    TRY(get_float(f, arch, "attention.layer_norm_rms_epsilon", yuan ? 1e-6f : 1e-5f, &hp->norm_eps));
    TRY(get_float(f, arch, "rope.freq_base", 10000.0f, &hp->rope_base));
    TRY(get_int(f, arch, "rope.dimension_count", false, yuan ? hp->head_dim / 2 : hp->head_dim, &hp->rope_dims));
    if (yuan) {
        char buf[32];
        bool lfa;
        TRY(get_int(f, arch, "leading_dense_block_count", false, 0, &hp->n_dense_lead));
        TRY(get_int(f, arch, "expert_feed_forward_length", hp->n_expert > 0, 0, &hp->n_ff_exp));
        TRY(get_int(f, arch, "feed_forward_length", hp->n_expert == 0 || hp->n_dense_lead > 0, 0, &hp->n_ff));
        TRY(get_strkey(f, arch, "router", "attention", buf, sizeof buf));
        if (!strcmp(buf, "attention")) hp->moe_router = MODEL_FFN_MOE_ATTN;
        else if (!strcmp(buf, "linear")) hp->moe_router = MODEL_FFN_MOE_LINEAR;
        else CHECK(0, "key yuan2moe.router: unknown router '%s' (attention or linear)", buf);
        TRY(get_strkey(f, arch, "rope.table", "fp32", buf, sizeof buf));
        if (!strcmp(buf, "fp32")) hp->rope_table = MODEL_ROPE_TABLE_FP32;
        else if (!strcmp(buf, "hf")) hp->rope_table = MODEL_ROPE_TABLE_HF;
        else CHECK(0, "key yuan2moe.rope.table: unknown table '%s' (fp32 or hf)", buf);
        TRY(gguf_get_bool_or(f, "yuan2moe.lfa", true, &lfa));
        hp->lfa = lfa;
    } else {
        int64_t ff;
        TRY(get_int(f, arch, "feed_forward_length", hp->n_expert == 0, 0, &ff));
        if (hp->n_expert > 0) {
            TRY(get_int(f, arch, "expert_feed_forward_length", false, ff, &hp->n_ff_exp));
            hp->moe_router = MODEL_FFN_MOE_LINEAR;
        } else {
            hp->n_ff = ff;
        }
    }
    if (opts && opts->rope_table >= 0) hp->rope_table = (model_rope_table)opts->rope_table;
    hp->tied = gguf_find_tensor(f, "output.weight") == NULL;
    TRY(model_hparams_check(hp));
    /* every layer has at least 7 tensors (norms, q, k, v, output, FFN): refuse before allocating per-layer tables */
    CHECK(hp->n_layer <= gguf_n_tensors(f) / 7, "block_count %lld but the file has only %lld tensors",
          (long long)hp->n_layer, (long long)gguf_n_tensors(f));
    TRY(build_params(m));

    /* bind every tensor; old per-expert llama files are handled for the expert tensors */
    size_t conv_floats = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        model_param *p = &m->params[i];
        const gguf_tensor *t = gguf_find_tensor(f, p->name);
        if (!t && p->n_dims == 3 && strstr(p->name, "_exps.")) continue; /* per-expert fallback below */
        CHECK(t, "missing tensor %s", p->name);
        TRY(bind_file_tensor(t, p->name, p->n_dims, p->ne, p->view));
        if (p->n_dims == 1 && t->type != GGML_F32) conv_floats += p->numel;
    }
    /* fallback: blk.N.ffn_{gate,up,down}.E.weight */
    for (int64_t l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        if (L->var.ffn == MODEL_FFN_DENSE) continue;
        model_tensor *tt[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
        const void **ptrs[3] = {L->exp_gate, L->exp_up, L->exp_down};
        const char *nm[3] = {"gate", "up", "down"};
        for (int j = 0; j < 3; j++) {
            if (tt[j]->data) continue;
            char name[96];
            int64_t ne[2] = {j == 2 ? hp->n_ff_exp : hp->n_embd, j == 2 ? hp->n_embd : hp->n_ff_exp};
            snprintf(name, sizeof name, "blk.%lld.ffn_%s.0.weight", (long long)l, nm[j]);
            CHECK(gguf_find_tensor(f, name), "missing tensor blk.%lld.ffn_%s_exps.weight", (long long)l, nm[j]);
            for (int64_t e = 0; e < hp->n_expert; e++) {
                model_tensor v;
                snprintf(name, sizeof name, "blk.%lld.ffn_%s.%lld.weight", (long long)l, nm[j], (long long)e);
                const gguf_tensor *t = gguf_find_tensor(f, name);
                CHECK(t, "missing tensor %s", name);
                TRY(bind_file_tensor(t, name, 2, ne, &v));
                CHECK(e == 0 || v.type == tt[j]->type, "tensor %s: type %s differs from expert 0", name,
                      ggml_type_name(v.type));
                tt[j]->type = v.type;
                ptrs[j][e] = v.data;
            }
        }
    }
    /* 1-D tensors are used as fp32 arrays: convert F16/BF16 ones */
    if (conv_floats) {
        m->conv_buf = moec_malloc(conv_floats * sizeof(float));
        TRY_PTR(m->conv_buf);
    }
    size_t co = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        model_param *p = &m->params[i];
        model_tensor *v = p->view;
        if (p->n_dims == 1) {
            if (v->type == GGML_F32) continue;
            CHECK(v->type == GGML_F16 || v->type == GGML_BF16, "tensor %s: type %s not supported for a vector",
                  p->name, ggml_type_name(v->type));
            TRY(kern_row_to_f32(m->conv_buf + co, v->data, v->type, (int64_t)p->numel));
            v->data = m->conv_buf + co;
            v->type = GGML_F32;
            co += p->numel;
        }
    }
    /* probe one row of every matrix type so an unsupported type fails now, not mid-generation */
    int64_t maxin = hp->n_embd;
    if (hp->n_ff > maxin) maxin = hp->n_ff;
    if (hp->n_ff_exp > maxin) maxin = hp->n_ff_exp;
    if (hp->n_head * hp->head_dim > maxin) maxin = hp->n_head * hp->head_dim;
    probe = moec_malloc((size_t)maxin * sizeof(float));
    TRY_PTR(probe);
    for (size_t i = 0; i < m->n_params; i++) {
        model_param *p = &m->params[i];
        if (p->n_dims == 1 || !p->view->data) continue;
        if (kern_row_to_f32(probe, p->view->data, p->view->type, p->ne[0]) != 0) {
            moec_wrap_error("tensor %s", p->name);
            goto fail;
        }
    }
    moec_free(probe);
    bind_derived(m);
    return m;
fail:
    if (strncmp(moec_last_error(), path, strlen(path)) != 0) moec_wrap_error("%s", path);
    moec_free(probe);
    model_free(m);
    return NULL;
}

/* ---- creating ------------------------------------------------------------------------------------------- */

model *model_create(const model_hparams *hp, float *flat) {
    model *m = moec_calloc(1, sizeof(model));
    if (!m) return NULL;
    m->hp = *hp;
    TRY(model_hparams_check(hp));
    TRY(build_params(m));
    if (flat) {
        TRY(model_bind_flat(m, flat));
    } else {
        size_t bytes;
        CHECK(moec_mul_ok(m->n_floats, sizeof(float), &bytes), "model too large");
        float *buf = moec_alloc(bytes);
        TRY_PTR(buf);
        TRY(model_bind_flat(m, buf));
        m->flat_owned = true;
    }
    return m;
fail:
    model_free(m);
    return NULL;
}

model *model_plan(const model_hparams *hp) {
    model *m = moec_calloc(1, sizeof(model));
    if (!m) return NULL;
    m->hp = *hp;
    if (model_hparams_check(hp) != 0 || build_params(m) != 0) {
        model_free(m);
        return NULL;
    }
    return m;
}

int model_bind_flat(model *m, float *flat) {
    if (m->gguf) return moec_set_error("model_bind_flat: the model was loaded from a file");
    if (m->flat_owned && m->flat != flat) {
        moec_free(m->flat);
        m->flat_owned = false;
    }
    m->flat = flat;
    for (size_t i = 0; i < m->n_params; i++) {
        m->params[i].view->data = flat + m->params[i].offset;
        m->params[i].view->type = GGML_F32;
    }
    bind_derived(m);
    return 0;
}

float *model_flat(model *m) { return m->gguf ? NULL : m->flat; }

int model_init_random(model *m, uint64_t seed, float std) {
    if (!m->flat) return moec_set_error("model_init_random: not a model_create'd model");
    moec_rng rng;
    moec_rng_seed(&rng, seed);
    float out_std = std / sqrtf(2.0f * (float)m->hp.n_layer);
    for (size_t i = 0; i < m->n_params; i++) {
        const model_param *p = &m->params[i];
        float *w = m->flat + p->offset;
        if (strstr(p->name, "lfa_conv")) {
            /* PyTorch's default Conv2d init: U(-b, b), b = 1/sqrt(fan_in), fan_in = in_channels x 2 taps */
            int64_t fan_in = 2 * (strstr(p->name, "conv1") ? m->hp.n_embd : m->hp.n_embd / 2);
            float bound = 1.0f / sqrtf((float)fan_in);
            for (size_t j = 0; j < p->numel; j++) w[j] = bound * (2.0f * moec_rng_uniform(&rng) - 1.0f);
            continue;
        }
        if (p->n_dims == 1) {
            for (size_t j = 0; j < p->numel; j++) w[j] = 1.0f; /* norms */
            continue;
        }
        bool outp = strstr(p->name, "attn_output") || strstr(p->name, "ffn_down");
        float sd = outp ? out_std : std;
        for (size_t j = 0; j < p->numel; j++) w[j] = sd * moec_rng_normal(&rng);
    }
    return 0;
}

/* ---- writing -------------------------------------------------------------------------------------------- */

int model_gguf_fill(const model *m, gguf_writer *w) {
    const model_hparams *hp = &m->hp;
    const char *a = model_arch_name(hp->arch);
    char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", a, s), k)
    if (m->gguf || m->meta) {
        const gguf_file *f = m->gguf ? m->gguf : m->meta;
        for (int64_t i = 0; i < gguf_n_kv(f); i++) {
            const char *key = gguf_key(f, i);
            if ((!strncmp(key, "general.", 8) && strcmp(key, "general.architecture") &&
                 strcmp(key, "general.alignment")) ||
                !strncmp(key, "tokenizer.", 10))
                TRY(gguf_w_copy_kv(w, f, key));
        }
    }
    if (m->gguf) {
        for (int64_t l = 0; l < hp->n_layer; l++)
            if (m->layers[l].var.ffn != MODEL_FFN_DENSE)
                CHECK(m->layers[l].gate_exps.data && m->layers[l].up_exps.data && m->layers[l].down_exps.data,
                      "cannot write a model loaded from per-expert tensors");
    }
    TRY(gguf_w_set_str(w, "general.architecture", a));
    TRY(gguf_w_set_u32(w, KEY("context_length"), (uint32_t)hp->n_ctx_train));
    TRY(gguf_w_set_u32(w, KEY("embedding_length"), (uint32_t)hp->n_embd));
    TRY(gguf_w_set_u32(w, KEY("block_count"), (uint32_t)hp->n_layer));
    TRY(gguf_w_set_u32(w, KEY("attention.head_count"), (uint32_t)hp->n_head));
    TRY(gguf_w_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)hp->n_head_kv));
    TRY(gguf_w_set_u32(w, KEY("attention.key_length"), (uint32_t)hp->head_dim));
    TRY(gguf_w_set_u32(w, KEY("attention.value_length"), (uint32_t)hp->head_dim));
    TRY(gguf_w_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), hp->norm_eps));
    TRY(gguf_w_set_u32(w, KEY("rope.dimension_count"), (uint32_t)hp->rope_dims));
    TRY(gguf_w_set_f32(w, KEY("rope.freq_base"), hp->rope_base));
    if (hp->n_ff > 0) TRY(gguf_w_set_u32(w, KEY("feed_forward_length"), (uint32_t)hp->n_ff));
    if (hp->n_expert > 0 || hp->arch == MODEL_ARCH_YUAN2MOE) {
        TRY(gguf_w_set_u32(w, KEY("expert_count"), (uint32_t)hp->n_expert));
        TRY(gguf_w_set_u32(w, KEY("expert_used_count"), (uint32_t)hp->n_expert_used));
    }
    if (hp->n_expert > 0) {
        if (hp->arch == MODEL_ARCH_LLAMA && hp->n_ff == 0)
            TRY(gguf_w_set_u32(w, KEY("feed_forward_length"), (uint32_t)hp->n_ff_exp));
        TRY(gguf_w_set_u32(w, KEY("expert_feed_forward_length"), (uint32_t)hp->n_ff_exp));
    }
    if (hp->arch == MODEL_ARCH_YUAN2MOE) {
        TRY(gguf_w_set_u32(w, KEY("leading_dense_block_count"), (uint32_t)hp->n_dense_lead));
        TRY(gguf_w_set_str(w, KEY("router"), hp->moe_router == MODEL_FFN_MOE_LINEAR ? "linear" : "attention"));
        TRY(gguf_w_set_bool(w, KEY("lfa"), hp->lfa));
        TRY(gguf_w_set_str(w, KEY("rope.table"), hp->rope_table == MODEL_ROPE_TABLE_HF ? "hf" : "fp32"));
    }
#undef KEY
    for (size_t i = 0; i < m->n_params; i++) {
        const model_param *p = &m->params[i];
        TRY(gguf_w_add_tensor(w, p->name, p->view->type, (uint32_t)p->n_dims, p->ne, p->view->data));
    }
    return 0;
fail:
    return -1;
}

int model_write_gguf(const model *m, const char *path) {
    gguf_writer *w = gguf_w_new();
    if (!w) return -1;
    int rc = model_gguf_fill(m, w) == 0 && gguf_w_write(w, path) == 0 ? 0 : -1;
    gguf_w_free(w);
    return rc;
}

/* ---- per-sequence state --------------------------------------------------------------------------------- */

seq_state *model_seq_new(const model *m, int64_t n_ctx) { return model_seq_new_ex(m, n_ctx, GGML_F32); }

seq_state *model_seq_new_ex(const model *m, int64_t n_ctx, ggml_type kv_type) {
    const model_hparams *hp = &m->hp;
    seq_state *s = moec_calloc(1, sizeof(seq_state));
    if (!s) return NULL;
    s->m = m;
    CHECK(kv_type == GGML_F32 || kv_type == GGML_F16, "KV cache type %s not supported (F32 or F16)",
          ggml_type_name(kv_type));
    s->kv_type = kv_type;
    CHECK(n_ctx >= 1 && n_ctx <= (INT64_C(1) << 31), "context size %lld out of range", (long long)n_ctx);
    s->n_ctx = n_ctx;
    size_t kv, n;
    CHECK(moec_mul_ok((size_t)hp->n_layer * (size_t)n_ctx, (size_t)(hp->n_head_kv * hp->head_dim), &kv) &&
              moec_mul_ok(kv, kv_type == GGML_F16 ? 2 : sizeof(float), &n),
          "KV cache for %lld positions too large", (long long)n_ctx);
    s->k_cache = moec_alloc(n);
    s->v_cache = moec_alloc(n);
    s->lfa_carry = moec_alloc((size_t)hp->n_layer * 2 * (size_t)hp->n_embd * sizeof(float));
    if (!s->k_cache || !s->v_cache || !s->lfa_carry) {
        moec_wrap_error("KV cache for %lld positions (%.1f MB)", (long long)n_ctx, 2.0 * (double)n / 1e6);
        goto fail;
    }
    return s;
fail:
    model_seq_free(s);
    return NULL;
}

void model_seq_free(seq_state *s) {
    if (!s) return;
    moec_free(s->k_cache);
    moec_free(s->v_cache);
    moec_free(s->lfa_carry);
    moec_free(s->scratch);
    moec_free(s->iscratch);
    moec_free(s);
}

void model_seq_reset(seq_state *s) {
    s->pos = 0;
    memset(s->lfa_carry, 0, (size_t)s->m->hp.n_layer * 2 * (size_t)s->m->hp.n_embd * sizeof(float));
}

int model_seq_copy(seq_state *dst, const seq_state *src) {
    if (dst->m != src->m) return moec_set_error("model_seq_copy: states of different models");
    if (dst->kv_type != src->kv_type) return moec_set_error("model_seq_copy: different KV cache types");
    if (src->pos > dst->n_ctx)
        return moec_set_error("model_seq_copy: %lld positions do not fit a context of %lld", (long long)src->pos,
                              (long long)dst->n_ctx);
    const model_hparams *hp = &src->m->hp;
    size_t es = src->kv_type == GGML_F16 ? 2 : sizeof(float);
    size_t d = (size_t)hp->head_dim, n = (size_t)src->pos * d * es;
    for (int64_t l = 0; l < hp->n_layer; l++)
        for (int64_t g = 0; g < hp->n_head_kv; g++) {
            size_t so = ((size_t)l * (size_t)hp->n_head_kv + (size_t)g) * (size_t)src->n_ctx * d * es;
            size_t dof = ((size_t)l * (size_t)hp->n_head_kv + (size_t)g) * (size_t)dst->n_ctx * d * es;
            memcpy((uint8_t *)dst->k_cache + dof, (const uint8_t *)src->k_cache + so, n);
            memcpy((uint8_t *)dst->v_cache + dof, (const uint8_t *)src->v_cache + so, n);
        }
    memcpy(dst->lfa_carry, src->lfa_carry, (size_t)hp->n_layer * 2 * (size_t)hp->n_embd * sizeof(float));
    dst->pos = src->pos;
    return 0;
}

/* Scratch layout for T tokens (floats). */
typedef struct {
    size_t h, x, xe, o1e, o2, f, q, k, v, atty, u, ffo, rq, rk, rv, rl, selw, dg, du, moe, cs, sn,
        rstd, hn, att, total;
    size_t sel, imoe, itotal;
} scratch_layout;

static void layout_scratch(const model_hparams *hp, int64_t T, int nthr, int64_t n_ctx, scratch_layout *L) {
    size_t H = (size_t)hp->n_embd, P = (size_t)(hp->n_head * hp->head_dim),
           Pkv = (size_t)(hp->n_head_kv * hp->head_dim), E = (size_t)hp->n_expert, K = (size_t)hp->n_expert_used,
           t = (size_t)T, o = 0;
#define SEG(name, n) (L->name = o, o += ((size_t)(n) + 15) & ~(size_t)15)
    SEG(h, t * H);
    SEG(x, t * H);
    SEG(xe, t * H);          /* LFA: the row before each row (x[p-1]) */
    SEG(o1e, 2 * t * (H / 2)); /* LFA: conv1 output o1[p], then the row before each row o1[p-1] */
    SEG(o2, t * H);
    SEG(f, t * H);
    SEG(q, t * P);
    SEG(k, t * Pkv);
    SEG(v, t * Pkv);
    SEG(atty, t * P);
    SEG(u, t * H);
    SEG(ffo, t * H);
    SEG(rq, t * E);
    SEG(rk, t * E);
    SEG(rv, t * E);
    SEG(rl, t * E);
    SEG(selw, t * K);
    SEG(dg, t * (size_t)hp->n_ff);
    SEG(du, t * (size_t)hp->n_ff);
    SEG(moe, E ? moe_scratch_floats(T, hp->n_embd, hp->n_ff_exp, hp->n_expert_used) : 0);
    SEG(cs, t * (size_t)(hp->rope_dims / 2));
    SEG(sn, t * (size_t)(hp->rope_dims / 2));
    SEG(rstd, t);
    SEG(hn, t * H);
    SEG(att, ops_attention_scratch(nthr, n_ctx, hp->head_dim));
    L->total = o;
#undef SEG
    L->sel = 0;
    L->imoe = t * K;
    L->itotal = t * K + (E ? moe_scratch_ints(T, hp->n_expert, hp->n_expert_used) : 0);
}

/* Scratch of s for T rows whose attention spans up to n_ctx positions (a batch uses its first state's scratch). */
static int ensure_scratch(seq_state *s, int64_t T, int64_t n_ctx, scratch_layout *L) {
    int nthr = 1;
#ifdef _OPENMP
    nthr = omp_get_max_threads();
#endif
    if (s->scratch && T <= s->scratch_T && n_ctx <= s->scratch_ctx) {
        layout_scratch(&s->m->hp, s->scratch_T, s->att_threads, s->scratch_ctx, L);
        return 0;
    }
    if (s->att_threads > nthr) nthr = s->att_threads;
    if (T < s->scratch_T) T = s->scratch_T;
    if (n_ctx < s->scratch_ctx) n_ctx = s->scratch_ctx;
    layout_scratch(&s->m->hp, T, nthr, n_ctx, L);
    moec_free(s->scratch);
    moec_free(s->iscratch);
    s->scratch = NULL, s->iscratch = NULL, s->scratch_T = 0;
    size_t b1, b2;
    if (!moec_mul_ok(L->total, sizeof(float), &b1) || !moec_mul_ok(L->itotal + 1, sizeof(int32_t), &b2))
        return moec_set_error("scratch for %lld tokens too large", (long long)T);
    s->scratch = moec_alloc(b1);
    s->iscratch = moec_alloc(b2);
    if (!s->scratch || !s->iscratch) return moec_wrap_error("scratch for %lld tokens", (long long)T);
    s->scratch_T = T;
    s->scratch_ctx = n_ctx;
    s->att_threads = nthr;
    return 0;
}

/* ---- training activations ------------------------------------------------------------------------------- */

model_acts *model_acts_new(const model *m, int64_t T) {
    const model_hparams *hp = &m->hp;
    model_acts *a = moec_calloc(1, sizeof(model_acts));
    if (!a) return NULL;
    CHECK(T >= 1 && T <= (INT64_C(1) << 24), "model_acts_new: T = %lld out of range", (long long)T);
    a->T = T;
    a->layers = moec_calloc((size_t)hp->n_layer, sizeof(model_layer_acts));
    TRY_PTR(a->layers);
    size_t H = (size_t)hp->n_embd, P = (size_t)(hp->n_head * hp->head_dim),
           Pkv = (size_t)(hp->n_head_kv * hp->head_dim), E = (size_t)hp->n_expert, K = (size_t)hp->n_expert_used,
           F = (size_t)hp->n_ff_exp, Fd = (size_t)hp->n_ff, t = (size_t)T, nh = (size_t)hp->n_head;
    /* two passes: count, then carve */
    for (int pass = 0; pass < 2; pass++) {
        size_t o = 0, io = 0;
#define F_(ptr, n) (ptr = pass ? a->buf + o : NULL, o += ((size_t)(n) + 15) & ~(size_t)15)
#define I_(ptr, n) (ptr = pass ? a->ibuf + io : NULL, io += (size_t)(n))
        for (int64_t l = 0; l < hp->n_layer; l++) {
            model_layer_acts *la = &a->layers[l];
            model_variant v = m->layers[l].var;
            F_(la->h_in, t * H);
            F_(la->x, t * H);
            F_(la->rstd_x, t);
            if (v.lfa) {
                F_(la->o1, t * (H / 2));
                F_(la->o2, t * H);
                F_(la->lfa_in, t * H);
                F_(la->rstd_lfa, t);
                F_(la->f, t * H);
            }
            F_(la->q, t * P);
            F_(la->k, t * Pkv);
            F_(la->v, t * Pkv);
            F_(la->att, nh * t * t);
            F_(la->atty, t * P);
            F_(la->h_mid, t * H);
            F_(la->u, t * H);
            F_(la->rstd_u, t);
            if (v.ffn == MODEL_FFN_DENSE) {
                F_(la->d_gate, t * Fd);
                F_(la->d_up, t * Fd);
                F_(la->d_hid, t * Fd);
            } else {
                if (v.ffn == MODEL_FFN_MOE_ATTN) {
                    F_(la->rq, t * E);
                    F_(la->rk, t * E);
                    F_(la->rv, t * E);
                    F_(la->rinner, t * E * E);
                }
                F_(la->rlogits, t * E);
                I_(la->sel, t * K);
                F_(la->selw, t * K);
                F_(la->e_gate, t * K * F);
                F_(la->e_up, t * K * F);
                F_(la->e_hid, t * K * F);
                F_(la->e_y, t * K * H);
            }
            if (!v.lfa && pass) la->f = la->x;
        }
        F_(a->h_out, t * H);
        F_(a->hn, t * H);
        F_(a->rstd_out, t);
#undef F_
#undef I_
        if (!pass) {
            a->n_floats = o;
            size_t b;
            CHECK(moec_mul_ok(o, sizeof(float), &b), "model_acts_new: too large");
            a->buf = moec_alloc(b);
            a->ibuf = moec_alloc((io + 1) * sizeof(int32_t));
            if (!a->buf || !a->ibuf) {
                moec_wrap_error("activations for %lld tokens (%.1f MB)", (long long)T, (double)b / 1e6);
                goto fail;
            }
        }
    }
    return a;
fail:
    model_acts_free(a);
    return NULL;
}

void model_acts_free(model_acts *a) {
    if (!a) return;
    moec_free(a->buf);
    moec_free(a->ibuf);
    moec_free(a->layers);
    moec_free(a);
}

/* ---- forward -------------------------------------------------------------------------------------------- */

static int matmul(float *y, const float *x, const model_tensor *w, int64_t T) {
    return kern_matmul(y, x, w->data, w->type, T, w->ne[0], w->ne[1]);
}

/* A product job y[T, ne[1]] = x[T, ne[0]] · wᵀ for kern_matmul_multi (independent products in one fork/join). */
static kern_mm mm_job(float *y, const float *x, const model_tensor *w, int64_t T) {
    return (kern_mm){.y = y, .x = x, .w = w->data, .wtype = w->type, .T = T, .n_in = w->ne[0], .n_out = w->ne[1]};
}

/* Tap k of an LFA convolution c ({n_in, n_out, 2}) as a job; acc: add to y (the second tap). */
static kern_mm tap_job(float *y, const float *x, const model_tensor *c, int k, int64_t T, int acc) {
    return (kern_mm){.y = y, .x = x, .w = tensor_slice(c, k), .wtype = c->type, .T = T, .n_in = c->ne[0],
                     .n_out = c->ne[1], .accumulate = acc};
}

/* The forward of model_forward and model_forward_batch: n_seq sequences, sequence b taking the n_tok[b] rows that
 * follow those of sequence b-1 in ids (T rows in all). Every row goes through each matrix product of a layer
 * together (the experts' weights are read once for all of them); RoPE, the KV cache, attention and the LFA carry
 * are per sequence. acts: only with one sequence at position 0. */
static int forward_core(const model *m, seq_state *const *seqs, int n_seq, const int64_t *n_tok, const int32_t *ids,
                        float *logits, unsigned flags, model_acts *acts) {
    const model_hparams *hp = &m->hp;
    scratch_layout sl;
    int64_t T = 0, n_ctx_max = 0;
    CHECK(n_seq >= 1 && seqs && n_tok && ids, "model_forward: no sequences, token counts or ids");
    for (int b = 0; b < n_seq; b++) {
        const seq_state *s = seqs[b];
        CHECK(s && s->m == m, "model_forward: sequence state %d belongs to another model", b);
        for (int c = 0; c < b; c++) CHECK(seqs[c] != s, "model_forward_batch: sequence state %d given twice", b);
        CHECK(n_tok[b] >= 1, "model_forward: no tokens (sequence %d)", b);
        CHECK(n_tok[b] <= s->n_ctx - s->pos, "context full: %lld tokens at position %lld exceed the context of %lld",
              (long long)n_tok[b], (long long)s->pos, (long long)s->n_ctx);
        CHECK(n_tok[b] <= (INT64_C(1) << 30) && T <= (INT64_C(1) << 30), "model_forward: too many tokens");
        T += n_tok[b];
        if (s->n_ctx > n_ctx_max) n_ctx_max = s->n_ctx;
    }
    for (int64_t t = 0; t < T; t++)
        CHECK(ids[t] >= 0 && ids[t] < hp->n_vocab, "token id %d out of range [0, %lld)", (int)ids[t],
              (long long)hp->n_vocab);
    CHECK(T * (hp->n_expert_used > 0 ? hp->n_expert_used : 1) < INT32_MAX, "model_forward: %lld tokens in one call "
          "is too many (split them)", (long long)T);
    if (acts) CHECK(n_seq == 1 && seqs[0]->pos == 0 && T <= acts->T, "model_forward: training activations need "
                    "one sequence at pos 0 and T <= %lld", (long long)acts->T);
    TRY(ensure_scratch(seqs[0], T, n_ctx_max, &sl));

    int64_t H = hp->n_embd, Hh = H / 2, nh = hp->n_head, nkv = hp->n_head_kv, d = hp->head_dim,
            Pkv = nkv * d, E = hp->n_expert, K = hp->n_expert_used, Fd = hp->n_ff, V = hp->n_vocab;
    float *S = seqs[0]->scratch;
    int32_t *IS = seqs[0]->iscratch;
    float *h = S + sl.h, *xp = S + sl.xe, *o1 = S + sl.o1e, *o1p = o1 + T * Hh,
          *ffo = S + sl.ffo, *cs = S + sl.cs, *sn = S + sl.sn, *att_scr = S + sl.att;
    float scale = 1.0f / sqrtf((float)d);

    TRY(ops_embed(h, ids, T, m->tok_embd.data, m->tok_embd.type, H));
    if (hp->rope_dims > 0)
        for (int64_t b = 0, r0 = 0; b < n_seq; r0 += n_tok[b], b++)
            ops_rope_table(cs + r0 * (hp->rope_dims / 2), sn + r0 * (hp->rope_dims / 2), seqs[b]->pos, n_tok[b],
                           hp->rope_dims, hp->rope_base, (int)hp->rope_table);

    for (int64_t l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        model_layer_acts *la = acts ? &acts->layers[l] : NULL;
        if (la) memcpy(la->h_in, h, (size_t)(T * H) * sizeof(float));
        /* ---- attention block ---- */
        float *x = la ? la->x : S + sl.x;
        ops_rmsnorm(x, la ? la->rstd_x : NULL, h, L->attn_norm.data, T, H, hp->norm_eps);
        float *f = x;
        if (L->var.lfa) {
            /* o1[p] = b1 + C1_0·x[p-1] + C1_1·x[p], o2[p] = b2 + C2_0·o1[p-1] + C2_1·o1[p]; the rows before a
             * sequence's first row come from its carry ([o1[pos-1] (Hh floats), x[pos-1]], zeros at the start) */
            for (int64_t b = 0, r0 = 0; b < n_seq; r0 += n_tok[b], b++) {
                const float *carry = seqs[b]->lfa_carry + (size_t)l * 2 * (size_t)H;
                memcpy(xp + r0 * H, carry + H, (size_t)H * sizeof(float));
                memcpy(xp + (r0 + 1) * H, x + r0 * H, (size_t)((n_tok[b] - 1) * H) * sizeof(float));
            }
            /* both taps in one call, the second accumulating: (C_0·a + C_1·b) + bias, as tmp + add did */
            kern_mm c1[2] = {tap_job(o1, xp, &L->lfa_c1, 0, T, 0), tap_job(o1, x, &L->lfa_c1, 1, T, 1)};
            TRY(kern_matmul_multi(c1, 2));
            ops_add_bias(o1, L->lfa_b1.data, T, Hh);
            for (int64_t b = 0, r0 = 0; b < n_seq; r0 += n_tok[b], b++) {
                float *carry = seqs[b]->lfa_carry + (size_t)l * 2 * (size_t)H;
                memcpy(o1p + r0 * Hh, carry, (size_t)Hh * sizeof(float));
                memcpy(o1p + (r0 + 1) * Hh, o1 + r0 * Hh, (size_t)((n_tok[b] - 1) * Hh) * sizeof(float));
                int64_t last = r0 + n_tok[b] - 1;
                memcpy(carry, o1 + last * Hh, (size_t)Hh * sizeof(float));
                memcpy(carry + H, x + last * H, (size_t)H * sizeof(float));
            }
            float *o2 = la ? la->o2 : S + sl.o2;
            kern_mm c2[2] = {tap_job(o2, o1p, &L->lfa_c2, 0, T, 0), tap_job(o2, o1, &L->lfa_c2, 1, T, 1)};
            TRY(kern_matmul_multi(c2, 2));
            ops_add_bias(o2, L->lfa_b2.data, T, H);
            float *lin = o2;
            if (la) {
                memcpy(la->o1, o1, (size_t)(T * Hh) * sizeof(float));
                lin = la->lfa_in;
                memcpy(lin, o2, (size_t)(T * H) * sizeof(float));
            }
            ops_add(lin, x, T * H);
            f = la ? la->f : S + sl.f;
            ops_rmsnorm(f, la ? la->rstd_lfa : NULL, lin, L->lfa_norm.data, T, H, hp->norm_eps);
        }
        float *q = la ? la->q : S + sl.q, *k = la ? la->k : S + sl.k, *v = la ? la->v : S + sl.v;
        kern_mm qkv[3] = {mm_job(q, f, &L->wq, T), mm_job(k, f, &L->wk, T), mm_job(v, x, &L->wv, T)};
        TRY(kern_matmul_multi(qkv, 3));
        if (L->var.rope_dims > 0) {
            ops_rope(q, T, nh, d, L->var.rope_dims, (int)L->var.rope_pairing, cs, sn);
            ops_rope(k, T, nkv, d, L->var.rope_dims, (int)L->var.rope_pairing, cs, sn);
        }
        float *atty = la ? la->atty : S + sl.atty;
        for (int64_t b = 0, r0 = 0; b < n_seq; r0 += n_tok[b], b++) {
            seq_state *s = seqs[b];
            int64_t pos0 = s->pos, n = n_tok[b];
            /* head-major cache [n_kv][n_ctx][d]: each head's keys are one contiguous stream for attention */
            bool f16 = s->kv_type == GGML_F16;
            size_t es = f16 ? 2 : sizeof(float), lo = (size_t)l * (size_t)s->n_ctx * (size_t)Pkv * es;
            uint8_t *kc = (uint8_t *)s->k_cache + lo, *vc = (uint8_t *)s->v_cache + lo;
            const float *kr = k + r0 * Pkv, *vr = v + r0 * Pkv;
            for (int64_t g = 0; g < nkv; g++)
                for (int64_t t = 0; t < n; t++) {
                    size_t dst = ((size_t)g * (size_t)s->n_ctx + (size_t)(pos0 + t)) * (size_t)d * es;
                    if (f16) {
                        ops_f32_to_f16((uint16_t *)(kc + dst), kr + t * Pkv + g * d, d);
                        ops_f32_to_f16((uint16_t *)(vc + dst), vr + t * Pkv + g * d, d);
                    } else {
                        memcpy(kc + dst, kr + t * Pkv + g * d, (size_t)d * sizeof(float));
                        memcpy(vc + dst, vr + t * Pkv + g * d, (size_t)d * sizeof(float));
                    }
                }
            ops_attention_blocked(atty + r0 * nh * d, la ? la->att : NULL, q + r0 * nh * d, kc, vc, s->kv_type, d,
                                  s->n_ctx * d, pos0, n, nh, nkv, d, scale, att_scr, seqs[0]->att_threads);
        }
        kern_mm wo = mm_job(h, atty, &L->wo, T);
        wo.accumulate = 1; /* h += Wo·att: the same bits as a product then ops_add */
        TRY(kern_matmul_multi(&wo, 1));
        if (la) memcpy(la->h_mid, h, (size_t)(T * H) * sizeof(float));
        /* ---- FFN block ---- */
        float *u = la ? la->u : S + sl.u;
        ops_rmsnorm(u, la ? la->rstd_u : NULL, h, L->ffn_norm.data, T, H, hp->norm_eps);
        if (L->var.ffn == MODEL_FFN_DENSE) {
            float *g = la ? la->d_gate : S + sl.dg, *up = la ? la->d_up : S + sl.du, *hid = la ? la->d_hid : g;
            kern_mm gu[2] = {mm_job(g, u, &L->ffn_gate, T), mm_job(up, u, &L->ffn_up, T)};
            TRY(kern_matmul_multi(gu, 2));
            ops_swiglu(hid, g, up, T * Fd);
            TRY(matmul(ffo, hid, &L->ffn_down, T));
        } else {
            float *rl = la ? la->rlogits : S + sl.rl, *selw = la ? la->selw : S + sl.selw;
            int32_t *sel = la ? la->sel : IS + sl.sel;
            if (L->var.ffn == MODEL_FFN_MOE_ATTN) {
                float *rq = la ? la->rq : S + sl.rq, *rk = la ? la->rk : S + sl.rk, *rv = la ? la->rv : S + sl.rv;
                kern_mm rqkv[3] = {mm_job(rq, u, &L->router_q, T), mm_job(rk, u, &L->router_k, T),
                                   mm_job(rv, u, &L->router_v, T)};
                TRY(kern_matmul_multi(rqkv, 3));
                moe_router_attn(rl, la ? la->rinner : NULL, rq, rk, rv, T, E);
            } else {
                TRY(matmul(rl, u, &L->gate_inp, T));
            }
            moe_topk(sel, selw, rl, T, E, K);
            moe_experts ex = {(const void *const *)L->exp_gate, (const void *const *)L->exp_up,
                              (const void *const *)L->exp_down, L->gate_exps.type, L->up_exps.type,
                              L->down_exps.type, E, H, hp->n_ff_exp};
            memset(ffo, 0, (size_t)(T * H) * sizeof(float));
            TRY(moe_experts_forward(ffo, u, sel, selw, T, K, &ex, S + sl.moe, IS + sl.imoe,
                                    la ? la->e_gate : NULL, la ? la->e_up : NULL, la ? la->e_hid : NULL,
                                    la ? la->e_y : NULL));
        }
        ops_add(h, ffo, T * H);
    }
    if (acts) {
        memcpy(acts->h_out, h, (size_t)(T * H) * sizeof(float));
        ops_rmsnorm(acts->hn, acts->rstd_out, h, m->output_norm.data, T, H, hp->norm_eps);
    }
    if (logits) {
        float *hn = S + sl.hn;
        int64_t rows = T;
        if (acts) {
            hn = acts->hn;
        } else if (flags & MODEL_FWD_LAST) { /* the last row of each sequence */
            rows = n_seq;
            for (int64_t b = 0, r0 = 0; b < n_seq; r0 += n_tok[b], b++)
                ops_rmsnorm(hn + b * H, NULL, h + (r0 + n_tok[b] - 1) * H, m->output_norm.data, 1, H, hp->norm_eps);
        } else {
            ops_rmsnorm(hn, NULL, h, m->output_norm.data, T, H, hp->norm_eps);
        }
        if (acts && (flags & MODEL_FWD_LAST)) hn += (T - 1) * H, rows = 1;
        TRY(kern_matmul(logits, hn, m->output.data, m->output.type, rows, H, V));
    }
    for (int b = 0; b < n_seq; b++) seqs[b]->pos += n_tok[b];
    return 0;
fail:
    return -1;
}

int model_forward(const model *m, seq_state *s, const int32_t *ids, int64_t T, float *logits, unsigned flags,
                  model_acts *acts) {
    return forward_core(m, &s, 1, &T, ids, logits, flags, acts);
}

int model_forward_batch(const model *m, seq_state *const *seqs, int n_seq, const int32_t *ids, const int64_t *n_tok,
                        float *logits, unsigned flags) {
    return forward_core(m, seqs, n_seq, n_tok, ids, logits, flags, NULL);
}

/* ---- accounting ----------------------------------------------------------------------------------------- */

static double tensor_bytes(const model_param *p) {
    size_t be = 1, bb = 4;
    if (ggml_type_block(p->view->type, &be, &bb) != 0) return 0;
    return (double)p->numel / (double)be * (double)bb;
}

void model_get_stats(const model *m, int64_t ctx, model_stats *st) {
    const model_hparams *hp = &m->hp;
    memset(st, 0, sizeof *st);
    double frac = hp->n_expert > 0 ? (double)hp->n_expert_used / (double)hp->n_expert : 1.0;
    for (size_t i = 0; i < m->n_params; i++) {
        const model_param *p = &m->params[i];
        double n = (double)p->numel, b = tensor_bytes(p);
        bool exp = p->n_dims == 3 && strstr(p->name, "_exps.");
        bool embd = p->view == &m->tok_embd;
        st->total_params += n;
        st->active_params += exp ? n * frac : n;
        if (p->n_dims == 1) {
            st->weight_bytes_per_token += b;
            continue;
        }
        if (embd) {
            /* lookup of one row; as the tied lm head it is a full matmul */
            st->weight_bytes_per_token += hp->tied ? b : b / (double)hp->n_vocab;
            if (hp->tied) st->matmul_params += n;
            continue;
        }
        st->matmul_params += exp ? n * frac : n;
        st->weight_bytes_per_token += exp ? b * frac : b;
    }
    st->flops_per_token =
        2.0 * st->matmul_params + 4.0 * (double)hp->n_layer * (double)hp->n_head * (double)hp->head_dim * (double)ctx;
}
