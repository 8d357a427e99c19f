/* Optimizer state save/load through the C ABI: argument errors, corrupt / truncated /
 * mismatched states give BC_E_FORMAT and leave the optimizer exactly as it was (twin
 * comparison), save+load round trips through buffers and files, atomic file writes. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "optim_hparams.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

static const bc_optim_algorithm all_algorithms[] = {BC_OPTIM_SGD,     BC_OPTIM_ADAM, BC_OPTIM_ADAMW,
                                                    BC_OPTIM_ADAGRAD, BC_OPTIM_RMSPROP, BC_OPTIM_LAMB,
                                                    BC_OPTIM_LION,    BC_OPTIM_ADABRAKE};
#define N_ALGORITHMS ((int)(sizeof all_algorithms / sizeof all_algorithms[0]))
#define MAX_TENSORS 4

/* An optimizer over a few small tensors; tensor i goes to group i % groups. */
typedef struct rig {
    bc_optimizer *opt;
    int nt;
    int64_t n[MAX_TENSORS];
    float *p[MAX_TENSORS];
    float *g[MAX_TENSORS];
} rig;

static int rig_make(rig *r, bc_optim_algorithm algo, int nt, const int64_t *sizes, const char *const *names,
                    int groups) {
    memset(r, 0, sizeof *r);
    r->nt = nt;
    if (bc_optimizer_create(algo, &r->opt) != BC_OK) return 0;
    for (int gi = 0; gi < groups; gi++) {
        bc_optim_hparams hp;
        hparams_for(algo, gi, &hp);
        if (bc_optimizer_add_group(r->opt, &hp, NULL) != BC_OK) return 0;
    }
    for (int i = 0; i < nt; i++) {
        r->n[i] = sizes[i];
        r->p[i] = (float *)malloc((size_t)sizes[i] * sizeof(float));
        r->g[i] = (float *)malloc((size_t)sizes[i] * sizeof(float));
        if (!r->p[i] || !r->g[i]) return 0;
        for (int64_t k = 0; k < sizes[i]; k++) {
            r->p[i][k] = (float)sin(1.3 * (double)k + i);
            r->g[i][k] = 0.0f;
        }
        if (bc_optimizer_add_tensor(r->opt, (uint32_t)(i % groups), names[i], r->p[i], r->g[i], sizes[i], NULL) !=
            BC_OK)
            return 0;
    }
    return 1;
}

static void rig_free(rig *r) {
    bc_optimizer_free(r->opt);
    for (int i = 0; i < r->nt; i++) {
        free(r->p[i]);
        free(r->g[i]);
    }
    memset(r, 0, sizeof *r);
}

/* Steps `count` times from step index `from`; gradients depend on step and params. */
static void rig_steps(rig *r, int from, int count) {
    for (int s = from; s < from + count; s++) {
        for (int i = 0; i < r->nt; i++)
            for (int64_t k = 0; k < r->n[i]; k++)
                r->g[i][k] = (float)(0.5 * sin(0.37 * (double)k + 0.9 * s + i)) + 0.2f * r->p[i][k];
        CHECK_OK(bc_optimizer_step(r->opt, NULL, NULL));
    }
}

static int rig_same_params(const rig *a, const rig *b) {
    if (a->nt != b->nt) return 0;
    for (int i = 0; i < a->nt; i++)
        if (a->n[i] != b->n[i] || memcmp(a->p[i], b->p[i], (size_t)a->n[i] * sizeof(float)) != 0) return 0;
    return 1;
}

static void rig_copy_params(rig *dst, const rig *src) {
    for (int i = 0; i < src->nt && i < dst->nt; i++)
        memcpy(dst->p[i], src->p[i], (size_t)src->n[i] * sizeof(float));
}

/* The saved state, malloc'd; *size gets its length. */
static unsigned char *save(const bc_optimizer *opt, size_t *size) {
    *size = 0;
    size_t n = 0;
    CHECK_OK(bc_optimizer_state_size(opt, &n));
    unsigned char *buf = (unsigned char *)malloc(n ? n : 1);
    if (!buf) return NULL;
    size_t written = 0;
    CHECK_OK(bc_optimizer_save_buffer(opt, buf, n, &written));
    CHECK(written == n);
    *size = written;
    return buf;
}

/* The optimizer's state is byte-for-byte `expected`. */
static int state_is(const bc_optimizer *opt, const unsigned char *expected, size_t size) {
    size_t n = 0;
    unsigned char *now = save(opt, &n);
    int same = now != NULL && n == size && memcmp(now, expected, size) == 0;
    free(now);
    return same;
}

