/* bc_engine_cancel's errors, exactly as the header states them (issue 17): a NULL
 * engine is BC_E_INVALID_ARGUMENT; an id that was never issued (0, or past the last
 * one), one already cancelled, and one that finished normally are BC_E_NOT_FOUND with
 * a message, and such a call changes nothing (no event, the live request untouched).
 * Cancelling a live request is OK and gives one FINISHED event with reason cancelled.
 * Needs the default model (see model_path.h). */
#include "check.h"
#include "model_path.h"

/* Drains the event queue; returns the number of FINISHED events for `id` and the last one's reason. */
static int finished_events(bc_engine *e, uint64_t id, int32_t *reason) {
    bc_event ev[8];
    size_t n = 0, k;
    int count = 0;
    do {
        CHECK_OK(bc_engine_poll(e, ev, 8, sizeof ev[0], &n));
        for (k = 0; k < n; k++) {
            if (ev[k].kind == BC_EVENT_FINISHED && ev[k].request_id == id) {
                count++;
                *reason = ev[k].finish_reason;
            }
        }
    } while (n == 8);
    return count;
}

int main(int argc, char **argv) {
    bc_model *model = NULL;
    bc_model_info info;
    bc_engine *e = NULL;
    bc_request_params rp;
    uint64_t done = 0, live = 0, gone = 0;
    int32_t reason = -1, n_live = -1;
    int steps = 0;
    int rc = load_default_model(argc, argv, &model, &info);
    if (rc) return rc;
    CHECK_OK(bc_engine_create(model, NULL, &e));
    if (!e) {
        bc_model_free(model);
        CHECK_DONE();
    }
    CHECK_ERR(bc_engine_cancel(NULL, 1), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_cancel(e, 0), BC_E_NOT_FOUND);
    CHECK_ERR(bc_engine_cancel(e, 1), BC_E_NOT_FOUND);

    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.max_tokens = 2;
    rp.ignore_eos = 1;
    CHECK_OK(bc_engine_submit_text(e, "Hello", &rp, NULL, &done));
    rp.max_tokens = 64;
    CHECK_OK(bc_engine_submit_text(e, "Once upon a time", &rp, NULL, &live));
    rp.max_tokens = 64;
    CHECK_OK(bc_engine_submit_text(e, "The capital of France is", &rp, NULL, &gone));
    CHECK_ERR(bc_engine_cancel(e, gone + 1), BC_E_NOT_FOUND);
    CHECK_ERR(bc_engine_cancel(e, UINT64_MAX), BC_E_NOT_FOUND);

    /* cancelled, then cancelled again */
    CHECK_OK(bc_engine_cancel(e, gone));
    CHECK(finished_events(e, gone, &reason) == 1);
    CHECK(reason == BC_FINISH_CANCELLED);
    CHECK_ERR(bc_engine_cancel(e, gone), BC_E_NOT_FOUND);
    CHECK(finished_events(e, gone, &reason) == 0);

    /* finished normally (length) while `live` still runs */
    while (steps < 10) {
        CHECK_OK(bc_engine_step(e, NULL, &n_live));
        steps++;
        if (finished_events(e, done, &reason) > 0) break;
    }
    CHECK(reason == BC_FINISH_LENGTH);
    CHECK(n_live == 1);
    CHECK_ERR(bc_engine_cancel(e, done), BC_E_NOT_FOUND);
    CHECK(finished_events(e, live, &reason) == 0);

    /* the failed cancels left `live` running */
    CHECK_OK(bc_engine_step(e, NULL, &n_live));
    CHECK(n_live == 1);
    CHECK_OK(bc_engine_cancel(e, live));
    CHECK(finished_events(e, live, &reason) == 1);
    CHECK(reason == BC_FINISH_CANCELLED);
    CHECK_OK(bc_engine_step(e, NULL, &n_live));
    CHECK(n_live == 0);

    bc_engine_free(e);
    bc_model_free(model);
    CHECK_DONE();
}
