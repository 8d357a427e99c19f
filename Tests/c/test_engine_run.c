/* Continuous-batching engine with the real model: 12 varied greedy requests (parallel
 * samples, stop strings, priority, ignore_eos, token and text submission) stepped to
 * completion. Every sample gets exactly one FINISHED event whose text is the
 * concatenation of its TOKEN texts and whose generated_tokens counts them; greedy
 * tokens equal bc_generate's for the same prompt alone on a fresh context; a request
 * cancelled mid-way finishes as cancelled and reports nothing afterwards; metrics
 * add up. Then the same requests in a KV budget of about four sequences: requests are
 * preempted and recomputed, none is lost, and the outputs do not change.
 * Needs the default model: its path is read from <fixtures>/../../build/stage/model-path
 * (written by `make test-c`); a missing model is a failure, not a skip. */
#include "check.h"
#include "model_path.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#define N_REQ 12
#define MAX_TOKENS 16
#define MAX_SAMPLES 2
#define TEXT_CAP 2048
#define CANCEL_SLOT 7        /* cancelled in the first run once it has CANCEL_AFTER tokens */
#define CANCEL_AFTER 3
#define PRIORITY_SLOT 11     /* the only request with a priority; submitted last */

/* ---------------------------------------------------------------- helpers */


/* Appends n bytes to a NUL-terminated buffer of TEXT_CAP bytes holding *len bytes. */
static void append_text(char *buf, size_t *len, const char *s, size_t n) {
    if (*len + n + 1 > TEXT_CAP) {
        CHECK(!"text buffer overflow");
        return;
    }
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = '\0';
}

/* ---------------------------------------------------------------- the requests */

enum { STOP_NONE = 0, STOP_MID = 1, STOP_TAIL = 2 };

typedef struct spec_t {
    const char *user;    /* a chat message (formatted as one user turn), or NULL */
    const char *plain;   /* the prompt as is, when user is NULL */
    int32_t n;           /* parallel samples */
    int32_t priority;
    int32_t ignore_eos;
    int32_t stop_kind;   /* STOP_MID: a stop string from the middle of the reference output;
                            STOP_TAIL: one that starts with the output's last two bytes and
                            never completes (held back, then released at the end) */
} spec_t;

static const spec_t specs[N_REQ] = {
    {"Hi", NULL, 1, 0, 0, STOP_NONE},
    {"What is 2+2? Answer with just the number.", NULL, 1, 0, 0, STOP_NONE},
    {NULL, "The capital of France is", 2, 0, 0, STOP_NONE},
    {"Name three colors.", NULL, 1, 0, 0, STOP_MID},
    {NULL, "Once upon a time", 1, 0, 1, STOP_NONE},
    {"Reply with yes or no: is the sky blue?", NULL, 2, 0, 0, STOP_NONE},
    {NULL, "def fibonacci(n):", 1, 0, 0, STOP_NONE},
    {"Write a haiku about the sea.", NULL, 1, 0, 1, STOP_NONE},
    {NULL, "1, 2, 3, 4,", 1, 0, 1, STOP_NONE},
    {"Tell me a joke.", NULL, 1, 0, 1, STOP_TAIL},
    {NULL, "The quick brown fox", 1, 0, 0, STOP_NONE},
    {"What is the largest planet?", NULL, 1, 5, 0, STOP_NONE},
};

