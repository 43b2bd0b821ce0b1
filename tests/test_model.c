/* model: decode-vs-full-pass equality, chunked prefill, last-only logits, training activations, GGUF round trip,
 * hostile model files, context overflow. Tiny random models from model_create + model_init_random (seeded). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gguf.h"
#include "model.h"
#include "test.h"
#include "util.h"

static model_hparams yuan_hp(void) {
    model_hparams hp = {0};
    hp.arch = MODEL_ARCH_YUAN2MOE;
    hp.n_vocab = 64, hp.n_embd = 16, hp.n_layer = 3, hp.n_head = 2, hp.n_head_kv = 2, hp.head_dim = 12;
    hp.n_ctx_train = 64, hp.n_ff = 12, hp.n_ff_exp = 8, hp.n_expert = 4, hp.n_expert_used = 2, hp.n_dense_lead = 1;
    hp.rope_dims = 8, hp.rope_base = 10000.0f, hp.norm_eps = 1e-6f, hp.moe_router = MODEL_FFN_MOE_ATTN;
    hp.lfa = true, hp.tied = true;
    return hp;
}

static model_hparams llama_moe_hp(void) {
    model_hparams hp = {0};
    hp.arch = MODEL_ARCH_LLAMA;
    hp.n_vocab = 50, hp.n_embd = 16, hp.n_layer = 2, hp.n_head = 4, hp.n_head_kv = 2, hp.head_dim = 4;
    hp.n_ctx_train = 64, hp.n_ff_exp = 10, hp.n_expert = 3, hp.n_expert_used = 2;
    hp.rope_dims = 4, hp.rope_base = 10000.0f, hp.norm_eps = 1e-5f, hp.moe_router = MODEL_FFN_MOE_LINEAR;
    hp.tied = false;
    return hp;
}

/* full pass vs decode vs chunked vs last-only vs with-acts, for one model */
static void check_consistency(const model *m, const char *name) {
    enum { T = 9 };
    int32_t ids[T];
    int64_t V = m->hp.n_vocab;
    for (int i = 0; i < T; i++) ids[i] = (int32_t)((i * 37 + 5) % V);
    static float full[T * 128], step[T * 128], chunk[T * 128], last[128], withacts[T * 128];
    seq_state *s = model_seq_new(m, 32);
    T_CHECK(s != NULL, "%s: seq_new: %s", name, moec_last_error());
    if (!s) return;
    T_CHECK(model_forward(m, s, ids, T, full, 0, NULL) == 0, "%s: full pass: %s", name, moec_last_error());
    T_CHECK(s->pos == T, "%s: pos advanced", name);
    model_seq_reset(s);
    for (int t = 0; t < T; t++) T_CHECK(model_forward(m, s, ids + t, 1, step + t * V, 0, NULL) == 0, "step");
    model_seq_reset(s);
    T_CHECK(model_forward(m, s, ids, 3, chunk, 0, NULL) == 0, "chunk 1");
    T_CHECK(model_forward(m, s, ids + 3, 1, chunk + 3 * V, 0, NULL) == 0, "chunk 2");
    T_CHECK(model_forward(m, s, ids + 4, 5, chunk + 4 * V, 0, NULL) == 0, "chunk 3");
    model_seq_reset(s);
    T_CHECK(model_forward(m, s, ids, T, last, MODEL_FWD_LAST, NULL) == 0, "last only");
    double scale = t_max_abs(full, (size_t)(T * V));
    T_CHECK(scale > 1e-3 && isfinite(scale), "%s: logits not trivial (max %g)", name, scale);
    double tol = 1e-5 * (scale > 1 ? scale : 1);
    double d1 = t_max_diff(full, step, (size_t)(T * V)), d2 = t_max_diff(full, chunk, (size_t)(T * V)),
           d3 = t_max_diff(full + (T - 1) * V, last, (size_t)V);
    T_CHECK(d1 <= tol, "%s: decode vs full pass differ by %g (tol %g)", name, d1, tol);
    T_CHECK(d2 <= tol, "%s: chunked prefill vs full pass differ by %g", name, d2);
    T_CHECK(d3 <= tol, "%s: last-only logits differ by %g", name, d3);
    /* the first position must not depend on later tokens (causality) */
    int32_t ids2[T];
    memcpy(ids2, ids, sizeof ids);
    ids2[T - 1] = (ids2[T - 1] + 1) % (int32_t)V;
    static float full2[T * 128];
    model_seq_reset(s);
    T_CHECK(model_forward(m, s, ids2, T, full2, 0, NULL) == 0, "full pass 2");
    /* (not bit-exact: the last token can change which tokens each expert runs on, and kernels may round a
     * batch of n rows differently from n+1) */
    T_CHECK(t_max_diff(full, full2, (size_t)((T - 1) * V)) <= tol, "%s: causal: earlier logits unchanged", name);
    T_CHECK(t_max_diff(full + (T - 1) * V, full2 + (T - 1) * V, (size_t)V) > 0, "%s: last logits changed", name);
    /* training activations: same logits, probabilities rows sum to 1, weights sum to 1 */
    model_acts *a = model_acts_new(m, T);
    T_CHECK(a != NULL, "acts_new: %s", moec_last_error());
    if (a) {
        model_seq_reset(s);
        T_CHECK(model_forward(m, s, ids, T, withacts, 0, a) == 0, "forward with acts: %s", moec_last_error());
        T_CHECK(t_max_diff(full, withacts, (size_t)(T * V)) == 0, "%s: logits with acts identical", name);
        const model_layer_acts *la = &a->layers[m->hp.n_layer - 1];
        double sum = 0;
        for (int j = 0; j < T; j++) sum += la->att[(1 * T + (T - 1)) * T + j];
        T_CHECK(fabs(sum - 1) < 1e-5, "%s: attention probs row sums to 1 (%g)", name, sum);
        T_CHECK(la->att[(0 * T + 2) * T + 3] == 0, "%s: masked prob is 0", name);
        if (la->selw) {
            T_CHECK(fabs(la->selw[0] + la->selw[1] - 1) < 1e-6, "%s: routing weights sum to 1", name);
            T_CHECK(la->sel[0] != la->sel[1] && la->sel[0] >= 0 && la->sel[0] < m->hp.n_expert, "%s: sel", name);
            T_CHECK(la->rlogits[la->sel[0]] >= la->rlogits[la->sel[1]], "%s: sel ordered", name);
        }
        T_CHECK(la->h_in != NULL && la->x != NULL && la->f != NULL && la->u != NULL, "%s: acts pointers", name);
        model_seq_reset(s);
        T_CHECK(model_forward(m, s, ids, 3, NULL, 0, NULL) == 0, "prefill");
        T_CHECK(model_forward(m, s, ids, 3, NULL, 0, a) != 0, "%s: acts need pos 0", name);
        model_acts_free(a);
    }
    /* f16 KV cache: decode ~ full pass (kernels for T = 1 and T > 1 may differ by an ulp, which can flip an f16
     * rounding: tolerance 2e-3), close to the fp32 cache */
    {
        seq_state *h = model_seq_new_ex(m, 32, GGML_F16);
        static float f16full[T * 128], f16step[T * 128];
        T_CHECK(h && h->kv_type == GGML_F16, "%s: f16 state", name);
        if (h) {
            T_CHECK(model_forward(m, h, ids, T, f16full, 0, NULL) == 0, "%s: f16 full", name);
            model_seq_reset(h);
            for (int t = 0; t < T; t++) T_CHECK(model_forward(m, h, ids + t, 1, f16step + t * V, 0, NULL) == 0, "s");
            double e1 = t_max_diff(f16full, f16step, (size_t)(T * V)), e2 = t_max_diff(f16full, full, (size_t)(T * V));
            T_CHECK(e1 <= 2e-3 * scale, "%s: f16 cache decode vs full %g", name, e1);
            T_CHECK(e2 <= 1e-2 * scale && e2 > 0, "%s: f16 vs fp32 cache differ by %g (scale %g)", name, e2, scale);
            seq_state *h2 = model_seq_new_ex(m, 32, GGML_F16);
            T_CHECK(h2 && model_seq_copy(h2, h) == 0 && model_seq_copy(s, h) != 0, "%s: f16 seq_copy rules", name);
            model_seq_free(h2);
        }
        model_seq_free(h);
        T_CHECK(model_seq_new_ex(m, 8, GGML_Q8_0) == NULL, "%s: Q8_0 KV cache refused", name);
    }
    /* fork: copy the state after 4 tokens into a bigger state, continue both: same logits as the full pass */
    {
        seq_state *a = model_seq_new(m, 16), *b = model_seq_new(m, 20), *c = model_seq_new(m, 2);
        static float la[5 * 128], lb[5 * 128];
        T_CHECK(a && b && c && model_forward(m, a, ids, 4, NULL, 0, NULL) == 0, "%s: fork prefill", name);
        if (a && b && c) {
            T_CHECK(model_seq_copy(b, a) == 0 && b->pos == 4, "%s: seq_copy", name);
            T_CHECK(model_seq_copy(c, a) != 0, "%s: seq_copy into a small context refused", name);
            T_CHECK(model_forward(m, a, ids + 4, 5, la, 0, NULL) == 0 && model_forward(m, b, ids + 4, 5, lb, 0, NULL) == 0,
                    "%s: continue both", name);
            T_CHECK(t_max_diff(la, full + 4 * V, (size_t)(5 * V)) <= tol && t_max_diff(lb, la, (size_t)(5 * V)) == 0,
                    "%s: forked sequence = original", name);
        }
        model_seq_free(a);
        model_seq_free(b);
        model_seq_free(c);
    }
    /* the model is shared read-only: two sequences on two threads at once give the single-threaded logits */
    {
        static float par[2][T * 128];
        int okp[2] = {0, 0};
#pragma omp parallel num_threads(2)
        {
            int me = 0;
#ifdef _OPENMP
            me = omp_get_thread_num();
#endif
            if (me < 2) {
                seq_state *sp = model_seq_new(m, 16);
                int32_t *use = me == 0 ? ids : ids2;
                okp[me] = sp && model_forward(m, sp, use, T, par[me], 0, NULL) == 0;
                model_seq_free(sp);
            }
        }
        T_CHECK(okp[0] && okp[1], "%s: parallel forwards", name);
        T_CHECK(t_max_diff(par[0], full, (size_t)(T * V)) <= tol && t_max_diff(par[1], full2, (size_t)(T * V)) <= tol,
                "%s: concurrent sequences give the same logits", name);
    }
    /* context overflow and bad ids: clear errors, no state change */
    model_seq_reset(s);
    int32_t many[40] = {0};
    T_CHECK(model_forward(m, s, many, 40, NULL, 0, NULL) != 0 && strstr(moec_last_error(), "context"),
            "%s: prompt longer than the context is an error: %s", name, moec_last_error());
    int32_t bad = (int32_t)V;
    T_CHECK(model_forward(m, s, &bad, 1, NULL, 0, NULL) != 0 && strstr(moec_last_error(), "out of range"),
            "%s: bad id is an error", name);
    T_CHECK(s->pos == 0, "%s: failed calls do not advance", name);
    model_seq_free(s);
}

