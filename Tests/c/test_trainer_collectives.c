/* Data-parallel training through caller-supplied collectives, without MPI: two
 * trainers (two loads of Tests/fixtures/train/tiny_tied) run as ranks 0 and 1 on two
 * threads, with an in-process all-reduce/broadcast (a barrier; sums in rank order).
 *  - micro-batches A on rank 0 and B on rank 1 then a step give the weights of one
 *    trainer accumulating A and B (<= 1e-6 relative), the same bits on both ranks, and
 *    totals summed over the ranks (the loss divided by the GLOBAL target count);
 *  - data files: 2 ranks x accumulation 1 = 1 trainer x accumulation 2, step by step;
 *  - a callback that fails: BC_E_IO on both ranks, weights, optimizer state and step
 *    count unchanged (the next steps equal the never-failed reference);
 *  - set_collectives checks: NULL callbacks, rank/world out of range, a group whose
 *    world sizes disagree, weights that differ between ranks, after load_data. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "train_helpers.h"
#include <math.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>


/* ---------------------------------------------------------------- fake collectives */
typedef struct {
    int world;
    pthread_barrier_t bar;
    float *slot[2];
    void *root_buf;
} fake_world;

typedef struct {
    fake_world *w;
    int rank;
    int calls;     /* allreduce calls so far */
    int fail_at;   /* return an error on this call (0: never) */
} fake_rank;

static int fake_allreduce(float *buf, size_t n, void *user) {
    fake_rank *r = (fake_rank *)user;
    r->calls++;
    if (r->fail_at == r->calls) return 7;
    fake_world *w = r->w;
    w->slot[r->rank] = buf;
    pthread_barrier_wait(&w->bar);
    float *sum = (float *)malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        float s = 0;
        for (int k = 0; k < w->world; k++) s += w->slot[k][i];
        sum[i] = s;
    }
    pthread_barrier_wait(&w->bar);   /* everyone has read every slot */
    memcpy(buf, sum, sizeof(float) * n);
    free(sum);
    return 0;
}

static int fake_broadcast(void *buf, size_t bytes, int root, void *user) {
    fake_rank *r = (fake_rank *)user;
    fake_world *w = r->w;
    if (r->rank == root) w->root_buf = buf;
    pthread_barrier_wait(&w->bar);
    if (r->rank != root) memcpy(buf, w->root_buf, bytes);
    pthread_barrier_wait(&w->bar);
    return 0;
}

static bc_collectives collectives_of(fake_rank *r, int world) {
    bc_collectives c;
    bc_collectives_default(&c, sizeof c);
    c.rank = r->rank;
    c.world_size = world;
    c.allreduce_sum_f32 = fake_allreduce;
    c.broadcast = fake_broadcast;
    c.user = r;
    return c;
}

/* ---------------------------------------------------------------- ranks on threads */
typedef struct {
    bc_trainer *t;
    bc_optimizer *opt;
    bc_collectives c;
    const bc_train_batch *batch;   /* micro-batch of this rank (NULL: data step) */
    bc_status status;
    bc_train_result totals;
} rank_job;

static void *join_job(void *p) {
    rank_job *j = (rank_job *)p;
    j->status = bc_trainer_set_collectives(j->t, &j->c);
    return NULL;
}

static void *step_job(void *p) {
    rank_job *j = (rank_job *)p;
    memset(&j->totals, 0, sizeof j->totals);
    j->totals.struct_size = sizeof j->totals;
    if (j->batch) {
        j->status = bc_trainer_micro_batch(j->t, j->batch, NULL);
        if (j->status == BC_OK) j->status = bc_trainer_step(j->t, j->opt, NULL, &j->totals, NULL);
    } else {
        j->status = bc_trainer_train_step(j->t, j->opt, NULL, &j->totals, NULL);
    }
    return NULL;
}

static void run2(void *(*fn)(void *), rank_job *j) {
    pthread_t th[2];
    for (int k = 0; k < 2; k++) CHECK(pthread_create(&th[k], NULL, fn, &j[k]) == 0);
    for (int k = 0; k < 2; k++) CHECK(pthread_join(th[k], NULL) == 0);
}

