/* gguf: GGUF v3 files. Reader: mmap, zero-copy, every offset/size/count validated against the file
 * (the input is hostile). Writer: builds KVs and tensors in memory, writes atomically (tmp, fsync, rename).
 * Format: ../shared/spec/formats.md. */
#ifndef MOEC_GGUF_H
#define MOEC_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* KV value types as stored in the file. */
typedef enum {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5, GGUF_F32 = 6,
    GGUF_BOOL = 7, GGUF_STR = 8, GGUF_ARR = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12,
} gguf_vtype;

/* Tensor element types (ggml numbering). */
typedef enum {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q8_0 = 8,
    GGML_Q4_K = 12, GGML_Q6_K = 14, GGML_BF16 = 30,
} ggml_type;

/* Block geometry of a type: elements per block and bytes per block (F32: 1,4; Q8_0: 32,34; ...).
 * Returns -1 (error set) for a type moec does not know. */
int ggml_type_block(ggml_type t, size_t *block_elems, size_t *block_bytes);
const char *ggml_type_name(ggml_type t); /* "F32", "Q8_0", ..., "?" */
/* Bytes of a row of n elements (n must be a multiple of the block size); 0 + error if invalid. */
size_t ggml_row_bytes(ggml_type t, int64_t n);

/* A string inside the mapped file: not NUL-terminated. */
typedef struct {
    const char *s;
    uint64_t len;
} gguf_str;

typedef struct {
    gguf_str name;       /* also available NUL-terminated as name_z */
    char name_z[65];
    uint32_t n_dims;     /* 1..4 */
    int64_t ne[4];       /* ne[0] = row length (fastest varying); unused dims are 1 */
    ggml_type type;
    uint64_t offset;     /* relative to data section */
    size_t nbytes;       /* validated: data + nbytes lies inside the file */
    const void *data;    /* points into the mapping */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Open and fully validate a GGUF file. NULL + error on any problem (message names the file and the issue). */
gguf_file *gguf_open(const char *path);
/* The same; copy = true reads the file into anonymous memory (huge pages where the kernel gives them) instead of
 * mapping it (moec_mmap_open_copy). */
gguf_file *gguf_open_copy(const char *path, bool copy);
void gguf_close(gguf_file *f);

uint32_t gguf_version(const gguf_file *f);
/* Number of KV pairs; key i as a NUL-terminated string; its type. */
int64_t gguf_n_kv(const gguf_file *f);
const char *gguf_key(const gguf_file *f, int64_t i);
gguf_vtype gguf_kv_type(const gguf_file *f, int64_t i);
/* Index of a key or -1 if absent (no error set). */
int64_t gguf_find_key(const gguf_file *f, const char *key);

/* Typed getters. Return 0 on success; -1 with error set if the key is absent or has another type.
 * Integer getters accept any integer type whose value fits (u8..u64, i8..i64, bool for get_bool). */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
int gguf_get_f32(const gguf_file *f, const char *key, float *out); /* accepts F32 or F64 */
int gguf_get_bool(const gguf_file *f, const char *key, bool *out);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);
/* Same, but an absent key gives `def` and success (a wrong type is still an error). */
int gguf_get_u32_or(const gguf_file *f, const char *key, uint32_t def, uint32_t *out);
int gguf_get_f32_or(const gguf_file *f, const char *key, float def, float *out);
int gguf_get_bool_or(const gguf_file *f, const char *key, bool def, bool *out);

/* Arrays. Numeric arrays: element type, count, and a pointer to the packed little-endian items in the map
 * (may be unaligned: read with memcpy). String arrays: use gguf_get_arr_str for item i (validated at open). */
int gguf_get_arr(const gguf_file *f, const char *key, gguf_vtype *elem_type, uint64_t *n, const void **data);
int gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, gguf_str *out);

int64_t gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i);
/* NULL if absent (no error set). */
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* ---------------------------------------------------------------------------------------------- */
/* Writer. Setting an existing key replaces it. Tensor data is referenced (not copied) until gguf_w_write,
 * unless added with gguf_w_add_tensor_copy. Tensors are written in the order added, aligned to 32 bytes. */
typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_w_new(void);
void gguf_w_free(gguf_writer *w);
int gguf_w_set_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_w_set_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_w_set_u64(gguf_writer *w, const char *key, uint64_t v);
int gguf_w_set_f32(gguf_writer *w, const char *key, float v);
int gguf_w_set_bool(gguf_writer *w, const char *key, bool v);
int gguf_w_set_str(gguf_writer *w, const char *key, const char *v);
/* Numeric array of n items of elem_type, copied from data (host little-endian layout). */
int gguf_w_set_arr(gguf_writer *w, const char *key, gguf_vtype elem_type, uint64_t n, const void *data);
/* String array; strs[i] has length lens[i] (lens NULL: NUL-terminated). Copied. */
int gguf_w_set_arr_str(gguf_writer *w, const char *key, uint64_t n, const char *const *strs, const uint64_t *lens);
/* Copy KV `key` (any type, arrays included) from an open file. */
int gguf_w_copy_kv(gguf_writer *w, const gguf_file *f, const char *key);
/* Add a tensor: ne[0] is the row length. data must hold ggml_row_bytes(type, ne[0]) * ne[1]*ne[2]*ne[3] bytes. */
int gguf_w_add_tensor(gguf_writer *w, const char *name, ggml_type type, uint32_t n_dims, const int64_t *ne,
                      const void *data);
int gguf_w_add_tensor_copy(gguf_writer *w, const char *name, ggml_type type, uint32_t n_dims, const int64_t *ne,
                           const void *data);
/* Add a tensor whose bytes are produced while the file is written, a chunk of rows at a time (so converting a
 * model never holds the whole output in memory): fill(user, dst, row0, nrows) must write rows [row0, row0+nrows)
 * (a row = ggml_row_bytes(type, ne[0]) bytes; rows = ne[1]*ne[2]*ne[3]) to dst and return 0, or -1 with the error
 * set (the write then fails and no file is left). */
typedef int (*gguf_fill_fn)(void *user, void *dst, int64_t row0, int64_t nrows);
int gguf_w_add_tensor_fill(gguf_writer *w, const char *name, ggml_type type, uint32_t n_dims, const int64_t *ne,
                           gguf_fill_fn fill, void *user);
/* Write the file atomically (path.tmp, fsync, rename). */
int gguf_w_write(gguf_writer *w, const char *path);

#endif
