/* train: whole-model gradients by central finite differences for the paths the PyTorch reference does not cover:
 * dense SwiGLU layers (yuan2moe with experts 0 and LFA), and a llama-style model (adjacent-pair RoPE, GQA, untied
 * output, no LFA). Dense models have no routing, so the loss is smooth and finite differences are exact enough. */
#include <math.h>

#include "test.h"
#include "train.h"

static void check_model(const char *what, model_hparams hp) {
    model *m = model_create(&hp, NULL);
    T_CHECK(m != NULL, "%s: create: %s", what, moec_last_error());
    if (!m) return;
    model_init_random(m, 3, 0.3f);
    train_state *s = train_new(m, 6);
    T_CHECK(s != NULL, "%s: train_new: %s", what, moec_last_error());
    if (!s) {
        model_free(m);
        return;
    }
    int32_t ids[6] = {1, 5, 2, 7, 3, 5}, tg[6] = {5, 2, 7, 3, 5, 0};
    float mask[6] = {1, 1, 0, 1, 1, 1};
    double ce;
    train_zero_grad(s);
    T_CHECK(train_seq(s, ids, tg, mask, 6, 1.0f, &ce) == 0, "%s: train_seq", what);
    double worst = 0;
    const char *wn = "";
    for (size_t i = 0; i < m->n_params; i++) {
        const model_param *p = &m->params[i];
        const float *g = s->grads + p->offset;
        double gmax = 0;
        for (size_t j = 0; j < p->numel; j++) gmax = fmax(gmax, fabs(g[j]));
        for (int k = 0; k < 5; k++) {
            size_t j = (size_t)(k * 7919 + 13) % p->numel;
            float *w = s->params + p->offset + j, w0 = *w, h = 1e-2f;
            double lp, lm;
            *w = w0 + h;
            train_eval_seq(s, ids, tg, mask, 6, &lp);
            *w = w0 - h;
            train_eval_seq(s, ids, tg, mask, 6, &lm);
            *w = w0;
            double num = (lp - lm) / ((double)(w0 + h) - (double)(w0 - h));
            double err = fabs(num - g[j]) / (2e-2 * fabs(g[j]) + 2e-3 * gmax + 1e-4);
            if (err > worst) worst = err, wn = p->name;
            T_CHECK(err <= 1.0, "%s: %s[%zu]: analytic %.6g, numeric %.6g", what, p->name, j, g[j], num);
        }
    }
    printf("%s: %zu tensors, worst error / tolerance %.3f (%s)\n", what, m->n_params, worst, wn);
    train_free(s);
    model_free(m);
}

int main(void) {
    model_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.arch = MODEL_ARCH_YUAN2MOE;
    hp.n_vocab = 11, hp.n_embd = 8, hp.n_layer = 2, hp.n_head = 2, hp.n_head_kv = 2, hp.head_dim = 6;
    hp.n_ctx_train = 16, hp.n_ff = 10, hp.rope_dims = 4, hp.rope_base = 10000, hp.norm_eps = 1e-6f;
    hp.lfa = true, hp.tied = true;
    check_model("yuan2moe dense + LFA", hp);
    hp.arch = MODEL_ARCH_LLAMA;
    hp.lfa = false, hp.tied = false, hp.n_head = 4, hp.n_head_kv = 2, hp.head_dim = 4, hp.rope_dims = 4;
    check_model("llama GQA untied", hp);
    return t_done("test_train_fd");
}
