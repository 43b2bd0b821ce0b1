/* util: half-precision conversions against known bit patterns, overflow checks, atomic writes, RNG. */
#include <math.h>
#include <unistd.h>

#include "test.h"
#include "util.h"

int main(void) {
    /* fp16: 1.0 = 0x3c00, -2.0 = 0xc000, 65504 = 0x7bff (max), 2^-24 = 0x0001 (min subnormal), inf = 0x7c00 */
    T_CHECK(moec_f32_to_f16(1.0f) == 0x3c00, "f16(1)");
    T_CHECK(moec_f32_to_f16(-2.0f) == 0xc000, "f16(-2)");
    T_CHECK(moec_f32_to_f16(65504.0f) == 0x7bff, "f16(65504)");
    T_CHECK(moec_f32_to_f16(1e6f) == 0x7c00, "f16 overflow -> inf");
    T_CHECK(moec_f32_to_f16(ldexpf(1.0f, -24)) == 0x0001, "f16 min subnormal");
    T_CHECK(moec_f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3c00, "f16 tie rounds to even (down)");
    T_CHECK(moec_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3c02, "f16 tie rounds to even (up)");
    T_CHECK(moec_f16_to_f32(0x0001) == ldexpf(1.0f, -24), "f16 subnormal decode");
    T_CHECK(moec_f16_to_f32(0x3555) == 0.333251953125f, "f16 decode 1/3");
    for (uint32_t h = 0; h < 0x7c00; h++) /* every finite positive half round-trips */
        if (moec_f32_to_f16(moec_f16_to_f32((uint16_t)h)) != h) { T_CHECK(0, "f16 round trip %x", h); break; }
    /* bf16: 1.0 = 0x3f80; 1+2^-8 is a tie -> even (0x3f80); pi -> 0x4049 */
    T_CHECK(moec_f32_to_bf16(1.0f) == 0x3f80, "bf16(1)");
    T_CHECK(moec_f32_to_bf16(1.0f + ldexpf(1.0f, -8)) == 0x3f80, "bf16 tie to even");
    T_CHECK(moec_f32_to_bf16(3.14159265f) == 0x4049, "bf16(pi)");
    T_CHECK(moec_bf16_to_f32(0x4049) == 3.140625f, "bf16 decode");

    size_t r;
    T_CHECK(!moec_mul_ok(SIZE_MAX / 2 + 1, 2, &r), "mul overflow detected");
    T_CHECK(moec_mul_ok(1000, 1000, &r) && r == 1000000, "mul ok");
    T_CHECK(!moec_add_ok(SIZE_MAX, 1, &r), "add overflow detected");
    T_CHECK(moec_calloc(SIZE_MAX / 4, 8) == NULL && strstr(moec_last_error(), "overflow"), "calloc overflow error");

    char path[] = "/tmp/moec_test_util_XXXXXX";
    int fd = mkstemp(path);
    T_CHECK(fd >= 0, "mkstemp");
    close(fd);
    T_CHECK(moec_write_file_atomic(path, "hello", 5) == 0, "atomic write: %s", moec_last_error());
    char *data = NULL;
    size_t len = 0;
    T_CHECK(moec_read_file(path, &data, &len) == 0 && len == 5 && !memcmp(data, "hello", 5), "read back");
    free(data);
    unlink(path);
    T_CHECK(moec_read_file("/nonexistent/x", &data, &len) == -1 && strstr(moec_last_error(), "/nonexistent/x"),
            "missing file names the path");

    moec_rng a, b;
    moec_rng_seed(&a, 42);
    moec_rng_seed(&b, 42);
    int same = 1;
    double sum = 0, sq = 0;
    for (int i = 0; i < 100000; i++) {
        if (moec_rng_u64(&a) != moec_rng_u64(&b)) same = 0;
        float z = moec_rng_normal(&a);
        moec_rng_normal(&b);
        sum += z;
        sq += (double)z * z;
    }
    T_CHECK(same, "rng deterministic for a seed");
    T_CHECK(fabs(sum / 100000) < 0.02 && fabs(sq / 100000 - 1) < 0.02, "normal mean %g var %g", sum / 1e5, sq / 1e5);
    return t_done("test_util");
}
