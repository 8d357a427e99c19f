/* KV-cache behaviour on the real model: copy-on-write forks, prefix-cache reuse,
 * KV exhaustion and recovery, sequence state save/load (buffer and file) resuming
 * exactly, and sliding-window + cross-layer-sharing layouts. Needs the default model:
 * its path is read from <fixtures>/../../build/stage/model-path (`make test-c`). */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "decode_seq.h"
#include "model_path.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>


static int32_t n_vocab = 0;
static int32_t n_layer = 0;

static int32_t seq_len(const bc_context *ctx, int32_t seq) {
    int32_t n = -12345;
    CHECK_OK(bc_context_seq_length(ctx, seq, &n));
    return n;
}

static bc_kv_stats kv_stats(const bc_context *ctx) {
    bc_kv_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK_OK(bc_context_kv_stats(ctx, &s));
    return s;
}

/* Decodes n tokens of one sequence from position `start`; logits of the last token,
 * or of every token when all_logits (out then holds n rows). */
static bc_status decode(bc_context *ctx, int32_t seq, int32_t start, const int32_t *toks, int32_t n, float *out,
                        int all_logits) {
    return decode_seq(ctx, seq, start, toks, n, out, all_logits, n_vocab);
}

static int32_t argmax(const float *row) {
    int32_t best = 0;
    for (int32_t i = 1; i < n_vocab; i++)
        if (row[i] > row[best]) best = i;
    return best;
}

static int32_t second_best(const float *row) {
    int32_t best = argmax(row), second = best == 0 ? 1 : 0;
    for (int32_t i = 0; i < n_vocab; i++)
        if (i != best && row[i] > row[second]) second = i;
    return second;
}

static int all_finite(const float *row) {
    for (int32_t i = 0; i < n_vocab; i++)
        if (!isfinite(row[i])) return 0;
    return 1;
}

static void make_tokens(int32_t *t, int32_t n, int32_t salt) {
    for (int32_t i = 0; i < n; i++) t[i] = 1000 + (int32_t)(((int64_t)i * 7919 + (int64_t)salt * 104729) % 20000);
}

static int tokenize(bc_model *model, const char *text, int32_t *out, int32_t cap) {
    size_t n = 0;
    CHECK_OK(bc_tokenize(model, text, strlen(text), 1, 0, out, (size_t)cap, &n));
    return (int)n;
}

static float *rows(size_t n) { return (float *)malloc(n * (size_t)n_vocab * sizeof(float)); }

/* ---------------------------------------------------------------- (a) fork */

#define FORK_STEPS 8

static void test_fork(bc_model *model) {
    int32_t prompt[64];
    int np = tokenize(model, "The capital of France is Paris. The capital of Germany is", prompt, 64);
    CHECK(np > 4 && np % 16 != 0); /* a partial last block: the first write copies it */
    float *first = rows(1), *got[2], *want = rows(1);
    got[0] = rows(FORK_STEPS);
    got[1] = rows(FORK_STEPS);
    bc_context *ctx = NULL;
    CHECK_OK(bc_context_create(model, NULL, &ctx));
    if (!ctx || !first || !want || !got[0] || !got[1]) {
        CHECK(!"setup failed");
        bc_context_free(ctx);
        free(first);
        free(want);
        free(got[0]);
        free(got[1]);
        return;
    }
    CHECK_OK(decode(ctx, 0, 0, prompt, np, first, 0));
    bc_kv_stats before = kv_stats(ctx);
    CHECK_OK(bc_context_seq_fork(ctx, 0, 1));
    bc_kv_stats after = kv_stats(ctx);
    CHECK(after.blocks_used == before.blocks_used); /* the fork allocated nothing */
    CHECK(after.bytes_used == before.bytes_used);
    CHECK(after.sequences == 2 && after.tokens == 2 * (int64_t)np);
    CHECK(seq_len(ctx, 1) == np);

    /* Different next tokens, then greedy; the two sequences interleaved. */
    int32_t tok[2][FORK_STEPS];
    tok[0][0] = argmax(first);
    tok[1][0] = second_best(first);
    CHECK(tok[0][0] != tok[1][0]);
    for (int step = 0; step < FORK_STEPS; step++) {
        for (int s = 0; s < 2; s++) {
            CHECK_OK(decode(ctx, s, np + step, &tok[s][step], 1, got[s] + (size_t)step * n_vocab, 0));
            if (step + 1 < FORK_STEPS) tok[s][step + 1] = argmax(got[s] + (size_t)step * n_vocab);
        }
        if (step == 0) {
            /* Only the shared partial block was copied (once). */
            CHECK(kv_stats(ctx).blocks_used == before.blocks_used + 1);
        }
    }
    CHECK(seq_len(ctx, 0) == np + FORK_STEPS && seq_len(ctx, 1) == np + FORK_STEPS);

    /* Each continuation equals a solo run in a fresh context. */
    for (int s = 0; s < 2; s++) {
        bc_context *solo = NULL;
        CHECK_OK(bc_context_create(model, NULL, &solo));
        if (!solo) continue;
        CHECK_OK(decode(solo, 0, 0, prompt, np, want, 0));
        CHECK(logits_close(first, want, n_vocab, 1e-5, "fork: prompt logits"));
        for (int step = 0; step < FORK_STEPS; step++) {
            CHECK_OK(decode(solo, 0, np + step, &tok[s][step], 1, want, 0));
            char what[64];
            snprintf(what, sizeof what, "fork: sequence %d step %d", s, step);
            CHECK(logits_close(got[s] + (size_t)step * n_vocab, want, n_vocab, 1e-5, what));
            if (step + 1 < FORK_STEPS) CHECK(argmax(want) == tok[s][step + 1]);
        }
        bc_context_free(solo);
    }
    bc_context_free(ctx);
    free(first);
    free(want);
    free(got[0]);
    free(got[1]);
}

