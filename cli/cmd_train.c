/* moec train: train a model on token shards (or a text file of token ids, one sequence per line).
 * Checkpoints are GGUF files (weights + optimizer moments + step + RNG + data position), written atomically;
 * --resume continues bit-for-bit. Next to the checkpoint: CKPT.csv (step log) and CKPT.svg (loss plot).
 * See docs/training.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "data.h"
#include "train.h"
#include "util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: moec train (-m MODEL | --resume CKPT) -d DATA [-d DATA...] [-o CKPT] [options]\n"
            "  -m MODEL          initial weights (GGUF, e.g. from moec init; a checkpoint's state is ignored)\n"
            "  --resume CKPT     continue a run exactly (weights, moments, step, data position)\n"
            "  -d DATA           training data: token shard (moec prepare) or text file of ids, one sequence a line\n"
            "  --val FILE        validation data (same formats)\n"
            "  -o CKPT           checkpoint path (default: the --resume path); log CKPT.csv, plot CKPT.svg\n"
            "  --batch B (8)  --seq T (128)  --accum A (1)   rows per step = B*A, each of T tokens\n"
            "  --steps N | --tokens N    length of the run (total, counting resumed steps)\n"
            "  --lr LR (3e-4)  --lr-min LR (lr/10)  --warmup N (0)   warm-up then cosine to lr-min\n"
            "  --optimizer adamw|sgd (adamw)  --wd WD (0.1)  --beta1 (0.9)  --beta2 (0.95)  --momentum (0)\n"
            "  --clip C (1.0, 0 = off)  --seed S (1: data start)  --aux-lb A (0)  --aux-z Z (0)\n"
            "  --eval-every N (0 = off)  --eval-rows N (32; the last step uses all)\n"
            "  --save-every N (100; 0 = only at the end)  --no-save (no checkpoint at all: benchmarks)\n"
            "  --log-every N (1)  --quiet\n"
            "  --group G         rows whose backward runs together (default min(B*A, 4), fewer if G rows of\n"
            "                    activations would pass ~512 MB; 1..16): bigger expert products, G sets of\n"
            "                    activations in memory; results differ from G=1 by rounding\n"
            "  --peak GFLOPS     matmul peak the progress line reports its share of (default: moec's fp32 GEMM\n"
            "                    measured at start; FLOPs per token as train_flops_per_token, see docs/training.md)\n");
}

typedef struct {
    int64_t step;
    double loss, val, lr;
} logrow;

static double prof_clock(bool cpu) {
    if (!cpu) return moec_time();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Reload the rows of an existing CSV with step <= max_step (resume keeps the log consistent). */
static int csv_load(const char *path, int64_t max_step, logrow **rows, size_t *n) {
    FILE *f = fopen(path, "r");
    char line[512];
    size_t cap = 0;
    *rows = NULL, *n = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        long long st, tok;
        double loss, val, lr, gn, secs;
        if (sscanf(line, "%lld,%lld,%lf,%lf,%lf,%lf,%lf", &st, &tok, &loss, &val, &lr, &gn, &secs) != 7) continue;
        if (st > max_step) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 256;
            logrow *p = realloc(*rows, cap * sizeof *p);
            if (!p) break;
            *rows = p;
        }
        (*rows)[(*n)++] = (logrow){st, loss, val, lr};
    }
    fclose(f);
    return 0;
}

