/* Versions, status strings and the error channel. */
#include "check.h"

int main(void) {
    CHECK(bc_abi_version() == BC_ABI_VERSION);
    CHECK(bc_version() != NULL);
    CHECK(strcmp(bc_version(), BC_VERSION_STRING) == 0);

    /* Before any failure the message is the empty string, never NULL. */
    CHECK(bc_last_error() != NULL);
    CHECK(strcmp(bc_last_error(), "") == 0);

    for (int code = BC_OK; code <= BC_E_INTERNAL; code++) {
        const char *s = bc_status_string((bc_status)code);
        CHECK(s != NULL && s[0] != '\0' && strcmp(s, "unknown status") != 0);
    }
    CHECK(strcmp(bc_status_string((bc_status)12345), "unknown status") == 0);
    CHECK(strcmp(bc_status_string((bc_status)-1), "unknown status") == 0);
    CHECK(strcmp(bc_status_string(BC_OK), "ok") == 0);
    CHECK_DONE();
}
