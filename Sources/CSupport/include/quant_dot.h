/* Integer dot products of ggml weight blocks with int8-quantized activations (AVX2).
 * Header-only; nothing here is exported from libbatchcore.so. Each function carries
 * its own target attribute, so callers need no -mavx2 (the library requires x86-64-v3).
 *
 * Weight blocks (32 values, little-endian, as in ggml-common.h):
 *   Q8_0 34 bytes: half d, int8 q[32];                 w = d*q
 *   Q4_0 18 bytes: half d, 16 bytes of nibbles;         w = d*(nib - 8)
 *   Q4_1 20 bytes: half d, half m, 16 bytes of nibbles; w = d*nib + m
 *   (byte j: element j in the low nibble, element j + 16 in the high nibble).
 * Activation blocks (bc_q8a_block, 40 bytes): float d, float s, int8 q[32]; x ~ d*q.
 *   bc_quant_q8a_row (for the 32-value weight formats) makes exactly llama.cpp's
 *   q8_0/q8_1 blocks (x86 quantize_row_q8_0/q8_1): q = round-to-nearest-even(x * id) with
 *   id = 127/amax in float32 (all 0 when amax is 0); d = f16(amax/127) and
 *   s = f16((amax/127) * sum(q)) (the float32 product, then rounded to f16: the codes and
 *   s come from the float32 d, the dot products use the rounded d), stored widened to
 *   float32. bc_quant_q8k_row (for the 256-value K formats) makes llama.cpp's q8_K
 *   blocks (quantize_row_q8_K): one float32 scale per 256 values, d = 1/id, shared by
 *   the 8 bc_q8a_block of the 256, each with s = d * sum(q) in float32.
 *
 * A dot of a weight row (nb blocks) with an activation row accumulates block by block,
 * in ascending order, into one 8-lane float accumulator (fused multiply-add of the
 * block's 8 int32 partial sums, converted exactly, by d_w*d_a), then sums the lanes in
 * a fixed order: its result depends only on the two rows. */
#ifndef BATCHCORE_QUANT_DOT_H
#define BATCHCORE_QUANT_DOT_H

#if defined(__x86_64__)
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define BC_QUANT_ROUND (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define BC_QUANT_FN __attribute__((target("avx2,fma,f16c"))) static inline

typedef struct bc_q8a_block {
    float d;
    float s;
    int8_t q[32];
} bc_q8a_block;

BC_QUANT_FN float bc_quant_half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

BC_QUANT_FN float bc_quant_hsum(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

/* x rounded to the nearest f16 (ties to even), as a float. */
BC_QUANT_FN float bc_quant_f16_round(float x) {
    return _cvtsh_ss(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}

/* 32 nibbles of 16 bytes as bytes 0..15 (low nibbles) and 16..31 (high nibbles). */
BC_QUANT_FN __m256i bc_quant_nibbles(const uint8_t *p) {
    const __m128i t = _mm_loadu_si128((const __m128i *)p);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F));
}

/* Sum of signed x[i]*y[i] in 8 int32 lanes, as floats (exact: |lane| < 2^16). */
BC_QUANT_FN __m256 bc_quant_mul_sum_i8(__m256i x, __m256i y) {
    const __m256i ax = _mm256_sign_epi8(x, x);
    const __m256i sy = _mm256_sign_epi8(y, x);
    const __m256i dot = _mm256_maddubs_epi16(ax, sy);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(dot, _mm256_set1_epi16(1)));
}

/* Quantizes x[0 .. 32*nb) into nb activation blocks. */
BC_QUANT_FN void bc_quant_q8a_row(const float *x, bc_q8a_block *y, int64_t nb) {
    const __m256 signBit = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < nb; i++) {
        const float *v = x + 32 * i;
        __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
        __m256 v2 = _mm256_loadu_ps(v + 16), v3 = _mm256_loadu_ps(v + 24);
        __m256 m = _mm256_max_ps(_mm256_andnot_ps(signBit, v0), _mm256_andnot_ps(signBit, v1));
        m = _mm256_max_ps(m, _mm256_max_ps(_mm256_andnot_ps(signBit, v2), _mm256_andnot_ps(signBit, v3)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const __m256 mul = _mm256_set1_ps(id);
        int32_t q[32];
        _mm256_storeu_si256((__m256i *)q, _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), BC_QUANT_ROUND)));
        _mm256_storeu_si256((__m256i *)(q + 8), _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), BC_QUANT_ROUND)));
        _mm256_storeu_si256((__m256i *)(q + 16), _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), BC_QUANT_ROUND)));
        _mm256_storeu_si256((__m256i *)(q + 24), _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), BC_QUANT_ROUND)));
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            /* |q| <= 127 for finite x; clamp so non-finite input cannot wrap. */
            int32_t c = q[j] > 127 ? 127 : (q[j] < -127 ? -127 : q[j]);
            y[i].q[j] = (int8_t)c;
            sum += c;
        }
        /* ggml's GGML_CPU_FP32_TO_FP16 on x86 (F16C, round to nearest even). */
        y[i].d = bc_quant_f16_round(d);
        y[i].s = bc_quant_f16_round(d * (float)sum);
    }
}

