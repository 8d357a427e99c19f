/* batchcore TTFT bench (head-of-line blocking): how long a 1-token-prompt request waits
 * for its first token when it arrives right behind a long prompt.
 *
 *   ttft_bench MODEL.gguf [--text TEXT.txt] [--long N] [--max-batched-tokens B] [--threads T] [--reps R]
 *
 * Three scenarios on one engine configuration (greedy, max_tokens 1, ignore_eos):
 *   small alone      the 1-token prompt alone: its TTFT (median of R runs);
 *   long alone       the N-token prompt (default 8190) alone: its TTFT = the prefill time;
 *   long + small     the long prompt submitted, the small one right after (same t, before
 *                    the first step): the small request's TTFT and the long one's.
 * TTFT is the engine's ttft_seconds (submission to first token). Prints one RESULT line
 * per scenario (times in ms). The long prompt is TEXT's tokens (its first line, a source
 * note, skipped) repeated up to N; the small prompt is its first token.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"
#include <batchcore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Steps `engine` until idle; ttft[k] = ttft_seconds of request ids[k] (k < n). */
static void drain(bc_engine *engine, const uint64_t *ids, int n, double *ttft) {
    bc_event ev[64];
    int32_t live = 1;
    while (live > 0) {
        int32_t processed = 0;
        CHECK(bc_engine_step(engine, &processed, &live));
        size_t got = 0;
        do {
            CHECK(bc_engine_poll(engine, ev, 64, sizeof ev[0], &got));
            for (size_t e = 0; e < got; e++) {
                if (ev[e].kind != BC_EVENT_FINISHED) continue;
                if (ev[e].finish_reason == BC_FINISH_ERROR) { fprintf(stderr, "request failed: %s\n", ev[e].message); exit(1); }
                for (int k = 0; k < n; k++)
                    if (ev[e].request_id == ids[k]) ttft[k] = ev[e].ttft_seconds;
            }
        } while (got == 64);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: ttft_bench MODEL.gguf [--text T] [--long N] [--max-batched-tokens B] [--threads T] [--reps R]\n"); return 2; }
    const char *text_path = "bench/pd_text.txt";
    int n_long = 8190, reps = 3, threads = 0, mbt = 512;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--text")) text_path = argv[i + 1];
        else if (!strcmp(argv[i], "--long")) n_long = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-batched-tokens")) mbt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (n_long < 2 || reps < 1 || mbt < 1) { fprintf(stderr, "bad option value\n"); return 2; }
    CHECK(bc_set_num_threads(threads));
    bc_model *model = NULL;
    CHECK(bc_model_load(argv[1], NULL, &model));

    FILE *f = fopen(text_path, "rb");
    if (!f) { perror(text_path); return 1; }
    char *text = xmalloc(1 << 20);
    size_t len = fread(text, 1, (1 << 20) - 1, f);
    fclose(f);
    text[len] = '\0';
    char *body = strchr(text, '\n');
    body = body ? body + 1 : text;
    size_t n_tok = 0;
    CHECK(bc_tokenize(model, body, strlen(body), 0, 0, NULL, 0, &n_tok));
    int32_t *tok = xmalloc(n_tok * sizeof *tok);
    CHECK(bc_tokenize(model, body, strlen(body), 0, 0, tok, n_tok, &n_tok));
    if (n_tok < 1) { fprintf(stderr, "empty text\n"); return 1; }
    int32_t *prompt = xmalloc((size_t)n_long * sizeof *prompt);
    for (int i = 0; i < n_long; i++) prompt[i] = tok[(size_t)i % n_tok];

    bc_engine_params ep;
    CHECK(bc_engine_params_default(&ep, sizeof ep));
    ep.max_batched_tokens = mbt;
    ep.n_ctx = n_long + 2;
    bc_request_params rp;
    CHECK(bc_request_params_default(&rp, sizeof rp));
    rp.max_tokens = 1;
    rp.ignore_eos = 1;
    bc_sampling_params sp;
    CHECK(bc_sampling_params_default(&sp, sizeof sp));
    sp.temperature = 0;

    /* The small prompt: a token other than the long prompt's first, so it cannot be
     * served from the long one's prefix. */
    int32_t small = n_tok > 1 && tok[1] != prompt[0] ? tok[1] : (prompt[0] + 1) % 1000;

    /* small alone: a fresh engine each run (no prefix cache carried over). */
    double *alone = xmalloc((size_t)reps * sizeof *alone);
    for (int r = 0; r < reps; r++) {
        bc_engine *e = NULL;
        CHECK(bc_engine_create(model, &ep, &e));
        uint64_t id = 0;
        CHECK(bc_engine_submit(e, &small, 1, &rp, &sp, &id));
        drain(e, &id, 1, &alone[r]);
        bc_engine_free(e);
    }
    qsort(alone, (size_t)reps, sizeof *alone, cmp_double);
    printf("RESULT scenario=small_alone max_batched_tokens=%d small_ttft_ms=%.1f\n", mbt, 1e3 * alone[reps / 2]);
    fflush(stdout);

    bc_engine *e = NULL;
    double t_long_alone = 0;
    CHECK(bc_engine_create(model, &ep, &e));
    uint64_t id = 0;
    CHECK(bc_engine_submit(e, prompt, n_long, &rp, &sp, &id));
    drain(e, &id, 1, &t_long_alone);
    bc_engine_free(e);
    printf("RESULT scenario=long_alone max_batched_tokens=%d long_tokens=%d long_ttft_ms=%.1f\n", mbt, n_long, 1e3 * t_long_alone);
    fflush(stdout);

    /* long + small, submitted back to back before the first step. */
    uint64_t ids[2];
    double t[2] = {0, 0};
    CHECK(bc_engine_create(model, &ep, &e));
    CHECK(bc_engine_submit(e, prompt, n_long, &rp, &sp, &ids[0]));
    CHECK(bc_engine_submit(e, &small, 1, &rp, &sp, &ids[1]));
    drain(e, ids, 2, t);
    bc_engine_free(e);
    printf("RESULT scenario=long_plus_small max_batched_tokens=%d long_tokens=%d long_ttft_ms=%.1f small_ttft_ms=%.1f "
           "small_vs_alone=%.1fx\n", mbt, n_long, 1e3 * t[0], 1e3 * t[1], t[1] / alone[reps / 2]);
    bc_model_free(model);
    free(prompt);
    free(tok);
    free(text);
    free(alone);
    return 0;
}
