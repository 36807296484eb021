/* LeNet-5's second convolution (c3: 6 -> 16 maps, 5x5, no padding, 14x14 -> 10x10 or 12x12 -> 8x8) for
 * training on CPU: forward pass, input gradient and weight and bias gradients.
 *
 * Why: oneDNN takes 0.29 ms (forward), 0.68 ms (input gradient, a transposed convolution) and 0.56 ms
 * (weight gradient) for c3 at batch 128, and about half of that at batch 16, mostly fixed cost.
 *
 * Per image, as small matrix products over the output positions p = i * wo + j (padded to a multiple of
 * 16, the vector width) and the taps r = (c * k + ki) * k + kj:
 *   forward         out[o][p] = b[o] + sum_r w[o][r] col[r][p],  col[r][p] = x[c][i + ki][j + kj] (im2col)
 *   input gradient  u[r][p] = sum_o w[o][r] g[o][p], then grad_x[c][i + ki][j + kj] += u[r][p] (col2im)
 *   weight gradient grad_w[o][r] = sum over images and p of g[o][p] col[r][p]
 * each an accumulator block held in registers (bigger with AVX-512's 32 registers). Images split over
 * OpenMP threads; the weight gradient's sums go to double every 8 images, summed in order, so its numbers
 * do not depend on the thread count. All three agree with ATen's to float32 rounding, as close to a
 * float64 reference (tests/test_fused_conv.py). 16-float vectors in gcc's vector extension, compiled for
 * AVX-512, AVX2 and the baseline x86-64 (target_clones).
 * Limits (the caller checks): taps <= 400, maps <= 16, wo <= 16, ho * wo <= 112.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vec16.h"

typedef int32_t i16 __attribute__((vector_size(64)));
#define MAX_MAPS 16
#define MAX_P 112    /* output positions per image, padded to 16 */
#define CHUNK 8

INLINE v16 splat(float f) { return (v16){0} + f; }

typedef struct { int64_t cin, h, w, k, maps, ho, wo, taps, p, pv, nv; } geometry;

INLINE geometry geometry_of(int64_t cin, int64_t h, int64_t w, int64_t k, int64_t maps) {
    geometry g = {cin, h, w, k, maps, h - k + 1, w - k + 1, cin * k * k, 0, 0, 0};
    g.p = g.ho * g.wo; g.pv = (g.p + 15) / 16 * 16; g.nv = g.pv / 16;
    return g;
}

/* col[r][p] for one image. xp: the image copied with 16 floats of slack (rows are read 16 at a time, past
 * their end); each 16-float store's extra lanes are overwritten by the next row's store or fall in the
 * padding (col has 16 floats of slack after its last row). */
INLINE void im2col(const float *xp, const geometry *g, float *col) {
    for (int64_t c = 0; c < g->cin; c++)
        for (int64_t ki = 0; ki < g->k; ki++)
            for (int64_t kj = 0; kj < g->k; kj++) {
                float *row = col + ((c * g->k + ki) * g->k + kj) * g->pv;
                for (int64_t i = 0; i < g->ho; i++)
                    store16(row + i * g->wo, load16(xp + (c * g->h + i + ki) * g->w + kj));
            }
}

/* acc[a][q] += sum over t < n of A[a * a_step + t * a_red] * B[t * b_red + 16 q]: A broadcast, B vectors */
INLINE void block_product(const float *A, int64_t a_step, int64_t a_red, const float *B, int64_t b_red, int64_t n,
                          const int na, const int nq, v16 acc[4][4]) {
    for (int64_t t = 0; t < n; t++) {
        v16 b[4];
        for (int q = 0; q < nq; q++) b[q] = load16(B + t * b_red + 16 * q);
        for (int a = 0; a < na; a++) {
            v16 av = splat(A[a * a_step + t * a_red]);
            for (int q = 0; q < nq; q++) acc[a][q] += av * b[q];
        }
    }
}

/* out[m][p] (m < maps, p < pv) = bias[m] + sum_t A[m * a_step + t * a_red] * B[t * b_red + p], in blocks of
 * na rows x nq vectors (4 x 4 with AVX-512, 2 x 2 otherwise) */
INLINE void product(const float *A, int64_t a_step, int64_t a_red, const float *B, int64_t b_red, int64_t n,
                    int64_t maps, int64_t nv, const float *bias, const int wide, float *out, int64_t out_step) {
    const int NA = wide ? 4 : 2, NQ = wide ? 4 : 2;
    for (int64_t m0 = 0; m0 < maps; m0 += NA)
        for (int64_t q0 = 0; q0 < nv; q0 += NQ) {
            const int na = maps - m0 < NA ? (int)(maps - m0) : NA, nq = nv - q0 < NQ ? (int)(nv - q0) : NQ;
            v16 acc[4][4];
            for (int a = 0; a < na; a++)
                for (int q = 0; q < nq; q++) acc[a][q] = splat(bias ? bias[m0 + a] : 0.0f);
            const float *Am = A + m0 * a_step, *Bq = B + 16 * q0;
            if (wide && na == 4 && nq == 4) block_product(Am, a_step, a_red, Bq, b_red, n, 4, 4, acc);
            else if (wide && na == 4 && nq == 3) block_product(Am, a_step, a_red, Bq, b_red, n, 4, 3, acc);   /* c3 */
            else if (!wide && na == 2 && nq == 2) block_product(Am, a_step, a_red, Bq, b_red, n, 2, 2, acc);
            else block_product(Am, a_step, a_red, Bq, b_red, n, na, nq, acc);   /* edges: counts at run time */
            for (int a = 0; a < na; a++)
                for (int q = 0; q < nq; q++) store16(out + (m0 + a) * out_step + 16 * (q0 + q), acc[a][q]);
        }
}

