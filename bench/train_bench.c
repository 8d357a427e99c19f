/*
 * train_bench.c — full fine-tuning (or, with --lora R, LoRA) throughput of batchcore
 * through the public C ABI: forward + backward + AdamW step (mode train) or forward-only
 * loss (mode forward) on micro-batches of DOCS documents x LEN tokens, one micro-batch
 * per step. --lora R: rank-R adapters (alpha 2R) on q,k,v,o,gate,up,down of every
 * layer, the float32 base frozen; AdamW over the adapters only (= train_torch.py --lora R).
 *
 *   cc -std=c99 -O2 $(pkg-config --cflags batchcore) train_bench.c $(pkg-config --libs batchcore) -lm -o train_bench
 *   train_bench MODEL.gguf [--docs 4] [--len 256] [--steps 3] [--warmup 1] [--mode train|forward]
 *               [--recompute] [--threads N] [--lora R] [--compute f32|bf16]
 * --compute bf16: the projections' products in bf16 with float32 sums (BC_COMPUTE_BF16,
 * = train_torch.py --dtype autocast-bf16's arithmetic); default f32.
 *
 * Prints one machine-readable line (bench/train_torch.py prints the same for PyTorch):
 *   RESULT impl=batchcore mode=.. docs=.. len=.. threads=.. recompute=.. lora=<rank, 0: full> compute=f32|bf16 tokens_per_s=<median>
 *          sec=<median step> peak_rss_mib=.. load_rss_mib=.. steps_rss_mib=.. loss=<last step>
 *          loss0=<first step> params=.. layers=.. embd=.. times=<timed steps, s> cpu_times=<their CPU s>
 * peak_rss_mib: getrusage(RUSAGE_SELF) ru_maxrss, the whole process; load_rss_mib: VmHWM
 * after loading the model; steps_rss_mib: VmHWM over trainer creation and every step
 * (reset through /proc/self/clear_refs after the load; nan if the kernel refuses).
 * Token ids are pseudo-random (throughput does not depend on them) from a 64-bit LCG
 * that train_torch.py repeats, so both sides see the same ids; every row but each
 * document's last is a target (= transformers' labels=input_ids).
 * AdamW: lr 1e-5, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01 (train_torch.py's).
 */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* CPU seconds of the whole process (all threads): less distorted by a loaded machine than
 * wall time at 1 thread (at 2 threads a waiting thread spins and counts). */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* VmHWM of /proc/self/status in MiB (the peak RSS since the start or the last reset); NaN if unreadable. */
static double vm_hwm_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double v = NAN;
    if (!f) return v;
    while (fgets(line, sizeof line, f)) {
        long kib;
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) { v = (double)kib / 1024.0; break; }
    }
    fclose(f);
    return v;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0); 0 if refused. */
