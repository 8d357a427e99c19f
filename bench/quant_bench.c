/* batchcore quantized-weights benchmark: the default model held natively (Q4_1/Q8_0
 * blocks, int8 activations) or dequantized to float32, through the public C ABI.
 *   quant_bench MODEL.gguf [--weights native|f32] [--kv f32|f16] [--threads N] [--reps R] [--decode N] [--prompt N]
 * (--prompt N: only that prompt length instead of 128 and 512, e.g. to profile decode; --kv f16: the KV cache in half precision; the impl name gets "-f16kv"; --reps 0: load only)
 * Prints RESULT lines (see bench/quant.sh):
 *   RESULT impl=batchcore-<weights> kind=prefill n=<prompt> tok_s=..
 *   RESULT impl=batchcore-<weights> kind=decode n=<prompt> tok_s=..   (batch 1, greedy, after the prompt)
 *   RESULT impl=batchcore-<weights> kind=memory weight_mib=.. load_rss_mib=.. peak_rss_mib=..
 * load_rss_mib: VmRSS right after bc_model_load; peak_rss_mib: VmHWM at the end (with a
 * 1024-token F32 KV context); weight_mib: bc_model_info.weight_bytes. */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"
#include <batchcore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A /proc/self/status field ("VmRSS", "VmHWM") in MiB; NaN if unreadable. */
static double status_mib(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double v = NAN;
    if (!f) return v;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f)) {
        long kib;
        if (!strncmp(line, field, n) && line[n] == ':' && sscanf(line + n + 1, "%ld", &kib) == 1) {
            v = (double)kib / 1024.0;
            break;
        }
    }
    fclose(f);
    return v;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: quant_bench MODEL.gguf [--weights native|f32] [--kv f32|f16] [--threads N] [--reps R] [--decode N] [--prompt N]\n");
        return 2;
    }
    int threads = 2, reps = 3, n_decode = 64, one_prompt = 0;
    const char *weights = "native", *kv = "f32";
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--decode")) n_decode = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) one_prompt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--weights")) weights = argv[i + 1];
        else if (!strcmp(argv[i], "--kv")) kv = argv[i + 1];
    }
    if ((strcmp(weights, "native") && strcmp(weights, "f32")) || (strcmp(kv, "f32") && strcmp(kv, "f16"))) {
        fprintf(stderr, "quant_bench: --weights native|f32, --kv f32|f16\n");
        return 2;
    }
    char impl[64];
    snprintf(impl, sizeof impl, "%s%s", weights, strcmp(kv, "f16") ? "" : "-f16kv");
    CHECK(bc_set_num_threads(threads));
    bc_model_params mp;
    CHECK(bc_model_params_default(&mp, sizeof mp));
    mp.weights = strcmp(weights, "f32") ? BC_MODEL_WEIGHTS_NATIVE : BC_MODEL_WEIGHTS_F32;
    bc_model *model;
    CHECK(bc_model_load(argv[1], &mp, &model));
    const double load_rss = status_mib("VmRSS");
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(bc_model_get_info(model, &info));
    const int vocab = info.n_vocab;
    float *logits = xmalloc(sizeof(float) * (size_t)vocab);
    printf("# weights %s: %s\n", weights, info.weight_types);
    if (reps <= 0) { /* --reps 0: only check that the model loads (bench/quant.sh probes each file) */
        free(logits);
        bc_model_free(model);
        return 0;
    }

    int prompt_lengths[2] = {128, 512};
    if (one_prompt > 0) prompt_lengths[0] = one_prompt;
    for (int pl = 0; pl < (one_prompt > 0 ? 1 : 2); pl++) {
        int n = prompt_lengths[pl];
        int32_t *tokens = xmalloc(sizeof(int32_t) * (size_t)n), *pos = xmalloc(sizeof(int32_t) * (size_t)n),
                *seq = xmalloc(sizeof(int32_t) * (size_t)n);
        for (int i = 0; i < n; i++) { tokens[i] = (int32_t)((i * 7919 + 13) % (vocab - 100) + 50); pos[i] = i; seq[i] = 0; }
        double *pt = xmalloc(sizeof(double) * (size_t)reps), *dt = xmalloc(sizeof(double) * (size_t)reps);
        for (int r = 0; r < reps; r++) {
            bc_context *ctx;
            bc_context_params cp;
            CHECK(bc_context_params_default(&cp, sizeof cp));
            cp.n_ctx = 1024;
            cp.kv_type = strcmp(kv, "f16") ? BC_KV_F32 : BC_KV_F16;
            CHECK(bc_context_create(model, &cp, &ctx));
            bc_batch b = {sizeof b, 0, NULL, NULL, NULL, NULL};
            b.n_tokens = n; b.tokens = tokens; b.pos = pos; b.seq_id = seq; b.logits = NULL;
            double t = now();
            CHECK(bc_decode(ctx, &b, logits, (size_t)vocab));
            pt[r] = now() - t;
            int32_t tok = 100, p, s = 0;
            t = now();
            for (int k = 0; k < n_decode; k++) {
                p = n + k;
                b.n_tokens = 1; b.tokens = &tok; b.pos = &p; b.seq_id = &s;
                CHECK(bc_decode(ctx, &b, logits, (size_t)vocab));
                int best = 0;
                for (int j = 1; j < vocab; j++) if (logits[j] > logits[best]) best = j;
                tok = best;
            }
            dt[r] = now() - t;
            bc_context_free(ctx);
        }
        printf("RESULT impl=batchcore-%s kind=prefill n=%d threads=%d tok_s=%.1f\n", impl, n, threads, n / median(pt, reps));
        printf("RESULT impl=batchcore-%s kind=decode n=%d threads=%d tok_s=%.1f\n", impl, n, threads,
               n_decode / median(dt, reps));
        fflush(stdout);
        free(tokens); free(pos); free(seq); free(pt); free(dt);
    }
    printf("RESULT impl=batchcore-%s kind=memory weight_mib=%.1f load_rss_mib=%.0f peak_rss_mib=%.0f\n", impl,
           (double)info.weight_bytes / 1048576.0, load_rss, status_mib("VmHWM"));
    free(logits);
    bc_model_free(model);
    return 0;
}
