/* The tail of a LeNet-5 conv layer in one pass each way, for training on CPU:
 *
 *     conv -> [BatchNorm] activation [BatchNorm] [dropout] 2x2 pool (max or average)
 *
 * Why: torch runs each of these as its own op, and each reads and writes a whole activation (c1's is
 * 128x6x28x28 at batch 128); BatchNorm's CPU kernels also sum in one sequential double per channel.
 * Here the forward pass reads the input once more per BatchNorm statistic and once for the output, the
 * backward pass once for BatchNorm's sums and once for the input gradient.
 *
 * Same numbers as torch's layers (bit for bit in the forward pass, BatchNorm's running statistics
 * included): ReLU as torch.relu (NaN and -0 pass), BatchNorm's output as ATen's fused multiply-add
 * x * alpha + beta (FMA when the CPU has it, as ATen's vectorized kernels then do), its batch mean and
 * variance summed in double (another order than ATen's, so identical after rounding to float except in
 * about one case in 10^5), dropout as input * noise, max-pool as ATen's (first maximum in row-major
 * order, NaN wins), average pool as ATen's ((0 + x00 + x01) + x10 + x11) / 4. Gradients agree to float
 * rounding (the sums are taken in another order; here in double per row).
 * tanh and sigmoid are computed by torch before the kernel (flags TANH, SIGMOID: x is their output);
 * the backward pass applies their derivative as ATen writes it.
 *
 * Layout: n x c contiguous h x w float planes (NCHW), h and w even. keep: one byte per input element,
 * 1 where dropout keeps it (scaled by `scale`). arg: one byte per output, the window's element (0..3,
 * row-major) that the max came from (average pool: RELU_BITS below). bn: per channel mean, invstd, alpha,
 * beta (written by the forward pass, read by the backward pass). At most one BatchNorm (BN_BEFORE or BN_AFTER).
 * SSE2 on four windows at a time; a second copy compiled for FMA CPUs (target_clones); planes split over
 * OpenMP threads (torch's libgomp); statistics per plane, reduced in a fixed order: the numbers do not
 * depend on the thread count.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <emmintrin.h>
#include "pool16.h"
#include "bn_stats.h"

enum { RELU = 1, TANH = 2, SIGMOID = 4, BN_BEFORE = 8, BN_AFTER = 16, NOISE = 32, AVG = 64, BN_TRAIN = 128 };
#define SPECIALIZED (RELU | TANH | SIGMOID | BN_BEFORE | BN_AFTER | NOISE | AVG)
/* An average pool after a ReLU without BatchNorm: the forward pass writes each window's ReLU bits into arg
 * (bit q: corner q passed), and the AVX-512 backward pass reads that byte instead of the window's four
 * inputs (c1 at batch 128: 0.15 MB read for 2.4 MB; its backward pass 1.5x faster, the same numbers). */
#define RELU_BITS(flags) (((flags) & (AVG | RELU | BN_BEFORE | BN_AFTER)) == (AVG | RELU))
/* The tails compiled with their flags as constants (others run on flags read at run time, ~2x slower):
 * every activation with max or average pool, with or without dropout, BatchNorm before ReLU or after any. */
#define POOLS(X, f) X(f) X((f) | AVG)
#define DROPOUTS(X, f) POOLS(X, f) POOLS(X, (f) | NOISE)
#define ACTIVATION(X, a) DROPOUTS(X, a) DROPOUTS(X, (a) | BN_AFTER)
#define TAILS(X) ACTIVATION(X, RELU) DROPOUTS(X, RELU | BN_BEFORE) ACTIVATION(X, TANH) ACTIVATION(X, SIGMOID)

#if defined(__linux__) && defined(__GNUC__)
#define FMA_CLONES __attribute__((target_clones("fma", "default")))
#else
#define FMA_CLONES
#endif
#define INLINE static inline __attribute__((always_inline))

typedef struct {   /* one plane's per-channel constants as vectors */
    __m128 a, b, mean, invstd, w, gm, k;
} consts;

INLINE __m128 relu(__m128 v) { return _mm_andnot_ps(_mm_cmplt_ps(v, _mm_setzero_ps()), v); }
INLINE __m128 select_ps(__m128 mask, __m128 a, __m128 b) { return _mm_or_ps(_mm_and_ps(mask, a), _mm_andnot_ps(mask, b)); }
INLINE __m128 madd(__m128 a, __m128 b, __m128 c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }  /* FMA in its clone */

INLINE void load_corners(const float *r0, const float *r1, __m128 v[4]) {
    __m128 t0 = _mm_loadu_ps(r0), t1 = _mm_loadu_ps(r0 + 4), b0 = _mm_loadu_ps(r1), b1 = _mm_loadu_ps(r1 + 4);
    v[0] = _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)); v[1] = _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 1, 3, 1));
    v[2] = _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0)); v[3] = _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1));
}

