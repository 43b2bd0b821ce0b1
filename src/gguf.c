/* gguf: GGUF v3 reader and writer. See gguf.h. */
#include "gguf.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int ggml_type_block(ggml_type t, size_t *block_elems, size_t *block_bytes) {
    size_t e = 0, b = 0;
    switch (t) {
    case GGML_F32: e = 1, b = 4; break;
    case GGML_F16: e = 1, b = 2; break;
    case GGML_BF16: e = 1, b = 2; break;
    case GGML_Q4_0: e = 32, b = 18; break;
    case GGML_Q4_1: e = 32, b = 20; break;
    case GGML_Q8_0: e = 32, b = 34; break;
    case GGML_Q4_K: e = 256, b = 144; break;
    case GGML_Q6_K: e = 256, b = 210; break;
    default: return moec_set_error("unknown ggml tensor type %d", (int)t);
    }
    if (block_elems) *block_elems = e;
    if (block_bytes) *block_bytes = b;
    return 0;
}

const char *ggml_type_name(ggml_type t) {
    switch (t) {
    case GGML_F32: return "F32";
    case GGML_F16: return "F16";
    case GGML_BF16: return "BF16";
    case GGML_Q4_0: return "Q4_0";
    case GGML_Q4_1: return "Q4_1";
    case GGML_Q8_0: return "Q8_0";
    case GGML_Q4_K: return "Q4_K";
    case GGML_Q6_K: return "Q6_K";
    }
    return "?";
}

size_t ggml_row_bytes(ggml_type t, int64_t n) {
    size_t be = 1, bb = 0, r;
    if (ggml_type_block(t, &be, &bb) != 0) return 0;
    if (n < 0 || (size_t)n % be != 0) {
        moec_set_error("row of %lld elements is not a multiple of the %s block size %zu", (long long)n,
                       ggml_type_name(t), be);
        return 0;
    }
    if (!moec_mul_ok((size_t)n / be, bb, &r)) {
        moec_set_error("row size overflow");
        return 0;
    }
    return r;
}

/* ============================================================================================== */
/* Reader                                                                                         */
/* ============================================================================================== */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

#define GGUF_MAX_KEY 65535u
#define GGUF_MAX_NAME 64u
#define GGUF_DEFAULT_ALIGN 32u
#define GGUF_MAX_ALIGN (1u << 30)

typedef struct {
    char *key;                 /* NUL-terminated copy */
    gguf_vtype type;
    const uint8_t *val;        /* raw value bytes in the map (after the type field) */
    size_t val_len;
    gguf_str str;              /* GGUF_STR */
    gguf_vtype arr_type;       /* GGUF_ARR */
    uint64_t arr_n;
    const uint8_t *arr_data;
    gguf_str *arr_strs;        /* string arrays: every item, validated */
} gguf_kv;

/* Open-addressing hash of names -> index (+1; 0 = empty). */
typedef struct {
    int64_t *slot;
    size_t cap; /* power of two */
} name_hash;

struct gguf_file {
    char *path;
    moec_mmap map;
    uint32_t version;
    int64_t n_kv;
    gguf_kv *kv;
    int64_t n_tensors;
    gguf_tensor *tensors;
    size_t alignment;
    size_t data_start;
    name_hash kv_hash, t_hash;
};

