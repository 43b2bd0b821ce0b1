/* train: gradients of every parameter tensor and 10 AdamW steps against PyTorch autograd (float64) on the
 * independent reference model, for the attention router and the linear router (fixtures written by
 * tests/train/make_grad_fixtures.py). Also: the backward is bitwise deterministic across thread counts, and a
 * checkpoint saves/loads weights, moments and progress exactly. */
#include <math.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gguf.h"
#include "test.h"
#include "train.h"

#define FIX "tests/train/fixtures/"

static int get_arr(const gguf_file *f, const char *key, gguf_vtype want, uint64_t n, void *out, size_t elem) {
    gguf_vtype et;
    uint64_t cnt;
    const void *d;
    if (gguf_get_arr(f, key, &et, &cnt, &d) != 0 || et != want || cnt != n) return -1;
    memcpy(out, d, n * elem);
    return 0;
}

/* worst |a − b| / max|b| over a tensor */
static double rel_err(const float *a, const float *b, size_t n) {
    double mx = 0, err = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(b[i]));
    for (size_t i = 0; i < n; i++) err = fmax(err, fabs((double)a[i] - b[i]));
    return mx > 0 ? err / mx : err;
}

static void compare_tensors(const char *what, const train_state *s, const float *buf, const gguf_file *ref,
                            double tol) {
    double worst = 0;
    const char *wn = "";
    for (size_t i = 0; i < s->m->n_params; i++) {
        const model_param *p = &s->m->params[i];
        const gguf_tensor *t = gguf_find_tensor(ref, p->name);
        T_CHECK(t && t->type == GGML_F32 && t->nbytes == p->numel * 4, "%s: %s in the fixture", what, p->name);
        if (!t) continue;
        double e = rel_err(buf + p->offset, t->data, p->numel);
        if (e > worst) worst = e, wn = p->name;
        T_CHECK(e <= tol, "%s: %s relative error %.3g > %.3g", what, p->name, e, tol);
    }
    printf("%s: worst relative error %.3g (%s)\n", what, worst, wn);
}