INLINE void store_corners(float *r0, float *r1, const __m128 v[4]) {
    _mm_storeu_ps(r0, _mm_unpacklo_ps(v[0], v[1])); _mm_storeu_ps(r0 + 4, _mm_unpackhi_ps(v[0], v[1]));
    _mm_storeu_ps(r1, _mm_unpacklo_ps(v[2], v[3])); _mm_storeu_ps(r1 + 4, _mm_unpackhi_ps(v[2], v[3]));
}

INLINE void noise_row(const uint8_t *keep, __m128 scale, __m128 *even, __m128 *odd) {
    const __m128i zero = _mm_setzero_si128();
    __m128i b16 = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)keep), zero);
    __m128 lo = _mm_castsi128_ps(_mm_unpacklo_epi16(b16, zero)), hi = _mm_castsi128_ps(_mm_unpackhi_epi16(b16, zero));
    __m128 e = _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)), o = _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
    *even = _mm_andnot_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(_mm_castps_si128(e), zero)), scale);
    *odd = _mm_andnot_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(_mm_castps_si128(o), zero)), scale);
}

INLINE void load_noise(const uint8_t *k0, const uint8_t *k1, __m128 scale, __m128 nz[4]) {
    noise_row(k0, scale, &nz[0], &nz[1]);
    noise_row(k1, scale, &nz[2], &nz[3]);
}

/* the chain from the kernel's input to the pool's input, elementwise */
INLINE __m128 chain_forward(__m128 v, __m128 nz, const consts *k, int flags) {
    if (flags & BN_BEFORE) v = madd(v, k->a, k->b);
    if (flags & RELU) v = relu(v);
    if (flags & BN_AFTER) v = madd(v, k->a, k->b);
    if (flags & NOISE) v = _mm_mul_ps(v, nz);
    return v;
}

/* gradient at BatchNorm's output (*dy) and BatchNorm's input (*in), from the pool input's gradient dv */
INLINE void bn_point(__m128 x, __m128 dv, __m128 nz, const consts *k, int flags, __m128 *dy, __m128 *in) {
    if (flags & NOISE) dv = _mm_mul_ps(dv, nz);
    if (flags & BN_BEFORE) {   /* through the ReLU first: threshold_backward passes where relu's output > 0 */
        if (flags & RELU) dv = _mm_andnot_ps(_mm_cmple_ps(madd(x, k->a, k->b), _mm_setzero_ps()), dv);
        *in = x;
    } else {
        *in = (flags & RELU) ? relu(x) : x;
    }
    *dy = dv;
}

INLINE __m128 bn_backward(__m128 dy, __m128 in, const consts *k) {   /* ATen's formula */
    __m128 dx = _mm_mul_ps(_mm_sub_ps(in, k->mean), k->k);
    return _mm_mul_ps(_mm_mul_ps(_mm_sub_ps(_mm_sub_ps(dy, k->gm), dx), k->invstd), k->w);
}

INLINE __m128 chain_backward(__m128 x, __m128 dv, __m128 nz, const consts *k, int flags) {
    const __m128 zero = _mm_setzero_ps(), one = _mm_set1_ps(1.0f);
    if (flags & NOISE) dv = _mm_mul_ps(dv, nz);
    __m128 t = (flags & BN_BEFORE) ? madd(x, k->a, k->b) : x;   /* the activation's input */
    if (flags & BN_AFTER) dv = bn_backward(dv, (flags & RELU) ? relu(t) : t, k);
    if (flags & RELU) dv = _mm_andnot_ps(_mm_cmple_ps(t, zero), dv);
    if (flags & TANH) dv = _mm_mul_ps(dv, _mm_sub_ps(one, _mm_mul_ps(x, x)));
    if (flags & SIGMOID) dv = _mm_mul_ps(_mm_mul_ps(dv, _mm_sub_ps(one, x)), x);
    if (flags & BN_BEFORE) dv = bn_backward(dv, x, k);
    return dv;
}

INLINE void plane_consts(consts *k, const float *bn, const float *weight, const float *gm, const float *kk,
                         int64_t ch) {
    const float *b = bn + ch * BN_FIELDS;
    k->a = _mm_set1_ps(b[ALPHA]); k->b = _mm_set1_ps(b[BETA]);
    k->mean = _mm_set1_ps(b[MEAN]); k->invstd = _mm_set1_ps(b[INVSTD]);
    k->w = _mm_set1_ps(weight ? weight[ch] : 1.0f);
    k->gm = _mm_set1_ps(gm ? gm[ch] : 0.0f); k->k = _mm_set1_ps(kk ? kk[ch] : 0.0f);
}

INLINE __m128 hsum4(__m128 v) { float f[4]; _mm_storeu_ps(f, v); return _mm_set1_ps((f[0] + f[1]) + (f[2] + f[3])); }


