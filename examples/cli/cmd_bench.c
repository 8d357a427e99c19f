/* batchcore bench optim — optimizer step throughput on this machine. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct {
    const char *name;
    bc_optim_algorithm algo;
    int bytes_per_param; /* memory traffic of one step per parameter (read + write) */
} algos[] = {
    {"sgd", BC_OPTIM_SGD, 20},       {"adam", BC_OPTIM_ADAM, 28},       {"adamw", BC_OPTIM_ADAMW, 28},
    {"adagrad", BC_OPTIM_ADAGRAD, 20}, {"rmsprop", BC_OPTIM_RMSPROP, 20}, {"lamb", BC_OPTIM_LAMB, 44},
    {"lion", BC_OPTIM_LION, 20},     {"adabrake", BC_OPTIM_ADABRAKE, 32},
};

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: batchcore bench optim [options]\n"
            "\n"
            "Times optimizer steps over float32 parameters and prints one line per\n"
            "algorithm: parameters/second and the memory traffic it implies.\n"
            "\n"
            "options:\n"
            "  -n, --params N     parameters per step (default 4000000)\n"
            "  -s, --steps N      timed steps per algorithm (default 5, after 1 warm-up)\n"
            "  -t, --threads N    threads (default 0 = all cores)\n"
            "  -a, --algo NAME    one of sgd adam adamw adagrad rmsprop lamb lion adabrake, or all\n"
            "      --json         JSON lines instead of a table\n"
            "  -h, --help         this help\n");
}

static int parse_long(const char *s, long *out) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!s[0] || *end) return 0;
    *out = v;
    return 1;
}

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (strcmp(argv[1], "optim") != 0) {
        fprintf(stderr, "batchcore bench: unknown benchmark '%s' (try: optim)\n", argv[1]);
        return EXIT_USAGE;
    }
    long n = 4000000, steps = 5, threads = 0;
    const char *only = "all";
    int json = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(stdout); return EXIT_OK; }
        if (strcmp(a, "--json") == 0) { json = 1; continue; }
        long *target = NULL;
        if (strcmp(a, "-n") == 0 || strcmp(a, "--params") == 0) target = &n;
        else if (strcmp(a, "-s") == 0 || strcmp(a, "--steps") == 0) target = &steps;
        else if (strcmp(a, "-t") == 0 || strcmp(a, "--threads") == 0) target = &threads;
        else if (strcmp(a, "-a") == 0 || strcmp(a, "--algo") == 0) {
            if (!v) { fprintf(stderr, "batchcore bench: %s needs a value\n", a); return EXIT_USAGE; }
            only = v; i++; continue;
        } else { fprintf(stderr, "batchcore bench: unknown option '%s'\n", a); return EXIT_USAGE; }
        if (!v || !parse_long(v, target) || *target < 0) {
            fprintf(stderr, "batchcore bench: %s needs a non-negative integer\n", a);
            return EXIT_USAGE;
        }
        i++;
    }
    if (n < 1 || steps < 1) { fprintf(stderr, "batchcore bench: --params and --steps must be >= 1\n"); return EXIT_USAGE; }
    bc_status st = bc_set_num_threads((int32_t)threads);
    if (st != BC_OK) { cli_report("set threads", st); return EXIT_FAIL; }

    float *param = (float *)malloc((size_t)n * sizeof(float));
    float *grad = (float *)malloc((size_t)n * sizeof(float));
    if (!param || !grad) { fprintf(stderr, "batchcore bench: out of memory for %ld parameters\n", n); return EXIT_FAIL; }
    unsigned long long x = 88172645463325252ULL;
    for (long i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        param[i] = (float)((double)(x >> 40) / 16777216.0 - 0.5);
        grad[i] = param[i] * 0.01f;
    }
    if (!json)
        printf("%-9s %12s %14s %10s   (%ld params, %d threads)\n", "algorithm", "ms/step", "params/s", "GB/s", n,
               (int)bc_get_num_threads());
    int ran = 0, rc = EXIT_OK;
    for (size_t k = 0; k < sizeof algos / sizeof algos[0]; k++) {
        if (strcmp(only, "all") != 0 && strcmp(only, algos[k].name) != 0) continue;
        ran++;
        fprintf(stderr, "\rbench: %-9s ...", algos[k].name);
        bc_optimizer *opt = NULL;
        bc_optim_hparams hp;
        bc_optim_step_params sp;
        if ((st = bc_optimizer_create(algos[k].algo, &opt)) != BC_OK ||
            (st = bc_optim_hparams_default(algos[k].algo, &hp, sizeof hp)) != BC_OK) {
            cli_report("create optimizer", st); rc = EXIT_FAIL; bc_optimizer_free(opt); break;
        }
        if (algos[k].algo == BC_OPTIM_SGD) hp.momentum = 0.9;
        bc_optim_step_params_default(&sp, sizeof sp);
        sp.check_finite = 0;
        if ((st = bc_optimizer_add_group(opt, &hp, NULL)) != BC_OK ||
            (st = bc_optimizer_add_tensor(opt, 0, "w", param, grad, n, NULL)) != BC_OK ||
            (st = bc_optimizer_step(opt, &sp, NULL)) != BC_OK) {
            cli_report(algos[k].name, st); rc = EXIT_FAIL; bc_optimizer_free(opt); break;
        }
        double best = 1e30;
        for (long s = 0; s < steps; s++) {
            double t0 = now_seconds();
            if ((st = bc_optimizer_step(opt, &sp, NULL)) != BC_OK) { cli_report(algos[k].name, st); rc = EXIT_FAIL; break; }
            double dt = now_seconds() - t0;
            if (dt < best) best = dt;
        }
        bc_optimizer_free(opt);
        if (rc != EXIT_OK) break;
        double pps = (double)n / best, gbps = pps * algos[k].bytes_per_param / 1e9;
        if (json)
            printf("{\"algorithm\":\"%s\",\"params\":%ld,\"threads\":%d,\"ms_per_step\":%.4f,\"params_per_s\":%.0f,"
                   "\"bytes_per_param\":%d,\"gb_per_s\":%.2f}\n",
                   algos[k].name, n, (int)bc_get_num_threads(), best * 1e3, pps, algos[k].bytes_per_param, gbps);
        else
            printf("%-9s %12.3f %14.3e %10.2f\n", algos[k].name, best * 1e3, pps, gbps);
        fflush(stdout);
    }
    fprintf(stderr, "\r%30s\r", "");
    free(param);
    free(grad);
    if (!ran) { fprintf(stderr, "batchcore bench: unknown algorithm '%s'\n", only); return EXIT_USAGE; }
    return rc;
}
