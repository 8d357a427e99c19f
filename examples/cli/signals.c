/* SIGINT/SIGTERM handling shared by generate, chat and batch: the handler only records
 * the signal (async-signal-safe); the command polls cli_stop_signal() between units of
 * work, stops cleanly and exits 128 + the signal number (130 SIGINT, 143 SIGTERM). A
 * second signal while the first is still being handled ends the process at once with
 * the same convention. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal = 0;

static void on_stop_signal(int sig) {
    if (stop_signal) _exit(128 + sig); /* second signal: exit at once */
    stop_signal = sig;
}

int cli_catch_stop_signals(int restart) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sa.sa_flags = restart ? SA_RESTART : 0;
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        fprintf(stderr, "batchcore: cannot install the SIGINT/SIGTERM handler\n");
        return 0;
    }
    return 1;
}

int cli_stop_signal(void) { return (int)stop_signal; }

void cli_clear_stop_signal(void) { stop_signal = 0; }

const char *cli_signal_name(int sig) { return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal"; }
