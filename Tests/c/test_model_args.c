/* Model, tokenizer, context, sampling and generation C ABI: every function with NULL
 * and invalid arguments returns the documented status with a message, never crashes,
 * and leaves outputs and state as they were. Needs the default model: its path is read
 * from <fixtures>/../../build/stage/model-path (written by `make test-c`); a missing
 * model is a failure, not a skip. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "model_path.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */


/* Writes `n` bytes to a fresh temporary file; its name goes to path (cap >= 64). */
static int write_temp(char *path, size_t cap, const void *data, size_t n) {
    snprintf(path, cap, "/tmp/bc_test_model_args_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    const char *p = (const char *)data;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        if (w <= 0) {
            close(fd);
            return 0;
        }
        done += (size_t)w;
    }
    close(fd);
    return 1;
}

/* A pointer value that is never a real handle: outputs must keep it on failure. */
static int sentinel_storage;
#define SENTINEL_MODEL ((bc_model *)(void *)&sentinel_storage)
#define SENTINEL_CTX ((bc_context *)(void *)&sentinel_storage)

static int32_t seq_len(const bc_context *ctx, int32_t seq) {
    int32_t n = -12345;
    CHECK_OK(bc_context_seq_length(ctx, seq, &n));
    return n;
}

static int callback_calls = 0;
static int32_t count_cb(int32_t token, const char *piece, size_t piece_len, void *user_data) {
    (void)token;
    (void)piece;
    (void)piece_len;
    (void)user_data;
    callback_calls++;
    return 0;
}

/* ---------------------------------------------------------------- defaults */

