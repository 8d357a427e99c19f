/* batchcore chat — interactive multi-turn chat that keeps the conversation's KV cache
 * between turns: one context, sequence 0; each turn decodes only its new tokens. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void chat_usage(FILE *out) {
    fprintf(out,
            "usage: batchcore chat [-m MODEL] [--system TEXT] [-n N] [--temp T] [--seed S]\n"
            "                      [-c N] [-t THREADS] [-v] [-q]\n"
            "\n"
            "Interactive chat with an instruct model. Each line read from stdin is a user turn;\n"
            "the reply streams to stdout. The conversation stays in the KV cache between turns,\n"
            "so a turn only processes its own new tokens (the history is never re-read).\n"
            "The first turn is formatted with the model's chat template (with the system message,\n"
            "or the template's default one); later turns append\n"
            "  <|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n\n"
            "and each reply is closed with <|im_end|>\\n.\n"
            "\n"
            "commands: /reset forgets the conversation, /exit (or end of input) quits; another\n"
            "line starting with '/' is an unknown command, not sent (start a message with '//'\n"
            "to send it with one leading '/').\n"
            "Ctrl-C (SIGINT) during a reply stops the reply (the conversation keeps what was\n"
            "said); Ctrl-C while waiting for input, or SIGTERM at any time, ends the chat with\n"
            "exit status 130 (SIGINT) or 143 (SIGTERM), 128 + the signal number.\n"
            "When the conversation reaches the context length, the turn fails with a message:\n"
            "/reset to continue.\n"
            "\n"
            "options:\n" CLI_MODEL_OPTIONS_HELP
            "      --system TEXT  system message of the conversation\n"
            "  -n, --max-tokens N tokens per reply at most (default 256)\n"
            "      --temp T       temperature; 0 = greedy (default 0.8)\n"
            "                     (other sampling as generate's defaults: top-k 40, top-p 0.95,\n"
            "                     min-p 0.05, no repetition penalty)\n"
            "      --seed S       sampler seed, an unsigned integer (default 0)\n"
            "  -c, --ctx-size N   context length in tokens; 0 = the model's (default 0)\n"
            "  -t, --threads N    threads; 0 = all cores (default 0)\n"
            "  -v, --verbose      per turn on stderr: (N prompt tokens, M cached)\n"
            "                     N = context the reply is conditioned on, M = positions reused\n"
            "                     from earlier turns; plus tokens/s\n"
            "  -h, --help         this help\n"
            "\n" CLI_MODEL_RESOLUTION_HELP);
}

typedef struct turn_state {
    int32_t last_token;   /* last generated token passed to the callback, or -1 */
    int32_t streamed;     /* generated tokens passed to the callback (excluding the final -1 flush) */
    int last_newline;
    int write_failed;
} turn_state;

static int32_t on_token(int32_t token, const char *piece, size_t piece_len, void *user_data) {
    turn_state *s = (turn_state *)user_data;
    if (token >= 0) {
        s->last_token = token;
        s->streamed++;
    }
    if (piece_len > 0) {
        if (fwrite(piece, 1, piece_len, stdout) != piece_len) s->write_failed = 1;
        s->last_newline = piece[piece_len - 1] == '\n';
        if (fflush(stdout) != 0) s->write_failed = 1;
    }
    return (cli_stop_signal() || s->write_failed) ? 1 : 0;
}

static char *format_next_turn(const char *user) {
    static const char head[] = "<|im_start|>user\n", tail[] = "<|im_end|>\n<|im_start|>assistant\n";
    size_t l = strlen(user);
    char *buf = (char *)malloc(sizeof head - 1 + l + sizeof tail);
    if (!buf) return NULL;
    memcpy(buf, head, sizeof head - 1);
    memcpy(buf + sizeof head - 1, user, l);
    memcpy(buf + sizeof head - 1 + l, tail, sizeof tail);
    return buf;
}

/* Appends tokens to sequence 0 with one bc_decode (logits of the last token are discarded). */
static bc_status decode_tail(bc_context *ctx, const int32_t *tokens, int32_t n, float *logits, size_t n_vocab) {
    int32_t len = 0;
    bc_status st = bc_context_seq_length(ctx, 0, &len);
    if (st != BC_OK) return st;
    int32_t pos[64], seq[64];
    if (n > 64) return BC_E_INVALID_ARGUMENT;
    for (int32_t i = 0; i < n; i++) { pos[i] = len + i; seq[i] = 0; }
    bc_batch b = {sizeof b, n, tokens, pos, seq, NULL};
    return bc_decode(ctx, &b, logits, n_vocab);
}

