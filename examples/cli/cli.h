/* Shared helpers of the batchcore command-line tool. */
#ifndef BATCHCORE_CLI_H
#define BATCHCORE_CLI_H

#include <batchcore.h>

/* Exit codes (sysexits-style where one fits). */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* Prints "batchcore: <what>: <status>: <bc_last_error()>" to stderr. */
void cli_report(const char *what, bc_status st);

/* Subcommands: each takes argc/argv starting at the subcommand name. */
typedef struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} cli_command;

int cmd_bench(int argc, char **argv);

#endif
