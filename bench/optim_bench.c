/*
 * optim_bench.c — throughput of batchcore's optimizer step (AdamW, SGD-momentum)
 * through the public C ABI, plus this machine's memory bandwidth (STREAM-like).
 *
 * Built like any user program, against the installed header only:
 *   cc -std=c99 -O3 -march=native $(pkg-config --cflags batchcore) optim_bench.c \
 *      $(pkg-config --libs batchcore) -lpthread -lm -o optim_bench
 *
 * Usage: optim_bench [--quick] [--sizes 10M,30M,100M] [--threads 1,2]
 *                    [--algos adamw,sgd] [--steps 9] [--warmup 2]
 *                    [--stream-mib 512] [--no-stream]
 *
 * Output: human-readable comments ('#') and machine-readable lines:
 *   MIX     n=.. tensors=.. d=.. layers=.. largest=.. smallest=.. small_tensors=..
 *   STREAM  kernel=copy|triad|update threads=T mib_per_array=.. bytes_per_elem=.. gbps=..
 *   BOUND   threads=T gbps=..            (max over the STREAM kernels at T threads)
 *   RESULT  impl=batchcore algo=adamw|sgd n=.. threads=T check=0|1 bytes_per_param=..
 *           sec=<median> min_sec=.. max_sec=.. params_per_s=.. gbps=..
 * gbps = bytes_per_param * params_per_s (nominal traffic: AdamW 28 B/param,
 * SGD-momentum 16 B/param; the finiteness pre-pass of check=1 is not counted).
 */
#define _POSIX_C_SOURCE 200809L

#include "bench_util.h"
#include <batchcore.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LIST 16
#define MAX_TENSORS 4096


static void die(const char *what) {
    fprintf(stderr, "optim_bench: %s\n", what);
    exit(1);
}

static void check_bc(bc_status st, const char *what) {
    if (st != BC_OK) {
        fprintf(stderr, "optim_bench: %s failed: %s (%s)\n", what, bc_status_string(st), bc_last_error());
        exit(1);
    }
}

static void *xalloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes < 64 ? 64 : bytes) != 0 || p == NULL) die("out of memory");
    return p;
}


static double median(const double *v, int n) {
    double tmp[256];
    memcpy(tmp, v, (size_t)n * sizeof *v);
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

/* ------------------------------------------------------------------------- */
/* Tensor mix                                                                */
/* ------------------------------------------------------------------------- */
/*
 * A GPT-like layout totalling exactly n: one embedding matrix (n/8), then L
 * transformer blocks of width d (qkv 3d*d + bias 3d, out d*d + bias d, ln1 w/b,
 * up 4d*d + bias 4d, down 4d*d + bias d, ln2 w/b = 12d^2 + 13d per block), then
 * a final LayerNorm (w, b), and a last "head" matrix taking the remainder.
 * d = 64*round(sqrt(0.875 n / 96) / 64) (>= 64), so ~8 blocks. The same function
 * is mirrored in optim_torch.py; both print the MIX line to compare.
 */
typedef struct mix {
    int64_t count[MAX_TENSORS];
    int ntensors;
    int64_t d;
    int layers;
} mix;

static void mix_add(mix *m, int64_t c) {
    if (c <= 0) return;
    if (m->ntensors >= MAX_TENSORS) die("too many tensors");
    m->count[m->ntensors++] = c;
}

static void make_mix(int64_t n, mix *m) {
    memset(m, 0, sizeof *m);
    int64_t d = (int64_t)(sqrt(0.875 * (double)n / 96.0) / 64.0 + 0.5) * 64;
    if (d < 64) d = 64;
    m->d = d;
    int64_t left = n;
    int64_t emb = n / 8;
    mix_add(m, emb);
    left -= emb;
    const int64_t block = 12 * d * d + 13 * d;
    while (left - block >= 2 * d + 1) {
        const int64_t parts[12] = {3 * d * d, 3 * d, d * d, d, d, d, 4 * d * d, 4 * d, 4 * d * d, d, d, d};
        for (int i = 0; i < 12; i++) mix_add(m, parts[i]);
        left -= block;
        m->layers++;
    }
    if (left >= 2 * d + 1) {
        mix_add(m, d);
        mix_add(m, d);
        left -= 2 * d;
    }
    mix_add(m, left);
}

static void print_mix(int64_t n, const mix *m) {
    int64_t largest = 0, smallest = INT64_MAX, total = 0;
    int small = 0;
    for (int i = 0; i < m->ntensors; i++) {
        int64_t c = m->count[i];
        total += c;
        if (c > largest) largest = c;
        if (c < smallest) smallest = c;
        if (c < 65536) small++;
    }
    if (total != n) die("tensor mix does not add up");
    printf("MIX n=%lld tensors=%d d=%lld layers=%d largest=%lld smallest=%lld small_tensors=%d\n", (long long)n,
           m->ntensors, (long long)m->d, m->layers, (long long)largest, (long long)smallest, small);
}

/* ------------------------------------------------------------------------- */
/* Random data                                                               */
/* ------------------------------------------------------------------------- */

static uint64_t xorshift_next(uint64_t *s) {
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [lo, hi) with random sign: never zero. */
static void fill_random(float *x, int64_t n, uint64_t seed, float lo, float hi) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = xorshift_next(&s);
        float u = (float)((r >> 40) * (1.0 / 16777216.0)); /* [0,1) */
        float v = lo + (hi - lo) * u;
        x[i] = (r & 1) ? -v : v;
    }
}

