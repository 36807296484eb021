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
 * float64 reference (tests/test_fast_layers.py: test_c3_direct_kernels_are_as_close_to_float64_as_torchs).
 * 16-float vectors in gcc's vector extension, compiled for AVX-512, AVX2 and the baseline x86-64
 * (target_clones).
 * Limits (the caller checks): taps <= 400, maps <= 16, wo <= 16, ho * wo <= 112.
 *
 * With AVX-512, the forward pass and the weight gradient of LeNet-5's c3 (5x5 taps, output rows of 8, 10
 * or 12) run direct instead (conv3_direct): the maps are the 16 lanes, and every product takes its x
 * element as an embedded broadcast from the image itself. No im2col, no positions padded to 16, and the
 * multiply-adds are the loop's only work: at batch 128, 14x14 -> 10x10, forward 1.35 -> 0.55 ms (oneDNN:
 * 0.67), weight gradient 1.19 -> 0.48 ms (oneDNN: 1.7). The forward sums the same terms in the same order as
 * the im2col path, so its numbers are the same bit for bit; so the layer takes these at every batch size.
 * Its input gradient (6 input maps, square) runs with 16 images in the lanes instead (input_grad_direct).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vec16.h"
#include "pool16.h"

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

#ifdef HAVE_POOL16
/* gcc's predictive commoning would keep x elements in registers from one tap to the next (a row's x[j + kj]
 * is the next column's x[j + 1 + kj - 1]); with 20-25 accumulators live that spills to the stack and runs
 * at a quarter of the speed. Reading each one again, as an embedded broadcast, costs nothing. */
#define NO_COMMONING __attribute__((optimize("no-predictive-commoning")))
#define DIRECT AVX512 NO_COMMONING
#define DIRECT_K 5

/* wt[r]: tap r's weights of every map as one vector (lanes past maps: 0) */
INLINE void weights_by_tap(const float *w, int64_t maps, int64_t taps, v16 *wt) {
    for (int64_t r = 0; r < taps; r++) {
        v16 v = {0};
        for (int64_t m = 0; m < maps; m++) v[m] = w[m * taps + r];
        wt[r] = v;
    }
}

/* res[p] for RB output rows from i0 (WO positions each, W = WO + 4 columns of x): bias + sum over taps of
 * wt[r] x[c][i + ki][j + kj], taps in the order r = (c * 5 + ki) * 5 + kj, as product() sums them */
INLINE void rows_forward(const float *xi, const v16 *wt, v16 bias, int64_t cin, int64_t h, int64_t i0,
                         const int RB, const int WO, v16 *res) {
    enum { K = DIRECT_K };
    const int W = WO + K - 1;
    v16 acc[RB * WO];
    for (int q = 0; q < RB * WO; q++) acc[q] = bias;
    const v16 *wr = wt;
    for (int64_t c = 0; c < cin; c++)
        for (int ki = 0; ki < K; ki++) {
            const float *xr = xi + (c * h + i0 + ki) * W;
            for (int kj = 0; kj < K; kj++, wr++)
                for (int a = 0; a < RB; a++)
                    for (int j = 0; j < WO; j++) acc[a * WO + j] += *wr * xr[a * W + j + kj];
        }
    for (int q = 0; q < RB * WO; q++) res[i0 * WO + q] = acc[q];
}

/* two output rows at a time: 16 to 24 accumulators, each tap's weights loaded once for all of them */
INLINE void image_forward(const float *xi, const v16 *wt, v16 bias, int64_t cin, int64_t h, const int WO, v16 *res) {
    const int64_t ho = h - DIRECT_K + 1;
    int64_t i0 = 0;
    for (; i0 + 2 <= ho; i0 += 2) rows_forward(xi, wt, bias, cin, h, i0, 2, WO, res);
    if (i0 < ho) rows_forward(xi, wt, bias, cin, h, i0, 1, WO, res);
}

DIRECT static void forward_direct(const float *x, const float *w, const float *b, float *out, int64_t n, int64_t cin,
                                  int64_t h, int64_t wd, int64_t maps) {
    const int64_t taps = cin * DIRECT_K * DIRECT_K, wo = wd - DIRECT_K + 1, p = (h - DIRECT_K + 1) * wo;
    v16 *wt = aligned_alloc(64, sizeof(v16) * taps), bias = {0};
    weights_by_tap(w, maps, taps, wt);
    for (int64_t m = 0; m < maps && b; m++) bias[m] = b[m];
    #pragma omp parallel
    {
        v16 *res = aligned_alloc(64, sizeof(v16) * p);   /* position-major: res[p][m] */
        #pragma omp for schedule(static)
        for (int64_t img = 0; img < n; img++) {
            const float *xi = x + img * cin * h * wd;
            if (wo == 8) image_forward(xi, wt, bias, cin, h, 8, res);
            else if (wo == 10) image_forward(xi, wt, bias, cin, h, 10, res);
            else image_forward(xi, wt, bias, cin, h, 12, res);
            float *o = out + img * maps * p;
            for (int64_t m = 0; m < maps; m++)
                for (int64_t q = 0; q < p; q++) o[m * p + q] = res[q][m];
        }
        free(res);
    }
    free(wt);
}