/* ---------------------------------------------------------------- (b) prefix cache */

static void test_prefix_cache(bc_model *model) {
    int32_t a[100], b[104];
    make_tokens(a, 100, 3);
    memcpy(b, a, 96 * sizeof(int32_t));
    for (int i = 96; i < 104; i++) b[i] = 2000 + 13 * i;
    float *tail = rows(8), *full = rows(104);
    bc_context *ctx = NULL, *fresh = NULL;
    CHECK_OK(bc_context_create(model, NULL, &ctx));
    CHECK_OK(bc_context_create(model, NULL, &fresh));
    if (!ctx || !fresh || !tail || !full) {
        CHECK(!"setup failed");
        bc_context_free(ctx);
        bc_context_free(fresh);
        free(tail);
        free(full);
        return;
    }
    CHECK_OK(decode(ctx, 0, 0, a, 100, tail, 0));
    CHECK_OK(bc_context_seq_remove(ctx, 0));
    bc_kv_stats s0 = kv_stats(ctx);
    CHECK(s0.sequences == 0 && s0.blocks_cached >= 6);

    int32_t cached = -1;
    CHECK_OK(bc_context_seq_attach_prefix(ctx, 1, b, 104, &cached));
    CHECK(cached == 96);
    CHECK(seq_len(ctx, 1) == 96);
    bc_kv_stats s1 = kv_stats(ctx);
    CHECK(s1.prefix_hit_tokens == s0.prefix_hit_tokens + 96);
    CHECK(s1.prefix_query_tokens == s0.prefix_query_tokens + 104);
    CHECK(s1.blocks_cached == s0.blocks_cached - 6);
    CHECK_OK(decode(ctx, 1, 96, b + 96, 8, tail, 1));

    CHECK_OK(decode(fresh, 0, 0, b, 104, full, 1));
    for (int i = 0; i < 8; i++) {
        char what[64];
        snprintf(what, sizeof what, "prefix cache: position %d", 96 + i);
        CHECK(logits_close(tail + (size_t)i * n_vocab, full + (size_t)(96 + i) * n_vocab, n_vocab, 1e-5, what));
    }

    /* At most n - 1 tokens come from the cache: the 96-token prefix alone gets 80. */
    CHECK_OK(bc_context_seq_attach_prefix(ctx, 2, b, 96, &cached));
    CHECK(cached == 80);
    /* A prompt that differs in its first block gets nothing. */
    {
        int32_t c[40];
        memcpy(c, b, sizeof c);
        c[3] += 1;
        CHECK_OK(bc_context_seq_attach_prefix(ctx, 3, c, 40, &cached));
        CHECK(cached == 0);
        CHECK(seq_len(ctx, 3) == 0);
    }
    /* Without prefix caching nothing is reused. */
    {
        bc_context_params cp;
        CHECK_OK(bc_context_params_default(&cp, sizeof cp));
        cp.prefix_cache = 0;
        bc_context *nc = NULL;
        CHECK_OK(bc_context_create(model, &cp, &nc));
        if (nc) {
            CHECK_OK(decode(nc, 0, 0, a, 100, tail, 0));
            CHECK_OK(bc_context_seq_remove(nc, 0));
            CHECK_OK(bc_context_seq_attach_prefix(nc, 1, b, 104, &cached));
            CHECK(cached == 0);
            CHECK(kv_stats(nc).prefix_hit_tokens == 0);
            bc_context_free(nc);
        }
    }
    bc_context_free(ctx);
    bc_context_free(fresh);
    free(tail);
    free(full);
}

