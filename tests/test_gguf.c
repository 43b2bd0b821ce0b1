/* gguf: reader vs an independent Python parser (tests/gguf/dump.py) on the real files, known values of
 * llama-2-tiny-random.gguf and ggml-vocab-llama-spm.gguf, writer round trip of every KV type and several
 * tensor types, and hostile files built byte by byte (each must fail with a clear message, never crash). */
#include <math.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <stdint.h>
#include <unistd.h>

#include "gguf.h"
#include "test.h"
#include "util.h"

/* ---- growable text buffer ---- */
typedef struct {
    char *s;
    size_t n, cap;
} sbuf;
static void sb_addf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_addf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->n + (size_t)k + 1 > b->cap) {
        b->cap = (b->n + (size_t)k + 1) * 2;
        b->s = realloc(b->s, b->cap);
        if (!b->s) abort();
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

static uint32_t crc32_upd(uint32_t c, const void *p, size_t n) {
    const uint8_t *b = p;
    c = ~c;
    for (size_t i = 0; i < n; i++) {
        c ^= b[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

static const char *VT[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
static const size_t VSZ[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static void sb_esc(sbuf *b, const char *s, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c == '\\') sb_addf(b, "\\\\");
        else if (c >= 0x20 && c < 0x7f) sb_addf(b, "%c", c);
        else sb_addf(b, "\\x%02x", c);
    }
}

static void sb_scalar(sbuf *b, int t, const uint8_t *p) {
    switch (t) {
    case GGUF_U8: sb_addf(b, "%u", p[0]); break;
    case GGUF_I8: { int8_t v; memcpy(&v, p, 1); sb_addf(b, "%d", v); } break;
    case GGUF_U16: { uint16_t v; memcpy(&v, p, 2); sb_addf(b, "%u", v); } break;
    case GGUF_I16: { int16_t v; memcpy(&v, p, 2); sb_addf(b, "%d", v); } break;
    case GGUF_U32: { uint32_t v; memcpy(&v, p, 4); sb_addf(b, "%u", v); } break;
    case GGUF_I32: { int32_t v; memcpy(&v, p, 4); sb_addf(b, "%d", v); } break;
    case GGUF_F32: { float v; memcpy(&v, p, 4); sb_addf(b, "%.9g", (double)v); } break;
    case GGUF_BOOL: sb_addf(b, "%s", p[0] ? "true" : "false"); break;
    case GGUF_U64: { uint64_t v; memcpy(&v, p, 8); sb_addf(b, "%llu", (unsigned long long)v); } break;
    case GGUF_I64: { int64_t v; memcpy(&v, p, 8); sb_addf(b, "%lld", (long long)v); } break;
    case GGUF_F64: { double v; memcpy(&v, p, 8); sb_addf(b, "%.9g", v); } break;
    }
}

/* The dump.py format, produced through the public gguf.h API only. */
static char *dump_c(const gguf_file *f) {
    sbuf b = {0};
    uint32_t align = 32;
    sb_addf(&b, "version %u\nn_kv %lld\nn_tensors %lld\n", gguf_version(f), (long long)gguf_n_kv(f),
            (long long)gguf_n_tensors(f));
    if (gguf_find_key(f, "general.alignment") >= 0) gguf_get_u32(f, "general.alignment", &align);
    sb_addf(&b, "alignment %u\n", align);
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        const char *k = gguf_key(f, i);
        int t = (int)gguf_kv_type(f, i);
        if (t == GGUF_ARR) {
            gguf_vtype et;
            uint64_t n;
            const void *d;
            gguf_get_arr(f, k, &et, &n, &d);
            uint32_t crc = 0;
            sbuf first = {0};
            for (uint64_t j = 0; j < n; j++) {
                if (j > 0 && j < 3) sb_addf(&first, ",");
                if (et == GGUF_STR) {
                    gguf_str s;
                    gguf_get_arr_str(f, k, j, &s);
                    crc = crc32_upd(crc, &s.len, 8);
                    crc = crc32_upd(crc, s.s, s.len);
                    if (j < 3) { sb_addf(&first, "\""); sb_esc(&first, s.s, s.len); sb_addf(&first, "\""); }
                } else if (j < 3) {
                    sb_scalar(&first, (int)et, (const uint8_t *)d + j * VSZ[et]);
                }
            }
            if (et != GGUF_STR) crc = crc32_upd(0, d, n * VSZ[et]);
            sb_addf(&b, "kv %s arr %s %llu crc32=%08x first=[%s]\n", k, VT[et], (unsigned long long)n, crc,
                    first.s ? first.s : "");
            free(first.s);
        } else if (t == GGUF_STR) {
            gguf_str s;
            gguf_get_str(f, k, &s);
            sb_addf(&b, "kv %s string \"", k);
            sb_esc(&b, s.s, s.len);
            sb_addf(&b, "\"\n");
        } else {
            /* scalars: re-read through the typed getters */
            uint8_t raw[8] = {0};
            if (t == GGUF_F32) { float v; gguf_get_f32(f, k, &v); memcpy(raw, &v, 4); }
            else if (t == GGUF_F64) { sb_addf(&b, "kv %s f64 ", k); float v; gguf_get_f32(f, k, &v); }
            else if (t == GGUF_BOOL) { bool v; gguf_get_bool(f, k, &v); raw[0] = v; }
            else { int64_t v; gguf_get_i64(f, k, &v); memcpy(raw, &v, 8); }
            if (t == GGUF_F64) { /* the API narrows f64 to f32; the oracle prints the double: skip exactness */
                sb_addf(&b, "?\n");
                continue;
            }
            sb_addf(&b, "kv %s %s ", k, VT[t]);
            if (t == GGUF_U64) { uint64_t v; memcpy(&v, raw, 8); sb_addf(&b, "%llu", (unsigned long long)v); }
            else sb_scalar(&b, t == GGUF_I64 || t == GGUF_U8 || t == GGUF_I8 || t == GGUF_U16 || t == GGUF_I16 ||
                                       t == GGUF_U32 || t == GGUF_I32 ? GGUF_I64 : t, raw);
            sb_addf(&b, "\n");
        }
    }
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        sb_addf(&b, "tensor %s %s ne=", t->name_z, ggml_type_name(t->type));
        for (uint32_t d = 0; d < t->n_dims; d++) sb_addf(&b, d ? ",%lld" : "%lld", (long long)t->ne[d]);
        sb_addf(&b, " offset=%llu nbytes=%zu crc32=%08x\n", (unsigned long long)t->offset, t->nbytes,
                crc32_upd(0, t->data, t->nbytes));
    }
    return b.s;
}

static char *dump_py(const char *path) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/gguf/dump.py '%s'", path);
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    sbuf b = {0};
    char line[65536];
    while (fgets(line, sizeof line, p)) sb_addf(&b, "%s", line);
    int rc = pclose(p);
    if (rc != 0) { free(b.s); return NULL; }
    return b.s;
}

/* Compare the C dump and the Python dump of a file; F64 lines ("?") are compared by key only. */
static void check_oracle(const char *path) {
    gguf_file *f = gguf_open(path);
    T_CHECK(f != NULL, "open %s: %s", path, moec_last_error());
    if (!f) return;
    char *c = dump_c(f), *py = dump_py(path);
    T_CHECK(py != NULL, "dump.py failed on %s", path);
    if (c && py) {
        char *sc = NULL, *sp = NULL;
        char *lc = strtok_r(c, "\n", &sc), *lp = strtok_r(py, "\n", &sp);
        int line = 0, bad = 0;
        while (lc || lp) {
            line++;
            bool same = lc && lp && (strcmp(lc, lp) == 0 ||
                                     (strlen(lc) > 2 && strcmp(lc + strlen(lc) - 2, " ?") == 0 &&
                                      strncmp(lc, lp, strlen(lc) - 1) == 0));
            if (!same && bad++ < 3) T_CHECK(0, "%s line %d: C '%s' vs python '%s'", path, line, lc ? lc : "(end)",
                                            lp ? lp : "(end)");
            lc = lc ? strtok_r(NULL, "\n", &sc) : NULL;
            lp = lp ? strtok_r(NULL, "\n", &sp) : NULL;
        }
        T_CHECK(bad == 0, "%s: %d lines differ from the python oracle", path, bad);
        T_CHECK(line > 3, "%s: dump too short", path);
    }
    free(c);
    free(py);
    gguf_close(f);
}

static void check_real_files(void) {
    const char *p = t_shared("data/models/llama-2-tiny-random.gguf");
    char path[4096];
    snprintf(path, sizeof path, "%s", p);
    check_oracle(path);
    gguf_file *f = gguf_open(path);
    T_CHECK(f, "open: %s", moec_last_error());
    if (f) {
        gguf_str s;
        uint32_t u;
        int64_t i;
        float e;
        T_CHECK(gguf_version(f) == 3, "version");
        T_CHECK(gguf_get_str(f, "general.architecture", &s) == 0 && s.len == 5 && !memcmp(s.s, "llama", 5), "arch");
        T_CHECK(gguf_get_u32(f, "llama.embedding_length", &u) == 0 && u == 8, "n_embd");
        T_CHECK(gguf_get_u32(f, "llama.feed_forward_length", &u) == 0 && u == 32, "n_ff");
        T_CHECK(gguf_get_i64(f, "tokenizer.ggml.bos_token_id", &i) == 0 && i == 1, "bos");
        T_CHECK(gguf_get_i64(f, "tokenizer.ggml.eos_token_id", &i) == 0 && i == 2, "eos");
        T_CHECK(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &e) == 0 && e == 1e-5f, "eps");
        gguf_vtype et;
        uint64_t n;
        const void *d;
        T_CHECK(gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &n, &d) == 0 && et == GGUF_STR && n == 32000, "tokens");
        T_CHECK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 1, &s) == 0 && s.len == 3 && !memcmp(s.s, "<s>", 3),
                "token 1");
        T_CHECK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 32000, &s) != 0, "token index out of range");
        T_CHECK(gguf_get_u32(f, "general.architecture", &u) != 0 && strstr(moec_last_error(), "type string"),
                "wrong type: %s", moec_last_error());
        T_CHECK(gguf_get_u32(f, "no.such.key", &u) != 0 && strstr(moec_last_error(), "not found"), "absent key");
        T_CHECK(gguf_get_u32_or(f, "no.such.key", 7, &u) == 0 && u == 7, "default");
        T_CHECK(gguf_n_tensors(f) == 12, "12 tensors");
        const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
        T_CHECK(t && t->type == GGML_F16 && t->n_dims == 2 && t->ne[0] == 8 && t->ne[1] == 32000 && t->ne[2] == 1 &&
                    t->nbytes == 512000,
                "token_embd");
        t = gguf_find_tensor(f, "blk.0.ffn_down.weight");
        T_CHECK(t && t->type == GGML_F16 && t->ne[0] == 32 && t->ne[1] == 8, "ffn_down");
        t = gguf_find_tensor(f, "output_norm.weight");
        T_CHECK(t && t->type == GGML_F32 && t->n_dims == 1 && t->ne[0] == 8, "output_norm");
        T_CHECK(gguf_find_tensor(f, "nope") == NULL, "absent tensor");
        gguf_close(f);
    }
    snprintf(path, sizeof path, "%s", t_shared("data/llama.cpp-vocab/ggml-vocab-llama-spm.gguf"));
    check_oracle(path);
    f = gguf_open(path);
    T_CHECK(f, "open: %s", moec_last_error());
    if (f) {
        bool b;
        int64_t i;
        gguf_str s;
        T_CHECK(gguf_n_tensors(f) == 0 && gguf_n_kv(f) == 22, "vocab counts");
        T_CHECK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b) == 0 && b, "add_bos");
        T_CHECK(gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &b) == 0 && !b, "add_eos");
        T_CHECK(gguf_get_i64(f, "tokenizer.ggml.unknown_token_id", &i) == 0 && i == 0, "unk");
        T_CHECK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 31999, &s) == 0 && s.len > 0, "last token");
        gguf_close(f);
    }
}

