/* LeNet-5's first convolution (c1: 1 or 3 input maps, 6 output maps, k x k kernel with k <= 5, stride
 * 1, zero padding) for training on CPU: its forward pass and its weight and bias gradients.
 *
 * Why: ATen's CPU convolution (oneDNN) is a poor fit for one input channel and 6 outputs: 0.6 ms forward
 * and 0.7-1.3 ms for the weight gradient at batch 128 (0.25 and 0.15 ms at batch 16, mostly fixed cost),
 * the largest pieces of a LeNet-5 training step and the same in every variant.
 *
 * Both use one layout: per image, x zero-padded with row stride s = w + 2 pad, and the output (or its
 * gradient) with the same stride (zeros after each row's wo values). Then every kernel offset (c, ki, kj)
 * is a shift of the flat arrays by ki * s + kj: forward, out[o][t] += w[o][c][ki][kj] * x[c][t + shift]
 * for 16 t at a time; weight gradient, grad_w[o][c][ki][kj] += sum_t g[o][t] * x[c][t + shift] (the zeros
 * after g's rows drop the products that would wrap into the next row). 16-float vectors in gcc's vector
 * extension, compiled for AVX-512, AVX2 and the baseline x86-64 (target_clones: the best the CPU has is
 * picked when the library loads); more accumulators at once where AVX-512 has 32 registers. Images split
 * over OpenMP threads. The weight gradient's sums go to double every 8 images, summed in order, so its
 * numbers do not depend on the thread count; it is more accurate than ATen's against a float64
 * reference, the forward pass as accurate (float32 sums in another order; tests/test_fast_layers.py,
 * test_conv_gradients_as_close_to_float64_as_torchs and test_c1_forward_rows_give_the_flat_paths_numbers).
 *
 * With AVX-512 and 5x5 taps the forward pass writes its accumulators straight into the output instead
 * (rows_forward): two output rows at a time, each row as two vectors, the second stored masked to the
 * row's width. The flat layout's padded rows had to be copied out afterwards, and that copy cost as much
 * as the arithmetic: 0.51 -> 0.36 ms at batch 128 (28x28), the same numbers bit for bit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vec16.h"
#include "pool16.h"

#define MAPS 6     /* output maps: c1's */
#define MAX_GROUP 4
#define CHUNK 8    /* images summed in float before their sums go to double */



/* n floats, n >= 16, in 16-float blocks (the last one overlapping): gcc would turn a plain loop into a
 * call to memcpy, which costs more than the copy for rows of 28 */
INLINE void copy_row(float *dst, const float *src, int64_t n) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) store16(dst + j, load16(src + j));
    if (j < n) store16(dst + n - 16, load16(src + n - 16));
}

/* acc[o * k * k + shift] += sum over t < len of g[o * len + t] * x[t + ki * s + kj], shift = ki * k + kj.
 * group shifts at a time, the six g vectors held in registers: 24 accumulators for group 4 (AVX-512). */
INLINE void shifted_dots(const float *g, const float *x, int64_t len, int64_t s, int64_t k, const int group,
                         v16 *acc) {
    const int64_t kk = k * k;
    for (int64_t first = 0; first < kk; first += group) {
        const int64_t count = kk - first < group ? kk - first : group;
        int64_t off[MAX_GROUP];
        for (int q = 0; q < count; q++) off[q] = (first + q) / k * s + (first + q) % k;
        v16 a[MAPS][MAX_GROUP] = {{{0}}};
        for (int64_t t = 0; t < len; t += 16) {
            v16 gv[MAPS];
            for (int o = 0; o < MAPS; o++) gv[o] = load16(g + o * len + t);
            if (count == group) {
                for (int q = 0; q < group; q++) {
                    v16 xv = load16(x + t + off[q]);
                    for (int o = 0; o < MAPS; o++) a[o][q] += gv[o] * xv;
                }
            } else {
                for (int q = 0; q < count; q++) {
                    v16 xv = load16(x + t + off[q]);
                    for (int o = 0; o < MAPS; o++) a[o][q] += gv[o] * xv;
                }
            }
        }
        for (int o = 0; o < MAPS; o++)
            for (int q = 0; q < count; q++) acc[o * kk + first + q] += a[o][q];
    }
}

