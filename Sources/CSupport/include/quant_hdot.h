/* Dot products of F16 / BF16 weight rows with float32 activations (AVX2 + F16C):
 * each weight is converted to float32 on the fly (vcvtph2ps; BF16 by a 16-bit shift,
 * exact) and multiplied with the unrounded activation, so the only error is float32
 * accumulation. Header-only, nothing exported.
 *
 * Order (fixed, whatever the number of tokens per pass): elements k in chunks of 16,
 * lanes 0..7 into accumulator A, 8..15 into B (fused multiply-add, ascending chunks),
 * then hsum(A + B). n must be a multiple of 16. A token's result therefore depends only
 * on the two rows: out[t] of the 4-token kernel == the 1-token kernel, bit for bit. */
#ifndef BATCHCORE_QUANT_HDOT_H
#define BATCHCORE_QUANT_HDOT_H

#include "quant_dot.h"

#if defined(__x86_64__)

/* 8 weights at w (F16 when bf == 0, BF16 otherwise) as floats. */
BC_QUANT_FN __m256 bc_hq_load8(int bf, const uint8_t *w) {
    const __m128i h = _mm_loadu_si128((const __m128i *)w);
    if (bf) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

#define BC_HQ_TOKEN(t)                                                                                   \
    {                                                                                                    \
        a##t = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x##t + k), a##t);                                     \
        b##t = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x##t + k + 8), b##t);                                 \
    }

__attribute__((always_inline)) BC_QUANT_FN void bc_hq_body(int bf, int nt, const uint8_t *w, const float *x,
                                                           int64_t ldx, int64_t n, float *out) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx;
    for (int64_t k = 0; k < n; k += 16) {
        const __m256 w0 = bc_hq_load8(bf, w + 2 * k), w1 = bc_hq_load8(bf, w + 2 * k + 16);
        BC_HQ_TOKEN(0)
        if (nt == 4) {
            BC_HQ_TOKEN(1)
            BC_HQ_TOKEN(2)
            BC_HQ_TOKEN(3)
        }
    }
    out[0] = bc_quant_hsum(_mm256_add_ps(a0, b0));
    if (nt == 4) {
        out[1] = bc_quant_hsum(_mm256_add_ps(a1, b1));
        out[2] = bc_quant_hsum(_mm256_add_ps(a2, b2));
        out[3] = bc_quant_hsum(_mm256_add_ps(a3, b3));
    }
}
#undef BC_HQ_TOKEN

BC_QUANT_FN void bc_hq_f16_x1(const uint8_t *w, const float *x, int64_t ldx, int64_t n, float *out) { bc_hq_body(0, 1, w, x, ldx, n, out); }
BC_QUANT_FN void bc_hq_f16_x4(const uint8_t *w, const float *x, int64_t ldx, int64_t n, float *out) { bc_hq_body(0, 4, w, x, ldx, n, out); }
BC_QUANT_FN void bc_hq_bf16_x1(const uint8_t *w, const float *x, int64_t ldx, int64_t n, float *out) { bc_hq_body(1, 1, w, x, ldx, n, out); }
BC_QUANT_FN void bc_hq_bf16_x4(const uint8_t *w, const float *x, int64_t ldx, int64_t n, float *out) { bc_hq_body(1, 4, w, x, ldx, n, out); }

/* One weight row of n 16-bit values (bf != 0: BF16, else F16) × nt tokens (1 or 4; token
 * t's activations at x + t*ldx): out[t] = dot. */
static inline void bc_hq_dot(int bf, int nt, const uint8_t *w, const float *x, int64_t ldx, int64_t n, float *out) {
    if (bf) {
        if (nt == 4) bc_hq_bf16_x4(w, x, ldx, n, out); else bc_hq_bf16_x1(w, x, ldx, n, out);
    } else {
        if (nt == 4) bc_hq_f16_x4(w, x, ldx, n, out); else bc_hq_f16_x1(w, x, ldx, n, out);
    }
}

#endif /* __x86_64__ */
#endif