/* Quantizes x[0 .. 256*nb) as llama.cpp's q8_K blocks into 8*nb activation blocks:
 * per 256 values amax = max|x|, id = 127/amax (0 when amax is 0), d = 1/id (0 when amax
 * is 0; float32, not rounded), q = round-to-nearest-even(x * id); each of the 8 blocks
 * of 32 gets that d and s = d * sum of its q (float32). ggml picks the sign of its scale
 * from the largest element (iscale = -127/max); x*iscale and 1/iscale are sign-symmetric
 * in IEEE arithmetic, so d*q is the same value either way. */
BC_QUANT_FN void bc_quant_q8k_row(const float *x, bc_q8a_block *y, int64_t nb) {
    const __m256 signBit = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < nb; i++) {
        const float *v = x + 256 * i;
        __m256 m = _mm256_andnot_ps(signBit, _mm256_loadu_ps(v));
        for (int j = 8; j < 256; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(signBit, _mm256_loadu_ps(v + j)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const float d = amax != 0.0f ? 1.0f / id : 0.0f;
        const __m256 mul = _mm256_set1_ps(id);
        for (int sb = 0; sb < 8; sb++) {
            bc_q8a_block *o = y + 8 * i + sb;
            const float *u = v + 32 * sb;
            int32_t q[32];
            for (int j = 0; j < 32; j += 8)
                _mm256_storeu_si256((__m256i *)(q + j),
                                    _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(u + j), mul), BC_QUANT_ROUND)));
            int32_t sum = 0;
            for (int j = 0; j < 32; j++) {
                int32_t c = q[j] > 127 ? 127 : (q[j] < -127 ? -127 : q[j]);
                o->q[j] = (int8_t)c;
                sum += c;
            }
            o->d = d;
            o->s = d * (float)sum;
        }
    }
}

BC_QUANT_FN float bc_quant_dot_q8_0(const uint8_t *w, const bc_q8a_block *a, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *b = w + 34 * i;
        const __m256 d = _mm256_set1_ps(bc_quant_half(b) * a[i].d);
        const __m256i qx = _mm256_loadu_si256((const __m256i *)(b + 2));
        const __m256i qy = _mm256_loadu_si256((const __m256i *)a[i].q);
        acc = _mm256_fmadd_ps(d, bc_quant_mul_sum_i8(qx, qy), acc);
    }
    return bc_quant_hsum(acc);
}

BC_QUANT_FN float bc_quant_dot_q4_0(const uint8_t *w, const bc_q8a_block *a, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i eight = _mm256_set1_epi8(8);
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *b = w + 18 * i;
        const __m256 d = _mm256_set1_ps(bc_quant_half(b) * a[i].d);
        const __m256i qx = _mm256_sub_epi8(bc_quant_nibbles(b + 2), eight);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)a[i].q);
        acc = _mm256_fmadd_ps(d, bc_quant_mul_sum_i8(qx, qy), acc);
    }
    return bc_quant_hsum(acc);
}

BC_QUANT_FN float bc_quant_dot_q4_1(const uint8_t *w, const bc_q8a_block *a, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *b = w + 20 * i;
        const __m256 d = _mm256_set1_ps(bc_quant_half(b) * a[i].d);
        summs += bc_quant_half(b + 2) * a[i].s;
        const __m256i qx = bc_quant_nibbles(b + 4); /* unsigned 0..15 */
        const __m256i qy = _mm256_loadu_si256((const __m256i *)a[i].q);
        const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(qx, qy), ones));
        acc = _mm256_fmadd_ps(d, p, acc);
    }
    return bc_quant_hsum(acc) + summs;
}

