/* Dropout's forward and backward with a mask drawn by torch's own bernoulli_ (fused.dropout_keep): one pass,
 * the product ATen's dropout computes (input * noise), the same numbers.
 */
#include <stdint.h>

/* out = x * noise, noise = keep ? scale : 0 (ATen's input * noise) */
void dropout_apply(const float *x, const uint8_t *keep, float scale, float *out, int64_t count) {
    #pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++) out[i] = x[i] * (keep[i] ? scale : 0.0f);
}
