#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char err_buf[1024];

int moec_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return -1;
}

int moec_wrap_error(const char *fmt, ...) {
    char old[sizeof err_buf];
    memcpy(old, err_buf, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof err_buf - 2) {
        size_t k = (size_t)n;
        memcpy(err_buf + k, ": ", 2);
        k += 2;
        size_t room = sizeof err_buf - 1 - k, ol = strlen(old);
        if (ol > room) ol = room;
        memcpy(err_buf + k, old, ol);
        err_buf[k + ol] = 0;
    }
    return -1;
}

const char *moec_last_error(void) { return err_buf; }
void moec_clear_error(void) { err_buf[0] = 0; }

bool moec_mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}

bool moec_add_ok(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return false;
    *out = a + b;
    return true;
}

void *moec_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) moec_set_error("out of memory allocating %zu bytes", n);
    return p;
}

void *moec_calloc(size_t count, size_t size) {
    size_t n;
    if (!moec_mul_ok(count, size, &n)) {
        moec_set_error("allocation size overflow (%zu x %zu)", count, size);
        return NULL;
    }
    void *p = calloc(n ? n : 1, 1);
    if (!p) moec_set_error("out of memory allocating %zu bytes", n);
    return p;
}

void *moec_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) moec_set_error("out of memory allocating %zu bytes", n);
    return q;
}

void *moec_alloc(size_t n) {
    size_t r;
    if (!moec_add_ok(n, 63, &r)) {
        moec_set_error("allocation size overflow (%zu bytes)", n);
        return NULL;
    }
    r &= ~(size_t)63;
    void *p = aligned_alloc(64, r ? r : 64);
    if (!p) {
        moec_set_error("out of memory allocating %zu bytes", n);
        return NULL;
    }
    memset(p, 0, r ? r : 64);
    return p;
}

void moec_free(void *p) { free(p); }

char *moec_strdup(const char *s) {
    size_t n = strlen(s);
    char *d = moec_malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

int moec_read_file(const char *path, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    CHECK(f, "%s: %s", path, strerror(errno));
    for (;;) {
        if (n + 1 >= cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb = moec_realloc(buf, ncap);
            TRY_PTR(nb);
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    CHECK(!ferror(f), "%s: read error", path);
    fclose(f);
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
fail:
    if (f) fclose(f);
    free(buf);
    return -1;
}

int moec_rename_durable(const char *tmp, const char *path) {
    if (rename(tmp, path) != 0) return moec_set_error("rename %s -> %s: %s", tmp, path, strerror(errno));
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) { /* make the rename itself durable */
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int moec_write_file_atomic(const char *path, const void *data, size_t len) {
    char tmp[4096];
    int fd = -1;
    CHECK(snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) < (int)sizeof tmp, "path too long: %s", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0, "%s: %s", tmp, strerror(errno));
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        CHECK(w > 0, "%s: write failed: %s", tmp, strerror(errno));
        p += w;
        left -= (size_t)w;
    }
    CHECK(fsync(fd) == 0, "%s: fsync failed: %s", tmp, strerror(errno));
    CHECK(close(fd) == 0, "%s: close failed: %s", tmp, strerror(errno));
    fd = -1;
    TRY(moec_rename_durable(tmp, path));
    return 0;
fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    return -1;
}

/* Opens path as a non-empty regular file: the fd, or -1 (error set; m->size = 0). An empty file: m->data = "", fd
 * closed, returns -2. */
static int map_open_fd(moec_mmap *m, const char *path) {
    *m = (moec_mmap){NULL, 0, NULL, 0};
    int fd = open(path, O_RDONLY);
    if (fd < 0) return moec_set_error("%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return moec_set_error("%s: not a regular file", path);
    }
    m->size = (size_t)st.st_size;
    if (m->size == 0) {
        close(fd);
        m->data = (const uint8_t *)"";
        return -2;
    }
    return fd;
}

int moec_mmap_open(moec_mmap *m, const char *path) {
    int fd = map_open_fd(m, path);
    if (fd < 0) return fd == -2 ? 0 : -1;
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        m->size = 0;
        return moec_set_error("%s: mmap failed: %s", path, strerror(errno));
    }
    m->data = m->base = p;
    m->len = m->size;
    return 0;
}

int moec_mmap_open_copy(moec_mmap *m, const char *path) {
    int fd = map_open_fd(m, path);
    if (fd < 0) return fd == -2 ? 0 : -1;
    const size_t huge = (size_t)2 << 20, n = m->size;
    size_t len = n + huge; /* room to align the start to 2 MiB */
    uint8_t *p = len > n ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;
    if (p == MAP_FAILED) {
        close(fd);
        m->size = 0;
        return moec_set_error("%s: cannot allocate %zu bytes to read it into: %s", path, n, strerror(errno));
    }
    uint8_t *d = p + (huge - (uintptr_t)p % huge) % huge;
    (void)madvise(d, n, MADV_HUGEPAGE); /* a hint: without THP the copy works the same */
    size_t off = 0;
    while (off < n) {
        size_t want = n - off < ((size_t)1 << 30) ? n - off : ((size_t)1 << 30);
        ssize_t r = pread(fd, d + off, want, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            close(fd);
            munmap(p, len);
            m->size = 0;
            return moec_set_error("%s: read failed at byte %zu of %zu: %s", path, off, n,
                                  e ? strerror(e) : "unexpected end of file");
        }
        off += (size_t)r;
    }
    close(fd);
    (void)mprotect(p, len, PROT_READ); /* read-only like the file mapping (best effort) */
    m->data = d;
    m->base = p;
    m->len = len;
    return 0;
}

void moec_mmap_close(moec_mmap *m) {
    if (m->base && m->len) munmap(m->base, m->len);
    *m = (moec_mmap){NULL, 0, NULL, 0};
}

double moec_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void log_stderr(const char *msg, void *user) {
    (void)user;
    fputs(msg, stderr);
}
static moec_log_fn log_fn = log_stderr; /* set once by the embedding program, before threads start */
static void *log_user;

void moec_log_set(moec_log_fn fn, void *user) {
    log_fn = fn ? fn : log_stderr;
    log_user = user;
}

void moec_log(const char *fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_fn(buf, log_user);
}

float moec_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal */
            float f = ldexpf((float)man, -24);
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t moec_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow -> inf */
    if (ax < 0x38800000u) {                                  /* subnormal or zero */
        float a;
        memcpy(&a, &ax, 4);
        float r = a * 16777216.0f; /* 2^24 */
        uint32_t m = (uint32_t)lrintf(r);
        return (uint16_t)(sign | m);
    }
    uint32_t e = (ax >> 23) - 112, man = ax & 0x7fffff;
    uint32_t h = (e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float moec_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t moec_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void moec_rng_seed(moec_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) { /* splitmix64 */
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

uint64_t moec_rng_u64(moec_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float moec_rng_uniform(moec_rng *r) { return (float)(moec_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float moec_rng_normal(moec_rng *r) {
    float u1 = moec_rng_uniform(r), u2 = moec_rng_uniform(r);
    if (u1 < 1e-30f) u1 = 1e-30f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}
