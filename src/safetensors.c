/* safetensors: HuggingFace checkpoint reader. See safetensors.h. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#define ST_MAX_HEADER ((uint64_t)100 << 20) /* the reference implementation's limit */
#define ST_MAX_NAME 4096

static const struct {
    const char *name;
    st_dtype t;
    size_t size;
} dtypes[] = {
    {"F32", ST_F32, 4},   {"F16", ST_F16, 2},   {"BF16", ST_BF16, 2}, {"F64", ST_F64, 8},
    {"I64", ST_I64, 8},   {"I32", ST_I32, 4},   {"I16", ST_I16, 2},   {"I8", ST_I8, 1},
    {"U64", ST_U64, 8},   {"U32", ST_U32, 4},   {"U16", ST_U16, 2},   {"U8", ST_U8, 1},
    {"BOOL", ST_BOOL, 1}, {"F8_E4M3", ST_F8_E4M3, 1}, {"F8_E5M2", ST_F8_E5M2, 1},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

const char *st_dtype_name(st_dtype t) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtypes[i].t == t) return dtypes[i].name;
    return "?";
}

size_t st_dtype_size(st_dtype t) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtypes[i].t == t) return dtypes[i].size;
    return 0;
}

struct st_model {
    moec_mmap *maps; /* one per file */
    char **paths;
    size_t n_files;
    st_tensor *t; /* sorted by name */
    size_t n, cap;
    char **names; /* owned name strings (one per tensor) */
};

void st_close(st_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_files; i++) {
        moec_mmap_close(&m->maps[i]);
        free(m->paths[i]);
    }
    for (size_t i = 0; i < m->n; i++) free(m->names[i]);
    free(m->maps);
    free(m->paths);
    free(m->t);
    free(m->names);
    free(m);
}

size_t st_n_tensors(const st_model *m) { return m->n; }
const st_tensor *st_tensor_at(const st_model *m, size_t i) { return i < m->n ? &m->t[i] : NULL; }

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

