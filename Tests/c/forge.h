/* Byte-level helpers for the C tests that forge state files: little-endian fields and
 * the trailing CRC-32 (IEEE) that batchcore's state formats end with, so a test can
 * write a state whose checksum is right but whose content is hostile. */
#ifndef BC_TEST_FORGE_H
#define BC_TEST_FORGE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t forge_crc32(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return ~c;
}

static inline void put_u32(unsigned char *p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (unsigned char)(v >> (8 * k));
}

static inline void put_u64(unsigned char *p, uint64_t v) {
    for (int k = 0; k < 8; k++) p[k] = (unsigned char)(v >> (8 * k));
}

static inline uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t get_u64(const unsigned char *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

static inline void put_f64(unsigned char *p, double v) {
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    put_u64(p, u);
}

static inline void put_f32(unsigned char *p, float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    put_u32(p, u);
}

/* Recomputes the trailing CRC-32 of a state of n bytes (the checksum covers the rest). */
static inline void reseal(unsigned char *state, size_t n) { put_u32(state + n - 4, forge_crc32(state, n - 4)); }

#endif
