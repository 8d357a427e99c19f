/* OpenBLAS cblas_sgemm on the projection backward shapes (reference numbers for
 * ProjectionBench). cc -O2 bench/sgemm_bench.c -lopenblas -o /tmp/sgemm_bench
 * Columns: forward y = x·Wᵀ, dX = dY·W, dW += dYᵀ·X, GFLOP/s, best of 5. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

extern void openblas_set_num_threads(int);

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float *rnd(size_t n) { float *p = malloc(n * sizeof *p); for (size_t i = 0; i < n; i++) p[i] = (float)rand() / RAND_MAX - 0.5f; return p; }

int main(void) {
    struct { const char *name; int t, cols, rows; } s[] = {
        {"o 576->576", 1024, 576, 576}, {"qkv 576->960", 1024, 576, 960}, {"gateup 576->3072", 1024, 576, 3072},
        {"down 1536->576", 1024, 1536, 576}, {"head 576->49152 T128", 128, 576, 49152}};
    printf("shape                  thr   fwd    dX     dW   (GFLOP/s, OpenBLAS)\n");
    for (int i = 0; i < 5; i++) {
        int t = s[i].t, k = s[i].cols, n = s[i].rows;
        float *x = rnd((size_t)t * k), *w = rnd((size_t)n * k), *dy = rnd((size_t)t * n), *y = rnd((size_t)t * n);
        float *dx = rnd((size_t)t * k), *dw = rnd((size_t)n * k);
        double fl = 2.0 * t * n * k * 1e-9;
        for (int th = 1; th <= 2; th++) {
            openblas_set_num_threads(th);
            double best[3] = {1e9, 1e9, 1e9};
            for (int r = 0; r < 6; r++) {
                double t0 = now();
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, n, k, 1, x, k, w, k, 0, y, n);
                double t1 = now();
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t, k, n, 1, dy, n, w, k, 0, dx, k);
                double t2 = now();
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, k, t, 1, dy, n, x, k, 1, dw, k);
                double t3 = now();
                if (r) { if (t1 - t0 < best[0]) best[0] = t1 - t0; if (t2 - t1 < best[1]) best[1] = t2 - t1; if (t3 - t2 < best[2]) best[2] = t3 - t2; }
            }
            printf("%-22s %2d  %5.1f  %5.1f  %5.1f\n", s[i].name, th, fl / best[0], fl / best[1], fl / best[2]);
        }
        free(x); free(w); free(dy); free(y); free(dx); free(dw);
    }
    return 0;
}
