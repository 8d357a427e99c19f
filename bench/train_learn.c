/*
 * train_learn.c — does full fine-tuning through the public C ABI learn? Fine-tunes a
 * model on a plain-text training file and measures, before training, every K steps and
 * after, the perplexity on a HELD-OUT text of the same kind (should fall) and on a text
 * of another domain (the "forget" eval: how much the model loses elsewhere; cf. Biderman
 * et al., "LoRA Learns Less and Forgets Less", 2024).
 *
 *   cc -std=c99 -O2 $(pkg-config --cflags batchcore) train_learn.c $(pkg-config --libs batchcore) -lm -o train_learn
 *   train_learn MODEL TRAIN.txt HELDOUT.txt FORGET.txt [--steps N] [--micro-batch-tokens T]
 *               [--accumulation A] [--lr LR] [--min-lr-ratio R] [--warmup W] [--eval-every K]
 *               [--max-tokens M] [--weight-decay WD] [--clip C] [--seed S] [--threads N]
 *
 * The trainer reads the files itself (bc_trainer_load_data / bc_trainer_load_eval /
 * bc_trainer_evaluate_data): plain text is cut into documents of M tokens (default T),
 * shuffled with seed S and packed into micro-batches of T tokens; one optimizer step
 * (bc_trainer_train_step) takes A micro-batches. Optimizer: AdamW (torch defaults but
 * lr and weight decay), global gradient clip C, learning rate per step from
 * bc_lr_schedule_eval: linear warmup over W steps (default N/10), then cosine to R x LR.
 * N defaults to one epoch; more steps than one epoch take more epochs.
 *
 * Output: per step a "# step" line on stderr; per evaluation one line on stdout
 *   EVAL step=.. tokens=.. heldout_ppl=.. forget_ppl=.. train_loss=.. lr=.. heldout_loss=.. forget_loss=.. eval_sec=.. elapsed_sec=..
 * (train_loss: mean loss per target token of the steps since the previous evaluation;
 * nan before the first step), then a markdown table of all evaluations after "TABLE".
 */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"
#include <string.h>
#include <sys/resource.h>

#define MAX_EVALS 1024

typedef struct eval_row {
    long step, tokens;
    double heldout_loss, forget_loss, train_loss, lr, sec, elapsed;
} eval_row;

static bc_train_data_params data_params(unsigned max_tokens, unsigned long long seed, unsigned epochs) {
    bc_train_data_params p;
    CHECK(bc_train_data_params_default(&p, sizeof p));
    p.max_tokens = max_tokens;
    p.seed = seed;
    p.epochs = epochs;
    return p;
}

static double eval_file(bc_trainer *t, const char *path, const bc_train_data_params *p) {
    bc_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    CHECK(bc_trainer_evaluate_data(t, path, p, &r));
    return r.loss;
}