/* Loss plot: train loss (blue) and validation loss (orange dots) against the step. */
static void write_svg(const char *path, const logrow *r, size_t n) {
    if (n == 0) return;
    double lo = INFINITY, hi = -INFINITY;
    int64_t smax = 1;
    for (size_t i = 0; i < n; i++) {
        double v[2] = {r[i].loss, r[i].val};
        for (int j = 0; j < 2; j++)
            if (isfinite(v[j]) && v[j] > 0) lo = fmin(lo, v[j]), hi = fmax(hi, v[j]);
        if (r[i].step > smax) smax = r[i].step;
    }
    if (!(hi > lo)) hi = lo + 1;
    size_t cap = 4096 + n * 64;
    char *s = malloc(cap);
    if (!s) return;
    size_t o = 0;
    const double W = 640, Hh = 400, L = 60, R = 20, Tp = 20, B = 40;
#define X(st) (L + (double)(st) / (double)smax * (W - L - R))
#define Y(v) (Tp + (hi - (v)) / (hi - lo) * (Hh - Tp - B))
    o += (size_t)snprintf(s + o, cap - o,
                          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" font-family=\"sans-serif\" "
                          "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
                          "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>"
                          "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n"
                          "<text x=\"%g\" y=\"%g\">%.3f</text><text x=\"%g\" y=\"%g\">%.3f</text>"
                          "<text x=\"%g\" y=\"%g\">step %lld</text>"
                          "<text x=\"%g\" y=\"%g\" fill=\"#1f77b4\">train loss</text>"
                          "<text x=\"%g\" y=\"%g\" fill=\"#ff7f0e\">validation loss</text>\n<polyline fill=\"none\" "
                          "stroke=\"#1f77b4\" points=\"",
                          W, Hh, L, Hh - B, W - R, Hh - B, L, Tp, L, Hh - B, 2.0, Tp + 4, hi, 2.0, Hh - B, lo, W - 90,
                          Hh - 10, (long long)smax, L + 10, Tp + 12, L + 100, Tp + 12);
    for (size_t i = 0; i < n && o + 64 < cap; i++)
        if (isfinite(r[i].loss)) o += (size_t)snprintf(s + o, cap - o, "%.1f,%.1f ", X(r[i].step), Y(r[i].loss));
    o += (size_t)snprintf(s + o, cap - o, "\"/>\n");
    for (size_t i = 0; i < n && o + 96 < cap; i++)
        if (isfinite(r[i].val) && r[i].val > 0)
            o += (size_t)snprintf(s + o, cap - o, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#ff7f0e\"/>\n",
                                  X(r[i].step), Y(r[i].val));
    o += (size_t)snprintf(s + o, cap - o, "</svg>\n");
#undef X
#undef Y
    moec_write_file_atomic(path, s, o);
    free(s);
}

/* Mean validation loss over the first `rows` rows of the validation data. */
static int evaluate(train_state *s, data_loader *val, int64_t rows, int64_t T, int32_t *in, int32_t *tg, float *mk,
                    double *out) {
    data_pos zero = {0, 0, 0};
    double sum = 0, msum = 0;
    if (data_loader_seek(val, zero) != 0) return -1;
    for (int64_t r = 0; r < rows; r++) {
        if (data_loader_next(val, 1, in, tg, mk) != 0) return -1;
        double ce;
        if (train_eval_seq(s, in, tg, mk, T, &ce) != 0) return -1;
        sum += ce;
        for (int64_t t = 0; t < T; t++) msum += mk[t];
        if (val->pos.epoch > 0) break; /* whole validation set seen */
    }
    *out = msum > 0 ? sum / msum : NAN;
    return 0;
}

