/* kern_matmul_multi: several matmuls in one parallel region must give, for every job, exactly the bits of
 * kern_matmul on that job alone (the oracle; kern_matmul itself is checked against double-precision oracles in
 * test_kern.c), for 1 and 2 threads, both code paths, mixed weight types and shapes (T = 1 decode, T = 2, the float
 * GEMM, quantized T > 1 with activations quantized inside the region), shared activations, row strides, accumulate
 * (y + the kern_matmul result, also over several k panels), several jobs summing into one y, and the errors. */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>

#include "gguf.h"
#include "kern.h"
#include "quant.h"
#include "test.h"
#include "util.h"
#include "test_weights.h"

typedef struct {
    ggml_type t;
    int64_t T, n_in, n_out;
    int acc, strided, share_x; /* share_x: use the x of the previous case (same T, n_in) */
} spec;

#define MAXJ 16
typedef struct {
    kern_mm j[MAXJ];
    int n;
    void *w[MAXJ];
    float *x[MAXJ], *y0[MAXJ], *want[MAXJ];
    size_t ysz[MAXJ];
} batch;

static float *randv(size_t n, moec_rng *r) {
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = moec_rng_normal(r);
    return v;
}

/* Build the jobs and their expected outputs with kern_matmul (job by job, on dense temporaries). */
static void build(batch *b, const spec *s, int n, moec_rng *r, int scalar) {
    memset(b, 0, sizeof *b);
    b->n = n;
    for (int i = 0; i < n; i++) {
        kern_mm *j = &b->j[i];
        int64_t ldx = s[i].strided ? s[i].n_in + 3 : s[i].n_in, ldy = s[i].strided ? s[i].n_out + 5 : s[i].n_out;
        b->w[i] = t_random_weights(s[i].t, s[i].n_in, s[i].n_out, r);
        if (s[i].share_x && i > 0) b->x[i] = NULL;
        else b->x[i] = randv((size_t)(s[i].T * ldx + 1), r);
        const float *x = b->x[i];
        for (int k = i; !x; k--) x = b->x[k - 1];
        b->ysz[i] = (size_t)(s[i].T * ldy + 1);
        b->y0[i] = randv(b->ysz[i], r); /* initial y: kept where not written, the base of accumulate */
        b->want[i] = malloc(b->ysz[i] * sizeof(float));
        memcpy(b->want[i], b->y0[i], b->ysz[i] * sizeof(float));
        float *xd = malloc(sizeof(float) * (size_t)(s[i].T * s[i].n_in + 1)),
              *yd = malloc(sizeof(float) * (size_t)(s[i].T * s[i].n_out + 1));
        for (int64_t t = 0; t < s[i].T; t++) memcpy(xd + t * s[i].n_in, x + t * ldx, sizeof(float) * s[i].n_in);
        if (scalar) kern_force_scalar(1);
        T_CHECK(kern_matmul(yd, xd, b->w[i], s[i].t, s[i].T, s[i].n_in, s[i].n_out) == 0, "kern_matmul: %s",
                moec_last_error());
        kern_force_scalar(0);
        for (int64_t t = 0; t < s[i].T; t++)
            for (int64_t o = 0; o < s[i].n_out; o++) {
                float *p = &b->want[i][t * ldy + o];
                *p = s[i].acc ? *p + yd[t * s[i].n_out + o] : yd[t * s[i].n_out + o];
            }
        free(xd);
        free(yd);
        *j = (kern_mm){.x = x, .w = b->w[i], .wtype = s[i].t, .T = s[i].T, .n_in = s[i].n_in, .n_out = s[i].n_out};
        j->accumulate = s[i].acc;
        j->ldx = s[i].strided ? ldx : 0;
        j->ldy = s[i].strided ? ldy : 0;
    }
}

static void free_batch(batch *b) {
    for (int i = 0; i < b->n; i++) moec_free(b->w[i]), free(b->x[i]), free(b->y0[i]), free(b->want[i]);
}

