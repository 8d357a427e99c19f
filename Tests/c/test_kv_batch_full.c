/* A bc_decode batch of three sequences that fails with BC_E_KV_FULL in the middle
 * changes nothing (defect 2 of issue 11): the KV statistics are equal field by field,
 * every sequence keeps its length and existence (none appears), attach_prefix refuses
 * a non-empty sequence, and a sequence decoded afterwards (attached to the prefix cache)
 * gives the logits of a fresh context. Needs the default model (see model_path.h). */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "decode_seq.h"
#include "model_path.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static int32_t n_vocab = 0;

static bc_kv_stats kv_stats(const bc_context *ctx) {
    bc_kv_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK_OK(bc_context_kv_stats(ctx, &s));
    return s;
}

static int32_t seq_len(const bc_context *ctx, int32_t seq) {
    int32_t n = -12345;
    CHECK_OK(bc_context_seq_length(ctx, seq, &n));
    return n;
}

/* Whether the context knows sequence `seq`: only an existing sequence can be forked. */
static int seq_exists(bc_context *ctx, int32_t seq) {
    const int32_t probe = 999;
    if (bc_context_seq_fork(ctx, seq, probe) != BC_OK) return 0;
    CHECK_OK(bc_context_seq_remove(ctx, probe));
    return 1;
}

static int stats_equal(bc_kv_stats a, bc_kv_stats b) {
    int same = a.blocks_total == b.blocks_total && a.blocks_used == b.blocks_used &&
               a.blocks_cached == b.blocks_cached && a.blocks_free == b.blocks_free &&
               a.bytes_total == b.bytes_total && a.bytes_used == b.bytes_used &&
               a.bytes_per_token == b.bytes_per_token && a.sequences == b.sequences && a.tokens == b.tokens &&
               a.prefix_hit_tokens == b.prefix_hit_tokens && a.prefix_query_tokens == b.prefix_query_tokens;
    if (!same)
        fprintf(stderr, "stats differ: used %lld/%lld cached %lld/%lld free %lld/%lld sequences %lld/%lld tokens %lld/%lld\n",
                (long long)a.blocks_used, (long long)b.blocks_used, (long long)a.blocks_cached,
                (long long)b.blocks_cached, (long long)a.blocks_free, (long long)b.blocks_free,
                (long long)a.sequences, (long long)b.sequences, (long long)a.tokens, (long long)b.tokens);
    return same;
}

static void make_tokens(int32_t *t, int32_t n, int32_t salt) {
    for (int32_t i = 0; i < n; i++) t[i] = 1000 + (int32_t)(((int64_t)i * 7919 + (int64_t)salt * 104729) % 20000);
}

#define BLOCKS 6
#define LEN0 20   /* sequence 0: two blocks (the first full, so it is prefix-cached) */
#define LEN1 20   /* sequence 1 in the failing batch: two blocks */
#define LEN2 40   /* sequence 2 in the failing batch: three blocks, which do not fit */
#define NATT 24   /* the later prompt: sequence 0's tokens, then 4 of its own */