/* Tokens of `message` as the first turn of a conversation (with the system message),
 * or -1 when it cannot be counted. */
static int32_t message_tokens(bc_model *model, const char *system, const char *message) {
    char *prompt = cli_chat_prompt(model, system, message);
    if (!prompt) return -1;
    size_t n = 0;
    bc_status st = bc_tokenize(model, prompt, strlen(prompt), 1, 1, NULL, 0, &n);
    free(prompt);
    return st == BC_OK && n <= INT32_MAX ? (int32_t)n : -1;
}

int cmd_chat(int argc, char **argv) {
    cli_model_opts mo = {NULL, 0, 0};
    const char *system = NULL;
    long max_tokens = 256, threads = 0, n_ctx = 0;
    int verbose = 0;
    bc_sampling_params sp;
    bc_status st = bc_sampling_params_default(&sp, sizeof sp);
    if (st != BC_OK) { cli_report("sampling defaults", st); return EXIT_FAIL; }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { chat_usage(stdout); return EXIT_OK; }
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) { verbose = 1; continue; }
        int r = cli_model_option("chat", argc, argv, &i, &mo);
        if (r < 0) return EXIT_USAGE;
        if (r > 0) continue;
        int ok = v != NULL;
        if (strcmp(a, "--system") == 0) system = v;
        else if (strcmp(a, "-n") == 0 || strcmp(a, "--max-tokens") == 0)
            ok = ok && cli_parse_long(v, &max_tokens) && max_tokens >= 1 && max_tokens <= INT32_MAX;
        else if (!cli_run_option(a, v, &threads, &n_ctx, &sp, &ok)) {
            fprintf(stderr, "batchcore chat: unknown option '%s'\n", a);
            chat_usage(stderr);
            return EXIT_USAGE;
        }
        if (!ok) return cli_bad_value("chat", a, v);
        i++;
    }

    if ((st = bc_set_num_threads((int32_t)threads)) != BC_OK) { cli_report("set threads", st); return EXIT_FAIL; }
    bc_model *model = NULL;
    bc_context *ctx = NULL;
    float *logits = NULL;
    char *line = NULL;
    size_t line_cap = 0;
    int rc = cli_load_model(&mo, &model);
    if (rc != EXIT_OK) return rc;
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if ((st = bc_model_get_info(model, &info)) != BC_OK) { cli_report("model info", st); rc = EXIT_FAIL; goto done; }
    bc_context_params cp;
    if ((st = bc_context_params_default(&cp, sizeof cp)) != BC_OK) { cli_report("context params", st); rc = EXIT_FAIL; goto done; }
    cp.n_ctx = (int32_t)n_ctx;
    const long n_ctx_eff = n_ctx > 0 ? n_ctx : (long)info.n_ctx_train;
    if ((st = bc_context_create(model, &cp, &ctx)) != BC_OK) { cli_report("create context", st); rc = EXIT_FAIL; goto done; }
    logits = (float *)malloc((size_t)info.n_vocab * sizeof *logits);
    if (!logits) { fprintf(stderr, "batchcore chat: out of memory\n"); rc = EXIT_FAIL; goto done; }

    /* The turn closer, tokenized once. */
    int32_t closer[16];
    size_t n_closer = 0;
    if ((st = bc_tokenize(model, "<|im_end|>\n", 11, 0, 1, closer, 16, &n_closer)) != BC_OK) {
        cli_report("tokenize", st);
        rc = EXIT_FAIL;
        goto done;
    }

    int tty = isatty(STDIN_FILENO);
    int first = 1;
    /* Without SA_RESTART: a signal interrupts the wait for the next line. */
    if (!cli_catch_stop_signals(0)) { rc = EXIT_FAIL; goto done; }
    if (tty && !mo.quiet) fprintf(stderr, "chat: type a message; /reset forgets the conversation, /exit quits\n");
    for (;;) {
        if (tty) { fputs("> ", stderr); fflush(stderr); }
        ssize_t got = getline(&line, &line_cap, stdin);
        if (cli_stop_signal()) { /* Ctrl-C at the prompt, or SIGTERM */
            if (tty) fputc('\n', stderr);
            rc = 128 + cli_stop_signal();
            break;
        }
        if (got < 0) {
            if (tty) fputc('\n', stderr);
            break;
        }
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (got == 0) continue;
        if (strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0) break;
        if (strcmp(line, "/reset") == 0) {
            if ((st = bc_context_seq_remove(ctx, 0)) != BC_OK) { cli_report("reset", st); rc = EXIT_FAIL; break; }
            first = 1;
            if (!mo.quiet) fprintf(stderr, "(conversation reset)\n");
            continue;
        }
        if ((size_t)got != strlen(line)) { fprintf(stderr, "batchcore chat: the message contains a NUL byte\n"); continue; }
        const char *message = line;
        if (line[0] == '/') {
            if (line[1] != '/') {
                fprintf(stderr, "batchcore chat: unknown command '%s' (commands: /reset, /exit; '//' sends a '/')\n", line);
                continue;
            }
            message = line + 1;
        }
        char *prompt = first ? cli_chat_prompt(model, system, message) : format_next_turn(message);
        if (!prompt) { fprintf(stderr, "batchcore chat: cannot format the turn\n"); rc = EXIT_FAIL; break; }
        int32_t before = 0;
        bc_context_seq_length(ctx, 0, &before);

        bc_generate_params gp;
        bc_generate_params_default(&gp, sizeof gp);
        turn_state ts = {-1, 0, 1, 0};
        gp.seq_id = 0;
        gp.max_tokens = (int32_t)max_tokens;
        gp.add_special = first; /* BOS (if the model wants one) only at the very start */
        gp.parse_special = 1;
        gp.callback = on_token;
        gp.user_data = &ts;
        bc_generate_result res;
        memset(&res, 0, sizeof res);
        res.struct_size = sizeof res;
        st = bc_generate(ctx, prompt, &gp, &sp, &res);
        free(prompt);
        if (!ts.last_newline) fputc('\n', stdout);
        fflush(stdout);
        if (st != BC_OK) {
            if (st == BC_E_INVALID_ARGUMENT || st == BC_E_KV_FULL) {
                /* Too long: this message alone, or the conversation with it? */
                int32_t alone = message_tokens(model, system, message);
                if (alone >= 0 && (int64_t)alone + max_tokens > n_ctx_eff)
                    fprintf(stderr, "batchcore chat: this message (%d tokens) plus -n %ld reply tokens does not fit the "
                            "context of %ld tokens; the conversation is unchanged\n", (int)alone, max_tokens, n_ctx_eff);
                else
                    fprintf(stderr, "batchcore chat: the conversation is too long for the context (%ld tokens); /reset "
                            "to start over\n", n_ctx_eff);
            } else {
                cli_report("generate", st);
                rc = EXIT_FAIL;
                break;
            }
            /* bc_generate leaves the sequence as it was on failure: the turn is dropped. */
            continue;
        }
        if (ts.write_failed) { fprintf(stderr, "batchcore chat: writing to stdout failed\n"); rc = EXIT_FAIL; break; }
        /* Close the assistant's turn in the KV cache: the last sampled token is not decoded
         * by bc_generate when it stopped at max_tokens or by the callback (an end-of-generation
         * token is never decoded), so decode it first, then "<|im_end|>\n". */
        int32_t after = 0;
        bc_context_seq_length(ctx, 0, &after);
        int32_t tail[17];
        int32_t n_tail = 0;
        if (ts.last_token >= 0 && after == before + res.prompt_tokens + ts.streamed - 1) tail[n_tail++] = ts.last_token;
        for (size_t k = 0; k < n_closer; k++) tail[n_tail++] = closer[k];
        st = decode_tail(ctx, tail, n_tail, logits, (size_t)info.n_vocab);
        if (st != BC_OK) {
            cli_report("closing the turn", st);
            fprintf(stderr, "batchcore chat: the conversation is too long for the context; /reset to start over\n");
        }
        first = 0;
        int sig = cli_stop_signal();
        if (verbose) {
            double gen_rate = res.generate_seconds > 0 ? res.generated_tokens / res.generate_seconds : 0.0;
            fprintf(stderr, "(%d prompt tokens, %d cached; %d generated, %.1f tok/s%s)\n", (int)(before + res.prompt_tokens),
                    (int)before, (int)res.generated_tokens, gen_rate, sig ? "; interrupted" : "");
        }
        if (sig == SIGTERM) { rc = 128 + sig; break; }
        cli_clear_stop_signal(); /* SIGINT stopped this reply only */
    }
done:
    free(line);
    free(logits);
    bc_context_free(ctx);
    bc_model_free(model);
    return rc;
}
