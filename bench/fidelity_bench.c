/* batchcore side of bench/fidelity.sh (issue #15: fidelity against llama.cpp on the same
 * quantized file), through the public C ABI only.
 *   fidelity_bench MODEL.gguf IDS.txt OUTDIR [--weights native|f32] [--kv f32|f16] [--threads N]
 * IDS.txt (written by bench/fidelity_llama.py --ids from Tests/fixtures/llama/quant/prompts.json),
 * one item per line, token ids separated by spaces:
 *   logits NAME id...   the prompt in one bc_decode; the last row's logits go to OUTDIR/NAME.f32
 *                       (raw float32 [n_vocab]), the argmax of every position to a LOGITS line
 *   greedy NAME id...   64 greedy tokens (argmax, first index on ties, no EOS stop): a GREEDY line
 *   text NAME id...     perplexity: one sequence in chunks of 512, NLL of token t+1 from the logits
 *                       at t (log-softmax in double over the vocabulary): a RESULT kind=ppl line
 * Every context: n_ctx 4096, prefix cache off. Prints the model's weight types first. */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"
#include <batchcore.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CHUNK = 512, GREEDY = 64, N_CTX = 4096 };

static bc_model *model;
static int vocab, kv_type;

static bc_context *new_context(void) {
    bc_context_params cp;
    CHECK(bc_context_params_default(&cp, sizeof cp));
    cp.n_ctx = N_CTX;
    cp.kv_type = kv_type;
    cp.prefix_cache = 0;
    bc_context *ctx;
    CHECK(bc_context_create(model, &cp, &ctx));
    return ctx;
}

/* Decodes ids[0..n) at positions start.. of sequence 0; logits of rows whose want[i] != 0
 * (all when want is NULL and all_rows, else the last only) into out. */
static void decode(bc_context *ctx, const int32_t *ids, int n, int start, int all_rows, float *out, size_t cap) {
    int32_t *pos = xmalloc(sizeof(int32_t) * (size_t)n), *seq = xmalloc(sizeof(int32_t) * (size_t)n);
    int8_t *want = xmalloc((size_t)n);
    for (int i = 0; i < n; i++) { pos[i] = start + i; seq[i] = 0; want[i] = (int8_t)(all_rows || i == n - 1); }
    bc_batch b = {sizeof b, 0, NULL, NULL, NULL, NULL};
    b.n_tokens = n; b.tokens = ids; b.pos = pos; b.seq_id = seq; b.logits = want;
    CHECK(bc_decode(ctx, &b, out, cap));
    free(pos); free(seq); free(want);
}

static int argmax(const float *row) {
    int best = 0;
    for (int j = 1; j < vocab; j++) if (row[j] > row[best]) best = j;
    return best;
}

static void run_logits(const char *name, const int32_t *ids, int n, const char *outdir) {
    bc_context *ctx = new_context();
    float *all = xmalloc(sizeof(float) * (size_t)n * (size_t)vocab);
    decode(ctx, ids, n, 0, 1, all, (size_t)n * (size_t)vocab);
    printf("LOGITS name=%s n=%d argmax=", name, n);
    for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", argmax(all + (size_t)i * (size_t)vocab));
    printf("\n");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.f32", outdir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(all + (size_t)(n - 1) * (size_t)vocab, sizeof(float), (size_t)vocab, f) != (size_t)vocab) {
        perror(path);
        exit(1);
    }
    fclose(f);
    free(all);
    bc_context_free(ctx);
}

static void run_greedy(const char *name, const int32_t *ids, int n) {
    bc_context *ctx = new_context();
    float *row = xmalloc(sizeof(float) * (size_t)vocab);
    decode(ctx, ids, n, 0, 0, row, (size_t)vocab);
    printf("GREEDY name=%s tokens=", name);
    for (int k = 0; k < GREEDY; k++) {
        int32_t t = argmax(row);
        printf(k ? ",%d" : "%d", t);
        if (k + 1 < GREEDY) decode(ctx, &t, 1, n + k, 0, row, (size_t)vocab);
    }
    printf("\n");
    free(row);
    bc_context_free(ctx);
}