static uint64_t name_hash_fn(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int name_hash_init(name_hash *h, int64_t n) {
    size_t cap = 16;
    while (cap < (size_t)n * 2 + 1) cap *= 2;
    h->slot = moec_calloc(cap, sizeof(int64_t));
    h->cap = cap;
    return h->slot ? 0 : -1;
}

static const char *kv_name(const void *items, int64_t i) { return ((const gguf_kv *)items)[i].key; }
static const char *t_name(const void *items, int64_t i) { return ((const gguf_tensor *)items)[i].name_z; }

/* Find `name` (length n, no NULs) in h; returns its index or -1. If insert >= 0 and absent, inserts it. */
static int64_t name_hash_find(name_hash *h, const void *items, const char *(*get)(const void *, int64_t),
                              const char *name, size_t n, int64_t insert) {
    if (!h->slot) return -1;
    size_t mask = h->cap - 1, i = (size_t)name_hash_fn(name, n) & mask;
    for (;;) {
        int64_t s = h->slot[i];
        if (s == 0) {
            if (insert >= 0) h->slot[i] = insert + 1;
            return -1;
        }
        const char *k = get(items, s - 1);
        if (strlen(k) == n && memcmp(k, name, n) == 0) return s - 1;
        i = (i + 1) & mask;
    }
}

/* Bounded cursor over the mapped file. Every read checks the remaining bytes first. */
typedef struct {
    const uint8_t *base;
    size_t size, pos;
    const char *path;
    char ctx[128]; /* what is being read ("key 'x'", "tensor 'y'"), for error messages */
} rd;

static int rd_need(rd *r, size_t n, const char *what) {
    if (n > r->size - r->pos)
        return moec_set_error("%s: %s%struncated file: %s needs %zu bytes at offset %zu, only %zu left", r->path,
                              r->ctx, r->ctx[0] ? ": " : "", what, n, r->pos, r->size - r->pos);
    return 0;
}
static int rd_u32(rd *r, uint32_t *v, const char *what) {
    if (rd_need(r, 4, what)) return -1;
    memcpy(v, r->base + r->pos, 4);
    r->pos += 4;
    return 0;
}
static int rd_u64(rd *r, uint64_t *v, const char *what) {
    if (rd_need(r, 8, what)) return -1;
    memcpy(v, r->base + r->pos, 8);
    r->pos += 8;
    return 0;
}
/* A string: u64 length + bytes. max_len bounds the length (0 = only by the file). */
static int rd_str(rd *r, gguf_str *s, uint64_t max_len, const char *what) {
    uint64_t n;
    if (rd_u64(r, &n, what)) return -1;
    if (max_len && n > max_len)
        return moec_set_error("%s: %s%s%s length %llu exceeds the limit of %llu bytes (offset %zu)", r->path, r->ctx,
                              r->ctx[0] ? ": " : "", what, (unsigned long long)n, (unsigned long long)max_len,
                              r->pos - 8);
    if (n > r->size - r->pos)
        return moec_set_error("%s: %s%s%s of %llu bytes runs past end of file (offset %zu)", r->path, r->ctx,
                              r->ctx[0] ? ": " : "", what, (unsigned long long)n, r->pos);
    s->s = (const char *)r->base + r->pos;
    s->len = n;
    r->pos += (size_t)n;
    return 0;
}

static size_t vtype_size(uint32_t t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

static const char *vtype_name(uint32_t t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
                                  "u64", "i64", "f64"};
    return t < 13 ? names[t] : "unknown";
}

/* Value of kv (type already read) at the cursor. */
static int rd_value(rd *r, gguf_kv *kv) {
    size_t start = r->pos;
    uint32_t t = kv->type;
    if (t == GGUF_STR) {
        if (rd_str(r, &kv->str, 0, "string value")) return -1;
    } else if (t == GGUF_ARR) {
        uint32_t et;
        uint64_t n;
        if (rd_u32(r, &et, "array element type") || rd_u64(r, &n, "array count")) return -1;
        kv->arr_type = (gguf_vtype)et;
        kv->arr_n = n;
        kv->arr_data = r->base + r->pos;
        if (et == GGUF_ARR) return moec_set_error("%s: %s: nested arrays are not supported", r->path, r->ctx);
        if (et == GGUF_STR) {
            if (n > (r->size - r->pos) / 8)
                return moec_set_error("%s: %s: string array count %llu exceeds the file size", r->path, r->ctx,
                                      (unsigned long long)n);
            kv->arr_strs = moec_malloc((size_t)(n ? n : 1) * sizeof(gguf_str));
            if (!kv->arr_strs) return -1;
            for (uint64_t i = 0; i < n; i++)
                if (rd_str(r, &kv->arr_strs[i], 0, "string array item")) return -1;
        } else {
            size_t es = vtype_size(et);
            if (es == 0) return moec_set_error("%s: %s: unknown array element type %u", r->path, r->ctx, et);
            if (n > (r->size - r->pos) / es)
                return moec_set_error("%s: %s: array of %llu %s items runs past end of file", r->path, r->ctx,
                                      (unsigned long long)n, vtype_name(et));
            r->pos += (size_t)n * es;
        }
    } else {
        size_t es = vtype_size(t);
        if (es == 0) return moec_set_error("%s: %s: unknown value type %u", r->path, r->ctx, t);
        if (rd_need(r, es, vtype_name(t))) return -1;
        r->pos += es;
    }
    kv->val = r->base + start;
    kv->val_len = r->pos - start;
    return 0;
}

/* Integer value of a scalar KV as a signed/unsigned pair. Returns 0 if it is an integer type. */
static int kv_int(const gguf_kv *kv, int64_t *sv, uint64_t *uv, bool *is_signed) {
    const uint8_t *p = kv->val;
    switch (kv->type) {
    case GGUF_U8: *uv = p[0]; *is_signed = false; return 0;
    case GGUF_BOOL: *uv = p[0]; *is_signed = false; return 0;
    case GGUF_I8: { int8_t v; memcpy(&v, p, 1); *sv = v; *is_signed = true; return 0; }
    case GGUF_U16: { uint16_t v; memcpy(&v, p, 2); *uv = v; *is_signed = false; return 0; }
    case GGUF_I16: { int16_t v; memcpy(&v, p, 2); *sv = v; *is_signed = true; return 0; }
    case GGUF_U32: { uint32_t v; memcpy(&v, p, 4); *uv = v; *is_signed = false; return 0; }
    case GGUF_I32: { int32_t v; memcpy(&v, p, 4); *sv = v; *is_signed = true; return 0; }
    case GGUF_U64: { uint64_t v; memcpy(&v, p, 8); *uv = v; *is_signed = false; return 0; }
    case GGUF_I64: { int64_t v; memcpy(&v, p, 8); *sv = v; *is_signed = true; return 0; }
    default: return -1;
    }
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    if (f->kv)
        for (int64_t i = 0; i < f->n_kv; i++) {
            moec_free(f->kv[i].key);
            moec_free(f->kv[i].arr_strs);
        }
    moec_free(f->kv);
    moec_free(f->tensors);
    moec_free(f->kv_hash.slot);
    moec_free(f->t_hash.slot);
    moec_mmap_close(&f->map);
    moec_free(f->path);
    moec_free(f);
}

static int parse_kvs(gguf_file *f, rd *r) {
    for (int64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        gguf_str k;
        uint32_t t;
        snprintf(r->ctx, sizeof r->ctx, "KV #%lld", (long long)i);
        if (rd_str(r, &k, GGUF_MAX_KEY, "key")) return -1;
        if (k.len == 0) return moec_set_error("%s: KV #%lld has an empty key", f->path, (long long)i);
        if (memchr(k.s, 0, (size_t)k.len))
            return moec_set_error("%s: KV #%lld key contains a NUL byte", f->path, (long long)i);
        kv->key = moec_malloc((size_t)k.len + 1);
        if (!kv->key) return -1;
        memcpy(kv->key, k.s, (size_t)k.len);
        kv->key[k.len] = 0;
        if (name_hash_find(&f->kv_hash, f->kv, kv_name, kv->key, (size_t)k.len, i) >= 0)
            return moec_set_error("%s: duplicate key '%s'", f->path, kv->key);
        snprintf(r->ctx, sizeof r->ctx, "key '%.100s'", kv->key);
        if (rd_u32(r, &t, "value type")) return -1;
        kv->type = (gguf_vtype)t;
        if (rd_value(r, kv)) return -1;
    }
    return 0;
}

static int parse_tensors(gguf_file *f, rd *r) {
    for (int64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        uint32_t nd, ty;
        snprintf(r->ctx, sizeof r->ctx, "tensor #%lld", (long long)i);
        if (rd_str(r, &t->name, GGUF_MAX_NAME, "tensor name")) return -1;
        CHECK(t->name.len > 0, "%s: tensor #%lld has an empty name", f->path, (long long)i);
        CHECK(!memchr(t->name.s, 0, (size_t)t->name.len), "%s: tensor #%lld name contains a NUL byte", f->path,
              (long long)i);
        memcpy(t->name_z, t->name.s, (size_t)t->name.len);
        t->name_z[t->name.len] = 0;
        CHECK(name_hash_find(&f->t_hash, f->tensors, t_name, t->name_z, (size_t)t->name.len, i) < 0,
              "%s: duplicate tensor name '%s'", f->path, t->name_z);
        snprintf(r->ctx, sizeof r->ctx, "tensor '%s'", t->name_z);
        if (rd_u32(r, &nd, "tensor n_dims")) return -1;
        CHECK(nd >= 1 && nd <= 4, "%s: tensor '%s' has %u dimensions (1..4 supported)", f->path, t->name_z, nd);
        t->n_dims = nd;
        uint64_t total = 1;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v;
            if (rd_u64(r, &v, "tensor dimension")) return -1;
            CHECK(v >= 1, "%s: tensor '%s' has dimension %u of size 0", f->path, t->name_z, d);
            CHECK(v <= (uint64_t)INT64_MAX / total, "%s: tensor '%s' element count overflows", f->path, t->name_z);
            total *= v;
            t->ne[d] = (int64_t)v;
        }
        if (rd_u32(r, &ty, "tensor type")) return -1;
        size_t be, bb;
        CHECK(ggml_type_block((ggml_type)ty, &be, &bb) == 0, "%s: tensor '%s' has unknown type %u", f->path,
              t->name_z, ty);
        t->type = (ggml_type)ty;
        CHECK((uint64_t)t->ne[0] % be == 0, "%s: tensor '%s' row length %lld is not a multiple of the %s block size %zu",
              f->path, t->name_z, (long long)t->ne[0], ggml_type_name(t->type), be);
        /* nbytes = total / be * bb, overflow-checked */
        uint64_t nblk = total / be;
        CHECK(nblk <= SIZE_MAX / bb, "%s: tensor '%s' byte size overflows", f->path, t->name_z);
        t->nbytes = (size_t)nblk * bb;
        if (rd_u64(r, &t->offset, "tensor offset")) return -1;
    }
    return 0;
fail:
    return -1;
}

