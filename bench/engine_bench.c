/* batchcore engine benchmark: a seeded multi-request workload served by the
 * continuous-batching engine (bc_engine_*), in continuous or static batching mode.
 *
 *   engine_bench MODEL.gguf --make-workload OUT.jsonl --text TEXT.txt [--requests N] [--seed S]
 *       tokenizes TEXT (its first line is skipped: a source note) and writes N requests,
 *       one JSON line each: {"id":i,"prompt":[token ids],"max_tokens":M}. Lengths follow
 *       the ShareGPT shape used by vLLM's benchmarks (means 161 in / 338 out): prompts
 *       lognormal (median 98, sigma 1) clamped to [4, 1024] tokens, outputs lognormal
 *       (median 205, sigma 1) clamped to [4, 1024]; each prompt is a slice of the text's
 *       tokens at a random offset (wrapping around).
 *   engine_bench MODEL.gguf --workload W.jsonl --mode continuous|static [--threads T] [--weights native|f32]
 *       submits every request at t = 0 (greedy, ignore_eos: exactly max_tokens tokens
 *       each), steps the engine until all finish and prints one RESULT line:
 *       output tokens/s = generated tokens / wall time; TTFT per request from t = 0
 *       (the engine's ttft_seconds: submission to first token); ITL = every gap between
 *       consecutive tokens of a request (wall clock at the poll after each step).
 *       --shared-prefix 1 / --offline 1 set bc_engine_params.shared_prefix_attention /
 *       .offline (issue #16's no-regression row); the RESULT line carries both, the
 *       share of attention positions read once, and a hash of every request's output
 *       tokens (in request order) to compare runs.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"
#include <batchcore.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>




static double rng_uniform(void) { return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0; }
static double rng_normal(void) { return sqrt(-2.0 * log(rng_uniform())) * cos(6.283185307179586 * rng_uniform()); }
static int lognormal_clamped(double median, double sigma, int lo, int hi) {
    double v = median * exp(sigma * rng_normal());
    int n = (int)(v + 0.5);
    return n < lo ? lo : n > hi ? hi : n;
}

static int make_workload(bc_model *model, const char *text_path, const char *out_path, int n_requests, uint64_t seed) {
    FILE *f = fopen(text_path, "rb");
    if (!f) { perror(text_path); return 1; }
    char *text = xmalloc(1 << 20);
    size_t len = fread(text, 1, (1 << 20) - 1, f);
    fclose(f);
    text[len] = '\0';
    char *body = strchr(text, '\n');
    body = body ? body + 1 : text;
    size_t body_len = strlen(body), n_tok = 0;
    CHECK(bc_tokenize(model, body, body_len, 0, 0, NULL, 0, &n_tok));
    int32_t *tok = xmalloc(n_tok * sizeof *tok);
    CHECK(bc_tokenize(model, body, body_len, 0, 0, tok, n_tok, &n_tok));
    if (n_tok < 16) { fprintf(stderr, "text too short\n"); return 1; }
    FILE *out = fopen(out_path, "w");
    if (!out) { perror(out_path); return 1; }
    rng_state = seed;
    long total_p = 0, total_g = 0;
    for (int i = 0; i < n_requests; i++) {
        /* ShareGPT-shaped: vLLM's paper (Kwon et al., SOSP 2023, Fig. 11) reports mean
         * input 161 and output 338 tokens; lognormal with sigma 1 has mean = median * e^0.5. */
        int p = lognormal_clamped(98, 1.0, 4, 1024);
        int g = lognormal_clamped(205, 1.0, 4, 1024);
        size_t off = (size_t)(rng_next() % n_tok);
        fprintf(out, "{\"id\":%d,\"prompt\":[", i);
        for (int k = 0; k < p; k++) fprintf(out, "%s%d", k ? "," : "", (int)tok[(off + (size_t)k) % n_tok]);
        fprintf(out, "],\"max_tokens\":%d}\n", g);
        total_p += p;
        total_g += g;
    }
    fclose(out);
    fprintf(stderr, "workload: %d requests, %ld prompt tokens, %ld output tokens (text: %lu tokens) -> %s\n",
            n_requests, total_p, total_g, (unsigned long)n_tok, out_path);
    printf("WORKLOAD requests=%d prompt_tokens=%ld output_tokens=%ld seed=%llu\n", n_requests, total_p, total_g,
           (unsigned long long)seed);
    free(tok);
    free(text);
    return 0;
}

typedef struct req {
    int32_t *prompt;
    int32_t n_prompt, max_tokens;
    double last_token_time;
    int32_t got;
    double ttft, submit_offset;
    int done;
    uint64_t hash; /* FNV-1a over the output tokens */
} req;

