/* batchcore multi-adapter serving benchmark: the same 64 requests served by one
 * continuous-batching engine with no adapter, and spread over 1, 8 and 32 distinct
 * rank-R LoRA adapters (request i uses adapter i mod K), every setup in the same run,
 * interleaved round by round so machine load hits them alike.
 *
 *   adapter_bench MODEL.gguf [--rounds N] [--rank R] [--targets MASK] [--prompt P] [--gen G] [--threads T]
 *                 [--export DIR]
 *
 * --export DIR: also writes the 32 adapters as llama.cpp GGUF adapters DIR/adapter-<a>.gguf
 * and the requests as DIR/requests.json ({"prompts": [[ids]], "gen": G}) for
 * bench/adapter_llama.py (llama.cpp serving the same requests one at a time).
 *
 * The adapters are PEFT directories written by a LoRA trainer (bc_trainer_save_adapter)
 * with random non-zero B, then loaded with bc_adapter_load. Requests: prompts of P
 * random token ids (seeded), greedy, ignore_eos: exactly G tokens each; all submitted at
 * t = 0. Output tokens/s = generated tokens / wall time of the whole run; also tokens per
 * CPU second of the process (CLOCK_PROCESS_CPUTIME_ID, all threads), which a loaded
 * machine distorts less than wall time. Prints one RESULT line per setup and round and a
 * summary of the medians per setup.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"
#include <batchcore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NREQ 64
#define MAXK 32

/* Writes the adapter as a PEFT directory `dir` and, when `gguf` is not NULL, also as a
 * llama.cpp GGUF adapter file there (bc_trainer_save_adapter_gguf; the same values). */
static void write_adapter(bc_model *model, const char *dir, const char *gguf, uint32_t rank, uint32_t targets,
                          uint64_t seed) {
    bc_trainer_params tp;
    CHECK(bc_trainer_params_default(&tp, sizeof tp));
    tp.lora_rank = rank;
    tp.lora_alpha = 2.0f * (float)rank;
    tp.lora_targets = targets;
    tp.lora_seed = seed;
    tp.micro_batch_tokens = 64;
    bc_trainer *t = NULL;
    CHECK(bc_trainer_create(model, &tp, &t));
    uint32_t count = 0;
    CHECK(bc_trainer_tensor_count(t, &count));
    rng_state = seed;
    for (uint32_t i = 0; i < count; i++) {
        bc_trainer_tensor tt;
        memset(&tt, 0, sizeof tt);
        tt.struct_size = sizeof tt;
        CHECK(bc_trainer_get_tensor(t, i, &tt));
        if (!strstr(tt.name, "lora_B")) continue;
        for (int64_t k = 0; k < tt.count; k++) tt.values[k] = ((float)(rng_next() >> 40) / 16777216.0f - 0.5f) * 0.02f;
    }
    CHECK(bc_trainer_save_adapter(t, dir));
    if (gguf) CHECK(bc_trainer_save_adapter_gguf(t, gguf));
    bc_trainer_free(t);
}

