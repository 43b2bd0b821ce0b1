/* convert: HuggingFace Yuan2-M32 and llama2.c checkpoints -> GGUF. See convert.h and docs/convert.md. */
#include "convert.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "tok.h"
#include "util.h"

conv_opts conv_default_opts(void) {
    conv_opts o = {-1, -1, NULL};
    return o;
}

/* ---- output builder: a gguf_writer plus the fill jobs it calls during the write -------------------------- */
/* Nothing of the output is held in memory: every tensor is a job that the writer calls for a chunk of rows
 * (gguf_w_add_tensor_fill); the job reads its source rows from the mmapped input, converts them and then drops
 * the input pages it touched (madvise MADV_DONTNEED: the mapping is read-only and private, so the pages are just
 * re-read from the file if needed again). Peak memory: the writer's chunk buffer + a few rows + the input pages
 * of one chunk, whatever the model size. */
typedef struct {
    gguf_writer *w;
    void **bufs; /* jobs and their source lists, freed after the write */
    size_t n_bufs, cap_bufs;
    size_t n_tensors, n_matrix_f32, n_matrix_f16, n_matrix_bf16;
    float *scratch; /* shared by the jobs (the writer calls them one at a time) */
    size_t scratch_n;
} cv;

static void cv_free(cv *c) {
    for (size_t i = 0; i < c->n_bufs; i++) moec_free(c->bufs[i]);
    free(c->bufs);
    gguf_w_free(c->w);
    free(c->scratch);
    memset(c, 0, sizeof *c);
}

/* bytes of zeroed memory owned by c (freed after the write). */
static void *cv_alloc(cv *c, size_t bytes) {
    if (c->n_bufs == c->cap_bufs) {
        size_t nc = c->cap_bufs ? 2 * c->cap_bufs : 64;
        void **nb = moec_realloc(c->bufs, nc * sizeof *nb);
        if (!nb) return NULL;
        c->bufs = nb;
        c->cap_bufs = nc;
    }
    void *p = moec_alloc(bytes);
    if (p) c->bufs[c->n_bufs++] = p;
    return p;
}

/* dst[i] = src[i] in type t (F32, F16 or BF16, round to nearest even). */
static void enc(ggml_type t, const float *src, size_t n, void *dst, size_t dst_off) {
    if (t == GGML_F32) {
        memcpy((float *)dst + dst_off, src, n * sizeof(float));
    } else if (t == GGML_F16) {
        uint16_t *d = (uint16_t *)dst + dst_off;
        for (size_t i = 0; i < n; i++) d[i] = moec_f32_to_f16(src[i]);
    } else {
        uint16_t *d = (uint16_t *)dst + dst_off;
        for (size_t i = 0; i < n; i++) d[i] = moec_f32_to_bf16(src[i]);
    }
}

/* How an output tensor's rows (ne0 elements each, rows = ne[1]*ne[2]*ne[3]) come from source tensors whose
 * shapes were validated when the job was made:
 *   J_ROWS: output row R = row (R % rps) + roff (rows of ne0 elements) of src[R / rps] (plain copies,
 *           per-expert slices stacked along E, w1 split into gate rows [0, F) and up rows [F, 2F));
 *   J_QK:   src = {q_proj, k_proj} [P, H], fused = cat(q, k) [2P, H]; output row R = h*d + j is fused row
 *           2dh + j (attn_q) or 2dh + d + j (attn_k);
 *   J_CONV: src = conv [co, ne0, 2, 1]; output {ne0, co, 2}: row R = tap*co + r, element i = src[r, i, tap]. */
typedef enum { J_ROWS, J_QK, J_CONV } job_kind;

typedef struct {
    job_kind kind;
    ggml_type t;
    int64_t ne0, n_src, rps, roff;
    int64_t d, P, co;
    bool is_k;
    cv *c;
    const st_tensor **src; /* n_src entries */
} job;

/* The input bytes a fill call read from one source tensor, element range [lo, hi). They are dropped from
 * memory when the fill call ends or the source tensor changes (whole pages over [lo, hi)), and while a long
 * range grows, in SPAN_MAX steps (whole SPAN_MAX-aligned blocks only: zapping part of a large page-cache folio
 * and touching the rest again makes the kernel map more of it than it frees, measured on Linux 6.18). */
#define SPAN_MAX ((uintptr_t)2 << 20)
typedef struct {
    const st_tensor *t;
    size_t lo, hi;
} span;

/* Drop pages of sp (advisory; failures are harmless). all: every page over [lo, hi), then sp is empty; else only
 * the SPAN_MAX-aligned blocks below hi (lo moves up to the first byte not dropped). The range never leaves the
 * pages of the tensor itself, which are inside its file's mapping. */
static void span_drop(span *sp, bool all) {
    if (sp->t && sp->hi > sp->lo) {
        size_t es = st_dtype_size(sp->t->dtype);
        uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
        if (pg == 0 || pg == (uintptr_t)-1) pg = 4096;
        uintptr_t base = (uintptr_t)sp->t->data, a = base + sp->lo * es, b = base + sp->hi * es;
        uintptr_t lo_pg = base - base % pg;
        if (all) {
            a -= a % pg;
            if (b % pg) b += pg - b % pg; /* the mapping covers whole pages */
        } else {
            a -= a % SPAN_MAX;
            if (a < lo_pg) a = lo_pg;
            b -= b % SPAN_MAX;
            if (b <= a) return;
            sp->lo = (size_t)(b - base + es - 1) / es;
        }
        (void)madvise((void *)a, (size_t)(b - a), MADV_DONTNEED);
    }
    if (all) {
        sp->t = NULL;
        sp->lo = sp->hi = 0;
    }
}