#ifdef HAVE_POOL16
/* -- the same tails with AVX-512, a row's windows 16 at a time (pool16.h) ------------------------------
 * What it buys: SSE2's four windows per step are compute-bound (about 0.7 ns per input element each way);
 * 16 masked windows take a whole LeNet-5 row at once. Each helper below is its SSE2 twin above written for
 * 16 lanes, operation for operation, so the values are the same; BatchNorm's backward sums run over 16
 * lanes instead of 4 (another summation order: float rounding, as in every BatchNorm sum here). */
typedef struct { __m512 a, b, mean, invstd, w, gm, k; } consts16;

INLINE16 void widen_consts(consts16 *z, const consts *k) {
    z->a = _mm512_broadcast_f32x4(k->a); z->b = _mm512_broadcast_f32x4(k->b);
    z->mean = _mm512_broadcast_f32x4(k->mean); z->invstd = _mm512_broadcast_f32x4(k->invstd);
    z->w = _mm512_broadcast_f32x4(k->w); z->gm = _mm512_broadcast_f32x4(k->gm); z->k = _mm512_broadcast_f32x4(k->k);
}

INLINE16 __m512 relu16(__m512 v) {   /* torch.relu: NaN and -0 pass */
    return _mm512_maskz_mov_ps((__mmask16)~_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OS), v);
}
INLINE16 __m512 madd16(__m512 a, __m512 b, __m512 c) { return _mm512_add_ps(_mm512_mul_ps(a, b), c); }
INLINE16 __m512 lanes_if(__mmask16 keep, __m512 v) { return _mm512_maskz_mov_ps(keep, v); }

/* dropout's scale where n windows' keep bytes (2n per row) say 1, else 0: nz[q] in corner order */
INLINE16 void load_noise16(const uint8_t *k0, const uint8_t *k1, int64_t n, __m512 scale, __m512 nz[4]) {
    const __mmask32 bytes = n >= 16 ? 0xFFFFFFFFu : (__mmask32)((1u << (2 * n)) - 1);
    const uint8_t *rows[2] = {k0, k1};
    for (int r = 0; r < 2; r++) {
        __m256i b = _mm256_maskz_loadu_epi8(bytes, rows[r]);
        __m512i lo = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(b)), hi = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(b, 1));
        __m512i e = _mm512_permutex2var_epi32(lo, even_lanes(), hi), o = _mm512_permutex2var_epi32(lo, odd_lanes(), hi);
        nz[2 * r] = lanes_if(_mm512_test_epi32_mask(e, e), scale);
        nz[2 * r + 1] = lanes_if(_mm512_test_epi32_mask(o, o), scale);
    }
}

INLINE16 __m512 chain_forward16(__m512 v, __m512 nz, const consts16 *k, int flags) {
    if (flags & BN_BEFORE) v = madd16(v, k->a, k->b);
    if (flags & RELU) v = relu16(v);
    if (flags & BN_AFTER) v = madd16(v, k->a, k->b);
    if (flags & NOISE) v = _mm512_mul_ps(v, nz);
    return v;
}

INLINE16 void bn_point16(__m512 x, __m512 dv, __m512 nz, const consts16 *k, int flags, __m512 *dy, __m512 *in) {
    if (flags & NOISE) dv = _mm512_mul_ps(dv, nz);
    if (flags & BN_BEFORE) {
        if (flags & RELU) dv = lanes_if(_mm512_cmp_ps_mask(madd16(x, k->a, k->b), _mm512_setzero_ps(), _CMP_NLE_US), dv);
        *in = x;
    } else {
        *in = (flags & RELU) ? relu16(x) : x;
    }
    *dy = dv;
}

INLINE16 __m512 bn_backward16(__m512 dy, __m512 in, const consts16 *k) {
    __m512 dx = _mm512_mul_ps(_mm512_sub_ps(in, k->mean), k->k);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(dy, k->gm), dx), k->invstd), k->w);
}

INLINE16 __m512 chain_backward16(__m512 x, __m512 dv, __m512 nz, const consts16 *k, int flags) {
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
    if (flags & NOISE) dv = _mm512_mul_ps(dv, nz);
    __m512 t = (flags & BN_BEFORE) ? madd16(x, k->a, k->b) : x;
    if (flags & BN_AFTER) dv = bn_backward16(dv, (flags & RELU) ? relu16(t) : t, k);
    if (flags & RELU) dv = lanes_if(_mm512_cmp_ps_mask(t, zero, _CMP_NLE_US), dv);
    if (flags & TANH) dv = _mm512_mul_ps(dv, _mm512_sub_ps(one, _mm512_mul_ps(x, x)));
    if (flags & SIGMOID) dv = _mm512_mul_ps(_mm512_mul_ps(dv, _mm512_sub_ps(one, x)), x);
    if (flags & BN_BEFORE) dv = bn_backward16(dv, x, k);
    return dv;
}