static void test_batch_full(bc_model *model) {
    bc_context_params cp;
    CHECK_OK(bc_context_params_default(&cp, sizeof cp));
    bc_context *ctx = NULL, *fresh = NULL;
    int32_t a[LEN0 + 1], b[LEN1], c[LEN2], att[NATT];
    int32_t n = 0, cached = -1;
    bc_kv_stats before;
    bc_batch batch;
    CHECK_OK(bc_context_create(model, &cp, &ctx));
    int64_t bpt = ctx ? kv_stats(ctx).bytes_per_token : 0;
    bc_context_free(ctx);
    ctx = NULL;
    cp.kv_bytes = bpt * cp.block_size * BLOCKS;
    CHECK_OK(bc_context_create(model, &cp, &ctx));
    CHECK_OK(bc_context_create(model, NULL, &fresh));
    float *logits = (float *)malloc((size_t)n_vocab * sizeof(float));
    float *want = (float *)malloc((size_t)n_vocab * sizeof(float));
    int32_t *tokens = (int32_t *)malloc((LEN0 + 1 + LEN1 + LEN2) * sizeof(int32_t));
    int32_t *pos = (int32_t *)malloc((LEN0 + 1 + LEN1 + LEN2) * sizeof(int32_t));
    int32_t *sid = (int32_t *)malloc((LEN0 + 1 + LEN1 + LEN2) * sizeof(int32_t));
    if (!ctx || !fresh || !logits || !want || !tokens || !pos || !sid || cp.block_size != 16) {
        CHECK(!"setup failed");
        goto done;
    }
    CHECK(kv_stats(ctx).blocks_total == BLOCKS);

    make_tokens(a, LEN0 + 1, 21);
    make_tokens(b, LEN1, 22);
    make_tokens(c, LEN2, 23);
    CHECK_OK(decode_seq(ctx, 0, 0, a, LEN0, logits, 0, n_vocab));
    before = kv_stats(ctx);
    CHECK(before.blocks_used == 2 && before.sequences == 1);

    /* One batch: seq 0 decodes one token (no new block), seq 1 prefills 20 (2 blocks,
     * they fit), seq 2 prefills 40 (3 blocks: 5 > the 4 left). */
    tokens[n] = a[LEN0], pos[n] = LEN0, sid[n] = 0, n++;
    for (int32_t i = 0; i < LEN1; i++) tokens[n] = b[i], pos[n] = i, sid[n] = 1, n++;
    for (int32_t i = 0; i < LEN2; i++) tokens[n] = c[i], pos[n] = i, sid[n] = 2, n++;
    CHECK_OK(bc_batch_default(&batch, sizeof batch));
    batch.n_tokens = n;
    batch.tokens = tokens;
    batch.pos = pos;
    batch.seq_id = sid;
    CHECK_ERR(bc_decode(ctx, &batch, logits, (size_t)n_vocab), BC_E_KV_FULL);

    /* Nothing changed. */
    CHECK(stats_equal(kv_stats(ctx), before));
    CHECK(seq_len(ctx, 0) == LEN0);
    CHECK(seq_len(ctx, 1) == 0);
    CHECK(seq_len(ctx, 2) == 0);
    CHECK(seq_exists(ctx, 0));
    CHECK(!seq_exists(ctx, 1));
    CHECK(!seq_exists(ctx, 2));

    /* attach_prefix refuses a sequence that holds positions. */
    CHECK_ERR(bc_context_seq_attach_prefix(ctx, 0, a, LEN0, &cached), BC_E_BAD_STATE);
    CHECK(cached == -1);
    CHECK(stats_equal(kv_stats(ctx), before));

    /* Sequence 1 now starts from sequence 0's cached first block and decodes the rest:
     * the logits of a fresh context computing the whole prompt. */
    for (int32_t i = 0; i < LEN0; i++) att[i] = a[i];
    for (int32_t i = LEN0; i < NATT; i++) att[i] = b[i];
    CHECK_OK(bc_context_seq_attach_prefix(ctx, 1, att, NATT, &cached));
    CHECK(cached == 16);
    if (cached >= 0 && cached < NATT) {
        CHECK_OK(decode_seq(ctx, 1, cached, att + cached, NATT - cached, logits, 0, n_vocab));
        CHECK(seq_len(ctx, 1) == NATT);
        CHECK_OK(decode_seq(fresh, 0, 0, att, NATT, want, 0, n_vocab));
        CHECK(logits_close(logits, want, n_vocab, 1e-5, "decode after a failed batch"));
    }
    /* The batch that failed fits once sequence 0 and 1 are gone. */
    CHECK_OK(bc_context_seq_remove(ctx, 0));
    CHECK_OK(bc_context_seq_remove(ctx, 1));
    CHECK_OK(decode_seq(ctx, 2, 0, c, LEN2, logits, 0, n_vocab));
    CHECK_OK(decode_seq(fresh, 2, 0, c, LEN2, want, 0, n_vocab));
    CHECK(logits_close(logits, want, n_vocab, 1e-5, "the failed sequence, decoded alone"));

done:
    bc_context_free(ctx);
    bc_context_free(fresh);
    free(logits);
    free(want);
    free(tokens);
    free(pos);
    free(sid);
}

int main(int argc, char **argv) {
    bc_model *model;
    bc_model_info info;
    int rc = load_default_model(argc, argv, &model, &info);
    if (rc) return rc;
    n_vocab = info.n_vocab;
    CHECK(n_vocab > 0);
    if (n_vocab > 0) test_batch_full(model);
    bc_model_free(model);
    CHECK_DONE();
}