/* ---------------------------------------------------------------- trainers */
static int open_run(run_t *r, const char *model_dir, uint32_t accum) {
    bc_trainer_params tp;
    bc_trainer_params_default(&tp, sizeof tp);
    tp.micro_batch_tokens = 64;
    tp.accumulation_steps = accum;
    memset(r, 0, sizeof *r);
    CHECK_OK(bc_model_load(model_dir, NULL, &r->model));
    if (!r->model) return 1;
    CHECK_OK(bc_trainer_create(r->model, &tp, &r->t));
    /* SGD with momentum: the update is linear in the gradient, so summation order shows
       as ~1 ulp (AdamW's ~lr*sign(g) first steps amplify it: see check_mpi.sh). */
    CHECK_OK(bc_optimizer_create(BC_OPTIM_SGD, &r->opt));
    bc_optim_hparams hp;
    bc_optim_hparams_default(BC_OPTIM_SGD, &hp, sizeof hp);
    hp.lr = 0.1;
    hp.momentum = 0.9;
    uint32_t g;
    CHECK_OK(bc_optimizer_add_group(r->opt, &hp, &g));
    CHECK_OK(bc_trainer_register(r->t, r->opt, g));
    return 0;
}


static float *weights_of(bc_trainer *t, size_t *n) {
    uint32_t count = 0;
    bc_trainer_tensor_count(t, &count);
    bc_trainer_tensor tt;
    memset(&tt, 0, sizeof tt);
    tt.struct_size = sizeof tt;
    size_t total = 0;
    for (uint32_t i = 0; i < count; i++) { bc_trainer_get_tensor(t, i, &tt); total += (size_t)tt.count; }
    float *out = (float *)malloc(sizeof(float) * total);
    size_t at = 0;
    for (uint32_t i = 0; i < count; i++) {
        bc_trainer_get_tensor(t, i, &tt);
        memcpy(out + at, tt.values, sizeof(float) * (size_t)tt.count);
        at += (size_t)tt.count;
    }
    *n = total;
    return out;
}

/* max |a - b| / max |b| over all weights. */
static double rel_diff(bc_trainer *a, bc_trainer *b) {
    size_t na, nb;
    float *wa = weights_of(a, &na), *wb = weights_of(b, &nb);
    double d = na == nb ? 0 : INFINITY, m = 0;
    for (size_t i = 0; i < na && i < nb; i++) {
        d = fmax(d, fabs((double)wa[i] - wb[i]));
        m = fmax(m, fabs((double)wb[i]));
    }
    free(wa);
    free(wb);
    return d / m;
}

static int same_bits(bc_trainer *a, bc_trainer *b) {
    size_t na, nb;
    float *wa = weights_of(a, &na), *wb = weights_of(b, &nb);
    int same = na == nb && memcmp(wa, wb, sizeof(float) * na) == 0;
    free(wa);
    free(wb);
    return same;
}


