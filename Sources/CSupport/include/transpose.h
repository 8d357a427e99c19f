/* A 16 × 16 float block transpose (AVX2). Header-only; nothing here is exported. */
#ifndef BATCHCORE_TRANSPOSE_H
#define BATCHCORE_TRANSPOSE_H

#if defined(__x86_64__)
#include <immintrin.h>

/* dst[q*16 + k] = src[k*16 + q] for k, q < 16, as four 8 × 8 transposes (unpack, shuffle,
 * 128-bit lane permute). Moves values only: the result is exactly the scalar loop's. */
__attribute__((target("avx2"))) static inline void bc_internal_transpose16(const float *src, float *dst) {
    for (int kb = 0; kb < 16; kb += 8) {
        for (int qb = 0; qb < 16; qb += 8) {
            const float *s = src + kb * 16 + qb;
            const __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + 16), r2 = _mm256_loadu_ps(s + 32),
                         r3 = _mm256_loadu_ps(s + 48), r4 = _mm256_loadu_ps(s + 64), r5 = _mm256_loadu_ps(s + 80),
                         r6 = _mm256_loadu_ps(s + 96), r7 = _mm256_loadu_ps(s + 112);
            const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *d = dst + qb * 16 + kb;
            _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(d + 16, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(d + 32, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(d + 48, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(d + 64, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(d + 80, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(d + 96, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(d + 112, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
    }
}

/* Six rows into the 6-wide micro-panel of the backward products' kernel:
 * dst[6*s + q] = src[q*ld + s] for q < 6, s < count. Eight steps at a time: the six rows'
 * eight values are transposed in registers (an 8 × 8 transpose whose rows 6 and 7 repeat
 * row 5) and step t's eight lanes stored at dst + 6t, so its two extra values land on step
 * t + 1's first slots, rewritten by the next store; the last store of all may write
 * dst[6*count .. 6*count + 1] (the caller's slack). Moves values only. */
__attribute__((target("avx2"))) static inline void bc_internal_pack6(const float *src, long ld, int count, float *dst) {
    int s = 0;
    for (; s + 8 <= count; s += 8) {
        const float *p = src + s;
        const __m256 r0 = _mm256_loadu_ps(p), r1 = _mm256_loadu_ps(p + ld), r2 = _mm256_loadu_ps(p + 2 * ld),
                     r3 = _mm256_loadu_ps(p + 3 * ld), r4 = _mm256_loadu_ps(p + 4 * ld), r5 = _mm256_loadu_ps(p + 5 * ld);
        const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
        const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        const __m256 u4 = _mm256_shuffle_ps(t4, t4, 0x44), u5 = _mm256_shuffle_ps(t4, t4, 0xEE);
        const __m256 u6 = _mm256_shuffle_ps(t5, t5, 0x44), u7 = _mm256_shuffle_ps(t5, t5, 0xEE);
        float *d = dst + 6 * s;
        _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
        _mm256_storeu_ps(d + 6, _mm256_permute2f128_ps(u1, u5, 0x20));
        _mm256_storeu_ps(d + 12, _mm256_permute2f128_ps(u2, u6, 0x20));
        _mm256_storeu_ps(d + 18, _mm256_permute2f128_ps(u3, u7, 0x20));
        _mm256_storeu_ps(d + 24, _mm256_permute2f128_ps(u0, u4, 0x31));
        _mm256_storeu_ps(d + 30, _mm256_permute2f128_ps(u1, u5, 0x31));
        _mm256_storeu_ps(d + 36, _mm256_permute2f128_ps(u2, u6, 0x31));
        _mm256_storeu_ps(d + 42, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    for (; s < count; s++)
        for (int q = 0; q < 6; q++) dst[6 * s + q] = src[q * ld + s];
}
#endif
#endif
