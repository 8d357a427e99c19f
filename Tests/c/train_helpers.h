/* Helpers the trainer C tests share: a micro-batch description and the last-token
 * logits of a fresh context (what inference sees of the model's current weights). */
#ifndef BC_TEST_TRAIN_HELPERS_H
#define BC_TEST_TRAIN_HELPERS_H

#include "check.h"
#include <stdint.h>
#include <stdlib.h>

/* A bc_train_batch over caller arrays; lengths NULL (docs 0) = one document. */
static bc_train_batch make_batch(const int32_t *tokens, const int32_t *targets, uint32_t n,
                                 const uint32_t *lengths, uint32_t docs) {
    bc_train_batch b;
    memset(&b, 0, sizeof b);
    b.struct_size = sizeof b;
    b.n_tokens = n;
    b.tokens = tokens;
    b.targets = targets;
    b.document_lengths = lengths;
    b.n_documents = docs;
    return b;
}

/* The logits of the last of `n` tokens decoded as one sequence in a new context. */
static void last_logits(bc_model *model, const int32_t *tokens, int n, float *out, int vocab) {
    bc_context *ctx = NULL;
    int32_t *pos = (int32_t *)malloc(sizeof(int32_t) * (size_t)n), *seq = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
    int8_t *want = (int8_t *)malloc((size_t)n);
    CHECK_OK(bc_context_create(model, NULL, &ctx));
    for (int i = 0; i < n; i++) { pos[i] = i; seq[i] = 0; want[i] = (int8_t)(i == n - 1); }
    bc_batch b;
    bc_batch_default(&b, sizeof b);
    b.n_tokens = n;
    b.tokens = tokens;
    b.pos = pos;
    b.seq_id = seq;
    b.logits = want;
    CHECK_OK(bc_decode(ctx, &b, out, (size_t)vocab));
    bc_context_free(ctx);
    free(pos);
    free(seq);
    free(want);
}

/* Runs micro-batch `b` with 1 and then 2 threads from zero gradients and checks that
 * tensor `index`'s gradient is the same bits; leaves the 2-thread gradient pending and
 * the thread count at its default. *r receives the micro-batch's result. */
static void check_gradient_thread_invariance(bc_trainer *t, uint32_t index, const bc_train_batch *b,
                                             bc_train_result *r) {
    bc_trainer_tensor tt;
    memset(&tt, 0, sizeof tt);
    tt.struct_size = sizeof tt;
    CHECK_OK(bc_trainer_get_tensor(t, index, &tt));
    float *g1 = (float *)malloc(sizeof(float) * (size_t)tt.count);
    CHECK_OK(bc_trainer_discard(t));
    CHECK_OK(bc_set_num_threads(1));
    CHECK_OK(bc_trainer_micro_batch(t, b, r));
    memcpy(g1, tt.grad, sizeof(float) * (size_t)tt.count);
    CHECK_OK(bc_trainer_discard(t));
    CHECK_OK(bc_set_num_threads(2));
    CHECK_OK(bc_trainer_micro_batch(t, b, r));
    CHECK(memcmp(g1, tt.grad, sizeof(float) * (size_t)tt.count) == 0);
    CHECK_OK(bc_set_num_threads(0));
    free(g1);
}

#endif
