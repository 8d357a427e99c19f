/* Optimizer and runtime C ABI: invalid arguments give the documented status and a
 * message and change nothing; defaults, hyperparameter round trips, info, threads;
 * a non-finite gradient skips the step exactly (twin comparison).
 * Save/load, schedules and EMA are covered by test_optim_state.c and
 * test_optim_schedule.c. */
#include "check.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

/* Unknown group ids: the header lists "unknown group" as an error without naming the
 * code; BC_E_INVALID_ARGUMENT ("out-of-range value") and BC_E_NOT_FOUND ("a named
 * item (tensor, key, id) does not exist") both fit, so either is accepted. */
#define CHECK_ERR_ID(call)                                                                 \
    do {                                                                                   \
        bc_status st_ = (call);                                                            \
        const char *msg_ = bc_last_error();                                                \
        check_count++;                                                                     \
        if ((st_ != BC_E_INVALID_ARGUMENT && st_ != BC_E_NOT_FOUND) || msg_ == NULL ||     \
            msg_[0] == '\0') {                                                             \
            check_failures++;                                                              \
            fprintf(stderr, "%s:%d: %s: expected invalid argument or not found, got %s\n", \
                    __FILE__, __LINE__, #call, bc_status_string(st_));                     \
        }                                                                                  \
    } while (0)

static const bc_optim_algorithm all_algorithms[] = {BC_OPTIM_SGD,     BC_OPTIM_ADAM, BC_OPTIM_ADAMW,
                                                    BC_OPTIM_ADAGRAD, BC_OPTIM_RMSPROP, BC_OPTIM_LAMB,
                                                    BC_OPTIM_LION,    BC_OPTIM_ADABRAKE};
#define N_ALGORITHMS ((int)(sizeof all_algorithms / sizeof all_algorithms[0]))

static void info(const bc_optimizer *opt, uint32_t *groups, uint32_t *tensors, int64_t *params) {
    CHECK_OK(bc_optimizer_info(opt, groups, tensors, params));
}

static int same_hparams(const bc_optim_hparams *a, const bc_optim_hparams *b) {
    return a->lr == b->lr && a->weight_decay == b->weight_decay && a->beta1 == b->beta1 &&
           a->beta2 == b->beta2 && a->eps == b->eps && a->momentum == b->momentum &&
           a->dampening == b->dampening && a->alpha == b->alpha && a->lr_decay == b->lr_decay &&
           a->initial_accumulator_value == b->initial_accumulator_value &&
           a->max_grad_norm == b->max_grad_norm && a->nesterov == b->nesterov && a->amsgrad == b->amsgrad &&
           a->centered == b->centered && a->maximize == b->maximize &&
           a->grad_averaging == b->grad_averaging && a->trust_clip == b->trust_clip &&
           a->always_adapt == b->always_adapt;
}

/* ---------------------------------------------------------------- runtime */

static void test_threads(void) {
    CHECK(bc_get_num_threads() > 0);
    CHECK_ERR(bc_set_num_threads(-1), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_set_num_threads(4097), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_set_num_threads(INT32_MIN), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_set_num_threads(INT32_MAX), BC_E_INVALID_ARGUMENT);
    CHECK(bc_get_num_threads() > 0);
    CHECK_OK(bc_set_num_threads(1));
    CHECK(bc_get_num_threads() == 1);
    CHECK_OK(bc_set_num_threads(3));
    CHECK(bc_get_num_threads() == 3);
    /* A failing call leaves the setting alone. */
    CHECK_ERR(bc_set_num_threads(-5), BC_E_INVALID_ARGUMENT);
    CHECK(bc_get_num_threads() == 3);
    CHECK_OK(bc_set_num_threads(0));
    CHECK(bc_get_num_threads() >= 1);
}

/* ---------------------------------------------------------------- defaults */

static void test_hparams_default(void) {
    bc_optim_hparams hp;
    memset(&hp, 0, sizeof hp);
    CHECK_OK(bc_optim_hparams_default(BC_OPTIM_ADAM, &hp, sizeof hp));
    CHECK(hp.struct_size == sizeof hp);
    CHECK(hp.lr == 1e-3);
    CHECK(hp.beta1 == 0.9);
    CHECK(hp.beta2 == 0.999);
    CHECK(hp.eps == 1e-8);
    CHECK(hp.weight_decay == 0);
    CHECK(hp.amsgrad == 0 && hp.maximize == 0);

    /* PyTorch: AdamW weight_decay 1e-2; SGD has no momentum by default. */
    CHECK_OK(bc_optim_hparams_default(BC_OPTIM_ADAMW, &hp, sizeof hp));
    CHECK(hp.lr == 1e-3 && hp.weight_decay == 1e-2 && hp.beta1 == 0.9 && hp.beta2 == 0.999 && hp.eps == 1e-8);
    CHECK_OK(bc_optim_hparams_default(BC_OPTIM_SGD, &hp, sizeof hp));
    CHECK(hp.momentum == 0 && hp.dampening == 0 && hp.nesterov == 0 && hp.weight_decay == 0);
    CHECK_OK(bc_optim_hparams_default(BC_OPTIM_ADAGRAD, &hp, sizeof hp));
    CHECK(hp.lr == 1e-2 && hp.eps == 1e-10 && hp.lr_decay == 0 && hp.initial_accumulator_value == 0);
    CHECK_OK(bc_optim_hparams_default(BC_OPTIM_RMSPROP, &hp, sizeof hp));
    CHECK(hp.lr == 1e-2 && hp.alpha == 0.99 && hp.eps == 1e-8 && hp.centered == 0 && hp.momentum == 0);
    for (int i = 0; i < N_ALGORITHMS; i++) {
        bc_optim_hparams h;
        memset(&h, 0xEE, sizeof h);
        CHECK_OK(bc_optim_hparams_default(all_algorithms[i], &h, sizeof h));
        CHECK(h.struct_size == sizeof h);
        CHECK(h.lr > 0 && isfinite(h.lr));
        CHECK(h.beta1 >= 0 && h.beta1 < 1);
        /* Defaults must be accepted as a group. */
        bc_optimizer *opt = NULL;
        CHECK_OK(bc_optimizer_create(all_algorithms[i], &opt));
        uint32_t g = 77;
        CHECK_OK(bc_optimizer_add_group(opt, &h, &g));
        CHECK(g == 0);
        CHECK_OK(bc_optimizer_add_group(opt, NULL, &g)); /* NULL = defaults */
        CHECK(g == 1);
        bc_optim_hparams back;
        bc_optim_hparams_default(all_algorithms[i], &back, sizeof back);
        back.lr = 12345;
        CHECK_OK(bc_optimizer_get_hparams(opt, 1, &back));
        CHECK(same_hparams(&back, &h));
        bc_optimizer_free(opt);
    }

    /* Errors: NULL out, size < 4, unknown algorithm; nothing written. */
    CHECK_ERR(bc_optim_hparams_default(BC_OPTIM_ADAM, NULL, sizeof hp), BC_E_INVALID_ARGUMENT);
    memset(&hp, 0x5A, sizeof hp);
    bc_optim_hparams untouched;
    memcpy(&untouched, &hp, sizeof hp);
    CHECK_ERR(bc_optim_hparams_default(BC_OPTIM_ADAM, &hp, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optim_hparams_default(BC_OPTIM_ADAM, &hp, 3), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optim_hparams_default((bc_optim_algorithm)99, &hp, sizeof hp), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optim_hparams_default((bc_optim_algorithm)0, &hp, sizeof hp), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optim_hparams_default((bc_optim_algorithm)-1, &hp, sizeof hp), BC_E_INVALID_ARGUMENT);
    CHECK(memcmp(&hp, &untouched, sizeof hp) == 0);

    /* An older caller: only the bytes `size` covers are written. */
    unsigned char raw[sizeof(bc_optim_hparams)];
    memset(raw, 0xAB, sizeof raw);
    size_t partial = offsetof(bc_optim_hparams, weight_decay);
    CHECK_OK(bc_optim_hparams_default(BC_OPTIM_ADAM, (bc_optim_hparams *)(void *)raw, partial));
    {
        uint32_t ss;
        double lr;
        memcpy(&ss, raw, sizeof ss);
        memcpy(&lr, raw + offsetof(bc_optim_hparams, lr), sizeof lr);
        CHECK(ss == partial);
        CHECK(lr == 1e-3);
        int intact = 1;
        for (size_t i = partial; i < sizeof raw; i++) intact &= raw[i] == 0xAB;
        CHECK(intact);
    }
    memset(raw, 0xAB, sizeof raw);
    CHECK_OK(bc_optim_hparams_default(BC_OPTIM_ADAM, (bc_optim_hparams *)(void *)raw, 4));
    {
        uint32_t ss;
        memcpy(&ss, raw, sizeof ss);
        CHECK(ss == 4);
        int intact = 1;
        for (size_t i = 4; i < sizeof raw; i++) intact &= raw[i] == 0xAB;
        CHECK(intact);
    }

    /* Step params. */
    bc_optim_step_params sp;
    memset(&sp, 0, sizeof sp);
    CHECK_OK(bc_optim_step_params_default(&sp, sizeof sp));
    CHECK(sp.struct_size == sizeof sp);
    CHECK(sp.grad_scale == 1.0);
    CHECK(sp.max_grad_norm == 0.0);
    CHECK(sp.check_finite == 1);
    CHECK_ERR(bc_optim_step_params_default(NULL, sizeof sp), BC_E_INVALID_ARGUMENT);
    memset(&sp, 0x33, sizeof sp);
    bc_optim_step_params sp_copy;
    memcpy(&sp_copy, &sp, sizeof sp);
    CHECK_ERR(bc_optim_step_params_default(&sp, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optim_step_params_default(&sp, 2), BC_E_INVALID_ARGUMENT);
    CHECK(memcmp(&sp, &sp_copy, sizeof sp) == 0);
}

/* ---------------------------------------------------------------- create / groups */

static void test_create_and_groups(void) {
    bc_optimizer *opt = (bc_optimizer *)(void *)&opt; /* sentinel: must stay as is on error */
    bc_optimizer *sentinel = opt;
    CHECK_ERR(bc_optimizer_create(BC_OPTIM_ADAM, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_create((bc_optim_algorithm)99, &opt), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_create((bc_optim_algorithm)0, &opt), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_create((bc_optim_algorithm)9, &opt), BC_E_INVALID_ARGUMENT);
    CHECK(opt == sentinel);

    /* free(NULL) is a no-op. */
    bc_optimizer_free(NULL);

    /* The message stays until the next failure: successful calls leave it alone. */
    CHECK_ERR(bc_optimizer_create((bc_optim_algorithm)99, &opt), BC_E_INVALID_ARGUMENT);
    char saved[512];
    strncpy(saved, bc_last_error(), sizeof saved - 1);
    saved[sizeof saved - 1] = '\0';
    CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAM, &opt));
    CHECK(opt != NULL && opt != sentinel);
    CHECK(strcmp(bc_last_error(), saved) == 0);

    uint32_t groups = 9, tensors = 9;
    int64_t params = 9;
    info(opt, &groups, &tensors, &params);
    CHECK(groups == 0 && tensors == 0 && params == 0);
    CHECK_ERR(bc_optimizer_info(NULL, &groups, &tensors, &params), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_info(opt, NULL, NULL, NULL), BC_E_INVALID_ARGUMENT);

    bc_optim_hparams hp;
    CHECK_OK(bc_optim_hparams_default(BC_OPTIM_ADAM, &hp, sizeof hp));
    uint32_t gid = 4242;
    CHECK_ERR(bc_optimizer_add_group(NULL, &hp, &gid), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_add_group(NULL, NULL, NULL), BC_E_INVALID_ARGUMENT);

    bc_optim_hparams bad = hp;
    bad.lr = -1e-3;
    CHECK_ERR(bc_optimizer_add_group(opt, &bad, &gid), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.lr = NAN;
    CHECK_ERR(bc_optimizer_add_group(opt, &bad, &gid), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.lr = INFINITY;
    CHECK_ERR(bc_optimizer_add_group(opt, &bad, &gid), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.beta1 = 1.0;
    CHECK_ERR(bc_optimizer_add_group(opt, &bad, &gid), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.beta1 = -0.1;
    CHECK_ERR(bc_optimizer_add_group(opt, &bad, &gid), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.beta2 = 1.0;
    CHECK_ERR(bc_optimizer_add_group(opt, &bad, &gid), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.beta2 = NAN;
    CHECK_ERR(bc_optimizer_add_group(opt, &bad, &gid), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.eps = -1e-8;
    CHECK_ERR(bc_optimizer_add_group(opt, &bad, &gid), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.weight_decay = -0.01;
    CHECK_ERR(bc_optimizer_add_group(opt, &bad, &gid), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.struct_size = 0;
    CHECK_ERR(bc_optimizer_add_group(opt, &bad, &gid), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.struct_size = 2;
    CHECK_ERR(bc_optimizer_add_group(opt, &bad, &gid), BC_E_INVALID_ARGUMENT);
    CHECK(gid == 4242);
    info(opt, &groups, &tensors, &params);
    CHECK(groups == 0);

    /* Lion allows beta2 = 1 (header: "Lion in [0,1]"), not beta1 = 1. */
    {
        bc_optimizer *lion = NULL;
        CHECK_OK(bc_optimizer_create(BC_OPTIM_LION, &lion));
        bc_optim_hparams lh;
        CHECK_OK(bc_optim_hparams_default(BC_OPTIM_LION, &lh, sizeof lh));
        lh.beta2 = 1.0;
        CHECK_OK(bc_optimizer_add_group(lion, &lh, NULL));
        lh.beta2 = 1.0000001;
        CHECK_ERR(bc_optimizer_add_group(lion, &lh, NULL), BC_E_INVALID_ARGUMENT);
        lh.beta2 = 0.99;
        lh.beta1 = 1.0;
        CHECK_ERR(bc_optimizer_add_group(lion, &lh, NULL), BC_E_INVALID_ARGUMENT);
        bc_optimizer_free(lion);
    }

    /* An older caller's shorter struct: the fields it does not cover get defaults. */
    {
        bc_optimizer *aw = NULL;
        CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAMW, &aw));
        bc_optim_hparams h;
        memset(&h, 0, sizeof h);
        h.struct_size = (uint32_t)offsetof(bc_optim_hparams, weight_decay);
        h.lr = 0.25;
        h.weight_decay = -5; /* beyond struct_size: must be ignored */
        h.beta1 = 7;
        CHECK_OK(bc_optimizer_add_group(aw, &h, &gid));
        CHECK(gid == 0);
        bc_optim_hparams back, def;
        CHECK_OK(bc_optim_hparams_default(BC_OPTIM_ADAMW, &back, sizeof back));
        def = back;
        CHECK_OK(bc_optimizer_get_hparams(aw, 0, &back));
        def.lr = 0.25;
        CHECK(same_hparams(&back, &def));
        bc_optimizer_free(aw);
    }

    CHECK_OK(bc_optimizer_add_group(opt, &hp, &gid));
    CHECK(gid == 0);
    CHECK_OK(bc_optimizer_add_group(opt, &hp, NULL));
    hp.lr = 0.5;
    hp.weight_decay = 0.125;
    hp.amsgrad = 1;
    CHECK_OK(bc_optimizer_add_group(opt, &hp, &gid));
    CHECK(gid == 2);
    info(opt, &groups, &tensors, &params);
    CHECK(groups == 3 && tensors == 0 && params == 0);

    /* get/set round trip. */
    bc_optim_hparams got;
    CHECK_OK(bc_optim_hparams_default(BC_OPTIM_ADAM, &got, sizeof got));
    CHECK_OK(bc_optimizer_get_hparams(opt, 2, &got));
    CHECK(same_hparams(&got, &hp));
    CHECK(got.struct_size == sizeof got);
    bc_optim_hparams nh = hp;
    nh.lr = 0.0; /* lr 0 is allowed */
    nh.beta1 = 0.0;
    nh.beta2 = 0.5;
    nh.eps = 0.0;
    nh.weight_decay = 0.0;
    nh.amsgrad = 0;
    nh.maximize = 1;
    CHECK_OK(bc_optimizer_set_hparams(opt, 1, &nh));
    CHECK_OK(bc_optimizer_get_hparams(opt, 1, &got));
    CHECK(same_hparams(&got, &nh));
    CHECK_OK(bc_optimizer_get_hparams(opt, 2, &got));
    CHECK(same_hparams(&got, &hp)); /* other groups untouched */

    /* get_hparams errors. */
    bc_optim_hparams out;
    memset(&out, 0x11, sizeof out);
    out.struct_size = sizeof out;
    bc_optim_hparams out_copy = out;
    CHECK_ERR(bc_optimizer_get_hparams(NULL, 0, &out), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_get_hparams(opt, 0, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR_ID(bc_optimizer_get_hparams(opt, 3, &out));
    CHECK_ERR_ID(bc_optimizer_get_hparams(opt, BC_ALL_GROUPS, &out));
    CHECK(memcmp(&out, &out_copy, sizeof out) == 0);
    out.struct_size = 0;
    out_copy = out;
    CHECK_ERR(bc_optimizer_get_hparams(opt, 0, &out), BC_E_INVALID_ARGUMENT);
    CHECK(memcmp(&out, &out_copy, sizeof out) == 0);
    /* A short struct_size: only those bytes are written. */
    {
        unsigned char raw[sizeof(bc_optim_hparams)];
        memset(raw, 0xCD, sizeof raw);
        uint32_t ss = (uint32_t)offsetof(bc_optim_hparams, weight_decay);
        memcpy(raw, &ss, sizeof ss);
        CHECK_OK(bc_optimizer_get_hparams(opt, 2, (bc_optim_hparams *)(void *)raw));
        double lr;
        uint32_t ss2;
        memcpy(&ss2, raw, sizeof ss2);
        memcpy(&lr, raw + offsetof(bc_optim_hparams, lr), sizeof lr);
        CHECK(ss2 == ss);
        CHECK(lr == 0.5);
        int intact = 1;
        for (size_t i = ss; i < sizeof raw; i++) intact &= raw[i] == 0xCD;
        CHECK(intact);
    }

    /* set_hparams errors: nothing changes. */
    bad = hp;
    bad.lr = -1;
    CHECK_ERR(bc_optimizer_set_hparams(NULL, 0, &hp), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_set_hparams(opt, 0, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_set_hparams(opt, 2, &bad), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.lr = NAN;
    CHECK_ERR(bc_optimizer_set_hparams(opt, 2, &bad), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.beta1 = 1.0;
    bad.lr = 0.75;
    CHECK_ERR(bc_optimizer_set_hparams(opt, 2, &bad), BC_E_INVALID_ARGUMENT);
    bad = hp;
    bad.struct_size = 0;
    bad.lr = 0.75;
    CHECK_ERR(bc_optimizer_set_hparams(opt, 2, &bad), BC_E_INVALID_ARGUMENT);
    CHECK_ERR_ID(bc_optimizer_set_hparams(opt, 3, &hp));
    CHECK_ERR_ID(bc_optimizer_set_hparams(opt, BC_ALL_GROUPS, &hp));
    CHECK_OK(bc_optimizer_get_hparams(opt, 2, &got));
    CHECK(same_hparams(&got, &hp));

    /* set_lr. */
    CHECK_ERR(bc_optimizer_set_lr(NULL, 0, 0.1), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_set_lr(opt, 0, -0.1), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_set_lr(opt, 0, NAN), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_set_lr(opt, 0, INFINITY), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_set_lr(opt, BC_ALL_GROUPS, -1.0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_set_lr(opt, BC_ALL_GROUPS, NAN), BC_E_INVALID_ARGUMENT);
    CHECK_ERR_ID(bc_optimizer_set_lr(opt, 3, 0.1));
    CHECK_ERR_ID(bc_optimizer_set_lr(opt, 1000000, 0.1));
    CHECK_OK(bc_optimizer_get_hparams(opt, 2, &got));
    CHECK(got.lr == 0.5);
    CHECK_OK(bc_optimizer_set_lr(opt, 1, 0.03125));
    CHECK_OK(bc_optimizer_get_hparams(opt, 1, &got));
    CHECK(got.lr == 0.03125);
    CHECK_OK(bc_optimizer_get_hparams(opt, 0, &got));
    CHECK(got.lr == 1e-3);
    CHECK_OK(bc_optimizer_set_lr(opt, BC_ALL_GROUPS, 0.0625));
    for (uint32_t g = 0; g < 3; g++) {
        CHECK_OK(bc_optimizer_get_hparams(opt, g, &got));
        CHECK(got.lr == 0.0625);
    }
    bc_optimizer_free(opt);
}

/* ---------------------------------------------------------------- tensors */

static void test_tensors(void) {
    float w[64], dw[64], v[16], dv[16];
    memset(w, 0, sizeof w);
    memset(dw, 0, sizeof dw);
    memset(v, 0, sizeof v);
    memset(dv, 0, sizeof dv);
    bc_optimizer *opt = NULL;
    CHECK_OK(bc_optimizer_create(BC_OPTIM_SGD, &opt));
    uint32_t tid = 999;

    /* No group yet. */
    CHECK_ERR_ID(bc_optimizer_add_tensor(opt, 0, "w", w, dw, 8, &tid));
    CHECK_OK(bc_optimizer_add_group(opt, NULL, NULL));

    CHECK_ERR(bc_optimizer_add_tensor(NULL, 0, "w", w, dw, 8, &tid), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "w", NULL, dw, 8, &tid), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "w", w, NULL, 8, &tid), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "w", w, dw, 0, &tid), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "w", w, dw, -1, &tid), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "w", w, dw, INT64_MIN, &tid), BC_E_INVALID_ARGUMENT);
    CHECK_ERR_ID(bc_optimizer_add_tensor(opt, 1, "w", w, dw, 8, &tid));
    CHECK_ERR_ID(bc_optimizer_add_tensor(opt, BC_ALL_GROUPS, "w", w, dw, 8, &tid));
    /* grad overlapping param: the same buffer, or a partial overlap either way. */
    CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "w", w, w, 8, &tid), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "w", w, w + 7, 8, &tid), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "w", w + 4, w, 8, &tid), BC_E_INVALID_ARGUMENT);
    CHECK(tid == 999);
    uint32_t groups, tensors;
    int64_t params;
    info(opt, &groups, &tensors, &params);
    CHECK(groups == 1 && tensors == 0 && params == 0);

    /* Adjacent (non-overlapping) param and grad in one array are fine. */
    CHECK_OK(bc_optimizer_add_tensor(opt, 0, "w", w, w + 8, 8, &tid));
    CHECK(tid == 0);

    /* Duplicate / overlapping param registrations. */
    CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "w2", w, dw, 8, &tid), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "w2", w + 7, dw, 4, &tid), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "w2", w + 2, dw, 2, &tid), BC_E_INVALID_ARGUMENT);
    /* A larger buffer that contains the registered one. */
    {
        float *big = (float *)malloc(64 * sizeof(float));
        float *gbig = (float *)malloc(64 * sizeof(float));
        CHECK(big != NULL && gbig != NULL);
        if (big && gbig) {
            memset(big, 0, 64 * sizeof(float));
            memset(gbig, 0, 64 * sizeof(float));
            CHECK_OK(bc_optimizer_add_tensor(opt, 0, "big", big + 16, gbig, 16, &tid));
            CHECK(tid == 1);
            CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "big2", big, gbig + 32, 64, &tid), BC_E_INVALID_ARGUMENT);
            CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "big2", big + 31, gbig + 32, 8, &tid), BC_E_INVALID_ARGUMENT);
            /* Adjacent on both sides is fine. */
            CHECK_OK(bc_optimizer_add_tensor(opt, 0, "lo", big, gbig + 32, 16, &tid));
            CHECK(tid == 2);
            CHECK_OK(bc_optimizer_add_tensor(opt, 0, "hi", big + 32, gbig + 48, 16, &tid));
            CHECK(tid == 3);
        }
        info(opt, &groups, &tensors, &params);
        CHECK(groups == 1 && tensors == 4 && params == 56);
        bc_optimizer_free(opt);
        opt = NULL;
        free(big);
        free(gbig);
    }

    /* Duplicate names; the name is copied (the caller may reuse its buffer). */
    CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAMW, &opt));
    CHECK_OK(bc_optimizer_add_group(opt, NULL, NULL));
    CHECK_OK(bc_optimizer_add_group(opt, NULL, NULL));
    char name[16];
    strcpy(name, "layer.w");
    CHECK_OK(bc_optimizer_add_tensor(opt, 0, name, w, dw, 32, &tid));
    CHECK(tid == 0);
    strcpy(name, "zz");
    CHECK_ERR(bc_optimizer_add_tensor(opt, 0, "layer.w", v, dv, 16, &tid), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_add_tensor(opt, 1, "layer.w", v, dv, 16, &tid), BC_E_INVALID_ARGUMENT);
    CHECK(tid == 0);
    info(opt, &groups, &tensors, &params);
    CHECK(groups == 2 && tensors == 1 && params == 32);
    CHECK_OK(bc_optimizer_add_tensor(opt, 1, name, v, dv, 16, &tid));
    CHECK(tid == 1);
    CHECK_OK(bc_optimizer_add_tensor(opt, 1, "layer.b", w + 32, dw + 32, 32, NULL));
    info(opt, &groups, &tensors, &params);
    CHECK(groups == 2 && tensors == 3 && params == 80);
    bc_optimizer_free(opt);
}

