/* batchcore model benchmark: prefill tokens/s (128- and 512-token prompts) and
 * decode tokens/s at batch 1, through the public C ABI; plus this machine's sgemm
 * peak (OpenBLAS, same thread count) for model FLOP utilisation.
 *   model_bench MODEL.gguf [--threads N] [--reps R] [--decode N]
 * Prints RESULT lines (see bench/run.sh). */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"
#include <batchcore.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>



static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}


int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: model_bench MODEL.gguf [--threads N] [--reps R] [--decode N]\n");
        return 2;
    }
    int threads = 2, reps = 3, n_decode = 64;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--decode")) n_decode = atoi(argv[i + 1]);
    }
    CHECK(bc_set_num_threads(threads));
    bc_model *model;
    CHECK(bc_model_load(argv[1], NULL, &model));
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(bc_model_get_info(model, &info));
    const int vocab = info.n_vocab;
    float *logits = malloc(sizeof(float) * (size_t)vocab);

    /* sgemm peak: 1024^3 single precision, best of 5. */
    {
        int n = 1024;
        float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
        for (int i = 0; i < n * n; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.2f; }
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            double t = now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
            t = now() - t;
            if (t < best) best = t;
        }
        printf("RESULT impl=openblas kind=sgemm_peak threads=%d gflops=%.1f\n", threads, 2.0 * n * n * n / best / 1e9);
        free(a); free(b); free(c);
    }

    int prompt_lengths[2] = {128, 512};
    for (int pl = 0; pl < 2; pl++) {
        int n = prompt_lengths[pl];
        int32_t *tokens = malloc(sizeof(int32_t) * (size_t)n), *pos = malloc(sizeof(int32_t) * (size_t)n),
                *seq = malloc(sizeof(int32_t) * (size_t)n);
        for (int i = 0; i < n; i++) { tokens[i] = (int32_t)((i * 7919 + 13) % (vocab - 100) + 50); pos[i] = i; seq[i] = 0; }
        double *pt = malloc(sizeof(double) * (size_t)reps), *dt = malloc(sizeof(double) * (size_t)reps);
        for (int r = 0; r < reps; r++) {
            bc_context *ctx;
            bc_context_params cp;
            CHECK(bc_context_params_default(&cp, sizeof cp));
            cp.n_ctx = 1024;
            CHECK(bc_context_create(model, &cp, &ctx));
            bc_batch b = {sizeof b, 0, NULL, NULL, NULL, NULL};
            b.n_tokens = n; b.tokens = tokens; b.pos = pos; b.seq_id = seq; b.logits = NULL;
            double t = now();
            CHECK(bc_decode(ctx, &b, logits, (size_t)vocab));
            pt[r] = now() - t;
            int32_t tok = 100, p, s = 0;
            t = now();
            for (int k = 0; k < n_decode; k++) {
                p = n + k;
                b.n_tokens = 1; b.tokens = &tok; b.pos = &p; b.seq_id = &s;
                CHECK(bc_decode(ctx, &b, logits, (size_t)vocab));
                int best = 0;
                for (int j = 1; j < vocab; j++) if (logits[j] > logits[best]) best = j;
                tok = best;
            }
            dt[r] = now() - t;
            bc_context_free(ctx);
        }
        double p_med = median(pt, reps), d_med = median(dt, reps);
        /* FLOPs per token: 2 x weights touched by matmuls (embedding lookup excluded, output
         * head included) + attention 4 x n_embd x (context length) per layer. */
        double weights = (double)info.n_params; /* tied output head = embedding: every weight is multiplied once per token */
        double attn_prefill = 4.0 * info.n_embd * (n / 2.0) * info.n_layer;
        double flops_prefill = (2.0 * weights + attn_prefill) * n;
        printf("RESULT impl=batchcore kind=prefill n=%d threads=%d tok_s=%.1f gflops=%.1f\n", n, threads, n / p_med,
               flops_prefill / p_med / 1e9);
        printf("RESULT impl=batchcore kind=decode n=%d threads=%d tok_s=%.1f\n", n, threads, n_decode / d_med);
        fflush(stdout);
        free(tokens); free(pos); free(seq); free(pt); free(dt);
    }
    free(logits);
    bc_model_free(model);
    return 0;
}
