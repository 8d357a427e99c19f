/* batchcore long-prompt prefill benchmark: seconds and tokens/s to prefill one prompt
 * of each length in chunks (a continuous-batching engine's prompt chunks), F32 KV (or
 * F16 KV with --kv f16), through the public C ABI of whichever libbatchcore.so the
 * loader finds (run it twice with LD_LIBRARY_PATH pointing at a before and an after
 * build to compare; bench/prefill.sh runs it against llama.cpp, see bench/README.md
 * "prefill_long").
 *   prefill_bench MODEL.gguf [--threads N] [--chunk C] [--kv f32|f16] [--length N]...
 * Prints one RESULT line per length (impl=batchcore-f32kv or batchcore-f16kv). */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"
#include <batchcore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: prefill_bench MODEL.gguf [--threads N] [--chunk C] [--kv f32|f16] [--length N]...\n");
        return 2;
    }
    int threads = 2, chunk = 512, lengths[16], n_lengths = 0, f16 = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--chunk")) chunk = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--length") && n_lengths < 16) lengths[n_lengths++] = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kv")) {
            if (strcmp(argv[i + 1], "f32") && strcmp(argv[i + 1], "f16")) {
                fprintf(stderr, "prefill_bench: --kv f32 or f16\n");
                return 2;
            }
            f16 = !strcmp(argv[i + 1], "f16");
        }
    }
    if (n_lengths == 0) { lengths[0] = 2048; lengths[1] = 4096; lengths[2] = 8190; n_lengths = 3; }
    CHECK(bc_set_num_threads(threads));
    bc_model *model;
    CHECK(bc_model_load(argv[1], NULL, &model));
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(bc_model_get_info(model, &info));
    const int vocab = info.n_vocab;
    float *logits = malloc(sizeof(float) * (size_t)vocab);
    for (int li = 0; li < n_lengths; li++) {
        int n = lengths[li];
        int32_t *tokens = malloc(sizeof(int32_t) * (size_t)n), *pos = malloc(sizeof(int32_t) * (size_t)n),
                *seq = malloc(sizeof(int32_t) * (size_t)n);
        int8_t *want = malloc((size_t)n);
        for (int i = 0; i < n; i++) {
            tokens[i] = (int32_t)((i * 7919 + 13) % (vocab - 100) + 50);
            pos[i] = i; seq[i] = 0; want[i] = i == n - 1;
        }
        bc_context *ctx;
        bc_context_params cp;
        CHECK(bc_context_params_default(&cp, sizeof cp));
        cp.n_ctx = n;
        cp.kv_type = f16 ? BC_KV_F16 : BC_KV_F32;
        cp.kv_bytes = (int64_t)n * info.n_layer * 2 * (f16 ? 2 : 4) * (info.n_embd / info.n_head) * info.n_head_kv
                      + (64 << 20);
        cp.prefix_cache = 0;
        CHECK(bc_context_create(model, &cp, &ctx));
        double t = now();
        for (int s = 0; s < n; s += chunk) {
            int m = n - s < chunk ? n - s : chunk;
            bc_batch b = {sizeof b, m, tokens + s, pos + s, seq + s, want + s};
            CHECK(bc_decode(ctx, &b, logits, (size_t)vocab));
        }
        t = now() - t;
        float checksum = 0;
        for (int j = 0; j < vocab; j++) checksum += logits[j] * (float)(j % 7);
        printf("RESULT impl=batchcore-%s kind=prefill_long n=%d chunk=%d threads=%d seconds=%.2f tok_s=%.1f "
               "checksum=%.6e\n", f16 ? "f16kv" : "f32kv", n, chunk, threads, t, n / t, checksum);
        fflush(stdout);
        bc_context_free(ctx);
        free(tokens); free(pos); free(seq); free(want);
    }
    free(logits);
    bc_model_free(model);
    return 0;
}
