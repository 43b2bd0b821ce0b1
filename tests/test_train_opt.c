/* train optimizers: AdamW and SGD+momentum over a flat buffer with a decay / no-decay split, against values computed
 * with torch.optim.AdamW / torch.optim.SGD in float64 (two param groups, wd only on the first); clipping and the
 * warm-up + cosine schedule against hand values. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kern.h"
#include "test.h"
#include "train.h"

/* AdamW/SGD over a large buffer, 3 steps with clipping: fused train_clip_step vs train_clip_grad + train_opt_step,
 * AVX2 vs scalar path, 1 vs 2 threads: all bitwise equal. */
static void big_update(const train_opt_cfg *c, bool fused, int scalar, int threads, float *p) {
    const size_t n = 100003;
    train_segment sg[3] = {{0, 7, false}, {7, 60000, true}, {60007, n - 60007, true}};
    float *g = malloc(n * sizeof *g), *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
    moec_rng r;
    moec_rng_seed(&r, 3);
    for (size_t i = 0; i < n; i++) p[i] = moec_rng_normal(&r);
    int old = kern_force_scalar(scalar), nt = omp_get_max_threads();
    omp_set_num_threads(threads);
    for (int t = 1; t <= 3; t++) {
        for (size_t i = 0; i < n; i++) g[i] = moec_rng_normal(&r) * (t == 2 ? 1e-4f : 0.05f); /* step 2: no clip */
        if (fused) {
            train_clip_step(c, 1e-2f, t, 1.0f, true, p, g, m, v, sg, 3, n);
        } else {
            train_clip_grad(g, n, 1.0f);
            train_opt_step(c, 1e-2f, t, p, g, m, v, sg, 3);
        }
    }
    omp_set_num_threads(nt);
    kern_force_scalar(old);
    free(g), free(m), free(v);
}

static const float P0[6] = {0.5f, -1.2f, 2.0f, 0.1f, 1.0f, -0.3f};
static void grads(float *g, int t) {
    for (int i = 0; i < 6; i++) g[i] = (float)(sin(i * 1.3 + t) * (1 + i * 0.5));
}

