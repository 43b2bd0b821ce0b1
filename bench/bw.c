/* Memory read bandwidth: sum a 1 GiB buffer (default) with 1..N OpenMP threads; best of R passes.
 * This is the ceiling for decode, which streams the active weights once per token.
 * Prints one JSON line per thread count: {"threads":T,"bytes":B,"best_gbps":x,"median_gbps":y}.
 * usage: bw [MiB=1024] [passes=5] [threads...=1 2]      (build: cc -O3 -march=native -fopenmp bw.c) */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 1024, passes = argc > 2 ? atol(argv[2]) : 5;
    if (mib < 1 || mib > (1L << 20) || passes < 1 || passes > 1000) {
        fprintf(stderr, "usage: bw [MiB=1024] [passes=5] [threads...]\n");
        return 2;
    }
    size_t n = (size_t)mib << 17; /* uint64 words */
    uint64_t *buf = aligned_alloc(64, n * sizeof *buf);
    if (!buf) {
        fprintf(stderr, "bw: cannot allocate %ld MiB\n", mib);
        return 1;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = i; /* touch every page (first touch by the reading threads) */
    int nt_list[64], n_nt = 0;
    for (int i = 3; i < argc && n_nt < 64; i++) nt_list[n_nt++] = atoi(argv[i]);
    if (!n_nt) nt_list[n_nt++] = 1, nt_list[n_nt++] = 2;
    uint64_t check = 0;
    for (int k = 0; k < n_nt; k++) {
        int nt = nt_list[k] < 1 ? 1 : nt_list[k];
        double *gbps = malloc((size_t)passes * sizeof *gbps);
        if (!gbps) return 1;
        for (long p = 0; p < passes; p++) {
            uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            double t0 = now();
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : s0, s1, s2, s3)
            for (size_t i = 0; i < n; i += 4) {
                s0 += buf[i], s1 += buf[i + 1], s2 += buf[i + 2], s3 += buf[i + 3];
            }
            double t = now() - t0;
            check += s0 + s1 + s2 + s3;
            gbps[p] = (double)(n * sizeof *buf) / t / 1e9;
        }
        qsort(gbps, (size_t)passes, sizeof *gbps, cmp);
        printf("{\"threads\":%d,\"bytes\":%zu,\"best_gbps\":%.3f,\"median_gbps\":%.3f}\n", nt, n * sizeof *buf,
               gbps[passes - 1], gbps[passes / 2]);
        free(gbps);
    }
    fprintf(stderr, "bw: checksum %llu\n", (unsigned long long)check); /* keeps the sums alive */
    free(buf);
    return 0;
}
