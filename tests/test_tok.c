/* Tokenizer unit tests: API values, Yuan added/special tokens, invalid UTF-8 and NUL, streaming decode,
 * many threads encoding at once, hostile vocabulary files, GGUF round trip. Expected ids come from
 * SentencePiece 0.1.97 (python3-sentencepiece) on the same model files. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "tok.h"
#include "util.h"

static int ids_eq(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* encode text (len bytes) with flags and compare with want[0..nw) */
static void check_enc(const tok_vocab *v, const char *text, size_t len, unsigned flags, const int32_t *want,
                      size_t nw) {
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tok_encode(v, text, len, flags, &ids, &n);
    T_CHECK(rc == 0, "encode failed: %s", moec_last_error());
    int ok = rc == 0 && ids_eq(ids, n, want, nw);
    T_CHECK(ok, "encode of '%.*s' (flags %u) differs", (int)len, text, flags);
    if (!ok) {
        print_ids("want", want, nw);
        print_ids("got ", ids, n);
    }
    free(ids);
}
#define ENC(v, s, fl, ...)                                                                         \
    do {                                                                                           \
        const int32_t w_[] = {__VA_ARGS__};                                                        \
        check_enc(v, s, sizeof(s) - 1, fl, w_, sizeof w_ / sizeof *w_);                            \
    } while (0)

static void test_llama(const tok_vocab *v) {
    T_CHECK(tok_n_vocab(v) == 32000, "n_vocab %d", tok_n_vocab(v));
    T_CHECK(tok_bos(v) == 1 && tok_eos(v) == 2 && tok_unk(v) == 0 && tok_pad(v) == -1, "bos/eos/unk/pad %d %d %d %d",
            tok_bos(v), tok_eos(v), tok_unk(v), tok_pad(v));
    T_CHECK(tok_find(v, "\xe2\x96\x81the") == 278, "find _the");
    T_CHECK(tok_find(v, "<0xE4>") == 231, "find <0xE4>");
    T_CHECK(tok_find(v, "no-such-piece") == -1, "find absent");
    T_CHECK(tok_score(v, 278) == -19.0f, "score of 278 = %g", tok_score(v, 278));
    T_CHECK(tok_type(v, 0) == TOK_UNKNOWN && tok_type(v, 1) == TOK_CONTROL && tok_type(v, 3) == TOK_BYTE &&
                tok_type(v, 278) == TOK_NORMAL && tok_type(v, 32000) == 0,
            "types");
    size_t l = 0;
    const char *p = tok_piece(v, 278, &l);
    T_CHECK(p && l == 6 && !strcmp(p, "\xe2\x96\x81the"), "piece 278");
    T_CHECK(tok_piece(v, -1, NULL) == NULL && tok_piece(v, 32000, NULL) == NULL, "piece out of range");
    T_CHECK(tok_byte_fallback(v) && tok_add_dummy_prefix(v), "flags");

    ENC(v, "a\0b", 0, 263, 3, 29890);                     /* NUL -> byte piece */
    ENC(v, "\xff", 0, 29871, 30140);                       /* invalid byte -> U+FFFD */
    ENC(v, "\xe4\xbd", 0, 29871, 26308);                   /* two invalid bytes -> two U+FFFD */
    ENC(v, "a\xff" "b c", 0, 263, 30140, 29890, 274);
    ENC(v, "\xc3\xbf", 0, 29871, 30370);                   /* valid U+00FF */
    ENC(v, "hello<s>world", 0, 22172, 29966, 29879, 29958, 11526);
    ENC(v, "hello<s>world", TOK_ENC_SPECIAL, 22172, 1, 3186); /* "world" chunk gets its own dummy prefix */
    ENC(v, "<s>hello", TOK_ENC_SPECIAL, 1, 22172);
    ENC(v, " ", 0, 259);
    ENC(v, "  leading", 0, 259, 8236);
    ENC(v, "trail  ", 0, 26203, 259);
    ENC(v, "x\ty\nz", 0, 921, 12, 29891, 13, 29920);
    ENC(v, "hello", TOK_ENC_BOS | TOK_ENC_EOS, 1, 22172, 2);
    {
        int32_t *ids = (int32_t *)1;
        size_t n = 7;
        T_CHECK(tok_encode(v, "", 0, 0, &ids, &n) == 0 && n == 0 && ids != NULL, "empty text");
        free(ids);
    }
}