/* The same dot products for one weight row and 4 activation rows (token j's blocks at
 * a + j*lda): each weight block is unpacked once, and each token's value is computed by
 * exactly the operations of the single-row function, in the same order, so
 * out[j] == bc_quant_dot_*(w, a + j*lda, nb) bit for bit. */
BC_QUANT_FN void bc_quant_dot4_q8_0(const uint8_t *w, const bc_q8a_block *a, int64_t lda, int64_t nb, float *out) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    const bc_q8a_block *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *b = w + 34 * i;
        const float dw = bc_quant_half(b);
        const __m256i qx = _mm256_loadu_si256((const __m256i *)(b + 2));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dw * a0[i].d), bc_quant_mul_sum_i8(qx, _mm256_loadu_si256((const __m256i *)a0[i].q)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(dw * a1[i].d), bc_quant_mul_sum_i8(qx, _mm256_loadu_si256((const __m256i *)a1[i].q)), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_set1_ps(dw * a2[i].d), bc_quant_mul_sum_i8(qx, _mm256_loadu_si256((const __m256i *)a2[i].q)), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_set1_ps(dw * a3[i].d), bc_quant_mul_sum_i8(qx, _mm256_loadu_si256((const __m256i *)a3[i].q)), acc3);
    }
    out[0] = bc_quant_hsum(acc0);
    out[1] = bc_quant_hsum(acc1);
    out[2] = bc_quant_hsum(acc2);
    out[3] = bc_quant_hsum(acc3);
}

BC_QUANT_FN void bc_quant_dot4_q4_0(const uint8_t *w, const bc_q8a_block *a, int64_t lda, int64_t nb, float *out) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    const bc_q8a_block *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
    const __m256i eight = _mm256_set1_epi8(8);
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *b = w + 18 * i;
        const float dw = bc_quant_half(b);
        const __m256i qx = _mm256_sub_epi8(bc_quant_nibbles(b + 2), eight);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dw * a0[i].d), bc_quant_mul_sum_i8(qx, _mm256_loadu_si256((const __m256i *)a0[i].q)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(dw * a1[i].d), bc_quant_mul_sum_i8(qx, _mm256_loadu_si256((const __m256i *)a1[i].q)), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_set1_ps(dw * a2[i].d), bc_quant_mul_sum_i8(qx, _mm256_loadu_si256((const __m256i *)a2[i].q)), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_set1_ps(dw * a3[i].d), bc_quant_mul_sum_i8(qx, _mm256_loadu_si256((const __m256i *)a3[i].q)), acc3);
    }
    out[0] = bc_quant_hsum(acc0);
    out[1] = bc_quant_hsum(acc1);
    out[2] = bc_quant_hsum(acc2);
    out[3] = bc_quant_hsum(acc3);
}

BC_QUANT_FN __m256 bc_quant_mul_sum_u4(__m256i qx, const int8_t *q) {
    const __m256i qy = _mm256_loadu_si256((const __m256i *)q);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(qx, qy), _mm256_set1_epi16(1)));
}

BC_QUANT_FN void bc_quant_dot4_q4_1(const uint8_t *w, const bc_q8a_block *a, int64_t lda, int64_t nb, float *out) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    const bc_q8a_block *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *b = w + 20 * i;
        const float dw = bc_quant_half(b), m = bc_quant_half(b + 2);
        s0 += m * a0[i].s;
        s1 += m * a1[i].s;
        s2 += m * a2[i].s;
        s3 += m * a3[i].s;
        const __m256i qx = bc_quant_nibbles(b + 4);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dw * a0[i].d), bc_quant_mul_sum_u4(qx, a0[i].q), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(dw * a1[i].d), bc_quant_mul_sum_u4(qx, a1[i].q), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_set1_ps(dw * a2[i].d), bc_quant_mul_sum_u4(qx, a2[i].q), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_set1_ps(dw * a3[i].d), bc_quant_mul_sum_u4(qx, a3[i].q), acc3);
    }
    out[0] = bc_quant_hsum(acc0) + s0;
    out[1] = bc_quant_hsum(acc1) + s1;
    out[2] = bc_quant_hsum(acc2) + s2;
    out[3] = bc_quant_hsum(acc3) + s3;
}

