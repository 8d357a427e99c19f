/* Decode (one token) products of 8 weight rows with one activation row, AVX-512 VNNI.
 * Header-only; nothing here is exported from libbatchcore.so.
 *
 * Batch-1 decode meets each weight block once: nothing to share across tokens, and the
 * one-row function (quant_dot.h: bc_quant_dot_*) spends most of its instructions per
 * block on scalar work (two f16 scale conversions, a broadcast, a scalar multiply-add)
 * and is bound by its single accumulator chain. Here 8 rows run side by side:
 *  - the 8 rows' block headers (d, and m for Q4_1) come in with one gather and convert
 *    as one vector: scale[r] = d_w[r]·d_a, summs[r] = fma(m[r], s_a, summs[r]);
 *  - each 512-bit integer product holds two rows: for Q4_* the 16 nibble bytes of rows
 *    a and b as [a low | b low | a high | b high] nibbles, met by the activation
 *    arranged [q0..15 | q0..15 | q16..31 | q16..31] (made once per block for all rows);
 *    for Q8_0 [a | b] met by the activation twice;
 *  - 4 independent accumulator chains.
 *
 * out[r] == bc_quant_dot_*(w + r*ldw, a, nb) bit for bit, for r < 8: per block each row's
 * eight int32 lanes are the same exact sums of 4 consecutive products as the one-row
 * kernel's maddubs+madd lanes (vpdpbusd sums u8×s8 in groups of 4; signed weights are
 * offset to unsigned and the offset's exact contribution −c·Σq starts the sum), only
 * placed in other lanes; they are converted exactly, scaled by the same float product
 * d_w·d_a, and added into the row's own lanes by the same fused multiply-add in ascending
 * block order; Q4_1's Σ m·s is the same chain of fused multiply-adds (what the one-row
 * function's `summs += m * s` compiles to); at the end each row's 8 lanes are put back
 * in the one-row kernel's order and summed by bc_quant_hsum. So a row's result does not
 * depend on whether it was computed alone, in a 4×8 tile (prefill) or here (decode).
 *
 * The gather offsets are int32: callers keep 7·ldw + 4 below 2^31. */
#ifndef BATCHCORE_QUANT_ROWS_H
#define BATCHCORE_QUANT_ROWS_H

#include "quant_dot.h"

#if defined(__x86_64__)

/* Accumulator lanes → the one-row kernel's lane order of rows 2p (low 256 bits of the
 * result) for the Q4 layout [a lo | b lo | a hi | b hi]: row a's lanes 0-3 and 8-11,
 * row b's 4-7 and 12-15. */
BC_QUANT_FN512 void bc_qrows_store_q4(__m512 acc, float *o0, float *o1, float s0, float s1) {
    const __m512i ia = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);
    bc_quant_pair_store(_mm512_permutexvar_ps(ia, acc), o0, o1, s0, s1);
}

#define BC_QROWS_STEP(p)                                                                               \
    {                                                                                                  \
        const uint8_t *b0 = w + (2 * p) * ldw + bs * i;                                                \
        const uint8_t *b1 = b0 + ldw;                                                                  \
        __m512i x;                                                                                     \
        if (fmt == 0) {                                                                                \
            x = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))), \
                                   _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);                   \
            x = _mm512_xor_si512(x, flip);                                                             \
        } else {                                                                                       \
            const int h = fmt == 1 ? 2 : 4;                                                            \
            const __m256i t = _mm256_inserti128_si256(                                                 \
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(b0 + h))),                    \
                _mm_loadu_si128((const __m128i *)(b1 + h)), 1);                                        \
            x = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(t), _mm256_srli_epi16(t, 4), 1), low4); \
        }                                                                                              \
        const __m512 sc = _mm512_permutexvar_ps(idx##p, scale);                                        \
        acc##p = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c, x, q)), acc##p);        \
    }

/* out[r] = dot(row r at w + r*ldw, activation blocks a[0 .. nb)) for r < 8.
 * fmt: 0 Q8_0, 1 Q4_0, 2 Q4_1. */
