/* Issue 17: n > 1 samples that together outgrow the engine's KV budget are preempted and
 * recomputed, never failed (they used to finish with BC_FINISH_ERROR). One request of
 * n = 4 seeded samples of 40 tokens under a budget of 10 blocks (each sample alone fits):
 * every sample finishes with BC_FINISH_LENGTH, the engine reports preemptions, and each
 * sample's text equals the one a run with ample KV gives (sampler state kept across
 * the recompute). Needs the default model (see model_path.h). */
#include "check.h"
#include "model_path.h"

#include <stdlib.h>

#define N 4
#define MAX_TOKENS 40

typedef struct outcome_t {
    int finished[N];
    int32_t reason[N];
    int32_t generated[N];
    char text[N][1024];
    int64_t preemptions;
} outcome_t;

static void run(bc_model *model, int64_t kv_bytes, const int32_t *prompt, int32_t n_prompt, outcome_t *out) {
    bc_engine_params ep;
    bc_request_params rp;
    bc_sampling_params sp;
    bc_engine *engine = NULL;
    bc_engine_metrics m;
    uint64_t id = 0;
    int32_t live = 1;
    int steps = 0;
    memset(out, 0, sizeof *out);
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.kv_bytes = kv_bytes;
    ep.n_ctx = 512;
    ep.max_batched_tokens = 64;
    CHECK_OK(bc_engine_create(model, &ep, &engine));
    if (!engine) return;
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.temperature = 0.9f;
    sp.seed = 77;
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.max_tokens = MAX_TOKENS;
    rp.n = N;
    rp.ignore_eos = 1;
    CHECK_OK(bc_engine_submit(engine, prompt, n_prompt, &rp, &sp, &id));
    while (live > 0 && steps < 5000) {
        bc_event ev[16];
        size_t n = 0, k;
        int32_t processed = 0;
        CHECK_OK(bc_engine_step(engine, &processed, &live));
        steps++;
        do {
            CHECK_OK(bc_engine_poll(engine, ev, 16, sizeof ev[0], &n));
            for (k = 0; k < n; k++) {
                int i = ev[k].index;
                if (ev[k].kind != BC_EVENT_FINISHED || ev[k].request_id != id || i < 0 || i >= N) continue;
                out->finished[i]++;
                out->reason[i] = ev[k].finish_reason;
                out->generated[i] = ev[k].generated_tokens;
                snprintf(out->text[i], sizeof out->text[i], "%s", ev[k].text ? ev[k].text : "");
            }
        } while (n == 16);
    }
    CHECK(live == 0);
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof m;
    CHECK_OK(bc_engine_get_metrics(engine, &m));
    out->preemptions = m.preemptions;
    bc_engine_free(engine);
}

int main(int argc, char **argv) {
    bc_model *model = NULL;
    bc_model_info info;
    int rc = load_default_model(argc, argv, &model, &info);
    if (rc) return rc;
    /* f32 KV: keys and values of every layer for one position. */
    int64_t per_token = 2LL * info.n_layer * info.n_head_kv * (info.n_embd / info.n_head) * (int64_t)sizeof(float);
    static const char text[] = "Write a long essay about the sea. The sea";
    int32_t prompt[64];
    size_t n_prompt = 0;
    outcome_t ample, tight;
    int i;
    CHECK_OK(bc_tokenize(model, text, sizeof text - 1, 0, 0, prompt, 64, &n_prompt));
    run(model, per_token * 4096, prompt, (int32_t)n_prompt, &ample);
    run(model, per_token * 16 * 10, prompt, (int32_t)n_prompt, &tight);
    CHECK(ample.preemptions == 0);
    CHECK(tight.preemptions > 0);
    for (i = 0; i < N; i++) {
        CHECK(ample.finished[i] == 1 && ample.reason[i] == BC_FINISH_LENGTH && ample.generated[i] == MAX_TOKENS);
        CHECK(tight.finished[i] == 1);
        CHECK(tight.reason[i] == BC_FINISH_LENGTH);
        CHECK(tight.generated[i] == MAX_TOKENS);
        CHECK(strcmp(tight.text[i], ample.text[i]) == 0);
        if (strcmp(tight.text[i], ample.text[i]) != 0)
            fprintf(stderr, "sample %d:\n  tight: %s\n  ample: %s\n", i, tight.text[i], ample.text[i]);
    }
    printf("n=%d samples under %lld KV bytes: %lld preemptions\n", N, (long long)(per_token * 160), (long long)tight.preemptions);
    bc_model_free(model);
    CHECK_DONE();
}
