/* sample: greedy / temperature / top-k / top-p sampling. See sample.h. */
#include "sample.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    float v;
    int32_t id;
} cand;

struct sampler {
    sample_params p;
    int64_t n;
    moec_rng rng;
    cand *c;
    double *prob;
};

sampler *sample_new(int64_t n_vocab, const sample_params *p, uint64_t seed) {
    sampler *s = NULL;
    if (n_vocab < 1 || n_vocab > INT32_MAX) {
        moec_set_error("sampler: vocabulary size %lld out of range", (long long)n_vocab);
        return NULL;
    }
    if (!isfinite(p->temp) || p->top_k < 0 || !(p->top_p > 0.0f)) {
        moec_set_error("sampler: bad parameters (temp %g, top-k %lld, top-p %g)", p->temp, (long long)p->top_k,
                       p->top_p);
        return NULL;
    }
    s = moec_calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->n = n_vocab;
    moec_rng_seed(&s->rng, seed);
    s->c = moec_malloc((size_t)n_vocab * sizeof(cand));
    s->prob = moec_malloc((size_t)n_vocab * sizeof(double));
    if (!s->c || !s->prob) {
        sample_free(s);
        return NULL;
    }
    return s;
}

void sample_free(sampler *s) {
    if (!s) return;
    moec_free(s->c);
    moec_free(s->prob);
    moec_free(s);
}

int32_t sample_argmax(const float *x, int64_t n) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
    return best < 0 ? 0 : (int32_t)best;
}

/* descending value, then ascending id */
static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->v > y->v) return -1;
    if (x->v < y->v) return 1;
    return (x->id > y->id) - (x->id < y->id);
}
static bool cand_before(const cand *x, const cand *y) { return cand_cmp(x, y) < 0; }

/* min-heap on "before" order: the root is the worst of the kept candidates */
static void heap_down(cand *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_before(&h[w], &h[l])) w = l;
        if (r < n && cand_before(&h[w], &h[r])) w = r;
        if (w == i) return;
        cand t = h[i];
        h[i] = h[w], h[w] = t;
        i = w;
    }
}

int32_t sample_next(sampler *s, const float *logits) {
    int64_t n = s->n;
    if (s->p.temp <= 0.0f) return sample_argmax(logits, n);
    int64_t m = 0;
    int64_t k = s->p.top_k > 0 && s->p.top_k < n ? s->p.top_k : n;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(logits[i])) continue;
        cand c = {logits[i], (int32_t)i};
        if (k == n) {
            s->c[m++] = c;
        } else if (m < k) {
            s->c[m++] = c;
            if (m == k)
                for (int64_t j = k / 2; j >= 0; j--) heap_down(s->c, m, j);
        } else if (cand_before(&c, &s->c[0])) {
            s->c[0] = c;
            heap_down(s->c, m, 0);
        }
    }
    if (m == 0) return 0;
    if (k < n || s->p.top_p < 1.0f) qsort(s->c, (size_t)m, sizeof(cand), cand_cmp);
    float mx = -INFINITY;
    for (int64_t i = 0; i < m; i++)
        if (s->c[i].v > mx) mx = s->c[i].v;
    double sum = 0.0;
    for (int64_t i = 0; i < m; i++) {
        s->prob[i] = exp(((double)s->c[i].v - mx) / s->p.temp);
        sum += s->prob[i];
    }
    if (s->p.top_p < 1.0f) {
        double cum = 0.0, lim = (double)s->p.top_p * sum;
        int64_t keep = m;
        for (int64_t i = 0; i < m; i++) {
            cum += s->prob[i];
            if (cum >= lim) {
                keep = i + 1;
                break;
            }
        }
        m = keep;
        sum = 0.0;
        for (int64_t i = 0; i < m; i++) sum += s->prob[i];
    }
    double r = (double)moec_rng_uniform(&s->rng) * sum, acc = 0.0;
    for (int64_t i = 0; i < m; i++) {
        acc += s->prob[i];
        if (r < acc) return s->c[i].id;
    }
    return s->c[m - 1].id;
}
