/* batchcore shared-prefix attention benchmark (Hydragen, issue #16): N requests sharing
 * a P-token prompt prefix, each with its own 16-64-token suffix, greedy, M output tokens
 * each, through one engine — with shared-prefix attention on
 * (bc_engine_params.shared_prefix_attention = 1) and off (0, the default: every row reads
 * its own keys/values),
 * interleaved in ONE process: on, off, off, on, ... (--rounds R pairs).
 *
 *   shared_prefix_bench MODEL.gguf [--requests N] [--prefix P] [--max-tokens M]
 *                       [--rounds R] [--threads T] [--text TEXT.txt] [--offline 0|1]
 *                       [--n S] [--temperature X] [--export FILE.json]
 *
 * --offline 1: the "on" runs also use offline batch mode (bc_engine_params.offline; the
 * issue's row (a)); "off" is always today's default (online, per-row attention: row (b)).
 * --n S: S parallel samples per request (bc_request_params.n; they share the prompt's
 * blocks), sampled at --temperature X (default 0.8 when S > 1, else greedy), seed = i.
 * --export: writes the N prompts (token ids) and M to FILE as JSON for
 * bench/shared_prefix_llama.py (llama.cpp one request at a time, row (c)).
 *
 * Each run: a fresh engine (F32 KV, 4 GiB budget, max_seqs N, max_batched_tokens
 * N + 512); one warm-up request (the prefix + 1 token, 1 output token) fills the prefix
 * cache, so the N requests submitted next all hit it (their prefix blocks are the same
 * physical blocks); then the engine steps until every request finished.
 * Reported per run: output tokens/s over the whole run (suffix prefill included) and in
 * the decode phase (from the step after which every request has its first token to the
 * end); the shared-prefix metrics (rows that shared, share of attention positions read
 * once instead of per row); a hash of all output tokens, and at the end how many
 * requests' outputs differ between on and off (on native quantized weights rounding
 * differences can flip a greedy token, see batchcore.h). Last line: the on/off ratio of
 * the medians.
 *
 * Prompt text: TEXT (default bench/pd_text.txt; its first line, a source note, is
 * skipped), repeated as needed: the prefix is its first P tokens, suffix i a slice of
 * 16 + (37 i mod 49) tokens at offset P + (131 i) mod (text length − P − 64).
 */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"
#include <batchcore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double tok_s, decode_tok_s;
    long long generated, shared_rows, positions, saved, fallbacks;
    uint64_t hash;
    uint64_t *per_request; /* each request's output hash (caller frees) */
} result;

static int32_t *tokens;
static size_t n_tokens;

static void load_text(bc_model *model, const char *path, int need) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    char *text = xmalloc(1 << 20);
    size_t len = fread(text, 1, (1 << 20) - 1, f);
    fclose(f);
    text[len] = '\0';
    char *body = strchr(text, '\n');
    body = body ? body + 1 : text;
    size_t body_len = strlen(body), n = 0;
    CHECK(bc_tokenize(model, body, body_len, 0, 0, NULL, 0, &n));
    int32_t *one = xmalloc(n * sizeof *one);
    CHECK(bc_tokenize(model, body, body_len, 0, 0, one, n, &n));
    if (n < 64) { fprintf(stderr, "text too short\n"); exit(1); }
    size_t copies = ((size_t)need + n - 1) / n + 1;
    tokens = xmalloc(copies * n * sizeof *tokens);
    for (size_t c = 0; c < copies; c++) memcpy(tokens + c * n, one, n * sizeof *one);
    n_tokens = copies * n;
    free(one);
    free(text);
}

static int offline_on, samples = 1;
static float temperature;

/* Suffix i of the prompt: `len` tokens at `off` (see the header comment). */
static void suffix(int i, int prefix, int *len, size_t *off) {
    size_t span = n_tokens - (size_t)prefix - 64;
    *len = 16 + (37 * i) % 49;
    *off = (size_t)prefix + (131u * (unsigned)i) % span;
}

