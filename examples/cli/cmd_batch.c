/* batchcore batch — offline batch generation: JSONL requests on stdin, JSONL results on
 * stdout, all scheduled together by the continuous-batching engine (bc_engine_*). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "json.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_STOP_STRINGS 16
#define MAX_N 128
#define MAX_ADAPTERS 64

static void batch_usage(FILE *out) {
    fprintf(out,
            "usage: batchcore batch [-m MODEL] [--max-batched-tokens N] [--max-seqs N] [--kv-bytes N]\n"
            "                       [--static | --stream | --offline] [--max-tokens N] [--adapter NAME=DIR]...\n"
            "                       [-t THREADS] [-q]\n"
            "                       < requests.jsonl > results.jsonl\n"
            "\n"
            "Reads every request (one JSON object per line) from stdin, submits them all to the\n"
            "continuous-batching engine and writes one JSON result line per request to stdout,\n"
            "in completion order, as soon as all its samples finish (with --offline: in input\n"
            "order, each record once it and all before it are done). Blank lines are skipped; a\n"
            "UTF-8 byte order mark before the first line is skipped; a line holding a NUL byte\n"
            "gets an error record. By default all of stdin is read (and every line parsed) before\n"
            "the model loads; with --stream the model loads first and lines are submitted as they\n"
            "arrive, while the engine runs (for a producer writing requests slowly to a pipe).\n"
            "\n"
            "request fields (OpenAI completions names; unknown fields are ignored):\n"
            "  id                 string or number, echoed (default: the line number). Each id\n"
            "                     belongs to the first line that has it, explicitly or as its\n"
            "                     default: a later line with the same id gets an error record\n"
            "                     (\"duplicate id\") and is not run. Ids compare as echoed: 1 and\n"
            "                     \"1\" differ, as do 1 and 1.0.\n"
            "  prompt             string, or array of token ids; or\n"
            "  messages           [{\"role\":..., \"content\":...}, ...], formatted with the model's\n"
            "                     chat template and the assistant's turn opener\n"
            "  max_tokens         tokens to generate per sample, >= 1 (default 128, --max-tokens)\n"
            "  temperature        >= 0; 0 = greedy (default 0.8)\n"
            "  top_p              in (0, 1]; 1 = off (default 0.95)\n"
            "  top_k              >= 0; 0 = off (default 40)\n"
            "  min_p              in [0, 1]; 0 = off (default 0.05)\n"
            "  seed               integer in [0, 18446744073709551615] (default 0: the same request\n"
            "                     gives the same text)\n"
            "  stop               string or array of up to 16 non-empty strings; the output ends\n"
            "                     before the first match (finish_reason \"stop\")\n"
            "  n                  samples sharing the prompt's KV, 1..128 (default 1)\n"
            "  presence_penalty, frequency_penalty   in [-2, 2] (default 0 = off)\n"
            "  repetition_penalty > 0 (default 1 = off)\n"
            "  penalty_last_n     tokens the penalties look back at; -1 = all (default 64)\n"
            "  The sampling defaults are the library's (bc_sampling_params_default, llama.cpp's),\n"
            "  the same as generate's and chat's: the same request gives the same text there.\n"
            "  Set temperature 1, top_p 1, top_k 0, min_p 0 for OpenAI's plain sampling.\n"
            "  priority           integer, higher first; when any request sets it, the engine\n"
            "                     schedules by priority instead of first-come-first-served\n"
            "  adapter            name of a LoRA adapter given with --adapter NAME=DIR (default:\n"
            "                     none, the base model); requests of different adapters and of\n"
            "                     none run in the same engine steps\n"
            "  adapter_scale      factor on the adapter's own scale (lora_alpha / r) (default 1)\n"
            "Generation also stops at the model's end-of-generation token (finish_reason \"stop\").\n"
            "\n"
            "records: exactly one line per non-blank input line, of one of two kinds. Every\n"
            "record has \"id\" and \"line\" (its request's 1-based line number in the input,\n"
            "blank lines counted), so records can always be matched to their requests.\n"
            "  result (the request ran):\n"
            "  {\"id\":...,\"line\":N,\"choices\":[{\"index\":0,\"text\":\"...\",\"finish_reason\":\"length|stop|cancelled|error\"}],\n"
            "   \"usage\":{\"prompt_tokens\":P,\"completion_tokens\":C,\"cached_prompt_tokens\":K},\n"
            "   \"timings\":{\"ttft_ms\":T,\"itl_ms\":I,\"total_ms\":W}}\n"
            "  (choices holds all n samples in index order; completion_tokens sums the samples;\n"
            "  ttft_ms is the first sample's first token and total_ms the last sample's finish,\n"
            "  both from submission; itl_ms the mean inter-token latency over all samples; null\n"
            "  when undefined)\n"
            "  n samples that together outgrow the KV budget are preempted and recomputed in turn\n"
            "  (their text is unchanged), never failed for it.\n"
            "  partial failure: should samples still fail while running (an engine error), the\n"
            "  result also has \"error\":{\"message\":\"...\"} (the first failure's message); failed\n"
            "  samples have finish_reason \"error\" and keep the text generated before the\n"
            "  failure, the others their own finish_reason and text.\n"
            "  error (the line was not run: bad JSON, missing prompt, wrong type, invalid value,\n"
            "  duplicate id, refused at submission):\n"
            "  {\"id\":<id or line number>,\"line\":N,\"error\":{\"message\":\"...\"}}; the rest go on.\n"
            "  So: \"choices\" present = it ran; \"error\" present = something failed.\n"
            "\n"
            "Progress (done/total, generated tok/s, KV use, queue depth) goes to stderr: one updated\n"
            "line on a terminal, else a line every 2 s; then a summary (unless -q).\n"
            "\n"
            "options:\n" CLI_MODEL_OPTIONS_HELP
            "      --max-batched-tokens N  tokens per engine step (default 512)\n"
            "      --max-seqs N            sequences per step (default 64)\n"
            "      --kv-bytes N            KV cache budget in bytes (default 1 GiB)\n"
            "      --static                static batching: admit new requests only when none runs\n"
            "      --offline               offline batch mode: after reading all requests, run those\n"
            "                              sharing a prompt prefix together (a prefix tree over the\n"
            "                              tokenized prompts, per adapter), prefill each shared prefix\n"
            "                              once (the prefix cache serves it to the others), decodes\n"
            "                              first then prefill chunks in the tree's order; the same\n"
            "                              texts as without it; records in input order\n"
            "      --stream                submit each line as it arrives on stdin instead of after\n"
            "                              EOF; records stream out as requests finish, and at EOF\n"
            "                              the rest drain. Always schedules by priority (equal\n"
            "                              priorities: first come, first served)\n"
            "      --max-tokens N          default max_tokens of requests without one (default 128)\n"
            "      --adapter NAME=DIR      load the PEFT LoRA adapter directory DIR as NAME (repeatable,\n"
            "                              up to 64); requests choose it with \"adapter\": \"NAME\"\n"
            "      --adapter-bytes N       adapter weight budget in bytes: idle adapters are released\n"
            "                              least-recently-used first and reread when needed (default 0:\n"
            "                              unlimited)\n"
            "  -t, --threads N             threads; 0 = all cores (default 0)\n"
            "  -h, --help                  this help\n"
            "\n"
            "Signals: the first SIGINT (Ctrl-C) or SIGTERM stops the batch cleanly: no more\n"
            "requests are read or admitted, running requests are cancelled, and every line read\n"
            "so far still gets its one record (unfinished samples: finish_reason \"cancelled\"\n"
            "with the text generated so far; requests not yet started: empty texts). A line\n"
            "still incomplete on stdin is not read. Then the summary is printed and the exit\n"
            "status is 128 + the signal number: 130 (SIGINT) or 143 (SIGTERM). A second signal\n"
            "exits at once (same status) without writing the remaining records.\n"
            "\n"
            "Exit status: 0 when every line was processed (even with per-line errors), 1 on a\n"
            "fatal library error, 2 on a usage error, 130/143 after SIGINT/SIGTERM.\n"
            "\n" CLI_MODEL_RESOLUTION_HELP);
}

/* One input line. */
typedef struct request {
    int line;
    char *id_json;       /* the id as JSON text (malloc'd) */
    int valid;           /* parsed and validated */
    char *error;         /* malloc'd message when invalid */
    /* what to submit */
    char *prompt;        /* text (malloc'd), or NULL when tokens is set */
    int32_t *tokens;
    int32_t n_tokens;
    json_value *messages; /* borrowed from tree until formatted */
    bc_request_params rp;
    bc_sampling_params sp;
    char *adapter;       /* the "adapter" name (malloc'd), or NULL */
    char *stops[MAX_STOP_STRINGS];
    int n_stops;
    json_value *tree;
    int record;          /* --offline: 1 = its result, 2 = its error record is ready */
    /* results */
    uint64_t engine_id;  /* bc_engine_submit's id once submitted */
    int submitted, done;
    int finished;        /* samples finished */
    int any_cancelled;   /* a sample finished with reason cancelled */
    char **texts;
    size_t *text_lens;
    int *reasons;
    char *sample_error;  /* first error message of a sample */
    int prompt_tokens, cached_tokens;
    long completion_tokens;
    double ttft, total, itl_sum;
    long itl_count;
} request;

