/* tok: SentencePiece-compatible BPE tokenizer. See tok.h and docs/tokenizer.md.
 *
 * Layout: vocabulary storage + hash maps, loaders (SentencePiece protobuf, GGUF, llama2.c), the normalizer,
 * the BPE merge loop (binary heap of adjacent pairs, linked list of symbols: O(n log n)), special-token
 * pre-splitting, decoding and streaming decoding, GGUF writing. */
#include "tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define TOK_MAX_PIECES (1 << 24)
#define TOK_MAX_PIECE_LEN 8000 /* SentencePiece's kMaxPieceSize */
#define TOK_YUAN_N 134953
#define TOK_YUAN_EOD 77185

static const char SPACE_SYM[] = "\xe2\x96\x81"; /* U+2581 */
static const char REPL_CHAR[] = "\xef\xbf\xbd";  /* U+FFFD */

/* ---- hash map piece -> id (open addressing; keys are the stored pieces) ------------------------------ */
typedef struct {
    uint64_t *slot; /* (hash >> 32) << 32 | id; UINT64_MAX = empty */
    uint32_t mask;
    uint32_t count;
} tok_map;

/* A set of pieces matched "longest first" at a text position (user-defined pieces, special tokens). */
typedef struct {
    tok_map map;
    uint32_t *lens; /* distinct piece lengths, descending */
    int n_lens;
    uint8_t first[256]; /* first[b]: some piece starts with byte b */
    int n;
} tok_matcher;

struct tok_vocab {
    int32_t n;
    char *arena; /* all pieces, each NUL-terminated */
    size_t arena_len, arena_cap;
    uint32_t *off, *len;
    float *score;
    uint8_t *type;
    uint8_t *special;
    uint8_t *dec_type; /* type of PieceToId(piece(id)) (SentencePiece's decoder looks ids up again) */
    int32_t cap;
    tok_map normal;   /* NORMAL, USER_DEFINED, UNUSED */
    tok_map reserved; /* CONTROL, UNKNOWN, BYTE */
    tok_matcher user; /* USER_DEFINED pieces (always matched, like SentencePiece) */
    tok_matcher spec; /* special set (matched with TOK_ENC_SPECIAL) */
    int32_t byte_id[256];
    int32_t bos, eos, unk, pad;
    bool add_dummy_prefix, remove_extra_ws, escape_ws, byte_fallback, ws_suffix, split_digits;
    bool has_unused;
    bool unigram;                   /* SentencePiece unigram model (Viterbi) instead of BPE */
    float min_score, max_score;     /* over NORMAL pieces (unigram: unknown penalty, user-defined bonus) */
    bool is_yuan;
    uint8_t isolated[128]; /* ASCII byte in no mergeable piece longer than 1 byte: a hard BPE boundary */
    char *unk_surface;
    size_t max_piece_len;
    /* precompiled normalization rules (nmt_nfkc...): <u32 trie bytes><darts double array><NUL-terminated
     * replacement strings>, copied from the model; NULL for the identity normalizer */
    uint8_t *charsmap;
    size_t charsmap_len;
    const uint8_t *trie;  /* units of 4 bytes (little-endian) */
    uint32_t trie_units;
    const char *repl;     /* replacement strings */
    size_t repl_len;
};

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    while (n >= 8) {
        uint64_t x;
        memcpy(&x, s, 8);
        h = (h ^ x) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8, n -= 8;
    }
    uint64_t x = 0;
    memcpy(&x, s, n);
    h = (h ^ x) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static inline const char *piece_ptr(const tok_vocab *v, int32_t id) { return v->arena + v->off[id]; }

static void map_free(tok_map *m) {
    free(m->slot);
    memset(m, 0, sizeof *m);
}

static int map_init(tok_map *m, uint32_t expect) {
    uint32_t cap = 16;
    while (cap < 2u * expect + 16) cap <<= 1;
    m->slot = moec_malloc(sizeof(uint64_t) * cap);
    if (!m->slot) return -1;
    memset(m->slot, 0xff, sizeof(uint64_t) * cap);
    m->mask = cap - 1;
    m->count = 0;
    return 0;
}

#define SLOT_EMPTY UINT64_MAX
#define SLOT_TAG(h) ((h) & 0xffffffff00000000ull)

static int32_t map_get(const tok_vocab *v, const tok_map *m, const char *s, size_t n) {
    if (!m->slot) return -1;
    uint64_t h = hash_bytes(s, n), tag = SLOT_TAG(h);
    uint32_t i = (uint32_t)h & m->mask;
    for (;;) {
        uint64_t e = m->slot[i];
        if (e == SLOT_EMPTY) return -1;
        if (SLOT_TAG(e) == tag) {
            int32_t id = (int32_t)(uint32_t)e;
            if (v->len[id] == n && memcmp(piece_ptr(v, id), s, n) == 0) return id;
        }
        i = (i + 1) & m->mask;
    }
}

/* Insert id; returns the id already holding that piece (not inserted), -1 if inserted, -2 on error. */
static int32_t map_put(const tok_vocab *v, tok_map *m, int32_t id) {
    if ((m->count + 1) * 2 > m->mask + 1) { /* grow */
        tok_map nm;
        if (map_init(&nm, (m->mask + 1)) != 0) return -2;
        for (uint32_t i = 0; i <= m->mask; i++) {
            uint64_t e = m->slot[i];
            if (e == SLOT_EMPTY) continue;
            int32_t eid = (int32_t)(uint32_t)e;
            uint32_t j = (uint32_t)hash_bytes(piece_ptr(v, eid), v->len[eid]) & nm.mask;
            while (nm.slot[j] != SLOT_EMPTY) j = (j + 1) & nm.mask;
            nm.slot[j] = e;
            nm.count++;
        }
        free(m->slot);
        *m = nm;
    }
    const char *s = piece_ptr(v, id);
    size_t n = v->len[id];
    uint64_t h = hash_bytes(s, n), tag = SLOT_TAG(h);
    uint32_t i = (uint32_t)h & m->mask;
    for (;;) {
        uint64_t e = m->slot[i];
        if (e == SLOT_EMPTY) break;
        int32_t eid = (int32_t)(uint32_t)e;
        if (SLOT_TAG(e) == tag && v->len[eid] == n && memcmp(piece_ptr(v, eid), s, n) == 0) return eid;
        i = (i + 1) & m->mask;
    }
    m->slot[i] = tag | (uint32_t)id;
    m->count++;
    return -1;
}

static void matcher_free(tok_matcher *mt) {
    map_free(&mt->map);
    free(mt->lens);
    memset(mt, 0, sizeof *mt);
}

/* Build a matcher over the ids with sel(v, id) true. */
static int matcher_build(tok_matcher *mt, const tok_vocab *v, bool (*sel)(const tok_vocab *, int32_t)) {
    matcher_free(mt);
    int n = 0;
    for (int32_t i = 0; i < v->n; i++) n += sel(v, i);
    mt->n = n;
    if (n == 0) return 0;
    if (map_init(&mt->map, (uint32_t)n) != 0) return -1;
    mt->lens = moec_malloc(sizeof(uint32_t) * (size_t)n);
    if (!mt->lens) return -1;
    for (int32_t i = 0; i < v->n; i++) {
        if (!sel(v, i)) continue;
        int32_t r = map_put(v, &mt->map, i);
        if (r == -2) return -1;
        if (r >= 0) continue; /* same string twice: the first id wins */
        mt->first[(uint8_t)piece_ptr(v, i)[0]] = 1;
        uint32_t l = v->len[i];
        int k = 0;
        while (k < mt->n_lens && mt->lens[k] > l) k++;
        if (k < mt->n_lens && mt->lens[k] == l) continue;
        memmove(mt->lens + k + 1, mt->lens + k, sizeof(uint32_t) * (size_t)(mt->n_lens - k));
        mt->lens[k] = l;
        mt->n_lens++;
    }
    return 0;
}

/* Longest piece of the set that is a prefix of s[0..n); returns its length (0 if none) and *id. */
static size_t matcher_match(const tok_vocab *v, const tok_matcher *mt, const char *s, size_t n, int32_t *id) {
    if (mt->n == 0 || n == 0 || !mt->first[(uint8_t)s[0]]) return 0;
    for (int k = 0; k < mt->n_lens; k++) {
        size_t l = mt->lens[k];
        if (l > n) continue;
        int32_t r = map_get(v, &mt->map, s, l);
        if (r >= 0) {
            *id = r;
            return l;
        }
    }
    return 0;
}