/* acc[ki * 5 + kj] += sum over one image's positions of gt[p] x[c][i + ki][j + kj] */
INLINE void channel_weight_grad(const float *xc, const v16 *gt, int64_t ho, const int WO, v16 *acc) {
    enum { K = DIRECT_K };
    const int W = WO + K - 1;
    for (int64_t i = 0; i < ho; i++)
        for (int j = 0; j < WO; j++) {
            const v16 gv = gt[i * WO + j];
            const float *xb = xc + i * W + j;
            for (int ki = 0; ki < K; ki++)
                for (int kj = 0; kj < K; kj++) acc[ki * K + kj] += gv * xb[ki * W + kj];
        }
}

/* Per chunk of CHUNK images: the output gradient turned position-major (gt[p]: every map's value at p),
 * then for each input channel its 25 taps' sums in 25 registers over the chunk's images and positions,
 * then to double, as the im2col path does, so the numbers do not depend on the thread count. */
DIRECT static void weight_grad_direct(const float *x, const float *grad, float *grad_w, float *grad_b, int64_t n,
                                      int64_t cin, int64_t h, int64_t wd, int64_t maps) {
    enum { K = DIRECT_K };
    const int64_t taps = cin * K * K, ho = h - K + 1, wo = wd - K + 1, p = ho * wo;
    const int64_t chunks = (n + CHUNK - 1) / CHUNK, terms = (taps + 1) * 16;   /* per chunk: [tap or bias][lane] */
    double *part = malloc(sizeof(double) * chunks * terms);
    #pragma omp parallel
    {
        v16 *gt = aligned_alloc(64, sizeof(v16) * CHUNK * p);
        #pragma omp for schedule(static)
        for (int64_t ch = 0; ch < chunks; ch++) {
            const int64_t first = ch * CHUNK, count = n - first < CHUNK ? n - first : CHUNK;
            double *pc = part + ch * terms;
            v16 bias = {0};
            for (int64_t e = 0; e < count; e++) {
                const float *g = grad + (first + e) * maps * p;
                for (int64_t q = 0; q < p; q++) {
                    v16 v = {0};
                    for (int64_t m = 0; m < maps; m++) v[m] = g[m * p + q];
                    gt[e * p + q] = v;
                    bias += v;
                }
            }
            for (int64_t c = 0; c < cin; c++) {
                v16 acc[K * K];
                for (int t = 0; t < K * K; t++) acc[t] = (v16){0};
                for (int64_t e = 0; e < count; e++) {
                    const float *xc = x + ((first + e) * cin + c) * h * wd;
                    if (wo == 8) channel_weight_grad(xc, gt + e * p, ho, 8, acc);
                    else if (wo == 10) channel_weight_grad(xc, gt + e * p, ho, 10, acc);
                    else channel_weight_grad(xc, gt + e * p, ho, 12, acc);
                }
                for (int t = 0; t < K * K; t++)
                    for (int l = 0; l < 16; l++) pc[(c * K * K + t) * 16 + l] = acc[t][l];
            }
            for (int l = 0; l < 16; l++) pc[taps * 16 + l] = bias[l];
        }
        free(gt);
    }
    for (int64_t m = 0; m < maps; m++)
        for (int64_t r = 0; r <= taps; r++) {
            double s = 0;
            for (int64_t ch = 0; ch < chunks; ch++) s += part[ch * terms + r * 16 + m];
            if (r < taps) grad_w[m * taps + r] = (float)s;
            else if (grad_b) grad_b[m] = (float)s;
        }
    free(part);
}

enum { DIRECT_CIN = 6 };   /* the input gradient's: c3's input maps */

/* dst[j * ds + i] = src[i * ss + j] for i, j < 16: a 16 x 16 tile, rows of src to columns of dst, in four
 * rounds of shuffles. Rows of src past src_rows read as 0; rows of dst past dst_rows are not written. */
INLINE16 void transpose16(const float *src, int64_t ss, int src_rows, float *dst, int64_t ds, int dst_rows) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = i < src_rows ? _mm512_loadu_ps(src + i * ss) : _mm512_setzero_ps();
    for (int i = 0; i < 8; i++) {   /* pairs of rows interleaved */
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {   /* r[4i + k], 128-bit lane m: column 4m + k of rows 4i .. 4i + 3 */
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int k = 0; k < 4; k++) {   /* then the 128-bit lanes, twice */
        t[k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);
        t[4 + k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xdd);
        t[8 + k] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
        t[12 + k] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xdd);
    }
    for (int k = 0; k < 4; k++) {
        r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);
        r[8 + k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xdd);
        r[4 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0x88);
        r[12 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0xdd);
    }
    for (int j = 0; j < dst_rows; j++) _mm512_storeu_ps(dst + j * ds, r[j]);
}

/* Row y of channel c's input gradient for 16 images at once (one per lane): sum over maps o and the taps
 * (ki, kj) that reach a row and column of g of w[o][c][ki][kj] g[o][y - ki][x - kj]. gt: g with the images
 * in the lanes. The H - 4 vectors of a row of g stay in registers across the 5 taps kj. */
