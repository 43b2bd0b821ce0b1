/* tok: SentencePiece-compatible BPE tokenizer (encode / decode / streaming decode).
 *
 * Gives exactly the ids SentencePiece 0.1.97 gives for a BPE model (model_type=2): identity or precompiled
 * (nmt_nfkc...) normalizer, optional dummy prefix and extra-whitespace removal, ' ' -> U+2581, user-defined pieces matched greedily and
 * frozen, merges by score (ties: leftmost), byte fallback (<0xNN>), invalid UTF-8 bytes -> U+FFFD.
 * SentencePiece unigram models (.model only) are encoded with SentencePiece's Viterbi, same semantics.
 * Behaviour decisions (special tokens, Yuan added tokens, streaming rule): docs/tokenizer.md.
 *
 * A tok_vocab is read-only after load (tok_add_special is part of building it, before sharing): any number of
 * threads may encode/decode with the same vocab at once. */
#ifndef MOEC_TOK_H
#define MOEC_TOK_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "gguf.h"

typedef struct tok_vocab tok_vocab;

/* Piece types: same numbers in SentencePiece's ModelProto and in GGUF tokenizer.ggml.token_type. */
typedef enum {
    TOK_NORMAL = 1,
    TOK_UNKNOWN = 2,
    TOK_CONTROL = 3,
    TOK_USER_DEFINED = 4,
    TOK_UNUSED = 5,
    TOK_BYTE = 6,
} tok_piece_type;

/* ---- loading ------------------------------------------------------------------------------------- */

/* Load a vocabulary, detecting the format from the content: a SentencePiece .model (protobuf), a GGUF file
 * (tokenizer.ggml.* keys) or a llama2.c tokenizer.bin. NULL + error (naming the file and problem) on failure.
 * A Yuan 2.0 vocabulary (134953 pieces with "<eod>" at 77185) gets Yuan's 5 added tokens appended
 * (<mask> <predict> <FIM_SUFFIX> <FIM_PREFIX> <FIM_MIDDLE> = 134953..134957) and its special set; see docs. */
tok_vocab *tok_load(const char *path);
/* Same from memory: SentencePiece .model bytes / llama2.c tokenizer.bin bytes. `name` is used in errors. */
tok_vocab *tok_load_spm(const void *data, size_t len, const char *name);
tok_vocab *tok_load_llama2c(const void *data, size_t len, const char *name);
/* From the tokenizer.ggml.* keys of an open GGUF file (tokenizer.ggml.model must be "llama"). */
tok_vocab *tok_load_gguf(const gguf_file *f);
/* Write the tokenizer.ggml.* keys (model, tokens, scores, token_type, bos/eos/unk/pad ids, add_bos/add_eos
 * = false, add_space_prefix, remove_extra_whitespaces). Added tokens are written as CONTROL pieces. */
int tok_write_gguf(const tok_vocab *v, gguf_writer *w);
void tok_free(tok_vocab *v);

/* Append a special token (recognised in text with TOK_ENC_SPECIAL, decoded as text only with TOK_DEC_SPECIAL)
 * and return its id; if the piece already exists, mark it special and return its id. -1 + error on failure.
 * Only while building the vocab (not thread-safe against concurrent encoders). */
int32_t tok_add_special(tok_vocab *v, const char *piece);

/* ---- queries (all O(1) except tok_find: O(len)) ------------------------------------------------------ */
int32_t tok_n_vocab(const tok_vocab *v);
int32_t tok_bos(const tok_vocab *v); /* -1 if none */
int32_t tok_eos(const tok_vocab *v); /* -1 if none; Yuan: <eod> = 77185 (what every Yuan caller uses) */
int32_t tok_unk(const tok_vocab *v); /* -1 if none */
int32_t tok_pad(const tok_vocab *v); /* -1 if none */
/* Id of an exact piece (as stored: U+2581 for space), -1 if absent. */
int32_t tok_find(const tok_vocab *v, const char *piece);
int32_t tok_find_n(const tok_vocab *v, const char *piece, size_t len);
/* The stored piece of id, NUL-terminated (U+2581 for space); *len its byte length (len may be NULL).
 * NULL for an out-of-range id. */
