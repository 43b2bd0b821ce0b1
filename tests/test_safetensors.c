/* safetensors reader: values of F32/F16/BF16 tensors written by hand (known bit patterns), lookup, shards +
 * index, directory fallbacks, and hostile headers (each must fail with a message naming the problem, never
 * crash; a few thousand random mutations of a valid file must only ever open cleanly or fail cleanly). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "test.h"
#include "util.h"

static char dir[300];

static void put_file(const char *name, const void *data, size_t n) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) {
        perror(p);
        exit(1);
    }
    fwrite(data, 1, n, f);
    fclose(f);
}

/* A safetensors file from a JSON header and raw data. */
static void put_st(const char *name, const char *hdr, const void *data, size_t n) {
    size_t hl = strlen(hdr);
    uint8_t *b = malloc(8 + hl + n + 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, hdr, hl);
    if (n) memcpy(b + 8 + hl, data, n);
    put_file(name, b, 8 + hl + n);
    free(b);
}

static const char *path_of(const char *name) {
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* Expect st_open_file(name) to fail with a message containing `want`. */
static void expect_bad(const char *name, const char *want) {
    moec_clear_error();
    st_model *m = st_open_file(path_of(name));
    T_CHECK(m == NULL, "%s: opened a bad file", name);
    T_CHECK(strstr(moec_last_error(), want) != NULL, "%s: error '%s' lacks '%s'", name, moec_last_error(), want);
    st_close(m);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/moec_test_st_%d", (int)getpid());
    mkdir(dir, 0755);

    /* ---- values: F32 [2,3], F16 [3], BF16 [2], empty [0,4], scalar [] ----------------------------------- */
    uint8_t data[64];
    size_t o = 0;
    float f32v[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-3f, -65504.0f};
    memcpy(data + o, f32v, sizeof f32v), o += sizeof f32v;                    /* [0, 24) */
    uint16_t f16v[3] = {0x3c00, 0xc000, 0x7bff};                              /* 1, -2, 65504 */
    memcpy(data + o, f16v, sizeof f16v), o += sizeof f16v;                    /* [24, 30) */
    uint16_t bf16v[2] = {0x3f80, 0xc0a0};                                     /* 1, -5 */
    memcpy(data + o, bf16v, sizeof bf16v), o += sizeof bf16v;                 /* [30, 34) */
    float sc = 7.0f;
    memcpy(data + o, &sc, 4), o += 4;                                         /* [34, 38) */
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"b.w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"a.h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[24,30]},"
                      "\"c.bf\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[30,34]},"
                      "\"e.empty\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[38,38]},"
                      "\"s.scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[34,38]}}";
    put_st("good.safetensors", hdr, data, o);
    st_model *m = st_open_file(path_of("good.safetensors"));
    T_CHECK(m != NULL, "open good: %s", moec_last_error());
    if (m) {
        T_CHECK(st_n_tensors(m) == 5, "n tensors %zu", st_n_tensors(m));
        T_CHECK(!strcmp(st_tensor_at(m, 0)->name, "a.h"), "sorted by name");
        const st_tensor *t = st_find(m, "b.w");
        float out[6];
        T_CHECK(t && t->dtype == ST_F32 && t->n_dims == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->n_elems == 6,
                "b.w meta");
        T_CHECK(t && st_read_f32(t, 0, 6, out) == 0 && !memcmp(out, f32v, sizeof f32v), "b.w values");
        T_CHECK(t && st_read_f32(t, 4, 2, out) == 0 && out[0] == 1e-3f && out[1] == -65504.0f, "b.w partial");
        T_CHECK(t && st_read_f32(t, 5, 2, out) != 0 && strstr(moec_last_error(), "outside"), "b.w out of range");
        t = st_find(m, "a.h");
        T_CHECK(t && st_read_f32(t, 0, 3, out) == 0 && out[0] == 1.0f && out[1] == -2.0f && out[2] == 65504.0f,
                "a.h F16 values");
        t = st_find(m, "c.bf");
        T_CHECK(t && st_read_f32(t, 0, 2, out) == 0 && out[0] == 1.0f && out[1] == -5.0f, "c.bf BF16 values");
        t = st_find(m, "s.scalar");
        T_CHECK(t && t->n_dims == 0 && t->n_elems == 1 && st_read_f32(t, 0, 1, out) == 0 && out[0] == 7.0f, "scalar");
        t = st_find(m, "e.empty");
        T_CHECK(t && t->n_elems == 0 && t->nbytes == 0, "empty tensor");
        T_CHECK(st_find(m, "zzz") == NULL && st_find(m, "") == NULL, "absent names");
        st_close(m);
    }

    /* ---- shards + index; directory fallbacks -------------------------------------------------------------- */
    char sub[300];
    snprintf(sub, sizeof sub, "%.200s/sh", dir);
    mkdir(sub, 0755);
    char saved[300];
    snprintf(saved, sizeof saved, "%s", dir);
    snprintf(dir, sizeof dir, "%s", sub);
    put_st("m-1.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", f32v, 4);
    put_st("m-2.safetensors", "{\"y\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", bf16v, 4);
    m = st_open_dir(sub); /* no index, no model.safetensors: every *.safetensors */
    T_CHECK(m && st_n_tensors(m) == 2 && st_find(m, "x") && st_find(m, "y"), "dir without index: %s",
            moec_last_error());
    st_close(m);
    const char *idx = "{\"metadata\":{},\"weight_map\":{\"x\":\"m-1.safetensors\",\"y\":\"m-2.safetensors\"}}";
    put_file("model.safetensors.index.json", idx, strlen(idx));
    m = st_open_dir(sub);
    T_CHECK(m && st_n_tensors(m) == 2, "dir with index: %s", moec_last_error());
    if (m) {
        float v[2];
        T_CHECK(st_read_f32(st_find(m, "y"), 0, 2, v) == 0 && v[1] == -5.0f, "shard 2 value");
        T_CHECK(strstr(st_find(m, "x")->file, "m-1.safetensors") != NULL, "file of x");
    }
    st_close(m);
    idx = "{\"weight_map\":{\"x\":\"m-2.safetensors\",\"y\":\"m-2.safetensors\"}}";
    put_file("model.safetensors.index.json", idx, strlen(idx));
    moec_clear_error();
    m = st_open_dir(sub);
    T_CHECK(!m && strstr(moec_last_error(), "weight_map lists x"), "index lying about x: %s", moec_last_error());
    st_close(m);
    /* a shard holding a tensor the index does not list */
    put_st("m-2.safetensors", "{\"y\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                              "\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]}}", f32v, 8);
    idx = "{\"weight_map\":{\"x\":\"m-1.safetensors\",\"y\":\"m-2.safetensors\"}}";
    put_file("model.safetensors.index.json", idx, strlen(idx));
    moec_clear_error();
    m = st_open_dir(sub);
    T_CHECK(!m && strstr(moec_last_error(), "tensor w of"), "index missing w: %s", moec_last_error());
    st_close(m);
    idx = "{\"weight_map\":{\"x\":\"/etc/passwd\"}}";
    put_file("model.safetensors.index.json", idx, strlen(idx));
    m = st_open_dir(sub);
    T_CHECK(!m && strstr(moec_last_error(), "plain file name"), "absolute shard path: %s", moec_last_error());
    st_close(m);
    /* the same tensor in two shards */
    put_st("m-2.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", f32v, 4);
    idx = "{\"weight_map\":{\"x\":\"m-1.safetensors\"}}";
    put_file("model.safetensors.index.json", idx, strlen(idx));
    unlink(path_of("model.safetensors.index.json"));
    m = st_open_dir(sub);
    T_CHECK(!m && strstr(moec_last_error(), "duplicate tensor x"), "duplicate across shards: %s", moec_last_error());
    st_close(m);
    unlink(path_of("m-1.safetensors"));
    unlink(path_of("m-2.safetensors"));
    m = st_open_dir(sub);
    T_CHECK(!m && strstr(moec_last_error(), "no model.safetensors.index.json"), "empty dir: %s", moec_last_error());
    st_close(m);
    rmdir(sub);
    snprintf(dir, sizeof dir, "%s", saved);

    /* ---- hostile headers --------------------------------------------------------------------------------- */
    put_st("b1", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", data, 16);
    expect_bad("b1", "needs 8");
    put_st("b2", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", data, 12);
    expect_bad("b2", "past the end");
    put_st("b3", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", data, 12);
    expect_bad("b3", "begin 8 > end 4");
    put_st("b4", "{\"t\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4);
    expect_bad("b4", "unknown dtype");
    put_st("b5", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}",
           data, 4);
    expect_bad("b5", "overflow");
    put_st("b6", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", data, 4);
    expect_bad("b6", "shape entry 0");
    put_st("b7", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", data, 4);
    expect_bad("b7", "data_offsets must be");
    put_st("b8", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", data, 8);
    expect_bad("b8", "duplicate tensor t");
    put_st("b9", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", data, 12);
    expect_bad("b9", "overlap");
    put_st("b10", "[1,2,3]", data, 0);
    expect_bad("b10", "not a JSON object");
    put_st("b11", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", data, 4);
    expect_bad("b11", "not valid JSON");
    put_st("b12", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", data, 4);
    expect_bad("b12", "9 dimensions");
    put_st("b13", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", data, 4);
    expect_bad("b13", "not non-negative integers");
    put_st("b14", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1e300,1e301]}}", data, 4);
    expect_bad("b14", "not non-negative integers");
    put_st("b15", "{\"t\":7}", data, 0);
    expect_bad("b15", "not an object");
    uint8_t hl[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    put_file("b16", hl, 8);
    expect_bad("b16", "header length");
    put_file("b17", hl, 3);
    expect_bad("b17", "too short");
    put_st("b18", "{\"t\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", data, 8);
    m = st_open_file(path_of("b18"));
    T_CHECK(m != NULL, "an I64 tensor is valid to open: %s", moec_last_error());
    if (m) {
        float v;
        T_CHECK(st_read_f32(st_find(m, "t"), 0, 1, &v) != 0 && strstr(moec_last_error(), "dtype I64"),
                "reading I64 as float is refused: %s", moec_last_error());
    }
    st_close(m);
    moec_clear_error();
    T_CHECK(st_open_file(path_of("does-not-exist")) == NULL && moec_last_error()[0], "missing file");

    /* ---- random mutations of the good file: open cleanly or fail cleanly (ASan/UBSan watch) --------------- */
    size_t hlen = strlen(hdr), flen = 8 + hlen + o;
    uint8_t *orig = malloc(flen), *mut = malloc(flen);
    for (int i = 0; i < 8; i++) orig[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(orig + 8, hdr, hlen);
    memcpy(orig + 8 + hlen, data, o);
    moec_rng rng;
    moec_rng_seed(&rng, 12345);
    int opened = 0, failed = 0;
    for (int it = 0; it < 1500; it++) {
        memcpy(mut, orig, flen);
        int nmut = 1 + (int)(moec_rng_u64(&rng) % 4);
        for (int k = 0; k < nmut; k++) {
            size_t pos = moec_rng_u64(&rng) % (it % 3 == 0 ? 8 : flen);
            static const char alphabet[] = "0123456789,:[]{}\"-.eE ";
            mut[pos] = (it & 1) ? (uint8_t)moec_rng_u64(&rng) : (uint8_t)alphabet[moec_rng_u64(&rng) % 22];
        }
        size_t len = (it % 7 == 0) ? (size_t)(moec_rng_u64(&rng) % flen) : flen;
        put_file("fuzz", mut, len);
        moec_clear_error();
        st_model *fm = st_open_file(path_of("fuzz"));
        if (fm) {
            opened++;
            for (size_t i = 0; i < st_n_tensors(fm); i++) {
                const st_tensor *t = st_tensor_at(fm, i);
                float buf[8];
                size_t n = t->n_elems < 8 ? t->n_elems : 8;
                /* the data must lie inside the mapping: reading it is watched by ASan */
                if (st_read_f32(t, 0, n, buf) != 0) T_CHECK(moec_last_error()[0], "read failed without a message");
            }
            st_close(fm);
        } else {
            failed++;
            T_CHECK(moec_last_error()[0] != 0, "fuzz %d: failure without a message", it);
        }
    }
    T_CHECK(opened > 0 && failed > 0, "fuzz: %d opened, %d failed", opened, failed);
    printf("fuzz: %d opened, %d rejected\n", opened, failed);
    free(orig);
    free(mut);

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", dir);
    return t_done("test_safetensors");
}