static void test_yuan(tok_vocab *v) {
    T_CHECK(tok_n_vocab(v) == 134958, "yuan n_vocab %d", tok_n_vocab(v));
    T_CHECK(tok_eos(v) == 77185 && tok_bos(v) == 1 && tok_unk(v) == 0, "yuan eos %d", tok_eos(v));
    static const char *added[5] = {"<mask>", "<predict>", "<FIM_SUFFIX>", "<FIM_PREFIX>", "<FIM_MIDDLE>"};
    for (int i = 0; i < 5; i++)
        T_CHECK(tok_find(v, added[i]) == 134953 + i && tok_is_special(v, 134953 + i), "added %s", added[i]);
    T_CHECK(tok_is_special(v, 77185) && tok_is_special(v, 77187) && tok_is_special(v, 1), "special set");
    T_CHECK(!tok_is_special(v, 278), "normal piece not special");
    ENC(v, "请问你是谁", 0, 29871, 36264, 50467);
    ENC(v, "<eod>", 0, 529, 80687, 29881, 29958); /* plain SentencePiece splits it */
    ENC(v, "<eod>", TOK_ENC_SPECIAL, 77185);
    ENC(v, "question<sep>", TOK_ENC_SPECIAL, 1139, 77187);
    /* each chunk gets its own dummy prefix (HuggingFace legacy LlamaTokenizer) */
    ENC(v, "<FIM_PREFIX>hello<FIM_SUFFIX>question<FIM_MIDDLE>", TOK_ENC_SPECIAL, 134956, 22172, 134955, 1139,
        134957);
    ENC(v, "hello", TOK_ENC_EOS, 22172, 77185);
    /* adding an existing piece returns its id; a new one is appended */
    T_CHECK(tok_add_special(v, "<mask>") == 134953, "re-add");
    T_CHECK(tok_add_special(v, "<repo_name>") == 134958 && tok_n_vocab(v) == 134959, "add new");
    ENC(v, "a<repo_name>", TOK_ENC_SPECIAL, 263, 134958);
    /* decode: control/added pieces vanish unless asked for */
    {
        const int32_t ids[] = {22172, 134958, 77185};
        char *t;
        size_t n;
        T_CHECK(tok_decode(v, ids, 3, 0, &t, &n) == 0 && !strcmp(t, "hello<eod>"), "decode yuan");
        free(t);
        T_CHECK(tok_decode(v, ids, 3, TOK_DEC_SPECIAL, &t, &n) == 0 && !strcmp(t, "hello<repo_name><eod>"),
                "decode yuan special");
        free(t);
    }
}

static int valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!k || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] & 0xc0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

/* Stream-decode ids; each output must be valid UTF-8; the concatenation must equal tok_decode. */
static void check_stream(const tok_vocab *v, const int32_t *ids, size_t n, unsigned flags, const char *what) {
    char *whole;
    size_t wn;
    T_CHECK(tok_decode(v, ids, n, flags, &whole, &wn) == 0, "%s: decode: %s", what, moec_last_error());
    tok_stream s;
    T_CHECK(tok_stream_init(&s, v, flags) == 0, "stream init");
    char *cat = malloc(wn + 64);
    size_t cn = 0;
    int bad = 0, ok = 1;
    for (size_t i = 0; i <= n; i++) {
        const char *o;
        size_t l;
        if (i < n) ok = tok_stream_push(&s, ids[i], &o, &l) == 0;
        else tok_stream_flush(&s, &o, &l);
        if (!ok) break;
        if (!valid_utf8(o, l)) bad++;
        if (cn + l <= wn + 63) memcpy(cat + cn, o, l);
        cn += l;
    }
    T_CHECK(ok, "%s: stream push failed", what);
    T_CHECK(bad == 0, "%s: %d stream outputs were not valid UTF-8", what, bad);
    T_CHECK(cn == wn && memcmp(cat, whole, wn) == 0, "%s: stream output differs from decode (%zu vs %zu bytes)", what,
            cn, wn);
    tok_stream_free(&s);
    free(cat);
    free(whole);
}

