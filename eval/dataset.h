/* dataset.h: evaluation datasets: JSON Lines items in our own layout or in the common public
 * ones (GSM8K, MATH, multiple choice in the MMLU / ARC / AQuA styles), or a JSON array of
 * such items. Not thread-safe while loading; read-only afterwards. */
#ifndef EVAL_DATASET_H
#define EVAL_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "answer.h"

#define DATASET_MAX_LINE    (16u << 20) /* one JSON line; longer lines are reported, skipped */
#define DATASET_MAX_FILE    (1u << 30)  /* a whole-file JSON array */
#define DATASET_MAX_CHOICES 10          /* letters A..J, as answer.h reads them */

/* One question. Every string is malloc'd and owned by the item (dataset_item_cleanup). */
struct item {
    char *id;              /* the dataset's id, or the line number, as text */
    long line;             /* 1-based line (array index + 1 for a JSON array) */
    char *question;        /* the question text, without the choices */
    char **choices;        /* nchoices texts (multiple choice), or NULL */
    size_t nchoices;       /* 0..DATASET_MAX_CHOICES */
    enum answer_kind type; /* ANSWER_NUMBER, ANSWER_CHOICE or ANSWER_TEXT */
    char *expected;        /* canonical expected answer: "42", "B", or normalised text */
    double expected_num;   /* the value for ANSWER_NUMBER */
};

struct dataset {
    struct item *items; /* in file order */
    size_t nitems;
    size_t cap;
    long *bad_lines; /* line numbers of skipped (malformed) lines, in order */
    size_t nbad;
    size_t bad_cap;
};

/* Parses one JSON value (a line of the file) into 'out' (zeroed first). 'line' is its line
 * number, used as the id when the item has none. Returns 0, or -1 with a one-line reason in
 * 'why' (and 'out' left empty). Needs answer_init() to have run. */
int dataset_parse_item(const char *json, size_t len, long line, struct item *out, char *why,
                       size_t why_len);

/* Reads a dataset from 'f' ('name' for messages). Malformed lines and duplicate ids are
 * reported on 'errs' as "name:LINE: skipped: reason" and recorded in bad_lines; with 'strict'
 * the first one stops the load. Blank lines are ignored. Returns 0, or -1 when the file could
 * not be read or (strict) a line was malformed; the dataset holds what was read either way and
 * must be cleaned up. */
int dataset_read(FILE *f, const char *name, bool strict, FILE *errs, struct dataset *ds);

/* Keeps the first 'limit' items (limit < 0: all), then those of shard 'shard' of 'nshards'
 * (nshards <= 1: all). The shard of an item is fnv1a64(id) % nshards. */
void dataset_select(struct dataset *ds, long limit, unsigned shard, unsigned nshards);

/* FNV-1a, 64 bits, of a NUL-terminated string. */
unsigned long long dataset_fnv1a(const char *s);

void dataset_item_cleanup(struct item *it);
void dataset_cleanup(struct dataset *ds);

/* "number", "choice" or "text". */
const char *dataset_type_name(enum answer_kind type);

#endif
