/* One sequence's tokens through bc_decode, for the C tests that drive the model
 * directly: positions start .. start+n-1 of sequence `seq`; logits of the last token
 * (all_logits = 0; bc_batch.logits = NULL) or of every token (out then holds n rows of
 * n_vocab floats). */
#ifndef BC_TEST_DECODE_SEQ_H
#define BC_TEST_DECODE_SEQ_H

#include <batchcore.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static bc_status decode_seq(bc_context *ctx, int32_t seq, int32_t start, const int32_t *toks, int32_t n, float *out,
                            int all_logits, int32_t n_vocab) {
    int32_t *pos = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    int32_t *sid = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    int8_t *want = all_logits ? (int8_t *)malloc((size_t)n) : NULL;
    if (!pos || !sid || (all_logits && !want)) {
        free(pos);
        free(sid);
        free(want);
        return BC_E_OUT_OF_MEMORY;
    }
    for (int32_t i = 0; i < n; i++) {
        pos[i] = start + i;
        sid[i] = seq;
        if (want) want[i] = 1;
    }
    bc_batch b;
    bc_batch_default(&b, sizeof b);
    b.n_tokens = n;
    b.tokens = toks;
    b.pos = pos;
    b.seq_id = sid;
    b.logits = want;
    bc_status st = bc_decode(ctx, &b, out, (size_t)(all_logits ? n : 1) * (size_t)n_vocab);
    free(pos);
    free(sid);
    free(want);
    return st;
}

/* max |a - b| <= rel * max |b| over n logits (and everything finite); says why not on stderr. */
static inline int logits_close(const float *a, const float *b, int32_t n, double rel, const char *what) {
    double maxdiff = 0, maxabs = 0;
    for (int32_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= maxdiff)) maxdiff = d != d ? INFINITY : d;
        if (fabs((double)b[i]) > maxabs) maxabs = fabs((double)b[i]);
    }
    int ok = maxabs > 0 && maxdiff <= rel * maxabs;
    if (!ok) fprintf(stderr, "%s: max |diff| %.3g vs max |logit| %.3g\n", what, maxdiff, maxabs);
    return ok;
}

#endif
