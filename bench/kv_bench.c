/* batchcore KV-cache benchmark, through the public C ABI only.
 *   kv_bench MODEL.gguf TEXT [--threads N] [--budget-mb MB] [--parts capacity,ttft,ppl]
 *            [--requests N] [--system N] [--suffix N] [--chunk N] [--seed S]
 * (a) capacity: how many sequences of a seeded length mix fit in one KV budget, paged
 *     (measured: sequences are decoded until BC_E_KV_FULL) vs one contiguous
 *     max-length buffer per sequence (computed from the same bytes per token);
 * (b) time to first token of N requests sharing a system prompt, prefix cache on/off;
 * (c) perplexity of TEXT (first line, a '#' comment, skipped) under several KV configs.
 * Prints RESULT lines (rendered by bench/kv_table.py). */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"
#include <batchcore.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>






static double rng_uniform(void) { return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0); }

static bc_model *model;
static bc_model_info info;
static int threads = 2;

static bc_kv_stats kv_stats(bc_context *ctx) {
    bc_kv_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK(bc_context_kv_stats(ctx, &s));
    return s;
}

/* Decodes tokens[0..n) as positions start.. of sequence seq in one call; logits for the
 * last token only (into `logits`, n_vocab floats). */
static bc_status decode_run(bc_context *ctx, int32_t seq, const int32_t *tokens, int n, int start, float *logits,
                            int32_t *pos_buf, int32_t *seq_buf) {
    for (int i = 0; i < n; i++) { pos_buf[i] = start + i; seq_buf[i] = seq; }
    bc_batch b = {sizeof b, 0, NULL, NULL, NULL, NULL};
    b.n_tokens = n; b.tokens = tokens; b.pos = pos_buf; b.seq_id = seq_buf; b.logits = NULL;
    return bc_decode(ctx, &b, logits, (size_t)info.n_vocab);
}

