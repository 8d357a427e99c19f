/* The trainer ABI on the default model: memory statement and refusal, argument checks
 * that change nothing, micro-batches + steps through the existing bc_optimizer (the
 * loss of a repeated batch goes down), loss normalisation over the whole step, the
 * trained weights used by a context in the same process, determinism across thread
 * counts, one trainer per model. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "train_helpers.h"
#include <unistd.h>
#include "model_path.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define N 48

/* Resident set size in KiB (/proc/self/statm), -1 when unreadable. */
static long resident_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = -1;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(int argc, char **argv) {
    bc_model *model = NULL;
    bc_model_info info;
    /* Full fine-tuning needs float32 weights; native ones are refused (checked below). */
    if (load_default_model_weights(argc, argv, BC_MODEL_WEIGHTS_F32, &model, &info)) return 1;
    const int vocab = info.n_vocab;

    /* Two documents (30 + 18 tokens) of pseudo-random ids, next-token targets, a masked span. */
    int32_t tokens[N], targets[N];
    uint32_t lengths[2] = {30, 18};
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        tokens[i] = (int32_t)((s >> 33) % 2000) + 100;
    }
    for (int i = 0; i < N; i++) {
        int end = (i == 29 || i == N - 1);
        targets[i] = end || (i >= 5 && i < 9) ? -1 : tokens[i + 1];
    }

    bc_trainer_params tp;
    CHECK_OK(bc_trainer_params_default(&tp, sizeof tp));
    CHECK(tp.struct_size == sizeof tp && tp.micro_batch_tokens == 2048 && tp.accumulation_steps == 1);
    tp.micro_batch_tokens = 64;

    /* The memory statement, and a limit below it: refused, nothing allocated. */
    bc_trainer_memory mem;
    memset(&mem, 0, sizeof mem);
    mem.struct_size = sizeof mem;
    CHECK_OK(bc_trainer_estimate(model, &tp, &mem));
    CHECK(mem.gradients == (uint64_t)info.n_params * 4);
    CHECK(mem.optimizer_state == 2 * (uint64_t)info.n_params * 4);
    CHECK(mem.added == mem.trainable_copies + mem.gradients + mem.activations + mem.backward_buffers + mem.optimizer_state);
    bc_trainer *t = NULL;
    tp.memory_limit = mem.added / 2;
    CHECK_ERR(bc_trainer_create(model, &tp, &t), BC_E_OUT_OF_MEMORY);
    CHECK(t == NULL);
    CHECK(strstr(bc_last_error(), "MiB") != NULL);
    tp.memory_limit = 0;
    tp.recompute = 2;
    CHECK_ERR(bc_trainer_create(model, &tp, &t), BC_E_INVALID_ARGUMENT);
    tp.recompute = 0;
    CHECK_ERR(bc_trainer_create(NULL, &tp, &t), BC_E_INVALID_ARGUMENT);
    {
        /* Native (quantized) weights cannot be trained: refused, saying how to load. */
        bc_model *native = NULL;
        bc_model_info ni;
        CHECK(load_default_model(argc, argv, &native, &ni) == 0);
        CHECK_ERR(bc_trainer_create(native, &tp, &t), BC_E_UNSUPPORTED);
        CHECK(t == NULL);
        CHECK(strstr(bc_last_error(), "float32") != NULL);
        bc_model_free(native);
    }

    float *before = (float *)malloc(sizeof(float) * (size_t)vocab);
    float *after = (float *)malloc(sizeof(float) * (size_t)vocab);
    last_logits(model, tokens, 30, before, vocab);

    CHECK_OK(bc_trainer_create(model, &tp, &t));
    bc_trainer *second = NULL;
    CHECK_ERR(bc_trainer_create(model, &tp, &second), BC_E_BAD_STATE);

    uint32_t count = 0;
    CHECK_OK(bc_trainer_tensor_count(t, &count));
    CHECK(count == (uint32_t)(1 + 9 * info.n_layer + 1)); /* tied head: embedding, 9 per layer, output norm */
    bc_trainer_tensor tt;
    memset(&tt, 0, sizeof tt);
    tt.struct_size = sizeof tt;
    CHECK_OK(bc_trainer_get_tensor(t, 0, &tt));
    CHECK(strcmp(tt.name, "token_embd.weight") == 0 && tt.rows == vocab && tt.cols == info.n_embd);
    CHECK_OK(bc_trainer_get_tensor(t, 2, &tt));
    CHECK(strcmp(tt.name, "blk.0.attn_q.weight") == 0 && tt.count == tt.rows * tt.cols);
    CHECK_ERR(bc_trainer_get_tensor(t, count, &tt), BC_E_INVALID_ARGUMENT);

    bc_optimizer *opt = NULL;
    CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAMW, &opt));
    bc_optim_hparams hp;
    CHECK_OK(bc_optim_hparams_default(BC_OPTIM_ADAMW, &hp, sizeof hp));
    hp.lr = 1e-4;
    uint32_t g = 0;
    CHECK_OK(bc_optimizer_add_group(opt, &hp, &g));
    CHECK_ERR(bc_trainer_register(t, opt, 7), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_trainer_register(t, opt, g));
    CHECK_ERR(bc_trainer_register(t, opt, g), BC_E_INVALID_ARGUMENT); /* names already there */

    /* NULL handles and outputs. */
    {
        bc_train_result nr;
        bc_train_progress np;
        uint32_t nc = 0;
        memset(&nr, 0, sizeof nr);
        nr.struct_size = sizeof nr;
        memset(&np, 0, sizeof np);
        np.struct_size = sizeof np;
        CHECK_ERR(bc_trainer_params_default(NULL, sizeof tp), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_train_data_params_default(NULL, 64), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_estimate(NULL, &tp, &mem), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_estimate(model, &tp, NULL), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_tensor_count(NULL, &nc), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_tensor_count(t, NULL), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_discard(NULL), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_sync(NULL), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_pending(t, NULL), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_evaluate(t, NULL, &nr), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_get_progress(t, NULL), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_evaluate_data(t, NULL, NULL, &nr), BC_E_BAD_STATE); /* no eval set */
        CHECK_ERR(bc_trainer_evaluate_data(t, NULL, NULL, NULL), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_load_eval(t, NULL, NULL, NULL), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_load_eval(t, "/nonexistent.jsonl", NULL, NULL), BC_E_BAD_STATE); /* no training data */
        CHECK_ERR(bc_trainer_save_checkpoint(t, NULL, NULL), BC_E_INVALID_ARGUMENT);
        CHECK_ERR(bc_trainer_save_checkpoint(t, NULL, "/nonexistent-dir/sub/ckpt"), BC_E_IO);
        CHECK_ERR(bc_trainer_train_step(t, opt, NULL, NULL, NULL), BC_E_BAD_STATE); /* no data loaded */
    }

    /* A step with nothing pending. */
    CHECK_ERR(bc_trainer_step(t, opt, NULL, NULL, NULL), BC_E_BAD_STATE);

    /* Bad micro-batches change nothing. */
    bc_train_result r, pending;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    pending = r;
    bc_train_batch b = make_batch(tokens, targets, N, lengths, 2);
    int32_t bad_targets[N];
    memcpy(bad_targets, targets, sizeof bad_targets);
    bad_targets[3] = vocab;
    bc_train_batch bad = make_batch(tokens, bad_targets, N, lengths, 2);
    CHECK_ERR(bc_trainer_micro_batch(t, &bad, &r), BC_E_INVALID_ARGUMENT);
    uint32_t bad_lengths[2] = {30, 17};
    bad = make_batch(tokens, targets, N, bad_lengths, 2);
    CHECK_ERR(bc_trainer_micro_batch(t, &bad, &r), BC_E_INVALID_ARGUMENT);
    bad = make_batch(NULL, targets, N, lengths, 2);
    CHECK_ERR(bc_trainer_micro_batch(t, &bad, &r), BC_E_INVALID_ARGUMENT);
    bad = make_batch(tokens, targets, 65, NULL, 0);
    CHECK_ERR(bc_trainer_micro_batch(t, &bad, &r), BC_E_INVALID_ARGUMENT);
    bad = make_batch(tokens, targets, N, lengths, 0);
    CHECK_ERR(bc_trainer_micro_batch(t, &bad, &r), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_trainer_pending(t, &pending));
    CHECK(pending.micro_batches == 0 && pending.targets == 0);

    /* Gradients: the same bits with 1 and 2 threads. */
    check_gradient_thread_invariance(t, 2, &b, &r);
    CHECK(r.targets == N - 2 - 4 && r.tokens == N && r.micro_batches == 1);
    CHECK(isfinite(r.loss) && r.loss > 0 && fabs(r.loss - r.loss_sum / (double)r.targets) < 1e-12);

    /* The same documents as two micro-batches accumulate the same totals. */
    CHECK_OK(bc_trainer_discard(t));
    bc_train_result r1 = r, r2 = r;
    bc_train_batch b1 = make_batch(tokens, targets, 30, NULL, 0), b2 = make_batch(tokens + 30, targets + 30, 18, NULL, 0);
    CHECK_OK(bc_trainer_micro_batch(t, &b1, &r1));
    CHECK_OK(bc_trainer_micro_batch(t, &b2, &r2));
    CHECK_OK(bc_trainer_pending(t, &pending));
    CHECK(pending.targets == r.targets && pending.micro_batches == 2);
    CHECK(fabs(pending.loss_sum - r.loss_sum) <= 1e-5 * r.loss_sum);

    /* Steps on the same batch lower its loss; evaluation agrees with the micro-batch loss. */
    bc_train_result step, eval;
    step = r;
    eval = r;
    bc_optim_step_result sr;
    memset(&sr, 0, sizeof sr);
    sr.struct_size = sizeof sr;
    CHECK_OK(bc_trainer_step(t, opt, NULL, &step, &sr));
    CHECK(sr.step == 1 && sr.skipped == 0 && isfinite(sr.grad_norm));
    CHECK(step.targets == r.targets && step.micro_batches == 2);
    double first = step.loss;
    for (int k = 0; k < 3; k++) {
        CHECK_OK(bc_trainer_micro_batch(t, &b, NULL));
        CHECK_OK(bc_trainer_step(t, opt, NULL, &step, &sr));
    }
    CHECK(sr.step == 4);
    CHECK_OK(bc_trainer_evaluate(t, &b, &eval));
    CHECK(eval.loss < first - 0.05);
    CHECK_OK(bc_trainer_pending(t, &pending));
    CHECK(pending.micro_batches == 0);

    /* Resident memory stays flat over steps (after the first ones sized every buffer). */
    {
        bc_train_batch small = make_batch(tokens, targets, 12, NULL, 0);
        long rss0 = resident_kib();
        for (int k = 0; k < 8; k++) {
            CHECK_OK(bc_trainer_micro_batch(t, &small, NULL));
            CHECK_OK(bc_trainer_micro_batch(t, &b, NULL));
            CHECK_OK(bc_trainer_evaluate(t, &b, &eval));
            CHECK_OK(bc_trainer_step(t, opt, NULL, NULL, NULL));
        }
        long grown = resident_kib() - rss0;
        CHECK(rss0 > 0 && grown < 4096);
        if (grown >= 4096) fprintf(stderr, "RSS grew by %ld KiB over 8 steps\n", grown);
    }

    /* A context made now generates with the trained weights. */
    last_logits(model, tokens, 30, after, vocab);
    double diff = 0;
    for (int i = 0; i < vocab; i++) diff += fabs((double)after[i] - before[i]);
    CHECK(diff > 1e-3 * vocab);

    /* The trained weights saved as GGUF F32 load back to the same logits, bit for bit. */
    {
        char path[64];
        snprintf(path, sizeof path, "/tmp/bc-test-trainer-%ld.gguf", (long)getpid());
        CHECK_ERR(bc_trainer_save_model(t, path, (bc_weights_format)7), BC_E_INVALID_ARGUMENT);
        CHECK_OK(bc_trainer_save_model(t, path, BC_WEIGHTS_GGUF_F32));
        bc_model *saved = NULL;
        CHECK_OK(bc_model_load(path, NULL, &saved));
        if (saved) {
            float *again = (float *)malloc(sizeof(float) * (size_t)vocab);
            last_logits(saved, tokens, 30, again, vocab);
            CHECK(memcmp(again, after, sizeof(float) * (size_t)vocab) == 0);
            free(again);
            bc_model_free(saved);
        }
        remove(path);
    }

    bc_optimizer_free(opt);
    bc_trainer_free(t);
    /* The trainer is gone: a new one can be made on the model. */
    CHECK_OK(bc_trainer_create(model, &tp, &second));
    bc_trainer_free(second);
    bc_trainer_free(NULL);
    free(before);
    free(after);
    bc_model_free(model);
    printf("trainer: %d checks, %d failures\n", check_count, check_failures);
    return check_failures != 0;
}
