/* Shared helpers of the model commands: model resolution (with a fetch of the
 * default model), loading with progress, stdin reading, JSON strings, number parsing. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int cli_run_option(const char *a, const char *v, long *threads, long *n_ctx, bc_sampling_params *sp, int *ok) {
    if (strcmp(a, "-t") == 0 || strcmp(a, "--threads") == 0)
        *ok = *ok && cli_parse_long(v, threads) && *threads >= 0 && *threads <= 4096;
    else if (strcmp(a, "-c") == 0 || strcmp(a, "--ctx-size") == 0)
        *ok = *ok && cli_parse_long(v, n_ctx) && *n_ctx >= 0 && *n_ctx <= INT32_MAX;
    else if (strcmp(a, "--temp") == 0 || strcmp(a, "--temperature") == 0)
        *ok = *ok && cli_parse_float(v, &sp->temperature) && sp->temperature >= 0;
    else if (strcmp(a, "--seed") == 0) {
        unsigned long long seed = 0;
        *ok = *ok && cli_parse_u64(v, &seed);
        if (*ok) sp->seed = (uint64_t)seed;
    } else
        return 0;
    return 1;
}

int cli_bad_value(const char *cmd, const char *option, const char *value) {
    if (!value) fprintf(stderr, "batchcore %s: %s needs a value\n", cmd, option);
    else fprintf(stderr, "batchcore %s: invalid value '%s' for %s (see --help)\n", cmd, value, option);
    return EXIT_USAGE;
}

int cli_parse_long(const char *s, long *out) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!s[0] || *end || errno == ERANGE) return 0;
    *out = v;
    return 1;
}

int cli_parse_float(const char *s, float *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (!s[0] || *end || errno == ERANGE || !isfinite(v) || fabs(v) > FLT_MAX) return 0;
    *out = (float)v;
    return 1;
}

int cli_parse_u64(const char *s, unsigned long long *out) {
    char *end = NULL;
    if (!s[0] || s[0] == '-' || s[0] == '+' || s[0] == ' ') return 0;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno == ERANGE) return 0;
    *out = v;
    return 1;
}

int cli_model_option(const char *cmd, int argc, char **argv, int *i, cli_model_opts *opts) {
    const char *a = argv[*i];
    if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
        opts->quiet = 1;
        return 1;
    }
    if (strcmp(a, "--dequantize") == 0) {
        opts->dequantize = 1;
        return 1;
    }
    if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) {
        if (*i + 1 >= argc || argv[*i + 1][0] == '\0') {
            fprintf(stderr, "batchcore %s: %s needs a path\n", cmd, a);
            return -1;
        }
        opts->path = argv[++*i];
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- paths */