gguf_file *gguf_open(const char *path) { return gguf_open_copy(path, false); }

gguf_file *gguf_open_copy(const char *path, bool copy) {
    gguf_file *f = moec_calloc(1, sizeof *f);
    if (!f) return NULL;
    f->path = moec_strdup(path);
    TRY_PTR(f->path);
    TRY(copy ? moec_mmap_open_copy(&f->map, path) : moec_mmap_open(&f->map, path));
    rd r = {f->map.data, f->map.size, 0, f->path, ""};
    uint64_t nt, nkv;
    CHECK(f->map.size >= 4, "%s: not a GGUF file (%zu bytes)", path, f->map.size);
    CHECK(memcmp(f->map.data, "GGUF", 4) == 0, "%s: not a GGUF file (bad magic %02x %02x %02x %02x)", path,
          f->map.data[0], f->map.data[1], f->map.data[2], f->map.data[3]);
    r.pos = 4;
    TRY(rd_u32(&r, &f->version, "version"));
    CHECK(f->version != 0x03000000u && f->version != 0x02000000u, "%s: big-endian GGUF files are not supported",
          path);
    CHECK(f->version == 2 || f->version == 3, "%s: unsupported GGUF version %u (2 or 3 expected)", path, f->version);
    TRY(rd_u64(&r, &nt, "tensor count"));
    TRY(rd_u64(&r, &nkv, "KV count"));
    /* Every KV takes at least 13 bytes, every tensor info at least 33: bound the counts by the file. */
    size_t left = f->map.size - r.pos;
    CHECK(nkv <= left / 13, "%s: KV count %llu is impossible for a file of %zu bytes", path,
          (unsigned long long)nkv, f->map.size);
    CHECK(nt <= left / 33, "%s: tensor count %llu is impossible for a file of %zu bytes", path,
          (unsigned long long)nt, f->map.size);
    f->n_kv = (int64_t)nkv;
    f->n_tensors = (int64_t)nt;
    f->kv = moec_calloc(nkv ? nkv : 1, sizeof(gguf_kv));
    TRY_PTR(f->kv);
    f->tensors = moec_calloc(nt ? nt : 1, sizeof(gguf_tensor));
    TRY_PTR(f->tensors);
    TRY(name_hash_init(&f->kv_hash, f->n_kv));
    TRY(name_hash_init(&f->t_hash, f->n_tensors));
    TRY(parse_kvs(f, &r));

    f->alignment = GGUF_DEFAULT_ALIGN;
    int64_t ai = gguf_find_key(f, "general.alignment");
    if (ai >= 0) {
        int64_t sv = 0;
        uint64_t uv = 0;
        bool sg;
        CHECK(f->kv[ai].type != GGUF_BOOL && kv_int(&f->kv[ai], &sv, &uv, &sg) == 0,
              "%s: general.alignment has type %s (integer expected)", path, vtype_name(f->kv[ai].type));
        if (sg) {
            CHECK(sv > 0, "%s: general.alignment %lld is invalid", path, (long long)sv);
            uv = (uint64_t)sv;
        }
        CHECK(uv >= 8 && uv <= GGUF_MAX_ALIGN && (uv & (uv - 1)) == 0 && uv % 8 == 0,
              "%s: general.alignment %llu is not a power of two between 8 and 2^30", path, (unsigned long long)uv);
        f->alignment = (size_t)uv;
    }
    TRY(parse_tensors(f, &r));

    /* Data section: after the tensor infos, padded to the alignment. */
    size_t ds = r.pos;
    if (ds % f->alignment) ds += f->alignment - ds % f->alignment;
    f->data_start = ds;
    for (int64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        CHECK(t->offset % f->alignment == 0, "%s: tensor '%s' offset %llu is not a multiple of the alignment %zu", path,
              t->name_z, (unsigned long long)t->offset, f->alignment);
        CHECK(ds <= f->map.size && t->offset <= f->map.size - ds && t->nbytes <= f->map.size - ds - t->offset,
              "%s: tensor '%s' data ends past end of file (offset %llu + %zu bytes, data section of %zu bytes)", path,
              t->name_z, (unsigned long long)t->offset, t->nbytes, ds <= f->map.size ? f->map.size - ds : 0);
        t->data = f->map.data + ds + t->offset;
    }
    return f;
fail:
    gguf_close(f);
    return NULL;
}