static bool sel_user(const tok_vocab *v, int32_t i) { return v->type[i] == TOK_USER_DEFINED; }
static bool sel_special(const tok_vocab *v, int32_t i) { return v->special[i] != 0; }

/* ---- vocabulary building --------------------------------------------------------------------------- */
static tok_vocab *vocab_new(void) {
    tok_vocab *v = moec_calloc(1, sizeof *v);
    if (!v) return NULL;
    v->bos = v->eos = v->unk = v->pad = -1;
    v->add_dummy_prefix = true;
    v->escape_ws = true;
    for (int i = 0; i < 256; i++) v->byte_id[i] = -1;
    return v;
}

void tok_free(tok_vocab *v) {
    if (!v) return;
    free(v->arena);
    free(v->off);
    free(v->len);
    free(v->score);
    free(v->type);
    free(v->special);
    free(v->dec_type);
    map_free(&v->normal);
    map_free(&v->reserved);
    matcher_free(&v->user);
    matcher_free(&v->spec);
    free(v->unk_surface);
    free(v->charsmap);
    free(v);
}

static int vocab_reserve(tok_vocab *v, int32_t n) {
    if (n <= v->cap) return 0;
    int32_t cap = v->cap ? v->cap : 256;
    while (cap < n) cap = cap > TOK_MAX_PIECES / 2 ? TOK_MAX_PIECES + 64 : cap * 2;
#define GROW(field)                                                                                \
    do {                                                                                           \
        void *p_ = moec_realloc(v->field, sizeof(*v->field) * (size_t)cap);                        \
        if (!p_) return -1;                                                                        \
        v->field = p_;                                                                             \
    } while (0)
    GROW(off);
    GROW(len);
    GROW(score);
    GROW(type);
    GROW(special);
    GROW(dec_type);
#undef GROW
    v->cap = cap;
    return 0;
}

/* Append a piece (copied). */
static int vocab_push(tok_vocab *v, const char *s, size_t n, float score, int type) {
    if (v->n >= TOK_MAX_PIECES) return moec_set_error("too many pieces (more than %d)", TOK_MAX_PIECES);
    if (n >= TOK_MAX_PIECE_LEN) return moec_set_error("piece %d is too long (%zu bytes)", v->n, n);
    if (vocab_reserve(v, v->n + 1) != 0) return -1;
    size_t need = v->arena_len + n + 1;
    if (need > v->arena_cap) {
        size_t cap = v->arena_cap ? v->arena_cap : 4096;
        while (cap < need) cap *= 2;
        char *p = moec_realloc(v->arena, cap);
        if (!p) return -1;
        v->arena = p;
        v->arena_cap = cap;
    }
    if (v->arena_len > UINT32_MAX - n - 1) return moec_set_error("vocabulary too large");
    memcpy(v->arena + v->arena_len, s, n);
    v->arena[v->arena_len + n] = 0;
    v->off[v->n] = (uint32_t)v->arena_len;
    v->len[v->n] = (uint32_t)n;
    v->arena_len += n + 1;
    v->score[v->n] = score;
    v->type[v->n] = (uint8_t)type;
    v->special[v->n] = 0;
    v->dec_type[v->n] = (uint8_t)type;
    v->n++;
    return 0;
}

static bool is_normal_type(int t) { return t == TOK_NORMAL || t == TOK_USER_DEFINED || t == TOK_UNUSED; }

/* "<0xNN>" -> NN, else -1. */
static int piece_to_byte(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int val = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        val = val * 16 + d;
    }
    return val;
}

static int32_t add_special_nobuild(tok_vocab *v, const char *piece);

static const char *const YUAN_ADDED[5] = {"<mask>", "<predict>", "<FIM_SUFFIX>", "<FIM_PREFIX>", "<FIM_MIDDLE>"};
static const char *const YUAN_NAMED[] = {"<eod>", "<n>", "<sep>", "<pad>", "<jupyter_start>", "<jupyter_text>",
                                         "<jupyter_code>", "<jupyter_output>", "<empty_output>",
                                         "<commit_before>", "<commit_msg>", "<commit_after>"};

/* Specials: control and unknown pieces, plus the Yuan set. */
static int vocab_mark_specials(tok_vocab *v) {
    for (int32_t i = 0; i < v->n; i++)
        if (v->type[i] == TOK_CONTROL || v->type[i] == TOK_UNKNOWN) v->special[i] = 1;
    return 0;
}

/* Check the whole vocab and build the maps. strict: SentencePiece's rules (duplicates, unk, byte pieces).
 * `what` names the file in messages. */
static int vocab_finalize(tok_vocab *v, const char *what, const char *bos_piece, const char *eos_piece,
                          const char *unk_piece, const char *pad_piece, bool strict) {
    CHECK(v->n > 0, "%s: empty vocabulary", what);
    TRY(map_init(&v->normal, (uint32_t)v->n));
    TRY(map_init(&v->reserved, 64));
    v->unk = -1;
    v->max_piece_len = 0;
    bool byte_found[256] = {false};
    int n_bytes = 0;
    for (int32_t i = 0; i < v->n; i++) {
        const char *s = piece_ptr(v, i);
        size_t n = v->len[i];
        int t = v->type[i];
        CHECK(t >= TOK_NORMAL && t <= TOK_BYTE, "%s: piece %d has invalid type %d", what, i, t);
        CHECK(n > 0, "%s: piece %d is empty", what, i);
        CHECK(memchr(s, 0, n) == NULL, "%s: piece %d contains a NUL byte", what, i);
        if (n > v->max_piece_len) v->max_piece_len = n;
        int32_t r = map_put(v, is_normal_type(t) ? &v->normal : &v->reserved, i);
        if (r == -2) goto fail;
        CHECK(r < 0, "%s: duplicate piece '%.*s' (ids %d and %d)", what, (int)(n > 64 ? 64 : n), s, r, i);
        if (t == TOK_UNKNOWN) {
            /* SentencePiece allows one; GGUF files (phi-3) mark padding pieces as unknown too */
            CHECK(v->unk < 0 || !strict, "%s: more than one unknown piece (ids %d and %d)", what, v->unk, i);
            if (v->unk < 0) v->unk = i;
        }
        if (t == TOK_BYTE) {
            int b = piece_to_byte(s, n);
            CHECK(b >= 0, "%s: byte piece %d '%.*s' is invalid", what, i, (int)(n > 64 ? 64 : n), s);
            if (!byte_found[b]) n_bytes++;
            byte_found[b] = true;
            v->byte_id[b] = i;
        }
    }
    if (v->byte_fallback)
        CHECK(n_bytes == 256, "%s: byte_fallback is set but only %d of the 256 byte pieces exist", what, n_bytes);
    CHECK(v->unk >= 0 || v->byte_fallback, "%s: no unknown piece and no byte fallback", what);
    /* byte pieces are looked up as pieces (reserved map first), as SentencePiece does */
    for (int b = 0; b < 256; b++) {
        char bp[8];
        snprintf(bp, sizeof bp, "<0x%02X>", b);
        int32_t id = tok_find(v, bp);
        v->byte_id[b] = id;
    }
    /* dec_type[i] = type of tok_find(piece i): differs from type[i] only for a normal piece whose text is also
     * a reserved piece (the reserved one wins the lookup) */
    for (int32_t i = 0; i < v->n; i++) v->dec_type[i] = v->type[i];
    for (int32_t i = 0; i < v->n; i++) {
        if (is_normal_type(v->type[i])) continue;
        int32_t j = map_get(v, &v->normal, piece_ptr(v, i), v->len[i]);
        if (j >= 0) v->dec_type[j] = v->type[i];
    }
    /* bos/eos/unk/pad as SentencePiece defines them: the named piece, if it has the right type */
    {
        int32_t id = tok_find(v, bos_piece);
        v->bos = (id >= 0 && v->type[id] == TOK_CONTROL) ? id : -1;
        id = tok_find(v, eos_piece);
        v->eos = (id >= 0 && v->type[id] == TOK_CONTROL) ? id : -1;
        id = tok_find(v, pad_piece);
        v->pad = (id >= 0 && v->type[id] == TOK_CONTROL) ? id : -1;
        id = tok_find(v, unk_piece);
        if (id >= 0 && v->type[id] == TOK_UNKNOWN) v->unk = id;
    }
    if (!v->unk_surface) {
        v->unk_surface = moec_strdup(" \xe2\x81\x87 ");
        TRY_PTR(v->unk_surface);
    }
    TRY(vocab_mark_specials(v));
    TRY(matcher_build(&v->user, v, sel_user));
    /* UNUSED pieces matter to the merge loop only if some merge can form them (two pieces concatenating to them):
     * padding rows like "[PAD134960]" never can, and need not switch off segmentation */
    for (int32_t i = 0; i < v->n && !v->has_unused; i++) {
        if (v->type[i] != TOK_UNUSED) continue;
        const char *s = piece_ptr(v, i);
        for (uint32_t k = 1; k < v->len[i] && !v->has_unused; k++)
            if (map_get(v, &v->normal, s, k) >= 0 && map_get(v, &v->normal, s + k, v->len[i] - k) >= 0)
                v->has_unused = true;
    }
    v->min_score = 3.402823466e+38f; /* FLT_MAX, FLT_MIN as SentencePiece starts them */
    v->max_score = 1.175494351e-38f;
    for (int32_t i = 0; i < v->n; i++) {
        if (v->type[i] != TOK_NORMAL) continue;
        if (v->score[i] < v->min_score) v->min_score = v->score[i];
        if (v->score[i] > v->max_score) v->max_score = v->score[i];
    }
    memset(v->isolated, 1, sizeof v->isolated);
    for (int32_t i = 0; i < v->n; i++) {
        if (!is_normal_type(v->type[i]) || v->len[i] < 2) continue;
        const uint8_t *s = (const uint8_t *)piece_ptr(v, i);
        for (uint32_t k = 0; k < v->len[i]; k++)
            if (s[k] < 128) v->isolated[s[k]] = 0;
    }
    /* Yuan 2.0: 134953 pieces with <eod> at 77185 -> HF's added tokens and named specials */
    if (v->n >= TOK_YUAN_N && v->len[TOK_YUAN_EOD] == 5 && memcmp(piece_ptr(v, TOK_YUAN_EOD), "<eod>", 5) == 0) {
        v->is_yuan = true;
        for (size_t k = 0; k < sizeof YUAN_NAMED / sizeof *YUAN_NAMED; k++) {
            int32_t id = tok_find(v, YUAN_NAMED[k]);
            if (id >= 0) v->special[id] = 1;
        }
        for (int k = 0; k < 5; k++)
            if (add_special_nobuild(v, YUAN_ADDED[k]) < 0) goto fail;
        v->eos = TOK_YUAN_EOD;
    }
    TRY(matcher_build(&v->spec, v, sel_special));
    return 0;
fail:
    return -1;
}