/* ------------------------------------------------------------------------- */
/* STREAM-like bandwidth                                                     */
/* ------------------------------------------------------------------------- */

enum { K_COPY = 0, K_TRIAD = 1, K_UPDATE = 2, K_INIT = 3 };
static const char *const kernel_names[] = {"copy", "triad", "update"};
/* STREAM counting: bytes explicitly read + written per element (no write-allocate). */
static const int kernel_bytes[] = {16, 24, 24};

typedef struct stream_job {
    double *a, *b, *c;
    size_t lo, hi;
    int kernel;
    double scalar;
} stream_job;

static void run_kernel(const stream_job *j) {
    double *restrict a = j->a, *restrict b = j->b, *restrict c = j->c;
    const double s = j->scalar;
    switch (j->kernel) {
    case K_COPY: /* c = a */
        for (size_t i = j->lo; i < j->hi; i++) c[i] = a[i];
        break;
    case K_TRIAD: /* a = b + s*c */
        for (size_t i = j->lo; i < j->hi; i++) a[i] = b[i] + s * c[i];
        break;
    case K_UPDATE: /* in place like an optimizer: b = s*b + a (read a,b; write b) */
        for (size_t i = j->lo; i < j->hi; i++) b[i] = s * b[i] + a[i];
        break;
    default: /* first touch */
        for (size_t i = j->lo; i < j->hi; i++) {
            a[i] = 1.0;
            b[i] = 2.0;
            c[i] = 0.0;
        }
        break;
    }
}

static void *stream_thread(void *arg) {
    run_kernel((const stream_job *)arg);
    return NULL;
}

/* Runs the kernel split over `threads` threads (the caller's thread does part 0). */
static double stream_pass(double *a, double *b, double *c, size_t n, int kernel, int threads, double scalar) {
    stream_job jobs[64];
    pthread_t tid[64];
    if (threads > 64) threads = 64;
    for (int t = 0; t < threads; t++) {
        jobs[t].a = a;
        jobs[t].b = b;
        jobs[t].c = c;
        jobs[t].lo = n * (size_t)t / (size_t)threads;
        jobs[t].hi = n * (size_t)(t + 1) / (size_t)threads;
        jobs[t].kernel = kernel;
        jobs[t].scalar = scalar;
    }
    double t0 = now();
    for (int t = 1; t < threads; t++)
        if (pthread_create(&tid[t], NULL, stream_thread, &jobs[t]) != 0) die("pthread_create failed");
    run_kernel(&jobs[0]);
    for (int t = 1; t < threads; t++) pthread_join(tid[t], NULL);
    return now() - t0;
}