/* ---------------------------------------------------------------- step */

static void test_step_args(void) {
    float w[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    float dw[4] = {3.0f, 4.0f, 0.0f, 0.0f};
    float w0[4];
    memcpy(w0, w, sizeof w);
    bc_optimizer *opt = NULL;
    CHECK_OK(bc_optimizer_create(BC_OPTIM_SGD, &opt));
    bc_optim_hparams hp;
    CHECK_OK(bc_optim_hparams_default(BC_OPTIM_SGD, &hp, sizeof hp));
    hp.lr = 1.0;
    CHECK_OK(bc_optimizer_add_group(opt, &hp, NULL));
    CHECK_OK(bc_optimizer_add_tensor(opt, 0, "w", w, dw, 4, NULL));

    bc_optim_step_params sp;
    bc_optim_step_result res;
    CHECK_OK(bc_optim_step_params_default(&sp, sizeof sp));
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;

    CHECK_ERR(bc_optimizer_step(NULL, NULL, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_step(NULL, &sp, &res), BC_E_INVALID_ARGUMENT);
    bc_optim_step_params bad = sp;
    bad.struct_size = 0;
    CHECK_ERR(bc_optimizer_step(opt, &bad, &res), BC_E_INVALID_ARGUMENT);
    bad = sp;
    bad.grad_scale = NAN;
    CHECK_ERR(bc_optimizer_step(opt, &bad, &res), BC_E_INVALID_ARGUMENT);
    bad = sp;
    bad.grad_scale = INFINITY;
    CHECK_ERR(bc_optimizer_step(opt, &bad, &res), BC_E_INVALID_ARGUMENT);
    bad = sp;
    bad.max_grad_norm = -1.0;
    CHECK_ERR(bc_optimizer_step(opt, &bad, &res), BC_E_INVALID_ARGUMENT);
    bad = sp;
    bad.max_grad_norm = NAN;
    CHECK_ERR(bc_optimizer_step(opt, &bad, &res), BC_E_INVALID_ARGUMENT);
    bc_optim_step_result badres;
    memset(&badres, 0, sizeof badres); /* struct_size 0: caller forgot to set it */
    CHECK_ERR(bc_optimizer_step(opt, &sp, &badres), BC_E_INVALID_ARGUMENT);
    CHECK(memcmp(w, w0, sizeof w) == 0);

    /* A failing call fills no output. */
    bc_optim_step_result untouched;
    memset(&untouched, 0x77, sizeof untouched);
    untouched.struct_size = sizeof untouched;
    res = untouched;
    bad = sp;
    bad.struct_size = 0;
    CHECK_ERR(bc_optimizer_step(opt, &bad, &res), BC_E_INVALID_ARGUMENT);
    CHECK(memcmp(&res, &untouched, sizeof res) == 0);

    /* Nothing has stepped yet: the first successful step reports step 1 and the norm. */
    res.struct_size = sizeof res;
    CHECK_OK(bc_optimizer_step(opt, NULL, &res));
    CHECK(res.step == 1);
    CHECK(res.skipped == 0);
    CHECK(fabs(res.grad_norm - 5.0) < 1e-12);
    CHECK(res.clip_coef == 1.0);
    CHECK(w[0] == 1.0f - 3.0f && w[1] == 2.0f - 4.0f && w[2] == 3.0f && w[3] == 4.0f);

    /* Clipping, torch clip_grad_norm_: coef = max_norm / (norm + 1e-6). */
    float before[4];
    memcpy(before, w, sizeof w);
    sp.max_grad_norm = 1.0;
    CHECK_OK(bc_optimizer_step(opt, &sp, &res));
    CHECK(res.step == 2);
    CHECK(fabs(res.grad_norm - 5.0) < 1e-12);
    CHECK(fabs(res.clip_coef - 1.0 / (5.0 + 1e-6)) < 1e-12);
    CHECK(fabs((double)(before[0] - w[0]) - 0.6) < 1e-6);
    CHECK(fabs((double)(before[1] - w[1]) - 0.8) < 1e-6);

    /* grad_scale: the gradient is multiplied; the norm reported is of the scaled grads. */
    memcpy(before, w, sizeof w);
    sp.max_grad_norm = 0;
    sp.grad_scale = 0.5;
    CHECK_OK(bc_optimizer_step(opt, &sp, &res));
    CHECK(res.step == 3);
    CHECK(fabs(res.grad_norm - 2.5) < 1e-12);
    CHECK(w[0] == before[0] - 1.5f && w[1] == before[1] - 2.0f);
    CHECK(dw[0] == 3.0f && dw[1] == 4.0f); /* caller's gradients untouched */

    /* A shorter result struct: only the covered bytes are written. */
    {
        unsigned char raw[sizeof(bc_optim_step_result)];
        memset(raw, 0x42, sizeof raw);
        uint32_t ss = (uint32_t)(offsetof(bc_optim_step_result, grad_norm) + sizeof(double));
        memcpy(raw, &ss, sizeof ss);
        sp.grad_scale = 1.0;
        CHECK_OK(bc_optimizer_step(opt, &sp, (bc_optim_step_result *)(void *)raw));
        double gn;
        memcpy(&gn, raw + offsetof(bc_optim_step_result, grad_norm), sizeof gn);
        CHECK(fabs(gn - 5.0) < 1e-12);
        int intact = 1;
        for (size_t i = ss; i < sizeof raw; i++) intact &= raw[i] == 0x42;
        CHECK(intact);
    }
    bc_optimizer_free(opt);

    /* An optimizer without tensors (or groups) may step. */
    CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAM, &opt));
    CHECK_OK(bc_optimizer_step(opt, NULL, NULL));
    bc_optimizer_free(opt);
}