/* Read n elements of t from `first` into out (fp32) and record the range in sp (dropping sp's previous
 * tensor's pages when t differs). */
static int span_read(span *sp, const st_tensor *t, size_t first, size_t n, float *out) {
    if (st_read_f32(t, first, n, out) != 0) return -1;
    if (sp->t != t) {
        span_drop(sp, true);
        sp->t = t;
        sp->lo = first;
        sp->hi = first + n;
    } else {
        if (first < sp->lo) sp->lo = first;
        if (first + n > sp->hi) sp->hi = first + n;
    }
    if ((sp->hi - sp->lo) * st_dtype_size(t->dtype) >= 2 * SPAN_MAX) span_drop(sp, false);
    return 0;
}

/* gguf_fill_fn: output rows [row0, row0 + nrows) of job u into dst. */
static int job_fill(void *u, void *dst, int64_t row0, int64_t nrows) {
    job *j = u;
    cv *c = j->c;
    size_t ne0 = (size_t)j->ne0, need = 4 * (ne0 ? ne0 : 1);
    span sp[2] = {{NULL, 0, 0}, {NULL, 0, 0}};
    int rc = -1;
    if (c->scratch_n < need) {
        float *p = moec_realloc(c->scratch, need * sizeof(float));
        if (!p) return -1;
        c->scratch = p;
        c->scratch_n = need;
    }
    float *s = c->scratch;
    for (int64_t R = row0; R < row0 + nrows; R++) {
        size_t off = (size_t)(R - row0) * ne0;
        if (j->kind == J_ROWS) {
            int64_t i = R / j->rps, r = R % j->rps + j->roff;
            if (span_read(&sp[0], j->src[i], (size_t)r * ne0, ne0, s) != 0) goto done;
            enc(j->t, s, ne0, dst, off);
        } else if (j->kind == J_QK) {
            int64_t h = R / j->d, jj = R % j->d, rf = 2 * j->d * h + jj + (j->is_k ? j->d : 0);
            int w = rf < j->P ? 0 : 1;
            if (span_read(&sp[w], j->src[w], (size_t)(rf - (w ? j->P : 0)) * ne0, ne0, s) != 0) goto done;
            enc(j->t, s, ne0, dst, off);
        } else {
            int64_t tap = R / j->co, r = R % j->co;
            if (span_read(&sp[0], j->src[0], (size_t)r * ne0 * 2, 2 * ne0, s) != 0) goto done;
            for (size_t i = 0; i < ne0; i++) s[2 * ne0 + i] = s[2 * i + (size_t)tap];
            enc(j->t, s + 2 * ne0, ne0, dst, off);
        }
    }
    rc = 0;
    /* last chunk of the tensor: drop every page of its sources (the kernel maps whole page-cache folios around
       the pages read, so a few pages next to the rows read may still be resident) */
    int64_t rows = j->kind == J_ROWS ? j->n_src * j->rps : j->kind == J_QK ? j->P : 2 * j->co;
    if (row0 + nrows == rows)
        for (int64_t i = 0; i < j->n_src; i++) {
            span all = {j->src[i], 0, j->src[i]->n_elems};
            span_drop(&all, true);
        }
done:
    span_drop(&sp[0], true);
    span_drop(&sp[1], true);
    return rc;
}

/* A job of n_src sources (filled in by the caller), owned by c. */
static job *job_new(cv *c, job_kind kind, ggml_type t, int64_t ne0, int64_t n_src) {
    size_t bytes;
    if (!moec_mul_ok((size_t)n_src, sizeof(const st_tensor *), &bytes) || !moec_add_ok(bytes, sizeof(job), &bytes)) {
        moec_set_error("too many source tensors (%lld)", (long long)n_src);
        return NULL;
    }
    job *j = cv_alloc(c, bytes);
    if (!j) return NULL;
    j->kind = kind;
    j->t = t;
    j->ne0 = ne0;
    j->n_src = n_src;
    j->rps = 1;
    j->c = c;
    j->src = (const st_tensor **)(void *)(j + 1);
    return j;
}

static int cv_add(cv *c, const char *name, ggml_type t, uint32_t n_dims, const int64_t *ne, job *j) {
    if (gguf_w_add_tensor_fill(c->w, name, t, n_dims, ne, job_fill, j) != 0) return moec_wrap_error("tensor %s", name);
    c->n_tensors++;
    if (n_dims >= 2) {
        if (t == GGML_F32) c->n_matrix_f32++;
        else if (t == GGML_F16) c->n_matrix_f16++;
        else c->n_matrix_bf16++;
    }
    return 0;
}

/* general.file_type as llama.cpp numbers it: 0 all F32, 1 mostly F16, 32 mostly BF16. */
static uint32_t cv_file_type(const cv *c) {
    if (c->n_matrix_bf16 >= c->n_matrix_f16 && c->n_matrix_bf16 > c->n_matrix_f32) return 32;
    if (c->n_matrix_f16 > c->n_matrix_f32) return 1;
    return 0;
}