static const int64_t std_sizes[3] = {5, 3, 7};
static const char *const std_names[3] = {"a", "b", "c"};

/* ---------------------------------------------------------------- arguments */

static void test_args(void) {
    rig r;
    CHECK(rig_make(&r, BC_OPTIM_ADAM, 3, std_sizes, std_names, 2));
    rig_steps(&r, 0, 2);
    size_t n = 12345;
    CHECK_ERR(bc_optimizer_state_size(NULL, &n), BC_E_INVALID_ARGUMENT);
    CHECK(n == 12345);
    CHECK_ERR(bc_optimizer_state_size(r.opt, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_OK(bc_optimizer_state_size(r.opt, &n));
    CHECK(n > 0 && n < 100000);

    unsigned char *buf = (unsigned char *)malloc(n + 16);
    CHECK(buf != NULL);
    if (!buf) return;
    size_t written = 777;
    CHECK_ERR(bc_optimizer_save_buffer(NULL, buf, n, &written), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_save_buffer(r.opt, NULL, n, &written), BC_E_INVALID_ARGUMENT);
    memset(buf, 0xA5, n + 16);
    CHECK_ERR(bc_optimizer_save_buffer(r.opt, buf, n - 1, &written), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_save_buffer(r.opt, buf, 1, &written), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_save_buffer(r.opt, buf, 0, &written), BC_E_INVALID_ARGUMENT);
    {
        int intact = 1;
        for (size_t i = 0; i < n + 16; i++) intact &= buf[i] == 0xA5;
        CHECK(intact); /* nothing written on error */
        CHECK(written == 777);
    }
    /* A larger buffer is fine: exactly state_size bytes are written. */
    CHECK_OK(bc_optimizer_save_buffer(r.opt, buf, n + 16, &written));
    CHECK(written == n);
    {
        int intact = 1;
        for (size_t i = n; i < n + 16; i++) intact &= buf[i] == 0xA5;
        CHECK(intact);
    }
    /* Saving is deterministic and does not change the state. */
    CHECK(state_is(r.opt, buf, n));

    CHECK_ERR(bc_optimizer_load_buffer(NULL, buf, n), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_load_buffer(r.opt, NULL, n), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_save(NULL, "/tmp/never-written.bcopt"), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_save(r.opt, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_load(NULL, "/tmp/never-written.bcopt"), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_load(r.opt, NULL), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_save(r.opt, "/nonexistent-batchcore-dir/sub/state.bin"), BC_E_IO);
    CHECK_ERR(bc_optimizer_load(r.opt, "/nonexistent-batchcore-dir/sub/state.bin"), BC_E_IO);
    CHECK_ERR(bc_optimizer_save(r.opt, ""), BC_E_IO);
    CHECK_ERR(bc_optimizer_load(r.opt, ""), BC_E_IO);
    CHECK(state_is(r.opt, buf, n));

    /* A state loads back into the optimizer that saved it. */
    CHECK_OK(bc_optimizer_load_buffer(r.opt, buf, n));
    CHECK(state_is(r.opt, buf, n));
    free(buf);
    rig_free(&r);
}

/* ---------------------------------------------------------------- corruption */

/* `target` is at some state; `good` is a valid state of the same layout saved from a
 * different point. Every corruption of `good` must fail with BC_E_FORMAT and change
 * nothing; the untouched `twin` then steps in lock-step with `target`. */
static void test_corruption(bc_optim_algorithm algo) {
    rig target, twin, other;
    CHECK(rig_make(&target, algo, 3, std_sizes, std_names, 2));
    CHECK(rig_make(&twin, algo, 3, std_sizes, std_names, 2));
    CHECK(rig_make(&other, algo, 3, std_sizes, std_names, 2));
    rig_steps(&target, 0, 3);
    rig_steps(&twin, 0, 3);
    rig_steps(&other, 0, 6);
    size_t n = 0, n0 = 0;
    unsigned char *good = save(other.opt, &n);
    unsigned char *before = save(target.opt, &n0);
    unsigned char *bad = (unsigned char *)malloc(n + 8);
    CHECK(good && before && bad);
    if (!good || !before || !bad) return;

    int wrong_status = 0, wrong_truncation = 0;
    for (size_t i = 0; i < n; i++) {
        static const unsigned char flips[2] = {0x01, 0xFF};
        for (int f = 0; f < 2; f++) {
            memcpy(bad, good, n);
            bad[i] ^= flips[f];
            bc_status st = bc_optimizer_load_buffer(target.opt, bad, n);
            if (st != BC_E_FORMAT || bc_last_error()[0] == '\0') {
                if (!wrong_status)
                    fprintf(stderr, "  algorithm %d: byte %zu ^ 0x%02x of %zu: got %s, expected %s\n", (int)algo, i,
                            flips[f], n, bc_status_string(st), bc_status_string(BC_E_FORMAT));
                wrong_status++;
            }
        }
    }
    CHECK(wrong_status == 0);
    CHECK(state_is(target.opt, before, n0));
    /* Truncations. Length 0 is also "a wrong size": either status is accepted there. */
    for (size_t len = 1; len < n; len++) {
        bc_status st = bc_optimizer_load_buffer(target.opt, good, len);
        if (st != BC_E_FORMAT) {
            if (!wrong_truncation) fprintf(stderr, "  algorithm %d: truncated to %zu of %zu: got %s\n", (int)algo, len, n,
                                  bc_status_string(st));
            wrong_truncation++;
        }
    }
    CHECK(wrong_truncation == 0);
    {
        bc_status st = bc_optimizer_load_buffer(target.opt, good, 0);
        CHECK(st == BC_E_FORMAT || st == BC_E_INVALID_ARGUMENT);
    }
    /* Trailing bytes after a valid state are corruption too. */
    memcpy(bad, good, n);
    memset(bad + n, 0, 8);
    CHECK_ERR(bc_optimizer_load_buffer(target.opt, bad, n + 1), BC_E_FORMAT);
    CHECK_ERR(bc_optimizer_load_buffer(target.opt, bad, n + 8), BC_E_FORMAT);
    /* Random garbage of the right size. */
    for (size_t i = 0; i < n; i++) bad[i] = (unsigned char)(i * 131u + 7u);
    CHECK_ERR(bc_optimizer_load_buffer(target.opt, bad, n), BC_E_FORMAT);

    CHECK(state_is(target.opt, before, n0));
    rig_steps(&target, 3, 5);
    rig_steps(&twin, 3, 5);
    CHECK(rig_same_params(&target, &twin));

    /* Positive control: the uncorrupted state loads, and then target == other. */
    rig_copy_params(&target, &other);
    CHECK_OK(bc_optimizer_load_buffer(target.opt, good, n));
    CHECK(state_is(target.opt, good, n));
    rig_steps(&target, 6, 4);
    rig_steps(&other, 6, 4);
    CHECK(rig_same_params(&target, &other));

    free(good);
    free(before);
    free(bad);
    rig_free(&target);
    rig_free(&twin);
    rig_free(&other);
}

/* ---------------------------------------------------------------- mismatch */

static void expect_mismatch(const unsigned char *state, size_t n, bc_optim_algorithm algo, int nt,
                            const int64_t *sizes, const char *const *names, int groups, const char *what) {
    rig r;
    CHECK(rig_make(&r, algo, nt, sizes, names, groups));
    rig_steps(&r, 0, 2);
    size_t n0 = 0;
    unsigned char *before = save(r.opt, &n0);
    bc_status st = bc_optimizer_load_buffer(r.opt, state, n);
    CHECK(st == BC_E_FORMAT && bc_last_error()[0] != '\0');
    if (st != BC_E_FORMAT) fprintf(stderr, "  mismatch '%s': got %s, expected format error\n", what, bc_status_string(st));
    CHECK(before && state_is(r.opt, before, n0));
    free(before);
    rig_free(&r);
}

static void test_mismatch(void) {
    rig r;
    CHECK(rig_make(&r, BC_OPTIM_ADAM, 3, std_sizes, std_names, 2));
    rig_steps(&r, 0, 4);
    size_t n = 0;
    unsigned char *state = save(r.opt, &n);
    CHECK(state != NULL);
    if (!state) return;
    CHECK_ERR(bc_optimizer_load_buffer(r.opt, state, n - 1), BC_E_FORMAT);

    static const int64_t bigger[3] = {5, 3, 8};
    static const int64_t four[4] = {5, 3, 7, 2};
    static const int64_t swapped[3] = {3, 5, 7};
    static const char *const names4[4] = {"a", "b", "c", "d"};
    static const char *const renamed[3] = {"a", "b", "x"};
    static const char *const swapped_names[3] = {"b", "a", "c"};
    expect_mismatch(state, n, BC_OPTIM_ADAMW, 3, std_sizes, std_names, 2, "other algorithm (AdamW)");
    expect_mismatch(state, n, BC_OPTIM_LAMB, 3, std_sizes, std_names, 2, "other algorithm (LAMB)");
    expect_mismatch(state, n, BC_OPTIM_SGD, 3, std_sizes, std_names, 2, "other algorithm (SGD)");
    expect_mismatch(state, n, BC_OPTIM_ADAM, 3, bigger, std_names, 2, "tensor size");
    expect_mismatch(state, n, BC_OPTIM_ADAM, 2, std_sizes, std_names, 2, "fewer tensors");
    expect_mismatch(state, n, BC_OPTIM_ADAM, 4, four, names4, 2, "more tensors");
    expect_mismatch(state, n, BC_OPTIM_ADAM, 3, std_sizes, renamed, 2, "tensor name");
    expect_mismatch(state, n, BC_OPTIM_ADAM, 3, swapped, swapped_names, 2, "tensor order");
    expect_mismatch(state, n, BC_OPTIM_ADAM, 3, std_sizes, std_names, 1, "fewer groups");
    expect_mismatch(state, n, BC_OPTIM_ADAM, 3, std_sizes, std_names, 3, "more groups");
    {
        /* Same layout but no tensors at all. */
        bc_optimizer *empty = NULL;
        CHECK_OK(bc_optimizer_create(BC_OPTIM_ADAM, &empty));
        CHECK_ERR(bc_optimizer_load_buffer(empty, state, n), BC_E_FORMAT);
        bc_optimizer_free(empty);
    }
    free(state);
    rig_free(&r);
}

/* ---------------------------------------------------------------- round trips */

/* A state saved before any step (no moment buffers yet) and one saved mid-run both
 * resume bit-identically in a fresh optimizer. */
static void test_roundtrip(bc_optim_algorithm algo, int steps_before) {
    rig a, b;
    CHECK(rig_make(&a, algo, 3, std_sizes, std_names, 2));
    CHECK(rig_make(&b, algo, 3, std_sizes, std_names, 2));
    rig_steps(&a, 0, steps_before);
    size_t n = 0;
    unsigned char *state = save(a.opt, &n);
    rig_copy_params(&b, &a);
    CHECK(state && bc_optimizer_load_buffer(b.opt, state, n) == BC_OK);
    CHECK(state && state_is(b.opt, state, n));
    rig_steps(&a, steps_before, 7);
    rig_steps(&b, steps_before, 7);
    CHECK(rig_same_params(&a, &b));
    free(state);
    rig_free(&a);
    rig_free(&b);
}

/* ---------------------------------------------------------------- files */

static int write_file(const char *path, const unsigned char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static int dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) count++;
    closedir(d);
    return count;
}

static void test_files(void) {
    char dir[] = "/tmp/bc_test_optim_state_XXXXXX";
    if (mkdtemp(dir) == NULL) {
        CHECK(!"mkdtemp failed");
        return;
    }
    char path[256], bad_path[256], sub[256];
    snprintf(path, sizeof path, "%s/state.bin", dir);
    snprintf(bad_path, sizeof bad_path, "%s/bad.bin", dir);
    snprintf(sub, sizeof sub, "%s/missing/state.bin", dir);

    rig a, b;
    CHECK(rig_make(&a, BC_OPTIM_ADAMW, 3, std_sizes, std_names, 2));
    CHECK(rig_make(&b, BC_OPTIM_ADAMW, 3, std_sizes, std_names, 2));
    rig_steps(&a, 0, 5);
    rig_steps(&b, 0, 2); /* b is somewhere else */
    size_t nb = 0;
    unsigned char *b_before = save(b.opt, &nb);

    CHECK_ERR(bc_optimizer_load(b.opt, path), BC_E_IO); /* does not exist yet */
    CHECK_ERR(bc_optimizer_save(a.opt, sub), BC_E_IO);
    CHECK_ERR(bc_optimizer_save(a.opt, dir), BC_E_IO); /* a directory */
    CHECK_ERR(bc_optimizer_load(b.opt, dir), BC_E_IO);
    CHECK_OK(bc_optimizer_save(a.opt, path));
    CHECK_OK(bc_optimizer_save(a.opt, path)); /* replacing an existing file */
    CHECK(dir_entries(dir) == 1);            /* no temporary file left behind */

    /* Corrupt files: the file's bytes with one byte flipped, truncated, empty. */
    FILE *f = fopen(path, "rb");
    unsigned char *bytes = NULL;
    long len = 0;
    if (f) {
        fseek(f, 0, SEEK_END);
        len = ftell(f);
        fseek(f, 0, SEEK_SET);
        bytes = (unsigned char *)malloc(len > 0 ? (size_t)len : 1);
        if (bytes && fread(bytes, 1, (size_t)len, f) != (size_t)len) len = 0;
        fclose(f);
    }
    CHECK(bytes != NULL && len > 16);
    if (bytes && len > 16) {
        long positions[4] = {0, len / 3, len / 2, len - 1};
        for (int i = 0; i < 4; i++) {
            bytes[positions[i]] ^= 0x10;
            CHECK(write_file(bad_path, bytes, (size_t)len));
            CHECK_ERR(bc_optimizer_load(b.opt, bad_path), BC_E_FORMAT);
            bytes[positions[i]] ^= 0x10;
        }
        CHECK(write_file(bad_path, bytes, (size_t)len - 1));
        CHECK_ERR(bc_optimizer_load(b.opt, bad_path), BC_E_FORMAT);
        CHECK(write_file(bad_path, bytes, (size_t)len / 2));
        CHECK_ERR(bc_optimizer_load(b.opt, bad_path), BC_E_FORMAT);
        CHECK(write_file(bad_path, bytes, 0));
        CHECK_ERR(bc_optimizer_load(b.opt, bad_path), BC_E_FORMAT);
        CHECK(b_before && state_is(b.opt, b_before, nb));
    }

    /* Mismatched optimizer. */
    {
        rig c;
        static const int64_t other_sizes[3] = {5, 3, 6};
        CHECK(rig_make(&c, BC_OPTIM_ADAMW, 3, other_sizes, std_names, 2));
        CHECK_ERR(bc_optimizer_load(c.opt, path), BC_E_FORMAT);
        rig_free(&c);
        CHECK(rig_make(&c, BC_OPTIM_ADAM, 3, std_sizes, std_names, 2));
        CHECK_ERR(bc_optimizer_load(c.opt, path), BC_E_FORMAT);
        rig_free(&c);
    }

    /* The good file resumes bit-identically. */
    rig_copy_params(&b, &a);
    int64_t step_a = -1, step_b = -1;
    CHECK_OK(bc_optimizer_get_step(a.opt, 0, &step_a));
    CHECK_OK(bc_optimizer_load(b.opt, path));
    CHECK_OK(bc_optimizer_get_step(b.opt, 0, &step_b));
    CHECK(step_a > 0 && step_b == step_a); /* the restored count an LR schedule resumes from */
    CHECK_ERR(bc_optimizer_get_step(b.opt, 99, &step_b), BC_E_INVALID_ARGUMENT);
    CHECK_ERR(bc_optimizer_get_step(b.opt, 0, NULL), BC_E_INVALID_ARGUMENT);
    {
        bc_optim_step_result r;
        memset(&r, 0xff, sizeof r);
        CHECK_OK(bc_optim_step_result_default(&r, sizeof r));
        CHECK(r.struct_size == sizeof r && r.step == 0 && r.clip_coef == 1.0 && r.skipped == 0 && r.grad_norm != r.grad_norm);
        CHECK_OK(bc_optimizer_step(b.opt, NULL, &r)); /* a defaulted result is accepted as the output */
        CHECK(r.step == step_a + 1);
        CHECK_ERR(bc_optim_step_result_default(NULL, sizeof r), BC_E_INVALID_ARGUMENT);
        CHECK(strstr(bc_last_error(), "bc_optim_step_result_default") != NULL); /* the C name, not an internal one */
        rig_copy_params(&b, &a);
        CHECK_OK(bc_optimizer_load(b.opt, path));
    }
    rig_steps(&a, 5, 6);
    rig_steps(&b, 5, 6);
    CHECK(rig_same_params(&a, &b));

    free(bytes);
    free(b_before);
    rig_free(&a);
    rig_free(&b);
    remove(path);
    remove(bad_path);
    CHECK(dir_entries(dir) == 0);
    rmdir(dir);
}

int main(void) {
    test_args();
    for (int i = 0; i < N_ALGORITHMS; i++) {
        test_corruption(all_algorithms[i]);
        test_roundtrip(all_algorithms[i], 0);
        test_roundtrip(all_algorithms[i], 4);
    }
    test_mismatch();
    test_files();
    CHECK_DONE();
}
