/* Integer dot products of Q5_0, Q5_1, Q4_K, Q5_K and Q6_K weight rows with int8
 * activation blocks (bc_q8a_block of quant_dot.h: 32 values, float d, float s ~ d*Σq):
 * for Q5_0/Q5_1 made by bc_quant_q8a_row (llama.cpp's q8_0/q8_1: f16-rounded d and s),
 * for the k-quants by bc_quant_q8k_row (llama.cpp's q8_K: one float32 d per 256 values,
 * the same in the 8 blocks, s = d*Σq in float32).
 * Header-only, nothing exported; AVX2 baseline, and the same kernels with AVX-512 VNNI
 * (256-bit vpdpbusd) chosen at run time (bc_quant_has_avx512_vnni).
 *
 * Weight layouts (ggml-common.h; Sources/Formats/Dequantize.swift documents them):
 *   Q5_0 22 B / 32: half d, u32 qh, 16 B nibbles;       w = d*(u - 16), u = nib | bit<<4
 *   Q5_1 24 B / 32: half d, half m, u32 qh, nibbles;     w = d*u + m
 *   Q4_K 144 B / 256: half d, half dmin, 12 B scales, 128 B nibbles;
 *        sub-block s (32 values): w = (d*sc_s)*u - dmin*mn_s, u 0..15
 *   Q5_K 176 B / 256: as Q4_K with 32 B qh (bit s of byte l) before the nibbles, u 0..31
 *   Q6_K 210 B / 256: 128 B ql, 64 B qh, int8 sc[16], half d; w = (d*sc_16)*(u - 32)
 *
 * Each weight sub-block of 32 values is unpacked to unsigned bytes u (element order) and
 * meets the activation block of the same 32 positions: 8 int32 lanes, lane l the exact
 * sum over elements 4l..4l+3 of u*q (maddubs + madd on AVX2, vpdpbusd on VNNI: the same
 * integers), minus the offset c*Σq of the same 4 elements (Q5_0 c = 16, Q6_K c = 32),
 * times the sub-block scale (Q4_K/Q5_K sc_s, Q6_K sc of lanes 0..3 and of lanes 4..7):
 * every lane stays below 2^23 in magnitude, so its conversion to float is exact. The
 * float part is then fixed: acc = fma(d_w*d_a, lanes, acc) per sub-block in ascending
 * order, a scalar m = fma(min term, s_a, m) for Q5_1 (min m_w) and Q4_K/Q5_K
 * (dmin*mn_s), and the result is hsum(acc) + m (Q5_1) or hsum(acc) - m (K). A row's
 * result for a token therefore depends only on the two rows: the same bits with 1 or 4
 * tokens per pass and with or without VNNI. The error against the float product of
 * the weights with the unquantized activations is the activation rounding,
 * ≤ (d_a/2)·Σ|w| per block, plus float32 accumulation. */
#ifndef BATCHCORE_QUANT_KDOT_H
#define BATCHCORE_QUANT_KDOT_H

#include "quant_dot.h"

#if defined(__x86_64__)

enum { BC_KQ_Q5_0 = 0, BC_KQ_Q5_1 = 1, BC_KQ_Q4_K = 2, BC_KQ_Q5_K = 3, BC_KQ_Q6_K = 4 };

