/* KV-cache C ABI with invalid arguments: sequence fork, prefix attach, KV stats,
 * context creation with bad KV layouts, and sequence state save/load. Every failure
 * returns the documented status with a message and leaves outputs and sequences as
 * they were. Needs the default model: its path is read from
 * <fixtures>/../../build/stage/model-path (written by `make test-c`). */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "forge.h"
#include "decode_seq.h"
#include "model_path.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */


/* A pointer value that is never a real handle: outputs must keep it on failure. */
static int sentinel_storage;
#define SENTINEL_CTX ((bc_context *)(void *)&sentinel_storage)

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

/* Decodes n tokens of one sequence starting at `start` (logits of the last token). */
static bc_status decode(bc_context *ctx, int32_t seq, int32_t start, const int32_t *toks, int32_t n, float *logits) {
    return decode_seq(ctx, seq, start, toks, n, logits, 0, n_vocab);
}

/* Deterministic in-vocabulary tokens. */
static void make_tokens(int32_t *t, int32_t n, int32_t salt) {
    for (int32_t i = 0; i < n; i++) t[i] = 1000 + (int32_t)(((int64_t)i * 7919 + (int64_t)salt * 104729) % 20000);
}


/* ---------------------------------------------------------------- fork / attach / stats */

static void test_fork_attach_stats(bc_model *model, float *logits) {
    bc_context *ctx = NULL;
    CHECK_OK(bc_context_create(model, NULL, &ctx));
    if (!ctx) return;
    int32_t toks[20];
    make_tokens(toks, 20, 1);
    CHECK_OK(decode(ctx, 0, 0, toks, 20, logits));
    CHECK(seq_len(ctx, 0) == 20);

    /* bc_context_seq_fork */
    CHECK_ERR(bc_context_seq_fork(NULL, 0, 1), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_fork(ctx, -1, 1), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_fork(ctx, 0, -1), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_fork(ctx, 7, 1), BC_E_INVALID_ARGUMENT); /* unknown parent */
    CHECK(seq_len(ctx, 1) == 0);
    CHECK_OK(bc_context_seq_fork(ctx, 0, 1));
    CHECK(seq_len(ctx, 1) == 20);
    CHECK_ERR(bc_context_seq_fork(ctx, 0, 1), BC_E_INVALID_ARGUMENT); /* existing child */
    CHECK_ERR(bc_context_seq_fork(ctx, 0, 0), BC_E_INVALID_ARGUMENT); /* itself */
    CHECK(seq_len(ctx, 0) == 20 && seq_len(ctx, 1) == 20);
    {
        bc_kv_stats s = kv_stats(ctx);
        CHECK(s.sequences == 2 && s.tokens == 40);
    }

    /* bc_context_seq_attach_prefix */
    int32_t cached = 777;
    CHECK_ERR(bc_context_seq_attach_prefix(NULL, 2, toks, 20, &cached), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_attach_prefix(ctx, 2, NULL, 20, &cached), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_attach_prefix(ctx, 2, toks, 20, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_attach_prefix(ctx, 2, toks, 0, &cached), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_attach_prefix(ctx, 2, toks, -5, &cached), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_attach_prefix(ctx, -1, toks, 20, &cached), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_attach_prefix(ctx, 0, toks, 20, &cached), BC_E_BAD_STATE); /* not empty */
    {
        int32_t bad[3] = {toks[0], n_vocab, toks[2]};
        CHECK_ERR(bc_context_seq_attach_prefix(ctx, 2, bad, 3, &cached), BC_E_INVALID_ARGUMENT);
        bad[1] = -3;
        CHECK_ERR(bc_context_seq_attach_prefix(ctx, 2, bad, 3, &cached), BC_E_INVALID_ARGUMENT);
    }
    CHECK(cached == 777);
    CHECK(seq_len(ctx, 0) == 20);
    CHECK(kv_stats(ctx).sequences == 2);
    CHECK_OK(bc_context_seq_attach_prefix(ctx, 2, toks, 20, &cached));
    CHECK(cached == 16); /* one whole block of the 20 cached tokens, <= n - 1 */

    /* bc_context_kv_stats */
    bc_kv_stats st;
    memset(&st, 0x5a, sizeof st);
    st.struct_size = sizeof st;
    CHECK_ERR(bc_context_kv_stats(NULL, &st), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_kv_stats(ctx, NULL), BC_E_INVALID_ARGUMENT);
    st.struct_size = 0;
    CHECK_ERR(bc_context_kv_stats(ctx, &st), BC_E_INVALID_ARGUMENT);
    CHECK(st.blocks_total == (int64_t)0x5a5a5a5a5a5a5a5aLL);
    /* An older caller's shorter struct: only its bytes are written. */
    st.struct_size = (uint32_t)offsetof(bc_kv_stats, blocks_used);
    CHECK_OK(bc_context_kv_stats(ctx, &st));
    CHECK(st.blocks_total > 0 && st.blocks_used == (int64_t)0x5a5a5a5a5a5a5a5aLL);
    bc_context_free(ctx);
}

/* ---------------------------------------------------------------- create */

static void test_create_errors(bc_model *model) {
    bc_context *ctx = SENTINEL_CTX;
    bc_context_params cp;
    int32_t *window = (int32_t *)calloc((size_t)n_layer, sizeof(int32_t));
    int32_t *share = (int32_t *)malloc((size_t)n_layer * sizeof(int32_t));
    if (!window || !share) {
        CHECK(!"out of memory");
        free(window);
        free(share);
        return;
    }
    for (int32_t l = 0; l < n_layer; l++) share[l] = -1;

    /* layer_window negative */
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    window[3] = -1;
    cp.layer_window = window;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    CHECK(ctx == SENTINEL_CTX);
    window[3] = 0;

    /* layer_share: itself, a later layer, a layer that itself shares, out of range */
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    cp.layer_share = share;
    share[2] = 2;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    share[2] = 5;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    share[2] = 1;
    share[3] = 2;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    share[3] = -1;
    share[2] = n_layer;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    CHECK(ctx == SENTINEL_CTX);
    share[2] = -2; /* only -1 means "stores its own"; other negative values are out of range */
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    CHECK(ctx == SENTINEL_CTX);
    if (ctx != SENTINEL_CTX) {
        bc_context_free(ctx);
        ctx = SENTINEL_CTX;
    }
    share[2] = -1;

    /* kv_type */
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    cp.kv_type = 99;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    cp.kv_type = -1;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    CHECK(ctx == SENTINEL_CTX);

    /* block_size */
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    cp.block_size = 0;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    cp.block_size = -16;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    cp.block_size = 1 << 20;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    CHECK(ctx == SENTINEL_CTX);

    /* kv_bytes smaller than one block (of every layer group) */
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    cp.kv_bytes = 1000;
    CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
    CHECK(ctx == SENTINEL_CTX);
    {
        /* One block exactly is enough; one byte less is not. */
        bc_context *probe = NULL;
        CHECK_OK(bc_context_create(model, NULL, &probe));
        if (probe) {
            bc_kv_stats s = kv_stats(probe);
            bc_context_free(probe);
            cp.kv_bytes = s.bytes_per_token * cp.block_size;
            CHECK_OK(bc_context_create(model, &cp, &probe));
            bc_context_free(probe);
            cp.kv_bytes -= 1;
            CHECK_ERR(bc_context_create(model, &cp, &ctx), BC_E_INVALID_ARGUMENT);
            CHECK(ctx == SENTINEL_CTX);
        }
    }
    free(window);
    free(share);
}

/* ---------------------------------------------------------------- sequence state */

static void test_state_errors(bc_model *model, float *logits) {
    bc_context *ctx = NULL;
    CHECK_OK(bc_context_create(model, NULL, &ctx));
    if (!ctx) return;
    int32_t toks[40];
    make_tokens(toks, 40, 2);
    CHECK_OK(decode(ctx, 0, 0, toks, 40, logits));

    /* bc_context_seq_state_size */
    size_t size = 4242;
    CHECK_ERR(bc_context_seq_state_size(NULL, 0, &size), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_state_size(ctx, 0, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_state_size(ctx, -1, &size), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_state_size(ctx, 9, &size), BC_E_NOT_FOUND);
    CHECK(size == 4242);
    CHECK_OK(bc_context_seq_state_size(ctx, 0, &size));
    CHECK(size > 40 * 4);

    unsigned char *buf = (unsigned char *)malloc(size + 64);
    unsigned char *copy = (unsigned char *)malloc(size + 64);
    if (!buf || !copy) {
        CHECK(!"out of memory");
        free(buf);
        free(copy);
        bc_context_free(ctx);
        return;
    }

    /* bc_context_seq_save_buffer */
    size_t written = 999;
    memset(buf, 0xab, size + 64);
    CHECK_ERR(bc_context_seq_save_buffer(NULL, 0, buf, size, &written), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_save_buffer(ctx, 0, NULL, size, &written), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_save_buffer(ctx, -1, buf, size, &written), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_save_buffer(ctx, 9, buf, size, &written), BC_E_NOT_FOUND);
    CHECK_ERR(bc_context_seq_save_buffer(ctx, 0, buf, size - 1, &written), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_save_buffer(ctx, 0, buf, 0, &written), BC_E_INVALID_ARGUMENT);
    CHECK(written == 999 && buf[0] == 0xab && buf[size - 1] == 0xab);
    CHECK_OK(bc_context_seq_save_buffer(ctx, 0, buf, size + 64, &written));
    CHECK(written == size);
    CHECK(buf[size] == 0xab); /* nothing past the state */
    CHECK_OK(bc_context_seq_save_buffer(ctx, 0, buf, size, NULL));
    CHECK(seq_len(ctx, 0) == 40);

    /* bc_context_seq_load_buffer: arguments */
    CHECK_ERR(bc_context_seq_load_buffer(NULL, 1, buf, size), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, NULL, size), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_load_buffer(ctx, -1, buf, size), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, buf, 0), BC_E_INVALID_ARGUMENT);
    /* Into a sequence that is not empty. */
    CHECK_ERR(bc_context_seq_load_buffer(ctx, 0, buf, size), BC_E_BAD_STATE);
    CHECK(seq_len(ctx, 0) == 40);

    /* Corrupt states: bit flips anywhere, truncation, trailing bytes. */
    {
        const size_t spots[] = {0, 7, 8, 12, 20, 40, 60, 100, 200, 300, 400, size / 3, size / 2, size - 5, size - 4, size - 1};
        for (size_t i = 0; i < sizeof spots / sizeof spots[0]; i++) {
            if (spots[i] >= size) continue;
            memcpy(copy, buf, size);
            copy[spots[i]] ^= (unsigned char)(1u << (i % 8));
            CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, copy, size), BC_E_FORMAT);
        }
        for (size_t cut = 1; cut < size; cut = cut * 3 + 1)
            CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, buf, cut), BC_E_FORMAT);
        CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, buf, size - 1), BC_E_FORMAT);
        memcpy(copy, buf, size);
        copy[size] = 0;
        CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, copy, size + 1), BC_E_FORMAT);
        CHECK(seq_len(ctx, 1) == 0);
        CHECK(kv_stats(ctx).sequences == 1);
    }

    /* Forged states with a correct checksum but invalid content. The token array
     * starts after magic(8) version(4) fingerprint(4*7 + 8*n_layer) adapter(8) length(4). */
    {
        const size_t tok0 = 8 + 4 + 28 + 8 * (size_t)n_layer + 8 + 4;
        CHECK(get_u32(buf + tok0 - 4) == 40);
        CHECK(get_u32(buf + tok0) == (uint32_t)toks[0]);
        /* version 2 */
        memcpy(copy, buf, size);
        put_u32(copy + 8, 2);
        reseal(copy, size);
        CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, copy, size), BC_E_FORMAT);
        /* a token outside the vocabulary */
        memcpy(copy, buf, size);
        put_u32(copy + tok0 + 4 * 5, (uint32_t)n_vocab);
        reseal(copy, size);
        CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, copy, size), BC_E_FORMAT);
        /* a length that does not match the rows */
        memcpy(copy, buf, size);
        put_u32(copy + tok0 - 4, 39);
        reseal(copy, size);
        CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, copy, size), BC_E_FORMAT);
        /* a NaN key */
        memcpy(copy, buf, size);
        put_u32(copy + tok0 + 4 * 40 + 4 + 4 * 7, 0x7fc00000u);
        reseal(copy, size);
        CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, copy, size), BC_E_FORMAT);
        /* a different model fingerprint (n_vocab) */
        memcpy(copy, buf, size);
        put_u32(copy + 12, (uint32_t)n_vocab + 1);
        reseal(copy, size);
        CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, copy, size), BC_E_FORMAT);
        /* a full layer that claims to start at position 16 */
        memcpy(copy, buf, size);
        put_u32(copy + tok0 + 4 * 40, 16);
        reseal(copy, size);
        CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, copy, size), BC_E_FORMAT);
        CHECK(seq_len(ctx, 1) == 0);
        CHECK(kv_stats(ctx).sequences == 1);
    }

    /* The intact state loads into an empty sequence (also one emptied by truncate). */
    CHECK_OK(bc_context_seq_load_buffer(ctx, 1, buf, size));
    CHECK(seq_len(ctx, 1) == 40);
    CHECK_ERR(bc_context_seq_load_buffer(ctx, 1, buf, size), BC_E_BAD_STATE);
    CHECK_OK(bc_context_seq_truncate(ctx, 1, 0));
    CHECK_OK(bc_context_seq_load_buffer(ctx, 1, buf, size));
    CHECK(seq_len(ctx, 1) == 40);

    /* bc_context_seq_save / bc_context_seq_load */
    char path[64];
    snprintf(path, sizeof path, "/tmp/bc_test_kv_args_%ld.state", (long)getpid());
    CHECK_ERR(bc_context_seq_save(NULL, 0, path), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_save(ctx, 0, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_save(ctx, -1, path), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_save(ctx, 9, path), BC_E_NOT_FOUND);
    CHECK(access(path, F_OK) != 0);
    CHECK_ERR(bc_context_seq_save(ctx, 0, "/nonexistent-dir/x/state"), BC_E_IO);
    CHECK_OK(bc_context_seq_save(ctx, 0, path));
    CHECK_ERR(bc_context_seq_load(NULL, 2, path), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_load(ctx, 2, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_load(ctx, -1, path), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_context_seq_load(ctx, 2, "/nonexistent-dir/x/state"), BC_E_IO);
    CHECK_ERR(bc_context_seq_load(ctx, 2, "/tmp"), BC_E_IO); /* a directory */
    CHECK_ERR(bc_context_seq_load(ctx, 0, path), BC_E_BAD_STATE);
    {
        /* A corrupted file (one flipped byte in the rows) and a truncated one. */
        FILE *f = fopen(path, "r+b");
        CHECK(f != NULL);
        if (f) {
            fseek(f, (long)(size / 2), SEEK_SET);
            fputc(buf[size / 2] ^ 0x10, f);
            fclose(f);
        }
        CHECK_ERR(bc_context_seq_load(ctx, 2, path), BC_E_FORMAT);
        f = fopen(path, "wb");
        CHECK(f != NULL);
        if (f) {
            fwrite(buf, 1, size / 2, f);
            fclose(f);
        }
        CHECK_ERR(bc_context_seq_load(ctx, 2, path), BC_E_FORMAT);
        f = fopen(path, "wb");
        if (f) fclose(f); /* empty */
        CHECK_ERR(bc_context_seq_load(ctx, 2, path), BC_E_FORMAT);
        CHECK(seq_len(ctx, 2) == 0);
    }
    CHECK_OK(bc_context_seq_save(ctx, 0, path));
    CHECK_OK(bc_context_seq_load(ctx, 2, path));
    CHECK(seq_len(ctx, 2) == 40);
    unlink(path);
    bc_context_free(ctx);

    /* A context with a different KV layout rejects the state: BC_E_FORMAT. */
    {
        bc_context_params cp;
        int32_t *window = (int32_t *)calloc((size_t)n_layer, sizeof(int32_t));
        int32_t *share = (int32_t *)malloc((size_t)n_layer * sizeof(int32_t));
        for (int variant = 0; variant < 4 && window && share; variant++) {
            CHECK_OK(bc_context_params_default(&cp, sizeof cp));
            for (int32_t l = 0; l < n_layer; l++) {
                window[l] = 0;
                share[l] = -1;
            }
            if (variant == 0) cp.kv_type = BC_KV_F16;
            if (variant == 1) cp.block_size = 32;
            if (variant == 2) {
                window[1] = 64;
                cp.layer_window = window;
            }
            if (variant == 3) {
                share[1] = 0;
                cp.layer_share = share;
            }
            bc_context *other = NULL;
            CHECK_OK(bc_context_create(model, &cp, &other));
            if (!other) continue;
            CHECK_ERR(bc_context_seq_load_buffer(other, 0, buf, size), BC_E_FORMAT);
            CHECK(seq_len(other, 0) == 0);
            CHECK(kv_stats(other).sequences == 0);
            bc_context_free(other);
        }
        free(window);
        free(share);
    }

    /* No room: a one-block budget, and an n_ctx shorter than the state. */
    {
        bc_context_params cp;
        bc_context *small = NULL;
        CHECK_OK(bc_context_params_default(&cp, sizeof cp));
        CHECK_OK(bc_context_create(model, &cp, &small));
        int64_t bpt = small ? kv_stats(small).bytes_per_token : 0;
        bc_context_free(small);
        small = NULL;
        cp.kv_bytes = bpt * 16;
        CHECK_OK(bc_context_create(model, &cp, &small));
        if (small) {
            CHECK_ERR(bc_context_seq_load_buffer(small, 3, buf, size), BC_E_KV_FULL);
            CHECK(seq_len(small, 3) == 0);
            bc_kv_stats s = kv_stats(small);
            CHECK(s.sequences == 0 && s.blocks_used == 0);
            bc_context_free(small);
        }
        CHECK_OK(bc_context_params_default(&cp, sizeof cp));
        cp.n_ctx = 32;
        small = NULL;
        CHECK_OK(bc_context_create(model, &cp, &small));
        if (small) {
            CHECK_ERR(bc_context_seq_load_buffer(small, 3, buf, size), BC_E_KV_FULL);
            CHECK(kv_stats(small).sequences == 0);
            bc_context_free(small);
        }
    }
    free(buf);
    free(copy);
}

int main(int argc, char **argv) {
    bc_model *model;
    bc_model_info info;
    int rc = load_default_model(argc, argv, &model, &info);
    if (rc) return rc;
    n_vocab = info.n_vocab;
    n_layer = info.n_layer;
    CHECK(n_vocab > 0 && n_layer >= 4);
    float *logits = (float *)malloc((size_t)n_vocab * sizeof(float));
    if (!logits || n_layer < 4) {
        free(logits);
        bc_model_free(model);
        CHECK_DONE();
    }
    test_fork_attach_stats(model, logits);
    test_create_errors(model);
    test_state_errors(model, logits);
    free(logits);
    bc_model_free(model);
    CHECK_DONE();
}
