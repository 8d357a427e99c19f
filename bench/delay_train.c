/* delay_train.c — the trainer's gradient delay (bc_trainer_params.gradient_delay) on the
 * tiny model Tests/fixtures/train/tiny_tied: SGD with momentum 0.9 vs Adaptive Braking
 * (momentum 0.9, alpha 0.5) at D = 0 and D = 8, over a grid of learning rates.
 *
 * Data: a fixed random Markov chain over the 61-token vocabulary (each token has 3
 * successors, probabilities 0.6/0.3/0.1: entropy 0.90 nats vs ln 61 = 4.11 for a uniform
 * guess). Every step draws a fresh micro-batch of 2 documents x 24 tokens (noisy
 * gradients); the loss reported is the training loss of the step (on the current weights),
 * and "final" is the mean of the last 10% of steps; "eval" the loss on 8 fixed held-out
 * documents after the last step. "div" when a loss is non-finite or > 20.
 *
 *   cc -std=c99 -O2 bench/delay_train.c $(pkg-config --cflags --libs batchcore) -lm -o delay_train
 *   ./delay_train Tests/fixtures/train/tiny_tied [steps]
 */
#include <batchcore.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V 61
#define DOC 24
#define DOCS 2

static int succ[V][3];

static uint64_t rng(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static void sample_doc(uint64_t *s, int32_t *out) {
    int t = (int)(rng(s) % V);
    for (int i = 0; i < DOC; i++) {
        out[i] = t;
        unsigned u = (unsigned)(rng(s) % 10);
        t = succ[t][u < 6 ? 0 : u < 9 ? 1 : 2];
    }
}

static double batch_loss(bc_trainer *t, uint64_t *s, int train) {
    int32_t tok[DOCS * DOC], tgt[DOCS * DOC];
    uint32_t len[DOCS];
    for (int d = 0; d < DOCS; d++) {
        sample_doc(s, tok + d * DOC);
        len[d] = DOC;
        for (int i = 0; i < DOC; i++) tgt[d * DOC + i] = i + 1 < DOC ? tok[d * DOC + i + 1] : -1;
    }
    bc_train_batch b;
    memset(&b, 0, sizeof b);
    b.struct_size = sizeof b;
    b.n_tokens = DOCS * DOC;
    b.tokens = tok;
    b.targets = tgt;
    b.document_lengths = len;
    b.n_documents = DOCS;
    bc_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    bc_status st = train ? bc_trainer_micro_batch(t, &b, &r) : bc_trainer_evaluate(t, &b, &r);
    return st == BC_OK ? r.loss : NAN;
}

/* One run; fills curve[steps]; returns the final loss (NAN: diverged). */
static double run(const char *model_dir, int algo, double lr, uint32_t delay, int steps, double *curve, double *eval,
                  int *applied_first) {
    bc_model *m = NULL;
    if (bc_model_load(model_dir, NULL, &m) != BC_OK) { fprintf(stderr, "load: %s\n", bc_last_error()); exit(1); }
    bc_trainer_params tp;
    bc_trainer_params_default(&tp, sizeof tp);
    tp.micro_batch_tokens = DOCS * DOC;
    tp.gradient_delay = delay;
    bc_trainer *t = NULL;
    if (bc_trainer_create(m, &tp, &t) != BC_OK) { fprintf(stderr, "trainer: %s\n", bc_last_error()); exit(1); }
    bc_optimizer *opt = NULL;
    bc_optim_algorithm a = algo ? BC_OPTIM_ADABRAKE : BC_OPTIM_SGD;
    bc_optimizer_create(a, &opt);
    bc_optim_hparams hp;
    bc_optim_hparams_default(a, &hp, sizeof hp);
    hp.lr = lr;
    hp.momentum = 0.9;
    if (algo) hp.alpha = 0.5;
    uint32_t g;
    bc_optimizer_add_group(opt, &hp, &g);
    bc_trainer_register(t, opt, g);
    uint64_t s = 12345;
    double final = 0;
    int tail = steps / 10, diverged = 0;
    *applied_first = -1;
    for (int k = 0; k < steps; k++) {
        double loss = batch_loss(t, &s, 1);
        bc_optim_step_result res;
        bc_optim_step_result_default(&res, sizeof res);
        bc_status st = bc_trainer_step(t, opt, NULL, NULL, &res);
        if (st == BC_OK && res.applied && *applied_first < 0) *applied_first = k + 1;
        if (st != BC_OK || !isfinite(loss) || loss > 20) { diverged = 1; for (; k < steps; k++) curve[k] = NAN; break; }
        curve[k] = loss;
        if (k >= steps - tail) final += loss / tail;
    }
    *eval = NAN;
    if (!diverged) {
        uint64_t e = 999;
        double sum = 0;
        for (int i = 0; i < 4; i++) sum += batch_loss(t, &e, 0) / 4;
        *eval = sum;
    }
    bc_optimizer_free(opt);
    bc_trainer_free(t);
    bc_model_free(m);
    return diverged ? NAN : final;
}

static void cell(double x) {
    if (isnan(x)) printf(" div |");
    else printf(" %.4g |", x);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s MODEL_DIR [steps]\n", argv[0]); return 2; }
    int steps = argc > 2 ? atoi(argv[2]) : 300;
    if (steps < 20 || steps > 100000) return 2;
    uint64_t s = 7;
    for (int i = 0; i < V; i++)
        for (int j = 0; j < 3; j++) succ[i][j] = (int)(rng(&s) % V);
    static const double lrs[] = {0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5};
    enum { NLR = sizeof lrs / sizeof lrs[0] };
    static const uint32_t delays[] = {0, 8};
    static const char *names[] = {"SGD-m", "AB a=0.5"};
    double *curves = (double *)malloc(sizeof(double) * (size_t)steps * 2 * 2 * NLR);
    double best[2][2];
    int bestlr[2][2];
    printf("| D | optimizer |");
    for (int l = 0; l < NLR; l++) printf(" lr %g |", lrs[l]);
    printf(" best (eval) |\n|---|---|");
    for (int l = 0; l <= NLR; l++) printf("---:|");
    printf("\n");
    for (int di = 0; di < 2; di++)
        for (int a = 0; a < 2; a++) {
            best[di][a] = INFINITY;
            bestlr[di][a] = -1;
            double beval = NAN;
            printf("| %u | %s |", delays[di], names[a]);
            for (int l = 0; l < NLR; l++) {
                double ev;
                int first;
                double *c = curves + ((size_t)((di * 2 + a) * NLR + l)) * (size_t)steps;
                double f = run(argv[1], a, lrs[l], delays[di], steps, c, &ev, &first);
                if (!isnan(f) && first != (int)delays[di] + 1) { fprintf(stderr, "first applied step %d\n", first); return 1; }
                cell(f);
                if (!isnan(f) && f < best[di][a]) { best[di][a] = f; bestlr[di][a] = l; beval = ev; }
                fflush(stdout);
            }
            if (bestlr[di][a] >= 0) printf(" %.4g (lr %g; eval %.4g) |\n", best[di][a], lrs[bestlr[di][a]], beval);
            else printf(" div |\n");
        }
    printf("\nTraining loss at each optimizer's best lr (mean of 10 steps around each point):\n\n");
    int marks[] = {0, steps / 10, steps / 4, steps / 2, 3 * steps / 4, steps - 10};
    printf("| D | optimizer (best lr) |");
    for (int i = 0; i < 6; i++) printf(" step %d |", marks[i]);
    printf("\n|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (int di = 0; di < 2; di++)
        for (int a = 0; a < 2; a++) {
            if (bestlr[di][a] < 0) continue;
            double *c = curves + ((size_t)((di * 2 + a) * NLR + bestlr[di][a])) * (size_t)steps;
            printf("| %u | %s (lr %g) |", delays[di], names[a], lrs[bestlr[di][a]]);
            for (int i = 0; i < 6; i++) {
                double m = 0;
                for (int k = marks[i]; k < marks[i] + 10; k++) m += c[k] / 10;
                cell(m);
            }
            printf("\n");
        }
    free(curves);
    return 0;
}
