/* Learning-rate schedules and the parameter EMA through the C ABI: values against
 * closed forms computed here in double, argument errors. */
#include "check.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#define PI 3.14159265358979323846

/* ---------------------------------------------------------------- schedules */

static bc_lr_schedule schedule(int32_t kind, double base, double min, int64_t warmup, int64_t total, int64_t decay) {
    bc_lr_schedule s;
    bc_lr_schedule_default(&s, sizeof s);
    s.kind = kind;
    s.base_lr = base;
    s.min_lr = min;
    s.warmup_steps = warmup;
    s.total_steps = total;
    s.decay_steps = decay;
    return s;
}

/* The header's semantics, written out:
 *  - s < warmup: base * (s + 1) / warmup
 *  - s >= total (non-constant kinds): min
 *  - cosine: min + 0.5 (base - min)(1 + cos(pi p)), p = (s - warmup) / (total - warmup)
 *  - linear: base + (min - base) p
 *  - WSD: base until total - decay, then base + (min - base)(s - (total - decay)) / decay
 *  - constant: base after warmup. */
static double expected_lr(const bc_lr_schedule *s, int64_t step) {
    if (step < s->warmup_steps) return s->base_lr * (double)(step + 1) / (double)s->warmup_steps;
    if (s->kind == BC_LR_CONSTANT) return s->base_lr;
    if (step >= s->total_steps) return s->min_lr;
    double p = (double)(step - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
    switch (s->kind) {
    case BC_LR_WARMUP_COSINE: return s->min_lr + 0.5 * (s->base_lr - s->min_lr) * (1.0 + cos(PI * p));
    case BC_LR_WARMUP_LINEAR: return s->base_lr + (s->min_lr - s->base_lr) * p;
    case BC_LR_WSD: {
        int64_t start = s->total_steps - s->decay_steps;
        if (step < start) return s->base_lr;
        return s->base_lr + (s->min_lr - s->base_lr) * (double)(step - start) / (double)s->decay_steps;
    }
    default: return NAN;
    }
}

static int close_to(double got, double want) {
    return fabs(got - want) <= 1e-12 * fabs(want) + 1e-18;
}

/* Compares steps [0, last] with the closed form; returns the number of mismatches. */
static int sweep(const bc_lr_schedule *s, int64_t last, const char *what) {
    int bad = 0;
    for (int64_t step = 0; step <= last; step++) {
        double lr = -1.0;
        bc_status st = bc_lr_schedule_eval(s, step, &lr);
        double want = expected_lr(s, step);
        if (st != BC_OK || !close_to(lr, want)) {
            if (bad < 3)
                fprintf(stderr, "  %s: step %lld: got %.17g (%s: %s), expected %.17g\n", what, (long long)step, lr,
                        bc_status_string(st), st == BC_OK ? "" : bc_last_error(), want);
            bad++;
        }
    }
    return bad;
}

static void test_schedule_values(void) {
    bc_lr_schedule d;
    memset(&d, 0x5C, sizeof d);
    CHECK_OK(bc_lr_schedule_default(&d, sizeof d));
    CHECK(d.struct_size == sizeof d);
    CHECK(d.kind == BC_LR_CONSTANT);
    CHECK(d.base_lr == 1e-3);
    CHECK(d.warmup_steps == 0);
    double lr = 0;
    CHECK_OK(bc_lr_schedule_eval(&d, 0, &lr));
    CHECK(lr == 1e-3);
    CHECK_OK(bc_lr_schedule_eval(&d, 12345, &lr));
    CHECK(lr == 1e-3);
    CHECK_OK(bc_lr_schedule_eval(&d, INT64_MAX, &lr));
    CHECK(lr == 1e-3);

    bc_lr_schedule s;
    /* Constant with warmup (total covers the warmup, so the lengths are consistent). */
    s = schedule(BC_LR_CONSTANT, 0.3, 0.0, 10, 1000, 0);
    CHECK(sweep(&s, 999, "constant+warmup") == 0);
    CHECK_OK(bc_lr_schedule_eval(&s, 0, &lr));
    CHECK(close_to(lr, 0.03));
    CHECK_OK(bc_lr_schedule_eval(&s, 9, &lr));
    CHECK(lr == 0.3);

    s = schedule(BC_LR_WARMUP_COSINE, 0.1, 0.001, 100, 1000, 0);
    CHECK(sweep(&s, 1200, "cosine") == 0);
    CHECK_OK(bc_lr_schedule_eval(&s, 100, &lr));
    CHECK(close_to(lr, 0.1)); /* end of warmup = peak */
    CHECK_OK(bc_lr_schedule_eval(&s, 550, &lr));
    CHECK(close_to(lr, 0.001 + 0.5 * 0.099)); /* half way */
    CHECK_OK(bc_lr_schedule_eval(&s, 1000, &lr));
    CHECK(close_to(lr, 0.001));
    CHECK_OK(bc_lr_schedule_eval(&s, INT64_MAX, &lr));
    CHECK(close_to(lr, 0.001));
    s = schedule(BC_LR_WARMUP_COSINE, 2.5, 0.0, 0, 37, 0);
    CHECK(sweep(&s, 50, "cosine, no warmup") == 0);
    CHECK_OK(bc_lr_schedule_eval(&s, 0, &lr));
    CHECK(lr == 2.5);
    s = schedule(BC_LR_WARMUP_COSINE, 1.0, 0.5, 1, 2, 0);
    CHECK(sweep(&s, 5, "cosine, tiny") == 0);

    s = schedule(BC_LR_WARMUP_LINEAR, 0.02, 0.002, 30, 330, 0);
    CHECK(sweep(&s, 400, "linear") == 0);
    CHECK_OK(bc_lr_schedule_eval(&s, 180, &lr));
    CHECK(close_to(lr, 0.011));
    s = schedule(BC_LR_WARMUP_LINEAR, 1e-3, 0.0, 0, 1000, 0);
    CHECK(sweep(&s, 1100, "linear, no warmup") == 0);

    s = schedule(BC_LR_WSD, 0.05, 0.0005, 50, 1000, 200);
    CHECK(sweep(&s, 1100, "wsd") == 0);
    CHECK_OK(bc_lr_schedule_eval(&s, 799, &lr));
    CHECK(lr == 0.05); /* stable phase */
    CHECK_OK(bc_lr_schedule_eval(&s, 900, &lr));
    CHECK(close_to(lr, 0.05 + (0.0005 - 0.05) * 0.5));
    s = schedule(BC_LR_WSD, 0.05, 0.0, 0, 100, 100); /* all decay */
    CHECK(sweep(&s, 120, "wsd, all decay") == 0);
    s = schedule(BC_LR_WSD, 0.05, 0.01, 10, 100, 90); /* warmup straight into decay */
    CHECK(sweep(&s, 120, "wsd, no stable phase") == 0);

    /* The header rejects warmup/decay LONGER than total_steps: equal is allowed.
       Warmup == total: the warmup ramp, then min_lr. */
    s = schedule(BC_LR_WARMUP_COSINE, 0.1, 0.01, 10, 10, 0);
    CHECK(sweep(&s, 15, "cosine, warmup == total") == 0);
    s = schedule(BC_LR_WARMUP_LINEAR, 0.1, 0.01, 10, 10, 0);
    CHECK(sweep(&s, 15, "linear, warmup == total") == 0);

    /* An older caller's shorter struct: the fields beyond struct_size are ignored
       (defaults: no warmup). */
    {
        bc_lr_schedule old;
        memset(&old, 0, sizeof old);
        old.struct_size = (uint32_t)offsetof(bc_lr_schedule, min_lr);
        old.kind = BC_LR_CONSTANT;
        old.base_lr = 0.125;
        old.min_lr = -7;       /* beyond struct_size */
        old.warmup_steps = -3; /* beyond struct_size */
        CHECK_OK(bc_lr_schedule_eval(&old, 0, &lr));
        CHECK(lr == 0.125);
    }
}

static void test_schedule_errors(void) {
    bc_lr_schedule d;
    CHECK_ERR(bc_lr_schedule_default(NULL, sizeof d), BC_E_INVALID_ARGUMENT);
    memset(&d, 0x3C, sizeof d);
    bc_lr_schedule copy = d;
    CHECK_ERR(bc_lr_schedule_default(&d, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_lr_schedule_default(&d, 3), BC_E_INVALID_ARGUMENT);
    CHECK(memcmp(&d, &copy, sizeof d) == 0);

    const bc_lr_schedule good = schedule(BC_LR_WARMUP_COSINE, 0.1, 0.001, 10, 100, 0);
    double lr = 42.0;
    bc_lr_schedule s;
    CHECK_ERR(bc_lr_schedule_eval(NULL, 0, &lr), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_lr_schedule_eval(&good, 0, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_lr_schedule_eval(&good, -1, &lr), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_lr_schedule_eval(&good, INT64_MIN, &lr), BC_E_INVALID_ARGUMENT);
    s = good; s.warmup_steps = -1;
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = good; s.total_steps = -1;
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = good; s.warmup_steps = 101; /* warmup longer than total */
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = schedule(BC_LR_WARMUP_LINEAR, 0.1, 0.0, 200, 100, 0);
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = schedule(BC_LR_WSD, 0.1, 0.0, 0, 100, 101); /* decay longer than total */
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = schedule(BC_LR_WSD, 0.1, 0.0, 0, 100, -1);
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = schedule(BC_LR_WSD, 0.1, 0.0, 101, 100, 10);
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    /* warmup + decay overflows int64 (trapped before issue 11): an error, not a crash. */
    s = schedule(BC_LR_WSD, 0.1, 0.0, INT64_MAX, INT64_MAX, 1);
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = schedule(BC_LR_WSD, 0.1, 0.0, 1, INT64_MAX, INT64_MAX);
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    {
        double end = -1.0;
        s = schedule(BC_LR_WSD, 0.1, 0.0, 1, INT64_MAX, INT64_MAX - 1); /* fits exactly: valid */
        CHECK_OK(bc_lr_schedule_eval(&s, INT64_MAX, &end));
        CHECK(end == 0.0);
    }
    s = good; s.kind = 99;
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = good; s.kind = -1;
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = good; s.kind = 4;
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = good; s.base_lr = NAN;
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = good; s.base_lr = INFINITY;
    CHECK_ERR(bc_lr_schedule_eval(&s, 50, &lr), BC_E_INVALID_ARGUMENT);
    s = good; s.base_lr = -0.1;
    CHECK_ERR(bc_lr_schedule_eval(&s, 50, &lr), BC_E_INVALID_ARGUMENT);
    s = good; s.min_lr = NAN;
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = good; s.min_lr = -1e-9;
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = good; s.min_lr = -INFINITY;
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = good; s.struct_size = 0;
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    s = schedule(BC_LR_CONSTANT, NAN, 0.0, 0, 0, 0);
    CHECK_ERR(bc_lr_schedule_eval(&s, 0, &lr), BC_E_INVALID_ARGUMENT);
    CHECK(lr == 42.0); /* the output is untouched on every error */
}

/* ---------------------------------------------------------------- EMA */

#define EN 1000
#define EN2 70001 /* more than one internal work chunk */

static void test_ema_values(double decay) {
    float *p = (float *)malloc(EN * sizeof(float));
    float *q = (float *)malloc(EN2 * sizeof(float));
    float *out = (float *)malloc(EN2 * sizeof(float));
    double *sp = (double *)malloc(EN * sizeof(double));
    double *sq = (double *)malloc(EN2 * sizeof(double));
    CHECK(p && q && out && sp && sq);
    if (!p || !q || !out || !sp || !sq) goto done;
    for (int i = 0; i < EN; i++) sp[i] = p[i] = (float)(1.0 + 0.5 * sin(0.1 * i));
    for (int i = 0; i < EN2; i++) sq[i] = q[i] = (float)(2.0 + cos(0.001 * i));
    {
        bc_ema *ema = NULL;
        CHECK_OK(bc_ema_create(decay, &ema));
        uint32_t id0 = 9, id1 = 9;
        CHECK_OK(bc_ema_add_tensor(ema, p, EN, &id0));
        CHECK_OK(bc_ema_add_tensor(ema, q, EN2, &id1));
        CHECK(id0 == 0 && id1 == 1);
        /* The shadow starts as an exact copy. */
        CHECK_OK(bc_ema_copy(ema, 0, out, EN));
        CHECK(memcmp(out, p, EN * sizeof(float)) == 0);
        CHECK_OK(bc_ema_copy(ema, 1, out, EN2));
        CHECK(memcmp(out, q, EN2 * sizeof(float)) == 0);

        static const double kappas[] = {1.0, 1.0, 2.0, 0.5, 4.0, 1.0, 0.25, 3.0, 1.0, 1.7,
                                        1.0, 8.0, 1.0, 1.0, 0.1, 2.0, 1.0, 1.0, 5.0, 1.0};
        const int k = (int)(sizeof kappas / sizeof kappas[0]);
        double worst = 0.0;
        for (int u = 0; u < k; u++) {
            /* New parameter values, then one update. */
            for (int i = 0; i < EN; i++) p[i] = (float)(1.0 + 0.5 * sin(0.1 * i + 0.3 * (u + 1)));
            for (int i = 0; i < EN2; i++) q[i] = (float)(2.0 + cos(0.001 * i + 0.2 * (u + 1)));
            CHECK_OK(bc_ema_update(ema, kappas[u]));
            double d = pow(decay, kappas[u]);
            for (int i = 0; i < EN; i++) sp[i] = d * sp[i] + (1.0 - d) * (double)p[i];
            for (int i = 0; i < EN2; i++) sq[i] = d * sq[i] + (1.0 - d) * (double)q[i];
        }
        CHECK_OK(bc_ema_copy(ema, 0, out, EN));
        for (int i = 0; i < EN; i++) worst = fmax(worst, fabs((double)out[i] - sp[i]) / fabs(sp[i]));
        CHECK_OK(bc_ema_copy(ema, 1, out, EN2));
        for (int i = 0; i < EN2; i++) worst = fmax(worst, fabs((double)out[i] - sq[i]) / fabs(sq[i]));
        printf("  ema decay %g: %d updates, max relative error vs float64 closed form %.3g\n", decay, k, worst);
        CHECK(worst <= 1e-6);
        bc_ema_free(ema);
    }
done:
    free(p);
    free(q);
    free(out);
    free(sp);
    free(sq);
}

/* decay^kappa: one update with kappa = 2 equals two kappa = 1 updates towards the same
 * parameters; decay 1 never moves; decay 0 copies. */
static void test_ema_rules(void) {
    float p[64], out_a[64], out_b[64];
    for (int i = 0; i < 64; i++) p[i] = (float)(i % 7) - 3.0f;
    bc_ema *a = NULL, *b = NULL;
    CHECK_OK(bc_ema_create(0.9, &a));
    CHECK_OK(bc_ema_create(0.9, &b));
    CHECK_OK(bc_ema_add_tensor(a, p, 64, NULL));
    CHECK_OK(bc_ema_add_tensor(b, p, 64, NULL));
    for (int i = 0; i < 64; i++) p[i] = 10.0f + (float)i;
    CHECK_OK(bc_ema_update(a, 2.0));
    CHECK_OK(bc_ema_update(b, 1.0));
    CHECK_OK(bc_ema_update(b, 1.0));
    CHECK_OK(bc_ema_copy(a, 0, out_a, 64));
    CHECK_OK(bc_ema_copy(b, 0, out_b, 64));
    double worst = 0;
    for (int i = 0; i < 64; i++) {
        double want = 0.81 * ((double)(i % 7) - 3.0) + 0.19 * (10.0 + i);
        worst = fmax(worst, fabs((double)out_a[i] - want) / fabs(want));
        worst = fmax(worst, fabs((double)out_b[i] - want) / fabs(want));
    }
    CHECK(worst <= 1e-6);
    bc_ema_free(a);
    bc_ema_free(b);

    /* decay 1: the shadow never moves; decay 0: it is the parameters. */
    float init[64];
    memcpy(init, p, sizeof p);
    CHECK_OK(bc_ema_create(1.0, &a));
    CHECK_OK(bc_ema_create(0.0, &b));
    CHECK_OK(bc_ema_add_tensor(a, p, 64, NULL));
    CHECK_OK(bc_ema_add_tensor(b, p, 64, NULL));
    for (int i = 0; i < 64; i++) p[i] = -1.5f * (float)i;
    CHECK_OK(bc_ema_update(a, 1.0));
    CHECK_OK(bc_ema_update(b, 1.0));
    CHECK_OK(bc_ema_update(a, 3.0));
    CHECK_OK(bc_ema_update(b, 0.5));
    CHECK_OK(bc_ema_copy(a, 0, out_a, 64));
    CHECK_OK(bc_ema_copy(b, 0, out_b, 64));
    CHECK(memcmp(out_a, init, sizeof init) == 0);
    {
        /* Equal values (a -0 parameter may come back as +0). */
        int same = 1;
        for (int i = 0; i < 64; i++) same &= out_b[i] == p[i];
        CHECK(same);
    }
    bc_ema_free(a);
    bc_ema_free(b);
}

static void test_ema_errors(void) {
    bc_ema *ema = (bc_ema *)(void *)&ema;
    bc_ema *sentinel = ema;
    CHECK_ERR(bc_ema_create(0.99, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_create(-0.01, &ema), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_create(1.01, &ema), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_create(NAN, &ema), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_create(INFINITY, &ema), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_create(-INFINITY, &ema), BC_E_INVALID_ARGUMENT);
    CHECK(ema == sentinel);
    bc_ema_free(NULL);

    float p[32], q[32], out[32];
    for (int i = 0; i < 32; i++) p[i] = q[i] = (float)i;
    CHECK_OK(bc_ema_create(0.5, &ema));
    uint32_t id = 77;
    CHECK_ERR(bc_ema_add_tensor(NULL, p, 8, &id), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_add_tensor(ema, NULL, 8, &id), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_add_tensor(ema, p, 0, &id), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_add_tensor(ema, p, -4, &id), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_add_tensor(ema, p, INT64_MIN, &id), BC_E_INVALID_ARGUMENT);
    CHECK(id == 77);
    CHECK_OK(bc_ema_add_tensor(ema, p + 8, 8, &id));
    CHECK(id == 0);
    CHECK_ERR(bc_ema_add_tensor(ema, p + 8, 8, &id), BC_E_INVALID_ARGUMENT);  /* same buffer */
    CHECK_ERR(bc_ema_add_tensor(ema, p + 15, 4, &id), BC_E_INVALID_ARGUMENT); /* overlaps the end */
    CHECK_ERR(bc_ema_add_tensor(ema, p, 9, &id), BC_E_INVALID_ARGUMENT);      /* overlaps the start */
    CHECK_ERR(bc_ema_add_tensor(ema, p, 32, &id), BC_E_INVALID_ARGUMENT);     /* contains it */
    CHECK_ERR(bc_ema_add_tensor(ema, p + 10, 2, &id), BC_E_INVALID_ARGUMENT); /* inside it */
    CHECK(id == 0);
    CHECK_OK(bc_ema_add_tensor(ema, p, 8, &id)); /* adjacent below */
    CHECK(id == 1);
    CHECK_OK(bc_ema_add_tensor(ema, p + 16, 16, &id)); /* adjacent above */
    CHECK(id == 2);
    CHECK_OK(bc_ema_add_tensor(ema, q, 32, NULL));

    for (int i = 0; i < 32; i++) p[i] = 100.0f;
    CHECK_ERR(bc_ema_update(NULL, 1.0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_update(ema, 0.0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_update(ema, -1.0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_update(ema, NAN), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_update(ema, INFINITY), BC_E_INVALID_ARGUMENT);
    /* Nothing moved. */
    CHECK_OK(bc_ema_copy(ema, 0, out, 8));
    CHECK(memcmp(out, q + 8, 8 * sizeof(float)) == 0);

    for (int i = 0; i < 32; i++) out[i] = -9.0f;
    float out_copy[32];
    memcpy(out_copy, out, sizeof out);
    CHECK_ERR(bc_ema_copy(NULL, 0, out, 8), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_copy(ema, 0, NULL, 8), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_copy(ema, 0, out, 7), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_copy(ema, 0, out, 9), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_copy(ema, 0, out, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_ema_copy(ema, 0, out, -8), BC_E_INVALID_ARGUMENT);
    /* Unknown id: BC_E_INVALID_ARGUMENT or BC_E_NOT_FOUND (see test_optim_args.c). */
    {
        bc_status st = bc_ema_copy(ema, 4, out, 8);
        CHECK((st == BC_E_INVALID_ARGUMENT || st == BC_E_NOT_FOUND) && bc_last_error()[0] != '\0');
        st = bc_ema_copy(ema, UINT32_MAX, out, 8);
        CHECK((st == BC_E_INVALID_ARGUMENT || st == BC_E_NOT_FOUND) && bc_last_error()[0] != '\0');
    }
    CHECK(memcmp(out, out_copy, sizeof out) == 0);
    bc_ema_free(ema);

    /* An EMA without tensors may update. */
    CHECK_OK(bc_ema_create(0.9, &ema));
    CHECK_OK(bc_ema_update(ema, 1.0));
    bc_ema_free(ema);
}

int main(void) {
    test_schedule_values();
    test_schedule_errors();
    test_ema_values(0.9);
    test_ema_values(0.999);
    test_ema_values(0.5);
    test_ema_rules();
    test_ema_errors();
    CHECK_DONE();
}