static double stream_bound[65];

static void measure_bandwidth(size_t mib, const int *threads, int nthreads, int reps) {
    size_t n = mib * 1024 * 1024 / sizeof(double);
    double *a = xalloc(n * sizeof *a), *b = xalloc(n * sizeof *b), *c = xalloc(n * sizeof *c);
    int maxt = 1;
    for (int i = 0; i < nthreads; i++)
        if (threads[i] > maxt) maxt = threads[i];
    stream_pass(a, b, c, n, K_INIT, maxt, 0);
    printf("# STREAM-like kernels over 3 arrays of %zu MiB (%zu doubles each), best of %d passes; "
           "bytes counted as read+written (no write-allocate)\n", mib, n, reps);
    for (int ti = 0; ti < nthreads; ti++) {
        int T = threads[ti];
        double best_gbps = 0;
        for (int k = 0; k < 3; k++) {
            double best = 1e30;
            for (int r = 0; r < reps; r++) {
                /* update's scalar < 1 keeps values bounded */
                double sec = stream_pass(a, b, c, n, k, T, k == K_UPDATE ? 0.5 : 3.0);
                if (sec < best) best = sec;
            }
            double gbps = (double)kernel_bytes[k] * (double)n / best / 1e9;
            printf("STREAM kernel=%s threads=%d mib_per_array=%zu bytes_per_elem=%d gbps=%.2f\n", kernel_names[k], T, mib,
                   kernel_bytes[k], gbps);
            if (gbps > best_gbps) best_gbps = gbps;
        }
        if (T >= 0 && T <= 64) stream_bound[T] = best_gbps;
        printf("BOUND threads=%d gbps=%.2f\n", T, best_gbps);
    }
    volatile double sink = a[n / 3] + b[n / 2] + c[n - 1];
    (void)sink;
    free(a);
    free(b);
    free(c);
    fflush(stdout);
}

/* ------------------------------------------------------------------------- */
/* Optimizer bench                                                           */
/* ------------------------------------------------------------------------- */

typedef struct algo_desc {
    const char *name;
    bc_optim_algorithm algorithm;
    int bytes_per_param;
} algo_desc;

static const algo_desc ALGOS[] = {
    {"adamw", BC_OPTIM_ADAMW, 28}, /* read p,g,m,v; write p,m,v */
    {"sgd", BC_OPTIM_SGD, 16},     /* momentum: read p,g,buf; write p,buf */
};

