/* batchcore info / tokenize — inspect a model and its tokenizer. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- info */

static void info_usage(FILE *out) {
    fprintf(out,
            "usage: batchcore info [-m MODEL] [--json] [-q]\n"
            "\n"
            "Loads a model and prints its hyperparameters: architecture, parameters,\n"
            "layers, embedding, heads, kv_heads, ff, vocab, context, rope_base, bos, eos,\n"
            "add_bos, weight_bytes (resident bytes of the weights) and weight_types — as\n"
            "'key: value' lines, or one JSON object with --json.\n"
            "\n"
            "options:\n" CLI_MODEL_OPTIONS_HELP
            "      --json         one JSON object instead of key: value lines\n"
            "  -h, --help         this help\n"
            "\n" CLI_MODEL_RESOLUTION_HELP);
}

int cmd_info(int argc, char **argv) {
    cli_model_opts mo = {NULL, 0, 0};
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { info_usage(stdout); return EXIT_OK; }
        if (strcmp(a, "--json") == 0) { json = 1; continue; }
        int r = cli_model_option("info", argc, argv, &i, &mo);
        if (r < 0) return EXIT_USAGE;
        if (r > 0) continue;
        fprintf(stderr, "batchcore info: unknown option '%s'\n", a);
        info_usage(stderr);
        return EXIT_USAGE;
    }
    bc_model *model = NULL;
    int rc = cli_load_model(&mo, &model);
    if (rc != EXIT_OK) return rc;
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    bc_status st = bc_model_get_info(model, &info);
    bc_model_free(model);
    if (st != BC_OK) { cli_report("model info", st); return EXIT_FAIL; }
    info.architecture[sizeof info.architecture - 1] = '\0';
    info.weight_types[sizeof info.weight_types - 1] = '\0';
    if (json) {
        printf("{\"architecture\":");
        cli_json_string(stdout, info.architecture, strlen(info.architecture));
        printf(",\"parameters\":%lld,\"layers\":%d,\"embedding\":%d,\"heads\":%d,\"kv_heads\":%d,\"ff\":%d,"
               "\"vocab\":%d,\"context\":%d,\"rope_base\":%.9g,\"bos\":%d,\"eos\":%d,\"add_bos\":%s,"
               "\"weight_bytes\":%lld,\"weight_types\":",
               (long long)info.n_params, (int)info.n_layer, (int)info.n_embd, (int)info.n_head,
               (int)info.n_head_kv, (int)info.n_ff, (int)info.n_vocab, (int)info.n_ctx_train,
               (double)info.rope_freq_base, (int)info.bos_token, (int)info.eos_token,
               info.add_bos ? "true" : "false", (long long)info.weight_bytes);
        cli_json_string(stdout, info.weight_types, strlen(info.weight_types));
        printf("}\n");
    } else {
        printf("architecture: %s\n", info.architecture);
        printf("parameters: %lld\n", (long long)info.n_params);
        printf("layers: %d\n", (int)info.n_layer);
        printf("embedding: %d\n", (int)info.n_embd);
        printf("heads: %d\n", (int)info.n_head);
        printf("kv_heads: %d\n", (int)info.n_head_kv);
        printf("ff: %d\n", (int)info.n_ff);
        printf("vocab: %d\n", (int)info.n_vocab);
        printf("context: %d\n", (int)info.n_ctx_train);
        printf("rope_base: %.9g\n", (double)info.rope_freq_base);
        printf("bos: %d\n", (int)info.bos_token);
        printf("eos: %d\n", (int)info.eos_token);
        printf("add_bos: %d\n", (int)info.add_bos);
        printf("weight_bytes: %lld\n", (long long)info.weight_bytes);
        printf("weight_types: %s\n", info.weight_types);
    }
    return EXIT_OK;
}

/* ---------------------------------------------------------------- tokenize */

