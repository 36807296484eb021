/* BatchNorm2d's per-channel numbers for conv_tail.c, as ATen's CPU kernels compute them.
 *
 * Training: the batch mean and the sum of squared deviations, each summed in double (ATen sums each
 * channel in one sequential double; here per plane with four accumulators, then the planes in order:
 * the same float after rounding except in about one case in 10^5, and not dependent on the thread
 * count), then ATen's own arithmetic for invstd, the running statistics (momentum on the float mean,
 * unbiased variance in double) and the output's alpha, beta. Evaluation: alpha, beta from the running
 * statistics. No FMA contraction here except where ATen has one (beta, on CPUs with FMA): this file is
 * compiled for the baseline x86-64, which has no FMA instruction to contract into.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <emmintrin.h>
#include "pool16.h"
#include "bn_stats.h"


static int have_fma(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    return __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static inline __m128 maybe_relu(__m128 v, int relu) {   /* torch.relu: NaN and -0 pass */
    return relu ? _mm_andnot_ps(_mm_cmplt_ps(v, _mm_setzero_ps()), v) : v;
}

static inline void add_pd(__m128d *lo, __m128d *hi, __m128 v) {
    *lo = _mm_add_pd(*lo, _mm_cvtps_pd(v));
    *hi = _mm_add_pd(*hi, _mm_cvtps_pd(_mm_movehl_ps(v, v)));
}

static double total(__m128d a, __m128d b, __m128d c, __m128d d) {
    double f[2];
    _mm_storeu_pd(f, _mm_add_pd(_mm_add_pd(a, b), _mm_add_pd(c, d)));
    return f[0] + f[1];
}

/* the plane's elements from i on, one at a time, added to s */
static double rest_sum(double s, const float *x, int64_t i, int64_t hw, int relu, int squares, float mean) {
    for (; i < hw; i++) {
        float v = x[i];
        v = relu && v < 0 ? 0.0f : v;
        if (squares) { v = v - mean; v = v * v; }
        s += v;
    }
    return s;
}

/* sum of the plane's values (mean < 0: first pass) or of their squared deviations from mean */
static double plane_sum(const float *x, int64_t hw, int relu, int squares, float mean) {
    __m128d s0 = _mm_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    const __m128 m = _mm_set1_ps(mean);
    int64_t i = 0;
    for (; i + 8 <= hw; i += 8) {
        __m128 a = maybe_relu(_mm_loadu_ps(x + i), relu), b = maybe_relu(_mm_loadu_ps(x + i + 4), relu);
        if (squares) {   /* ATen: (x - mean) * (x - mean) in float, summed in double */
            a = _mm_sub_ps(a, m); a = _mm_mul_ps(a, a);
            b = _mm_sub_ps(b, m); b = _mm_mul_ps(b, b);
        }
        add_pd(&s0, &s1, a);
        add_pd(&s2, &s3, b);
    }
    double s = total(s0, s1, s2, s3);
    return rest_sum(s, x, i, hw, relu, squares, mean);
}

static void set_affine(float *b, float mean, float invstd, float weight, float bias, int fma) {
    b[MEAN] = mean; b[INVSTD] = invstd; b[ALPHA] = invstd * weight;
    b[BETA] = fma ? fmaf(-mean, b[ALPHA], bias) : bias - mean * b[ALPHA];
}

#ifdef HAVE_POOL16
/* plane_sum with AVX-512: 16 floats per step into four 8-lane double sums. What it buys: the two passes
 * of BatchNorm's statistics took 0.37 ns per element each with SSE2, more than the fused tail itself. */
INLINE16 __m512 maybe_relu16(__m512 v, int relu) {
    return relu ? _mm512_maskz_mov_ps((__mmask16)~_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OS), v) : v;
}

AVX512 static double plane_sum16(const float *x, int64_t hw, int relu, int squares, float mean) {
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    const __m512 m = _mm512_set1_ps(mean);
    int64_t i = 0;
    for (; i + 32 <= hw; i += 32) {
        __m512 a = maybe_relu16(_mm512_loadu_ps(x + i), relu), b = maybe_relu16(_mm512_loadu_ps(x + i + 16), relu);
        if (squares) {   /* ATen: (x - mean) * (x - mean) in float, summed in double */
            a = _mm512_sub_ps(a, m); a = _mm512_mul_ps(a, a);
            b = _mm512_sub_ps(b, m); b = _mm512_mul_ps(b, b);
        }
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(a)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1))));
        s2 = _mm512_add_pd(s2, _mm512_cvtps_pd(_mm512_castps512_ps256(b)));
        s3 = _mm512_add_pd(s3, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(b), 1))));
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s0, s1), _mm512_add_pd(s2, s3)));
    return rest_sum(s, x, i, hw, relu, squares, mean);
}
#endif