int cmd_train(int argc, char **argv) {
    const char *cmd = argv[0], *model_path = NULL, *resume = NULL, *out = NULL, *val_path = NULL;
    const char *data_paths[64];
    int n_data = 0, rc = 1;
    long B = 8, T = 128, A = 1, group = 0, warmup = 0, eval_every = 0, eval_rows = 32, save_every = 100, log_every = 1, seed = 1;
    long steps = 0;
    double peak = 0, tokens = 0, lr = 3e-4, lr_min = -1, wd = 0.1, b1 = 0.9, b2 = 0.95, mom = 0, clip = 1.0, aux_lb = 0, aux_z = 0;
    const char *optname = "adamw";
    bool quiet = false, no_save = false;
    train_state *s = NULL;
    data_loader ld, vld;
    memset(&ld, 0, sizeof ld), memset(&vld, 0, sizeof vld);
    int32_t *in = NULL, *tg = NULL;
    float *mk = NULL;
    logrow *rows = NULL;
    size_t n_rows = 0, cap_rows = 0;
    FILE *csv = NULL;
    char csv_path[4096], svg_path[4096];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define INT(name, var, lo, hi)                                                                                         \
    if (!strcmp(a, name)) {                                                                                            \
        if (cli_parse_int(cmd, a, v, lo, hi, &var) != 0) return 2;                                                     \
        i++;                                                                                                           \
        continue;                                                                                                      \
    }
#define FLT(name, var)                                                                                                 \
    if (!strcmp(a, name)) {                                                                                            \
        if (cli_parse_float(cmd, a, v, &var) != 0) return 2;                                                           \
        i++;                                                                                                           \
        continue;                                                                                                      \
    }
#define STR(name, var)                                                                                                 \
    if (!strcmp(a, name)) {                                                                                            \
        if (!v) return cli_usage_error(cmd, "%s needs a value", a);                                                    \
        var = v;                                                                                                       \
        i++;                                                                                                           \
        continue;                                                                                                      \
    }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "-d")) {
            if (!v) return cli_usage_error(cmd, "-d needs a file");
            if (n_data == 64) return cli_usage_error(cmd, "at most 64 data files");
            data_paths[n_data++] = v;
            i++;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            quiet = true;
            continue;
        }
        if (!strcmp(a, "--no-save")) {
            no_save = true;
            continue;
        }
        STR("-m", model_path) STR("--resume", resume) STR("-o", out) STR("--val", val_path) STR("--optimizer", optname)
        INT("--batch", B, 1, 1 << 20) INT("--seq", T, 1, 1 << 20) INT("--accum", A, 1, 1 << 20)
        INT("--steps", steps, 1, 1L << 40) INT("--warmup", warmup, 0, 1L << 40)
        INT("--eval-every", eval_every, 0, 1L << 40) INT("--eval-rows", eval_rows, 1, 1L << 30)
        INT("--save-every", save_every, 0, 1L << 40) INT("--log-every", log_every, 1, 1L << 40)
        INT("--seed", seed, 0, 1L << 62) INT("--group", group, 1, TRAIN_MAX_GROUP)
        FLT("--tokens", tokens) FLT("--lr", lr) FLT("--lr-min", lr_min) FLT("--wd", wd) FLT("--beta1", b1)
        FLT("--beta2", b2) FLT("--momentum", mom) FLT("--clip", clip) FLT("--aux-lb", aux_lb) FLT("--aux-z", aux_z)
        FLT("--peak", peak)
        usage(stderr);
        return cli_usage_error(cmd, "unknown argument '%s'", a);
