/* Minimal test harness: a check counts, a failure prints file:line and the message, the program's exit
 * status says whether all checks passed. Shared data lives in $MOEC_SHARED (default ../shared). */
#ifndef MOEC_TEST_H
#define MOEC_TEST_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_checks, t_failed;
#define T_CHECK(cond, ...)                                                                         \
    do {                                                                                           \
        t_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            t_failed++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)
/* Path of a file under the shared data directory (static buffer: use before the next call). */
static inline const char *t_shared(const char *rel) {
    static char buf[4096];
    const char *root = getenv("MOEC_SHARED");
    snprintf(buf, sizeof buf, "%s/%s", root ? root : "../shared", rel);
    return buf;
}
/* Largest |a[i]|, and largest |a[i] - b[i]| (a NaN difference counts as the largest). */
static inline double t_max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(a[i]) > m) m = fabs(a[i]);
    return m;
}
static inline double t_max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}
static inline int t_done(const char *name) {
    printf("%s: %d checks, %d failed\n", name, t_checks, t_failed);
    return t_failed ? 1 : 0;
}
#endif
