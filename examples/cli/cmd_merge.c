/* batchcore merge — merge a LoRA adapter into a model, or average fine-tunes (a soup). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static void merge_usage(FILE *out) {
    fprintf(out,
            "usage: batchcore merge -m MODEL --lora ADAPTER [--scale S] -o OUT [--format F]\n"
            "       batchcore merge --average FILE[:W] FILE[:W] ... -o OUT [--format F]\n"
            "\n"
            "The first form adds S * (the adapter's alpha/r) * B*A of a LoRA adapter (a PEFT\n"
            "directory or a llama.cpp GGUF adapter file) to the model's projections and writes\n"
            "the merged model. The second averages GGUF files of one base model tensor by\n"
            "tensor, weighted by W (default 1): sum W*x / sum W (a model soup).\n"
            "\n"
            "options:\n"
            "  -m, --model PATH   base model (GGUF file or Hugging Face directory)\n"
            "      --lora PATH    the adapter to merge\n"
            "      --scale S      factor on the adapter (default 1; negative subtracts it)\n"
            "      --average      the remaining FILE[:W] arguments are averaged\n"
            "  -o, --out PATH     output file (GGUF) or directory (hf)\n"
            "      --format F     gguf-f32 (default), gguf-f16 or hf (merge only; hf is\n"
            "                     needed for a Hugging Face model)\n"
            "  -h, --help         this help\n");
}

int cmd_merge(int argc, char **argv) {
    const char *model = NULL, *lora = NULL, *out = NULL;
    float scale = 1;
    int format = BC_WEIGHTS_GGUF_F32, average = 0;
    const char **files = (const char **)calloc((size_t)argc, sizeof *files);
    double *weights = (double *)calloc((size_t)argc, sizeof *weights);
    char **owned = (char **)calloc((size_t)argc, sizeof *owned);
    int n = 0, rc = EXIT_OK;
    if (!files || !weights || !owned) { fprintf(stderr, "batchcore merge: out of memory\n"); rc = EXIT_FAIL; goto done; }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { merge_usage(stdout); goto done; }
        if (strcmp(a, "--average") == 0) { average = 1; continue; }
        if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0 || strcmp(a, "--lora") == 0 || strcmp(a, "-o") == 0
            || strcmp(a, "--out") == 0 || strcmp(a, "--scale") == 0 || strcmp(a, "--format") == 0) {
            if (!v || !v[0]) { rc = cli_bad_value("merge", a, v); goto done; }
            i++;
            if (a[1] == 'm' || strcmp(a, "--model") == 0) model = v;
            else if (strcmp(a, "--lora") == 0) lora = v;
            else if (strcmp(a, "-o") == 0 || strcmp(a, "--out") == 0) out = v;
            else if (strcmp(a, "--scale") == 0) {
                if (!cli_parse_float(v, &scale)) { rc = cli_bad_value("merge", a, v); goto done; }
            } else if (strcmp(v, "gguf-f32") == 0) format = BC_WEIGHTS_GGUF_F32;
            else if (strcmp(v, "gguf-f16") == 0) format = BC_WEIGHTS_GGUF_F16;
            else if (strcmp(v, "hf") == 0) format = BC_WEIGHTS_HF;
            else { rc = cli_bad_value("merge", a, v); goto done; }
            continue;
        }
        if (average && a[0] != '-') {
            /* FILE[:W]: the weight is after the last ':' when it parses as a number. */
            const char *colon = strrchr(a, ':');
            float w = 1;
            if (colon && cli_parse_float(colon + 1, &w)) {
                owned[n] = (char *)malloc((size_t)(colon - a) + 1);
                if (!owned[n]) { fprintf(stderr, "batchcore merge: out of memory\n"); rc = EXIT_FAIL; goto done; }
                memcpy(owned[n], a, (size_t)(colon - a));
                owned[n][colon - a] = '\0';
                files[n] = owned[n];
            } else {
                files[n] = a;
            }
            weights[n++] = w;
            continue;
        }
        fprintf(stderr, "batchcore merge: unknown option '%s'\n", a);
        merge_usage(stderr);
        rc = EXIT_USAGE;
        goto done;
    }
    if (!out || (average ? (n == 0 || model || lora) : (!model || !lora))) {
        fprintf(stderr, "batchcore merge: needs -o OUT and either -m MODEL --lora ADAPTER or --average FILE...\n");
        merge_usage(stderr);
        rc = EXIT_USAGE;
        goto done;
    }
    bc_status st = average ? bc_weights_average(files, (size_t)n, weights, out, (bc_weights_format)format)
                           : bc_merge_adapter(model, lora, scale, out, (bc_weights_format)format);
    if (st != BC_OK) {
        cli_report(average ? "average" : "merge", st);
        rc = EXIT_FAIL;
    }
done:
    if (owned) for (int i = 0; i < n; i++) free(owned[i]);
    free(owned);
    free(files);
    free(weights);
    return rc;
}