/* ------------------------------------------------------------------------- */
/* (a) capacity                                                              */
/* ------------------------------------------------------------------------- */
static void bench_capacity(int64_t budget_mb, int chunk, uint64_t seed) {
    const int max_prompt = 1500, min_prompt = 50, max_out = 500, min_out = 20, n_ctx = 2048;
    const double skew = 2.5; /* length = min + (max-min) * u^skew: many short, few long (mean ~620) */
    enum { N_SAMPLE = 4096 };
    int *len = xmalloc(sizeof(int) * N_SAMPLE);
    rng_state = seed;
    for (int i = 0; i < N_SAMPLE; i++) {
        int p = min_prompt + (int)floor((max_prompt - min_prompt) * pow(rng_uniform(), skew));
        int o = min_out + (int)floor((max_out - min_out) * pow(rng_uniform(), skew));
        len[i] = p + o;
    }
    double mix_mean = 0;
    for (int i = 0; i < N_SAMPLE; i++) mix_mean += len[i];
    mix_mean /= N_SAMPLE;

    bc_context_params cp;
    CHECK(bc_context_params_default(&cp, sizeof cp));
    cp.n_ctx = n_ctx;
    cp.kv_bytes = budget_mb << 20;
    cp.kv_type = BC_KV_F32;
    cp.block_size = 16;
    cp.prefix_cache = 0; /* distinct random prompts: nothing to share; measure pure paging */
    bc_context *ctx;
    CHECK(bc_context_create(model, &cp, &ctx));
    bc_kv_stats s0 = kv_stats(ctx);

    float *logits = xmalloc(sizeof(float) * (size_t)info.n_vocab);
    int32_t *tok = xmalloc(sizeof(int32_t) * (size_t)chunk), *pos = xmalloc(sizeof(int32_t) * (size_t)chunk),
            *sq = xmalloc(sizeof(int32_t) * (size_t)chunk);
    bc_kv_stats last = s0;
    int fitted = 0, failed_at = -1;
    int64_t stored_tokens = 0;
    double t0 = now();
    for (int i = 0; i < N_SAMPLE && failed_at < 0; i++) {
        int done = 0;
        while (done < len[i]) {
            int n = len[i] - done < chunk ? len[i] - done : chunk;
            for (int k = 0; k < n; k++) tok[k] = (int32_t)(200 + rng_next() % (uint64_t)(info.n_vocab - 400));
            bc_status st = decode_run(ctx, i, tok, n, done, logits, pos, sq);
            if (st == BC_E_KV_FULL) { failed_at = done; break; }
            if (st != BC_OK) { fprintf(stderr, "bc_decode: %s: %s\n", bc_status_string(st), bc_last_error()); exit(1); }
            done += n;
        }
        if (failed_at >= 0) {
            fprintf(stderr, "capacity: sequence %d (length %d) hit BC_E_KV_FULL after %d tokens\n", i, len[i], failed_at);
            failed_at = i;
            break;
        }
        fitted++;
        stored_tokens += len[i];
        last = kv_stats(ctx);
    }
    double secs = now() - t0;
    double fit_mean = fitted ? (double)stored_tokens / fitted : 0;
    int64_t bpt = s0.bytes_per_token;
    int64_t budget = cp.kv_bytes;
    double waste = last.bytes_used > 0 ? 100.0 * (double)(last.bytes_used - last.tokens * bpt) / (double)last.bytes_used : 0;
    printf("RESULT part=capacity alloc=paged budget_mb=%lld kv=f32 block=16 bytes_per_token=%lld seqs=%d tokens=%lld "
           "mean_len=%.1f mix_mean=%.1f bytes_used=%lld bytes_stored=%lld blocks_used=%lld blocks_total=%lld "
           "waste_pct=%.2f secs=%.1f\n",
           (long long)budget_mb, (long long)bpt, fitted, (long long)last.tokens, fit_mean, mix_mean,
           (long long)last.bytes_used, (long long)(last.tokens * bpt), (long long)last.blocks_used,
           (long long)last.blocks_total, waste, secs);
    /* One contiguous n_ctx-position buffer per sequence, sized from the same bytes per token. */
    int64_t per_seq = (int64_t)n_ctx * bpt;
    int contiguous = (int)(budget / per_seq);
    int64_t c_stored = 0;
    for (int i = 0; i < contiguous && i < N_SAMPLE; i++) c_stored += len[i];
    double c_waste = contiguous ? 100.0 * (double)(contiguous * per_seq - c_stored * bpt) / (double)(contiguous * per_seq) : 0;
    printf("RESULT part=capacity alloc=contiguous budget_mb=%lld kv=f32 n_ctx=%d bytes_per_token=%lld bytes_per_seq=%lld "
           "seqs=%d tokens=%lld waste_pct=%.2f\n",
           (long long)budget_mb, n_ctx, (long long)bpt, (long long)per_seq, contiguous, (long long)c_stored, c_waste);
    /* Reference: exact token bytes, no block rounding (the same sequences, in order). */
    int ideal = 0;
    int64_t acc = 0;
    while (ideal < N_SAMPLE && (acc + len[ideal]) * bpt <= budget) acc += len[ideal++];
    printf("RESULT part=capacity alloc=exact budget_mb=%lld bytes_per_token=%lld seqs=%d tokens=%lld\n",
           (long long)budget_mb, (long long)bpt, ideal, (long long)acc);
    fflush(stdout);
    bc_context_free(ctx);
    free(len); free(logits); free(tok); free(pos); free(sq);
}

