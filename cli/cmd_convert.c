/* moec convert: a HuggingFace Yuan2-M32 checkpoint directory, or a llama2.c checkpoint + tokenizer.bin, to GGUF. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "convert.h"
#include "util.h"

/* --stats: wall time since t0 and VmHWM of /proc/self/status (the process's peak resident set). */
static void print_stats(double t0) {
    long hwm = -1;
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "VmHWM: %ld kB", &hwm) == 1) break;
        fclose(f);
    }
    fprintf(stderr, "moec convert: %.2f s, peak RSS %ld kB (VmHWM)\n", moec_time() - t0, hwm);
}

static void usage(FILE *f) {
    fprintf(f, "usage: moec convert HF_DIR OUT.gguf [--type f32|f16|bf16] [--rope-table hf|fp32] [--name NAME] [--stats]\n"
               "       moec convert --llama2c MODEL.bin --vocab TOKENIZER.bin OUT.gguf [--type f32|f16|bf16] [--stats]\n"
               "  HF_DIR    config.json + *.safetensors (+ model.safetensors.index.json) [+ tokenizer.model]\n"
               "            -> architecture yuan2moe (docs/convert.md)\n"
               "  --llama2c a llama2.c (run.c) legacy fp32 checkpoint -> architecture llama\n"
               "  --type    matrix type (default: the checkpoint's own dtype; llama2.c: f32); norms, biases\n"
               "            and router matrices are always f32\n"
               "  --rope-table  yuan2moe.rope.table written to the file (default fp32; hf = the HF code's bf16 table)\n"
               "  --stats   print the wall time and the process's peak RSS (VmHWM) to stderr when done\n");
}

int cmd_convert(int argc, char **argv) {
    const char *cmd = argv[0], *l2c = NULL, *vocab = NULL, *pos[2] = {NULL, NULL};
    int npos = 0, stats = 0;
    double t0 = moec_time();
    conv_opts o = conv_default_opts();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int needs = !strcmp(a, "--type") || !strcmp(a, "--rope-table") || !strcmp(a, "--llama2c") ||
                    !strcmp(a, "--vocab") || !strcmp(a, "--name");
        if (needs && !v) return cli_usage_error(cmd, "%s needs a value", a);
        if (needs) i++;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--type")) {
            if (!strcmp(v, "f32")) o.out_type = GGML_F32;
            else if (!strcmp(v, "f16")) o.out_type = GGML_F16;
            else if (!strcmp(v, "bf16")) o.out_type = GGML_BF16;
            else return cli_usage_error(cmd, "--type must be f32, f16 or bf16, got '%s'", v);
        } else if (!strcmp(a, "--rope-table")) {
            if (!strcmp(v, "fp32")) o.rope_table = 0;
            else if (!strcmp(v, "hf")) o.rope_table = 1;
            else return cli_usage_error(cmd, "--rope-table must be hf or fp32, got '%s'", v);
        } else if (!strcmp(a, "--stats")) {
            stats = 1;
        } else if (!strcmp(a, "--llama2c")) l2c = v;
        else if (!strcmp(a, "--vocab")) vocab = v;
        else if (!strcmp(a, "--name")) o.name = v;
        else if (a[0] == '-' && a[1]) return cli_usage_error(cmd, "unknown option '%s' (see --help)", a);
        else if (npos < 2) pos[npos++] = a;
        else return cli_usage_error(cmd, "unexpected argument '%s' (see --help)", a);
    }
    if (l2c) {
        if (!vocab) return cli_usage_error(cmd, "--llama2c needs --vocab TOKENIZER.bin");
        if (npos != 1) return cli_usage_error(cmd, "--llama2c MODEL.bin --vocab TOKENIZER.bin OUT.gguf: give one output");
        if (o.rope_table >= 0) return cli_usage_error(cmd, "--rope-table applies to HF Yuan2 checkpoints only");
        if (conv_llama2c(l2c, vocab, pos[0], &o) != 0) return cli_fail(cmd);
        if (stats) print_stats(t0);
        return 0;
    }
    if (vocab) return cli_usage_error(cmd, "--vocab is for --llama2c (an HF dir's tokenizer.model is used)");
    if (npos != 2) {
        usage(stderr);
        return 2;
    }
    if (conv_hf(pos[0], pos[1], &o) != 0) return cli_fail(cmd);
    if (stats) print_stats(t0);
    return 0;
}