static void test_stream(const tok_vocab *v, const char *text, size_t len) {
    int32_t *ids;
    size_t n;
    T_CHECK(tok_encode(v, text, len, 0, &ids, &n) == 0, "encode corpus");
    check_stream(v, ids, n, 0, "corpus");
    check_stream(v, ids, n, TOK_DEC_KEEP_SPACE, "corpus keep-space");
    /* decode(encode(x)) == x for clean text without leading space */
    char *t;
    size_t tn;
    T_CHECK(tok_decode(v, ids, n, 0, &t, &tn) == 0 && tn == len && memcmp(t, text, len) == 0, "corpus round trip");
    free(t);
    free(ids);
    /* byte pieces of one character come out together: 你 = E4 BD A0 */
    int32_t ni = tok_find(v, "<0xE4>"), n2 = tok_find(v, "<0xBD>"), n3 = tok_find(v, "<0xA0>");
    tok_stream s;
    const char *o;
    size_t l;
    tok_stream_init(&s, v, 0);
    tok_stream_push(&s, ni, &o, &l);
    T_CHECK(l == 0, "first byte held");
    tok_stream_push(&s, n2, &o, &l);
    T_CHECK(l == 0, "second byte held");
    tok_stream_push(&s, n3, &o, &l);
    T_CHECK(l == 3 && !memcmp(o, "\xe4\xbd\xa0", 3), "character complete");
    /* a broken sequence: E4 then a normal piece -> U+FFFD then the piece (leading-space rule: text exists) */
    tok_stream_push(&s, ni, &o, &l);
    T_CHECK(l == 0, "held");
    tok_stream_push(&s, 278, &o, &l);
    T_CHECK(l == 7 && !memcmp(o, "\xef\xbf\xbd the", 7), "broken then piece: '%.*s'", (int)l, o);
    tok_stream_push(&s, ni, &o, &l);
    tok_stream_flush(&s, &o, &l);
    T_CHECK(l == 3 && !memcmp(o, "\xef\xbf\xbd", 3), "flush incomplete -> U+FFFD");
    /* after a flush the stream starts over: leading space dropped again */
    tok_stream_push(&s, 278, &o, &l);
    T_CHECK(l == 3 && !memcmp(o, "the", 3), "leading space dropped at start");
    T_CHECK(tok_stream_push(&s, tok_n_vocab(v), &o, &l) == -1, "stream bad id");
    tok_stream_free(&s);
    int32_t bad[2] = {278, -5};
    char *x;
    size_t xn;
    T_CHECK(tok_decode(v, bad, 2, 0, &x, &xn) == -1 && strstr(moec_last_error(), "-5"), "decode bad id error: %s",
            moec_last_error());
}

/* ---- threads ---- */
typedef struct {
    const tok_vocab *v;
    const char *text;
    size_t len;
    int32_t *ids;
    size_t n;
    int rc;
} job;

static void *enc_thread(void *arg) {
    job *j = arg;
    for (int rep = 0; rep < 2; rep++) {
        free(j->ids);
        j->rc = tok_encode(j->v, j->text, j->len, TOK_ENC_SPECIAL, &j->ids, &j->n);
    }
    return NULL;
}

