/* Helpers the adapter C tests share: a PEFT adapter written by a LoRA trainer with
 * random non-zero B. */
#ifndef BC_TEST_ADAPTER_HELPERS_H
#define BC_TEST_ADAPTER_HELPERS_H

#include "check.h"
#include <stdint.h>

/* Writes a rank-4 adapter for `model` into dir: lora_alpha `alpha`, targets `targets`
 * (BC_LORA_* bits; 0 = the trainer's default), B uniform in ±amplitude/2 from an LCG
 * seeded with `seed` (A is the trainer's seeded init). */
static inline void write_random_adapter(bc_model *model, const char *dir, uint64_t seed, float alpha,
                                        uint32_t targets, float amplitude) {
    bc_trainer_params tp;
    CHECK_OK(bc_trainer_params_default(&tp, sizeof tp));
    tp.lora_rank = 4;
    tp.lora_alpha = alpha;
    if (targets) tp.lora_targets = targets;
    tp.lora_seed = seed;
    tp.micro_batch_tokens = 64;
    bc_trainer *t = NULL;
    CHECK_OK(bc_trainer_create(model, &tp, &t));
    if (!t) return;
    uint32_t count = 0;
    CHECK_OK(bc_trainer_tensor_count(t, &count));
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (uint32_t i = 0; i < count; i++) {
        bc_trainer_tensor tt;
        memset(&tt, 0, sizeof tt);
        tt.struct_size = sizeof tt;
        CHECK_OK(bc_trainer_get_tensor(t, i, &tt));
        if (!strstr(tt.name, "lora_B")) continue;
        for (int64_t k = 0; k < tt.count; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            tt.values[k] = ((float)((s >> 40) & 0xFFFF) / 65536.0f - 0.5f) * amplitude;
        }
    }
    CHECK_OK(bc_trainer_save_adapter(t, dir));
    bc_trainer_free(t);
}

#endif
