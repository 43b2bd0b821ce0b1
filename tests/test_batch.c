/* model_forward_batch: several sequences in one step. Oracle: the same sequences run one at a time through
 * model_forward (their own, independent states). Models: yuan2moe (LFA carry, attention router, a dense lead
 * layer, no GQA) and a llama MoE (GQA, linear router), in fp32, and written as BF16 and as Q8_0 and reloaded (BF16
 * and quantized kernels, mmap'd weights). Checks: a batched prefill of prompts of different lengths (every row's
 * logits and the states it leaves), then batched decode steps with the sequences at different positions, with and
 * without MODEL_FWD_LAST; and that bad batches (a state twice, a full context, a bad id, a foreign state) fail with
 * one error before anything changes. Tolerance: 1e-4 of max|logit| (more rows take the blocked GEMM path of the
 * float kernels, whose summation order differs; a wrong position, carry or cache row gives errors of order 1). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "init.h"
#include "kern.h"
#include "model.h"
#include "sample.h"
#include "test.h"
#include "util.h"

enum { NS = 3, STEPS = 4, VMAX = 64 };

static model_hparams yuan_hp(void) {
    model_hparams hp = {0};
    hp.arch = MODEL_ARCH_YUAN2MOE;
    hp.n_vocab = 64, hp.n_embd = 64, hp.n_layer = 3, hp.n_head = 2, hp.n_head_kv = 2, hp.head_dim = 32;
    hp.n_ctx_train = 64, hp.n_ff = 64, hp.n_ff_exp = 32, hp.n_expert = 4, hp.n_expert_used = 2, hp.n_dense_lead = 1;
    hp.rope_dims = 16, hp.rope_base = 10000.0f, hp.norm_eps = 1e-6f, hp.moe_router = MODEL_FFN_MOE_ATTN;
    hp.lfa = true, hp.tied = true;
    return hp;
}

static model_hparams llama_hp(void) {
    model_hparams hp = {0};
    hp.arch = MODEL_ARCH_LLAMA;
    hp.n_vocab = 50, hp.n_embd = 64, hp.n_layer = 2, hp.n_head = 4, hp.n_head_kv = 2, hp.head_dim = 16;
    hp.n_ctx_train = 64, hp.n_ff_exp = 32, hp.n_expert = 4, hp.n_expert_used = 2;
    hp.rope_dims = 16, hp.rope_base = 10000.0f, hp.norm_eps = 1e-5f, hp.moe_router = MODEL_FFN_MOE_LINEAR;
    return hp;
}

static void check_batch(const model *m, const char *name) {
    const int64_t V = m->hp.n_vocab, len[NS] = {5, 1, 9};
    int64_t total = 0;
    int32_t ids[32];
    for (int b = 0; b < NS; b++) total += len[b];
    for (int64_t i = 0; i < total; i++) ids[i] = (int32_t)((i * 37 + 11) % V);
    seq_state *bs[NS], *rs[NS];
    for (int b = 0; b < NS; b++) bs[b] = model_seq_new(m, 32), rs[b] = model_seq_new(m, 32);
    for (int b = 0; b < NS; b++)
        if (!bs[b] || !rs[b]) {
            T_CHECK(0, "%s: seq_new: %s", name, moec_last_error());
            return;
        }
    static float lb[32 * VMAX], lr[32 * VMAX];
    /* batched prefill of 3 prompts (5, 1, 9 tokens) vs each alone */
    T_CHECK(model_forward_batch(m, bs, NS, ids, len, lb, 0) == 0, "%s: batched prefill: %s", name, moec_last_error());
    for (int b = 0, r0 = 0; b < NS; r0 += (int)len[b], b++)
        T_CHECK(model_forward(m, rs[b], ids + r0, len[b], lr + r0 * V, 0, NULL) == 0, "%s: prefill alone", name);
    double scale = t_max_abs(lr, (size_t)(total * V)), tol = 1e-4 * (scale > 1 ? scale : 1);
    T_CHECK(scale > 1e-3 && isfinite(scale), "%s: logits not trivial (max %g)", name, scale);
    double e = t_max_diff(lb, lr, (size_t)(total * V));
    T_CHECK(e <= tol, "%s: batched prefill = each prompt alone (max diff %g, tol %g)", name, e, tol);
    for (int b = 0; b < NS; b++) T_CHECK(bs[b]->pos == len[b], "%s: position of sequence %d advanced", name, b);
    /* greedy decode steps, all sequences in one call (positions 5, 1, 9 then on), alternating full and last-only */
    int32_t next[NS];
    for (int b = 0, r0 = 0; b < NS; r0 += (int)len[b], b++) next[b] = sample_argmax(lr + (r0 + len[b] - 1) * V, V);
    const int64_t one[NS] = {1, 1, 1};
    double worst = 0;
    for (int k = 0; k < STEPS; k++) {
        T_CHECK(model_forward_batch(m, bs, NS, next, one, lb, k % 2 ? MODEL_FWD_LAST : 0) == 0,
                "%s: batched decode step %d: %s", name, k, moec_last_error());
        for (int b = 0; b < NS; b++) {
            T_CHECK(model_forward(m, rs[b], &next[b], 1, lr + b * V, 0, NULL) == 0, "%s: step alone", name);
            double d = t_max_diff(lb + b * V, lr + b * V, (size_t)V);
            if (d > worst) worst = d;
        }
        for (int b = 0; b < NS; b++) next[b] = sample_argmax(lr + b * V, V);
    }
    T_CHECK(worst <= tol, "%s: %d batched decode steps = each sequence alone (max diff %g)", name, STEPS, worst);
    for (int b = 0; b < NS; b++)
        T_CHECK(bs[b]->pos == rs[b]->pos && bs[b]->pos == len[b] + STEPS, "%s: positions after decode", name);

    /* bad batches: nothing changes */
    seq_state *dup[2] = {bs[0], bs[0]};
    int64_t p0 = bs[0]->pos, p1 = bs[1]->pos;
    T_CHECK(model_forward_batch(m, dup, 2, next, one, lb, 0) != 0 && strstr(moec_last_error(), "twice") &&
                bs[0]->pos == p0,
            "%s: a state twice: error (%s)", name, moec_last_error());
    const int64_t too_long[2] = {1, 32};
    static int32_t many[33];
    T_CHECK(model_forward_batch(m, bs, 2, many, too_long, lb, 0) != 0 && strstr(moec_last_error(), "context full") &&
                bs[0]->pos == p0 && bs[1]->pos == p1,
            "%s: one sequence past its context: error, no state moved (%s)", name, moec_last_error());
    int32_t bad[2] = {0, (int32_t)V};
    T_CHECK(model_forward_batch(m, bs, 2, bad, one, lb, 0) != 0 && strstr(moec_last_error(), "out of range") &&
                bs[0]->pos == p0,
            "%s: bad id: error (%s)", name, moec_last_error());
    T_CHECK(model_forward_batch(m, bs, 0, next, one, lb, 0) != 0, "%s: no sequences: error", name);
    T_CHECK(model_forward_batch(m, bs, 2, NULL, one, lb, 0) != 0 && bs[0]->pos == p0, "%s: no ids: error", name);
    for (int b = 0; b < NS; b++) model_seq_free(bs[b]), model_seq_free(rs[b]);
}

