/* data: token shards and a resumable batch loader for training.
 *
 * Shard file (little-endian), written by data_shard_write / `moec prepare`:
 *   offset 0  char[8]  magic "MOECTOKS"
 *          8  u32      version (1)
 *         12  u32      token width in bytes: 2 (uint16, when vocab <= 65536) or 4 (uint32)
 *         16  u64      token count N
 *         24  u64      vocabulary size V (every token < V; 0 = unknown)
 *         32  tokens   N x width bytes
 * The file size must be exactly 32 + N·width. Readers treat shards as hostile: magic, version, width, size and
 * (on open) every token < V are checked.
 *
 * Loader: two sources of training sequences.
 *   - shards: a token stream read sequentially; each batch row is the next T+1 tokens (inputs = first T, targets =
 *     the last T), the position then advances by T (rows overlap by one token). A row never spans two shards; at
 *     the end of the last shard the loader wraps to the first (epoch + 1).
 *   - a text file of token ids, one sequence per line (whitespace-separated decimal ids): each batch row is the
 *     next line, truncated to T+1 tokens; shorter lines are padded and the padding is masked out of the loss.
 * The position is a small struct (data_pos) that checkpoints save so a resumed run reads the same batches. */
#ifndef MOEC_DATA_H
#define MOEC_DATA_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "util.h"

#define DATA_SHARD_MAGIC "MOECTOKS"
#define DATA_SHARD_VERSION 1u
#define DATA_SHARD_HEADER 32u

/* Write n tokens as a shard (atomically). width 0 = choose (2 if vocab <= 65536, else 4). Every token must be in
 * [0, vocab) when vocab > 0. */
int data_shard_write(const char *path, const int32_t *tokens, size_t n, uint64_t vocab, unsigned width);

/* An open (mmapped) shard. */
typedef struct {
    moec_mmap map;
    const uint8_t *tok; /* first token */
    uint64_t n;         /* token count */
    uint64_t vocab;
    unsigned width;     /* 2 or 4 */
} data_shard;

/* Open and validate a shard (header, size, tokens < vocab and < max_vocab if max_vocab > 0). -1 + error. */
int data_shard_open(data_shard *s, const char *path, uint64_t max_vocab);
void data_shard_close(data_shard *s);
/* Token i (i < n). */
static inline int32_t data_shard_get(const data_shard *s, uint64_t i) {
    const uint8_t *p = s->tok + i * s->width;
    if (s->width == 2) return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8);
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

/* Resumable position. */
typedef struct {
    uint64_t epoch; /* completed passes over the data */
    uint64_t item;  /* shards: shard index; lines: line index */
    uint64_t off;   /* shards: token offset in the shard; lines: unused (0) */
} data_pos;

typedef struct {
    data_shard *shards; /* shard source */
    size_t n_shards;
    int32_t *lines_tok;   /* line source: all ids concatenated */
    uint64_t *lines_off;  /* [n_lines + 1] */
    size_t n_lines;
    int64_t T;            /* sequence length the loader was opened for */
    data_pos pos;
} data_loader;

/* Open a loader over shard files (each must hold at least T+1 tokens), checking tokens < max_vocab (if > 0). */
int data_loader_open_shards(data_loader *ld, const char *const *paths, size_t n, int64_t T, uint64_t max_vocab);
/* Open a loader over a text file of token ids, one sequence per line (empty lines and lines of one token are
 * skipped: they give no target). Ids must be in [0, max_vocab) when max_vocab > 0. */
int data_loader_open_lines(data_loader *ld, const char *path, int64_t T, uint64_t max_vocab);
/* Open whichever format the file has: a shard (magic) or a text file of ids. */
int data_loader_open(data_loader *ld, const char *path, int64_t T, uint64_t max_vocab);
void data_loader_close(data_loader *ld);

/* Next B rows of T positions: inputs, targets and loss mask (1 or 0; targets are 0 where the mask is 0).
 * Advances the position. */
// inputs, targets: [B, T], mask: [B, T]
int data_loader_next(data_loader *ld, int64_t B, int32_t *inputs, int32_t *targets, float *mask);

/* Set / check a saved position (error if it does not fit this data). */
int data_loader_seek(data_loader *ld, data_pos pos);

/* Tokens in the source (shards: total tokens; lines: total ids). */
uint64_t data_loader_tokens(const data_loader *ld);
/* Number of distinct rows one epoch gives (the number of next() rows before wrapping). */
uint64_t data_loader_rows_per_epoch(const data_loader *ld);

#endif
