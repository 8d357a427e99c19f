/* Optimizer states that are well-formed and carry a VALID CRC-32 but hold values out
 * of range (issue 11, defect 3): a step count near INT64_MAX loaded with BC_OK and the
 * next step trapped on integer overflow. Every field is checked at load: each hostile
 * state must fail with BC_E_FORMAT and a message, and leave the optimizer exactly as
 * it was (same saved state; it then steps in lock-step with an untouched twin).
 * Hyperparameters are checked as bc_optimizer_add_group checks them: for every
 * candidate value the load succeeds iff add_group accepts the same hyperparameters.
 *
 * State format (Sources/BatchCoreKit/Optim/OptimizerState.swift), little-endian:
 *   "BCOPTIM\0" u32 version, u32 algorithm, u32 groups, u32 tensors;
 *   per group: 11 x f64 hyperparameters, u32 flags, i64 step;
 *   per tensor: u32 group, u32 name length + name, u64 count, u32 slot mask, slots' floats;
 *   u32 CRC-32 of everything before it. */
#include "check.h"
#include "optim_hparams.h"
#include "forge.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

static const bc_optim_algorithm all_algorithms[] = {BC_OPTIM_SGD,     BC_OPTIM_ADAM,    BC_OPTIM_ADAMW,
                                                    BC_OPTIM_ADAGRAD, BC_OPTIM_RMSPROP, BC_OPTIM_LAMB,
                                                    BC_OPTIM_LION,    BC_OPTIM_ADABRAKE};
#define N_ALGORITHMS ((int)(sizeof all_algorithms / sizeof all_algorithms[0]))
#define NT 3
#define NG 2
#define GROUP_BYTES (11 * 8 + 4 + 8)
#define HEADER_BYTES 24
#define MAX_STEPS ((int64_t)1 << 53) /* the most steps a group can take */

static const int64_t sizes[NT] = {5, 3, 7};
static const char *const names[NT] = {"a", "bb", "ccc"};

/* ---------------------------------------------------------------- bytes */

static size_t group_at(int g) { return HEADER_BYTES + (size_t)g * GROUP_BYTES; }

/* Offset of tensor t's record (u32 group) in `state`. */
static size_t tensor_at(const unsigned char *state, int t) {
    size_t o = group_at(NG);
    for (int i = 0; i < t; i++) {
        uint32_t name_len = get_u32(state + o + 4);
        size_t count_at = o + 8 + name_len;
        uint64_t count = get_u64(state + count_at);
        uint32_t mask = get_u32(state + count_at + 8);
        int slots = 0;
        for (int k = 0; k < 32; k++) slots += (mask >> k) & 1u;
        o = count_at + 12 + (size_t)slots * (size_t)count * 4;
    }
    return o;
}

/* ---------------------------------------------------------------- rig */

static uint64_t rng = 0x243F6A8885A308D3ull;

