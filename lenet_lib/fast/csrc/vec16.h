/* 16-float vectors for conv1.c and conv3.c: gcc's vector extension, one build per instruction set. */
#ifndef LENET_VEC16_H
#define LENET_VEC16_H
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
#define INLINE static inline __attribute__((always_inline))

/* compiled for AVX-512, AVX2 and the baseline x86-64; the loader picks the best the CPU has */
#if defined(__linux__) && defined(__GNUC__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

INLINE v16 load16(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }
INLINE void store16(float *p, v16 v) { memcpy(p, &v, sizeof v); }
#endif