/* 32 bits of p as 32 bytes 0xFF / 0x00 (bit j -> byte j). */
BC_QUANT_FN __m256i bc_kq_bits32(const uint8_t *p) {
    uint32_t x;
    memcpy(&x, p, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* Scales and mins of the 8 sub-blocks of a Q4_K/Q5_K block (ggml's get_scale_min_k4). */
static inline void bc_kq_scale_min(const uint8_t *s, uint8_t *sc, uint8_t *mn) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
    }
    for (int j = 4; j < 8; j++) {
        sc[j] = (uint8_t)((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4));
        mn[j] = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* The body of a kernel: one weight row (nsb blocks: 32-value blocks for Q5_0/Q5_1,
 * 256-value blocks for the k-quants) × NT tokens (1 or 4; token t's activation blocks at
 * a + t*lda), out[t] = dot. DOT(u, q) is the 8 int32 lanes Σ4 u*q. Written as a macro so
 * the AVX2 and VNNI variants are the same code with their own target attribute. */
#define BC_KQ_BODY(FMT, NT, DOT)                                                                          \
    const __m256i one8 = _mm256_set1_epi8(1);                                                             \
    (void)one8;                                                                                           \
    const __m256i off = _mm256_set1_epi8((FMT) == BC_KQ_Q5_0 ? 16 : 32);                                 \
    (void)off;                                                                                            \
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;                             \
    float m0 = 0.0f, m1 = 0.0f, m2 = 0.0f, m3 = 0.0f;                                                     \
    const bc_q8a_block *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;                      \
    (void)a1; (void)a2; (void)a3;                                                                         \
    for (int64_t i = 0; i < nsb; i++) {                                                                   \
        if ((FMT) == BC_KQ_Q5_0 || (FMT) == BC_KQ_Q5_1) {                                                 \
            const int q51 = (FMT) == BC_KQ_Q5_1;                                                          \
            const uint8_t *b = w + (q51 ? 24 : 22) * i;                                                   \
            const __m256i hb = _mm256_and_si256(bc_kq_bits32(b + (q51 ? 4 : 2)), _mm256_set1_epi8(16));   \
            const __m256i u = _mm256_or_si256(bc_quant_nibbles(b + (q51 ? 8 : 6)), hb);                   \
            const float dw = bc_quant_half(b), mw = q51 ? bc_quant_half(b + 2) : 0.0f;                    \
            BC_KQ_TOKEN(DOT, 0, i, 1, (q51 ? 0 : 1), mw, q51)                                                  \
            if (NT == 4) {                                                                                \
                BC_KQ_TOKEN(DOT, 1, i, 1, (q51 ? 0 : 1), mw, q51)                                              \
                BC_KQ_TOKEN(DOT, 2, i, 1, (q51 ? 0 : 1), mw, q51)                                              \
                BC_KQ_TOKEN(DOT, 3, i, 1, (q51 ? 0 : 1), mw, q51)                                              \
            }                                                                                             \
        } else if ((FMT) == BC_KQ_Q4_K || (FMT) == BC_KQ_Q5_K) {                                          \
            const int q5 = (FMT) == BC_KQ_Q5_K;                                                           \
            const uint8_t *b = w + (q5 ? 176 : 144) * i;                                                  \
            const float dw = bc_quant_half(b), dmin = bc_quant_half(b + 2);                               \
            uint8_t sc[8], mn[8];                                                                         \
            bc_kq_scale_min(b + 4, sc, mn);                                                               \
            const uint8_t *qs = b + (q5 ? 48 : 16);                                                       \
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 16));                            \
            (void)qh;                                                                                     \
            for (int s = 0; s < 8; s++) {                                                                 \
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * (s >> 1)));           \
                __m256i u = _mm256_and_si256((s & 1) ? _mm256_srli_epi16(raw, 4) : raw, _mm256_set1_epi8(15)); \
                if (q5) {                                                                                 \
                    const __m256i bit = _mm256_set1_epi8((char)(1 << s));                                 \
                    u = _mm256_or_si256(u, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit), \
                                                            _mm256_set1_epi8(16)));                       \
                }                                                                                         \
                const __m256i scv = _mm256_set1_epi32(sc[s]);                                             \
                const float mw = dmin * (float)mn[s];                                                     \
                BC_KQ_KTOKEN(DOT, 0, 8 * i + s)                                                                \
                if (NT == 4) {                                                                            \
                    BC_KQ_KTOKEN(DOT, 1, 8 * i + s)                                                            \
                    BC_KQ_KTOKEN(DOT, 2, 8 * i + s)                                                            \
                    BC_KQ_KTOKEN(DOT, 3, 8 * i + s)                                                            \
                }                                                                                         \
            }                                                                                             \
        } else {                                                                                          \
            const uint8_t *b = w + 210 * i;                                                               \
            const float dw = bc_quant_half(b + 208);                                                      \
            const int8_t *sc = (const int8_t *)(b + 192);                                                 \
            for (int s = 0; s < 8; s++) {                                                                 \
                const int h = s >> 2, j = s & 3;                                                          \
                const __m256i ql = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32 * (j & 1)));     \
                const __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));              \
                const __m256i lo = _mm256_and_si256((j >> 1) ? _mm256_srli_epi16(ql, 4) : ql, _mm256_set1_epi8(15)); \
                const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j)), _mm256_set1_epi8(3)); \
                const __m256i u = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));                          \
                const __m256i scv = _mm256_setr_epi32(sc[2 * s], sc[2 * s], sc[2 * s], sc[2 * s],         \
                                                      sc[2 * s + 1], sc[2 * s + 1], sc[2 * s + 1], sc[2 * s + 1]); \
                BC_KQ_6TOKEN(DOT, 0, 8 * i + s)                                                                \
                if (NT == 4) {                                                                            \
                    BC_KQ_6TOKEN(DOT, 1, 8 * i + s)                                                            \
                    BC_KQ_6TOKEN(DOT, 2, 8 * i + s)                                                            \
                    BC_KQ_6TOKEN(DOT, 3, 8 * i + s)                                                            \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
    }                                                                                                     \
    const int sub = (FMT) == BC_KQ_Q4_K || (FMT) == BC_KQ_Q5_K;                                           \
    out[0] = sub ? bc_quant_hsum(acc0) - m0 : bc_quant_hsum(acc0) + m0;                                   \
    if (NT == 4) {                                                                                        \
        out[1] = sub ? bc_quant_hsum(acc1) - m1 : bc_quant_hsum(acc1) + m1;                               \
        out[2] = sub ? bc_quant_hsum(acc2) - m2 : bc_quant_hsum(acc2) + m2;                               \
        out[3] = sub ? bc_quant_hsum(acc3) - m3 : bc_quant_hsum(acc3) + m3;                               \
    }