/* One run: 64 requests, request i with adapters[i % k] (k = 0: none). Returns output tok/s. */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double run(bc_model *model, int32_t prompts[NREQ][1024], int prompt_len, int gen, bc_adapter **adapters, int k,
                  int64_t *preemptions, double *per_cpu_second) {
    bc_engine_params ep;
    CHECK(bc_engine_params_default(&ep, sizeof ep));
    ep.kv_bytes = 1LL << 30;
    ep.n_ctx = prompt_len + gen + 8;
    bc_engine *e = NULL;
    CHECK(bc_engine_create(model, &ep, &e));
    bc_sampling_params sp;
    CHECK(bc_sampling_params_default(&sp, sizeof sp));
    sp.temperature = 0;
    double t0 = now(), c0 = cpu_now();
    for (int i = 0; i < NREQ; i++) {
        bc_request_params rp;
        CHECK(bc_request_params_default(&rp, sizeof rp));
        rp.max_tokens = gen;
        rp.ignore_eos = 1;
        rp.adapter = k > 0 ? adapters[i % k] : NULL;
        uint64_t id;
        CHECK(bc_engine_submit(e, prompts[i], prompt_len, &rp, &sp, &id));
    }
    int32_t live = 1;
    long generated = 0;
    bc_event ev[256];
    while (live > 0) {
        CHECK(bc_engine_step(e, NULL, &live));
        size_t got = 0;
        do {
            CHECK(bc_engine_poll(e, ev, 256, sizeof ev[0], &got));
            for (size_t j = 0; j < got; j++) if (ev[j].kind == BC_EVENT_TOKEN && ev[j].token >= 0) generated++;
        } while (got == 256);
    }
    double wall = now() - t0;
    *per_cpu_second = (double)generated / (cpu_now() - c0);
    bc_engine_metrics m;
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof m;
    CHECK(bc_engine_get_metrics(e, &m));
    *preemptions = m.preemptions;
    bc_engine_free(e);
    if (generated != (long)NREQ * gen) { fprintf(stderr, "generated %ld tokens, expected %d\n", generated, NREQ * gen); exit(1); }
    return (double)generated / wall;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: adapter_bench MODEL.gguf [--rounds N] [--rank R] [--targets MASK] [--prompt P] [--gen G] [--threads T] [--export DIR]\n");
        return 2;
    }
    int rounds = 3, rank = 16, prompt_len = 32, gen = 64, threads = 0;
    unsigned targets = BC_LORA_Q | BC_LORA_V;
    const char *export_dir = NULL;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rank")) rank = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--targets")) targets = (unsigned)strtoul(argv[i + 1], NULL, 0);
        else if (!strcmp(argv[i], "--prompt")) prompt_len = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--gen")) gen = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--export")) export_dir = argv[i + 1];
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (rounds < 1 || rounds > 50 || rank < 1 || prompt_len < 1 || prompt_len > 1024 || gen < 1) {
        fprintf(stderr, "bad option value\n");
        return 2;
    }
    if (threads > 0) CHECK(bc_set_num_threads(threads));
    bc_model *model = NULL;
    CHECK(bc_model_load(argv[1], NULL, &model));
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(bc_model_get_info(model, &info));

    static int32_t prompts[NREQ][1024];
    rng_state = 42;
    for (int i = 0; i < NREQ; i++)
        for (int j = 0; j < prompt_len; j++) prompts[i][j] = (int32_t)(200 + rng_next() % (uint64_t)(info.n_vocab - 400));

    bc_adapter *adapters[MAXK];
    int64_t adapter_bytes = 0;
    for (int a = 0; a < MAXK; a++) {
        char dir[256];
        snprintf(dir, sizeof dir, "/tmp/bc-adapter-bench-%d-%d", (int)getpid(), a);
        char gguf[512];
        if (export_dir) snprintf(gguf, sizeof gguf, "%s/adapter-%d.gguf", export_dir, a);
        write_adapter(model, dir, export_dir ? gguf : NULL, (uint32_t)rank, targets, 1000 + (uint64_t)a);
        CHECK(bc_adapter_load(model, dir, &adapters[a]));
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) return 1;
    }
    (void)adapter_bytes;
    if (export_dir) {
        char path[512];
        snprintf(path, sizeof path, "%s/requests.json", export_dir);
        FILE *f = fopen(path, "w");
        if (!f) { fprintf(stderr, "cannot write %s\n", path); return 1; }
        fprintf(f, "{\"gen\": %d, \"prompts\": [", gen);
        for (int i = 0; i < NREQ; i++) {
            fprintf(f, "%s[", i ? ", " : "");
            for (int j = 0; j < prompt_len; j++) fprintf(f, "%s%d", j ? ", " : "", (int)prompts[i][j]);
            fprintf(f, "]");
        }
        fprintf(f, "]}\n");
        if (fclose(f) != 0) { fprintf(stderr, "cannot write %s\n", path); return 1; }
    }
    const int setups[4] = {0, 1, 8, 32};
    double tps[4][50], tpc[4][50];
    for (int r = 0; r < rounds; r++) {
        for (int s = 0; s < 4; s++) {
            int64_t pre = 0;
            tps[s][r] = run(model, prompts, prompt_len, gen, adapters, setups[s], &pre, &tpc[s][r]);
            printf("RESULT round=%d adapters=%d rank=%d targets=0x%x requests=%d prompt=%d gen=%d output_tok_s=%.1f "
                   "output_tok_per_cpu_s=%.2f preemptions=%lld\n",
                   r, setups[s], rank, targets, NREQ, prompt_len, gen, tps[s][r], tpc[s][r], (long long)pre);
            fflush(stdout);
        }
    }
    double base = median(tps[0], rounds), base_cpu = median(tpc[0], rounds);
    printf("SUMMARY (median of %d rounds)\n", rounds);
    for (int s = 0; s < 4; s++) {
        double m = median(tps[s], rounds), c = median(tpc[s], rounds);
        printf("adapters=%-2d  %.1f tok/s (%.3fx of no adapter)  %.2f tok/CPU-s (%.3fx)\n", setups[s], m, m / base, c,
               c / base_cpu);
    }
    for (int a = 0; a < MAXK; a++) bc_adapter_free(adapters[a]);
    bc_model_free(model);
    return 0;
}