/* RELU_BITS: the four corners' ReLU tests (chain_backward16's, on the ReLU's input) as bits 0-3 of each lane */
INLINE16 __m512i relu_bits16(const __m512 v[4]) {
    __m512i bits = _mm512_setzero_si512();
    for (int q = 0; q < 4; q++)
        bits = _mm512_mask_or_epi32(bits, _mm512_cmp_ps_mask(v[q], _mm512_setzero_ps(), _CMP_NLE_US), bits,
                                    _mm512_set1_epi32(1 << q));
    return bits;
}

/* the inverse, for the backward pass: 1 where corner q's bit is set, else 0 (the same ReLU test results) */
INLINE16 void corners_from_bits16(const uint8_t *bits, int64_t n, __m512 v[4]) {
    __m512i b = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(first_lanes(n), bits));
    for (int q = 0; q < 4; q++)
        v[q] = _mm512_maskz_mov_ps(_mm512_test_epi32_mask(b, _mm512_set1_epi32(1 << q)), _mm512_set1_ps(1.0f));
}

/* the pool's input gradient of n windows: as pool_grads */
INLINE16 void pool_grads16(const float *g, const uint8_t *a, int64_t n, int flags, __m512 dv[4]) {
    if (flags & AVG) {
        __m512 gv = _mm512_maskz_loadu_ps(first_lanes(n), g);
        dv[0] = dv[1] = dv[2] = dv[3] = _mm512_add_ps(_mm512_setzero_ps(), _mm512_mul_ps(gv, _mm512_set1_ps(0.25f)));
        return;
    }
    corner_grads16(g, a, n, dv);
}

INLINE16 void forward_plane16(const float *x, float *out, uint8_t *arg, const uint8_t *keep, __m512 scale,
                              const consts16 *k, int64_t h, int64_t w, int flags) {
    const int64_t ho = h / 2, wo = w / 2;
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t i = 0; i < ho; i++)
        for (int64_t j = 0; j < wo; j += 16) {
            const int64_t n = wo - j < 16 ? wo - j : 16;
            const float *r0 = x + 2 * i * w + 2 * j;
            __m512 v[4], nz[4] = {zero, zero, zero, zero}, m;
            load_corners16(r0, r0 + w, n, v);
            if (flags & NOISE) load_noise16(keep + 2 * i * w + 2 * j, keep + (2 * i + 1) * w + 2 * j, n, scale, nz);
            if (RELU_BITS(flags) && arg)
                _mm512_mask_cvtepi32_storeu_epi8(arg + i * wo + j, first_lanes(n), relu_bits16(v));
            for (int q = 0; q < 4; q++) v[q] = chain_forward16(v[q], nz[q], k, flags);
            float *o = out + i * wo + j;
            if (flags & AVG) {
                if (flags & NOISE)   /* as ATen: dropout's product rounded before the pool adds it (no FMA) */
                    for (int q = 0; q < 4; q++) __asm__("" : "+v"(v[q]));
                m = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(zero, v[0]), v[1]), v[2]), v[3]);
                _mm512_mask_storeu_ps(o, first_lanes(n), _mm512_mul_ps(m, _mm512_set1_ps(0.25f)));
                continue;
            }
            __m512i idx;
            m = max_corner16(v, &idx);
            _mm512_mask_storeu_ps(o, first_lanes(n), m);
            if (arg) _mm512_mask_cvtepi32_storeu_epi8(arg + i * wo + j, first_lanes(n), idx);
        }
}

/* BatchNorm's sums (grad_x NULL) or the input gradient of one plane */
INLINE16 void backward_plane16(const float *x, const float *grad, const uint8_t *arg, const uint8_t *keep,
                               __m512 scale, const consts16 *k, float *grad_x, int64_t h, int64_t w, int flags,
                               double *sum, double *dot) {
    const int64_t ho = h / 2, wo = w / 2;
    double s = 0, d = 0;
    for (int64_t i = 0; i < ho; i++) {
        __m512 vs = _mm512_setzero_ps(), vd = _mm512_setzero_ps();
        for (int64_t j = 0; j < wo; j += 16) {
            const int64_t n = wo - j < 16 ? wo - j : 16;
            const float *r0 = x + 2 * i * w + 2 * j;
            __m512 v[4], nz[4], dv[4], dy, in;
            if (RELU_BITS(flags) && arg) corners_from_bits16(arg + i * wo + j, n, v);
            else load_corners16(r0, r0 + w, n, v);
            if (flags & NOISE) load_noise16(keep + 2 * i * w + 2 * j, keep + (2 * i + 1) * w + 2 * j, n, scale, nz);
            pool_grads16(grad + i * wo + j, (flags & AVG) ? NULL : arg + i * wo + j, n, flags, dv);
            if (grad_x) {
                for (int q = 0; q < 4; q++) dv[q] = chain_backward16(v[q], dv[q], nz[q], k, flags);
                store_corners16(grad_x + 2 * i * w + 2 * j, grad_x + (2 * i + 1) * w + 2 * j, n, dv);
                continue;
            }
            for (int q = 0; q < 4; q++) {   /* lanes past n: zero gradient, nothing added */
                bn_point16(v[q], dv[q], nz[q], k, flags, &dy, &in);
                vs = _mm512_add_ps(vs, dy);
                vd = _mm512_add_ps(vd, _mm512_mul_ps(_mm512_sub_ps(in, k->mean), dy));
            }
        }
        if (!grad_x) { s += _mm512_reduce_add_ps(vs); d += _mm512_reduce_add_ps(vd); }
    }
    if (!grad_x) { *sum = s; *dot = d; }
}