/* ---------------------------------------------------------------- non-finite twins */

#define NA 37
#define NB 70001 /* more than one internal work chunk */

typedef struct twin {
    bc_optimizer *opt;
    float *pa, *ga, *pb, *gb;
} twin;

static void hparams_for(bc_optim_algorithm algo, int group, bc_optim_hparams *hp) {
    bc_optim_hparams_default(algo, hp, sizeof *hp);
    switch (algo) {
    case BC_OPTIM_SGD:
        hp->lr = 0.05;
        hp->momentum = 0.9;
        hp->nesterov = group;
        hp->weight_decay = 0.01;
        break;
    case BC_OPTIM_ADAM:
        hp->lr = 0.01;
        hp->amsgrad = group;
        break;
    case BC_OPTIM_ADAMW:
        hp->lr = 0.01;
        hp->weight_decay = 0.1;
        break;
    case BC_OPTIM_ADAGRAD:
        hp->lr = 0.1;
        hp->initial_accumulator_value = 0.1 * group;
        hp->lr_decay = 0.01;
        break;
    case BC_OPTIM_RMSPROP:
        hp->lr = 0.01;
        hp->centered = group;
        hp->momentum = 0.5;
        break;
    case BC_OPTIM_LAMB:
        hp->lr = 0.01;
        hp->weight_decay = group ? 0.0 : 0.01;
        break;
    case BC_OPTIM_LION:
        hp->lr = 1e-3;
        hp->weight_decay = 0.1;
        break;
    case BC_OPTIM_ADABRAKE:
        hp->lr = 0.05;
        hp->momentum = 0.9;
        hp->alpha = 0.5 + 0.5 * group;
        break;
    }
}

