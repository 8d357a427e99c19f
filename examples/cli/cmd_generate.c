/* batchcore generate — stream a continuation of a prompt (or a chat reply) to stdout. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void generate_usage(FILE *out) {
    fprintf(out,
            "usage: batchcore generate [-m MODEL] [-p PROMPT] [-n N] [--temp T] [--top-k K] [--top-p P]\n"
            "                          [--min-p P] [--repeat-penalty R] [--seed S] [--chat]\n"
            "                          [--system TEXT] [--adapter DIR] [--adapter-scale S] [-c N] [-t THREADS] [-q]\n"
            "\n"
            "Generates a continuation of PROMPT (without -p: all of stdin, which must not\n"
            "contain a NUL byte) and streams it to stdout as it is produced, then a newline\n"
            "unless the text already ends with one. With --chat the prompt is the user's\n"
            "message of a conversation formatted with the model's chat template, and the\n"
            "reply is generated. Statistics go to stderr at the end:\n"
            "  prompt: N tokens, X tok/s; generated: M tokens, Y tok/s; stop: length|eog|callback\n"
            "Ctrl-C (SIGINT) or SIGTERM stops the generation: the text so far is ended with a\n"
            "newline, the statistics are printed (stop: callback) and the exit status is\n"
            "130 (SIGINT) or 143 (SIGTERM), 128 + the signal number; a second signal exits at once.\n"
            "\n"
            "options:\n" CLI_MODEL_OPTIONS_HELP
            "                     (-q also drops the statistics line)\n"
            "  -p, --prompt TEXT  the prompt (default: read all of stdin)\n"
            "  -n, --max-tokens N tokens to generate at most, N >= 1 (default 128)\n"
            "      --temp T       temperature; 0 = greedy (default 0.8)\n"
            "      --top-k K      keep the K most likely tokens; 0 = off (default 40)\n"
            "      --top-p P      nucleus sampling, P in (0, 1]; 1 = off (default 0.95)\n"
            "      --min-p P      min-p filter, P in [0, 1]; 0 = off (default 0.05)\n"
            "      --repeat-penalty R  repetition penalty over the last 64 tokens; 1 = off (default)\n"
            "                     (these defaults are the library's, shared with chat and batch)\n"
            "      --seed S       sampler seed, an unsigned integer (default 0: same options,\n"
            "                     same text)\n"
            "      --chat         wrap the prompt with the chat template as the user's message\n"
            "      --system TEXT  system message of the conversation (implies --chat)\n"
            "      --adapter DIR  apply the PEFT LoRA adapter directory DIR (adapter_config.json +\n"
            "                     adapter_model.safetensors) to the model\n"
            "      --adapter-scale S  factor on the adapter's own scale lora_alpha / r (default 1)\n"
            "  -c, --ctx-size N   context length in tokens; 0 = the model's (default 0)\n"
            "  -t, --threads N    threads; 0 = all cores (default 0)\n"
            "  -h, --help         this help\n"
            "\n" CLI_MODEL_RESOLUTION_HELP);
}

typedef struct stream_state {
    int last_newline; /* the last byte written was '\n' (or nothing was written) */
    int write_failed;
} stream_state;

static int32_t on_token(int32_t token, const char *piece, size_t piece_len, void *user_data) {
    stream_state *s = (stream_state *)user_data;
    (void)token;
    if (piece_len > 0) {
        if (fwrite(piece, 1, piece_len, stdout) != piece_len) s->write_failed = 1;
        s->last_newline = piece[piece_len - 1] == '\n';
        if (fflush(stdout) != 0) s->write_failed = 1;
    }
    return (cli_stop_signal() || s->write_failed) ? 1 : 0;
}

static double rate(int32_t tokens, double seconds) { return seconds > 0 ? (double)tokens / seconds : 0.0; }

