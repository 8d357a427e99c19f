/* The engine keeps nothing per request once the request is finished and its events
 * were polled: regression test for issue 11's defect 5 (the ABI layer kept every
 * request's user_tag in a map that never shrank). 300,000 requests are submitted,
 * cancelled and polled (no forward pass runs, so this is fast); the resident set may
 * grow by at most 2 MiB after a warm-up of 20,000 requests. With the old map it grew
 * by 15.2 MiB over the same run (560,644 -> 576,184 KiB). Every event still carries
 * its own request's tag.
 * Needs the default model (read from <fixtures>/../../build/stage/model-path). */
#include "check.h"
#include "model_path.h"

#include <stdlib.h>

enum { WARMUP = 20000, REQUESTS = 300000 };
static const long BOUND_KIB = 2048;

/* Resident set size in KiB, from /proc/self/statm (pages). */
static long rss_kib(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * 4;
}

/* Submits, cancels and polls one request; checks its single event's id and tag. */
static int one_request(bc_engine *e, uint64_t tag) {
    const int32_t prompt[2] = {504, 3575};
    bc_request_params rp;
    bc_event ev[2];
    uint64_t id = 0;
    size_t n = 0;
    if (bc_request_params_default(&rp, sizeof rp) != BC_OK) return 0;
    rp.max_tokens = 4;
    rp.user_tag = tag;
    if (bc_engine_submit(e, prompt, 2, &rp, NULL, &id) != BC_OK) return 0;
    if (bc_engine_cancel(e, id) != BC_OK) return 0;
    if (bc_engine_poll(e, ev, 2, sizeof ev[0], &n) != BC_OK) return 0;
    return n == 1 && ev[0].request_id == id && ev[0].user_tag == tag && ev[0].kind == BC_EVENT_FINISHED;
}

int main(int argc, char **argv) {
    char model_path[4096];
    int rc = model_path_from_args(argc, argv, model_path, sizeof model_path);
    if (rc) return rc;
    bc_model *model = NULL;
    CHECK_OK(bc_model_load(model_path, NULL, &model));
    if (!model) CHECK_DONE();
    bc_engine *e = NULL;
    CHECK_OK(bc_engine_create(model, NULL, &e));
    if (e) {
        int bad = 0;
        long i;
        for (i = 0; i < WARMUP; i++) bad += !one_request(e, 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1));
        long before = rss_kib();
        for (i = 0; i < REQUESTS; i++) bad += !one_request(e, 0x9E3779B97F4A7C15ULL * (uint64_t)(WARMUP + i + 1));
        long after = rss_kib();
        printf("RSS %ld KiB -> %ld KiB over %d finished requests (bound %ld KiB)\n", before, after, REQUESTS,
               BOUND_KIB);
        CHECK(bad == 0);
        CHECK(before > 0 && after > 0);
        CHECK(after - before <= BOUND_KIB);
        bc_engine_metrics m;
        memset(&m, 0, sizeof m);
        m.struct_size = (uint32_t)sizeof m;
        CHECK_OK(bc_engine_get_metrics(e, &m));
        CHECK(m.submitted == WARMUP + REQUESTS && m.finished == WARMUP + REQUESTS);
        CHECK(m.waiting == 0 && m.running == 0);
        bc_engine_free(e);
    }
    bc_model_free(model);
    CHECK_DONE();
}
