/* Data-parallel fine-tuning with Open MPI: batchcore's trainer gets MPI_Allreduce and
 * MPI_Bcast as its collectives (bc_trainer_set_collectives); the library itself links no
 * MPI. Every rank loads the same model and data file and runs the same calls; rank r
 * trains on its share of each global step (accumulation_steps x ranks micro-batches).
 *
 *   mpirun -np 2 ./train_mpi MODEL DATA.jsonl [--steps N] [--accum A] [--tokens T]
 *          [--lr X] [--seed S] [--threads N] [--resume DIR] [--checkpoint-at K DIR]
 *          [--weights-out FILE] [--optimizer adamw|sgd]
 *
 * Rank 0 prints one line per step (global loss and targets, step time, time inside the
 * all-reduce) and, with --weights-out, writes every trainable tensor as raw float32 in
 * bc_trainer_get_tensor order. --checkpoint-at K DIR saves a checkpoint after step K;
 * --resume DIR loads one before training (any number of ranks with the same
 * accum x ranks). --optimizer sgd: SGD with momentum 0.9 (default AdamW). Any error aborts the whole job (MPI_Abort), so no rank waits forever.
 */
#define _POSIX_C_SOURCE 200809L
#include <batchcore.h>
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int rank = 0;
static double reduce_seconds = 0;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, bc_status s) {
    fprintf(stderr, "rank %d: %s failed (%d): %s\n", rank, what, (int)s, bc_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}
#define TRY(call) do { bc_status s_ = (call); if (s_ != BC_OK) die(#call, s_); } while (0)

/* bc_collectives callbacks: `user` is the communicator. Non-zero = error. */
static int mpi_allreduce(float *buf, size_t n, void *user) {
    MPI_Comm comm = *(MPI_Comm *)user;
    double t0 = now();
    while (n > 0) {
        int chunk = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        if (MPI_Allreduce(MPI_IN_PLACE, buf, chunk, MPI_FLOAT, MPI_SUM, comm) != MPI_SUCCESS) return 1;
        buf += chunk;
        n -= (size_t)chunk;
    }
    reduce_seconds += now() - t0;
    return 0;
}

static int mpi_broadcast(void *buf, size_t bytes, int root, void *user) {
    MPI_Comm comm = *(MPI_Comm *)user;
    char *p = (char *)buf;
    while (bytes > 0) {
        int chunk = bytes > (size_t)INT_MAX ? INT_MAX : (int)bytes;
        if (MPI_Bcast(p, chunk, MPI_BYTE, root, comm) != MPI_SUCCESS) return 1;
        p += chunk;
        bytes -= (size_t)chunk;
    }
    return 0;
}

static void write_weights(bc_trainer *t, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); MPI_Abort(MPI_COMM_WORLD, 1); }
    uint32_t count = 0;
    TRY(bc_trainer_tensor_count(t, &count));
    for (uint32_t i = 0; i < count; i++) {
        bc_trainer_tensor tt;
        memset(&tt, 0, sizeof tt);
        tt.struct_size = sizeof tt;
        TRY(bc_trainer_get_tensor(t, i, &tt));
        if (fwrite(tt.values, sizeof(float), (size_t)tt.count, f) != (size_t)tt.count) {
            fprintf(stderr, "short write to %s\n", path);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    fclose(f);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm comm = MPI_COMM_WORLD;
    int size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);   /* errors come back to the callback */
    if (argc < 3) {
        if (rank == 0) fprintf(stderr, "usage: %s MODEL DATA [--steps N] [--accum A] [--tokens T] [--lr X] [--seed S] "
                                       "[--threads N] [--resume DIR] [--checkpoint-at K DIR] [--weights-out FILE] "
                                       "[--optimizer adamw|sgd]\n", argv[0]);
        MPI_Finalize();
        return 2;
    }
    const char *model_path = argv[1], *data = argv[2], *resume = NULL, *ckpt = NULL, *weights_out = NULL,
               *optimizer = "adamw";
    long steps = 0, accum = 1, tokens = 512, ckpt_at = -1, threads = 0;
    unsigned long long seed = 0;
    double lr = 1e-4;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { if (rank == 0) fprintf(stderr, "%s needs a value\n", a); MPI_Abort(comm, 2); }
        if (!strcmp(a, "--steps")) steps = atol(v);
        else if (!strcmp(a, "--accum")) accum = atol(v);
        else if (!strcmp(a, "--tokens")) tokens = atol(v);
        else if (!strcmp(a, "--lr")) lr = atof(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--threads")) threads = atol(v);
        else if (!strcmp(a, "--resume")) resume = v;
        else if (!strcmp(a, "--weights-out")) weights_out = v;
        else if (!strcmp(a, "--optimizer") && (!strcmp(v, "adamw") || !strcmp(v, "sgd"))) optimizer = v;
        else if (!strcmp(a, "--checkpoint-at") && i + 2 < argc) { ckpt_at = atol(v); ckpt = argv[i + 2]; i++; }
        else { if (rank == 0) fprintf(stderr, "unknown option %s\n", a); MPI_Abort(comm, 2); }
        i++;
    }
    if (threads > 0) TRY(bc_set_num_threads((int)threads));

    bc_model *model = NULL;
    TRY(bc_model_load(model_path, NULL, &model));
    bc_trainer_params tp;
    TRY(bc_trainer_params_default(&tp, sizeof tp));
    tp.micro_batch_tokens = (uint32_t)tokens;
    tp.accumulation_steps = (uint32_t)accum;
    bc_trainer *t = NULL;
    TRY(bc_trainer_create(model, &tp, &t));

    bc_collectives c;
    TRY(bc_collectives_default(&c, sizeof c));
    c.rank = rank;
    c.world_size = size;
    c.allreduce_sum_f32 = mpi_allreduce;
    c.broadcast = mpi_broadcast;
    c.user = &comm;
    TRY(bc_trainer_set_collectives(t, &c));

    bc_train_data_params dp;
    TRY(bc_train_data_params_default(&dp, sizeof dp));
    dp.seed = seed;
    dp.truncate = 1;
    bc_train_data_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    TRY(bc_trainer_load_data(t, data, &dp, &info));

    bc_optimizer *opt = NULL;
    bc_optim_algorithm algo = !strcmp(optimizer, "sgd") ? BC_OPTIM_SGD : BC_OPTIM_ADAMW;
    TRY(bc_optimizer_create(algo, &opt));
    bc_optim_hparams hp;
    TRY(bc_optim_hparams_default(algo, &hp, sizeof hp));
    hp.lr = lr;
    if (algo == BC_OPTIM_SGD) hp.momentum = 0.9;
    uint32_t group = 0;
    TRY(bc_optimizer_add_group(opt, &hp, &group));
    TRY(bc_trainer_register(t, opt, group));
    if (resume) TRY(bc_trainer_load_checkpoint(t, opt, resume));

    uint32_t count = 0;
    int64_t params = 0;
    TRY(bc_trainer_tensor_count(t, &count));
    for (uint32_t i = 0; i < count; i++) {
        bc_trainer_tensor tt;
        memset(&tt, 0, sizeof tt);
        tt.struct_size = sizeof tt;
        TRY(bc_trainer_get_tensor(t, i, &tt));
        params += tt.count;
    }
    if (rank == 0)
        printf("ranks %d, %lld examples, %lld steps in all, %lld parameters: all-reduce %.1f MiB per step in %lld buckets\n",
               size, (long long)info.examples, (long long)info.steps, (long long)params, 4.0 * (double)params / 1048576.0,
               (long long)((params + BC_ALLREDUCE_BUCKET_FLOATS - 1) / BC_ALLREDUCE_BUCKET_FLOATS));

    bc_train_progress pr;
    memset(&pr, 0, sizeof pr);
    pr.struct_size = sizeof pr;
    double total = 0;
    long done = 0;
    for (;;) {
        TRY(bc_trainer_get_progress(t, &pr));
        if (steps > 0 && done >= steps) break;
        bc_train_result r;
        memset(&r, 0, sizeof r);
        r.struct_size = sizeof r;
        double t0 = now(), r0 = reduce_seconds;
        bc_status s = bc_trainer_train_step(t, opt, NULL, &r, NULL);
        if (s == BC_E_NOT_FOUND) break;   /* every epoch done (the same on every rank) */
        if (s != BC_OK && s != BC_E_NON_FINITE) die("bc_trainer_train_step", s);
        double dt = now() - t0;
        total += dt;
        done++;
        if (rank == 0)
            printf("step %lld loss %.6f targets %lld time %.1f ms allreduce %.1f ms%s\n", (long long)pr.step + 1, r.loss,
                   (long long)r.targets, 1e3 * dt, 1e3 * (reduce_seconds - r0), s == BC_E_NON_FINITE ? " (skipped)" : "");
        if (ckpt && pr.step + 1 == ckpt_at) TRY(bc_trainer_save_checkpoint(t, opt, ckpt));   /* rank 0 writes */
        fflush(stdout);
    }
    if (rank == 0 && done > 0) printf("mean step time %.1f ms over %ld steps\n", 1e3 * total / (double)done, done);
    if (rank == 0 && weights_out) write_weights(t, weights_out);
    bc_optimizer_free(opt);
    bc_trainer_free(t);
    bc_model_free(model);
    MPI_Finalize();
    return 0;
}