/* Run the batch (fresh copies of y0) and compare every job bit for bit. */
static void run_check(batch *b, const char *what, int threads, int scalar) {
    float *y[MAXJ];
    for (int i = 0; i < b->n; i++) {
        y[i] = malloc(b->ysz[i] * sizeof(float));
        memcpy(y[i], b->y0[i], b->ysz[i] * sizeof(float));
        b->j[i].y = y[i];
    }
    int nthr = omp_get_max_threads();
    omp_set_num_threads(threads);
    if (scalar) kern_force_scalar(1);
    int rc = kern_matmul_multi(b->j, b->n);
    kern_force_scalar(0);
    omp_set_num_threads(nthr);
    T_CHECK(rc == 0, "%s: %s", what, moec_last_error());
    for (int i = 0; i < b->n; i++) {
        size_t bad = 0, first = 0;
        for (size_t k = 0; k < b->ysz[i]; k++)
            if (memcmp(&y[i][k], &b->want[i][k], sizeof(float)) != 0 && bad++ == 0) first = k;
        T_CHECK(bad == 0, "%s, %d thread(s)%s, job %d (%s T=%lld n_in=%lld n_out=%lld acc=%d ldy=%lld): %zu floats "
                "differ from kern_matmul, first at %zu: %.9g vs %.9g",
                what, threads, scalar ? " scalar" : "", i, ggml_type_name(b->j[i].wtype), (long long)b->j[i].T,
                (long long)b->j[i].n_in, (long long)b->j[i].n_out, b->j[i].accumulate, (long long)b->j[i].ldy, bad,
                first, y[i][first], b->want[i][first]);
        free(y[i]);
    }
}

static void check_batch(const spec *s, int n, const char *what, moec_rng *r) {
    for (int scalar = 0; scalar < 2; scalar++) {
        batch b;
        build(&b, s, n, r, scalar);
        for (int threads = 1; threads <= 2; threads++) run_check(&b, what, threads, scalar);
        free_batch(&b);
    }
}

typedef struct {
    int rc;
} thr_arg;
static void *thr_main(void *p) { /* a plain pthread calling kern: its scratch is freed at thread exit (LSan) */
    thr_arg *a = p;
    moec_rng r;
    moec_rng_seed(&r, 99);
    const spec s[2] = {{GGML_Q8_0, 20, 256, 40, 0, 0, 0}, {GGML_F16, 9, 64, 30, 0, 0, 0}};
    batch b;
    build(&b, s, 2, &r, 0);
    run_check(&b, "from a pthread", 1, 0);
    free_batch(&b);
    a->rc = 0;
    return NULL;
}