int32_t tok_add_special(tok_vocab *v, const char *piece) {
    int32_t id = add_special_nobuild(v, piece);
    if (id < 0) return -1;
    if (matcher_build(&v->spec, v, sel_special) != 0) return -1;
    return id;
}

static int32_t add_special_nobuild(tok_vocab *v, const char *piece) {
    size_t n = strlen(piece);
    CHECK(n > 0, "tok_add_special: empty piece");
    int32_t id = tok_find_n(v, piece, n);
    if (id < 0) {
        TRY(vocab_push(v, piece, n, 0.0f, TOK_CONTROL));
        id = v->n - 1;
        int32_t r = map_put(v, &v->reserved, id);
        if (r == -2) goto fail;
        if (n > v->max_piece_len) v->max_piece_len = n;
    }
    v->special[id] = 1;
    return id;
fail:
    return -1;
}

/* Take a copy of a precompiled charsmap blob and check its framing (the trie itself is bounds-checked on use). */
static int vocab_set_charsmap(tok_vocab *v, const void *blob, size_t len, const char *what) {
    uint32_t trie_bytes;
    CHECK(len > 4, "%s: precompiled_charsmap is too short (%zu bytes)", what, len);
    memcpy(&trie_bytes, blob, 4);
    CHECK(trie_bytes < len - 4 + 1 && trie_bytes >= 4 && trie_bytes % 4 == 0,
          "%s: precompiled_charsmap trie size %u does not fit the %zu-byte blob", what, trie_bytes, len);
    free(v->charsmap);
    v->charsmap = moec_malloc(len + 1);
    TRY_PTR(v->charsmap);
    memcpy(v->charsmap, blob, len);
    v->charsmap[len] = 0; /* the last replacement string is terminated even in a damaged blob */
    v->charsmap_len = len;
    v->trie = v->charsmap + 4;
    v->trie_units = trie_bytes / 4;
    v->repl = (const char *)v->charsmap + 4 + trie_bytes;
    v->repl_len = len - 4 - trie_bytes;
    return 0;
fail:
    return -1;
}

/* ---- SentencePiece protobuf ------------------------------------------------------------------------ */
typedef struct {
    const uint8_t *p, *end;
} pb_buf;

static int pb_varint(pb_buf *b, uint64_t *out) {
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end) return moec_set_error("truncated varint");
        uint8_t c = *b->p++;
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = r;
            return 0;
        }
    }
    return moec_set_error("varint longer than 10 bytes");
}

/* Read one field header and its payload. For wire type 2, *sub is the payload; for 0 *val; 1/5 *val raw. */
static int pb_field(pb_buf *b, uint32_t *field, int *wire, uint64_t *val, pb_buf *sub) {
    uint64_t key;
    if (pb_varint(b, &key) != 0) return -1;
    *field = (uint32_t)(key >> 3);
    *wire = (int)(key & 7);
    if (*field == 0 || key >> 3 > 0x1fffffff) return moec_set_error("invalid field number");
    switch (*wire) {
    case 0: return pb_varint(b, val);
    case 1:
        if (b->end - b->p < 8) return moec_set_error("truncated fixed64");
        memcpy(val, b->p, 8);
        b->p += 8;
        return 0;
    case 5: {
        if (b->end - b->p < 4) return moec_set_error("truncated fixed32");
        uint32_t x;
        memcpy(&x, b->p, 4);
        *val = x;
        b->p += 4;
        return 0;
    }
    case 2: {
        uint64_t n;
        if (pb_varint(b, &n) != 0) return -1;
        if (n > (uint64_t)(b->end - b->p)) return moec_set_error("length %llu past the end", (unsigned long long)n);
        sub->p = b->p;
        sub->end = b->p + n;
        b->p += n;
        return 0;
    }
    default: return moec_set_error("unsupported wire type %d", *wire);
    }
}

static char *pb_strdup(pb_buf s) {
    size_t n = (size_t)(s.end - s.p);
    char *r = moec_malloc(n + 1);
    if (!r) return NULL;
    memcpy(r, s.p, n);
    r[n] = 0;
    return r;
}