uint32_t gguf_version(const gguf_file *f) { return f->version; }
int64_t gguf_n_kv(const gguf_file *f) { return f->n_kv; }
const char *gguf_key(const gguf_file *f, int64_t i) { return i >= 0 && i < f->n_kv ? f->kv[i].key : NULL; }
gguf_vtype gguf_kv_type(const gguf_file *f, int64_t i) {
    return i >= 0 && i < f->n_kv ? f->kv[i].type : (gguf_vtype)-1;
}

int64_t gguf_find_key(const gguf_file *f, const char *key) {
    return name_hash_find((name_hash *)&f->kv_hash, f->kv, kv_name, key, strlen(key), -1);
}

int64_t gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i) {
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    int64_t i = name_hash_find((name_hash *)&f->t_hash, f->tensors, t_name, name, strlen(name), -1);
    return i >= 0 ? &f->tensors[i] : NULL;
}

static const gguf_kv *get_kv(const gguf_file *f, const char *key) {
    int64_t i = gguf_find_key(f, key);
    if (i < 0) {
        moec_set_error("%s: key '%s' not found", f->path, key);
        return NULL;
    }
    return &f->kv[i];
}

static int wrong_type(const gguf_file *f, const gguf_kv *kv, const char *want) {
    return moec_set_error("%s: key '%s' has type %s (%s expected)", f->path, kv->key, vtype_name(kv->type), want);
}