static const char *base_name(const char *path, char *buf, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    size_t l = n - b;
    if (l >= cap) l = cap - 1;
    memcpy(buf, path + b, l);
    buf[l] = 0;
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf && (!strcmp(dot, ".bin") || !strcmp(dot, ".safetensors"))) *dot = 0;
    return buf;
}

/* ---- HuggingFace Yuan2-M32 ----------------------------------------------------------------------------- */
typedef struct {
    int64_t H, L, n_h, P, d, V, E, K, F, rd, ctx;
    double eps, theta;
    bool tied, lfa, linear_router;
} hf_cfg;

/* Integer key: absent -> def (or an error if required); must be an integer in [lo, hi]. */
static int cfg_int(const cJSON *o, const char *obj, const char *key, bool required, int64_t def, int64_t lo,
                   int64_t hi, int64_t *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j) {
        if (required) return moec_set_error("config.json: missing key %s%s", obj, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(j) || floor(j->valuedouble) != j->valuedouble || j->valuedouble < (double)lo ||
        j->valuedouble > (double)hi)
        return moec_set_error("config.json: %s%s must be an integer in [%lld, %lld]", obj, key, (long long)lo,
                              (long long)hi);
    *out = (int64_t)j->valuedouble;
    return 0;
}

static int cfg_num(const cJSON *o, const char *key, double def, double lo, double hi, double *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= lo && j->valuedouble <= hi))
        return moec_set_error("config.json: %s must be a number in [%g, %g]", key, lo, hi);
    *out = j->valuedouble;
    return 0;
}

static int cfg_bool(const cJSON *o, const char *obj, const char *key, bool def, bool *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(j)) return moec_set_error("config.json: %s%s must be true or false", obj, key);
    *out = cJSON_IsTrue(j);
    return 0;
}

static int read_hf_config(const char *dir, hf_cfg *c) {
    char path[4096];
    char *txt = NULL;
    size_t len;
    cJSON *root = NULL;
    snprintf(path, sizeof path, "%s/config.json", dir);
    TRY(moec_read_file(path, &txt, &len));
    root = cJSON_ParseWithLength(txt, len);
    CHECK(root && cJSON_IsObject(root), "%s: not a JSON object", path);
    const cJSON *moe = cJSON_GetObjectItemCaseSensitive(root, "moe_config");
    CHECK(moe, "config.json: missing key moe_config (moec converts the MoE Yuan2-M32 models)");
    CHECK(cJSON_IsObject(moe), "config.json: moe_config must be an object");
    TRY(cfg_int(root, "", "hidden_size", true, 0, 2, 1 << 20, &c->H));
    TRY(cfg_int(root, "", "num_hidden_layers", true, 0, 1, 4096, &c->L));
    TRY(cfg_int(root, "", "num_attention_heads", true, 0, 1, 65536, &c->n_h));
    TRY(cfg_int(root, "", "attention_projection_size", false, c->H, 1, 1 << 22, &c->P));
    TRY(cfg_int(root, "", "vocab_size", true, 0, 1, 1 << 28, &c->V));
    TRY(cfg_int(root, "", "max_position_embeddings", false, 4096, 1, (int64_t)1 << 31, &c->ctx));
    TRY(cfg_int(moe, "moe_config.", "moe_num_experts", true, 0, 1, 1 << 20, &c->E));
    TRY(cfg_int(moe, "moe_config.", "moe_top_k", true, 0, 1, c->E, &c->K));
    TRY(cfg_int(moe, "moe_config.", "ffn_hidden_size", true, 0, 1, 1 << 24, &c->F));
    bool norm_topk;
    TRY(cfg_bool(moe, "moe_config.", "norm_topk_prob", true, &norm_topk));
    CHECK(norm_topk, "config.json: moe_config.norm_topk_prob = false is not supported (yuan2moe renormalises the top-k "
          "weights)");
    TRY(cfg_num(root, "rms_norm_eps", 1e-6, 0, 1, &c->eps));
    TRY(cfg_num(root, "rope_theta", 10000.0, 1.0, 1e12, &c->theta));
    TRY(cfg_bool(root, "", "tie_word_embeddings", true, &c->tied));
    TRY(cfg_bool(root, "", "use_lfa", true, &c->lfa));
    CHECK(c->P % c->n_h == 0, "config.json: attention_projection_size %lld is not a multiple of num_attention_heads "
          "%lld", (long long)c->P, (long long)c->n_h);
    c->d = c->P / c->n_h;
    {
        int64_t v; /* keys of later Yuan configs: accepted only when they agree with the M32 layout */
        TRY(cfg_int(root, "", "num_key_value_heads", false, c->n_h, 1, 65536, &v));
        CHECK(v == c->n_h, "config.json: num_key_value_heads %lld != num_attention_heads %lld (GQA) is not "
              "supported for yuan2moe", (long long)v, (long long)c->n_h);
        TRY(cfg_int(root, "", "head_dim", false, c->d, 1, 1 << 20, &v));
        CHECK(v == c->d, "config.json: head_dim %lld != attention_projection_size / num_attention_heads = %lld",
              (long long)v, (long long)c->d);
    }
    if (cJSON_GetObjectItemCaseSensitive(root, "rotary_dim")) {
        TRY(cfg_int(root, "", "rotary_dim", true, 0, 2, c->d, &c->rd));
    } else if (cJSON_GetObjectItemCaseSensitive(root, "rotary_percent")) {
        double pct;
        TRY(cfg_num(root, "rotary_percent", 1, 0, 1, &pct));
        c->rd = (int64_t)((double)c->d * pct);
    } else {
        c->rd = c->H / c->n_h; /* the HF code's rule */
    }
    CHECK(c->rd >= 2 && c->rd <= c->d && c->rd % 2 == 0,
          "config.json: rotary dims %lld must be even and in [2, head size %lld]", (long long)c->rd, (long long)c->d);
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(root, "router_type");
    c->linear_router = false;
    if (rt) {
        CHECK(cJSON_IsString(rt) && (!strcmp(rt->valuestring, "attention") || !strcmp(rt->valuestring, "linear")),
              "config.json: router_type must be \"attention\" or \"linear\"");
        c->linear_router = !strcmp(rt->valuestring, "linear");
    }
    CHECK(!c->lfa || c->H % 2 == 0, "config.json: hidden_size %lld must be even for LFA", (long long)c->H);
    cJSON_Delete(root);
    free(txt);
    return 0;
fail:
    cJSON_Delete(root);
    free(txt);
    return -1;
}

