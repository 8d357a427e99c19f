/* Issue 17, defect 1: a request that cannot fit in the engine's KV budget even alone
 * must not hang the engine. With kv_bytes holding 64 positions, a 200-token prompt is
 * either rejected at submit (BC_E_KV_FULL, with a message) or finishes with
 * BC_FINISH_ERROR and a message; either way the engine is idle within a bounded number
 * of steps (it used to return OK with 0 tokens processed forever), and a short request
 * submitted after it (FCFS) completes normally. A prompt that fits but whose
 * max_tokens cannot (prompt + max_tokens beyond the whole budget) is rejected at
 * submit. Needs the default model (see model_path.h). */
#include "check.h"
#include "model_path.h"

#include <stdlib.h>

#define MAX_STEPS 40

typedef struct outcome_t {
    int finished;
    int32_t reason;
    int has_message;
    int32_t generated;
} outcome_t;

/* Steps until idle or MAX_STEPS; records the FINISHED events of ids[0..1]. */
static int run(bc_engine *engine, const uint64_t *ids, outcome_t *out) {
    int steps = 0;
    int32_t live = 1;
    bc_event ev[16];
    size_t n = 0, k;
    while (live > 0 && steps < MAX_STEPS) {
        int32_t processed = -1;
        CHECK_OK(bc_engine_step(engine, &processed, &live));
        steps++;
        do {
            CHECK_OK(bc_engine_poll(engine, ev, 16, sizeof ev[0], &n));
            for (k = 0; k < n; k++) {
                int j;
                if (ev[k].kind != BC_EVENT_FINISHED) continue;
                for (j = 0; j < 2; j++) {
                    if (ids[j] != 0 && ev[k].request_id == ids[j]) {
                        out[j].finished++;
                        out[j].reason = ev[k].finish_reason;
                        out[j].has_message = ev[k].message != NULL && ev[k].message[0] != '\0';
                        out[j].generated = ev[k].generated_tokens;
                    }
                }
            }
        } while (n == 16);
    }
    CHECK(live == 0);
    if (live != 0) fprintf(stderr, "engine still has %d live requests after %d steps\n", (int)live, steps);
    return steps;
}

int main(int argc, char **argv) {
    bc_model *model = NULL;
    bc_model_info info;
    int rc = load_default_model(argc, argv, &model, &info);
    if (rc) return rc;
    /* f32 KV: keys and values of every layer for one position. */
    int64_t per_token = 2LL * info.n_layer * info.n_head_kv * (info.n_embd / info.n_head) * (int64_t)sizeof(float);
    int32_t prompt[200];
    int32_t short_prompt[3];
    int i, c;
    for (i = 0; i < 200; i++) prompt[i] = (int32_t)(100 + (i * 37) % 500);
    for (i = 0; i < 3; i++) short_prompt[i] = (int32_t)(300 + i);

    /* case 0: the prompt alone exceeds the budget; case 1: prompt + max_tokens does. */
    for (c = 0; c < 2; c++) {
        bc_engine_params ep;
        bc_request_params rp;
        bc_sampling_params sp;
        bc_engine *engine = NULL;
        uint64_t ids[2] = {0, 0};
        outcome_t out[2];
        bc_status st;
        memset(out, 0, sizeof out);
        CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
        ep.kv_bytes = per_token * 64;
        ep.n_ctx = 1024;
        CHECK_OK(bc_engine_create(model, &ep, &engine));
        if (!engine) break;
        CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
        sp.temperature = 0.0f;
        CHECK_OK(bc_request_params_default(&rp, sizeof rp));
        rp.max_tokens = c == 0 ? 4 : 100;
        st = bc_engine_submit(engine, prompt, c == 0 ? 200 : 40, &rp, &sp, &ids[0]);
        if (st != BC_OK) {
            const char *msg = bc_last_error();
            CHECK(st == BC_E_KV_FULL);
            CHECK(msg != NULL && msg[0] != '\0');
            ids[0] = 0;
        }
        /* Known at submit: the request needs more positions than the whole budget. */
        CHECK(st == BC_E_KV_FULL);
        rp.max_tokens = 6;
        rp.ignore_eos = 1;
        CHECK_OK(bc_engine_submit(engine, short_prompt, 3, &rp, &sp, &ids[1]));
        run(engine, ids, out);
        if (ids[0] != 0) {
            CHECK(out[0].finished == 1);
            CHECK(out[0].reason == BC_FINISH_ERROR);
            CHECK(out[0].has_message);
        }
        CHECK(out[1].finished == 1);
        CHECK(out[1].reason == BC_FINISH_LENGTH);
        CHECK(out[1].generated == 6);
        bc_engine_free(engine);
    }
    bc_model_free(model);
    CHECK_DONE();
}
