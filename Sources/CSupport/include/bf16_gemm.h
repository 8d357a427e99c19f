/* bf16 products for training's mixed-precision mode (AVX-512 BF16, chosen at run time by
 * bc_internal_has_avx512_bf16). Header-only; nothing here is exported.
 *
 * Operands are float32 rounded to bf16 (round to nearest even, vcvtne2ps2bf16: input
 * denormals read as zero) and stored as PAIRS: one uint32 holds the bf16 of reduction
 * steps 2p (low half) and 2p + 1 (high half) of one row or column. vdpbf16ps multiplies
 * two pairs lane by lane (the products of bf16 values are exact in float32) and adds both
 * to a float32 accumulator, so C is accumulated in float32 in ascending pair order.
 * A reduction of odd length has a last pair whose high half is 0 in both operands.
 *
 * Layouts (p = pair index, counted from the block's first step):
 *   A micro-panel, 8 rows:      a[p*8 + q]  = pair of A(i + q, 2p), A(i + q, 2p + 1)
 *   B panel, 32 columns:        b[p*32 + j] = pair of B(2p, j), B(2p + 1, j)
 * Rows q >= r and columns j >= lanes are written as 0 (their results are dropped). */
#ifndef BATCHCORE_BF16_GEMM_H
#define BATCHCORE_BF16_GEMM_H

#include <stdint.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

/* 1 when the CPU and OS support AVX512F, BW, VL and BF16 (zmm state enabled). */
static inline int bc_internal_has_avx512_bf16(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xE6u) != 0xE6u) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const int f = (b >> 16) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return f && bw && vl && ((a >> 5) & 1);
}

#define BC_BF16_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma"))) static inline

/* 16 floats -> 16 bf16 (RNE). */
BC_BF16_FN __m256i bc_internal_bf16_cvt16(__m512 x) { return (__m256i)_mm512_cvtneps_pbh(x); }