static int twin_init(twin *t, bc_optim_algorithm algo) {
    t->pa = (float *)malloc(NA * sizeof(float));
    t->ga = (float *)malloc(NA * sizeof(float));
    t->pb = (float *)malloc(NB * sizeof(float));
    t->gb = (float *)malloc(NB * sizeof(float));
    t->opt = NULL;
    if (!t->pa || !t->ga || !t->pb || !t->gb) return 0;
    for (int i = 0; i < NA; i++) t->pa[i] = (float)sin(0.7 * i + 0.1);
    for (int i = 0; i < NB; i++) t->pb[i] = (float)cos(0.013 * i);
    if (bc_optimizer_create(algo, &t->opt) != BC_OK) return 0;
    bc_optim_hparams hp;
    hparams_for(algo, 0, &hp);
    if (bc_optimizer_add_group(t->opt, &hp, NULL) != BC_OK) return 0;
    hparams_for(algo, 1, &hp);
    if (bc_optimizer_add_group(t->opt, &hp, NULL) != BC_OK) return 0;
    if (bc_optimizer_add_tensor(t->opt, 0, "a", t->pa, t->ga, NA, NULL) != BC_OK) return 0;
    if (bc_optimizer_add_tensor(t->opt, 1, "b", t->pb, t->gb, NB, NULL) != BC_OK) return 0;
    return 1;
}