/* ---------------------------------------------------------------- (c) exhaustion */

static void test_exhaustion(bc_model *model) {
    bc_context_params cp;
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    bc_context *ctx = NULL;
    CHECK_OK(bc_context_create(model, &cp, &ctx));
    int64_t bpt = ctx ? kv_stats(ctx).bytes_per_token : 0;
    bc_context_free(ctx);
    ctx = NULL;
    cp.kv_bytes = bpt * cp.block_size * 4; /* four blocks */
    CHECK_OK(bc_context_create(model, &cp, &ctx));
    float *logits = rows(1);
    if (!ctx || !logits) {
        CHECK(!"setup failed");
        bc_context_free(ctx);
        free(logits);
        return;
    }
    CHECK(kv_stats(ctx).blocks_total == 4);
    int32_t a[48], b[32];
    make_tokens(a, 48, 4);
    make_tokens(b, 32, 5);
    CHECK_OK(decode(ctx, 0, 0, a, 48, logits, 0));
    CHECK(kv_stats(ctx).blocks_used == 3);
    CHECK_ERR(decode(ctx, 1, 0, b, 32, logits, 0), BC_E_KV_FULL);
    CHECK(seq_len(ctx, 1) == 0);
    CHECK(seq_len(ctx, 0) == 48);
    CHECK(kv_stats(ctx).blocks_used == 3);
    /* Growing seq 0 by one block still fits; then nothing does. */
    CHECK_OK(decode(ctx, 0, 48, b, 16, logits, 0));
    CHECK_ERR(decode(ctx, 0, 64, b, 1, logits, 0), BC_E_KV_FULL);
    CHECK(seq_len(ctx, 0) == 64);
    CHECK_OK(bc_context_seq_remove(ctx, 0));
    CHECK_OK(decode(ctx, 1, 0, b, 32, logits, 0));
    CHECK(seq_len(ctx, 1) == 32);
    CHECK(all_finite(logits));
    {
        /* The result equals an unconstrained context's. */
        float *want = rows(1);
        bc_context *big = NULL;
        CHECK_OK(bc_context_create(model, NULL, &big));
        if (big && want) {
            CHECK_OK(decode(big, 0, 0, b, 32, want, 0));
            CHECK(logits_close(logits, want, n_vocab, 1e-5, "after exhaustion"));
        }
        bc_context_free(big);
        free(want);
    }
    bc_context_free(ctx);
    free(logits);
}

/* ---------------------------------------------------------------- (d) state */

#define PRE_STEPS 4
#define RESUME_STEPS 16

/* Greedy: from the next token `t`, decode `steps` tokens of seq at position start;
 * tokens[i] is the i-th decoded token. Returns 1 when every decode succeeded. */
static int greedy(bc_context *ctx, int32_t seq, int32_t start, int32_t t, int steps, int32_t *tokens, float *logits) {
    for (int i = 0; i < steps; i++) {
        tokens[i] = t;
        bc_status st = decode(ctx, seq, start + i, &t, 1, logits, 0);
        CHECK(st == BC_OK);
        if (st != BC_OK) return 0;
        CHECK(all_finite(logits));
        t = argmax(logits);
    }
    return 1;
}