static void test_threads(const tok_vocab *v, const char *text, size_t len) {
    int32_t *ref;
    size_t nref;
    T_CHECK(tok_encode(v, text, len, TOK_ENC_SPECIAL, &ref, &nref) == 0, "ref encode");
    enum { NT = 6 };
    pthread_t th[NT];
    job jobs[NT];
    for (int i = 0; i < NT; i++) {
        jobs[i] = (job){v, text, len, NULL, 0, -1};
        T_CHECK(pthread_create(&th[i], NULL, enc_thread, &jobs[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        T_CHECK(jobs[i].rc == 0 && ids_eq(jobs[i].ids, jobs[i].n, ref, nref), "thread %d ids differ", i);
        free(jobs[i].ids);
    }
    free(ref);
}

/* ---- hostile files ---- */
static void expect_fail(const char *what, const void *data, size_t len, int spm) {
    tok_vocab *v = spm ? tok_load_spm(data, len, what) : tok_load_llama2c(data, len, what);
    T_CHECK(v == NULL, "%s: loaded a damaged file", what);
    T_CHECK(v != NULL || strlen(moec_last_error()) > 5, "%s: no error message", what);
    if (v) tok_free(v);
}

static size_t put_varint(uint8_t *p, uint64_t x) {
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((x & 0x7f) | (x > 0x7f ? 0x80 : 0));
        x >>= 7;
    } while (x);
    return n;
}

/* Build a tiny BPE model protobuf from (piece, type) pairs. */
static size_t build_model(uint8_t *buf, const char *const *pieces, const int *types, int n, int byte_fallback) {
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        uint8_t sp[256];
        size_t m = 0, pl = strlen(pieces[i]);
        sp[m++] = 0x0a;
        m += put_varint(sp + m, pl);
        memcpy(sp + m, pieces[i], pl);
        m += pl;
        sp[m++] = 0x15; /* score f32 */
        float sc = -(float)i;
        memcpy(sp + m, &sc, 4);
        m += 4;
        sp[m++] = 0x18;
        sp[m++] = (uint8_t)types[i];
        buf[k++] = 0x0a;
        k += put_varint(buf + k, m);
        memcpy(buf + k, sp, m);
        k += m;
    }
    /* trainer_spec: model_type=2 (BPE), byte_fallback */
    uint8_t ts[8] = {0x18, 0x02, 0x98, 0x02, (uint8_t)byte_fallback};
    buf[k++] = 0x12;
    buf[k++] = 5;
    memcpy(buf + k, ts, 5);
    k += 5;
    /* normalizer_spec: remove_extra_whitespaces=false */
    buf[k++] = 0x1a;
    buf[k++] = 2;
    buf[k++] = 0x20;
    buf[k++] = 0x00;
    return k;
}

static void test_hostile(const uint8_t *model, size_t len, const uint8_t *bin, size_t blen) {
    uint8_t *copy = malloc(len);
    /* truncations */
    size_t cuts[] = {0, 1, 2, 3, 7, 100, len / 3, len / 2, len - 300, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char what[64];
        snprintf(what, sizeof what, "truncated at %zu", cuts[i]);
        /* cutting inside the last message always fails; cutting at a message boundary may still load */
        tok_vocab *v = tok_load_spm(model, cuts[i], what);
        if (cuts[i] < 100) T_CHECK(v == NULL, "%s loaded", what);
        tok_free(v);
    }
    /* a length varint that points past the end (first piece message) */
    memcpy(copy, model, len);
    copy[1] = 0xff, copy[2] = 0xff, copy[3] = 0xff, copy[4] = 0x7f;
    expect_fail("length past end", copy, len, 1);
    /* varint never ending */
    memset(copy, 0xff, 64);
    expect_fail("endless varint", copy, 64, 1);
    /* random byte corruptions: must fail cleanly or load, never crash */
    moec_rng r;
    moec_rng_seed(&r, 7);
    int loaded = 0;
    for (int it = 0; it < 60; it++) {
        memcpy(copy, model, len);
        for (int k = 0; k < 4; k++) copy[moec_rng_u64(&r) % 4000] ^= (uint8_t)(1 + moec_rng_u64(&r) % 255);
        tok_vocab *v = tok_load_spm(copy, len, "fuzz");
        if (v) {
            loaded++;
            int32_t *ids;
            size_t n;
            if (tok_encode(v, "Hello, world 你好 \xff", 20, TOK_ENC_SPECIAL, &ids, &n) == 0) free(ids);
            tok_free(v);
        }
    }
    T_CHECK(loaded < 60, "every corruption loaded (%d)", loaded);
    /* garbage precompiled charsmaps (a NormalizerSpec appended: it replaces the charsmap): the darts trie walk
     * and the replacement strings must stay inside the blob */
    {
        uint8_t *m2 = malloc(len + 600);
        int n_ok = 0;
        for (int it = 0; it < 40; it++) {
            size_t blob = 16 + moec_rng_u64(&r) % 500, k = len;
            uint32_t trie = (uint32_t)(4 * (moec_rng_u64(&r) % (blob / 4 + 2)));
            memcpy(m2, model, len);
            m2[k++] = 0x1a; /* field 3, NormalizerSpec */
            k += put_varint(m2 + k, blob + 2 + (blob > 127));
            m2[k++] = 0x12; /* field 2, precompiled_charsmap */
            k += put_varint(m2 + k, blob);
            memcpy(m2 + k, &trie, 4);
            for (size_t j = 4; j < blob; j++) m2[k + j] = (uint8_t)moec_rng_u64(&r);
            if (it % 2) memset(m2 + k + 4, 0, 8); /* root unit 0: walks from node 0 */
            k += blob;
            tok_vocab *v = tok_load_spm(m2, k, "m2");
            if (!v) {
                T_CHECK(strstr(moec_last_error(), "precompiled_charsmap") != NULL, "garbage charsmap error: %s",
                        moec_last_error());
                continue;
            }
            n_ok++;
            static const char txt[] = "Hello \x01\x02 world \xff\xfe 你好 \xe2\x96\x81 ab\0c";
            int32_t *ids;
            size_t n;
            T_CHECK(tok_encode(v, txt, sizeof txt - 1, 0, &ids, &n) == 0, "encode with garbage charsmap");
            free(ids);
            tok_free(v);
        }
        T_CHECK(n_ok >= 10, "only %d garbage charsmaps loaded", n_ok);
        free(m2);
    }
    /* the real nmt_nfkc charsmap of sentencepiece's test model with random byte flips (deep trie walks) */
    {
        char *tm = NULL;
        size_t tlen = 0;
        const uint8_t *ns = NULL;
        size_t nslen = 0;
        if (moec_read_file(t_shared("data/tokenizers/spm-test_model.model"), &tm, &tlen) == 0) {
            for (size_t i = 0; i < tlen;) { /* top-level fields: find 3 (NormalizerSpec) */
                uint64_t key = 0, l = 0;
                int sh = 0;
                while (i < tlen && (uint8_t)tm[i] & 0x80) key |= (uint64_t)(tm[i++] & 0x7f) << sh, sh += 7;
                if (i >= tlen) break;
                key |= (uint64_t)(uint8_t)tm[i++] << sh;
                if ((key & 7) != 2) break;
                sh = 0;
                while (i < tlen && (uint8_t)tm[i] & 0x80) l |= (uint64_t)(tm[i++] & 0x7f) << sh, sh += 7;
                if (i >= tlen) break;
                l |= (uint64_t)(uint8_t)tm[i++] << sh;
                if (l > tlen - i) break;
                if (key >> 3 == 3) ns = (const uint8_t *)tm + i, nslen = (size_t)l;
                i += (size_t)l;
            }
        }
        T_CHECK(ns && nslen > 1000, "found the nfkc NormalizerSpec");
        uint8_t *m3 = ns ? malloc(len + nslen + 16) : NULL;
        int n_ok = 0;
        for (int it = 0; m3 && it < 30; it++) {
            size_t k = len;
            memcpy(m3, model, len);
            m3[k++] = 0x1a;
            k += put_varint(m3 + k, nslen);
            memcpy(m3 + k, ns, nslen);
            for (int f = 0; f < (it == 0 ? 0 : 1 + it % 8); f++)
                m3[k + 20 + moec_rng_u64(&r) % (nslen - 20)] ^= (uint8_t)(1u << (moec_rng_u64(&r) % 8));
            k += nslen;
            tok_vocab *v = tok_load_spm(m3, k, "m3");
            if (!v) continue;
            n_ok++;
            static const char txt[] = "\xef\xbc\xa8\xef\xbd\x85llo\xe3\x80\x80 \xef\xac\x81 \xe2\x85\xab \xe3\x8e\x8f "
                                      "\xc2\xa0x e\xcc\x81 \xe2\x91\xa0 \xff \xe4\xbd\xa0\xe5\xa5\xbd ok";
            int32_t *ids;
            size_t n;
            T_CHECK(tok_encode(v, txt, sizeof txt - 1, 0, &ids, &n) == 0, "encode with damaged nfkc charsmap");
            if (it == 0) { /* undamaged: NFKC folds the fullwidth letters into "He" */
                char *t = NULL;
                size_t tn = 0;
                T_CHECK(tok_decode(v, ids, n, 0, &t, &tn) == 0 && tn > 4 && !memcmp(t, "Hello", 5),
                        "nfkc normalizes: '%.*s'", (int)tn, t ? t : "");
                free(t);
            }
            free(ids);
            tok_free(v);
        }
        T_CHECK(n_ok >= 10, "only %d damaged nfkc charsmaps loaded", n_ok);
        free(m3);
        free(tm);
    }
    free(copy);
    /* hand-built models */
    uint8_t buf[4096];
    const char *p1[] = {"<unk>", "<s>", "</s>", "a", "b", "ab"};
    int t1[] = {2, 3, 3, 1, 1, 1};
    size_t n = build_model(buf, p1, t1, 6, 0);
    tok_vocab *v = tok_load_spm(buf, n, "tiny");
    T_CHECK(v != NULL, "tiny model loads: %s", moec_last_error());
    if (v) {
        ENC(v, "abab ba", 0, 0, 5, 5, 0, 4, 3); /* '▁' unknown: unk; no byte fallback */
        ENC(v, "xyz", 0, 0);                    /* consecutive unknowns merge into one <unk> */
        tok_free(v);
    }
    const char *p2[] = {"<unk>", "<s>", "a", "a"};
    int t2[] = {2, 3, 1, 1};
    n = build_model(buf, p2, t2, 4, 0);
    expect_fail("duplicate piece", buf, n, 1);
    const char *p3[] = {"<unk>", "<unk>"};
    int t3[] = {2, 2};
    n = build_model(buf, p3, t3, 2, 0);
    expect_fail("two unk", buf, n, 1);
    const char *p4[] = {"<s>", "a"};
    int t4[] = {3, 1};
    n = build_model(buf, p4, t4, 2, 0);
    expect_fail("no unk", buf, n, 1);
    const char *p5[] = {"<unk>", "<0x41>"};
    int t5[] = {2, 6};
    n = build_model(buf, p5, t5, 2, 1);
    expect_fail("byte_fallback with 1 byte piece", buf, n, 1);
    const char *p6[] = {"<unk>", "<0xZZ>"};
    n = build_model(buf, p6, t5, 2, 1);
    expect_fail("bad byte piece", buf, n, 1);
    const char *p7[] = {"<unk>", ""};
    n = build_model(buf, p7, t1, 2, 0);
    expect_fail("empty piece", buf, n, 1);
    n = build_model(buf, p1, t1, 0, 0);
    expect_fail("empty vocab", buf, n, 1);
    int t8[] = {2, 3, 9};
    n = build_model(buf, p1, t8, 3, 0);
    expect_fail("bad type", buf, n, 1);
    expect_fail("empty file", buf, 0, 1);
    T_CHECK(tok_load("/nonexistent/x.model") == NULL && strlen(moec_last_error()) > 0, "missing file");
    /* llama2.c tokenizer.bin damages */
    expect_fail("bin truncated", bin, 10, 0);
    expect_fail("bin truncated mid", bin, blen / 2 + 3, 0);
    uint8_t *b2 = malloc(blen);
    memcpy(b2, bin, blen);
    int32_t huge = 1 << 30;
    memcpy(b2 + 8, &huge, 4); /* first token length */
    expect_fail("bin bad length", b2, blen, 0);
    free(b2);
}

static void test_gguf_roundtrip(const tok_vocab *v, const char *text, size_t len) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/moec_test_tok_%d.gguf", (int)getpid());
    gguf_writer *w = gguf_w_new();
    if (!w) {
        T_CHECK(0, "gguf writer: %s", moec_last_error());
        return;
    }
    T_CHECK(gguf_w_set_str(w, "general.architecture", "llama") == 0, "arch");
    T_CHECK(tok_write_gguf(v, w) == 0, "tok_write_gguf: %s", moec_last_error());
    T_CHECK(gguf_w_write(w, path) == 0, "gguf write: %s", moec_last_error());
    gguf_w_free(w);
    tok_vocab *u = tok_load(path);
    T_CHECK(u != NULL, "reload: %s", moec_last_error());
    if (u) {
        T_CHECK(tok_n_vocab(u) == tok_n_vocab(v) && tok_bos(u) == tok_bos(v) && tok_eos(u) == tok_eos(v) &&
                    tok_unk(u) == tok_unk(v),
                "gguf round trip: sizes/ids");
        int32_t diff = -1;
        for (int32_t i = 0; i < tok_n_vocab(v) && diff < 0; i++) {
            size_t a, b;
            const char *pa = tok_piece(v, i, &a), *pb = tok_piece(u, i, &b);
            if (!(a == b && !memcmp(pa, pb, a) && tok_type(u, i) == tok_type(v, i) &&
                  tok_score(u, i) == tok_score(v, i) && tok_is_special(u, i) == tok_is_special(v, i)))
                diff = i;
        }
        T_CHECK(diff < 0, "gguf round trip: piece %d differs", diff);
        int32_t *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        T_CHECK(tok_encode(v, text, len, TOK_ENC_SPECIAL, &a, &na) == 0 &&
                    tok_encode(u, text, len, TOK_ENC_SPECIAL, &b, &nb) == 0 && ids_eq(a, na, b, nb),
                "gguf round trip: encodings differ");
        free(a);
        free(b);
        tok_free(u);
    }
    unlink(path);
}

