/* moec bench: prompt-processing and decode speed of moec's own forward (model_forward), like llama-bench's
 * pp/tg tests. A fixed prompt of P token ids is processed in one call (logits of the last position only),
 * then N tokens are decoded one at a time (T = 1, greedy, full logits row); only the model_forward calls are
 * timed. A short warm-up (8 tokens + 2 decode steps, then a reset) first touches the mmap'd weights, as a
 * loaded llama.cpp model is before its timed run. -r R repeats the measurement and keeps the best time of each
 * phase. Prints a human summary, or one JSON line with --json. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "cli_model.h"
#include "model.h"
#include "util.h"

static void usage(FILE *f) {
    fprintf(f, "usage: moec bench -m FILE [-t THREADS] [-p PROMPT_TOKENS=512] [-n DECODE_TOKENS=128] [-r REPS=1] "
               "[--json]\n"
               "  prompt ids are 3 + (i*7919 mod (V-3)); decode is greedy; times cover model_forward only;\n"
               "  with -r, the best time of each phase over the repetitions\n");
}

/* Peak resident set size in MB: VmHWM from /proc/self/status, else getrusage. */
static double peak_rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    if (f) {
        while (fgets(line, sizeof line, f)) {
            long kb;
            if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) {
                fclose(f);
                return (double)kb / 1024.0;
            }
        }
        fclose(f);
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) return (double)ru.ru_maxrss / 1024.0;
    return -1.0;
}

static int32_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return (int32_t)b;
}

/* s as a JSON string body (quotes, backslashes and control characters escaped). */
static void json_str(const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
}

int cmd_bench(int argc, char **argv) {
    const char *cmd = argv[0], *path = NULL;
    long threads = 0, n_prompt = 512, n_gen = 128, reps = 1;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "-t") || !strcmp(a, "-p") || !strcmp(a, "-n") ||
                   !strcmp(a, "-r")) {
            if (i + 1 >= argc) return cli_usage_error(cmd, "%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "-m")) path = v;
            else if (cli_parse_int(cmd, a, v, 1, !strcmp(a, "-t") ? 1024 : !strcmp(a, "-r") ? 1000 : 1L << 20,
                                   !strcmp(a, "-t")   ? &threads
                                   : !strcmp(a, "-p") ? &n_prompt
                                   : !strcmp(a, "-n") ? &n_gen
                                                      : &reps))
                return 2;
        } else if (a[0] == '-') {
            return cli_usage_error(cmd, "unknown option '%s'", a);
        } else if (!path) {
            path = a;
        } else {
            return cli_usage_error(cmd, "one model file only");
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    if (threads > 0) cli_set_threads(threads);
    int rc = 1;
    int32_t *ids = NULL, *gen = NULL;
    float *logits = NULL;
    seq_state *s = NULL;
    model *m = model_load(path, NULL);
    if (!m) return cli_fail(cmd);
    const int64_t V = m->hp.n_vocab;
    ids = malloc((size_t)n_prompt * sizeof *ids);
    gen = malloc((size_t)(n_gen + 1) * sizeof *gen);
    logits = malloc((size_t)V * sizeof *logits);
    if (!ids || !gen || !logits) {
        fprintf(stderr, "moec %s: out of memory\n", cmd);
        goto done;
    }
    for (long i = 0; i < n_prompt; i++) ids[i] = (int32_t)(V > 3 ? 3 + ((int64_t)i * 7919) % (V - 3) : i % V);
    s = model_seq_new(m, n_prompt + n_gen + 1);
    if (!s) goto fail;

    /* warm-up: touch the weights (mmap) and grow the scratch buffers, then forget the sequence */
    int64_t nw = n_prompt < 8 ? n_prompt : 8;
    if (model_forward(m, s, ids, nw, logits, MODEL_FWD_LAST, NULL)) goto fail;
    for (int k = 0; k < 2; k++) {
        int32_t t = argmax(logits, V);
        if (model_forward(m, s, &t, 1, logits, MODEL_FWD_LAST, NULL)) goto fail;
    }

    /* R repetitions of (reset, prompt, decode); the best time of each phase is reported (interference from
     * other jobs only ever slows a run down) */
    double t_pp = 0, t_tg = 0;
    for (long r = 0; r < reps; r++) {
        model_seq_reset(s);
        double t0 = moec_time();
        if (model_forward(m, s, ids, n_prompt, logits, MODEL_FWD_LAST, NULL)) goto fail;
        double pp = moec_time() - t0, tg = 0;
        gen[0] = argmax(logits, V);
        for (long k = 0; k < n_gen; k++) {
            t0 = moec_time();
            if (model_forward(m, s, &gen[k], 1, logits, MODEL_FWD_LAST, NULL)) goto fail;
            tg += moec_time() - t0;
            gen[k + 1] = argmax(logits, V);
        }
        if (r == 0 || pp < t_pp) t_pp = pp;
        if (r == 0 || tg < t_tg) t_tg = tg;
    }
    model_stats st;
    model_get_stats(m, n_prompt, &st);
    double pp_tps = (double)n_prompt / t_pp, tg_tps = (double)n_gen / t_tg;
    double rss = peak_rss_mb();
    int nthr = omp_get_max_threads();
    if (json) {
        printf("{\"engine\":\"moec\",\"model\":\"");
        json_str(path);
        printf("\",\"threads\":%d,\"reps\":%ld,\"n_vocab\":%lld,\"n_prompt\":%ld,\"n_gen\":%ld,"
               "\"pp_ms\":%.3f,\"tg_ms\":%.3f,\"pp_tps\":%.4f,\"tg_tps\":%.4f,\"rss_max_mb\":%.1f,"
               "\"weight_bytes_per_token\":%.0f,\"flops_per_token\":%.0f,\"tokens\":[",
               nthr, reps, (long long)V, n_prompt, n_gen, t_pp * 1e3, t_tg * 1e3, pp_tps, tg_tps, rss, st.weight_bytes_per_token,
               st.flops_per_token);
        for (long k = 0; k < n_gen && k < 16; k++) printf("%s%d", k ? "," : "", (int)gen[k]);
        printf("]}\n");
    } else {
        printf("model:     %s (%s, %.1f M params, %.1f M active)\n", path, model_arch_name(m->hp.arch),
               st.total_params / 1e6, st.active_params / 1e6);
        printf("threads:   %d\n", nthr);
        printf("prompt:    %ld tokens in %.3f s = %.2f tokens/s (%.2f GFLOP/s)\n", n_prompt, t_pp, pp_tps,
               pp_tps * st.flops_per_token / 1e9);
        printf("decode:    %ld tokens in %.3f s = %.2f tokens/s (%.2f GB/s of weights)\n", n_gen, t_tg, tg_tps,
               tg_tps * st.weight_bytes_per_token / 1e9);
        printf("peak RSS:  %.1f MB\n", rss);
    }
    rc = 0;
    goto done;
fail:
    rc = cli_fail(cmd);
done:
    model_seq_free(s);
    model_free(m);
    free(ids);
    free(gen);
    free(logits);
    return rc;
}
