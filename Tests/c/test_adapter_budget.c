/* The engine's adapter budget (bc_engine_params.adapter_bytes) through the C ABI, on the
 * tiny fixture model (argv[1]/train/tiny_tied): three PEFT adapters written by a LoRA
 * trainer (random non-zero B); an engine whose budget holds ONE adapter and runs one
 * sequence at a time evicts and reloads adapters, never holds more than the budget, and
 * gives every request the tokens of an engine without a budget; an adapter loaded while
 * the engine runs and handles freed while their requests run; a reload that fails (the
 * directory deleted) finishes that request with BC_FINISH_ERROR and the engine goes on;
 * the new fields' defaults, a negative budget and an adapter larger than the budget. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "adapter_helpers.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_NEW 6
#define NREQ 6

typedef struct {
    int32_t tokens[NREQ + 4][MAX_NEW];
    int n[NREQ + 4];
    int32_t reason[NREQ + 4];
} outputs_t;

static bc_engine *engine(bc_model *model, int64_t adapter_bytes, int32_t max_seqs) {
    bc_engine_params ep;
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.kv_bytes = 16 << 20;
    ep.n_ctx = 128;
    ep.max_seqs = max_seqs;
    ep.adapter_bytes = adapter_bytes;
    bc_engine *e = NULL;
    CHECK_OK(bc_engine_create(model, &ep, &e));
    return e;
}

static bc_status submit(bc_engine *e, const int32_t *prompt, const bc_adapter *a, uint64_t tag) {
    bc_sampling_params sp;
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.temperature = 0;
    bc_request_params rp;
    CHECK_OK(bc_request_params_default(&rp, sizeof rp));
    rp.max_tokens = MAX_NEW;
    rp.ignore_eos = 1;
    rp.adapter = a;
    rp.user_tag = tag;
    uint64_t id = 0;
    return bc_engine_submit(e, prompt, 5, &rp, &sp, &id);
}

static bc_engine_metrics metrics(bc_engine *e) {
    bc_engine_metrics m;
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof m;
    CHECK_OK(bc_engine_get_metrics(e, &m));
    return m;
}

/* One step; records token and finish events by user_tag. */
static int32_t step(bc_engine *e, outputs_t *out) {
    int32_t live = 0;
    CHECK_OK(bc_engine_step(e, NULL, &live));
    bc_event ev[32];
    size_t got = 0;
    CHECK_OK(bc_engine_poll(e, ev, 32, sizeof ev[0], &got));
    for (size_t j = 0; j < got; j++) {
        int i = (int)ev[j].user_tag;
        if (ev[j].kind == BC_EVENT_TOKEN && ev[j].token >= 0 && out->n[i] < MAX_NEW) out->tokens[i][out->n[i]++] = ev[j].token;
        if (ev[j].kind == BC_EVENT_FINISHED) {
            out->reason[i] = ev[j].finish_reason;
            if (ev[j].finish_reason == BC_FINISH_ERROR) CHECK(ev[j].message && strstr(ev[j].message, "adapter"));
        }
    }
    return live;
}

