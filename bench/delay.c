/* Gradient delay experiment (issue 14): SGD with momentum vs Adaptive Braking when every
 * gradient is computed on weights D steps old, as in asynchronous training.
 *
 *   delay [--steps N] [--seeds K] [--csv FILE]
 *
 * The optimizers are the library's own (bc_optimizer): BC_OPTIM_SGD with momentum 0.9 and
 * BC_OPTIM_ADABRAKE with momentum 0.9 and alpha 1 or 0.5. The delay is simulated exactly: the program
 * keeps the last D+1 weight vectors in a ring and computes step t's gradient at w[t-D]; the
 * optimizer then applies it to w[t]. Two fixed problems:
 *
 *   quad  noisy ill-conditioned quadratic, f(w) = 1/2 sum_i h_i (w_i - w*_i)^2, 128
 *         dimensions, curvatures h_i log-spaced in [1e-3, 1]; the stochastic gradient is
 *         h (w_{t-D} - w*) + sigma sqrt(h) xi (Gaussian noise, as a minibatch gradient would
 *         be). The reported loss is the exact f(w_t).
 *   mlp   a 2-32-1 tanh MLP on 512 "two moons" points (full batch, mean binary
 *         cross-entropy): a non-convex problem with a curvature that changes while training.
 *
 * For every (problem, D, optimizer) a learning-rate grid is run over K seeds; the table gives the
 * final loss (mean of the last 10% of steps, averaged over seeds; "div" when any seed
 * diverged) per learning rate, and the best learning rate of each optimizer per delay.
 * Output: a Markdown table on stdout; with --csv the loss curves of the best lr per cell.
 */
#include <batchcore.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846