tok_vocab *tok_load_spm(const void *data, size_t len, const char *name) {
    tok_vocab *v = vocab_new();
    char *bos = NULL, *eos = NULL, *unk = NULL, *pad = NULL;
    if (!v) return NULL;
    pb_buf b = {data, (const uint8_t *)data + len};
    int64_t model_type = 1; /* UNIGRAM default */
    v->remove_extra_ws = true; /* proto2 defaults of NormalizerSpec */
    pb_buf charsmap = {0, 0};
    CHECK(len > 0, "%s: empty file", name);
    while (b.p < b.end) {
        uint32_t f;
        int w;
        uint64_t val = 0;
        pb_buf sub = {0, 0};
        if (pb_field(&b, &f, &w, &val, &sub) != 0) goto bad;
        if (f == 1 && w == 2) { /* SentencePiece */
            pb_buf ps = {0, 0};
            bool have_piece = false;
            float score = 0;
            uint64_t type = TOK_NORMAL;
            while (sub.p < sub.end) {
                uint32_t f2;
                int w2;
                uint64_t v2 = 0;
                pb_buf s2 = {0, 0};
                if (pb_field(&sub, &f2, &w2, &v2, &s2) != 0) goto bad;
                if (f2 == 1 && w2 == 2) ps = s2, have_piece = true;
                else if (f2 == 2 && w2 == 5) {
                    uint32_t x = (uint32_t)v2;
                    memcpy(&score, &x, 4);
                } else if (f2 == 3 && w2 == 0) type = v2;
            }
            CHECK(have_piece, "%s: piece %d has no text", name, v->n);
            CHECK(type >= 1 && type <= 6, "%s: piece %d has invalid type %llu", name, v->n, (unsigned long long)type);
            TRY(vocab_push(v, (const char *)ps.p, (size_t)(ps.end - ps.p), score, (int)type));
        } else if (f == 2 && w == 2) { /* TrainerSpec */
            while (sub.p < sub.end) {
                uint32_t f2;
                int w2;
                uint64_t v2 = 0;
                pb_buf s2 = {0, 0};
                if (pb_field(&sub, &f2, &w2, &v2, &s2) != 0) goto bad;
                if (w2 == 0) {
                    if (f2 == 3) model_type = (int64_t)v2;
                    else if (f2 == 35) v->byte_fallback = v2 != 0;
                    else if (f2 == 24) v->ws_suffix = v2 != 0;
                    else if (f2 == 25) v->split_digits = v2 != 0;
                } else if (w2 == 2) {
                    char **dst = f2 == 45 ? &unk : f2 == 46 ? &bos : f2 == 47 ? &eos : f2 == 48 ? &pad
                               : f2 == 44 ? &v->unk_surface : NULL;
                    if (dst) {
                        free(*dst);
                        *dst = pb_strdup(s2);
                        TRY_PTR(*dst);
                    }
                }
            }
        } else if (f == 3 && w == 2) { /* NormalizerSpec */
            while (sub.p < sub.end) {
                uint32_t f2;
                int w2;
                uint64_t v2 = 0;
                pb_buf s2 = {0, 0};
                if (pb_field(&sub, &f2, &w2, &v2, &s2) != 0) goto bad;
                if (w2 == 0) {
                    if (f2 == 3) v->add_dummy_prefix = v2 != 0;
                    else if (f2 == 4) v->remove_extra_ws = v2 != 0;
                    else if (f2 == 5) v->escape_ws = v2 != 0;
                } else if (w2 == 2 && f2 == 2) charsmap = s2;
            }
        }
    }
    CHECK(v->n > 0, "%s: empty vocabulary (no pieces)", name);
    CHECK(model_type == 1 || model_type == 2,
          "%s: SentencePiece model type %lld (%s) is not supported (only BPE and unigram)", name,
          (long long)model_type, model_type == 3 ? "word" : model_type == 4 ? "char" : "unknown");
    v->unigram = model_type == 1;
    if (charsmap.end > charsmap.p)
        TRY(vocab_set_charsmap(v, charsmap.p, (size_t)(charsmap.end - charsmap.p), name));
    TRY(vocab_finalize(v, name, bos ? bos : "<s>", eos ? eos : "</s>", unk ? unk : "<unk>", pad ? pad : "<pad>",
                       true));
    free(bos), free(eos), free(unk), free(pad);
    return v;
bad:
    moec_wrap_error("%s: not a valid SentencePiece model (byte %zu)", name, (size_t)(b.p - (const uint8_t *)data));
fail:
    free(bos), free(eos), free(unk), free(pad);
    tok_free(v);
    return NULL;
}

/* ---- llama2.c tokenizer.bin ------------------------------------------------------------------------ */
tok_vocab *tok_load_llama2c(const void *data, size_t len, const char *name) {
    const uint8_t *p = data, *end = p + len;
    tok_vocab *v = vocab_new();
    char *buf = NULL;
    if (!v) return NULL;
    int32_t max_len;
    CHECK(len >= 4, "%s: llama2.c tokenizer: too short", name);
    memcpy(&max_len, p, 4);
    p += 4;
    CHECK(max_len > 0 && max_len < TOK_MAX_PIECE_LEN, "%s: llama2.c tokenizer: bad max_token_length %d", name, max_len);
    buf = moec_malloc((size_t)max_len * 3 + 8);
    TRY_PTR(buf);
    while (p < end) {
        float score;
        int32_t n;
        CHECK(end - p >= 8, "%s: llama2.c tokenizer: truncated at token %d", name, v->n);
        memcpy(&score, p, 4);
        memcpy(&n, p + 4, 4);
        p += 8;
        CHECK(n > 0 && n <= max_len && n <= end - p, "%s: llama2.c tokenizer: token %d has bad length %d", name, v->n, n);
        /* spaces were written as ' ' (U+2581 in SentencePiece); bos/eos as "\n<s>\n", "\n</s>\n" */
        size_t k = 0;
        for (int32_t i = 0; i < n; i++) {
            if (p[i] == ' ') memcpy(buf + k, SPACE_SYM, 3), k += 3;
            else buf[k++] = (char)p[i];
        }
        int type = TOK_NORMAL;
        const char *s = buf;
        if (v->n == 0 && k == 5 && memcmp(buf, "<unk>", 5) == 0) type = TOK_UNKNOWN;
        else if (k == 5 && memcmp(buf, "\n<s>\n", 5) == 0) s = buf + 1, k = 3, type = TOK_CONTROL;
        else if (k == 6 && memcmp(buf, "\n</s>\n", 6) == 0) s = buf + 1, k = 4, type = TOK_CONTROL;
        else if (piece_to_byte(buf, k) >= 0) type = TOK_BYTE;
        TRY(vocab_push(v, s, k, score, type));
        p += n;
    }
    int nb = 0;
    for (int32_t i = 0; i < v->n; i++) nb += v->type[i] == TOK_BYTE;
    v->byte_fallback = nb == 256;
    if (!v->byte_fallback)
        for (int32_t i = 0; i < v->n; i++)
            if (v->type[i] == TOK_BYTE) v->type[i] = TOK_NORMAL;
    v->remove_extra_ws = false;
    TRY(vocab_finalize(v, name, "<s>", "</s>", "<unk>", "<pad>", true));
    free(buf);
    return v;
fail:
    free(buf);
    tok_free(v);
    return NULL;
}

/* ---- GGUF ---------------------------------------------------------------------------------------------- */
tok_vocab *tok_load_gguf(const gguf_file *f) {
    tok_vocab *v = vocab_new();
    if (!v) return NULL;
    gguf_str model;
    gguf_vtype et;
    uint64_t n = 0, ns = 0, nt = 0;
    const void *sc = NULL, *ty = NULL;
    const char *what = "gguf tokenizer";
    TRY(gguf_get_str(f, "tokenizer.ggml.model", &model));
    CHECK(model.len == 5 && memcmp(model.s, "llama", 5) == 0,
          "%s: tokenizer.ggml.model is '%.*s', only 'llama' (SentencePiece) is supported", what,
          (int)(model.len > 32 ? 32 : model.len), model.s);
    TRY(gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &n, &sc));
    CHECK(et == GGUF_STR, "%s: tokenizer.ggml.tokens is not a string array", what);
    CHECK(n > 0 && n < TOK_MAX_PIECES, "%s: bad token count %llu", what, (unsigned long long)n);
    sc = NULL;
    if (gguf_find_key(f, "tokenizer.ggml.scores") >= 0) {
        TRY(gguf_get_arr(f, "tokenizer.ggml.scores", &et, &ns, &sc));
        CHECK(et == GGUF_F32 && ns == n, "%s: tokenizer.ggml.scores must be %llu f32", what, (unsigned long long)n);
    }
    if (gguf_find_key(f, "tokenizer.ggml.token_type") >= 0) {
        TRY(gguf_get_arr(f, "tokenizer.ggml.token_type", &et, &nt, &ty));
        CHECK(et == GGUF_I32 && nt == n, "%s: tokenizer.ggml.token_type must be %llu i32", what,
              (unsigned long long)n);
    }
    int nb = 0;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        TRY(gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &s));
        float score = 0;
        int32_t t = TOK_NORMAL;
        if (sc) memcpy(&score, (const uint8_t *)sc + 4 * i, 4);
        if (ty) memcpy(&t, (const uint8_t *)ty + 4 * i, 4);
        CHECK(t >= TOK_NORMAL && t <= TOK_BYTE, "%s: token %llu has invalid type %d", what, (unsigned long long)i, t);
        nb += t == TOK_BYTE;
        TRY(vocab_push(v, s.s, (size_t)s.len, score, t));
    }
    v->byte_fallback = nb == 256;
    bool b;
    TRY(gguf_get_bool_or(f, "tokenizer.ggml.add_space_prefix", true, &b));
    v->add_dummy_prefix = b;
    TRY(gguf_get_bool_or(f, "tokenizer.ggml.remove_extra_whitespaces", false, &b));
    v->remove_extra_ws = b;
    if (gguf_find_key(f, "tokenizer.ggml.precompiled_charsmap") >= 0) {
        uint64_t nc;
        const void *cm;
        TRY(gguf_get_arr(f, "tokenizer.ggml.precompiled_charsmap", &et, &nc, &cm));
        CHECK(et == GGUF_U8 || et == GGUF_I8, "%s: tokenizer.ggml.precompiled_charsmap is not a byte array", what);
        if (nc > 0) TRY(vocab_set_charsmap(v, cm, (size_t)nc, what));
    }
    TRY(vocab_finalize(v, what, "<s>", "</s>", "<unk>", "<pad>", false));
    /* explicit ids override the named pieces */
    {
        static const char *keys[4] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                      "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
        int32_t *dst[4] = {&v->bos, &v->eos, &v->unk, &v->pad};
        for (int k = 0; k < 4; k++) {
            if (gguf_find_key(f, keys[k]) < 0) continue;
            uint32_t id;
            TRY(gguf_get_u32(f, keys[k], &id));
            CHECK(id < (uint32_t)v->n, "%s: %s = %u is out of range", what, keys[k], id);
            *dst[k] = (int32_t)id;
        }
        CHECK(v->unk < 0 || v->type[v->unk] == TOK_UNKNOWN || v->byte_fallback,
              "%s: unknown_token_id %d is not an unknown piece", what, v->unk);
    }
    return v;