INLINE16 NO_COMMONING
void row_input_grad(const __m512 *gt, const float *w, int64_t maps, int c, int y, const int H, __m512 *out) {
    enum { K = DIRECT_K };
    const int HO = H - K + 1;
    __m512 acc[H];
    for (int x = 0; x < H; x++) acc[x] = _mm512_setzero_ps();
    const int ki0 = y - HO + 1 > 0 ? y - HO + 1 : 0, ki1 = y + 1 < K ? y + 1 : K;
    for (int64_t o = 0; o < maps; o++)
        for (int ki = ki0; ki < ki1; ki++) {
            const __m512 *gr = gt + (o * HO + y - ki) * HO;
            const float *wr = w + ((o * DIRECT_CIN + c) * K + ki) * K;
            for (int kj = 0; kj < K; kj++) {
                const __m512 wv = _mm512_set1_ps(wr[kj]);
                for (int x = kj; x < kj + HO; x++) acc[x] = _mm512_fmadd_ps(wv, gr[x - kj], acc[x]);
            }
        }
    for (int x = 0; x < H; x++) out[x] = acc[x];
}

/* c3's input gradient with 16 images in the 16 lanes: every multiply-add is a term of the sum (no zero
 * padding, no lanes left idle), a weight broadcast times a vector. g goes in and grad_x comes out through
 * 16 x 16 transposes. At batch 128 on 14x14: 0.44 ms, against 1.16 ms for the GEMM and col2im below and
 * 1.3 ms for oneDNN. */
DIRECT static void input_grad_direct(const float *grad, const float *w, float *grad_x, int64_t n, int64_t h,
                                     int64_t maps) {
    const int64_t gsize = maps * (h - DIRECT_K + 1) * (h - DIRECT_K + 1), xsize = DIRECT_CIN * h * h;
    const int64_t groups = (n + 15) / 16;
    #pragma omp parallel
    {
        __m512 *gt = aligned_alloc(64, sizeof(__m512) * gsize), *xt = aligned_alloc(64, sizeof(__m512) * xsize);
        float *gtf = (float *)gt, *xtf = (float *)xt;
        #pragma omp for schedule(static)
        for (int64_t group = 0; group < groups; group++) {
            const int64_t first = group * 16;
            const int count = n - first < 16 ? (int)(n - first) : 16;   /* lanes past count: 0, never stored */
            int64_t q = 0;
            for (; q + 16 <= gsize; q += 16) transpose16(grad + first * gsize + q, gsize, count, gtf + q * 16, 16, 16);
            for (; q < gsize; q++)
                for (int l = 0; l < 16; l++) gtf[q * 16 + l] = l < count ? grad[(first + l) * gsize + q] : 0.0f;
            for (int c = 0; c < DIRECT_CIN; c++)
                for (int y = 0; y < h; y++) {
                    if (h == 14) row_input_grad(gt, w, maps, c, y, 14, xt + (c * h + y) * h);
                    else row_input_grad(gt, w, maps, c, y, 12, xt + (c * h + y) * h);
                }
            for (q = 0; q + 16 <= xsize; q += 16)
                transpose16(xtf + q * 16, 16, 16, grad_x + first * xsize + q, xsize, count);
            for (; q < xsize; q++)
                for (int l = 0; l < count; l++) grad_x[(first + l) * xsize + q] = xtf[q * 16 + l];
        }
        free(gt); free(xt);
    }
}
#endif

/* 1: the forward pass and weight gradient of this c3 run direct (AVX-512, see the top); the layer then
 * takes them at every batch size instead of oneDNN's */
int conv3_direct(int64_t k, int64_t wd, int64_t maps) {
#ifdef HAVE_POOL16
    const int64_t wo = wd - k + 1;
    return lenet_use_avx512() && k == DIRECT_K && maps <= 16 && (wo == 8 || wo == 10 || wo == 12);
#else
    (void)k; (void)wd; (void)maps;
    return 0;
#endif
}

/* x: n x cin x h x w; w: maps x cin x k x k; b: maps or NULL; out: n x maps x ho x wo */
VECTOR_CLONES
void conv3_forward(const float *x, const float *w, const float *b, float *out, int64_t n, int64_t cin, int64_t h,
                   int64_t wd, int64_t k, int64_t maps) {
#ifdef HAVE_POOL16
    if (conv3_direct(k, wd, maps)) { forward_direct(x, w, b, out, n, cin, h, wd, maps); return; }
#endif
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
#ifdef HAVE_POOL16
    if (conv3_direct(k, wd, maps) && cin == DIRECT_CIN && h == wd && (h == 14 || h == 12)) {
        input_grad_direct(grad, w, grad_x, n, h, maps);
        return;
    }
#endif
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
#ifdef HAVE_POOL16
    if (conv3_direct(k, wd, maps)) { weight_grad_direct(x, grad, grad_w, grad_b, n, cin, h, wd, maps); return; }
#endif
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