/* Integer KV checked into [lo, hi] (signed view) or [0, uhi] (unsigned). */
static int get_int_range(const gguf_file *f, const char *key, int64_t lo, uint64_t hi, int64_t *out_s,
                         uint64_t *out_u) {
    const gguf_kv *kv = get_kv(f, key);
    if (!kv) return -1;
    int64_t sv = 0;
    uint64_t uv = 0;
    bool sg;
    if (kv->type == GGUF_BOOL || kv_int(kv, &sv, &uv, &sg) != 0) return wrong_type(f, kv, "integer");
    if (sg) {
        if (sv < lo || (sv > 0 && (uint64_t)sv > hi))
            return moec_set_error("%s: key '%s' value %lld is out of range", f->path, key, (long long)sv);
        if (out_s) *out_s = sv;
        if (out_u) *out_u = (uint64_t)sv;
    } else {
        if (uv > hi) return moec_set_error("%s: key '%s' value %llu is out of range", f->path, key, (unsigned long long)uv);
        if (out_s) *out_s = (int64_t)uv;
        if (out_u) *out_u = uv;
    }
    return 0;
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out) {
    uint64_t u;
    if (get_int_range(f, key, 0, UINT32_MAX, NULL, &u)) return -1;
    *out = (uint32_t)u;
    return 0;
}

int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    return get_int_range(f, key, INT64_MIN, INT64_MAX, out, NULL);
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out) {
    const gguf_kv *kv = get_kv(f, key);
    if (!kv) return -1;
    if (kv->type == GGUF_F32) {
        memcpy(out, kv->val, 4);
    } else if (kv->type == GGUF_F64) {
        double d;
        memcpy(&d, kv->val, 8);
        *out = (float)d;
    } else {
        return wrong_type(f, kv, "f32");
    }
    return 0;
}

int gguf_get_bool(const gguf_file *f, const char *key, bool *out) {
    const gguf_kv *kv = get_kv(f, key);
    if (!kv) return -1;
    if (kv->type != GGUF_BOOL) return wrong_type(f, kv, "bool");
    *out = kv->val[0] != 0;
    return 0;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out) {
    const gguf_kv *kv = get_kv(f, key);
    if (!kv) return -1;
    if (kv->type != GGUF_STR) return wrong_type(f, kv, "string");
    *out = kv->str;
    return 0;
}

int gguf_get_u32_or(const gguf_file *f, const char *key, uint32_t def, uint32_t *out) {
    if (gguf_find_key(f, key) < 0) {
        *out = def;
        return 0;
    }
    return gguf_get_u32(f, key, out);
}
int gguf_get_f32_or(const gguf_file *f, const char *key, float def, float *out) {
    if (gguf_find_key(f, key) < 0) {
        *out = def;
        return 0;
    }
    return gguf_get_f32(f, key, out);
}
int gguf_get_bool_or(const gguf_file *f, const char *key, bool def, bool *out) {
    if (gguf_find_key(f, key) < 0) {
        *out = def;
        return 0;
    }
    return gguf_get_bool(f, key, out);
}

