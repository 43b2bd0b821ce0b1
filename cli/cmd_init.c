/* moec init: write a randomly initialised model (Yuan 2.0 training initialisation, see src/init.h).
 * Settings come from defaults, then a `key = value` config file (--config), then command-line options
 * (same names without the leading dashes); later ones win. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "init.h"
#include "model.h"
#include "tok.h"
#include "util.h"

static const char *const KEYS[] = {
    "arch", "dim", "layers", "heads", "kv-heads", "head-dim", "rope-dims", "rope-base", "experts", "top-k", "ff",
    "dense-ff", "vocab", "ctx", "router", "lfa", "dense-layers", "tied", "type", "vocab-from", "seed", "std", "eps",
};
#define N_KEYS (sizeof KEYS / sizeof KEYS[0])

typedef struct {
    char *val[N_KEYS]; /* owned copies; NULL = not given */
} settings;

static void usage(FILE *f) {
    fprintf(f,
            "usage: moec init OUT.gguf [options]\n"
            "  --arch yuan2moe|llama   architecture (default yuan2moe)\n"
            "  --config FILE           `key = value` lines with the option names below (# comments)\n"
            "  --dim H --layers L --heads N --kv-heads N --head-dim d (default H/N)\n"
            "  --rope-dims R (yuan2moe: d/2, llama: d) --rope-base B (10000) --eps E (yuan2moe 1e-6, llama 1e-5)\n"
            "  --experts E (0 = dense) --top-k K --ff F (expert FFN; default 4H) --dense-ff F' (default F)\n"
            "  --vocab V (default 32000) --ctx C (default 4096)\n"
            "  --router attention|linear (yuan2moe default attention; llama: linear) --lfa on|off (yuan2moe)\n"
            "  --dense-layers N (yuan2moe: first N layers dense) --tied on|off (yuan2moe on, llama off)\n"
            "  --type f32|f16|bf16|q8_0|q4_0  matrix storage type (default f32; vectors stay f32; with q8_0/q4_0\n"
            "                          routers, LFA convs and rows not a multiple of 32 stay f32)\n"
            "  --vocab-from TOKENIZER  embed a tokenizer (.model / .gguf / tokenizer.bin); V = its size\n"
            "  --seed S (default 1) --std S (default 0.02)\n");
}

static int key_index(const char *k) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (!strcmp(k, KEYS[i])) return (int)i;
    return -1;
}