/* Yuan's vocab padded to the 135040 embedding rows with "[PADi]" UNUSED pieces, as moec convert writes it:
 * same ids as the .model, same special set, still segmenting (the padding pieces cannot be formed by merges). */
static void test_gguf_padded(const tok_vocab *y, const char *text, size_t len) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/moec_test_tokp_%d.gguf", (int)getpid());
    enum { NV = 135040 };
    int32_t n = tok_n_vocab(y);
    const char **strs = calloc(NV, sizeof *strs);
    uint64_t *lens = calloc(NV, sizeof *lens);
    float *scores = calloc(NV, sizeof *scores);
    int32_t *types = calloc(NV, sizeof *types);
    char(*pads)[24] = calloc(NV, sizeof *pads);
    for (int32_t i = 0; i < NV; i++) {
        if (i < n) {
            size_t l;
            strs[i] = tok_piece(y, i, &l);
            lens[i] = l, scores[i] = tok_score(y, i), types[i] = (int32_t)tok_type(y, i);
        } else {
            lens[i] = (uint64_t)snprintf(pads[i], sizeof pads[i], "[PAD%d]", i);
            strs[i] = pads[i], scores[i] = -1000.0f, types[i] = TOK_UNUSED;
        }
    }
    gguf_writer *w = gguf_w_new();
    T_CHECK(w && gguf_w_set_str(w, "general.architecture", "yuan2moe") == 0 && tok_write_gguf(y, w) == 0 &&
                gguf_w_set_arr_str(w, "tokenizer.ggml.tokens", NV, strs, lens) == 0 &&
                gguf_w_set_arr(w, "tokenizer.ggml.scores", GGUF_F32, NV, scores) == 0 &&
                gguf_w_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, NV, types) == 0 && gguf_w_write(w, path) == 0,
            "padded gguf: %s", moec_last_error());
    gguf_w_free(w);
    tok_vocab *u = tok_load(path);
    T_CHECK(u != NULL, "padded reload: %s", moec_last_error());
    if (u) {
        T_CHECK(tok_n_vocab(u) == NV && tok_eos(u) == 77185 && tok_find(u, "<FIM_MIDDLE>") == 134957 &&
                    tok_is_special(u, 77187),
                "padded: n %d eos %d", tok_n_vocab(u), tok_eos(u));
        int32_t *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        T_CHECK(tok_encode(y, text, len, TOK_ENC_SPECIAL, &a, &na) == 0 &&
                    tok_encode(u, text, len, TOK_ENC_SPECIAL, &b, &nb) == 0 && ids_eq(a, na, b, nb),
                "padded: encodings differ");
        free(a), free(b);
        tok_free(u);
    }
    unlink(path);
    free(strs), free(lens), free(scores), free(types), free(pads);
}