fail:
    if (strncmp(moec_last_error(), what, strlen(what)) != 0) moec_wrap_error("%s", what);
    tok_free(v);
    return NULL;
}

int tok_write_gguf(const tok_vocab *v, gguf_writer *w) {
    const char **strs = NULL;
    uint64_t *lens = NULL;
    int32_t *types = NULL;
    int rc = -1;
    size_t n = (size_t)v->n;
    CHECK(!v->unigram, "a unigram vocabulary cannot be written as GGUF tokenizer keys (llama = BPE only)");
    strs = moec_malloc(sizeof *strs * n);
    lens = moec_malloc(sizeof *lens * n);
    types = moec_malloc(sizeof *types * n);
    TRY_PTR(strs);
    TRY_PTR(lens);
    TRY_PTR(types);
    for (size_t i = 0; i < n; i++) {
        strs[i] = piece_ptr(v, (int32_t)i);
        lens[i] = v->len[i];
        types[i] = v->type[i];
    }
    TRY(gguf_w_set_str(w, "tokenizer.ggml.model", "llama"));
    TRY(gguf_w_set_arr_str(w, "tokenizer.ggml.tokens", n, strs, lens));
    TRY(gguf_w_set_arr(w, "tokenizer.ggml.scores", GGUF_F32, n, v->score));
    TRY(gguf_w_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, n, types));
    if (v->bos >= 0) TRY(gguf_w_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos));
    if (v->eos >= 0) TRY(gguf_w_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos));
    if (v->unk >= 0) TRY(gguf_w_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v->unk));
    if (v->pad >= 0) TRY(gguf_w_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)v->pad));
    TRY(gguf_w_set_bool(w, "tokenizer.ggml.add_bos_token", false));
    TRY(gguf_w_set_bool(w, "tokenizer.ggml.add_eos_token", false));
    TRY(gguf_w_set_bool(w, "tokenizer.ggml.add_space_prefix", v->add_dummy_prefix));
    TRY(gguf_w_set_bool(w, "tokenizer.ggml.remove_extra_whitespaces", v->remove_extra_ws));
    if (v->charsmap) TRY(gguf_w_set_arr(w, "tokenizer.ggml.precompiled_charsmap", GGUF_U8, v->charsmap_len, v->charsmap));
    rc = 0;
fail:
    free(strs);
    free(lens);
    free(types);
    return rc;
}

tok_vocab *tok_load(const char *path) {
    moec_mmap m = {0};
    tok_vocab *v = NULL;
    if (moec_mmap_open(&m, path) != 0) return NULL;
    if (m.size >= 4 && memcmp(m.data, "GGUF", 4) == 0) {
        moec_mmap_close(&m);
        gguf_file *f = gguf_open(path);
        if (!f) return NULL;
        v = tok_load_gguf(f);
        gguf_close(f);
        if (!v) moec_wrap_error("%s", path);
        return v;
    }
    v = tok_load_spm(m.data, m.size, path);
    if (!v) {
        /* not a SentencePiece model: maybe a llama2.c tokenizer.bin. Report the error of the format the file
         * looks like: a ModelProto starts with field 1 (byte 0x0a), a tokenizer.bin with a small int32. */
        char err[512];
        snprintf(err, sizeof err, "%s", moec_last_error());
        v = tok_load_llama2c(m.data, m.size, path);
        int32_t max_len = 0;
        if (m.size >= 4) memcpy(&max_len, m.data, 4);
        if (!v && m.size > 0 && m.data[0] == 0x0a) moec_set_error("%s", err);
        else if (!v && !(max_len > 0 && max_len < TOK_MAX_PIECE_LEN))
            moec_set_error("%s: not a vocabulary (neither GGUF, SentencePiece .model nor llama2.c tokenizer.bin)",
                           path);
    }
    moec_mmap_close(&m);
    return v;
}

/* ---- queries ---------------------------------------------------------------------------------------- */
int32_t tok_n_vocab(const tok_vocab *v) { return v->n; }
int32_t tok_bos(const tok_vocab *v) { return v->bos; }
int32_t tok_eos(const tok_vocab *v) { return v->eos; }
int32_t tok_unk(const tok_vocab *v) { return v->unk; }
int32_t tok_pad(const tok_vocab *v) { return v->pad; }
bool tok_add_dummy_prefix(const tok_vocab *v) { return v->add_dummy_prefix; }
bool tok_byte_fallback(const tok_vocab *v) { return v->byte_fallback; }
size_t tok_max_piece_len(const tok_vocab *v) { return v->max_piece_len; }

int32_t tok_find_n(const tok_vocab *v, const char *piece, size_t len) {
    int32_t id = map_get(v, &v->reserved, piece, len);
    if (id >= 0) return id;
    return map_get(v, &v->normal, piece, len);
}
int32_t tok_find(const tok_vocab *v, const char *piece) { return tok_find_n(v, piece, strlen(piece)); }

const char *tok_piece(const tok_vocab *v, int32_t id, size_t *len) {
    if (id < 0 || id >= v->n) return NULL;
    if (len) *len = v->len[id];
    return piece_ptr(v, id);
}
tok_piece_type tok_type(const tok_vocab *v, int32_t id) {
    return (id < 0 || id >= v->n) ? (tok_piece_type)0 : (tok_piece_type)v->type[id];
}
float tok_score(const tok_vocab *v, int32_t id) { return (id < 0 || id >= v->n) ? 0.0f : v->score[id]; }
bool tok_is_special(const tok_vocab *v, int32_t id) { return id >= 0 && id < v->n && v->special[id]; }

/* ---- UTF-8 (SentencePiece's strict decoder) ---------------------------------------------------------- */
static inline bool trail(uint8_t c) { return (c & 0xc0) == 0x80; }

/* Length of the valid UTF-8 character at s (n > 0 bytes available), or 0 if invalid there. */
static size_t utf8_valid_len(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) {
        if (n < 2 || !trail(s[1])) return 0;
        uint32_t cp = ((uint32_t)(c & 0x1f) << 6) | (s[1] & 0x3f);
        return cp >= 0x80 ? 2 : 0;
    }
    if ((c & 0xf0) == 0xe0) {
        if (n < 3 || !trail(s[1]) || !trail(s[2])) return 0;
        uint32_t cp = ((uint32_t)(c & 0x0f) << 12) | ((uint32_t)(s[1] & 0x3f) << 6) | (s[2] & 0x3f);
        return (cp >= 0x800 && (cp < 0xd800 || cp >= 0xe000)) ? 3 : 0;
    }
    if ((c & 0xf8) == 0xf0) {
        if (n < 4 || !trail(s[1]) || !trail(s[2]) || !trail(s[3])) return 0;
        uint32_t cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3f) << 12) |
                      ((uint32_t)(s[2] & 0x3f) << 6) | (s[3] & 0x3f);
        return (cp >= 0x10000 && cp <= 0x10ffff) ? 4 : 0;
    }
    return 0;
}