static char *dup_text(const char *s, size_t n) {
    char *d = (char *)malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static char *fmt_error(const char *fmt, const char *a, const char *b) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, fmt, a, b);
    return dup_text(tmp, strlen(tmp));
}

/* Reads an optional number field; returns 1 (absent: *present = 0), or 0 with r->error set. */
static int get_number(request *r, const char *key, double lo, double hi, int integer, double *out, int *present) {
    const json_value *v = json_get(r->tree, key);
    *present = 0;
    if (!v || v->type == JSON_NULL) return 1;
    if (v->type != JSON_NUMBER) {
        r->error = fmt_error("'%s' must be a number, not %s", key, json_type_name(v->type));
        return 0;
    }
    double d = v->number;
    if (!isfinite(d) || d < lo || d > hi || (integer && d != floor(d))) {
        char range[160];
        snprintf(range, sizeof range, "%s in [%.15g, %.15g]", integer ? "an integer" : "a number", lo, hi);
        r->error = fmt_error("'%s' must be %s", key, range);
        return 0;
    }
    *out = d;
    *present = 1;
    return 1;
}

/* Parses and validates one line into r (defaults from the template sampling/request params). */
static void parse_request(request *r, const char *line, size_t len, const bc_sampling_params *sp0,
                          const bc_request_params *rp0, int *uses_priority) {
    char err[200];
    char num[32];
    snprintf(num, sizeof num, "%d", r->line);
    r->id_json = dup_text(num, strlen(num));
    const char *nul = (const char *)memchr(line, '\0', len);
    if (nul) {
        char at[32];
        snprintf(at, sizeof at, "%lu", (unsigned long)(nul - line));
        r->error = fmt_error("the line contains a NUL byte (at byte %s)%s", at, "");
        return;
    }
    r->tree = json_parse(line, len, err, sizeof err);
    if (!r->tree) {
        r->error = fmt_error("invalid JSON: %s%s", err, "");
        return;
    }
    if (r->tree->type != JSON_OBJECT) {
        r->error = fmt_error("the line must be a JSON object, not %s%s", json_type_name(r->tree->type), "");
        return;
    }
    const json_value *id = json_get(r->tree, "id");
    if (id && (id->type == JSON_STRING || id->type == JSON_NUMBER)) {
        /* Re-encode strings (escapes normalised); echo numbers exactly as written. */
        char *out = NULL;
        size_t out_len = 0;
        FILE *f = open_memstream(&out, &out_len);
        if (f) {
            json_write(f, id);
            fclose(f);
            free(r->id_json);
            r->id_json = out;
        }
    } else if (id && id->type != JSON_NULL) {
        r->error = fmt_error("'id' must be a string or a number, not %s%s", json_type_name(id->type), "");
        return;
    }
    r->sp = *sp0;
    r->rp = *rp0;

    const json_value *prompt = json_get(r->tree, "prompt"), *messages = json_get(r->tree, "messages");
    if (prompt && prompt->type == JSON_NULL) prompt = NULL;
    if (messages && messages->type == JSON_NULL) messages = NULL;
    if (prompt && messages) { r->error = fmt_error("give either 'prompt' or 'messages', not both%s%s", "", ""); return; }
    if (!prompt && !messages) { r->error = fmt_error("missing 'prompt' (or 'messages')%s%s", "", ""); return; }
    if (prompt) {
        if (prompt->type == JSON_STRING) {
            if (prompt->len == 0) { r->error = fmt_error("'prompt' is empty%s%s", "", ""); return; }
            if (strlen(prompt->text) != prompt->len) { r->error = fmt_error("'prompt' contains a NUL character%s%s", "", ""); return; }
            r->prompt = dup_text(prompt->text, prompt->len);
        } else if (prompt->type == JSON_ARRAY) {
            if (prompt->count == 0) { r->error = fmt_error("'prompt' is an empty array%s%s", "", ""); return; }
            if (prompt->count > INT32_MAX) { r->error = fmt_error("'prompt' is too long%s%s", "", ""); return; }
            r->tokens = (int32_t *)malloc(prompt->count * sizeof *r->tokens);
            if (!r->tokens) { r->error = fmt_error("out of memory%s%s", "", ""); return; }
            for (size_t k = 0; k < prompt->count; k++) {
                const json_value *t = &prompt->items[k];
                if (t->type != JSON_NUMBER || !isfinite(t->number) || t->number != floor(t->number) || t->number < 0 ||
                    t->number > INT32_MAX) {
                    r->error = fmt_error("'prompt' as an array must hold token ids (integers >= 0)%s%s", "", "");
                    return;
                }
                r->tokens[k] = (int32_t)t->number;
            }
            r->n_tokens = (int32_t)prompt->count;
        } else {
            r->error = fmt_error("'prompt' must be a string or an array of token ids, not %s%s",
                                 json_type_name(prompt->type), "");
            return;
        }
    } else {
        if (messages->type != JSON_ARRAY || messages->count == 0) {
            r->error = fmt_error("'messages' must be a non-empty array of {\"role\", \"content\"} objects%s%s", "", "");
            return;
        }
        for (size_t k = 0; k < messages->count; k++) {
            const json_value *m = &messages->items[k];
            const json_value *role = json_get(m, "role"), *content = json_get(m, "content");
            if (m->type != JSON_OBJECT || !role || role->type != JSON_STRING || !content ||
                content->type != JSON_STRING || strlen(role->text) != role->len ||
                strlen(content->text) != content->len || role->len == 0) {
                char idx[32];
                snprintf(idx, sizeof idx, "%lu", (unsigned long)k);
                r->error = fmt_error("messages[%s] must be an object with string 'role' and 'content'%s", idx, "");
                return;
            }
        }
        r->messages = (json_value *)messages;
    }

    double d;
    int present;
    if (!get_number(r, "max_tokens", 1, INT32_MAX, 1, &d, &present)) return;
    if (present) r->rp.max_tokens = (int32_t)d;
    if (!get_number(r, "n", 1, MAX_N, 1, &d, &present)) return;
    if (present) r->rp.n = (int32_t)d;
    if (!get_number(r, "priority", INT32_MIN, INT32_MAX, 1, &d, &present)) return;
    if (present) { r->rp.priority = (int32_t)d; *uses_priority = 1; }
    if (!get_number(r, "temperature", 0, 1e6, 0, &d, &present)) return;
    if (present) r->sp.temperature = (float)d;
    if (!get_number(r, "top_p", 0, 1, 0, &d, &present)) return;
    if (present) {
        if (!((float)d > 0)) { r->error = fmt_error("'top_p' must be in (0, 1]%s%s", "", ""); return; }
        r->sp.top_p = (float)d;
    }
    if (!get_number(r, "top_k", 0, INT32_MAX, 1, &d, &present)) return;
    if (present) r->sp.top_k = (int32_t)d;
    if (!get_number(r, "min_p", 0, 1, 0, &d, &present)) return;
    if (present) r->sp.min_p = (float)d;
    if (!get_number(r, "presence_penalty", -2, 2, 0, &d, &present)) return;
    if (present) r->sp.presence_penalty = (float)d;
    if (!get_number(r, "frequency_penalty", -2, 2, 0, &d, &present)) return;
    if (present) r->sp.frequency_penalty = (float)d;
    if (!get_number(r, "penalty_last_n", -1, INT32_MAX, 1, &d, &present)) return;
    if (present) r->sp.penalty_last_n = (int32_t)d;
    if (!get_number(r, "repetition_penalty", 0, 1e6, 0, &d, &present)) return;
    if (present) {
        if (!((float)d > 0)) { r->error = fmt_error("'repetition_penalty' must be > 0%s%s", "", ""); return; }
        r->sp.repetition_penalty = (float)d;
    }
    if (!get_number(r, "adapter_scale", -1e6, 1e6, 0, &d, &present)) return;
    if (present) r->rp.adapter_scale = (float)d;
    const json_value *adapter = json_get(r->tree, "adapter");
    if (adapter && adapter->type != JSON_NULL) {
        if (adapter->type != JSON_STRING) { r->error = fmt_error("'adapter' must be a string (a --adapter NAME)%s%s", "", ""); return; }
        r->adapter = dup_text(adapter->text, strlen(adapter->text));
    }
    const json_value *seed = json_get(r->tree, "seed");
    if (seed && seed->type != JSON_NULL) {
        /* Exact through the source text; an integral value written otherwise (1e3, 5.0)
         * below 2^64 goes through the double. 2^64 and above are refused, not wrapped. */
        unsigned long long u = 0;
        if (seed->type == JSON_NUMBER && cli_parse_u64(seed->text, &u)) r->sp.seed = (uint64_t)u;
        else if (seed->type == JSON_NUMBER && isfinite(seed->number) && seed->number >= 0 &&
                 seed->number < 18446744073709551616.0 && seed->number == floor(seed->number))
            r->sp.seed = (uint64_t)seed->number;
        else {
            r->error = fmt_error("'seed' must be an integer in [0, 18446744073709551615]%s%s", "", "");
            return;
        }
    }

    const json_value *stop = json_get(r->tree, "stop");
    if (stop && stop->type != JSON_NULL) {
        const json_value *list = stop;
        size_t count = 1;
        if (stop->type == JSON_ARRAY) count = stop->count;
        else if (stop->type != JSON_STRING) {
            r->error = fmt_error("'stop' must be a string or an array of strings, not %s%s", json_type_name(stop->type), "");
            return;
        }
        if (count > MAX_STOP_STRINGS) { r->error = fmt_error("'stop' has more than 16 strings%s%s", "", ""); return; }
        for (size_t k = 0; k < count; k++) {
            const json_value *s = stop->type == JSON_ARRAY ? &list->items[k] : stop;
            if (s->type != JSON_STRING || s->len == 0 || strlen(s->text) != s->len) {
                r->error = fmt_error("'stop' strings must be non-empty strings without NUL%s%s", "", "");
                return;
            }
            r->stops[r->n_stops] = dup_text(s->text, s->len);
            if (!r->stops[r->n_stops]) { r->error = fmt_error("out of memory%s%s", "", ""); return; }
            r->n_stops++;
        }
        /* rp.stop_strings is set at submission: the requests array may still move. */
        r->rp.n_stop_strings = r->n_stops;
    }
    r->valid = 1;
}

