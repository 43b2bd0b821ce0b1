/* convert: checkpoints of other tools -> GGUF (docs/convert.md has the full name mapping).
 *   conv_hf:      a HuggingFace Yuan2-M32 directory (config.json, *.safetensors [+ index], tokenizer.model if
 *                 present) -> a `yuan2moe` GGUF (docs/gguf-yuan2moe.md).
 *   conv_llama2c: a llama2.c legacy checkpoint + its tokenizer.bin -> a `llama` GGUF named as llama.cpp does.
 * Inputs are hostile: every size and shape is checked before it is used; a failure returns -1 with one error
 * line naming the file and the problem, and writes nothing (the output is written atomically). */
#ifndef MOEC_CONVERT_H
#define MOEC_CONVERT_H

#include "gguf.h"

typedef struct {
    int out_type;     /* matrices: -1 = the checkpoint's own dtype (lossless), else GGML_F32, GGML_F16, GGML_BF16.
                         Vectors (norms, biases) and router matrices are always F32. */
    int rope_table;   /* yuan2moe.rope.table: -1 or 0 = "fp32", 1 = "hf" */
    const char *name; /* general.name (NULL: the input's base name) */
} conv_opts;

/* Default options: out_type -1, rope_table -1, name NULL. */
conv_opts conv_default_opts(void);

int conv_hf(const char *hf_dir, const char *out_path, const conv_opts *o);
int conv_llama2c(const char *model_path, const char *vocab_path, const char *out_path, const conv_opts *o);

#endif