/* SentencePiece's OneCharLen: length from the lead byte only. */
static inline size_t one_char_len(uint8_t c) {
    static const uint8_t t[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return t[c >> 4];
}

/* ---- growable byte / int buffers ---------------------------------------------------------------------- */
typedef struct {
    char *p;
    size_t n, cap;
} tok_bytes;

static int bytes_reserve(tok_bytes *b, size_t extra) {
    size_t need;
    if (!moec_add_ok(b->n, extra, &need)) return moec_set_error("text too large");
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) return moec_set_error("text too large");
        cap *= 2;
    }
    char *p = moec_realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline void bytes_put(tok_bytes *b, const char *s, size_t n) { /* caller reserved */
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

typedef struct {
    int32_t *p;
    size_t n, cap;
} tok_ids;

static int ids_push(tok_ids *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *p = moec_realloc(a->p, cap * sizeof *p);
        if (!p) return -1;
        a->p = p;
        a->cap = cap;
    }
    a->p[a->n++] = id;
    return 0;
}

/* ---- normalizer (identity rules + whitespace handling, as SentencePiece's Normalizer) ----------------- */

/* Next normalized unit of raw input at s[0..n): out, out_len = the replacement bytes, returns bytes consumed. */
static size_t norm_prefix(const tok_vocab *v, const char *s, size_t n, const char **out, size_t *out_len) {
    int32_t id;
    size_t m = matcher_match(v, &v->user, s, n, &id);
    if (m) {
        *out = s;
        *out_len = m;
        return m;
    }
    if (v->trie) { /* longest rule of the darts-clone double array whose key is a prefix of s */
        size_t best = 0;
        uint32_t best_val = 0, pos = 0, unit;
        memcpy(&unit, v->trie, 4);
        pos ^= (unit >> 10) << ((unit & (1u << 9)) >> 6);
        for (size_t i = 0; i < n; i++) {
            uint8_t c = (uint8_t)s[i];
            pos ^= c;
            if (pos >= v->trie_units) break;
            memcpy(&unit, v->trie + 4 * (size_t)pos, 4);
            if ((unit & ((1u << 31) | 0xffu)) != c) break;
            pos ^= (unit >> 10) << ((unit & (1u << 9)) >> 6);
            if ((unit >> 8) & 1) {
                if (pos >= v->trie_units) break;
                uint32_t leaf;
                memcpy(&leaf, v->trie + 4 * (size_t)pos, 4);
                best = i + 1;
                best_val = leaf & 0x7fffffffu;
            }
        }
        if (best > 0 && best_val < v->repl_len) {
            *out = v->repl + best_val;
            const char *z = memchr(*out, 0, v->repl_len - best_val);
            *out_len = z ? (size_t)(z - *out) : v->repl_len - best_val;
            return best;
        }
    }
    size_t l = utf8_valid_len((const uint8_t *)s, n);
    if (!l) {
        *out = REPL_CHAR;
        *out_len = 3;
        return 1;
    }
    *out = s;
    *out_len = l;
    return l;
}

static int normalize(const tok_vocab *v, const char *s, size_t n, tok_bytes *out) {
    out->n = 0;
    if (n == 0) return 0;
    const char *o;
    size_t ol;
    if (v->remove_extra_ws) {
        while (n > 0) {
            size_t c = norm_prefix(v, s, n, &o, &ol);
            if (!(ol == 1 && o[0] == ' ')) break;
            s += c, n -= c;
        }
    }
    if (n == 0) return 0;
    size_t cap;
    if (!moec_mul_ok(n, 3, &cap) || !moec_add_ok(cap, 8, &cap)) return moec_set_error("text too large");
    if (bytes_reserve(out, cap) != 0) return -1;
    const char *ws = v->escape_ws ? SPACE_SYM : " ";
    size_t wsl = v->escape_ws ? 3 : 1;
    if (!v->ws_suffix && v->add_dummy_prefix) bytes_put(out, ws, wsl);
    bool prev_space = v->remove_extra_ws;
    while (n > 0) {
        size_t c = norm_prefix(v, s, n, &o, &ol);
        while (prev_space && ol > 0 && o[0] == ' ') o++, ol--;
        if (ol > 0) {
            for (size_t i = 0; i < ol; i++) {
                if (v->escape_ws && o[i] == ' ') bytes_put(out, SPACE_SYM, 3);
                else out->p[out->n++] = o[i];
            }
            prev_space = o[ol - 1] == ' ';
        }
        s += c, n -= c;
        if (!v->remove_extra_ws) prev_space = false;
    }
    if (v->remove_extra_ws) {
        while (out->n >= wsl && memcmp(out->p + out->n - wsl, ws, wsl) == 0) out->n -= wsl;
    }
    if (v->ws_suffix && v->add_dummy_prefix) bytes_put(out, ws, wsl);
    return 0;
}

/* ---- BPE --------------------------------------------------------------------------------------------------- */
typedef struct {
    float score;
    int32_t left, right;
    uint32_t size;
} tok_pair;

/* a before b in the agenda: higher score, then smaller left index */
static inline bool pair_before(const tok_pair *a, const tok_pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct {
    tok_pair *h;
    size_t n, cap;
} tok_heap;

static int heap_push(tok_heap *q, tok_pair e) {
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 256;
        tok_pair *p = moec_realloc(q->h, cap * sizeof *p);
        if (!p) return -1;
        q->h = p;
        q->cap = cap;
    }
    size_t i = q->n++;
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (!pair_before(&e, &q->h[par])) break;
        q->h[i] = q->h[par];
        i = par;
    }
    q->h[i] = e;
    return 0;
}

static tok_pair heap_pop(tok_heap *q) {
    tok_pair top = q->h[0], e = q->h[--q->n];
    size_t i = 0, n = q->n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, b = i;
        const tok_pair *best = &e;
        if (l < n && pair_before(&q->h[l], best)) b = l, best = &q->h[l];
        if (r < n && pair_before(&q->h[r], best)) b = r;
        if (b == i) break;
        q->h[i] = q->h[b];
        i = b;
    }
    if (n > 0) q->h[i] = e;
    return top;
}

typedef struct {
    int32_t prev, next;
    uint32_t start, len;
    bool freeze;
} tok_sym;

/* Reverse merges of UNUSED pieces (for resegmentation): merged string -> split point; last write wins. */
typedef struct {
    uint32_t start, len, left_len;
} tok_rev;

/* Unigram Viterbi: best path ending at each byte position. */
typedef struct {
    float score;
    int32_t start; /* -1: no path yet */
    int32_t id;
} tok_best;

typedef struct {
    tok_best *best;
    size_t best_cap;
    tok_sym *sym;
    size_t sym_cap;
    tok_heap heap;
    tok_rev *rev;
    size_t n_rev, rev_cap;
    tok_bytes norm;
} tok_work;

static void work_free(tok_work *w) {
    free(w->best);
    free(w->sym);
    free(w->heap.h);
    free(w->rev);
    free(w->norm.p);
}

static int maybe_pair(const tok_vocab *v, tok_work *w, const char *text, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    tok_sym *a = &w->sym[l], *b = &w->sym[r];
    if (a->freeze || b->freeze) return 0;
    uint32_t size = a->len + b->len;
    int32_t id = map_get(v, &v->normal, text + a->start, size);
    if (id < 0) return 0;
    tok_pair e = {v->score[id], l, r, size};
    if (heap_push(&w->heap, e) != 0) return -1;
    if (v->type[id] == TOK_UNUSED) {
        if (w->n_rev == w->rev_cap) {
            size_t cap = w->rev_cap ? w->rev_cap * 2 : 16;
            tok_rev *p = moec_realloc(w->rev, cap * sizeof *p);
            if (!p) return -1;
            w->rev = p;
            w->rev_cap = cap;
        }
        w->rev[w->n_rev++] = (tok_rev){a->start, size, a->len};
    }
    return 0;
}

static int32_t piece_to_id(const tok_vocab *v, const char *s, size_t n) {
    int32_t id = tok_find_n(v, s, n);
    return id >= 0 ? id : v->unk; /* may be -1: then emit_piece reports it */
}

