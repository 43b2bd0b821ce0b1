/* moec bench: prompt-processing and decode speed of moec's own forward (model_forward), like llama-bench's
 * pp/tg tests. A fixed prompt of P token ids is processed in one call (logits of the last position only),
 * then N tokens are decoded one at a time (T = 1, greedy, full logits row); only the model_forward calls are
 * timed. A short warm-up (8 tokens + 2 decode steps, then a reset) first touches the mmap'd weights, as a
 * loaded llama.cpp model is before its timed run. -r R repeats the measurement and keeps the best time of each
 * phase. Then, unless told not to: the read bandwidth of the machine with the same threads (the decode bound is
 * that bandwidth over the weight bytes read per token), and, when the llama.cpp peer is installed
 * (bench/llamacpp.mjs + node-llama-cpp, `bash bench/setup.sh`) and the model is a `llama`, the same measurement
 * by llama.cpp on the same file (its own perf counters), with the ratios moec/llama.cpp. Prints a human summary,
 * or one JSON line with --json. `moec bench --bandwidth [-t T]` measures the bandwidth only. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "cli_model.h"
#include "kern.h"
#include "model.h"
#include "sample.h"
#include "util.h"

static void usage(FILE *f) {
    fprintf(f, "usage: moec bench -m FILE [-t THREADS] [-p PROMPT_TOKENS=512] [-n DECODE_TOKENS=128] [-r REPS=1]\n"
               "                  [-b SEQUENCES=1] [--kv f16|f32] [--no-mmap] [--no-bw] [--peer SCRIPT | --no-peer]\n"
               "                  [--json]\n"
               "       moec bench --bandwidth [-t THREADS] [--json]\n"
               "  prompt ids are 3 + (i*7919 mod (V-3)); decode is greedy; times cover model_forward only;\n"
               "  with -r, the best time of each phase over the repetitions. KV cache F16 by default, as llama.cpp's\n"
               "  (generate and chat default to f32). Then the read bandwidth with the same\n"
               "  threads (decode bound = bandwidth / weight bytes per token; --no-bw skips it) and, for a llama\n"
               "  model, llama.cpp on the same file when its peer is installed (bench/llamacpp.mjs next to the\n"
               "  moec binary's source tree or in ./bench, or --peer SCRIPT; needs node; --no-peer skips it).\n"
               "  -b B: B sequences with different prompts, prefilled in one call and decoded together (one\n"
               "  model_forward_batch per step; llama.cpp: B sequences of one context); tokens/s count all\n"
               "  sequences (no bound for B > 1)\n");
}

/* ---- read bandwidth: the ceiling of decode, which streams the active weights once per token ---- */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx2"))) static uint64_t sum_words_avx2(const uint64_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_epi64(a0, _mm256_loadu_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_loadu_si256((const __m256i *)(p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_loadu_si256((const __m256i *)(p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_loadu_si256((const __m256i *)(p + i + 12)));
    }
    uint64_t l[4], s = 0;
    _mm256_storeu_si256((__m256i *)l, _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
    for (; i < n; i++) s += p[i];
    return s + l[0] + l[1] + l[2] + l[3];
}
#endif

