/* data: token shards and the resumable loader. See data.h. */
#include "data.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

int data_shard_write(const char *path, const int32_t *tokens, size_t n, uint64_t vocab, unsigned width) {
    uint8_t *buf = NULL;
    if (width == 0) width = (vocab > 0 && vocab <= 65536) ? 2 : 4;
    CHECK(width == 2 || width == 4, "%s: token width must be 2 or 4, got %u", path, width);
    CHECK(width == 4 || (vocab > 0 && vocab <= 65536), "%s: 16-bit tokens need a vocabulary of at most 65536", path);
    size_t bytes, total;
    CHECK(moec_mul_ok(n, width, &bytes) && moec_add_ok(bytes, DATA_SHARD_HEADER, &total), "%s: shard too large",
          path);
    buf = moec_malloc(total);
    TRY_PTR(buf);
    memcpy(buf, DATA_SHARD_MAGIC, 8);
    put_u32(buf + 8, DATA_SHARD_VERSION);
    put_u32(buf + 12, width);
    put_u64(buf + 16, n);
    put_u64(buf + 24, vocab);
    for (size_t i = 0; i < n; i++) {
        CHECK(tokens[i] >= 0 && (vocab == 0 || (uint64_t)tokens[i] < vocab), "%s: token %zu = %d outside [0, %llu)",
              path, i, (int)tokens[i], (unsigned long long)vocab);
        uint8_t *p = buf + DATA_SHARD_HEADER + i * width;
        if (width == 2) {
            p[0] = (uint8_t)tokens[i];
            p[1] = (uint8_t)(tokens[i] >> 8);
        } else {
            put_u32(p, (uint32_t)tokens[i]);
        }
    }
    TRY(moec_write_file_atomic(path, buf, total));
    free(buf);
    return 0;
fail:
    free(buf);
    return -1;
}

int data_shard_open(data_shard *s, const char *path, uint64_t max_vocab) {
    memset(s, 0, sizeof *s);
    TRY(moec_mmap_open(&s->map, path));
    const uint8_t *d = s->map.data;
    CHECK(s->map.size >= DATA_SHARD_HEADER, "%s: not a token shard (file of %zu bytes is shorter than the header)",
          path, s->map.size);
    CHECK(!memcmp(d, DATA_SHARD_MAGIC, 8), "%s: not a token shard (bad magic)", path);
    uint32_t ver = get_u32(d + 8);
    CHECK(ver == DATA_SHARD_VERSION, "%s: unsupported shard version %u", path, ver);
    s->width = get_u32(d + 12);
    CHECK(s->width == 2 || s->width == 4, "%s: bad token width %u (must be 2 or 4)", path, s->width);
    s->n = get_u64(d + 16);
    s->vocab = get_u64(d + 24);
    CHECK(s->n <= (s->map.size - DATA_SHARD_HEADER) / s->width &&
              s->n * s->width == s->map.size - DATA_SHARD_HEADER,
          "%s: size %zu does not match %llu tokens of %u bytes", path, s->map.size, (unsigned long long)s->n,
          s->width);
    CHECK(s->width == 4 || s->vocab <= 65536, "%s: 16-bit shard claims a vocabulary of %llu", path,
          (unsigned long long)s->vocab);
    s->tok = d + DATA_SHARD_HEADER;
    uint64_t lim = s->vocab;
    if (max_vocab > 0) {
        CHECK(s->vocab <= max_vocab, "%s: shard vocabulary %llu is larger than the model's %llu", path,
              (unsigned long long)s->vocab, (unsigned long long)max_vocab);
        if (lim == 0) lim = max_vocab;
    }
    if (lim > 0 || s->width == 4)
        for (uint64_t i = 0; i < s->n; i++) {
            int32_t t = data_shard_get(s, i);
            CHECK(t >= 0 && (lim == 0 || (uint64_t)t < lim), "%s: token %llu = %lld outside the vocabulary (%llu)",
                  path, (unsigned long long)i, (long long)(uint32_t)t, (unsigned long long)lim);
        }
    return 0;
fail:
    data_shard_close(s);
    return -1;
}

void data_shard_close(data_shard *s) {
    moec_mmap_close(&s->map);
    memset(s, 0, sizeof *s);
}

void data_loader_close(data_loader *ld) {
    for (size_t i = 0; i < ld->n_shards; i++) data_shard_close(&ld->shards[i]);
    free(ld->shards);
    free(ld->lines_tok);
    free(ld->lines_off);
    memset(ld, 0, sizeof *ld);
}

int data_loader_open_shards(data_loader *ld, const char *const *paths, size_t n, int64_t T, uint64_t max_vocab) {
    memset(ld, 0, sizeof *ld);
    CHECK(T >= 1, "sequence length must be >= 1");
    CHECK(n >= 1, "no shard given");
    ld->T = T;
    ld->shards = moec_calloc(n, sizeof *ld->shards);
    TRY_PTR(ld->shards);
    for (size_t i = 0; i < n; i++) {
        TRY(data_shard_open(&ld->shards[i], paths[i], max_vocab));
        ld->n_shards = i + 1;
        CHECK(ld->shards[i].n >= (uint64_t)T + 1, "%s: %llu tokens, fewer than sequence length + 1 = %lld", paths[i],
              (unsigned long long)ld->shards[i].n, (long long)T + 1);
    }
    return 0;
fail:
    data_loader_close(ld);
    return -1;
}

