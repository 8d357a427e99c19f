/*
 * engine_loop.c — the smallest complete driver of batchcore's continuous-batching
 * engine, built like any batchcore user program: only the installed header and
 * pkg-config (see the Makefile next to it).
 *
 *   engine_loop [MODEL.gguf [PROMPT...]]
 *
 * MODEL defaults to $BATCHCORE_MODEL (also used when MODEL is "" or "-"); without
 * prompts a few built-in chat questions are asked. Every prompt becomes one request
 * (a chat turn, greedy, at most $ENGINE_MAX_TOKENS = 48 tokens). The loop then
 * alternates bc_engine_step (one forward pass over all running requests) and
 * bc_engine_poll (the tokens that pass produced), printing each request's text as it
 * streams in, on lines prefixed "[id] " (requests decode in lockstep, so the lines
 * interleave token by token), then each request's whole text when it finishes, and a
 * summary at the end:
 *
 *   summary: N of N requests finished, T tokens in S s (X tok/s), K steps, P preemptions
 *
 * Exit status: 0 when every request finished without error, 1 otherwise.
 */
#include <batchcore.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Built-in prompts used when none are given on the command line. */
static const char *const default_prompts[] = {
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Name three primary colors.",
    "What is 2+2?",
};

/* Prints the failed call and the library's message, and returns 1 (the exit status). */
static int fail(const char *what, bc_status st) {
    fprintf(stderr, "engine_loop: %s failed: %s: %s\n", what, bc_status_string(st), bc_last_error());
    return 1;
}

static const char *reason_name(int32_t reason) {
    switch (reason) {
    case BC_FINISH_LENGTH: return "length";
    case BC_FINISH_STOP: return "stop";
    case BC_FINISH_CANCELLED: return "cancelled";
    default: return "error";
    }
}