/* Pairs of rows s0 and s1 (16 columns each): out[j] = bf16(s0[j]) | bf16(s1[j]) << 16. */
BC_BF16_FN void bc_internal_bf16_pair16(__m512 r0, __m512 r1, uint32_t *out) {
    const __m256i b0 = bc_internal_bf16_cvt16(r0), b1 = bc_internal_bf16_cvt16(r1);
    const __m256i lo = _mm256_unpacklo_epi16(b0, b1), hi = _mm256_unpackhi_epi16(b0, b1);
    _mm256_storeu_si256((__m256i *)out, _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256((__m256i *)(out + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
}

/* Loads n <= 16 floats (0 past n). */
BC_BF16_FN __m512 bc_internal_bf16_load(const float *p, int n) {
    if (n >= 16) return _mm512_loadu_ps(p);
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
}

/* B panel from rows: dst[p*32 + j] = pair(src[(2p)*ld + j], src[(2p+1)*ld + j]) for
 * p < (count + 1) / 2, j < lanes (<= 32); 0 past lanes and for step 2p + 1 == count. */
BC_BF16_FN void bc_internal_bf16_pack_panel(const float *src, long ld, long count, int lanes, uint32_t *dst) {
    const long pairs = (count + 1) / 2;
    const int n0 = lanes < 16 ? lanes : 16, n1 = lanes > 16 ? lanes - 16 : 0;
    const __m512 zero = _mm512_setzero_ps();
    for (long p = 0; p < pairs; p++) {
        const float *r0 = src + 2 * p * ld, *r1 = r0 + ld;
        const int has1 = 2 * p + 1 < count;
        bc_internal_bf16_pair16(bc_internal_bf16_load(r0, n0), has1 ? bc_internal_bf16_load(r1, n0) : zero, dst + p * 32);
        if (n1 > 0) {
            bc_internal_bf16_pair16(bc_internal_bf16_load(r0 + 16, n1), has1 ? bc_internal_bf16_load(r1 + 16, n1) : zero,
                                    dst + p * 32 + 16);
        } else {
            _mm512_storeu_si512((void *)(dst + p * 32 + 16), _mm512_setzero_si512());
        }
    }
}

/* Rows contiguous in the reduction (x[i][s]), interleaved `width` rows per pair:
 * dst[p*width + q] = pair(src[q*ld + 2p], src[q*ld + 2p + 1]) for q < r (<= width),
 * p < (count + 1) / 2; 0 for q >= r and the missing step of an odd count. width 8: an A
 * micro-panel; width 32: a forward weight panel (rows = output features). Steps from
 * `from` (even) on only, rows q0 <= q < q1 only; bc_internal_bf16_interleave_rows runs
 * the whole blocks of 8 rows x 32 steps through bc_internal_bf16_interleave8 first. */
BC_BF16_FN void bc_internal_bf16_interleave_tail(const float *src, long ld, int r, int q0, int q1, long from, long count,
                                                  int width, uint32_t *dst) {
    const long pairs = (count + 1) / 2;
    for (int q = q0; q < q1; q++) {
        uint32_t *d = dst + q;
        if (q >= r) {
            for (long p = from / 2; p < pairs; p++) d[p * width] = 0;
            continue;
        }
        const float *s = src + q * ld;
        long k = from, p = from / 2;
        uint32_t tmp[16];
        for (; k + 32 <= count; k += 32) {
            const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + k + 16), _mm512_loadu_ps(s + k));
            _mm512_storeu_si512((void *)tmp, v);
            for (int u = 0; u < 16; u++) d[(p + u) * width] = tmp[u];
            p += 16;
        }
        if (k < count) {
            const long left = count - k;
            const int n0 = left < 16 ? (int)left : 16, n1 = left > 16 ? (int)(left - 16) : 0;
            const __m512 lo = bc_internal_bf16_load(s + k, n0);
            const __m512 hi = n1 > 0 ? bc_internal_bf16_load(s + k + 16, n1) : _mm512_setzero_ps();
            _mm512_storeu_si512((void *)tmp, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
            for (long u = 0; p + u < pairs; u++) d[(p + u) * width] = tmp[u];
        }
    }
}

/* 8 full rows x 32 steps (16 pairs) -> dst[p*width + q] for p < 16, q < 8 (width 8 or
 * 32): each row's 16 pairs in a register, then an 8 x 16 transpose of 32-bit words
 * (unpack 32, unpack 64, 128-bit lane shuffles and a blend). Moves the pairs only: the
 * words are the tail loop's. */
BC_BF16_FN void bc_internal_bf16_interleave8(const float *src, long ld, uint32_t *dst, int width) {
    __m512i t[8], u[8];
    for (int q = 0; q < 8; q++) {
        const float *s = src + q * ld;
        t[q] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + 16), _mm512_loadu_ps(s));
    }
    /* u[c] lane i = rows 0-3 of pair 4i + c; u[4 + c] lane i = rows 4-7. */
    for (int h = 0; h < 2; h++) {
        const __m512i a0 = _mm512_unpacklo_epi32(t[4 * h], t[4 * h + 1]), a1 = _mm512_unpackhi_epi32(t[4 * h], t[4 * h + 1]);
        const __m512i a2 = _mm512_unpacklo_epi32(t[4 * h + 2], t[4 * h + 3]), a3 = _mm512_unpackhi_epi32(t[4 * h + 2], t[4 * h + 3]);
        u[4 * h] = _mm512_unpacklo_epi64(a0, a2);
        u[4 * h + 1] = _mm512_unpackhi_epi64(a0, a2);
        u[4 * h + 2] = _mm512_unpacklo_epi64(a1, a3);
        u[4 * h + 3] = _mm512_unpackhi_epi64(a1, a3);
    }
#define BC_BF16_T8(k, i, c)                                                                              \
    do {                                                                                                 \
        const __m512i x = _mm512_shuffle_i32x4(u[c], u[(c) + 1], (i) * 0x55);                            \
        const __m512i y = _mm512_shuffle_i32x4(u[(c) + 4], u[(c) + 5], (i) * 0x55);                      \
        const __m512i z = _mm512_mask_blend_epi64((__mmask8)0xCC, x, y);                                \
        if (width == 8) {                                                                                \
            _mm512_storeu_si512((void *)(dst + (k) * 16), z);                                            \
        } else {                                                                                         \
            _mm256_storeu_si256((__m256i *)(dst + (2 * (k)) * width), _mm512_castsi512_si256(z));       \
            _mm256_storeu_si256((__m256i *)(dst + (2 * (k) + 1) * width), _mm512_extracti64x4_epi64(z, 1)); \
        }                                                                                                \
    } while (0)
    BC_BF16_T8(0, 0, 0); BC_BF16_T8(1, 0, 2); BC_BF16_T8(2, 1, 0); BC_BF16_T8(3, 1, 2);
    BC_BF16_T8(4, 2, 0); BC_BF16_T8(5, 2, 2); BC_BF16_T8(6, 3, 0); BC_BF16_T8(7, 3, 2);
#undef BC_BF16_T8
}