AVX512 static void tail_forward16(const float *x, float *out, uint8_t *arg, const uint8_t *keep, float scale,
                                  const float *bn, int64_t n, int64_t c, int64_t h, int64_t w, int flags) {
    const __m512 vscale = _mm512_set1_ps(scale);
    #pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n * c; p++) {
        consts k;
        consts16 k16;
        memset(&k, 0, sizeof k);
        if (flags & (BN_BEFORE | BN_AFTER)) plane_consts(&k, bn, NULL, NULL, NULL, p % c);
        widen_consts(&k16, &k);
        float *o = out + p * (h / 2) * (w / 2);
        uint8_t *a = arg ? arg + p * (h / 2) * (w / 2) : NULL;
        const uint8_t *kp = keep ? keep + p * h * w : NULL;
        switch (flags & SPECIALIZED) {
#define FORWARD16(f) case f: forward_plane16(x + p * h * w, o, a, kp, vscale, &k16, h, w, f); break;
            TAILS(FORWARD16)
            default: forward_plane16(x + p * h * w, o, a, kp, vscale, &k16, h, w, flags);
        }
    }
}

/* one plane's sums or input gradient (tail_backward's two passes) */
AVX512 static void backward_pass16(const float *x, const float *grad, const uint8_t *arg, const uint8_t *keep,
                                   float scale, const float *bn, const float *weight, const float *gm,
                                   const float *kk, float *grad_x, int64_t n, int64_t c, int64_t h, int64_t w,
                                   int flags, double *psum, double *pdot) {
    const int64_t planes = n * c, ho = h / 2, wo = w / 2;
    const int has_bn = (flags & (BN_BEFORE | BN_AFTER)) != 0;
    const __m512 vscale = _mm512_set1_ps(scale);
    #pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        consts k;
        consts16 k16;
        memset(&k, 0, sizeof k);
        if (has_bn) plane_consts(&k, bn, weight, gm, kk, p % c);
        widen_consts(&k16, &k);
        const float *xp = x + p * h * w, *gp = grad + p * ho * wo;
        const uint8_t *ap = arg ? arg + p * ho * wo : NULL, *kp = keep ? keep + p * h * w : NULL;
        float *dp = grad_x ? grad_x + p * h * w : NULL;
        double *s = psum ? psum + p : NULL, *d = pdot ? pdot + p : NULL;
        switch (flags & SPECIALIZED) {
#define BACKWARD16(f) case f: backward_plane16(xp, gp, ap, kp, vscale, &k16, dp, h, w, f, s, d); break;
            TAILS(BACKWARD16)
            default: backward_plane16(xp, gp, ap, kp, vscale, &k16, dp, h, w, flags, s, d);
        }
    }
}
#else   /* never called: lenet_use_avx512() is 0 without AVX-512 support */
static void tail_forward16(const float *x, float *out, uint8_t *arg, const uint8_t *keep, float scale, const float *bn,
                           int64_t n, int64_t c, int64_t h, int64_t w, int flags) {}
static void backward_pass16(const float *x, const float *grad, const uint8_t *arg, const uint8_t *keep, float scale,
                            const float *bn, const float *weight, const float *gm, const float *kk, float *grad_x,
                            int64_t n, int64_t c, int64_t h, int64_t w, int flags, double *psum, double *pdot) {}
#endif

