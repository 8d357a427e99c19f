/* The data-file half of the trainer ABI on the tiny Hugging Face fixture model
 * (Tests/fixtures/train/tiny_tied; its tokenizer knows a-z, A-Z, space, '.', ','):
 * load data with an eval split, steps until the data ends, progress, evaluation of
 * a set and of a file, errors naming the line, checkpoints (a resumed trainer ends
 * bit-identical to the uninterrupted one), saving as Hugging Face. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "train_helpers.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>


static int open_run(run_t *r, const char *model_dir, const char *data, bc_train_data_info *info) {
    bc_trainer_params tp;
    bc_trainer_params_default(&tp, sizeof tp);
    tp.micro_batch_tokens = 128;
    tp.accumulation_steps = 2;
    memset(r, 0, sizeof *r);
    CHECK_OK(bc_model_load(model_dir, NULL, &r->model));
    if (!r->model) return 1;
    CHECK_OK(bc_trainer_create(r->model, &tp, &r->t));
    bc_train_data_params dp;
    CHECK_OK(bc_train_data_params_default(&dp, sizeof dp));
    CHECK(dp.epochs == 1 && dp.eval_fraction == 0.0f);
    dp.eval_fraction = 0.2f;
    dp.seed = 9;
    dp.epochs = 2;
    CHECK_OK(bc_trainer_load_data(r->t, data, &dp, info));
    CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAMW, &r->opt));
    bc_optim_hparams hp;
    bc_optim_hparams_default(BC_OPTIM_ADAMW, &hp, sizeof hp);
    hp.lr = 3e-3;
    uint32_t g;
    CHECK_OK(bc_optimizer_add_group(r->opt, &hp, &g));
    CHECK_OK(bc_trainer_register(r->t, r->opt, g));
    return 0;
}


static void weights_of(bc_trainer *t, float **out, size_t *n) {
    uint32_t count = 0;
    bc_trainer_tensor_count(t, &count);
    size_t total = 0;
    bc_trainer_tensor tt;
    memset(&tt, 0, sizeof tt);
    tt.struct_size = sizeof tt;
    for (uint32_t i = 0; i < count; i++) { bc_trainer_get_tensor(t, i, &tt); total += (size_t)tt.count; }
    *out = (float *)malloc(sizeof(float) * total);
    *n = total;
    size_t at = 0;
    for (uint32_t i = 0; i < count; i++) {
        bc_trainer_get_tensor(t, i, &tt);
        memcpy(*out + at, tt.values, sizeof(float) * (size_t)tt.count);
        at += (size_t)tt.count;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    char model_dir[4096], data[128], bad[128], ckpt[128], hf[128];
    snprintf(model_dir, sizeof model_dir, "%s/train/tiny_tied", argv[1]);
    snprintf(data, sizeof data, "/tmp/bc-tdata-%ld.jsonl", (long)getpid());
    snprintf(bad, sizeof bad, "/tmp/bc-tdata-bad-%ld.jsonl", (long)getpid());
    snprintf(ckpt, sizeof ckpt, "/tmp/bc-tckpt-%ld", (long)getpid());
    snprintf(hf, sizeof hf, "/tmp/bc-thf-%ld", (long)getpid());
    write_word_lines(data, 40, 1, 8, 0);
    write_word_lines(bad, 10, 2, 8, 7);

    bc_train_data_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    run_t a;
    if (open_run(&a, model_dir, data, &info)) return 1;
    CHECK(info.examples + info.eval_examples == 40 && info.eval_examples == 8 && info.steps > 2);
    CHECK(info.targets > 0 && info.tokens > info.targets);

    /* Bad data: the error names the line; nothing changes. */
    bc_train_data_info before = info;
    CHECK_ERR(bc_trainer_load_data(a.t, bad, NULL, &info), BC_E_FORMAT);
    CHECK(strstr(bc_last_error(), ":7") != NULL);
    CHECK(memcmp(&before, &info, sizeof info) == 0);
    CHECK_ERR(bc_trainer_load_data(a.t, "/nonexistent.jsonl", NULL, NULL), BC_E_IO);

    bc_train_result eval0, eval1, file, tot;
    memset(&eval0, 0, sizeof eval0);
    eval0.struct_size = sizeof eval0;
    eval1 = file = tot = eval0;
    CHECK_OK(bc_trainer_evaluate_data(a.t, NULL, NULL, &eval0));
    CHECK(eval0.targets > 0 && isfinite(eval0.loss));

    /* Half the steps, a checkpoint, then the rest; every epoch done gives NOT_FOUND. */
    bc_train_progress pr;
    memset(&pr, 0, sizeof pr);
    pr.struct_size = sizeof pr;
    int64_t half = info.steps / 2;
    for (int64_t s = 0; s < half; s++) CHECK_OK(bc_trainer_train_step(a.t, a.opt, NULL, &tot, NULL));
    CHECK_OK(bc_trainer_get_progress(a.t, &pr));
    CHECK(pr.step == half && pr.steps == info.steps && pr.tokens > 0);
    CHECK_OK(bc_trainer_save_checkpoint(a.t, a.opt, ckpt));
    CHECK_OK(bc_trainer_save_checkpoint(a.t, a.opt, ckpt)); /* replaces the directory */
    for (int64_t s = half; s < info.steps; s++) CHECK_OK(bc_trainer_train_step(a.t, a.opt, NULL, &tot, NULL));
    CHECK_ERR(bc_trainer_train_step(a.t, a.opt, NULL, &tot, NULL), BC_E_NOT_FOUND);
    CHECK_OK(bc_trainer_get_progress(a.t, &pr));
    CHECK(pr.step == info.steps && pr.epoch == 2);
    CHECK_OK(bc_trainer_evaluate_data(a.t, NULL, NULL, &eval1));
    CHECK(eval1.loss < eval0.loss);
    CHECK_OK(bc_trainer_evaluate_data(a.t, data, NULL, &file));
    CHECK(file.targets == info.targets + eval0.targets);

    /* Resume in a fresh trainer: the same final weights, bit for bit. */
    run_t b;
    if (open_run(&b, model_dir, data, NULL)) return 1;
    CHECK_ERR(bc_trainer_load_checkpoint(b.t, b.opt, "/nonexistent-ckpt"), BC_E_IO);
    CHECK_OK(bc_trainer_load_checkpoint(b.t, b.opt, ckpt));
    CHECK_OK(bc_trainer_get_progress(b.t, &pr));
    CHECK(pr.step == half);
    while (bc_trainer_train_step(b.t, b.opt, NULL, NULL, NULL) == BC_OK) {}
    float *wa, *wb;
    size_t na, nb;
    weights_of(a.t, &wa, &na);
    weights_of(b.t, &wb, &nb);
    CHECK(na == nb && memcmp(wa, wb, sizeof(float) * na) == 0);
    free(wa);
    free(wb);

    /* Saving: a Hugging Face model cannot become GGUF here; HF works and loads back. */
    CHECK_ERR(bc_trainer_save_model(a.t, "/tmp/x.gguf", BC_WEIGHTS_GGUF_F32), BC_E_UNSUPPORTED);
    CHECK_OK(bc_trainer_save_model(a.t, hf, BC_WEIGHTS_HF));
    bc_model *saved = NULL;
    CHECK_OK(bc_model_load(hf, NULL, &saved));
    bc_model_free(saved);

    close_run(&a);
    close_run(&b);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf %s %s %s %s", data, bad, ckpt, hf);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    printf("trainer data: %d checks, %d failures\n", check_count, check_failures);
    return check_failures != 0;
}
