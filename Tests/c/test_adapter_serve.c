/* Serving LoRA adapters through the C ABI on the default model: two PEFT adapters
 * written by a LoRA trainer (B filled with random non-zero values), loaded with
 * bc_adapter_load; an engine mixing requests of both adapters and of none gives each
 * request the tokens it gets alone, the adapters change the output, the adapters may be
 * freed while their requests run; bc_context_set_adapter; the argument and file errors. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "adapter_helpers.h"
#include "model_path.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_NEW 8
#define NREQ 6

typedef struct {
    int32_t tokens[NREQ][MAX_NEW];
    int n[NREQ];
} outputs_t;

/* Runs the requests `which` (indices into the prompts/adapters) in one engine. */
static void run(bc_model *model, const int32_t prompts[NREQ][5], bc_adapter *const *adapters, const int *which, int count,
                outputs_t *out, int free_after_submit) {
    bc_engine_params ep;
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.kv_bytes = 64 << 20;
    ep.n_ctx = 256;
    bc_engine *e = NULL;
    CHECK_OK(bc_engine_create(model, &ep, &e));
    if (!e) return;
    bc_sampling_params sp;
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.temperature = 0;
    uint64_t ids[NREQ];
    for (int k = 0; k < count; k++) {
        int i = which[k];
        bc_request_params rp;
        CHECK_OK(bc_request_params_default(&rp, sizeof rp));
        CHECK(rp.adapter == NULL && rp.adapter_scale == 1.0f && rp.reserved3 == 0);
        rp.max_tokens = MAX_NEW;
        rp.ignore_eos = 1;
        rp.adapter = adapters[i];
        rp.user_tag = (uint64_t)i;
        CHECK_OK(bc_engine_submit(e, prompts[i], 5, &rp, &sp, &ids[k]));
    }
    if (free_after_submit) {
        /* The requests hold their own references. */
        for (int k = 0; k < count; k++) {
            bc_adapter *a = adapters[which[k]];
            for (int j = 0; j < k; j++) if (adapters[which[j]] == a) a = NULL;
            bc_adapter_free(a);
        }
    }
    int32_t live = 1;
    for (int steps = 0; live > 0 && steps < 1000; steps++) {
        CHECK_OK(bc_engine_step(e, NULL, &live));
        bc_event ev[32];
        size_t got = 0;
        CHECK_OK(bc_engine_poll(e, ev, 32, sizeof ev[0], &got));
        for (size_t j = 0; j < got; j++) {
            int i = (int)ev[j].user_tag;
            if (ev[j].kind == BC_EVENT_TOKEN && ev[j].token >= 0 && out->n[i] < MAX_NEW) out->tokens[i][out->n[i]++] = ev[j].token;
        }
    }
    bc_engine_free(e);
}