static void run(const char *name) {
    char path[256], gpath[256], apath[256];
    snprintf(path, sizeof path, FIX "%s.gguf", name);
    snprintf(gpath, sizeof gpath, FIX "%s.grads.gguf", name);
    snprintf(apath, sizeof apath, FIX "%s.adamw.gguf", name);
    gguf_file *gf = gguf_open(gpath), *af = gguf_open(apath);
    train_progress pr;
    train_state *s = train_load(path, 8, &pr);
    T_CHECK(gf && af && s, "%s: open fixtures: %s", name, moec_last_error());
    if (!gf || !af || !s) goto done;
    int32_t ids[8], tg[8];
    float mask[8];
    double loss_ref, losses[10];
    T_CHECK(get_arr(gf, "test.ids", GGUF_I32, 8, ids, 4) == 0 && get_arr(gf, "test.targets", GGUF_I32, 8, tg, 4) == 0 &&
                get_arr(gf, "test.mask", GGUF_F32, 8, mask, 4) == 0 &&
                get_arr(af, "test.losses", GGUF_F64, 10, losses, 8) == 0,
            "%s: fixture keys", name);
    float lr;
    T_CHECK(gguf_get_f32(gf, "test.loss", &lr) == 0, "%s: test.loss", name);
    loss_ref = lr;
    float msum = 0;
    for (int t = 0; t < 8; t++) msum += mask[t];
    /* gradients */
    double ce;
    train_zero_grad(s);
    T_CHECK(train_seq(s, ids, tg, mask, 8, 1.0f / msum, &ce) == 0, "%s: train_seq: %s", name, moec_last_error());
    T_CHECK(fabs(ce / msum - loss_ref) < 1e-5 * loss_ref, "%s: loss %.8f, torch %.8f", name, ce / msum, loss_ref);
    compare_tensors(name, s, s->grads, gf, 1e-4);
    /* with the auxiliary router losses (Switch load balancing + z-loss) */
    {
        char xpath[256];
        snprintf(xpath, sizeof xpath, FIX "%s.aux.grads.gguf", name);
        gguf_file *xf = gguf_open(xpath);
        float alb = 0, az = 0, xl = 0;
        T_CHECK(xf && gguf_get_f32(xf, "test.aux_lb", &alb) == 0 && gguf_get_f32(xf, "test.aux_z", &az) == 0 &&
                    gguf_get_f32(xf, "test.loss", &xl) == 0,
                "%s: aux fixture: %s", name, moec_last_error());
        if (xf) {
            s->aux.aux_lb = alb, s->aux.aux_z = az;
            train_zero_grad(s);
            T_CHECK(train_seq(s, ids, tg, mask, 8, 1.0f / msum, &ce) == 0, "aux train_seq");
            double tot = ce / msum + s->aux_loss;
            T_CHECK(s->aux_loss > 0.01 && fabs(tot - xl) < 1e-5 * xl, "%s: loss with aux %.8f, torch %.8f", name, tot,
                    (double)xl);
            char what[64];
            snprintf(what, sizeof what, "%s with aux losses", name);
            compare_tensors(what, s, s->grads, xf, 1e-4);
            s->aux.aux_lb = 0, s->aux.aux_z = 0;
            gguf_close(xf);
        }
    }
    /* determinism: another thread count gives the same bits */
#ifdef _OPENMP
    {
        float *g1 = malloc(s->n * sizeof(float));
        train_zero_grad(s);
        train_seq(s, ids, tg, mask, 8, 1.0f / msum, &ce);
        memcpy(g1, s->grads, s->n * sizeof(float));
        int nt = omp_get_max_threads();
        omp_set_num_threads(nt == 1 ? 2 : 1);
        train_zero_grad(s);
        train_seq(s, ids, tg, mask, 8, 1.0f / msum, &ce);
        omp_set_num_threads(nt);
        T_CHECK(!memcmp(g1, s->grads, s->n * sizeof(float)), "%s: gradients bitwise equal across thread counts", name);
        free(g1);
    }
#endif
    /* train_rows with a group of 3 rows (the expert products run over the tokens of all rows) = the sum of 3
     * train_seq calls, up to rounding; with the aux losses on; bitwise equal across thread counts */
    {
        int32_t ids3[24], tg3[24];
        float mk3[24], *g1 = malloc(s->n * sizeof(float)), *g2 = malloc(s->n * sizeof(float));
        for (int r = 0; r < 3; r++)
            for (int t = 0; t < 8; t++) {
                ids3[r * 8 + t] = ids[(t + 3 * r) % 8], tg3[r * 8 + t] = tg[(t + 5 * r) % 8];
                mk3[r * 8 + t] = r == 2 && t < 3 ? 0.0f : mask[t];
            }
        s->aux.aux_lb = 0.3f, s->aux.aux_z = 0.2f;
        double c1 = 0, a1 = 0, c2, c;
        train_zero_grad(s);
        for (int r = 0; r < 3; r++) {
            T_CHECK(train_seq(s, ids3 + r * 8, tg3 + r * 8, mk3 + r * 8, 8, 0.05f, &c) == 0, "row %d", r);
            c1 += c, a1 += s->aux_loss;
        }
        memcpy(g1, s->grads, s->n * sizeof(float));
        T_CHECK(train_set_group(s, 3) == 0 && s->G == 3, "train_set_group(3): %s", moec_last_error());
        train_zero_grad(s);
        T_CHECK(train_rows(s, ids3, tg3, mk3, 3, 8, 0.05f, &c2) == 0, "train_rows: %s", moec_last_error());
        T_CHECK(fabs(c2 - c1) < 1e-9 * c1 && fabs(s->aux_loss - a1) < 1e-9 * a1, "%s: group loss %.9g aux %.9g, rows %.9g %.9g",
                name, c2, s->aux_loss, c1, a1);
        double gmax = 0, err = 0;
        for (size_t i = 0; i < s->n; i++) gmax = fmax(gmax, fabs(g1[i])), err = fmax(err, fabs(g1[i] - s->grads[i]));
        T_CHECK(gmax > 0 && err < 1e-5 * gmax, "%s: group gradients vs row by row: max error %.3g of %.3g", name, err, gmax);
#ifdef _OPENMP
        memcpy(g2, s->grads, s->n * sizeof(float));
        int nt = omp_get_max_threads();
        omp_set_num_threads(nt == 1 ? 2 : 1);
        train_zero_grad(s);
        train_rows(s, ids3, tg3, mk3, 3, 8, 0.05f, &c2);
        omp_set_num_threads(nt);
        T_CHECK(!memcmp(g2, s->grads, s->n * sizeof(float)), "%s: group gradients bitwise equal across thread counts", name);
#endif
        T_CHECK(train_set_group(s, 0) != 0 && train_set_group(s, 1) == 0 && s->G == 1, "train_set_group bounds");
        s->aux.aux_lb = 0, s->aux.aux_z = 0;
        free(g1), free(g2);
    }
    /* 10 AdamW steps with clipping */
    train_opt_cfg oc;
    train_opt_defaults(&oc);
    oc.weight_decay = 0.1f;
    double worst_loss = 0;
    for (int st = 0; st < 10; st++) {
        train_zero_grad(s);
        train_seq(s, ids, tg, mask, 8, 1.0f / msum, &ce);
        worst_loss = fmax(worst_loss, fabs(ce / msum - losses[st]) / losses[st]);
        train_clip_grad(s->grads, s->n, 1.0f);
        train_opt_step(&oc, 1e-2f, st + 1, s->params, s->grads, s->m1, s->m2, s->seg, s->n_seg);
    }
    printf("%s: 10 AdamW steps, loss %.6f -> %.6f (torch %.6f), worst loss error %.3g\n", name, losses[0], ce / msum,
           losses[9], worst_loss);
    T_CHECK(worst_loss < 1e-4, "%s: AdamW losses off by %.3g", name, worst_loss);
    compare_tensors("after 10 AdamW steps", s, s->params, af, 1e-4);

    /* checkpoint round trip: weights, moments and progress exactly */
    char ck[] = "/tmp/moec_test_ckpt_XXXXXX";
    int fd = mkstemp(ck);
    if (fd >= 0) close(fd);
    pr.step = 10, pr.tokens = 80, pr.data = (data_pos){1, 2, 3}, pr.opt_kind = 0;
    moec_rng_seed(&pr.rng, 7);
    T_CHECK(train_save(s, &pr, ck) == 0, "save: %s", moec_last_error());
    train_progress pr2;
    train_state *s2 = train_load(ck, 8, &pr2);
    T_CHECK(s2 != NULL, "load: %s", moec_last_error());
    if (s2) {
        T_CHECK(s2->n == s->n && !memcmp(s2->params, s->params, s->n * 4) && !memcmp(s2->m1, s->m1, s->n * 4) &&
                    !memcmp(s2->m2, s->m2, s->n * 4),
                "checkpoint holds weights and moments exactly");
        T_CHECK(pr2.step == 10 && pr2.tokens == 80 && pr2.data.epoch == 1 && pr2.data.item == 2 && pr2.data.off == 3 &&
                    !memcmp(pr2.rng.s, pr.rng.s, sizeof pr.rng.s),
                "checkpoint progress");
        model *m2 = s2->m;
        train_free(s2);
        model_free(m2);
    }
    char ex[64];
    snprintf(ex, sizeof ex, "%s.export", ck);
    T_CHECK(train_export(ck, ex) == 0, "export: %s", moec_last_error());
    gguf_file *ef = gguf_open(ex);
    T_CHECK(ef && gguf_find_key(ef, "train.step") < 0 && !gguf_find_tensor(ef, "train.m1") &&
                gguf_find_tensor(ef, "token_embd.weight"),
            "export strips the training state");
    if (ef) gguf_close(ef);
    unlink(ck);
    unlink(ex);
done:
    if (gf) gguf_close(gf);
    if (af) gguf_close(af);
    if (s) {
        model *m = s->m;
        train_free(s);
        model_free(m);
    }
}

int main(void) {
    if (access(FIX "tiny_attn.gguf", R_OK) != 0) {
        printf("fixtures not found (run from the repository root)\n");
        return 77;
    }
    run("tiny_attn");
    run("tiny_linear");
    return t_done("test_train_grad");
}