/* One configuration: uninterrupted run vs save after PRE_STEPS, free, load, resume. */
static void state_roundtrip(bc_model *model, const bc_context_params *cp, const int32_t *prompt, int np,
                            const char *name) {
    float *logits = rows(1);
    int32_t ref[PRE_STEPS + RESUME_STEPS], got[PRE_STEPS + RESUME_STEPS];
    if (!logits) return;
    bc_context *r = NULL;
    CHECK_OK(bc_context_create(model, cp, &r));
    if (!r) {
        free(logits);
        return;
    }
    CHECK_OK(decode(r, 0, 0, prompt, np, logits, 0));
    greedy(r, 0, np, argmax(logits), PRE_STEPS + RESUME_STEPS, ref, logits);
    bc_context_free(r);

    bc_context *a = NULL;
    CHECK_OK(bc_context_create(model, cp, &a));
    if (!a) {
        free(logits);
        return;
    }
    CHECK_OK(decode(a, 0, 0, prompt, np, logits, 0));
    greedy(a, 0, np, argmax(logits), PRE_STEPS, got, logits);
    int32_t next = argmax(logits); /* the caller keeps the token it sampled */
    int32_t len = seq_len(a, 0);
    CHECK(len == np + PRE_STEPS);
    size_t size = 0, written = 0;
    CHECK_OK(bc_context_seq_state_size(a, 0, &size));
    unsigned char *buf = (unsigned char *)malloc(size);
    unsigned char *again = (unsigned char *)malloc(size);
    char path[96];
    snprintf(path, sizeof path, "/tmp/bc_test_kv_behaviour_%ld_%s.state", (long)getpid(), name);
    if (!buf || !again) {
        CHECK(!"out of memory");
        free(buf);
        free(again);
        free(logits);
        bc_context_free(a);
        return;
    }
    CHECK_OK(bc_context_seq_save_buffer(a, 0, buf, size, &written));
    CHECK(written == size);
    CHECK_OK(bc_context_seq_save(a, 0, path));
    CHECK(seq_len(a, 0) == len); /* saving changes nothing */
    bc_context_free(a);

    /* From the buffer, into another sequence id of a new context. */
    bc_context *b = NULL;
    CHECK_OK(bc_context_create(model, cp, &b));
    if (b) {
        CHECK_OK(bc_context_seq_load_buffer(b, 5, buf, size));
        CHECK(seq_len(b, 5) == len);
        bc_kv_stats s = kv_stats(b);
        CHECK(s.sequences == 1 && s.tokens == len);
        /* Saving again gives the same bytes. */
        size_t size2 = 0;
        CHECK_OK(bc_context_seq_state_size(b, 5, &size2));
        CHECK(size2 == size);
        if (size2 == size) {
            CHECK_OK(bc_context_seq_save_buffer(b, 5, again, size, &written));
            CHECK(memcmp(buf, again, size) == 0);
        }
        if (greedy(b, 5, len, next, RESUME_STEPS, got + PRE_STEPS, logits)) {
            int same = 1;
            for (int i = 0; i < PRE_STEPS + RESUME_STEPS; i++) same &= got[i] == ref[i];
            if (!same) fprintf(stderr, "%s: resumed (buffer) continuation differs from the uninterrupted one\n", name);
            CHECK(same);
        }
        /* The loaded sequence's full blocks serve as a cached prefix (when enabled). */
        if (cp == NULL || (cp->prefix_cache && cp->layer_window == NULL)) {
            int32_t *toks = (int32_t *)malloc((size_t)(len + 1) * sizeof(int32_t));
            if (toks) {
                memcpy(toks, prompt, (size_t)np * sizeof(int32_t));
                memcpy(toks + np, got, PRE_STEPS * sizeof(int32_t));
                toks[len] = next;
                int32_t cached = -1;
                CHECK_OK(bc_context_seq_attach_prefix(b, 6, toks, len + 1, &cached));
                int32_t bs = cp ? cp->block_size : 16;
                CHECK(cached == len / bs * bs);
                free(toks);
            }
        }
        bc_context_free(b);
    }

    /* From the file, into a context with a different n_ctx and KV budget. */
    bc_context_params cp2;
    if (cp) cp2 = *cp;
    else CHECK_OK(bc_context_params_default(&cp2, sizeof cp2));
    cp2.n_ctx = 512;
    cp2.kv_bytes = (int64_t)256 << 20;
    bc_context *c = NULL;
    CHECK_OK(bc_context_create(model, &cp2, &c));
    if (c) {
        CHECK_OK(bc_context_seq_load(c, 0, path));
        CHECK(seq_len(c, 0) == len);
        int32_t got2[RESUME_STEPS];
        if (greedy(c, 0, len, next, RESUME_STEPS, got2, logits)) {
            int same = 1;
            for (int i = 0; i < RESUME_STEPS; i++) same &= got2[i] == ref[PRE_STEPS + i];
            if (!same) fprintf(stderr, "%s: resumed (file) continuation differs from the uninterrupted one\n", name);
            CHECK(same);
        }
        bc_context_free(c);
    }
    unlink(path);
    free(buf);
    free(again);
    free(logits);
}

