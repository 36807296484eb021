/* BatchNorm2d on its own (not in a conv tail: R2 part II's, after the pool) for training on CPU.
 *
 * Why: ATen's CPU BatchNorm sums each channel in one sequential double and takes 0.28 ms forward and 0.13 ms
 * backward for R2 part II's 64x6x14x14 maps, about 8 % of its training step; the statistics here come from
 * bn_stats.c (vectorized, the same float numbers as ATen's except about one case in 10^5), the output is
 * ATen's x * alpha + beta (an FMA where the CPU has one, as ATen's vectorized kernel), and the backward pass
 * is ATen's formula with its two sums per channel taken per plane, 16 lanes at a time, then in double.
 * Layout: n x c contiguous planes of hw floats; bn: per channel mean, invstd, alpha, beta (bn_stats.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bn_stats.h"
#include "vec16.h"

INLINE v16 splat(float f) { return (v16){0} + f; }

VECTOR_CLONES
static void apply_affine(const float *x, float *out, const float *bn, int64_t n, int64_t c, int64_t hw) {
    #pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n * c; p++) {
        const float a = bn[(p % c) * BN_FIELDS + ALPHA], b = bn[(p % c) * BN_FIELDS + BETA];
        const float *xp = x + p * hw;
        float *op = out + p * hw;
        int64_t i = 0;
        for (; i + 16 <= hw; i += 16) store16(op + i, load16(xp + i) * splat(a) + splat(b));   /* FMA where there is one */
        if (i < hw) {   /* the rest through a padded copy: the same vector arithmetic */
            float t[16] = {0};
            memcpy(t, xp + i, sizeof(float) * (hw - i));
            store16(t, load16(t) * splat(a) + splat(b));
            memcpy(op + i, t, sizeof(float) * (hw - i));
        }
    }
}

/* training (train != 0): batch statistics, running statistics updated; else the running statistics */
void bn_forward(const float *x, float *out, float *bn, const float *weight, const float *bias, float *running_mean,
                float *running_var, double momentum, double eps, int64_t n, int64_t c, int64_t hw, int train) {
    if (train) bn_batch_stats(x, bn, weight, bias, running_mean, running_var, momentum, eps, n, c, hw, 0);
    else bn_eval_constants(bn, weight, bias, running_mean, running_var, eps, c);
    apply_affine(x, out, bn, n, c, hw);
}

/* per plane: sum of dy and of (x - mean) * dy, in float over 16 lanes, then in double */
VECTOR_CLONES
static void plane_sums(const float *x, const float *dy, const float *bn, int64_t n, int64_t c, int64_t hw,
                       double *psum, double *pdot) {
    #pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n * c; p++) {
        const float mean = bn[(p % c) * BN_FIELDS + MEAN];
        const float *xp = x + p * hw, *gp = dy + p * hw;
        v16 vs = splat(0), vd = splat(0);
        int64_t i = 0;
        for (; i + 16 <= hw; i += 16) {
            v16 g = load16(gp + i);
            vs += g;
            vd += (load16(xp + i) - splat(mean)) * g;
        }
        double s = 0, d = 0;
        for (int l = 0; l < 16; l++) { s += vs[l]; d += vd[l]; }
        for (; i < hw; i++) { s += gp[i]; d += (xp[i] - mean) * gp[i]; }
        psum[p] = s; pdot[p] = d;
    }
}

/* ATen's formula: dx = (dy - mean of dy - (x - mean) * k) * invstd * weight (training), dy * invstd * weight */
VECTOR_CLONES
static void input_grad(const float *x, const float *dy, const float *bn, const float *weight, const float *gm,
                       const float *k, float *dx, int64_t n, int64_t c, int64_t hw) {
    #pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n * c; p++) {
        const int64_t ch = p % c;
        const float mean = bn[ch * BN_FIELDS + MEAN], invstd = bn[ch * BN_FIELDS + INVSTD];
        const float w = weight ? weight[ch] : 1.0f, g = gm[ch], kk = k[ch];
        const float *xp = x + p * hw, *gp = dy + p * hw;
        float *dp = dx + p * hw;
        int64_t i = 0;
        for (; i + 16 <= hw; i += 16) {
            v16 t = (load16(xp + i) - splat(mean)) * splat(kk);
            store16(dp + i, (load16(gp + i) - splat(g) - t) * splat(invstd) * splat(w));
        }
        if (i < hw) {
            float tx[16] = {0}, tg[16] = {0};
            memcpy(tx, xp + i, sizeof(float) * (hw - i));
            memcpy(tg, gp + i, sizeof(float) * (hw - i));
            v16 t = (load16(tx) - splat(mean)) * splat(kk);
            store16(tx, (load16(tg) - splat(g) - t) * splat(invstd) * splat(w));
            memcpy(dp + i, tx, sizeof(float) * (hw - i));
        }
    }
}

void bn_backward(const float *x, const float *dy, const float *bn, const float *weight, float *dx,
                 float *grad_weight, float *grad_bias, int64_t n, int64_t c, int64_t hw, int train) {
    double *psum = malloc(sizeof(double) * 2 * n * c), *pdot = psum + n * c;
    float *gm = malloc(sizeof(float) * 2 * c), *k = gm + c;
    plane_sums(x, dy, bn, n, c, hw, psum, pdot);
    bn_backward_terms(psum, pdot, bn, n, c, n * hw, train, gm, k, grad_weight, grad_bias);
    input_grad(x, dy, bn, weight, gm, k, dx, n, c, hw);
    free(psum); free(gm);
}