/* See bc_internal_bf16_interleave_tail (from = 0). */
BC_BF16_FN void bc_internal_bf16_interleave_rows(const float *src, long ld, int r, long count, int width, uint32_t *dst) {
    const int groups = (width == 8 || width == 32) ? (r < width ? r : width) / 8 : 0;
    long from = 0;
    if (groups > 0) {
        for (; from + 32 <= count; from += 32) {
            for (int g = 0; g < groups; g++) {
                bc_internal_bf16_interleave8(src + g * 8 * ld + from, ld, dst + (from / 2) * width + g * 8, width);
            }
        }
    }
    bc_internal_bf16_interleave_tail(src, ld, r, 0, 8 * groups, from, count, width, dst);
    bc_internal_bf16_interleave_tail(src, ld, r, 8 * groups, width, 0, count, width, dst);
}

/* A micro-panel from columns (A(i + q, s) = src[s*ld + q], e.g. dYᵀ): dst[p*8 + q] =
 * pair(src[(2p)*ld + q], src[(2p+1)*ld + q]) for q < r (<= 8); 0 for q >= r and the
 * missing step of an odd count. */
BC_BF16_FN void bc_internal_bf16_pack_cols(const float *src, long ld, int r, long count, uint32_t *dst) {
    const long pairs = (count + 1) / 2;
    const __mmask8 m = (__mmask8)((1u << r) - 1u);
    for (long p = 0; p < pairs; p++) {
        const float *r0 = src + 2 * p * ld;
        const __m256 a = _mm256_maskz_loadu_ps(m, r0);
        const __m256 b = 2 * p + 1 < count ? _mm256_maskz_loadu_ps(m, r0 + ld) : _mm256_setzero_ps();
        const __m128i ba = (__m128i)_mm256_cvtneps_pbh(a), bb = (__m128i)_mm256_cvtneps_pbh(b);
        _mm_storeu_si128((__m128i *)(dst + p * 8), _mm_unpacklo_epi16(ba, bb));
        _mm_storeu_si128((__m128i *)(dst + p * 8 + 4), _mm_unpackhi_epi16(ba, bb));
    }
}

/* 8 rows x 32 columns of C over `pairs` pairs: c[q*ldc + j] (=|+=) sum over p of
 * a[p*8+q] . b[p*32+j] (two bf16 products per pair), one vdpbf16ps per pair in ascending
 * p, starting from C (load != 0) or 0. */