const char *tok_piece(const tok_vocab *v, int32_t id, size_t *len);
tok_piece_type tok_type(const tok_vocab *v, int32_t id); /* 0 for an out-of-range id */
float tok_score(const tok_vocab *v, int32_t id);         /* 0 for an out-of-range id */
bool tok_is_special(const tok_vocab *v, int32_t id);     /* in the special set (see TOK_ENC_SPECIAL) */
/* Normalizer / trainer flags as loaded. */
bool tok_add_dummy_prefix(const tok_vocab *v);
bool tok_byte_fallback(const tok_vocab *v);
/* Longest stored piece in bytes. */
size_t tok_max_piece_len(const tok_vocab *v);

/* ---- encoding -------------------------------------------------------------------------------------- */
enum {
    TOK_ENC_SPECIAL = 1u << 0, /* pre-split the special set (control and unknown pieces, tok_add_special
                                  pieces, Yuan's named specials) out of the text, leftmost-longest; each
                                  text chunk between them is encoded on its own (with its own dummy prefix,
                                  as HuggingFace's legacy LlamaTokenizer does). USER_DEFINED pieces are
                                  always matched, with or without this flag, as SentencePiece does. */
    TOK_ENC_BOS = 1u << 1,     /* prepend tok_bos (error if none) */
    TOK_ENC_EOS = 1u << 2,     /* append tok_eos (error if none) */
};

/* Encode len bytes of UTF-8 text (need not be NUL-terminated; invalid UTF-8 is accepted: each bad byte counts
 * as U+FFFD, as SentencePiece does). *ids is malloc'ed (free with free()), *n its length (0 for empty text
 * without BOS/EOS; *ids is then still a valid pointer). O(n log n) in the text length. */
int tok_encode(const tok_vocab *v, const char *text, size_t len, unsigned flags, int32_t **ids, size_t *n);

/* ---- decoding -------------------------------------------------------------------------------------- */
enum {
    TOK_DEC_SPECIAL = 1u << 0,    /* control and added pieces come out as their text (default: nothing) */
    TOK_DEC_KEEP_SPACE = 1u << 1, /* keep the leading space of the first piece (default: dropped when the
                                     vocab adds a dummy prefix, as SentencePiece does); use it to decode a
                                     continuation of earlier text */
};

/* Whole sequence to text, SentencePiece's rules: U+2581 -> ' ', consecutive byte pieces joined and any invalid
 * UTF-8 in them -> U+FFFD per bad byte, control pieces -> "", <unk> -> " \u2047 ". *text is malloc'ed and
 * NUL-terminated, *len excludes the NUL. An out-of-range id is an error (-1, message names the id). */
int tok_decode(const tok_vocab *v, const int32_t *ids, size_t n, unsigned flags, char **text, size_t *len);

/* Streaming decoder: push one id at a time, get the bytes that are ready to print. Never returns a broken UTF-8
 * sequence: bytes of a character split over several byte pieces are held until complete (an impossible
 * continuation comes out as U+FFFD per bad byte, like tok_decode). The concatenation of all outputs plus the
 * flush equals tok_decode of the whole sequence with the same flags. The caller owns the struct. */
typedef struct {
    const tok_vocab *v;
    unsigned flags;
    bool is_bos_ws;    /* leading-space rule state (SentencePiece's decoder): still at the start */
    bool bos_ws_seen;  /* the last piece consumed the leading space */
    bool any_text;     /* some text has been produced */
    uint8_t pend[4];   /* bytes of an incomplete UTF-8 character from byte pieces */
    int n_pend;
    char *buf;         /* output buffer, owned */
    size_t cap;
} tok_stream;

int tok_stream_init(tok_stream *s, const tok_vocab *v, unsigned flags);
/* Push id; *out points to *len bytes (possibly 0) valid until the next call. -1 + error for a bad id. */
int tok_stream_push(tok_stream *s, int32_t id, const char **out, size_t *len);
/* End of sequence: whatever is pending (an incomplete character becomes U+FFFD per byte). Resets the stream. */
int tok_stream_flush(tok_stream *s, const char **out, size_t *len);
void tok_stream_free(tok_stream *s);

#endif
