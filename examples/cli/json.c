/* Strict JSON reader (tree) and writer helpers; see json.h. */
#include "json.h"

#include "cli.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

typedef struct parser {
    const char *s;
    size_t n, i;
    char *err;
    size_t err_size;
    int failed;
} parser;

static void fail(parser *p, const char *what) {
    if (p->failed) return;
    p->failed = 1;
    if (p->err && p->err_size) snprintf(p->err, p->err_size, "%s at byte %lu", what, (unsigned long)p->i + 1);
}

static void skip_ws(parser *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int literal(parser *p, const char *word) {
    size_t l = strlen(word);
    if (p->n - p->i < l || memcmp(p->s + p->i, word, l) != 0) return 0;
    p->i += l;
    return 1;
}

/* Growable byte buffer. */
typedef struct buf {
    char *d;
    size_t len, cap;
} buf;

static int buf_put(buf *b, const char *bytes, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = (char *)realloc(b->d, cap);
        if (!d) return 0;
        b->d = d;
        b->cap = cap;
    }
    memcpy(b->d + b->len, bytes, n);
    b->len += n;
    b->d[b->len] = '\0';
    return 1;
}

static int put_utf8(buf *b, unsigned long cp) {
    char o[4];
    size_t n;
    if (cp < 0x80) { o[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { o[0] = (char)(0xc0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3f)); n = 2; }
    else if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[2] = (char)(0x80 | (cp & 0x3f)); n = 3;
    } else {
        o[0] = (char)(0xf0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f)); n = 4;
    }
    return buf_put(b, o, n);
}

static int hex4(parser *p, unsigned long *out) {
    if (p->n - p->i < 4) return 0;
    unsigned long v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i + (size_t)k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned long)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned long)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned long)(c - 'A' + 10);
        else return 0;
    }
    p->i += 4;
    *out = v;
    return 1;
}

/* At the opening quote. On success returns a malloc'd string and its length. */
static char *parse_string(parser *p, size_t *len_out) {
    buf b = {NULL, 0, 0};
    if (!buf_put(&b, "", 0)) { fail(p, "out of memory"); return NULL; }
    p->i++; /* '"' */
    for (;;) {
        if (p->i >= p->n) { fail(p, "unterminated string"); break; }
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') {
            p->i++;
            *len_out = b.len;
            return b.d;
        }
        if (c < 0x20) { fail(p, "control character in string"); break; }
        if (c != '\\') {
            size_t start = p->i;
            while (p->i < p->n && p->s[p->i] != '"' && p->s[p->i] != '\\' && (unsigned char)p->s[p->i] >= 0x20) p->i++;
            if (!buf_put(&b, p->s + start, p->i - start)) { fail(p, "out of memory"); break; }
            continue;
        }
        p->i++;
        if (p->i >= p->n) { fail(p, "unterminated string"); break; }
        char e = p->s[p->i++];
        char one = 0;
        switch (e) {
        case '"': one = '"'; break;
        case '\\': one = '\\'; break;
        case '/': one = '/'; break;
        case 'b': one = '\b'; break;
        case 'f': one = '\f'; break;
        case 'n': one = '\n'; break;
        case 'r': one = '\r'; break;
        case 't': one = '\t'; break;
        case 'u': {
            unsigned long cp;
            if (!hex4(p, &cp)) { fail(p, "bad \\u escape"); goto error; }
            if (cp >= 0xdc00 && cp <= 0xdfff) { fail(p, "lone low surrogate in \\u escape"); goto error; }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned long lo;
                if (!(p->n - p->i >= 2 && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u')) {
                    fail(p, "lone high surrogate in \\u escape");
                    goto error;
                }
                p->i += 2;
                if (!hex4(p, &lo) || lo < 0xdc00 || lo > 0xdfff) { fail(p, "bad surrogate pair"); goto error; }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (!put_utf8(&b, cp)) { fail(p, "out of memory"); goto error; }
            continue;
        }
        default: p->i--; fail(p, "bad escape in string"); goto error;
        }
        if (!buf_put(&b, &one, 1)) { fail(p, "out of memory"); break; }
    }
error:
    free(b.d);
    return NULL;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int parse_number(parser *p, json_value *v) {
    size_t start = p->i;
    if (p->i < p->n && p->s[p->i] == '-') p->i++;
    if (p->i >= p->n || !is_digit(p->s[p->i])) { fail(p, "bad number"); return 0; }
    if (p->s[p->i] == '0') {
        p->i++;
        if (p->i < p->n && is_digit(p->s[p->i])) { fail(p, "leading zero in number"); return 0; }
    } else
        while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        if (p->i >= p->n || !is_digit(p->s[p->i])) { fail(p, "bad fraction in number"); return 0; }
        while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        if (p->i >= p->n || !is_digit(p->s[p->i])) { fail(p, "bad exponent in number"); return 0; }
        while (p->i < p->n && is_digit(p->s[p->i])) p->i++;
    }
    size_t l = p->i - start;
    v->text = (char *)malloc(l + 1);
    if (!v->text) { fail(p, "out of memory"); return 0; }
    memcpy(v->text, p->s + start, l);
    v->text[l] = '\0';
    v->len = l;
    v->type = JSON_NUMBER;
    v->number = strtod(v->text, NULL); /* may be +-HUGE_VAL for 1e999: callers range-check */
    return 1;
}

