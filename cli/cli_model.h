/* Helpers shared by the model commands (generate, chat, logits, info): token-id lists, --rope-table, threads,
 * .npy output, and loading a model plus its tokenizer. */
#ifndef MOEC_CLI_MODEL_H
#define MOEC_CLI_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "tok.h"

/* Parse "1 2 3" (spaces, commas, tabs or newlines between ids) into a malloc'ed array (free with free()).
 * Prints a usage error and returns -1 on a bad or out-of-range id. */
int cli_parse_token_ids(const char *cmd, const char *s, int32_t **ids, size_t *n);
/* "hf" -> MODEL_ROPE_TABLE_HF, "fp32" -> MODEL_ROPE_TABLE_FP32; prints a usage error and returns -1 otherwise. */
int cli_parse_rope_table(const char *cmd, const char *s, int *out);
/* "f32" -> GGML_F32, "f16" -> GGML_F16 (KV cache type); prints a usage error and returns -1 otherwise. */
int cli_parse_kv_type(const char *cmd, const char *s, int *out);
/* Use n OpenMP threads (n <= 0: leave the default). */
void cli_set_threads(long n);
/* Write data [rows, cols] as a little-endian float32 .npy (atomic). -1 + error. */
int cli_write_npy_f32(const char *path, const float *data, int64_t rows, int64_t cols);
/* Tokenizer of a model: --vocab FILE if given, else the GGUF's tokenizer.ggml.* keys. NULL + error. */
tok_vocab *cli_load_vocab(const model *m, const char *vocab_path);

#endif

/* The decode loop of generate/chat. Feeds ids[0..n) (the part of the prompt not yet in s), then samples up
 * to n_predict tokens, feeding each back (T = 1), stopping at any id in eos[0..n_eos) (not fed, not emitted)
 * or when the context is full. Ids >= n_valid (e.g. padding rows past the tokenizer's vocabulary) are never
 * sampled (n_valid <= 0: all ids are valid). Each emitted id goes to emit(id, user) (return nonzero to stop with an error).
 * Times: prefill and generation seconds. *n_gen = emitted tokens; *stopped_eos says whether EOS ended it. */
typedef struct {
    double t_prompt, t_gen;
    int64_t n_prompt, n_gen;
    int stopped_eos, ctx_full;
} cli_gen_stats;
struct sampler;
int cli_generate_loop(const model *m, seq_state *s, struct sampler *sp, const int32_t *ids, size_t n,
                      int64_t n_predict, int64_t n_valid, const int32_t *eos, int n_eos, int (*emit)(int32_t id, void *user),
                      void *user, cli_gen_stats *st);