/* GGUF files whose tokenizer keys are wrong: a clear error each, no crash. */
static void test_gguf_hostile(void) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/moec_test_tokh_%d.gguf", (int)getpid());
    const char *toks[4] = {"<unk>", "<s>", "</s>", "a"};
    float scores[4] = {0, 0, 0, -1};
    int32_t types[4] = {2, 3, 3, 1}, badtypes[4] = {2, 3, 3, 42};
    for (int k = 0; k < 7; k++) {
        gguf_writer *w = gguf_w_new();
        if (!w) return;
        gguf_w_set_str(w, "general.architecture", "llama");
        gguf_w_set_str(w, "tokenizer.ggml.model", k == 0 ? "gpt2" : "llama");
        if (k != 1) gguf_w_set_arr_str(w, "tokenizer.ggml.tokens", k == 6 ? 0 : 4, toks, NULL);
        gguf_w_set_arr(w, "tokenizer.ggml.scores", GGUF_F32, k == 2 ? 3 : 4, scores);
        gguf_w_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, 4, k == 3 ? badtypes : types);
        gguf_w_set_u32(w, "tokenizer.ggml.eos_token_id", k == 4 ? 4 : 2);
        if (k == 5) gguf_w_set_str(w, "tokenizer.ggml.bos_token_id", "one");
        T_CHECK(gguf_w_write(w, path) == 0, "write hostile gguf %d: %s", k, moec_last_error());
        gguf_w_free(w);
        tok_vocab *v = tok_load(path);
        T_CHECK(v == NULL, "hostile gguf %d loaded", k);
        T_CHECK(v != NULL || strstr(moec_last_error(), "tokenizer") != NULL, "hostile gguf %d: unclear error '%s'", k,
                moec_last_error());
        tok_free(v);
    }
    unlink(path);
}