static char *concat3(const char *a, const char *b, const char *c) {
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = (char *)malloc(la + lb + lc + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

static const char *nonempty_env(const char *name) {
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

static int is_regular_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* <dir of this executable>/../share/batchcore/fetch-model.sh, or NULL. */
static char *fetch_script_path(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return NULL;
    *slash = '\0';
    return concat3(exe, "/../share/batchcore/", "fetch-model.sh");
}

/* Runs the installed fetch script; on success returns the path it printed (malloc'd). */
static char *fetch_default_model(const char *expected) {
    char *script = fetch_script_path();
    if (!script || access(script, X_OK) != 0) {
        fprintf(stderr,
                "batchcore: the default model %s is missing and the fetch script %s is not available;\n"
                "           pass -m PATH or set BATCHCORE_MODEL\n",
                expected, script ? script : "(<prefix>/share/batchcore/fetch-model.sh)");
        free(script);
        return NULL;
    }
    fprintf(stderr, "batchcore: default model not found at %s; fetching it (%s) ...\n", expected, script);
    fflush(stderr);
    int fd[2];
    if (pipe(fd) != 0) {
        fprintf(stderr, "batchcore: pipe: %s\n", strerror(errno));
        free(script);
        return NULL;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "batchcore: fork: %s\n", strerror(errno));
        close(fd[0]);
        close(fd[1]);
        free(script);
        return NULL;
    }
    if (pid == 0) {
        close(fd[0]);
        if (dup2(fd[1], STDOUT_FILENO) < 0) _exit(127);
        close(fd[1]);
        execl(script, script, (char *)NULL);
        fprintf(stderr, "batchcore: cannot run %s: %s\n", script, strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    char out[8192];
    size_t used = 0;
    for (;;) {
        ssize_t r = read(fd[0], out + used, sizeof out - 1 - used);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        used += (size_t)r;
        if (used == sizeof out - 1) used = 0; /* absurdly long output: keep the tail */
    }
    out[used] = '\0';
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "batchcore: fetching the default model failed (%s %d); pass -m PATH\n",
                WIFEXITED(status) ? "exit status" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : (WIFSIGNALED(status) ? WTERMSIG(status) : -1));
        free(script);
        return NULL;
    }
    free(script);
    /* The script prints the model's path as its last line. */
    while (used > 0 && (out[used - 1] == '\n' || out[used - 1] == '\r')) out[--used] = '\0';
    char *last = strrchr(out, '\n');
    const char *path = last ? last + 1 : out;
    if (!path[0] || !is_regular_file(path)) path = expected;
    if (!is_regular_file(path)) {
        fprintf(stderr, "batchcore: the fetch script finished but %s does not exist\n", path);
        return NULL;
    }
    return concat3(path, "", "");
}

/* The model path to load (malloc'd), or NULL after printing why. */
static char *resolve_model_path(const cli_model_opts *opts) {
    if (opts->path) return concat3(opts->path, "", "");
    const char *env = nonempty_env("BATCHCORE_MODEL");
    if (env) return concat3(env, "", "");
    char *dir = NULL;
    const char *cache = nonempty_env("BATCHCORE_CACHE");
    const char *xdg = nonempty_env("XDG_CACHE_HOME");
    const char *home = nonempty_env("HOME");
    if (cache) dir = concat3(cache, "", "");
    else if (xdg) dir = concat3(xdg, "/batchcore", "");
    else if (home) dir = concat3(home, "/.cache/batchcore", "");
    else {
        fprintf(stderr, "batchcore: no model: pass -m PATH or set BATCHCORE_MODEL, BATCHCORE_CACHE or HOME\n");
        return NULL;
    }
    if (!dir) return NULL;
    char *path = concat3(dir, "/", CLI_DEFAULT_MODEL);
    free(dir);
    if (!path || is_regular_file(path)) return path;
    char *fetched = fetch_default_model(path);
    free(path);
    return fetched;
}

/* ---------------------------------------------------------------- loading */

static void load_progress(float fraction, void *user_data) {
    int *last = (int *)user_data;
    int pct = (int)(fraction * 100.0f + 0.5f);
    if (pct < 0) pct = 0;
    if (pct > 100) pct = 100;
    if (pct == *last) return;
    *last = pct;
    fprintf(stderr, "\rloading model\xe2\x80\xa6 %3d%%", pct);
    fflush(stderr);
}

int cli_load_model(const cli_model_opts *opts, bc_model **out) {
    *out = NULL;
    char *path = resolve_model_path(opts);
    if (!path) return EXIT_FAIL;
    bc_model_params mp;
    bc_status st = bc_model_params_default(&mp, sizeof mp);
    if (st != BC_OK) {
        cli_report("model params", st);
        free(path);
        return EXIT_FAIL;
    }
    if (opts->dequantize) mp.weights = BC_MODEL_WEIGHTS_F32;
    int last_pct = -1;
    int show = !opts->quiet && isatty(STDERR_FILENO);
    if (show) {
        mp.progress = load_progress;
        mp.progress_user_data = &last_pct;
    }
    double t0 = cli_now();
    st = bc_model_load(path, &mp, out);
    double dt = cli_now() - t0;
    if (show && last_pct >= 0) fprintf(stderr, "\r%30s\r", "");
    if (st != BC_OK) {
        fprintf(stderr, "batchcore: loading %s: %s: %s\n", path, bc_status_string(st), bc_last_error());
        free(path);
        *out = NULL;
        return EXIT_FAIL;
    }
    if (!opts->quiet) {
        bc_model_info info;
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        if (bc_model_get_info(*out, &info) == BC_OK)
            fprintf(stderr, "loaded %s (%lld params) in %.2f s\n", path, (long long)info.n_params, dt);
        else
            fprintf(stderr, "loaded %s in %.2f s\n", path, dt);
    }
    free(path);
    return EXIT_OK;
}

/* ---------------------------------------------------------------- text */

char *cli_read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 16, used = 0;
    char *buf = (char *)malloc(cap);
    if (!buf) {
        fprintf(stderr, "batchcore: out of memory\n");
        return NULL;
    }
    for (;;) {
        if (cap - used < 2) {
            char *bigger = (char *)realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                fprintf(stderr, "batchcore: out of memory reading input\n");
                return NULL;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t n = fread(buf + used, 1, cap - used - 1, f);
        used += n;
        if (n == 0) break;
    }
    if (ferror(f)) {
        fprintf(stderr, "batchcore: reading input: %s\n", strerror(errno));
        free(buf);
        return NULL;
    }
    buf[used] = '\0';
    *len = used;
    return buf;
}

char *cli_join_args(int n, char **args) {
    size_t total = 1;
    for (int i = 0; i < n; i++) total += strlen(args[i]) + 1;
    char *s = (char *)malloc(total);
    if (!s) return NULL;
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        if (i) s[at++] = ' ';
        size_t l = strlen(args[i]);
        memcpy(s + at, args[i], l);
        at += l;
    }
    s[at] = '\0';
    return s;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if invalid. */
static size_t utf8_sequence(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned long cp, min;
    if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

void cli_json_string(FILE *out, const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    fputc('"', out);
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c == '"') fputs("\\\"", out);
        else if (c == '\\') fputs("\\\\", out);
        else if (c == '\n') fputs("\\n", out);
        else if (c == '\r') fputs("\\r", out);
        else if (c == '\t') fputs("\\t", out);
        else if (c == '\b') fputs("\\b", out);
        else if (c == '\f') fputs("\\f", out);
        else if (c < 0x20) fprintf(out, "\\u%04x", (unsigned)c);
        else if (c < 0x80) fputc(c, out);
        else {
            size_t l = utf8_sequence(s + i, len - i);
            if (l == 0) {
                fputs("\\ufffd", out);
                i++;
                continue;
            }
            fwrite(s + i, 1, l, out);
            i += l;
            continue;
        }
        i++;
    }
    fputc('"', out);
}

char *cli_chat_prompt(bc_model *model, const char *system, const char *user) {
    const char *roles[2], *contents[2];
    size_t n = 0, len = 0;
    if (system) { roles[n] = "system"; contents[n] = system; n++; }
    roles[n] = "user";
    contents[n] = user;
    n++;
    bc_status st = bc_chat_format(model, roles, contents, n, 1, NULL, 0, &len);
    if (st != BC_OK) { cli_report("chat format", st); return NULL; }
    char *buf = (char *)malloc(len + 1);
    if (!buf) { fprintf(stderr, "batchcore: out of memory\n"); return NULL; }
    st = bc_chat_format(model, roles, contents, n, 1, buf, len + 1, &len);
    if (st != BC_OK) { cli_report("chat format", st); free(buf); return NULL; }
    return buf;
}