int main(int argc, char **argv) {
    if (argc < 2) return 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/train/tiny_tied", argv[1]);
    bc_model *model = NULL;
    CHECK_OK(bc_model_load(path, NULL, &model));
    if (!model) CHECK_DONE();
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK_OK(bc_model_get_info(model, &info));
    char dirs[3][200];
    for (int k = 0; k < 3; k++) {
        snprintf(dirs[k], sizeof dirs[k], "/tmp/bc-adapter-budget-%d-%d", (int)getpid(), k);
        write_random_adapter(model, dirs[k], 31 + (uint64_t)k, 32.0f, BC_LORA_ALL, 2.0f);
    }
    bc_adapter *a[3] = {NULL, NULL, NULL};
    for (int k = 0; k < 3; k++) CHECK_OK(bc_adapter_load(model, dirs[k], &a[k]));

    /* Defaults and bad arguments. */
    bc_engine_params ep;
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    CHECK(ep.adapter_bytes == 0);
    ep.adapter_bytes = -1;
    bc_engine *bad = NULL;
    CHECK_ERR(bc_engine_create(model, &ep, &bad), BC_E_INVALID_ARGUMENT);
    CHECK(bad == NULL);

    int32_t prompts[NREQ][5];
    for (int i = 0; i < NREQ; i++)
        for (int j = 0; j < 5; j++) prompts[i][j] = (int32_t)(1 + (7 * i + 3 * j) % (info.n_vocab - 1 < 60 ? info.n_vocab - 1 : 60));

    /* Reference: no budget, all requests together. One adapter's bytes from the metrics. */
    static outputs_t ref, got;
    memset(&ref, 0, sizeof ref);
    memset(&got, 0, sizeof got);
    bc_engine *e = engine(model, 0, 64);
    if (!e) CHECK_DONE();
    for (int i = 0; i < NREQ; i++) CHECK_OK(submit(e, prompts[i], i == 0 ? a[0] : a[i % 3], (uint64_t)i));
    CHECK_OK(submit(e, prompts[0], NULL, NREQ));
    for (int s = 0; s < 1000 && step(e, &ref) > 0; s++) {}
    bc_engine_metrics m = metrics(e);
    int64_t bytes = m.adapter_resident_bytes / 3;
    CHECK(bytes > 0 && m.adapter_resident_bytes == 3 * bytes);
    CHECK(m.adapter_loads == 0 && m.adapter_evictions == 0);
    for (int i = 0; i <= NREQ; i++) CHECK(ref.n[i] == MAX_NEW && ref.reason[i] == BC_FINISH_LENGTH);
    CHECK(memcmp(ref.tokens[0], ref.tokens[NREQ], sizeof ref.tokens[0]) != 0); /* the adapter matters */
    bc_engine_free(e);

    /* Too large alone: refused at submit. */
    e = engine(model, bytes - 1, 64);
    CHECK_ERR(submit(e, prompts[0], a[0], 0), BC_E_INVALID_ARGUMENT);
    CHECK(metrics(e).submitted == 0);
    CHECK_OK(submit(e, prompts[0], NULL, 0));
    bc_engine_free(e);

    /* A budget of one adapter, one sequence at a time: every switch evicts and reloads. */
    e = engine(model, bytes, 1);
    for (int i = 0; i < NREQ; i++) CHECK_OK(submit(e, prompts[i], a[i % 3], (uint64_t)i));
    /* The caller's handle of adapter 1 goes while its requests wait (they hold references). */
    bc_adapter_free(a[1]);
    a[1] = NULL;
    bc_adapter *hot = NULL;
    for (int s = 0; s < 2000; s++) {
        int32_t live = step(e, &got);
        bc_engine_metrics mm = metrics(e);
        CHECK(mm.adapter_resident_bytes <= bytes);
        if (s == 3) {
            /* Hot load while the engine runs: a new handle on adapter 0's files. */
            CHECK_OK(bc_adapter_load(model, dirs[0], &hot));
            CHECK_OK(submit(e, prompts[0], hot, NREQ));
            live++;
        }
        if (live == 0) break;
    }
    for (int i = 0; i <= NREQ; i++) {
        CHECK(got.n[i] == MAX_NEW && got.reason[i] == BC_FINISH_LENGTH);
        CHECK(memcmp(got.tokens[i], ref.tokens[i == NREQ ? 0 : i], sizeof got.tokens[0]) == 0);
    }
    m = metrics(e);
    CHECK(m.adapter_loads >= 4 && m.adapter_evictions >= 4);
    CHECK(m.adapter_resident_bytes == bytes);

    /* Reload failure: adapter 2 is evicted (the last request used `hot` or adapter 2;
     * one more on adapter 0 makes sure), then its directory is deleted. */
    memset(&got, 0, sizeof got);
    CHECK_OK(submit(e, prompts[0], a[0], 0));
    for (int s = 0; s < 1000 && step(e, &got) > 0; s++) {}
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dirs[2]);
    if (system(cmd) != 0) CHECK(0);
    memset(&got, 0, sizeof got);
    CHECK_OK(submit(e, prompts[2], a[2], 2));
    CHECK_OK(submit(e, prompts[3], a[0], 3));
    for (int s = 0; s < 1000 && step(e, &got) > 0; s++) {}
    CHECK(got.reason[2] == BC_FINISH_ERROR && got.n[2] == 0);
    CHECK(got.reason[3] == BC_FINISH_LENGTH && memcmp(got.tokens[3], ref.tokens[3], sizeof got.tokens[0]) == 0);
    CHECK(metrics(e).finished == NREQ + 4);
    bc_engine_free(e);

    for (int k = 0; k < 3; k++) bc_adapter_free(a[k]);
    bc_adapter_free(hot);
    for (int k = 0; k < 3; k++) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dirs[k]);
        if (system(cmd) != 0) CHECK(0);
    }
    bc_model_free(model);
    CHECK_DONE();
}
