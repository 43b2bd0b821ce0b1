/* kern_bench: GFLOP/s of kern_matmul (y[T, n_out] = x[T, n_in] · Wᵀ) per weight type and T, next to OpenBLAS
 * cblas_sgemm on the same fp32 problem. Usage: kern_bench [n_in n_out] [T...]. Built and run by bench/kern.sh.
 * Env: KB_CPUTIME=1 (process CPU time), KB_REPS=n (exactly n calls, no warm-up: for callgrind), KB_TYPES=Q4_0,F16
 * (only the rows whose name contains one of these substrings, e.g. "openblas"), KB_NO_BWD=1.
 * `kern_bench gemm [T...]`: kern_gemm_acc vs cblas_sgemm (beta 1) on the training backward shapes, dx += dy·W (A
 * row-major) and dW += dyᵀ·x (A transposed) per (T, n_in, n_out), with the ratio kern/OpenBLAS of the same run. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kern.h"
#include "ops_backward.h"
#include "quant.h"
#include "util.h"

/* Seconds per call: wall time, or with KB_CPUTIME=1 the process CPU time (use with 1 thread on a busy machine:
 * it measures the kernel without the time the OS gives to other processes). */
static double now(void) {
    const char *e = getenv("KB_CPUTIME");
    if (e && *e == '1') {
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    return moec_time();
}

static double bench(int (*fn)(void *), void *arg, double min_secs) {
    const char *fixed = getenv("KB_REPS"); /* a fixed number of calls (for callgrind instruction counts) */
    if (fixed && atoi(fixed) > 0) {
        int n = atoi(fixed);
        double t0 = now();
        for (int i = 0; i < n; i++) fn(arg);
        return (now() - t0) / n;
    }
    fn(arg); /* warm-up */
    int reps = 0;
    double t0 = now(), t;
    do {
        fn(arg);
        reps++;
        t = now() - t0;
    } while (t < min_secs);
    return t / reps;
}

typedef struct {
    float *y;
    const float *x;
    const void *w;
    ggml_type t;
    int64_t T, n_in, n_out;
} job;

static int run_kern(void *a) {
    job *j = a;
    return kern_matmul(j->y, j->x, j->w, j->t, j->T, j->n_in, j->n_out);
}
/* backward jobs: x = dy [T, n_out], y = dx [T, n_in], w = W [n_out, n_in] followed by dW [n_out, n_in] */
static int run_bwd(void *a) {
    job *j = a;
    const float *w = j->w;
    return kern_matmul_backward(j->y, (float *)w + (size_t)(j->n_in * j->n_out), j->x, j->y, w, j->T, j->n_in,
                                j->n_out);
}
static int run_bwd_ops(void *a) {
    job *j = a;
    const float *w = j->w;
    ops_matmul_backward(j->y, (float *)w + (size_t)(j->n_in * j->n_out), j->x, j->y, w, j->T, j->n_in, j->n_out);
    return 0;
}
static int run_bwd_blas(void *a) {
    job *j = a;
    int T = (int)j->T, ni = (int)j->n_in, no = (int)j->n_out;
    const float *w = j->w;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, ni, no, 1.0f, j->x, no, w, ni, 1.0f, j->y, ni);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, no, ni, T, 1.0f, j->x, no, j->y, ni, 1.0f,
                (float *)w + (size_t)ni * no, ni);
    return 0;
}
static int run_blas(void *a) {
    job *j = a;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->T, (int)j->n_out, (int)j->n_in, 1.0f, j->x,
                (int)j->n_in, j->w, (int)j->n_in, 0.0f, j->y, (int)j->n_out);
    return 0;
}