static void prompt_of(int slot, char *buf, size_t cap) {
    if (specs[slot].user)
        snprintf(buf, cap, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", specs[slot].user);
    else
        snprintf(buf, cap, "%s", specs[slot].plain);
}

/* ---------------------------------------------------------------- reference: bc_generate */

typedef struct ref_t {
    int32_t tokens[MAX_TOKENS + 1];
    size_t ends[MAX_TOKENS + 1]; /* text length after token i */
    int n;
    char text[TEXT_CAP];
    size_t len;
    int32_t stop_reason;
    /* the stop string of this request, and what it should produce */
    char stop[16];
    int expect_n;
    size_t expect_len;
} ref_t;

static int32_t collect(int32_t token, const char *piece, size_t piece_len, void *user_data) {
    ref_t *r = (ref_t *)user_data;
    append_text(r->text, &r->len, piece, piece_len);
    if (token >= 0) {
        if (r->n < MAX_TOKENS + 1) {
            r->tokens[r->n] = token;
            r->ends[r->n] = r->len;
            r->n++;
        } else {
            CHECK(!"more tokens than max_tokens");
        }
    }
    return 0;
}

static void reference(bc_model *model, int slot, ref_t *r) {
    char prompt[512];
    bc_context *ctx = NULL;
    bc_generate_params gp;
    bc_sampling_params sp;
    bc_generate_result res;
    prompt_of(slot, prompt, sizeof prompt);
    memset(r, 0, sizeof *r);
    CHECK_OK(bc_context_create(model, NULL, &ctx));
    if (!ctx) return;
    CHECK_OK(bc_generate_params_default(&gp, sizeof gp));
    gp.max_tokens = MAX_TOKENS;
    gp.stop_at_eog = specs[slot].ignore_eos ? 0 : 1;
    gp.callback = collect;
    gp.user_data = r;
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.temperature = 0.0f;
    memset(&res, 0, sizeof res);
    res.struct_size = (uint32_t)sizeof res;
    CHECK_OK(bc_generate(ctx, prompt, &gp, &sp, &res));
    r->stop_reason = res.stop_reason;
    bc_context_free(ctx);
    CHECK(r->n > 0);
    r->expect_n = r->n;
    r->expect_len = r->len;

    if (specs[slot].stop_kind == STOP_MID) {
        /* Three ASCII bytes from the middle of the output; the engine stops at their first
         * occurrence, after the token that completes it, and reports the text before it. */
        size_t at = r->len / 2, k;
        CHECK(r->len >= 6);
        if (r->len < 6) return;
        memcpy(r->stop, r->text + at, 3);
        r->stop[3] = '\0';
        for (k = 0; k < 3; k++) CHECK((unsigned char)r->stop[k] < 0x80);
        const char *first = strstr(r->text, r->stop);
        CHECK(first != NULL);
        if (!first) return;
        r->expect_len = (size_t)(first - r->text);
        r->expect_n = 0;
        while (r->expect_n < r->n && r->ends[r->expect_n] < r->expect_len + 3) r->expect_n++;
        r->expect_n++; /* the token completing the stop string is reported (with the text before it) */
        CHECK(r->expect_n <= r->n);
    } else if (specs[slot].stop_kind == STOP_TAIL) {
        /* The output's last two bytes plus a suffix the model does not produce: the engine
         * holds those two bytes back at the end (they could start the stop string) and
         * must still deliver them, since the stop string never completes. */
        CHECK(r->len >= 2);
        if (r->len < 2) return;
        r->stop[0] = r->text[r->len - 2];
        r->stop[1] = r->text[r->len - 1];
        memcpy(r->stop + 2, "@#~", 4);
        CHECK(strstr(r->text, r->stop) == NULL);
    }
}

/* ---------------------------------------------------------------- engine runs */

typedef struct sample_t {
    int32_t tokens[MAX_TOKENS + 4];
    int n_tok;
    char text[TEXT_CAP];      /* concatenated TOKEN texts */
    size_t len;
    int finished;             /* FINISHED events seen */
    char fin_text[TEXT_CAP];
    size_t fin_len;
    int32_t reason, generated, prompt_tokens, cached_prompt_tokens;
    double ttft, total;
    int after_finish;         /* events after its FINISHED */
} sample_t;

typedef struct req_t {
    uint64_t id;
    int32_t prompt_tokens;    /* bc_tokenize's count */
    long first_event;         /* global index of its first event; -1 = none */
    int cancelled;
    sample_t s[MAX_SAMPLES];
} req_t;

typedef struct run_t {
    req_t r[N_REQ];
    long n_events;
    long token_events;
    long stray_events;        /* unknown request id, bad index or kind */
    int steps;
    bc_engine_metrics m;
} run_t;

static void on_event(run_t *run, const bc_event *ev) {
    int slot = -1, k;
    long at = run->n_events++;
    for (k = 0; k < N_REQ; k++)
        if (run->r[k].id == ev->request_id) slot = k;
    if (slot < 0 || ev->index < 0 || ev->index >= specs[slot].n || ev->text == NULL ||
        (ev->kind != BC_EVENT_TOKEN && ev->kind != BC_EVENT_FINISHED)) {
        run->stray_events++;
        return;
    }
    req_t *r = &run->r[slot];
    sample_t *s = &r->s[ev->index];
    if (r->first_event < 0) r->first_event = at;
    CHECK(ev->user_tag == (uint64_t)(1000 + slot));
    CHECK(strlen(ev->text) == ev->text_len);
    if (s->finished) s->after_finish++;
    if (ev->kind == BC_EVENT_TOKEN && ev->token == -1) {
        /* Text flushed at the end (held back for a possible stop string, or an
         * incomplete UTF-8 tail): part of the stream, not a token. */
        append_text(s->text, &s->len, ev->text, ev->text_len);
    } else if (ev->kind == BC_EVENT_TOKEN) {
        run->token_events++;
        if (s->n_tok < MAX_TOKENS + 4) s->tokens[s->n_tok] = ev->token;
        s->n_tok++;
        append_text(s->text, &s->len, ev->text, ev->text_len);
        CHECK(ev->logprob <= 0.0f && isfinite(ev->logprob));
    } else {
        s->finished++;
        s->fin_len = 0;
        s->fin_text[0] = '\0';
        append_text(s->fin_text, &s->fin_len, ev->text, ev->text_len);
        s->reason = ev->finish_reason;
        s->generated = ev->generated_tokens;
        s->prompt_tokens = ev->prompt_tokens;
        s->cached_prompt_tokens = ev->cached_prompt_tokens;
        s->ttft = ev->ttft_seconds;
        s->total = ev->total_seconds;
        CHECK(ev->message != NULL);
        if (ev->finish_reason == BC_FINISH_ERROR)
            fprintf(stderr, "request %d sample %d finished with an error: %s\n", slot, ev->index,
                    ev->message ? ev->message : "(null)");
    }
}

/* Polls every pending event, a few at a time (leftovers stay queued). */
static void drain(bc_engine *e, run_t *run) {
    bc_event ev[5];
    size_t n = 0, i;
    do {
        n = 99;
        CHECK_OK(bc_engine_poll(e, ev, sizeof ev / sizeof ev[0], sizeof ev[0], &n));
        if (n > sizeof ev / sizeof ev[0]) break;
        for (i = 0; i < n; i++) on_event(run, &ev[i]);
    } while (n > 0);
}

static void run_engine(bc_model *model, int64_t kv_bytes, int32_t max_batched_tokens, int cancel_slot, ref_t *refs,
                       run_t *run) {
    bc_engine_params ep;
    bc_engine *e = NULL;
    int slot;
    memset(run, 0, sizeof *run);
    for (slot = 0; slot < N_REQ; slot++) run->r[slot].first_event = -1;
    CHECK_OK(bc_engine_params_default(&ep, sizeof ep));
    ep.policy = 1; /* priority */
    ep.kv_bytes = kv_bytes;
    if (max_batched_tokens > 0) ep.max_batched_tokens = max_batched_tokens;
    CHECK_OK(bc_engine_create(model, &ep, &e));
    if (!e) return;

    for (slot = 0; slot < N_REQ; slot++) {
        char prompt[512];
        int32_t toks[256];
        size_t n_toks = 0;
        const char *stops[1];
        bc_request_params rp;
        bc_sampling_params sp;
        prompt_of(slot, prompt, sizeof prompt);
        CHECK_OK(bc_tokenize(model, prompt, strlen(prompt), 1, 1, toks, sizeof toks / sizeof toks[0], &n_toks));
        run->r[slot].prompt_tokens = (int32_t)n_toks;
        CHECK_OK(bc_request_params_default(&rp, sizeof rp));
        rp.max_tokens = MAX_TOKENS;
        rp.n = specs[slot].n;
        rp.priority = specs[slot].priority;
        rp.ignore_eos = specs[slot].ignore_eos;
        rp.user_tag = (uint64_t)(1000 + slot);
        if (specs[slot].stop_kind != STOP_NONE) {
            stops[0] = refs[slot].stop;
            rp.stop_strings = stops;
            rp.n_stop_strings = 1;
        }
        CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
        sp.temperature = 0.0f;
        /* Odd slots go in as token ids, even ones as text (tokenized the same way). */
        if (slot % 2)
            CHECK_OK(bc_engine_submit(e, toks, (int32_t)n_toks, &rp, &sp, &run->r[slot].id));
        else
            CHECK_OK(bc_engine_submit_text(e, prompt, &rp, &sp, &run->r[slot].id));
        CHECK(run->r[slot].id > 0);
    }

    for (;;) {
        int32_t processed = -1, live = -1;
        CHECK_OK(bc_engine_step(e, &processed, &live));
        run->steps++;
        drain(e, run);
        if (cancel_slot >= 0 && !run->r[cancel_slot].cancelled && run->r[cancel_slot].s[0].n_tok >= CANCEL_AFTER &&
            !run->r[cancel_slot].s[0].finished) {
            CHECK_OK(bc_engine_cancel(e, run->r[cancel_slot].id));
            run->r[cancel_slot].cancelled = 1;
            drain(e, run);
            CHECK(run->r[cancel_slot].s[0].finished == 1);
            /* It is gone: cancelling it again is an error. */
            {
                bc_status st = bc_engine_cancel(e, run->r[cancel_slot].id);
                CHECK(st == BC_E_INVALID_ARGUMENT || st == BC_E_NOT_FOUND);
            }
        }
        if (live == 0) break;
        CHECK(processed > 0);
        if (run->steps > 2000) {
            CHECK(!"the engine does not finish");
            break;
        }
    }
    drain(e, run);
    {
        /* Idle now: nothing processed, nothing live, nothing to poll. */
        int32_t processed = -1, live = -1;
        size_t n = 99;
        bc_event ev;
        CHECK_OK(bc_engine_step(e, &processed, &live));
        CHECK(processed == 0 && live == 0);
        CHECK_OK(bc_engine_poll(e, &ev, 1, sizeof ev, &n));
        CHECK(n == 0);
    }
    memset(&run->m, 0, sizeof run->m);
    run->m.struct_size = (uint32_t)sizeof run->m;
    CHECK_OK(bc_engine_get_metrics(e, &run->m));
    bc_engine_free(e);
}

static int same_tokens(const int32_t *a, const int32_t *b, int n) {
    int i;
    for (i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* Checks one run against the references; returns the number of failed checks. */
static int check_run(const char *name, const run_t *run, const ref_t *refs, int cancel_slot) {
    int before = check_failures, slot, k;
    long finished_generated = 0;
    CHECK(run->stray_events == 0);
    for (slot = 0; slot < N_REQ; slot++) {
        const req_t *r = &run->r[slot];
        const ref_t *ref = &refs[slot];
        for (k = 0; k < specs[slot].n; k++) {
            const sample_t *s = &r->s[k];
            int f0 = check_failures;
            finished_generated += s->generated;
            CHECK(s->finished == 1);
            CHECK(s->after_finish == 0);
            CHECK(s->n_tok <= MAX_TOKENS);
            /* the streamed text is the final text */
            CHECK(s->len == s->fin_len && strcmp(s->text, s->fin_text) == 0);
            CHECK(s->generated == s->n_tok);
            CHECK(s->prompt_tokens == r->prompt_tokens);
            CHECK(s->cached_prompt_tokens >= 0 && s->cached_prompt_tokens <= s->prompt_tokens);
            if (s->n_tok > 0) CHECK(s->ttft >= 0.0 && s->total >= s->ttft);
            CHECK(s->reason != BC_FINISH_ERROR);
            if (slot == cancel_slot) {
                CHECK(s->reason == BC_FINISH_CANCELLED);
                CHECK(s->n_tok >= CANCEL_AFTER && s->n_tok <= ref->n);
                CHECK(same_tokens(s->tokens, ref->tokens, s->n_tok < ref->n ? s->n_tok : ref->n));
                CHECK(s->len <= ref->len && memcmp(s->text, ref->text, s->len) == 0);
            } else if (specs[slot].stop_kind == STOP_MID) {
                CHECK(s->reason == BC_FINISH_STOP);
                CHECK(s->n_tok == ref->expect_n);
                CHECK(same_tokens(s->tokens, ref->tokens, s->n_tok < ref->n ? s->n_tok : ref->n));
                CHECK(s->fin_len == ref->expect_len && memcmp(s->fin_text, ref->text, ref->expect_len) == 0);
                CHECK(strstr(s->fin_text, ref->stop) == NULL);
            } else {
                /* bc_generate: stop_reason 0 = max_tokens, 1 = end of generation */
                CHECK(s->reason == (ref->stop_reason == 1 ? BC_FINISH_STOP : BC_FINISH_LENGTH));
                CHECK(s->n_tok == ref->n);
                CHECK(same_tokens(s->tokens, ref->tokens, s->n_tok < ref->n ? s->n_tok : ref->n));
                CHECK(s->fin_len == ref->len && strcmp(s->fin_text, ref->text) == 0);
            }
            if (check_failures != f0) {
                fprintf(stderr,
                        "  %s: request %d sample %d: %d token events, generated_tokens %d, reason %d, "
                        "finished %d, after_finish %d\n"
                        "    streamed '%s'\n    finished '%s'\n    reference (%d tokens, stop_reason %d) '%s'"
                        " stop string '%s'\n",
                        name, slot, k, s->n_tok, s->generated, s->reason, s->finished, s->after_finish, s->text,
                        s->fin_text, ref->n, ref->stop_reason, ref->text, ref->stop);
            }
        }
    }
    CHECK(run->m.struct_size == sizeof run->m);
    CHECK(run->m.submitted == N_REQ);
    CHECK(run->m.finished == run->m.submitted);
    CHECK(run->m.waiting == 0 && run->m.running == 0);
    CHECK(run->m.generated_tokens == run->token_events);
    CHECK(run->m.generated_tokens == finished_generated);
    CHECK(run->m.steps >= run->steps - 1 && run->m.steps > 0);
    CHECK(run->m.batched_tokens > 0);
    CHECK(run->m.busy_seconds > 0.0 && run->m.tokens_per_second > 0.0);
    CHECK(run->m.kv_total_bytes > 0);
    if (check_failures != before)
        fprintf(stderr,
                "  %s: metrics: steps %lld submitted %lld finished %lld waiting %lld running %lld preemptions %lld "
                "generated %lld (token events %ld, finished sum %ld)\n",
                name, (long long)run->m.steps, (long long)run->m.submitted, (long long)run->m.finished,
                (long long)run->m.waiting, (long long)run->m.running, (long long)run->m.preemptions,
                (long long)run->m.generated_tokens, run->token_events, finished_generated);
    return check_failures - before;
}

int main(int argc, char **argv) {
    char model_path[4096];
    bc_model *model = NULL;
    bc_model_info info;
    ref_t *refs;
    run_t *run;
    int slot;
    int rc = model_path_from_args(argc, argv, model_path, sizeof model_path);
    if (rc) return rc;
    CHECK_OK(bc_model_load(model_path, NULL, &model));
    if (!model) CHECK_DONE();
    memset(&info, 0, sizeof info);
    info.struct_size = (uint32_t)sizeof info;
    CHECK_OK(bc_model_get_info(model, &info));

    refs = (ref_t *)calloc(N_REQ, sizeof *refs);
    run = (run_t *)calloc(1, sizeof *run);
    if (!refs || !run) {
        CHECK(!"out of memory");
        CHECK_DONE();
    }
    for (slot = 0; slot < N_REQ; slot++) reference(model, slot, &refs[slot]);

    /* 1. A roomy engine (1 GiB of KV), one request cancelled mid-way. */
    run_engine(model, 0, 0, CANCEL_SLOT, refs, run);
    check_run("roomy", run, refs, CANCEL_SLOT);
    CHECK(run->r[CANCEL_SLOT].cancelled);
    CHECK(run->m.preemptions == 0);
    /* Under the priority policy the one high-priority request, submitted last, is
     * prefilled and sampled first: its event is the very first. */
    CHECK(run->r[PRIORITY_SLOT].first_event == 0);

    /* 2. KV for about four sequences of 48 tokens (blocks of 16): the twelve requests
     * take turns through preemption, every one finishes, and the outputs are those of
     * the unconstrained run. Once with the default token budget (the first step meets
     * all twelve prompts at once), once with prefill chunks of at most 24 tokens. */
    {
        int64_t head_dim = info.n_embd / info.n_head;
        int64_t bytes_per_token = (int64_t)info.n_layer * 2 * head_dim * info.n_head_kv * 4;
        int64_t blocks = 4 * ((48 + 15) / 16);
        int64_t kv_bytes = blocks * 16 * bytes_per_token;
        static const int32_t budgets[2] = {0, 24};
        int b;
        for (slot = 0; slot < N_REQ; slot++)
            CHECK(run->r[slot].prompt_tokens + MAX_TOKENS <= 48); /* each one fits alone */
        for (b = 0; b < 2; b++) {
            char name[64];
            snprintf(name, sizeof name, "tight (max_batched_tokens %d)", budgets[b] ? budgets[b] : 512);
            run_engine(model, kv_bytes, budgets[b], -1, refs, run);
            check_run(name, run, refs, -1);
            CHECK(run->m.preemptions > 0);
            CHECK(run->m.kv_total_bytes <= kv_bytes);
            printf("%s, KV %lld bytes: %lld steps, %lld preemptions\n", name, (long long)kv_bytes,
                   (long long)run->m.steps, (long long)run->m.preemptions);
        }
    }

    free(refs);
    free(run);
    bc_model_free(model);
    CHECK_DONE();
}