/* images [first, last) into part[]: weights (MAPS x cin x k x k) then biases. xp, gp: zeroed buffers. */
INLINE void chunk_grads(const float *x, const float *grad, int64_t first, int64_t last, int64_t cin, int64_t h,
                        int64_t w, int64_t k, int64_t pad, const int group, float *xp, float *gp, v16 *acc,
                        double *part) {
    const int64_t ho = h + 2 * pad - k + 1, wo = w + 2 * pad - k + 1, s = wo + k - 1;
    const int64_t len = (ho * s + 15) / 16 * 16, xlen = (h + 2 * pad) * s + 16 + k;
    const int64_t kk = k * k, terms = MAPS * cin * kk;
    memset(acc, 0, sizeof(v16) * (terms + MAPS));
    for (int64_t img = first; img < last; img++) {
        for (int o = 0; o < MAPS; o++)
            for (int64_t i = 0; i < ho; i++)
                copy_row(gp + o * len + i * s, grad + ((img * MAPS + o) * ho + i) * wo, wo);
        for (int64_t c = 0; c < cin; c++)
            for (int64_t r = 0; r < h; r++)
                copy_row(xp + c * xlen + (r + pad) * s + pad, x + ((img * cin + c) * h + r) * w, w);
        for (int64_t c = 0; c < cin; c++) {   /* acc for input map c: [o][c][ki][kj] = [o * cin + c][ki][kj] */
            v16 tmp[MAPS * 25];   /* k <= 5 */
            memset(tmp, 0, sizeof(v16) * MAPS * kk);
            shifted_dots(gp, xp + c * xlen, len, s, k, group, tmp);
            for (int o = 0; o < MAPS; o++)
                for (int64_t t = 0; t < kk; t++) acc[(o * cin + c) * kk + t] += tmp[o * kk + t];
        }
        for (int o = 0; o < MAPS; o++)
            for (int64_t t = 0; t < len; t += 16) acc[terms + o] += load16(gp + o * len + t);
    }
    for (int64_t t = 0; t < terms + MAPS; t++) {
        double sum = 0;
        for (int l = 0; l < 16; l++) sum += acc[t][l];
        part[t] = sum;
    }
}

/* x: n x cin x h x w; grad: n x 6 x ho x wo (ho = h + 2 pad - k + 1, likewise wo); k <= 5;
 * grad_w: 6 x cin x k x k; grad_b: 6 (or NULL) */
VECTOR_CLONES
void conv_weight_grad(const float *x, const float *grad, float *grad_w, float *grad_b, int64_t n, int64_t cin,
                      int64_t h, int64_t w, int64_t k, int64_t pad) {
    const int64_t ho = h + 2 * pad - k + 1, wo = w + 2 * pad - k + 1, s = wo + k - 1;
    const int64_t len = (ho * s + 15) / 16 * 16, xlen = (h + 2 * pad) * s + 16 + k;
    const int64_t terms = MAPS * cin * k * k + MAPS, chunks = (n + CHUNK - 1) / CHUNK;
    const int wide = __builtin_cpu_supports("avx512f");
    double *part = malloc(sizeof(double) * chunks * terms);
    #pragma omp parallel
    {
        float *xp = calloc((size_t)(cin * xlen), sizeof(float)), *gp = calloc((size_t)(MAPS * len), sizeof(float));
        v16 *acc = aligned_alloc(64, sizeof(v16) * terms);
        #pragma omp for schedule(static)
        for (int64_t ch = 0; ch < chunks; ch++) {
            const int64_t first = ch * CHUNK, last = first + CHUNK < n ? first + CHUNK : n;
            if (wide) chunk_grads(x, grad, first, last, cin, h, w, k, pad, 4, xp, gp, acc, part + ch * terms);
            else chunk_grads(x, grad, first, last, cin, h, w, k, pad, 1, xp, gp, acc, part + ch * terms);
        }
        free(xp); free(gp); free(acc);
    }
    for (int64_t t = 0; t < terms; t++) {
        double sum = 0;
        for (int64_t ch = 0; ch < chunks; ch++) sum += part[ch * terms + t];
        if (t < terms - MAPS) grad_w[t] = (float)sum;
        else if (grad_b) grad_b[t - (terms - MAPS)] = (float)sum;
    }
    free(part);
}

