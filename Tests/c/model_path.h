/* The default model's path for the C tests that need it: `make test-c` fetches the
 * model and writes its path to build/stage/model-path; tests receive the fixtures
 * directory (Tests/fixtures) as argv[1]. A missing model is a failure, not a skip. */
#ifndef BC_TEST_MODEL_PATH_H
#define BC_TEST_MODEL_PATH_H

#include <batchcore.h>
#include <stdio.h>
#include <string.h>

/* Reads the model path from <fixtures>/../../build/stage/model-path into buf. */
static int read_model_path(const char *fixtures, char *buf, size_t cap) {
    char where[4096];
    snprintf(where, sizeof where, "%s/../../build/stage/model-path", fixtures);
    FILE *f = fopen(where, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s: run `make test-c` (it fetches the model and writes this file)\n", where);
        return 0;
    }
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = '\0';
    if (n == 0) {
        fprintf(stderr, "%s is empty\n", where);
        return 0;
    }
    return 1;
}

/* main()'s start in those tests: argv[1] is FIXTURES_DIR; the model path goes to buf.
 * Returns 0, or the exit status to return (2: usage; 1: no model path), after saying why. */
static int model_path_from_args(int argc, char **argv, char *buf, size_t cap) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    if (!read_model_path(argv[1], buf, cap)) {
        fprintf(stderr, "FAIL: the default model is required\n");
        return 1;
    }
    return 0;
}

/* main()'s start in the tests that run the default model: the path as above, then the
 * model loaded with `weights` (a bc_model_weights) into *model and described in *info.
 * Returns 0, or the exit status to return after saying why (nothing is left to free then). */
static inline int load_default_model_weights(int argc, char **argv, int32_t weights, bc_model **model,
                                             bc_model_info *info) {
    char path[4096];
    int rc = model_path_from_args(argc, argv, path, sizeof path);
    if (rc) return rc;
    *model = NULL;
    bc_model_params mp;
    if (bc_model_params_default(&mp, sizeof mp) != BC_OK) return 1;
    mp.weights = weights;
    if (bc_model_load(path, &mp, model) != BC_OK || !*model) {
        fprintf(stderr, "FAIL: cannot load %s: %s\n", path, bc_last_error());
        return 1;
    }
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
    if (bc_model_get_info(*model, info) != BC_OK) {
        fprintf(stderr, "FAIL: bc_model_get_info: %s\n", bc_last_error());
        bc_model_free(*model);
        *model = NULL;
        return 1;
    }
    return 0;
}

/* The same with the default weights (native: Q4_1/Q8_0 blocks). */
static inline int load_default_model(int argc, char **argv, bc_model **model, bc_model_info *info) {
    return load_default_model_weights(argc, argv, BC_MODEL_WEIGHTS_NATIVE, model, info);
}

#endif
