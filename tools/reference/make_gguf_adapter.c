/* Writes a llama.cpp GGUF LoRA adapter with batchcore's own writer, through the C ABI only:
 * a LoRA trainer (rank R, all seven projections, alpha A) on MODEL loaded as f32 weights,
 * every lora_A / lora_B value replaced by a seeded uniform in +-amp (never zero; A's
 * amplitude 1/sqrt(cols), B's `b_amp`), then bc_trainer_save_adapter_gguf (and, with a
 * third argument, the same adapter as a PEFT directory via bc_trainer_save_adapter).
 * Used once by tools/reference/llama_lora_fixtures.py; the file is committed.
 *   make_gguf_adapter MODEL.gguf OUT.gguf [PEFT_DIR] [--rank R] [--alpha A] [--seed S] [--b-amp X] */
#define _POSIX_C_SOURCE 200809L
#include <batchcore.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                     \
    do {                                                                                             \
        bc_status st_ = (x);                                                                         \
        if (st_ != BC_OK) {                                                                          \
            fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #x, bc_status_string(st_),   \
                    bc_last_error());                                                                \
            exit(1);                                                                                 \
        }                                                                                            \
    } while (0)

static uint64_t rng = 0;
/* SplitMix64 -> uniform in [-1, 1) without 0 (|u| >= 2^-24). */
static double uniform_nonzero(void) {
    for (;;) {
        uint64_t z = (rng += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        double u = (double)(z >> 11) * (2.0 / 9007199254740992.0) - 1.0;
        if (fabs(u) >= 0x1p-24) return u;
    }
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL, *peft = NULL;
    unsigned rank = 2;
    float alpha = 4;
    double b_amp = 0.02;
    rng = 20261130;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rank") && i + 1 < argc) rank = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--alpha") && i + 1 < argc) alpha = (float)atof(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) rng = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--b-amp") && i + 1 < argc) b_amp = atof(argv[++i]);
        else if (!model_path) model_path = argv[i];
        else if (!out) out = argv[i];
        else if (!peft) peft = argv[i];
        else { fprintf(stderr, "unexpected argument %s\n", argv[i]); return 2; }
    }
    if (!model_path || !out) {
        fprintf(stderr, "usage: %s MODEL.gguf OUT.gguf [PEFT_DIR] [--rank R] [--alpha A] [--seed S] [--b-amp X]\n", argv[0]);
        return 2;
    }
    bc_model_params mp;
    CHECK(bc_model_params_default(&mp, sizeof mp));
    mp.weights = BC_MODEL_WEIGHTS_F32;
    bc_model *model = NULL;
    CHECK(bc_model_load(model_path, &mp, &model));
    bc_trainer_params tp;
    CHECK(bc_trainer_params_default(&tp, sizeof tp));
    tp.micro_batch_tokens = 64;
    tp.lora_rank = rank;
    tp.lora_alpha = alpha;
    tp.lora_targets = BC_LORA_ALL;
    tp.lora_seed = 1;
    bc_trainer *t = NULL;
    CHECK(bc_trainer_create(model, &tp, &t));
    uint32_t count = 0;
    CHECK(bc_trainer_tensor_count(t, &count));
    int64_t total = 0;
    for (uint32_t i = 0; i < count; i++) {
        bc_trainer_tensor tt;
        memset(&tt, 0, sizeof tt);
        tt.struct_size = sizeof tt;
        CHECK(bc_trainer_get_tensor(t, i, &tt));
        int is_b = strstr(tt.name, "lora_B") != NULL;
        double amp = is_b ? b_amp : 1.0 / sqrt((double)tt.cols);
        for (int64_t k = 0; k < tt.count; k++) tt.values[k] = (float)(amp * uniform_nonzero());
        total += tt.count;
    }
    CHECK(bc_trainer_sync(t));
    CHECK(bc_trainer_save_adapter_gguf(t, out));
    if (peft) CHECK(bc_trainer_save_adapter(t, peft));
    printf("wrote %s: %u tensors, %lld values, rank %u, alpha %g, b_amp %g\n", out, count, (long long)total, rank,
           (double)alpha, b_amp);
    bc_trainer_free(t);
    bc_model_free(model);
    return 0;
}
