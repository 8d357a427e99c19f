/* Shared helpers of the batchcore command-line tool. */
#ifndef BATCHCORE_CLI_H
#define BATCHCORE_CLI_H

#include <batchcore.h>
#include <stddef.h>
#include <stdio.h>

/* Exit codes (sysexits-style where one fits). */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* Prints "batchcore: <what>: <status>: <cli_error_text()>" to stderr. */
void cli_report(const char *what, bc_status st);

/* bc_last_error() without a leading "bc_function: " (the user ran a command). */
const char *cli_error_text(void);

/* Subcommands: each takes argc/argv starting at the subcommand name. */
typedef struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} cli_command;

int cmd_bench(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_batch(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_merge(int argc, char **argv);

/* ---- shared by the model commands (model.c) ---- */

/* File name of the default model inside the cache directory. */
#define CLI_DEFAULT_MODEL "SmolLM2-135M-Instruct.Q4_1.gguf"

/* Options every model command accepts: -m/--model PATH, -q/--quiet, --dequantize. */
typedef struct cli_model_opts {
    const char *path; /* -m/--model, or NULL */
    int quiet;        /* -q/--quiet */
    int dequantize;   /* --dequantize: load every weight as float32 (BC_MODEL_WEIGHTS_F32) */
} cli_model_opts;

/* If argv[*i] is one of the shared model options, consumes it (and its value) and
 * returns 1; returns 0 when it is not one; returns -1 after printing a usage error
 * (prefixed with `cmd`) when a value is missing. */
int cli_model_option(const char *cmd, int argc, char **argv, int *i, cli_model_opts *opts);

/* Help text lines of the shared options and of model resolution. */
#define CLI_MODEL_OPTIONS_HELP                                                               \
    "  -m, --model PATH   GGUF model (default: see MODEL below)\n"                          \
    "  -q, --quiet        no loading progress or summary on stderr\n"                      \
    "      --dequantize   hold all weights as float32 (default: block-quantized and\n"            \
    "                     16-bit weights stay as in the file)\n"
#define CLI_MODEL_RESOLUTION_HELP                                                            \
    "MODEL: -m PATH, else $BATCHCORE_MODEL, else " CLI_DEFAULT_MODEL "\n"                   \
    "in $BATCHCORE_CACHE, $XDG_CACHE_HOME/batchcore or ~/.cache/batchcore (first set);\n"   \
    "a missing default model is fetched with <prefix>/share/batchcore/fetch-model.sh.\n"

/* Resolves the model path as described in CLI_MODEL_RESOLUTION_HELP (fetching the
 * default model when it is missing) and loads it. Prints a progress indicator while
 * loading when stderr is a terminal and a one-line summary, both unless quiet.
 * Returns EXIT_OK with *out set, or EXIT_FAIL after printing the reason. */
int cli_load_model(const cli_model_opts *opts, bc_model **out);

/* Reads all of `f` into a NUL-terminated malloc'd buffer; *len gets the byte count
 * (without the NUL). Returns NULL (after printing why) on failure. */
char *cli_read_all(FILE *f, size_t *len);

/* Joins argv[0..n) with single spaces into a malloc'd string (NULL if out of memory). */
char *cli_join_args(int n, char **args);

/* Writes bytes as a JSON string literal (with quotes): escapes '"', '\\' and control
 * characters; invalid UTF-8 bytes become \ufffd. */
void cli_json_string(FILE *out, const char *s, size_t len);

/* Strict number parsing: the whole string must be the number. 1 on success. */
int cli_parse_long(const char *s, long *out);
int cli_parse_float(const char *s, float *out);
int cli_parse_u64(const char *s, unsigned long long *out);

/* The run options generate and chat share: -t/--threads N, -c/--ctx-size N, --temp T
 * (also --temperature) and --seed S. When `a` is one of them, parses its value `v`
 * (NULL when missing) into the target, ANDs the outcome into *ok and returns 1;
 * otherwise returns 0 and changes nothing. */
int cli_run_option(const char *a, const char *v, long *threads, long *n_ctx, bc_sampling_params *sp, int *ok);

/* Reports an option whose value is missing (value NULL) or invalid, as
 * "batchcore CMD: ..." on stderr; returns EXIT_USAGE. */
int cli_bad_value(const char *cmd, const char *option, const char *value);

/* SIGINT/SIGTERM (signals.c). cli_catch_stop_signals installs a handler for both that
 * only records the signal (restart: SA_RESTART, so blocking reads are not interrupted);
 * a second signal before cli_clear_stop_signal exits at once with 128 + signo. Returns 1,
 * or 0 after printing why. cli_stop_signal() is the signal received (0: none). Commands
 * that stop because of it exit with 128 + signo (130 SIGINT, 143 SIGTERM). */
int cli_catch_stop_signals(int restart);
int cli_stop_signal(void);
void cli_clear_stop_signal(void);
const char *cli_signal_name(int sig);

/* Monotonic time in seconds. */
double cli_now(void);

/* A chat prompt (optional system message, then the user's) in the model's template,
 * ending with the assistant's turn opener; malloc'd, NULL on error (reported). */
char *cli_chat_prompt(bc_model *model, const char *system, const char *user);

#endif
