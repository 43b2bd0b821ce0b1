/* data: shard round trip (16- and 32-bit), hostile shards, loader order, wrap-around and resume, id-line files. */
#include <stdio.h>
#include <unistd.h>

#include "data.h"
#include "test.h"

static char dir[] = "/tmp/moec_test_data_XXXXXX";
static char pbuf[4][256];
static const char *tmp(int i, const char *name) {
    snprintf(pbuf[i], sizeof pbuf[i], "%s/%s", dir, name);
    return pbuf[i];
}

static void write_bytes(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(d, 1, n, f);
    fclose(f);
}

int main(void) {
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    int32_t tok[100];
    for (int i = 0; i < 100; i++) tok[i] = (i * 37) % 1000;
    /* 16-bit round trip: header fields and tokens */
    const char *p16 = tmp(0, "a16.bin");
    T_CHECK(data_shard_write(p16, tok, 100, 1000, 0) == 0, "write16: %s", moec_last_error());
    data_shard s;
    T_CHECK(data_shard_open(&s, p16, 0) == 0, "open16: %s", moec_last_error());
    T_CHECK(s.width == 2 && s.n == 100 && s.vocab == 1000 && s.map.size == 32 + 200, "header16");
    int ok = 1;
    for (int i = 0; i < 100; i++) ok &= data_shard_get(&s, (uint64_t)i) == tok[i];
    T_CHECK(ok, "tokens16");
    /* exact bytes of the header: magic, version 1, width 2, count 100, vocab 1000 */
    const uint8_t *h = s.map.data;
    T_CHECK(!memcmp(h, "MOECTOKS", 8) && h[8] == 1 && h[12] == 2 && h[16] == 100 && h[24] == 0xe8 && h[25] == 3,
            "header bytes");
    T_CHECK(h[32] == 0 && h[34] == 37 && h[35] == 0, "little-endian tokens");
    data_shard_close(&s);
    T_CHECK(data_shard_open(&s, p16, 999) == -1 && strstr(moec_last_error(), "larger than the model"),
            "vocab bigger than model: %s", moec_last_error());

    /* 32-bit */
    int32_t big[3] = {0, 135039, 70000};
    const char *p32 = tmp(1, "a32.bin");
    T_CHECK(data_shard_write(p32, big, 3, 135040, 0) == 0, "write32");
    T_CHECK(data_shard_open(&s, p32, 0) == 0 && s.width == 4 && data_shard_get(&s, 1) == 135039, "read32");
    data_shard_close(&s);
    T_CHECK(data_shard_write(p32, big, 3, 1000, 0) == -1 && strstr(moec_last_error(), "outside"), "token >= vocab");
    T_CHECK(data_shard_write(p32, big, 3, 135040, 2) == -1, "16-bit with big vocab refused");

    /* hostile shards */
    uint8_t raw[64];
    memset(raw, 0, sizeof raw);
    memcpy(raw, "MOECTOKS", 8);
    raw[8] = 1;
    raw[12] = 2;
    raw[16] = 16;                        /* 16 tokens = 32 bytes */
    raw[24] = 10;                        /* vocab 10 */
    const char *bad = tmp(2, "bad.bin");
    write_bytes(bad, raw, 64);
    T_CHECK(data_shard_open(&s, bad, 0) == 0, "valid hand-made shard: %s", moec_last_error());
    data_shard_close(&s);
    write_bytes(bad, raw, 63);
    T_CHECK(data_shard_open(&s, bad, 0) == -1 && strstr(moec_last_error(), "does not match"), "truncated: %s",
            moec_last_error());
    write_bytes(bad, raw, 20);
    T_CHECK(data_shard_open(&s, bad, 0) == -1 && strstr(moec_last_error(), "shorter"), "tiny");
    raw[16] = 0xff;
    raw[23] = 0xff; /* huge count: no overflow */
    write_bytes(bad, raw, 64);
    T_CHECK(data_shard_open(&s, bad, 0) == -1, "huge count");
    raw[16] = 16;
    raw[23] = 0;
    raw[12] = 3;
    write_bytes(bad, raw, 64);
    T_CHECK(data_shard_open(&s, bad, 0) == -1 && strstr(moec_last_error(), "width"), "width 3");
    raw[12] = 2;
    raw[8] = 2;
    write_bytes(bad, raw, 64);
    T_CHECK(data_shard_open(&s, bad, 0) == -1 && strstr(moec_last_error(), "version"), "version");
    raw[8] = 1;
    raw[40] = 10; /* token 4 = 10 >= vocab */
    write_bytes(bad, raw, 64);
    T_CHECK(data_shard_open(&s, bad, 0) == -1 && strstr(moec_last_error(), "outside"), "token >= vocab: %s",
            moec_last_error());
    raw[0] = 'X';
    write_bytes(bad, raw, 64);
    T_CHECK(data_shard_open(&s, bad, 0) == -1 && strstr(moec_last_error(), "magic"), "magic");
    T_CHECK(data_shard_open(&s, tmp(3, "missing.bin"), 0) == -1, "missing file");

    /* loader over two shards: rows of T+1 = 5 tokens advancing by 4; shard a: 10 tokens (2 rows), b: 9 (2 rows) */
    int32_t ta[10], tb[9];
    for (int i = 0; i < 10; i++) ta[i] = i;
    for (int i = 0; i < 9; i++) tb[i] = 100 + i;
    const char *pa = tmp(0, "la.bin"), *pb = tmp(1, "lb.bin");
    T_CHECK(data_shard_write(pa, ta, 10, 200, 0) == 0 && data_shard_write(pb, tb, 9, 200, 0) == 0, "write l");
    const char *paths[2] = {pa, pb};
    data_loader ld;
    T_CHECK(data_loader_open_shards(&ld, paths, 2, 4, 200) == 0, "open loader: %s", moec_last_error());
    T_CHECK(data_loader_rows_per_epoch(&ld) == 4 && data_loader_tokens(&ld) == 19, "rows/epoch");
    int32_t in[3 * 4], tg[3 * 4];
    float mk[3 * 4];
    T_CHECK(data_loader_next(&ld, 3, in, tg, mk) == 0, "next");
    T_CHECK(in[0] == 0 && tg[0] == 1 && in[3] == 3 && tg[3] == 4, "row 0");
    T_CHECK(in[4] == 4 && tg[7] == 8, "row 1");
    T_CHECK(in[8] == 100 && tg[11] == 104 && mk[11] == 1.0f, "row 2 = shard b");
    data_pos saved = ld.pos;
    T_CHECK(saved.item == 1 && saved.off == 4 && saved.epoch == 0, "pos");
    int32_t in2[8], tg2[8];
    float mk2[8];
    T_CHECK(data_loader_next(&ld, 2, in2, tg2, mk2) == 0, "next2");
    T_CHECK(in2[0] == 104 && tg2[3] == 108 && in2[4] == 0 && ld.pos.epoch == 1, "wrap: %d %d %d", in2[0], tg2[3],
            in2[4]);
    /* resume: a fresh loader seeked to the saved position gives the same rows */
    data_loader ld2;
    T_CHECK(data_loader_open_shards(&ld2, paths, 2, 4, 200) == 0, "open 2");
    T_CHECK(data_loader_seek(&ld2, saved) == 0, "seek");
    int32_t in3[8], tg3[8];
    float mk3[8];
    data_loader_next(&ld2, 2, in3, tg3, mk3);
    T_CHECK(!memcmp(in2, in3, sizeof in3) && !memcmp(tg2, tg3, sizeof tg3), "resumed rows equal");
    data_pos badpos = {0, 1, 6};
    T_CHECK(data_loader_seek(&ld2, badpos) == -1, "bad seek refused");
    badpos.item = 7;
    T_CHECK(data_loader_seek(&ld2, badpos) == -1, "bad shard refused");
    data_loader_close(&ld2);
    data_loader_close(&ld);
    T_CHECK(data_loader_open_shards(&ld, paths, 2, 9, 200) == -1 && strstr(moec_last_error(), "fewer"),
            "shard shorter than T+1");

    /* id lines: padding is masked; 1-token and empty lines skipped; junk refused */
    const char *pl = tmp(2, "ids.txt");
    const char *txt = "1 2 3 4 5 6\n\n7\n8 9\r\n10,11,12\n";
    write_bytes(pl, txt, strlen(txt));
    T_CHECK(data_loader_open(&ld, pl, 3, 100) == 0, "open lines: %s", moec_last_error());
    T_CHECK(ld.n_lines == 3 && data_loader_rows_per_epoch(&ld) == 3, "3 lines (%zu)", ld.n_lines);
    int32_t li[4 * 3], lt[4 * 3];
    float lm[4 * 3];
    data_loader_next(&ld, 4, li, lt, lm);
    T_CHECK(li[0] == 1 && lt[2] == 4 && lm[2] == 1, "line 0 truncated to T+1");
    T_CHECK(li[3] == 8 && lt[3] == 9 && lm[3] == 1 && lm[4] == 0 && lm[5] == 0 && lt[4] == 0, "line 1 padded");
    T_CHECK(li[6] == 10 && lt[7] == 12 && lm[8] == 0, "line 2");
    T_CHECK(li[9] == 1 && ld.pos.epoch == 1 && ld.pos.item == 1, "wrap lines");
    data_loader_close(&ld);
    T_CHECK(data_loader_open(&ld, pl, 3, 10) == -1 && strstr(moec_last_error(), "outside"), "id >= vocab");
    write_bytes(pl, "1 2 x\n", 6);
    T_CHECK(data_loader_open(&ld, pl, 3, 10) == -1 && strstr(moec_last_error(), ":1:"), "junk: %s",
            moec_last_error());
    write_bytes(pl, "99999999999 1\n", 14);
    T_CHECK(data_loader_open(&ld, pl, 3, 0) == -1 && strstr(moec_last_error(), "too large"), "overflow");
    write_bytes(pl, "5\n\n", 3);
    T_CHECK(data_loader_open(&ld, pl, 3, 0) == -1, "no usable line");

    for (int i = 0; i < 4; i++) unlink(pbuf[i]);
    const char *names[] = {"a16.bin", "a32.bin", "bad.bin", "la.bin", "lb.bin", "ids.txt"};
    for (size_t i = 0; i < 6; i++) unlink(tmp(0, names[i]));
    rmdir(dir);
    return t_done("test_data");
}