/* ---- writer round trip ---- */
static char g_dir[512];
static const char *tmp_path(const char *name) {
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/%s", g_dir, name);
    return buf;
}

/* gguf_fill_fn for the fill test: rows of 35 floats i*0.25-3 (the f32v pattern); *calls = -1 means fail */
static int fill_rows(void *user, void *dst, int64_t row0, int64_t nrows) {
    int *calls = user;
    if (*calls < 0) return moec_set_error("fill failed on purpose");
    (*calls)++;
    float *d = dst;
    for (int64_t i = 0; i < nrows * 35; i++) d[i] = (float)(row0 * 35 + i) * 0.25f - 3.0f;
    return 0;
}

static void check_roundtrip(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s", tmp_path("rt.gguf"));
    gguf_writer *w = gguf_w_new();
    T_CHECK(w, "writer");
    float f32v[70];
    uint16_t f16v[64], bf16v[64];
    uint8_t q8[2 * 34 * 2], q4[18 * 3], q4k[144], q6k[210 * 2];
    for (int i = 0; i < 70; i++) f32v[i] = (float)i * 0.25f - 3.0f;
    for (int i = 0; i < 64; i++) f16v[i] = moec_f32_to_f16((float)i / 8), bf16v[i] = moec_f32_to_bf16((float)-i);
    for (size_t i = 0; i < sizeof q8; i++) q8[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < sizeof q4; i++) q4[i] = (uint8_t)(i * 13);
    for (size_t i = 0; i < sizeof q4k; i++) q4k[i] = (uint8_t)(i * 3 + 1);
    for (size_t i = 0; i < sizeof q6k; i++) q6k[i] = (uint8_t)(i * 5 + 2);
    int32_t ia[5] = {-1, 2, -3, 4, 2147483647};
    uint64_t ua[2] = {0, UINT64_MAX};
    uint8_t u8a[3] = {0, 128, 255};
    double f64a[2] = {0.5, -1e300};
    const char *strs[4] = {"a", "", "caf\xc3\xa9", "x\0y"};
    uint64_t lens[4] = {1, 0, 5, 3};
    int rc = 0;
    rc |= gguf_w_set_str(w, "general.architecture", "test");
    rc |= gguf_w_set_u32(w, "t.u32", 4000000000u);
    rc |= gguf_w_set_i32(w, "t.i32", -5);
    rc |= gguf_w_set_u64(w, "t.u64", 1ull << 40);
    rc |= gguf_w_set_f32(w, "t.f32", 0.1f);
    rc |= gguf_w_set_bool(w, "t.bool", true);
    rc |= gguf_w_set_str(w, "t.str", "hello");
    rc |= gguf_w_set_u32(w, "t.replaced", 1);
    rc |= gguf_w_set_arr(w, "t.arr_i32", GGUF_I32, 5, ia);
    rc |= gguf_w_set_arr(w, "t.arr_u64", GGUF_U64, 2, ua);
    rc |= gguf_w_set_arr(w, "t.arr_u8", GGUF_U8, 3, u8a);
    rc |= gguf_w_set_arr(w, "t.arr_f64", GGUF_F64, 2, f64a);
    rc |= gguf_w_set_arr(w, "t.arr_empty", GGUF_F32, 0, NULL);
    rc |= gguf_w_set_arr_str(w, "t.arr_str", 4, strs, lens);
    rc |= gguf_w_set_str(w, "t.replaced", "now a string"); /* replaces, keeps position */
    int64_t ne_f32[2] = {35, 2}, ne_v[1] = {64}, ne_q8[3] = {64, 1, 2}, ne_q4[1] = {96}, ne_q4k[1] = {256},
            ne_q6k[4] = {256, 1, 2, 1};
    rc |= gguf_w_add_tensor(w, "f32", GGML_F32, 2, ne_f32, f32v);
    rc |= gguf_w_add_tensor(w, "f16", GGML_F16, 1, ne_v, f16v);
    rc |= gguf_w_add_tensor_copy(w, "bf16", GGML_BF16, 1, ne_v, bf16v);
    rc |= gguf_w_add_tensor(w, "q8", GGML_Q8_0, 3, ne_q8, q8);
    rc |= gguf_w_add_tensor(w, "q4", GGML_Q4_0, 1, ne_q4, q4);
    rc |= gguf_w_add_tensor(w, "q4k", GGML_Q4_K, 1, ne_q4k, q4k);
    rc |= gguf_w_add_tensor(w, "q6k", GGML_Q6_K, 4, ne_q6k, q6k);
    T_CHECK(rc == 0, "writer calls: %s", moec_last_error());
    /* writer rejects bad tensors */
    int64_t ne_bad[1] = {33};
    T_CHECK(gguf_w_add_tensor(w, "f32", GGML_F32, 1, ne_v, f32v) != 0 && strstr(moec_last_error(), "duplicate"),
            "dup tensor");
    T_CHECK(gguf_w_add_tensor(w, "bad", GGML_Q8_0, 1, ne_bad, q8) != 0, "row not multiple of block");
    T_CHECK(gguf_w_add_tensor(w, "bad", (ggml_type)99, 1, ne_v, q8) != 0, "unknown type");
    T_CHECK(gguf_w_add_tensor(w, "bad", GGML_F32, 5, ne_v, q8) != 0, "n_dims 5");
    T_CHECK(gguf_w_add_tensor(w, "0123456789012345678901234567890123456789012345678901234567890123456789", GGML_F32,
                              1, ne_v, f32v) != 0,
            "long name");
    T_CHECK(gguf_w_set_arr(w, "t.bad", GGUF_STR, 1, strs) != 0, "set_arr of strings rejected");
    memset(bf16v, 0, sizeof bf16v); /* the copy must be unaffected */
    T_CHECK(gguf_w_write(w, path) == 0, "write: %s", moec_last_error());
    gguf_w_free(w);
    for (int i = 0; i < 64; i++) bf16v[i] = moec_f32_to_bf16((float)-i);

    check_oracle(path);
    gguf_file *f = gguf_open(path);
    T_CHECK(f, "reopen: %s", moec_last_error());
    if (!f) return;
    uint32_t u;
    int64_t i;
    float x;
    bool b;
    gguf_str s;
    T_CHECK(gguf_n_kv(f) == 14 && gguf_n_tensors(f) == 7, "counts %lld %lld", (long long)gguf_n_kv(f),
            (long long)gguf_n_tensors(f));
    T_CHECK(gguf_get_u32(f, "t.u32", &u) == 0 && u == 4000000000u, "u32");
    T_CHECK(gguf_get_i64(f, "t.u32", &i) == 0 && i == 4000000000ll, "u32 as i64");
    T_CHECK(gguf_get_i64(f, "t.i32", &i) == 0 && i == -5, "i32");
    T_CHECK(gguf_get_u32(f, "t.i32", &u) != 0 && strstr(moec_last_error(), "out of range"), "negative as u32");
    T_CHECK(gguf_get_i64(f, "t.u64", &i) == 0 && i == (1ll << 40), "u64");
    T_CHECK(gguf_get_u32(f, "t.u64", &u) != 0, "u64 too big for u32");
    T_CHECK(gguf_get_f32(f, "t.f32", &x) == 0 && x == 0.1f, "f32");
    T_CHECK(gguf_get_bool(f, "t.bool", &b) == 0 && b, "bool");
    T_CHECK(gguf_get_str(f, "t.str", &s) == 0 && s.len == 5 && !memcmp(s.s, "hello", 5), "str");
    T_CHECK(gguf_get_str(f, "t.replaced", &s) == 0 && s.len == 12, "replaced");
    T_CHECK(gguf_find_key(f, "t.replaced") == 7, "replacement keeps position");
    gguf_vtype et;
    uint64_t n;
    const void *d;
    T_CHECK(gguf_get_arr(f, "t.arr_i32", &et, &n, &d) == 0 && et == GGUF_I32 && n == 5 && !memcmp(d, ia, sizeof ia),
            "arr i32");
    T_CHECK(gguf_get_arr(f, "t.arr_u64", &et, &n, &d) == 0 && et == GGUF_U64 && n == 2 && !memcmp(d, ua, sizeof ua),
            "arr u64");
    T_CHECK(gguf_get_arr(f, "t.arr_f64", &et, &n, &d) == 0 && et == GGUF_F64 && !memcmp(d, f64a, sizeof f64a), "f64");
    T_CHECK(gguf_get_arr(f, "t.arr_empty", &et, &n, &d) == 0 && et == GGUF_F32 && n == 0, "empty arr");
    T_CHECK(gguf_get_arr(f, "t.arr_str", &et, &n, &d) == 0 && et == GGUF_STR && n == 4, "arr str");
    for (int k = 0; k < 4; k++)
        T_CHECK(gguf_get_arr_str(f, "t.arr_str", (uint64_t)k, &s) == 0 && s.len == lens[k] &&
                    !memcmp(s.s, strs[k], lens[k]),
                "str item %d", k);
    struct { const char *name; ggml_type t; uint32_t nd; const int64_t *ne; const void *data; size_t nb; } exp[] = {
        {"f32", GGML_F32, 2, ne_f32, f32v, 280}, {"f16", GGML_F16, 1, ne_v, f16v, 128},
        {"bf16", GGML_BF16, 1, ne_v, bf16v, 128}, {"q8", GGML_Q8_0, 3, ne_q8, q8, 136},
        {"q4", GGML_Q4_0, 1, ne_q4, q4, 54}, {"q4k", GGML_Q4_K, 1, ne_q4k, q4k, 144},
        {"q6k", GGML_Q6_K, 4, ne_q6k, q6k, 420}};
    for (int k = 0; k < 7; k++) {
        const gguf_tensor *t = gguf_tensor_at(f, k);
        bool ok = t && !strcmp(t->name_z, exp[k].name) && t->type == exp[k].t && t->n_dims == exp[k].nd &&
                  t->nbytes == exp[k].nb && !memcmp(t->data, exp[k].data, exp[k].nb) && t->offset % 32 == 0 &&
                  ((uintptr_t)t->data % 32) == 0;
        for (uint32_t dd = 0; ok && dd < 4; dd++) ok = t->ne[dd] == (dd < exp[k].nd ? exp[k].ne[dd] : 1);
        T_CHECK(ok, "tensor %s round trip", exp[k].name);
    }
    /* copy_kv: every KV of this file into a new writer gives an identical KV section */
    gguf_writer *w2 = gguf_w_new();
    rc = 0;
    for (int64_t k = 0; k < gguf_n_kv(f); k++) rc |= gguf_w_copy_kv(w2, f, gguf_key(f, k));
    T_CHECK(gguf_w_copy_kv(w2, f, "absent") != 0, "copy absent key fails");
    rc |= gguf_w_set_u32(w2, "general.alignment", 64);
    rc |= gguf_w_add_tensor(w2, "q8", GGML_Q8_0, 3, ne_q8, q8);
    rc |= gguf_w_add_tensor(w2, "f32", GGML_F32, 2, ne_f32, f32v);
    char path2[1024];
    snprintf(path2, sizeof path2, "%s", tmp_path("rt2.gguf"));
    T_CHECK(rc == 0 && gguf_w_write(w2, path2) == 0, "write copy: %s", moec_last_error());
    gguf_w_free(w2);
    check_oracle(path2);
    gguf_file *f2 = gguf_open(path2);
    T_CHECK(f2, "open copy: %s", moec_last_error());
    if (f2) {
        T_CHECK(gguf_n_kv(f2) == 15, "copied kvs");
        T_CHECK(gguf_get_arr_str(f2, "t.arr_str", 2, &s) == 0 && s.len == 5, "copied string array");
        const gguf_tensor *t = gguf_find_tensor(f2, "f32");
        T_CHECK(t && t->offset == 192 && ((uintptr_t)t->data % 64) == 0 && !memcmp(t->data, f32v, 280),
                "alignment 64 honoured");
        gguf_close(f2);
    }
    gguf_close(f);
    unlink(path);
    unlink(path2);
    /* tensors produced at write time (gguf_w_add_tensor_fill): equal to the referenced version; a failing fill
     * makes the write fail and leaves neither the file nor a temp file */
    {
        gguf_writer *w3 = gguf_w_new();
        int64_t ne3[2] = {35, 2};
        int fill_calls = 0;
        T_CHECK(gguf_w_add_tensor_fill(w3, "f32", GGML_F32, 2, ne3, fill_rows, &fill_calls) == 0, "add fill");
        char path3[1024];
        snprintf(path3, sizeof path3, "%s", tmp_path("rt3.gguf"));
        T_CHECK(gguf_w_write(w3, path3) == 0, "write fill: %s", moec_last_error());
        gguf_w_free(w3);
        gguf_file *f3 = gguf_open(path3);
        const gguf_tensor *t3 = f3 ? gguf_find_tensor(f3, "f32") : NULL;
        T_CHECK(t3 && t3->nbytes == 280 && !memcmp(t3->data, f32v, 280) && fill_calls == 1, "fill round trip");
        gguf_close(f3);
        unlink(path3);
        w3 = gguf_w_new();
        fill_calls = -1; /* fail */
        gguf_w_add_tensor_fill(w3, "f32", GGML_F32, 2, ne3, fill_rows, &fill_calls);
        T_CHECK(gguf_w_write(w3, path3) != 0 && strstr(moec_last_error(), "fill failed") &&
                    strstr(moec_last_error(), "'f32'"),
                "failing fill: %s", moec_last_error());
        T_CHECK(access(path3, F_OK) != 0, "no output after a failed fill");
        gguf_w_free(w3);
        char tmpf[1100];
        snprintf(tmpf, sizeof tmpf, "%s.tmp.%d", path3, (int)getpid());
        T_CHECK(access(tmpf, F_OK) != 0, "no temp file after a failed fill");
    }
    /* unwritable destination: error, no crash */
    w = gguf_w_new();
    T_CHECK(gguf_w_write(w, "/nonexistent-dir/x.gguf") != 0 && strstr(moec_last_error(), "/nonexistent-dir"),
            "write to bad dir");
    gguf_w_free(w);
}