static void run_ppl(const char *name, const int32_t *ids, int n, const char *weights) {
    bc_context *ctx = new_context();
    float *logits = xmalloc(sizeof(float) * (size_t)CHUNK * (size_t)vocab);
    double nll = 0, t0 = now();
    long count = 0;
    for (int start = 0; start < n; start += CHUNK) {
        int m = n - start < CHUNK ? n - start : CHUNK;
        decode(ctx, ids + start, m, start, 1, logits, (size_t)CHUNK * (size_t)vocab);
        for (int i = 0; i < m && start + i + 1 < n; i++) {
            const float *row = logits + (size_t)i * (size_t)vocab;
            double mx = row[0], sum = 0;
            for (int v = 1; v < vocab; v++) if (row[v] > mx) mx = row[v];
            for (int v = 0; v < vocab; v++) sum += exp((double)row[v] - mx);
            nll += mx + log(sum) - (double)row[ids[start + i + 1]];
            count++;
        }
    }
    printf("RESULT kind=ppl name=%s impl=batchcore-%s kv=%s tokens=%d scored=%ld nll=%.6f ppl=%.4f secs=%.1f\n", name,
           weights, kv_type ? "f16" : "f32", n, count, nll / (double)count, exp(nll / (double)count), now() - t0);
    free(logits);
    bc_context_free(ctx);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: fidelity_bench MODEL.gguf IDS.txt OUTDIR [--weights native|f32] [--kv f32|f16] [--threads N]\n");
        return 2;
    }
    const char *weights = "native", *kv = "f32";
    int threads = 2;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--weights")) weights = argv[i + 1];
        else if (!strcmp(argv[i], "--kv")) kv = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else { fprintf(stderr, "fidelity_bench: unknown option %s\n", argv[i]); return 2; }
    }
    if ((strcmp(weights, "native") && strcmp(weights, "f32")) || (strcmp(kv, "f32") && strcmp(kv, "f16"))) {
        fprintf(stderr, "fidelity_bench: --weights native|f32, --kv f32|f16\n");
        return 2;
    }
    kv_type = strcmp(kv, "f16") ? BC_KV_F32 : BC_KV_F16;
    CHECK(bc_set_num_threads(threads));
    bc_model_params mp;
    CHECK(bc_model_params_default(&mp, sizeof mp));
    mp.weights = strcmp(weights, "f32") ? BC_MODEL_WEIGHTS_NATIVE : BC_MODEL_WEIGHTS_F32;
    bc_status st = bc_model_load(argv[1], &mp, &model);
    if (st != BC_OK) {
        /* A type batchcore cannot hold yet: say so in the output, not as a crash of the run. */
        printf("RESULT kind=load status=%s error=%s\n", bc_status_string(st), bc_last_error());
        return 3;
    }
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(bc_model_get_info(model, &info));
    vocab = info.n_vocab;
    printf("# weights %s: %s\n", weights, info.weight_types);
    FILE *f = fopen(argv[2], "r");
    if (!f) { perror(argv[2]); return 1; }
    static char line[1 << 20];
    int32_t *ids = xmalloc(sizeof(int32_t) * (1 << 18));
    while (fgets(line, sizeof line, f)) {
        char kind[16], name[128];
        int off = 0;
        if (sscanf(line, "%15s %127s %n", kind, name, &off) < 2) continue;
        int n = 0;
        char *p = line + off, *end;
        for (long v = strtol(p, &end, 10); end != p && n < (1 << 18); v = strtol(p, &end, 10)) {
            ids[n++] = (int32_t)v;
            p = end;
        }
        if (n == 0 || n > N_CTX - GREEDY) { fprintf(stderr, "%s: %d ids\n", name, n); return 1; }
        if (!strcmp(kind, "logits")) run_logits(name, ids, n, argv[3]);
        else if (!strcmp(kind, "greedy")) run_greedy(name, ids, n);
        else if (!strcmp(kind, "text")) run_ppl(name, ids, n, weights);
        fflush(stdout);
    }
    fclose(f);
    free(ids);
    bc_model_free(model);
    return 0;
}