/* ------------------------------------------------------------------------- */
/* (b) time to first token with a shared system prompt                       */
/* ------------------------------------------------------------------------- */
static void bench_ttft(const int32_t *text, int n_text, int requests, int sys_len, int suffix) {
    if (sys_len + requests * suffix > n_text) {
        fprintf(stderr, "ttft: text too short (%d tokens) for %d + %d x %d\n", n_text, sys_len, requests, suffix);
        exit(1);
    }
    int plen = sys_len + suffix;
    int32_t *prompt = xmalloc(sizeof(int32_t) * (size_t)plen), *pos = xmalloc(sizeof(int32_t) * (size_t)plen),
            *sq = xmalloc(sizeof(int32_t) * (size_t)plen);
    float *logits = xmalloc(sizeof(float) * (size_t)info.n_vocab);
    double *ttft = xmalloc(sizeof(double) * (size_t)requests);
    /* Warm-up (thread pool, page faults) in a throwaway context, on text the requests never use. */
    {
        bc_context_params cp;
        CHECK(bc_context_params_default(&cp, sizeof cp));
        cp.n_ctx = 2048; cp.kv_bytes = 64ll << 20; cp.prefix_cache = 0;
        bc_context *w;
        CHECK(bc_context_create(model, &cp, &w));
        int n = n_text - (sys_len + requests * suffix);
        if (n > 256) n = 256;
        if (n > 0) CHECK(decode_run(w, 0, text + n_text - n, n, 0, logits, pos, sq));
        bc_context_free(w);
    }
    for (int cache = 1; cache >= 0; cache--) {
        bc_context_params cp;
        CHECK(bc_context_params_default(&cp, sizeof cp));
        cp.n_ctx = 2048;
        cp.kv_bytes = 256ll << 20;
        cp.prefix_cache = cache;
        bc_context *ctx;
        CHECK(bc_context_create(model, &cp, &ctx));
        double t_all = now();
        int64_t cached_total = 0;
        for (int r = 0; r < requests; r++) {
            memcpy(prompt, text, sizeof(int32_t) * (size_t)sys_len);
            memcpy(prompt + sys_len, text + sys_len + r * suffix, sizeof(int32_t) * (size_t)suffix);
            double t = now();
            int32_t n_cached = 0;
            if (cache) CHECK(bc_context_seq_attach_prefix(ctx, r, prompt, plen, &n_cached));
            CHECK(decode_run(ctx, r, prompt + n_cached, plen - n_cached, n_cached, logits, pos, sq));
            ttft[r] = now() - t;
            cached_total += n_cached;
            CHECK(bc_context_seq_remove(ctx, r)); /* the request finished */
        }
        double total = now() - t_all;
        bc_kv_stats st = kv_stats(ctx);
        double first = ttft[0], mean = 0;
        for (int r = 0; r < requests; r++) mean += ttft[r];
        mean /= requests;
        qsort(ttft, (size_t)requests, sizeof *ttft, cmp_double);
        printf("RESULT part=ttft prefix_cache=%d requests=%d system=%d suffix=%d threads=%d first_ms=%.1f mean_ms=%.1f "
               "p50_ms=%.1f p99_ms=%.1f min_ms=%.1f total_s=%.3f cached_tokens=%lld hit_tokens=%lld query_tokens=%lld\n",
               cache, requests, sys_len, suffix, threads, first * 1e3, mean * 1e3, pct(ttft, requests, 50) * 1e3,
               pct(ttft, requests, 99) * 1e3, ttft[0] * 1e3, total, (long long)cached_total,
               (long long)st.prefix_hit_tokens, (long long)st.prefix_query_tokens);
        fflush(stdout);
        bc_context_free(ctx);
    }
    free(prompt); free(pos); free(sq); free(logits); free(ttft);
}