/* ---- AVX-512 VNNI (chosen at run time; bc_quant_has_avx512_vnni) ----
 * Tiles of 4 weight rows × 8 (or 4) tokens: out[t*ldo + r] == bc_quant_dot_*(w + r*ldw,
 * a + t*lda, nb) bit for bit. Each 512-bit accumulator holds two tokens' 8-lane float
 * accumulators (lanes 0..7 token 2p, 8..15 token 2p+1); per block the int32 lanes are
 * the same exact sums of 4 consecutive products as AVX2's maddubs+madd (vpdpbusd sums
 * u8×s8 in groups of 4; signed weights are offset to unsigned and the offset's exact
 * contribution −c·Σq is the accumulator's start), the scale is the same float product
 * d_w·d_a, and the same fused multiply-add adds it into the same lane, in ascending
 * block order; the lanes are then summed by bc_quant_hsum. */
#include <cpuid.h>

/* 1 when the CPU and OS support AVX512F, BW, VL and VNNI (zmm state enabled). */
static inline int bc_quant_has_avx512_vnni(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xE6u) != 0xE6u) return 0; /* XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const int f = (b >> 16) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
    return f && bw && vl && vnni;
}

#define BC_QUANT_FN512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"))) static inline

BC_QUANT_FN512 __m512i bc_quant_pair_q(const bc_q8a_block *x, const bc_q8a_block *y) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)x->q)),
                              _mm256_loadu_si256((const __m256i *)y->q), 1);
}

BC_QUANT_FN512 __m512 bc_quant_pair_f(float x, float y) {
    return _mm512_mask_blend_ps((__mmask16)0xFF00, _mm512_set1_ps(x), _mm512_set1_ps(y));
}

BC_QUANT_FN512 void bc_quant_pair_store(__m512 acc, float *o0, float *o1, float s0, float s1) {
    const __m256 lo = _mm512_castps512_ps256(acc);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1));
    *o0 = bc_quant_hsum(lo) + s0;
    *o1 = bc_quant_hsum(hi) + s1;
}

/* A tile of 4 weight rows (row r at w + r*ldw) × 2*P tokens (token t's blocks at
 * a + t*lda), P = 2 or 4: out[t*ldo + r] = dot(row r, token t). fmt: 0 Q8_0, 1 Q4_0,
 * 2 Q4_1. Q4_1's Σ m·s terms of the 8 (or 4) tokens of a row go in one vector, by the
 * fused multiply-add the one-row function's `summs += m * s` compiles to. */
/* Written out without arrays or inner loops: the compiler that builds it for Swift does
 * not unroll them, and accumulators in memory halve the speed. */
#define BC_QUANT_TILE_ROW(r)                                                                              \
    {                                                                                                    \
        const uint8_t *b = w + r * ldw + bs * i;                                                         \
        __m256i qx;                                                                                      \
        if (fmt == 0) qx = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(b + 2)), flip);         \
        else qx = bc_quant_nibbles(b + (fmt == 1 ? 2 : 4));                                              \
        const __m512i x = _mm512_broadcast_i64x4(qx);                                                    \
        const __m512 dw = _mm512_set1_ps(bc_quant_half(b));                                              \
        acc##r##0 = _mm512_fmadd_ps(_mm512_mul_ps(dw, d0), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c0, x, q0)), acc##r##0); \
        acc##r##1 = _mm512_fmadd_ps(_mm512_mul_ps(dw, d1), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c1, x, q1)), acc##r##1); \
        if (P == 4) {                                                                                    \
            acc##r##2 = _mm512_fmadd_ps(_mm512_mul_ps(dw, d2), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c2, x, q2)), acc##r##2); \
            acc##r##3 = _mm512_fmadd_ps(_mm512_mul_ps(dw, d3), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c3, x, q3)), acc##r##3); \
        }                                                                                                \
        if (fmt == 2) sm##r = _mm256_fmadd_ps(_mm256_set1_ps(bc_quant_half(b + 2)), s8, sm##r);          \
    }

