/* moec logits: run the model over a token sequence and write every position's logits as float32 .npy [T, V]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_model.h"
#include "model.h"
#include "util.h"

static void usage(void) {
    fprintf(stderr, "usage: moec logits -m FILE (--tokens \"ID ...\" | -p TEXT [--bos]) -o OUT.npy [options]\n"
                    "  --rope-table hf|fp32  RoPE angle table (default: the file's, else fp32)\n"
                    "  --step             decode token by token (T = 1 per call) instead of one full pass\n"
                    "  --vocab FILE       tokenizer for -p (default: the GGUF's own)\n"
                    "  -t THREADS         OpenMP threads\n"
                    "  --kv f32|f16       KV cache type (default f32)\n");
}

int cmd_logits(int argc, char **argv) {
    const char *cmd = argv[0], *path = NULL, *tokens = NULL, *prompt = NULL, *out = NULL, *vocab_path = NULL;
    int rope = -1, step = 0, bos = 0, rc = 1, kv = GGML_F32;
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int needs = !strcmp(a, "-m") || !strcmp(a, "--tokens") || !strcmp(a, "-p") || !strcmp(a, "-o") ||
                    !strcmp(a, "--rope-table") || !strcmp(a, "-t") || !strcmp(a, "--vocab") || !strcmp(a, "--kv");
        if (needs && !v) return cli_usage_error(cmd, "%s needs a value", a);
        if (needs) i++;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        } else if (!strcmp(a, "-m")) path = v;
        else if (!strcmp(a, "--tokens")) tokens = v;
        else if (!strcmp(a, "-p")) prompt = v;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--vocab")) vocab_path = v;
        else if (!strcmp(a, "--rope-table")) { if (cli_parse_rope_table(cmd, v, &rope)) return 2; }
        else if (!strcmp(a, "--kv")) { if (cli_parse_kv_type(cmd, v, &kv)) return 2; }
        else if (!strcmp(a, "-t")) { if (cli_parse_int(cmd, a, v, 1, 4096, &threads)) return 2; }
        else if (!strcmp(a, "--step")) step = 1;
        else if (!strcmp(a, "--bos")) bos = 1;
        else return cli_usage_error(cmd, "unknown option '%s' (see --help)", a);
    }
    if (!path || !out) return cli_usage_error(cmd, "-m FILE and -o OUT.npy are required");
    if (!tokens == !prompt) return cli_usage_error(cmd, "give exactly one of --tokens \"ID ...\" or -p TEXT");
    cli_set_threads(threads);
    model_load_opts lo = {.rope_table = rope};
    model *m = NULL;
    seq_state *s = NULL;
    tok_vocab *voc = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    float *logits = NULL;
    m = model_load(path, &lo);
    if (!m) goto fail;
    if (tokens) {
        if (cli_parse_token_ids(cmd, tokens, &ids, &n)) {
            rc = 2;
            goto out;
        }
    } else {
        voc = cli_load_vocab(m, vocab_path);
        if (!voc || tok_encode(voc, prompt, strlen(prompt), TOK_ENC_SPECIAL | (bos ? TOK_ENC_BOS : 0), &ids, &n))
            goto fail;
    }
    if (n == 0) {
        rc = cli_usage_error(cmd, "no tokens");
        goto out;
    }
    int64_t V = m->hp.n_vocab, T = (int64_t)n;
    if (T > m->hp.n_ctx_train) moec_log("moec logits: %lld tokens exceed the trained context %lld", (long long)T,
                                        (long long)m->hp.n_ctx_train);
    s = model_seq_new_ex(m, T, (ggml_type)kv);
    if (!s) goto fail;
    size_t bytes;
    if (!moec_mul_ok((size_t)T * (size_t)V, sizeof(float), &bytes)) {
        moec_set_error("logits too large");
        goto fail;
    }
    logits = moec_malloc(bytes);
    if (!logits) goto fail;
    if (step) {
        for (int64_t t = 0; t < T; t++)
            if (model_forward(m, s, ids + t, 1, logits + t * V, 0, NULL) != 0) goto fail;
    } else if (model_forward(m, s, ids, T, logits, 0, NULL) != 0) {
        goto fail;
    }
    if (cli_write_npy_f32(out, logits, T, V) != 0) goto fail;
    rc = 0;
    goto out;
fail:
    rc = cli_fail(cmd);
out:
    moec_free(logits);
    free(ids);
    model_seq_free(s);
    tok_free(voc);
    model_free(m);
    return rc;
}