int main(void) {
    moec_rng r;
    moec_rng_seed(&r, 4321);
    printf("kern path: %s, threads %d\n", kern_path(), omp_get_max_threads());
    /* decode step of attention: q, k, v from one x (shared activations), mixed types */
    {
        const spec s[] = {{GGML_Q8_0, 1, 256, 256, 0, 0, 0}, {GGML_Q4_0, 1, 256, 64, 0, 0, 1},
                          {GGML_F16, 1, 256, 64, 0, 0, 1}, {GGML_Q4_K, 1, 256, 70, 0, 0, 1}};
        check_batch(s, 4, "decode qkv", &r);
    }
    /* experts: gate/up of several experts with different token counts, every type, T = 1, 2, 3.. and > 16 */
    {
        const spec s[] = {{GGML_Q4_0, 7, 256, 200, 0, 0, 0},  {GGML_Q4_0, 7, 256, 200, 0, 0, 1},
                          {GGML_Q8_0, 40, 512, 130, 0, 0, 0}, {GGML_Q8_0, 40, 512, 130, 0, 0, 1},
                          {GGML_F16, 2, 96, 33, 0, 0, 0},     {GGML_BF16, 5, 100, 67, 0, 0, 0},
                          {GGML_F32, 100, 130, 70, 0, 0, 0},  {GGML_Q6_K, 3, 256, 17, 0, 0, 0},
                          {GGML_Q4_1, 17, 64, 65, 0, 0, 0},   {GGML_F16, 1, 64, 1, 0, 0, 0},
                          {GGML_Q4_0, 0, 64, 9, 0, 0, 0},     {GGML_Q8_0, 1, 64, 0, 0, 0, 0}};
        check_batch(s, 12, "experts", &r);
    }
    /* accumulate and strides: every kernel family, incl. the float GEMM over several k panels (n_in > 1024) */
    {
        const spec s[] = {{GGML_F16, 5, 1100, 37, 1, 0, 0}, {GGML_F32, 4, 2100, 9, 1, 1, 0},
                          {GGML_BF16, 7, 300, 41, 1, 1, 0}, {GGML_F16, 2, 40, 7, 1, 1, 0},
                          {GGML_Q8_0, 1, 96, 50, 1, 1, 0},  {GGML_Q4_0, 33, 128, 70, 1, 1, 0},
                          {GGML_Q4_K, 6, 512, 20, 0, 1, 0}, {GGML_F32, 1, 33, 5, 0, 1, 0}};
        check_batch(s, 8, "accumulate/strided", &r);
    }
    /* several jobs into one y: two LFA-like taps (different x, different weight types), in job order */
    {
        for (int64_t T = 1; T <= 20; T += 19) {
            const spec s[3] = {{GGML_F16, T, 128, 48, 0, 0, 0}, {GGML_Q8_0, T, 128, 48, 1, 0, 0},
                               {GGML_F32, T, 64, 48, 1, 0, 0}};
            batch b;
            build(&b, s, 3, &r, 0);
            float *sum = malloc(b.ysz[0] * sizeof(float));
            for (size_t k = 0; k < b.ysz[0]; k++) sum[k] = b.y0[0][k];
            /* expected: (tap0 + tap1) + tap2, each tap from kern_matmul alone */
            float *tap[3];
            for (int i = 0; i < 3; i++) {
                tap[i] = malloc(sizeof(float) * (size_t)(T * 48));
                T_CHECK(kern_matmul(tap[i], b.j[i].x, b.w[i], s[i].t, T, s[i].n_in, 48) == 0, "tap");
            }
            for (int64_t i = 0; i < T * 48; i++) sum[i] = (tap[0][i] + tap[1][i]) + tap[2][i];
            for (int threads = 1; threads <= 2; threads++) {
                float *y = malloc(b.ysz[0] * sizeof(float));
                memcpy(y, b.y0[0], b.ysz[0] * sizeof(float));
                for (int i = 0; i < 3; i++) b.j[i].y = y;
                int nthr = omp_get_max_threads();
                omp_set_num_threads(threads);
                T_CHECK(kern_matmul_multi(b.j, 3) == 0, "same-y: %s", moec_last_error());
                omp_set_num_threads(nthr);
                T_CHECK(!memcmp(y, sum, sizeof(float) * (size_t)(T * 48)), "same-y taps T=%lld, %d threads: not "
                        "(tap0 + tap1) + tap2", (long long)T, threads);
                T_CHECK(y[T * 48] == b.y0[0][T * 48], "same-y: wrote past y");
                /* the same y without accumulate on the later job is refused, before anything is written */
                memcpy(y, b.y0[0], b.ysz[0] * sizeof(float));
                b.j[1].accumulate = 0;
                T_CHECK(kern_matmul_multi(b.j, 3) != 0 && strstr(moec_last_error(), "same y"), "same y refused: %s",
                        moec_last_error());
                T_CHECK(!memcmp(y, b.y0[0], b.ysz[0] * sizeof(float)), "refused call wrote y");
                b.j[1].accumulate = 1;
                free(y);
            }
            for (int i = 0; i < 3; i++) free(tap[i]);
            free(sum);
            free_batch(&b);
        }
    }
    /* a big batch well above the threading threshold: 8 experts x (gate, up) at T = 64, Q4_0 and F16 */
    {
        spec s[16];
        for (int e = 0; e < 16; e++) s[e] = (spec){e < 8 ? GGML_Q4_0 : GGML_F16, 64, 512, 300, 0, 0, e % 2};
        check_batch(s, 16, "16 experts", &r);
    }
    /* quantized types: a T-token call gives every token the bits of a one-token call (decode == prefill), whatever
     * kernel the token count selects (Q4_0: the direct 8-row kernel up to 4 tokens, a packed panel above) */
    {
        const ggml_type qt[5] = {GGML_Q8_0, GGML_Q4_0, GGML_Q4_1, GGML_Q4_K, GGML_Q6_K};
        for (int scalar = 0; scalar < 2; scalar++)
            for (int k = 0; k < 5; k++) {
                const int64_t T = 70, n_in = 512, n_out = 77;
                void *w = t_random_weights(qt[k], n_in, n_out, &r);
                float *x = randv((size_t)(T * n_in), &r), *y = malloc(sizeof(float) * T * n_out),
                      *y1 = malloc(sizeof(float) * n_out);
                kern_force_scalar(scalar);
                T_CHECK(kern_matmul(y, x, w, qt[k], T, n_in, n_out) == 0, "prefill");
                int bad = 0;
                for (int64_t t = 0; t < T; t++) {
                    T_CHECK(kern_matmul(y1, x + t * n_in, w, qt[k], 1, n_in, n_out) == 0, "decode");
                    bad += memcmp(y1, y + t * n_out, sizeof(float) * n_out) != 0;
                }
                kern_force_scalar(0);
                T_CHECK(bad == 0, "%s %s: %d of %lld tokens differ between the T=%lld call and one-token calls",
                        ggml_type_name(qt[k]), scalar ? "scalar" : kern_path(), bad, (long long)T, (long long)T);
                moec_free(w);
                free(x);
                free(y);
                free(y1);
            }
    }
    /* errors: validated before anything is written */
    {
        float x[64] = {0}, y[8];
        for (int i = 0; i < 8; i++) y[i] = 7.0f;
        uint8_t w[256] = {0};
        kern_mm j[2] = {{.y = y, .x = x, .w = w, .wtype = GGML_F32, .T = 1, .n_in = 32, .n_out = 1},
                        {.y = y + 1, .x = x, .w = w, .wtype = GGML_Q8_0, .T = 1, .n_in = 48, .n_out = 1}};
        T_CHECK(kern_matmul_multi(j, 2) != 0 && y[0] == 7.0f, "bad second job: nothing written");
        j[1] = (kern_mm){.y = y + 1, .x = x, .w = w, .wtype = GGML_F32, .T = 1, .n_in = 32, .n_out = 1};
        j[1].ldy = 0;
        j[1].ldx = 16;
        T_CHECK(kern_matmul_multi(j, 2) != 0 && strstr(moec_last_error(), "stride"), "ldx < n_in: %s",
                moec_last_error());
        j[1].ldx = 0;
        j[1].x = NULL;
        T_CHECK(kern_matmul_multi(j, 2) != 0 && strstr(moec_last_error(), "NULL"), "NULL x: %s", moec_last_error());
        T_CHECK(kern_matmul_multi(NULL, 3) != 0, "NULL jobs");
        T_CHECK(kern_matmul_multi(j, -1) != 0, "n < 0");
        T_CHECK(kern_matmul_multi(j, 0) == 0, "n = 0 is a no-op");
        T_CHECK(y[0] == 7.0f && y[1] == 7.0f, "errors wrote y");
    }
    /* scratch from a plain pthread is freed when it exits; the main thread's on request */
    {
        pthread_t th;
        thr_arg a = {-1};
        T_CHECK(pthread_create(&th, NULL, thr_main, &a) == 0, "pthread_create");
        pthread_join(th, NULL);
        T_CHECK(a.rc == 0, "pthread run");
        kern_release_scratch();
        spec s[1] = {{GGML_Q8_0, 3, 64, 5, 0, 0, 0}};
        check_batch(s, 1, "after release", &r); /* buffers come back */
    }
    return t_done("test_kern_multi");
}