/* ---- hostile files ---- */
typedef struct {
    uint8_t *b;
    size_t n, cap;
} bb;
static void bb_put(bb *x, const void *p, size_t n) {
    if (x->n + n > x->cap) {
        x->cap = (x->n + n) * 2 + 64;
        x->b = realloc(x->b, x->cap);
        if (!x->b) abort();
    }
    memcpy(x->b + x->n, p, n);
    x->n += n;
}
static void bb_u32(bb *x, uint32_t v) { bb_put(x, &v, 4); }
static void bb_u64(bb *x, uint64_t v) { bb_put(x, &v, 8); }
static void bb_str(bb *x, const char *s) { bb_u64(x, strlen(s)); bb_put(x, s, strlen(s)); }
static void bb_hdr(bb *x, uint64_t nt, uint64_t nkv) { bb_put(x, "GGUF", 4); bb_u32(x, 3); bb_u64(x, nt); bb_u64(x, nkv); }
static void bb_pad(bb *x, size_t a) { while (x->n % a) { uint8_t z = 0; bb_put(x, &z, 1); } }
static void bb_tinfo(bb *x, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    bb_str(x, name);
    bb_u32(x, nd);
    for (uint32_t i = 0; i < nd; i++) bb_u64(x, ne[i]);
    bb_u32(x, type);
    bb_u64(x, off);
}

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t w = n ? fwrite(p, 1, n, fp) : 0;
    fclose(fp);
    return w == n ? 0 : -1;
}