static char *format_chat(bc_model *model, const json_value *messages, char **err) {
    size_t n = messages->count, len = 0;
    const char **roles = (const char **)malloc(n * sizeof *roles), **contents = (const char **)malloc(n * sizeof *contents);
    char *out = NULL;
    if (!roles || !contents) { *err = fmt_error("out of memory%s%s", "", ""); goto done; }
    for (size_t k = 0; k < n; k++) {
        roles[k] = json_get(&messages->items[k], "role")->text;
        contents[k] = json_get(&messages->items[k], "content")->text;
    }
    bc_status st = bc_chat_format(model, roles, contents, n, 1, NULL, 0, &len);
    if (st == BC_OK) {
        out = (char *)malloc(len + 1);
        if (!out) { *err = fmt_error("out of memory%s%s", "", ""); goto done; }
        st = bc_chat_format(model, roles, contents, n, 1, out, len + 1, &len);
    }
    if (st != BC_OK) {
        free(out);
        out = NULL;
        *err = fmt_error("chat format: %s: %s", bc_status_string(st), cli_error_text());
    }
done:
    free(roles);
    free(contents);
    return out;
}

static void write_error(const request *r) {
    printf("{\"id\":%s,\"line\":%d,\"error\":{\"message\":", r->id_json, r->line);
    cli_json_string(stdout, r->error, strlen(r->error));
    fputs("}}\n", stdout);
    fflush(stdout);
}