static void twin_free(twin *t) {
    bc_optimizer_free(t->opt);
    free(t->pa);
    free(t->ga);
    free(t->pb);
    free(t->gb);
}

/* Gradients depend on the step and on the current parameters. */
static void twin_grads(twin *t, int step) {
    for (int i = 0; i < NA; i++) t->ga[i] = (float)sin(0.3 * i + step) + 0.25f * t->pa[i];
    for (int i = 0; i < NB; i++)
        t->gb[i] = (float)((i * (step + 3)) % 17) * 0.05f - 0.4f + 0.1f * t->pb[i];
}

static void nonfinite_case(bc_optim_algorithm algo, int bad_step, float bad_value, int bad_in_b, int use_params) {
    twin a, b;
    int ok = twin_init(&a, algo) && twin_init(&b, algo);
    CHECK(ok);
    if (!ok) {
        twin_free(&a);
        twin_free(&b);
        return;
    }
    bc_optim_step_params sp;
    CHECK_OK(bc_optim_step_params_default(&sp, sizeof sp));
    sp.max_grad_norm = use_params ? 50.0 : 0.0;
    const bc_optim_step_params *spp = use_params ? &sp : NULL;
    float *save_a = (float *)malloc(NA * sizeof(float));
    float *save_b = (float *)malloc(NB * sizeof(float));
    const int steps = 12;
    for (int s = 0; s < steps; s++) {
        bc_optim_step_result ra, rb;
        memset(&ra, 0, sizeof ra);
        ra.struct_size = sizeof ra;
        rb = ra;
        if (s == bad_step) {
            twin_grads(&a, s);
            if (bad_in_b)
                a.gb[NB - 3] = bad_value;
            else
                a.ga[5] = bad_value;
            memcpy(save_a, a.pa, NA * sizeof(float));
            memcpy(save_b, a.pb, NB * sizeof(float));
            CHECK_ERR(bc_optimizer_step(a.opt, spp, &ra), BC_E_NON_FINITE);
            CHECK(ra.skipped == 1);
            CHECK(ra.step == s);
            CHECK(!isfinite(ra.grad_norm));
            CHECK(memcmp(save_a, a.pa, NA * sizeof(float)) == 0);
            CHECK(memcmp(save_b, a.pb, NB * sizeof(float)) == 0);
            /* Twice in a row is still a clean skip. */
            CHECK_ERR(bc_optimizer_step(a.opt, spp, NULL), BC_E_NON_FINITE);
            CHECK(memcmp(save_a, a.pa, NA * sizeof(float)) == 0);
            CHECK(memcmp(save_b, a.pb, NB * sizeof(float)) == 0);
        }
        twin_grads(&a, s);
        twin_grads(&b, s);
        CHECK_OK(bc_optimizer_step(a.opt, spp, &ra));
        CHECK_OK(bc_optimizer_step(b.opt, spp, &rb));
        CHECK(ra.skipped == 0 && rb.skipped == 0);
        CHECK(ra.step == s + 1 && rb.step == s + 1);
    }
    int same_a = memcmp(a.pa, b.pa, NA * sizeof(float)) == 0;
    int same_b = memcmp(a.pb, b.pb, NB * sizeof(float)) == 0;
    CHECK(same_a && same_b);
    if (!(same_a && same_b))
        fprintf(stderr, "  non-finite twin mismatch: algorithm %d, bad step %d, value %g, tensor %c\n", (int)algo,
                bad_step, (double)bad_value, bad_in_b ? 'b' : 'a');
    /* The parameters did move. */
    CHECK(a.pa[0] != (float)sin(0.1));
    free(save_a);
    free(save_b);
    twin_free(&a);
    twin_free(&b);
}