/* The checkpoint and which of its tensors the mapping consumed (used[i] for st_tensor_at(st, i)). */
typedef struct {
    const st_model *st;
    uint8_t *used;
} hf_src;

/* The tensor `name` after checking its shape (PyTorch order, n_dims entries) and dtype; marks it used. */
static int hf_find(hf_src *src, const char *name, int n_dims, const int64_t *shape, const st_tensor **out) {
    *out = NULL;
    const st_tensor *t = st_find(src->st, name);
    if (!t) return moec_set_error("missing tensor %s", name);
    src->used[t - st_tensor_at(src->st, 0)] = 1;
    bool ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char a[160], b[160];
        size_t oa = 0, ob = 0;
        a[0] = b[0] = 0;
        for (int i = 0; i < t->n_dims && oa < sizeof a - 24; i++)
            oa += (size_t)snprintf(a + oa, sizeof a - oa, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        for (int i = 0; i < n_dims && ob < sizeof b - 24; i++)
            ob += (size_t)snprintf(b + ob, sizeof b - ob, "%s%lld", i ? ", " : "", (long long)shape[i]);
        return moec_set_error("tensor %s has shape [%s], config.json implies [%s]", name, a, b);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return moec_set_error("tensor %s: dtype %s (moec converts F32, F16 and BF16)", name,
                              st_dtype_name(t->dtype));
    *out = t;
    return 0;
}

/* Copy an HF tensor (any shape with the same elements) into GGUF tensor gname {ne} of type t. */
static int hf_copy(cv *c, hf_src *st, const char *hname, int hd, const int64_t *hshape, const char *gname,
                   ggml_type t, uint32_t gd, const int64_t *ne) {
    const st_tensor *src;
    TRY(hf_find(st, hname, hd, hshape, &src));
    int64_t rows = 1;
    for (uint32_t i = 1; i < gd; i++) rows *= ne[i]; /* shape validated against the file: no overflow */
    job *j = job_new(c, J_ROWS, t, ne[0], 1);
    TRY_PTR(j);
    j->src[0] = src;
    j->rps = rows;
    return cv_add(c, gname, t, gd, ne, j);
fail:
    return -1;
}

static int hf_vec(cv *c, hf_src *st, const char *hname, int64_t n, const char *gname) {
    int64_t sh[1] = {n}, ne[1] = {n};
    return hf_copy(c, st, hname, 1, sh, gname, GGML_F32, 1, ne);
}

static int hf_mat(cv *c, hf_src *st, const char *hname, int64_t out, int64_t in, const char *gname,
                  ggml_type t) {
    int64_t sh[2] = {out, in}, ne[2] = {in, out};
    return hf_copy(c, st, hname, 2, sh, gname, t, 2, ne);
}

static int hf_layer(cv *c, hf_src *st, const hf_cfg *g, int64_t l, ggml_type mt) {
    char hn[256], gn[128];
    const int64_t H = g->H, P = g->P, d = g->d, E = g->E, F = g->F;
#define HN(s) (snprintf(hn, sizeof hn, "model.layers.%lld.%s", (long long)l, s), hn)
#define GN(s) (snprintf(gn, sizeof gn, "blk.%lld.%s", (long long)l, s), gn)
    TRY(hf_vec(c, st, HN("input_layernorm.weight"), H, GN("attn_norm.weight")));
    /* Q and K: cat(q_proj, k_proj) rows are per head [Q_h (d rows) | K_h (d rows)] */
    {
        int64_t sh[2] = {P, H}, ne[2] = {H, P};
        const st_tensor *q, *k;
        TRY(hf_find(st, HN("self_attn.q_proj.weight"), 2, sh, &q));
        TRY(hf_find(st, HN("self_attn.k_proj.weight"), 2, sh, &k));
        for (int w = 0; w < 2; w++) {
            job *j = job_new(c, J_QK, mt, H, 2);
            TRY_PTR(j);
            j->src[0] = q;
            j->src[1] = k;
            j->d = d;
            j->P = P;
            j->is_k = w == 1;
            TRY(cv_add(c, GN(w ? "attn_k.weight" : "attn_q.weight"), mt, 2, ne, j));
        }
    }
    TRY(hf_mat(c, st, HN("self_attn.v_proj.weight"), P, H, GN("attn_v.weight"), mt));
    TRY(hf_mat(c, st, HN("self_attn.o_proj.weight"), H, P, GN("attn_output.weight"), mt));
    if (g->lfa) {
        /* conv [out, in, 2, 1] -> {in, out, 2}: tap k is the matrix conv[:, :, k, 0] */
        for (int jc = 0; jc < 2; jc++) {
            int64_t co = jc == 0 ? H / 2 : H, ci = jc == 0 ? H : H / 2;
            int64_t sh[4] = {co, ci, 2, 1}, ne[3] = {ci, co, 2};
            char nm[64];
            const st_tensor *cw;
            snprintf(nm, sizeof nm, "self_attn.lf_gate.conv%d.weight", jc + 1);
            TRY(hf_find(st, HN(nm), 4, sh, &cw));
            job *j = job_new(c, J_CONV, mt, ci, 1);
            TRY_PTR(j);
            j->src[0] = cw;
            j->co = co;
            snprintf(nm, sizeof nm, "lfa_conv%d.weight", jc + 1);
            TRY(cv_add(c, GN(nm), mt, 3, ne, j));
            snprintf(nm, sizeof nm, "self_attn.lf_gate.conv%d.bias", jc + 1);
            char gb[32];
            snprintf(gb, sizeof gb, "lfa_conv%d.bias", jc + 1);
            char gfull[128];
            snprintf(gfull, sizeof gfull, "blk.%lld.%s", (long long)l, gb);
            TRY(hf_vec(c, st, HN(nm), co, gfull));
        }
        TRY(hf_vec(c, st, HN("self_attn.lf_gate.output_layernorm.weight"), H, GN("lfa_norm.weight")));
    }
    TRY(hf_vec(c, st, HN("post_attention_layernorm.weight"), H, GN("ffn_norm.weight")));
    if (g->linear_router) {
        TRY(hf_mat(c, st, HN("mlp.gate.weight"), E, H, GN("ffn_gate_inp.weight"), GGML_F32));
    } else {
        TRY(hf_mat(c, st, HN("mlp.gate.query.weight"), E, H, GN("ffn_router_q.weight"), GGML_F32));
        TRY(hf_mat(c, st, HN("mlp.gate.key.weight"), E, H, GN("ffn_router_k.weight"), GGML_F32));
        TRY(hf_mat(c, st, HN("mlp.gate.value.weight"), E, H, GN("ffn_router_v.weight"), GGML_F32));
    }
    /* experts: w1 [2F, H] = [gate; up] -> ffn_gate_exps, ffn_up_exps {H, F, E}; w2 [H, F] -> ffn_down_exps {F, H, E}
       (output row e*F + f of gate/up = row f / F + f of expert e's w1; row e*H + h of down = row h of w2) */
    {
        size_t n;
        if (!moec_mul_ok((size_t)(F * H), (size_t)E, &n)) return moec_set_error("layer %lld: expert tensors too large", (long long)l);
        job *jg = job_new(c, J_ROWS, mt, H, E), *ju = job_new(c, J_ROWS, mt, H, E), *jd = job_new(c, J_ROWS, mt, F, E);
        TRY_PTR(jg);
        TRY_PTR(ju);
        TRY_PTR(jd);
        for (int64_t e = 0; e < E; e++) {
            char nm[96];
            int64_t s1[2] = {2 * F, H}, s2[2] = {H, F};
            const st_tensor *w1, *w2;
            snprintf(nm, sizeof nm, "mlp.experts.%lld.w1.weight", (long long)e);
            TRY(hf_find(st, HN(nm), 2, s1, &w1));
            snprintf(nm, sizeof nm, "mlp.experts.%lld.w2.weight", (long long)e);
            TRY(hf_find(st, HN(nm), 2, s2, &w2));
            jg->src[e] = ju->src[e] = w1;
            jd->src[e] = w2;
        }
        jg->rps = ju->rps = F;
        ju->roff = F;
        jd->rps = H;
        int64_t ne_gu[3] = {H, F, E}, ne_d[3] = {F, H, E};
        TRY(cv_add(c, GN("ffn_gate_exps.weight"), mt, 3, ne_gu, jg));
        TRY(cv_add(c, GN("ffn_up_exps.weight"), mt, 3, ne_gu, ju));
        TRY(cv_add(c, GN("ffn_down_exps.weight"), mt, 3, ne_d, jd));
    }
#undef HN
#undef GN
    return 0;
fail:
    return -1;
}

static ggml_type from_st(st_dtype t) { return t == ST_F16 ? GGML_F16 : t == ST_BF16 ? GGML_BF16 : GGML_F32; }

/* Tokenizer keys from v, with the token list padded to n_vocab rows ("[PADi]", UNUSED) as llama.cpp does. */
static int write_vocab(gguf_writer *w, const tok_vocab *v, int64_t n_vocab) {
    const char **strs = NULL;
    char **pads = NULL;
    uint64_t *lens = NULL;
    float *scores = NULL;
    int32_t *types = NULL;
    int64_t n = tok_n_vocab(v);
    int rc = -1;
    CHECK(n <= n_vocab, "the tokenizer has %lld pieces but the model only %lld embedding rows", (long long)n,
          (long long)n_vocab);
    TRY(tok_write_gguf(v, w));
    if (n == n_vocab) return 0;
    strs = moec_calloc((size_t)n_vocab, sizeof *strs);
    pads = moec_calloc((size_t)(n_vocab - n), sizeof *pads);
    lens = moec_calloc((size_t)n_vocab, sizeof *lens);
    scores = moec_calloc((size_t)n_vocab, sizeof *scores);
    types = moec_calloc((size_t)n_vocab, sizeof *types);
    TRY_PTR(strs);
    TRY_PTR(pads);
    TRY_PTR(lens);
    TRY_PTR(scores);
    TRY_PTR(types);
    for (int64_t i = 0; i < n_vocab; i++) {
        if (i < n) {
            size_t l;
            strs[i] = tok_piece(v, (int32_t)i, &l);
            lens[i] = l;
            scores[i] = tok_score(v, (int32_t)i);
            types[i] = (int32_t)tok_type(v, (int32_t)i);
        } else {
            char b[32];
            int l = snprintf(b, sizeof b, "[PAD%lld]", (long long)i);
            pads[i - n] = moec_strdup(b);
            TRY_PTR(pads[i - n]);
            strs[i] = pads[i - n];
            lens[i] = (uint64_t)l;
            scores[i] = -1000.0f;
            types[i] = TOK_UNUSED;
        }
    }
    TRY(gguf_w_set_arr_str(w, "tokenizer.ggml.tokens", (uint64_t)n_vocab, strs, lens));
    TRY(gguf_w_set_arr(w, "tokenizer.ggml.scores", GGUF_F32, (uint64_t)n_vocab, scores));
    TRY(gguf_w_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, (uint64_t)n_vocab, types));
    rc = 0;
fail:
    if (pads)
        for (int64_t i = 0; i < n_vocab - n; i++) free(pads[i]);
    free(pads);
    free(strs);
    free(lens);
    free(scores);
    free(types);
    return rc;
}