static uint64_t sum_words(const uint64_t *p, size_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx2")) return sum_words_avx2(p, n);
#endif
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
    for (; i < n; i++) s0 += p[i];
    return s0 + s1 + s2 + s3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Read bandwidth in GB/s with nthr threads: `passes` sums of a `mib` MiB buffer (each thread its contiguous
 * share, first-touched by the same thread; 2 MiB aligned and advised MADV_HUGEPAGE: the machine's best read rate,
 * 2-7% above 4 KiB pages here, as the weights get with --no-mmap); best and median pass. -1 + error when the
 * buffer cannot be had. */
static int read_bandwidth(int nthr, long mib, int passes, double *best, double *median) {
    size_t n = (size_t)mib << 17; /* uint64 words */
    uint64_t *buf = NULL;         /* not zeroed: pass -1 writes it */
    double g[16];
    if (posix_memalign((void **)&buf, (size_t)2 << 20, n * sizeof *buf) != 0)
        return moec_set_error("bandwidth: cannot allocate %ld MiB", mib);
    (void)madvise(buf, n * sizeof *buf, MADV_HUGEPAGE); /* a hint */
    if (passes > 16) passes = 16;
    volatile uint64_t sink = 0;
    for (int p = -1; p < passes; p++) { /* pass -1 writes the buffer (first touch), untimed */
        uint64_t tot = 0;
        double t0 = moec_time();
#pragma omp parallel num_threads(nthr) reduction(+ : tot)
        {
            int nt = omp_get_num_threads(), th = omp_get_thread_num();
            size_t lo = n / (size_t)nt * (size_t)th, hi = th == nt - 1 ? n : n / (size_t)nt * (size_t)(th + 1);
            if (p < 0)
                for (size_t i = lo; i < hi; i++) buf[i] = i;
            else
                tot += sum_words(buf + lo, hi - lo);
        }
        if (p >= 0) g[p] = (double)(n * sizeof *buf) / (moec_time() - t0) / 1e9;
        sink += tot;
    }
    (void)sink;
    free(buf);
    qsort(g, (size_t)passes, sizeof *g, cmp_double);
    *best = g[passes - 1];
    *median = g[passes / 2];
    return 0;
}

/* ---- the llama.cpp peer ---- */

/* bench/llamacpp.mjs usable? (the script, and node-llama-cpp installed beside it) */
static int peer_installed(const char *script) {
    char dir[4096], pkg[4200];
    if (access(script, R_OK) != 0) return 0;
    snprintf(dir, sizeof dir, "%s", script);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    snprintf(pkg, sizeof pkg, "%s/node_modules/node-llama-cpp/package.json", dir);
    return access(pkg, R_OK) == 0;
}

/* The peer script: ./bench/llamacpp.mjs, else the source tree of this binary (build/moec -> ../bench). */
static const char *peer_find(char *buf, size_t cap) {
    if (peer_installed("bench/llamacpp.mjs")) return "bench/llamacpp.mjs";
    char exe[4096];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0) return NULL;
    exe[k] = 0;
    for (int up = 0; up < 3; up++) { /* build/moec, build/bench/moec, ... */
        char *slash = strrchr(exe, '/');
        if (!slash) return NULL;
        *slash = 0;
        snprintf(buf, cap, "%s/bench/llamacpp.mjs", exe);
        if (peer_installed(buf)) return buf;
    }
    return NULL;
}