/* four windows: rows r0, r1 (8 floats each), keep bytes k0, k1 -> 4 outputs, 4 arg bytes */
INLINE void forward4(const float *r0, const float *r1, const uint8_t *k0, const uint8_t *k1, __m128 scale,
                     const consts *k, float *out, uint8_t *arg, int flags) {
    const __m128 zero = _mm_setzero_ps();
    __m128 v[4], nz[4] = {zero, zero, zero, zero}, m;
    load_corners(r0, r1, v);
    if (flags & NOISE) load_noise(k0, k1, scale, nz);
    if (RELU_BITS(flags) && arg) {   /* for an AVX-512 backward pass (this one reads the inputs) */
        int m[4];
        for (int q = 0; q < 4; q++) m[q] = _mm_movemask_ps(_mm_cmpnle_ps(v[q], zero));
        for (int j = 0; j < 4; j++)
            arg[j] = (uint8_t)(((m[0] >> j) & 1) | (((m[1] >> j) & 1) << 1) | (((m[2] >> j) & 1) << 2)
                               | (((m[3] >> j) & 1) << 3));
    }
    for (int q = 0; q < 4; q++) v[q] = chain_forward(v[q], nz[q], k, flags);
    if (flags & AVG) {
        if (flags & NOISE)   /* as ATen: dropout's product rounded before the pool adds it (no FMA) */
            for (int q = 0; q < 4; q++) __asm__("" : "+x"(v[q]));
        m = _mm_add_ps(_mm_add_ps(_mm_add_ps(_mm_add_ps(zero, v[0]), v[1]), v[2]), v[3]);
        _mm_storeu_ps(out, _mm_mul_ps(m, _mm_set1_ps(0.25f)));
        return;
    }
    /* ATen's rule: take v when v > max so far or v is NaN */
    __m128 idx = zero, take;
    m = v[0];
    for (int q = 1; q < 4; q++) {
        take = _mm_or_ps(_mm_cmpgt_ps(v[q], m), _mm_cmpunord_ps(v[q], v[q]));
        m = select_ps(take, v[q], m);
        idx = select_ps(take, _mm_castsi128_ps(_mm_set1_epi32(q)), idx);
    }
    _mm_storeu_ps(out, m);
    if (arg) {
        __m128i i16 = _mm_packs_epi32(_mm_castps_si128(idx), _mm_castps_si128(idx));
        int32_t i8 = _mm_cvtsi128_si32(_mm_packus_epi16(i16, i16));
        memcpy(arg, &i8, 4);
    }
}

/* A row's last 1-3 windows: read in place (the 8-float loads run into the next row, and the results
 * for windows past the row's end are dropped), except in the tensor's last row, read from these
 * zero-padded copies. */
typedef struct { float r0[8], r1[8]; uint8_t k0[8], k1[8]; } row_end;

/* memcpy of count (1..3) items of `size` bytes: fixed sizes, so the compiler writes moves, not a call */
#define COPY_FEW(dst, src, size, count) do { switch (count) { \
    case 1: memcpy(dst, src, 1 * (size)); break; case 2: memcpy(dst, src, 2 * (size)); break; \
    default: memcpy(dst, src, 3 * (size)); } } while (0)

INLINE void row_end_copy(row_end *e, const float *r0, const float *r1, const uint8_t *k0, const uint8_t *k1,
                         int64_t count) {
    memset(e, 0, sizeof *e);
    COPY_FEW(e->r0, r0, 8, count); COPY_FEW(e->r1, r1, 8, count);
    if (k0) { COPY_FEW(e->k0, k0, 2, count); COPY_FEW(e->k1, k1, 2, count); }
}

INLINE void forward_plane(const float *x, float *out, uint8_t *arg, const uint8_t *keep, __m128 scale,
                          const consts *k, int64_t h, int64_t w, int flags, int last) {
    const int64_t ho = h / 2, wo = w / 2;
    for (int64_t i = 0; i < ho; i++) {
        const float *r0 = x + 2 * i * w, *r1 = r0 + w;
        const uint8_t *k0 = (flags & NOISE) ? keep + 2 * i * w : NULL, *k1 = k0 ? k0 + w : NULL;
        float *o = out + i * wo;
        uint8_t *a = arg ? arg + i * wo : NULL;
        int64_t j = 0;
        for (; j + 4 <= wo; j += 4)
            forward4(r0 + 2 * j, r1 + 2 * j, k0 ? k0 + 2 * j : NULL, k1 ? k1 + 2 * j : NULL, scale, k, o + j,
                     a ? a + j : NULL, flags);
        if (j < wo) {
            row_end e; float ob[4]; uint8_t ab[4];
            const float *e0 = r0 + 2 * j, *e1 = r1 + 2 * j;
            const uint8_t *ek0 = k0 ? k0 + 2 * j : NULL, *ek1 = k1 ? k1 + 2 * j : NULL;
            if (last && i == ho - 1) {
                row_end_copy(&e, e0, e1, ek0, ek1, wo - j);
                e0 = e.r0; e1 = e.r1; ek0 = e.k0; ek1 = e.k1;
            }
            forward4(e0, e1, ek0, ek1, scale, k, ob, ab, flags);
            COPY_FEW(o + j, ob, 4, wo - j);
            if (a) COPY_FEW(a + j, ab, 1, wo - j);
        }
    }
}

