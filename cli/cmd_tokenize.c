/* moec tokenize: encode text to token ids or pieces.
 *   moec tokenize -m FILE [--special] [--bos] [--eos] [--ids|--pieces] [TEXT | -f FILE | --nul]
 * TEXT: encoded as given. -f FILE: the whole file as one text (newlines included). Otherwise stdin, line by
 * line (one output line per input line; the newline itself is not encoded), or with --nul, NUL-separated
 * cases (one output line per case; used by the property test). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tok.h"
#include "util.h"

static void usage(FILE *f) {
    fprintf(f, "usage: moec tokenize -m FILE [--special] [--bos] [--eos] [--ids|--pieces] [TEXT | -f FILE | --nul]\n"
               "  -m FILE     vocabulary: SentencePiece .model, .gguf, or llama2.c tokenizer.bin\n"
               "  --special   recognise special tokens (<s>, <eod>, <sep>, ...) written in the text\n"
               "  --bos/--eos add BOS / EOS\n"
               "  --ids       print ids separated by single spaces (default)\n"
               "  --pieces    print pieces separated by single spaces\n"
               "  -f FILE     encode the whole file as one text\n"
               "  --nul       read NUL-separated texts from stdin, one output line each\n"
               "  TEXT        encode TEXT; without TEXT/-f, stdin is encoded line by line\n");
}

static int print_ids(const tok_vocab *v, const int32_t *ids, size_t n, int pieces, FILE *out) {
    for (size_t i = 0; i < n; i++) {
        if (i) fputc(' ', out);
        if (pieces) {
            size_t l;
            const char *p = tok_piece(v, ids[i], &l);
            fwrite(p, 1, l, out);
        } else {
            fprintf(out, "%d", ids[i]);
        }
    }
    fputc('\n', out);
    return ferror(out) ? -1 : 0;
}

static int encode_print(const char *cmd, const tok_vocab *v, const char *s, size_t n, unsigned flags, int pieces) {
    int32_t *ids;
    size_t nids;
    if (tok_encode(v, s, n, flags, &ids, &nids) != 0) return cli_fail(cmd);
    int rc = print_ids(v, ids, nids, pieces, stdout);
    free(ids);
    if (rc != 0) {
        fprintf(stderr, "moec %s: write error\n", cmd);
        return 1;
    }
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    const char *cmd = argv[0], *model = NULL, *file = NULL, *text = NULL;
    unsigned flags = 0;
    int pieces = 0, nul = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (++i >= argc) return cli_usage_error(cmd, "%s needs a file", a);
            model = argv[i];
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (++i >= argc) return cli_usage_error(cmd, "%s needs a file", a);
            file = argv[i];
        } else if (!strcmp(a, "--special")) flags |= TOK_ENC_SPECIAL;
        else if (!strcmp(a, "--bos")) flags |= TOK_ENC_BOS;
        else if (!strcmp(a, "--eos")) flags |= TOK_ENC_EOS;
        else if (!strcmp(a, "--ids")) pieces = 0;
        else if (!strcmp(a, "--pieces")) pieces = 1;
        else if (!strcmp(a, "--nul")) nul = 1;
        else if (!strcmp(a, "--")) {
            if (i + 1 < argc) text = argv[i + 1];
            if (i + 2 < argc) return cli_usage_error(cmd, "only one TEXT argument is allowed");
            break;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error(cmd, "unknown option '%s' (see --help)", a);
        } else {
            if (text) return cli_usage_error(cmd, "only one TEXT argument is allowed (quote it)");
            text = a;
        }
    }
    if (!model) return cli_usage_error(cmd, "-m FILE is required (see --help)");
    if ((text != NULL) + (file != NULL) + nul > 1) return cli_usage_error(cmd, "give only one of TEXT, -f FILE, --nul");
    tok_vocab *v = tok_load(model);
    if (!v) return cli_fail(cmd);
    int rc = 0;
    if (text) {
        rc = encode_print(cmd, v, text, strlen(text), flags, pieces);
    } else if (file) {
        char *data;
        size_t n;
        if (moec_read_file(file, &data, &n) != 0) rc = cli_fail(cmd);
        else {
            rc = encode_print(cmd, v, data, n, flags, pieces);
            free(data);
        }
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        int delim = nul ? 0 : '\n';
        while (rc == 0 && (n = getdelim(&line, &cap, delim, stdin)) >= 0) {
            size_t len = (size_t)n;
            if (len > 0 && line[len - 1] == (char)delim) len--;
            rc = encode_print(cmd, v, line, len, flags, pieces);
        }
        free(line);
        if (rc == 0 && ferror(stdin)) {
            fprintf(stderr, "moec %s: error reading stdin\n", cmd);
            rc = 1;
        }
    }
    if (rc == 0 && fflush(stdout) != 0) {
        fprintf(stderr, "moec %s: write error\n", cmd);
        rc = 1;
    }
    tok_free(v);
    return rc;
}