/* Run `node SCRIPT MODEL -t T -p P -n N -r R -b B` (UV_THREADPOOL_SIZE=1) and parse its JSON line. NULL + error. */
static cJSON *peer_run(const char *script, const char *path, int nthr, long p, long n, long r, int b) {
    int fd[2];
    char targ[16], parg[24], narg[24], rarg[24], barg[16];
    snprintf(targ, sizeof targ, "%d", nthr);
    snprintf(parg, sizeof parg, "%ld", p);
    snprintf(narg, sizeof narg, "%ld", n);
    snprintf(rarg, sizeof rarg, "%ld", r);
    snprintf(barg, sizeof barg, "%d", b);
    if (pipe(fd) != 0) return moec_set_error("peer: pipe: %s", strerror(errno)), NULL;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]), close(fd[1]);
        return moec_set_error("peer: fork: %s", strerror(errno)), NULL;
    }
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]), close(fd[1]);
        setenv("UV_THREADPOOL_SIZE", "1", 1);
        execlp("node", "node", script, path, "-t", targ, "-p", parg, "-n", narg, "-r", rarg, "-b", barg, (char *)NULL);
        fprintf(stderr, "moec bench: cannot run node: %s\n", strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    ssize_t k;
    while (out && (k = read(fd[0], out + len, cap - 1 - len)) != 0) {
        if (k < 0) {
            if (errno == EINTR) continue;
            break;
        }
        len += (size_t)k;
        if (len == cap - 1) break; /* a sane peer prints one short line */
    }
    close(fd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (!out) return moec_set_error("peer: out of memory"), NULL;
    out[len] = 0;
    cJSON *j = NULL;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        moec_set_error("peer: %s exited with status %d", script, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    else if (!(j = cJSON_Parse(out)) || !cJSON_IsNumber(cJSON_GetObjectItem(j, "pp_tps")) ||
             !cJSON_IsNumber(cJSON_GetObjectItem(j, "tg_tps"))) {
        cJSON_Delete(j);
        j = NULL;
        moec_set_error("peer: %s printed no result line", script);
    }
    free(out);
    return j;
}

static double jnum(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
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

/* s as a JSON string body (quotes, backslashes and control characters escaped). */
static void json_str(const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
}

/* --bandwidth: the read bandwidth only (1 GiB, best of 5 passes), as bench/models.sh records it */
static int bandwidth_only(const char *cmd, int json) {
    int nthr = omp_get_max_threads();
    double best, med;
    if (read_bandwidth(nthr, 1024, 5, &best, &med)) return cli_fail(cmd);
    if (json) printf("{\"threads\":%d,\"bytes\":%zu,\"best_gbps\":%.3f,\"median_gbps\":%.3f}\n", nthr,
                     (size_t)1024 << 20, best, med);
    else printf("read bandwidth: %.2f GB/s best, %.2f GB/s median (threads %d, 1 GiB, 5 passes)\n", best, med, nthr);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    const char *cmd = argv[0], *path = NULL, *peer = NULL;
    long threads = 0, n_prompt = 512, n_gen = 128, reps = 1, n_seq = 1;
    int json = 0, kv = GGML_F16, bw = 1, no_peer = 0, bw_only = 0;
    bool no_mmap = false;
    char peer_buf[4300];
    const struct {
        const char *opt;
        long max, *dst;
    } ints[] = {{"-t", 1024, &threads}, {"-p", 1L << 20, &n_prompt}, {"-n", 1L << 20, &n_gen}, {"-r", 1000, &reps},
                {"-b", 256, &n_seq}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int k = 0;
        while (k < (int)(sizeof ints / sizeof ints[0]) && strcmp(a, ints[k].opt)) k++;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--no-bw")) {
            bw = 0;
        } else if (!strcmp(a, "--no-peer")) {
            no_peer = 1;
        } else if (!strcmp(a, "--no-mmap")) {
            no_mmap = true;
        } else if (!strcmp(a, "--bandwidth")) {
            bw_only = 1;
        } else if (k < (int)(sizeof ints / sizeof ints[0]) || !strcmp(a, "-m") || !strcmp(a, "--kv") ||
                   !strcmp(a, "--peer")) {
            if (i + 1 >= argc) return cli_usage_error(cmd, "%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "-m")) path = v;
            else if (!strcmp(a, "--peer")) peer = v;
            else if (!strcmp(a, "--kv")) {
                if (cli_parse_kv_type(cmd, v, &kv)) return 2;
            } else if (cli_parse_int(cmd, a, v, 1, ints[k].max, ints[k].dst)) {
                return 2;
            }
        } else if (a[0] == '-') {
            return cli_usage_error(cmd, "unknown option '%s'", a);
        } else if (!path) {
            path = a;
        } else {
            return cli_usage_error(cmd, "one model file only");
        }
    }
    if (threads > 0) cli_set_threads(threads);
    if (bw_only) return bandwidth_only(cmd, json);
    if (!path) {
        usage(stderr);
        return 2;
    }
    if (peer && no_peer) return cli_usage_error(cmd, "--peer and --no-peer together");
    if (peer && !peer_installed(peer))
        return cli_usage_error(cmd, "--peer %s: no such script, or node-llama-cpp is not installed beside it", peer);
    int rc = 1;
    int32_t *ids = NULL, *gen = NULL, *cur = NULL;
    int64_t *plen = NULL, *ones = NULL;
    float *logits = NULL;
    seq_state **seqs = NULL;
    cJSON *pj = NULL;
    model *m = model_load(path, &(model_load_opts){.rope_table = -1, .no_mmap = no_mmap});
    if (!m) return cli_fail(cmd);
    const int64_t V = m->hp.n_vocab;
    const int B = (int)n_seq;
    ids = malloc((size_t)B * (size_t)n_prompt * sizeof *ids);
    gen = malloc((size_t)(n_gen + 1) * sizeof *gen);
    cur = malloc((size_t)B * sizeof *cur);
    plen = malloc((size_t)B * sizeof *plen);
    ones = malloc((size_t)B * sizeof *ones);
    logits = malloc((size_t)B * (size_t)V * sizeof *logits);
    seqs = calloc((size_t)B, sizeof *seqs);
    if (!ids || !gen || !cur || !plen || !ones || !logits || !seqs) {
        fprintf(stderr, "moec %s: out of memory\n", cmd);
        goto done;
    }
    /* sequence b's prompt: 3 + ((i·7919 + b·104729) mod (V-3)) (sequence 0: the prompt llama.cpp gets too) */
    for (int b = 0; b < B; b++) {
        for (long i = 0; i < n_prompt; i++)
            ids[(size_t)b * (size_t)n_prompt + (size_t)i] =
                (int32_t)(V > 3 ? 3 + ((int64_t)i * 7919 + (int64_t)b * 104729) % (V - 3) : i % V);
        ones[b] = 1;
        if (!(seqs[b] = model_seq_new_ex(m, n_prompt + n_gen + 1, (ggml_type)kv))) goto fail;
    }

    /* warm-up: touch the weights (mmap) and grow the scratch buffers, then forget the sequences */
    for (int b = 0; b < B; b++) plen[b] = n_prompt < 8 ? n_prompt : 8;
    if (model_forward_batch(m, seqs, B, ids, plen, logits, MODEL_FWD_LAST)) goto fail;
    for (int k = 0; k < 2; k++) {
        for (int b = 0; b < B; b++) cur[b] = sample_argmax(logits + (size_t)b * (size_t)V, V);
        if (model_forward_batch(m, seqs, B, cur, ones, logits, MODEL_FWD_LAST)) goto fail;
    }

    /* R repetitions of (reset, prompts, decode); the best time of each phase is reported (interference from
     * other jobs only ever slows a run down) */
    double t_pp = 0, t_tg = 0;
    for (int b = 0; b < B; b++) plen[b] = n_prompt;
    for (long r = 0; r < reps; r++) {
        for (int b = 0; b < B; b++) model_seq_reset(seqs[b]);
        double t0 = moec_time();
        if (model_forward_batch(m, seqs, B, ids, plen, logits, MODEL_FWD_LAST)) goto fail;
        double pp = moec_time() - t0, tg = 0;
        for (int b = 0; b < B; b++) cur[b] = sample_argmax(logits + (size_t)b * (size_t)V, V);
        gen[0] = cur[0];
        for (long k = 0; k < n_gen; k++) {
            t0 = moec_time();
            if (model_forward_batch(m, seqs, B, cur, ones, logits, MODEL_FWD_LAST)) goto fail;
            tg += moec_time() - t0;
            for (int b = 0; b < B; b++) cur[b] = sample_argmax(logits + (size_t)b * (size_t)V, V);
            gen[k + 1] = cur[0];
        }
        if (r == 0 || pp < t_pp) t_pp = pp;
        if (r == 0 || tg < t_tg) t_tg = tg;
    }
    model_stats st;
    model_get_stats(m, n_prompt, &st);
    double pp_tps = (double)B * (double)n_prompt / t_pp, tg_tps = (double)B * (double)n_gen / t_tg;
    double rss = peak_rss_mb();
    int nthr = omp_get_max_threads();
    /* the peer, on the same file with the same settings (llama.cpp cannot load yuan2moe) */
    int is_llama = m->hp.arch == MODEL_ARCH_LLAMA;
    const char *script = NULL;
    if (!no_peer && is_llama) script = peer ? peer : peer_find(peer_buf, sizeof peer_buf);
    if (script) {
        if (!json) fprintf(stderr, "moec %s: running llama.cpp (%s) on the same file...\n", cmd, script);
        pj = peer_run(script, path, nthr, n_prompt, n_gen, reps, B);
        if (!pj) fprintf(stderr, "moec %s: %s\n", cmd, moec_last_error());
    }
    double bw_best = 0, bw_med = 0, bound = 0;
    if (B > 1) bw = 0; /* the bound is per token of one sequence */
    if (bw) {
        if (read_bandwidth(nthr, 512, 3, &bw_best, &bw_med)) goto fail;
        bound = bw_best * 1e9 / st.weight_bytes_per_token;
    }
    double l_pp = pj ? jnum(pj, "pp_tps") : 0, l_tg = pj ? jnum(pj, "tg_tps") : 0;
    if (json) {
        printf("{\"engine\":\"moec\",\"model\":\"");
        json_str(path);
        printf("\",\"threads\":%d,\"batch\":%d,\"reps\":%ld,\"n_vocab\":%lld,\"n_prompt\":%ld,\"n_gen\":%ld,"
               "\"kv\":\"%s\",\"kern\":\"%s\",\"mmap\":%s,"
               "\"pp_ms\":%.3f,\"tg_ms\":%.3f,\"pp_tps\":%.4f,\"tg_tps\":%.4f,\"rss_max_mb\":%.1f,"
               "\"weight_bytes_per_token\":%.0f,\"flops_per_token\":%.0f,",
               nthr, B, reps, (long long)V, n_prompt, n_gen, kv == GGML_F16 ? "f16" : "f32", kern_path(),
               no_mmap ? "false" : "true", t_pp * 1e3, t_tg * 1e3, pp_tps, tg_tps, rss, st.weight_bytes_per_token,
               st.flops_per_token);
        if (bw) printf("\"read_gbps\":%.3f,\"tg_bound_tps\":%.4f,\"tg_bound_frac\":%.4f,", bw_best, bound,
                       tg_tps / bound);
        if (pj) {
            char *pjs = cJSON_PrintUnformatted(pj);
            if (pjs) printf("\"peer\":%s,\"pp_ratio\":%.4f,\"tg_ratio\":%.4f,", pjs, pp_tps / l_pp, tg_tps / l_tg);
            free(pjs);
        }
        printf("\"tokens\":[");
        for (long k = 0; k < n_gen && k < 16; k++) printf("%s%d", k ? "," : "", (int)gen[k]);
        printf("]}\n");
    } else {
        printf("model:     %s (%s, %.1f M params, %.1f M active)\n", path, model_arch_name(m->hp.arch),
               st.total_params / 1e6, st.active_params / 1e6);
        printf("threads:   %d, KV cache %s, kernels %s, weights %s\n", nthr, kv == GGML_F16 ? "F16" : "F32",
               kern_path(), no_mmap ? "read into memory (--no-mmap)" : "mmap'd");
        if (B > 1) {
            printf("prompt:    %d x %ld tokens in one call, %.3f s = %.2f tokens/s (%.2f GFLOP/s)\n", B, n_prompt, t_pp,
                   pp_tps, pp_tps * st.flops_per_token / 1e9);
            printf("decode:    %ld steps x %d sequences in %.3f s = %.2f tokens/s (%.2f per sequence)\n", n_gen, B,
                   t_tg, tg_tps, tg_tps / B);
        } else {
            printf("prompt:    %ld tokens in %.3f s = %.2f tokens/s (%.2f GFLOP/s)\n", n_prompt, t_pp, pp_tps,
                   pp_tps * st.flops_per_token / 1e9);
            printf("decode:    %ld tokens in %.3f s = %.2f tokens/s (%.2f GB/s of weights)\n", n_gen, t_tg, tg_tps,
                   tg_tps * st.weight_bytes_per_token / 1e9);
        }
        printf("peak RSS:  %.1f MB\n", rss);
        if (bw)
            printf("bound:     %.2f tokens/s = read bandwidth %.2f GB/s / %.1f MB of weights per token; decode at "
                   "%.0f%% of it\n",
                   bound, bw_best, st.weight_bytes_per_token / 1e6, 100.0 * tg_tps / bound);
        if (pj) {
            const cJSON *pv = cJSON_GetObjectItem(pj, "peer");
            printf("llama.cpp: prompt %.2f tokens/s, decode %.2f tokens/s, peak RSS %.1f MB (%s, its own timings)\n",
                   l_pp, l_tg, jnum(pj, "rss_max_mb"), cJSON_IsString(pv) ? pv->valuestring : "peer");
            printf("ratio:     moec/llama.cpp prompt %.2fx, decode %.2fx\n", pp_tps / l_pp, tg_tps / l_tg);
        } else if (!no_peer && !is_llama) {
            printf("llama.cpp: not run (it cannot load the %s architecture)\n", model_arch_name(m->hp.arch));
        } else if (!no_peer && !script) {
            printf("llama.cpp: not run (peer not installed: bash bench/setup.sh)\n");
        }
    }
    rc = 0;
    goto done;
fail:
    rc = cli_fail(cmd);
done:
    cJSON_Delete(pj);
    for (int b = 0; seqs && b < (int)n_seq; b++) model_seq_free(seqs[b]);
    free(seqs);
    free(cur);
    free(plen);
    free(ones);
    model_free(m);
    free(ids);
    free(gen);
    free(logits);
    return rc;
}