/* Emit the final id(s) of symbol text s[0..n), resegmenting UNUSED pieces. */
static int emit_piece(const tok_vocab *v, tok_work *w, const char *text, uint32_t start, uint32_t n, tok_ids *out,
                      bool *prev_unk, int depth) {
    const char *s = text + start;
    int32_t id = piece_to_id(v, s, n);
    if (id >= 0 && v->type[id] == TOK_UNUSED && depth < TOK_MAX_PIECE_LEN) {
        for (size_t k = w->n_rev; k-- > 0;) {
            tok_rev *r = &w->rev[k];
            if (r->len == n && memcmp(text + r->start, s, n) == 0) {
                /* the recorded split refers to the same bytes at another place: use its lengths */
                if (emit_piece(v, w, text, start, r->left_len, out, prev_unk, depth + 1) != 0) return -1;
                return emit_piece(v, w, text, start + r->left_len, n - r->left_len, out, prev_unk, depth + 1);
            }
        }
    }
    bool is_unk = id < 0 || id == v->unk || v->type[id] == TOK_UNKNOWN;
    if (is_unk && v->byte_fallback) {
        for (uint32_t i = 0; i < n; i++) {
            int32_t b = v->byte_id[(uint8_t)s[i]];
            if (ids_push(out, b >= 0 ? b : v->unk) != 0) return -1;
        }
    } else if (is_unk && *prev_unk) {
        /* consecutive unknown pieces merge into one */
    } else {
        if (id < 0) return moec_set_error("text has an unknown character and the vocabulary has no <unk>");
        if (ids_push(out, id) != 0) return -1;
    }
    *prev_unk = is_unk;
    return 0;
}

/* BPE over the normalized segment t[0..tn) (independent of the rest of the text), appending ids. */
static int bpe_segment(const tok_vocab *v, tok_work *w, const char *t, size_t tn, tok_ids *out, bool *prev_unk) {
    int32_t ns = 0;
    for (size_t i = 0; i < tn;) {
        int32_t id;
        size_t l = matcher_match(v, &v->user, t + i, tn - i, &id);
        bool fr = l > 0;
        if (!l) {
            l = one_char_len((uint8_t)t[i]);
            if (l > tn - i) l = tn - i;
        }
        w->sym[ns] = (tok_sym){ns - 1, -1, (uint32_t)i, (uint32_t)l, fr};
        if (ns > 0) w->sym[ns - 1].next = ns;
        ns++;
        i += l;
    }
    if (ns == 0) return 0;
    w->heap.n = 0;
    for (int32_t i = 1; i < ns; i++)
        if (maybe_pair(v, w, t, i - 1, i) != 0) return -1;
    while (w->heap.n > 0) {
        tok_pair top = heap_pop(&w->heap);
        tok_sym *a = &w->sym[top.left], *b = &w->sym[top.right];
        if (a->len == 0 || b->len == 0 || a->len + b->len != top.size) continue;
        a->len += b->len;
        a->next = b->next;
        if (b->next >= 0) w->sym[b->next].prev = top.left;
        b->len = 0;
        if (maybe_pair(v, w, t, a->prev, top.left) != 0) return -1;
        if (maybe_pair(v, w, t, top.left, a->next) != 0) return -1;
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next)
        if (emit_piece(v, w, t, w->sym[i].start, w->sym[i].len, out, prev_unk, 0) != 0) return -1;
    return 0;
}

/* Unigram model: Viterbi over every piece that starts at each character (SentencePiece's optimized encoder,
 * same arithmetic: piece scores are added in double and stored as float; user-defined pieces score
 * length * max_score - 0.1; a character no piece covers is <unk> with min_score - 10, added in float; ties keep
 * the path found first). O(n * max_piece_len). */
static int unigram_encode(const tok_vocab *v, tok_work *w, const char *t, size_t tn, tok_ids *out) {
    if (tn + 1 > w->best_cap) {
        tok_best *p = moec_realloc(w->best, (tn + 1) * sizeof *p);
        if (!p) return -1;
        w->best = p;
        w->best_cap = tn + 1;
    }
    tok_best *best = w->best;
    for (size_t i = 0; i <= tn; i++) best[i] = (tok_best){0.0f, -1, -1};
    const float unk_score = v->min_score - 10.0f;
    size_t maxl = v->max_piece_len;
    for (size_t st = 0; st < tn;) {
        float till = best[st].score;
        size_t mblen = one_char_len((uint8_t)t[st]);
        if (mblen > tn - st) mblen = tn - st;
        bool single = false;
        for (size_t l = 1; l <= maxl && l <= tn - st; l++) {
            int32_t id = map_get(v, &v->normal, t + st, l);
            if (id < 0 || v->type[id] == TOK_UNUSED) continue;
            double sc = v->type[id] == TOK_USER_DEFINED ? (double)((float)l * v->max_score) - 0.1 : (double)v->score[id];
            double cand = sc + (double)till;
            tok_best *b = &best[st + l];
            if (b->start < 0 || cand > (double)b->score) *b = (tok_best){(float)cand, (int32_t)st, id};
            if (l == mblen) single = true;
        }
        if (!single) {
            float cand = unk_score + till;
            tok_best *b = &best[st + mblen];
            if (b->start < 0 || cand > b->score) *b = (tok_best){cand, (int32_t)st, v->unk};
        }
        st += mblen;
    }
    /* backtrack into the symbol array (reversed), then emit in order */
    if (tn > w->sym_cap) {
        tok_sym *p = moec_realloc(w->sym, tn * sizeof *p);
        if (!p) return -1;
        w->sym = p;
        w->sym_cap = tn;
    }
    size_t ns = 0;
    for (size_t e = tn; e > 0;) {
        size_t st = (size_t)best[e].start;
        w->sym[ns++] = (tok_sym){0, best[e].id, (uint32_t)st, (uint32_t)(e - st), false};
        e = st;
    }
    bool prev_unk = false;
    for (size_t k = ns; k-- > 0;) {
        int32_t id = w->sym[k].next; /* the id, stored in .next */
        const char *s = t + w->sym[k].start;
        uint32_t n = w->sym[k].len;
        bool is_unk = id < 0 || id == v->unk || v->type[id] == TOK_UNKNOWN;
        if (is_unk && v->byte_fallback) {
            for (uint32_t i = 0; i < n; i++) {
                int32_t b = v->byte_id[(uint8_t)s[i]];
                if (ids_push(out, b >= 0 ? b : v->unk) != 0) return -1;
            }
        } else if (!(is_unk && prev_unk)) {
            if (id < 0) return moec_set_error("text has an unknown character and the vocabulary has no <unk>");
            if (ids_push(out, id) != 0) return -1;
        }
        prev_unk = is_unk;
    }
    return 0;
}

/* Encode one chunk of raw text with SentencePiece semantics, appending ids. The normalized text is cut after
 * every isolated byte (one that no mergeable piece contains): no merge can cross it, so the segments are
 * independent and the heap stays small. Vocabularies with UNUSED pieces are not cut (their resegmentation
 * uses merges recorded over the whole text). */
static int encode_chunk(const tok_vocab *v, tok_work *w, const char *s, size_t n, tok_ids *out) {
    if (normalize(v, s, n, &w->norm) != 0) return -1;
    const char *t = w->norm.p;
    size_t tn = w->norm.n;
    if (tn == 0) return 0;
    if (tn > INT32_MAX / 2) return moec_set_error("text too long (%zu bytes after normalization)", tn);
    if (tn > w->sym_cap) {
        tok_sym *p = moec_realloc(w->sym, tn * sizeof *p);
        if (!p) return -1;
        w->sym = p;
        w->sym_cap = tn;
    }
    if (v->unigram) return unigram_encode(v, w, t, tn, out);
    w->n_rev = 0;
    bool prev_unk = false;
    if (v->has_unused) return bpe_segment(v, w, t, tn, out, &prev_unk);
    size_t start = 0;
    for (size_t i = 0; i < tn; i++) {
        uint8_t c = (uint8_t)t[i];
        if (c < 128 && v->isolated[c]) {
            if (bpe_segment(v, w, t + start, i + 1 - start, out, &prev_unk) != 0) return -1;
            start = i + 1;
        }
    }
    return bpe_segment(v, w, t + start, tn - start, out, &prev_unk);
}