/* ------------------------------------------------------------------------- */
/* (c) perplexity under KV configurations                                    */
/* ------------------------------------------------------------------------- */
static void bench_ppl(const int32_t *text, int n_text, int chunk) {
    const int L = info.n_layer;
    /* Layer configs (mode 1, 2, 3 below), each array n_layer entries:
     *  swa  : layers 0 and L-1 full attention, every other layer a 256-token sliding window;
     *  cla  : cross-layer KV sharing only: odd layer 2k+1 reads layer 2k's KV (all full);
     *  mix  : MixAttention-style (arXiv 2409.15012): swa's windows AND cla's sharing — the
     *         first and last layers attend fully with their own KV, layer 1 reads layer 0's
     *         full-attention KV, the other layers a 256-token window, 2k+1 reading 2k's KV.
     * Applied to the pretrained model as is (no fine-tuning for the new layout). */
    const int win = 256;
    int32_t *w_none = xmalloc(sizeof(int32_t) * (size_t)L), *s_none = xmalloc(sizeof(int32_t) * (size_t)L);
    int32_t *w_swa = xmalloc(sizeof(int32_t) * (size_t)L), *s_cla = xmalloc(sizeof(int32_t) * (size_t)L);
    int32_t *w_mix = xmalloc(sizeof(int32_t) * (size_t)L), *s_mix = xmalloc(sizeof(int32_t) * (size_t)L);
    for (int l = 0; l < L; l++) {
        w_none[l] = 0; s_none[l] = -1;
        w_swa[l] = (l == 0 || l == L - 1) ? 0 : win;
        s_cla[l] = (l % 2 == 1) ? l - 1 : -1;
        w_mix[l] = w_swa[l]; s_mix[l] = -1;
    }
    for (int l = 1; l < L - 1; l += 2) { s_mix[l] = l - 1; w_mix[l] = w_mix[l - 1]; }
    const int32_t *windows[4] = {NULL, w_swa, w_none, w_mix}, *shares[4] = {NULL, s_none, s_cla, s_mix};

    struct { const char *name; int kv_type; int mode; } cfg[] = {
        {"f32", 0, 0}, {"f16", 1, 0}, {"int8", 2, 0}, {"kivi4", 3, 0}, {"kivi2", 4, 0},
        {"swa256", 0, 1}, {"cla2", 0, 2}, {"mix", 0, 3},
    };
    const int n_cfg = (int)(sizeof cfg / sizeof cfg[0]);
    size_t cap = (size_t)chunk * (size_t)info.n_vocab;
    float *logits = xmalloc(sizeof(float) * cap);
    int32_t *pos = xmalloc(sizeof(int32_t) * (size_t)chunk), *sq = xmalloc(sizeof(int32_t) * (size_t)chunk);
    int8_t *want = xmalloc((size_t)chunk);
    for (int i = 0; i < chunk; i++) want[i] = 1;
    for (int c = 0; c < n_cfg; c++) {
        bc_context_params cp;
        CHECK(bc_context_params_default(&cp, sizeof cp));
        cp.n_ctx = n_text + 16;
        cp.kv_bytes = 512ll << 20;
        cp.kv_type = cfg[c].kv_type;
        cp.prefix_cache = 0;
        int mode = cfg[c].mode;
        if (mode) { cp.layer_window = windows[mode]; cp.layer_share = shares[mode]; }
        int storing = 0, storing_full = 0;
        for (int l = 0; l < L; l++) {
            int own = !mode || shares[mode][l] < 0;
            storing += own;
            storing_full += own && (!mode || windows[mode][l] == 0);
        }
        bc_context *ctx;
        bc_status st = bc_context_create(model, &cp, &ctx);
        if (st != BC_OK) {
            printf("RESULT part=ppl config=%s kv_type=%d status=unsupported error=%s\n", cfg[c].name, cfg[c].kv_type,
                   bc_status_string(st) /* may contain spaces: last field */);
            fprintf(stderr, "ppl %s: bc_context_create: %s\n", cfg[c].name, bc_last_error());
            fflush(stdout);
            continue;
        }
        double nll = 0;
        long count = 0;
        int64_t peak_used = 0;
        double t0 = now();
        for (int start = 0; start < n_text; start += chunk) {
            int n = n_text - start < chunk ? n_text - start : chunk;
            for (int i = 0; i < n; i++) { pos[i] = start + i; sq[i] = 0; }
            bc_batch b = {sizeof b, 0, NULL, NULL, NULL, NULL};
            b.n_tokens = n; b.tokens = text + start; b.pos = pos; b.seq_id = sq; b.logits = want;
            CHECK(bc_decode(ctx, &b, logits, cap));
            for (int i = 0; i < n; i++) {
                int t = start + i;
                if (t + 1 >= n_text) break;
                const float *row = logits + (size_t)i * (size_t)info.n_vocab;
                double mx = row[0];
                for (int v = 1; v < info.n_vocab; v++) if (row[v] > mx) mx = row[v];
                double sum = 0;
                for (int v = 0; v < info.n_vocab; v++) sum += exp((double)row[v] - mx);
                nll += (mx + log(sum)) - (double)row[text[t + 1]];
                count++;
            }
            bc_kv_stats s = kv_stats(ctx);
            if (s.bytes_used > peak_used) peak_used = s.bytes_used;
        }
        double secs = now() - t0;
        bc_kv_stats s = kv_stats(ctx);
        printf("RESULT part=ppl config=%s kv_type=%d status=ok tokens=%d scored=%ld nll=%.6f ppl=%.4f bytes_per_token=%lld "
               "bytes_used=%lld peak_bytes_used=%lld seq_tokens=%lld layers=%d storing=%d storing_full=%d window=%d secs=%.1f\n",
               cfg[c].name, cfg[c].kv_type, n_text, count, nll / count, exp(nll / count), (long long)s.bytes_per_token,
               (long long)s.bytes_used, (long long)peak_used, (long long)s.tokens, L, storing, storing_full,
               (mode == 1 || mode == 3) ? win : 0, secs);
        fflush(stdout);
        bc_context_free(ctx);
    }
    free(w_none); free(s_none); free(w_swa); free(s_cla); free(w_mix); free(s_mix); free(logits); free(pos); free(sq); free(want);
}