static int set(settings *s, const char *cmd, const char *key, const char *val, const char *where) {
    int i = key_index(key);
    if (i < 0) return cli_usage_error(cmd, "%s: unknown setting '%s' (see moec init --help)", where, key), -1;
    char *c = strdup(val);
    if (!c) return cli_usage_error(cmd, "out of memory"), -1;
    free(s->val[i]);
    s->val[i] = c;
    return 0;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

static int read_config(settings *s, const char *cmd, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return cli_usage_error(cmd, "cannot open config %s: %s", path, strerror(errno)), -1;
    char line[4096], where[600];
    int ln = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        snprintf(where, sizeof where, "%.500s:%d", path, ln);
        if (!strchr(line, '\n') && !feof(f)) {
            rc = -1, (void)cli_usage_error(cmd, "%s: line too long", where);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *t = trim(line);
        if (!*t) continue;
        char *eq = strchr(t, '=');
        if (!eq) {
            rc = -1, (void)cli_usage_error(cmd, "%s: expected `key = value`", where);
            break;
        }
        *eq = 0;
        char *k = trim(t), *v = trim(eq + 1);
        if (!strncmp(k, "--", 2)) k += 2;
        if (!*v) {
            rc = -1, (void)cli_usage_error(cmd, "%s: no value for '%s'", where, k);
            break;
        }
        if (set(s, cmd, k, v, where)) {
            rc = -1;
            break;
        }
    }
    if (!rc && ferror(f)) {
        rc = -1;
        cli_usage_error(cmd, "error reading %s", path);
    }
    fclose(f);
    return rc;
}

static const char *get(const settings *s, const char *k) { return s->val[key_index(k)]; }

/* Integer setting k in [lo, hi], or def if not given. */
static int get_int(const settings *s, const char *cmd, const char *k, long lo, long hi, long def, long *out) {
    const char *v = get(s, k);
    char opt[64];
    if (!v) {
        *out = def;
        return 0;
    }
    snprintf(opt, sizeof opt, "--%s", k);
    return cli_parse_int(cmd, opt, v, lo, hi, out);
}

static int get_onoff(const settings *s, const char *cmd, const char *k, bool def, bool *out) {
    const char *v = get(s, k);
    if (!v) *out = def;
    else if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1")) *out = true;
    else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0")) *out = false;
    else return cli_usage_error(cmd, "--%s needs on or off, got '%s'", k, v), -1;
    return 0;
}

static int get_float(const settings *s, const char *cmd, const char *k, double def, double *out) {
    const char *v = get(s, k);
    char opt[64];
    if (!v) {
        *out = def;
        return 0;
    }
    snprintf(opt, sizeof opt, "--%s", k);
    return cli_parse_float(cmd, opt, v, out);
}

int cmd_init(int argc, char **argv) {
    const char *cmd = argv[0], *out = NULL, *config = NULL;
    settings s;
    memset(&s, 0, sizeof s);
    int rc = 2;
    tok_vocab *vocab = NULL;
    model *m = NULL;
    /* pass 1: find the output and the config file; pass 2 (after reading the config): options override it */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strncmp(argv[i], "--", 2)) {
            if (i + 1 >= argc) return cli_usage_error(cmd, "%s needs a value", argv[i]);
            if (!strcmp(argv[i], "--config")) config = argv[i + 1];
            else if (key_index(argv[i] + 2) < 0) return cli_usage_error(cmd, "unknown option '%s'", argv[i]);
            i++;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage_error(cmd, "unknown option '%s'", argv[i]);
        } else if (!out) {
            out = argv[i];
        } else {
            return cli_usage_error(cmd, "one output file only (got '%s' and '%s')", out, argv[i]);
        }
    }
    if (!out) {
        usage(stderr);
        return 2;
    }
    if (config && read_config(&s, cmd, config)) goto done;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) || argv[i][2] == 0) continue;
        if (strcmp(argv[i], "--config") && set(&s, cmd, argv[i] + 2, argv[i + 1], "option")) goto done;
        i++;
    }

    model_hparams hp;
    memset(&hp, 0, sizeof hp);
    const char *arch = get(&s, "arch");
    if (!arch || !strcmp(arch, "yuan2moe")) hp.arch = MODEL_ARCH_YUAN2MOE;
    else if (!strcmp(arch, "llama")) hp.arch = MODEL_ARCH_LLAMA;
    else {
        cli_usage_error(cmd, "--arch must be yuan2moe or llama, got '%s'", arch);
        goto done;
    }
    bool yuan = hp.arch == MODEL_ARCH_YUAN2MOE;
    long dim, layers, heads, kvh, hd, rdims, E, K, ff, dff, V, ctx, ndense, seed;
    double rbase, stdv, eps;
    const long BIG = 1L << 24;
    if (get_int(&s, cmd, "dim", 2, 1L << 20, 256, &dim) || get_int(&s, cmd, "layers", 1, 65536, 4, &layers) ||
        get_int(&s, cmd, "heads", 1, 65536, 8, &heads) || get_int(&s, cmd, "kv-heads", 1, 65536, heads, &kvh))
        goto done;
    if (!get(&s, "head-dim") && dim % heads) {
        cli_usage_error(cmd, "--dim %ld is not a multiple of --heads %ld (give --head-dim)", dim, heads);
        goto done;
    }
    if (get_int(&s, cmd, "head-dim", 1, 65536, dim / heads, &hd) ||
        get_int(&s, cmd, "rope-dims", 0, 65536, yuan ? (hd / 2) & ~1L : hd & ~1L, &rdims) ||
        get_float(&s, cmd, "rope-base", 10000.0, &rbase) || get_int(&s, cmd, "experts", 0, 65536, 8, &E) ||
        get_int(&s, cmd, "top-k", 1, 65536, E < 2 ? 1 : 2, &K) || get_int(&s, cmd, "ff", 1, BIG, 4 * dim, &ff) ||
        get_int(&s, cmd, "dense-ff", 1, BIG, ff, &dff) || get_int(&s, cmd, "vocab", 1, 1L << 28, 32000, &V) ||
        get_int(&s, cmd, "ctx", 1, 1L << 31, 4096, &ctx) || get_int(&s, cmd, "dense-layers", 0, 65536, 0, &ndense) ||
        get_int(&s, cmd, "seed", 0, 0x7fffffffffffffffL, 1, &seed) || get_float(&s, cmd, "std", 0.02, &stdv) ||
        get_float(&s, cmd, "eps", yuan ? 1e-6 : 1e-5, &eps))
        goto done;
    if (!(stdv > 0)) {
        cli_usage_error(cmd, "--std must be positive");
        goto done;
    }
    bool lfa, tied;
    if (get_onoff(&s, cmd, "lfa", yuan, &lfa) || get_onoff(&s, cmd, "tied", yuan, &tied)) goto done;
    const char *router = get(&s, "router");
    if (!router) hp.moe_router = yuan ? MODEL_FFN_MOE_ATTN : MODEL_FFN_MOE_LINEAR;
    else if (!strcmp(router, "attention")) hp.moe_router = MODEL_FFN_MOE_ATTN;
    else if (!strcmp(router, "linear")) hp.moe_router = MODEL_FFN_MOE_LINEAR;
    else {
        cli_usage_error(cmd, "--router must be attention or linear, got '%s'", router);
        goto done;
    }
    if (!yuan && (lfa || hp.moe_router != MODEL_FFN_MOE_LINEAR || ndense)) {
        cli_usage_error(cmd, "llama models have no LFA, only the linear router and no leading dense layers");
        goto done;
    }
    if (yuan && kvh != heads) {
        cli_usage_error(cmd, "yuan2moe has no GQA: --kv-heads must equal --heads");
        goto done;
    }
    if (lfa && dim % 2) {
        cli_usage_error(cmd, "LFA needs an even --dim");
        goto done;
    }
    if (E > 0 && K > E) {
        cli_usage_error(cmd, "--top-k %ld > --experts %ld", K, E);
        goto done;
    }
    const char *ty = get(&s, "type");
    ggml_type type = GGML_F32;
    if (!ty || !strcmp(ty, "f32")) type = GGML_F32;
    else if (!strcmp(ty, "f16")) type = GGML_F16;
    else if (!strcmp(ty, "bf16")) type = GGML_BF16;
    else if (!strcmp(ty, "q8_0")) type = GGML_Q8_0;
    else if (!strcmp(ty, "q4_0")) type = GGML_Q4_0;
    else {
        cli_usage_error(cmd, "--type must be f32, f16, bf16, q8_0 or q4_0, got '%s'", ty);
        goto done;
    }
    const char *vf = get(&s, "vocab-from");
    if (vf) {
        vocab = tok_load(vf);
        if (!vocab) {
            rc = cli_fail(cmd);
            goto done;
        }
        if (get(&s, "vocab") && V != tok_n_vocab(vocab)) {
            cli_usage_error(cmd, "--vocab %ld differs from the %d tokens of %s", V, (int)tok_n_vocab(vocab), vf);
            goto done;
        }
        V = tok_n_vocab(vocab);
    }
    hp.n_vocab = V, hp.n_embd = dim, hp.n_layer = layers, hp.n_head = heads, hp.n_head_kv = kvh;
    hp.head_dim = hd, hp.n_ctx_train = ctx, hp.rope_dims = rdims, hp.rope_base = (float)rbase;
    hp.norm_eps = (float)eps, hp.rope_table = MODEL_ROPE_TABLE_FP32, hp.lfa = lfa, hp.tied = tied;
    hp.n_expert = E, hp.n_expert_used = E ? K : 0, hp.n_ff_exp = E ? ff : 0, hp.n_dense_lead = E ? ndense : 0;
    hp.n_ff = (E == 0 || ndense > 0) ? (E ? dff : ff) : 0;

    m = model_create(&hp, NULL);
    if (!m || init_model_weights(m, (uint64_t)seed, (float)stdv) || init_write_gguf(m, out, type, vocab)) {
        rc = cli_fail(cmd);
        goto done;
    }
    model_stats st;
    model_get_stats(m, hp.n_ctx_train, &st);
    printf("wrote %s: %s, %lld layers, dim %ld, %ld experts (top-%ld), vocab %ld, %s, %.2f M parameters "
           "(%.2f M active), seed %ld\n",
           out, model_arch_name(hp.arch), (long long)layers, dim, E, E ? K : 0L, V, ggml_type_name(type),
           st.total_params / 1e6, st.active_params / 1e6, seed);
    rc = 0;
done:
    model_free(m);
    tok_free(vocab);
    for (size_t i = 0; i < N_KEYS; i++) free(s.val[i]);
    return rc;
}
