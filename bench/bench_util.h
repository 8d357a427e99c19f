/* Helpers the C benches share (header-only; each bench is one C file built against
 * the installed batchcore only). */
#ifndef BC_BENCH_UTIL_H
#define BC_BENCH_UTIL_H

#include <batchcore.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Monotonic wall clock in seconds. */
static inline double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* A batchcore call that must succeed: else prints the status and bc_last_error(), exits 1. */
#define CHECK(call)                                                                              \
    do {                                                                                         \
        bc_status st_ = (call);                                                                  \
        if (st_ != BC_OK) {                                                                      \
            fprintf(stderr, "%s: %s: %s\n", #call, bc_status_string(st_), bc_last_error());      \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

static inline void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* qsort comparator for doubles, ascending. */
static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile q (0-100) of a sorted array; NaN when empty. */
static inline double pct(const double *sorted, size_t n, double q) {
    if (n == 0) return NAN;
    size_t k = (size_t)ceil(q / 100.0 * (double)n);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return sorted[k - 1];
}

/* splitmix64: a small seeded generator, identical on every platform (seed rng_state). */
static uint64_t rng_state;
static inline uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#endif