static int compare_ids(const void *a, const void *b) {
    const request *x = *(const request *const *)a, *y = *(const request *const *)b;
    int c = strcmp(x->id_json, y->id_json);
    return c != 0 ? c : (x->line > y->line) - (x->line < y->line);
}

/* Duplicate ids: an id belongs to the first line that has it (explicitly or as its
 * default, the line number); a later line with the same id is not run and gets an error
 * record. Ids are compared as they are echoed: strings by their text, numbers by their
 * source text (so 1 and "1" differ, as do 1 and 1.0). Returns 0 when out of memory. */
static int reject_duplicate_ids(request *reqs, size_t count) {
    if (count < 2) return 1;
    request **order = (request **)malloc(count * sizeof *order);
    if (!order) return 0;
    for (size_t k = 0; k < count; k++) order[k] = &reqs[k];
    qsort(order, count, sizeof *order, compare_ids);
    for (size_t k = 1, first = 0; k < count; k++) {
        if (strcmp(order[k]->id_json, order[first]->id_json) != 0) { first = k; continue; }
        request *r = order[k];
        if (!r->valid) continue; /* already an error record */
        char where[32];
        snprintf(where, sizeof where, "%d", order[first]->line);
        r->error = fmt_error("duplicate id %.400s: already used by line %s", r->id_json, where);
        r->valid = 0;
    }
    free(order);
    return 1;
}

static const char *reason_name(int reason) {
    switch (reason) {
    case BC_FINISH_LENGTH: return "length";
    case BC_FINISH_STOP: return "stop";
    case BC_FINISH_CANCELLED: return "cancelled";
    default: return "error";
    }
}

static void write_ms(double seconds) {
    if (isfinite(seconds)) printf("%.3f", seconds * 1e3);
    else fputs("null", stdout);
}

static void write_result(const request *r) {
    printf("{\"id\":%s,\"line\":%d,\"choices\":[", r->id_json, r->line);
    for (int k = 0; k < r->rp.n; k++) {
        if (k) putchar(',');
        printf("{\"index\":%d,\"text\":", k);
        const char *text = r->texts && r->texts[k] ? r->texts[k] : "";
        cli_json_string(stdout, text, r->texts && r->texts[k] ? r->text_lens[k] : 0);
        printf(",\"finish_reason\":\"%s\"}", r->reasons ? reason_name(r->reasons[k]) : "cancelled");
    }
    printf("],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%ld,\"cached_prompt_tokens\":%d},\"timings\":{\"ttft_ms\":",
           r->prompt_tokens, r->completion_tokens, r->cached_tokens);
    write_ms(r->ttft);
    fputs(",\"itl_ms\":", stdout);
    write_ms(r->itl_count > 0 ? r->itl_sum / (double)r->itl_count : NAN);
    fputs(",\"total_ms\":", stdout);
    write_ms(r->total);
    fputs("}", stdout);
    if (r->sample_error) {
        fputs(",\"error\":{\"message\":", stdout);
        cli_json_string(stdout, r->sample_error, strlen(r->sample_error));
        fputc('}', stdout);
    }
    fputs("}\n", stdout);
    fflush(stdout);
}

/* Records in input order (--offline): a record is held until every earlier line's
 * record is written. */
typedef struct record_order {
    int in_order;
    size_t next; /* first line whose record is not written yet */
} record_order;