int data_loader_open_lines(data_loader *ld, const char *path, int64_t T, uint64_t max_vocab) {
    char *text = NULL;
    size_t len = 0, cap_tok = 0, cap_off = 0, n_tok = 0;
    memset(ld, 0, sizeof *ld);
    CHECK(T >= 1, "sequence length must be >= 1");
    ld->T = T;
    TRY(moec_read_file(path, &text, &len));
    size_t line_no = 1, line_start_tok = 0;
    ld->lines_off = moec_malloc(sizeof(uint64_t) * (cap_off = 64));
    TRY_PTR(ld->lines_off);
    ld->lines_off[0] = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || text[i] == '\n') {
            size_t nl = n_tok - line_start_tok;
            if (nl >= 2) { /* keep the line */
                if (ld->n_lines + 2 > cap_off) {
                    uint64_t *p = moec_realloc(ld->lines_off, sizeof(uint64_t) * (cap_off *= 2));
                    TRY_PTR(p);
                    ld->lines_off = p;
                }
                ld->lines_off[++ld->n_lines] = n_tok;
            } else {
                n_tok = line_start_tok; /* drop */
            }
            line_start_tok = n_tok;
            line_no++;
            continue;
        }
        unsigned char c = (unsigned char)text[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == ',') continue;
        CHECK(isdigit(c), "%s:%zu: expected token ids (decimal numbers), found byte 0x%02x", path, line_no, c);
        uint64_t v = 0;
        while (i < len && isdigit((unsigned char)text[i])) {
            v = v * 10 + (uint64_t)(text[i] - '0');
            CHECK(v <= INT32_MAX, "%s:%zu: token id too large", path, line_no);
            i++;
        }
        i--;
        CHECK(max_vocab == 0 || v < max_vocab, "%s:%zu: token id %llu outside the vocabulary (%llu)", path, line_no,
              (unsigned long long)v, (unsigned long long)max_vocab);
        if (n_tok == cap_tok) {
            cap_tok = cap_tok ? 2 * cap_tok : 1024;
            int32_t *p = moec_realloc(ld->lines_tok, sizeof(int32_t) * cap_tok);
            TRY_PTR(p);
            ld->lines_tok = p;
        }
        ld->lines_tok[n_tok++] = (int32_t)v;
    }
    CHECK(ld->n_lines > 0, "%s: no sequence of at least 2 token ids", path);
    free(text);
    return 0;
fail:
    free(text);
    data_loader_close(ld);
    return -1;
}

int data_loader_open(data_loader *ld, const char *path, int64_t T, uint64_t max_vocab) {
    moec_mmap m;
    memset(ld, 0, sizeof *ld);
    if (moec_mmap_open(&m, path) != 0) return -1;
    bool shard = m.size >= 8 && !memcmp(m.data, DATA_SHARD_MAGIC, 8);
    moec_mmap_close(&m);
    if (shard) return data_loader_open_shards(ld, &path, 1, T, max_vocab);
    return data_loader_open_lines(ld, path, T, max_vocab);
}

int data_loader_seek(data_loader *ld, data_pos pos) {
    if (ld->n_shards) {
        CHECK(pos.item < ld->n_shards && pos.off + (uint64_t)ld->T + 1 <= ld->shards[pos.item].n,
              "data position (shard %llu, offset %llu) does not fit the data", (unsigned long long)pos.item,
              (unsigned long long)pos.off);
    } else {
        CHECK(pos.item < ld->n_lines && pos.off == 0, "data position (line %llu) does not fit the data",
              (unsigned long long)pos.item);
    }
    ld->pos = pos;
    return 0;
fail:
    return -1;
}

uint64_t data_loader_tokens(const data_loader *ld) {
    uint64_t n = 0;
    for (size_t i = 0; i < ld->n_shards; i++) n += ld->shards[i].n;
    if (ld->n_lines) n = ld->lines_off[ld->n_lines];
    return n;
}

uint64_t data_loader_rows_per_epoch(const data_loader *ld) {
    uint64_t n = 0;
    for (size_t i = 0; i < ld->n_shards; i++) n += (ld->shards[i].n - 1) / (uint64_t)ld->T;
    return ld->n_shards ? n : ld->n_lines;
}

int data_loader_next(data_loader *ld, int64_t B, int32_t *inputs, int32_t *targets, float *mask) {
    int64_t T = ld->T;
    CHECK(ld->n_shards || ld->n_lines, "data loader is not open");
    for (int64_t b = 0; b < B; b++) {
        int32_t *in = inputs + b * T, *tg = targets + b * T;
        float *mk = mask + b * T;
        if (ld->n_shards) {
            const data_shard *s = &ld->shards[ld->pos.item];
            for (int64_t t = 0; t < T; t++) {
                in[t] = data_shard_get(s, ld->pos.off + (uint64_t)t);
                tg[t] = data_shard_get(s, ld->pos.off + (uint64_t)t + 1);
                mk[t] = 1.0f;
            }
            ld->pos.off += (uint64_t)T;
            if (ld->pos.off + (uint64_t)T + 1 > s->n) { /* the next row would not fit: next shard */
                ld->pos.off = 0;
                if (++ld->pos.item == ld->n_shards) {
                    ld->pos.item = 0;
                    ld->pos.epoch++;
                }
            }
        } else {
            const int32_t *l = ld->lines_tok + ld->lines_off[ld->pos.item];
            int64_t n = (int64_t)(ld->lines_off[ld->pos.item + 1] - ld->lines_off[ld->pos.item]) - 1; /* targets */
            for (int64_t t = 0; t < T; t++) {
                bool ok = t < n;
                in[t] = ok ? l[t] : 0;
                tg[t] = ok ? l[t + 1] : 0;
                mk[t] = ok ? 1.0f : 0.0f;
            }
            if (++ld->pos.item == ld->n_lines) {
                ld->pos.item = 0;
                ld->pos.epoch++;
            }
        }
    }
    return 0;
fail:
    return -1;
}
