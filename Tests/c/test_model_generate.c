/* The real model through the C ABI, against llama.cpp reference fixtures:
 *  (a) bc_tokenize equals llama.cpp's ids on the first 200 corpus lines (and with
 *      parse_special on lines holding control-token text); bc_detokenize round trip;
 *  (b) greedy bc_generate continuations equal llama.cpp's (F32 reference) for 64 tokens;
 *  (c) batch invariance of bc_decode: two sequences in one call give the logits and the
 *      greedy tokens of each decoded alone;
 *  (d) seeded sampling is deterministic, and another seed gives another text.
 * The model's path is read from <fixtures>/../../build/stage/model-path (written by
 * `make test-c`); a missing model is a failure. Speeds are printed, never asserted. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "decode_seq.h"
#include "model_path.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <time.h>

#define N_VOCAB 49152
#define CORPUS_LINES 200
#define GREEDY_STEPS 64

/* ---------------------------------------------------------------- helpers */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Reads a whole file into a NUL-terminated malloc'd buffer. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = (char *)malloc(cap);
    while (buf) {
        if (cap - n < 2) {
            char *bigger = (char *)realloc(buf, cap * 2);
            if (!bigger) { free(buf); buf = NULL; break; }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}


/* ---- a tiny purpose-built JSON scanner (the fixtures are machine-written) ---- */

/* Parses the integer array starting at the first '[' at or after p, up to max values.
 * Returns the count, or -1 on malformed input. */
static int json_int_array(const char *p, int32_t *out, int max) {
    p = strchr(p, '[');
    if (!p) return -1;
    p++;
    int n = 0;
    for (;;) {
        while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t' || *p == ',') p++;
        if (*p == ']') return n;
        char *end = NULL;
        long v = strtol(p, &end, 10);
        if (end == p || n >= max) return -1;
        out[n++] = (int32_t)v;
        p = end;
    }
}

static size_t put_utf8(char *out, unsigned long cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xc0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static int hex4(const char *p, unsigned long *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return 0;
        *v = *v * 16 + (unsigned long)d;
    }
    return 1;
}

/* Decodes the JSON string whose opening quote is the first '"' at or after p (after a
 * key's colon). Returns a malloc'd NUL-terminated UTF-8 string; *len gets its length. */
static char *json_string(const char *p, size_t *len) {
    p = strchr(p, '"');
    if (!p) return NULL;
    p++;
    const char *q = p;
    size_t raw = 0;
    while (*q && *q != '"') {
        if (*q == '\\' && q[1]) q++;
        q++;
        raw++;
    }
    char *out = (char *)malloc(4 * raw + 1);
    if (!out) return NULL;
    size_t n = 0;
    while (*p && *p != '"') {
        if (*p != '\\') { out[n++] = *p++; continue; }
        p++;
        char c = *p++;
        switch (c) {
        case 'n': out[n++] = '\n'; break;
        case 't': out[n++] = '\t'; break;
        case 'r': out[n++] = '\r'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'u': {
            unsigned long cp = 0, lo = 0;
            if (!hex4(p, &cp)) { free(out); return NULL; }
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && p[0] == '\\' && p[1] == 'u' && hex4(p + 2, &lo) && lo >= 0xdc00 &&
                lo <= 0xdfff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
            n += put_utf8(out + n, cp);
            break;
        }
        default: out[n++] = c; break; /* \" \\ \/ */
        }
    }
    out[n] = '\0';
    if (len) *len = n;
    return out;
}

/* ---------------------------------------------------------------- (a) tokenizer */

static void test_tokenizer(const bc_model *model, const char *fixtures) {
    char path[4096];
    size_t corpus_len = 0;
    snprintf(path, sizeof path, "%s/llama/tokenizer_corpus.txt", fixtures);
    char *corpus = read_file(path, &corpus_len);
    snprintf(path, sizeof path, "%s/llama/tokenizer_tokens.json", fixtures);
    char *json = read_file(path, NULL);
    CHECK(corpus != NULL && json != NULL);
    if (!corpus || !json) { free(corpus); free(json); return; }

    int32_t *want = (int32_t *)malloc(8192 * sizeof(int32_t));
    int32_t *got = (int32_t *)malloc(8192 * sizeof(int32_t));
    char *detok = (char *)malloc(1 << 16);
    if (!want || !got || !detok) { CHECK(!"out of memory"); free(want); free(got); free(detok); free(corpus); free(json); return; }

    const char *line = corpus;
    const char *cursor = strstr(json, "\"lines\":");
    CHECK(cursor != NULL);
    int mismatches = 0, special_lines = 0, roundtrip_failures = 0;
    size_t total_tokens = 0;
    double seconds = 0;
    for (int i = 0; i < CORPUS_LINES && cursor; i++) {
        const char *nl = strchr(line, '\n');
        CHECK(nl != NULL);
        if (!nl) break;
        size_t line_len = (size_t)(nl - line);

        char key[32];
        snprintf(key, sizeof key, "{\"i\":%d,", i);
        const char *entry = strstr(cursor, key);
        CHECK(entry != NULL);
        if (!entry) break;
        snprintf(key, sizeof key, "{\"i\":%d,", i + 1);
        const char *next = strstr(entry + 1, key);
        CHECK(next != NULL);
        if (!next) break;
        cursor = next;

        /* The JSON's text is authoritative: it must be this corpus line. */
        size_t text_len = 0;
        char *text = json_string(strstr(entry, "\"text\":") + 7, &text_len);
        CHECK(text != NULL && text_len == line_len && memcmp(text, line, line_len) == 0);
        free(text);

        const char *ids = strstr(entry, "\"ids\":");
        CHECK(ids != NULL && ids < next);
        if (!ids || ids >= next) break;
        int n_want = json_int_array(ids, want, 8192);
        CHECK(n_want >= 0);
        size_t n_got = 0;
        double t0 = now_seconds();
        bc_status st = bc_tokenize(model, line, line_len, 0, 0, got, 8192, &n_got);
        seconds += now_seconds() - t0;
        CHECK(st == BC_OK);
        total_tokens += n_got;
        if (st != BC_OK || (int)n_got != n_want || memcmp(got, want, n_got * sizeof(int32_t)) != 0) {
            if (mismatches++ < 5)
                fprintf(stderr, "tokenize mismatch on line %d (%d ids expected, %d got): %.*s\n", i, n_want,
                        (int)n_got, (int)line_len, line);
        }
        /* Round trip: the text tokens detokenize to the line's bytes. */
        size_t dlen = 0;
        st = bc_detokenize(model, got, n_got, 0, detok, 1 << 16, &dlen);
        if (st != BC_OK || dlen != line_len || memcmp(detok, line, line_len) != 0) {
            if (roundtrip_failures++ < 5) fprintf(stderr, "detokenize round trip failed on line %d\n", i);
        }
        /* Lines with control-token text: parse_special gives llama.cpp's special ids. */
        const char *ids_sp = strstr(entry, "\"ids_special\":");
        if (ids_sp && ids_sp < next) {
            special_lines++;
            n_want = json_int_array(ids_sp, want, 8192);
            st = bc_tokenize(model, line, line_len, 0, 1, got, 8192, &n_got);
            CHECK(st == BC_OK);
            if (st != BC_OK || (int)n_got != n_want || memcmp(got, want, n_got * sizeof(int32_t)) != 0) {
                if (mismatches++ < 5)
                    fprintf(stderr, "tokenize (parse_special) mismatch on line %d: %.*s\n", i, (int)line_len, line);
            }
        }
        line = nl + 1;
    }
    CHECK(mismatches == 0);
    CHECK(roundtrip_failures == 0);
    CHECK(special_lines >= 10); /* the fixture has 19 such lines among the first 200 */
    printf("tokenizer: %d lines, %d with special tokens, %zu tokens, %.0f tokens/s\n", CORPUS_LINES, special_lines,
           total_tokens, seconds > 0 ? (double)total_tokens / seconds : 0.0);
    free(want);
    free(got);
    free(detok);
    free(corpus);
    free(json);
}

/* ---------------------------------------------------------------- generation helpers */

typedef struct collected {
    int32_t tokens[1024];
    int n;
    char text[16384];
    size_t text_len;
    int final_calls;
} collected;

static int32_t collect_cb(int32_t token, const char *piece, size_t piece_len, void *user_data) {
    collected *c = (collected *)user_data;
    if (token < 0) c->final_calls++;
    else if (c->n < 1024) c->tokens[c->n++] = token;
    if (piece_len > 0 && c->text_len + piece_len < sizeof c->text) {
        memcpy(c->text + c->text_len, piece, piece_len);
        c->text_len += piece_len;
    }
    return 0;
}

static void reset(collected *c) {
    c->n = 0;
    c->text_len = 0;
    c->final_calls = 0;
    c->text[0] = '\0';
}

/* ---------------------------------------------------------------- (b) greedy */

static void test_greedy(bc_model *model, const char *fixtures) {
    char path[4096];
    snprintf(path, sizeof path, "%s/llama/greedy.json", fixtures);
    char *json = read_file(path, NULL);
    CHECK(json != NULL);
    if (!json) return;
    collected *c = (collected *)malloc(sizeof(collected));
    if (!c) { free(json); return; }

    bc_context_params cp;
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    cp.n_ctx = 1024;
    int prompts = 0;
    const char *cursor = strstr(json, "\"prompts\":");
    while (cursor && (cursor = strstr(cursor, "\"name\":")) != NULL) {
        const char *next = strstr(cursor + 1, "\"name\":");
        char *name = json_string(cursor + 7, NULL);
        const char *t = strstr(cursor, "\"text\":");
        const char *ps = strstr(cursor, "\"parse_special\":");
        const char *ids = strstr(cursor, "\"ids\":");
        const char *f32 = strstr(cursor, "\"f32\":");
        const char *toks = f32 ? strstr(f32, "\"tokens\":") : NULL;
        CHECK(name && t && ps && ids && f32 && toks);
        if (!name || !t || !ps || !ids || !toks || (next && toks > next)) {
            CHECK(!"malformed greedy.json");
            free(name);
            break;
        }
        char *text = json_string(t + 7, NULL);
        ps += strlen("\"parse_special\":");
        while (*ps == ' ') ps++;
        int parse_special = strncmp(ps, "true", 4) == 0;
        int32_t prompt_ids[512], want[GREEDY_STEPS + 1];
        int n_prompt = json_int_array(ids, prompt_ids, 512);
        int n_want = json_int_array(toks, want, GREEDY_STEPS + 1);
        CHECK(text != NULL && n_prompt > 0 && n_want == GREEDY_STEPS);
        if (!text || n_prompt <= 0 || n_want != GREEDY_STEPS) { free(name); free(text); break; }
        prompts++;

        /* The prompt tokenizes to the ids llama.cpp evaluated. */
        int32_t got_ids[512];
        size_t n_got = 0;
        CHECK_OK(bc_tokenize(model, text, strlen(text), 1, parse_special, got_ids, 512, &n_got));
        CHECK((int)n_got == n_prompt && memcmp(got_ids, prompt_ids, n_got * sizeof(int32_t)) == 0);

        bc_context *ctx = NULL;
        CHECK_OK(bc_context_create(model, &cp, &ctx));
        if (!ctx) { free(name); free(text); break; }
        bc_generate_params gp;
        bc_sampling_params sp;
        bc_generate_result res;
        CHECK_OK(bc_generate_params_default(&gp, sizeof gp));
        CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
        sp.temperature = 0.0f;
        gp.max_tokens = GREEDY_STEPS;
        gp.parse_special = parse_special;
        gp.add_special = 1;
        gp.stop_at_eog = 0;
        gp.callback = collect_cb;
        gp.user_data = c;
        memset(&res, 0, sizeof res);
        res.struct_size = sizeof res;
        reset(c);
        CHECK_OK(bc_generate(ctx, text, &gp, &sp, &res));
        CHECK(res.prompt_tokens == n_prompt);
        CHECK(res.generated_tokens == GREEDY_STEPS && res.stop_reason == 0);
        /* The token -1 flush call comes only when bytes are left over (at most once). */
        CHECK(c->n == GREEDY_STEPS && c->final_calls <= 1);
        int first_diff = -1;
        for (int k = 0; k < GREEDY_STEPS; k++)
            if (k >= c->n || c->tokens[k] != want[k]) { first_diff = k; break; }
        CHECK(first_diff == -1);
        if (first_diff >= 0)
            fprintf(stderr, "greedy '%s': first difference at step %d: got %d, llama.cpp %d\n", name, first_diff,
                    first_diff < c->n ? (int)c->tokens[first_diff] : -1, (int)want[first_diff]);
        /* The streamed text is the detokenized tokens (with or without control text). */
        {
            char detok[16384];
            size_t dl = 0, dl_special = 0;
            char detok_special[16384];
            CHECK_OK(bc_detokenize(model, c->tokens, (size_t)c->n, 0, detok, sizeof detok, &dl));
            CHECK_OK(bc_detokenize(model, c->tokens, (size_t)c->n, 1, detok_special, sizeof detok_special, &dl_special));
            CHECK((c->text_len == dl && memcmp(c->text, detok, dl) == 0) ||
                  (c->text_len == dl_special && memcmp(c->text, detok_special, dl_special) == 0));
        }
        printf("greedy %-6s prompt %3d tokens %7.1f tok/s, generated %d tokens %6.1f tok/s\n", name,
               (int)res.prompt_tokens, res.prompt_seconds > 0 ? res.prompt_tokens / res.prompt_seconds : 0.0,
               (int)res.generated_tokens,
               res.generate_seconds > 0 ? res.generated_tokens / res.generate_seconds : 0.0);
        bc_context_free(ctx);
        free(name);
        free(text);
        cursor = next;
    }
    CHECK(prompts == 4);
    free(c);
    free(json);
}

/* ---------------------------------------------------------------- (c) batch invariance */

static int32_t argmax(const float *row) {
    int32_t best = 0;
    for (int32_t i = 1; i < N_VOCAB; i++)
        if (row[i] > row[best]) best = i;
    return best;
}

/* Decodes `n` tokens of one sequence alone; the last token's logits into out. */
static bc_status decode_solo(bc_context *ctx, int32_t seq, int32_t start, const int32_t *toks, int32_t n, float *out) {
    return decode_seq(ctx, seq, start, toks, n, out, 0, N_VOCAB);
}

#define STEPS 8

static void test_batch_invariance(bc_model *model) {
    const char *text_a = "The capital of France is";
    const char *text_b = "Once upon a time, there was a little robot who lived in a";
    int32_t a[64], b[64];
    size_t na = 0, nb = 0;
    CHECK_OK(bc_tokenize(model, text_a, strlen(text_a), 1, 0, a, 64, &na));
    CHECK_OK(bc_tokenize(model, text_b, strlen(text_b), 1, 0, b, 64, &nb));
    CHECK(na > 2 && nb > na);
    float *solo_a = (float *)malloc(N_VOCAB * sizeof(float));
    float *solo_b = (float *)malloc(N_VOCAB * sizeof(float));
    float *rows = (float *)malloc((size_t)(na + nb) * N_VOCAB * sizeof(float));
    if (!solo_a || !solo_b || !rows) { CHECK(!"out of memory"); free(solo_a); free(solo_b); free(rows); return; }

    bc_context *ctx_a = NULL, *ctx_b = NULL, *ctx_ab = NULL, *ctx_mix = NULL;
    CHECK_OK(bc_context_create(model, NULL, &ctx_a));
    CHECK_OK(bc_context_create(model, NULL, &ctx_b));
    CHECK_OK(bc_context_create(model, NULL, &ctx_ab));
    CHECK_OK(bc_context_create(model, NULL, &ctx_mix));
    if (!ctx_a || !ctx_b || !ctx_ab || !ctx_mix) goto out;

    CHECK_OK(decode_solo(ctx_a, 0, 0, a, (int32_t)na, solo_a));
    CHECK_OK(decode_solo(ctx_b, 0, 0, b, (int32_t)nb, solo_b));

    /* One call: A as seq 0 then B as seq 1, logits for each last token. */
    {
        int32_t toks[128], pos[128], sid[128];
        int8_t want[128];
        int n = 0;
        for (size_t i = 0; i < na; i++) { toks[n] = a[i]; pos[n] = (int32_t)i; sid[n] = 0; want[n] = i + 1 == na; n++; }
        for (size_t i = 0; i < nb; i++) { toks[n] = b[i]; pos[n] = (int32_t)i; sid[n] = 1; want[n] = i + 1 == nb; n++; }
        bc_batch batch;
        CHECK_OK(bc_batch_default(&batch, sizeof batch));
        batch.n_tokens = n;
        batch.tokens = toks;
        batch.pos = pos;
        batch.seq_id = sid;
        batch.logits = want;
        double t0 = now_seconds();
        CHECK_OK(bc_decode(ctx_ab, &batch, rows, 2 * (size_t)N_VOCAB));
        double dt = now_seconds() - t0;
        printf("batch prefill: %d tokens of 2 sequences in one bc_decode, %.1f tokens/s\n", n, n / dt);
        CHECK(logits_close(rows, solo_a, N_VOCAB, 1e-4, "batched prompt A vs solo"));
        CHECK(logits_close(rows + N_VOCAB, solo_b, N_VOCAB, 1e-4, "batched prompt B vs solo"));
    }
    /* Interleaved A and B tokens, logits for every token (rows in batch order). */
    {
        int32_t toks[128], pos[128], sid[128];
        int8_t want[128];
        int n = 0, last_a = -1, last_b = -1;
        for (size_t i = 0; i < nb; i++) {
            if (i < na) { toks[n] = a[i]; pos[n] = (int32_t)i; sid[n] = 7; want[n] = 1; last_a = n; n++; }
            toks[n] = b[i]; pos[n] = (int32_t)i; sid[n] = 3; want[n] = 1; last_b = n; n++;
        }
        bc_batch batch;
        CHECK_OK(bc_batch_default(&batch, sizeof batch));
        batch.n_tokens = n;
        batch.tokens = toks;
        batch.pos = pos;
        batch.seq_id = sid;
        batch.logits = want;
        CHECK_OK(bc_decode(ctx_mix, &batch, rows, (size_t)n * N_VOCAB));
        CHECK(logits_close(rows + (size_t)last_a * N_VOCAB, solo_a, N_VOCAB, 1e-4, "interleaved prompt A vs solo"));
        CHECK(logits_close(rows + (size_t)last_b * N_VOCAB, solo_b, N_VOCAB, 1e-4, "interleaved prompt B vs solo"));
        int32_t la = 0, lb = 0;
        CHECK_OK(bc_context_seq_length(ctx_mix, 7, &la));
        CHECK_OK(bc_context_seq_length(ctx_mix, 3, &lb));
        CHECK(la == (int32_t)na && lb == (int32_t)nb);
    }

    /* Greedy steps: both sequences in one call vs each alone. */
    {
        int32_t next_a = argmax(solo_a), next_b = argmax(solo_b);
        int32_t pa = (int32_t)na, pb = (int32_t)nb;
        int32_t solo_tokens_a[STEPS], solo_tokens_b[STEPS], batch_tokens_a[STEPS], batch_tokens_b[STEPS];
        int32_t cur_sa = next_a, cur_sb = next_b, cur_ba = next_a, cur_bb = next_b;
        double t_batch = 0;
        for (int s = 0; s < STEPS; s++) {
            solo_tokens_a[s] = cur_sa;
            solo_tokens_b[s] = cur_sb;
            batch_tokens_a[s] = cur_ba;
            batch_tokens_b[s] = cur_bb;
            CHECK_OK(decode_solo(ctx_a, 0, pa, &cur_sa, 1, solo_a));
            CHECK_OK(decode_solo(ctx_b, 0, pb, &cur_sb, 1, solo_b));
            int32_t toks[2] = {cur_bb, cur_ba}, pos[2] = {pb, pa}, sid[2] = {1, 0};
            int8_t want[2] = {1, 1};
            bc_batch batch;
            CHECK_OK(bc_batch_default(&batch, sizeof batch));
            batch.n_tokens = 2;
            batch.tokens = toks;
            batch.pos = pos;
            batch.seq_id = sid;
            batch.logits = want;
            double t0 = now_seconds();
            CHECK_OK(bc_decode(ctx_ab, &batch, rows, 2 * (size_t)N_VOCAB));
            t_batch += now_seconds() - t0;
            if (s == 0 || s == STEPS - 1) {
                CHECK(logits_close(rows + N_VOCAB, solo_a, N_VOCAB, 1e-4, "batched step A vs solo"));
                CHECK(logits_close(rows, solo_b, N_VOCAB, 1e-4, "batched step B vs solo"));
            }
            cur_sa = argmax(solo_a);
            cur_sb = argmax(solo_b);
            cur_bb = argmax(rows);
            cur_ba = argmax(rows + N_VOCAB);
            pa++;
            pb++;
        }
        CHECK(memcmp(solo_tokens_a, batch_tokens_a, sizeof solo_tokens_a) == 0);
        CHECK(memcmp(solo_tokens_b, batch_tokens_b, sizeof solo_tokens_b) == 0);
        CHECK(cur_sa == cur_ba && cur_sb == cur_bb);
        printf("batch decode: %d steps x 2 sequences, %.1f tokens/s\n", STEPS, 2 * STEPS / t_batch);
        int32_t la = 0, lb = 0;
        CHECK_OK(bc_context_seq_length(ctx_ab, 0, &la));
        CHECK_OK(bc_context_seq_length(ctx_ab, 1, &lb));
        CHECK(la == (int32_t)na + STEPS && lb == (int32_t)nb + STEPS);
    }
out:
    bc_context_free(ctx_a);
    bc_context_free(ctx_b);
    bc_context_free(ctx_ab);
    bc_context_free(ctx_mix);
    free(solo_a);
    free(solo_b);
    free(rows);
}

/* ---------------------------------------------------------------- (d) determinism */

static void sample(bc_context *ctx, int32_t seq, uint64_t seed, collected *c, bc_generate_result *res) {
    bc_generate_params gp;
    bc_sampling_params sp;
    CHECK_OK(bc_generate_params_default(&gp, sizeof gp));
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.temperature = 0.8f;
    sp.seed = seed;
    gp.seq_id = seq;
    gp.max_tokens = 32;
    gp.stop_at_eog = 0;
    gp.callback = collect_cb;
    gp.user_data = c;
    memset(res, 0, sizeof *res);
    res->struct_size = sizeof *res;
    reset(c);
    CHECK_OK(bc_generate(ctx, "Once upon a time", &gp, &sp, res));
    CHECK(c->n == 32 && res->generated_tokens == 32);
}

static void test_determinism(bc_model *model) {
    collected *c1 = (collected *)malloc(sizeof(collected));
    collected *c2 = (collected *)malloc(sizeof(collected));
    collected *c3 = (collected *)malloc(sizeof(collected));
    bc_context *ctx = NULL, *ctx2 = NULL;
    CHECK_OK(bc_context_create(model, NULL, &ctx));
    CHECK_OK(bc_context_create(model, NULL, &ctx2));
    if (!c1 || !c2 || !c3 || !ctx || !ctx2) goto out;
    {
        bc_generate_result r1, r2, r3;
        sample(ctx, 0, 42, c1, &r1);
        sample(ctx, 1, 42, c2, &r2);
        CHECK(c1->n == c2->n && memcmp(c1->tokens, c2->tokens, (size_t)c1->n * sizeof(int32_t)) == 0);
        CHECK(c1->text_len == c2->text_len && memcmp(c1->text, c2->text, c1->text_len) == 0);
        /* The same on a fresh context, and on a removed-then-reused sequence id. */
        sample(ctx2, 5, 42, c2, &r2);
        CHECK(c1->n == c2->n && memcmp(c1->tokens, c2->tokens, (size_t)c1->n * sizeof(int32_t)) == 0);
        CHECK_OK(bc_context_seq_remove(ctx, 0));
        sample(ctx, 0, 42, c2, &r2);
        CHECK(c1->n == c2->n && memcmp(c1->tokens, c2->tokens, (size_t)c1->n * sizeof(int32_t)) == 0);
        /* Another seed, another text. */
        sample(ctx, 2, 43, c3, &r3);
        CHECK(c3->n == 32);
        CHECK(memcmp(c1->tokens, c3->tokens, 32 * sizeof(int32_t)) != 0);
        CHECK(c1->text_len != c3->text_len || memcmp(c1->text, c3->text, c1->text_len) != 0);
        printf("sampling: seed 42 -> \"%.*s\"\n", (int)(c1->text_len < 80 ? c1->text_len : 80), c1->text);
        printf("sampling: seed 43 -> \"%.*s\"\n", (int)(c3->text_len < 80 ? c3->text_len : 80), c3->text);
        printf("sampling: %.1f tokens/s\n", r1.generate_seconds > 0 ? r1.generated_tokens / r1.generate_seconds : 0.0);
    }
out:
    bc_context_free(ctx);
    bc_context_free(ctx2);
    free(c1);
    free(c2);
    free(c3);
}

int main(int argc, char **argv) {
    char model_path[4096];
    int rc = model_path_from_args(argc, argv, model_path, sizeof model_path);
    if (rc) return rc;
    bc_model *model = NULL;
    double t0 = now_seconds();
    /* The fixtures are llama.cpp's F32 reference: load the weights as f32 (native
     * quantized blocks quantize activations too, and follow another greedy path). */
    bc_model_params mp;
    CHECK_OK(bc_model_params_default(&mp, sizeof mp));
    mp.weights = BC_MODEL_WEIGHTS_F32;
    CHECK_OK(bc_model_load(model_path, &mp, &model));
    if (!model) {
        fprintf(stderr, "FAIL: cannot load %s\n", model_path);
        return 1;
    }
    printf("loaded %s in %.2f s\n", model_path, now_seconds() - t0);
    test_tokenizer(model, argv[1]);
    test_greedy(model, argv[1]);
    test_batch_invariance(model);
    test_determinism(model);
    bc_model_free(model);
    CHECK_DONE();
}