BC_BF16_FN void bc_internal_bf16_kernel8x32(const uint32_t *a, const uint32_t *b, long pairs, float *c, long ldc,
                                            int load) {
    __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
    if (load) {
        c00 = _mm512_loadu_ps(c); c01 = _mm512_loadu_ps(c + 16);
        c10 = _mm512_loadu_ps(c + ldc); c11 = _mm512_loadu_ps(c + ldc + 16);
        c20 = _mm512_loadu_ps(c + 2 * ldc); c21 = _mm512_loadu_ps(c + 2 * ldc + 16);
        c30 = _mm512_loadu_ps(c + 3 * ldc); c31 = _mm512_loadu_ps(c + 3 * ldc + 16);
        c40 = _mm512_loadu_ps(c + 4 * ldc); c41 = _mm512_loadu_ps(c + 4 * ldc + 16);
        c50 = _mm512_loadu_ps(c + 5 * ldc); c51 = _mm512_loadu_ps(c + 5 * ldc + 16);
        c60 = _mm512_loadu_ps(c + 6 * ldc); c61 = _mm512_loadu_ps(c + 6 * ldc + 16);
        c70 = _mm512_loadu_ps(c + 7 * ldc); c71 = _mm512_loadu_ps(c + 7 * ldc + 16);
    } else {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = _mm512_setzero_ps();
        c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = _mm512_setzero_ps();
    }
    for (long p = 0; p < pairs; p++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)b);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(b + 16));
        __m512bh x;
        x = (__m512bh)_mm512_set1_epi32((int)a[0]); c00 = _mm512_dpbf16_ps(c00, x, b0); c01 = _mm512_dpbf16_ps(c01, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[1]); c10 = _mm512_dpbf16_ps(c10, x, b0); c11 = _mm512_dpbf16_ps(c11, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[2]); c20 = _mm512_dpbf16_ps(c20, x, b0); c21 = _mm512_dpbf16_ps(c21, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[3]); c30 = _mm512_dpbf16_ps(c30, x, b0); c31 = _mm512_dpbf16_ps(c31, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[4]); c40 = _mm512_dpbf16_ps(c40, x, b0); c41 = _mm512_dpbf16_ps(c41, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[5]); c50 = _mm512_dpbf16_ps(c50, x, b0); c51 = _mm512_dpbf16_ps(c51, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[6]); c60 = _mm512_dpbf16_ps(c60, x, b0); c61 = _mm512_dpbf16_ps(c61, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[7]); c70 = _mm512_dpbf16_ps(c70, x, b0); c71 = _mm512_dpbf16_ps(c71, x, b1);
        a += 8;
        b += 32;
    }
    _mm512_storeu_ps(c, c00); _mm512_storeu_ps(c + 16, c01);
    _mm512_storeu_ps(c + ldc, c10); _mm512_storeu_ps(c + ldc + 16, c11);
    _mm512_storeu_ps(c + 2 * ldc, c20); _mm512_storeu_ps(c + 2 * ldc + 16, c21);
    _mm512_storeu_ps(c + 3 * ldc, c30); _mm512_storeu_ps(c + 3 * ldc + 16, c31);
    _mm512_storeu_ps(c + 4 * ldc, c40); _mm512_storeu_ps(c + 4 * ldc + 16, c41);
    _mm512_storeu_ps(c + 5 * ldc, c50); _mm512_storeu_ps(c + 5 * ldc + 16, c51);
    _mm512_storeu_ps(c + 6 * ldc, c60); _mm512_storeu_ps(c + 6 * ldc + 16, c61);
    _mm512_storeu_ps(c + 7 * ldc, c70); _mm512_storeu_ps(c + 7 * ldc + 16, c71);
}

/* Rounds n floats to bf16 and back (RNE, denormals to zero), as the packers do: the
 * values a bf16 product reads. For references. */
BC_BF16_FN void bc_internal_bf16_round(const float *src, float *dst, long n) {
    long i = 0;
    for (; i < n; i += 16) {
        const int k = n - i < 16 ? (int)(n - i) : 16;
        const __m256i b = bc_internal_bf16_cvt16(bc_internal_bf16_load(src + i, k));
        const __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
        _mm512_mask_storeu_ps(dst + i, (__mmask16)((1u << k) - 1u), back);
    }
}

#else
static inline int bc_internal_has_avx512_bf16(void) { return 0; }
#endif
#endif
