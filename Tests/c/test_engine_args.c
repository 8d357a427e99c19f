/* Continuous-batching engine C ABI: every bc_engine_* function (and the two params
 * defaults) with NULL and invalid arguments returns the documented status with a
 * message, never crashes, and leaves outputs and engine state as they were.
 * Needs the default model: its path is read from <fixtures>/../../build/stage/model-path
 * (written by `make test-c`); a missing model is a failure, not a skip. */
#include "check.h"
#include "model_path.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>



/* Pointer values that are never real handles: outputs must keep them on failure. */
static int sentinel_storage;
#define SENTINEL_ENGINE ((bc_engine *)(void *)&sentinel_storage)
#define SENTINEL_ID ((uint64_t)0xdeadbeefcafef00dULL)

static bc_engine_metrics metrics_of(const bc_engine *e) {
    bc_engine_metrics m;
    memset(&m, 0, sizeof m);
    m.struct_size = (uint32_t)sizeof m;
    CHECK_OK(bc_engine_get_metrics(e, &m));
    return m;
}

/* ---------------------------------------------------------------- defaults */

static void test_defaults(void) {
    unsigned char raw[256];

    bc_engine_params ep;
    CHECK_ERR(bc_engine_params_default(NULL, sizeof ep), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_params_default(&ep, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_params_default(&ep, 3), BC_E_INVALID_ARGUMENT);
    memset(&ep, 0x5a, sizeof ep);
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    CHECK(ep.struct_size == sizeof ep);
    CHECK(ep.max_batched_tokens == 512 && ep.max_seqs == 64 && ep.policy == 0 && ep.n_ctx == 0 &&
          ep.kv_bytes == 0 && ep.kv_type == BC_KV_F32 && ep.static_batching == 0);
    CHECK(ep.adapter_bytes == 0 && ep.offline == 0 && ep.shared_prefix_attention == 0);

    bc_request_params rp;
    CHECK_ERR(bc_request_params_default(NULL, sizeof rp), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_request_params_default(&rp, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_request_params_default(&rp, 2), BC_E_INVALID_ARGUMENT);
    memset(&rp, 0x5a, sizeof rp);
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    CHECK(rp.struct_size == sizeof rp);
    CHECK(rp.max_tokens == 128 && rp.n == 1 && rp.priority == 0 && rp.ignore_eos == 0);
    CHECK(rp.stop_tokens == NULL && rp.n_stop_tokens == 0 && rp.stop_strings == NULL && rp.n_stop_strings == 0);
    CHECK(rp.user_tag == 0);

    /* An older, shorter struct: only `size` bytes are written. */
    memset(raw, 0xa5, sizeof raw);
    CHECK_OK(bc_engine_params_default((bc_engine_params *)(void *)raw, offsetof(bc_engine_params, policy)));
    {
        uint32_t ss;
        int32_t mbt;
        memcpy(&ss, raw, sizeof ss);
        memcpy(&mbt, raw + offsetof(bc_engine_params, max_batched_tokens), sizeof mbt);
        CHECK(ss == offsetof(bc_engine_params, policy));
        CHECK(mbt == 512);
        int untouched = 1;
        for (size_t i = offsetof(bc_engine_params, policy); i < sizeof raw; i++)
            if (raw[i] != 0xa5) untouched = 0;
        CHECK(untouched);
    }
    memset(raw, 0xa5, sizeof raw);
    CHECK_OK(bc_request_params_default((bc_request_params *)(void *)raw, offsetof(bc_request_params, n)));
    {
        int untouched = 1;
        for (size_t i = offsetof(bc_request_params, n); i < sizeof raw; i++)
            if (raw[i] != 0xa5) untouched = 0;
        CHECK(untouched);
    }
}

/* ---------------------------------------------------------------- create */

static void test_create(bc_model *model, const bc_model_info *info) {
    bc_engine *e = SENTINEL_ENGINE;
    bc_engine_params ep;

    CHECK_ERR(bc_engine_create(NULL, NULL, &e), BC_E_INVALID_ARGUMENT);
    CHECK(e == SENTINEL_ENGINE);
    CHECK_ERR(bc_engine_create(model, NULL, NULL), BC_E_INVALID_ARGUMENT);

    /* params with struct_size 0 */
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.struct_size = 0;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    CHECK(e == SENTINEL_ENGINE);

    /* unknown policy */
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.policy = 2;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    ep.policy = -1;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    CHECK(e == SENTINEL_ENGINE);

    /* unknown kv_type */
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.kv_type = 99;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    ep.kv_type = -1;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    CHECK(e == SENTINEL_ENGINE);

    /* shared_prefix_attention other than 0 or 1 */
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.shared_prefix_attention = 2;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    ep.shared_prefix_attention = -1;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    CHECK(e == SENTINEL_ENGINE);

    /* offline other than 0 or 1 */
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.offline = 2;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    CHECK(strstr(bc_last_error(), "offline") != NULL);
    CHECK(e == SENTINEL_ENGINE);

    /* n_ctx beyond the model's context, or negative */
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.n_ctx = info->n_ctx_train + 1;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    ep.n_ctx = -1;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    CHECK(e == SENTINEL_ENGINE);

    /* negative KV budget; a budget smaller than one block */
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.kv_bytes = -1;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    ep.kv_bytes = 1;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    CHECK(e == SENTINEL_ENGINE);

    /* empty step budgets */
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.max_batched_tokens = 0;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    ep.max_batched_tokens = -5;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.max_seqs = 0;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    CHECK(e == SENTINEL_ENGINE);

    /* offline and static batching exclude each other */
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.offline = 1;
    ep.static_batching = 1;
    CHECK_ERR(bc_engine_create(model, &ep, &e), BC_E_INVALID_ARGUMENT);
    CHECK(e == SENTINEL_ENGINE);
    CHECK(strstr(bc_last_error(), "offline") != NULL);

    /* Valid: NULL params, the model's full context, every KV type. */
    e = NULL;
    CHECK_OK(bc_engine_create(model, NULL, &e));
    CHECK(e != NULL);
    bc_engine_free(e);
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.n_ctx = info->n_ctx_train;
    ep.policy = 1;
    e = NULL;
    CHECK_OK(bc_engine_create(model, &ep, &e));
    CHECK(e != NULL);
    bc_engine_free(e);
    {
        int32_t t;
        for (t = BC_KV_F32; t <= BC_KV_INT8; t++) {
            CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
            ep.kv_type = t;
            e = NULL;
            CHECK_OK(bc_engine_create(model, &ep, &e));
            CHECK(e != NULL);
            bc_engine_free(e);
        }
    }
    /* An older caller's params (only struct_size and max_batched_tokens known). */
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.struct_size = (uint32_t)offsetof(bc_engine_params, max_seqs);
    ep.max_seqs = 0;   /* beyond struct_size: must be ignored */
    ep.policy = 77;    /* likewise */
    e = NULL;
    CHECK_OK(bc_engine_create(model, &ep, &e));
    CHECK(e != NULL);
    bc_engine_free(e);

    bc_engine_free(NULL);
}

/* ---------------------------------------------------------------- submit */

static void expect_nothing_submitted(const bc_engine *e) {
    bc_engine_metrics m = metrics_of(e);
    CHECK(m.submitted == 0 && m.finished == 0 && m.waiting == 0 && m.running == 0);
}

static void test_submit(bc_model *model, const bc_model_info *info) {
    bc_engine_params ep;
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.n_ctx = 64;
    bc_engine *e = NULL;
    CHECK_OK(bc_engine_create(model, &ep, &e));
    if (!e) return;

    int32_t prompt[50];
    size_t i;
    for (i = 0; i < sizeof prompt / sizeof prompt[0]; i++) prompt[i] = (int32_t)(100 + i);
    bc_request_params rp;
    bc_sampling_params sp;
    uint64_t id = SENTINEL_ID;

    /* NULL pointers, empty prompts */
    CHECK_ERR(bc_engine_submit(NULL, prompt, 4, NULL, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_submit(e, NULL, 4, NULL, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_submit(e, prompt, 4, NULL, NULL, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_submit(e, prompt, 0, NULL, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_submit(e, prompt, -3, NULL, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK(id == SENTINEL_ID);

    /* token ids outside the vocabulary */
    {
        int32_t bad[3];
        bad[0] = 1;
        bad[1] = info->n_vocab;
        bad[2] = 5;
        CHECK_ERR(bc_engine_submit(e, bad, 3, NULL, NULL, &id), BC_E_INVALID_ARGUMENT);
        bad[1] = -1;
        CHECK_ERR(bc_engine_submit(e, bad, 3, NULL, NULL, &id), BC_E_INVALID_ARGUMENT);
        bad[1] = INT32_MAX;
        CHECK_ERR(bc_engine_submit(e, bad, 3, NULL, NULL, &id), BC_E_INVALID_ARGUMENT);
        CHECK(id == SENTINEL_ID);
    }

    /* request params */
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.struct_size = 0;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.n = 0;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    rp.n = -2;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.max_tokens = 0;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    rp.max_tokens = -1;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.n_stop_tokens = -1;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.n_stop_strings = -1;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.stop_tokens = NULL;
    rp.n_stop_tokens = 2;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.stop_strings = NULL;
    rp.n_stop_strings = 1;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    {
        /* a NULL entry among the stop strings */
        const char *stops[2];
        stops[0] = "stop";
        stops[1] = NULL;
        CHECK_OK(bc_request_params_default(&rp, sizeof rp));
        rp.stop_strings = stops;
        rp.n_stop_strings = 2;
        CHECK_ERR(bc_engine_submit(e, prompt, 4, &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    }
    CHECK(id == SENTINEL_ID);

    /* sampling params */
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.top_p = 0.0f;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, NULL, &sp, &id), BC_E_INVALID_ARGUMENT);
    sp.top_p = 1.5f;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, NULL, &sp, &id), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.temperature = -1.0f;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, NULL, &sp, &id), BC_E_INVALID_ARGUMENT);
    sp.temperature = (float)NAN;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, NULL, &sp, &id), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.top_k = -1;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, NULL, &sp, &id), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.min_p = 2.0f;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, NULL, &sp, &id), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.struct_size = 0;
    CHECK_ERR(bc_engine_submit(e, prompt, 4, NULL, &sp, &id), BC_E_INVALID_ARGUMENT);
    CHECK(id == SENTINEL_ID);

    /* prompt + max_tokens beyond n_ctx (64): 50 + 15 */
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.max_tokens = 15;
    CHECK_ERR(bc_engine_submit(e, prompt, 50, &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    /* the default max_tokens (128) alone exceeds it */
    CHECK_ERR(bc_engine_submit(e, prompt, 1, NULL, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK(id == SENTINEL_ID);
    expect_nothing_submitted(e);

    /* submit_text: the same checks through the text entry point */
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.max_tokens = 4;
    CHECK_ERR(bc_engine_submit_text(NULL, "Hello", &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_submit_text(e, NULL, &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_submit_text(e, "Hello", &rp, NULL, NULL), BC_E_INVALID_ARGUMENT);
    if (info->add_bos == 0) CHECK_ERR(bc_engine_submit_text(e, "", &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    rp.n = 0;
    CHECK_ERR(bc_engine_submit_text(e, "Hello", &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    rp.n = 1;
    rp.max_tokens = 0;
    CHECK_ERR(bc_engine_submit_text(e, "Hello", &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    rp.max_tokens = 64; /* "Hello" is at least one token: 1 + 64 > 64 */
    CHECK_ERR(bc_engine_submit_text(e, "Hello", &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    rp.max_tokens = 4;
    rp.n_stop_strings = 3;
    CHECK_ERR(bc_engine_submit_text(e, "Hello", &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.max_tokens = 4;
    rp.struct_size = 0;
    CHECK_ERR(bc_engine_submit_text(e, "Hello", &rp, NULL, &id), BC_E_INVALID_ARGUMENT);
    rp.struct_size = (uint32_t)sizeof rp;
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.top_p = 0.0f;
    CHECK_ERR(bc_engine_submit_text(e, "Hello", &rp, &sp, &id), BC_E_INVALID_ARGUMENT);
    CHECK(id == SENTINEL_ID);
    expect_nothing_submitted(e);

    /* Valid boundary: prompt + max_tokens == n_ctx; ids are > 0 and distinct. */
    {
        uint64_t a = 0, b = 0;
        CHECK_OK(bc_request_params_default(&rp, sizeof rp));
        rp.max_tokens = 14;
        CHECK_OK(bc_engine_submit(e, prompt, 50, &rp, NULL, &a));
        rp.max_tokens = 2;
        CHECK_OK(bc_engine_submit_text(e, "Hello", &rp, NULL, &b));
        CHECK(a > 0 && b > 0 && a != b);
        /* Metrics are current without a step: two requests queued, none running. */
        bc_engine_metrics m = metrics_of(e);
        CHECK(m.submitted == 2 && m.finished == 0);
        CHECK(m.waiting == 2 && m.running == 0);
        CHECK_OK(bc_engine_cancel(e, a));
        CHECK_OK(bc_engine_cancel(e, b));
        m = metrics_of(e);
        CHECK(m.finished == 2);
        CHECK(m.waiting == 0 && m.running == 0);
    }
    bc_engine_free(e);
}

/* ---------------------------------------------------------------- cancel, step, poll, metrics */

static void test_drive(bc_model *model) {
    bc_engine *e = NULL;
    CHECK_OK(bc_engine_create(model, NULL, &e));
    if (!e) return;
    bc_event ev[4];
    size_t n_ev = 77;
    int32_t processed = -7, live = -7;
    bc_engine_metrics m;

    /* step */
    CHECK_ERR(bc_engine_step(NULL, &processed, &live), BC_E_INVALID_ARGUMENT);
    CHECK(processed == -7 && live == -7);
    CHECK_OK(bc_engine_step(e, &processed, &live)); /* idle */
    CHECK(processed == 0 && live == 0);
    CHECK_OK(bc_engine_step(e, NULL, NULL));

    /* poll */
    CHECK_ERR(bc_engine_poll(NULL, ev, 4, sizeof ev[0], &n_ev), BC_E_INVALID_ARGUMENT);
    CHECK(n_ev == 77);
    CHECK_ERR(bc_engine_poll(e, ev, 4, sizeof ev[0], NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_poll(e, NULL, 4, sizeof ev[0], &n_ev), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_poll(e, NULL, 1, sizeof ev[0], &n_ev), BC_E_INVALID_ARGUMENT);
    /* event_size: below ABI 2's sizeof(bc_event), absurd, or capacity * size overflowing. */
    CHECK_ERR(bc_engine_poll(e, ev, 4, 0, &n_ev), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_poll(e, ev, 4, BC_EVENT_MIN_SIZE - 8, &n_ev), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_poll(e, NULL, 0, BC_EVENT_MIN_SIZE - 1, &n_ev), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_poll(e, ev, 4, (size_t)1 << 20, &n_ev), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_poll(e, ev, SIZE_MAX / 64, 128, &n_ev), BC_E_INVALID_ARGUMENT);
    CHECK(n_ev == 77);
    CHECK_OK(bc_engine_poll(e, NULL, 0, sizeof(bc_event), &n_ev));
    CHECK(n_ev == 0);
    n_ev = 77;
    CHECK_OK(bc_engine_poll(e, ev, 4, sizeof ev[0], &n_ev));
    CHECK(n_ev == 0);

    /* metrics */
    CHECK_ERR(bc_engine_get_metrics(NULL, &m), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_get_metrics(e, NULL), BC_E_INVALID_ARGUMENT);
    memset(&m, 0x5a, sizeof m);
    m.struct_size = 0;
    CHECK_ERR(bc_engine_get_metrics(e, &m), BC_E_INVALID_ARGUMENT);
    m.struct_size = 2;
    CHECK_ERR(bc_engine_get_metrics(e, &m), BC_E_INVALID_ARGUMENT);
    CHECK(m.struct_size == 2 && m.steps == (int64_t)0x5a5a5a5a5a5a5a5aLL);
    {
        /* An older, shorter result struct: only struct_size bytes are written. */
        unsigned char raw[sizeof(bc_engine_metrics) + 32];
        uint32_t ss = (uint32_t)offsetof(bc_engine_metrics, finished);
        size_t i;
        int untouched = 1;
        memset(raw, 0xa5, sizeof raw);
        memcpy(raw, &ss, sizeof ss);
        CHECK_OK(bc_engine_get_metrics(e, (bc_engine_metrics *)(void *)raw));
        for (i = ss; i < sizeof raw; i++)
            if (raw[i] != 0xa5) untouched = 0;
        CHECK(untouched);
        memcpy(&ss, raw, sizeof ss);
        CHECK(ss == (uint32_t)offsetof(bc_engine_metrics, finished));
    }
    /* A fresh engine reports its KV budget (1 GiB by default) before any work. */
    m = metrics_of(e);
    CHECK(m.submitted == 0 && m.finished == 0 && m.generated_tokens == 0 && m.preemptions == 0);
    CHECK(m.kv_total_bytes == ((int64_t)1 << 30) && m.kv_used_bytes == 0);

    /* cancel */
    CHECK_ERR(bc_engine_cancel(NULL, 1), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_engine_cancel(e, 0), BC_E_NOT_FOUND);
    CHECK_ERR(bc_engine_cancel(e, 12345), BC_E_NOT_FOUND);
    {
        uint64_t id = 0;
        bc_request_params rp;
        CHECK_OK(bc_request_params_default(&rp, sizeof rp));
        rp.max_tokens = 3;
        rp.user_tag = 4242;
        CHECK_OK(bc_engine_submit_text(e, "Hello", &rp, NULL, &id));
        CHECK_ERR(bc_engine_cancel(e, id + 1), BC_E_NOT_FOUND);
        CHECK_OK(bc_engine_cancel(e, id));
        /* already finished (cancelled): no longer a live request */
        CHECK_ERR(bc_engine_cancel(e, id), BC_E_NOT_FOUND);
        n_ev = 0;
        CHECK_OK(bc_engine_poll(e, ev, 4, sizeof ev[0], &n_ev));
        CHECK(n_ev == 1);
        if (n_ev == 1) {
            CHECK(ev[0].kind == BC_EVENT_FINISHED && ev[0].request_id == id && ev[0].user_tag == 4242);
            CHECK(ev[0].finish_reason == BC_FINISH_CANCELLED && ev[0].generated_tokens == 0);
            CHECK(ev[0].text != NULL && ev[0].text_len == 0 && ev[0].text[0] == '\0');
            CHECK(ev[0].message != NULL);
            CHECK(isnan(ev[0].ttft_seconds));
        }
        CHECK_OK(bc_engine_step(e, &processed, &live));
        CHECK(processed == 0 && live == 0);
        m = metrics_of(e);
        CHECK(m.submitted == 1 && m.finished == 1 && m.generated_tokens == 0);
    }
    bc_engine_free(e);
}

/* ---------------------------------------------------------------- poll's event_size */

/* A caller built against a newer header whose bc_event has two more fields. */
typedef struct newer_event {
    bc_event ev;
    int64_t future_a;
    int32_t future_b;
    int32_t future_c;
} newer_event;

static void test_event_size(bc_model *model) {
    bc_engine *e = NULL;
    CHECK_OK(bc_engine_create(model, NULL, &e));
    if (!e) return;
    uint64_t id[2] = {0, 0};
    bc_request_params rp;
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    for (int k = 0; k < 2; k++) {
        rp.user_tag = 0x1111111111111111ULL * (uint64_t)(k + 3);
        CHECK_OK(bc_engine_submit_text(e, k ? "Hello" : "Bonjour", &rp, NULL, &id[k]));
        CHECK_OK(bc_engine_cancel(e, id[k]));
    }
    /* Two finished events are queued. A too-small size fails and consumes nothing. */
    newer_event big[3];
    size_t n = 77;
    memset(big, 0xC3, sizeof big);
    CHECK_ERR(bc_engine_poll(e, &big[0].ev, 3, BC_EVENT_MIN_SIZE - 4, &n), BC_E_INVALID_ARGUMENT);
    CHECK(n == 77);
    {
        const unsigned char *raw = (const unsigned char *)big;
        int untouched = 1;
        for (size_t i = 0; i < sizeof big; i++)
            if (raw[i] != 0xC3) untouched = 0;
        CHECK(untouched);
    }
    /* The larger stride: element k at k * sizeof(newer_event); the fields this library
     * does not know are zeroed; the element past n is untouched. */
    CHECK_OK(bc_engine_poll(e, &big[0].ev, 3, sizeof big[0], &n));
    CHECK(n == 2);
    if (n == 2) {
        for (int k = 0; k < 2; k++) {
            CHECK(big[k].ev.kind == BC_EVENT_FINISHED && big[k].ev.request_id == id[k]);
            CHECK(big[k].ev.user_tag == 0x1111111111111111ULL * (uint64_t)(k + 3));
            CHECK(big[k].ev.index == 0 && big[k].ev.token == -1);
            CHECK(big[k].ev.finish_reason == BC_FINISH_CANCELLED && big[k].ev.text_len == 0);
            CHECK(big[k].future_a == 0 && big[k].future_b == 0 && big[k].future_c == 0);
        }
        const unsigned char *raw = (const unsigned char *)&big[2];
        int untouched = 1;
        for (size_t i = 0; i < sizeof big[2]; i++)
            if (raw[i] != 0xC3) untouched = 0;
        CHECK(untouched);
    }
    /* Exactly ABI 2's size, into a plain array. */
    {
        bc_event ev[2];
        uint64_t third = 0;
        CHECK_OK(bc_engine_submit_text(e, "Hi", NULL, NULL, &third));
        CHECK_OK(bc_engine_cancel(e, third));
        n = 0;
        CHECK_OK(bc_engine_poll(e, ev, 2, BC_EVENT_MIN_SIZE, &n));
        CHECK(n == 1 && ev[0].request_id == third && ev[0].user_tag == 0);
    }
    bc_engine_free(e);
}

int main(int argc, char **argv) {
    char model_path[4096];
    int rc = model_path_from_args(argc, argv, model_path, sizeof model_path);
    if (rc) return rc;

    test_defaults();

    bc_model *model = NULL;
    CHECK_OK(bc_model_load(model_path, NULL, &model));
    if (!model) CHECK_DONE();
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = (uint32_t)sizeof info;
    CHECK_OK(bc_model_get_info(model, &info));

    test_create(model, &info);
    test_submit(model, &info);
    test_drive(model);
    test_event_size(model);

    bc_model_free(model);
    CHECK_DONE();
}