int tok_encode(const tok_vocab *v, const char *text, size_t len, unsigned flags, int32_t **ids, size_t *n) {
    tok_ids out = {0};
    tok_work w = {0};
    *ids = NULL;
    *n = 0;
    if (!text) text = "", len = 0;
    if (flags & TOK_ENC_BOS) {
        CHECK(v->bos >= 0, "the vocabulary has no BOS token");
        TRY(ids_push(&out, v->bos));
    }
    if (flags & TOK_ENC_SPECIAL) {
        size_t chunk = 0;
        for (size_t i = 0; i < len;) {
            int32_t id;
            size_t l = matcher_match(v, &v->spec, text + i, len - i, &id);
            if (!l) {
                i++;
                continue;
            }
            TRY(encode_chunk(v, &w, text + chunk, i - chunk, &out));
            TRY(ids_push(&out, id));
            i += l;
            chunk = i;
        }
        TRY(encode_chunk(v, &w, text + chunk, len - chunk, &out));
    } else {
        TRY(encode_chunk(v, &w, text, len, &out));
    }
    if (flags & TOK_ENC_EOS) {
        CHECK(v->eos >= 0, "the vocabulary has no EOS token");
        TRY(ids_push(&out, v->eos));
    }
    if (!out.p) {
        out.p = moec_malloc(sizeof(int32_t));
        TRY_PTR(out.p);
    }
    work_free(&w);
    *ids = out.p;
    *n = out.n;
    return 0;
fail:
    work_free(&w);
    free(out.p);
    return -1;
}

/* ---- decoding ------------------------------------------------------------------------------------------- */

/* Process pending bytes of a run of byte pieces. final: the run has ended (incomplete -> U+FFFD per byte).
 * Appends complete characters to out (caller reserved 12 bytes) and keeps an incomplete valid prefix. */
static void bytes_drain(uint8_t *pend, int *n_pend, bool final, tok_bytes *out) {
    while (*n_pend > 0) {
        size_t l = utf8_valid_len(pend, (size_t)*n_pend);
        if (l) {
            bytes_put(out, (const char *)pend, l);
        } else {
            /* could more bytes still make it valid? */
            bool maybe = false;
            if (!final) {
                uint8_t c = pend[0];
                size_t need = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
                if (need > (size_t)*n_pend) {
                    /* complete with continuation bytes 0x80/0xBF and check if any completion is valid */
                    uint8_t tmp[4];
                    memcpy(tmp, pend, (size_t)*n_pend);
                    for (int lo = 0; lo < 2 && !maybe; lo++) {
                        for (size_t k = (size_t)*n_pend; k < need; k++) tmp[k] = lo ? 0xbf : 0x80;
                        if (utf8_valid_len(tmp, need) == need) maybe = true;
                    }
                    /* mixed completions matter only for the second byte ranges, covered by lo/hi of it */
                    if (!maybe && *n_pend == 1) {
                        for (int b1 = 0x80; b1 <= 0xbf && !maybe; b1++) {
                            tmp[1] = (uint8_t)b1;
                            for (size_t k = 2; k < need; k++) tmp[k] = 0x80;
                            if (utf8_valid_len(tmp, need) == need) maybe = true;
                        }
                    }
                }
            }
            if (maybe) return;
            bytes_put(out, REPL_CHAR, 3);
            l = 1;
        }
        memmove(pend, pend + l, (size_t)*n_pend - l);
        *n_pend -= (int)l;
    }
}

/* Decode one non-byte piece into out (reserved). */
static void piece_text(const tok_vocab *v, int32_t id, unsigned flags, bool *is_bos_ws, bool *bos_ws_seen,
                       bool *any_text, tok_bytes *out) {
    int t = v->dec_type[id];
    const char *s = piece_ptr(v, id);
    size_t n = v->len[id];
    if (*bos_ws_seen || *any_text) *is_bos_ws = false;
    bool seen = false;
    size_t start = out->n;
    if (t == TOK_CONTROL) {
        /* shown only on request, and then it does not count as text for the leading-space rule */
        if (flags & TOK_DEC_SPECIAL) bytes_put(out, s, n);
        start = out->n;
    } else if (t == TOK_UNKNOWN) {
        bytes_put(out, v->unk_surface, strlen(v->unk_surface));
    } else {
        if (*is_bos_ws && (v->add_dummy_prefix || v->remove_extra_ws) && !(flags & TOK_DEC_KEEP_SPACE) &&
            n >= 3 && memcmp(s, SPACE_SYM, 3) == 0) {
            s += 3, n -= 3;
            seen = !v->remove_extra_ws;
        }
        for (size_t i = 0; i < n;) {
            if (n - i >= 3 && memcmp(s + i, SPACE_SYM, 3) == 0) out->p[out->n++] = ' ', i += 3;
            else out->p[out->n++] = s[i++];
        }
    }
    *bos_ws_seen = seen;
    if (out->n > start) *any_text = true;
}

static size_t piece_out_max(const tok_vocab *v) {
    size_t u = strlen(v->unk_surface);
    return (v->max_piece_len > u ? v->max_piece_len : u) + 16;
}

int tok_decode(const tok_vocab *v, const int32_t *ids, size_t n, unsigned flags, char **text, size_t *len) {
    tok_bytes out = {0};
    uint8_t pend[8];
    int n_pend = 0;
    bool is_bos_ws = !(flags & TOK_DEC_KEEP_SPACE), bos_ws_seen = false, any_text = false;
    size_t pm = piece_out_max(v);
    *text = NULL;
    *len = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        CHECK(id >= 0 && id < v->n, "token id %d at position %zu is out of range [0, %d)", id, i, v->n);
        TRY(bytes_reserve(&out, pm + 16));
        if (v->dec_type[id] == TOK_BYTE) {
            int b = piece_to_byte(piece_ptr(v, id), v->len[id]);
            pend[n_pend++] = (uint8_t)b;
            size_t before = out.n;
            bytes_drain(pend, &n_pend, false, &out);
            if (out.n > before) any_text = true;
            continue;
        }
        size_t before = out.n;
        bytes_drain(pend, &n_pend, true, &out);
        if (out.n > before) any_text = true;
        piece_text(v, id, flags, &is_bos_ws, &bos_ws_seen, &any_text, &out);
    }
    TRY(bytes_reserve(&out, 16));
    bytes_drain(pend, &n_pend, true, &out);
    out.p[out.n] = 0;
    *text = out.p;
    *len = out.n;
    return 0;
fail:
    free(out.p);
    return -1;
}

int tok_stream_init(tok_stream *s, const tok_vocab *v, unsigned flags) {
    memset(s, 0, sizeof *s);
    s->v = v;
    s->flags = flags;
    s->is_bos_ws = !(flags & TOK_DEC_KEEP_SPACE);
    s->cap = piece_out_max(v) + 32;
    s->buf = moec_malloc(s->cap);
    return s->buf ? 0 : -1;
}

void tok_stream_free(tok_stream *s) {
    free(s->buf);
    memset(s, 0, sizeof *s);
}

int tok_stream_push(tok_stream *s, int32_t id, const char **out, size_t *len) {
    const tok_vocab *v = s->v;
    tok_bytes b = {s->buf, 0, s->cap};
    *out = s->buf;
    *len = 0;
    if (id < 0 || id >= v->n) return moec_set_error("token id %d is out of range [0, %d)", id, v->n);
    if (v->dec_type[id] == TOK_BYTE) {
        s->pend[s->n_pend++] = (uint8_t)piece_to_byte(piece_ptr(v, id), v->len[id]);
        bytes_drain(s->pend, &s->n_pend, false, &b);
        if (b.n) s->any_text = true;
    } else {
        bytes_drain(s->pend, &s->n_pend, true, &b);
        if (b.n) s->any_text = true;
        piece_text(v, id, s->flags, &s->is_bos_ws, &s->bos_ws_seen, &s->any_text, &b);
    }
    *len = b.n;
    return 0;
}

int tok_stream_flush(tok_stream *s, const char **out, size_t *len) {
    tok_bytes b = {s->buf, 0, s->cap};
    bytes_drain(s->pend, &s->n_pend, true, &b);
    *out = s->buf;
    *len = b.n;
    s->is_bos_ws = !(s->flags & TOK_DEC_KEEP_SPACE);
    s->bos_ws_seen = false;
    s->any_text = false;
    return 0;
}