int main(int argc, char **argv) {
    if (argc < 5 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fprintf(stderr, "usage: train_learn MODEL TRAIN.txt HELDOUT.txt FORGET.txt [--steps N] [--micro-batch-tokens T]\n"
                        "       [--accumulation A] [--lr LR] [--min-lr-ratio R] [--warmup W] [--eval-every K]\n"
                        "       [--max-tokens M] [--weight-decay WD] [--clip C] [--seed S] [--threads N]\n");
        return argc < 5 ? 2 : 0;
    }
    const char *model_path = argv[1], *train_path = argv[2], *heldout_path = argv[3], *forget_path = argv[4];
    long steps = 0, warmup = -1, eval_every = 10, T = 256, A = 1, M = 0, threads = 0;
    double lr = 5e-5, min_ratio = 0.1, wd = -1, clip = 1.0; /* wd < 0: AdamW default (0.01) */
    unsigned long long seed = 1;
    for (int i = 5; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "train_learn: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--steps")) steps = atol(v);
        else if (!strcmp(a, "--micro-batch-tokens")) T = atol(v);
        else if (!strcmp(a, "--accumulation")) A = atol(v);
        else if (!strcmp(a, "--lr")) lr = atof(v);
        else if (!strcmp(a, "--min-lr-ratio")) min_ratio = atof(v);
        else if (!strcmp(a, "--warmup")) warmup = atol(v);
        else if (!strcmp(a, "--eval-every")) eval_every = atol(v);
        else if (!strcmp(a, "--max-tokens")) M = atol(v);
        else if (!strcmp(a, "--weight-decay")) wd = atof(v);
        else if (!strcmp(a, "--clip")) clip = atof(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--threads")) threads = atol(v);
        else { fprintf(stderr, "train_learn: unknown option %s\n", a); return 2; }
        i++;
    }
    if (steps < 0 || T < 2 || T > 1 << 20 || A < 1 || A > 4096 || M < 0 || M > T || eval_every < 1 ||
        !(lr > 0) || !(min_ratio >= 0 && min_ratio <= 1) || !(wd >= 0 || wd == -1) || !(clip >= 0)) {
        fprintf(stderr, "train_learn: bad settings\n");
        return 2;
    }
    if (M == 0) M = T;
    CHECK(bc_set_num_threads((int32_t)threads));
    double t_start = now();

    bc_model *model = NULL;
    bc_model_params mp; /* training needs float32 weights */
    CHECK(bc_model_params_default(&mp, sizeof mp));
    mp.weights = BC_MODEL_WEIGHTS_F32;
    CHECK(bc_model_load(model_path, &mp, &model));
    bc_trainer_params tp;
    CHECK(bc_trainer_params_default(&tp, sizeof tp));
    tp.micro_batch_tokens = (uint32_t)T;
    tp.accumulation_steps = (uint32_t)A;
    bc_trainer_memory mem;
    memset(&mem, 0, sizeof mem);
    mem.struct_size = sizeof mem;
    CHECK(bc_trainer_estimate(model, &tp, &mem));
    fprintf(stderr, "# trainer memory: %.0f MiB added to %.0f MiB of model weights\n", mem.added / 1048576.0,
            mem.model_weights / 1048576.0);
    bc_trainer *t = NULL;
    CHECK(bc_trainer_create(model, &tp, &t));

    /* Training data: one epoch first, to learn its length; more epochs if N needs them. */
    bc_train_data_params dp = data_params((unsigned)M, seed, 1);
    bc_train_data_info di;
    memset(&di, 0, sizeof di);
    di.struct_size = sizeof di;
    CHECK(bc_trainer_load_data(t, train_path, &dp, &di));
    const long epoch_steps = (long)di.steps;
    if (epoch_steps < 1) { fprintf(stderr, "train_learn: the training file gives no step\n"); return 1; }
    if (steps == 0) steps = epoch_steps;
    if (steps > epoch_steps) {
        dp.epochs = (uint32_t)((steps + epoch_steps - 1) / epoch_steps);
        CHECK(bc_trainer_load_data(t, train_path, &dp, &di));
    }
    fprintf(stderr, "# train: %s: %lld documents, %lld tokens, %ld steps per epoch; %u epoch(s)\n", train_path,
            (long long)di.examples, (long long)di.tokens, epoch_steps, dp.epochs);
    bc_train_data_params ep = data_params((unsigned)M, seed, 1);
    bc_train_data_info ei;
    memset(&ei, 0, sizeof ei);
    ei.struct_size = sizeof ei;
    CHECK(bc_trainer_load_eval(t, heldout_path, &ep, &ei));
    fprintf(stderr, "# held-out: %s: %lld documents, %lld target tokens\n", heldout_path,
            (long long)ei.eval_examples, (long long)ei.targets);

    bc_optimizer *opt = NULL;
    CHECK(bc_optimizer_create(BC_OPTIM_ADAMW, &opt));
    bc_optim_hparams hp;
    CHECK(bc_optim_hparams_default(BC_OPTIM_ADAMW, &hp, sizeof hp));
    hp.lr = lr;
    if (wd >= 0) hp.weight_decay = wd;
    wd = hp.weight_decay;
    uint32_t g = 0;
    CHECK(bc_optimizer_add_group(opt, &hp, &g));
    CHECK(bc_trainer_register(t, opt, g));
    int64_t n_params = 0;
    CHECK(bc_optimizer_info(opt, NULL, NULL, &n_params));

    bc_lr_schedule sched;
    CHECK(bc_lr_schedule_default(&sched, sizeof sched));
    sched.kind = BC_LR_WARMUP_COSINE;
    sched.base_lr = lr;
    sched.min_lr = lr * min_ratio;
    sched.warmup_steps = warmup >= 0 ? (warmup < steps ? warmup : steps) : steps / 10;
    sched.total_steps = steps;
    bc_optim_step_params sp;
    CHECK(bc_optim_step_params_default(&sp, sizeof sp));
    sp.max_grad_norm = clip;

    fprintf(stderr, "# %lld parameters; steps %ld, micro-batch %ld tokens x %ld, documents of %ld tokens, AdamW lr %g "
                    "(warmup %lld, cosine to %g), weight decay %g, clip %g, seed %llu, threads %d\n",
            (long long)n_params, steps, T, A, M, lr, (long long)sched.warmup_steps, sched.min_lr, wd, clip, seed,
            (int)bc_get_num_threads());

    static eval_row rows[MAX_EVALS];
    int n_rows = 0;
    double loss_sum = 0, cur_lr = 0;
    long loss_n = 0;
    for (long s = 0;; s++) {
        if (s % eval_every == 0 || s == steps) {
            double t0 = now();
            eval_row r;
            bc_train_progress pr;
            memset(&pr, 0, sizeof pr);
            pr.struct_size = sizeof pr;
            CHECK(bc_trainer_get_progress(t, &pr));
            r.step = (long)pr.step;
            r.tokens = (long)pr.tokens;
            r.heldout_loss = eval_file(t, NULL, &ep);
            r.forget_loss = eval_file(t, forget_path, &ep);
            r.train_loss = loss_n ? loss_sum / (double)loss_n : NAN;
            r.lr = cur_lr;
            r.sec = now() - t0;
            r.elapsed = now() - t_start;
            loss_sum = 0;
            loss_n = 0;
            printf("EVAL step=%ld tokens=%ld heldout_ppl=%.4f forget_ppl=%.4f train_loss=%.4f lr=%.3g heldout_loss=%.5f "
                   "forget_loss=%.5f eval_sec=%.1f elapsed_sec=%.1f\n",
                   r.step, r.tokens, exp(r.heldout_loss), exp(r.forget_loss), r.train_loss, r.lr, r.heldout_loss,
                   r.forget_loss, r.sec, r.elapsed);
            fflush(stdout);
            if (n_rows < MAX_EVALS) rows[n_rows++] = r;
        }
        if (s == steps) break;
        CHECK(bc_lr_schedule_eval(&sched, s, &cur_lr));
        CHECK(bc_optimizer_set_lr(opt, BC_ALL_GROUPS, cur_lr));
        bc_train_result tot;
        memset(&tot, 0, sizeof tot);
        tot.struct_size = sizeof tot;
        bc_optim_step_result osr;
        memset(&osr, 0, sizeof osr);
        osr.struct_size = sizeof osr;
        double t0 = now();
        bc_status st = bc_trainer_train_step(t, opt, &sp, &tot, &osr);
        if (st == BC_E_NOT_FOUND) { fprintf(stderr, "# the data ran out after %ld steps\n", s); steps = s; s--; continue; }
        if (st != BC_OK) { fprintf(stderr, "bc_trainer_train_step: %s: %s\n", bc_status_string(st), bc_last_error()); return 1; }
        double dt = now() - t0;
        loss_sum += tot.loss_sum;
        loss_n += (long)tot.targets;
        fprintf(stderr, "# step %ld: loss %.4f, %lld tokens, grad norm %.3f, lr %.3g, %.1f s (%.1f tokens/s)\n", s + 1,
                tot.loss, (long long)tot.tokens, osr.grad_norm, cur_lr, dt, tot.tokens / dt);
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("TABLE\n");
    printf("| step | training tokens | held-out ppl | forget ppl | train loss (since last eval) | eval s | elapsed s |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n_rows; i++) {
        char tl[32];
        if (isnan(rows[i].train_loss)) snprintf(tl, sizeof tl, "-");
        else snprintf(tl, sizeof tl, "%.4f", rows[i].train_loss);
        printf("| %ld | %ld | %.3f | %.3f | %s | %.0f | %.0f |\n", rows[i].step, rows[i].tokens, exp(rows[i].heldout_loss),
               exp(rows[i].forget_loss), tl, rows[i].sec, rows[i].elapsed);
    }
    if (n_rows >= 2) {
        const eval_row *a = &rows[0], *b = &rows[n_rows - 1];
        printf("RESULT heldout_ppl_before=%.4f heldout_ppl_after=%.4f heldout_change_pct=%.2f forget_ppl_before=%.4f "
               "forget_ppl_after=%.4f forget_change_pct=%.2f steps=%ld tokens=%ld sec=%.0f peak_rss_mib=%.0f\n",
               exp(a->heldout_loss), exp(b->heldout_loss), 100.0 * (exp(b->heldout_loss - a->heldout_loss) - 1),
               exp(a->forget_loss), exp(b->forget_loss), 100.0 * (exp(b->forget_loss - a->forget_loss) - 1), b->step,
               b->tokens, now() - t_start, ru.ru_maxrss / 1024.0);
    }
    bc_optimizer_free(opt);
    bc_trainer_free(t);
    bc_model_free(model);
    return 0;
}