/* kern_gemm_acc vs cblas_sgemm: C[M, N] += A·B with A [M, K] row-major (tr = 0) or Aᵀ stored [K, M] (tr = 1) */
typedef struct {
    float *c;
    const float *a, *b;
    int64_t M, N, K;
    int tr;
} gjob;
static int run_gemm_kern(void *p) {
    gjob *g = p;
    return g->tr ? kern_gemm_acc(g->c, g->a, 1, g->M, g->b, g->M, g->N, g->K)
                 : kern_gemm_acc(g->c, g->a, g->K, 1, g->b, g->M, g->N, g->K);
}
static int run_gemm_blas(void *p) {
    gjob *g = p;
    cblas_sgemm(CblasRowMajor, g->tr ? CblasTrans : CblasNoTrans, CblasNoTrans, (int)g->M, (int)g->N, (int)g->K, 1.0f,
                g->a, g->tr ? (int)g->M : (int)g->K, g->b, (int)g->N, 1.0f, g->c, (int)g->N);
    return 0;
}
static int gemm_mode(int argc, char **argv) {
    int64_t Ts[8] = {256, 1024};
    int nT = 2;
    if (argc > 2) {
        nT = 0;
        for (int a = 2; a < argc && nT < 8; a++) Ts[nT++] = atoll(argv[a]);
    }
    /* (n_in, n_out) of the trained model's products: expert up/gate, expert down, attention, output head */
    const int64_t sh[][2] = {{512, 1024}, {1024, 512}, {512, 512}, {512, 8192}};
    moec_rng r;
    moec_rng_seed(&r, 2);
    printf("kern_bench gemm: C[M,N] += A[M,K]·B[K,N], GFLOP/s = 2MNK/time, threads=%s, path=%s\n",
           getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "?", kern_path());
    printf("%-26s %8s %8s %8s %8s %8s %8s\n", "product (M N K)", "kern", "openblas", "ratio", "(dW) kern", "openblas",
           "ratio");
    for (int t = 0; t < nT; t++)
        for (size_t s = 0; s < sizeof sh / sizeof sh[0]; s++) {
            int64_t T = Ts[t], ni = sh[s][0], no = sh[s][1];
            float *w = moec_alloc((size_t)(ni * no) * 4), *dw = moec_alloc((size_t)(ni * no) * 4),
                  *x = moec_alloc((size_t)(T * ni) * 4), *dx = moec_alloc((size_t)(T * ni) * 4),
                  *dy = moec_alloc((size_t)(T * no) * 4);
            if (!w || !dw || !x || !dx || !dy) return 1;
            for (int64_t i = 0; i < ni * no; i++) w[i] = moec_rng_normal(&r) * 0.02f, dw[i] = 0.0f;
            for (int64_t i = 0; i < T * ni; i++) x[i] = moec_rng_normal(&r), dx[i] = 0.0f;
            for (int64_t i = 0; i < T * no; i++) dy[i] = moec_rng_normal(&r);
            char name[64];
            snprintf(name, sizeof name, "dx %lld %lld %lld", (long long)T, (long long)ni, (long long)no);
            printf("%-26s", name);
            gjob jobs[2] = {{dx, dy, w, T, ni, no, 0}, {dw, dy, x, no, ni, T, 1}};
            for (int k = 0; k < 2; k++) {
                double fl = 2.0 * (double)T * (double)ni * (double)no * 1e-9;
                double gk = fl / bench(run_gemm_kern, &jobs[k], 0.3), gb = fl / bench(run_gemm_blas, &jobs[k], 0.3);
                printf(" %8.1f %8.1f %7.2fx", gk, gb, gk / gb);
                fflush(stdout);
            }
            printf("\n");
            moec_free(w), moec_free(dw), moec_free(x), moec_free(dx), moec_free(dy);
        }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "gemm") == 0) return gemm_mode(argc, argv);
    int64_t n_in = 4096, n_out = 4096;
    int64_t Ts[8] = {1, 16, 512};
    int nT = 3, a = 1;
    if (argc >= 3) {
        n_in = atoll(argv[1]);
        n_out = atoll(argv[2]);
        a = 3;
    }
    if (argc > a) {
        nT = 0;
        for (; a < argc && nT < 8; a++) Ts[nT++] = atoll(argv[a]);
    }
    int64_t Tmax = 0;
    for (int i = 0; i < nT; i++) Tmax = Ts[i] > Tmax ? Ts[i] : Tmax;
    moec_rng r;
    moec_rng_seed(&r, 1);
    float *wf = moec_alloc((size_t)(n_in * n_out) * 4), *x = moec_alloc((size_t)(Tmax * n_in) * 4),
          *y = moec_alloc((size_t)(Tmax * n_out) * 4);
    for (int64_t i = 0; i < n_in * n_out; i++) wf[i] = moec_rng_normal(&r) * 0.02f;
    for (int64_t i = 0; i < Tmax * n_in; i++) x[i] = moec_rng_normal(&r);
    const ggml_type types[] = {GGML_F32, GGML_F16, GGML_BF16, GGML_Q8_0, GGML_Q4_0, GGML_Q4_K, GGML_Q6_K};
    const int ntypes = (int)(sizeof types / sizeof types[0]);
    void *wq[7] = {0};
    for (int k = 0; k < ntypes; k++) {
        size_t rb = ggml_row_bytes(types[k], n_in);
        if (rb == 0) continue;
        wq[k] = moec_alloc(rb * (size_t)n_out);
        for (int64_t o = 0; o < n_out; o++) {
            uint8_t *p = (uint8_t *)wq[k] + rb * (size_t)o;
            if (quant_can_write(types[k])) {
                quant_row(types[k], wf + o * n_in, p, n_in);
            } else { /* K-quants: random blocks with small scales (speed does not depend on the values) */
                for (size_t i = 0; i < rb; i++) p[i] = (uint8_t)moec_rng_u64(&r);
                size_t bs = types[k] == GGML_Q4_K ? 144 : 210, doff = types[k] == GGML_Q4_K ? 0 : 208;
                for (size_t b = 0; b < rb; b += bs) {
                    uint16_t d = moec_f32_to_f16(1e-3f);
                    memcpy(p + b + doff, &d, 2);
                    if (types[k] == GGML_Q4_K) memcpy(p + b + 2, &d, 2);
                }
            }
        }
    }
    printf("kern_bench: n_in=%lld n_out=%lld path=%s threads=%s (GFLOP/s = 2*T*n_in*n_out / time)\n",
           (long long)n_in, (long long)n_out, kern_path(), getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "?");
    printf("%-10s", "T");
    for (int i = 0; i < nT; i++) printf("%12lld", (long long)Ts[i]);
    printf("\n");
    for (int k = -1; k < ntypes; k++) {
        if (k >= 0 && !wq[k]) continue;
        const char *only = getenv("KB_TYPES"); /* e.g. KB_TYPES=q4_0,f16 (openblas is "openblas") */
        if (only && !strstr(only, k < 0 ? "openblas" : ggml_type_name(types[k]))) continue; /* "F16" also hits BF16 */
        printf("%-10s", k < 0 ? "openblas" : ggml_type_name(types[k]));
        for (int i = 0; i < nT; i++) {
            job j = {y, x, k < 0 ? (void *)wf : wq[k], k < 0 ? GGML_F32 : types[k], Ts[i], n_in, n_out};
            double s = bench(k < 0 ? run_blas : run_kern, &j, Ts[i] >= 64 ? 1.0 : 0.3);
            printf("%12.1f", 2.0 * (double)Ts[i] * (double)n_in * (double)n_out / s * 1e-9);
            fflush(stdout);
        }
        printf("\n");
    }
    /* backward of an fp32 matmul (dx = dy·W and dW = dyᵀ·x: 4·T·n_in·n_out flops) at the largest T */
    if (getenv("KB_NO_BWD") == NULL) {
        int64_t T = Tmax;
        float *wb = moec_alloc((size_t)(2 * n_in * n_out) * 4), *dy = moec_alloc((size_t)(T * n_out) * 4),
              *xb = moec_alloc((size_t)(T * n_in) * 4);
        for (int64_t i = 0; i < n_in * n_out; i++) wb[i] = wf[i];
        for (int64_t i = 0; i < T * n_out; i++) dy[i] = moec_rng_normal(&r);
        for (int64_t i = 0; i < T * n_in; i++) xb[i] = x[i];
        printf("backward T=%lld (dx and dW) GFLOP/s:", (long long)T);
        int (*fns[3])(void *) = {run_bwd_blas, run_bwd, run_bwd_ops};
        const char *names[3] = {"openblas", "kern_matmul_backward", "ops_matmul_backward"};
        for (int k = 0; k < 3; k++) {
            job j = {xb, dy, wb, GGML_F32, T, n_in, n_out};
            double s = bench(fns[k], &j, 1.0);
            printf("  %s %.1f", names[k], 4.0 * (double)T * (double)n_in * (double)n_out / s * 1e-9);
            fflush(stdout);
        }
        printf("\n");
    }
    return 0;
}