/* One image's output: out[o][i][j] for i < ho, j < wo, from xp (cin padded planes of xlen floats). wb:
 * the weights [c][ki][kj][o] and then the biases [o], each as 16 copies (gcc builds a broadcast in the loop
 * out of 16 inserts). tmp: MAPS x len floats. tb: t-vectors per block (4 with AVX-512: 24 accumulators). */
INLINE void image_forward(const float *xp, int64_t xlen, const v16 *wb, int64_t cin, int64_t k, int64_t s,
                          int64_t ho, int64_t wo, const int tb, float *tmp, int64_t len, float *out) {
    const int64_t taps = cin * k * k;
    for (int64_t t0 = 0; t0 < len; t0 += 16 * tb) {
        v16 acc[MAPS][4];
        #pragma GCC unroll 6
        for (int o = 0; o < MAPS; o++) {
            #pragma GCC unroll 4
            for (int q = 0; q < tb; q++) acc[o][q] = wb[taps * MAPS + o];
        }
        for (int64_t c = 0; c < cin; c++)
            for (int64_t ki = 0; ki < k; ki++)
                for (int64_t kj = 0; kj < k; kj++) {
                    const float *xs = xp + c * xlen + t0 + ki * s + kj;
                    const v16 *wt = wb + ((c * k + ki) * k + kj) * MAPS;
                    v16 xv[4];
                    #pragma GCC unroll 4
                    for (int q = 0; q < tb; q++) xv[q] = load16(xs + 16 * q);
                    #pragma GCC unroll 6
                    for (int o = 0; o < MAPS; o++) {
                        v16 wv = wt[o];
                        #pragma GCC unroll 4
                        for (int q = 0; q < tb; q++) acc[o][q] += wv * xv[q];
                    }
                }
        #pragma GCC unroll 6
        for (int o = 0; o < MAPS; o++) {
            #pragma GCC unroll 4
            for (int q = 0; q < tb; q++) store16(tmp + o * len + t0 + 16 * q, acc[o][q]);
        }
    }
    for (int o = 0; o < MAPS; o++)
        for (int64_t i = 0; i < ho; i++) copy_row(out + (o * ho + i) * wo, tmp + o * len + i * s, wo);
}

#ifdef HAVE_POOL16
/* RB output rows from y0 (RB <= 2), wo in (16, 32], straight into out; the same terms in the same order as
 * image_forward. xp: padded planes as there, with 16 floats of slack after the last row. */
INLINE16 void rows_forward(const float *xp, int64_t xlen, const v16 *wb, int64_t cin, int64_t s, int64_t y0,
                           const int RB, int64_t wo, int64_t ho, float *out) {
    enum { K = 5 };
    __m512 acc[MAPS][4];
    for (int o = 0; o < MAPS; o++)
        for (int q = 0; q < 2 * RB; q++) acc[o][q] = (__m512)wb[cin * K * K * MAPS + o];
    for (int64_t c = 0; c < cin; c++)
        for (int ki = 0; ki < K; ki++)
            for (int kj = 0; kj < K; kj++) {
                const float *xr = xp + c * xlen + (y0 + ki) * s + kj;
                const v16 *wt = wb + ((c * K + ki) * K + kj) * MAPS;
                __m512 v[4];
                for (int a = 0; a < RB; a++) {
                    v[2 * a] = _mm512_loadu_ps(xr + a * s);
                    v[2 * a + 1] = _mm512_loadu_ps(xr + a * s + 16);
                }
                for (int o = 0; o < MAPS; o++)
                    for (int q = 0; q < 2 * RB; q++) acc[o][q] = _mm512_fmadd_ps((__m512)wt[o], v[q], acc[o][q]);
            }
    for (int o = 0; o < MAPS; o++)
        for (int a = 0; a < RB; a++) {
            float *row = out + (o * ho + y0 + a) * wo;
            _mm512_storeu_ps(row, acc[o][2 * a]);
            _mm512_mask_storeu_ps(row + 16, first_lanes(wo - 16), acc[o][2 * a + 1]);
        }
}