static double uniform(void) { /* splitmix64 -> [-1, 1) */
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

typedef struct rig {
    bc_optimizer *opt;
    float p[NT][8];
    float g[NT][8];
} rig;

/* Both rigs of a pair get the same random parameters (rng restarted per pair). */
static int rig_make(rig *r, bc_optim_algorithm algo, uint64_t seed) {
    memset(r, 0, sizeof *r);
    rng = seed;
    if (bc_optimizer_create(algo, &r->opt) != BC_OK) return 0;
    for (int gi = 0; gi < NG; gi++) {
        bc_optim_hparams hp;
        hparams_for(algo, gi, &hp);
        if (bc_optimizer_add_group(r->opt, &hp, NULL) != BC_OK) return 0;
    }
    for (int i = 0; i < NT; i++) {
        for (int64_t k = 0; k < sizes[i]; k++) r->p[i][k] = (float)uniform();
        if (bc_optimizer_add_tensor(r->opt, (uint32_t)(i % NG), names[i], r->p[i], r->g[i], sizes[i], NULL) != BC_OK)
            return 0;
    }
    return 1;
}

/* Steps s in [from, from + count): random gradients from a seed of s. Returns the
 * first failing status (BC_OK if none). */
static bc_status rig_steps(rig *r, int from, int count) {
    for (int s = from; s < from + count; s++) {
        rng = 0xC0FFEEull + (uint64_t)s;
        for (int i = 0; i < NT; i++)
            for (int64_t k = 0; k < sizes[i]; k++) r->g[i][k] = (float)(0.5 * uniform()) + 0.2f * r->p[i][k];
        bc_status st = bc_optimizer_step(r->opt, NULL, NULL);
        if (st != BC_OK) return st;
    }
    return BC_OK;
}

static int same_params(const rig *a, const rig *b) { return memcmp(a->p, b->p, sizeof a->p) == 0; }

static unsigned char *save(const bc_optimizer *opt, size_t *size) {
    size_t n = 0, written = 0;
    *size = 0;
    CHECK_OK(bc_optimizer_state_size(opt, &n));
    unsigned char *buf = (unsigned char *)malloc(n + 64);
    if (!buf) return NULL;
    CHECK_OK(bc_optimizer_save_buffer(opt, buf, n, &written));
    *size = written;
    return buf;
}

static int state_is(const bc_optimizer *opt, const unsigned char *expected, size_t size) {
    size_t n = 0;
    unsigned char *now = save(opt, &n);
    int same = now != NULL && n == size && memcmp(now, expected, size) == 0;
    free(now);
    return same;
}

/* ---------------------------------------------------------------- hostile states */

typedef struct harness {
    bc_optim_algorithm algo;
    rig target;
    unsigned char *before; /* target's state: every failed load must leave it */
    size_t n;
    unsigned char *bad; /* scratch: n + 64 bytes */
    int failures;
} harness;

/* Loads bad[0..len) (resealed) into the target: must fail with BC_E_FORMAT + message
 * and change nothing. */
static void expect_rejected(harness *h, size_t len, const char *what) {
    reseal(h->bad, len);
    bc_status st = bc_optimizer_load_buffer(h->target.opt, h->bad, len);
    const char *msg = bc_last_error();
    int unchanged = state_is(h->target.opt, h->before, h->n);
    if (st != BC_E_FORMAT || msg == NULL || msg[0] == '\0' || !unchanged) {
        fprintf(stderr, "  algorithm %d: %s: got %s ('%s'), state %s\n", (int)h->algo, what, bc_status_string(st),
                msg ? msg : "", unchanged ? "unchanged" : "CHANGED");
        h->failures++;
    }
    check_count++;
}

/* A fresh copy of the good state to edit. */
static unsigned char *fresh(harness *h) {
    memcpy(h->bad, h->before, h->n);
    return h->bad;
}

static void hostile_header_and_steps(harness *h) {
    static const int64_t bad_steps[] = {INT64_MAX, INT64_MAX - 1, MAX_STEPS + 1, (int64_t)1 << 62, -1, INT64_MIN};
    char what[96];
    for (size_t i = 0; i < sizeof bad_steps / sizeof bad_steps[0]; i++)
        for (int g = 0; g < NG; g++) {
            put_u64(fresh(h) + group_at(g) + 92, (uint64_t)bad_steps[i]);
            snprintf(what, sizeof what, "group %d step %lld", g, (long long)bad_steps[i]);
            expect_rejected(h, h->n, what);
        }
    put_u32(fresh(h) + 8, 2);
    expect_rejected(h, h->n, "version 2");
    put_u32(fresh(h) + 8, 0);
    expect_rejected(h, h->n, "version 0");
    put_u32(fresh(h) + 12, 0);
    expect_rejected(h, h->n, "algorithm 0");
    put_u32(fresh(h) + 12, 9);
    expect_rejected(h, h->n, "algorithm 9");
    put_u32(fresh(h) + 12, h->algo == BC_OPTIM_SGD ? 2u : 1u);
    expect_rejected(h, h->n, "another algorithm");
    put_u32(fresh(h) + 16, UINT32_MAX);
    expect_rejected(h, h->n, "group count 2^32-1");
    put_u32(fresh(h) + 16, 0);
    expect_rejected(h, h->n, "group count 0");
    put_u32(fresh(h) + 20, UINT32_MAX);
    expect_rejected(h, h->n, "tensor count 2^32-1");
    put_u32(fresh(h) + 20, 0);
    expect_rejected(h, h->n, "tensor count 0");
    /* Flag bits: 7 are defined. */
    put_u32(fresh(h) + group_at(1) + 88, get_u32(h->before + group_at(1) + 88) | 1u << 7);
    expect_rejected(h, h->n, "flag bit 7");
    put_u32(fresh(h) + group_at(0) + 88, UINT32_MAX);
    expect_rejected(h, h->n, "flags 0xFFFFFFFF");
}

static void hostile_tensors(harness *h) {
    char what[96];
    for (int t = 0; t < NT; t++) {
        size_t o = tensor_at(h->before, t);
        uint32_t name_len = get_u32(h->before + o + 4);
        size_t count_at = o + 8 + name_len;
        uint32_t mask = get_u32(h->before + count_at + 8);
        static const uint64_t bad_counts[] = {0, 1, UINT64_MAX, (uint64_t)1 << 63, (uint64_t)1 << 40};
        for (size_t i = 0; i < sizeof bad_counts / sizeof bad_counts[0]; i++) {
            put_u64(fresh(h) + count_at, bad_counts[i]);
            snprintf(what, sizeof what, "tensor %d count %llu", t, (unsigned long long)bad_counts[i]);
            expect_rejected(h, h->n, what);
        }
        put_u64(fresh(h) + count_at, (uint64_t)sizes[t] + 1);
        snprintf(what, sizeof what, "tensor %d count + 1", t);
        expect_rejected(h, h->n, what);
        put_u32(fresh(h) + o, 7);
        snprintf(what, sizeof what, "tensor %d group 7", t);
        expect_rejected(h, h->n, what);
        put_u32(fresh(h) + o, (uint32_t)((t + 1) % NG));
        snprintf(what, sizeof what, "tensor %d in the other group", t);
        expect_rejected(h, h->n, what);
        put_u32(fresh(h) + o + 4, UINT32_MAX);
        snprintf(what, sizeof what, "tensor %d name length 2^32-1", t);
        expect_rejected(h, h->n, what);
        put_u32(fresh(h) + count_at + 8, mask | 1u << 3);
        snprintf(what, sizeof what, "tensor %d mask bit 3", t);
        expect_rejected(h, h->n, what);
        put_u32(fresh(h) + count_at + 8, UINT32_MAX);
        snprintf(what, sizeof what, "tensor %d mask 0xFFFFFFFF", t);
        expect_rejected(h, h->n, what);
    }
    /* Adagrad's sum exists from registration on: a state without it is not one. */
    if (h->algo == BC_OPTIM_ADAGRAD) {
        size_t o = tensor_at(h->before, 1);
        size_t count_at = o + 8 + get_u32(h->before + o + 4);
        size_t data = count_at + 12, len = (size_t)sizes[1] * 4;
        unsigned char *b = fresh(h);
        put_u32(b + count_at + 8, 0);
        memmove(b + data, b + data + len, h->n - data - len);
        expect_rejected(h, h->n - len, "adagrad tensor without its sum");
    }
    /* A negative value in a slot of squares (exp_avg_sq, max_exp_avg_sq, Adagrad's sum). */
    {
        int slot = -1;
        switch (h->algo) {
        case BC_OPTIM_ADAM: case BC_OPTIM_ADAMW: case BC_OPTIM_LAMB: slot = 1; break;
        case BC_OPTIM_ADAGRAD: slot = 0; break;
        default: break;
        }
        if (slot >= 0) {
            static const float negatives[] = {-1.0f, -1e-30f, -1e-45f, -INFINITY};
            for (int t = 0; t < NT; t++) {
                size_t o = tensor_at(h->before, t);
                size_t count_at = o + 8 + get_u32(h->before + o + 4);
                size_t at = count_at + 12 + (size_t)slot * (size_t)sizes[t] * 4 + 4 * (size_t)(t % sizes[t]);
                for (int i = 0; i < 4; i++) {
                    put_f32(fresh(h) + at, negatives[i]);
                    snprintf(what, sizeof what, "tensor %d slot %d value %g", t, slot, (double)negatives[i]);
                    expect_rejected(h, h->n, what);
                }
            }
        }
    }
    /* Trailing bytes and a missing tensor byte, checksums valid. */
    memset(fresh(h) + h->n - 4, 0x3C, 4); /* 4 more bytes after the last tensor, then the CRC */
    expect_rejected(h, h->n + 4, "4 trailing bytes");
    fresh(h);
    expect_rejected(h, h->n - 1, "last state byte missing");
}

/* For each hyperparameter and candidate value: the load succeeds iff add_group
 * accepts the same hyperparameters (one set of rules for both). */
static void hostile_hparams(harness *h) {
    static const double candidates[] = {NAN, INFINITY, -INFINITY, -1.0, -1e-300, 0.0, 0.5, 1.0, 2.0, 1e300};
    static const size_t field[11] = {
        offsetof(bc_optim_hparams, lr),       offsetof(bc_optim_hparams, weight_decay),
        offsetof(bc_optim_hparams, beta1),    offsetof(bc_optim_hparams, beta2),
        offsetof(bc_optim_hparams, eps),      offsetof(bc_optim_hparams, momentum),
        offsetof(bc_optim_hparams, dampening), offsetof(bc_optim_hparams, alpha),
        offsetof(bc_optim_hparams, lr_decay), offsetof(bc_optim_hparams, initial_accumulator_value),
        offsetof(bc_optim_hparams, max_grad_norm)};
    int rejected = 0, accepted = 0;
    for (int g = 0; g < NG; g++)
        for (int f = 0; f < 11; f++)
            for (size_t c = 0; c < sizeof candidates / sizeof candidates[0]; c++) {
                bc_optim_hparams hp;
                hparams_for(h->algo, g, &hp);
                memcpy((char *)&hp + field[f], &candidates[c], sizeof(double));
                bc_optimizer *probe = NULL;
                CHECK_OK(bc_optimizer_create(h->algo, &probe));
                int valid = bc_optimizer_add_group(probe, &hp, NULL) == BC_OK;
                bc_optimizer_free(probe);
                put_f64(fresh(h) + group_at(g) + 8 * (size_t)f, candidates[c]);
                char what[96];
                snprintf(what, sizeof what, "group %d hyperparameter %d = %g", g, f, candidates[c]);
                if (!valid) {
                    expect_rejected(h, h->n, what);
                    rejected++;
                } else {
                    reseal(h->bad, h->n);
                    bc_status st = bc_optimizer_load_buffer(h->target.opt, h->bad, h->n);
                    if (st != BC_OK) {
                        fprintf(stderr, "  algorithm %d: %s: add_group accepts it, load says %s: %s\n", (int)h->algo,
                                what, bc_status_string(st), bc_last_error());
                        h->failures++;
                    }
                    check_count++;
                    CHECK_OK(bc_optimizer_load_buffer(h->target.opt, h->before, h->n)); /* back */
                    accepted++;
                }
            }
    /* Every finite-ness rule rejects something; the candidates are not all refused. */
    CHECK(rejected >= 2 * 11 * 3);
    CHECK(accepted > 0);
}

static void test_algorithm(bc_optim_algorithm algo) {
    harness h;
    memset(&h, 0, sizeof h);
    h.algo = algo;
    rig twin;
    CHECK(rig_make(&h.target, algo, 0x1234u + (uint64_t)algo));
    CHECK(rig_make(&twin, algo, 0x1234u + (uint64_t)algo));
    CHECK(rig_steps(&h.target, 0, 4) == BC_OK);
    CHECK(rig_steps(&twin, 0, 4) == BC_OK);
    CHECK(same_params(&h.target, &twin));
    h.before = save(h.target.opt, &h.n);
    h.bad = (unsigned char *)malloc(h.n + 64);
    CHECK(h.before != NULL && h.bad != NULL && h.n > group_at(NG));
    if (!h.before || !h.bad) return;
    CHECK(get_u64(h.before + group_at(0) + 92) == 4); /* the layout read here is the saved one */
    CHECK(tensor_at(h.before, NT) == h.n - 4);

    hostile_header_and_steps(&h);
    hostile_tensors(&h);
    hostile_hparams(&h);
    CHECK(h.failures == 0);

    /* Nothing changed: the target steps on exactly like its twin. */
    CHECK(state_is(h.target.opt, h.before, h.n));
    CHECK(rig_steps(&h.target, 4, 5) == BC_OK);
    CHECK(rig_steps(&twin, 4, 5) == BC_OK);
    CHECK(same_params(&h.target, &twin));
    {
        size_t n1 = 0;
        unsigned char *t1 = save(twin.opt, &n1);
        CHECK(t1 && state_is(h.target.opt, t1, n1));
        free(t1);
    }
    free(h.before);
    free(h.bad);
    bc_optimizer_free(h.target.opt);
    bc_optimizer_free(twin.opt);
}

/* The step count limit: a state at 2^53 - 1 steps loads, takes one step, and the next
 * step is refused with BC_E_BAD_STATE (no trap, nothing changed). */
static void test_step_limit(bc_optim_algorithm algo) {
    rig r;
    CHECK(rig_make(&r, algo, 0x77u));
    CHECK(rig_steps(&r, 0, 2) == BC_OK);
    size_t n = 0;
    unsigned char *state = save(r.opt, &n);
    CHECK(state != NULL);
    if (!state) return;
    for (int g = 0; g < NG; g++) put_u64(state + group_at(g) + 92, (uint64_t)(MAX_STEPS - 1));
    reseal(state, n);
    CHECK_OK(bc_optimizer_load_buffer(r.opt, state, n));
    bc_optim_step_result res;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    CHECK_OK(bc_optimizer_step(r.opt, NULL, &res));
    CHECK(res.step == MAX_STEPS);
    {
        size_t n1 = 0;
        unsigned char *at_limit = save(r.opt, &n1);
        float p_before[NT][8];
        memcpy(p_before, r.p, sizeof p_before);
        CHECK_ERR(bc_optimizer_step(r.opt, NULL, NULL), BC_E_BAD_STATE);
        CHECK(memcmp(p_before, r.p, sizeof p_before) == 0);
        CHECK(at_limit && state_is(r.opt, at_limit, n1));
        /* A state at the limit is a valid state: it saves and loads back. */
        CHECK(at_limit && bc_optimizer_load_buffer(r.opt, at_limit, n1) == BC_OK);
        free(at_limit);
    }
    free(state);
    bc_optimizer_free(r.opt);
}

int main(void) {
    for (int i = 0; i < N_ALGORITHMS; i++) {
        test_algorithm(all_algorithms[i]);
        test_step_limit(all_algorithms[i]);
    }
    CHECK_DONE();
}