int main(void) {
    char *model = NULL, *ymodel = NULL, *bin = NULL, *corpus = NULL, *zh = NULL;
    size_t mlen, ylen, blen, clen, zlen;
    if (moec_read_file(t_shared("data/tokenizers/llama2-tokenizer.model"), &model, &mlen) != 0) {
        printf("no shared data: %s\n", moec_last_error());
        return 77;
    }
    T_CHECK(moec_read_file(t_shared("data/tokenizers/llama2c-tokenizer.bin"), &bin, &blen) == 0, "bin");
    T_CHECK(moec_read_file(t_shared("data/corpora/botchan.txt"), &corpus, &clen) == 0, "corpus");
    T_CHECK(moec_read_file(t_shared("data/corpora/cp-lunyu.json"), &zh, &zlen) == 0, "zh corpus");
    tok_vocab *v = tok_load(t_shared("data/tokenizers/llama2-tokenizer.model"));
    T_CHECK(v != NULL, "load llama2: %s", moec_last_error());
    tok_vocab *y = tok_load(t_shared("data/tokenizers/yuan2-m32-tokenizer.model"));
    T_CHECK(y != NULL, "load yuan2: %s", moec_last_error());
    if (!v || !y || !bin || !corpus || !zh) return t_done("test_tok");
    (void)ymodel, (void)ylen;
    test_llama(v);
    test_yuan(y);
    /* streaming on English (leading text starts without a space) and Chinese JSON (lots of byte pieces with
     * the LLaMA vocab) */
    test_stream(v, corpus + 3, 20000); /* after the BOM */
    test_stream(y, zh + 1, zlen - 1);
    test_stream(v, zh + 1, zlen - 1);
    test_threads(v, corpus, clen);
    test_threads(y, zh, zlen);
    test_hostile((const uint8_t *)model, mlen, (const uint8_t *)bin, blen);
    test_gguf_roundtrip(v, corpus, 30000);
    test_gguf_roundtrip(y, zh, zlen);
    test_gguf_hostile();
    test_gguf_padded(y, zh, zlen);
    tok_free(v);
    tok_free(y);
    free(model), free(bin), free(corpus), free(zh);
    return t_done("test_tok");
}