static double any_plane_sum(const float *x, int64_t hw, int relu, int squares, float mean, int wide) {
#ifdef HAVE_POOL16
    if (wide) return plane_sum16(x, hw, relu, squares, mean);
#endif
    return plane_sum(x, hw, relu, squares, mean);
}

void bn_batch_stats(const float *x, float *bn, const float *weight, const float *bias, float *running_mean,
                    float *running_var, double momentum, double eps, int64_t n, int64_t c, int64_t hw,
                    int relu_first) {
    const int64_t planes = n * c, count = n * hw;
    double *part = malloc(sizeof(double) * planes);
    const int wide = lenet_use_avx512();
    float *var_sum = malloc(sizeof(float) * c);
    #pragma omp parallel
    {
        #pragma omp for schedule(static)
        for (int64_t p = 0; p < planes; p++) part[p] = any_plane_sum(x + p * hw, hw, relu_first, 0, 0.0f, wide);
        #pragma omp single
        for (int64_t ch = 0; ch < c; ch++) {
            double s = 0;
            for (int64_t i = 0; i < n; i++) s += part[i * c + ch];
            bn[ch * BN_FIELDS + MEAN] = (float)(s / (double)count);
        }
        #pragma omp for schedule(static)
        for (int64_t p = 0; p < planes; p++)
            part[p] = any_plane_sum(x + p * hw, hw, relu_first, 1, bn[(p % c) * BN_FIELDS + MEAN], wide);
        #pragma omp single
        for (int64_t ch = 0; ch < c; ch++) {
            double s = 0;
            for (int64_t i = 0; i < n; i++) s += part[i * c + ch];
            var_sum[ch] = (float)s;
        }
    }
    const int fma = have_fma();
    const float m = (float)momentum;
    for (int64_t ch = 0; ch < c; ch++) {
        float mean = bn[ch * BN_FIELDS + MEAN];
        float invstd = (var_sum[ch] == 0 && eps == 0) ? 0.0f
                       : (float)(1.0 / sqrt((double)(var_sum[ch] / (float)count) + eps));
        if (running_mean) running_mean[ch] = m * mean + (1 - m) * running_mean[ch];
        if (running_var) {
            float unbiased = var_sum[ch] / (float)(count - 1);
            running_var[ch] = (float)((double)m * (double)unbiased + (double)((1 - m) * running_var[ch]));
        }
        set_affine(bn + ch * BN_FIELDS, mean, invstd, weight ? weight[ch] : 1.0f, bias ? bias[ch] : 0.0f, fma);
    }
    free(part); free(var_sum);
}

void bn_eval_constants(float *bn, const float *weight, const float *bias, const float *running_mean,
                       const float *running_var, double eps, int64_t c) {
    const int fma = have_fma();
    for (int64_t ch = 0; ch < c; ch++) {
        float invstd = 1 / sqrtf(running_var[ch] + (float)eps);
        set_affine(bn + ch * BN_FIELDS, running_mean[ch], invstd, weight ? weight[ch] : 1.0f,
                   bias ? bias[ch] : 0.0f, fma);
    }
}

/* From the per-plane sums of dy and (input - mean) * dy: ATen's grad_mean and k (training), and the
 * weight and bias gradients. */
void bn_backward_terms(const double *psum, const double *pdot, const float *bn, int64_t n, int64_t c,
                       int64_t count, int train, float *gm, float *k, float *grad_weight, float *grad_bias) {
    for (int64_t ch = 0; ch < c; ch++) {
        double s = 0, d = 0;
        for (int64_t i = 0; i < n; i++) { s += psum[i * c + ch]; d += pdot[i * c + ch]; }
        float invstd = bn[ch * BN_FIELDS + INVSTD];
        gm[ch] = train ? (float)(s / (double)count) : 0.0f;
        k[ch] = train ? (float)d * invstd * invstd / (float)count : 0.0f;
        if (grad_weight) grad_weight[ch] = (float)(d * invstd);
        if (grad_bias) grad_bias[ch] = (float)s;
    }
}
