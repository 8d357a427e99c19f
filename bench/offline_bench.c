/* batchcore offline batch mode benchmark (issue 16, BatchLLM): the same shuffled batch of
 * requests sharing a few long prefixes, served by the engine online (the default
 * scheduler: prefix cache on) and offline (bc_engine_params.offline = 1: prefix-tree
 * order, each shared prefix prefilled once, decode-first token-budget mixing).
 *
 *   offline_bench MODEL.gguf --text TEXT.txt [--requests N] [--groups G] [--max-tokens M]
 *                 [--rounds R] [--threads T] [--kv-bytes B] [--max-batched-tokens N] [--seed S]
 *
 * Workload: TEXT is tokenized (its first line, a source note, is skipped); group g's
 * prefix is a slice of prefix_len(g) tokens at its own offset, prefix_len spread evenly
 * over [256, 1024]; each of the N requests picks a group round-robin and appends its own
 * 16-64-token slice at a random offset; then the requests are shuffled (seeded). Greedy,
 * ignore_eos: exactly M tokens each.
 *
 * Every round runs both modes in ONE process (one model load), alternating which goes
 * first, each on a fresh engine (empty prefix cache). Per run it prints a RESULT line:
 * wall time, output tokens/s, tokens computed by the forward (batched_tokens), prefill
 * tokens computed (batched - decode rows), the prefix hit rate, preemptions; per round
 * a RATIO line (offline over online). The greedy outputs of every run must be the same
 * tokens per request (batch invariance), else it exits 1.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"
#include <batchcore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct req {
    int32_t *prompt;
    int32_t n_prompt;
    int group;
    int32_t *out; /* generated tokens of the current run */
    int n_out;
} req;

typedef struct run_result {
    double wall, prefill, hit_rate;
    long long generated, batched, preemptions, steps;
} run_result;

static int32_t *tokenize_file(bc_model *model, const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = xmalloc((size_t)len + 1);
    size_t got = fread(text, 1, (size_t)len, f);
    fclose(f);
    text[got] = '\0';
    char *body = strchr(text, '\n');
    body = body ? body + 1 : text;
    size_t cap = strlen(body) + 16;
    int32_t *tokens = xmalloc(cap * sizeof *tokens);
    CHECK(bc_tokenize(model, body, strlen(body), 0, 0, tokens, cap, n));
    free(text);
    return tokens;
}

