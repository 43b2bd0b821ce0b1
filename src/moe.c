/* moe: routers, top-k, grouped expert dispatch. See moe.h. */
#include "moe.h"

#include <math.h>
#include <string.h>

#include "kern.h"
#include "ops.h"
#include "util.h"

void moe_router_attn(float *logits, float *inner, const float *q, const float *k, const float *v, int64_t T,
                     int64_t E) {
#pragma omp parallel for schedule(static) if (T * E * E > 65536)
    for (int64_t t = 0; t < T; t++) {
        const float *qt = q + t * E, *kt = k + t * E, *vt = v + t * E;
        for (int64_t i = 0; i < E; i++) {
            /* softmax_j(q_i k_j) without a scratch row: two passes */
            float mx = -INFINITY;
            for (int64_t j = 0; j < E; j++) {
                float s = qt[i] * kt[j];
                if (s > mx) mx = s;
            }
            double sum = 0.0, acc = 0.0;
            for (int64_t j = 0; j < E; j++) {
                double e = exp((double)(qt[i] * kt[j] - mx));
                sum += e;
                acc += e * vt[j];
            }
            logits[t * E + i] = (float)(acc / sum);
            if (inner)
                for (int64_t j = 0; j < E; j++)
                    inner[(t * E + i) * E + j] = (float)(exp((double)(qt[i] * kt[j] - mx)) / sum);
        }
    }
}

void moe_topk(int32_t *sel, float *w, const float *logits, int64_t T, int64_t E, int64_t k) {
    for (int64_t t = 0; t < T; t++) {
        const float *l = logits + t * E;
        int32_t *st = sel + t * k;
        for (int64_t s = 0; s < k; s++) {
            int64_t best = -1;
            for (int64_t e = 0; e < E; e++) {
                bool used = false;
                for (int64_t r = 0; r < s; r++)
                    if (st[r] == e) used = true;
                if (used) continue;
                if (best < 0 || l[e] > l[best] || (isnan(l[best]) && !isnan(l[e]))) best = e;
            }
            st[s] = (int32_t)best;
        }
        /* weights: softmax over the selected logits (the first is the max unless NaN) */
        float mx = -INFINITY;
        for (int64_t s = 0; s < k; s++)
            if (l[st[s]] > mx) mx = l[st[s]];
        double sum = 0.0;
        for (int64_t s = 0; s < k; s++) sum += exp((double)(l[st[s]] - mx));
        for (int64_t s = 0; s < k; s++) w[t * k + s] = (float)(exp((double)(l[st[s]] - mx)) / sum);
    }
}

void moe_group(int32_t *order, int32_t *start, const int32_t *sel, int64_t T, int64_t E, int64_t k) {
    /* stable counting sort; start[E+1 .. 2E+1) is used as the fill cursor */
    int32_t *cur = start + E + 1;
    memset(start, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int64_t r = 0; r < T * k; r++) start[sel[r] + 1]++;
    for (int64_t e = 0; e < E; e++) start[e + 1] += start[e];
    memcpy(cur, start, (size_t)E * sizeof(int32_t));
    for (int64_t r = 0; r < T * k; r++) order[cur[sel[r]]++] = (int32_t)r;
}

size_t moe_scratch_floats(int64_t T, int64_t H, int64_t F, int64_t k) {
    return (size_t)T * (size_t)k * (size_t)(H + 2 * F);
}
size_t moe_scratch_ints(int64_t T, int64_t E, int64_t k) { return (size_t)(T * k + 2 * E + 1); }

/* Experts handled per batch of products (bounds the job arrays on the stack; a batch is one fork/join). */
#define MOE_BATCH 32

int moe_experts_forward(float *out, const float *u, const int32_t *sel, const float *w, int64_t T, int64_t k,
                        const moe_experts *ex, float *scratch, int32_t *iscratch, float *save_gate, float *save_up,
                        float *save_hid, float *save_y) {
    int64_t H = ex->H, F = ex->F, E = ex->E, R = T * k;
    /* grouped rows: slot order[i] (i in [start[e], start[e+1])) is row i of xg, g, up, yg.
     * yg reuses xg (the inputs are dead once gate and up are computed), hidden = silu(gate)·up overwrites g */
    float *xg = scratch, *yg = xg, *g = xg + R * H, *up = g + R * F, *hid = g;
    int32_t *order = iscratch, *start = order + R;
    moe_group(order, start, sel, T, E, k);
    int64_t e0 = 0;
    while (e0 < E) {
        /* the next batch: up to MOE_BATCH experts that have tokens */
        int32_t act[MOE_BATCH];
        int na = 0;
        for (; e0 < E && na < MOE_BATCH; e0++)
            if (start[e0 + 1] > start[e0]) act[na++] = (int32_t)e0;
        if (na == 0) break;
        kern_mm jobs[2 * MOE_BATCH];
        for (int a = 0; a < na; a++) {
            int64_t e = act[a], r0 = start[e], n = start[e + 1] - r0;
            const int32_t *rows = order + r0;
            const float *xe = u;
            if (n != T) { /* all T tokens (a decode step's experts): rows are 0..T-1 in order, u as it is */
                for (int64_t i = 0; i < n; i++)
                    memcpy(xg + (r0 + i) * H, u + (rows[i] / k) * H, (size_t)H * sizeof(float));
                xe = xg + r0 * H;
            }
            jobs[2 * a] = (kern_mm){.y = g + r0 * F, .x = xe, .w = ex->gate[e], .wtype = ex->t_gate, .T = n, .n_in = H,
                                    .n_out = F};
            jobs[2 * a + 1] = (kern_mm){.y = up + r0 * F, .x = xe, .w = ex->up[e], .wtype = ex->t_up, .T = n, .n_in = H,
                                        .n_out = F};
        }
        if (kern_matmul_multi(jobs, 2 * na) != 0) return -1;
        /* the batch's rows are contiguous: [start[first], start[last + 1]) */
        int64_t s0 = start[act[0]], s1 = start[act[na - 1] + 1];
        if (save_gate || save_up)
            for (int64_t i = s0; i < s1; i++) {
                int64_t r = order[i];
                if (save_gate) memcpy(save_gate + r * F, g + i * F, (size_t)F * sizeof(float));
                if (save_up) memcpy(save_up + r * F, up + i * F, (size_t)F * sizeof(float));
            }
        ops_swiglu(hid + s0 * F, g + s0 * F, up + s0 * F, (s1 - s0) * F);
        for (int a = 0; a < na; a++) {
            int64_t e = act[a], r0 = start[e], n = start[e + 1] - r0;
            jobs[a] = (kern_mm){.y = yg + r0 * H, .x = hid + r0 * F, .w = ex->down[e], .wtype = ex->t_down, .T = n,
                                .n_in = F, .n_out = H};
        }
        if (kern_matmul_multi(jobs, na) != 0) return -1;
        /* combine in ascending expert order (the sum order of each token's outputs) */
        for (int a = 0; a < na; a++) {
            int64_t e = act[a];
            for (int64_t i = start[e]; i < start[e + 1]; i++) {
                int64_t r = order[i], t = r / k;
                float wt = w[r];
                float *o = out + t * H;
                const float *y = yg + i * H;
                for (int64_t j = 0; j < H; j++) o[j] += wt * y[j];
                if (save_hid) memcpy(save_hid + r * F, hid + i * F, (size_t)F * sizeof(float));
                if (save_y) memcpy(save_y + r * H, y, (size_t)H * sizeof(float));
            }
        }
    }
    return 0;
}