static void bench_optimizer(int64_t n, const algo_desc *ad, const int *threads, int nthreads, int warmup, int steps) {
    mix m;
    make_mix(n, &m);
    float **params = malloc((size_t)m.ntensors * sizeof *params);
    float **grads = malloc((size_t)m.ntensors * sizeof *grads);
    if (!params || !grads) die("out of memory");

    bc_optimizer *opt = NULL;
    check_bc(bc_optimizer_create(ad->algorithm, &opt), "bc_optimizer_create");
    bc_optim_hparams hp;
    check_bc(bc_optim_hparams_default(ad->algorithm, &hp, sizeof hp), "bc_optim_hparams_default");
    if (ad->algorithm == BC_OPTIM_ADAMW) {
        hp.lr = 1e-3;
        hp.weight_decay = 0.01;
    } else {
        hp.lr = 1e-2;
        hp.momentum = 0.9;
        hp.weight_decay = 0.0;
    }
    uint32_t group = 0;
    check_bc(bc_optimizer_add_group(opt, &hp, &group), "bc_optimizer_add_group");
    for (int i = 0; i < m.ntensors; i++) {
        int64_t c = m.count[i];
        params[i] = xalloc((size_t)c * sizeof(float));
        grads[i] = xalloc((size_t)c * sizeof(float));
        fill_random(params[i], c, 2u * (uint64_t)i + 1, 1e-3f, 0.1f);
        fill_random(grads[i], c, 2u * (uint64_t)i + 2, 1e-4f, 1e-2f);
        char name[32];
        snprintf(name, sizeof name, "t%d", i);
        check_bc(bc_optimizer_add_tensor(opt, group, name, params[i], grads[i], c, NULL), "bc_optimizer_add_tensor");
    }
    uint32_t ng = 0, nt = 0;
    int64_t np = 0;
    check_bc(bc_optimizer_info(opt, &ng, &nt, &np), "bc_optimizer_info");
    if (np != n) die("optimizer parameter count mismatch");

    double times[256];
    for (int ti = 0; ti < nthreads; ti++) {
        int T = threads[ti];
        check_bc(bc_set_num_threads(T), "bc_set_num_threads");
        for (int check = 0; check <= 1; check++) {
            bc_optim_step_params sp;
            check_bc(bc_optim_step_params_default(&sp, sizeof sp), "bc_optim_step_params_default");
            sp.check_finite = check;
            for (int w = 0; w < warmup; w++) check_bc(bc_optimizer_step(opt, &sp, NULL), "bc_optimizer_step (warmup)");
            for (int s = 0; s < steps; s++) {
                double t0 = now();
                bc_status st = bc_optimizer_step(opt, &sp, NULL);
                times[s] = now() - t0;
                check_bc(st, "bc_optimizer_step");
            }
            double med = median(times, steps), lo = times[0], hi = times[0];
            for (int s = 1; s < steps; s++) {
                if (times[s] < lo) lo = times[s];
                if (times[s] > hi) hi = times[s];
            }
            double pps = (double)n / med;
            double gbps = pps * ad->bytes_per_param / 1e9;
            printf("RESULT impl=batchcore algo=%s n=%lld threads=%d check=%d bytes_per_param=%d sec=%.6f min_sec=%.6f "
                   "max_sec=%.6f params_per_s=%.4e gbps=%.2f",
                   ad->name, (long long)n, T, check, ad->bytes_per_param, med, lo, hi, pps, gbps);
            if (T <= 64 && stream_bound[T] > 0) printf(" pct_bw=%.1f", 100.0 * gbps / stream_bound[T]);
            printf("\n");
            fflush(stdout);
        }
    }
    /* Sanity: parameters must stay finite after all these steps. */
    for (int i = 0; i < m.ntensors; i++) {
        float x = params[i][m.count[i] / 2];
        if (!(x == x) || x > 1e30f || x < -1e30f) die("parameters became non-finite");
    }
    bc_optimizer_free(opt);
    for (int i = 0; i < m.ntensors; i++) {
        free(params[i]);
        free(grads[i]);
    }
    free(params);
    free(grads);
}

/* ------------------------------------------------------------------------- */
/* Arguments                                                                 */
/* ------------------------------------------------------------------------- */

static int64_t parse_size(const char *s) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v <= 0) die("bad size (use e.g. 10M, 1.5M, 300K, 1000000)");
    if (*end == 'M' || *end == 'm') v *= 1e6, end++;
    else if (*end == 'K' || *end == 'k') v *= 1e3, end++;
    else if (*end == 'G' || *end == 'g') v *= 1e9, end++;
    if (*end) die("bad size suffix");
    return (int64_t)(v + 0.5);
}

static int split_list(char *s, char **out, int max) {
    int n = 0;
    for (char *tok = strtok(s, ","); tok && n < max; tok = strtok(NULL, ",")) out[n++] = tok;
    return n;
}

static void usage(void) {
    fprintf(stderr, "usage: optim_bench [--quick] [--sizes 10M,30M,100M] [--threads 1,2] [--algos adamw,sgd]\n"
                    "                   [--steps 9] [--warmup 2] [--stream-mib 512] [--no-stream | --stream-only]\n");
    exit(2);
}