int main(int argc, char **argv) {
    const char *model_path = argc > 1 ? argv[1] : "";
    if (model_path[0] == '\0' || strcmp(model_path, "-") == 0) model_path = getenv("BATCHCORE_MODEL");
    if (model_path == NULL || model_path[0] == '\0') {
        fprintf(stderr, "usage: engine_loop [MODEL.gguf [PROMPT...]]  (or set BATCHCORE_MODEL)\n");
        return 2;
    }
    const char *const *prompts = default_prompts;
    int n_prompts = (int)(sizeof default_prompts / sizeof default_prompts[0]);
    if (argc > 2) {
        prompts = (const char *const *)(argv + 2);
        n_prompts = argc - 2;
    }
    int32_t max_tokens = 48;
    if (getenv("ENGINE_MAX_TOKENS")) max_tokens = (int32_t)atoi(getenv("ENGINE_MAX_TOKENS"));

    /* 1. The model: immutable once loaded, shared by any number of engines/contexts. */
    bc_model *model = NULL;
    bc_status st = bc_model_load(model_path, NULL, &model);
    if (st != BC_OK) return fail("bc_model_load", st);

    /* 2. The engine: its own paged KV cache (1 GiB by default) and scheduler.
     *    Parameters always start from the library's defaults. */
    bc_engine_params ep;
    bc_engine_params_default(&ep, sizeof ep);
    ep.max_batched_tokens = 256; /* tokens per forward pass: decodes + prefill chunks */
    bc_engine *engine = NULL;
    st = bc_engine_create(model, &ep, &engine);
    if (st != BC_OK) {
        bc_model_free(model);
        return fail("bc_engine_create", st);
    }

    /* 3. Submit every prompt as a chat turn. Requests are queued; nothing runs yet. */
    bc_request_params rp;
    bc_request_params_default(&rp, sizeof rp);
    rp.max_tokens = max_tokens;
    bc_sampling_params sp;
    bc_sampling_params_default(&sp, sizeof sp);
    sp.temperature = 0.0f; /* greedy: the same text every run */
    int submitted = 0;
    for (int i = 0; i < n_prompts; i++) {
        /* Format the conversation with the model's chat template (size query, then copy). */
        const char *role = "user";
        size_t len = 0;
        st = bc_chat_format(model, &role, &prompts[i], 1, 1, NULL, 0, &len);
        if (st != BC_OK) return fail("bc_chat_format", st);
        char *text = (char *)malloc(len + 1);
        if (!text) return fail("malloc", BC_E_OUT_OF_MEMORY);
        bc_chat_format(model, &role, &prompts[i], 1, 1, text, len + 1, &len);

        uint64_t id = 0;
        rp.user_tag = (uint64_t)i; /* echoed in every event of this request */
        st = bc_engine_submit_text(engine, text, &rp, &sp, &id);
        free(text);
        if (st != BC_OK) {
            fprintf(stderr, "engine_loop: prompt %d not submitted: %s\n", i, bc_last_error());
            continue;
        }
        printf("[%llu] submitted: %s\n", (unsigned long long)id, prompts[i]);
        submitted++;
    }

    /* 4. The loop: one step = one forward pass for every running request (prefill
     *    chunks of new prompts ride along with the decodes). Events are copied out
     *    with bc_engine_poll, which takes sizeof(bc_event) so a newer library can append
     *    fields without breaking this program; their strings stay valid until the next
     *    poll or step. */
    int finished = 0, errors = 0;
    long tokens = 0;
    uint64_t last_id = 0; /* the request whose line is open on stdout */
    bc_event events[32];
    int32_t live = 1;
    while (live > 0) {
        st = bc_engine_step(engine, NULL, &live);
        if (st != BC_OK) {
            fail("bc_engine_step", st);
            errors++;
            break;
        }
        size_t n = 0;
        do {
            bc_engine_poll(engine, events, sizeof events / sizeof events[0], sizeof events[0], &n);
            for (size_t k = 0; k < n; k++) {
                const bc_event *ev = &events[k];
                if (ev->kind == BC_EVENT_TOKEN) {
                    /* Start a new "[id] " line whenever the stream switches requests. */
                    if (ev->request_id != last_id) {
                        printf("%s[%llu] ", last_id ? "\n" : "", (unsigned long long)ev->request_id);
                        last_id = ev->request_id;
                    }
                    /* Newlines inside the text would break the prefixing: show them as spaces. */
                    for (size_t c = 0; c < ev->text_len; c++) putchar(ev->text[c] == '\n' ? ' ' : ev->text[c]);
                    tokens++;
                } else { /* BC_EVENT_FINISHED: the sample's whole text and its metrics */
                    if (last_id) putchar('\n');
                    last_id = 0;
                    printf("[%llu] finished: %s, %d prompt + %d generated tokens, first token after %.3f s, "
                           "total %.3f s%s%s\n",
                           (unsigned long long)ev->request_id, reason_name(ev->finish_reason), ev->prompt_tokens,
                           ev->generated_tokens, ev->ttft_seconds, ev->total_seconds,
                           ev->finish_reason == BC_FINISH_ERROR ? ": " : "", ev->message);
                    printf("[%llu] text: ", (unsigned long long)ev->request_id);
                    for (size_t c = 0; c < ev->text_len; c++) putchar(ev->text[c] == '\n' ? ' ' : ev->text[c]);
                    putchar('\n');
                    finished++;
                    if (ev->finish_reason == BC_FINISH_ERROR) errors++;
                }
            }
            fflush(stdout);
        } while (n > 0);
    }

    /* 5. Engine-wide metrics, then release everything (free accepts NULL). */
    bc_engine_metrics m;
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof m;
    bc_engine_get_metrics(engine, &m);
    printf("summary: %d of %d requests finished, %ld tokens in %.2f s (%.1f tok/s), %lld steps, %lld preemptions\n",
           finished, submitted, tokens, m.busy_seconds, m.tokens_per_second, (long long)m.steps,
           (long long)m.preemptions);
    bc_engine_free(engine);
    bc_model_free(model);
    return (errors == 0 && finished == submitted && submitted == n_prompts) ? 0 : 1;
}