INLINE void copy_image(float *dst, const float *src, int64_t n) {   /* gcc would call memcpy for a loop */
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) store16(dst + i, load16(src + i));
    for (; i < n; i++) dst[i] = src[i];
}

/* x: n x cin x h x w; w: maps x cin x k x k; b: maps or NULL; out: n x maps x ho x wo */
VECTOR_CLONES
void conv3_forward(const float *x, const float *w, const float *b, float *out, int64_t n, int64_t cin, int64_t h,
                   int64_t wd, int64_t k, int64_t maps) {
    const geometry g = geometry_of(cin, h, wd, k, maps);
    const int wide = __builtin_cpu_supports("avx512f");
    #pragma omp parallel
    {
        float *xp = calloc((size_t)(cin * h * wd + 32), sizeof(float));
        float *col = malloc(sizeof(float) * (g.taps * g.pv + 16)), *res = malloc(sizeof(float) * maps * g.pv);
        #pragma omp for schedule(static)
        for (int64_t img = 0; img < n; img++) {
            copy_image(xp, x + img * cin * h * wd, cin * h * wd);
            im2col(xp, &g, col);
            product(w, g.taps, 1, col, g.pv, g.taps, maps, g.nv, b, wide, res, g.pv);
            for (int64_t m = 0; m < maps; m++) copy_image(out + (img * maps + m) * g.p, res + m * g.pv, g.p);
        }
        free(xp); free(col); free(res);
    }
}

/* grad_x (rows of xs floats) from u[r][p]: col2im, one grad_x row (16 columns) at a time in a register. For
 * row y, the taps (ki, kj) whose output row i = y - ki exists, in order, each u row shifted by kj with its wo
 * lanes kept. What it buys: adding each tap's rows in place (overlapping 16-float read-modify-writes, one per
 * tap and row) stalled on store-to-load forwarding; here the sums are the same, in the same order.
 * u needs slack: the shifted loads start up to k - 1 floats before a row and end up to w + 15 after. */
INLINE void col2im(const float *u, const geometry *g, float *gx, int64_t xs) {
    const int64_t k = g->k;
    for (int64_t x0 = 0; x0 < g->w; x0 += 16) {
        i16 keep[32];   /* per kj (k <= 20): lanes l with 0 <= x0 + l - kj < wo */
        for (int64_t kj = 0; kj < k; kj++)
            for (int l = 0; l < 16; l++) keep[kj][l] = (x0 + l - kj >= 0 && x0 + l - kj < g->wo) ? -1 : 0;
        for (int64_t c = 0; c < g->cin; c++)
            for (int64_t y = 0; y < g->h; y++) {
                v16 acc = (v16){0};
                for (int64_t ki = 0; ki < k; ki++) {
                    const int64_t i = y - ki;
                    if (i < 0 || i >= g->ho) continue;
                    const float *ur = u + (c * k + ki) * k * g->pv + i * g->wo + x0;
                    for (int64_t kj = 0; kj < k; kj++)
                        acc += (v16)((i16)load16(ur + kj * (g->pv - 1)) & keep[kj]);
                }
                store16(gx + (c * g->h + y) * xs + x0, acc);
            }
    }
}

/* grad: n x maps x ho x wo -> grad_x: n x cin x h x w */
VECTOR_CLONES
void conv3_input_grad(const float *grad, const float *w, float *grad_x, int64_t n, int64_t cin, int64_t h,
                      int64_t wd, int64_t k, int64_t maps) {
    const geometry g = geometry_of(cin, h, wd, k, maps);
    const int wide = __builtin_cpu_supports("avx512f");
    const int64_t xs = (wd + 15) / 16 * 16;   /* grad_x rows in whole vectors */
    #pragma omp parallel
    {
        float *gp = calloc((size_t)(maps * g.pv + 16), sizeof(float));
        /* u with slack for col2im's shifted loads: up to k - 1 < 32 floats before, a row's width after */
        float *u_mem = calloc((size_t)(g.taps * g.pv + 64 + wd + 16), sizeof(float)), *u = u_mem + 32;
        float *gx = malloc(sizeof(float) * cin * h * xs);
        #pragma omp for schedule(static)
        for (int64_t img = 0; img < n; img++) {
            for (int64_t m = 0; m < maps; m++) copy_image(gp + m * g.pv, grad + (img * maps + m) * g.p, g.p);
            product(w, 1, g.taps, gp, g.pv, maps, g.taps, g.nv, NULL, wide, u, g.pv);
            col2im(u, &g, gx, xs);
            for (int64_t c = 0; c < cin; c++)
                for (int64_t y = 0; y < h; y++)
                    copy_image(grad_x + ((img * cin + c) * h + y) * wd, gx + (c * h + y) * xs, wd);
        }
        free(gp); free(u_mem); free(gx);
    }
}