/* Writes r's record (kind 1: result, 2: error) now, or in input order: marks it ready
 * and writes the ready records from the first unwritten line on. */
static void emit_record(record_order *o, request *reqs, size_t count, request *r, int kind) {
    if (!o->in_order) {
        if (kind == 1) write_result(r); else write_error(r);
        return;
    }
    r->record = kind;
    for (; o->next < count && reqs[o->next].record; o->next++) {
        if (reqs[o->next].record == 1) write_result(&reqs[o->next]); else write_error(&reqs[o->next]);
    }
}

static void free_request(request *r) {
    free(r->id_json);
    free(r->error);
    free(r->prompt);
    free(r->tokens);
    free(r->adapter);
    for (int k = 0; k < r->n_stops; k++) free(r->stops[k]);
    json_free(r->tree);
    if (r->texts)
        for (int k = 0; k < r->rp.n; k++) free(r->texts[k]);
    free(r->texts);
    free(r->text_lens);
    free(r->reasons);
    free(r->sample_error);
}

/* Reads all of stdin into a NUL-terminated malloc'd buffer (*len bytes). A stop signal
 * ends the reading: the bytes after the last newline (a line not yet complete) are then
 * dropped, so every line kept is whole. NULL (after printing why) on a read error. */
static char *read_input(size_t *len) {
    size_t cap = 1 << 16, used = 0;
    char *buf = (char *)malloc(cap);
    if (!buf) { fprintf(stderr, "batchcore batch: out of memory\n"); return NULL; }
    for (;;) {
        if (cli_stop_signal()) {
            while (used > 0 && buf[used - 1] != '\n') used--;
            break;
        }
        if (cap - used < 2) {
            char *bigger = (char *)realloc(buf, cap * 2);
            if (!bigger) { free(buf); fprintf(stderr, "batchcore batch: out of memory reading input\n"); return NULL; }
            buf = bigger;
            cap *= 2;
        }
        /* poll returns EINTR on a signal even under SA_RESTART, so a slow producer
         * cannot keep the process from seeing Ctrl-C. */
        struct pollfd p = {STDIN_FILENO, POLLIN, 0};
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "batchcore batch: reading stdin: %s\n", strerror(errno));
            free(buf);
            return NULL;
        }
        ssize_t n = read(STDIN_FILENO, buf + used, cap - used - 1);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            fprintf(stderr, "batchcore batch: reading stdin: %s\n", strerror(errno));
            free(buf);
            return NULL;
        }
        if (n == 0) break;
        used += (size_t)n;
    }
    buf[used] = '\0';
    *len = used;
    return buf;
}

/* Requests parsed so far, and (--stream) the bytes of a line not yet complete. */
typedef struct line_reader {
    request *reqs;
    size_t count, cap;
    int line_no, uses_priority;
    int stream;  /* duplicate ids are checked line by line (else after the whole input) */
    int started; /* past a possible byte order mark */
    const bc_sampling_params *sp0;
    const bc_request_params *rp0;
    char *buf;
    size_t used, buf_cap;
} line_reader;

/* Parses the complete lines of data[0..len) into requests; with `final` a last line
 * without a newline counts too. Returns the bytes consumed, or (size_t)-1 when out of
 * memory. */
static size_t add_lines(line_reader *lr, const char *data, size_t len, int final) {
    size_t at = 0;
    if (!lr->started) {
        /* A UTF-8 byte order mark (as some editors write) before the first line is skipped. */
        if (len < 3 && !final && !memchr(data, '\n', len)) return 0;
        if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) at = 3;
        lr->started = 1;
    }
    while (at < len) {
        const char *nl = (const char *)memchr(data + at, '\n', len - at);
        if (!nl && !final) break;
        size_t end = nl ? (size_t)(nl - data) : len;
        lr->line_no++;
        size_t n = end - at;
        if (n > 0 && data[at + n - 1] == '\r') n--;
        size_t k = 0;
        while (k < n && (data[at + k] == ' ' || data[at + k] == '\t')) k++;
        if (k < n) {
            if (lr->count == lr->cap) {
                size_t cap = lr->cap ? 2 * lr->cap : 64;
                request *bigger = (request *)realloc(lr->reqs, cap * sizeof *bigger);
                if (!bigger) return (size_t)-1;
                memset(bigger + lr->cap, 0, (cap - lr->cap) * sizeof *bigger);
                lr->reqs = bigger;
                lr->cap = cap;
            }
            request *r = &lr->reqs[lr->count++];
            r->line = lr->line_no;
            parse_request(r, data + at, n, lr->sp0, lr->rp0, &lr->uses_priority);
            if (!r->id_json) return (size_t)-1;
            if (lr->stream && r->valid) {
                /* The id belongs to the first earlier line that has it (as in
                 * reject_duplicate_ids). */
                for (size_t j = 0; j + 1 < lr->count; j++) {
                    if (strcmp(lr->reqs[j].id_json, r->id_json) != 0) continue;
                    char where[32];
                    snprintf(where, sizeof where, "%d", lr->reqs[j].line);
                    r->error = fmt_error("duplicate id %.400s: already used by line %s", r->id_json, where);
                    if (!r->error) return (size_t)-1;
                    r->valid = 0;
                    break;
                }
            }
        }
        at = nl ? end + 1 : len;
    }
    return at;
}

/* --stream: waits up to timeout_ms (-1: until something happens) for stdin, reads what
 * is there and parses its complete lines; at end of input the last line counts even
 * without a newline and *eof is set. Returns 0, or -1 after printing why (read error,
 * out of memory). A signal ends the wait (0 returned; the caller checks it). */