static int32_t *read_text_tokens(const char *path, int *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = xmalloc((size_t)sz + 1);
    if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) { perror(path); exit(1); }
    buf[sz] = 0;
    fclose(f);
    char *body = buf;
    if (body[0] == '#') { /* the source comment line */
        char *nl = strchr(body, '\n');
        body = nl ? nl + 1 : body + strlen(body);
    }
    size_t len = strlen(body), n = 0;
    CHECK(bc_tokenize(model, body, len, 0, 0, NULL, 0, &n));
    int32_t *tokens = xmalloc(sizeof(int32_t) * n);
    CHECK(bc_tokenize(model, body, len, 0, 0, tokens, n, &n));
    free(buf);
    *n_out = (int)n;
    return tokens;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: kv_bench MODEL.gguf TEXT [--threads N] [--budget-mb MB] [--parts capacity,ttft,ppl] "
                        "[--requests N] [--system N] [--suffix N] [--chunk N] [--seed S]\n");
        return 2;
    }
    int64_t budget_mb = 256;
    int requests = 32, sys_len = 512, suffix = 32, chunk = 512;
    uint64_t seed = 20251123;
    const char *parts = "capacity,ttft,ppl";
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--budget-mb")) budget_mb = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--parts")) parts = argv[i + 1];
        else if (!strcmp(argv[i], "--requests")) requests = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--system")) sys_len = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--suffix")) suffix = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--chunk")) chunk = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[i + 1], NULL, 10);
        else { fprintf(stderr, "kv_bench: unknown option %s\n", argv[i]); return 2; }
    }
    CHECK(bc_set_num_threads(threads));
    CHECK(bc_model_load(argv[1], NULL, &model));
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(bc_model_get_info(model, &info));
    int n_text;
    int32_t *text = read_text_tokens(argv[2], &n_text);
    printf("INFO n_layer=%d n_head=%d n_head_kv=%d n_embd=%d n_vocab=%d threads=%d text_tokens=%d\n", info.n_layer,
           info.n_head, info.n_head_kv, info.n_embd, info.n_vocab, threads, n_text);
    fflush(stdout);
    if (strstr(parts, "capacity")) bench_capacity(budget_mb, chunk, seed);
    if (strstr(parts, "ttft")) bench_ttft(text, n_text, requests, sys_len, suffix);
    if (strstr(parts, "ppl")) bench_ppl(text, n_text, chunk);
    free(text);
    bc_model_free(model);
    return 0;
}
