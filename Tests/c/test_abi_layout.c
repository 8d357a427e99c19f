/* ABI 2 layouts: the grown structs (bc_batch, bc_event) have the byte offsets and
 * sizes the header documents, every public struct is free of implicit padding (its
 * size is the sum of its fields), the minimum sizes match ABI 2's sizeof, and
 * bc_batch_default follows the struct_size rules. Compiled as C99 and as C++. No model. */
#include "check.h"

#include <stddef.h>

#define OFFSET(T, f, at) CHECK(offsetof(T, f) == (at))
#define F(T, f) sizeof(((T *)0)->f)

static void test_batch_event_offsets(void) {
    /* bc_batch: struct_size 0, n_tokens 4, tokens 8, pos 16, seq_id 24, logits 32; 40. */
    OFFSET(bc_batch, struct_size, 0);
    OFFSET(bc_batch, n_tokens, 4);
    OFFSET(bc_batch, tokens, 8);
    OFFSET(bc_batch, pos, 16);
    OFFSET(bc_batch, seq_id, 24);
    OFFSET(bc_batch, logits, 32);
    CHECK(sizeof(bc_batch) == 40);
    CHECK(BC_BATCH_MIN_SIZE == 40);
    /* bc_event: see the header's offset list. */
    OFFSET(bc_event, kind, 0);
    OFFSET(bc_event, index, 4);
    OFFSET(bc_event, request_id, 8);
    OFFSET(bc_event, user_tag, 16);
    OFFSET(bc_event, token, 24);
    OFFSET(bc_event, logprob, 28);
    OFFSET(bc_event, text, 32);
    OFFSET(bc_event, text_len, 40);
    OFFSET(bc_event, finish_reason, 48);
    OFFSET(bc_event, prompt_tokens, 52);
    OFFSET(bc_event, cached_prompt_tokens, 56);
    OFFSET(bc_event, generated_tokens, 60);
    OFFSET(bc_event, ttft_seconds, 64);
    OFFSET(bc_event, itl_seconds, 72);
    OFFSET(bc_event, total_seconds, 80);
    OFFSET(bc_event, message, 88);
    CHECK(sizeof(bc_event) == 96);
    CHECK(BC_EVENT_MIN_SIZE == 96);
    CHECK(BC_ABI_VERSION == 2 && bc_abi_version() == 2);
}

/* No implicit padding anywhere: sizeof equals the sum of the field sizes. */
static void test_no_padding(void) {
    CHECK(sizeof(bc_batch) == F(bc_batch, struct_size) + F(bc_batch, n_tokens) + F(bc_batch, tokens) +
                                  F(bc_batch, pos) + F(bc_batch, seq_id) + F(bc_batch, logits));
    CHECK(sizeof(bc_event) == 4 * 2 + 8 * 2 + 4 + 4 + 8 + 8 + 4 * 4 + 8 * 3 + 8);
    CHECK(sizeof(bc_optim_hparams) == 4 + 4 + 11 * 8 + 8 * 4);
    CHECK(sizeof(bc_optim_step_params) == 4 + 4 + 8 + 8 + 4 + 4);
    CHECK(sizeof(bc_optim_step_result) == 4 + 4 + 8 + 8 + 8 + 4 + 4 + 4 + 4);
    CHECK(sizeof(bc_lr_schedule) == 4 + 4 + 8 * 5);
    CHECK(sizeof(bc_model_params) == 4 + 4 + F(bc_model_params, progress) + F(bc_model_params, progress_user_data) + 4 + 4);
    CHECK(sizeof(bc_model_info) == 4 + 32 + 4 + 8 + 7 * 4 + 4 + 4 * 4 + 8 + 64);
    CHECK(sizeof(bc_context_params) == 4 + 4 + 8 + 4 * 4 + 2 * sizeof(void *));
    CHECK(sizeof(bc_kv_stats) == 4 + 4 + 11 * 8);
    CHECK(sizeof(bc_sampling_params) == 4 + 9 * 4 + 8);
    CHECK(sizeof(bc_generate_params) == 4 * 6 + F(bc_generate_params, callback) + sizeof(void *));
    CHECK(sizeof(bc_generate_result) == 4 * 4 + 8 * 2);
    CHECK(sizeof(bc_engine_params) == 4 * 6 + 8 + 4 * 2 + 8 + 4 * 2);
    CHECK(sizeof(bc_request_params) == 4 * 6 + 8 + 4 * 2 + 8 + 4 * 2 + 8 + 8 + 4 * 2);
    CHECK(sizeof(bc_engine_metrics) == 4 + 4 + 8 * 20);
    CHECK(sizeof(bc_trainer_params) == 4 * 6 + 8 + 4 * 4 + 8 + 4 + 4 + 4 + 4);
    CHECK(sizeof(bc_trainer_memory) == 4 + 4 + 8 * 8);
    CHECK(sizeof(bc_trainer_tensor) == 4 + 4 + 3 * sizeof(void *) + 3 * 8);
    CHECK(sizeof(bc_train_batch) == 4 + 4 + 3 * sizeof(void *) + 4 + 4);
    CHECK(sizeof(bc_train_result) == 4 + 4 + 5 * 8);
    OFFSET(bc_train_batch, tokens, 8);
    OFFSET(bc_train_batch, n_documents, 8 + 3 * sizeof(void *));
    OFFSET(bc_trainer_params, memory_limit, 24);
    OFFSET(bc_trainer_params, lora_rank, 32);
    OFFSET(bc_trainer_params, lora_alpha, 36);
    OFFSET(bc_trainer_params, lora_targets, 40);
    OFFSET(bc_trainer_params, use_rslora, 44);
    OFFSET(bc_trainer_params, lora_seed, 48);
    OFFSET(bc_trainer_params, lora_dropout, 64);
}

static void test_batch_default(void) {
    unsigned char raw[sizeof(bc_batch) + 16];
    bc_batch b;
    size_t i;
    int zero = 1, untouched = 1;

    CHECK_ERR(bc_batch_default(NULL, sizeof b), BC_E_INVALID_ARGUMENT);
    memset(&b, 0x77, sizeof b);
    CHECK_ERR(bc_batch_default(&b, 2), BC_E_INVALID_ARGUMENT);
    CHECK(b.struct_size == 0x77777777u);

    memset(&b, 0x77, sizeof b);
    CHECK_OK(bc_batch_default(&b, sizeof b));
    CHECK(b.struct_size == sizeof b);
    CHECK(b.n_tokens == 0 && b.tokens == NULL && b.pos == NULL && b.seq_id == NULL && b.logits == NULL);
    for (i = 4; i < sizeof b; i++)
        if (((unsigned char *)&b)[i] != 0) zero = 0;
    CHECK(zero);

    /* A shorter size: only that many bytes are written. */
    memset(raw, 0x77, sizeof raw);
    CHECK_OK(bc_batch_default((bc_batch *)(void *)raw, 8));
    {
        uint32_t ss;
        memcpy(&ss, raw, sizeof ss);
        CHECK(ss == 8);
    }
    for (i = 8; i < sizeof raw; i++)
        if (raw[i] != 0x77) untouched = 0;
    CHECK(untouched);

    /* Positional initialization, as the README shows, is the same layout. */
    {
        int32_t t = 1, p = 0, s = 0;
        bc_batch c = {sizeof c, 1, &t, &p, &s, NULL};
        CHECK(c.struct_size == 40 && c.n_tokens == 1 && c.tokens == &t && c.logits == NULL);
    }
}

int main(void) {
    test_batch_event_offsets();
    test_no_padding();
    test_batch_default();
    CHECK_DONE();
}