int gguf_get_arr(const gguf_file *f, const char *key, gguf_vtype *elem_type, uint64_t *n, const void **data) {
    const gguf_kv *kv = get_kv(f, key);
    if (!kv) return -1;
    if (kv->type != GGUF_ARR) return wrong_type(f, kv, "array");
    if (elem_type) *elem_type = kv->arr_type;
    if (n) *n = kv->arr_n;
    if (data) *data = kv->arr_data;
    return 0;
}

int gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, gguf_str *out) {
    const gguf_kv *kv = get_kv(f, key);
    if (!kv) return -1;
    if (kv->type != GGUF_ARR || kv->arr_type != GGUF_STR) return wrong_type(f, kv, "string array");
    if (i >= kv->arr_n)
        return moec_set_error("%s: key '%s': index %llu out of range (%llu items)", f->path, key,
                              (unsigned long long)i, (unsigned long long)kv->arr_n);
    *out = kv->arr_strs[i];
    return 0;
}

/* ============================================================================================== */
/* Writer                                                                                         */
/* ============================================================================================== */

typedef struct {
    char *key;
    uint32_t type;
    uint8_t *val; /* serialised value bytes (what follows the type field in the file) */
    size_t val_len;
} wkv;

typedef struct {
    char name[GGUF_MAX_NAME + 1];
    ggml_type type;
    uint32_t n_dims;
    int64_t ne[4];
    size_t nbytes;
    const void *data;
    void *owned;
    gguf_fill_fn fill;
    void *fill_user;
    size_t rb;
    uint64_t rows;
} wtensor;

struct gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
};

gguf_writer *gguf_w_new(void) { return moec_calloc(1, sizeof(gguf_writer)); }

void gguf_w_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        moec_free(w->kv[i].key);
        moec_free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++) moec_free(w->t[i].owned);
    moec_free(w->kv);
    moec_free(w->t);
    moec_free(w);
}

/* Set key to a value of `type` whose serialised bytes are val[0..len) (ownership of val taken). */
static int w_set(gguf_writer *w, const char *key, uint32_t type, uint8_t *val, size_t len) {
    size_t kl = strlen(key);
    if (kl == 0 || kl > GGUF_MAX_KEY) {
        moec_free(val);
        return moec_set_error("gguf writer: invalid key length %zu for '%.40s'", kl, key);
    }
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            moec_free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = val;
            w->kv[i].val_len = len;
            return 0;
        }
    if (w->n_kv == w->cap_kv) {
        size_t nc = w->cap_kv ? w->cap_kv * 2 : 32;
        wkv *nk = moec_realloc(w->kv, nc * sizeof(wkv));
        if (!nk) {
            moec_free(val);
            return -1;
        }
        w->kv = nk;
        w->cap_kv = nc;
    }
    char *k = moec_strdup(key);
    if (!k) {
        moec_free(val);
        return -1;
    }
    w->kv[w->n_kv++] = (wkv){k, type, val, len};
    return 0;
}

static int w_set_scalar(gguf_writer *w, const char *key, uint32_t type, const void *v, size_t n) {
    uint8_t *b = moec_malloc(n);
    if (!b) return -1;
    memcpy(b, v, n);
    return w_set(w, key, type, b, n);
}

int gguf_w_set_u32(gguf_writer *w, const char *key, uint32_t v) { return w_set_scalar(w, key, GGUF_U32, &v, 4); }
int gguf_w_set_i32(gguf_writer *w, const char *key, int32_t v) { return w_set_scalar(w, key, GGUF_I32, &v, 4); }
int gguf_w_set_u64(gguf_writer *w, const char *key, uint64_t v) { return w_set_scalar(w, key, GGUF_U64, &v, 8); }
int gguf_w_set_f32(gguf_writer *w, const char *key, float v) { return w_set_scalar(w, key, GGUF_F32, &v, 4); }
int gguf_w_set_bool(gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    return w_set_scalar(w, key, GGUF_BOOL, &b, 1);
}

int gguf_w_set_str(gguf_writer *w, const char *key, const char *v) {
    uint64_t n = strlen(v);
    uint8_t *b = moec_malloc(8 + (size_t)n);
    if (!b) return -1;
    memcpy(b, &n, 8);
    memcpy(b + 8, v, (size_t)n);
    return w_set(w, key, GGUF_STR, b, 8 + (size_t)n);
}

int gguf_w_set_arr(gguf_writer *w, const char *key, gguf_vtype elem_type, uint64_t n, const void *data) {
    size_t es = vtype_size(elem_type), bytes, total;
    if (es == 0) return moec_set_error("gguf writer: key '%s': array element type %d is not numeric", key, (int)elem_type);
    if (n > SIZE_MAX || !moec_mul_ok((size_t)n, es, &bytes) || !moec_add_ok(bytes, 12, &total))
        return moec_set_error("gguf writer: key '%s': array too large", key);
    uint8_t *b = moec_malloc(total);
    if (!b) return -1;
    uint32_t et = elem_type;
    memcpy(b, &et, 4);
    memcpy(b + 4, &n, 8);
    if (bytes) memcpy(b + 12, data, bytes);
    return w_set(w, key, GGUF_ARR, b, total);
}