__attribute__((always_inline)) BC_QUANT_FN512 void bc_quant_rows8_avx512(
    const int fmt, const uint8_t *w, int64_t ldw, const bc_q8a_block *a, int64_t nb, float *out) {
    const int64_t bs = fmt == 0 ? 34 : (fmt == 1 ? 18 : 20);
    const __m512 z = _mm512_setzero_ps();
    __m512 acc0 = z, acc1 = z, acc2 = z, acc3 = z;
    __m256 summs = _mm256_setzero_ps();
    const __m512i zero = _mm512_setzero_si512();
    const __m512i off = _mm512_set1_epi8(fmt == 0 ? (char)0x80 : 8); /* weight offset c (u8) */
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m256i rowOffsets = _mm256_setr_epi32(0, (int)ldw, (int)(2 * ldw), (int)(3 * ldw), (int)(4 * ldw),
                                                 (int)(5 * ldw), (int)(6 * ldw), (int)(7 * ldw));
    /* scale lanes of pair p: Q8_0 [2p ×8 | 2p+1 ×8]; Q4 [2p ×4 | 2p+1 ×4 | 2p ×4 | 2p+1 ×4] */
    const __m512i idx0 = fmt == 0 ? _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
                                  : _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
    const __m512i idx1 = _mm512_add_epi32(idx0, _mm512_set1_epi32(2));
    const __m512i idx2 = _mm512_add_epi32(idx0, _mm512_set1_epi32(4));
    const __m512i idx3 = _mm512_add_epi32(idx0, _mm512_set1_epi32(6));
    /* The 8 rows are one contiguous stretch of 8·ldw bytes walked as 8 interleaved
     * streams, which the hardware prefetchers follow poorly: prefetch the stretch after
     * this one (the next 8 rows) evenly over the nb blocks. */
    const char *next = (const char *)(w + 8 * ldw);
    const int64_t lines = (8 * ldw + 63) / 64, perBlock = (lines + nb - 1) / nb;
    for (int64_t i = 0; i < nb; i++) {
        for (int64_t j = i * perBlock; j < (i + 1) * perBlock && j < lines; j++) __builtin_prefetch(next + 64 * j, 0, 3);
        __m512i q;
        if (fmt == 0) {
            q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)a[i].q));
        } else {
            const __m256i lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)a[i].q));
            const __m256i hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(a[i].q + 16)));
            q = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        }
        /* −c·Σ of each group of 4 activations: the offset's exact contribution */
        const __m512i c = fmt == 2 ? zero : _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, off, q));
        /* the 8 rows' headers: half d (and half m for Q4_1) in each dword's low (high) half */
        const __m256i hdr = _mm256_i32gather_epi32((const int *)(const void *)(w + bs * i), rowOffsets, 1);
        const __m256 scale8 = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_cvtepi32_epi16(hdr)), _mm256_set1_ps(a[i].d));
        if (fmt == 2) {
            const __m256 m8 = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(hdr, 16)));
            summs = _mm256_fmadd_ps(m8, _mm256_set1_ps(a[i].s), summs);
        }
        const __m512 scale = _mm512_castps256_ps512(scale8);
        BC_QROWS_STEP(0)
        BC_QROWS_STEP(1)
        BC_QROWS_STEP(2)
        BC_QROWS_STEP(3)
    }
    float sm[8];
    _mm256_storeu_ps(sm, summs);
    if (fmt == 0) {
        bc_quant_pair_store(acc0, out + 0, out + 1, sm[0], sm[1]);
        bc_quant_pair_store(acc1, out + 2, out + 3, sm[2], sm[3]);
        bc_quant_pair_store(acc2, out + 4, out + 5, sm[4], sm[5]);
        bc_quant_pair_store(acc3, out + 6, out + 7, sm[6], sm[7]);
    } else {
        bc_qrows_store_q4(acc0, out + 0, out + 1, sm[0], sm[1]);
        bc_qrows_store_q4(acc1, out + 2, out + 3, sm[2], sm[3]);
        bc_qrows_store_q4(acc2, out + 4, out + 5, sm[4], sm[5]);
        bc_qrows_store_q4(acc3, out + 6, out + 7, sm[6], sm[7]);
    }
}
#undef BC_QROWS_STEP

BC_QUANT_FN512 void bc_quant_rows8_q8_0_avx512(const uint8_t *w, int64_t ldw, const bc_q8a_block *a, int64_t nb, float *out) {
    bc_quant_rows8_avx512(0, w, ldw, a, nb, out);
}
BC_QUANT_FN512 void bc_quant_rows8_q4_0_avx512(const uint8_t *w, int64_t ldw, const bc_q8a_block *a, int64_t nb, float *out) {
    bc_quant_rows8_avx512(1, w, ldw, a, nb, out);
}
BC_QUANT_FN512 void bc_quant_rows8_q4_1_avx512(const uint8_t *w, int64_t ldw, const bc_q8a_block *a, int64_t nb, float *out) {
    bc_quant_rows8_avx512(2, w, ldw, a, nb, out);
}

#endif /* __x86_64__ */
#endif
