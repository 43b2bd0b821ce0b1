/* quant: Q8_0/Q4_0 quantizers byte-exact against an independent numpy implementation of ggml's reference rules
 * (tests/quant/ref.py), dequantizers of Q8_0/Q4_0/Q4_K/Q6_K against the same oracle on random blocks, and
 * hand-built K-quant blocks whose values are worked out in the comments. */
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "kern.h"
#include "quant.h"
#include "test.h"
#include "util.h"

static char g_dir[512];
static const char *tpath(const char *n) {
    static char b[2][1024];
    static int k;
    k ^= 1;
    snprintf(b[k], sizeof b[k], "%s/%s", g_dir, n);
    return b[k];
}

static int write_file(const char *p, const void *d, size_t n) {
    FILE *f = fopen(p, "wb");
    if (!f) return -1;
    size_t w = fwrite(d, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}
static void *read_all(const char *p, size_t *n) {
    char *d = NULL;
    if (moec_read_file(p, &d, n) != 0) return NULL;
    return d;
}
static int run_ref(const char *mode, const char *type, const char *in, const char *out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/quant/ref.py %s %s '%s' '%s'", mode, type, in, out);
    return system(cmd);
}

/* Test vectors: random normals at several scales plus edge blocks. n = 32 * nblocks. */
static float *make_inputs(int64_t *n_out) {
    int64_t nb = 64, n = nb * 32;
    float *x = malloc((size_t)n * sizeof(float));
    moec_rng r;
    moec_rng_seed(&r, 7);
    for (int64_t i = 0; i < n; i++) x[i] = moec_rng_normal(&r) * (i < 512 ? 1.0f : i < 1024 ? 1e-3f : 37.0f);
    float *b = x;
    for (int j = 0; j < 32; j++) b[j] = 0.0f;                         /* all zero: d = 0 */
    b += 32;
    for (int j = 0; j < 32; j++) b[j] = (float)(j - 16) * 0.5f;       /* max magnitude negative (-8) */
    b += 32;
    for (int j = 0; j < 32; j++) b[j] = (float)j * 127.0f / 31.0f;    /* exact grid */
    b += 32;
    for (int j = 0; j < 32; j++) b[j] = (j % 2 ? -1.0f : 1.0f) * (float)(j + 1) / 2.0f; /* half-way ties */
    b += 32;
    for (int j = 0; j < 32; j++) b[j] = j == 5 ? -3.0f : (j == 9 ? 3.0f : 0.1f * (float)j); /* equal +-max */
    b += 32;
    for (int j = 0; j < 32; j++) b[j] = 1e-30f * (float)(j + 1);      /* tiny: d underflows in fp16 */
    b += 32;
    for (int j = 0; j < 32; j++) b[j] = 60000.0f * (j % 3 - 1);       /* near the fp16 limit */
    *n_out = n;
    return x;
}

static void check_quantizers(void) {
    int64_t n;
    float *x = make_inputs(&n);
    T_CHECK(write_file(tpath("x.f32"), x, (size_t)n * 4) == 0, "write input");
    const ggml_type types[2] = {GGML_Q8_0, GGML_Q4_0};
    for (int k = 0; k < 2; k++) {
        ggml_type t = types[k];
        size_t rb = ggml_row_bytes(t, n);
        uint8_t *q = malloc(rb);
        T_CHECK(quant_row(t, x, q, n) == 0, "quant_row %s", ggml_type_name(t));
        T_CHECK(run_ref("quant", ggml_type_name(t), tpath("x.f32"), tpath("q.bin")) == 0, "ref.py quant");
        size_t rn = 0;
        uint8_t *ref = read_all(tpath("q.bin"), &rn);
        T_CHECK(ref && rn == rb, "ref size %zu vs %zu", rn, rb);
        if (ref && rn == rb) {
            int bad = 0;
            size_t bs = t == GGML_Q8_0 ? 34 : 18;
            for (size_t i = 0; i < rb; i++)
                if (q[i] != ref[i] && bad++ < 5)
                    T_CHECK(0, "%s byte %zu (block %zu) ours %02x ref %02x", ggml_type_name(t), i, i / bs, q[i], ref[i]);
            T_CHECK(bad == 0, "%s: %d bytes differ from the reference quantizer", ggml_type_name(t), bad);
        }
        /* our dequantizer vs the oracle's, and the quantization error bound: |x - deq| <= d/2 (Q8_0), d (Q4_0) */
        float *dq = malloc((size_t)n * 4);
        T_CHECK(kern_row_to_f32(dq, q, t, n) == 0, "dequant");
        T_CHECK(run_ref("deq", ggml_type_name(t), tpath("q.bin"), tpath("dq.f32")) == 0, "ref.py deq");
        size_t dn = 0;
        float *dref = read_all(tpath("dq.f32"), &dn);
        T_CHECK(dref && dn == (size_t)n * 4, "deq ref size");
        int bad = 0, bad_err = 0;
        for (int64_t i = 0; dref && i < n; i++) {
            if (dq[i] != dref[i]) bad++;
            const uint8_t *blk = q + (size_t)(i / 32) * (t == GGML_Q8_0 ? 34 : 18);
            float d = fabsf(moec_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8)));
            float lim = (t == GGML_Q8_0 ? 0.5f : 1.0f) * d * 1.01f + 1e-3f * fabsf(x[i]) + 1e-30f;
            /* fp16 rounding of d adds up to 2^-11 relative per element */
            if (fabsf(x[i] - dq[i]) > lim + fabsf(x[i]) * 2e-3f && i >= 32 * 7) bad_err++;
        }
        T_CHECK(bad == 0, "%s: %d dequantized values differ from the oracle", ggml_type_name(t), bad);
        T_CHECK(bad_err == 0, "%s: %d values outside the quantization error bound", ggml_type_name(t), bad_err);
        free(dref);
        free(dq);
        free(ref);
        free(q);
    }
    /* known bytes: block 1 (x = (j-16)/2, max -8): Q4_0 d = -8/-8 = 1 -> q = x + 8 = j/2 (+0.5 truncated) */
    uint8_t q4[18 * 64];
    quant_q4_0(x, q4, n);
    T_CHECK(q4[18] == 0x00 && q4[19] == 0x3c, "Q4_0 d = 1.0 (f16 3c00): %02x%02x", q4[19], q4[18]);
    /* element j=3: x=-6.5 -> (int)(-6.5+8.5)=2; element j+16=19: x=1.5 -> (int)(1.5+8.5)=10 */
    T_CHECK(q4[18 + 2 + 3] == (2 | 10 << 4), "Q4_0 nibbles %02x", q4[18 + 2 + 3]);
    uint8_t q8[34 * 64];
    quant_q8_0(x, q8, n);
    /* block 2: x = j*127/31: amax 127 -> d = 1, q = round(x) */
    T_CHECK(q8[68] == 0x00 && q8[69] == 0x3c && (int8_t)q8[68 + 2 + 31] == 127 && (int8_t)q8[68 + 2 + 1] == 4,
            "Q8_0 block 2");
    T_CHECK(quant_row(GGML_Q4_K, x, q8, 256) != 0, "cannot write Q4_K");
    T_CHECK(quant_row(GGML_Q8_0, x, q8, 33) != 0, "row not multiple of 32");
    free(x);
}