#undef INT
#undef FLT
#undef STR
    }
    if (!model_path == !resume) return cli_usage_error(cmd, "give exactly one of -m MODEL and --resume CKPT");
    if (n_data == 0) return cli_usage_error(cmd, "no training data (-d)");
    if (!out) out = resume;
    if (!out) return cli_usage_error(cmd, "no checkpoint path (-o)");
    if (strcmp(optname, "adamw") && strcmp(optname, "sgd"))
        return cli_usage_error(cmd, "--optimizer must be adamw or sgd");
    if (!(lr > 0) || tokens < 0 || wd < 0 || b1 < 0 || b1 >= 1 || b2 < 0 || b2 >= 1 || clip < 0 || mom < 0 ||
        aux_lb < 0 || aux_z < 0 || !(peak >= 0))
        return cli_usage_error(cmd, "learning rate, decay, betas, clip, aux coefficients or --peak out of range");
    if (lr_min < 0) lr_min = lr / 10;
    bool peak_given = peak > 0;
    int64_t rows_per_step = (int64_t)B * A;
    if (tokens > 0) steps = (long)ceil(tokens / ((double)rows_per_step * (double)T));
    if (steps <= 0) return cli_usage_error(cmd, "give --steps N or --tokens N");

    train_progress pr;
    s = train_load(resume ? resume : model_path, T, &pr);
    if (!s) goto fail;
    if (!resume) { /* fresh run from initial weights */
        memset(&pr, 0, sizeof pr);
        memset(s->m1, 0, s->n * sizeof(float));
        memset(s->m2, 0, s->n * sizeof(float));
        moec_rng_seed(&pr.rng, (uint64_t)seed);
    }
    s->aux.aux_lb = (float)aux_lb;
    s->aux.aux_z = (float)aux_z;
    train_opt_cfg oc;
    train_opt_defaults(&oc);
    oc.kind = strcmp(optname, "sgd") ? TRAIN_OPT_ADAMW : TRAIN_OPT_SGD;
    oc.beta1 = (float)b1, oc.beta2 = (float)b2, oc.weight_decay = (float)wd, oc.momentum = (float)mom;
    if (resume && pr.opt_kind != (int32_t)oc.kind)
        fprintf(stderr, "moec train: warning: the checkpoint was trained with another optimizer\n");
    pr.opt_kind = (int32_t)oc.kind;
    pr.lr = (float)lr, pr.lr_min = (float)lr_min;

    if (group == 0) { /* up to 4 rows, within ~512 MB of activations (long sequences: fewer) */
        group = rows_per_step < 4 ? rows_per_step : 4;
        while (group > 1 && (double)group * train_row_bytes(s->m, T) > 512e6) group--;
    }
    if (train_set_group(s, group) != 0) goto fail;
    uint64_t V = (uint64_t)s->m->hp.n_vocab;
    if (n_data == 1) {
        if (data_loader_open(&ld, data_paths[0], T, V) != 0) goto fail;
    } else if (data_loader_open_shards(&ld, data_paths, (size_t)n_data, T, V) != 0) {
        goto fail;
    }
    if (val_path && data_loader_open(&vld, val_path, T, V) != 0) goto fail;
    if (resume) {
        if (data_loader_seek(&ld, pr.data) != 0) goto fail;
    } else if (ld.n_shards) { /* the seed picks where in the first shard the data starts */
        uint64_t nrows = (ld.shards[0].n - 1) / (uint64_t)T;
        data_pos p0 = {0, 0, (moec_rng_u64(&pr.rng) % nrows) * (uint64_t)T};
        if (data_loader_seek(&ld, p0) != 0) goto fail;
    }
    size_t nrow = (size_t)rows_per_step * (size_t)T;
    in = malloc(nrow * sizeof *in), tg = malloc(nrow * sizeof *tg), mk = malloc(nrow * sizeof *mk);
    if (!in || !tg || !mk) {
        moec_set_error("out of memory for the batch");
        goto fail;
    }
    snprintf(csv_path, sizeof csv_path, "%s.csv", out);
    snprintf(svg_path, sizeof svg_path, "%s.svg", out);
    if (resume) {
        csv_load(csv_path, pr.step, &rows, &n_rows);
        cap_rows = n_rows;
    }
    csv = fopen(csv_path, "w");
    if (!csv) {
        moec_set_error("cannot write %s", csv_path);
        goto fail;
    }
    fprintf(csv, "step,tokens,loss,val_loss,lr,grad_norm,seconds\n");
    for (size_t i = 0; i < n_rows; i++)
        fprintf(csv, "%lld,%lld,%.6f,%.6f,%.6g,0,0\n", (long long)rows[i].step,
                (long long)(rows[i].step * rows_per_step * T), rows[i].loss, rows[i].val, rows[i].lr);
    fflush(csv);
    double fpt = train_flops_per_token(s->m, T);
    if (!quiet) {
        fprintf(stderr, "moec train: %zu parameters, %lld steps of %lld x %ld tokens, from step %lld\n", s->n,
                (long long)steps, (long long)rows_per_step, T, (long long)pr.step);
        if (peak <= 0) peak = train_gemm_peak();
        fprintf(stderr, "moec train: %.4g GFLOP per token (matmuls, forward + backward); matmul peak %.1f GFLOP/s (%s)\n",
                fpt * 1e-9, peak, peak_given ? "--peak" : "moec fp32 GEMM 512^3, measured now");
    }

    if (pr.step >= steps && !quiet)
        fprintf(stderr, "moec train: the checkpoint is at step %lld >= --steps %ld: nothing to do\n",
                (long long)pr.step, steps);
    double t0 = moec_time(), tok_run = 0, opt_secs = 0;
    const char *prof_env = getenv("MOEC_TRAIN_PROFILE"); /* 1: wall time per phase, cpu: process CPU time */
    s->prof_cpu = prof_env && !strcmp(prof_env, "cpu");
    while (pr.step < steps) {
        float cur_lr = train_lr_at(pr.step, warmup, steps, (float)lr, (float)lr_min);
        if (data_loader_next(&ld, rows_per_step, in, tg, mk) != 0) goto fail;
        double msum = 0, ce_tot = 0;
        for (size_t i = 0; i < nrow; i++) msum += mk[i];
        train_zero_grad(s);
        if (msum > 0 && train_rows(s, in, tg, mk, rows_per_step, T, (float)(1.0 / msum), &ce_tot) != 0) goto fail;
        /* a batch of fully masked rows teaches nothing: no update, the data still advances */
        double t_opt = prof_clock(s->prof_cpu);
        double gn = train_clip_step(&oc, cur_lr, pr.step + 1, (float)clip, msum > 0, s->params, s->grads, s->m1, s->m2,
                                    s->seg, s->n_seg, s->n);
        t_opt = prof_clock(s->prof_cpu) - t_opt;
        opt_secs += t_opt;
        pr.step++;
        pr.tokens += (uint64_t)nrow;
        pr.data = ld.pos;
        tok_run += (double)nrow;
        double loss = msum > 0 ? ce_tot / msum : NAN, val = NAN;
        if (msum > 0 && !isfinite(loss)) {
            moec_set_error("loss is %g at step %lld (diverged; lower --lr)", loss, (long long)pr.step);
            goto fail;
        }
        bool last = pr.step == steps;
        if (val_path && ((eval_every > 0 && pr.step % eval_every == 0) || last))
            /* the last step scores the whole validation set; periodic evaluations its first --eval-rows rows */
            if (evaluate(s, &vld, last ? INT64_MAX : eval_rows, T, in, tg, mk, &val) != 0) goto fail;
        double el = moec_time() - t0, tps = tok_run / (el > 0 ? el : 1e-9);
        double eta = (double)(steps - pr.step) * (double)nrow / (tps > 0 ? tps : 1);
        fprintf(csv, "%lld,%llu,%.6f,%.6f,%.6g,%.6g,%.3f\n", (long long)pr.step, (unsigned long long)pr.tokens, loss,
                val, cur_lr, gn, el);
        fflush(csv);
        if (n_rows == cap_rows) {
            cap_rows = cap_rows ? 2 * cap_rows : 256;
            logrow *p = realloc(rows, cap_rows * sizeof *p);
            if (!p) {
                moec_set_error("out of memory");
                goto fail;
            }
            rows = p;
        }
        rows[n_rows++] = (logrow){pr.step, loss, val, cur_lr};
        if (!quiet && (pr.step % log_every == 0 || last || isfinite(val))) {
            char vbuf[32] = "";
            if (isfinite(val)) snprintf(vbuf, sizeof vbuf, "  val %.4f", val);
            fprintf(stderr, "step %lld/%lld  loss %.4f%s  lr %.3g  |g| %.3g  %.0f tok/s  %.0f%% of peak  ETA %.0fs\n",
                    (long long)pr.step, (long long)steps, loss, vbuf, cur_lr, gn, tps,
                    peak > 0 ? 100.0 * tps * fpt * 1e-9 / peak : 0.0, eta);
        }
        if (!quiet && isfinite(val) && s->m->hp.n_expert > 0) {
            int64_t E = s->m->hp.n_expert;
            for (int64_t l = 0; l < s->m->hp.n_layer; l++) {
                double tot = 0;
                for (int64_t e = 0; e < E; e++) tot += s->expert_load[l * E + e];
                if (tot <= 0) continue;
                fprintf(stderr, "  expert load layer %lld:", (long long)l);
                for (int64_t e = 0; e < E; e++) fprintf(stderr, " %.3f", s->expert_load[l * E + e] / tot);
                fputc('\n', stderr);
            }
            train_load_reset(s);
        }
        if (!no_save && ((save_every > 0 && pr.step % save_every == 0) || last)) {
            if (train_save(s, &pr, out) != 0) goto fail;
            write_svg(svg_path, rows, n_rows);
        }
    }
    if (prof_env) {
        static const char *names[TRAIN_PROF_N] = {"forward", "loss", "output bwd", "ffn bwd", "attn matmul bwd",
                                                  "attn core bwd", "lfa+norm+embd bwd"};
        double tot = opt_secs;
        for (int k = 0; k < TRAIN_PROF_N; k++) tot += s->prof[k];
        fprintf(stderr, "moec train: time per phase (s, %% of %.2f s):", tot);
        for (int k = 0; k < TRAIN_PROF_N; k++) fprintf(stderr, "  %s %.2f (%.0f%%)", names[k], s->prof[k], 100 * s->prof[k] / tot);
        fprintf(stderr, "  optimizer %.2f (%.0f%%)\n", opt_secs, 100 * opt_secs / tot);
    }
    rc = 0;
    goto done;
fail:
    rc = cli_fail(cmd);
done:
    if (csv) fclose(csv);
    free(rows);
    free(in), free(tg), free(mk);
    data_loader_close(&ld);
    if (val_path) data_loader_close(&vld);
    if (s) {
        model *m = s->m;
        train_free(s);
        model_free(m);
    }
    return rc;
}