const st_tensor *st_find(const st_model *m, const char *name) {
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->t[mid].name, name);
        if (c == 0) return &m->t[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* A JSON number that is a non-negative integer <= 2^53 (exactly representable). */
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int add_file(st_model *m, const char *path) {
    moec_mmap *maps = moec_realloc(m->maps, (m->n_files + 1) * sizeof *maps);
    if (!maps) return -1;
    m->maps = maps;
    char **paths = moec_realloc(m->paths, (m->n_files + 1) * sizeof *paths);
    if (!paths) return -1;
    m->paths = paths;
    m->paths[m->n_files] = moec_strdup(path);
    if (!m->paths[m->n_files]) return -1;
    memset(&m->maps[m->n_files], 0, sizeof m->maps[0]);
    if (moec_mmap_open(&m->maps[m->n_files], path) != 0) {
        free(m->paths[m->n_files]);
        return -1;
    }
    m->n_files++;
    return 0;
}

typedef struct {
    uint64_t b, e;
    const char *name;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->b < y->b ? -1 : x->b > y->b ? 1 : (x->e < y->e ? -1 : x->e > y->e);
}

/* Parse the header of the last added file and append its tensors. */
static int parse_file(st_model *m) {
    size_t fi = m->n_files - 1;
    const char *path = m->paths[fi];
    const uint8_t *d = m->maps[fi].data;
    size_t size = m->maps[fi].size;
    cJSON *root = NULL;
    span *spans = NULL;
    size_t n_spans = 0, n0 = m->n; /* tensors of this file: m->t[n0 ..] */
    uint64_t hlen = 0;
    CHECK(size >= 8, "%s: file of %zu bytes is too short for a safetensors header", path, size);
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | d[i];
    CHECK(hlen >= 2 && hlen <= ST_MAX_HEADER, "%s: header length %llu out of range [2, %llu]", path,
          (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    CHECK(hlen <= size - 8, "%s: header length %llu exceeds the file (%zu bytes)", path, (unsigned long long)hlen,
          size);
    CHECK(d[8] == '{', "%s: header is not a JSON object", path);
    root = cJSON_ParseWithLength((const char *)d + 8, (size_t)hlen);
    CHECK(root, "%s: header is not valid JSON", path);
    CHECK(cJSON_IsObject(root), "%s: header is not a JSON object", path);
    size_t data_size = size - 8 - (size_t)hlen;
    const uint8_t *base = d + 8 + hlen;
    size_t n_items = (size_t)cJSON_GetArraySize(root);
    spans = moec_calloc(n_items ? n_items : 1, sizeof *spans);
    TRY_PTR(spans);
    for (const cJSON *it = root->child; it; it = it->next) {
        const char *name = it->string;
        CHECK(name, "%s: header entry without a name", path);
        size_t nl = strlen(name);
        CHECK(nl >= 1 && nl <= ST_MAX_NAME, "%s: tensor name of length %zu", path, nl);
        if (!strcmp(name, "__metadata__")) {
            CHECK(cJSON_IsObject(it), "%s: __metadata__ is not an object", path);
            continue;
        }
        CHECK(cJSON_IsObject(it), "%s: tensor %s: entry is not an object", path, name);
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        CHECK(cJSON_IsString(jd), "%s: tensor %s: missing dtype", path, name);
        CHECK(cJSON_IsArray(js), "%s: tensor %s: missing shape", path, name);
        CHECK(cJSON_IsArray(jo) && cJSON_GetArraySize(jo) == 2, "%s: tensor %s: data_offsets must be [begin, end]",
              path, name);
        st_tensor t;
        memset(&t, 0, sizeof t);
        size_t k = 0;
        for (; k < N_DTYPES; k++)
            if (!strcmp(dtypes[k].name, jd->valuestring)) break;
        CHECK(k < N_DTYPES, "%s: tensor %s: unknown dtype '%.32s'", path, name, jd->valuestring);
        t.dtype = dtypes[k].t;
        int nd = cJSON_GetArraySize(js);
        CHECK(nd >= 0 && nd <= ST_MAX_DIMS, "%s: tensor %s: %d dimensions (at most %d)", path, name, nd,
              ST_MAX_DIMS);
        t.n_dims = nd;
        size_t ne = 1;
        int i = 0;
        for (const cJSON *s = js->child; s; s = s->next, i++) {
            uint64_t v;
            CHECK(json_uint(s, &v) == 0 && v <= (uint64_t)INT64_MAX,
                  "%s: tensor %s: shape entry %d is not a non-negative integer", path, name, i);
            t.shape[i] = (int64_t)v;
            CHECK(moec_mul_ok(ne, (size_t)v, &ne), "%s: tensor %s: element count overflows", path, name);
        }
        t.n_elems = ne;
        CHECK(moec_mul_ok(ne, dtypes[k].size, &t.nbytes), "%s: tensor %s: byte size overflows", path, name);
        uint64_t b, e;
        CHECK(json_uint(jo->child, &b) == 0 && json_uint(jo->child->next, &e) == 0,
              "%s: tensor %s: data_offsets are not non-negative integers", path, name);
        CHECK(b <= e, "%s: tensor %s: data_offsets begin %llu > end %llu", path, name, (unsigned long long)b,
              (unsigned long long)e);
        CHECK(e <= data_size, "%s: tensor %s: data_offsets end %llu past the end of the data (%zu bytes)", path,
              name, (unsigned long long)e, data_size);
        CHECK(e - b == t.nbytes, "%s: tensor %s: %llu bytes in data_offsets but shape x %s needs %zu", path, name,
              (unsigned long long)(e - b), dtypes[k].name, t.nbytes);
        t.data = base + b;
        t.file = path;
        if (m->n == m->cap) {
            size_t nc = m->cap ? 2 * m->cap : 64;
            st_tensor *nt = moec_realloc(m->t, nc * sizeof *nt);
            TRY_PTR(nt);
            m->t = nt;
            char **nn = moec_realloc(m->names, nc * sizeof *nn);
            TRY_PTR(nn);
            m->names = nn;
            m->cap = nc;
        }
        char *nm = moec_strdup(name);
        TRY_PTR(nm);
        t.name = nm;
        m->names[m->n] = nm;
        m->t[m->n++] = t;
        if (b < e) spans[n_spans++] = (span){b, e, nm};
    }
    /* duplicate names inside this file (cJSON keeps both), before the overlap check they would also fail */
    if (m->n > n0) qsort(m->t + n0, m->n - n0, sizeof *m->t, cmp_tensor);
    for (size_t i = n0 + 1; i < m->n; i++)
        CHECK(strcmp(m->t[i].name, m->t[i - 1].name), "%s: duplicate tensor %s", path, m->t[i].name);
    qsort(spans, n_spans, sizeof *spans, cmp_span);
    for (size_t i = 1; i < n_spans; i++)
        CHECK(spans[i].b >= spans[i - 1].e, "%s: tensors %s and %s overlap in the data", path, spans[i - 1].name,
              spans[i].name);
    cJSON_Delete(root);
    free(spans);
    return 0;
fail:
    cJSON_Delete(root);
    free(spans);
    return -1;
}

/* Sort by name and reject duplicates (names and their strings stay owned by m->names). */
static int finish(st_model *m) {
    if (m->n) qsort(m->t, m->n, sizeof *m->t, cmp_tensor);
    for (size_t i = 1; i < m->n; i++)
        if (!strcmp(m->t[i].name, m->t[i - 1].name))
            return moec_set_error("duplicate tensor %s (in %s and %s)", m->t[i].name, m->t[i - 1].file,
                                  m->t[i].file);
    return 0;
}

st_model *st_open_file(const char *path) {
    st_model *m = moec_calloc(1, sizeof *m);
    if (!m) return NULL;
    TRY(add_file(m, path));
    TRY(parse_file(m));
    TRY(finish(m));
    return m;
fail:
    st_close(m);
    return NULL;
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = moec_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int open_index(st_model *m, const char *dir, const char *idx_path) {
    char *txt = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    char **shards = NULL;
    size_t n_shards = 0, n_map = 0;
    char *p = NULL;
    TRY(moec_read_file(idx_path, &txt, &len));
    root = cJSON_ParseWithLength(txt, len);
    CHECK(root && cJSON_IsObject(root), "%s: not a JSON object", idx_path);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    CHECK(cJSON_IsObject(wm), "%s: no weight_map object", idx_path);
    n_map = (size_t)cJSON_GetArraySize(wm);
    CHECK(n_map > 0, "%s: empty weight_map", idx_path);
    shards = moec_calloc(n_map, sizeof *shards);
    TRY_PTR(shards);
    for (const cJSON *it = wm->child; it; it = it->next) {
        CHECK(it->string && cJSON_IsString(it), "%s: weight_map values must be file names", idx_path);
        const char *f = it->valuestring;
        CHECK(f[0] && !strchr(f, '/') && !strchr(f, '\\') && strcmp(f, ".") && strcmp(f, ".."),
              "%s: shard name '%.64s' must be a plain file name in the directory", idx_path, f);
        bool seen = false;
        for (size_t i = 0; i < n_shards && !seen; i++) seen = !strcmp(shards[i], f);
        if (!seen) shards[n_shards++] = it->valuestring;
    }
    qsort(shards, n_shards, sizeof *shards, cmp_str);
    for (size_t i = 0; i < n_shards; i++) {
        p = join(dir, shards[i]);
        TRY_PTR(p);
        TRY(add_file(m, p));
        free(p);
        p = NULL;
        TRY(parse_file(m));
    }
    TRY(finish(m));
    /* the index must describe the shards exactly */
    for (const cJSON *it = wm->child; it; it = it->next) {
        const st_tensor *t = st_find(m, it->string);
        CHECK(t, "%s: weight_map lists %s but its shard %s does not contain it", idx_path, it->string,
              it->valuestring);
        const char *base = strrchr(t->file, '/');
        base = base ? base + 1 : t->file;
        CHECK(!strcmp(base, it->valuestring), "%s: weight_map puts %s in %s but it is in %s", idx_path, it->string,
              it->valuestring, base);
    }
    for (size_t i = 0; i < m->n; i++)
        CHECK(cJSON_GetObjectItemCaseSensitive(wm, m->t[i].name), "%s: tensor %s of %s is not in the weight_map",
              idx_path, m->t[i].name, m->t[i].file);
    cJSON_Delete(root);
    free(shards);
    free(txt);
    return 0;
fail:
    free(p);
    cJSON_Delete(root);
    free(shards);
    free(txt);
    return -1;
}

st_model *st_open_dir(const char *dir) {
    st_model *m = moec_calloc(1, sizeof *m);
    char *p = NULL;
    DIR *dd = NULL;
    char **files = NULL;
    size_t nf = 0, cf = 0;
    if (!m) return NULL;
    p = join(dir, "model.safetensors.index.json");
    TRY_PTR(p);
    if (file_exists(p)) {
        TRY(open_index(m, dir, p));
        free(p);
        return m;
    }
    free(p);
    p = join(dir, "model.safetensors");
    TRY_PTR(p);
    if (file_exists(p)) {
        TRY(add_file(m, p));
        TRY(parse_file(m));
        TRY(finish(m));
        free(p);
        return m;
    }
    free(p);
    p = NULL;
    dd = opendir(dir);
    CHECK(dd, "%s: cannot open directory", dir);
    for (struct dirent *e; (e = readdir(dd));) {
        size_t l = strlen(e->d_name);
        if (l <= 12 || strcmp(e->d_name + l - 12, ".safetensors")) continue;
        if (nf == cf) {
            cf = cf ? 2 * cf : 8;
            char **nfs = moec_realloc(files, cf * sizeof *nfs);
            TRY_PTR(nfs);
            files = nfs;
        }
        files[nf] = moec_strdup(e->d_name);
        TRY_PTR(files[nf]);
        nf++;
    }
    closedir(dd);
    dd = NULL;
    CHECK(nf > 0, "%s: no model.safetensors.index.json and no *.safetensors files", dir);
    qsort(files, nf, sizeof *files, cmp_str);
    for (size_t i = 0; i < nf; i++) {
        p = join(dir, files[i]);
        TRY_PTR(p);
        TRY(add_file(m, p));
        TRY(parse_file(m));
        free(p);
        p = NULL;
    }
    TRY(finish(m));
    for (size_t i = 0; i < nf; i++) free(files[i]);
    free(files);
    return m;
fail:
    if (dd) closedir(dd);
    for (size_t i = 0; i < nf; i++) free(files[i]);
    free(files);
    free(p);
    st_close(m);
    return NULL;
}

int st_read_f32(const st_tensor *t, size_t first, size_t n, float *out) {
    size_t end;
    if (!moec_add_ok(first, n, &end) || end > t->n_elems)
        return moec_set_error("tensor %s: elements [%zu, +%zu) outside its %zu elements", t->name, first, n,
                              t->n_elems);
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case ST_F32:
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            const uint8_t *q = p + 4 * (first + i);
            u = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
            memcpy(&out[i], &u, 4);
        }
        return 0;
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            const uint8_t *q = p + 2 * (first + i);
            out[i] = moec_f16_to_f32((uint16_t)(q[0] | q[1] << 8));
        }
        return 0;
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            const uint8_t *q = p + 2 * (first + i);
            out[i] = moec_bf16_to_f32((uint16_t)(q[0] | q[1] << 8));
        }
        return 0;
    default:
        return moec_set_error("tensor %s: dtype %s (moec reads F32, F16 and BF16)", t->name,
                              st_dtype_name(t->dtype));
    }
}