int main(int argc, char **argv) {
    char path[4096];
    if (argc < 2 || !read_model_path(argv[1], path, sizeof path)) return 1;
    bc_model *model = NULL;
    CHECK_OK(bc_model_load(path, NULL, &model));
    if (!model) CHECK_DONE();
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/bc-adapter-serve-%d", (int)getpid());
    char d1[300], d2[300];
    snprintf(d1, sizeof d1, "%s-a", dir);
    snprintf(d2, sizeof d2, "%s-b", dir);
    /* rank 4 on q, v (default targets); B amplitude 0.2: at 0.1 the adapters no longer changed
     * the 8 greedy tokens of prompts 0 and 1 once the native kernels took ggml's f16 activation
     * scales (issue #15), so the "an adapter changes the output" check below had no signal. */
    write_random_adapter(model, d1, 11, 8.0f, 0, 0.2f);
    write_random_adapter(model, d2, 12, 8.0f, 0, 0.2f);

    bc_adapter *a1 = NULL, *a2 = NULL, *bad = NULL;
    CHECK_OK(bc_adapter_load(model, d1, &a1));
    CHECK_OK(bc_adapter_load(model, d2, &a2));
    CHECK_ERR(bc_adapter_load(NULL, d1, &bad), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_adapter_load(model, NULL, &bad), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_adapter_load(model, d1, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_adapter_load(model, "/nonexistent/bc-adapter", &bad), BC_E_NOT_FOUND);
    CHECK(bad == NULL);
    bc_adapter_free(NULL);

    /* Six requests: adapters 1, 2 and none, twice each (same prompts across adapters). */
    int32_t prompts[NREQ][5];
    for (int i = 0; i < NREQ; i++)
        for (int j = 0; j < 5; j++) prompts[i][j] = (int32_t)(300 + 37 * (i % 3) + 11 * j);
    bc_adapter *adapters[NREQ] = {a1, a2, NULL, a1, a2, NULL};
    static outputs_t alone, mixed;
    memset(&alone, 0, sizeof alone);
    memset(&mixed, 0, sizeof mixed);
    for (int i = 0; i < NREQ; i++) run(model, (const int32_t(*)[5])prompts, adapters, &i, 1, &alone, 0);
    int all[NREQ] = {0, 1, 2, 3, 4, 5};
    /* The engine keeps the adapters alive after the caller's references are gone. */
    run(model, (const int32_t(*)[5])prompts, adapters, all, NREQ, &mixed, 1);
    for (int i = 0; i < NREQ; i++) {
        CHECK(alone.n[i] == MAX_NEW && mixed.n[i] == MAX_NEW);
        CHECK(memcmp(alone.tokens[i], mixed.tokens[i], sizeof alone.tokens[i]) == 0);
    }
    /* Same prompt (i % 3 == 0 ... ) under adapter 1 (0), adapter 2 (1) or none (2): prompts
     * differ by i % 3, so compare request 0 (a1) with a base run of the same prompt. */
    {
        bc_adapter *none[NREQ] = {NULL, NULL, NULL, NULL, NULL, NULL};
        static outputs_t base;
        memset(&base, 0, sizeof base);
        int two[2] = {0, 1};
        run(model, (const int32_t(*)[5])prompts, none, two, 2, &base, 0);
        CHECK(memcmp(base.tokens[0], alone.tokens[0], sizeof base.tokens[0]) != 0 ||
              memcmp(base.tokens[1], alone.tokens[1], sizeof base.tokens[1]) != 0);
    }

    /* Contexts: per sequence. */
    CHECK_OK(bc_adapter_load(model, d1, &a1));
    bc_context_params cp;
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    cp.kv_bytes = 16 << 20;
    cp.n_ctx = 256;
    bc_context *ctx = NULL;
    CHECK_OK(bc_context_create(model, &cp, &ctx));
    CHECK_ERR(bc_context_set_adapter(NULL, 0, a1, 1), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_set_adapter(ctx, -1, a1, 1), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_set_adapter(ctx, 0, a1, 0.0f / 0.0f), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_context_set_adapter(ctx, 0, a1, 1));
    bc_adapter_free(a1); /* the context holds it */
    int32_t pos[5] = {0, 1, 2, 3, 4}, seq[5] = {0, 0, 0, 0, 0};
    bc_batch b;
    CHECK_OK(bc_batch_default(&b, sizeof b));
    b.n_tokens = 5;
    b.tokens = prompts[0];
    b.pos = pos;
    b.seq_id = seq;
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK_OK(bc_model_get_info(model, &info));
    float *logits = (float *)malloc(sizeof(float) * (size_t)info.n_vocab);
    CHECK_OK(bc_decode(ctx, &b, logits, (size_t)info.n_vocab));
    /* The greedy token under adapter 1 is request 0's first token. */
    int32_t best = 0;
    for (int32_t v = 1; v < info.n_vocab; v++) if (logits[v] > logits[best]) best = v;
    CHECK(best == alone.tokens[0][0]);
    CHECK_ERR(bc_context_set_adapter(ctx, 0, NULL, 1), BC_E_BAD_STATE);
    CHECK_OK(bc_context_seq_remove(ctx, 0));
    CHECK_OK(bc_context_set_adapter(ctx, 0, NULL, 1));
    free(logits);
    bc_context_free(ctx);

    /* A hostile adapter_config.json. */
    char cfg[400];
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", d2);
    FILE *f = fopen(cfg, "wb");
    CHECK(f != NULL);
    if (f) {
        fputs("{\"peft_type\": \"LORA\", \"r\": 4096, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"]}", f);
        fclose(f);
    }
    CHECK_ERR(bc_adapter_load(model, d2, &bad), BC_E_FORMAT);
    CHECK(bad == NULL);

    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", d1, d2);
    if (system(cmd) != 0) CHECK(0);
    bc_model_free(model);
    CHECK_DONE();
}
