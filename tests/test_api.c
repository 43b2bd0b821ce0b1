/* The public header compiles on its own and the basic path works through it alone:
 * load a real GGUF (llama-2-tiny-random), tokenize with its embedded vocabulary, run one forward,
 * and check the greedy next token equals the first token llama.cpp generated for "Hello world"
 * (../shared/data/models/REFERENCE-outputs.txt: "processed"). */
#include "moec.h"
#include "test.h"

int main(void) {
    const char *path = t_shared("data/models/llama-2-tiny-random.gguf");
    model *m = model_load(path, NULL);
    T_CHECK(m != NULL, "model_load: %s", moec_last_error());
    gguf_file *f = gguf_open(path);
    T_CHECK(f != NULL, "gguf_open: %s", moec_last_error());
    tok_vocab *v = f ? tok_load_gguf(f) : NULL;
    T_CHECK(v != NULL, "tok_load_gguf: %s", moec_last_error());
    if (m && v) {
        int32_t *ids = NULL;
        size_t n = 0;
        T_CHECK(tok_encode(v, "Hello world", 11, TOK_ENC_BOS, &ids, &n) == 0, "encode: %s", moec_last_error());
        seq_state *s = model_seq_new(m, 64);
        int64_t V = tok_n_vocab(v);
        float *logits = moec_malloc((size_t)V * n * sizeof(float));
        T_CHECK(s && logits && model_forward(m, s, ids, (int64_t)n, logits, 0, NULL) == 0, "forward: %s",
                moec_last_error());
        if (s && logits) {
            const float *last = logits + (n - 1) * (size_t)V;
            int32_t best = 0;
            for (int32_t i = 1; i < V; i++)
                if (last[i] > last[best]) best = i;
            size_t len = 0;
            const char *piece = tok_piece(v, best, &len);
            T_CHECK(piece && len == 12 && !memcmp(piece, "\xe2\x96\x81processed", 12), "greedy token %d is '%.*s'",
                    best, piece ? (int)len : 0, piece ? piece : "");
        }
        moec_free(logits);
        model_seq_free(s);
        free(ids);
    }
    tok_free(v);
    gguf_close(f);
    model_free(m);
    return t_done("test_api");
}
