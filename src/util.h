/* util: error reporting, checked allocation, timing, progress. Every moec module uses it.
 *
 * Error convention (one style everywhere):
 *   - functions return 0 on success and -1 on failure (or NULL for constructors);
 *   - on failure they have called moec_set_error() with one line naming the problem;
 *   - the caller reads it with moec_last_error(). The message buffer is thread-local, so the
 *     library holds no shared mutable state and may be used from many threads at once.
 *   - inside a function, CHECK(cond, fmt, ...) sets the message and jumps to the local `fail:` label.
 * The library never calls exit() and never prints, except through moec_log (a callback, stderr by default). */
#ifndef MOEC_UTIL_H
#define MOEC_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#if defined(__GNUC__)
#define MOEC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MOEC_PRINTF(a, b)
#endif

/* Set the calling thread's error message (printf-style). Always returns -1, for `return moec_set_error(...)`. */
int moec_set_error(const char *fmt, ...) MOEC_PRINTF(1, 2);
/* Prefix the current error message: "context: old message". Returns -1. */
int moec_wrap_error(const char *fmt, ...) MOEC_PRINTF(1, 2);
/* The calling thread's last error message ("" if none). */
const char *moec_last_error(void);
void moec_clear_error(void);

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            moec_set_error(__VA_ARGS__);                                                           \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)
/* Propagate a failure from a call that already set the message. */
#define TRY(expr)                                                                                  \
    do {                                                                                           \
        if ((expr) != 0) goto fail;                                                                \
    } while (0)
#define TRY_PTR(ptr)                                                                               \
    do {                                                                                           \
        if ((ptr) == NULL) goto fail;                                                              \
    } while (0)

/* Checked allocation: on failure (or size overflow) set the error and return NULL.
 * moec_alloc returns 64-byte aligned memory; free it with moec_free. Zero-size requests give a valid pointer. */
void *moec_malloc(size_t n);
void *moec_calloc(size_t count, size_t size);
void *moec_realloc(void *p, size_t n);
void *moec_alloc(size_t n); /* 64-byte aligned, zeroed */
void moec_free(void *p);
char *moec_strdup(const char *s);

/* Overflow-checked size arithmetic: return false on overflow. */
bool moec_mul_ok(size_t a, size_t b, size_t *out);
bool moec_add_ok(size_t a, size_t b, size_t *out);

/* Whole file into memory (NUL-terminated for convenience; *len excludes the NUL). */
int moec_read_file(const char *path, char **data, size_t *len);
/* Atomic write: path.tmp.<pid>, fsync, rename, fsync of the directory. */
int moec_write_file_atomic(const char *path, const void *data, size_t len);

/* Last step of an atomic write: rename the fsync'ed temp file over path, then fsync the directory. */
int moec_rename_durable(const char *tmp, const char *path);

/* A whole file, read-only in memory: mapped (moec_mmap_open: pages come from the page cache on first touch) or
 * copied (moec_mmap_open_copy: read into anonymous memory aligned to 2 MiB and advised MADV_HUGEPAGE, so the
 * kernel can back it with transparent huge pages: fewer TLB misses when streaming the weights, at the cost of
 * reading the whole file at start-up). */
typedef struct {
    const uint8_t *data;
    size_t size;
    void *base;   /* the mapping to unmap: data for a file mapping, the aligned area's start for a copy */
    size_t len;   /* its length */
} moec_mmap;
int moec_mmap_open(moec_mmap *m, const char *path);
int moec_mmap_open_copy(moec_mmap *m, const char *path);
void moec_mmap_close(moec_mmap *m);

/* Monotonic wall time in seconds. */
double moec_time(void);

/* Logging: the library's only output channel. Default prints to stderr. */
typedef void (*moec_log_fn)(const char *msg, void *user);
void moec_log_set(moec_log_fn fn, void *user);
void moec_log(const char *fmt, ...) MOEC_PRINTF(1, 2);

/* Half-precision conversions (IEEE fp16 and bfloat16, round-to-nearest-even). */
float moec_f16_to_f32(uint16_t h);
uint16_t moec_f32_to_f16(float f);
float moec_bf16_to_f32(uint16_t h);
uint16_t moec_f32_to_bf16(float f);

/* Deterministic RNG (xoshiro256**-style state, seedable, serialisable as 4 u64). */
typedef struct {
    uint64_t s[4];
} moec_rng;
void moec_rng_seed(moec_rng *r, uint64_t seed);
uint64_t moec_rng_u64(moec_rng *r);
float moec_rng_uniform(moec_rng *r); /* [0,1) */
float moec_rng_normal(moec_rng *r);  /* N(0,1) */

#endif
