/* AVX-512 pieces shared by relu_maxpool.c and conv_tail.c: a row's 2x2 windows, up to 16 at a time.
 * Masked loads and stores take a row of any width in one step (LeNet-5's rows have 4 to 16 windows), so
 * there are no leftover windows to do one by one. Functions carry the AVX-512 target themselves: the
 * files are compiled for the baseline x86-64 and call them only when lenet_use_avx512() says so. */
#ifndef LENET_POOL16_H
#define LENET_POOL16_H
int lenet_use_avx512(void);   /* relu_maxpool.c: the CPU has AVX-512 and the tests have not asked for SSE2 */
#if defined(__GNUC__) && defined(__x86_64__)
#define HAVE_POOL16 1
#include <stdint.h>
#include <immintrin.h>

#define AVX512_TARGET "avx512f,avx512bw,avx512vl,fma"
#define AVX512 __attribute__((target(AVX512_TARGET)))
#define INLINE16 static inline __attribute__((always_inline, target(AVX512_TARGET)))


/* lanes [0, n) of a 16-lane mask (none for n <= 0) */
INLINE16 __mmask16 first_lanes(int64_t n) { return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* even and odd elements of 32: left and right columns of 16 windows */
INLINE16 __m512i even_lanes(void) { return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30); }
INLINE16 __m512i odd_lanes(void) { return _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31); }

/* n windows' corners from rows r0, r1 (2n floats each, nothing read beyond): v[q], q in row-major order */
INLINE16 void load_corners16(const float *r0, const float *r1, int64_t n, __m512 v[4]) {
    const __mmask16 lo = first_lanes(2 * n), hi = first_lanes(2 * n - 16);
    __m512 t0 = _mm512_maskz_loadu_ps(lo, r0), t1 = _mm512_maskz_loadu_ps(hi, r0 + 16);
    __m512 b0 = _mm512_maskz_loadu_ps(lo, r1), b1 = _mm512_maskz_loadu_ps(hi, r1 + 16);
    v[0] = _mm512_permutex2var_ps(t0, even_lanes(), t1); v[1] = _mm512_permutex2var_ps(t0, odd_lanes(), t1);
    v[2] = _mm512_permutex2var_ps(b0, even_lanes(), b1); v[3] = _mm512_permutex2var_ps(b0, odd_lanes(), b1);
}

/* the inverse: v[q] of n windows written back to rows r0, r1 (2n floats each) */
INLINE16 void store_corners16(float *r0, float *r1, int64_t n, const __m512 v[4]) {
    const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __mmask16 lo = first_lanes(2 * n), hi = first_lanes(2 * n - 16);
    _mm512_mask_storeu_ps(r0, lo, _mm512_permutex2var_ps(v[0], first, v[1]));
    _mm512_mask_storeu_ps(r0 + 16, hi, _mm512_permutex2var_ps(v[0], second, v[1]));
    _mm512_mask_storeu_ps(r1, lo, _mm512_permutex2var_ps(v[2], first, v[3]));
    _mm512_mask_storeu_ps(r1 + 16, hi, _mm512_permutex2var_ps(v[2], second, v[3]));
}

/* ATen's max-pool rule over the four corners: take v when v > max so far or v is NaN; k: which corner */
INLINE16 __m512 max_corner16(const __m512 v[4], __m512i *k) {
    __m512 m = v[0];
    *k = _mm512_setzero_si512();
    for (int q = 1; q < 4; q++) {
        __mmask16 take = _mm512_cmp_ps_mask(v[q], m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v[q], v[q], _CMP_UNORD_Q);
        m = _mm512_mask_mov_ps(m, take, v[q]);
        *k = _mm512_mask_mov_epi32(*k, take, _mm512_set1_epi32(q));
    }
    return m;
}

/* the output gradient g of n windows sent to the corner arg says (0..3; 4 or more: nowhere) */
INLINE16 void corner_grads16(const float *g, const uint8_t *arg, int64_t n, __m512 dv[4]) {
    const __mmask16 in = first_lanes(n);
    __m512 gv = _mm512_maskz_loadu_ps(in, g);
    __m512i k = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(in, arg));
    for (int q = 0; q < 4; q++) dv[q] = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(q)), gv);
}
#endif
#endif