int conv_hf(const char *hf_dir, const char *out_path, const conv_opts *opts) {
    conv_opts o = opts ? *opts : conv_default_opts();
    hf_cfg g;
    cv c;
    memset(&c, 0, sizeof c);
    memset(&g, 0, sizeof g);
    st_model *stm = NULL;
    hf_src src = {NULL, NULL}, *st = &src;
    tok_vocab *voc = NULL;
    char path[4096], nm[256];
    struct stat sb;
    CHECK(stat(hf_dir, &sb) == 0 && S_ISDIR(sb.st_mode), "%s: not a directory", hf_dir);
    TRY(read_hf_config(hf_dir, &g));
    stm = st_open_dir(hf_dir);
    TRY_PTR(stm);
    src.st = stm;
    src.used = moec_calloc(st_n_tensors(stm) + 1, 1);
    TRY_PTR(src.used);
    const st_tensor *emb = st_find(stm, "model.embed_tokens.weight");
    CHECK(emb, "missing tensor model.embed_tokens.weight");
    ggml_type mt = o.out_type >= 0 ? (ggml_type)o.out_type : from_st(emb->dtype);
    CHECK(mt == GGML_F32 || mt == GGML_F16 || mt == GGML_BF16, "output type %s not supported (f32, f16, bf16)",
          ggml_type_name(mt));
    const st_tensor *lm = st_find(stm, "lm_head.weight");
    CHECK(g.tied || lm, "config.json says tie_word_embeddings = false but lm_head.weight is missing");
    c.w = gguf_w_new();
    TRY_PTR(c.w);
    gguf_writer *w = c.w;
    TRY(gguf_w_set_str(w, "general.architecture", "yuan2moe"));
    TRY(gguf_w_set_str(w, "general.name", o.name ? o.name : base_name(hf_dir, nm, sizeof nm)));
    TRY(gguf_w_set_u32(w, "yuan2moe.context_length", (uint32_t)(g.ctx > UINT32_MAX ? UINT32_MAX : g.ctx)));
    TRY(gguf_w_set_u32(w, "yuan2moe.embedding_length", (uint32_t)g.H));
    TRY(gguf_w_set_u32(w, "yuan2moe.block_count", (uint32_t)g.L));
    TRY(gguf_w_set_u32(w, "yuan2moe.attention.head_count", (uint32_t)g.n_h));
    TRY(gguf_w_set_u32(w, "yuan2moe.attention.head_count_kv", (uint32_t)g.n_h));
    TRY(gguf_w_set_u32(w, "yuan2moe.attention.key_length", (uint32_t)g.d));
    TRY(gguf_w_set_u32(w, "yuan2moe.attention.value_length", (uint32_t)g.d));
    TRY(gguf_w_set_f32(w, "yuan2moe.attention.layer_norm_rms_epsilon", (float)g.eps));
    TRY(gguf_w_set_u32(w, "yuan2moe.rope.dimension_count", (uint32_t)g.rd));
    TRY(gguf_w_set_f32(w, "yuan2moe.rope.freq_base", (float)g.theta));
    TRY(gguf_w_set_str(w, "yuan2moe.rope.table", o.rope_table == 1 ? "hf" : "fp32"));
    TRY(gguf_w_set_u32(w, "yuan2moe.expert_count", (uint32_t)g.E));
    TRY(gguf_w_set_u32(w, "yuan2moe.expert_used_count", (uint32_t)g.K));
    TRY(gguf_w_set_u32(w, "yuan2moe.expert_feed_forward_length", (uint32_t)g.F));
    TRY(gguf_w_set_str(w, "yuan2moe.router", g.linear_router ? "linear" : "attention"));
    TRY(gguf_w_set_bool(w, "yuan2moe.lfa", g.lfa));

    TRY(hf_mat(&c, st, "model.embed_tokens.weight", g.V, g.H, "token_embd.weight", mt));
    for (int64_t l = 0; l < g.L; l++)
        if (hf_layer(&c, st, &g, l, mt) != 0) goto fail;
    TRY(hf_vec(&c, st, "model.norm.weight", g.H, "output_norm.weight"));
    if (!g.tied) TRY(hf_mat(&c, st, "lm_head.weight", g.V, g.H, "output.weight", mt));
    /* every checkpoint tensor must be consumed: a leftover means config.json does not describe the weights
       (e.g. use_lfa = false with lf_gate tensors present). Tolerated: a tied lm_head (HF ties it anyway) and
       rotary buffers (non-persistent in the HF code, but some exports keep them). */
    for (size_t i = 0; i < st_n_tensors(stm); i++) {
        const char *n = st_tensor_at(stm, i)->name;
        size_t nl = strlen(n);
        bool ok = src.used[i] || !strcmp(n, "lm_head.weight") ||
                  (nl > 8 && !strcmp(n + nl - 8, "inv_freq")) || strstr(n, "rotary_emb.") != NULL;
        CHECK(ok, "tensor %s of the checkpoint has no place in the yuan2moe mapping (does config.json describe "
              "these weights?)", n);
    }
    TRY(gguf_w_set_u32(w, "general.file_type", cv_file_type(&c)));

    snprintf(path, sizeof path, "%s/tokenizer.model", hf_dir);
    if (stat(path, &sb) == 0) {
        voc = tok_load(path);
        TRY_PTR(voc);
        TRY(write_vocab(w, voc, g.V));
        int32_t eod = tok_find(voc, "<eod>"), sep = tok_find(voc, "<sep>");
        if (eod >= 0) TRY(gguf_w_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eod));
        if (sep >= 0) TRY(gguf_w_set_u32(w, "tokenizer.ggml.sep_token_id", (uint32_t)sep));
    } else {
        moec_log("convert: %s has no tokenizer.model; the GGUF gets no tokenizer keys\n", hf_dir);
    }
    TRY(gguf_w_write(w, out_path));
    tok_free(voc);
    free(src.used);
    st_close(stm);
    cv_free(&c);
    return 0;
