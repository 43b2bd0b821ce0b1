/* sample: choosing the next token from logits. Greedy (temperature 0), temperature, top-k, top-p, with a
 * seeded RNG (moec_rng) so a fixed seed reproduces the same choices. */
#ifndef MOEC_SAMPLE_H
#define MOEC_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef struct {
    float temp;    /* <= 0: greedy */
    int64_t top_k; /* 0: off */
    float top_p;   /* >= 1: off */
} sample_params;

typedef struct sampler sampler;

/* A sampler for a vocabulary of n_vocab logits (buffers allocated once). NULL + error on bad parameters. */
sampler *sample_new(int64_t n_vocab, const sample_params *p, uint64_t seed);
void sample_free(sampler *s);

/* Next token from logits [n_vocab]. Greedy: the largest logit, lowest id on ties (NaN never wins).
 * Otherwise: candidates = the top_k largest (all if 0), p = softmax(logit/temp) over them, keep the smallest
 * prefix (descending p; ties: lower id first) whose mass reaches top_p, draw one with the RNG. */
int32_t sample_next(sampler *s, const float *logits);

/* Index of the largest value (lowest on ties, NaN ignored; 0 if all NaN). */
// x: [n]
int32_t sample_argmax(const float *x, int64_t n);

#endif