FMA_CLONES
void tail_forward(const float *x, float *out, uint8_t *arg, const uint8_t *keep, float scale, float *bn,
                  const float *weight, const float *bias, float *running_mean, float *running_var,
                  double momentum, double eps, int64_t n, int64_t c, int64_t h, int64_t w, int flags) {
    if (flags & (BN_BEFORE | BN_AFTER)) {
        if (flags & BN_TRAIN)
            bn_batch_stats(x, bn, weight, bias, running_mean, running_var, momentum, eps, n, c, h * w,
                           (flags & BN_AFTER) && (flags & RELU));
        else
            bn_eval_constants(bn, weight, bias, running_mean, running_var, eps, c);
    }
    if (lenet_use_avx512()) { tail_forward16(x, out, arg, keep, scale, bn, n, c, h, w, flags); return; }
    const __m128 vscale = _mm_set1_ps(scale);
    #pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n * c; p++) {
        consts k;
        memset(&k, 0, sizeof k);
        if (flags & (BN_BEFORE | BN_AFTER)) plane_consts(&k, bn, NULL, NULL, NULL, p % c);
        float *o = out + p * (h / 2) * (w / 2);
        uint8_t *a = arg ? arg + p * (h / 2) * (w / 2) : NULL;
        const uint8_t *kp = keep ? keep + p * h * w : NULL;
        const int last = p == n * c - 1;
        switch (flags & SPECIALIZED) {   /* each tail's own copy of the loops, its flags constants */
#define FORWARD(f) case f: forward_plane(x + p * h * w, o, a, kp, vscale, &k, h, w, f, last); break;
            TAILS(FORWARD)
            default: forward_plane(x + p * h * w, o, a, kp, vscale, &k, h, w, flags, last);
        }
    }
}

/* The pool's input gradient for four windows: the output's gradient where the max came from (max),
 * a quarter of it everywhere (average). */
INLINE void pool_grads(const float *g, const uint8_t *a, int flags, __m128 dv[4]) {
    __m128 gv = _mm_loadu_ps(g);
    if (flags & AVG) {
        dv[0] = dv[1] = dv[2] = dv[3] = _mm_add_ps(_mm_setzero_ps(), _mm_mul_ps(gv, _mm_set1_ps(0.25f)));
        return;
    }
    int32_t a8; memcpy(&a8, a, 4);
    const __m128i zero = _mm_setzero_si128();
    __m128i idx = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(a8), zero), zero);
    for (int q = 0; q < 4; q++) dv[q] = _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(idx, _mm_set1_epi32(q))), gv);
}

/* four windows' terms of BatchNorm's sums: sum of dy, sum of (input - mean) * dy */
INLINE void sums4(const float *r0, const float *r1, const uint8_t *k0, const uint8_t *k1, const float *g,
                  const uint8_t *a, __m128 scale, const consts *k, int flags, __m128 *vs, __m128 *vd) {
    __m128 v[4], nz[4], dv[4], dy, in;
    load_corners(r0, r1, v);
    if (flags & NOISE) load_noise(k0, k1, scale, nz);
    pool_grads(g, a, flags, dv);
    for (int q = 0; q < 4; q++) {
        bn_point(v[q], dv[q], nz[q], k, flags, &dy, &in);
        *vs = _mm_add_ps(*vs, dy);
        *vd = _mm_add_ps(*vd, _mm_mul_ps(_mm_sub_ps(in, k->mean), dy));
    }
}

/* four windows' input gradient, into rows d0, d1 */
INLINE void backward4(const float *r0, const float *r1, const uint8_t *k0, const uint8_t *k1, const float *g,
                      const uint8_t *a, __m128 scale, const consts *k, float *d0, float *d1, int flags) {
    __m128 v[4], nz[4], dv[4];
    load_corners(r0, r1, v);
    if (flags & NOISE) load_noise(k0, k1, scale, nz);
    pool_grads(g, a, flags, dv);
    for (int q = 0; q < 4; q++) dv[q] = chain_backward(v[q], dv[q], nz[q], k, flags);
    store_corners(d0, d1, dv);
}

/* sums (grad_x NULL) or input gradient of one plane */
INLINE void backward_plane(const float *x, const float *grad, const uint8_t *arg, const uint8_t *keep,
                           __m128 scale, const consts *k, float *grad_x, int64_t h, int64_t w, int flags,
                           int last, double *sum, double *dot) {
    const int64_t ho = h / 2, wo = w / 2;
    double s = 0, d = 0;
    for (int64_t i = 0; i < ho; i++) {
        const float *r0 = x + 2 * i * w, *r1 = r0 + w, *g = grad + i * wo;
        const uint8_t *k0 = (flags & NOISE) ? keep + 2 * i * w : NULL, *k1 = k0 ? k0 + w : NULL;
        const uint8_t *a = (flags & AVG) ? NULL : arg + i * wo;
        float *d0 = grad_x ? grad_x + 2 * i * w : NULL, *d1 = d0 ? d0 + w : NULL;
        __m128 vs = _mm_setzero_ps(), vd = _mm_setzero_ps();
        int64_t j = 0;
        for (; j + 4 <= wo; j += 4) {
            const uint8_t *kj0 = k0 ? k0 + 2 * j : NULL, *kj1 = k1 ? k1 + 2 * j : NULL, *aj = a ? a + j : NULL;
            if (grad_x) backward4(r0 + 2 * j, r1 + 2 * j, kj0, kj1, g + j, aj, scale, k, d0 + 2 * j, d1 + 2 * j, flags);
            else sums4(r0 + 2 * j, r1 + 2 * j, kj0, kj1, g + j, aj, scale, k, flags, &vs, &vd);
        }
        if (j < wo) {   /* zero gradients beyond the row's end add nothing to the sums */
            row_end e; float gb[4] = {0, 0, 0, 0}, t0[8], t1[8]; uint8_t ab[4] = {0, 0, 0, 0};
            const float *e0 = r0 + 2 * j, *e1 = r1 + 2 * j;
            const uint8_t *ek0 = k0 ? k0 + 2 * j : NULL, *ek1 = k1 ? k1 + 2 * j : NULL;
            if (last && i == ho - 1) {
                row_end_copy(&e, e0, e1, ek0, ek1, wo - j);
                e0 = e.r0; e1 = e.r1; ek0 = e.k0; ek1 = e.k1;
            }
            COPY_FEW(gb, g + j, 4, wo - j);
            if (a) COPY_FEW(ab, a + j, 1, wo - j);
            if (grad_x) {
                backward4(e0, e1, ek0, ek1, gb, ab, scale, k, t0, t1, flags);
                COPY_FEW(d0 + 2 * j, t0, 8, wo - j); COPY_FEW(d1 + 2 * j, t1, 8, wo - j);
            } else {   /* zero gradients in the dropped lanes: nothing added */
                sums4(e0, e1, ek0, ek1, gb, ab, scale, k, flags, &vs, &vd);
            }
        }
        if (!grad_x) { s += _mm_cvtss_f32(hsum4(vs)); d += _mm_cvtss_f32(hsum4(vd)); }
    }
    if (!grad_x) { *sum = s; *dot = d; }
}

