/* Self-check of the Bochs harness (tests/bochs/run.sh): run inside the emulator, it checks that
 * CPUID reports AVX-512 F/BW/VL/VNNI/BF16, that the OS enabled their state (XCR0 bits 1,2,5,6,7), that
 * __builtin_cpu_supports agrees, and that real AVX-512 instructions (VPDPBUSD 512/256-bit,
 * VPCMPGTB into a 64-bit mask, VCVTNEPS2BF16 and VDPBF16PS) give the scalar result. Exit 0: all good,
 * 1: a check failed.
 *   selftest [--exit N]      exit with status N right away (checks run.sh passes it on)
 *   selftest [--loop N]      also run N iterations of a 10-instruction scalar loop (speed probe)
 *   selftest [--vnni N]      also run N VPDPBUSD zmm instructions (speed probe)
 * Build: gcc -std=c11 -O2 -static -o selftest tests/bochs/selftest.c */
#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

static int failures;

static void check(int ok, const char *what) {
    printf("%-44s %s\n", what, ok ? "yes" : "NO");
    if (!ok) failures++;
}

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

/* acc[i] + sum over k<4 of a[4i+k] (unsigned) * b[4i+k] (signed), as VPDPBUSD computes it */
static int32_t dot4(int32_t acc, const uint8_t *a, const int8_t *b) {
    for (int k = 0; k < 4; k++) acc += (int32_t)a[k] * (int32_t)b[k];
    return acc;
}

AVX512 static int check_avx512(void) {
    uint8_t a[64];
    int8_t b[64];
    int32_t acc[16], out[16];
    for (int i = 0; i < 64; i++) {
        a[i] = (uint8_t)(i * 37 + 255 * (i % 5 == 0)); /* includes 255 */
        b[i] = (int8_t)(i % 7 == 0 ? -128 : i * 29 - 100);
    }
    for (int i = 0; i < 16; i++) acc[i] = i * 1000003 - 7000000;
    int bad = 0;

    __m512i r = _mm512_dpbusd_epi32(_mm512_loadu_si512(acc), _mm512_loadu_si512(a), _mm512_loadu_si512(b));
    _mm512_storeu_si512(out, r);
    for (int i = 0; i < 16; i++) bad += out[i] != dot4(acc[i], a + 4 * i, b + 4 * i);
    printf("vpdpbusd zmm: out[0]=%d out[15]=%d (scalar %d %d)\n", out[0], out[15], dot4(acc[0], a, b),
           dot4(acc[15], a + 60, b + 60));
    check(bad == 0, "VPDPBUSD zmm (AVX512_VNNI) matches scalar");

    bad = 0;
    __m256i r2 = _mm256_dpbusd_epi32(_mm256_loadu_si256((const __m256i *)acc), _mm256_loadu_si256((const __m256i *)a),
                                     _mm256_loadu_si256((const __m256i *)b));
    _mm256_storeu_si256((__m256i *)out, r2);
    for (int i = 0; i < 8; i++) bad += out[i] != dot4(acc[i], a + 4 * i, b + 4 * i);
    check(bad == 0, "VPDPBUSD ymm (AVX512_VL+VNNI) matches scalar");

    __mmask64 m = _mm512_cmpgt_epi8_mask(_mm512_loadu_si512(b), _mm512_setzero_si512());
    uint64_t want = 0;
    for (int i = 0; i < 64; i++) want |= (uint64_t)(b[i] > 0) << i;
    check((uint64_t)m == want, "VPCMPGTB zmm -> k (AVX512_BW) matches scalar");
    return 0;
}

/* fp32 -> bf16, round to nearest even (finite, normal inputs) */
static uint16_t bf16_rne(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}
static float bf16_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

AVX512BF16 static void check_bf16(void) {
    /* conversion: 1/4, 1/2 (a tie: to the even neighbour), 3/4 and 0 of the bf16 spacing (1/128 in [1, 2)) above
     * 1 + k/128, k = 0..7, both signs */
    const float frac[4] = {0.25f, 0.5f, 0.75f, 0.0f};
    float x[32];
    for (int i = 0; i < 32; i++)
        x[i] = (i % 2 ? -1.0f : 1.0f) * (1.0f + ((float)(i / 4) + frac[i % 4]) / 128.0f);
    uint16_t got[32];
    for (int h = 0; h < 2; h++)
        _mm256_storeu_si256((__m256i *)(got + 16 * h), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + 16 * h)));
    int bad = 0;
    for (int i = 0; i < 32; i++) {
        if (got[i] != bf16_rne(x[i]))
            printf("vcvtneps2bf16: element %d: %a -> %04x, scalar %04x\n", i, (double)x[i], got[i], bf16_rne(x[i]));
        bad += got[i] != bf16_rne(x[i]);
    }
    check(bad == 0, "VCVTNEPS2BF16 (AVX512_BF16) rounds to even");
    /* Not checked: VCVTNE2PS2BF16 (two sources), which moec does not use: Bochs 3.0 fills the upper half of the result
     * from the wrong source elements (cpu/avx/avx512_bf16.cc reads op1 element n instead of n - 16). */

    /* dot product of pairs: small integers and 1/64 steps, so every sum is exact whatever the order */
    uint16_t a[32], b[32];
    float acc[16], out[16];
    for (int i = 0; i < 32; i++) {
        a[i] = bf16_rne((float)(i * 7 % 23) - 11.0f);
        b[i] = bf16_rne((float)(i * 5 % 17) / 64.0f - 0.125f);
    }
    for (int i = 0; i < 16; i++) acc[i] = (float)(i * 3) - 20.0f;
    _mm512_storeu_ps(out, _mm512_dpbf16_ps(_mm512_loadu_ps(acc), (__m512bh)_mm512_loadu_si512(a),
                                           (__m512bh)_mm512_loadu_si512(b)));
    bad = 0;
    for (int i = 0; i < 16; i++)
        bad += out[i] != acc[i] + bf16_f32(a[2 * i]) * bf16_f32(b[2 * i]) +
                             bf16_f32(a[2 * i + 1]) * bf16_f32(b[2 * i + 1]);
    printf("vdpbf16ps zmm: out[0]=%g out[15]=%g\n", out[0], out[15]);
    check(bad == 0, "VDPBF16PS zmm (AVX512_BF16) matches scalar");
}