static void free_contents(json_value *v);

/* Appends a zeroed slot to an array/object under construction; returns it or NULL. */
static json_value *push_item(json_value *v, size_t *cap, int with_key) {
    if (v->count == *cap) {
        size_t c = *cap ? *cap * 2 : 4;
        json_value *items = (json_value *)realloc(v->items, c * sizeof *items);
        if (!items) return NULL;
        v->items = items;
        if (with_key) {
            char **keys = (char **)realloc(v->keys, c * sizeof *keys);
            if (!keys) return NULL;
            v->keys = keys;
        }
        *cap = c;
    }
    json_value *slot = &v->items[v->count];
    memset(slot, 0, sizeof *slot);
    if (with_key) v->keys[v->count] = NULL;
    v->count++;
    return slot;
}

static int parse_value(parser *p, json_value *v, int depth) {
    memset(v, 0, sizeof *v);
    skip_ws(p);
    if (p->i >= p->n) { fail(p, "unexpected end of input"); return 0; }
    char c = p->s[p->i];
    if (c == '"') {
        size_t l = 0;
        char *s = parse_string(p, &l);
        if (!s) return 0;
        v->type = JSON_STRING;
        v->text = s;
        v->len = l;
        return 1;
    }
    if (c == '-' || is_digit(c)) return parse_number(p, v);
    if (literal(p, "true")) { v->type = JSON_BOOL; v->boolean = 1; return 1; }
    if (literal(p, "false")) { v->type = JSON_BOOL; v->boolean = 0; return 1; }
    if (literal(p, "null")) { v->type = JSON_NULL; return 1; }
    if (c != '[' && c != '{') { fail(p, "unexpected character"); return 0; }
    if (depth >= JSON_MAX_DEPTH) { fail(p, "nesting too deep"); return 0; }
    int object = c == '{';
    v->type = object ? JSON_OBJECT : JSON_ARRAY;
    p->i++;
    size_t cap = 0;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == (object ? '}' : ']')) { p->i++; return 1; }
    for (;;) {
        skip_ws(p);
        json_value *slot = push_item(v, &cap, object);
        if (!slot) { fail(p, "out of memory"); return 0; }
        if (object) {
            if (p->i >= p->n || p->s[p->i] != '"') { fail(p, "expected a string key"); return 0; }
            size_t kl = 0;
            char *key = parse_string(p, &kl);
            if (!key) return 0;
            v->keys[v->count - 1] = key;
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') { fail(p, "expected ':'"); return 0; }
            p->i++;
        }
        if (!parse_value(p, slot, depth + 1)) return 0;
        skip_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
        if (p->i < p->n && p->s[p->i] == (object ? '}' : ']')) { p->i++; return 1; }
        fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
        return 0;
    }
}

static void free_contents(json_value *v) {
    free(v->text);
    for (size_t k = 0; k < v->count; k++) {
        free_contents(&v->items[k]);
        if (v->keys) free(v->keys[k]);
    }
    free(v->items);
    free(v->keys);
}

json_value *json_parse(const char *text, size_t len, char *err, size_t err_size) {
    parser p = {text, len, 0, err, err_size, 0};
    if (err && err_size) err[0] = '\0';
    json_value *v = (json_value *)calloc(1, sizeof *v);
    if (!v) { fail(&p, "out of memory"); return NULL; }
    if (parse_value(&p, v, 0)) {
        skip_ws(&p);
        if (p.i == p.n) return v;
        fail(&p, "trailing characters after the value");
    }
    free_contents(v);
    free(v);
    return NULL;
}

void json_free(json_value *v) {
    if (!v) return;
    free_contents(v);
    free(v);
}

const json_value *json_get(const json_value *object, const char *key) {
    if (!object || object->type != JSON_OBJECT) return NULL;
    for (size_t k = object->count; k-- > 0;)
        if (strcmp(object->keys[k], key) == 0) return &object->items[k];
    return NULL;
}

const char *json_type_name(json_type t) {
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "boolean";
    case JSON_NUMBER: return "number";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "array";
    default: return "object";
    }
}

void json_write_number(FILE *out, double v) {
    if (!isfinite(v)) fputs("null", out);
    else if (v == floor(v) && fabs(v) < 9.007199254740992e15) fprintf(out, "%.0f", v);
    else fprintf(out, "%.17g", v);
}

void json_write(FILE *out, const json_value *v) {
    switch (v->type) {
    case JSON_NULL: fputs("null", out); break;
    case JSON_BOOL: fputs(v->boolean ? "true" : "false", out); break;
    case JSON_NUMBER: fputs(v->text, out); break;
    case JSON_STRING: cli_json_string(out, v->text, v->len); break;
    case JSON_ARRAY:
    case JSON_OBJECT:
        fputc(v->type == JSON_ARRAY ? '[' : '{', out);
        for (size_t k = 0; k < v->count; k++) {
            if (k) fputc(',', out);
            if (v->type == JSON_OBJECT) {
                cli_json_string(out, v->keys[k], strlen(v->keys[k]));
                fputc(':', out);
            }
            json_write(out, &v->items[k]);
        }
        fputc(v->type == JSON_ARRAY ? ']' : '}', out);
        break;
    }
}
