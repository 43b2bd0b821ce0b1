/* moec chat: questions from stdin (one per line), answers streamed to stdout, Yuan prompt format:
 * single turn "question<sep>", multi-turn "q1<n>a1<n>q2<sep>" (FastChat yuan2 template); answers end at <eod>. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_model.h"
#include "model.h"
#include "sample.h"
#include "tok.h"
#include "util.h"

static void usage(void) {
    fprintf(stderr, "usage: moec chat -m FILE [options]   (one question per line on stdin; empty line: new chat)\n"
                    "  -n N               max tokens per answer (default 512)\n"
                    "  --temp T --top-k K --top-p P --seed S   sampling (default: greedy, --temp 0)\n"
                    "  --vocab FILE       tokenizer instead of the GGUF's own\n"
                    "  --rope-table hf|fp32, -t THREADS, -c CTX (default: min(model context, 4096)), --kv f32|f16\n"
                    "  --no-mmap          read the model into memory (huge pages) instead of mapping it\n");
}

typedef struct {
    tok_stream ts;
    int32_t *ans;
    size_t n_ans, cap;
} chat_emit;

static int emit(int32_t id, void *user) {
    chat_emit *e = user;
    if (e->n_ans == e->cap) {
        size_t nc = e->cap ? 2 * e->cap : 256;
        int32_t *b = moec_realloc(e->ans, nc * sizeof(int32_t));
        if (!b) return -1;
        e->ans = b, e->cap = nc;
    }
    e->ans[e->n_ans++] = id;
    const char *o;
    size_t len;
    if (tok_stream_push(&e->ts, id, &o, &len) != 0) return -1;
    fwrite(o, 1, len, stdout);
    fflush(stdout);
    return 0;
}

/* append s[0..n) to a growing string */
static int sappend(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t nc = (*len + n + 1) * 2;
        char *b = moec_realloc(*buf, nc);
        if (!b) return -1;
        *buf = b, *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

int cmd_chat(int argc, char **argv) {
    const char *cmd = argv[0], *path = NULL, *vocab_path = NULL;
    long n_predict = 512, top_k = 40, seed = 42, threads = 0, ctx = 0;
    double temp = 0.0, top_p = 0.95;
    int rope = -1, rc = 1, kv = GGML_F32;
    bool no_mmap = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        if (!strcmp(a, "--no-mmap")) {
            no_mmap = true;
            continue;
        }
        if (!v) return cli_usage_error(cmd, "unknown option or missing value: '%s' (see --help)", a);
        i++;
        if (!strcmp(a, "-m")) path = v;
        else if (!strcmp(a, "--vocab")) vocab_path = v;
        else if (!strcmp(a, "-n")) { if (cli_parse_int(cmd, a, v, 1, 1L << 30, &n_predict)) return 2; }
        else if (!strcmp(a, "--temp")) { if (cli_parse_float(cmd, a, v, &temp)) return 2; }
        else if (!strcmp(a, "--top-k")) { if (cli_parse_int(cmd, a, v, 0, 1L << 30, &top_k)) return 2; }
        else if (!strcmp(a, "--top-p")) { if (cli_parse_float(cmd, a, v, &top_p)) return 2; }
        else if (!strcmp(a, "--seed")) { if (cli_parse_int(cmd, a, v, 0, 0x7fffffffL, &seed)) return 2; }
        else if (!strcmp(a, "-t")) { if (cli_parse_int(cmd, a, v, 1, 4096, &threads)) return 2; }
        else if (!strcmp(a, "-c")) { if (cli_parse_int(cmd, a, v, 1, 1L << 30, &ctx)) return 2; }
        else if (!strcmp(a, "--rope-table")) { if (cli_parse_rope_table(cmd, v, &rope)) return 2; }
        else if (!strcmp(a, "--kv")) { if (cli_parse_kv_type(cmd, v, &kv)) return 2; }
        else return cli_usage_error(cmd, "unknown option '%s' (see --help)", a);
    }
    if (!path) return cli_usage_error(cmd, "-m FILE is required");
    if (temp < 0 || !(top_p > 0.0 && top_p <= 1.0)) return cli_usage_error(cmd, "bad --temp or --top-p");
    cli_set_threads(threads);
    model_load_opts lo = {.rope_table = rope, .no_mmap = no_mmap};
    model *m = NULL;
    tok_vocab *voc = NULL;
    seq_state *s = NULL;
    sampler *sp = NULL;
    char *line = NULL, *hist = NULL, *ans_text = NULL;
    size_t line_cap = 0, hist_len = 0, hist_cap = 0;
    int32_t *ids = NULL, *fed = NULL;
    size_t n_fed = 0, fed_cap = 0;
    chat_emit ce = {0};
    int stream_ok = 0;
    m = model_load(path, &lo);
    if (!m) goto fail;
    voc = cli_load_vocab(m, vocab_path);
    if (!voc) goto fail;
    int32_t sep = tok_find(voc, "<sep>"), eod = tok_find(voc, "<eod>");
    if (sep < 0) {
        moec_set_error("the vocabulary has no <sep> token (the chat format needs a Yuan vocabulary)");
        goto fail;
    }
    int32_t eos[2];
    int n_eos = 0;
    if (eod >= 0) eos[n_eos++] = eod;
    if (tok_eos(voc) >= 0 && tok_eos(voc) != eod) eos[n_eos++] = tok_eos(voc);
    int64_t n_ctx = ctx > 0 ? ctx : (m->hp.n_ctx_train < 4096 ? m->hp.n_ctx_train : 4096);
    s = model_seq_new_ex(m, n_ctx, (ggml_type)kv);
    sample_params spp = {(float)temp, top_k, (float)top_p};
    if (!s || !(sp = sample_new(m->hp.n_vocab, &spp, (uint64_t)seed))) goto fail;
    if (tok_stream_init(&ce.ts, voc, 0) != 0) goto fail;
    stream_ok = 1;
    int tty = isatty(0);
    for (;;) {
        if (tty) fputs("> ", stderr);
        ssize_t r = getline(&line, &line_cap, stdin);
        if (r < 0) break;
        while (r > 0 && (line[r - 1] == '\n' || line[r - 1] == '\r')) line[--r] = 0;
        if (r == 0) { /* new conversation */
            hist_len = 0;
            if (hist) hist[0] = 0;
            continue;
        }
        /* prompt text = history "<n>" question "<sep>" */
        size_t base = hist_len;
        if (hist_len && sappend(&hist, &hist_len, &hist_cap, "<n>", 3)) goto fail;
        if (sappend(&hist, &hist_len, &hist_cap, line, (size_t)r) || sappend(&hist, &hist_len, &hist_cap, "<sep>", 5))
            goto fail;
        size_t n = 0;
        free(ids);
        ids = NULL;
        if (tok_encode(voc, hist, hist_len, TOK_ENC_SPECIAL, &ids, &n) != 0) goto fail;
        hist_len -= 5; /* the <sep> is not part of the history */
        hist[hist_len] = 0;
        if ((int64_t)n >= n_ctx) {
            fprintf(stderr, "moec chat: the conversation (%zu tokens) no longer fits the context of %lld; "
                            "starting a new one\n", n, (long long)n_ctx);
            hist_len = 0;
            if (sappend(&hist, &hist_len, &hist_cap, line, (size_t)r)) goto fail;
            free(ids);
            ids = NULL;
            if (sappend(&hist, &hist_len, &hist_cap, "<sep>", 5) ||
                tok_encode(voc, hist, hist_len, TOK_ENC_SPECIAL, &ids, &n) != 0)
                goto fail;
            hist_len -= 5;
            hist[hist_len] = 0;
            if ((int64_t)n >= n_ctx) {
                moec_set_error("the question (%zu tokens) does not fit the context of %lld", n, (long long)n_ctx);
                goto fail;
            }
        }
        (void)base;
        /* reuse the cache when what was fed is a prefix of the new prompt */
        size_t keep = 0;
        if (n_fed <= n && (int64_t)n_fed == s->pos && (n_fed == 0 || !memcmp(fed, ids, n_fed * sizeof(int32_t))))
            keep = n_fed;
        if (keep == 0) model_seq_reset(s);
        if (keep == n) { /* nothing new to feed: re-run from scratch */
            model_seq_reset(s);
            keep = 0;
        }
        ce.n_ans = 0;
        cli_gen_stats st;
        int64_t budget = n_ctx - (int64_t)n;
        if (budget > n_predict) budget = n_predict;
        if (cli_generate_loop(m, s, sp, ids + keep, n - keep, budget, tok_n_vocab(voc), eos, n_eos, emit, &ce, &st) != 0) goto fail;
        const char *o;
        size_t len;
        if (tok_stream_flush(&ce.ts, &o, &len) == 0) fwrite(o, 1, len, stdout);
        putchar('\n');
        fflush(stdout);
        /* record what the cache holds: prompt + the answer tokens that were fed */
        size_t need = n + ce.n_ans;
        if (need > fed_cap) {
            int32_t *b = moec_realloc(fed, need * sizeof(int32_t));
            if (!b) goto fail;
            fed = b, fed_cap = need;
        }
        memcpy(fed, ids, n * sizeof(int32_t));
        memcpy(fed + n, ce.ans, ce.n_ans * sizeof(int32_t));
        n_fed = (size_t)s->pos <= need ? (size_t)s->pos : need;
        /* history += "<n>" answer */
        size_t alen = 0;
        free(ans_text);
        ans_text = NULL;
        if (tok_decode(voc, ce.ans, ce.n_ans, 0, &ans_text, &alen) != 0) goto fail;
        if (sappend(&hist, &hist_len, &hist_cap, "<n>", 3) || sappend(&hist, &hist_len, &hist_cap, ans_text, alen))
            goto fail;
    }
    rc = 0;
    goto out;
fail:
    rc = cli_fail(cmd);
out:
    if (stream_ok) tok_stream_free(&ce.ts);
    moec_free(ce.ans);
    free(line);
    moec_free(hist);
    free(ans_text);
    free(ids);
    moec_free(fed);
    sample_free(sp);
    model_seq_free(s);
    tok_free(voc);
    model_free(m);
    return rc;
}
