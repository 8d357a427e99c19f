/* Helpers the trainer C tests share: a micro-batch description, the last-token logits
 * of a fresh context (what inference sees of the model's current weights), a data file
 * of random words the tiny fixture's tokenizer knows, and a trainer + model + optimizer. */
#ifndef BC_TEST_TRAIN_HELPERS_H
#define BC_TEST_TRAIN_HELPERS_H

#include "check.h"
#include <stdint.h>
#include <stdlib.h>

/* A bc_train_batch over caller arrays; lengths NULL (docs 0) = one document. */
static inline bc_train_batch make_batch(const int32_t *tokens, const int32_t *targets, uint32_t n,
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
static inline void last_logits(bc_model *model, const int32_t *tokens, int n, float *out, int vocab) {
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
static inline void check_gradient_thread_invariance(bc_trainer *t, uint32_t index, const bc_train_batch *b,
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

/* Writes `lines` JSONL lines {"text": "w w w."} of 3 .. 2 + span random words (an LCG
 * from seed; the tiny fixture's tokenizer knows every character). Line bad_line
 * (1-based; 0 = none) is malformed JSON. */
static inline void write_word_lines(const char *path, int lines, unsigned seed, int span, int bad_line) {
    static const char *words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "Away", "big"};
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    for (int i = 1; i <= lines; i++) {
        if (i == bad_line) { fputs("{\"text\": oops}\n", f); continue; }
        fputs("{\"text\": \"", f);
        int n = 3 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % span;
        for (int k = 0; k < n; k++) fprintf(f, "%s%s", k ? " " : "", words[((seed = seed * 1103515245u + 12345u) >> 16) % 12]);
        fputs(".\"}\n", f);
    }
    fclose(f);
}

/* A trainer with its model and optimizer (the tests' open_run fill it). */
typedef struct { bc_model *model; bc_trainer *t; bc_optimizer *opt; } run_t;

static inline void close_run(run_t *r) {
    bc_optimizer_free(r->opt);
    bc_trainer_free(r->t);
    bc_model_free(r->model);
}

#endif
