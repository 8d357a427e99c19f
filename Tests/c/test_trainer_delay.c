/* Gradient delay (bc_trainer_params.gradient_delay, asynchronous mode) through the ABI
 * on Tests/fixtures/train/tiny_tied:
 *  - the appended fields' defaults and checks (gradient_delay > 64, reserved1 != 0);
 *  - the memory statement: delayed_gradients = D x gradients, counted in `added`, and a
 *    memory_limit the FIFO does not fit in refused with BC_E_OUT_OF_MEMORY;
 *  - D = 2: the first two steps apply nothing (result.applied 0, step 0, weights the
 *    same bits), then each step's weights equal, bit for bit, a D = 0 trainer to which
 *    this test applies the gradient of step t-2 by hand (bc_optimizer_step with
 *    grad_scale 1 / that step's targets) — the gradients computed on the same weights;
 *  - a checkpoint saved with a full FIFO resumes bit-identically in a fresh trainer. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "train_helpers.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define STEPS 6
#define D 2
#define MAXN 48

static int open_run(run_t *r, const char *model_dir, uint32_t delay) {
    bc_trainer_params tp;
    bc_trainer_params_default(&tp, sizeof tp);
    tp.micro_batch_tokens = 64;
    tp.gradient_delay = delay;
    memset(r, 0, sizeof *r);
    CHECK_OK(bc_model_load(model_dir, NULL, &r->model));
    if (!r->model) return 1;
    CHECK_OK(bc_trainer_create(r->model, &tp, &r->t));
    CHECK_OK(bc_optimizer_create(BC_OPTIM_ADABRAKE, &r->opt));
    bc_optim_hparams hp;
    bc_optim_hparams_default(BC_OPTIM_ADABRAKE, &hp, sizeof hp);
    hp.lr = 0.05;
    hp.momentum = 0.9;
    hp.alpha = 0.5;
    uint32_t g;
    CHECK_OK(bc_optimizer_add_group(r->opt, &hp, &g));
    CHECK_OK(bc_trainer_register(r->t, r->opt, g));
    return 0;
}

/* All trainable values (or gradients) of t, concatenated; *n floats. */
static float *collect(bc_trainer *t, size_t *n, int grads) {
    uint32_t count = 0;
    CHECK_OK(bc_trainer_tensor_count(t, &count));
    bc_trainer_tensor tt;
    memset(&tt, 0, sizeof tt);
    tt.struct_size = sizeof tt;
    size_t total = 0;
    for (uint32_t i = 0; i < count; i++) { bc_trainer_get_tensor(t, i, &tt); total += (size_t)tt.count; }
    float *out = (float *)malloc(sizeof(float) * total);
    size_t at = 0;
    for (uint32_t i = 0; i < count; i++) {
        bc_trainer_get_tensor(t, i, &tt);
        memcpy(out + at, grads ? tt.grad : tt.values, sizeof(float) * (size_t)tt.count);
        at += (size_t)tt.count;
    }
    *n = total;
    return out;
}

static void put_grads(bc_trainer *t, const float *src) {
    uint32_t count = 0;
    bc_trainer_tensor_count(t, &count);
    bc_trainer_tensor tt;
    memset(&tt, 0, sizeof tt);
    tt.struct_size = sizeof tt;
    size_t at = 0;
    for (uint32_t i = 0; i < count; i++) {
        bc_trainer_get_tensor(t, i, &tt);
        memcpy(tt.grad, src + at, sizeof(float) * (size_t)tt.count);
        at += (size_t)tt.count;
    }
}

static int same_weights(bc_trainer *a, bc_trainer *b) {
    size_t na, nb;
    float *wa = collect(a, &na, 0), *wb = collect(b, &nb, 0);
    int same = na == nb && memcmp(wa, wb, sizeof(float) * na) == 0;
    free(wa);
    free(wb);
    return same;
}

static int32_t tokens[STEPS][MAXN], targets[STEPS][MAXN];
static uint32_t lengths[STEPS];