/* The file must be rejected with a message naming it and containing `want`. */
static void expect_bad(const char *what, bb *x, const char *want) {
    const char *path = tmp_path("bad.gguf");
    T_CHECK(write_bytes(path, x->b, x->n) == 0, "write fixture");
    gguf_file *f = gguf_open(path);
    const char *e = moec_last_error();
    T_CHECK(f == NULL, "%s: hostile file accepted", what);
    T_CHECK(f != NULL || (strstr(e, path) == e && strstr(e, want)), "%s: message '%s' lacks '%s'", what, e, want);
    gguf_close(f);
    free(x->b);
    memset(x, 0, sizeof *x);
}

/* A small valid file: 2 KVs, 2 tensors. */
static void good_file(bb *x) {
    uint64_t ne0[2] = {32, 2}, ne1[1] = {8};
    bb_hdr(x, 2, 2);
    bb_str(x, "general.architecture"); bb_u32(x, GGUF_STR); bb_str(x, "llama");
    bb_str(x, "a.arr"); bb_u32(x, GGUF_ARR); bb_u32(x, GGUF_STR); bb_u64(x, 2); bb_str(x, "x"); bb_str(x, "yz");
    bb_tinfo(x, "w", 2, ne0, GGML_Q8_0, 0);
    bb_tinfo(x, "n", 1, ne1, GGML_F32, 96);
    bb_pad(x, 32);
    for (int i = 0; i < 96 + 32; i++) { uint8_t v = (uint8_t)i; bb_put(x, &v, 1); }
}

