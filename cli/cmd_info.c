/* moec info: architecture, hyper-parameters, tensors, parameter counts, FLOPs and weight bytes per token. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_model.h"
#include "model.h"
#include "util.h"

static void human(char *buf, size_t cap, double v) {
    if (v >= 1e9) snprintf(buf, cap, "%.3f B", v / 1e9);
    else if (v >= 1e6) snprintf(buf, cap, "%.3f M", v / 1e6);
    else if (v >= 1e3) snprintf(buf, cap, "%.3f K", v / 1e3);
    else snprintf(buf, cap, "%.0f", v);
}

int cmd_info(int argc, char **argv) {
    const char *cmd = argv[0], *path = NULL;
    long ctx = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fprintf(stderr, "usage: moec info FILE [--ctx N]   (N: context for the attention FLOPs term; default: "
                            "the model's context length)\n");
            return 0;
        } else if (!strcmp(argv[i], "--ctx") || !strcmp(argv[i], "-c")) {
            if (i + 1 >= argc) return cli_usage_error(cmd, "%s needs a value", argv[i]);
            if (cli_parse_int(cmd, argv[i], argv[i + 1], 0, 1L << 31, &ctx)) return 2;
            i++;
        } else if (!strcmp(argv[i], "-m") && i + 1 < argc) {
            path = argv[++i];
        } else if (argv[i][0] == '-') {
            return cli_usage_error(cmd, "unknown option '%s'", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else {
            return cli_usage_error(cmd, "one model file only");
        }
    }
    if (!path) return cli_usage_error(cmd, "usage: moec info FILE");
    model *m = model_load(path, NULL);
    if (!m) return cli_fail(cmd);
    const model_hparams *hp = &m->hp;
    if (ctx < 0) ctx = (long)hp->n_ctx_train;
    printf("file:            %s\n", path);
    printf("architecture:    %s\n", model_arch_name(hp->arch));
    printf("vocab:           %lld\n", (long long)hp->n_vocab);
    printf("embedding:       %lld\n", (long long)hp->n_embd);
    printf("layers:          %lld\n", (long long)hp->n_layer);
    printf("heads:           %lld (kv %lld), head size %lld, attention width %lld\n", (long long)hp->n_head,
           (long long)hp->n_head_kv, (long long)hp->head_dim, (long long)(hp->n_head * hp->head_dim));
    printf("rope:            %lld dims, %s pairing, base %g, %s table\n", (long long)hp->rope_dims,
           hp->arch == MODEL_ARCH_YUAN2MOE ? "neox (half-split)" : "normal (adjacent)", hp->rope_base,
           hp->rope_table == MODEL_ROPE_TABLE_HF ? "hf bf16" : "fp32");
    printf("rms eps:         %g\n", hp->norm_eps);
    printf("context:         %lld\n", (long long)hp->n_ctx_train);
    if (hp->arch == MODEL_ARCH_YUAN2MOE) printf("lfa:             %s\n", hp->lfa ? "on" : "off");
    if (hp->n_expert > 0)
        printf("experts:         %lld, top-%lld, expert FFN %lld, %s router, %lld leading dense layers\n",
               (long long)hp->n_expert, (long long)hp->n_expert_used, (long long)hp->n_ff_exp,
               hp->moe_router == MODEL_FFN_MOE_ATTN ? "attention" : "linear", (long long)hp->n_dense_lead);
    if (hp->n_ff > 0) printf("dense FFN:       %lld\n", (long long)hp->n_ff);
    printf("output:          %s\n", hp->tied ? "tied to token_embd" : "output.weight");
    /* tensors by type */
    size_t count[64] = {0};
    double bytes = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        int t = (int)m->params[i].view->type;
        if (t >= 0 && t < 64) count[t]++;
        size_t be = 1, bb = 4;
        if (ggml_type_block(m->params[i].view->type, &be, &bb) == 0)
            bytes += (double)m->params[i].numel / (double)be * (double)bb;
    }
    printf("tensors:         %zu (", m->n_params);
    int first = 1;
    for (int t = 0; t < 64; t++)
        if (count[t]) {
            printf("%s%zu %s", first ? "" : ", ", count[t], ggml_type_name((ggml_type)t));
            first = 0;
        }
    printf("), %.2f MB of weights\n", bytes / 1e6);
    model_stats st;
    model_get_stats(m, ctx, &st);
    char a[32], b[32], c[32];
    human(a, sizeof a, st.total_params);
    human(b, sizeof b, st.active_params);
    human(c, sizeof c, st.matmul_params);
    printf("parameters:      total %s (%.0f), active per token %s (%.0f)\n", a, st.total_params, b,
           st.active_params);
    printf("per token:       %s matmul weights; %.4g GFLOPs at context %ld (2 x matmul weights = %.4g, "
           "attention 4·L·heads·d·ctx = %.4g)\n",
           c, st.flops_per_token / 1e9, ctx, 2 * st.matmul_params / 1e9,
           (st.flops_per_token - 2 * st.matmul_params) / 1e9);
    printf("weight bytes:    %.4g MB read per token\n", st.weight_bytes_per_token / 1e6);
    double kv = 2.0 * (double)hp->n_layer * (double)(hp->n_head_kv * hp->head_dim) * sizeof(float);
    printf("KV cache:        %.4g KB per position (fp32 K and V), %.4g MB at context %ld\n", kv / 1e3,
           kv * (double)ctx / 1e6, ctx);
    model_free(m);
    return 0;
}
