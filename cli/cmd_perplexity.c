/* moec perplexity -m FILE -f TEXT: perplexity, llama.cpp's convention. The text is tokenized whole (no BOS), cut
 * into chunks of n_ctx tokens (a partial last chunk is dropped); each chunk is evaluated from an empty context and
 * only its second half is scored: the predictions of tokens n_ctx/2+1 .. n_ctx-1 (so every scored token sees at
 * least n_ctx/2 tokens of context). PPL = exp(mean NLL over all scored tokens). With --bos the first token of each
 * chunk is replaced by BOS (llama.cpp's default for models that add BOS). -f may also be a token shard
 * (moec prepare) or, with --ids, a text file of token ids. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_model.h"
#include "data.h"
#include "model.h"
#include "ops_backward.h"
#include "tok.h"
#include "util.h"

static void usage(FILE *f) {
    fprintf(f, "usage: moec perplexity -m MODEL -f FILE [-c N_CTX (512)] [--chunks N] [--vocab VOCAB] [--ids]\n"
               "                        [--bos] [--rope-table fp32|hf] [-t THREADS] [--no-mmap]\n"
               "  FILE: text (tokenized with the model's vocabulary), a token shard, or with --ids token ids\n");
}

int cmd_perplexity(int argc, char **argv) {
    const char *cmd = argv[0], *mpath = NULL, *fpath = NULL, *vpath = NULL;
    long n_ctx = 512, chunks = 0, threads = 0;
    bool ids_mode = false, bos = false, no_mmap = false;
    int rope_table = -1, rc = 1;
    model *m = NULL;
    tok_vocab *v = NULL;
    seq_state *s = NULL;
    int32_t *ids = NULL, *tg = NULL;
    size_t n = 0;
    float *logits = NULL;
    char *text = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--ids")) {
            ids_mode = true;
        } else if (!strcmp(a, "--bos")) {
            bos = true;
        } else if (!strcmp(a, "--no-mmap")) {
            no_mmap = true;
        } else if (!val) {
            usage(stderr);
            return cli_usage_error(cmd, "unknown argument or missing value: '%s'", a);
        } else if (!strcmp(a, "-m")) {
            mpath = argv[++i];
        } else if (!strcmp(a, "-f")) {
            fpath = argv[++i];
        } else if (!strcmp(a, "--vocab")) {
            vpath = argv[++i];
        } else if (!strcmp(a, "-c")) {
            if (cli_parse_int(cmd, a, argv[++i], 2, 1 << 20, &n_ctx) != 0) return 2;
        } else if (!strcmp(a, "--chunks")) {
            if (cli_parse_int(cmd, a, argv[++i], 0, 1L << 30, &chunks) != 0) return 2;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (cli_parse_int(cmd, a, argv[++i], 1, 4096, &threads) != 0) return 2;
        } else if (!strcmp(a, "--rope-table")) {
            if (cli_parse_rope_table(cmd, argv[++i], &rope_table) != 0) return 2;
        } else {
            usage(stderr);
            return cli_usage_error(cmd, "unknown argument '%s'", a);
        }
    }
    if (!mpath || !fpath) return cli_usage_error(cmd, "need -m MODEL and -f FILE");
    cli_set_threads(threads);
    model_load_opts lo = {.rope_table = rope_table, .no_mmap = no_mmap};
    m = model_load(mpath, &lo);
    if (!m) goto fail;
    /* tokens */
    {
        moec_mmap mm;
        if (moec_mmap_open(&mm, fpath) != 0) goto fail;
        bool shard = mm.size >= 8 && !memcmp(mm.data, DATA_SHARD_MAGIC, 8);
        moec_mmap_close(&mm);
        if (shard) {
            data_shard sh;
            if (data_shard_open(&sh, fpath, (uint64_t)m->hp.n_vocab) != 0) goto fail;
            ids = malloc((sh.n ? sh.n : 1) * sizeof *ids);
            if (!ids) {
                data_shard_close(&sh);
                moec_set_error("out of memory");
                goto fail;
            }
            for (uint64_t i = 0; i < sh.n; i++) ids[i] = data_shard_get(&sh, i);
            n = sh.n;
            data_shard_close(&sh);
        } else {
            size_t len;
            if (moec_read_file(fpath, &text, &len) != 0) goto fail;
            if (ids_mode) {
                if (cli_parse_token_ids(cmd, text, &ids, &n) != 0) {
                    rc = 2;
                    goto done;
                }
            } else {
                v = cli_load_vocab(m, vpath);
                if (!v) goto fail;
                if (tok_encode(v, text, len, TOK_ENC_SPECIAL, &ids, &n) != 0) goto fail;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->hp.n_vocab) {
            moec_set_error("token %zu = %d is outside the model's vocabulary (%lld)", i, (int)ids[i],
                           (long long)m->hp.n_vocab);
            goto fail;
        }
    int32_t bos_id = -1;
    if (bos) {
        if (!v) v = cli_load_vocab(m, vpath);
        if (!v || (bos_id = tok_bos(v)) < 0) {
            if (v) moec_set_error("--bos: the vocabulary has no BOS token");
            goto fail;
        }
    }
    long n_chunks = (long)(n / (size_t)n_ctx);
    if (chunks > 0 && chunks < n_chunks) n_chunks = chunks;
    if (n_chunks == 0) {
        moec_set_error("%zu tokens: need at least one chunk of %ld (lower -c)", n, n_ctx);
        goto fail;
    }
    s = model_seq_new(m, n_ctx);
    logits = moec_malloc((size_t)n_ctx * (size_t)m->hp.n_vocab * sizeof(float));
    tg = malloc((size_t)n_ctx * sizeof *tg);
    float *mask = malloc((size_t)n_ctx * sizeof *mask);
    if (!s || !logits || !tg || !mask) {
        free(mask);
        goto fail;
    }
    int64_t first = n_ctx / 2;
    for (long i = 0; i < n_ctx; i++) mask[i] = i >= first && i < n_ctx - 1 ? 1.0f : 0.0f;
    double nll = 0, nll2 = 0, count = 0, t0 = moec_time();
    fprintf(stderr, "moec perplexity: %zu tokens, %ld chunks of %ld, scoring the second half of each\n", n, n_chunks,
            n_ctx);
    for (long c = 0; c < n_chunks; c++) {
        int32_t *chunk = ids + (size_t)c * (size_t)n_ctx;
        int32_t save = chunk[0];
        if (bos) chunk[0] = bos_id;
        model_seq_reset(s);
        int r = model_forward(m, s, chunk, n_ctx, logits, 0, NULL);
        chunk[0] = save;
        if (r != 0) {
            free(mask);
            goto fail;
        }
        for (long t = 0; t < n_ctx - 1; t++) tg[t] = chunk[t + 1];
        tg[n_ctx - 1] = 0;
        for (long t = first; t < n_ctx - 1; t++) {
            double l = ops_cross_entropy(NULL, logits + (size_t)t * (size_t)m->hp.n_vocab, tg + t, NULL, 1,
                                         m->hp.n_vocab, 1.0f);
            nll += l, nll2 += l * l, count++;
        }
        printf("[%ld]%.4f", c + 1, exp(nll / count));
        fflush(stdout);
    }
    double mean = nll / count, var = nll2 / count - mean * mean;
    double err = count > 1 && var > 0 ? sqrt(var / (count - 1)) : 0; /* std error of the mean NLL */
    printf("\nFinal estimate: PPL = %.4f +/- %.4f (mean NLL %.6f over %.0f tokens, %.1f s)\n", exp(mean),
           exp(mean) * err, mean, count, moec_time() - t0);
    free(mask);
    rc = 0;
    goto done;
fail:
    rc = cli_fail(cmd);
done:
    free(text);
    free(ids);
    free(tg);
    moec_free(logits);
    model_seq_free(s);
    if (v) tok_free(v);
    model_free(m);
    return rc;
}