/* ------------------------------------------------------------ rng */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t next64(rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double uniform01(rng *r) { return (double)(next64(r) >> 11) * (1.0 / 9007199254740992.0); }

static double gaussian(rng *r) {
    double u1 = uniform01(r), u2 = uniform01(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * PI * u2);
}

/* ------------------------------------------------------------ problems */

/* A problem: `dim` parameters; init fills w; grad computes the gradient at w into g (may use the
 * rng for noise) and returns nothing; loss returns the exact objective at w. */
typedef struct problem {
    const char *name;
    int dim;
    double sigma;
    void (*init)(const struct problem *, float *w, rng *r);
    void (*grad)(const struct problem *, const float *w, float *g, rng *r);
    double (*loss)(const struct problem *, const float *w);
} problem;

/* quad */
#define QDIM 128
static double q_h[QDIM], q_star[QDIM];

static void quad_setup(void) {
    rng r = {12345};
    for (int i = 0; i < QDIM; i++) {
        q_h[i] = pow(10.0, -3.0 + 3.0 * (double)i / (QDIM - 1));
        q_star[i] = gaussian(&r);
    }
}

static void quad_init(const problem *p, float *w, rng *r) {
    (void)p;
    (void)r;
    for (int i = 0; i < QDIM; i++) w[i] = (float)(q_star[i] + 3.0); /* same start for every seed */
}

static void quad_grad(const problem *p, const float *w, float *g, rng *r) {
    for (int i = 0; i < QDIM; i++)
        g[i] = (float)(q_h[i] * ((double)w[i] - q_star[i]) + p->sigma * sqrt(q_h[i]) * gaussian(r));
}

static double quad_loss(const problem *p, const float *w) {
    (void)p;
    double f = 0;
    for (int i = 0; i < QDIM; i++) {
        double d = (double)w[i] - q_star[i];
        f += 0.5 * q_h[i] * d * d;
    }
    return f;
}

/* mlp: w = [w1 (H*2) | b1 (H) | w2 (H) | b2 (1)] */
#define NPTS 512
#define H 32
#define MDIM (H * 4 + 1)
static float mx[NPTS][2], my[NPTS];

static void moons_setup(void) {
    rng r = {20240607ULL};
    for (int i = 0; i < NPTS; i++) {
        double t = PI * uniform01(&r), x, y;
        if (i % 2 == 0) {
            x = cos(t);
            y = sin(t);
            my[i] = 0;
        } else {
            x = 1.0 - cos(t);
            y = 0.5 - sin(t);
            my[i] = 1;
        }
        mx[i][0] = (float)(x - 0.5 + 0.12 * gaussian(&r));
        mx[i][1] = (float)(2.0 * (y - 0.25) + 0.12 * gaussian(&r));
    }
}

static void mlp_init(const problem *p, float *w, rng *r) {
    (void)p;
    for (int i = 0; i < H * 2; i++) w[i] = (float)(2.0 * uniform01(r) - 1.0);
    for (int i = 0; i < H; i++) w[H * 2 + i] = (float)(0.5 * (2.0 * uniform01(r) - 1.0));
    for (int i = 0; i < H; i++) w[H * 3 + i] = (float)(0.2 * (2.0 * uniform01(r) - 1.0));
    w[H * 4] = 0;
}

static double mlp_eval(const float *w, float *g) {
    const float *w1 = w, *b1 = w + H * 2, *w2 = w + H * 3, *b2 = w + H * 4;
    double gw[MDIM];
    memset(gw, 0, sizeof gw);
    double loss = 0;
    for (int i = 0; i < NPTS; i++) {
        double h[H], z = b2[0];
        for (int j = 0; j < H; j++) {
            h[j] = tanh((double)w1[2 * j] * mx[i][0] + (double)w1[2 * j + 1] * mx[i][1] + b1[j]);
            z += (double)w2[j] * h[j];
        }
        double y = my[i];
        loss += (z > 0 ? z + log1p(exp(-z)) : log1p(exp(z))) - y * z;
        if (!g) continue;
        double dz = (1.0 / (1.0 + exp(-z)) - y) / NPTS;
        gw[H * 4] += dz;
        for (int j = 0; j < H; j++) {
            gw[H * 3 + j] += dz * h[j];
            double da = dz * w2[j] * (1.0 - h[j] * h[j]);
            gw[H * 2 + j] += da;
            gw[2 * j] += da * mx[i][0];
            gw[2 * j + 1] += da * mx[i][1];
        }
    }
    if (g)
        for (int k = 0; k < MDIM; k++) g[k] = (float)gw[k];
    return loss / NPTS;
}

static void mlp_grad(const problem *p, const float *w, float *g, rng *r) {
    (void)p;
    (void)r;
    mlp_eval(w, g);
}

static double mlp_loss(const problem *p, const float *w) {
    (void)p;
    return mlp_eval(w, NULL);
}

/* ------------------------------------------------------------ one run */

#define MAXDIM MDIM

static int check(bc_status st, const char *what) {
    if (st != BC_OK) {
        fprintf(stderr, "delay: %s: %s\n", what, bc_last_error());
        exit(1);
    }
    return 0;
}

/* Runs `steps` steps; writes the loss of every step into curve (may be NULL). Returns the mean
 * loss of the last 10% of steps, or INFINITY if the run diverged. */
static double run(const problem *p, bc_optim_algorithm algo, double alpha, double lr, int delay, int steps,
                  uint64_t seed, double *curve) {
    int n = p->dim;
    float *ring = calloc((size_t)(delay + 1) * n, sizeof(float));
    float *w = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
    if (!ring || !w || !g) {
        fprintf(stderr, "delay: out of memory\n");
        exit(1);
    }
    rng r = {seed * 7919 + 17};
    p->init(p, w, &r);
    for (int k = 0; k <= delay; k++) memcpy(ring + (size_t)k * n, w, sizeof(float) * n);

    bc_optimizer *opt = NULL;
    check(bc_optimizer_create(algo, &opt), "create");
    bc_optim_hparams hp;
    check(bc_optim_hparams_default(algo, &hp, sizeof hp), "hparams");
    hp.lr = lr;
    hp.momentum = 0.9;
    if (algo == BC_OPTIM_ADABRAKE) hp.alpha = alpha;
    uint32_t grp = 0;
    check(bc_optimizer_add_group(opt, &hp, &grp), "group");
    check(bc_optimizer_add_tensor(opt, grp, "w", w, g, n, NULL), "tensor");
    bc_optim_step_params sp;
    check(bc_optim_step_params_default(&sp, sizeof sp), "step params");
    sp.check_finite = 0;

    double tail = 0;
    int tail_n = 0, diverged = 0;
    for (int t = 0; t < steps; t++) {
        /* The ring's D+1 slots hold w[t-D .. t]: slot t % (D+1) receives w[t], and slot
         * (t+1) % (D+1), written at step t-D, still holds w[t-D] (the start for t < D). */
        memcpy(ring + (size_t)(t % (delay + 1)) * n, w, sizeof(float) * n);
        p->grad(p, ring + (size_t)((t + 1) % (delay + 1)) * n, g, &r);
        check(bc_optimizer_step(opt, &sp, NULL), "step");
        double f = p->loss(p, w);
        if (!isfinite(f) || f > 1e6) {
            diverged = 1;
            for (int u = t; u < steps && curve; u++) curve[u] = NAN;
            break;
        }
        if (curve) curve[t] = f;
        if (t >= steps - steps / 10) {
            tail += f;
            tail_n++;
        }
    }
    bc_optimizer_free(opt);
    free(ring);
    free(w);
    free(g);
    return diverged ? INFINITY : tail / tail_n;
}

/* ------------------------------------------------------------ main */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int steps = 3000, seeds = 3;
    const char *csv = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seeds") && i + 1 < argc) seeds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
        else {
            fprintf(stderr, "usage: delay [--steps N] [--seeds K] [--csv FILE]\n");
            return 2;
        }
    }
    if (steps < 10 || seeds < 1) {
        fprintf(stderr, "delay: --steps >= 10, --seeds >= 1\n");
        return 2;
    }
    quad_setup();
    moons_setup();
    problem probs[2] = {
        {"quad", QDIM, 0.05, quad_init, quad_grad, quad_loss},
        {"mlp", MDIM, 0.0, mlp_init, mlp_grad, mlp_loss},
    };
    const double lrs[] = {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0};
    const int nlr = (int)(sizeof lrs / sizeof lrs[0]);
    const int delays[] = {0, 8, 32};
    const struct {
        const char *name;
        bc_optim_algorithm algo;
        double alpha;
    } opts[] = {{"SGD-m", BC_OPTIM_SGD, 0}, {"AB a=1", BC_OPTIM_ADABRAKE, 1.0}, {"AB a=0.5", BC_OPTIM_ADABRAKE, 0.5}};
    const int nopt = (int)(sizeof opts / sizeof opts[0]);
    FILE *cf = csv ? fopen(csv, "w") : NULL;
    if (csv && !cf) {
        perror(csv);
        return 1;
    }
    if (cf) fprintf(cf, "problem,delay,optimizer,lr,step,loss\n");
    double *curve = malloc(sizeof(double) * steps), *acc = malloc(sizeof(double) * steps);
    double *vals = malloc(sizeof(double) * seeds);

    printf("steps %d, seeds %d, momentum 0.9; final loss = mean of the last 10%% of steps "
           "(mean over seeds), div = a seed diverged\n\n",
           steps, seeds);
    for (int pi = 0; pi < 2; pi++) {
        const problem *p = &probs[pi];
        printf("### %s\n\n| D | optimizer |", p->name);
        for (int k = 0; k < nlr; k++) printf(" lr %g |", lrs[k]);
        printf(" best |\n|---|---|");
        for (int k = 0; k <= nlr; k++) printf("---:|");
        printf("\n");
        for (int di = 0; di < 3; di++) {
            for (int oi = 0; oi < nopt; oi++) {
                printf("| %d | %s |", delays[di], opts[oi].name);
                double best = INFINITY, best_lr = 0;
                for (int k = 0; k < nlr; k++) {
                    double sum = 0;
                    int div = 0;
                    for (int s = 0; s < seeds; s++) {
                        vals[s] = run(p, opts[oi].algo, opts[oi].alpha, lrs[k], delays[di], steps, (uint64_t)s + 1, NULL);
                        if (!isfinite(vals[s])) div = 1;
                        sum += vals[s];
                    }
                    qsort(vals, seeds, sizeof(double), cmp_double);
                    if (div) printf(" div |");
                    else {
                        double m = sum / seeds;
                        printf(" %.4g |", m);
                        if (m < best) {
                            best = m;
                            best_lr = lrs[k];
                        }
                    }
                }
                if (isfinite(best)) printf(" %.4g (lr %g) |\n", best, best_lr);
                else printf(" all diverged |\n");
                fflush(stdout);
                if (cf && isfinite(best)) {
                    for (int t = 0; t < steps; t++) acc[t] = 0;
                    for (int s = 0; s < seeds; s++) {
                        run(p, opts[oi].algo, opts[oi].alpha, best_lr, delays[di], steps, (uint64_t)s + 1, curve);
                        for (int t = 0; t < steps; t++) acc[t] += curve[t] / seeds;
                    }
                    for (int t = 0; t < steps; t += steps / 100)
                        fprintf(cf, "%s,%d,%s,%g,%d,%.6g\n", p->name, delays[di], opts[oi].name, best_lr, t, acc[t]);
                }
            }
        }
        printf("\n");
    }
    if (cf) fclose(cf);
    free(curve);
    free(acc);
    free(vals);
    return 0;
}