static char tmpdir[256];
static const char *tmp(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
    return buf;
}

/* write m with extra key overrides; returns 0 on success */
typedef int (*tweak_fn)(gguf_writer *w);
static int write_tweaked(const model *m, const char *path, tweak_fn tw) {
    gguf_writer *w = gguf_w_new();
    if (!w) return -1;
    int rc = model_gguf_fill(m, w) == 0 && (!tw || tw(w) == 0) && gguf_w_write(w, path) == 0 ? 0 : -1;
    gguf_w_free(w);
    return rc;
}
static int tw_arch(gguf_writer *w) { return gguf_w_set_str(w, "general.architecture", "gpt9"); }
static int tw_heads(gguf_writer *w) { return gguf_w_set_u64(w, "yuan2moe.attention.head_count", 1ull << 40); }
static int tw_ff(gguf_writer *w) { return gguf_w_set_u32(w, "yuan2moe.expert_feed_forward_length", 16); }
static int tw_lfa(gguf_writer *w) { return gguf_w_set_bool(w, "yuan2moe.lfa", true); }
static int tw_layers(gguf_writer *w) { return gguf_w_set_u32(w, "yuan2moe.block_count", 4); }
static int tw_router(gguf_writer *w) { return gguf_w_set_str(w, "yuan2moe.router", "magic"); }
static int tw_topk(gguf_writer *w) { return gguf_w_set_u32(w, "yuan2moe.expert_used_count", 9); }
static int tw_layers_huge(gguf_writer *w) { return gguf_w_set_u32(w, "yuan2moe.block_count", 60000); }
static int tw_embd(gguf_writer *w) { return gguf_w_set_u32(w, "yuan2moe.embedding_length", 0); }

