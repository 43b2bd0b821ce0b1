/* Minimal test harness: a check counts, a failure prints file:line and the message, the program's exit
 * status says whether all checks passed. Shared data lives in $MOEC_SHARED (default ../shared). */
#ifndef MOEC_TEST_H
#define MOEC_TEST_H
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
static inline int t_done(const char *name) {
    printf("%s: %d checks, %d failed\n", name, t_checks, t_failed);
    return t_failed ? 1 : 0;
}
#endif