static void check_hostile(void) {
    bb x = {0};
    const char *path = tmp_path("bad.gguf");
    good_file(&x);
    T_CHECK(write_bytes(path, x.b, x.n) == 0, "write");
    gguf_file *f = gguf_open(path);
    T_CHECK(f && gguf_n_tensors(f) == 2 && gguf_find_tensor(f, "n")->nbytes == 32, "good fixture opens: %s",
            moec_last_error());
    gguf_close(f);
    /* truncated at every length up to the end of the last tensor's data */
    int accepted = 0;
    for (size_t len = 0; len < x.n; len++) {
        T_CHECK(write_bytes(path, x.b, len) == 0, "write");
        f = gguf_open(path);
        if (f) accepted++;
        else if (!strstr(moec_last_error(), path)) T_CHECK(0, "truncated %zu: message lacks path: %s", len, moec_last_error());
        gguf_close(f);
    }
    T_CHECK(accepted == 0, "%d truncated files accepted", accepted);
    /* random byte corruption: must never crash; an accepted file must still be self-consistent */
    moec_rng rng;
    moec_rng_seed(&rng, 42);
    uint8_t *mut = malloc(x.n);
    for (int it = 0; it < 1500; it++) {
        memcpy(mut, x.b, x.n);
        int nflip = 1 + (int)(moec_rng_u64(&rng) % 3);
        for (int k = 0; k < nflip; k++) {
            size_t pos = (size_t)(moec_rng_u64(&rng) % x.n);
            uint64_t r = moec_rng_u64(&rng);
            mut[pos] = (r & 256) ? (uint8_t)r : (uint8_t)(mut[pos] ^ (1u << (r % 8)));
        }
        write_bytes(path, mut, x.n);
        f = gguf_open(path);
        if (f) {
            for (int64_t t = 0; t < gguf_n_tensors(f); t++) {
                const gguf_tensor *tt = gguf_tensor_at(f, t);
                volatile uint8_t sink = 0;
                for (size_t q = 0; q < tt->nbytes; q++) sink ^= ((const uint8_t *)tt->data)[q];
                (void)sink;
            }
            for (int64_t k = 0; k < gguf_n_kv(f); k++) (void)gguf_find_key(f, gguf_key(f, k));
            gguf_str s;
            for (uint64_t q = 0; q < 4; q++) (void)gguf_get_arr_str(f, "a.arr", q, &s);
        } else {
            T_CHECK(moec_last_error()[0] != 0, "corrupt file: empty message");
        }
        gguf_close(f);
    }
    free(mut);
    free(x.b);
    memset(&x, 0, sizeof x);

    bb_put(&x, "GGML", 4); bb_u32(&x, 3); bb_u64(&x, 0); bb_u64(&x, 0);
    expect_bad("wrong magic", &x, "not a GGUF file");
    bb_put(&x, "GGUF", 4); bb_u32(&x, 1); bb_u64(&x, 0); bb_u64(&x, 0);
    expect_bad("version 1", &x, "unsupported GGUF version 1");
    bb_put(&x, "GGUF", 4); bb_u32(&x, 0x03000000u); bb_u64(&x, 0); bb_u64(&x, 0);
    expect_bad("big endian", &x, "big-endian");
    bb_hdr(&x, 0, 1ull << 62);
    expect_bad("huge kv count", &x, "KV count");
    bb_hdr(&x, UINT64_MAX, 0);
    expect_bad("huge tensor count", &x, "tensor count");
    bb_hdr(&x, 0, 1); bb_u64(&x, UINT64_MAX); bb_put(&x, "abcdefghijklmnop", 16);
    expect_bad("huge key length", &x, "key length");
    bb_hdr(&x, 0, 1); bb_u64(&x, 70000);
    for (int i = 0; i < 70000; i++) bb_put(&x, "k", 1);
    bb_u32(&x, GGUF_U8); bb_put(&x, "\0", 1);
    expect_bad("key longer than 65535", &x, "exceeds the limit");
    bb_hdr(&x, 0, 1); bb_str(&x, "k"); bb_u32(&x, GGUF_STR); bb_u64(&x, 1ull << 60); bb_put(&x, "abcdef", 6);
    expect_bad("huge string", &x, "runs past end of file");
    bb_hdr(&x, 0, 1); bb_str(&x, "k"); bb_u32(&x, GGUF_ARR); bb_u32(&x, GGUF_U32); bb_u64(&x, (1ull << 62) + 1);
    bb_u64(&x, 0);
    expect_bad("huge array (count*4 overflows)", &x, "runs past end of file");
    bb_hdr(&x, 0, 1); bb_str(&x, "k"); bb_u32(&x, GGUF_ARR); bb_u32(&x, GGUF_STR); bb_u64(&x, UINT64_MAX);
    bb_u64(&x, 0);
    expect_bad("huge string array", &x, "exceeds the file size");
    bb_hdr(&x, 0, 1); bb_str(&x, "k"); bb_u32(&x, GGUF_ARR); bb_u32(&x, GGUF_STR); bb_u64(&x, 2); bb_str(&x, "ok");
    bb_u64(&x, 1000); bb_put(&x, "short", 5);
    expect_bad("string array item past end", &x, "string array item");
    bb_hdr(&x, 0, 1); bb_str(&x, "k"); bb_u32(&x, GGUF_ARR); bb_u32(&x, GGUF_ARR); bb_u64(&x, 1);
    bb_u32(&x, GGUF_U8); bb_u64(&x, 0);
    expect_bad("nested array", &x, "nested arrays");
    bb_hdr(&x, 0, 1); bb_str(&x, "k"); bb_u32(&x, 13); bb_u64(&x, 0);
    expect_bad("unknown value type", &x, "unknown value type 13");
    bb_hdr(&x, 0, 1); bb_str(&x, "k"); bb_u32(&x, GGUF_ARR); bb_u32(&x, 77); bb_u64(&x, 0);
    expect_bad("unknown array type", &x, "unknown array element type 77");
    bb_hdr(&x, 0, 2); bb_str(&x, "dup.key"); bb_u32(&x, GGUF_U8); bb_put(&x, "\1", 1);
    bb_str(&x, "dup.key"); bb_u32(&x, GGUF_U32); bb_u32(&x, 5);
    expect_bad("duplicate key", &x, "duplicate key 'dup.key'");
    bb_hdr(&x, 0, 1); bb_u64(&x, 0); bb_u32(&x, GGUF_U8); bb_put(&x, "\1", 1);
    expect_bad("empty key", &x, "empty key");
    bb_hdr(&x, 0, 1); bb_u64(&x, 3); bb_put(&x, "a\0b", 3); bb_u32(&x, GGUF_U8); bb_put(&x, "\1", 1);
    expect_bad("NUL in key", &x, "NUL");

    uint64_t ne[4] = {32, 2, 1, 1};
    const char *names65 = "n2345678901234567890123456789012345678901234567890123456789012345";
    bb_hdr(&x, 1, 0); bb_tinfo(&x, names65, 1, ne, 0, 0); bb_pad(&x, 32); bb_put(&x, g_dir, 128);
    expect_bad("tensor name 65 bytes", &x, "exceeds the limit of 64");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "", 1, ne, 0, 0); bb_pad(&x, 32); bb_put(&x, g_dir, 128);
    expect_bad("empty tensor name", &x, "empty name");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "t", 0, ne, 0, 0); bb_pad(&x, 32); bb_put(&x, g_dir, 128);
    expect_bad("n_dims 0", &x, "0 dimensions");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "t", 5, (uint64_t[5]){1, 1, 1, 1, 1}, 0, 0); bb_pad(&x, 32);
    expect_bad("n_dims 5", &x, "5 dimensions");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "t", 2, (uint64_t[2]){32, 0}, 0, 0); bb_pad(&x, 32);
    expect_bad("ne 0", &x, "size 0");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "t", 3, (uint64_t[3]){1ull << 32, 1ull << 32, 2}, 0, 0); bb_pad(&x, 32);
    expect_bad("ne product overflow", &x, "overflows");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "t", 2, (uint64_t[2]){1ull << 62, 3}, 0, 0); bb_pad(&x, 32);
    expect_bad("ne product > int64", &x, "overflows");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "t", 1, (uint64_t[1]){1ull << 62}, GGML_F32, 0); bb_pad(&x, 32);
    expect_bad("nbytes overflows size_t", &x, "overflows");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "t", 2, ne, 99, 0); bb_pad(&x, 32);
    expect_bad("unknown ggml type", &x, "unknown type 99");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "t", 2, ne, 4, 0); bb_pad(&x, 32);
    expect_bad("removed ggml type 4", &x, "unknown type 4");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "t", 2, (uint64_t[2]){33, 1}, GGML_Q8_0, 0); bb_pad(&x, 32);
    expect_bad("row not multiple of block", &x, "not a multiple of the Q8_0 block size 32");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "t", 1, ne, GGML_F32, 8); bb_pad(&x, 32); bb_put(&x, g_dir, 256);
    expect_bad("misaligned offset", &x, "not a multiple of the alignment 32");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "blk.0.attn_q.weight", 2, ne, GGML_F32, 0); bb_pad(&x, 32); bb_put(&x, g_dir, 255);
    expect_bad("data past end by 1 byte", &x, "tensor 'blk.0.attn_q.weight' data ends past end of file");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "t", 1, ne, GGML_F32, UINT64_MAX - 31); bb_pad(&x, 32); bb_put(&x, g_dir, 256);
    expect_bad("offset near 2^64", &x, "data ends past end of file");
    bb_hdr(&x, 1, 0); bb_tinfo(&x, "t", 1, ne, GGML_F32, 0);
    expect_bad("no data section", &x, "data ends past end of file");
    bb_hdr(&x, 2, 0); bb_tinfo(&x, "t", 1, ne, GGML_F32, 0); bb_tinfo(&x, "t", 1, ne, GGML_F32, 128); bb_pad(&x, 32);
    bb_put(&x, g_dir, 256);
    expect_bad("duplicate tensor", &x, "duplicate tensor name 't'");
    uint32_t bad_align[] = {0, 4, 24, 1u << 31};
    for (int k = 0; k < 4; k++) {
        bb_hdr(&x, 0, 1); bb_str(&x, "general.alignment"); bb_u32(&x, GGUF_U32); bb_u32(&x, bad_align[k]);
        expect_bad("bad alignment", &x, "general.alignment");
    }
    bb_hdr(&x, 0, 1); bb_str(&x, "general.alignment"); bb_u32(&x, GGUF_STR); bb_str(&x, "32");
    expect_bad("alignment as string", &x, "general.alignment has type string");
    /* a good alignment of 64 is honoured */
    bb_hdr(&x, 1, 1); bb_str(&x, "general.alignment"); bb_u32(&x, GGUF_U32); bb_u32(&x, 64);
    bb_tinfo(&x, "t", 1, ne, GGML_F32, 0); bb_pad(&x, 64);
    size_t ds = x.n;
    float vals[32];
    for (int i = 0; i < 32; i++) vals[i] = (float)i;
    bb_put(&x, vals, sizeof vals);
    T_CHECK(write_bytes(path, x.b, x.n) == 0, "write");
    f = gguf_open(path);
    T_CHECK(f && gguf_tensor_at(f, 0)->data == (const uint8_t *)gguf_tensor_at(f, 0)->data &&
                memcmp(gguf_tensor_at(f, 0)->data, vals, sizeof vals) == 0 && ds % 64 == 0,
            "alignment 64 read: %s", moec_last_error());
    gguf_close(f);
    free(x.b);
    memset(&x, 0, sizeof x);
    /* not a regular file / missing file / empty file */
    T_CHECK(gguf_open(g_dir) == NULL && strstr(moec_last_error(), g_dir), "directory");
    T_CHECK(gguf_open(tmp_path("missing.gguf")) == NULL && strstr(moec_last_error(), "missing.gguf"), "missing");
    expect_bad("empty file", &x, "not a GGUF file");
    unlink(path);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/moec-test-gguf-%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    if (mkdir(g_dir, 0700) != 0) { perror(g_dir); return 1; }
    check_real_files();
    check_roundtrip();
    check_hostile();
    rmdir(g_dir);
    return t_done("test_gguf");
}
