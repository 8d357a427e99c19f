/* A small strict JSON (RFC 8259) reader and writer helpers for the batchcore CLI.
 * The reader builds a tree; it rejects trailing garbage, lone surrogates in \u escapes,
 * leading zeros, control characters in strings and nesting deeper than 64. */
#ifndef BATCHCORE_CLI_JSON_H
#define BATCHCORE_CLI_JSON_H

#include <stddef.h>
#include <stdio.h>

typedef enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value json_value;
struct json_value {
    json_type type;
    int boolean;          /* JSON_BOOL */
    double number;        /* JSON_NUMBER */
    char *text;           /* JSON_STRING: decoded UTF-8, NUL-terminated (may hold NULs: use len);
                             JSON_NUMBER: the number's source text */
    size_t len;           /* byte length of text */
    size_t count;         /* JSON_ARRAY / JSON_OBJECT: number of items */
    json_value *items;    /* array items or object values */
    char **keys;          /* JSON_OBJECT: NUL-terminated keys, parallel to items */
};

/* Parses `len` bytes. Returns a tree to free with json_free, or NULL with a message in
 * err (e.g. "expected ',' or '}' at byte 17"). */
json_value *json_parse(const char *text, size_t len, char *err, size_t err_size);

/* Frees a tree returned by json_parse; NULL is a no-op. */
void json_free(json_value *v);

/* The value of `key` in an object (the last one when a key repeats), or NULL. */
const json_value *json_get(const json_value *object, const char *key);

/* "null", "boolean", "number", "string", "array" or "object". */
const char *json_type_name(json_type t);

/* Writes a number: integers exactly, others with 17 significant digits; NaN/Inf as null. */
void json_write_number(FILE *out, double v);

/* Writes a value back as compact JSON (numbers with their source text). */
void json_write(FILE *out, const json_value *v);

#endif
