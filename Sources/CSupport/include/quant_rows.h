/* Decode (one token) products of 8 weight rows with one activation row, AVX-512 VNNI.
 * Header-only; nothing here is exported from libbatchcore.so.
 *
 * Batch-1 decode meets each weight block once: nothing to share across tokens, and the
 * one-row function (quant_dot.h: bc_quant_dot_*) is bound by the latency of its single
 * accumulator chain (one fused multiply-add per block, 4 cycles on this class of CPU).
 * Here 8 rows run side by side: each 512-bit accumulator holds two rows' 8-lane float
 * accumulators (lanes 0..7 row 2p, lanes 8..15 row 2p+1), the activation block is loaded
 * and its offset term computed once for all 8 rows, and the 4 accumulator chains are
 * independent.
 *
 * out[r] == bc_quant_dot_*(w + r*ldw, a, nb) bit for bit, for r < 8: per block each row's
 * int32 lanes are the same exact sums of 4 consecutive products as the one-row kernel's
 * maddubs+madd (vpdpbusd sums u8×s8 in groups of 4; signed weights are offset to unsigned
 * and the offset's exact contribution −c·Σq starts the sum), converted exactly, scaled by
 * the same float product d_w·d_a, and added into the same lane by the same fused
 * multiply-add, in ascending block order; Q4_1's Σ m·s runs in the same scalar order
 * (the one-row function's `summs += m * s` compiles to a fused multiply-add, done here
 * explicitly); the lanes are summed by bc_quant_hsum. So a row's result does not
 * depend on whether it was computed alone, in a 4×8 tile (prefill) or here (decode). */
#ifndef BATCHCORE_QUANT_ROWS_H
#define BATCHCORE_QUANT_ROWS_H

#include "quant_dot.h"

#if defined(__x86_64__)

/* Two rows' 32 weight values of one block as u8 (Q4_*: nibbles; Q8_0: q + 128) in the two
 * 256-bit halves, element order as bc_quant_nibbles / the 32 bytes of a Q8_0 block. */
#define BC_QROWS_PAIR(fmt, b0, b1, flip)                                                               \
    ((fmt) == 0 ? _mm512_inserti64x4(                                                                  \
                      _mm512_castsi256_si512(_mm256_xor_si256(_mm256_loadu_si256((const __m256i *)((b0) + 2)), flip)), \
                      _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)((b1) + 2)), flip), 1)      \
                : _mm512_inserti64x4(_mm512_castsi256_si512(bc_quant_nibbles((b0) + ((fmt) == 1 ? 2 : 4))), \
                                     bc_quant_nibbles((b1) + ((fmt) == 1 ? 2 : 4)), 1))

#define BC_QROWS_STEP(p)                                                                               \
    {                                                                                                  \
        const uint8_t *b0 = w + (2 * p) * ldw + bs * i, *b1 = w + (2 * p + 1) * ldw + bs * i;          \
        const __m512i x = BC_QROWS_PAIR(fmt, b0, b1, flip);                                            \
        const __m512 dw = bc_quant_pair_f(bc_quant_half(b0), bc_quant_half(b1));                       \
        acc##p = _mm512_fmadd_ps(_mm512_mul_ps(dw, da), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c, x, q)), acc##p); \
        if (fmt == 2) {                                                                                \
            sm[2 * p] = __builtin_fmaf(bc_quant_half(b0 + 2), s, sm[2 * p]);                            \
            sm[2 * p + 1] = __builtin_fmaf(bc_quant_half(b1 + 2), s, sm[2 * p + 1]);                    \
        }                                                                                              \
    }

/* out[r] = dot(row r at w + r*ldw, activation blocks a[0 .. nb)) for r < 8.
 * fmt: 0 Q8_0, 1 Q4_0, 2 Q4_1. */
__attribute__((always_inline)) BC_QUANT_FN512 void bc_quant_rows8_avx512(
    const int fmt, const uint8_t *w, int64_t ldw, const bc_q8a_block *a, int64_t nb, float *out) {
    const int64_t bs = fmt == 0 ? 34 : (fmt == 1 ? 18 : 20);
    const __m512 z = _mm512_setzero_ps();
    __m512 acc0 = z, acc1 = z, acc2 = z, acc3 = z;
    float sm[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const __m512i zero = _mm512_setzero_si512();
    const __m512i off = _mm512_set1_epi8(fmt == 0 ? (char)0x80 : 8); /* weight offset c (u8) */
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    /* The 8 rows are one contiguous stretch of 8·ldw bytes walked as 8 interleaved
     * streams, which the hardware prefetchers follow poorly: prefetch the stretch after
     * this one (the next 8 rows) evenly over the nb blocks. */
    const char *next = (const char *)(w + 8 * ldw);
    const int64_t lines = (8 * ldw + 63) / 64, perBlock = (lines + nb - 1) / nb;
    for (int64_t i = 0; i < nb; i++) {
        for (int64_t j = i * perBlock; j < (i + 1) * perBlock && j < lines; j++) __builtin_prefetch(next + 64 * j, 0, 3);
        const __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)a[i].q));
        const __m512 da = _mm512_set1_ps(a[i].d);
        const float s = a[i].s;
        /* −c·Σ of each group of 4 activations: the offset's exact contribution */
        const __m512i c = fmt == 2 ? zero : _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, off, q));
        BC_QROWS_STEP(0)
        BC_QROWS_STEP(1)
        BC_QROWS_STEP(2)
        BC_QROWS_STEP(3)
    }
    bc_quant_pair_store(acc0, out + 0, out + 1, sm[0], sm[1]);
    bc_quant_pair_store(acc1, out + 2, out + 3, sm[2], sm[3]);
    bc_quant_pair_store(acc2, out + 4, out + 5, sm[4], sm[5]);
    bc_quant_pair_store(acc3, out + 6, out + 7, sm[6], sm[7]);
}
#undef BC_QROWS_STEP
#undef BC_QROWS_PAIR

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