static int read_available(line_reader *lr, int timeout_ms, int *eof) {
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    int ready = poll(&p, 1, timeout_ms);
    if (ready < 0) {
        if (errno == EINTR) return 0;
        fprintf(stderr, "batchcore batch: reading stdin: %s\n", strerror(errno));
        return -1;
    }
    if (ready == 0) return 0;
    if (lr->buf_cap - lr->used < 4096) {
        size_t cap = lr->buf_cap ? 2 * lr->buf_cap : 65536;
        char *bigger = (char *)realloc(lr->buf, cap);
        if (!bigger) { fprintf(stderr, "batchcore batch: out of memory reading input\n"); return -1; }
        lr->buf = bigger;
        lr->buf_cap = cap;
    }
    ssize_t n = read(STDIN_FILENO, lr->buf + lr->used, lr->buf_cap - lr->used);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) return 0;
        fprintf(stderr, "batchcore batch: reading stdin: %s\n", strerror(errno));
        return -1;
    }
    if (n == 0) *eof = 1;
    lr->used += (size_t)n;
    size_t used = add_lines(lr, lr->buf, lr->used, *eof);
    if (used == (size_t)-1) { fprintf(stderr, "batchcore batch: out of memory\n"); return -1; }
    memmove(lr->buf, lr->buf + used, lr->used - used);
    lr->used -= used;
    return 0;
}

typedef struct progress {
    int tty, shown;
    double start, last;
} progress;

static void show_progress(progress *pg, bc_engine *engine, long done, long total, int final) {
    double now = cli_now();
    if (!final && now - pg->last < (pg->tty ? 0.25 : 2.0)) return;
    pg->last = now;
    bc_engine_metrics m;
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof m;
    if (bc_engine_get_metrics(engine, &m) != BC_OK) return;
    double el = now - pg->start;
    double kv = m.kv_total_bytes > 0 ? 100.0 * (double)m.kv_used_bytes / (double)m.kv_total_bytes : 0.0;
    fprintf(stderr, "%s%ld/%ld done, %.1f tok/s, KV %.0f%%, queue %lld, running %lld%s", pg->tty ? "\r" : "", done,
            total, el > 0 ? (double)m.generated_tokens / el : 0.0, kv, (long long)m.waiting, (long long)m.running,
            pg->tty ? "   " : "\n");
    fflush(stderr);
    pg->shown = 1;
}