static run_result run(bc_model *model, req *r, int n, int offline, int max_tokens, long long kv_bytes, int budget) {
    bc_engine_params ep;
    CHECK(bc_engine_params_default(&ep, sizeof ep));
    ep.max_batched_tokens = budget;
    ep.offline = offline;
    ep.kv_bytes = (int64_t)kv_bytes;
    bc_engine *engine;
    CHECK(bc_engine_create(model, &ep, &engine));
    bc_sampling_params sp;
    CHECK(bc_sampling_params_default(&sp, sizeof sp));
    sp.temperature = 0.0f;
    bc_request_params rp;
    CHECK(bc_request_params_default(&rp, sizeof rp));
    rp.ignore_eos = 1;
    rp.max_tokens = max_tokens;
    size_t ev_cap = 4096;
    bc_event *ev = xmalloc(ev_cap * sizeof *ev);
    double t0 = now();
    for (int i = 0; i < n; i++) {
        uint64_t id;
        rp.user_tag = (uint64_t)i;
        r[i].n_out = 0;
        CHECK(bc_engine_submit(engine, r[i].prompt, r[i].n_prompt, &rp, &sp, &id));
    }
    int remaining = n;
    while (remaining > 0) {
        int32_t processed = 0, n_live = 0;
        CHECK(bc_engine_step(engine, &processed, &n_live));
        for (;;) {
            size_t got = 0;
            CHECK(bc_engine_poll(engine, ev, ev_cap, sizeof *ev, &got));
            for (size_t e = 0; e < got; e++) {
                req *q = &r[ev[e].user_tag];
                if (ev[e].kind == BC_EVENT_TOKEN) {
                    if (ev[e].token >= 0 && q->n_out < max_tokens) q->out[q->n_out++] = ev[e].token;
                } else {
                    if (ev[e].finish_reason != BC_FINISH_LENGTH || ev[e].generated_tokens != max_tokens) {
                        fprintf(stderr, "request %llu: finish %d after %d tokens: %s\n", (unsigned long long)ev[e].user_tag,
                                ev[e].finish_reason, ev[e].generated_tokens, ev[e].message ? ev[e].message : "");
                        exit(1);
                    }
                    remaining--;
                }
            }
            if (got < ev_cap) break;
        }
        if (processed == 0 && remaining > 0) { fprintf(stderr, "engine idle with work left\n"); exit(1); }
    }
    run_result res;
    res.wall = now() - t0;
    bc_engine_metrics m;
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof m;
    CHECK(bc_engine_get_metrics(engine, &m));
    res.generated = m.generated_tokens;
    res.batched = m.batched_tokens;
    /* Every request's first token comes from a prefill row; the others from decode rows. */
    res.prefill = (double)(m.batched_tokens - (m.generated_tokens - n));
    res.hit_rate = m.prefix_hit_rate;
    res.preemptions = m.preemptions;
    res.steps = m.steps;
    free(ev);
    bc_engine_free(engine);
    return res;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *text = NULL;
    int n = 96, groups = 4, max_tokens = 32, rounds = 2, threads = 2, budget = 512;
    long long kv_bytes = 2LL << 30;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (argv[i][0] != '-') { model_path = argv[i]; continue; }
        if (!v) { fprintf(stderr, "%s needs a value\n", argv[i]); return 2; }
        if (!strcmp(argv[i], "--text")) text = v;
        else if (!strcmp(argv[i], "--requests")) n = atoi(v);
        else if (!strcmp(argv[i], "--groups")) groups = atoi(v);
        else if (!strcmp(argv[i], "--max-tokens")) max_tokens = atoi(v);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(v);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(v);
        else if (!strcmp(argv[i], "--max-batched-tokens")) budget = atoi(v);
        else if (!strcmp(argv[i], "--kv-bytes")) kv_bytes = atoll(v);
        else if (!strcmp(argv[i], "--seed")) seed = strtoull(v, NULL, 10);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
        i++;
    }
    if (!model_path || !text || n < 1 || groups < 1 || max_tokens < 1 || rounds < 1 || budget < 1) {
        fprintf(stderr, "usage: offline_bench MODEL.gguf --text TEXT [--requests N] [--groups G] [--max-tokens M] "
                        "[--rounds R] [--threads T] [--kv-bytes B] [--max-batched-tokens N] [--seed S]\n");
        return 2;
    }
    CHECK(bc_set_num_threads(threads));
    bc_model *model;
    CHECK(bc_model_load(model_path, NULL, &model));
    size_t n_text = 0;
    int32_t *tokens = tokenize_file(model, text, &n_text);
    if (n_text < 64) { fprintf(stderr, "%s: too little text\n", text); return 1; }

    rng_state = seed;
    req *r = xmalloc((size_t)n * sizeof *r);
    long long prompt_total = 0, ideal = 0; /* ideal: each group's prefix once + every suffix */
    for (int i = 0; i < n; i++) {
        int g = i % groups;
        int plen = groups > 1 ? 256 + (1024 - 256) * g / (groups - 1) : 1024;
        int slen = 16 + (int)(rng_next() % 49);
        size_t off = n_text * (size_t)g / (size_t)groups, soff = (size_t)(rng_next() % n_text);
        r[i].n_prompt = plen + slen;
        r[i].group = g;
        r[i].prompt = xmalloc((size_t)r[i].n_prompt * sizeof(int32_t));
        r[i].out = xmalloc((size_t)max_tokens * sizeof(int32_t));
        for (int k = 0; k < plen; k++) r[i].prompt[k] = tokens[(off + (size_t)k) % n_text];
        for (int k = 0; k < slen; k++) r[i].prompt[plen + k] = tokens[(soff + (size_t)k) % n_text];
        prompt_total += r[i].n_prompt;
        ideal += slen + (i < groups ? plen : 0);
    }
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_next() % (uint64_t)(i + 1));
        req t = r[i];
        r[i] = r[j];
        r[j] = t;
    }
    printf("# workload: %d requests in %d groups (shared prefixes of 256..1024 tokens, own 16..64-token suffixes, "
           "shuffled), %lld prompt tokens (ideal_prefill %lld), %d output tokens each, greedy; %d threads, kv_bytes %lld, "
           "max_batched_tokens %d\n",
           n, groups, prompt_total, ideal, max_tokens, threads, kv_bytes, budget);
    int32_t *reference = xmalloc((size_t)n * (size_t)max_tokens * sizeof *reference);
    int have_reference = 0, mismatch = 0;
    double log_time = 0, log_prefill = 0;
    for (int round = 1; round <= rounds; round++) {
        run_result res[2];
        for (int k = 0; k < 2; k++) {
            int offline = (round % 2 == 1) ? k : 1 - k;
            run_result x = run(model, r, n, offline, max_tokens, kv_bytes, budget);
            res[offline] = x;
            for (int i = 0; i < n; i++) {
                int32_t *ref = reference + (size_t)i * (size_t)max_tokens;
                if (!have_reference) memcpy(ref, r[i].out, (size_t)max_tokens * sizeof *ref);
                else if (r[i].n_out != max_tokens || memcmp(ref, r[i].out, (size_t)max_tokens * sizeof *ref) != 0) mismatch++;
            }
            have_reference = 1;
            printf("RESULT round=%d mode=%s wall_s=%.3f tok_s=%.2f batched_tokens=%lld prefill_tokens=%.0f "
                   "prefix_hit_rate=%.4f preemptions=%lld steps=%lld\n",
                   round, offline ? "offline" : "online", x.wall, (double)x.generated / x.wall, x.batched, x.prefill,
                   x.hit_rate, x.preemptions, x.steps);
            fflush(stdout);
        }
        double rt = res[0].wall / res[1].wall, rp = res[0].prefill / res[1].prefill;
        log_time += log(rt);
        log_prefill += log(rp);
        printf("RATIO round=%d online_over_offline_time=%.3f online_over_offline_prefill=%.3f\n", round, rt, rp);
    }
    printf("SUMMARY rounds=%d geomean_online_over_offline_time=%.3f geomean_online_over_offline_prefill=%.3f "
           "outputs=%s\n",
           rounds, exp(log_time / rounds), exp(log_prefill / rounds), mismatch ? "DIFFERENT" : "identical");
    for (int i = 0; i < n; i++) { free(r[i].prompt); free(r[i].out); }
    free(r);
    free(reference);
    free(tokens);
    bc_model_free(model);
    return mismatch ? 1 : 0;
}