AVX512 static void forward_rows(const float *x, const v16 *wb, float *out, int64_t n, int64_t cin, int64_t h,
                                int64_t wd, int64_t pad) {
    const int64_t s = wd + 2 * pad, ho = h + 2 * pad - 4, wo = s - 4, xlen = (h + 2 * pad) * s + 16 + 4;
    #pragma omp parallel
    {
        float *xp = calloc((size_t)(cin * xlen), sizeof(float));
        #pragma omp for schedule(static)
        for (int64_t img = 0; img < n; img++) {
            for (int64_t c = 0; c < cin; c++)
                for (int64_t r = 0; r < h; r++)
                    copy_row(xp + c * xlen + (r + pad) * s + pad, x + ((img * cin + c) * h + r) * wd, wd);
            float *o = out + img * MAPS * ho * wo;
            int64_t y0 = 0;
            for (; y0 + 2 <= ho; y0 += 2) rows_forward(xp, xlen, wb, cin, s, y0, 2, wo, ho, o);
            if (y0 < ho) rows_forward(xp, xlen, wb, cin, s, y0, 1, wo, ho, o);
        }
        free(xp);
    }
}
#endif

/* x: n x cin x h x w; w: 6 x cin x k x k; b: 6 or NULL; out: n x 6 x ho x wo */
VECTOR_CLONES
void conv1_forward(const float *x, const float *w, const float *b, float *out, int64_t n, int64_t cin, int64_t h,
                   int64_t wd, int64_t k, int64_t pad) {
    const int64_t s = wd + 2 * pad, ho = h + 2 * pad - k + 1, wo = s - k + 1;
    const int tb = __builtin_cpu_supports("avx512f") ? 4 : 1;
    const int64_t len = (ho * s + 16 * tb - 1) / (16 * tb) * (16 * tb), xlen = len + k * s + k;
    const int64_t taps = cin * k * k;
    v16 *wb = aligned_alloc(64, sizeof(v16) * (taps + 1) * MAPS);
    for (int64_t t = 0; t < taps; t++)
        for (int o = 0; o < MAPS; o++)
            for (int l = 0; l < 16; l++) wb[t * MAPS + o][l] = w[o * taps + t];
    for (int o = 0; o < MAPS; o++)
        for (int l = 0; l < 16; l++) wb[taps * MAPS + o][l] = b ? b[o] : 0.0f;
#ifdef HAVE_POOL16
    if (lenet_use_avx512() && k == 5 && wo > 16 && wo <= 32) {
        forward_rows(x, wb, out, n, cin, h, wd, pad);
        free(wb);
        return;
    }
#endif
    #pragma omp parallel
    {
        float *xp = calloc((size_t)(cin * xlen), sizeof(float)), *tmp = malloc(sizeof(float) * MAPS * len);
        #pragma omp for schedule(static)
        for (int64_t img = 0; img < n; img++) {
            for (int64_t c = 0; c < cin; c++)
                for (int64_t r = 0; r < h; r++) copy_row(xp + c * xlen + (r + pad) * s + pad, x + ((img * cin + c) * h + r) * wd, wd);
            if (tb == 4) image_forward(xp, xlen, wb, cin, k, s, ho, wo, 4, tmp, len, out + img * MAPS * ho * wo);
            else image_forward(xp, xlen, wb, cin, k, s, ho, wo, 1, tmp, len, out + img * MAPS * ho * wo);
        }
        free(xp); free(tmp);
    }
    free(wb);
}