static void tokenize_usage(FILE *out) {
    fprintf(out,
            "usage: batchcore tokenize [-m MODEL] [--no-special] [--parse-special] [--json] [-q] [TEXT...]\n"
            "\n"
            "Tokenizes TEXT (the arguments joined by spaces; without arguments, all of\n"
            "stdin) exactly as llama.cpp does, and prints the token ids on one line,\n"
            "separated by spaces. With --json: one JSON object per token and line,\n"
            "{\"id\":ID,\"piece\":\"TEXT\"} (bytes that are not valid UTF-8 on their own\n"
            "show as \\ufffd).\n"
            "\n"
            "options:\n" CLI_MODEL_OPTIONS_HELP
            "      --no-special   do not add BOS/EOS (added by default when the model asks)\n"
            "      --parse-special  control-token text such as <|im_start|> becomes that token\n"
            "      --json         JSON lines with each token's id and text\n"
            "      --             end of options (TEXT may start with '-')\n"
            "  -h, --help         this help\n"
            "\n" CLI_MODEL_RESOLUTION_HELP);
}

int cmd_tokenize(int argc, char **argv) {
    cli_model_opts mo = {NULL, 0, 0};
    int json = 0, add_special = 1, parse_special = 0;
    int first_text = argc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) { first_text = i + 1; break; }
        if (a[0] != '-' || a[1] == '\0') { first_text = i; break; }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { tokenize_usage(stdout); return EXIT_OK; }
        if (strcmp(a, "--json") == 0) { json = 1; continue; }
        if (strcmp(a, "--no-special") == 0) { add_special = 0; continue; }
        if (strcmp(a, "--parse-special") == 0) { parse_special = 1; continue; }
        int r = cli_model_option("tokenize", argc, argv, &i, &mo);
        if (r < 0) return EXIT_USAGE;
        if (r > 0) continue;
        fprintf(stderr, "batchcore tokenize: unknown option '%s' (use -- before text starting with '-')\n", a);
        tokenize_usage(stderr);
        return EXIT_USAGE;
    }
    char *text = NULL;
    size_t text_len = 0;
    if (first_text < argc) {
        text = cli_join_args(argc - first_text, argv + first_text);
        if (!text) { fprintf(stderr, "batchcore tokenize: out of memory\n"); return EXIT_FAIL; }
        text_len = strlen(text);
    } else {
        text = cli_read_all(stdin, &text_len);
        if (!text) return EXIT_FAIL;
    }
    bc_model *model = NULL;
    int rc = cli_load_model(&mo, &model);
    if (rc != EXIT_OK) { free(text); return rc; }

    size_t n = 0;
    int32_t *ids = NULL;
    char *piece = NULL;
    bc_status st = bc_tokenize(model, text, text_len, add_special, parse_special, NULL, 0, &n);
    if (st != BC_OK) { cli_report("tokenize", st); rc = EXIT_FAIL; goto done; }
    ids = (int32_t *)malloc((n ? n : 1) * sizeof *ids);
    if (!ids) { fprintf(stderr, "batchcore tokenize: out of memory\n"); rc = EXIT_FAIL; goto done; }
    st = bc_tokenize(model, text, text_len, add_special, parse_special, ids, n, &n);
    if (st != BC_OK) { cli_report("tokenize", st); rc = EXIT_FAIL; goto done; }
    if (!json) {
        for (size_t k = 0; k < n; k++) printf(k ? " %d" : "%d", (int)ids[k]);
        printf("\n");
    } else {
        size_t cap = 256;
        piece = (char *)malloc(cap);
        if (!piece) { fprintf(stderr, "batchcore tokenize: out of memory\n"); rc = EXIT_FAIL; goto done; }
        for (size_t k = 0; k < n; k++) {
            size_t len = 0;
            st = bc_detokenize(model, &ids[k], 1, 1, NULL, 0, &len);
            if (st == BC_OK && len + 1 > cap) {
                char *bigger = (char *)realloc(piece, len + 1);
                if (!bigger) { fprintf(stderr, "batchcore tokenize: out of memory\n"); rc = EXIT_FAIL; goto done; }
                piece = bigger;
                cap = len + 1;
            }
            if (st == BC_OK) st = bc_detokenize(model, &ids[k], 1, 1, piece, cap, &len);
            if (st != BC_OK) { cli_report("detokenize", st); rc = EXIT_FAIL; goto done; }
            printf("{\"id\":%d,\"piece\":", (int)ids[k]);
            cli_json_string(stdout, piece, len);
            printf("}\n");
        }
    }
done:
    free(piece);
    free(ids);
    free(text);
    bc_model_free(model);
    return rc;
}