/* tail_backward's two passes over the planes, SSE2: BatchNorm's sums of the output gradient (psum, pdot:
 * grad_x NULL) or the input gradient (grad_x; gm, kk: BatchNorm's terms from the sums). backward_pass16 is
 * its AVX-512 twin, with the same arguments. Cloned itself, not inlined: its OpenMP body is a function of its
 * own, and only a cloned one gets the FMA build that gives ATen's roundings (tanh's gradient, for one). */
FMA_CLONES static void backward_pass(const float *x, const float *grad, const uint8_t *arg, const uint8_t *keep,
                                     float scale, const float *bn, const float *weight, const float *gm,
                                     const float *kk, float *grad_x, int64_t n, int64_t c, int64_t h, int64_t w,
                                     int flags, double *psum, double *pdot) {
    const int64_t planes = n * c, ho = h / 2, wo = w / 2;
    const int has_bn = (flags & (BN_BEFORE | BN_AFTER)) != 0;
    const __m128 vscale = _mm_set1_ps(scale);
    #pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        consts k;
        memset(&k, 0, sizeof k);
        if (has_bn) plane_consts(&k, bn, weight, gm, kk, p % c);
        const float *xp = x + p * h * w, *gp = grad + p * ho * wo;
        const uint8_t *ap = arg ? arg + p * ho * wo : NULL, *kp = keep ? keep + p * h * w : NULL;
        float *dp = grad_x ? grad_x + p * h * w : NULL;
        double *s = psum ? psum + p : NULL, *d = pdot ? pdot + p : NULL;
        const int last = p == planes - 1;
        switch (flags & SPECIALIZED) {
#define BACKWARD(f) case f: backward_plane(xp, gp, ap, kp, vscale, &k, dp, h, w, f, last, s, d); break;
            TAILS(BACKWARD)
            default: backward_plane(xp, gp, ap, kp, vscale, &k, dp, h, w, flags, last, s, d);
        }
    }
}

void tail_backward(const float *x, const float *grad, const uint8_t *arg, const uint8_t *keep, float scale,
                   const float *bn, const float *weight, float *grad_x, float *grad_weight, float *grad_bias,
                   int64_t n, int64_t c, int64_t h, int64_t w, int flags) {
    const int wide = lenet_use_avx512();
    double *psum = NULL, *pdot = NULL;
    float *gm = NULL, *kk = NULL;
    if (flags & (BN_BEFORE | BN_AFTER)) {   /* BatchNorm's sums over its output gradient: per plane, per channel */
        psum = malloc(sizeof(double) * 2 * n * c); pdot = psum + n * c;
        gm = malloc(sizeof(float) * 2 * c); kk = gm + c;
        if (wide)
            backward_pass16(x, grad, arg, keep, scale, bn, weight, NULL, NULL, NULL, n, c, h, w, flags, psum, pdot);
        else
            backward_pass(x, grad, arg, keep, scale, bn, weight, NULL, NULL, NULL, n, c, h, w, flags, psum, pdot);
        bn_backward_terms(psum, pdot, bn, n, c, n * h * w, (flags & BN_TRAIN) != 0, gm, kk, grad_weight, grad_bias);
    }
    if (wide) backward_pass16(x, grad, arg, keep, scale, bn, weight, gm, kk, grad_x, n, c, h, w, flags, NULL, NULL);
    else backward_pass(x, grad, arg, keep, scale, bn, weight, gm, kk, grad_x, n, c, h, w, flags, NULL, NULL);
    free(psum); free(gm);
}