int main(int argc, char **argv) {
    char sizes_buf[256] = "10M,30M,100M", threads_buf[64] = "1,2", algos_buf[64] = "adamw,sgd";
    int steps = 9, warmup = 2, stream_reps = 5, do_stream = 1, stream_only = 0;
    size_t stream_mib = 512;
    int quick = 0, sizes_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quick")) quick = 1;
        else if (!strcmp(a, "--no-stream")) do_stream = 0;
        else if (!strcmp(a, "--stream-only")) stream_only = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) usage();
        else if (!next) usage();
        else if (!strcmp(a, "--sizes")) snprintf(sizes_buf, sizeof sizes_buf, "%s", next), sizes_given = 1, i++;
        else if (!strcmp(a, "--threads")) snprintf(threads_buf, sizeof threads_buf, "%s", next), i++;
        else if (!strcmp(a, "--algos")) snprintf(algos_buf, sizeof algos_buf, "%s", next), i++;
        else if (!strcmp(a, "--steps")) steps = atoi(next), i++;
        else if (!strcmp(a, "--warmup")) warmup = atoi(next), i++;
        else if (!strcmp(a, "--stream-mib")) stream_mib = (size_t)atol(next), i++;
        else usage();
    }
    if (quick) {
        if (!sizes_given) snprintf(sizes_buf, sizeof sizes_buf, "1M,10M");
        stream_reps = 3;
    }
    if (steps < 7 || steps > 255) die("--steps must be in 7..255 (median of >= 7 timed steps)");
    if (warmup < 0) die("--warmup must be >= 0");
    if (stream_mib * 1024 * 1024 < 400000000u) die("--stream-mib must give arrays of >= 400 MB (>= 382 MiB)");

    char *tok[MAX_LIST];
    int64_t sizes[MAX_LIST];
    int nsizes = split_list(sizes_buf, tok, MAX_LIST);
    for (int i = 0; i < nsizes; i++) sizes[i] = parse_size(tok[i]);
    int threads[MAX_LIST];
    int nthreads = split_list(threads_buf, tok, MAX_LIST);
    for (int i = 0; i < nthreads; i++) {
        threads[i] = atoi(tok[i]);
        if (threads[i] < 1 || threads[i] > 64) die("threads must be in 1..64");
    }
    const algo_desc *algos[MAX_LIST];
    int nalgos = split_list(algos_buf, tok, MAX_LIST);
    for (int i = 0; i < nalgos; i++) {
        algos[i] = NULL;
        for (size_t k = 0; k < sizeof ALGOS / sizeof ALGOS[0]; k++)
            if (!strcmp(tok[i], ALGOS[k].name)) algos[i] = &ALGOS[k];
        if (!algos[i]) die("unknown algo (adamw, sgd)");
    }

    if (bc_abi_version() != BC_ABI_VERSION) die("header/library ABI mismatch");
    printf("# batchcore %s (ABI %u); optimizer step via bc_optimizer_step; warmup %d steps, median of %d timed steps "
           "(CLOCK_MONOTONIC)\n", bc_version(), bc_abi_version(), warmup, steps);
    printf("# bytes moved per param: adamw=28 (read p,g,m,v; write p,m,v), sgd=16 (momentum: read p,g,buf; write p,buf); "
           "check=1 adds a read-only pass over g (not counted)\n");
    for (int i = 0; i < nsizes; i++) {
        mix m;
        make_mix(sizes[i], &m);
        print_mix(sizes[i], &m);
    }
    fflush(stdout);
    if (do_stream || stream_only) measure_bandwidth(stream_mib, threads, nthreads, stream_reps);
    if (stream_only) return 0;
    for (int i = 0; i < nsizes; i++)
        for (int a = 0; a < nalgos; a++) bench_optimizer(sizes[i], algos[a], threads, nthreads, warmup, steps);
    return 0;
}
