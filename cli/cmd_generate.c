/* moec generate: stream a continuation of a prompt to stdout; speeds to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_model.h"
#include "model.h"
#include "sample.h"
#include "tok.h"
#include "util.h"

static void usage(void) {
    fprintf(stderr,
            "usage: moec generate -m FILE (-p TEXT | --tokens \"ID ...\") [options]\n"
            "  -n N               tokens to generate (default 128)\n"
            "  --temp T           temperature, 0 = greedy (default 0.8)\n"
            "  --top-k K          keep the K most likely tokens, 0 = off (default 40)\n"
            "  --top-p P          nucleus sampling, 1 = off (default 0.95)\n"
            "  --seed S           RNG seed (default 42)\n"
            "  --bos / --no-bos   prepend BOS (default: the file's tokenizer.ggml.add_bos_token; llama: yes)\n"
            "  --vocab FILE       tokenizer (.model / .gguf / tokenizer.bin) instead of the GGUF's own\n"
            "  --rope-table hf|fp32  RoPE angle table (default: the file's, else fp32)\n"
            "  -t THREADS         OpenMP threads\n"
            "  -c CTX             context size (default: min(model context, 4096))\n"
            "  --kv f32|f16       KV cache type (default f32; f16 halves its memory and bandwidth)\n"
            "  --no-mmap          read the model into memory (huge pages) instead of mapping it: slower start,\n"
            "                     faster decode with several threads (docs/performance.md)\n"
            "  --ids              print the generated token ids instead of text\n");
}

typedef struct {
    tok_stream ts;
    int ids;
    int have_tok;
} emit_ctx;

static int emit(int32_t id, void *user) {
    emit_ctx *e = user;
    if (e->ids || !e->have_tok) {
        printf("%d ", (int)id);
    } else {
        const char *out;
        size_t len;
        if (tok_stream_push(&e->ts, id, &out, &len) != 0) return -1;
        fwrite(out, 1, len, stdout);
    }
    fflush(stdout);
    return 0;
}

int cmd_generate(int argc, char **argv) {
    const char *cmd = argv[0], *path = NULL, *prompt = NULL, *tokens = NULL, *vocab_path = NULL;
    long n_predict = 128, top_k = 40, seed = 42, threads = 0, ctx = 0;
    double temp = 0.8, top_p = 0.95;
    int bos = -1, rope = -1, print_ids = 0, rc = 1, kv = GGML_F32;
    bool no_mmap = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV()                                                                                                    \
    do {                                                                                                           \
        if (!v) return cli_usage_error(cmd, "%s needs a value", a);                                               \
        i++;                                                                                                       \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        } else if (!strcmp(a, "-m")) { NEEDV(); path = v; }
        else if (!strcmp(a, "-p")) { NEEDV(); prompt = v; }
        else if (!strcmp(a, "--tokens")) { NEEDV(); tokens = v; }
        else if (!strcmp(a, "--vocab")) { NEEDV(); vocab_path = v; }
        else if (!strcmp(a, "-n")) { NEEDV(); if (cli_parse_int(cmd, a, v, 0, 1L << 30, &n_predict)) return 2; }
        else if (!strcmp(a, "--temp")) { NEEDV(); if (cli_parse_float(cmd, a, v, &temp)) return 2; }
        else if (!strcmp(a, "--top-k")) { NEEDV(); if (cli_parse_int(cmd, a, v, 0, 1L << 30, &top_k)) return 2; }
        else if (!strcmp(a, "--top-p")) { NEEDV(); if (cli_parse_float(cmd, a, v, &top_p)) return 2; }
        else if (!strcmp(a, "--seed")) { NEEDV(); if (cli_parse_int(cmd, a, v, 0, 0x7fffffffL, &seed)) return 2; }
        else if (!strcmp(a, "-t")) { NEEDV(); if (cli_parse_int(cmd, a, v, 1, 4096, &threads)) return 2; }
        else if (!strcmp(a, "-c")) { NEEDV(); if (cli_parse_int(cmd, a, v, 1, 1L << 30, &ctx)) return 2; }
        else if (!strcmp(a, "--rope-table")) { NEEDV(); if (cli_parse_rope_table(cmd, v, &rope)) return 2; }
        else if (!strcmp(a, "--kv")) { NEEDV(); if (cli_parse_kv_type(cmd, v, &kv)) return 2; }
        else if (!strcmp(a, "--bos")) bos = 1;
        else if (!strcmp(a, "--no-bos")) bos = 0;
        else if (!strcmp(a, "--no-mmap")) no_mmap = true;
        else if (!strcmp(a, "--ids")) print_ids = 1;
        else return cli_usage_error(cmd, "unknown option '%s' (see --help)", a);
#undef NEEDV
    }
    if (!path) return cli_usage_error(cmd, "-m FILE is required");
    if (!prompt == !tokens) return cli_usage_error(cmd, "give exactly one of -p TEXT or --tokens \"ID ...\"");
    if (temp < 0) return cli_usage_error(cmd, "--temp must be >= 0");
    if (!(top_p > 0.0 && top_p <= 1.0)) return cli_usage_error(cmd, "--top-p must be in (0, 1]");
    cli_set_threads(threads);

    model_load_opts lo = {.rope_table = rope, .no_mmap = no_mmap};
    model *m = NULL;
    tok_vocab *voc = NULL;
    seq_state *s = NULL;
    sampler *sp = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    emit_ctx ec = {0};
    ec.ids = print_ids;
    m = model_load(path, &lo);
    if (!m) goto fail;
    if (prompt || vocab_path || (m->gguf && gguf_find_key(m->gguf, "tokenizer.ggml.tokens") >= 0)) {
        voc = cli_load_vocab(m, vocab_path);
        if (!voc) goto fail;
        ec.have_tok = 1;
    }
    if (tokens) {
        if (cli_parse_token_ids(cmd, tokens, &ids, &n)) {
            rc = 2;
            goto out;
        }
        if (bos == 1) {
            int32_t *b = realloc(ids, (n + 1) * sizeof(int32_t));
            if (!b || !voc || tok_bos(voc) < 0) {
                if (b) ids = b;
                moec_set_error("--bos needs a tokenizer with a BOS token");
                goto fail;
            }
            ids = b;
            memmove(ids + 1, ids, n * sizeof(int32_t));
            ids[0] = tok_bos(voc), n++;
        }
    } else {
        if (bos < 0) {
            bool add = m->hp.arch == MODEL_ARCH_LLAMA;
            if (m->gguf && gguf_get_bool_or(m->gguf, "tokenizer.ggml.add_bos_token", add, &add) != 0) goto fail;
            bos = add && tok_bos(voc) >= 0;
        }
        if (tok_encode(voc, prompt, strlen(prompt), TOK_ENC_SPECIAL | (bos ? TOK_ENC_BOS : 0), &ids, &n) != 0)
            goto fail;
    }
    if (n == 0) {
        rc = cli_usage_error(cmd, "the prompt is empty");
        goto out;
    }
    int64_t n_ctx = ctx > 0 ? ctx : (m->hp.n_ctx_train < 4096 ? m->hp.n_ctx_train : 4096);
    if ((int64_t)n > n_ctx) {
        moec_set_error("the prompt has %zu tokens, more than the context of %lld (use -c)", n, (long long)n_ctx);
        goto fail;
    }
    s = model_seq_new_ex(m, n_ctx, (ggml_type)kv);
    if (!s) goto fail;
    sample_params spp = {(float)temp, top_k, (float)top_p};
    sp = sample_new(m->hp.n_vocab, &spp, (uint64_t)seed);
    if (!sp) goto fail;
    int32_t eos[2];
    int n_eos = 0;
    if (voc && tok_eos(voc) >= 0) eos[n_eos++] = tok_eos(voc);
    if (m->gguf) {
        uint32_t e;
        if (gguf_get_u32_or(m->gguf, "tokenizer.ggml.eos_token_id", UINT32_MAX, &e) == 0 && e != UINT32_MAX &&
            (n_eos == 0 || eos[0] != (int32_t)e) && e <= INT32_MAX)
            eos[n_eos++] = (int32_t)e;
    }
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->hp.n_vocab) {
            moec_set_error("token id %d out of range [0, %lld)", (int)ids[i], (long long)m->hp.n_vocab);
            goto fail;
        }
    if (ec.have_tok && !print_ids) {
        /* after a printed text prompt, the continuation keeps its leading space */
        if (tok_stream_init(&ec.ts, voc, prompt && *prompt ? TOK_DEC_KEEP_SPACE : 0) != 0) goto fail;
        if (prompt) {
            fputs(prompt, stdout);
        } else {
            for (size_t i = 0; i < n; i++)
                if (emit(ids[i], &ec) != 0) goto fail;
        }
    }
    cli_gen_stats st;
    if (cli_generate_loop(m, s, sp, ids, n, n_predict, voc ? tok_n_vocab(voc) : 0, eos, n_eos, emit, &ec, &st) != 0) goto fail;
    if (ec.have_tok && !print_ids) {
        const char *o;
        size_t len;
        if (tok_stream_flush(&ec.ts, &o, &len) == 0) fwrite(o, 1, len, stdout);
    }
    putchar('\n');
    fflush(stdout);
    fprintf(stderr, "moec generate: prompt %lld tokens in %.3f s (%.2f tok/s); generated %lld tokens in %.3f s "
                    "(%.2f tok/s)%s%s\n",
            (long long)st.n_prompt, st.t_prompt, st.t_prompt > 0 ? st.n_prompt / st.t_prompt : 0.0,
            (long long)st.n_gen, st.t_gen, st.t_gen > 0 ? st.n_gen / st.t_gen : 0.0,
            st.stopped_eos ? "; stopped at EOS" : "", st.ctx_full ? "; context full" : "");
    rc = 0;
    goto out;
fail:
    rc = cli_fail(cmd);
out:
    if (ec.have_tok && !print_ids && ec.ts.buf) tok_stream_free(&ec.ts);
    free(ids);
    sample_free(sp);
    model_seq_free(s);
    tok_free(voc);
    model_free(m);
    return rc;
}
