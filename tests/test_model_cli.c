/* moec generate's stopping rules, with models whose greedy choice is known: an all-zero llama model has all
 * logits 0, so greedy picks id 0 (lowest id on ties) every step. With tokenizer.ggml.eos_token_id = 0 it must
 * stop at once (nothing emitted, "stopped at EOS"); with EOS = 1 it must emit exactly -n zeros; a prompt at the
 * context limit stops with "context full". Runs the moec binary ($MOEC). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "model.h"
#include "test.h"
#include "util.h"

static int write_zero_model(const char *path, uint32_t eos) {
    model_hparams hp = {0};
    hp.arch = MODEL_ARCH_LLAMA;
    hp.n_vocab = 40, hp.n_embd = 8, hp.n_layer = 1, hp.n_head = 2, hp.n_head_kv = 2, hp.head_dim = 4;
    hp.n_ctx_train = 16, hp.n_ff = 8, hp.rope_dims = 4, hp.rope_base = 10000, hp.norm_eps = 1e-5f, hp.tied = true;
    model *m = model_create(&hp, NULL); /* owned flat buffer: all zeros */
    gguf_writer *w = gguf_w_new();
    int rc = m && w && model_gguf_fill(m, w) == 0 && gguf_w_set_u32(w, "tokenizer.ggml.eos_token_id", eos) == 0 &&
                     gguf_w_write(w, path) == 0
                 ? 0
                 : -1;
    gguf_w_free(w);
    model_free(m);
    return rc;
}

/* run a command, capture stdout and stderr (truncated to cap) */
static int run(const char *cmd, char *out, size_t cap, char *err, size_t ecap, const char *dir) {
    char full[2048], ep[600];
    snprintf(ep, sizeof ep, "%s/err.txt", dir);
    snprintf(full, sizeof full, "%s 2>%s", cmd, ep);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    FILE *f = fopen(ep, "r");
    n = f ? fread(err, 1, ecap - 1, f) : 0;
    err[n] = 0;
    if (f) fclose(f);
    return st;
}

int main(void) {
    const char *moec = getenv("MOEC");
    if (!moec) {
        printf("skip: MOEC not set\n");
        return 77;
    }
    char dir[128], a[256], b[256], cmd[1024], out[4096], err[4096];
    snprintf(dir, sizeof dir, "/tmp/moec_test_model_cli_%d", (int)getpid());
    snprintf(a, sizeof a, "%s/eos0.gguf", dir);
    snprintf(b, sizeof b, "%s/eos1.gguf", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    T_CHECK(system(cmd) == 0, "mkdir");
    T_CHECK(write_zero_model(a, 0) == 0 && write_zero_model(b, 1) == 0, "write models: %s", moec_last_error());

    snprintf(cmd, sizeof cmd, "%s generate -m %s --tokens '3 4 5' -n 5 --temp 0 --ids", moec, a);
    int st = run(cmd, out, sizeof out, err, sizeof err, dir);
    T_CHECK(st == 0, "generate (eos 0) exit %d: %s", st, err);
    T_CHECK(strcmp(out, "\n") == 0, "EOS first: nothing emitted, got '%s'", out);
    T_CHECK(strstr(err, "generated 0 tokens") && strstr(err, "stopped at EOS"), "EOS reported: %s", err);

    snprintf(cmd, sizeof cmd, "%s generate -m %s --tokens '3 4 5' -n 5 --temp 0 --ids", moec, b);
    st = run(cmd, out, sizeof out, err, sizeof err, dir);
    T_CHECK(st == 0 && strcmp(out, "0 0 0 0 0 \n") == 0, "-n 5 zeros, got '%s' (%s)", out, err);
    T_CHECK(strstr(err, "generated 5 tokens") && !strstr(err, "EOS"), "count reported: %s", err);

    /* context 8: 6 prompt tokens, then at most 2 more positions can be fed: 3 tokens emitted (the last is
     * sampled from the final position and not fed), then "context full" */
    snprintf(cmd, sizeof cmd, "%s generate -m %s --tokens '3 4 5 6 7 8' -n 50 -c 8 --temp 0 --ids", moec, b);
    st = run(cmd, out, sizeof out, err, sizeof err, dir);
    T_CHECK(st == 0 && strcmp(out, "0 0 0 \n") == 0, "context full after 3, got '%s' (%s)", out, err);
    T_CHECK(strstr(err, "context full") != NULL, "context full reported: %s", err);

    /* sampling with temperature still never picks a masked id... and a seed reproduces */
    snprintf(cmd, sizeof cmd, "%s generate -m %s --tokens '3' -n 10 --temp 1 --top-k 0 --top-p 1 --seed 9 --ids", moec, b);
    char out2[4096];
    st = run(cmd, out, sizeof out, err, sizeof err, dir);
    int st2 = run(cmd, out2, sizeof out2, err, sizeof err, dir);
    T_CHECK(st == 0 && st2 == 0 && strcmp(out, out2) == 0 && strlen(out) > 10, "seeded sampling repeats: '%s'", out);
    snprintf(cmd, sizeof cmd, "%s generate -m %s --tokens '3' -n 10 --temp 1 --top-k 0 --top-p 1 --seed 10 --ids", moec, b);
    st = run(cmd, out2, sizeof out2, err, sizeof err, dir);
    T_CHECK(st == 0 && strcmp(out, out2) != 0, "another seed, other samples (uniform over 40 ids)");

    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    return t_done("test_model_cli");
}