/* Random K-quant blocks with bounded scales (d in [2^-10, 2^-4]) vs the oracle. */
static void check_kquants(void) {
    moec_rng r;
    moec_rng_seed(&r, 99);
    const int nb = 24;
    for (int k = 0; k < 3; k++) {
        ggml_type t = k == 2 ? GGML_Q4_1 : k ? GGML_Q6_K : GGML_Q4_K;
        size_t bs = k == 2 ? 20 : k ? 210 : 144;
        int per = k == 2 ? 32 : 256; /* elements per block */
        uint8_t *blk = malloc(bs * nb);
        for (size_t i = 0; i < bs * nb; i++) blk[i] = (uint8_t)moec_rng_u64(&r);
        for (int b = 0; b < nb; b++) {
            uint16_t d = moec_f32_to_f16(ldexpf(1.0f + moec_rng_uniform(&r), -4 - (int)(moec_rng_u64(&r) % 7)));
            uint16_t dm = moec_f32_to_f16(ldexpf(1.0f + moec_rng_uniform(&r), -6));
            uint8_t *p = blk + bs * b;
            if (t == GGML_Q4_K || t == GGML_Q4_1) {
                memcpy(p, &d, 2);
                memcpy(p + 2, &dm, 2);
            } else {
                memcpy(p + 208, &d, 2);
            }
        }
        T_CHECK(write_file(tpath("k.bin"), blk, bs * nb) == 0, "write");
        T_CHECK(run_ref("deq", ggml_type_name(t), tpath("k.bin"), tpath("k.f32")) == 0, "ref.py");
        size_t dn = 0;
        float *ref = read_all(tpath("k.f32"), &dn), *ours = malloc(sizeof(float) * per * nb);
        T_CHECK(ref && dn == sizeof(float) * per * nb, "ref size");
        T_CHECK(kern_row_to_f32(ours, blk, t, per * nb) == 0, "deq");
        int bad = 0;
        for (int i = 0; ref && i < per * nb; i++)
            if (fabsf(ours[i] - ref[i]) > 1e-6f * fabsf(ref[i]) + 1e-7f && bad++ < 5)
                T_CHECK(0, "%s element %d: ours %g ref %g", ggml_type_name(t), i, ours[i], ref[i]);
        T_CHECK(bad == 0, "%s: %d values differ from the oracle", ggml_type_name(t), bad);
        free(ref);
        free(ours);
        free(blk);
    }

    /* Hand-built Q4_K block: d = 1, dmin = 0.5; 6-bit scales sc_j = j+1 and mins m_j = 2j (j = 0..7).
     * Bytes: s[0..3] = sc_0..3 | (high 2 bits of sc_4..7) << 6 ; s[4..7] = m_0..3 | (high bits of m_4..7) << 6;
     * s[8..11] = (sc_4..7 & 15) | (m_4..7 & 15) << 4.  sc_4..7 = 5..8 (high bits 0), m_4..7 = 8,10,12,14 (high 0).
     * qs: every byte 0x21 -> low nibble 1 (even sub-blocks), high nibble 2 (odd sub-blocks).
     * Element in sub-block j: d*sc_j*q - dmin*m_j = (j+1)*q - j  -> j even: (j+1) - j = 1; j odd: 2(j+1) - j = j+2. */
    uint8_t b[144] = {0};
    uint16_t one = 0x3c00, half = 0x3800;
    memcpy(b, &one, 2);
    memcpy(b + 2, &half, 2);
    for (int j = 0; j < 4; j++) b[4 + j] = (uint8_t)(j + 1), b[8 + j] = (uint8_t)(2 * j);
    for (int j = 4; j < 8; j++) b[12 + j - 4] = (uint8_t)(((j + 1) & 15) | ((2 * j) & 15) << 4);
    memset(b + 16, 0x21, 128);
    float y[256];
    quant_deq_q4_k(b, y, 256);
    int ok = 1;
    for (int i = 0; i < 256; i++) {
        int j = i / 32;
        float want = j % 2 == 0 ? 1.0f : (float)(j + 2);
        if (y[i] != want) ok = 0;
    }
    T_CHECK(ok, "hand-built Q4_K block (y[32]=%g want 3, y[255]=%g want 9)", y[32], y[255]);
    /* a scale >= 16 for j >= 4 uses the high bits: sc_5 = 37 = 0b100101 -> s[9] low nibble 5, s[1] bits 6-7 = 2 */
    b[4 + 1] |= 2 << 6;
    b[12 + 1] = (uint8_t)((b[12 + 1] & 0xF0) | 5);
    quant_deq_q4_k(b, y, 256);
    T_CHECK(y[5 * 32] == 2.0f * 37 - 0.5f * 10, "Q4_K 6-bit scale (%g)", y[5 * 32]);

    /* Hand-built Q6_K block: d = 0.5, scales[i] = i - 8 (i = 0..15); ql bytes 0x53 (low 3, high 5), qh bytes 0b11100100
     * (2-bit fields 0,1,2,3 for quarters k = 0..3). Element i: half h = i/128, k = (i%128)/32, l = i%32:
     * low nibble = 3 for k < 2, 5 for k >= 2; high = k; q = low + 16k - 32; scale index = 8h + 2k + l/16. */
    uint8_t c[210];
    memset(c, 0x53, 128);
    memset(c + 128, 0xE4, 64);
    for (int i = 0; i < 16; i++) c[192 + i] = (uint8_t)(int8_t)(i - 8);
    uint16_t dh = 0x3800;
    memcpy(c + 208, &dh, 2);
    quant_deq_q6_k(c, y, 256);
    ok = 1;
    for (int i = 0; i < 256; i++) {
        int h = i / 128, k = (i % 128) / 32, l = i % 32;
        int q = (k < 2 ? 3 : 5) + 16 * k - 32;
        float want = 0.5f * (float)(8 * h + 2 * k + l / 16 - 8) * (float)q;
        if (y[i] != want) ok = 0;
    }
    T_CHECK(ok, "hand-built Q6_K block (y[0]=%g want 116, y[255]=%g)", y[0], y[255]);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/moec-test-quant-%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    if (mkdir(g_dir, 0700) != 0) return 1;
    check_quantizers();
    check_kquants();
    const char *names[] = {"x.f32", "q.bin", "dq.f32", "k.bin", "k.f32"};
    for (int i = 0; i < 5; i++) unlink(tpath(names[i]));
    rmdir(g_dir);
    return t_done("test_quant");
}