static void expect_load_error(const model *m, tweak_fn tw, const char *want, const char *what) {
    const char *p = tmp("bad.gguf");
    T_CHECK(write_tweaked(m, p, tw) == 0, "write %s: %s", what, moec_last_error());
    model *b = model_load(p, NULL);
    T_CHECK(b == NULL, "%s: load must fail", what);
    T_CHECK(strstr(moec_last_error(), want) != NULL, "%s: error '%s' should mention '%s'", what, moec_last_error(),
            want);
    model_free(b);
}

static void check_gguf(void) {
    model_hparams hp = yuan_hp();
    model *m = model_create(&hp, NULL);
    T_CHECK(m && model_init_random(m, 1, 0.3f) == 0, "create");
    const char *p = tmp("yuan.gguf");
    T_CHECK(model_write_gguf(m, p) == 0, "write gguf: %s", moec_last_error());
    model *l = model_load(p, NULL);
    T_CHECK(l != NULL, "load back: %s", moec_last_error());
    if (l) {
        T_CHECK(l->hp.n_layer == 3 && l->hp.head_dim == 12 && l->hp.n_dense_lead == 1 && l->hp.lfa &&
                    l->hp.moe_router == MODEL_FFN_MOE_ATTN && l->hp.tied && l->hp.rope_dims == 8,
                "hparams round trip");
        T_CHECK(l->n_params == m->n_params && l->n_floats == m->n_floats, "param table round trip");
        int32_t ids[5] = {1, 2, 3, 60, 7};
        static float a[5 * 64], b[5 * 64];
        seq_state *s1 = model_seq_new(m, 8), *s2 = model_seq_new(l, 8);
        T_CHECK(model_forward(m, s1, ids, 5, a, 0, NULL) == 0 && model_forward(l, s2, ids, 5, b, 0, NULL) == 0,
                "forward both");
        T_CHECK(t_max_diff(a, b, 5 * 64) == 0, "loaded model gives identical logits");
        /* no_mmap: the file read into anonymous memory gives the same logits; a missing file still fails clearly */
        {
            model *c = model_load(p, &(model_load_opts){.rope_table = -1, .no_mmap = true});
            static float cl[5 * 64];
            seq_state *sc = c ? model_seq_new(c, 8) : NULL;
            T_CHECK(sc && model_forward(c, sc, ids, 5, cl, 0, NULL) == 0 && t_max_diff(cl, b, 5 * 64) == 0,
                    "no_mmap load gives identical logits");
            model_seq_free(sc);
            model_free(c);
            T_CHECK(!model_load("/nonexistent/x.gguf", &(model_load_opts){.rope_table = -1, .no_mmap = true}) &&
                        strstr(moec_last_error(), "/nonexistent/x.gguf"),
                    "no_mmap, missing file: %s", moec_last_error());
        }
        /* rope table override: hf differs from fp32 at positions >= 2 but equals it at 0 */
        model_load_opts o = {.rope_table = MODEL_ROPE_TABLE_HF};
        model *h = model_load(p, &o);
        T_CHECK(h && h->hp.rope_table == MODEL_ROPE_TABLE_HF, "rope-table override");
        if (h) {
            seq_state *s3 = model_seq_new(h, 8);
            static float c[5 * 64];
            T_CHECK(model_forward(h, s3, ids, 5, c, 0, NULL) == 0, "forward hf");
            T_CHECK(t_max_diff(a, c, 64) < 1e-6, "hf table: position 0 identical");
            T_CHECK(t_max_diff(a + 4 * 64, c + 4 * 64, 64) > 0, "hf table: later positions differ");
            model_seq_free(s3);
            model_free(h);
        }
        model_seq_free(s1);
        model_seq_free(s2);
        model_free(l);
    }
    /* mutated files: loading (and, if it loads, a short forward) must never crash */
    {
        char *data = NULL;
        size_t len = 0;
        T_CHECK(moec_read_file(p, &data, &len) == 0, "read back");
        moec_rng r;
        moec_rng_seed(&r, 99);
        int loaded = 0;
        for (int it = 0; data && it < 300; it++) {
            char *c = malloc(len);
            if (!c) break;
            memcpy(c, data, len);
            /* mutate in the header region mostly (keys, tensor infos), sometimes anywhere */
            size_t span = it % 4 == 0 ? len : (len < 2048 ? len : 2048);
            for (int k = 0; k < 1 + it % 3; k++) c[moec_rng_u64(&r) % span] = (char)moec_rng_u64(&r);
            size_t cut = it % 10 == 9 ? (size_t)(moec_rng_u64(&r) % len) : len; /* sometimes truncated */
            FILE *f = fopen(tmp("mut.gguf"), "wb");
            if (f) {
                fwrite(c, 1, cut, f);
                fclose(f);
            }
            free(c);
            model *mm = model_load(tmp("mut.gguf"), NULL);
            if (mm) {
                loaded++;
                seq_state *sm = model_seq_new(mm, 4);
                int32_t two[2] = {1, 2};
                if (sm && mm->hp.n_vocab > 2) (void)model_forward(mm, sm, two, 2, NULL, 0, NULL);
                model_seq_free(sm);
                model_free(mm);
            } else {
                T_CHECK(moec_last_error()[0] != 0, "mutated file: failure without a message");
            }
        }
        T_CHECK(loaded > 0 && loaded < 300, "mutations: %d of 300 loaded", loaded);
        free(data);
    }
    /* hostile files: one clear error each */
    expect_load_error(m, tw_arch, "unknown architecture 'gpt9'", "unknown arch");
    expect_load_error(m, tw_heads, "head_count", "2^40 heads");
    expect_load_error(m, tw_ff, "has shape [16, 8, 4], expected [16, 16, 4]", "wrong shape");
    expect_load_error(m, tw_layers, "missing tensor blk.3.attn_norm.weight", "missing tensor");
    expect_load_error(m, tw_layers_huge, "block_count 60000 but the file has only", "absurd layer count");
    expect_load_error(m, tw_router, "unknown router 'magic'", "bad router");
    expect_load_error(m, tw_topk, "expert_used_count", "top-k > experts");
    expect_load_error(m, tw_embd, "embedding_length", "zero width");
    model_hparams hn = hp;
    hn.lfa = false;
    model *nolfa = model_create(&hn, NULL);
    T_CHECK(nolfa != NULL, "create no-lfa");
    if (nolfa) expect_load_error(nolfa, tw_lfa, "missing tensor blk.0.lfa_conv1.weight", "lfa on, tensors absent");
    model_free(nolfa);
    T_CHECK(model_load(tmp("does-not-exist.gguf"), NULL) == NULL, "missing file");
    /* llama MoE (GQA, linear router, untied) round trip */
    model_hparams hl = llama_moe_hp();
    model *lm = model_create(&hl, NULL);
    T_CHECK(lm && model_init_random(lm, 3, 0.3f) == 0 && model_write_gguf(lm, tmp("llama.gguf")) == 0,
            "write llama moe: %s", moec_last_error());
    model *ll = model_load(tmp("llama.gguf"), NULL);
    T_CHECK(ll != NULL, "load llama moe: %s", moec_last_error());
    if (ll && lm) {
        T_CHECK(ll->hp.arch == MODEL_ARCH_LLAMA && ll->hp.n_head_kv == 2 && ll->hp.n_expert == 3 &&
                    ll->hp.n_ff_exp == 10 && !ll->hp.tied && ll->hp.moe_router == MODEL_FFN_MOE_LINEAR,
                "llama hparams round trip");
        int32_t ids[4] = {4, 9, 49, 0};
        static float a[4 * 50], b[4 * 50];
        seq_state *s1 = model_seq_new(lm, 4), *s2 = model_seq_new(ll, 4);
        T_CHECK(model_forward(lm, s1, ids, 4, a, 0, NULL) == 0 && model_forward(ll, s2, ids, 4, b, 0, NULL) == 0,
                "llama forward both");
        T_CHECK(t_max_diff(a, b, 4 * 50) == 0, "loaded llama gives identical logits");
        model_seq_free(s1);
        model_seq_free(s2);
    }
    /* the same model as old-style per-expert tensors blk.N.ffn_gate.E.weight */
    gguf_writer *w = gguf_w_new();
    int ok = w != NULL && lm != NULL;
    if (ok) {
        const char *keys[][2] = {{"llama.embedding_length", "16"}, {"llama.block_count", "2"},
                                 {"llama.attention.head_count", "4"}, {"llama.attention.head_count_kv", "2"},
                                 {"llama.feed_forward_length", "10"}, {"llama.expert_count", "3"},
                                 {"llama.expert_used_count", "2"}, {"llama.context_length", "64"}};
        ok &= gguf_w_set_str(w, "general.architecture", "llama") == 0;
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            ok &= gguf_w_set_u32(w, keys[i][0], (uint32_t)atoi(keys[i][1])) == 0;
        ok &= gguf_w_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f) == 0;
        for (size_t i = 0; i < lm->n_params; i++) {
            const model_param *p = &lm->params[i];
            const char *x = strstr(p->name, "_exps.");
            if (!x) {
                ok &= gguf_w_add_tensor(w, p->name, GGML_F32, (uint32_t)p->n_dims, p->ne, p->view->data) == 0;
                continue;
            }
            for (int64_t e = 0; e < p->ne[2]; e++) {
                char nm[64];
                snprintf(nm, sizeof nm, "%.*s.%lld.weight", (int)(x - p->name), p->name, (long long)e);
                ok &= gguf_w_add_tensor(w, nm, GGML_F32, 2, p->ne,
                                        (const float *)p->view->data + (size_t)e * (size_t)(p->ne[0] * p->ne[1])) == 0;
            }
        }
        ok &= gguf_w_write(w, tmp("perexp.gguf")) == 0;
    }
    gguf_w_free(w);
    T_CHECK(ok, "write per-expert file: %s", moec_last_error());
    model *pe = ok ? model_load(tmp("perexp.gguf"), NULL) : NULL;
    T_CHECK(pe != NULL, "load per-expert file: %s", moec_last_error());
    if (pe && ll) {
        int32_t ids[4] = {4, 9, 49, 0};
        static float a[4 * 50], b[4 * 50];
        seq_state *s1 = model_seq_new(pe, 4), *s2 = model_seq_new(ll, 4);
        T_CHECK(model_forward(pe, s1, ids, 4, a, 0, NULL) == 0 && model_forward(ll, s2, ids, 4, b, 0, NULL) == 0,
                "per-expert forward");
        T_CHECK(t_max_diff(a, b, 4 * 50) == 0, "per-expert tensors give identical logits");
        T_CHECK(model_write_gguf(pe, tmp("x.gguf")) != 0, "writing a per-expert model is refused");
        model_seq_free(s1);
        model_seq_free(s2);
    }
    model_free(pe);
    model_free(lm);
    model_free(ll);
    FILE *f = fopen(tmp("junk.gguf"), "wb");
    if (f) {
        fputs("GGUF but not really", f);
        fclose(f);
    }
    T_CHECK(model_load(tmp("junk.gguf"), NULL) == NULL && moec_last_error()[0], "junk file");
    model_free(m);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/moec_test_model_%d", (int)getpid());
    if (mkdir(tmpdir, 0700) != 0) perror("mkdir");

    model_hparams hp = yuan_hp();
    model *y = model_create(&hp, NULL);
    T_CHECK(y && model_init_random(y, 42, 0.3f) == 0, "create yuan: %s", moec_last_error());
    if (y) check_consistency(y, "yuan2moe (LFA, attention router, 1 dense layer)");
    hp.rope_table = MODEL_ROPE_TABLE_HF;
    model *yh = model_create(&hp, NULL);
    T_CHECK(yh && model_init_random(yh, 42, 0.3f) == 0, "create yuan hf");
    if (yh) check_consistency(yh, "yuan2moe hf rope table");
    model_hparams hl = llama_moe_hp();
    model *lm = model_create(&hl, NULL);
    T_CHECK(lm && model_init_random(lm, 7, 0.3f) == 0, "create llama moe");
    if (lm) check_consistency(lm, "llama MoE (GQA, linear router)");
    hl.n_expert = 0, hl.n_expert_used = 0, hl.n_ff = 24, hl.tied = true;
    model *ld = model_create(&hl, NULL);
    T_CHECK(ld && model_init_random(ld, 8, 0.3f) == 0, "create llama dense");
    if (ld) check_consistency(ld, "llama dense tied");
    /* bad hyper-parameters */
    model_hparams bad = yuan_hp();
    bad.n_head_kv = 1;
    T_CHECK(model_create(&bad, NULL) == NULL && strstr(moec_last_error(), "head_count_kv"), "yuan GQA rejected");
    bad = yuan_hp();
    bad.rope_dims = 13;
    T_CHECK(model_create(&bad, NULL) == NULL && strstr(moec_last_error(), "rope"), "odd rope dims rejected");
    model_free(y);
    model_free(yh);
    model_free(lm);
    model_free(ld);

    /* accounting for Yuan 2.0-M32 (spec: total 39.94 B, active 3.704 B, 2 x active = 7.41 GFLOPs per token) */
    model_hparams m32 = {0};
    m32.arch = MODEL_ARCH_YUAN2MOE;
    m32.n_vocab = 135040, m32.n_embd = 2048, m32.n_layer = 24, m32.n_head = 16, m32.n_head_kv = 16;
    m32.head_dim = 256, m32.n_ctx_train = 16384, m32.n_ff_exp = 8192, m32.n_expert = 32, m32.n_expert_used = 2;
    m32.rope_dims = 128, m32.rope_base = 10000, m32.norm_eps = 1e-6f, m32.moe_router = MODEL_FFN_MOE_ATTN;
    m32.lfa = true, m32.tied = true;
    model *pl = model_plan(&m32);
    T_CHECK(pl != NULL, "plan M32: %s", moec_last_error());
    if (pl) {
        model_stats st;
        model_get_stats(pl, 0, &st);
        T_CHECK(fabs(st.total_params / 1e9 - 39.94) < 0.01, "M32 total %.4f B", st.total_params / 1e9);
        T_CHECK(fabs(st.active_params / 1e9 - 3.704) < 0.001, "M32 active %.4f B", st.active_params / 1e9);
        T_CHECK(fabs(st.flops_per_token / 1e9 - 7.41) < 0.01, "M32 GFLOPs/token %.4f", st.flops_per_token / 1e9);
        T_CHECK(fabs(st.weight_bytes_per_token / 4 - st.active_params) / st.active_params < 1e-4,
                "M32 fp32 weight bytes = 4 x active");
        model_free(pl);
    }
    check_gguf();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    return t_done("test_model");
}