int gguf_w_set_arr_str(gguf_writer *w, const char *key, uint64_t n, const char *const *strs, const uint64_t *lens) {
    size_t total = 12;
    if (n > SIZE_MAX / 8) return moec_set_error("gguf writer: key '%s': array too large", key);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l = lens ? lens[i] : strlen(strs[i]);
        if (l > SIZE_MAX || !moec_add_ok(total, 8, &total) || !moec_add_ok(total, (size_t)l, &total))
            return moec_set_error("gguf writer: key '%s': array too large", key);
    }
    uint8_t *b = moec_malloc(total);
    if (!b) return -1;
    uint32_t et = GGUF_STR;
    memcpy(b, &et, 4);
    memcpy(b + 4, &n, 8);
    size_t p = 12;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l = lens ? lens[i] : strlen(strs[i]);
        memcpy(b + p, &l, 8);
        if (l) memcpy(b + p + 8, strs[i], (size_t)l);
        p += 8 + (size_t)l;
    }
    return w_set(w, key, GGUF_ARR, b, total);
}

int gguf_w_copy_kv(gguf_writer *w, const gguf_file *f, const char *key) {
    const gguf_kv *kv = get_kv(f, key);
    if (!kv) return -1;
    uint8_t *b = moec_malloc(kv->val_len ? kv->val_len : 1);
    if (!b) return -1;
    memcpy(b, kv->val, kv->val_len);
    return w_set(w, key, kv->type, b, kv->val_len);
}

static int w_add(gguf_writer *w, const char *name, ggml_type type, uint32_t n_dims, const int64_t *ne,
                 const void *data, bool copy, gguf_fill_fn fill, void *fill_user) {
    size_t nl = strlen(name), rb, nbytes;
    CHECK(nl > 0 && nl <= GGUF_MAX_NAME, "gguf writer: tensor name '%.70s' must have 1..%u bytes", name,
          GGUF_MAX_NAME);
    CHECK(n_dims >= 1 && n_dims <= 4, "gguf writer: tensor '%s' has %u dimensions (1..4)", name, n_dims);
    for (size_t i = 0; i < w->n_t; i++)
        CHECK(strcmp(w->t[i].name, name) != 0, "gguf writer: duplicate tensor name '%s'", name);
    uint64_t rows = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        CHECK(ne[d] >= 1, "gguf writer: tensor '%s' dimension %u is %lld", name, d, (long long)ne[d]);
        if (d > 0) {
            CHECK((uint64_t)ne[d] <= SIZE_MAX / rows, "gguf writer: tensor '%s' too large", name);
            rows *= (uint64_t)ne[d];
        }
    }
    rb = ggml_row_bytes(type, ne[0]);
    if (rb == 0) return moec_wrap_error("gguf writer: tensor '%s'", name);
    CHECK(moec_mul_ok(rb, (size_t)rows, &nbytes), "gguf writer: tensor '%s' too large", name);
    if (w->n_t == w->cap_t) {
        size_t nc = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *nt = moec_realloc(w->t, nc * sizeof(wtensor));
        TRY_PTR(nt);
        w->t = nt;
        w->cap_t = nc;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    memcpy(t->name, name, nl + 1);
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < 4; d++) t->ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    t->nbytes = nbytes;
    t->rb = rb;
    t->rows = rows;
    t->fill = fill;
    t->fill_user = fill_user;
    if (copy) {
        t->owned = moec_malloc(nbytes ? nbytes : 1);
        TRY_PTR(t->owned);
        memcpy(t->owned, data, nbytes);
        t->data = t->owned;
    } else {
        t->data = data;
    }
    w->n_t++;
    return 0;
fail:
    return -1;
}

int gguf_w_add_tensor(gguf_writer *w, const char *name, ggml_type type, uint32_t n_dims, const int64_t *ne,
                      const void *data) {
    return w_add(w, name, type, n_dims, ne, data, false, NULL, NULL);
}
int gguf_w_add_tensor_copy(gguf_writer *w, const char *name, ggml_type type, uint32_t n_dims, const int64_t *ne,
                           const void *data) {
    return w_add(w, name, type, n_dims, ne, data, true, NULL, NULL);
}
int gguf_w_add_tensor_fill(gguf_writer *w, const char *name, ggml_type type, uint32_t n_dims, const int64_t *ne,
                           gguf_fill_fn fill, void *user) {
    if (!fill) return moec_set_error("gguf writer: tensor '%s' without fill function", name);
    return w_add(w, name, type, n_dims, ne, NULL, false, fill, user);
}

