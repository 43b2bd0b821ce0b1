/* moec prepare -m VOCAB -o DIR [--val-frac F] [--no-eod] FILES...
 * Tokenizes text files into DIR/train.bin and DIR/val.bin token shards (format: src/data.h). Each file is encoded
 * as one document (special-token strings in the text are recognised) followed by the vocabulary's end-of-text id
 * (unless --no-eod or the vocab has none). The last F (default 0.05) of all tokens form the validation shard. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "data.h"
#include "tok.h"
#include "util.h"

static void usage(void) {
    fprintf(stderr, "usage: moec prepare -m VOCAB -o DIR [--val-frac F] [--no-eod] FILES...\n"
                    "  VOCAB: SentencePiece .model, GGUF with tokenizer keys, or llama2.c tokenizer.bin\n"
                    "  writes DIR/train.bin and DIR/val.bin (the last F of the tokens, default 0.05; 0 = none)\n");
}

int cmd_prepare(int argc, char **argv) {
    const char *cmd = argv[0], *vocab_path = NULL, *out_dir = NULL;
    double val_frac = 0.05;
    bool eod = true;
    const char **files = NULL;
    int n_files = 0, rc = 1;
    tok_vocab *v = NULL;
    int32_t *all = NULL;
    size_t n_all = 0, cap = 0;
    char *text = NULL, path[4096];

    files = calloc((size_t)argc, sizeof *files);
    if (!files) return cli_usage_error(cmd, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            free(files);
            return 0;
        } else if (!strcmp(a, "-m") && i + 1 < argc) {
            vocab_path = argv[++i];
        } else if (!strcmp(a, "-o") && i + 1 < argc) {
            out_dir = argv[++i];
        } else if (!strcmp(a, "--val-frac") && i + 1 < argc) {
            if (cli_parse_float(cmd, a, argv[++i], &val_frac) != 0) goto usage_err;
            if (val_frac < 0 || val_frac >= 1) {
                cli_usage_error(cmd, "--val-frac must be in [0, 1)");
                goto usage_err;
            }
        } else if (!strcmp(a, "--no-eod")) {
            eod = false;
        } else if (a[0] == '-' && a[1]) {
            cli_usage_error(cmd, "unknown option '%s'", a);
            usage();
            goto usage_err;
        } else {
            files[n_files++] = a;
        }
    }
    if (!vocab_path || !out_dir || n_files == 0) {
        cli_usage_error(cmd, "need -m VOCAB, -o DIR and at least one text file");
        usage();
        goto usage_err;
    }
    v = tok_load(vocab_path);
    if (!v) goto fail;
    int32_t eos = eod ? tok_eos(v) : -1;
    for (int f = 0; f < n_files; f++) {
        size_t len;
        if (moec_read_file(files[f], &text, &len) != 0) goto fail;
        int32_t *ids = NULL;
        size_t n = 0;
        if (tok_encode(v, text, len, TOK_ENC_SPECIAL, &ids, &n) != 0) {
            moec_wrap_error("%s", files[f]);
            goto fail;
        }
        free(text);
        text = NULL;
        if (n_all + n + 1 > cap) {
            size_t nc = (n_all + n + 1) * 2;
            int32_t *p = realloc(all, nc * sizeof *all);
            if (!p) {
                free(ids);
                moec_set_error("out of memory");
                goto fail;
            }
            all = p;
            cap = nc;
        }
        memcpy(all + n_all, ids, n * sizeof *ids);
        n_all += n;
        free(ids);
        if (eos >= 0) all[n_all++] = eos;
        fprintf(stderr, "moec prepare: %s: %zu bytes -> %zu tokens\n", files[f], len, n);
    }
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        moec_set_error("cannot create %s: %s", out_dir, strerror(errno));
        goto fail;
    }
    size_t n_val = (size_t)((double)n_all * val_frac);
    size_t n_train = n_all - n_val;
    uint64_t V = (uint64_t)tok_n_vocab(v);
    snprintf(path, sizeof path, "%s/train.bin", out_dir);
    if (data_shard_write(path, all, n_train, V, 0) != 0) goto fail;
    fprintf(stderr, "moec prepare: %s: %zu tokens\n", path, n_train);
    if (n_val > 0) {
        snprintf(path, sizeof path, "%s/val.bin", out_dir);
        if (data_shard_write(path, all + n_train, n_val, V, 0) != 0) goto fail;
        fprintf(stderr, "moec prepare: %s: %zu tokens\n", path, n_val);
    } else {
        snprintf(path, sizeof path, "%s/val.bin", out_dir);
        unlink(path); /* no stale validation shard from an earlier run */
    }
    rc = 0;
    goto done;
usage_err:
    rc = 2;
    goto done;
fail:
    rc = cli_fail(cmd);
done:
    free(text);
    free(all);
    free(files);
    if (v) tok_free(v);
    return rc;
}
