/* Dropout's noise drawn exactly as ATen's CPU bernoulli_(1 - p) draws it, about 20x faster.
 *
 * Why: ATen's bernoulli_ with a scalar probability on a float tensor (its path on CPUs other than
 * Intel's with MKL... and, in torch 2.x, every CPU) draws element after element from torch's mt19937:
 * two 32-bit words per element into a 53-bit uniform double, compared with the probability. That takes
 * 2 ms for c3's 128x16x10x10 activation, more than the rest of the dropout layer. The same stream here:
 * the generator's state comes from torch.get_rng_state() (CPUGeneratorImplState: mt19937's 624 words as
 * uint64 from byte 24, `left` at byte 8, `next` at byte 16), the twist and the tempering run four words
 * at a time, the compare on integers (x53 < threshold = ceil(q * 2^53) is x53 * 2^-53 < q), and the
 * state goes back by torch.set_rng_state(). lenet_lib checks once per process that this gives torch's
 * numbers and torch's state after (fused.py); if not, torch's own bernoulli_ draws.
 */
#include <stdint.h>
#include <string.h>
#include <emmintrin.h>

#define MT_N 624
#define MT_M 397

static inline uint32_t mix(uint32_t u, uint32_t v) {
    return (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
}

static void twist(uint32_t *s) {   /* mt19937's next_state; loops of independent words, vectorized by gcc */
    int i = 0;
    for (; i < MT_N - MT_M; i++) s[i] = s[i + MT_M] ^ mix(s[i], s[i + 1]);
    for (; i < MT_N - 1; i++) s[i] = s[i + MT_M - MT_N] ^ mix(s[i], s[i + 1]);
    s[MT_N - 1] = s[MT_M - 1] ^ mix(s[MT_N - 1], s[0]);
}

static inline uint32_t temper(uint32_t y) {
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

static inline int below(uint32_t hi, uint32_t lo, uint64_t threshold) {
    return ((((uint64_t)hi << 32) | lo) & ((1ull << 53) - 1)) < threshold;
}

/* four elements from eight words (hi, lo pairs): 1 where (hi & 2^21-1) : lo < threshold */
static inline void below4(const uint32_t *wd, __m128i th, __m128i tl, uint8_t *out) {
    const __m128i flip = _mm_set1_epi32((int)0x80000000u), mask21 = _mm_set1_epi32((1 << 21) - 1);
    __m128 a = _mm_castsi128_ps(_mm_loadu_si128((const __m128i *)wd));
    __m128 b = _mm_castsi128_ps(_mm_loadu_si128((const __m128i *)(wd + 4)));
    __m128i hi = _mm_and_si128(_mm_castps_si128(_mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), mask21);
    __m128i lo = _mm_xor_si128(_mm_castps_si128(_mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), flip);
    __m128i less = _mm_or_si128(_mm_cmplt_epi32(hi, th),
                                _mm_and_si128(_mm_cmpeq_epi32(hi, th), _mm_cmplt_epi32(lo, tl)));
    less = _mm_and_si128(less, _mm_set1_epi32(1));
    __m128i b16 = _mm_packs_epi32(less, less);
    int32_t b8 = _mm_cvtsi128_si32(_mm_packus_epi16(b16, b16));
    memcpy(out, &b8, 4);
}

/* keep[0..count): 1 where bernoulli_(q) draws 1, threshold = ceil(q * 2^53); advances the state bytes */
void bernoulli_keep(uint8_t *state_bytes, uint8_t *keep, int64_t count, uint64_t threshold) {
    uint32_t s[MT_N], words[MT_N + 1];
    int32_t left; uint64_t next, wide[MT_N];
    memcpy(&left, state_bytes + 8, 4); memcpy(&next, state_bytes + 16, 8); memcpy(wide, state_bytes + 24, sizeof wide);
    for (int i = 0; i < MT_N; i++) s[i] = (uint32_t)wide[i];
    const __m128i th = _mm_set1_epi32((int)(threshold >> 32));
    const __m128i tl = _mm_set1_epi32((int)((uint32_t)threshold ^ 0x80000000u));
    int64_t e = 0;
    int carry = 0;   /* words[0] holds a hi word left over from the previous block */
    while (e < count) {
        if (left == 1) { twist(s); left = MT_N + 1; next = 0; }   /* as mt19937's operator(): --left == 0 */
        int64_t want = 2 * (count - e) - carry, take = left - 1 < want ? left - 1 : want;
        for (int64_t t = 0; t < take; t++) words[carry + t] = temper(s[next + t]);
        next += take; left -= (int32_t)take;
        int64_t have = carry + take, t = 0;
        for (; t + 8 <= have; t += 8, e += 4) below4(words + t, th, tl, keep + e);
        for (; t + 2 <= have; t += 2) keep[e++] = (uint8_t)below(words[t], words[t + 1], threshold);
        carry = (int)(have - t);
        if (carry) words[0] = words[t];
    }
    for (int i = 0; i < MT_N; i++) wide[i] = s[i];
    memcpy(state_bytes + 8, &left, 4); memcpy(state_bytes + 16, &next, 8); memcpy(state_bytes + 24, wide, sizeof wide);
}

/* out = x * noise, noise = keep ? scale : 0 (ATen's input * noise) */
void dropout_apply(const float *x, const uint8_t *keep, float scale, float *out, int64_t count) {
    #pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++) out[i] = x[i] * (keep[i] ? scale : 0.0f);
}