int cmd_generate(int argc, char **argv) {
    cli_model_opts mo = {NULL, 0, 0};
    const char *prompt_arg = NULL, *system = NULL, *adapter_dir = NULL;
    float adapter_scale = 1;
    bc_adapter *adapter = NULL;
    long max_tokens = 128, threads = 0, n_ctx = 0;
    int chat = 0;
    bc_sampling_params sp;
    bc_status st = bc_sampling_params_default(&sp, sizeof sp);
    if (st != BC_OK) { cli_report("sampling defaults", st); return EXIT_FAIL; }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { generate_usage(stdout); return EXIT_OK; }
        if (strcmp(a, "--chat") == 0) { chat = 1; continue; }
        int r = cli_model_option("generate", argc, argv, &i, &mo);
        if (r < 0) return EXIT_USAGE;
        if (r > 0) continue;
        int ok = v != NULL;
        if (strcmp(a, "-p") == 0 || strcmp(a, "--prompt") == 0) prompt_arg = v;
        else if (strcmp(a, "--system") == 0) { system = v; chat = 1; }
        else if (strcmp(a, "--adapter") == 0) adapter_dir = v;
        else if (strcmp(a, "--adapter-scale") == 0) ok = ok && cli_parse_float(v, &adapter_scale) && isfinite(adapter_scale);
        else if (strcmp(a, "-n") == 0 || strcmp(a, "--max-tokens") == 0)
            ok = ok && cli_parse_long(v, &max_tokens) && max_tokens >= 1 && max_tokens <= INT32_MAX;
        else if (strcmp(a, "--top-k") == 0) {
            long k = 0;
            ok = ok && cli_parse_long(v, &k) && k >= 0 && k <= INT32_MAX;
            if (ok) sp.top_k = (int32_t)k;
        } else if (strcmp(a, "--top-p") == 0)
            ok = ok && cli_parse_float(v, &sp.top_p) && sp.top_p > 0 && sp.top_p <= 1;
        else if (strcmp(a, "--min-p") == 0)
            ok = ok && cli_parse_float(v, &sp.min_p) && sp.min_p >= 0 && sp.min_p <= 1;
        else if (strcmp(a, "--repeat-penalty") == 0)
            ok = ok && cli_parse_float(v, &sp.repetition_penalty) && sp.repetition_penalty > 0;
        else if (!cli_run_option(a, v, &threads, &n_ctx, &sp, &ok)) {
            fprintf(stderr, "batchcore generate: unknown option '%s'\n", a);
            generate_usage(stderr);
            return EXIT_USAGE;
        }
        if (!ok) return cli_bad_value("generate", a, v);
        i++;
    }

    char *user = NULL;
    if (prompt_arg) {
        size_t l = strlen(prompt_arg);
        user = (char *)malloc(l + 1);
        if (user) memcpy(user, prompt_arg, l + 1);
    } else {
        size_t l = 0;
        if (isatty(STDIN_FILENO)) fprintf(stderr, "batchcore generate: reading the prompt from stdin (end with Ctrl-D)\n");
        user = cli_read_all(stdin, &l);
        if (!user) return EXIT_FAIL;
        if (strlen(user) != l) {
            fprintf(stderr, "batchcore generate: the prompt on stdin contains a NUL byte (at byte %lu)\n",
                    (unsigned long)strlen(user));
            free(user);
            return EXIT_USAGE;
        }
    }
    if (!user) { fprintf(stderr, "batchcore generate: out of memory\n"); return EXIT_FAIL; }
    if (user[0] == '\0') {
        fprintf(stderr, "batchcore generate: the prompt is empty (use -p PROMPT or stdin)\n");
        free(user);
        return EXIT_USAGE;
    }

    if ((st = bc_set_num_threads((int32_t)threads)) != BC_OK) { cli_report("set threads", st); free(user); return EXIT_FAIL; }
    bc_model *model = NULL;
    bc_context *ctx = NULL;
    char *prompt = NULL;
    int rc = cli_load_model(&mo, &model);
    if (rc != EXIT_OK) { free(user); return rc; }
    if (chat) {
        prompt = cli_chat_prompt(model, system, user);
        if (!prompt) { rc = EXIT_FAIL; goto done; }
    } else {
        prompt = user;
        user = NULL;
    }

    bc_context_params cp;
    if ((st = bc_context_params_default(&cp, sizeof cp)) != BC_OK) { cli_report("context params", st); rc = EXIT_FAIL; goto done; }
    cp.n_ctx = (int32_t)n_ctx;
    if ((st = bc_context_create(model, &cp, &ctx)) != BC_OK) { cli_report("create context", st); rc = EXIT_FAIL; goto done; }
    if (adapter_dir) {
        if ((st = bc_adapter_load(model, adapter_dir, &adapter)) != BC_OK) { cli_report("load adapter", st); rc = EXIT_FAIL; goto done; }
        if ((st = bc_context_set_adapter(ctx, 0, adapter, adapter_scale)) != BC_OK) { cli_report("set adapter", st); rc = EXIT_FAIL; goto done; }
    }

    bc_generate_params gp;
    if ((st = bc_generate_params_default(&gp, sizeof gp)) != BC_OK) { cli_report("generate params", st); rc = EXIT_FAIL; goto done; }
    stream_state stream = {1, 0};
    gp.max_tokens = (int32_t)max_tokens;
    gp.callback = on_token;
    gp.user_data = &stream;

    bc_generate_result res;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;

    if (!cli_catch_stop_signals(1)) { rc = EXIT_FAIL; goto done; }
    st = bc_generate(ctx, prompt, &gp, &sp, &res);
    /* The text always ends with a newline, so what follows (the statistics on stderr, a
     * shell prompt) starts on its own line. */
    if (!stream.last_newline) fputc('\n', stdout);
    fflush(stdout);
    if (st != BC_OK) { cli_report("generate", st); rc = EXIT_FAIL; goto done; }
    if (stream.write_failed) { fprintf(stderr, "batchcore generate: writing to stdout failed\n"); rc = EXIT_FAIL; goto done; }
    if (!mo.quiet) {
        const char *stop = res.stop_reason == 0 ? "length" : res.stop_reason == 1 ? "eog" : "callback";
        fprintf(stderr, "prompt: %d tokens, %.1f tok/s; generated: %d tokens, %.1f tok/s; stop: %s\n",
                (int)res.prompt_tokens, rate(res.prompt_tokens, res.prompt_seconds), (int)res.generated_tokens,
                rate(res.generated_tokens, res.generate_seconds), stop);
    }
    if (cli_stop_signal()) rc = 128 + cli_stop_signal();
done:
    bc_context_free(ctx);
    bc_adapter_free(adapter);
    bc_model_free(model);
    free(prompt);
    free(user);
    return rc;
}
