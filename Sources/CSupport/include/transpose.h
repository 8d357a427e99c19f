/* Float block transposes and panel packing (AVX2). Header-only; nothing here is exported. */
#ifndef BATCHCORE_TRANSPOSE_H
#define BATCHCORE_TRANSPOSE_H

#if defined(__x86_64__)
#include <immintrin.h>

/* In-register 8 × 8 transpose: on return c[j] holds lane j of r[0..7] (c[j][i] = r[i][j]).
 * Unpack, shuffle and 128-bit lane permute: moves values only. */
__attribute__((target("avx2"))) static inline void bc_internal_transpose8(const __m256 r[8], __m256 c[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    c[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    c[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    c[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    c[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    c[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    c[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    c[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    c[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* dst[q*16 + k] = src[k*16 + q] for k, q < 16, as four 8 × 8 transposes. Moves values
 * only: the result is exactly the scalar loop's. */
__attribute__((target("avx2"))) static inline void bc_internal_transpose16(const float *src, float *dst) {
    for (int kb = 0; kb < 16; kb += 8) {
        for (int qb = 0; qb < 16; qb += 8) {
            const float *s = src + kb * 16 + qb;
            __m256 r[8], c[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(s + 16 * i);
            bc_internal_transpose8(r, c);
            float *d = dst + qb * 16 + kb;
            for (int j = 0; j < 8; j++) _mm256_storeu_ps(d + 16 * j, c[j]);
        }
    }
}

/* Six rows into the 6-wide micro-panel of the backward products' kernel:
 * dst[6*s + q] = src[q*ld + s] for q < 6, s < count. Eight steps at a time: the six rows'
 * eight values are transposed in registers (rows 6 and 7 repeat rows 4 and 5) and step t's
 * eight lanes stored at dst + 6t, so its two extra values land on step t + 1's first
 * slots, rewritten by the next store; the last store of all may write
 * dst[6*count .. 6*count + 1] (the caller's slack). Moves values only. */
__attribute__((target("avx2"))) static inline void bc_internal_pack6(const float *src, long ld, int count, float *dst) {
    int s = 0;
    for (; s + 8 <= count; s += 8) {
        __m256 r[8], c[8];
        for (int i = 0; i < 6; i++) r[i] = _mm256_loadu_ps(src + s + i * ld);
        r[6] = r[4];
        r[7] = r[5];
        bc_internal_transpose8(r, c);
        for (int j = 0; j < 8; j++) _mm256_storeu_ps(dst + 6 * (s + j), c[j]);
    }
    for (; s < count; s++)
        for (int q = 0; q < 6; q++) dst[6 * s + q] = src[q * ld + s];
}
#endif
#endif
