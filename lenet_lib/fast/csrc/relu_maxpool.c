/* relu(max_pool2d(x, 2)) for LeNet-5's training on CPU, and its gradient, in one pass each.
 *
 * Why: on a 2-core CPU, ReLU and max-pool take about a quarter of a LeNet-5 training step as separate
 * PyTorch ops (each reads and writes a whole activation). Fused, forward and backward read and write
 * each tensor once. Numbers are the same as torch.relu followed by F.max_pool2d, bit for bit: max-pool
 * commutes with ReLU, the window is scanned as ATen does it, and ReLU passes NaN as torch does.
 *
 * Layout: `planes` contiguous h x w float planes (NCHW), 2x2 windows with stride 2, floor mode.
 * arg[o] says where output o's gradient goes: 0..3 for the window's element in row-major order, 4 for
 * nowhere (the window's maximum is <= 0, so ReLU blocks the gradient).
 * AVX-512 (where the CPU has it) takes up to 16 windows of a row at once, masked: every LeNet-5 row (4 to
 * 16 windows) is one step, with no leftover windows. What it buys: SSE2's four windows at a time cost
 * 0.7 ns per input element (compute-bound), about a tenth of a training step for c1's maps alone.
 * Elsewhere SSE2 (every x86-64 CPU) handles four windows at a time, the last one to three one by one.
 * Both give the same numbers. Planes are split over OpenMP threads (torch's own libgomp when torch is
 * loaded first, so no second thread pool).
 */
#include <stdint.h>
#include <string.h>
#include <emmintrin.h>
#include "pool16.h"

/* 1: the SSE2 paths even on AVX-512 CPUs, here and in conv_tail.c (the tests compare both) */
int lenet_sse2_only = 0;

int lenet_use_avx512(void) {
#if defined(__GNUC__) && defined(__x86_64__)
    return !lenet_sse2_only && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
           && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

static inline void window_scalar(const float *r0, const float *r1, float *o, uint8_t *a) {
    /* ATen's max-pool rule: scan in row-major order, take v when v > max so far or v is NaN */
    float m = r0[0]; int k = 0, t;
    float v = r0[1]; t = v > m || v != v; m = t ? v : m; k = t ? 1 : k;
    v = r1[0];       t = v > m || v != v; m = t ? v : m; k = t ? 2 : k;
    v = r1[1];       t = v > m || v != v; m = t ? v : m; k = t ? 3 : k;
    int pass = !(m <= 0);   /* relu passes value and gradient unless its input <= 0 (NaN passes) */
    *o = pass ? m : 0.0f; *a = (uint8_t)(pass ? k : 4);
}

static inline __m128 select_ps(__m128 mask, __m128 a, __m128 b) {   /* mask ? a : b */
    return _mm_or_ps(_mm_and_ps(mask, a), _mm_andnot_ps(mask, b));
}


#ifdef HAVE_POOL16
/* one output row, 16 windows at a time: the same rule as window_scalar, lane by lane */
AVX512 static void forward_row_avx512(const float *r0, const float *r1, float *o, uint8_t *a, int64_t wo) {
    for (int64_t j = 0; j < wo; j += 16) {
        const int64_t n = wo - j < 16 ? wo - j : 16;
        __m512 v[4];
        __m512i k;
        load_corners16(r0 + 2 * j, r1 + 2 * j, n, v);
        __m512 m = max_corner16(v, &k);
        __mmask16 pass = _mm512_cmp_ps_mask(m, _mm512_setzero_ps(), _CMP_NLE_UQ);   /* not <= 0: NaN passes */
        _mm512_mask_storeu_ps(o + j, first_lanes(n), _mm512_maskz_mov_ps(pass, m));
        _mm512_mask_cvtepi32_storeu_epi8(a + j, first_lanes(n), _mm512_mask_mov_epi32(_mm512_set1_epi32(4), pass, k));
    }
}

/* one output row's gradient into its two input rows, 16 windows at a time */
AVX512 static void backward_row_avx512(const float *g, const uint8_t *a, float *r0, float *r1, int64_t wo) {
    for (int64_t j = 0; j < wo; j += 16) {
        const int64_t n = wo - j < 16 ? wo - j : 16;
        __m512 dv[4];
        corner_grads16(g + j, a + j, n, dv);
        store_corners16(r0 + 2 * j, r1 + 2 * j, n, dv);
    }
}

static void forward_avx512(const float *x, float *out, uint8_t *arg, int64_t planes, int64_t h, int64_t w) {
    const int64_t ho = h / 2, wo = w / 2;
    #pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++)
        for (int64_t i = 0; i < ho; i++) {
            const float *r0 = x + (p * h + 2 * i) * w;
            forward_row_avx512(r0, r0 + w, out + (p * ho + i) * wo, arg + (p * ho + i) * wo, wo);
        }
}

static void backward_avx512(const float *grad, const uint8_t *arg, float *grad_in, int64_t planes, int64_t h,
                            int64_t w) {
    const int64_t ho = h / 2, wo = w / 2;
    #pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++)
        for (int64_t i = 0; i < ho; i++) {
            float *r0 = grad_in + (p * h + 2 * i) * w;
            backward_row_avx512(grad + (p * ho + i) * wo, arg + (p * ho + i) * wo, r0, r0 + w, wo);
        }
}
#else
static void forward_avx512(const float *x, float *out, uint8_t *arg, int64_t planes, int64_t h, int64_t w) {}
static void backward_avx512(const float *grad, const uint8_t *arg, float *grad_in, int64_t planes, int64_t h,
                            int64_t w) {}
#endif

void relu_maxpool2x2_forward(const float *x, float *out, uint8_t *arg, int64_t planes, int64_t h,
                             int64_t w) {
    if (lenet_use_avx512()) { forward_avx512(x, out, arg, planes, h, w); return; }
    const int64_t ho = h / 2, wo = w / 2;
    const __m128 zero = _mm_setzero_ps();
    const __m128 k1 = _mm_castsi128_ps(_mm_set1_epi32(1)), k2 = _mm_castsi128_ps(_mm_set1_epi32(2));
    const __m128 k3 = _mm_castsi128_ps(_mm_set1_epi32(3)), k4 = _mm_castsi128_ps(_mm_set1_epi32(4));
    #pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++)
        for (int64_t i = 0; i < ho; i++) {
            const float *r0 = x + (p * h + 2 * i) * w, *r1 = r0 + w;
            float *o = out + (p * ho + i) * wo;
            uint8_t *a = arg + (p * ho + i) * wo;
            int64_t j = 0;
            for (; j + 4 <= wo; j += 4) {   /* four windows: split even and odd columns of both rows */
                __m128 t0 = _mm_loadu_ps(r0 + 2 * j), t1 = _mm_loadu_ps(r0 + 2 * j + 4);
                __m128 b0 = _mm_loadu_ps(r1 + 2 * j), b1 = _mm_loadu_ps(r1 + 2 * j + 4);
                __m128 x00 = _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(2, 0, 2, 0));
                __m128 x01 = _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 1, 3, 1));
                __m128 x10 = _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0));
                __m128 x11 = _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1));
                __m128 m = x00, k = zero, take;
                take = _mm_or_ps(_mm_cmpgt_ps(x01, m), _mm_cmpunord_ps(x01, x01));
                m = select_ps(take, x01, m); k = select_ps(take, k1, k);
                take = _mm_or_ps(_mm_cmpgt_ps(x10, m), _mm_cmpunord_ps(x10, x10));
                m = select_ps(take, x10, m); k = select_ps(take, k2, k);
                take = _mm_or_ps(_mm_cmpgt_ps(x11, m), _mm_cmpunord_ps(x11, x11));
                m = select_ps(take, x11, m); k = select_ps(take, k3, k);
                __m128 pass = _mm_cmpnle_ps(m, zero);
                _mm_storeu_ps(o + j, _mm_and_ps(pass, m));
                __m128i k32 = _mm_castps_si128(select_ps(pass, k, k4));
                __m128i k16 = _mm_packs_epi32(k32, k32);
                int32_t k8 = _mm_cvtsi128_si32(_mm_packus_epi16(k16, k16));
                memcpy(a + j, &k8, 4);
            }
            for (; j < wo; j++) window_scalar(r0 + 2 * j, r1 + 2 * j, o + j, a + j);
        }
}