static void test_defaults(void) {
    unsigned char raw[256];

    bc_model_params mp;
    CHECK_ERR(bc_model_params_default(NULL, sizeof mp), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_model_params_default(&mp, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_model_params_default(&mp, 3), BC_E_INVALID_ARGUMENT);
    memset(&mp, 0x5a, sizeof mp);
    CHECK_OK(bc_model_params_default(&mp, sizeof mp));
    CHECK(mp.struct_size == sizeof mp);
    CHECK(mp.progress == NULL && mp.progress_user_data == NULL);
    CHECK(mp.weights == BC_MODEL_WEIGHTS_NATIVE && mp.reserved1 == 0);

    bc_context_params cp;
    CHECK_ERR(bc_context_params_default(NULL, sizeof cp), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_params_default(&cp, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_params_default(&cp, 2), BC_E_INVALID_ARGUMENT);
    memset(&cp, 0x5a, sizeof cp);
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    CHECK(cp.struct_size == sizeof cp);
    CHECK(cp.n_ctx == 0 && cp.kv_bytes == 0);

    bc_sampling_params sp;
    CHECK_ERR(bc_sampling_params_default(NULL, sizeof sp), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_sampling_params_default(&sp, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_sampling_params_default(&sp, 1), BC_E_INVALID_ARGUMENT);
    memset(&sp, 0x5a, sizeof sp);
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    CHECK(sp.struct_size == sizeof sp);
    CHECK(fabsf(sp.temperature - 0.8f) < 1e-7f);
    CHECK(sp.top_k == 40);
    CHECK(fabsf(sp.top_p - 0.95f) < 1e-7f);
    CHECK(fabsf(sp.min_p - 0.05f) < 1e-7f);
    CHECK(sp.repetition_penalty == 1.0f && sp.frequency_penalty == 0.0f && sp.presence_penalty == 0.0f);
    CHECK(sp.penalty_last_n == 64);

    bc_generate_params gp;
    CHECK_ERR(bc_generate_params_default(NULL, sizeof gp), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_generate_params_default(&gp, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_generate_params_default(&gp, 3), BC_E_INVALID_ARGUMENT);
    memset(&gp, 0x5a, sizeof gp);
    CHECK_OK(bc_generate_params_default(&gp, sizeof gp));
    CHECK(gp.struct_size == sizeof gp);
    CHECK(gp.seq_id == 0 && gp.max_tokens == 128 && gp.add_special == 1 && gp.parse_special == 1 &&
          gp.stop_at_eog == 1 && gp.callback == NULL && gp.user_data == NULL);

    /* An older, shorter struct: only `size` bytes are written. */
    memset(raw, 0xa5, sizeof raw);
    CHECK_OK(bc_sampling_params_default((bc_sampling_params *)(void *)raw, offsetof(bc_sampling_params, top_k)));
    {
        uint32_t ss;
        float t;
        memcpy(&ss, raw, sizeof ss);
        memcpy(&t, raw + offsetof(bc_sampling_params, temperature), sizeof t);
        CHECK(ss == offsetof(bc_sampling_params, top_k));
        CHECK(fabsf(t - 0.8f) < 1e-7f);
        int untouched = 1;
        for (size_t i = offsetof(bc_sampling_params, top_k); i < sizeof raw; i++)
            if (raw[i] != 0xa5) untouched = 0;
        CHECK(untouched);
    }
    memset(raw, 0xa5, sizeof raw);
    CHECK_OK(bc_generate_params_default((bc_generate_params *)(void *)raw, offsetof(bc_generate_params, add_special)));
    {
        int untouched = 1;
        for (size_t i = offsetof(bc_generate_params, add_special); i < sizeof raw; i++)
            if (raw[i] != 0xa5) untouched = 0;
        CHECK(untouched);
    }
}

/* ---------------------------------------------------------------- loading */

static void test_load_errors(const char *model_path) {
    bc_model *m = SENTINEL_MODEL;
    char path[128];

    CHECK_ERR(bc_model_load(NULL, NULL, &m), BC_E_INVALID_ARGUMENT);
    CHECK(m == SENTINEL_MODEL);
    CHECK_ERR(bc_model_load(model_path, NULL, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_model_load("/nonexistent/dir/model.gguf", NULL, &m), BC_E_IO);
    CHECK(m == SENTINEL_MODEL);
    CHECK_ERR(bc_model_load("", NULL, &m), BC_E_IO);
    CHECK(m == SENTINEL_MODEL);
    CHECK_ERR(bc_model_load("/tmp", NULL, &m), BC_E_IO); /* a directory */
    CHECK(m == SENTINEL_MODEL);

    /* params with struct_size 0 */
    bc_model_params mp;
    CHECK_OK(bc_model_params_default(&mp, sizeof mp));
    mp.struct_size = 0;
    CHECK_ERR(bc_model_load(model_path, &mp, &m), BC_E_INVALID_ARGUMENT);
    CHECK(m == SENTINEL_MODEL);
    /* weights not a bc_model_weights */
    CHECK_OK(bc_model_params_default(&mp, sizeof mp));
    mp.weights = 2;
    CHECK_ERR(bc_model_load(model_path, &mp, &m), BC_E_INVALID_ARGUMENT);
    CHECK(m == SENTINEL_MODEL);
    mp.weights = -1;
    CHECK_ERR(bc_model_load(model_path, &mp, &m), BC_E_INVALID_ARGUMENT);
    CHECK(m == SENTINEL_MODEL);

    /* Not GGUF at all. */
    {
        unsigned char garbage[4096];
        unsigned x = 12345u;
        for (size_t i = 0; i < sizeof garbage; i++) {
            x = x * 1103515245u + 12345u;
            garbage[i] = (unsigned char)(x >> 16);
        }
        garbage[0] = 'N';
        if (write_temp(path, sizeof path, garbage, sizeof garbage)) {
            CHECK_ERR(bc_model_load(path, NULL, &m), BC_E_FORMAT);
            CHECK(m == SENTINEL_MODEL);
            remove(path);
        } else {
            CHECK(!"cannot write a temporary file");
        }
        /* GGUF magic and version, then garbage. */
        memcpy(garbage, "GGUF\x03\x00\x00\x00", 8);
        if (write_temp(path, sizeof path, garbage, sizeof garbage)) {
            CHECK_ERR(bc_model_load(path, NULL, &m), BC_E_FORMAT);
            CHECK(m == SENTINEL_MODEL);
            remove(path);
        }
        /* An empty file. */
        if (write_temp(path, sizeof path, garbage, 0)) {
            CHECK_ERR(bc_model_load(path, NULL, &m), BC_E_FORMAT);
            CHECK(m == SENTINEL_MODEL);
            remove(path);
        }
    }

    /* The first 1 MB of the real model: a valid header, truncated tensor data. */
    {
        size_t n = 1u << 20;
        unsigned char *buf = (unsigned char *)malloc(n);
        FILE *f = fopen(model_path, "rb");
        size_t got = (buf && f) ? fread(buf, 1, n, f) : 0;
        if (f) fclose(f);
        CHECK(got == n);
        if (got == n && write_temp(path, sizeof path, buf, n)) {
            CHECK_ERR(bc_model_load(path, NULL, &m), BC_E_FORMAT);
            CHECK(m == SENTINEL_MODEL);
            remove(path);
        }
        /* ... and the model without its last byte. */
        free(buf);
    }

    bc_model_free(NULL); /* no-op */
}

/* ---------------------------------------------------------------- info, tokenizer */

static void test_info_errors(const bc_model *model) {
    bc_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK_ERR(bc_model_get_info(NULL, &info), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_model_get_info(model, NULL), BC_E_INVALID_ARGUMENT);
    info.struct_size = 0;
    CHECK_ERR(bc_model_get_info(model, &info), BC_E_INVALID_ARGUMENT);
    CHECK(info.n_vocab == 0);

    /* A shorter (older) struct: only struct_size bytes written. */
    unsigned char raw[sizeof(bc_model_info) + 16];
    memset(raw, 0xa5, sizeof raw);
    uint32_t short_size = (uint32_t)offsetof(bc_model_info, n_layer);
    memcpy(raw, &short_size, sizeof short_size);
    CHECK_OK(bc_model_get_info(model, (bc_model_info *)(void *)raw));
    {
        int untouched = 1;
        for (size_t i = short_size; i < sizeof raw; i++)
            if (raw[i] != 0xa5) untouched = 0;
        CHECK(untouched);
        CHECK(memcmp(raw + offsetof(bc_model_info, architecture), "llama", 6) == 0);
    }

    info.struct_size = sizeof info;
    CHECK_OK(bc_model_get_info(model, &info));
    CHECK(strcmp(info.architecture, "llama") == 0);
    CHECK(info.n_vocab == 49152 && info.n_layer == 30 && info.n_embd == 576 && info.n_head == 9 &&
          info.n_head_kv == 3 && info.n_ff == 1536 && info.n_ctx_train == 8192);
    CHECK(info.rope_freq_base == 100000.0f);
    CHECK(info.bos_token == 1 && info.eos_token == 2 && info.add_bos == 0);
    CHECK(info.n_params > 100000000 && info.n_params < 200000000);
}

static void test_tokenize_errors(const bc_model *model) {
    const char *text = "Hello world, this is a test.";
    size_t len = strlen(text);
    size_t n = 777;
    int32_t toks[64];

    CHECK_ERR(bc_tokenize(NULL, text, len, 0, 0, toks, 64, &n), BC_E_INVALID_ARGUMENT);
    CHECK(n == 777);
    CHECK_ERR(bc_tokenize(model, text, len, 0, 0, toks, 64, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_tokenize(model, NULL, 5, 0, 0, toks, 64, &n), BC_E_INVALID_ARGUMENT);
    CHECK(n == 777);
    CHECK_ERR(bc_tokenize(model, text, len, 0, 0, NULL, 5, &n), BC_E_INVALID_ARGUMENT);
    CHECK(n == 777);

    /* NULL text of length 0 is the empty text. */
    CHECK_OK(bc_tokenize(model, NULL, 0, 0, 0, NULL, 0, &n));
    CHECK(n == 0);

    /* Size query, then too small a buffer: nothing written, count unchanged. */
    size_t need = 0;
    CHECK_OK(bc_tokenize(model, text, len, 0, 0, NULL, 0, &need));
    CHECK(need > 2 && need < 64);
    for (int i = 0; i < 64; i++) toks[i] = -7;
    n = 777;
    CHECK_ERR(bc_tokenize(model, text, len, 0, 0, toks, need - 1, &n), BC_E_INVALID_ARGUMENT);
    CHECK(n == 777);
    {
        int untouched = 1;
        for (int i = 0; i < 64; i++)
            if (toks[i] != -7) untouched = 0;
        CHECK(untouched);
    }
    CHECK_ERR(bc_tokenize(model, text, len, 0, 0, toks, 0, &n), BC_E_INVALID_ARGUMENT);
    CHECK(n == 777 && toks[0] == -7);
    CHECK_OK(bc_tokenize(model, text, len, 0, 0, toks, need, &n));
    CHECK(n == need && toks[need - 1] >= 0 && toks[need] == -7);

    /* Invalid UTF-8 is read as U+FFFD, not an error. */
    CHECK_OK(bc_tokenize(model, "a\xff\xfe" "b", 4, 0, 0, toks, 64, &n));
    CHECK(n >= 2);
}

static void test_detokenize_errors(const bc_model *model) {
    int32_t ok_toks[3] = {19556, 905, 28};
    char buf[64];
    size_t len = 777;

    CHECK_ERR(bc_detokenize(NULL, ok_toks, 3, 0, buf, sizeof buf, &len), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_detokenize(model, ok_toks, 3, 0, buf, sizeof buf, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_detokenize(model, NULL, 3, 0, buf, sizeof buf, &len), BC_E_INVALID_ARGUMENT);
    CHECK(len == 777);
    CHECK_ERR(bc_detokenize(model, ok_toks, 3, 0, NULL, 10, &len), BC_E_INVALID_ARGUMENT);
    CHECK(len == 777);

    int32_t bad[3][2] = {{19556, -1}, {19556, 49152}, {INT32_MIN, 5}};
    for (int k = 0; k < 3; k++) {
        memset(buf, 'x', sizeof buf);
        CHECK_ERR(bc_detokenize(model, bad[k], 2, 0, buf, sizeof buf, &len), BC_E_INVALID_ARGUMENT);
        CHECK(len == 777 && buf[0] == 'x');
        CHECK_ERR(bc_detokenize(model, bad[k], 2, 0, NULL, 0, &len), BC_E_INVALID_ARGUMENT);
        CHECK(len == 777);
    }

    /* Size query and a buffer one byte too small (no room for the NUL). */
    size_t need = 0;
    CHECK_OK(bc_detokenize(model, ok_toks, 3, 0, NULL, 0, &need));
    CHECK(need == strlen("Hello world,"));
    memset(buf, 'x', sizeof buf);
    CHECK_ERR(bc_detokenize(model, ok_toks, 3, 0, buf, need, &len), BC_E_INVALID_ARGUMENT);
    CHECK(len == 777 && buf[0] == 'x');
    CHECK_OK(bc_detokenize(model, ok_toks, 3, 0, buf, need + 1, &len));
    CHECK(len == need && strcmp(buf, "Hello world,") == 0);

    /* n = 0 with NULL tokens: the empty string. */
    CHECK_OK(bc_detokenize(model, NULL, 0, 0, buf, sizeof buf, &len));
    CHECK(len == 0 && buf[0] == '\0');
}

static void test_chat_errors(const bc_model *model) {
    const char *roles[2] = {"system", "user"};
    const char *contents[2] = {"Be brief.", "Hi!"};
    const char *null_role[2] = {"system", NULL};
    char buf[512];
    size_t len = 777;

    CHECK_ERR(bc_chat_format(NULL, roles, contents, 2, 1, buf, sizeof buf, &len), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_chat_format(model, NULL, contents, 2, 1, buf, sizeof buf, &len), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_chat_format(model, roles, NULL, 2, 1, buf, sizeof buf, &len), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_chat_format(model, roles, contents, 2, 1, buf, sizeof buf, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_chat_format(model, null_role, contents, 2, 1, buf, sizeof buf, &len), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_chat_format(model, roles, null_role, 2, 1, buf, sizeof buf, &len), BC_E_INVALID_ARGUMENT);
    CHECK(len == 777);

    size_t need = 0;
    CHECK_OK(bc_chat_format(model, roles, contents, 2, 1, NULL, 0, &need));
    memset(buf, 'x', sizeof buf);
    CHECK_ERR(bc_chat_format(model, roles, contents, 2, 1, buf, need, &len), BC_E_INVALID_ARGUMENT);
    CHECK(len == 777 && buf[0] == 'x');
    CHECK(need + 1 <= sizeof buf);
    CHECK_OK(bc_chat_format(model, roles, contents, 2, 1, buf, sizeof buf, &len));
    CHECK(len == need && strlen(buf) == len);
    CHECK(strcmp(buf, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
                      "<|im_start|>assistant\n") == 0);
}

/* ---------------------------------------------------------------- contexts */

static void test_context_errors(bc_model *model) {
    bc_context *ctx = SENTINEL_CTX;
    bc_context_params cp;
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));

    CHECK_ERR(bc_context_create(NULL, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    CHECK(ctx == SENTINEL_CTX);
    CHECK_ERR(bc_context_create(model, &cp, NULL), BC_E_INVALID_ARGUMENT);
    cp.n_ctx = -1;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    CHECK(ctx == SENTINEL_CTX);
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    cp.kv_bytes = -1;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    CHECK(ctx == SENTINEL_CTX);
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    cp.struct_size = 0;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    CHECK(ctx == SENTINEL_CTX);

    bc_context_free(NULL); /* no-op */

    /* Sequence management on a real context. */
    ctx = NULL;
    CHECK_OK(bc_context_create(model, NULL, &ctx));
    if (!ctx) return;
    int32_t len = 99;
    CHECK_ERR(bc_context_seq_length(NULL, 0, &len), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_length(ctx, 0, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_length(ctx, -1, &len), BC_E_INVALID_ARGUMENT);
    CHECK(len == 99);
    CHECK_OK(bc_context_seq_length(ctx, 12345, &len));
    CHECK(len == 0);
    CHECK_ERR(bc_context_seq_truncate(NULL, 0, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_truncate(ctx, -1, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_truncate(ctx, 0, -1), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_remove(NULL, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_remove(ctx, -1), BC_E_INVALID_ARGUMENT);
    bc_context_free(ctx);
}

static void test_decode_errors(bc_model *model) {
    bc_context *ctx = NULL;
    CHECK_OK(bc_context_create(model, NULL, &ctx));
    if (!ctx) return;
    const size_t V = 49152;
    float *logits = (float *)malloc(2 * V * sizeof(float));
    if (!logits) return;

    int32_t toks[3] = {504, 3575, 282};
    int32_t pos[3] = {0, 1, 2};
    int32_t seq[3] = {0, 0, 0};
    bc_batch b;
    CHECK_OK(bc_batch_default(&b, sizeof b));
    b.n_tokens = 3;
    b.tokens = toks;
    b.pos = pos;
    b.seq_id = seq;
    b.logits = NULL;

    CHECK_ERR(bc_decode(NULL, &b, logits, V), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_decode(ctx, NULL, logits, V), BC_E_INVALID_ARGUMENT);
    b.n_tokens = 0;
    CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
    b.n_tokens = -3;
    CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
    b.n_tokens = 3;
    b.tokens = NULL;
    CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
    b.tokens = toks;
    b.pos = NULL;
    CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
    b.pos = pos;
    b.seq_id = NULL;
    CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
    b.seq_id = seq;
    CHECK(seq_len(ctx, 0) == 0);

    /* struct_size: unset (0), smaller than ABI 2's bc_batch (a field would be read from
     * outside the caller's struct), or absurd. Nothing changes. */
    {
        uint32_t bad[5] = {0, 4, BC_BATCH_MIN_SIZE - 8, BC_BATCH_MIN_SIZE - 1, (1u << 16) + 1};
        for (int k = 0; k < 5; k++) {
            b.struct_size = bad[k];
            CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
        }
        b.struct_size = sizeof b;
        CHECK(seq_len(ctx, 0) == 0);
    }

    /* Token ids outside the vocabulary. */
    toks[1] = 49152;
    CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
    toks[1] = -1;
    CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
    toks[1] = 3575;
    CHECK(seq_len(ctx, 0) == 0);

    /* Negative sequence id. */
    seq[2] = -1;
    CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
    seq[2] = 0;
    CHECK(seq_len(ctx, 0) == 0);

    /* Positions that do not continue the (empty) sequence. */
    pos[0] = 1; pos[1] = 2; pos[2] = 3;
    CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
    pos[0] = 0; pos[1] = 2; pos[2] = 3;
    CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
    pos[0] = 0; pos[1] = 1; pos[2] = 1;
    CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
    pos[0] = 0; pos[1] = -1; pos[2] = 2;
    CHECK_ERR(bc_decode(ctx, &b, logits, V), BC_E_INVALID_ARGUMENT);
    pos[0] = 0; pos[1] = 1; pos[2] = 2;
    CHECK(seq_len(ctx, 0) == 0);

    /* Logits: capacity too small; NULL buffer while rows are requested. */
    CHECK_ERR(bc_decode(ctx, &b, logits, V - 1), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_decode(ctx, &b, logits, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_decode(ctx, &b, NULL, 0), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_decode(ctx, &b, NULL, V), BC_E_INVALID_ARGUMENT);
    int8_t want[3] = {1, 0, 1}; /* two rows */
    b.logits = want;
    CHECK_ERR(bc_decode(ctx, &b, logits, 2 * V - 1), BC_E_INVALID_ARGUMENT);
    CHECK(seq_len(ctx, 0) == 0);

    /* Valid: two rows; then the sequence has 3 positions. */
    CHECK_OK(bc_decode(ctx, &b, logits, 2 * V));
    CHECK(seq_len(ctx, 0) == 3);
    CHECK(isfinite(logits[0]) && isfinite(logits[2 * V - 1]));

    /* A caller built against a newer header: its bc_batch is larger (fields this
     * library does not know, here garbage) and struct_size says so. The library reads
     * the ABI 2 fields and ignores the rest: same logits as the ABI 2-sized batch. */
    {
        struct newer_batch {
            bc_batch b;
            const int32_t *future_adapter_ids;
            int64_t future_flags;
        } nb;
        bc_context *c2 = NULL;
        float *again = (float *)malloc(sizeof(float) * 2 * (size_t)V);
        memset(&nb, 0xEE, sizeof nb);
        nb.b = b;
        nb.b.struct_size = (uint32_t)sizeof nb;
        CHECK_OK(bc_context_create(model, NULL, &c2));
        if (c2 && again) {
            CHECK_OK(bc_decode(c2, &nb.b, again, 2 * V));
            CHECK(seq_len(c2, 0) == 3);
            CHECK(memcmp(again, logits, sizeof(float) * 2 * (size_t)V) == 0);
        }
        bc_context_free(c2);
        free(again);
    }

    /* No rows requested: NULL logits is fine. */
    {
        int32_t t1 = 4649, p1 = 3, s1 = 0;
        int8_t none = 0;
        bc_batch one;
        CHECK_OK(bc_batch_default(&one, sizeof one));
        one.n_tokens = 1;
        one.tokens = &t1;
        one.pos = &p1;
        one.seq_id = &s1;
        one.logits = &none;
        CHECK_OK(bc_decode(ctx, &one, NULL, 0));
        CHECK(seq_len(ctx, 0) == 4);

        /* Continuing at a wrong position: 5 (gap), 3 (already cached), 0. */
        int32_t wrong[3] = {5, 3, 0};
        for (int k = 0; k < 3; k++) {
            p1 = wrong[k];
            one.logits = NULL;
            CHECK_ERR(bc_decode(ctx, &one, logits, V), BC_E_INVALID_ARGUMENT);
            CHECK(seq_len(ctx, 0) == 4);
        }
        /* A failing batch that also holds a valid token of another sequence changes neither. */
        int32_t tt[2] = {504, 504}, pp[2] = {0, 9}, ss[2] = {1, 0};
        bc_batch two;
        CHECK_OK(bc_batch_default(&two, sizeof two));
        two.n_tokens = 2;
        two.tokens = tt;
        two.pos = pp;
        two.seq_id = ss;
        CHECK_ERR(bc_decode(ctx, &two, logits, V), BC_E_INVALID_ARGUMENT);
        CHECK(seq_len(ctx, 0) == 4 && seq_len(ctx, 1) == 0);
    }

    /* Truncate and remove. */
    CHECK_OK(bc_context_seq_truncate(ctx, 0, 2));
    CHECK(seq_len(ctx, 0) == 2);
    CHECK_OK(bc_context_seq_remove(ctx, 0));
    CHECK(seq_len(ctx, 0) == 0);
    bc_context_free(ctx);

    /* Positions past n_ctx. */
    {
        bc_context_params cp;
        CHECK_OK(bc_context_params_default(&cp, sizeof cp));
        cp.n_ctx = 4;
        ctx = NULL;
        CHECK_OK(bc_context_create(model, &cp, &ctx));
        if (ctx) {
            int32_t t5[5] = {504, 3575, 282, 4649, 314}, p5[5] = {0, 1, 2, 3, 4}, s5[5] = {0, 0, 0, 0, 0};
            bc_batch five;
            CHECK_OK(bc_batch_default(&five, sizeof five));
            five.n_tokens = 5;
            five.tokens = t5;
            five.pos = p5;
            five.seq_id = s5;
            CHECK_ERR(bc_decode(ctx, &five, logits, V), BC_E_INVALID_ARGUMENT);
            CHECK(seq_len(ctx, 0) == 0);
            five.n_tokens = 4;
            CHECK_OK(bc_decode(ctx, &five, logits, V));
            CHECK(seq_len(ctx, 0) == 4);
            five.n_tokens = 1;
            five.tokens = t5 + 4;
            five.pos = p5 + 4;
            CHECK_ERR(bc_decode(ctx, &five, logits, V), BC_E_INVALID_ARGUMENT);
            CHECK(seq_len(ctx, 0) == 4);
            bc_context_free(ctx);
        }
    }

    /* A KV budget smaller than one block is refused at create; a budget of exactly
     * one block (16 tokens) cannot hold the 20-token batch below. */
    {
        bc_context_params cp;
        bc_model_info mi;
        memset(&mi, 0, sizeof mi);
        mi.struct_size = sizeof mi;
        CHECK_OK(bc_model_get_info(model, &mi));
        CHECK_OK(bc_context_params_default(&cp, sizeof cp));
        cp.kv_bytes = 1000;
        ctx = NULL;
        CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
        CHECK(ctx == NULL);
        cp.kv_bytes = (int64_t)mi.n_layer * 2 * (mi.n_embd / mi.n_head) * mi.n_head_kv * 4 * 16;
        CHECK_OK(bc_context_create(model, &cp, &ctx));
        if (ctx) {
            int32_t toks[20], poss[20], seqs[20];
            bc_batch big;
            int k;
            for (k = 0; k < 20; k++) { toks[k] = 100 + k; poss[k] = k; seqs[k] = 0; }
            big.struct_size = sizeof big;
            big.n_tokens = 20; big.tokens = toks; big.pos = poss; big.seq_id = seqs; big.logits = NULL;
            CHECK_ERR(bc_decode(ctx, &big, logits, V), BC_E_KV_FULL);
            CHECK(seq_len(ctx, 0) == 0);
            bc_generate_params gp;
            CHECK_OK(bc_generate_params_default(&gp, sizeof gp));
            gp.max_tokens = 4;
            CHECK_ERR(bc_generate(ctx, "The capital of France is Paris, and the capital of Italy is Rome; the capital of Spain is",
                                  &gp, NULL, NULL), BC_E_KV_FULL);
            CHECK(seq_len(ctx, 0) == 0);
            bc_context_free(ctx);
        }
    }
    free(logits);
}

/* ---------------------------------------------------------------- generate */

static void test_generate_errors(bc_model *model) {
    bc_context_params cp;
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    cp.n_ctx = 64;
    bc_context *ctx = NULL;
    CHECK_OK(bc_context_create(model, &cp, &ctx));
    if (!ctx) return;

    bc_generate_params gp;
    bc_sampling_params sp;
    bc_generate_result res;
    CHECK_OK(bc_generate_params_default(&gp, sizeof gp));
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    gp.max_tokens = 4;
    gp.callback = count_cb;
    memset(&res, 0x5a, sizeof res);
    res.struct_size = sizeof res;
    const bc_generate_result res_before = res;
    const char *prompt = "The capital of France is";
    callback_calls = 0;

    CHECK_ERR(bc_generate(NULL, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_generate(ctx, NULL, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_generate(ctx, "", &gp, &sp, &res), BC_E_INVALID_ARGUMENT);

    /* Invalid sampling parameters. */
    sp.top_p = 0.0f;
    CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    sp.top_p = 1.5f;
    CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.temperature = -1.0f;
    CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    sp.temperature = (float)NAN;
    CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.top_k = -1;
    CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.min_p = 2.0f;
    CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.repetition_penalty = 0.0f;
    CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    sp.struct_size = 0;
    CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));

    /* Invalid generate parameters. */
    gp.struct_size = 0;
    CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    gp.struct_size = sizeof gp;
    gp.seq_id = -1;
    CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    gp.seq_id = 0;
    gp.max_tokens = -1;
    CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    /* Prompt (5 tokens) + max_tokens beyond n_ctx = 64. */
    gp.max_tokens = 60;
    CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    gp.max_tokens = 4;

    /* Result with struct_size 0. */
    {
        bc_generate_result r0;
        memset(&r0, 0, sizeof r0);
        CHECK_ERR(bc_generate(ctx, prompt, &gp, &sp, &r0), BC_E_INVALID_ARGUMENT);
        CHECK(r0.generated_tokens == 0 && r0.prompt_tokens == 0);
    }

    CHECK(memcmp(&res, &res_before, sizeof res) == 0);
    CHECK(callback_calls == 0);
    CHECK(seq_len(ctx, 0) == 0);

    /* The same call with valid arguments works (and fits exactly: 5 + 59 = 64). */
    sp.temperature = 0.0f;
    gp.max_tokens = 59;
    gp.stop_at_eog = 0;
    CHECK_OK(bc_generate(ctx, prompt, &gp, &sp, &res));
    CHECK(res.struct_size == sizeof res);
    CHECK(res.prompt_tokens == 5 && res.generated_tokens == 59 && res.stop_reason == 0);
    CHECK(callback_calls >= 59);
    /* The sequence is full now: one more token does not fit. */
    gp.max_tokens = 1;
    int32_t before = seq_len(ctx, 0);
    CHECK(before >= 63 && before <= 64);
    CHECK_ERR(bc_generate(ctx, " and", &gp, &sp, &res), BC_E_INVALID_ARGUMENT);
    CHECK(seq_len(ctx, 0) == before);
    bc_context_free(ctx);
}

/* A context keeps its model alive after bc_model_free. */
/* Native weights keep the Q4_1/Q8_0 blocks: bc_model_info says so, and holds about the
 * file's bytes; float32 weights hold 4 bytes per parameter. Same hyperparameters. */
static void test_weights(const char *model_path) {
    bc_model *native = NULL, *f32 = NULL;
    bc_model_params mp;
    CHECK_OK(bc_model_params_default(&mp, sizeof mp));
    CHECK_OK(bc_model_load(model_path, &mp, &native));
    mp.weights = BC_MODEL_WEIGHTS_F32;
    CHECK_OK(bc_model_load(model_path, &mp, &f32));
    if (!native || !f32) { bc_model_free(native); bc_model_free(f32); return; }
    bc_model_info a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.struct_size = b.struct_size = sizeof a;
    CHECK_OK(bc_model_get_info(native, &a));
    CHECK_OK(bc_model_get_info(f32, &b));
    CHECK(a.n_params == b.n_params && a.n_layer == b.n_layer);
    CHECK(b.weight_bytes == a.n_params * 4);
    CHECK(a.weight_bytes > 0 && a.weight_bytes < b.weight_bytes / 4);
    CHECK(strstr(a.weight_types, "Q4_1:") != NULL && strstr(a.weight_types, "Q8_0:") != NULL);
    CHECK(strncmp(b.weight_types, "F32:", 4) == 0 && strchr(b.weight_types, ' ') == NULL);
    /* An older caller's shorter bc_model_info: the new fields are not written. */
    {
        unsigned char raw[sizeof(bc_model_info) + 8];
        memset(raw, 0xa5, sizeof raw);
        uint32_t old = (uint32_t)offsetof(bc_model_info, weight_bytes);
        memcpy(raw, &old, 4);
        CHECK_OK(bc_model_get_info(native, (bc_model_info *)(void *)raw));
        for (size_t i = old; i < sizeof raw; i++) CHECK(raw[i] == 0xa5);
    }
    bc_model_free(native);
    bc_model_free(f32);
}

static void test_lifetime(const char *model_path) {
    bc_model *m = NULL;
    CHECK_OK(bc_model_load(model_path, NULL, &m));
    if (!m) return;
    bc_context *ctx = NULL;
    CHECK_OK(bc_context_create(m, NULL, &ctx));
    bc_model_free(m);
    if (!ctx) return;
    bc_generate_params gp;
    bc_sampling_params sp;
    CHECK_OK(bc_generate_params_default(&gp, sizeof gp));
    CHECK_OK(bc_sampling_params_default(&sp, sizeof sp));
    gp.max_tokens = 2;
    sp.temperature = 0;
    CHECK_OK(bc_generate(ctx, "Hello", &gp, &sp, NULL));
    CHECK(seq_len(ctx, 0) >= 2);
    bc_context_free(ctx);
}

int main(int argc, char **argv) {
    char model_path[4096];
    int rc = model_path_from_args(argc, argv, model_path, sizeof model_path);
    if (rc) return rc;
    test_defaults();
    test_load_errors(model_path);
    bc_model *model = NULL;
    CHECK_OK(bc_model_load(model_path, NULL, &model));
    if (!model) {
        fprintf(stderr, "FAIL: cannot load %s\n", model_path);
        return 1;
    }
    test_info_errors(model);
    test_tokenize_errors(model);
    test_detokenize_errors(model);
    test_chat_errors(model);
    test_context_errors(model);
    test_decode_errors(model);
    test_generate_errors(model);
    test_lifetime(model_path);
    test_weights(model_path);
    bc_model_free(model);
    CHECK_DONE();
}
