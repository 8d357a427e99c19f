/* batchcore — command-line front end of libbatchcore.
 * Results go to stdout, diagnostics and progress to stderr.
 * Exit status: 0 success, 1 failure, 2 usage error. */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *cli_error_text(void) {
    /* The library prefixes some messages with the C function's name ("bc_generate: ...");
     * the user ran a command, not that function: drop the prefix. */
    const char *e = bc_last_error();
    if (strncmp(e, "bc_", 3) == 0) {
        size_t k = 3;
        while ((e[k] >= 'a' && e[k] <= 'z') || (e[k] >= '0' && e[k] <= '9') || e[k] == '_') k++;
        if (e[k] == ':' && e[k + 1] == ' ') return e + k + 2;
    }
    return e;
}

void cli_report(const char *what, bc_status st) {
    fprintf(stderr, "batchcore: %s: %s: %s\n", what, bc_status_string(st), cli_error_text());
}

static int cmd_version(int argc, char **argv);

static const cli_command commands[] = {
    {"version", "print the library and ABI versions", cmd_version},
    {"bench", "benchmarks on this machine (bench optim)", cmd_bench},
    {"info", "print a model's hyperparameters", cmd_info},
    {"tokenize", "print the token ids (or JSON pieces) of text", cmd_tokenize},
    {"generate", "stream a continuation of a prompt or a chat reply", cmd_generate},
    {"chat", "interactive multi-turn chat keeping the conversation's KV cache", cmd_chat},
    {"batch", "batch generation: JSONL requests in, JSONL results out (engine)", cmd_batch},
    {"finetune", "fine-tune a model on a data file (JSONL log, eval, checkpoints)", cmd_finetune},
    {"merge", "merge a LoRA adapter into a model, or average fine-tunes (model soup)", cmd_merge},
};
static const size_t command_count = sizeof commands / sizeof commands[0];

static void usage(FILE *out) {
    fprintf(out,
            "usage: batchcore [--version] [--help] <command> [options]\n"
            "\n"
            "CPU inference and training core for small transformer language models.\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < command_count; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Run 'batchcore <command> --help' for a command's options.\n"
            "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

static int cmd_version(int argc, char **argv) {
    (void)argv;
    if (argc > 1) {
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
            printf("usage: batchcore version\n\nPrints the library version and ABI version.\n");
            return EXIT_OK;
        }
        fprintf(stderr, "batchcore version: unexpected argument '%s'\n", argv[1]);
        return EXIT_USAGE;
    }
    printf("batchcore %s (library %s, abi %u, header abi %d)\n", BC_VERSION_STRING, bc_version(),
           (unsigned)bc_abi_version(), BC_ABI_VERSION);
    if (bc_abi_version() != BC_ABI_VERSION) {
        fprintf(stderr, "batchcore: warning: library ABI %u differs from header ABI %d\n",
                (unsigned)bc_abi_version(), BC_ABI_VERSION);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

/* Output that could not be written (a full disk, /dev/full, a closed pipe) is a failure
 * with a message, whatever the command: checked once here, after the command. */
static int finish_output(int rc) {
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (rc == EXIT_OK) {
            fprintf(stderr, "batchcore: writing to stdout failed%s%s\n", errno ? ": " : "", errno ? strerror(errno) : "");
            rc = EXIT_FAIL;
        }
    }
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) return finish_output(cmd_version(1, argv + 1));
    for (size_t i = 0; i < command_count; i++)
        if (strcmp(cmd, commands[i].name) == 0) return finish_output(commands[i].run(argc - 1, argv + 1));
    fprintf(stderr, "batchcore: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