/* Q5_0 / Q5_1 token t, block k: lanes = DOT(u, q) (- DOT(16, q) for Q5_0). */
#define BC_KQ_TOKEN(DOT, t, k, _unused, offset, mw, hasMin)                                                    \
    {                                                                                                     \
        const __m256i q = _mm256_loadu_si256((const __m256i *)a##t[k].q);                                \
        __m256i p = DOT(u, q);                                                                            \
        if (offset) p = _mm256_sub_epi32(p, DOT(off, q));                                                 \
        acc##t = _mm256_fmadd_ps(_mm256_set1_ps(dw * a##t[k].d), _mm256_cvtepi32_ps(p), acc##t);         \
        if (hasMin) m##t = bc_kq_fma(mw, a##t[k].s, m##t);                                                \
    }

/* Q4_K / Q5_K token t, sub-block k: lanes = DOT(u, q)·sc; m += (dmin·mn)·s. */
#define BC_KQ_KTOKEN(DOT, t, k)                                                                                \
    {                                                                                                     \
        const __m256i q = _mm256_loadu_si256((const __m256i *)a##t[k].q);                                \
        const __m256i p = _mm256_mullo_epi32(DOT(u, q), scv);                                             \
        acc##t = _mm256_fmadd_ps(_mm256_set1_ps(dw * a##t[k].d), _mm256_cvtepi32_ps(p), acc##t);         \
        m##t = bc_kq_fma(mw, a##t[k].s, m##t);                                                            \
    }

/* Q6_K token t, sub-block k: lanes = (DOT(u, q) - DOT(32, q))·sc. */
#define BC_KQ_6TOKEN(DOT, t, k)                                                                                \
    {                                                                                                     \
        const __m256i q = _mm256_loadu_si256((const __m256i *)a##t[k].q);                                \
        const __m256i p = _mm256_mullo_epi32(_mm256_sub_epi32(DOT(u, q), DOT(off, q)), scv);              \
        acc##t = _mm256_fmadd_ps(_mm256_set1_ps(dw * a##t[k].d), _mm256_cvtepi32_ps(p), acc##t);         \
    }

/* fma of scalars through the vector unit (the same instruction in every variant). */
BC_QUANT_FN float bc_kq_fma(float x, float y, float z) {
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(x), _mm_set_ss(y), _mm_set_ss(z)));
}

#define BC_KQ_DOT_AVX2(u, q) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (q)), _mm256_set1_epi16(1))
#define BC_KQ_DOT_VNNI(u, q) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (q))

#define BC_KQ_FN_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"))) static inline

#define BC_KQ_DEFINE(fmt, name)                                                                           \
    BC_QUANT_FN void bc_kq_##name##_x1_avx2(const uint8_t *w, const bc_q8a_block *a, int64_t lda,         \
                                             int64_t nsb, float *out) {                                   \
        BC_KQ_BODY(fmt, 1, BC_KQ_DOT_AVX2)                                                                \
    }                                                                                                     \
    BC_QUANT_FN void bc_kq_##name##_x4_avx2(const uint8_t *w, const bc_q8a_block *a, int64_t lda,         \
                                             int64_t nsb, float *out) {                                   \
        BC_KQ_BODY(fmt, 4, BC_KQ_DOT_AVX2)                                                                \
    }                                                                                                     \
    BC_KQ_FN_VNNI void bc_kq_##name##_x1_vnni(const uint8_t *w, const bc_q8a_block *a, int64_t lda,       \
                                               int64_t nsb, float *out) {                                 \
        BC_KQ_BODY(fmt, 1, BC_KQ_DOT_VNNI)                                                                \
    }                                                                                                     \
    BC_KQ_FN_VNNI void bc_kq_##name##_x4_vnni(const uint8_t *w, const bc_q8a_block *a, int64_t lda,       \
                                               int64_t nsb, float *out) {                                 \
        BC_KQ_BODY(fmt, 4, BC_KQ_DOT_VNNI)                                                                \
    }