static void step_batch(run_t *r, int k, bc_optim_step_result *res, bc_train_result *tot) {
    bc_train_batch b = make_batch(tokens[k], targets[k], lengths[k], NULL, 0);
    CHECK_OK(bc_trainer_micro_batch(r->t, &b, NULL));
    CHECK_OK(bc_optim_step_result_default(res, sizeof *res));
    tot->struct_size = sizeof *tot;
    CHECK_OK(bc_trainer_step(r->t, r->opt, NULL, tot, res));
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    char model_dir[4096], ckpt[128];
    snprintf(model_dir, sizeof model_dir, "%s/train/tiny_tied", argv[1]);
    snprintf(ckpt, sizeof ckpt, "/tmp/bc-delay-ckpt-%ld", (long)getpid());

    /* Defaults and checks of the appended fields. */
    bc_trainer_params tp;
    memset(&tp, 0x55, sizeof tp);
    CHECK_OK(bc_trainer_params_default(&tp, sizeof tp));
    CHECK(tp.gradient_delay == 0 && tp.reserved1 == 0);
    tp.micro_batch_tokens = 64;
    bc_model *m = NULL;
    CHECK_OK(bc_model_load(model_dir, NULL, &m));
    if (!m) return 1;
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK_OK(bc_model_get_info(m, &info));
    bc_trainer *bad = NULL;
    tp.gradient_delay = 65;
    CHECK_ERR(bc_trainer_create(m, &tp, &bad), BC_E_INVALID_ARGUMENT);
    tp.gradient_delay = 2;
    tp.reserved1 = 1;
    CHECK_ERR(bc_trainer_create(m, &tp, &bad), BC_E_INVALID_ARGUMENT);
    tp.reserved1 = 0;
    CHECK(bad == NULL);

    /* The memory statement counts the FIFO; a limit it does not fit in is refused. */
    bc_trainer_memory m0, m8;
    memset(&m0, 0, sizeof m0); m0.struct_size = sizeof m0;
    memset(&m8, 0, sizeof m8); m8.struct_size = sizeof m8;
    tp.gradient_delay = 0;
    CHECK_OK(bc_trainer_estimate(m, &tp, &m0));
    tp.gradient_delay = 8;
    CHECK_OK(bc_trainer_estimate(m, &tp, &m8));
    CHECK(m0.delayed_gradients == 0 && m0.gradients > 0);
    CHECK(m8.delayed_gradients == 8 * m8.gradients && m8.added == m0.added + 8 * m0.gradients);
    tp.memory_limit = m0.added + 7 * m0.gradients;
    CHECK_ERR(bc_trainer_create(m, &tp, &bad), BC_E_OUT_OF_MEMORY);
    tp.memory_limit = m0.added + 8 * m0.gradients;
    CHECK_OK(bc_trainer_create(m, &tp, &bad));
    bc_trainer_free(bad);
    bc_model_free(m);

    /* Batches of random tokens, odd lengths. */
    uint64_t s = 4242;
    for (int k = 0; k < STEPS; k++) {
        lengths[k] = 17 + (uint32_t)(k * 5) % 29;
        for (uint32_t i = 0; i < lengths[k]; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            tokens[k][i] = (int32_t)((s >> 33) % (uint64_t)info.n_vocab);
        }
        for (uint32_t i = 0; i < lengths[k]; i++) targets[k][i] = i + 1 < lengths[k] ? tokens[k][i + 1] : -1;
    }

    run_t a, ref;
    if (open_run(&a, model_dir, D) || open_run(&ref, model_dir, 0)) return 1;
    size_t n0;
    float *initial = collect(a.t, &n0, 0);
    float *fifo[STEPS];
    int64_t fifo_targets[STEPS];
    for (int k = 0; k < STEPS; k++) {
        bc_optim_step_result res;
        bc_train_result tot;
        step_batch(&a, k, &res, &tot);
        CHECK(res.applied == (k >= D) && res.skipped == 0);
        CHECK(res.step == (k >= D ? k - D + 1 : 0));
        /* The reference: the gradient on the same weights, applied D steps later by hand. */
        bc_train_batch b = make_batch(tokens[k], targets[k], lengths[k], NULL, 0);
        bc_train_result r;
        memset(&r, 0, sizeof r);
        r.struct_size = sizeof r;
        CHECK_OK(bc_trainer_micro_batch(ref.t, &b, &r));
        CHECK(r.targets == tot.targets && r.loss_sum == tot.loss_sum);
        size_t n;
        fifo[k] = collect(ref.t, &n, 1);
        fifo_targets[k] = r.targets;
        CHECK_OK(bc_trainer_discard(ref.t));
        if (k >= D) {
            put_grads(ref.t, fifo[k - D]);
            bc_optim_step_params sp;
            CHECK_OK(bc_optim_step_params_default(&sp, sizeof sp));
            sp.grad_scale = 1.0 / (double)fifo_targets[k - D];
            bc_optim_step_result rr;
            CHECK_OK(bc_optim_step_result_default(&rr, sizeof rr));
            CHECK(rr.applied == 0);
            CHECK_OK(bc_optimizer_step(ref.opt, &sp, &rr));
            CHECK(rr.applied == 1);
            CHECK_OK(bc_trainer_sync(ref.t));
            CHECK_OK(bc_trainer_discard(ref.t));
        }
        CHECK(same_weights(a.t, ref.t));
        size_t n1;
        float *w = collect(a.t, &n1, 0);
        CHECK((memcmp(w, initial, sizeof(float) * n0) == 0) == (k < D));
        free(w);
        /* Save a checkpoint with a full FIFO after step D + 1. */
        if (k == D) CHECK_OK(bc_trainer_save_checkpoint(a.t, a.opt, ckpt));
    }
    /* Resume from the checkpoint: the same remaining steps give the same bits. */
    run_t c;
    if (open_run(&c, model_dir, D)) return 1;
    CHECK_OK(bc_trainer_load_checkpoint(c.t, c.opt, ckpt));
    for (int k = D + 1; k < STEPS; k++) {
        bc_optim_step_result res;
        bc_train_result tot;
        step_batch(&c, k, &res, &tot);
        CHECK(res.applied == 1);
    }
    CHECK(same_weights(a.t, c.t));
    /* A trainer without delay refuses it. */
    CHECK_ERR(bc_trainer_load_checkpoint(ref.t, ref.opt, ckpt), BC_E_INVALID_ARGUMENT);

    for (int k = 0; k < STEPS; k++) free(fifo[k]);
    free(initial);
    close_run(&c);
    close_run(&a);
    close_run(&ref);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", ckpt);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", ckpt);
    CHECK_DONE();
}
