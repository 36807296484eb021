/* BatchNorm's per-channel numbers (bn_stats.c), shared by conv_tail.c and batch_norm.c. */
#ifndef LENET_BN_STATS_H
#define LENET_BN_STATS_H
#include <stdint.h>

enum { MEAN, INVSTD, ALPHA, BETA, BN_FIELDS };   /* per channel, in this order */

/* training: the batch's mean and variance (ReLU first where relu_first), running statistics updated */
void bn_batch_stats(const float *x, float *bn, const float *weight, const float *bias, float *running_mean,
                    float *running_var, double momentum, double eps, int64_t n, int64_t c, int64_t hw,
                    int relu_first);
/* evaluation: from the running statistics */
void bn_eval_constants(float *bn, const float *weight, const float *bias, const float *running_mean,
                       const float *running_var, double eps, int64_t c);
/* from per-plane sums of dy and (input - mean) * dy: ATen's grad_mean and k, the weight and bias gradients */
void bn_backward_terms(const double *psum, const double *pdot, const float *bn, int64_t n, int64_t c,
                       int64_t count, int train, float *gm, float *k, float *grad_weight, float *grad_bias);
#endif