int main(void) {
    train_segment seg[2] = {{0, 4, true}, {4, 2, false}};
    float p[6], g[6], m[6] = {0}, v[6] = {0};
    train_opt_cfg c;
    train_opt_defaults(&c);
    T_CHECK(c.beta1 == 0.9f && c.beta2 == 0.95f && c.weight_decay == 0.1f, "defaults = Yuan 2.0-M32's");
    /* torch.optim.AdamW(lr=0.01·t at step t, betas=(0.9, 0.95), eps=1e-8, wd 0.1 | 0) */
    const double adamw[6] = {0.441579826, -1.20561177, 2.04543816, 0.136237038, 0.972432304, -0.352023359};
    memcpy(p, P0, sizeof p);
    for (int t = 1; t <= 3; t++) {
        grads(g, t);
        train_opt_step(&c, 0.01f * (float)t, t, p, g, m, v, seg, 2);
    }
    for (int i = 0; i < 6; i++) T_CHECK(fabs(p[i] - adamw[i]) < 2e-6, "adamw p[%d] = %.9g, torch %.9g", i, p[i], adamw[i]);
    /* torch.optim.SGD(lr=0.1, momentum=0.9, wd 0.01 | 0) */
    const double sgd[6] = {0.0826908553, -1.31361924, 2.73195662, 0.797006046, 0.332941835, -1.69438402};
    c.kind = TRAIN_OPT_SGD;
    c.momentum = 0.9f;
    c.weight_decay = 0.01f;
    memcpy(p, P0, sizeof p);
    memset(m, 0, sizeof m);
    for (int t = 1; t <= 3; t++) {
        grads(g, t);
        train_opt_step(&c, 0.1f, t, p, g, m, NULL, seg, 2);
    }
    for (int i = 0; i < 6; i++) T_CHECK(fabs(p[i] - sgd[i]) < 2e-6, "sgd p[%d] = %.9g, torch %.9g", i, p[i], sgd[i]);
    /* plain SGD, no decay segment: p -= lr·g */
    c.momentum = 0;
    float q[2] = {1, 2}, gq[2] = {0.5f, -1};
    train_segment s1 = {0, 2, false};
    train_opt_step(&c, 0.1f, 1, q, gq, NULL, NULL, &s1, 1);
    T_CHECK(q[0] == 0.95f && q[1] == 2.1f, "plain sgd");

    /* global norm and clipping: [3, 4] has norm 5 */
    float cg[2] = {3, 4};
    T_CHECK(fabs(train_grad_norm(cg, 2) - 5.0) < 1e-12, "norm 5");
    T_CHECK(fabs(train_clip_grad(cg, 2, 1.0f) - 5.0) < 1e-12 && fabs(cg[0] - 0.6f) < 1e-7 && fabs(cg[1] - 0.8f) < 1e-7,
            "clip to 1");
    T_CHECK(train_clip_grad(cg, 2, 2.0f) < 2.0 && fabs(cg[0] - 0.6f) < 1e-7, "no clip below the max");
    /* big buffer: block-wise norm equals the plain sum */
    size_t n = 300001;
    float *big = malloc(n * sizeof(float));
    double ref = 0;
    for (size_t i = 0; i < n; i++) big[i] = (float)((i % 7) - 3) * 0.01f, ref += (double)big[i] * big[i];
    T_CHECK(fabs(train_grad_norm(big, n) - sqrt(ref)) < 1e-9 * sqrt(ref), "block norm");
    free(big);

    /* schedule: warm-up 10, total 110, lr 1 -> 0.1 */
    T_CHECK(fabs(train_lr_at(0, 10, 110, 1, 0.1f) - 0.1f) < 1e-7, "warm-up step 0");
    T_CHECK(fabs(train_lr_at(4, 10, 110, 1, 0.1f) - 0.5f) < 1e-7, "warm-up step 4");
    T_CHECK(fabs(train_lr_at(9, 10, 110, 1, 0.1f) - 1.0f) < 1e-7, "end of warm-up");
    T_CHECK(fabs(train_lr_at(10, 10, 110, 1, 0.1f) - 1.0f) < 1e-7, "cosine start");
    T_CHECK(fabs(train_lr_at(60, 10, 110, 1, 0.1f) - 0.5428603162743364) < 1e-6, "cosine middle %.9g",
            train_lr_at(60, 10, 110, 1, 0.1f));
    T_CHECK(fabs(train_lr_at(109, 10, 110, 1, 0.1f) - 0.1f) < 1e-7, "cosine end");
    T_CHECK(fabs(train_lr_at(500, 10, 110, 1, 0.1f) - 0.1f) < 1e-7, "after the end");
    T_CHECK(train_lr_at(50, 0, 0, 0.3f, 0.3f) == 0.3f, "constant");

    {
        const size_t n = 200011; /* 4 blocks, a partial one, a tail of 3 */
        float *g = malloc(n * sizeof *g);
        moec_rng r;
        moec_rng_seed(&r, 9);
        long double ref = 0;
        for (size_t i = 0; i < n; i++) g[i] = moec_rng_normal(&r) * (i % 7 == 0 ? 30.0f : 0.01f), ref += (long double)g[i] * g[i];
        double a = train_grad_norm(g, n);
        int old = kern_force_scalar(1);
        double b = train_grad_norm(g, n);
        kern_force_scalar(old);
        int nt = omp_get_max_threads();
        omp_set_num_threads(nt == 1 ? 2 : 1);
        double c = train_grad_norm(g, n);
        omp_set_num_threads(nt);
        T_CHECK(a == b && a == c, "grad norm: AVX2 %.17g, scalar %.17g, other thread count %.17g: same bits", a, b, c);
        T_CHECK(fabs(a - sqrt((double)ref)) < 1e-13 * a, "grad norm %.17g vs long double %.17g", a, sqrt((double)ref));
        free(g);
    }
    for (int k = 0; k < 2; k++) {
        train_opt_cfg oc;
        train_opt_defaults(&oc);
        if (k) oc.kind = TRAIN_OPT_SGD, oc.momentum = 0.9f;
        const size_t n = 100003;
        float *a = malloc(n * 4), *b = malloc(n * 4), *cc = malloc(n * 4), *d = malloc(n * 4);
        big_update(&oc, false, 0, 1, a);
        big_update(&oc, true, 0, 1, b);
        big_update(&oc, true, 1, 1, cc);
        big_update(&oc, true, 0, 2, d);
        T_CHECK(!memcmp(a, b, n * 4), "%s: train_clip_step = train_clip_grad + train_opt_step (bits)", k ? "sgd" : "adamw");
        T_CHECK(!memcmp(b, cc, n * 4), "%s: AVX2 path = scalar path (bits)", k ? "sgd" : "adamw");
        T_CHECK(!memcmp(b, d, n * 4), "%s: 1 thread = 2 threads (bits)", k ? "sgd" : "adamw");
        moec_rng r;
        moec_rng_seed(&r, 3);
        size_t moved = 0;
        for (size_t i = 0; i < n; i++) moved += isfinite(b[i]) && b[i] != moec_rng_normal(&r);
        T_CHECK(moved > n - 10, "%s: the update moved %zu of %zu weights", k ? "sgd" : "adamw", moved, n);
        free(a), free(b), free(cc), free(d);
    }
    return t_done("test_train_opt");
}