int main(void) {
    printf("kern path: %s\n", kern_path());
    char dir[] = "/tmp/moec_batch_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    model_hparams hps[2] = {yuan_hp(), llama_hp()};
    const char *names[2] = {"yuan2moe", "llama"};
    model *keep = NULL;
    for (int i = 0; i < 2; i++) {
        model *m = model_create(&hps[i], NULL);
        T_CHECK(m && model_init_random(m, 7 + i, 0.5f) == 0, "%s: create: %s", names[i], moec_last_error());
        if (!m) continue;
        char label[64], path[300];
        snprintf(label, sizeof label, "%s f32", names[i]);
        check_batch(m, label);
        /* written as BF16 (on the avx512bf16 path its own kernel: VDPBF16PS, activations rounded to BF16), then as
         * Q8_0 (kept in q for the check below), each reloaded */
        const ggml_type wt[2] = {GGML_BF16, GGML_Q8_0};
        model *q = NULL;
        for (int k = 0; k < 2; k++) {
            const char *tn = ggml_type_name(wt[k]);
            snprintf(path, sizeof path, "%s/%s-%s.gguf", dir, names[i], tn);
            T_CHECK(init_write_gguf(m, path, wt[k], NULL) == 0, "%s: write %s: %s", names[i], tn, moec_last_error());
            model_free(q);
            q = model_load(path, NULL);
            T_CHECK(q != NULL, "%s: load %s: %s", names[i], tn, moec_last_error());
            unlink(path);
            if (q) {
                snprintf(label, sizeof label, "%s %s", names[i], tn);
                check_batch(q, label);
            }
        }
        /* a state of another model is refused */
        if (q && i == 1 && keep) {
            seq_state *a = model_seq_new(q, 8), *b = model_seq_new(keep, 8);
            seq_state *mix[2] = {a, b};
            int32_t two[2] = {1, 2};
            const int64_t one[2] = {1, 1};
            T_CHECK(a && b && model_forward_batch(q, mix, 2, two, one, NULL, 0) != 0 &&
                        strstr(moec_last_error(), "another model") && a->pos == 0,
                    "a state of another model: error (%s)", moec_last_error());
            model_seq_free(a), model_seq_free(b);
        }
        model_free(q);
        if (!keep) keep = m;
        else model_free(m);
    }
    model_free(keep);
    rmdir(dir);
    return t_done("test_batch");
}
