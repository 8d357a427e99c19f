/* LoRA training through the trainer ABI on the default model: the appended
 * bc_trainer_params fields and their checks, a memory statement far below the full
 * fine-tune's, only lora_A/lora_B tensors (PEFT names, shapes), a fresh adapter giving
 * the base loss, steps lowering the loss while the base model's serving logits stay the
 * same bits, a PEFT directory written by bc_trainer_save_adapter, checkpoints of the
 * adapters restoring the same loss, the merged model (save_model, bc_merge_adapter from
 * the PEFT and the GGUF adapter: the same bytes, the adapter's loss), the GGUF adapter,
 * bc_weights_average, a second LoRA trainer allowed
 * after the first is freed. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "train_helpers.h"
#include "model_path.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define N 40

static int same_file(const char *x, const char *y) {
    FILE *a = fopen(x, "rb"), *b = fopen(y, "rb");
    int same = a != NULL && b != NULL;
    while (same) {
        int ca = fgetc(a), cb = fgetc(b);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (a) fclose(a);
    if (b) fclose(b);
    return same;
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

int main(int argc, char **argv) {
    bc_model *model = NULL;
    bc_model_info info;
    /* f32 weights: the test full-fine-tunes and merges, which need them (native blocks are frozen). */
    if (load_default_model_weights(argc, argv, BC_MODEL_WEIGHTS_F32, &model, &info)) return 1;
    const int vocab = info.n_vocab;
    int32_t tokens[N], targets[N];
    uint64_t s = 777;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        tokens[i] = (int32_t)((s >> 33) % 1500) + 200;
    }
    for (int i = 0; i < N; i++) targets[i] = i + 1 < N ? tokens[i + 1] : -1;
    bc_train_batch b = make_batch(tokens, targets, N, NULL, 0);

    bc_trainer_params tp;
    CHECK_OK(bc_trainer_params_default(&tp, sizeof tp));
    CHECK(tp.lora_rank == 0 && tp.lora_alpha == 16.0f && tp.lora_targets == (BC_LORA_Q | BC_LORA_V) && tp.use_rslora == 0);
    CHECK(tp.lora_dropout == 0.0f && tp.compute_type == BC_COMPUTE_F32);
    tp.micro_batch_tokens = 64;

    /* The full fine-tune's statement, then LoRA's. */
    bc_trainer_memory full, mem;
    memset(&full, 0, sizeof full);
    full.struct_size = sizeof full;
    mem = full;
    CHECK_OK(bc_trainer_estimate(model, &tp, &full));
    tp.lora_rank = 4;
    tp.lora_alpha = 8;
    tp.lora_targets = BC_LORA_ALL;
    tp.lora_seed = 3;
    CHECK_OK(bc_trainer_estimate(model, &tp, &mem));
    const uint64_t d = (uint64_t)info.n_embd;
    CHECK(mem.gradients > 0 && mem.gradients * 50 < full.gradients);
    CHECK(mem.optimizer_state * 50 < full.optimizer_state);
    CHECK(mem.trainable_copies == mem.gradients);
    CHECK(mem.added < full.added);

    /* Bad LoRA fields are refused. */
    bc_trainer *t = NULL;
    bc_trainer_params bad = tp;
    bad.lora_rank = 5000;
    CHECK_ERR(bc_trainer_create(model, &bad, &t), BC_E_INVALID_ARGUMENT);
    bad = tp;
    bad.lora_targets = 0;
    CHECK_ERR(bc_trainer_create(model, &bad, &t), BC_E_INVALID_ARGUMENT);
    bad.lora_targets = 128;
    CHECK_ERR(bc_trainer_create(model, &bad, &t), BC_E_INVALID_ARGUMENT);
    bad = tp;
    bad.use_rslora = 2;
    CHECK_ERR(bc_trainer_create(model, &bad, &t), BC_E_INVALID_ARGUMENT);
    bad = tp;
    bad.lora_alpha = INFINITY;
    CHECK_ERR(bc_trainer_create(model, &bad, &t), BC_E_INVALID_ARGUMENT);
    const float bad_dropout[3] = {1.0f, -0.25f, NAN};
    for (int k = 0; k < 3; k++) {
        bad = tp;
        bad.lora_dropout = bad_dropout[k];
        CHECK_ERR(bc_trainer_create(model, &bad, &t), BC_E_INVALID_ARGUMENT);
    }
    bad = tp;
    bad.compute_type = 2;   /* neither BC_COMPUTE_F32 nor BC_COMPUTE_BF16 */
    CHECK_ERR(bc_trainer_create(model, &bad, &t), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_trainer_params_default(&bad, sizeof bad));
    bad.lora_dropout = 0.25f;   /* dropout without LoRA */
    CHECK_ERR(bc_trainer_create(model, &bad, &t), BC_E_INVALID_ARGUMENT);
    CHECK(t == NULL);

    float *before = (float *)malloc(sizeof(float) * (size_t)vocab);
    float *after = (float *)malloc(sizeof(float) * (size_t)vocab);
    last_logits(model, tokens, N, before, vocab);

    /* The base loss (full fine-tune trainer, evaluate only), then the fresh adapter's. */
    bc_trainer_params fp;
    CHECK_OK(bc_trainer_params_default(&fp, sizeof fp));
    fp.micro_batch_tokens = 64;
    bc_train_result base, r;
    memset(&base, 0, sizeof base);
    base.struct_size = sizeof base;
    r = base;
    CHECK_OK(bc_trainer_create(model, &fp, &t));
    CHECK_OK(bc_trainer_evaluate(t, &b, &base));
    bc_trainer_free(t);
    t = NULL;

    /* BC_COMPUTE_BF16: the statement adds the bf16 copies (4 bytes per projection weight:
     * more than the float32 trainable copies' increase over nothing, less than twice them);
     * the loss agrees with float32's to bf16 precision (0.5%) without being equal to it; the
     * model serves exactly as before once the trainer is freed. A CPU without AVX-512 BF16
     * refuses it with BC_E_UNSUPPORTED. */
    {
        bc_trainer_params bp = fp;
        bp.compute_type = BC_COMPUTE_BF16;
        bc_trainer_memory m32, m16;
        memset(&m32, 0, sizeof m32);
        m32.struct_size = sizeof m32;
        m16 = m32;
        CHECK_OK(bc_trainer_estimate(model, &fp, &m32));
        CHECK_OK(bc_trainer_estimate(model, &bp, &m16));
        CHECK(m16.trainable_copies > m32.trainable_copies && m16.trainable_copies < 2 * m32.trainable_copies + 1);
        CHECK(m16.added - m32.added == m16.trainable_copies - m32.trainable_copies);
        bc_status st = bc_trainer_create(model, &bp, &t);
        if (st == BC_E_UNSUPPORTED) {
            CHECK(strstr(bc_last_error(), "BF16") != NULL);
        } else {
            CHECK(st == BC_OK);
            bc_train_result rb = base;
            CHECK_OK(bc_trainer_evaluate(t, &b, &rb));
            CHECK(rb.loss_sum != base.loss_sum && fabs(rb.loss_sum - base.loss_sum) < 5e-3 * fabs(base.loss_sum));
            bc_trainer_free(t);
        }
        t = NULL;
        last_logits(model, tokens, N, after, vocab);
        CHECK(memcmp(before, after, sizeof(float) * (size_t)vocab) == 0);
    }

    CHECK_OK(bc_trainer_create(model, &tp, &t));
    bc_trainer *second = NULL;
    CHECK_ERR(bc_trainer_create(model, &tp, &second), BC_E_BAD_STATE);
    CHECK_OK(bc_trainer_evaluate(t, &b, &r));
    CHECK(r.loss_sum == base.loss_sum);

    uint32_t count = 0;
    CHECK_OK(bc_trainer_tensor_count(t, &count));
    CHECK(count == 2 * 7 * (uint32_t)info.n_layer);
    bc_trainer_tensor tt;
    memset(&tt, 0, sizeof tt);
    tt.struct_size = sizeof tt;
    CHECK_OK(bc_trainer_get_tensor(t, 0, &tt));
    CHECK(strcmp(tt.name, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") == 0);
    CHECK(tt.rows == 4 && tt.cols == (int64_t)d);
    CHECK_OK(bc_trainer_get_tensor(t, 1, &tt));
    CHECK(strcmp(tt.name, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight") == 0);
    CHECK(tt.rows == (int64_t)d && tt.cols == 4 && tt.values[0] == 0);

    bc_optimizer *opt = NULL;
    CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAMW, &opt));
    bc_optim_hparams hp;
    CHECK_OK(bc_optim_hparams_default(BC_OPTIM_ADAMW, &hp, sizeof hp));
    hp.lr = 1e-3;
    uint32_t g = 0;
    CHECK_OK(bc_optimizer_add_group(opt, &hp, &g));
    CHECK_OK(bc_trainer_register(t, opt, g));

    /* Gradients: the same bits with 1 and 2 threads. */
    check_gradient_thread_invariance(t, 0, &b, &r);
    CHECK_OK(bc_trainer_discard(t));

    bc_train_result step = r, eval = r;
    for (int k = 0; k < 5; k++) {
        CHECK_OK(bc_trainer_micro_batch(t, &b, NULL));
        CHECK_OK(bc_trainer_step(t, opt, NULL, &step, NULL));
    }
    CHECK_OK(bc_trainer_evaluate(t, &b, &eval));
    CHECK(eval.loss < base.loss - 0.05);

    /* The base model serves exactly as before. */
    last_logits(model, tokens, N, after, vocab);
    CHECK(memcmp(before, after, sizeof(float) * (size_t)vocab) == 0);

    /* Files. */
    char dir[] = "/tmp/bc_lora_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char adapter[256], path[300], ckpt[256];
    snprintf(adapter, sizeof adapter, "%s/adapter", dir);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", dir);
    CHECK_OK(bc_trainer_save_adapter(t, adapter));
    snprintf(path, sizeof path, "%s/adapter_config.json", adapter);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    char text[4096] = {0};
    if (f) { size_t got = fread(text, 1, sizeof text - 1, f); text[got] = 0; fclose(f); }
    CHECK(strstr(text, "\"peft_type\": \"LORA\"") != NULL && strstr(text, "\"r\": 4") != NULL);
    CHECK(strstr(text, "\"down_proj\"") != NULL && strstr(text, "\"lora_alpha\": 8") != NULL);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", adapter);
    CHECK(file_size(path) > (long)(mem.gradients));
    CHECK_ERR(bc_trainer_save_adapter(t, NULL), BC_E_INVALID_ARGUMENT);

    /* The merged model: bc_trainer_save_model (scale 1) and bc_merge_adapter from the
     * PEFT directory and from the GGUF adapter write the same bytes (F16); the F32 file's
     * loss (full fine-tune trainer on the loaded file) matches the adapter's within 1e-4
     * relative; the trainer's base stays the same bits. */
    char merged[300], merged16[300], merged2[300], merged3[300], gguf_adapter[300], soup[300];
    snprintf(merged, sizeof merged, "%s/merged.gguf", dir);
    snprintf(merged16, sizeof merged16, "%s/merged16.gguf", dir);
    snprintf(merged2, sizeof merged2, "%s/merged_peft.gguf", dir);
    snprintf(merged3, sizeof merged3, "%s/merged_gguf.gguf", dir);
    snprintf(gguf_adapter, sizeof gguf_adapter, "%s/adapter.gguf", dir);
    snprintf(soup, sizeof soup, "%s/soup.gguf", dir);
    CHECK_OK(bc_trainer_save_model(t, merged, BC_WEIGHTS_GGUF_F32));
    CHECK_OK(bc_trainer_save_model(t, merged16, BC_WEIGHTS_GGUF_F16));
    CHECK_ERR(bc_trainer_save_model(t, merged, (bc_weights_format)7), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_trainer_save_adapter_gguf(t, gguf_adapter));
    CHECK_ERR(bc_trainer_save_adapter_gguf(t, NULL), BC_E_INVALID_ARGUMENT);
    CHECK(file_size(gguf_adapter) > (long)(mem.gradients));
    char model_file[4096];
    CHECK(model_path_from_args(argc, argv, model_file, sizeof model_file) == 0);
    CHECK_OK(bc_merge_adapter(model_file, adapter, 1.0f, merged2, BC_WEIGHTS_GGUF_F16));
    CHECK(same_file(merged16, merged2));
    remove(merged2);
    CHECK_OK(bc_merge_adapter(model_file, gguf_adapter, 1.0f, merged3, BC_WEIGHTS_GGUF_F16));
    CHECK(same_file(merged16, merged3));
    remove(merged3);
    remove(merged16);
    CHECK_ERR(bc_merge_adapter(model_file, gguf_adapter, NAN, merged3, BC_WEIGHTS_GGUF_F32), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_merge_adapter(model_file, NULL, 1.0f, merged3, BC_WEIGHTS_GGUF_F32), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_merge_adapter(model_file, model_file, 1.0f, merged3, BC_WEIGHTS_GGUF_F32), BC_E_FORMAT);
    CHECK(file_size(merged3) < 0);
    {
        bc_model *mm = NULL;
        CHECK_OK(bc_model_load(merged, NULL, &mm));
        bc_trainer *ft = NULL;
        bc_train_result me = r;
        if (mm) {
            CHECK_OK(bc_trainer_create(mm, &fp, &ft));
            CHECK_OK(bc_trainer_evaluate(ft, &b, &me));
            CHECK(fabs(me.loss - eval.loss) <= 1e-4 * fabs(eval.loss));
            bc_trainer_free(ft);
            bc_model_free(mm);
        }
    }
    remove(merged);
    last_logits(model, tokens, N, after, vocab);
    CHECK(memcmp(before, after, sizeof(float) * (size_t)vocab) == 0);

    /* bc_weights_average over GGUF files (the adapter file with itself; the values are
     * checked by the Swift tests) and its refusals. */
    const char *pair[2] = {gguf_adapter, gguf_adapter};
    const double wts[2] = {1.0, 3.0};
    CHECK_OK(bc_weights_average(pair, 2, wts, soup, BC_WEIGHTS_GGUF_F32));
    CHECK(file_size(soup) >= file_size(gguf_adapter));
    CHECK_OK(bc_weights_average(pair, 2, NULL, soup, BC_WEIGHTS_GGUF_F16));
    CHECK_ERR(bc_weights_average(pair, 0, wts, soup, BC_WEIGHTS_GGUF_F32), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_weights_average(pair, 2, wts, soup, BC_WEIGHTS_HF), BC_E_UNSUPPORTED);
    CHECK_ERR(bc_weights_average(NULL, 2, wts, soup, BC_WEIGHTS_GGUF_F32), BC_E_INVALID_ARGUMENT);
    const double zero[2] = {0, 0};
    CHECK_ERR(bc_weights_average(pair, 2, zero, soup, BC_WEIGHTS_GGUF_F32), BC_E_INVALID_ARGUMENT);
    const char *mixed[2] = {gguf_adapter, model_file};
    CHECK_ERR(bc_weights_average(mixed, 2, NULL, soup, BC_WEIGHTS_GGUF_F32), BC_E_FORMAT);

    /* A checkpoint of the adapters restores the trained loss in a new LoRA trainer. */
    CHECK_OK(bc_trainer_save_checkpoint(t, opt, ckpt));
    bc_optimizer_free(opt);
    bc_trainer_free(t);
    t = NULL;
    CHECK_OK(bc_trainer_create(model, &tp, &t));
    bc_train_result fresh = r;
    CHECK_OK(bc_trainer_evaluate(t, &b, &fresh));
    CHECK(fresh.loss_sum == base.loss_sum);
    CHECK_OK(bc_trainer_load_checkpoint(t, NULL, ckpt));
    CHECK_OK(bc_trainer_evaluate(t, &b, &fresh));
    CHECK(fresh.loss_sum == eval.loss_sum);
    bc_trainer_free(t);

    /* LoRA dropout: evaluation never drops (a fresh adapter gives the base loss); the
     * training passes of two micro-batches of the same step differ (different masks), two
     * trainers from the same parameters give the same bits; adapter_config.json states it. */
    {
        bc_trainer_params dp = tp;
        dp.lora_dropout = 0.25f;
        bc_trainer *t1 = NULL, *t2 = NULL;
        CHECK_OK(bc_trainer_create(model, &dp, &t1));
        bc_train_result e1 = r, m1 = r, m2 = r, m3 = r;
        CHECK_OK(bc_trainer_evaluate(t1, &b, &e1));
        CHECK(e1.loss_sum == base.loss_sum);
        bc_optimizer *o1 = NULL;
        CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAMW, &o1));
        uint32_t g1 = 0;
        CHECK_OK(bc_optimizer_add_group(o1, &hp, &g1));
        CHECK_OK(bc_trainer_register(t1, o1, g1));
        CHECK_OK(bc_trainer_micro_batch(t1, &b, NULL));
        CHECK_OK(bc_trainer_step(t1, o1, NULL, NULL, NULL));   /* B != 0 from here */
        CHECK_OK(bc_trainer_micro_batch(t1, &b, &m1));
        CHECK_OK(bc_trainer_micro_batch(t1, &b, &m2));
        CHECK(m1.loss_sum != m2.loss_sum);
        CHECK_OK(bc_trainer_evaluate(t1, &b, &e1));
        CHECK(e1.loss_sum != m1.loss_sum);
        snprintf(path, sizeof path, "%s/dropout_adapter", dir);
        CHECK_OK(bc_trainer_save_adapter(t1, path));
        snprintf(path, sizeof path, "%s/dropout_adapter/adapter_config.json", dir);
        f = fopen(path, "r");
        CHECK(f != NULL);
        memset(text, 0, sizeof text);
        if (f) { size_t got = fread(text, 1, sizeof text - 1, f); text[got] = 0; fclose(f); }
        CHECK(strstr(text, "\"lora_dropout\": 0.25") != NULL);
        bc_optimizer_free(o1);
        bc_trainer_free(t1);
        CHECK_OK(bc_trainer_create(model, &dp, &t2));
        CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAMW, &o1));
        CHECK_OK(bc_optimizer_add_group(o1, &hp, &g1));
        CHECK_OK(bc_trainer_register(t2, o1, g1));
        CHECK_OK(bc_trainer_micro_batch(t2, &b, NULL));
        CHECK_OK(bc_trainer_step(t2, o1, NULL, NULL, NULL));
        CHECK_OK(bc_trainer_micro_batch(t2, &b, &m3));
        CHECK(m3.loss_sum == m1.loss_sum);
        bc_optimizer_free(o1);
        bc_trainer_free(t2);
    }

    /* Full fine-tune trainers reject save_adapter. */
    CHECK_OK(bc_trainer_create(model, &fp, &t));
    CHECK_ERR(bc_trainer_save_adapter(t, adapter), BC_E_BAD_STATE);
    bc_trainer_free(t);

    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    free(before);
    free(after);
    bc_model_free(model);
    CHECK_DONE();
}