static result run(bc_model *model, int shared, int n_req, int prefix, int max_tokens) {
    bc_engine_params ep;
    CHECK(bc_engine_params_default(&ep, sizeof ep));
    ep.kv_bytes = 4LL << 30;
    ep.max_seqs = n_req * samples;
    ep.max_batched_tokens = n_req * samples + 512;
    ep.shared_prefix_attention = shared;
    ep.offline = shared && offline_on;
    bc_engine *e;
    CHECK(bc_engine_create(model, &ep, &e));
    bc_sampling_params sp;
    CHECK(bc_sampling_params_default(&sp, sizeof sp));
    sp.temperature = 0;
    bc_request_params rp;
    CHECK(bc_request_params_default(&rp, sizeof rp));
    rp.ignore_eos = 1;
    uint64_t id;
    int32_t live = 1;
    bc_event ev[512];
    size_t got;

    /* Warm-up: the prefix into the prefix cache. */
    rp.max_tokens = 1;
    CHECK(bc_engine_submit(e, tokens, prefix + 1, &rp, &sp, &id));
    while (live > 0) CHECK(bc_engine_step(e, NULL, &live));
    do CHECK(bc_engine_poll(e, ev, 512, sizeof ev[0], &got)); while (got > 0);
    bc_engine_metrics m0 = {.struct_size = sizeof m0};
    CHECK(bc_engine_get_metrics(e, &m0));

    rp.max_tokens = max_tokens;
    rp.n = samples;
    sp.temperature = temperature;
    int32_t *prompt = xmalloc((size_t)(prefix + 64) * sizeof *prompt);
    memcpy(prompt, tokens, (size_t)prefix * sizeof *prompt);
    uint64_t *ids = xmalloc((size_t)n_req * sizeof *ids);
    int *first = calloc((size_t)n_req, sizeof *first);
    uint64_t *hash = calloc((size_t)n_req, sizeof *hash);
    for (int i = 0; i < n_req; i++) {
        int len;
        size_t off;
        suffix(i, prefix, &len, &off);
        memcpy(prompt + prefix, tokens + off, (size_t)len * sizeof *prompt);
        sp.seed = (uint64_t)i + 1;
        CHECK(bc_engine_submit(e, prompt, prefix + len, &rp, &sp, &ids[i]));
        hash[i] = 1469598103934665603ull;
    }
    double t0 = now(), t_decode = 0;
    long long generated = 0, decode_generated = 0;
    int started = 0;
    live = 1;
    while (live > 0) {
        CHECK(bc_engine_step(e, NULL, &live));
        int was_decoding = started == n_req;
        do {
            CHECK(bc_engine_poll(e, ev, 512, sizeof ev[0], &got));
            for (size_t k = 0; k < got; k++) {
                if (ev[k].kind != BC_EVENT_TOKEN || ev[k].token < 0) continue;
                int i = (int)(ev[k].request_id - ids[0]);
                if (i < 0 || i >= n_req) continue;
                generated++;
                if (was_decoding) decode_generated++;
                if (!first[i]) { first[i] = 1; started++; }
                hash[i] = (hash[i] ^ ((uint64_t)(uint32_t)ev[k].token + ((uint64_t)(uint32_t)ev[k].index << 32))) * 1099511628211ull;
            }
        } while (got > 0);
        if (!was_decoding && started == n_req) t_decode = now();
    }
    double t1 = now();
    bc_engine_metrics m = {.struct_size = sizeof m};
    CHECK(bc_engine_get_metrics(e, &m));
    result r;
    r.tok_s = (double)generated / (t1 - t0);
    r.decode_tok_s = t_decode > 0 && t1 > t_decode ? (double)decode_generated / (t1 - t_decode) : 0;
    r.generated = generated;
    r.shared_rows = m.shared_prefix_rows - m0.shared_prefix_rows;
    r.positions = m.attention_positions - m0.attention_positions;
    r.saved = m.shared_prefix_positions_saved - m0.shared_prefix_positions_saved;
    r.fallbacks = m.shared_prefix_fallbacks - m0.shared_prefix_fallbacks;
    r.hash = 0;
    for (int i = 0; i < n_req; i++) r.hash = (r.hash ^ hash[i]) * 1099511628211ull;
    r.per_request = hash;
    free(prompt);
    free(ids);
    free(first);
    bc_engine_free(e);
    return r;
}