static void test_nonfinite(void) {
    for (int i = 0; i < N_ALGORITHMS; i++) {
        bc_optim_algorithm algo = all_algorithms[i];
        nonfinite_case(algo, 0, NAN, 1, 0);      /* before any state exists */
        nonfinite_case(algo, 5, NAN, 0, 1);      /* mid-run, first tensor */
        nonfinite_case(algo, 7, INFINITY, 1, 1); /* mid-run, second tensor (after a finite one) */
        nonfinite_case(algo, 3, -INFINITY, 0, 0);
    }
    /* A gradient whose square overflows float32 is still finite: the header refuses only
       NaN/Inf gradients, so the step must not be skipped. */
    {
        float w[2] = {0.0f, 0.0f}, g[2] = {1e30f, 1e30f};
        bc_optimizer *opt = NULL;
        CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAM, &opt));
        CHECK_OK(bc_optimizer_add_group(opt, NULL, NULL));
        CHECK_OK(bc_optimizer_add_tensor(opt, 0, "w", w, g, 2, NULL));
        bc_optim_step_result r;
        memset(&r, 0, sizeof r);
        r.struct_size = sizeof r;
        CHECK_OK(bc_optimizer_step(opt, NULL, &r));
        CHECK(r.skipped == 0 && isfinite(r.grad_norm));
        bc_optimizer_free(opt);
    }
}

int main(void) {
    test_threads();
    test_hparams_default();
    test_create_and_groups();
    test_tensors();
    test_step_args();
    CHECK_OK(bc_set_num_threads(1));
    test_nonfinite();
    CHECK_OK(bc_set_num_threads(0));
    test_nonfinite();
    CHECK_DONE();
}