int cmd_batch(int argc, char **argv) {
    cli_model_opts mo = {NULL, 0, 0};
    long threads = 0, max_tokens = 128;
    int stream = 0, offline = 0;
    const char *adapter_arg[MAX_ADAPTERS];
    bc_adapter *adapters[MAX_ADAPTERS] = {NULL};
    int n_adapters = 0;
    bc_engine_params ep;
    bc_status st = bc_engine_params_default(&ep, sizeof ep);
    if (st != BC_OK) { cli_report("engine defaults", st); return EXIT_FAIL; }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { batch_usage(stdout); return EXIT_OK; }
        if (strcmp(a, "--static") == 0) { ep.static_batching = 1; continue; }
        if (strcmp(a, "--stream") == 0) { stream = 1; continue; }
        if (strcmp(a, "--offline") == 0) { offline = 1; continue; }
        int r = cli_model_option("batch", argc, argv, &i, &mo);
        if (r < 0) return EXIT_USAGE;
        if (r > 0) continue;
        int ok = v != NULL;
        long l = 0;
        if (strcmp(a, "--max-batched-tokens") == 0) {
            ok = ok && cli_parse_long(v, &l) && l >= 1 && l <= INT32_MAX;
            ep.max_batched_tokens = (int32_t)l;
        } else if (strcmp(a, "--max-seqs") == 0) {
            ok = ok && cli_parse_long(v, &l) && l >= 1 && l <= INT32_MAX;
            ep.max_seqs = (int32_t)l;
        } else if (strcmp(a, "--kv-bytes") == 0) {
            unsigned long long u = 0;
            ok = ok && cli_parse_u64(v, &u) && u >= 1 && u <= (unsigned long long)INT64_MAX;
            ep.kv_bytes = (int64_t)u;
        } else if (strcmp(a, "--adapter-bytes") == 0) {
            unsigned long long u = 0;
            ok = ok && cli_parse_u64(v, &u) && u <= (unsigned long long)INT64_MAX;
            ep.adapter_bytes = (int64_t)u;
        } else if (strcmp(a, "--max-tokens") == 0) {
            ok = ok && cli_parse_long(v, &max_tokens) && max_tokens >= 1 && max_tokens <= INT32_MAX;
        } else if (strcmp(a, "-t") == 0 || strcmp(a, "--threads") == 0) {
            ok = ok && cli_parse_long(v, &threads) && threads >= 0 && threads <= 4096;
        } else if (strcmp(a, "--adapter") == 0) {
            const char *eq = v ? strchr(v, '=') : NULL;
            ok = ok && eq && eq > v && eq[1] != '\0' && n_adapters < MAX_ADAPTERS;
            for (int k = 0; ok && k < n_adapters; k++)
                if (strncmp(adapter_arg[k], v, (size_t)(eq - v) + 1) == 0) ok = 0; /* a repeated NAME */
            if (ok) adapter_arg[n_adapters++] = v;
        } else {
            fprintf(stderr, "batchcore batch: unknown option '%s'\n", a);
            batch_usage(stderr);
            return EXIT_USAGE;
        }
        if (!ok) return cli_bad_value("batch", a, v);
        i++;
    }

    if (offline && (stream || ep.static_batching)) {
        fprintf(stderr, "batchcore batch: --offline needs all requests first: not with %s\n", stream ? "--stream" : "--static");
        batch_usage(stderr);
        return EXIT_USAGE;
    }
    ep.offline = offline;

    /* Sampling defaults: the library's (bc_sampling_params_default), the same set as
     * generate and chat use; a request's fields override them one by one. */
    bc_sampling_params sp0;
    bc_request_params rp0;
    if ((st = bc_sampling_params_default(&sp0, sizeof sp0)) != BC_OK) { cli_report("sampling defaults", st); return EXIT_FAIL; }
    if ((st = bc_request_params_default(&rp0, sizeof rp0)) != BC_OK) { cli_report("request defaults", st); return EXIT_FAIL; }
    rp0.max_tokens = (int32_t)max_tokens;
    rp0.n = 1;

    /* From here on SIGINT/SIGTERM stop the batch cleanly (every read line gets a record). */
    if (!cli_catch_stop_signals(1)) return EXIT_FAIL;
    if (isatty(STDIN_FILENO)) fprintf(stderr, "batchcore batch: reading JSONL requests from stdin (end with Ctrl-D)\n");

    int rc = EXIT_OK;
    bc_model *model = NULL;
    bc_engine *engine = NULL;
    bc_event *events = NULL;
    const size_t event_cap = 1024;
    long done = 0, errors = 0, live = 0, cancelled = 0;
    int cancelling = 0;
    size_t next = 0; /* first request not yet submitted or reported */
    long long prompt_total = 0, cached_total = 0;
    progress pg = {isatty(STDERR_FILENO), 0, 0, 0};
    record_order ro = {offline, 0};
    line_reader lr;
    memset(&lr, 0, sizeof lr);
    lr.sp0 = &sp0;
    lr.rp0 = &rp0;
    lr.stream = stream;
    int eof = 0;

    pg.start = cli_now();
    if (!stream) {
        /* Read everything and parse every request before loading the model. */
        size_t in_len = 0;
        char *input = read_input(&in_len);
        if (!input) return EXIT_FAIL;
        size_t used = add_lines(&lr, input, in_len, 1);
        free(input);
        eof = 1;
        if (used == (size_t)-1 || !reject_duplicate_ids(lr.reqs, lr.count)) {
            fprintf(stderr, "batchcore batch: out of memory\n");
            rc = EXIT_FAIL;
            goto out;
        }
        if (cli_stop_signal()) goto stopped; /* nothing to run: records only */
    }
    if ((st = bc_set_num_threads((int32_t)threads)) != BC_OK) { cli_report("set threads", st); rc = EXIT_FAIL; goto out; }
    if ((rc = cli_load_model(&mo, &model)) != EXIT_OK) goto out;
    for (int k = 0; k < n_adapters; k++) {
        if ((st = bc_adapter_load(model, strchr(adapter_arg[k], '=') + 1, &adapters[k])) != BC_OK) {
            fprintf(stderr, "batchcore batch: --adapter %s: %s: %s\n", adapter_arg[k], bc_status_string(st), cli_error_text());
            rc = EXIT_FAIL;
            goto out;
        }
    }
    /* Streaming cannot know in advance whether a later line sets a priority: it always
     * schedules by priority, which with equal priorities is first-come-first-served. */
    if (lr.uses_priority || stream) ep.policy = 1;
    if ((st = bc_engine_create(model, &ep, &engine)) != BC_OK) { cli_report("create engine", st); rc = EXIT_FAIL; goto out; }
    events = (bc_event *)malloc(event_cap * sizeof *events);
    if (!events) { fprintf(stderr, "batchcore batch: out of memory\n"); rc = EXIT_FAIL; goto out; }

    pg.start = cli_now();
    for (;;) {
        if (!eof && !cli_stop_signal()) {
            /* --stream: take whatever complete lines have arrived; wait for more only
             * when the engine has nothing to do. */
            int r = read_available(&lr, live > 0 ? 0 : -1, &eof);
            if (r < 0) { rc = EXIT_FAIL; goto out; }
        }
        for (; next < lr.count && !cli_stop_signal(); next++) {
            const size_t k = next;
            request *r = &lr.reqs[k];
            if (r->valid && r->messages) {
                char *err = NULL;
                r->prompt = format_chat(model, r->messages, &err);
                if (!r->prompt) { r->error = err; r->valid = 0; }
            }
            if (r->valid && r->adapter) {
                size_t n = strlen(r->adapter);
                for (int a = 0; a < n_adapters; a++)
                    if (strncmp(adapter_arg[a], r->adapter, n) == 0 && adapter_arg[a][n] == '=') r->rp.adapter = adapters[a];
                if (!r->rp.adapter) {
                    r->error = fmt_error("unknown adapter '%s' (not given with --adapter NAME=DIR)%s", r->adapter, "");
                    r->valid = 0;
                }
            }
            if (r->valid) {
                r->texts = (char **)calloc((size_t)r->rp.n, sizeof *r->texts);
                r->text_lens = (size_t *)calloc((size_t)r->rp.n, sizeof *r->text_lens);
                r->reasons = (int *)calloc((size_t)r->rp.n, sizeof *r->reasons);
                if (!r->texts || !r->text_lens || !r->reasons) { fprintf(stderr, "batchcore batch: out of memory\n"); rc = EXIT_FAIL; goto out; }
                r->rp.user_tag = (uint64_t)k;
                /* Points into the request itself, which moves whenever the requests
                 * array grows: set only now (a pointer set at parse time dangled). */
                r->rp.stop_strings = r->n_stops > 0 ? (const char *const *)r->stops : NULL;
                r->ttft = NAN;
                r->total = NAN;
                st = r->tokens ? bc_engine_submit(engine, r->tokens, r->n_tokens, &r->rp, &r->sp, &r->engine_id)
                               : bc_engine_submit_text(engine, r->prompt, &r->rp, &r->sp, &r->engine_id);
                if (st == BC_OK) {
                    r->submitted = 1;
                    live++;
                    continue;
                }
                if (st != BC_E_INVALID_ARGUMENT && st != BC_E_KV_FULL && st != BC_E_UNSUPPORTED) {
                    cli_report("submit", st);
                    rc = EXIT_FAIL;
                    goto out;
                }
                r->error = fmt_error("%s: %s", bc_status_string(st), cli_error_text());
                r->valid = 0;
            }
            if (!r->error) r->error = fmt_error("out of memory%s%s", "", "");
            if (pg.shown && pg.tty) fprintf(stderr, "\r%78s\r", "");
            pg.shown = 0;
            emit_record(&ro, lr.reqs, lr.count, r, 2);
            errors++;
            done++;
        }
        if (live == 0) {
            if (eof || cli_stop_signal()) break;
            continue; /* --stream: wait for the next line */
        }
        {
            int32_t processed = 0, n_live = 0;
            if (cli_stop_signal() && !cancelling) {
                /* Stop: cancel every live request; its samples' FINISHED events (reason
                 * cancelled, partial text) are queued at once. NOT_FOUND = already finished,
                 * its events are queued too. */
                cancelling = 1;
                for (size_t k = 0; k < next; k++) {
                    request *r = &lr.reqs[k];
                    if (!r->submitted || r->done) continue;
                    st = bc_engine_cancel(engine, r->engine_id);
                    if (st != BC_OK && st != BC_E_NOT_FOUND) { cli_report("cancel", st); rc = EXIT_FAIL; goto out; }
                }
                n_live = (int32_t)live;
                processed = 1;
            } else if ((st = bc_engine_step(engine, &processed, &n_live)) != BC_OK) {
                cli_report("engine step", st);
                rc = EXIT_FAIL;
                goto out;
            }
            for (;;) {
                size_t n_ev = 0;
                if ((st = bc_engine_poll(engine, events, event_cap, sizeof *events, &n_ev)) != BC_OK) { cli_report("engine poll", st); rc = EXIT_FAIL; goto out; }
                for (size_t e = 0; e < n_ev; e++) {
                    const bc_event *ev = &events[e];
                    if (ev->kind != BC_EVENT_FINISHED || ev->user_tag >= lr.count) continue;
                    request *r = &lr.reqs[ev->user_tag];
                    int idx = ev->index;
                    if (idx < 0 || idx >= r->rp.n || r->texts[idx]) continue;
                    r->texts[idx] = dup_text(ev->text ? ev->text : "", ev->text ? ev->text_len : 0);
                    if (!r->texts[idx]) { fprintf(stderr, "batchcore batch: out of memory\n"); rc = EXIT_FAIL; goto out; }
                    r->text_lens[idx] = ev->text ? ev->text_len : 0;
                    r->reasons[idx] = ev->finish_reason;
                    if (ev->finish_reason == BC_FINISH_ERROR && !r->sample_error && ev->message)
                        r->sample_error = dup_text(ev->message, strlen(ev->message));
                    if (ev->prompt_tokens > r->prompt_tokens) r->prompt_tokens = ev->prompt_tokens;
                    if (ev->cached_prompt_tokens > r->cached_tokens) r->cached_tokens = ev->cached_prompt_tokens;
                    r->completion_tokens += ev->generated_tokens;
                    if (isfinite(ev->ttft_seconds) && !(ev->ttft_seconds >= r->ttft)) r->ttft = ev->ttft_seconds;
                    if (isfinite(ev->total_seconds) && !(ev->total_seconds <= r->total)) r->total = ev->total_seconds;
                    if (isfinite(ev->itl_seconds) && ev->generated_tokens >= 2) {
                        r->itl_sum += ev->itl_seconds * (ev->generated_tokens - 1);
                        r->itl_count += ev->generated_tokens - 1;
                    }
                    if (ev->finish_reason == BC_FINISH_CANCELLED) r->any_cancelled = 1;
                    if (++r->finished == r->rp.n) {
                        r->done = 1;
                        if (r->any_cancelled) cancelled++;
                        live--;
                        done++;
                        prompt_total += r->prompt_tokens;
                        cached_total += r->cached_tokens;
                        if (pg.shown && pg.tty) fprintf(stderr, "\r%78s\r", "");
                        pg.shown = 0;
                        emit_record(&ro, lr.reqs, lr.count, r, 1);
                        if (r->sample_error) errors++;
                    }
                }
                if (n_ev < event_cap) break;
            }
            if (ferror(stdout)) { fprintf(stderr, "batchcore batch: writing to stdout failed\n"); rc = EXIT_FAIL; goto out; }
            if (!mo.quiet) show_progress(&pg, engine, done, (long)lr.count, 0);
            if (n_live == 0 && live > 0 && processed == 0) {
                fprintf(stderr, "batchcore batch: the engine went idle with %ld requests unfinished\n", live);
                rc = EXIT_FAIL;
                goto out;
            }
        }
    }
