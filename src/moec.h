/* moec public API: include this one header to use the library (link build/libmoec.a -lcjson -lm -fopenmp).
 *
 *   tok_vocab *v = tok_load("tokenizer.model");                  // tok.h
 *   model *m = model_load("model.gguf", NULL);                    // model.h
 *   seq_state *s = model_seq_new(m, 2048);
 *   model_forward(m, s, ids, n, logits, flags, NULL);             // prefill; then T = 1 per decoded token
 *
 * Conventions (util.h): functions return 0 / -1 (or NULL); moec_last_error() gives the one-line reason.
 * Nothing here keeps global mutable state: models and vocabularies are read-only after load and can be
 * shared by threads; per-sequence state lives in seq_state. */
#ifndef MOEC_H
#define MOEC_H

#include "util.h"
#include "gguf.h"
#include "safetensors.h"
#include "tok.h"
#include "kern.h"
#include "quant.h"
#include "ops.h"
#include "moe.h"
#include "model.h"
#include "sample.h"
#include "convert.h"
#include "init.h"
#include "data.h"
#include "train.h"

#endif