BC_KQ_DEFINE(BC_KQ_Q5_0, q5_0)
BC_KQ_DEFINE(BC_KQ_Q5_1, q5_1)
BC_KQ_DEFINE(BC_KQ_Q4_K, q4_K)
BC_KQ_DEFINE(BC_KQ_Q5_K, q5_K)
BC_KQ_DEFINE(BC_KQ_Q6_K, q6_K)

/* The values block b of format fmt encodes (32 or 256 floats into y), rounded as
 * ggml's dequantize_row_* (separate statements: nothing is fused). */
static inline void bc_kq_dequant_block(int fmt, const uint8_t *b, float *y) {
    uint16_t h;
    if (fmt == BC_KQ_Q5_0 || fmt == BC_KQ_Q5_1) {
        const int q51 = fmt == BC_KQ_Q5_1;
        memcpy(&h, b, 2);
        const float d = (float)*(const _Float16 *)&h;
        float m = 0.0f;
        if (q51) {
            memcpy(&h, b + 2, 2);
            m = (float)*(const _Float16 *)&h;
        }
        uint32_t qh;
        memcpy(&qh, b + (q51 ? 4 : 2), 4);
        const uint8_t *qs = b + (q51 ? 8 : 6);
        for (int j = 0; j < 16; j++) {
            const int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4, hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            if (q51) {
                const float pl = (float)lo * d, ph = (float)hi * d;
                y[j] = pl + m;
                y[j + 16] = ph + m;
            } else {
                y[j] = (float)(lo - 16) * d;
                y[j + 16] = (float)(hi - 16) * d;
            }
        }
    } else if (fmt == BC_KQ_Q4_K || fmt == BC_KQ_Q5_K) {
        const int q5 = fmt == BC_KQ_Q5_K;
        memcpy(&h, b, 2);
        const float d = (float)*(const _Float16 *)&h;
        memcpy(&h, b + 2, 2);
        const float dmin = (float)*(const _Float16 *)&h;
        uint8_t sc[8], mn[8];
        bc_kq_scale_min(b + 4, sc, mn);
        const uint8_t *qh = b + 16, *qs = b + (q5 ? 48 : 16);
        for (int s = 0; s < 8; s++) {
            const float ds = d * (float)sc[s], ms = dmin * (float)mn[s];
            for (int l = 0; l < 32; l++) {
                int q = (qs[32 * (s >> 1) + l] >> (4 * (s & 1))) & 15;
                if (q5) q |= ((qh[l] >> s) & 1) << 4;
                const float p = ds * (float)q;
                y[32 * s + l] = p - ms;
            }
        }
    } else if (fmt == BC_KQ_Q6_K) {
        memcpy(&h, b + 208, 2);
        const float d = (float)*(const _Float16 *)&h;
        const int8_t *sc = (const int8_t *)(b + 192);
        for (int hh = 0; hh < 2; hh++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) {
                    const int lo = (b[64 * hh + l + 32 * (j & 1)] >> (4 * (j >> 1))) & 15;
                    const int hi = (b[128 + 32 * hh + l] >> (2 * j)) & 3;
                    const float ds = d * (float)sc[8 * hh + 2 * j + l / 16];
                    y[128 * hh + 32 * j + l] = ds * (float)((lo | hi << 4) - 32);
                }
    }
}

/* One weight row (nsb blocks of format fmt, BC_KQ_*) × nt tokens (1 or 4; token t's
 * activation blocks at a + t*lda): out[t] = dot. vnni != 0 uses the VNNI variant (only
 * when bc_quant_has_avx512_vnni()). The same bits for every nt and vnni. */
static inline void bc_kq_dot(int fmt, int vnni, int nt, const uint8_t *w, const bc_q8a_block *a, int64_t lda,
                             int64_t nsb, float *out) {
#define BC_KQ_CASE(F, name)                                                                               \
    case F:                                                                                               \
        if (vnni) {                                                                                       \
            if (nt == 4) bc_kq_##name##_x4_vnni(w, a, lda, nsb, out); else bc_kq_##name##_x1_vnni(w, a, lda, nsb, out); \
        } else {                                                                                          \
            if (nt == 4) bc_kq_##name##_x4_avx2(w, a, lda, nsb, out); else bc_kq_##name##_x1_avx2(w, a, lda, nsb, out); \
        }                                                                                                 \
        break;
    switch (fmt) {
        BC_KQ_CASE(BC_KQ_Q5_0, q5_0)
        BC_KQ_CASE(BC_KQ_Q5_1, q5_1)
        BC_KQ_CASE(BC_KQ_Q4_K, q4_K)
        BC_KQ_CASE(BC_KQ_Q5_K, q5_K)
        BC_KQ_CASE(BC_KQ_Q6_K, q6_K)
        default: break;
    }
#undef BC_KQ_CASE
}

#endif /* __x86_64__ */
#endif
