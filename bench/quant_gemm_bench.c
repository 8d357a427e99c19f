/* Kernel micro-bench of the quantized products (Sources/CSupport/include/quant_dot.h):
 * y[t][o] = dot(W row o, int8 activations of token t) for the default model's prefill
 * shapes (SmolLM2-135M: 576→576, 576→192, 576→1536, 1536→576), 64 tokens, one thread,
 * per format: the AVX2 path `QuantGEMM.multiply(kernel: .avx2)` takes (one row × 4 tokens,
 * `bc_quant_dot4_*`) vs the AVX-512 VNNI tiles `.best` takes (4 rows × 8 tokens), the
 * same loop order as QuantGEMM (work items of 32 rows × 64 tokens). Checks that both give
 * the same bits; prints the best of the interleaved reps in GMAC/s (MAC = one weight ×
 * activation product).
 *   clang -O2 -I Sources/CSupport/include bench/quant_gemm_bench.c -o /tmp/qgb && /tmp/qgb [reps]
 * (clang compiles the library's C, through Swift's importer; GCC gives the same bits.) */
#include "quant_dot.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t state = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
    return state;
}

typedef void (*dot4_fn)(const uint8_t *, const bc_q8a_block *, int64_t, int64_t, float *);
typedef void (*tile_fn)(const uint8_t *, int64_t, const bc_q8a_block *, int64_t, int64_t, float *, int64_t);

int main(int argc, char **argv) {
    const int reps = argc > 1 ? atoi(argv[1]) : 20;
    if (!bc_quant_has_avx512_vnni()) { printf("no AVX-512 VNNI on this CPU: nothing to compare\n"); return 0; }
    const int shapes[4][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}}; /* rows, cols */
    const char *names[3] = {"Q8_0", "Q4_0", "Q4_1"};
    const int bsz[3] = {34, 18, 20};
    dot4_fn dot4[3] = {bc_quant_dot4_q8_0, bc_quant_dot4_q4_0, bc_quant_dot4_q4_1};
    tile_fn tile[3] = {bc_quant_tile4x8_q8_0_avx512, bc_quant_tile4x8_q4_0_avx512, bc_quant_tile4x8_q4_1_avx512};
    const int T = 64;
    printf("| format | rows×cols | AVX2 1×4 GMAC/s | AVX-512 4×8 GMAC/s | speed-up | same bits |\n|---|---|---|---|---|---|\n");
    for (int f = 0; f < 3; f++) {
        for (int s = 0; s < 4; s++) {
            const int rows = shapes[s][0], cols = shapes[s][1], nb = cols / 32, rb = nb * bsz[f];
            uint8_t *w = malloc((size_t)rows * rb);
            for (size_t i = 0; i < (size_t)rows * rb; i++) w[i] = (uint8_t)(next() >> 56);
            for (int b = 0; b < rows * nb; b++) { /* finite halves of both signs, |v| < 0.06 */
                uint16_t h = (uint16_t)(0x2000 | (next() >> 54)) ^ (uint16_t)((next() >> 63) << 15);
                memcpy(w + (size_t)b * bsz[f], &h, 2);
                if (f == 2) memcpy(w + (size_t)b * bsz[f] + 2, &h, 2);
            }
            float *x = malloc(sizeof(float) * T * cols);
            for (int i = 0; i < T * cols; i++) x[i] = (float)((int64_t)(next() >> 40) - (1 << 23)) / (1 << 22);
            bc_q8a_block *a = malloc(sizeof(bc_q8a_block) * T * nb);
            for (int t = 0; t < T; t++) bc_quant_q8a_row(x + (size_t)t * cols, a + (size_t)t * nb, nb);
            float *y0 = malloc(sizeof(float) * T * rows), *y1 = malloc(sizeof(float) * T * rows);
            double best0 = 1e30, best1 = 1e30;
            for (int rep = 0; rep < reps; rep++) {
                double t0 = now();
                for (int r = 0; r < rows; r++)
                    for (int t = 0; t < T; t += 4) {
                        float o[4];
                        dot4[f](w + (size_t)r * rb, a + (size_t)t * nb, nb, nb, o);
                        for (int j = 0; j < 4; j++) y0[(t + j) * rows + r] = o[j];
                    }
                double t1 = now();
                for (int r = 0; r < rows; r += 4)
                    for (int t = 0; t < T; t += 8) tile[f](w + (size_t)r * rb, rb, a + (size_t)t * nb, nb, nb, y1 + t * rows + r, rows);
                double t2 = now();
                if (t1 - t0 < best0) best0 = t1 - t0;
                if (t2 - t1 < best1) best1 = t2 - t1;
            }
            const double macs = (double)rows * cols * T * 1e-9;
            printf("| %s | %d×%d | %.1f | %.1f | %.2fx | %s |\n", names[f], rows, cols, macs / best0, macs / best1, best0 / best1,
                   memcmp(y0, y1, sizeof(float) * T * rows) ? "NO" : "yes");
            free(w); free(x); free(a); free(y0); free(y1);
        }
    }
    return 0;
}