/* Reads the workload lines written by make_workload (a fixed, simple format). */
static req *read_workload(const char *path, int *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    int cap = 256, n = 0;
    req *r = xmalloc((size_t)cap * sizeof *r);
    char *line = NULL;
    size_t line_cap = 0;
    while (getline(&line, &line_cap, f) > 0) {
        char *p = strstr(line, "\"prompt\":[");
        char *m = strstr(line, "\"max_tokens\":");
        if (!p || !m) continue;
        if (n == cap) {
            cap *= 2;
            r = realloc(r, (size_t)cap * sizeof *r);
            if (!r) { fprintf(stderr, "out of memory\n"); exit(1); }
        }
        req *q = &r[n++];
        memset(q, 0, sizeof *q);
        p += strlen("\"prompt\":[");
        int count = 1;
        for (char *c = p; *c && *c != ']'; c++) count += *c == ',';
        q->prompt = xmalloc((size_t)count * sizeof *q->prompt);
        while (*p && *p != ']') {
            char *end;
            q->prompt[q->n_prompt++] = (int32_t)strtol(p, &end, 10);
            p = *end == ',' ? end + 1 : end;
        }
        q->max_tokens = (int32_t)strtol(m + strlen("\"max_tokens\":"), NULL, 10);
    }
    free(line);
    fclose(f);
    *n_out = n;
    return r;
}



/* group_size > 0: client-side static batching on a continuous engine: submit the next
 * group of group_size requests only when the previous group has fully finished. */