AVX512 static void vnni_loop(long n) {
    __m512i acc = _mm512_setzero_si512(), x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(-2);
    for (long i = 0; i < n; i++) {
        acc = _mm512_dpbusd_epi32(acc, x, y);
        __asm__ volatile("" : "+v"(acc));
    }
    int32_t out[16];
    _mm512_storeu_si512(out, acc);
    printf("vnni loop: %ld x VPDPBUSD zmm, lane 0 = %d (want %ld)\n", n, out[0], -24L * n);
}

static void scalar_loop(long n) {
    uint64_t x = 1, y = 3;
    long i = n;
    __asm__ volatile("1:\n\t"
                     "add %1, %0\n\t"
                     "xor %0, %1\n\t"
                     "add %1, %0\n\t"
                     "xor %0, %1\n\t"
                     "add %1, %0\n\t"
                     "xor %0, %1\n\t"
                     "add %1, %0\n\t"
                     "xor %0, %1\n\t"
                     "dec %2\n\t"
                     "jnz 1b"
                     : "+r"(x), "+r"(y), "+r"(i));
    printf("scalar loop: %ld iterations (%ld instructions), x=%llu\n", n, 10 * n, (unsigned long long)x);
}

int main(int argc, char **argv) {
    long loop = 0, vnni = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--exit")) return atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--loop")) loop = atol(argv[i + 1]);
        if (!strcmp(argv[i], "--vnni")) vnni = atol(argv[i + 1]);
    }
    unsigned a = 0, b = 0, c = 0, d = 0;
    char brand[49] = {0};
    if ((unsigned)__get_cpuid_max(0x80000000, NULL) >= 0x80000004u) {
        unsigned *p = (unsigned *)brand;
        for (unsigned l = 0; l < 3; l++) __get_cpuid(0x80000002 + l, p + 4 * l, p + 4 * l + 1, p + 4 * l + 2, p + 4 * l + 3);
    }
    printf("cpu: %s\n", brand);
    __get_cpuid(1, &a, &b, &c, &d);
    int osxsave = (c >> 27) & 1;
    check(osxsave, "CPUID.1:ECX.OSXSAVE");
    __get_cpuid_count(7, 0, &a, &b, &c, &d);
    check((b >> 16) & 1, "CPUID.7:EBX.AVX512F");
    check((b >> 30) & 1, "CPUID.7:EBX.AVX512BW");
    check((b >> 31) & 1, "CPUID.7:EBX.AVX512VL");
    check((c >> 11) & 1, "CPUID.7:ECX.AVX512_VNNI");
    __get_cpuid_count(7, 1, &a, &b, &c, &d);
    check((a >> 5) & 1, "CPUID.(7,1):EAX.AVX512_BF16");
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    printf("XCR0 = 0x%llx\n", (unsigned long long)xcr0);
    check((xcr0 & 0xe6) == 0xe6, "XCR0 bits 1,2,5,6,7 (SSE,AVX,k,ZMM) enabled");
    __builtin_cpu_init();
    check(__builtin_cpu_supports("avx512f") != 0, "__builtin_cpu_supports(\"avx512f\")");
    check(__builtin_cpu_supports("avx512bw") != 0, "__builtin_cpu_supports(\"avx512bw\")");
    check(__builtin_cpu_supports("avx512vl") != 0, "__builtin_cpu_supports(\"avx512vl\")");
    check(__builtin_cpu_supports("avx512vnni") != 0, "__builtin_cpu_supports(\"avx512vnni\")");
    check(__builtin_cpu_supports("avx512bf16") != 0, "__builtin_cpu_supports(\"avx512bf16\")");
    if (failures) {
        printf("selftest: AVX-512 not usable here, not executing AVX-512 code\n");
        return 1;
    }
    check_avx512();
    check_bf16();
    if (loop) scalar_loop(loop);
    if (vnni) vnni_loop(vnni);
    printf("selftest: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
