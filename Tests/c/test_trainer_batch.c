/* Batch size control through the ABI on the tiny Hugging Face fixture model
 * (Tests/fixtures/train/tiny_tied): the noise scale reported after every data step,
 * the noise-driven controller changing the micro-batches only between steps, the
 * learning-rate factor of the rule (linear: kappa) and the optimizer's base rate
 * restored after each step (the update itself is checked in TrainerBatchSizeTests), and bad controls refused with nothing changed. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "train_helpers.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>


int main(int argc, char **argv) {
    if (argc < 2) return 2;
    char model_dir[4096], data[128];
    snprintf(model_dir, sizeof model_dir, "%s/train/tiny_tied", argv[1]);
    snprintf(data, sizeof data, "/tmp/bc-tbatch-%ld.jsonl", (long)getpid());
    write_word_lines(data, 200, (unsigned)getpid(), 8, 0);

    bc_model *model = NULL;
    CHECK_OK(bc_model_load(model_dir, NULL, &model));
    if (!model) return 1;
    bc_trainer_params tp;
    bc_trainer_params_default(&tp, sizeof tp);
    tp.micro_batch_tokens = 24; /* ~20 targets a micro-batch, well below the noise scale (~100) */
    tp.accumulation_steps = 2;
    bc_trainer *t = NULL;
    CHECK_OK(bc_trainer_create(model, &tp, &t));
    bc_train_data_params dp;
    bc_train_data_params_default(&dp, sizeof dp);
    dp.epochs = 3;
    dp.max_tokens = 24;
    dp.truncate = 1;
    CHECK_OK(bc_trainer_load_data(t, data, &dp, NULL));
    bc_optimizer *opt = NULL;
    CHECK_OK(bc_optimizer_create(BC_OPTIM_SGD, &opt));
    bc_optim_hparams hp;
    bc_optim_hparams_default(BC_OPTIM_SGD, &hp, sizeof hp);
    hp.lr = 0.05;
    uint32_t g = 0;
    CHECK_OK(bc_optimizer_add_group(opt, &hp, &g));
    CHECK_OK(bc_trainer_register(t, opt, g));

    bc_batch_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    CHECK_OK(bc_trainer_get_batch_stats(t, &st));
    CHECK(st.step == 0 && st.next_micro_batches == 2 && isnan(st.noise_scale));

    /* Defaults; bad controls are refused and change nothing. */
    bc_batch_control bc;
    CHECK_OK(bc_batch_control_default(&bc, sizeof bc));
    CHECK(bc.mode == BC_BATCH_FIXED && bc.min_micro_batches == 1 && bc.max_micro_batches == 1 && bc.noise_ema == 0.9 &&
          bc.lr_scaling == BC_LR_SCALE_NONE && bc.warmup_steps == 3);
    CHECK_ERR(bc_batch_control_default(NULL, sizeof bc), BC_E_INVALID_ARGUMENT);
    bc.mode = BC_BATCH_NOISE;
    bc.min_micro_batches = 1;
    bc.max_micro_batches = 16;
    CHECK_ERR(bc_trainer_set_batch_control(t, &bc), BC_E_INVALID_ARGUMENT);   /* noise needs min >= 2 */
    bc.min_micro_batches = 2;
    bc.mode = 7;
    CHECK_ERR(bc_trainer_set_batch_control(t, &bc), BC_E_INVALID_ARGUMENT);
    bc.mode = BC_BATCH_RAMP;
    CHECK_ERR(bc_trainer_set_batch_control(t, &bc), BC_E_INVALID_ARGUMENT);   /* ramp_steps 0 */
    bc.mode = BC_BATCH_NOISE;
    bc.noise_ema = 1.0;
    CHECK_ERR(bc_trainer_set_batch_control(t, &bc), BC_E_INVALID_ARGUMENT);
    bc.noise_ema = 0.9;
    bc.max_micro_batches = 1;
    CHECK_ERR(bc_trainer_set_batch_control(t, &bc), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_trainer_set_batch_control(NULL, &bc), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_trainer_get_batch_stats(t, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_trainer_get_batch_stats(t, &st));
    CHECK(st.next_micro_batches == 2);

    bc.max_micro_batches = 16;
    bc.warmup_steps = 1;
    bc.lr_scaling = BC_LR_SCALE_LINEAR;
    CHECK_OK(bc_trainer_set_batch_control(t, &bc));

    int64_t prev_next = 2, grew = 0;
    bc_train_result tot, pend;
    memset(&tot, 0, sizeof tot);
    tot.struct_size = sizeof tot;
    pend = tot;
    for (int s = 1; s <= 8; s++) {
        CHECK_OK(bc_trainer_train_step(t, opt, NULL, &tot, NULL));
        CHECK_OK(bc_trainer_get_batch_stats(t, &st));
        CHECK(st.step == s);
        CHECK(st.micro_batches == prev_next && tot.micro_batches == prev_next);  /* chosen at the last boundary */
        CHECK(st.big_targets == tot.targets && st.small_targets > 0 && st.small_targets < st.big_targets);
        CHECK(isfinite(st.small_sq_norm) && isfinite(st.big_sq_norm) && isfinite(st.grad_sq) && isfinite(st.trace));
        CHECK(isnan(st.noise_scale) == (st.grad_sq_ema <= 0 || st.trace_ema < 0));   /* unknown while either average is out of range */
        CHECK(st.kappa == (double)st.micro_batches / 2 && st.lr_scale == st.kappa);
        CHECK(st.next_micro_batches >= st.micro_batches && st.next_micro_batches <= 2 * st.micro_batches &&
              st.next_micro_batches <= 16);
        /* The choice is the controller's rule applied to this step's estimate: toward
         * ceil(B_simple / targets per micro-batch), at most doubling, never shrinking, in
         * [2, 16]; with no finite estimate yet, unchanged. (Whether it grows depends on
         * this run's data; growth itself is tested deterministically in the Swift suite.) */
        int64_t want = st.micro_batches;
        if (isfinite(st.noise_scale)) {
            double goal = ceil(st.noise_scale / ((double)st.big_targets / (double)st.micro_batches));
            int64_t g = goal >= 16 ? 16 : (int64_t)goal;
            want = g > want ? g : want;
            if (want > 2 * st.micro_batches) want = 2 * st.micro_batches;
            if (want < 2) want = 2;
            if (want > 16) want = 16;
        }
        CHECK(st.next_micro_batches == want);
        if (st.next_micro_batches > st.micro_batches) grew++;
        if (getenv("BC_TEST_VERBOSE")) printf("step %d: %lld mb, %lld/%lld targets, g2 %g tr %g B %g next %lld\n", s, (long long)st.micro_batches, (long long)st.small_targets, (long long)st.big_targets, st.grad_sq, st.trace, st.noise_scale, (long long)st.next_micro_batches);
        /* The pending state after the step is empty: the batch changes only here. */
        CHECK_OK(bc_trainer_pending(t, &pend));
        CHECK(pend.micro_batches == 0);
        bc_optim_hparams now;
        memset(&now, 0, sizeof now);
        now.struct_size = sizeof now;
        CHECK_OK(bc_optimizer_get_hparams(opt, g, &now));
        CHECK(now.lr == 0.05);
        prev_next = st.next_micro_batches;
    }
    if (getenv("BC_TEST_VERBOSE")) printf("noise controller grew %lld times in 8 steps\n", (long long)grew);

    /* A control change at a step boundary is accepted; with micro-batches pending it is not. */
    int32_t tokens[6] = {1, 2, 3, 4, 5, 6}, targets[6] = {2, 3, 4, 5, 6, -1};
    bc_train_batch b;
    memset(&b, 0, sizeof b);
    b.struct_size = sizeof b;
    b.n_tokens = 6;
    b.tokens = tokens;
    b.targets = targets;
    CHECK_OK(bc_trainer_micro_batch(t, &b, NULL));
    CHECK_ERR(bc_trainer_set_batch_control(t, &bc), BC_E_BAD_STATE);
    CHECK_OK(bc_trainer_discard(t));
    CHECK_OK(bc_trainer_set_batch_control(t, NULL));   /* back to fixed */
    CHECK_OK(bc_trainer_train_step(t, opt, NULL, &tot, NULL));
    CHECK_OK(bc_trainer_get_batch_stats(t, &st));
    CHECK(st.micro_batches == 2 && st.kappa == 1 && st.lr_scale == 1);

    bc_optimizer_free(opt);
    bc_trainer_free(t);
    bc_model_free(model);
    unlink(data);
    printf("trainer batch: %d checks, %d failures\n", check_count, check_failures);
    return check_failures != 0;
}
