/* Minimal assertion helpers for the C ABI tests (C99 and C++ compatible). */
#ifndef BC_TEST_CHECK_H
#define BC_TEST_CHECK_H

#include <batchcore.h>
#include <stdio.h>
#include <string.h>

static int check_failures = 0;
static int check_count = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        check_count++;                                                               \
        if (!(cond)) {                                                               \
            check_failures++;                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

/* The call must succeed. */
#define CHECK_OK(call)                                                                   \
    do {                                                                                 \
        bc_status st_ = (call);                                                          \
        check_count++;                                                                   \
        if (st_ != BC_OK) {                                                              \
            check_failures++;                                                            \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call,    \
                    bc_status_string(st_), bc_last_error());                             \
        }                                                                                \
    } while (0)

/* The call must fail with exactly `code` and leave a non-empty message. */
#define CHECK_ERR(call, code)                                                            \
    do {                                                                                 \
        bc_status st_ = (call);                                                          \
        const char *msg_ = bc_last_error();                                              \
        check_count++;                                                                   \
        if (st_ != (code) || msg_ == NULL || msg_[0] == '\0') {                          \
            check_failures++;                                                            \
            fprintf(stderr, "%s:%d: %s: expected %s, got %s (message '%s')\n", __FILE__, \
                    __LINE__, #call, bc_status_string(code), bc_status_string(st_),      \
                    msg_ ? msg_ : "(null)");                                             \
        }                                                                                \
    } while (0)

#define CHECK_DONE()                                                                  \
    do {                                                                              \
        printf("%s: %d checks, %d failed\n", __FILE__, check_count, check_failures); \
        return check_failures == 0 ? 0 : 1;                                           \
    } while (0)

#endif
