/* The bc_last_error() policy of the header's conventions: only a failing call changes
 * the calling thread's message; a successful call — of EVERY function in the header —
 * leaves it as it was (same text), and so do the functions without a status.
 * check_exports.sh checks that every bc_status function of the header is called here
 * through KEEPS(). A failure on another thread does not change this thread's message.
 * Needs the default model (read from <fixtures>/../../build/stage/model-path). */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "model_path.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static char saved[512];

/* Makes a call fail so the thread has a known message, and keeps a copy of it. */
static void fail_first(void) {
    CHECK_ERR(bc_set_num_threads(-5), BC_E_INVALID_ARGUMENT);
    snprintf(saved, sizeof saved, "%s", bc_last_error());
}

/* `call` must succeed and leave the message of the failure before it. */
#define KEEPS(call)                                                                        \
    do {                                                                                   \
        fail_first();                                                                      \
        CHECK_OK(call);                                                                    \
        check_count++;                                                                     \
        if (strcmp(bc_last_error(), saved) != 0) {                                         \
            check_failures++;                                                              \
            fprintf(stderr, "%s:%d: %s succeeded but changed bc_last_error() to '%s'\n", \
                    __FILE__, __LINE__, #call, bc_last_error());                           \
        }                                                                                  \
    } while (0)

/* A function without a status must leave the message too. */
#define KEEPS_VOID(stmt)                                                                   \
    do {                                                                                   \
        fail_first();                                                                      \
        stmt;                                                                              \
        check_count++;                                                                     \
        if (strcmp(bc_last_error(), saved) != 0) {                                         \
            check_failures++;                                                              \
            fprintf(stderr, "%s:%d: %s changed bc_last_error()\n", __FILE__, __LINE__, #stmt); \
        }                                                                                  \
    } while (0)

static void test_runtime_and_optimizer(const char *dir) {
    enum { N = 16 };
    float w[N], g[N], out[N];
    int i;
    for (i = 0; i < N; i++) {
        w[i] = 0.1f * (float)i - 0.7f;
        g[i] = 0.05f * (float)(i % 3) - 0.04f;
    }
    KEEPS(bc_set_num_threads(0));
    KEEPS_VOID((void)bc_get_num_threads());
    KEEPS_VOID((void)bc_version());
    KEEPS_VOID((void)bc_abi_version());
    KEEPS_VOID((void)bc_status_string(BC_E_IO));

    bc_optim_hparams hp;
    bc_optim_step_params sp;
    bc_optim_step_result res;
    bc_optimizer *opt = NULL;
    uint32_t groups = 0;
    size_t size = 0, written = 0;
    char path[600];
    KEEPS(bc_optim_hparams_default(BC_OPTIM_ADAMW, &hp, sizeof hp));
    KEEPS(bc_optim_step_params_default(&sp, sizeof sp));
    KEEPS(bc_optimizer_create(BC_OPTIM_ADAMW, &opt));
    if (!opt) return;
    KEEPS(bc_optimizer_add_group(opt, &hp, NULL));
    KEEPS(bc_optimizer_add_tensor(opt, 0, "w", w, g, N, NULL));
    KEEPS(bc_optimizer_get_hparams(opt, 0, &hp));
    KEEPS(bc_optimizer_set_hparams(opt, 0, &hp));
    KEEPS(bc_optimizer_set_lr(opt, BC_ALL_GROUPS, 1e-3));
    memset(&res, 0, sizeof res);
    res.struct_size = (uint32_t)sizeof res;
    KEEPS(bc_optimizer_step(opt, &sp, &res));
    KEEPS(bc_optimizer_info(opt, &groups, NULL, NULL));
    {
        int64_t step = 0;
        bc_optim_step_result r2;
        KEEPS(bc_optimizer_get_step(opt, 0, &step));
        KEEPS(bc_optim_step_result_default(&r2, sizeof r2));
    }
    KEEPS(bc_optimizer_state_size(opt, &size));
    {
        void *buf = malloc(size);
        if (buf) {
            KEEPS(bc_optimizer_save_buffer(opt, buf, size, &written));
            KEEPS(bc_optimizer_load_buffer(opt, buf, written));
            free(buf);
        }
    }
    snprintf(path, sizeof path, "%s/opt.state", dir);
    KEEPS(bc_optimizer_save(opt, path));
    KEEPS(bc_optimizer_load(opt, path));
    remove(path);
    KEEPS_VOID(bc_optimizer_free(opt));

    bc_lr_schedule sched;
    double lr = 0;
    KEEPS(bc_lr_schedule_default(&sched, sizeof sched));
    KEEPS(bc_lr_schedule_eval(&sched, 3, &lr));

    bc_ema *ema = NULL;
    uint32_t t = 0;
    KEEPS(bc_ema_create(0.9, &ema));
    if (!ema) return;
    KEEPS(bc_ema_add_tensor(ema, w, N, &t));
    KEEPS(bc_ema_update(ema, 1.0));
    KEEPS(bc_ema_copy(ema, t, out, N));
    KEEPS_VOID(bc_ema_free(ema));
}

static void test_model_context(const char *model_path, const char *dir) {
    bc_model_params mp;
    bc_model *model = NULL;
    bc_model_info info;
    int32_t tokens[32];
    size_t n = 0, len = 0;
    char text[256];
    const char *roles[1] = {"user"}, *contents[1] = {"Hi"};
    KEEPS(bc_model_params_default(&mp, sizeof mp));
    KEEPS(bc_model_load(model_path, &mp, &model));
    if (!model) return;
    memset(&info, 0, sizeof info);
    info.struct_size = (uint32_t)sizeof info;
    KEEPS(bc_model_get_info(model, &info));
    KEEPS(bc_tokenize(model, "Hello world", 11, 0, 0, tokens, 32, &n));
    KEEPS(bc_detokenize(model, tokens, n, 0, text, sizeof text, &len));
    KEEPS(bc_chat_format(model, roles, contents, 1, 1, text, sizeof text, &len));

    bc_context_params cp;
    bc_context *ctx = NULL;
    KEEPS(bc_context_params_default(&cp, sizeof cp));
    KEEPS(bc_context_create(model, &cp, &ctx));
    if (ctx) {
        bc_batch b;
        int32_t pos[32], seq[32], length = 0, cached = 0;
        size_t i;
        float *logits = (float *)malloc(sizeof(float) * (size_t)info.n_vocab);
        for (i = 0; i < n; i++) { pos[i] = (int32_t)i; seq[i] = 0; }
        KEEPS(bc_batch_default(&b, sizeof b));
        b.n_tokens = (int32_t)n;
        b.tokens = tokens;
        b.pos = pos;
        b.seq_id = seq;
        if (logits) KEEPS(bc_decode(ctx, &b, logits, (size_t)info.n_vocab));
        free(logits);
        KEEPS(bc_context_seq_length(ctx, 0, &length));
        KEEPS(bc_context_seq_fork(ctx, 0, 1));
        KEEPS(bc_context_seq_truncate(ctx, 1, 1));
        KEEPS(bc_context_seq_remove(ctx, 1));
        KEEPS(bc_context_seq_attach_prefix(ctx, 2, tokens, (int32_t)n, &cached));
        {
            bc_kv_stats st;
            memset(&st, 0, sizeof st);
            st.struct_size = (uint32_t)sizeof st;
            KEEPS(bc_context_kv_stats(ctx, &st));
        }
        {
            size_t size = 0, written = 0;
            char path[600];
            KEEPS(bc_context_seq_state_size(ctx, 0, &size));
            void *buf = malloc(size);
            if (buf) {
                KEEPS(bc_context_seq_save_buffer(ctx, 0, buf, size, &written));
                KEEPS(bc_context_seq_load_buffer(ctx, 3, buf, written));
                free(buf);
            }
            snprintf(path, sizeof path, "%s/seq.state", dir);
            KEEPS(bc_context_seq_save(ctx, 0, path));
            KEEPS(bc_context_seq_load(ctx, 4, path));
            remove(path);
        }
        bc_sampling_params sp;
        bc_generate_params gp;
        bc_generate_result gr;
        KEEPS(bc_sampling_params_default(&sp, sizeof sp));
        KEEPS(bc_generate_params_default(&gp, sizeof gp));
        gp.max_tokens = 2;
        gp.seq_id = 5;
        memset(&gr, 0, sizeof gr);
        gr.struct_size = (uint32_t)sizeof gr;
        KEEPS(bc_generate(ctx, "Once upon a time", &gp, &sp, &gr));
        KEEPS_VOID(bc_context_free(ctx));
    }

    bc_engine_params ep;
    bc_request_params rp;
    bc_engine *e = NULL;
    KEEPS(bc_engine_params_default(&ep, sizeof ep));
    KEEPS(bc_request_params_default(&rp, sizeof rp));
    KEEPS(bc_engine_create(model, &ep, &e));
    if (e) {
        uint64_t a = 0, b = 0;
        int32_t processed = 0, live = 0;
        bc_event ev[8];
        bc_engine_metrics m;
        rp.max_tokens = 2;
        KEEPS(bc_engine_submit(e, tokens, (int32_t)n, &rp, NULL, &a));
        KEEPS(bc_engine_submit_text(e, "Hi", &rp, NULL, &b));
        KEEPS(bc_engine_cancel(e, b));
        KEEPS(bc_engine_step(e, &processed, &live));
        KEEPS(bc_engine_poll(e, ev, 8, sizeof ev[0], &n));
        memset(&m, 0, sizeof m);
        m.struct_size = (uint32_t)sizeof m;
        KEEPS(bc_engine_get_metrics(e, &m));
        KEEPS_VOID(bc_engine_free(e));
    }
    KEEPS_VOID(bc_model_free(model));
}

/* Another thread's failure leaves this thread's message alone. */
static void *fail_on_thread(void *arg) {
    (void)arg;
    (void)bc_lr_schedule_eval(NULL, 0, NULL);
    return NULL;
}

static void test_thread_local(void) {
    pthread_t th;
    fail_first();
    CHECK(pthread_create(&th, NULL, fail_on_thread, NULL) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(strcmp(bc_last_error(), saved) == 0);
}

/* A one-rank group's collectives: nothing to sum or copy. */
static int one_rank_allreduce(float *buf, size_t n, void *user) { (void)buf; (void)n; (void)user; return 0; }
static int one_rank_broadcast(void *buf, size_t bytes, int root, void *user) {
    (void)buf; (void)bytes; (void)user;
    return root == 0 ? 0 : 1;
}

/* Every fallible trainer call, on the tiny Hugging Face fixture model. */
static void test_trainer(const char *fixtures, const char *dir) {
    char model_dir[4096], data[700], ckpt[700], out[700];
    snprintf(model_dir, sizeof model_dir, "%s/train/tiny_tied", fixtures);
    snprintf(data, sizeof data, "%s/train.jsonl", dir);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", dir);
    snprintf(out, sizeof out, "%s/hf", dir);
    FILE *f = fopen(data, "w");
    if (!f) return;
    for (int i = 0; i < 12; i++) fprintf(f, "{\"text\": \"the cat sat on a mat and ran far away %d.\"}\n", i % 5);
    fclose(f);
    bc_model *model = NULL;
    if (bc_model_load(model_dir, NULL, &model) != BC_OK || !model) { CHECK(0); return; }
    bc_trainer_params tp;
    bc_train_data_params dp;
    bc_trainer_memory mem;
    bc_trainer_tensor tt;
    bc_train_data_info info;
    bc_train_result r;
    bc_train_progress pr;
    memset(&mem, 0, sizeof mem);
    mem.struct_size = sizeof mem;
    memset(&tt, 0, sizeof tt);
    tt.struct_size = sizeof tt;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    memset(&pr, 0, sizeof pr);
    pr.struct_size = sizeof pr;
    KEEPS(bc_trainer_params_default(&tp, sizeof tp));
    tp.micro_batch_tokens = 128;
    KEEPS(bc_train_data_params_default(&dp, sizeof dp));
    dp.eval_fraction = 0.25f;
    KEEPS(bc_trainer_estimate(model, &tp, &mem));
    bc_trainer *t = NULL;
    KEEPS(bc_trainer_create(model, &tp, &t));
    if (!t) { bc_model_free(model); return; }
    uint32_t count = 0, g = 0;
    KEEPS(bc_trainer_tensor_count(t, &count));
    KEEPS(bc_trainer_get_tensor(t, 0, &tt));
    bc_optimizer *opt = NULL;
    bc_optim_hparams hp;
    bc_optim_hparams_default(BC_OPTIM_SGD, &hp, sizeof hp);
    bc_optimizer_create(BC_OPTIM_SGD, &opt);
    bc_optimizer_add_group(opt, &hp, &g);
    KEEPS(bc_trainer_register(t, opt, g));
    int32_t tokens[6] = {1, 2, 3, 4, 5, 6}, targets[6] = {2, 3, 4, 5, 6, -1};
    bc_train_batch b;
    memset(&b, 0, sizeof b);
    b.struct_size = sizeof b;
    b.n_tokens = 6;
    b.tokens = tokens;
    b.targets = targets;
    KEEPS(bc_trainer_micro_batch(t, &b, &r));
    KEEPS(bc_trainer_pending(t, &r));
    KEEPS(bc_trainer_step(t, opt, NULL, &r, NULL));
    KEEPS(bc_trainer_evaluate(t, &b, &r));
    KEEPS(bc_trainer_micro_batch(t, &b, NULL));
    KEEPS(bc_trainer_discard(t));
    KEEPS(bc_trainer_sync(t));
    bc_collectives col;
    KEEPS(bc_collectives_default(&col, sizeof col));
    col.allreduce_sum_f32 = one_rank_allreduce;
    col.broadcast = one_rank_broadcast;
    KEEPS(bc_trainer_set_collectives(t, &col));
    KEEPS(bc_trainer_load_data(t, data, &dp, &info));
    KEEPS(bc_trainer_load_eval(t, data, &dp, &info));
    KEEPS(bc_trainer_train_step(t, opt, NULL, &r, NULL));
    KEEPS(bc_trainer_get_progress(t, &pr));
    bc_batch_control bcc;
    bc_batch_stats bst;
    memset(&bst, 0, sizeof bst);
    bst.struct_size = sizeof bst;
    KEEPS(bc_batch_control_default(&bcc, sizeof bcc));
    KEEPS(bc_trainer_set_batch_control(t, &bcc));
    KEEPS(bc_trainer_get_batch_stats(t, &bst));
    KEEPS(bc_trainer_evaluate_data(t, NULL, NULL, &r));
    KEEPS(bc_trainer_save_checkpoint(t, opt, ckpt));
    KEEPS(bc_trainer_load_checkpoint(t, opt, ckpt));
    KEEPS(bc_trainer_save_model(t, out, BC_WEIGHTS_HF));
    KEEPS_VOID(bc_trainer_free(t));
    bc_optimizer_free(opt);
    /* A LoRA trainer writes its adapters. */
    tp.lora_rank = 2;
    t = NULL;
    KEEPS(bc_trainer_create(model, &tp, &t));
    if (t) {
        char adapter[760];
        snprintf(adapter, sizeof adapter, "%s/adapter", dir);
        KEEPS(bc_trainer_save_adapter(t, adapter));
        char gguf[780], merged[780], soup[780];
        snprintf(gguf, sizeof gguf, "%s/adapter.gguf", dir);
        snprintf(merged, sizeof merged, "%s/merged", dir);
        snprintf(soup, sizeof soup, "%s/soup.gguf", dir);
        KEEPS(bc_trainer_save_adapter_gguf(t, gguf));
        KEEPS(bc_merge_adapter(model_dir, gguf, 0.5f, merged, BC_WEIGHTS_HF));
        const char *one[1] = {gguf};
        KEEPS(bc_weights_average(one, 1, NULL, soup, BC_WEIGHTS_GGUF_F16));
        char rm2[2400];
        snprintf(rm2, sizeof rm2, "rm -rf '%s' '%s' '%s'", gguf, merged, soup);
        if (system(rm2) != 0) CHECK(0);
        bc_trainer_free(t);
        /* Serving the adapter. */
        bc_adapter *ad = NULL;
        KEEPS(bc_adapter_load(model, adapter, &ad));
        bc_context_params acp;
        bc_context_params_default(&acp, sizeof acp);
        acp.kv_bytes = 1 << 22;
        acp.n_ctx = 64;
        bc_context *actx = NULL;
        bc_context_create(model, &acp, &actx);
        KEEPS(bc_context_set_adapter(actx, 0, ad, 0.5f));
        KEEPS_VOID(bc_adapter_free(ad));
        bc_context_free(actx);
        char rm[800];
        snprintf(rm, sizeof rm, "rm -rf '%s'", adapter);
        if (system(rm) != 0) CHECK(0);
    }
    bc_model_free(model);
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s'", data, ckpt, out);
    if (system(cmd) != 0) CHECK(0);
}

int main(int argc, char **argv) {
    char model_path[4096];
    int rc = model_path_from_args(argc, argv, model_path, sizeof model_path);
    if (rc) return rc;
    char dir[] = "/tmp/bc_test_last_error_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    /* Before any failure on this thread the message is "". */
    CHECK(bc_last_error() != NULL && bc_last_error()[0] == '\0');
    test_runtime_and_optimizer(dir);
    test_model_context(model_path, dir);
    test_trainer(argv[1], dir);
    test_thread_local();
    rmdir(dir);
    CHECK_DONE();
}