fail:
    if (strncmp(moec_last_error(), hf_dir, strlen(hf_dir)) != 0) moec_wrap_error("%s", hf_dir);
    tok_free(voc);
    free(src.used);
    st_close(stm);
    cv_free(&c);
    return -1;
}

/* ---- llama2.c ---------------------------------------------------------------------------------------------- */
int conv_llama2c(const char *model_path, const char *vocab_path, const char *out_path, const conv_opts *opts) {
    conv_opts o = opts ? *opts : conv_default_opts();
    moec_mmap mm = {0};
    cv c;
    memset(&c, 0, sizeof c);
    tok_vocab *voc = NULL;
    char nm[256];
    TRY(moec_mmap_open(&mm, model_path));
    CHECK(mm.size >= 28, "%s: %zu bytes, too short for the 7-int header of a llama2.c checkpoint", model_path,
          mm.size);
    int32_t hd[7];
    for (int i = 0; i < 7; i++) {
        const uint8_t *p = mm.data + 4 * i;
        hd[i] = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    }
    int64_t dim = hd[0], hid = hd[1], L = hd[2], nh = hd[3], nkv = hd[4], V = hd[5], seq = hd[6];
    bool shared = V > 0;
    if (V < 0) V = -V;
    CHECK(dim >= 2 && dim <= 65536, "%s: dim %lld out of range [2, 65536]", model_path, (long long)dim);
    CHECK(hid >= 1 && hid <= (1 << 20), "%s: hidden_dim %lld out of range [1, 2^20]", model_path, (long long)hid);
    CHECK(L >= 1 && L <= 1024, "%s: n_layers %lld out of range [1, 1024]", model_path, (long long)L);
    CHECK(nh >= 1 && nh <= dim && dim % nh == 0, "%s: n_heads %lld does not divide dim %lld", model_path,
          (long long)nh, (long long)dim);
    CHECK(nkv >= 1 && nkv <= nh && nh % nkv == 0, "%s: n_kv_heads %lld does not divide n_heads %lld", model_path,
          (long long)nkv, (long long)nh);
    CHECK(V >= 1 && V <= (1 << 24), "%s: vocab_size %lld out of range [1, 2^24]", model_path, (long long)V);
    CHECK(seq >= 1 && seq <= (1 << 24), "%s: seq_len %lld out of range [1, 2^24]", model_path, (long long)seq);
    int64_t hs = dim / nh, kvd = hs * nkv;
    CHECK(hs % 2 == 0, "%s: head size %lld is odd", model_path, (long long)hs);
    /* every count below fits easily in int64 given the bounds above (< 2^62) */
    int64_t n_emb = V * dim, n_attn = L * dim * dim, n_kv = L * kvd * dim, n_ffn = L * hid * dim;
    int64_t n_tot = n_emb + L * dim + 2 * n_attn + 2 * n_kv + L * dim + 3 * n_ffn + dim + seq * hs;
    int64_t want = 28 + 4 * (n_tot + (shared ? 0 : n_emb));
    CHECK((int64_t)mm.size >= want, "%s: truncated: %zu bytes, the header (dim %lld, hidden %lld, %lld layers, "
          "vocab %lld) needs %lld", model_path, mm.size, (long long)dim, (long long)hid, (long long)L, (long long)V,
          (long long)want);
    CHECK((int64_t)mm.size == want, "%s: %zu bytes but the header implies %lld (not a llama2.c legacy checkpoint?)",
          model_path, mm.size, (long long)want);
    ggml_type mt = o.out_type >= 0 ? (ggml_type)o.out_type : GGML_F32;
    CHECK(mt == GGML_F32 || mt == GGML_F16 || mt == GGML_BF16, "output type %s not supported (f32, f16, bf16)",
          ggml_type_name(mt));

    voc = tok_load(vocab_path);
    TRY_PTR(voc);
    CHECK(tok_n_vocab(voc) == V, "%s has %d tokens but the model's vocab_size is %lld", vocab_path, tok_n_vocab(voc),
          (long long)V);

    /* the file's tensors as F32 source tensors for the fill jobs: token_embd, 9 per layer, output_norm, output */
    size_t n_srcs = 0;
    st_tensor *srcs = cv_alloc(&c, (size_t)(9 * L + 3) * sizeof *srcs);
    TRY_PTR(srcs);
    c.w = gguf_w_new();
    TRY_PTR(c.w);
    gguf_writer *w = c.w;
    TRY(gguf_w_set_str(w, "general.architecture", "llama"));
    TRY(gguf_w_set_str(w, "general.name", o.name ? o.name : base_name(model_path, nm, sizeof nm)));
    TRY(gguf_w_set_u32(w, "llama.context_length", (uint32_t)seq));
    TRY(gguf_w_set_u32(w, "llama.embedding_length", (uint32_t)dim));
    TRY(gguf_w_set_u32(w, "llama.block_count", (uint32_t)L));
    TRY(gguf_w_set_u32(w, "llama.feed_forward_length", (uint32_t)hid));
    TRY(gguf_w_set_u32(w, "llama.attention.head_count", (uint32_t)nh));
    TRY(gguf_w_set_u32(w, "llama.attention.head_count_kv", (uint32_t)nkv));
    TRY(gguf_w_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f));
    TRY(gguf_w_set_u32(w, "llama.rope.dimension_count", (uint32_t)hs));
    TRY(gguf_w_set_f32(w, "llama.rope.freq_base", 10000.0f));
    TRY(gguf_w_set_u32(w, "general.file_type", mt == GGML_F32 ? 0 : mt == GGML_F16 ? 1 : 32));

    /* the file: fp32 little-endian, matrices [L, out, in] = GGUF {in, out} per layer, no permutation
       (llama2.c's RoPE rotates adjacent pairs, llama.cpp's "normal" rope) */
    const uint8_t *base = mm.data + 28;
    size_t off = 0; /* in floats */
