/* safetensors: read HuggingFace checkpoints (`*.safetensors`, one file or shards listed by
 * `model.safetensors.index.json`). Files are mmap'ed; the JSON header is parsed with cJSON and every entry is
 * validated against the file before any data is touched (the input is hostile): header length vs file size,
 * known dtype, shape entries non-negative integers, data_offsets [begin, end] with begin <= end inside the
 * data section, end - begin == product(shape) * dtype size (overflow-checked), no overlapping tensors, no
 * duplicate names (within a file or across shards), shard file names without path components.
 * Format: ../shared/spec/formats.md. Shapes are PyTorch order (shape[0] slowest), e.g. nn.Linear [out, in]. */
#ifndef MOEC_SAFETENSORS_H
#define MOEC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

/* dtypes of the format; moec converts F32, F16 and BF16 to fp32 (the others are validated and listed). */
typedef enum {
    ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U64, ST_U32, ST_U16, ST_U8, ST_BOOL,
    ST_F8_E4M3, ST_F8_E5M2,
} st_dtype;

const char *st_dtype_name(st_dtype t); /* "F32", ... */
size_t st_dtype_size(st_dtype t);      /* bytes per element */

typedef struct {
    const char *name;               /* NUL-terminated, owned by the st_model */
    st_dtype dtype;
    int n_dims;                     /* 0 (scalar) .. ST_MAX_DIMS */
    int64_t shape[ST_MAX_DIMS];     /* PyTorch order */
    size_t n_elems;                 /* product(shape) */
    size_t nbytes;                  /* n_elems * dtype size == end - begin */
    const void *data;               /* inside the mapping of its file; may be unaligned */
    const char *file;               /* path of the file holding it (for messages) */
} st_tensor;

typedef struct st_model st_model;

/* Open one .safetensors file. NULL + error (naming the file and the problem) on any defect. */
st_model *st_open_file(const char *path);
/* Open a checkpoint directory: model.safetensors.index.json (every shard in its weight_map, which must
 * list exactly the tensors found in the shards), else model.safetensors, else every *.safetensors file in
 * the directory (sorted by name). NULL + error on failure. */
st_model *st_open_dir(const char *dir);
void st_close(st_model *m);

size_t st_n_tensors(const st_model *m);
/* Tensors sorted by name. */
const st_tensor *st_tensor_at(const st_model *m, size_t i);
/* NULL if absent (no error set). O(log n). */
const st_tensor *st_find(const st_model *m, const char *name);

/* Convert n elements starting at element `first` of t to fp32 (t must be F32, F16 or BF16; range checked).
 * out: [n]. -1 + error (naming the tensor) otherwise. */
int st_read_f32(const st_tensor *t, size_t first, size_t n, float *out);

#endif