int main(int argc, char **argv) {
    if (argc < 2) return 2;
    char model_dir[4096], data[128];
    snprintf(model_dir, sizeof model_dir, "%s/train/tiny_tied", argv[1]);
    snprintf(data, sizeof data, "/tmp/bc-dp-%ld.jsonl", (long)getpid());
    write_word_lines(data, 24, 5, 6, 0);

    fake_world w;
    memset(&w, 0, sizeof w);
    w.world = 2;
    pthread_barrier_init(&w.bar, NULL, 2);
    fake_rank fr[2];
    memset(fr, 0, sizeof fr);
    for (int k = 0; k < 2; k++) { fr[k].w = &w; fr[k].rank = k; }

    run_t ref, r0, r1;
    if (open_run(&ref, model_dir, 1) || open_run(&r0, model_dir, 1) || open_run(&r1, model_dir, 1)) return 1;

    /* Layout (no implicit padding) and defaults. */
    CHECK(sizeof(bc_collectives) == 4 * 4 + 3 * sizeof(void *));
    CHECK(offsetof(bc_collectives, allreduce_sum_f32) == 16 && offsetof(bc_collectives, user) == 16 + 2 * sizeof(void *));
    bc_collectives d0;
    memset(&d0, 0x55, sizeof d0);
    CHECK_OK(bc_collectives_default(&d0, sizeof d0));
    CHECK(d0.struct_size == sizeof d0 && d0.rank == 0 && d0.world_size == 1 && d0.reserved0 == 0);
    CHECK(d0.allreduce_sum_f32 == NULL && d0.broadcast == NULL && d0.user == NULL);

    /* Argument checks (nothing changes, no callback is called). */
    bc_collectives c = collectives_of(&fr[0], 2);
    CHECK_ERR(bc_trainer_set_collectives(NULL, &c), BC_E_INVALID_ARGUMENT);
    c.allreduce_sum_f32 = NULL;
    CHECK_ERR(bc_trainer_set_collectives(r0.t, &c), BC_E_INVALID_ARGUMENT);
    c = collectives_of(&fr[0], 2);
    c.rank = 2;
    CHECK_ERR(bc_trainer_set_collectives(r0.t, &c), BC_E_INVALID_ARGUMENT);
    c.rank = 0;
    c.world_size = 0;
    CHECK_ERR(bc_trainer_set_collectives(r0.t, &c), BC_E_INVALID_ARGUMENT);
    c = collectives_of(&fr[0], 2);
    c.struct_size = 8;
    CHECK_ERR(bc_trainer_set_collectives(r0.t, &c), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_collectives_default(NULL, sizeof c), BC_E_INVALID_ARGUMENT);
    CHECK(fr[0].calls == 0);

    rank_job j[2];
    memset(j, 0, sizeof j);
    j[0].t = r0.t; j[0].opt = r0.opt;
    j[1].t = r1.t; j[1].opt = r1.opt;

    /* Ranks that disagree on the world size: both fail, nothing set. */
    fake_world w1;
    memset(&w1, 0, sizeof w1);
    w1.world = 2;
    pthread_barrier_init(&w1.bar, NULL, 2);
    fake_rank g1[2];
    memset(g1, 0, sizeof g1);
    for (int k = 0; k < 2; k++) { g1[k].w = &w1; g1[k].rank = k; }
    j[0].c = collectives_of(&g1[0], 2);
    j[1].c = collectives_of(&g1[1], 2);
    j[1].c.rank = 0;   /* two rank 0s */
    run2(join_job, j);
    CHECK(j[0].status == BC_E_INVALID_ARGUMENT && j[1].status == BC_E_INVALID_ARGUMENT);

    /* Weights that differ on rank 1: both fail. */
    bc_trainer_tensor tt;
    memset(&tt, 0, sizeof tt);
    tt.struct_size = sizeof tt;
    CHECK_OK(bc_trainer_get_tensor(r1.t, 3, &tt));
    float saved = tt.values[5];
    tt.values[5] += 0.25f;
    j[0].c = collectives_of(&fr[0], 2);
    j[1].c = collectives_of(&fr[1], 2);
    run2(join_job, j);
    CHECK(j[0].status == BC_E_INVALID_ARGUMENT && j[1].status == BC_E_INVALID_ARGUMENT);
    tt.values[5] = saved;

    /* The group forms. */
    run2(join_job, j);
    CHECK(j[0].status == BC_OK && j[1].status == BC_OK);

    /* One micro-batch per rank = one trainer accumulating both. */
    int32_t ta[9] = {5, 9, 14, 3, 27, 33, 8, 41, 2}, ya[9] = {9, 14, 3, 27, 33, 8, 41, 2, -1};
    int32_t tb[7] = {12, 7, 50, 19, 4, 36, 22}, yb[7] = {7, 50, -1, 4, 36, 22, -1};
    uint32_t lb[2] = {3, 4};
    bc_train_batch ba = make_batch(ta, ya, 9, NULL, 0), bb = make_batch(tb, yb, 7, lb, 2);
    bc_train_result rt;
    memset(&rt, 0, sizeof rt);
    rt.struct_size = sizeof rt;
    for (int step = 0; step < 3; step++) {
        CHECK_OK(bc_trainer_micro_batch(ref.t, &ba, NULL));
        CHECK_OK(bc_trainer_micro_batch(ref.t, &bb, NULL));
        CHECK_OK(bc_trainer_step(ref.t, ref.opt, NULL, &rt, NULL));
        j[0].batch = &ba;
        j[1].batch = &bb;
        run2(step_job, j);
        CHECK(j[0].status == BC_OK && j[1].status == BC_OK);
        CHECK(j[0].totals.targets == 8 + 5 && j[1].totals.targets == 13 && rt.targets == 13);
        CHECK(j[0].totals.micro_batches == 2 && j[0].totals.tokens == 16);
        CHECK(fabs(j[0].totals.loss - rt.loss) <= 1e-6 * fabs(rt.loss));
        CHECK(memcmp(&j[0].totals, &j[1].totals, sizeof rt) == 0);
    }
    double d = rel_diff(r0.t, ref.t);
    printf("micro-batch path: max relative difference %.3g\n", d);
    CHECK(d <= 1e-6);
    CHECK(same_bits(r0.t, r1.t));

    /* A failing callback (the gradient bucket, after the totals): BC_E_IO on both ranks,
       weights unchanged; the next step equals the reference's. */
    size_t n;
    float *before = weights_of(r0.t, &n);
    fr[0].calls = fr[1].calls = 0;
    fr[0].fail_at = fr[1].fail_at = 2;
    run2(step_job, j);
    CHECK(j[0].status == BC_E_IO && j[1].status == BC_E_IO);
    fr[0].fail_at = fr[1].fail_at = 0;
    size_t n2;
    float *after = weights_of(r0.t, &n2);
    CHECK(n == n2 && memcmp(before, after, sizeof(float) * n) == 0);
    free(before);
    free(after);
    bc_train_result pend;
    memset(&pend, 0, sizeof pend);
    pend.struct_size = sizeof pend;
    CHECK_OK(bc_trainer_pending(r0.t, &pend));
    CHECK(pend.micro_batches == 0);
    CHECK_OK(bc_trainer_micro_batch(ref.t, &ba, NULL));
    CHECK_OK(bc_trainer_micro_batch(ref.t, &bb, NULL));
    CHECK_OK(bc_trainer_step(ref.t, ref.opt, NULL, &rt, NULL));
    run2(step_job, j);
    CHECK(j[0].status == BC_OK && j[1].status == BC_OK);
    d = rel_diff(r0.t, ref.t);
    printf("after a failed step: max relative difference %.3g\n", d);
    CHECK(d <= 1e-6);
    close_run(&ref);
    close_run(&r0);
    close_run(&r1);

    /* Data files: 2 ranks x accumulation 1 against 1 trainer x accumulation 2. */
    if (open_run(&ref, model_dir, 2) || open_run(&r0, model_dir, 1) || open_run(&r1, model_dir, 1)) return 1;
    bc_train_data_params dp;
    bc_train_data_params_default(&dp, sizeof dp);
    dp.seed = 3;
    bc_train_data_info info, i0;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    i0 = info;
    CHECK_OK(bc_trainer_load_data(ref.t, data, &dp, &info));
    j[0].t = r0.t; j[0].opt = r0.opt; j[0].batch = NULL;
    j[1].t = r1.t; j[1].opt = r1.opt; j[1].batch = NULL;
    run2(join_job, j);
    CHECK(j[0].status == BC_OK && j[1].status == BC_OK);
    CHECK_OK(bc_trainer_load_data(r0.t, data, &dp, &i0));
    CHECK_OK(bc_trainer_load_data(r1.t, data, &dp, NULL));
    CHECK(i0.steps == info.steps && info.steps >= 3);
    c = collectives_of(&fr[0], 2);
    CHECK_ERR(bc_trainer_set_collectives(r0.t, &c), BC_E_BAD_STATE);
    for (int64_t s = 0; s < info.steps; s++) {
        CHECK_OK(bc_trainer_train_step(ref.t, ref.opt, NULL, &rt, NULL));
        run2(step_job, j);
        CHECK(j[0].status == BC_OK && j[1].status == BC_OK);
        CHECK(j[0].totals.targets == rt.targets && j[0].totals.tokens == rt.tokens);
        CHECK(j[0].totals.micro_batches == rt.micro_batches);
    }
    run2(step_job, j);
    CHECK(j[0].status == BC_E_NOT_FOUND && j[1].status == BC_E_NOT_FOUND);
    d = rel_diff(r0.t, ref.t);
    printf("data path: %lld steps, max relative difference %.3g\n", (long long)info.steps, d);
    CHECK(d <= 1e-6);
    CHECK(same_bits(r0.t, r1.t));
    close_run(&ref);
    close_run(&r0);
    close_run(&r1);
    pthread_barrier_destroy(&w.bar);
    pthread_barrier_destroy(&w1.bar);
    unlink(data);
    CHECK_DONE();
}