void relu_maxpool2x2_backward(const float *grad, const uint8_t *arg, float *grad_in, int64_t planes, int64_t h,
                              int64_t w) {
    const int64_t ho = h / 2, wo = w / 2;
    if ((h | w) & 1) memset(grad_in, 0, sizeof(float) * planes * h * w);   /* floor mode: leftovers get 0 */
    if (lenet_use_avx512()) { backward_avx512(grad, arg, grad_in, planes, h, w); return; }
    const __m128i zero = _mm_setzero_si128();
    const __m128i c1 = _mm_set1_epi32(1), c2 = _mm_set1_epi32(2), c3 = _mm_set1_epi32(3);
    #pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++)
        for (int64_t i = 0; i < ho; i++) {
            const float *g = grad + (p * ho + i) * wo;
            const uint8_t *a = arg + (p * ho + i) * wo;
            float *r0 = grad_in + (p * h + 2 * i) * w, *r1 = r0 + w;
            int64_t j = 0;
            for (; j + 4 <= wo; j += 4) {
                __m128 gj = _mm_loadu_ps(g + j);
                int32_t k8; memcpy(&k8, a + j, 4);
                __m128i k = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(k8), zero), zero);
                __m128 v00 = _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(k, zero)), gj);
                __m128 v01 = _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(k, c1)), gj);
                __m128 v10 = _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(k, c2)), gj);
                __m128 v11 = _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(k, c3)), gj);
                _mm_storeu_ps(r0 + 2 * j, _mm_unpacklo_ps(v00, v01));
                _mm_storeu_ps(r0 + 2 * j + 4, _mm_unpackhi_ps(v00, v01));
                _mm_storeu_ps(r1 + 2 * j, _mm_unpacklo_ps(v10, v11));
                _mm_storeu_ps(r1 + 2 * j + 4, _mm_unpackhi_ps(v10, v11));
            }
            for (; j < wo; j++) {
                float gv = g[j]; int k = a[j];
                r0[2 * j] = k == 0 ? gv : 0.0f; r0[2 * j + 1] = k == 1 ? gv : 0.0f;
                r1[2 * j] = k == 2 ? gv : 0.0f; r1[2 * j + 1] = k == 3 ? gv : 0.0f;
            }
        }
}