stopped:
    /* Requests a stop signal kept from being submitted: invalid lines get their error
     * record, valid ones a cancelled record with empty texts. */
    for (; next < lr.count; next++) {
        request *r = &lr.reqs[next];
        if (pg.shown && pg.tty) fprintf(stderr, "\r%78s\r", "");
        pg.shown = 0;
        if (r->valid) {
            r->ttft = NAN; /* never started: timings null */
            r->total = NAN;
            emit_record(&ro, lr.reqs, lr.count, r, 1);
            cancelled++;
        } else {
            if (!r->error) r->error = fmt_error("out of memory%s%s", "", "");
            emit_record(&ro, lr.reqs, lr.count, r, 2);
            errors++;
        }
        done++;
    }
    if (!mo.quiet) {
        if (pg.shown && pg.tty) fprintf(stderr, "\n");
        bc_engine_metrics m;
        memset(&m, 0, sizeof m);
        m.struct_size = sizeof m;
        double wall = cli_now() - pg.start;
        if (!engine || bc_engine_get_metrics(engine, &m) != BC_OK) {
            memset(&m, 0, sizeof m);
        }
        fprintf(stderr,
                "batch: %lu requests (%ld errors, %ld cancelled), %lld prompt tokens (%lld cached), %lld generated tokens, "
                "%.1f tok/s, %.2f s wall, prefix hit rate %.1f%%, %lld preemptions, %lld batched tokens%s\n",
                (unsigned long)lr.count, errors, cancelled, prompt_total, cached_total, (long long)m.generated_tokens,
                wall > 0 ? (double)m.generated_tokens / wall : 0.0, wall, 100.0 * m.prefix_hit_rate,
                (long long)m.preemptions, (long long)m.batched_tokens, offline ? " (offline)" : "");
    }
    if (cli_stop_signal()) {
        if (!mo.quiet) fprintf(stderr, "batch: stopped by %s\n", cli_signal_name(cli_stop_signal()));
        rc = 128 + cli_stop_signal();
    }
out:
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (rc == EXIT_OK) fprintf(stderr, "batchcore batch: writing to stdout failed\n");
        if (rc == EXIT_OK) rc = EXIT_FAIL;
    }
    for (size_t k = 0; k < lr.count; k++) free_request(&lr.reqs[k]);
    free(lr.reqs);
    free(lr.buf);
    free(events);
    bc_engine_free(engine);
    for (int k = 0; k < n_adapters; k++) bc_adapter_free(adapters[k]);
    bc_model_free(model);
    return rc;
}