/* Buffered output to the temp file, counting bytes written. */
typedef struct {
    FILE *fp;
    const char *path;
    uint64_t pos;
    int err;
} wout;

static void wo_put(wout *o, const void *p, size_t n) {
    if (o->err || n == 0) return;
    if (fwrite(p, 1, n, o->fp) != n) {
        o->err = 1;
        moec_set_error("%s: write failed: %s", o->path, strerror(errno));
        return;
    }
    o->pos += n;
}
static void wo_u32(wout *o, uint32_t v) { wo_put(o, &v, 4); }
static void wo_u64(wout *o, uint64_t v) { wo_put(o, &v, 8); }
static void wo_pad(wout *o, size_t align) {
    static const uint8_t zeros[256];
    while (!o->err && o->pos % align) {
        size_t n = align - (size_t)(o->pos % align);
        wo_put(o, zeros, n < sizeof zeros ? n : sizeof zeros);
    }
}

int gguf_w_write(gguf_writer *w, const char *path) {
    char tmp[4096];
    wout o = {NULL, tmp, 0, 0};
    size_t align = GGUF_DEFAULT_ALIGN;
    bool tmp_made = false;
    CHECK(snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) < (int)sizeof tmp, "path too long: %s", path);
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, "general.alignment") == 0) {
            uint32_t a = 0;
            CHECK(w->kv[i].type == GGUF_U32, "gguf writer: general.alignment must be u32");
            memcpy(&a, w->kv[i].val, 4);
            CHECK(a >= 8 && a <= GGUF_MAX_ALIGN && (a & (a - 1)) == 0, "gguf writer: general.alignment %u invalid", a);
            align = a;
        }
    o.fp = fopen(tmp, "wb");
    CHECK(o.fp, "%s: %s", tmp, strerror(errno));
    tmp_made = true;
    setvbuf(o.fp, NULL, _IOFBF, 1 << 20);
    wo_put(&o, "GGUF", 4);
    wo_u32(&o, 3);
    wo_u64(&o, w->n_t);
    wo_u64(&o, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        uint64_t kl = strlen(w->kv[i].key);
        wo_u64(&o, kl);
        wo_put(&o, w->kv[i].key, (size_t)kl);
        wo_u32(&o, w->kv[i].type);
        wo_put(&o, w->kv[i].val, w->kv[i].val_len);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        uint64_t nl = strlen(t->name);
        wo_u64(&o, nl);
        wo_put(&o, t->name, (size_t)nl);
        wo_u32(&o, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) wo_u64(&o, (uint64_t)t->ne[d]);
        wo_u32(&o, t->type);
        wo_u64(&o, off);
        off += t->nbytes;
        if (off % align) off += align - off % align;
    }
    wo_pad(&o, align);
    for (size_t i = 0; i < w->n_t && !o.err; i++) {
        const wtensor *t = &w->t[i];
        if (!t->fill) {
            wo_put(&o, t->data, t->nbytes);
        } else { /* produce the rows in chunks of about 8 MB */
            uint64_t chunk = t->rb ? (8u << 20) / t->rb : 1;
            if (chunk < 1) chunk = 1;
            if (chunk > t->rows) chunk = t->rows;
            void *buf = moec_malloc((size_t)chunk * t->rb);
            if (!buf) goto fail;
            for (uint64_t r0 = 0; r0 < t->rows && !o.err; r0 += chunk) {
                uint64_t nr = t->rows - r0 < chunk ? t->rows - r0 : chunk;
                if (t->fill(t->fill_user, buf, (int64_t)r0, (int64_t)nr) != 0) {
                    moec_free(buf);
                    moec_wrap_error("%s: tensor '%s'", path, t->name);
                    goto fail;
                }
                wo_put(&o, buf, (size_t)nr * t->rb);
            }
            moec_free(buf);
        }
        wo_pad(&o, align);
    }
    if (o.err) goto fail;
    CHECK(fflush(o.fp) == 0, "%s: write failed: %s", tmp, strerror(errno));
    CHECK(fsync(fileno(o.fp)) == 0, "%s: fsync failed: %s", tmp, strerror(errno));
    {
        FILE *fp = o.fp;
        o.fp = NULL;
        CHECK(fclose(fp) == 0, "%s: close failed: %s", tmp, strerror(errno));
    }
    TRY(moec_rename_durable(tmp, path));
    return 0;
fail:
    if (o.fp) fclose(o.fp);
    if (tmp_made) unlink(tmp);
    return -1;
}