/* acc[a][b] = sum over the chunk's images and positions of g[m0 + a][p] col[r0 + b][p]: maps x taps, in
 * vectors (lane l: the positions = l mod 16) */
INLINE void weight_block(const float *gp, const float *col, int64_t count, const geometry *g, int64_t m0,
                         int64_t r0, const int nm, const int nr, v16 acc[4][6]) {
    for (int a = 0; a < nm; a++)
        for (int b = 0; b < nr; b++) acc[a][b] = (v16){0};
    for (int64_t e = 0; e < count; e++) {
        const float *gm = gp + (e * g->maps + m0) * g->pv, *cr = col + (e * g->taps + r0) * g->pv;
        for (int64_t q = 0; q < g->nv; q++) {
            v16 gv[4];
            for (int a = 0; a < nm; a++) gv[a] = load16(gm + a * g->pv + 16 * q);
            for (int b = 0; b < nr; b++) {
                v16 cv = load16(cr + b * g->pv + 16 * q);
                for (int a = 0; a < nm; a++) acc[a][b] += gv[a] * cv;
            }
        }
    }
}

/* grad_w: maps x cin x k x k; grad_b: maps (or NULL) */
VECTOR_CLONES
void conv3_weight_grad(const float *x, const float *grad, float *grad_w, float *grad_b, int64_t n, int64_t cin,
                       int64_t h, int64_t wd, int64_t k, int64_t maps) {
    const geometry g = geometry_of(cin, h, wd, k, maps);
    const int64_t chunks = (n + CHUNK - 1) / CHUNK, terms = maps * g.taps + maps;
    const int wide = __builtin_cpu_supports("avx512f");
    double *part = malloc(sizeof(double) * chunks * terms);
    #pragma omp parallel
    {
        float *xp = calloc((size_t)(cin * h * wd + 32), sizeof(float));
        float *col = calloc((size_t)(CHUNK * g.taps * g.pv + 16), sizeof(float));
        float *gp = calloc((size_t)(CHUNK * maps * g.pv), sizeof(float));   /* zeros past p: no terms */
        #pragma omp for schedule(static)
        for (int64_t ch = 0; ch < chunks; ch++) {
            const int64_t first = ch * CHUNK, count = n - first < CHUNK ? n - first : CHUNK;
            for (int64_t e = 0; e < count; e++) {
                copy_image(xp, x + (first + e) * cin * h * wd, cin * h * wd);
                im2col(xp, &g, col + e * g.taps * g.pv);
                for (int64_t m = 0; m < maps; m++)
                    copy_image(gp + (e * maps + m) * g.pv, grad + ((first + e) * maps + m) * g.p, g.p);
            }
            double *pc = part + ch * terms;
            for (int64_t m0 = 0; m0 < maps; m0 += 4)
                for (int64_t r0 = 0; r0 < g.taps; r0 += 6) {
                    const int nm = maps - m0 < 4 ? (int)(maps - m0) : 4, nr = g.taps - r0 < 6 ? (int)(g.taps - r0) : 6;
                    v16 acc[4][6];
                    if (wide && nm == 4 && nr == 6) weight_block(gp, col, count, &g, m0, r0, 4, 6, acc);
                    else weight_block(gp, col, count, &g, m0, r0, nm, nr, acc);
                    for (int a = 0; a < nm; a++)
                        for (int b = 0; b < nr; b++) {
                            double s = 0;
                            for (int l = 0; l < 16; l++) s += acc[a][b][l];
                            pc[(m0 + a) * g.taps + r0 + b] = s;
                        }
                }
            for (int64_t m = 0; m < maps; m++) {
                v16 acc = {0};
                for (int64_t e = 0; e < count; e++)
                    for (int64_t q = 0; q < g.nv; q++) acc += load16(gp + (e * maps + m) * g.pv + 16 * q);
                double s = 0;
                for (int l = 0; l < 16; l++) s += acc[l];
                pc[maps * g.taps + m] = s;
            }
        }
        free(xp); free(col); free(gp);
    }
    for (int64_t t = 0; t < terms; t++) {
        double s = 0;
        for (int64_t ch = 0; ch < chunks; ch++) s += part[ch * terms + t];
        if (t < maps * g.taps) grad_w[t] = (float)s;
        else if (grad_b) grad_b[t - maps * g.taps] = (float)s;
    }
    free(part);
}