static int run(bc_model *model, const char *path, int static_batching, int group_size, long long kv_bytes,
               int shared_prefix, int offline) {
    int n = 0;
    req *r = read_workload(path, &n);
    bc_engine_params ep;
    CHECK(bc_engine_params_default(&ep, sizeof ep));
    ep.static_batching = static_batching;
    ep.kv_bytes = (int64_t)kv_bytes;
    ep.shared_prefix_attention = shared_prefix;
    ep.offline = offline;
    if (group_size > 0) group_size = ep.max_seqs;
    bc_engine *engine;
    CHECK(bc_engine_create(model, &ep, &engine));
    bc_sampling_params sp;
    CHECK(bc_sampling_params_default(&sp, sizeof sp));
    sp.temperature = 0.0f;
    bc_request_params rp;
    CHECK(bc_request_params_default(&rp, sizeof rp));
    rp.ignore_eos = 1;

    long expected = 0;
    for (int i = 0; i < n; i++) expected += r[i].max_tokens;
    double *gaps = xmalloc((size_t)expected * sizeof *gaps);
    size_t n_gaps = 0;
    size_t ev_cap = 4096;
    bc_event *ev = xmalloc(ev_cap * sizeof *ev);

    double t0 = now();
    int submitted = 0, live = 0, remaining = n;
    long generated = 0, steps = 0;
    while (remaining > 0) {
        if (live == 0 && submitted < n) {
            int end = group_size > 0 && submitted + group_size < n ? submitted + group_size : n;
            double offset = now() - t0;
            for (int i = submitted; i < end; i++) {
                uint64_t id;
                rp.max_tokens = r[i].max_tokens;
                rp.user_tag = (uint64_t)i;
                r[i].submit_offset = offset;
                CHECK(bc_engine_submit(engine, r[i].prompt, r[i].n_prompt, &rp, &sp, &id));
            }
            live += end - submitted;
            submitted = end;
        }
        int32_t processed = 0, n_live = 0;
        CHECK(bc_engine_step(engine, &processed, &n_live));
        steps++;
        double t = now();
        for (;;) {
            size_t got = 0;
            CHECK(bc_engine_poll(engine, ev, ev_cap, sizeof *ev, &got));
            for (size_t e = 0; e < got; e++) {
                req *q = &r[ev[e].user_tag];
                if (ev[e].kind == BC_EVENT_TOKEN) {
                    if (q->got > 0 && n_gaps < (size_t)expected) gaps[n_gaps++] = t - q->last_token_time;
                    q->last_token_time = t;
                    q->got++;
                    q->hash = (q->hash ^ (uint64_t)(uint32_t)ev[e].token) * 0x100000001B3ull;
                } else {
                    if (ev[e].finish_reason != BC_FINISH_LENGTH || ev[e].generated_tokens != q->max_tokens) {
                        fprintf(stderr, "request %llu: finish %d after %d tokens (want %d): %s\n",
                                (unsigned long long)ev[e].user_tag, ev[e].finish_reason, ev[e].generated_tokens,
                                q->max_tokens, ev[e].message ? ev[e].message : "");
                        exit(1);
                    }
                    q->ttft = q->submit_offset + ev[e].ttft_seconds; /* from t = 0 */
                    q->done = 1;
                    generated += ev[e].generated_tokens;
                    live--;
                    remaining--;
                }
            }
            if (got < ev_cap) break;
        }
        if (n_live == 0 && live > 0 && processed == 0 && group_size == 0) { fprintf(stderr, "engine idle with work left\n"); exit(1); }
    }
    double wall = now() - t0;
    bc_engine_metrics m;
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof m;
    CHECK(bc_engine_get_metrics(engine, &m));

    double *ttft = xmalloc((size_t)n * sizeof *ttft);
    for (int i = 0; i < n; i++) ttft[i] = r[i].ttft;
    qsort(ttft, (size_t)n, sizeof *ttft, cmp_double);
    qsort(gaps, n_gaps, sizeof *gaps, cmp_double);
    uint64_t outputs = 0xCBF29CE484222325ull;
    for (int i = 0; i < n; i++) outputs = (outputs ^ r[i].hash) * 0x100000001B3ull;
    printf("RESULT impl=batchcore-%s requests=%d gen_tokens=%ld wall_s=%.3f tok_s=%.2f ttft_p50_ms=%.1f "
           "ttft_p99_ms=%.1f itl_p50_ms=%.2f itl_p99_ms=%.2f steps=%ld preemptions=%lld max_seqs=%d "
           "max_batched_tokens=%d kv_mib=%lld shared_prefix=%d offline=%d positions_read_once=%.1f%% outputs=%016llx\n",
           group_size > 0 ? "static-groups" : static_batching ? "static" : "continuous", n, generated, wall, (double)generated / wall,
           1e3 * pct(ttft, (size_t)n, 50), 1e3 * pct(ttft, (size_t)n, 99), 1e3 * pct(gaps, n_gaps, 50),
           1e3 * pct(gaps, n_gaps, 99), steps, (long long)m.preemptions, ep.max_seqs, ep.max_batched_tokens,
           (long long)(m.kv_total_bytes >> 20), shared_prefix, offline,
           m.attention_positions > 0 ? 100.0 * (double)m.shared_prefix_positions_saved / (double)m.attention_positions : 0.0,
           (unsigned long long)outputs);
    fflush(stdout);
    free(ttft);
    free(gaps);
    free(ev);
    for (int i = 0; i < n; i++) free(r[i].prompt);
    free(r);
    bc_engine_free(engine);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr,
                "usage: engine_bench MODEL.gguf --make-workload OUT.jsonl --text TEXT [--requests N] [--seed S]\n"
                "       engine_bench MODEL.gguf --workload W.jsonl --mode continuous|static|groups [--threads T] [--kv-bytes B] [--weights native|f32]\n"
                "                  [--shared-prefix 0|1] [--offline 0|1]\n");
        return 2;
    }
    const char *make = NULL, *text = NULL, *workload = NULL, *mode = "continuous", *weights = "native";
    int threads = 2, requests = 200;
    unsigned long long seed = 1;
    long long kv_bytes = 0;
    int shared_prefix = 0, offline = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--make-workload")) make = argv[i + 1];
        else if (!strcmp(argv[i], "--text")) text = argv[i + 1];
        else if (!strcmp(argv[i], "--requests")) requests = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--workload")) workload = argv[i + 1];
        else if (!strcmp(argv[i], "--mode")) mode = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kv-bytes")) kv_bytes = strtoll(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--weights")) weights = argv[i + 1];
        else if (!strcmp(argv[i], "--shared-prefix")) shared_prefix = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--offline")) offline = atoi(argv[i + 1]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    CHECK(bc_set_num_threads(threads));
    bc_model *model;
    if (strcmp(weights, "native") && strcmp(weights, "f32")) {
        fprintf(stderr, "--weights native|f32\n");
        return 2;
    }
    bc_model_params mp;
    CHECK(bc_model_params_default(&mp, sizeof mp));
    mp.weights = strcmp(weights, "f32") ? BC_MODEL_WEIGHTS_NATIVE : BC_MODEL_WEIGHTS_F32;
    CHECK(bc_model_load(argv[1], &mp, &model));
    int rc;
    if (make) {
        if (!text) { fprintf(stderr, "--make-workload needs --text\n"); return 2; }
        rc = make_workload(model, text, make, requests, seed);
    } else if (workload) {
        if (strcmp(mode, "continuous") && strcmp(mode, "static") && strcmp(mode, "groups")) {
            fprintf(stderr, "bad --mode\n");
            return 2;
        }
        rc = run(model, workload, strcmp(mode, "static") == 0, strcmp(mode, "groups") == 0 ? 64 : 0, kv_bytes, shared_prefix,
                 offline);
    } else {
        fprintf(stderr, "give --make-workload or --workload\n");
        rc = 2;
    }
    bc_model_free(model);
    return rc;
}