static int reset_hwm(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    int ok = fputs("5", f) >= 0;
    return (fclose(f) == 0) && ok;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fprintf(stderr, "usage: train_bench MODEL [--docs D] [--len L] [--steps S] [--warmup W] [--mode train|forward] [--recompute] [--threads N] [--lora R] [--compute f32|bf16]\n");
        return argc < 2 ? 2 : 0;
    }
    int docs = 4, len = 256, steps = 3, warmup = 1, recompute = 0, threads = 0, train = 1, lora = 0, bf16 = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--recompute")) { recompute = 1; continue; }
        if (!v) { fprintf(stderr, "train_bench: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--docs")) docs = atoi(v);
        else if (!strcmp(a, "--len")) len = atoi(v);
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--warmup")) warmup = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--lora")) lora = atoi(v);
        else if (!strcmp(a, "--compute")) {
            if (!strcmp(v, "f32")) bf16 = 0;
            else if (!strcmp(v, "bf16")) bf16 = 1;
            else { fprintf(stderr, "train_bench: --compute is f32 or bf16, not '%s'\n", v); return 2; }
        }
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "train")) train = 1;
            else if (!strcmp(v, "forward")) train = 0;
            else { fprintf(stderr, "train_bench: --mode is train or forward, not '%s'\n", v); return 2; }
        }
        else { fprintf(stderr, "train_bench: unknown option %s\n", a); return 2; }
        i++;
    }
    if (docs < 1 || len < 2 || steps < 1 || steps > 256 || warmup < 0 || lora < 0 || lora > 1024) { fprintf(stderr, "train_bench: bad sizes\n"); return 2; }
    CHECK(bc_set_num_threads(threads));
    bc_model *model = NULL;
    bc_model_params mp; /* training needs float32 weights */
    CHECK(bc_model_params_default(&mp, sizeof mp));
    mp.weights = BC_MODEL_WEIGHTS_F32;
    CHECK(bc_model_load(argv[1], &mp, &model));
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(bc_model_get_info(model, &info));
    const double load_rss = vm_hwm_mib();
    const int hwm_ok = reset_hwm();

    const int n = docs * len;
    int32_t *tokens = (int32_t *)xmalloc(sizeof(int32_t) * (size_t)n);
    int32_t *targets = (int32_t *)xmalloc(sizeof(int32_t) * (size_t)n);
    uint32_t *lengths = (uint32_t *)xmalloc(sizeof(uint32_t) * (size_t)docs);
    uint64_t s = 42;
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        tokens[i] = (int32_t)((s >> 33) % (uint64_t)(info.n_vocab - 1000)) + 500;
    }
    for (int i = 0; i < n; i++) targets[i] = (i % len == len - 1) ? -1 : tokens[i + 1];
    for (int k = 0; k < docs; k++) lengths[k] = (uint32_t)len;

    bc_trainer_params tp;
    CHECK(bc_trainer_params_default(&tp, sizeof tp));
    tp.micro_batch_tokens = (uint32_t)n;
    tp.recompute = recompute;
    tp.compute_type = bf16 ? BC_COMPUTE_BF16 : BC_COMPUTE_F32;
    if (lora) {
        tp.lora_rank = (uint32_t)lora;
        tp.lora_alpha = 2.0f * (float)lora;
        tp.lora_targets = BC_LORA_ALL;
    }
    if (!train) tp.optimizer_slots = 0; /* forward only: no optimizer state to budget for */
    bc_trainer_memory mem;
    memset(&mem, 0, sizeof mem);
    mem.struct_size = sizeof mem;
    CHECK(bc_trainer_estimate(model, &tp, &mem));
    fprintf(stderr, "# trainer estimate (MiB): weights %.0f, trainable copies %.0f, gradients %.0f, activations %.0f, "
            "backward buffers %.0f, optimizer state %.0f, added %.0f\n", mem.model_weights / 1048576.0,
            mem.trainable_copies / 1048576.0, mem.gradients / 1048576.0, mem.activations / 1048576.0,
            mem.backward_buffers / 1048576.0, mem.optimizer_state / 1048576.0, mem.added / 1048576.0);
    bc_trainer *t = NULL;
    CHECK(bc_trainer_create(model, &tp, &t));
    /* The optimizer exists only in train mode: its AdamW state (2 x 4 bytes x params) is
     * no part of a forward-only footprint (train_torch.py builds no optimizer either). */
    bc_optimizer *opt = NULL;
    if (train) {
        CHECK(bc_optimizer_create(BC_OPTIM_ADAMW, &opt));
        bc_optim_hparams hp;
        CHECK(bc_optim_hparams_default(BC_OPTIM_ADAMW, &hp, sizeof hp));
        hp.lr = 1e-5;
        hp.beta1 = 0.9;
        hp.beta2 = 0.999;
        hp.eps = 1e-8;
        hp.weight_decay = 0.01;
        uint32_t g = 0;
        CHECK(bc_optimizer_add_group(opt, &hp, &g));
        CHECK(bc_trainer_register(t, opt, g));
    }

    bc_train_batch b;
    memset(&b, 0, sizeof b);
    b.struct_size = sizeof b;
    b.n_tokens = (uint32_t)n;
    b.tokens = tokens;
    b.targets = targets;
    b.document_lengths = lengths;
    b.n_documents = (uint32_t)docs;
    bc_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    double times[256], cpus[256], loss0 = NAN;
    for (int i = 0; i < warmup + steps; i++) {
        double t0 = now(), c0 = cpu_now();
        if (train) {
            CHECK(bc_trainer_micro_batch(t, &b, &r));
            CHECK(bc_trainer_step(t, opt, NULL, &r, NULL));
        } else {
            CHECK(bc_trainer_evaluate(t, &b, &r));
        }
        double dt = now() - t0, dc = cpu_now() - c0;
        if (i >= warmup) { times[i - warmup] = dt; cpus[i - warmup] = dc; }
        if (i == 0) loss0 = r.loss;
        fprintf(stderr, "# step %d: %.2f s (%.2f CPU s), loss %.4f\n", i, dt, dc, r.loss);
    }
    const double steps_rss = hwm_ok ? vm_hwm_mib() : NAN;
    double sorted[256];
    memcpy(sorted, times, sizeof(double) * (size_t)steps);
    qsort(sorted, (size_t)steps, sizeof sorted[0], cmp_double);
    /* the median (the mean of the middle two for an even count, as Python's statistics.median) */
    double med = steps % 2 ? sorted[steps / 2] : 0.5 * (sorted[steps / 2 - 1] + sorted[steps / 2]);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double peak = ru.ru_maxrss / 1024.0;
    if (load_rss > peak) peak = load_rss;
    printf("RESULT impl=batchcore mode=%s docs=%d len=%d threads=%d recompute=%d lora=%d compute=%s tokens_per_s=%.2f sec=%.3f "
           "peak_rss_mib=%.0f load_rss_mib=%.0f steps_rss_mib=%.0f loss=%.4f loss0=%.4f params=%lld layers=%d embd=%d times=",
           train ? "train" : "forward", docs, len, (int)bc_get_num_threads(), recompute, lora, bf16 ? "bf16" : "f32", n / med, med,
           peak, load_rss, steps_rss,
           r.loss, loss0, (long long)info.n_params, info.n_layer, info.n_embd);
    for (int i = 0; i < steps; i++) printf("%s%.3f", i ? "," : "", times[i]);
    printf(" cpu_times=");
    for (int i = 0; i < steps; i++) printf("%s%.3f", i ? "," : "", cpus[i]);
    printf("\n");
    bc_optimizer_free(opt); /* NULL in forward mode: a no-op */
    bc_trainer_free(t);
    bc_model_free(model);
    free(tokens);
    free(targets);
    free(lengths);
    return 0;
}