static void print(const char *mode, int round, const result *r) {
    printf("RESULT mode=%s round=%d generated=%lld tok_s=%.2f decode_tok_s=%.2f shared_rows=%lld "
           "positions_read_once=%.1f%% fallbacks=%lld outputs=%016llx\n",
           mode, round, r->generated, r->tok_s, r->decode_tok_s, r->shared_rows,
           r->positions > 0 ? 100.0 * (double)r->saved / (double)r->positions : 0.0, r->fallbacks,
           (unsigned long long)r->hash);
    fflush(stdout);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [--requests N] [--prefix P] [--max-tokens M] [--rounds R] "
                        "[--threads T] [--text TEXT.txt]\n", argv[0]);
        return 2;
    }
    int n_req = 64, prefix = 1024, max_tokens = 64, rounds = 1, threads = 0;
    const char *text = "bench/pd_text.txt", *export_path = NULL;
    temperature = -1;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--requests")) n_req = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prefix")) prefix = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-tokens")) max_tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--text")) text = argv[i + 1];
        else if (!strcmp(argv[i], "--offline")) offline_on = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--n")) samples = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--temperature")) temperature = (float)atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--export")) export_path = argv[i + 1];
        else { fprintf(stderr, "unknown argument %s\n", argv[i]); return 2; }
    }
    if (temperature < 0) temperature = samples > 1 ? 0.8f : 0.0f;
    if (n_req < 1 || n_req > 4096 || prefix < 16 || max_tokens < 2 || rounds < 1 || rounds > 100 || samples < 1 ||
        samples > 64 || (offline_on != 0 && offline_on != 1)) {
        fprintf(stderr, "bad sizes\n");
        return 2;
    }
    if (threads > 0) CHECK(bc_set_num_threads(threads));
    bc_model *model;
    CHECK(bc_model_load(argv[1], NULL, &model));
    load_text(model, text, prefix + 200);
    printf("# shared_prefix_bench: %d requests x %d samples, prefix %d tokens, suffixes 16-64, %d output tokens, "
           "temperature %.2f, threads %d, rounds %d; on = shared-prefix attention%s, off = per-row attention, online\n",
           n_req, samples, prefix, max_tokens, (double)temperature, threads, rounds, offline_on ? " + offline mode" : "");
    if (export_path) {
        FILE *f = fopen(export_path, "w");
        if (!f) { perror(export_path); return 1; }
        fprintf(f, "{\"max_tokens\": %d, \"prompts\": [", max_tokens);
        for (int i = 0; i < n_req; i++) {
            int len;
            size_t off;
            suffix(i, prefix, &len, &off);
            fprintf(f, "%s[", i ? ", " : "");
            for (int k = 0; k < prefix + len; k++)
                fprintf(f, "%s%d", k ? "," : "", k < prefix ? tokens[k] : tokens[off + (size_t)(k - prefix)]);
            fprintf(f, "]");
        }
        fprintf(f, "]}\n");
        if (fclose(f) != 0) { perror(export_path); return 1; }
    }
    double *on = xmalloc((size_t)rounds * sizeof *on), *off = xmalloc((size_t)rounds * sizeof *off);
    double *on_d = xmalloc((size_t)rounds * sizeof *on_d), *off_d = xmalloc((size_t)rounds * sizeof *off_d);
    uint64_t *req_on = NULL, *req_off = NULL;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 2; k++) {
            int shared = (r + k) % 2 == 0;  /* on, off | off, on | ... */
            result res = run(model, shared, n_req, prefix, max_tokens);
            print(shared ? "on" : "off", r, &res);
            if (shared) { on[r] = res.tok_s; on_d[r] = res.decode_tok_s; free(req_on); req_on = res.per_request; }
            else { off[r] = res.tok_s; off_d[r] = res.decode_tok_s; free(req_off); req_off = res.per_request; }
        }
    }
    double a = median(on, rounds), b = median(off, rounds), ad = median(on_d, rounds), bd = median(off_d, rounds);
    int differing = 0;
    for (int i = 0; i < n_req; i++) differing += req_on[i] != req_off[i];
    printf("SUMMARY requests=%d samples=%d offline=%d prefix=%d on_tok_s=%.2f off_tok_s=%.2f ratio=%.2f decode_on=%.2f decode_off=%.2f "
           "decode_ratio=%.2f outputs_differing=%d/%d\n",
           n_req, samples, offline_on, prefix, a, b, a / b, ad, bd, bd > 0 ? ad / bd : 0.0, differing, n_req);
    free(req_on);
    free(req_off);
    free(on);
    free(off);
    free(on_d);
    free(off_d);
    bc_model_free(model);
    return 0;
}