static void test_state(bc_model *model) {
    int32_t prompt[128];
    int np = tokenize(model,
                      "Once upon a time, in a small village at the edge of a great forest, there lived an old "
                      "clockmaker who",
                      prompt, 128);
    CHECK(np > 16 && np < 100);
    state_roundtrip(model, NULL, prompt, np, "f32");
    bc_context_params cp;
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    cp.kv_type = BC_KV_F16;
    state_roundtrip(model, &cp, prompt, np, "f16");
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    cp.kv_type = BC_KV_INT8;
    cp.block_size = 8;
    state_roundtrip(model, &cp, prompt, np, "int8");
    /* Sliding windows (blocks released before the save) and shared layers. */
    int32_t *window = (int32_t *)calloc((size_t)n_layer, sizeof(int32_t));
    int32_t *share = (int32_t *)malloc((size_t)n_layer * sizeof(int32_t));
    if (window && share) {
        for (int32_t l = 0; l < n_layer; l++) {
            window[l] = l % 2 == 1 ? 12 : 0;
            share[l] = l % 3 == 2 ? l - 1 : -1;
        }
        CHECK_OK(bc_context_params_default(&cp, sizeof cp));
        cp.layer_window = window;
        cp.layer_share = share;
        state_roundtrip(model, &cp, prompt, np, "window");
    }
    free(window);
    free(share);
}

/* ---------------------------------------------------------------- (e) window + sharing */

static void test_window_sharing(bc_model *model) {
    int32_t *window = (int32_t *)calloc((size_t)n_layer, sizeof(int32_t));
    int32_t *share = (int32_t *)malloc((size_t)n_layer * sizeof(int32_t));
    float *logits = rows(1);
    bc_context *full = NULL, *mixed = NULL;
    if (!window || !share || !logits) {
        CHECK(!"out of memory");
        free(window);
        free(share);
        free(logits);
        return;
    }
    for (int32_t l = 0; l < n_layer; l++) {
        window[l] = l % 2 == 1 ? 32 : 0;     /* odd layers: 32-token window */
        share[l] = l % 3 == 2 ? l - 1 : -1;  /* every third layer reads the previous one's KV */
    }
    bc_context_params cp;
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    CHECK_OK(bc_context_create(model, &cp, &full));
    cp.layer_window = window;
    cp.layer_share = share;
    CHECK_OK(bc_context_create(model, &cp, &mixed));
    if (full && mixed) {
        int32_t prompt[80];
        make_tokens(prompt, 80, 6);
        CHECK_OK(decode(mixed, 0, 0, prompt, 80, logits, 0));
        CHECK(all_finite(logits));
        int32_t t = argmax(logits);
        for (int i = 0; i < 24; i++) {
            CHECK_OK(decode(mixed, 0, 80 + i, &t, 1, logits, 0));
            CHECK(all_finite(logits));
            t = argmax(logits);
        }
        CHECK_OK(decode(full, 0, 0, prompt, 80, logits, 0));
        bc_kv_stats sf = kv_stats(full), sm = kv_stats(mixed);
        CHECK(sm.bytes_per_token > 0 && sm.bytes_per_token < sf.bytes_per_token);
        /* Shared layers store nothing: at most 2/3 of the layers' bytes per token. */
        CHECK(sm.bytes_per_token * 3 <= sf.bytes_per_token * 2);
        /* Windowed groups released the blocks no query can see. */
        CHECK(sm.bytes_used < sf.bytes_used);
        CHECK(seq_len(mixed, 0) == 104);
    }
    bc_context_free(full);
    bc_context_free(mixed);
    free(window);
    free(share);
    free(logits);
}

int main(int argc, char **argv) {
    bc_model *model;
    bc_model_info info;
    int rc = load_default_model(argc, argv, &model, &info);
    if (rc) return rc;
    n_vocab = info.n_vocab;
    n_layer = info.n_layer;
    CHECK(n_vocab > 0 && n_layer >= 3);
    if (n_vocab > 0 && n_layer >= 3) {
        test_fork(model);
        test_prefix_cache(model);
        test_exhaustion(model);
        test_state(model);
        test_window_sharing(model);
    }
    bc_model_free(model);
    CHECK_DONE();
}