#define BC_QUANT_TILE_STORE(r)                                                                            \
    {                                                                                                    \
        float s[8];                                                                                      \
        _mm256_storeu_ps(s, sm##r);                                                                      \
        bc_quant_pair_store(acc##r##0, out + r, out + ldo + r, s[0], s[1]);                              \
        bc_quant_pair_store(acc##r##1, out + 2 * ldo + r, out + 3 * ldo + r, s[2], s[3]);                \
        if (P == 4) {                                                                                    \
            bc_quant_pair_store(acc##r##2, out + 4 * ldo + r, out + 5 * ldo + r, s[4], s[5]);            \
            bc_quant_pair_store(acc##r##3, out + 6 * ldo + r, out + 7 * ldo + r, s[6], s[7]);            \
        }                                                                                                \
    }

__attribute__((always_inline)) BC_QUANT_FN512 void bc_quant_tile_avx512(
    const int fmt, const int P, const uint8_t *w, int64_t ldw, const bc_q8a_block *a, int64_t lda, int64_t nb,
    float *out, int64_t ldo) {
    const int64_t bs = fmt == 0 ? 34 : (fmt == 1 ? 18 : 20);
    const __m512 z = _mm512_setzero_ps();
    __m512 acc00 = z, acc01 = z, acc02 = z, acc03 = z, acc10 = z, acc11 = z, acc12 = z, acc13 = z;
    __m512 acc20 = z, acc21 = z, acc22 = z, acc23 = z, acc30 = z, acc31 = z, acc32 = z, acc33 = z;
    __m256 sm0 = _mm256_setzero_ps(), sm1 = sm0, sm2 = sm0, sm3 = sm0;
    const __m512i zero = _mm512_setzero_si512();
    const __m512i off = _mm512_set1_epi8(fmt == 0 ? (char)0x80 : 8); /* weight offset c (u8) */
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    const bc_q8a_block *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
    const bc_q8a_block *a4 = a + 4 * lda, *a5 = a + 5 * lda, *a6 = a + 6 * lda, *a7 = a + 7 * lda;
    for (int64_t i = 0; i < nb; i++) {
        const __m512i q0 = bc_quant_pair_q(a0 + i, a1 + i), q1 = bc_quant_pair_q(a2 + i, a3 + i);
        const __m512 d0 = bc_quant_pair_f(a0[i].d, a1[i].d), d1 = bc_quant_pair_f(a2[i].d, a3[i].d);
        __m512i q2 = zero, q3 = zero;
        __m512 d2 = z, d3 = z;
        if (P == 4) {
            q2 = bc_quant_pair_q(a4 + i, a5 + i);
            q3 = bc_quant_pair_q(a6 + i, a7 + i);
            d2 = bc_quant_pair_f(a4[i].d, a5[i].d);
            d3 = bc_quant_pair_f(a6[i].d, a7[i].d);
        }
        /* −c·Σ of each group of 4 activations: the offset's exact contribution */
        __m512i c0 = zero, c1 = zero, c2 = zero, c3 = zero;
        if (fmt != 2) {
            c0 = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, off, q0));
            c1 = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, off, q1));
            if (P == 4) {
                c2 = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, off, q2));
                c3 = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, off, q3));
            }
        }
        __m256 s8 = _mm256_setzero_ps();
        if (fmt == 2) {
            s8 = P == 4 ? _mm256_setr_ps(a0[i].s, a1[i].s, a2[i].s, a3[i].s, a4[i].s, a5[i].s, a6[i].s, a7[i].s)
                        : _mm256_setr_ps(a0[i].s, a1[i].s, a2[i].s, a3[i].s, 0, 0, 0, 0);
        }
        BC_QUANT_TILE_ROW(0)
        BC_QUANT_TILE_ROW(1)
        BC_QUANT_TILE_ROW(2)
        BC_QUANT_TILE_ROW(3)
    }
    BC_QUANT_TILE_STORE(0)
    BC_QUANT_TILE_STORE(1)
    BC_QUANT_TILE_STORE(2)
    BC_QUANT_TILE_STORE(3)
}
#undef BC_QUANT_TILE_ROW
#undef BC_QUANT_TILE_STORE

#define BC_QUANT_TILE(name, fmt, P) \
    BC_QUANT_FN512 void name(const uint8_t *w, int64_t ldw, const bc_q8a_block *a, int64_t lda, int64_t nb, \
                             float *out, int64_t ldo) { bc_quant_tile_avx512(fmt, P, w, ldw, a, lda, nb, out, ldo); }
BC_QUANT_TILE(bc_quant_tile4x8_q8_0_avx512, 0, 4)
BC_QUANT_TILE(bc_quant_tile4x8_q4_0_avx512, 1, 4)
BC_QUANT_TILE(bc_quant_tile4x8_q4_1_avx512, 2, 4)
BC_QUANT_TILE(bc_quant_tile4x4_q8_0_avx512, 0, 2)
BC_QUANT_TILE(bc_quant_tile4x4_q4_0_avx512, 1, 2)
BC_QUANT_TILE(bc_quant_tile4x4_q4_1_avx512, 2, 2)
#undef BC_QUANT_TILE

#endif /* __x86_64__ */
#endif
