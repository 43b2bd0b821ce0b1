/* moec detokenize: decode token ids to text.
 *   moec detokenize -m FILE [--special] [--keep-space] [--stream] [--nul] [ID ...]
 * Ids come from the arguments, or from stdin: each line of space-separated ids is decoded on its own and
 * printed followed by a newline (with --nul: followed by a NUL byte). --stream decodes through the streaming
 * decoder (one id at a time), which must print the same text. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tok.h"
#include "util.h"

static void usage(FILE *f) {
    fprintf(f, "usage: moec detokenize -m FILE [--special] [--keep-space] [--stream] [--nul] [ID ...]\n"
               "  -m FILE       vocabulary: SentencePiece .model, .gguf, or llama2.c tokenizer.bin\n"
               "  --special     print control/special tokens as text (default: nothing)\n"
               "  --keep-space  keep the leading space of the first piece\n"
               "  --stream      decode one id at a time with the streaming decoder\n"
               "  --nul         end each decoded text with NUL instead of newline\n"
               "  ID ...        ids to decode; without them, stdin is read line by line\n");
}

/* Parse space-separated ids; -1 with a message on a bad token. */
static int parse_ids(const char *cmd, char *s, int32_t **ids, size_t *n, size_t *cap) {
    *n = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
        char *end;
        errno = 0;
        long x = strtol(t, &end, 10);
        if (*end || errno || x < INT32_MIN || x > INT32_MAX) {
            cli_usage_error(cmd, "'%s' is not a token id", t);
            return -1;
        }
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 256;
            int32_t *p = realloc(*ids, nc * sizeof *p);
            if (!p) {
                cli_usage_error(cmd, "out of memory");
                return -1;
            }
            *ids = p;
            *cap = nc;
        }
        (*ids)[(*n)++] = (int32_t)x;
    }
    return 0;
}

static int decode_print(const char *cmd, const tok_vocab *v, const int32_t *ids, size_t n, unsigned flags,
                        int stream, int nul) {
    if (stream) {
        tok_stream s;
        if (tok_stream_init(&s, v, flags) != 0) return cli_fail(cmd);
        const char *o;
        size_t l;
        for (size_t i = 0; i < n; i++) {
            if (tok_stream_push(&s, ids[i], &o, &l) != 0) {
                tok_stream_free(&s);
                return cli_fail(cmd);
            }
            fwrite(o, 1, l, stdout);
        }
        tok_stream_flush(&s, &o, &l);
        fwrite(o, 1, l, stdout);
        tok_stream_free(&s);
    } else {
        char *text;
        size_t len;
        if (tok_decode(v, ids, n, flags, &text, &len) != 0) return cli_fail(cmd);
        fwrite(text, 1, len, stdout);
        free(text);
    }
    fputc(nul ? 0 : '\n', stdout);
    if (ferror(stdout)) {
        fprintf(stderr, "moec %s: write error\n", cmd);
        return 1;
    }
    return 0;
}

int cmd_detokenize(int argc, char **argv) {
    const char *cmd = argv[0], *model = NULL;
    unsigned flags = 0;
    int stream = 0, nul = 0, first_id = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (++i >= argc) return cli_usage_error(cmd, "%s needs a file", a);
            model = argv[i];
        } else if (!strcmp(a, "--special")) flags |= TOK_DEC_SPECIAL;
        else if (!strcmp(a, "--keep-space")) flags |= TOK_DEC_KEEP_SPACE;
        else if (!strcmp(a, "--stream")) stream = 1;
        else if (!strcmp(a, "--nul")) nul = 1;
        else if (a[0] == '-' && !(a[1] >= '0' && a[1] <= '9')) {
            return cli_usage_error(cmd, "unknown option '%s' (see --help)", a);
        } else {
            first_id = i;
            break;
        }
    }
    if (!model) return cli_usage_error(cmd, "-m FILE is required (see --help)");
    tok_vocab *v = tok_load(model);
    if (!v) return cli_fail(cmd);
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    if (first_id) {
        size_t total = 1;
        for (int i = first_id; i < argc; i++) total += strlen(argv[i]) + 1;
        char *joined = malloc(total);
        if (!joined) rc = cli_usage_error(cmd, "out of memory");
        else {
            joined[0] = 0;
            for (int i = first_id; i < argc; i++) strcat(strcat(joined, argv[i]), " ");
            if (parse_ids(cmd, joined, &ids, &n, &cap) != 0) rc = 2;
            else rc = decode_print(cmd, v, ids, n, flags, stream, nul);
            free(joined);
        }
    } else {
        char *line = NULL;
        size_t lcap = 0;
        while (rc == 0 && getline(&line, &lcap, stdin) >= 0) {
            if (parse_ids(cmd, line, &ids, &n, &cap) != 0) rc = 2;
            else rc = decode_print(cmd, v, ids, n, flags, stream, nul);
        }
        free(line);
    }
    if (rc == 0 && fflush(stdout) != 0) {
        fprintf(stderr, "moec %s: write error\n", cmd);
        rc = 1;
    }
    free(ids);
    tok_free(v);
    return rc;
}
