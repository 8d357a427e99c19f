/* Every struct the library writes is deterministic byte for byte: two calls on an
 * unchanged state into structs pre-filled with DIFFERENT garbage compare equal under
 * memcmp (no padding byte keeps the caller's garbage or gets stack garbage; reserved
 * fields are written as 0). Regression test for issue 11's defect 6 (bc_kv_stats and
 * other output structs carried padding filled with varying bytes).
 * Needs the default model (read from <fixtures>/../../build/stage/model-path). */
#include "check.h"
#include "model_path.h"

#include <stdlib.h>

static bc_model *model;

/* Leaves different data on the stack before each of the two calls (the old library
 * copied stack bytes into padding), without changing any handle's state: a
 * tokenization, or a failing decode. */
static void stir(int k) {
    if (k == 0) {
        int32_t t[64];
        size_t n = 0;
        const char *text = "A longer text, so that tokenizing it leaves other bytes behind.";
        CHECK_OK(bc_tokenize(model, text, strlen(text), 1, 1, t, 64, &n));
    } else {
        CHECK_ERR(bc_decode(NULL, NULL, NULL, 0), BC_E_INVALID_ARGUMENT);
    }
}

/* Runs `call` (which writes through `p`, a T *) twice: into a struct filled with 0xA5
 * and into one filled with 0x5A (struct_size set in both), after different stir()s;
 * the results must be equal in every byte. */
#define SAME_BYTES(T, call)                                                             \
    do {                                                                                \
        T a_, b_;                                                                       \
        T *p;                                                                           \
        memset(&a_, 0xA5, sizeof a_);                                                   \
        memset(&b_, 0x5A, sizeof b_);                                                   \
        a_.struct_size = b_.struct_size = (uint32_t)sizeof(T);                         \
        p = &a_;                                                                        \
        stir(0);                                                                        \
        CHECK_OK(call);                                                                 \
        p = &b_;                                                                        \
        stir(1);                                                                        \
        CHECK_OK(call);                                                                 \
        check_count++;                                                                  \
        if (memcmp(&a_, &b_, sizeof(T)) != 0) {                                         \
            size_t i_;                                                                  \
            check_failures++;                                                           \
            for (i_ = 0; i_ < sizeof(T); i_++)                                          \
                if (((unsigned char *)&a_)[i_] != ((unsigned char *)&b_)[i_]) break;    \
            fprintf(stderr, "%s:%d: %s: two equal results differ at byte %lu of %lu\n", \
                    __FILE__, __LINE__, #call, (unsigned long)i_,                       \
                    (unsigned long)sizeof(T));                                          \
        }                                                                               \
    } while (0)

static void test_defaults(void) {
    SAME_BYTES(bc_optim_hparams, bc_optim_hparams_default(BC_OPTIM_ADAMW, p, sizeof *p));
    SAME_BYTES(bc_optim_hparams, bc_optim_hparams_default(BC_OPTIM_LAMB, p, sizeof *p));
    SAME_BYTES(bc_optim_step_params, bc_optim_step_params_default(p, sizeof *p));
    SAME_BYTES(bc_lr_schedule, bc_lr_schedule_default(p, sizeof *p));
    SAME_BYTES(bc_model_params, bc_model_params_default(p, sizeof *p));
    SAME_BYTES(bc_context_params, bc_context_params_default(p, sizeof *p));
    SAME_BYTES(bc_sampling_params, bc_sampling_params_default(p, sizeof *p));
    SAME_BYTES(bc_generate_params, bc_generate_params_default(p, sizeof *p));
    SAME_BYTES(bc_engine_params, bc_engine_params_default(p, sizeof *p));
    SAME_BYTES(bc_request_params, bc_request_params_default(p, sizeof *p));
}

static void test_optimizer(void) {
    /* Two optimizers with the same parameters and gradients: equal step results. */
    enum { N = 37 };
    float w1[N], g1[N], w2[N], g2[N];
    bc_optimizer *o1 = NULL, *o2 = NULL;
    int i;
    for (i = 0; i < N; i++) {
        w1[i] = w2[i] = 0.25f * (float)(i % 7) - 0.6f;
        g1[i] = g2[i] = 0.125f * (float)(i % 5) - 0.3f;
    }
    CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAMW, &o1));
    CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAMW, &o2));
    if (!o1 || !o2) {
        bc_optimizer_free(o1);
        bc_optimizer_free(o2);
        return;
    }
    CHECK_OK(bc_optimizer_add_group(o1, NULL, NULL));
    CHECK_OK(bc_optimizer_add_group(o2, NULL, NULL));
    CHECK_OK(bc_optimizer_add_tensor(o1, 0, "w", w1, g1, N, NULL));
    CHECK_OK(bc_optimizer_add_tensor(o2, 0, "w", w2, g2, N, NULL));
    SAME_BYTES(bc_optim_hparams, bc_optimizer_get_hparams(o1, 0, p));
    {
        bc_optim_step_result a, b;
        memset(&a, 0xA5, sizeof a);
        memset(&b, 0x5A, sizeof b);
        a.struct_size = b.struct_size = (uint32_t)sizeof a;
        stir(0);
        CHECK_OK(bc_optimizer_step(o1, NULL, &a));
        stir(1);
        CHECK_OK(bc_optimizer_step(o2, NULL, &b));
        CHECK(memcmp(&a, &b, sizeof a) == 0);
        CHECK(a.step == 1);
    }
    bc_optimizer_free(o1);
    bc_optimizer_free(o2);
}

static void test_model_context_engine(void) {
    SAME_BYTES(bc_model_info, bc_model_get_info(model, p));

    bc_context *ctx = NULL;
    CHECK_OK(bc_context_create(model, NULL, &ctx));
    if (ctx) {
        /* Empty, then holding a sequence (the state the defect was found in). */
        SAME_BYTES(bc_kv_stats, bc_context_kv_stats(ctx, p));
        bc_generate_params gp;
        CHECK_OK(bc_generate_params_default(&gp, sizeof gp));
        gp.max_tokens = 2;
        CHECK_OK(bc_generate(ctx, "The capital of France is", &gp, NULL, NULL));
        SAME_BYTES(bc_kv_stats, bc_context_kv_stats(ctx, p));
        bc_context_free(ctx);
    }

    bc_engine *e = NULL;
    CHECK_OK(bc_engine_create(model, NULL, &e));
    if (e) {
        uint64_t id = 0;
        SAME_BYTES(bc_engine_metrics, bc_engine_get_metrics(e, p));
        CHECK_OK(bc_engine_submit_text(e, "Hello", NULL, NULL, &id));
        CHECK_OK(bc_engine_cancel(e, id));
        SAME_BYTES(bc_engine_metrics, bc_engine_get_metrics(e, p));
        bc_engine_free(e);
    }
}

int main(int argc, char **argv) {
    char model_path[4096];
    int rc = model_path_from_args(argc, argv, model_path, sizeof model_path);
    if (rc) return rc;
    CHECK_OK(bc_model_load(model_path, NULL, &model));
    if (!model) CHECK_DONE();
    test_defaults();
    test_optimizer();
    test_model_context_engine();
    bc_model_free(model);
    CHECK_DONE();
}