#define TAKE(count, gname, t, nd, ...)                                                                     \
    do {                                                                                                   \
        int64_t ne_[] = {__VA_ARGS__};                                                                     \
        size_t cnt_ = (size_t)(count);                                                                     \
        st_tensor *s_ = &srcs[n_srcs++];                                                                   \
        s_->name = model_path;                                                                             \
        s_->dtype = ST_F32; /* little-endian, as the safetensors F32 reader expects */                     \
        s_->n_dims = 1;                                                                                    \
        s_->shape[0] = (int64_t)cnt_;                                                                      \
        s_->n_elems = cnt_;                                                                                \
        s_->nbytes = 4 * cnt_;                                                                             \
        s_->data = base + 4 * off;                                                                         \
        s_->file = model_path;                                                                             \
        job *j_ = job_new(&c, J_ROWS, t, ne_[0], 1);                                                       \
        TRY_PTR(j_);                                                                                       \
        j_->src[0] = s_;                                                                                   \
        j_->rps = (int64_t)cnt_ / ne_[0];                                                                  \
        TRY(cv_add(&c, gname, t, nd, ne_, j_));                                                            \
        off += cnt_;                                                                                       \
    } while (0)
    char gn[96];
    TAKE(n_emb, "token_embd.weight", mt, 2, dim, V);
    static const char *const blocks[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                                         "ffn_gate", "ffn_down", "ffn_up"};
    for (int b = 0; b < 9; b++)
        for (int64_t l = 0; l < L; l++) {
            snprintf(gn, sizeof gn, "blk.%lld.%s.weight", (long long)l, blocks[b]);
            switch (b) {
            case 0: case 5: TAKE(dim, gn, GGML_F32, 1, dim); break;
            case 1: case 4: TAKE(dim * dim, gn, mt, 2, dim, dim); break;
            case 2: case 3: TAKE(kvd * dim, gn, mt, 2, dim, kvd); break;
            case 6: case 8: TAKE(hid * dim, gn, mt, 2, dim, hid); break;
            case 7: TAKE(hid * dim, gn, mt, 2, hid, dim); break;
            }
        }
    TAKE(dim, "output_norm.weight", GGML_F32, 1, dim);
    off += (size_t)(seq * hs); /* freq_cis_real, freq_cis_imag: not needed */
    if (!shared) TAKE(n_emb, "output.weight", mt, 2, dim, V);
#undef TAKE

    TRY(write_vocab(w, voc, V));
    /* llama2.c's run.c always starts with BOS */
    TRY(gguf_w_set_bool(w, "tokenizer.ggml.add_bos_token", true));
    TRY(gguf_w_write(w, out_path));
    tok_free(voc);
    cv_free(&c);
    moec_mmap_close(&mm);
    return 0;
fail:
    tok_free(voc);
    cv_free(&c);
    moec_mmap_close(&mm);
    return -1;
}
