/* moec quantize IN OUT --type q8_0|q4_0|f16|bf16|f32: convert the weight matrices of a GGUF model
 * (rule: quant_pick_type in src/quant.h, documented in docs/quantization.md). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "quant.h"
#include "util.h"

static int parse_type(const char *s, ggml_type *t) {
    static const struct { const char *name; ggml_type t; } m[] = {
        {"q8_0", GGML_Q8_0}, {"q4_0", GGML_Q4_0}, {"f16", GGML_F16}, {"bf16", GGML_BF16}, {"f32", GGML_F32}};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (!strcasecmp(s, m[i].name)) {
            *t = m[i].t;
            return 0;
        }
    return -1;
}

int cmd_quantize(int argc, char **argv) {
    const char *usage = "usage: moec quantize IN.gguf OUT.gguf --type q8_0|q4_0|f16|bf16|f32";
    const char *in = NULL, *out = NULL, *type_s = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("%s\n  Matrices become the given type; norms, routers, LFA convolutions, biases and rows not a\n"
                   "  multiple of the block size keep theirs; with q4_0, token_embd/output become q8_0.\n"
                   "  See docs/quantization.md.\n",
                   usage);
            return 0;
        } else if (!strcmp(argv[i], "--type") || !strcmp(argv[i], "-t")) {
            if (i + 1 >= argc) return cli_usage_error(argv[0], "--type needs a value; %s", usage);
            type_s = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage_error(argv[0], "unknown option '%s'; %s", argv[i], usage);
        } else if (!in) {
            in = argv[i];
        } else if (!out) {
            out = argv[i];
        } else {
            return cli_usage_error(argv[0], "too many arguments; %s", usage);
        }
    }
    if (!in || !out || !type_s) return cli_usage_error(argv[0], "%s", usage);
    ggml_type t;
    if (parse_type(type_s, &t) != 0)
        return cli_usage_error(argv[0], "unknown type '%s' (q8_0, q4_0, f16, bf16, f32)", type_s);
    struct stat a, b;
    if (stat(in, &a) == 0 && stat(out, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return cli_usage_error(argv[0], "OUT must differ from IN (%s)", out);
    double t0 = moec_time();
    int64_t n = 0;
    if (quant_model_file(in, out, t, &n) != 0) return cli_fail(argv[0]);
    if (stat(in, &a) == 0 && stat(out, &b) == 0)
        fprintf(stderr, "moec quantize: %s -> %s (%s): %lld tensors converted, %.1f MB -> %.1f MB in %.1f s\n", in,
                out, type_s, (long long)n, (double)a.st_size / 1e6, (double)b.st_size / 1e6, moec_time() - t0);
    return 0;
}
