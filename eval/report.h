/* report.h: the evaluation report: per-approach accuracy with a 95% Wilson interval, errors,
 * latency, upstream calls and tokens per item, and paired wins/losses against a baseline with
 * an exact McNemar p-value; written as report.json, report.md, report.csv and report.svg.
 * Not thread-safe (built once, after the runs). */
#ifndef EVAL_REPORT_H
#define EVAL_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "results.h"

struct buf;

/* Where the results came from; every field may be NULL. Never holds a key. */
struct report_meta {
    const char *model;
    const char *dataset;
    const char *endpoint;  /* the upstream base URL or the proxy URL */
    const char *generated; /* UTC time, ISO 8601 */
    const char *sources;   /* merge: the folders merged, comma-separated */
    long skipped_lines;    /* malformed dataset lines of the last run; -1 unknown */
};

/* One approach. Means are NAN when nothing was measured (null in JSON, "n/a" in text). */
struct report_row {
    const char *approach; /* borrowed from the results set */
    long items;           /* results of this approach */
    long correct;
    long errors;
    double accuracy; /* correct / items: an error counts as a wrong answer */
    double ci_lo, ci_hi;
    double accuracy_answered; /* correct / (items - errors) */
    double latency_mean_ms;   /* over results without an error */
    double latency_p95_ms;
    double calls_per_item;      /* over results that report their upstream calls */
    double prompt_per_item;     /* over results without an error that report usage */
    double completion_per_item; /* idem */
    /* Against the baseline, over items both have (not set for the baseline itself). */
    bool paired_set;
    long paired;
    long wins;    /* this approach right, the baseline wrong */
    long losses;  /* this approach wrong, the baseline right */
    long both;    /* both right */
    long neither; /* both wrong */
    double mcnemar_p;
};

struct report {
    struct report_meta meta;
    const char *baseline; /* borrowed; NULL when there are no results */
    long items;           /* distinct ids */
    long results;
    struct report_row *rows; /* malloc'd, nrows entries */
    size_t nrows;
};

/* Summarises 's'. Rows come in the order of 'order' (names without results are left out),
 * then the set's other approaches in first-seen order. The baseline is 'baseline' when it has
 * results, else the first row. 'r' borrows strings from 's' and 'meta'. */
void report_build(const struct results_set *s, const char *const *order, size_t norder,
                  const char *baseline, const struct report_meta *meta, struct report *r);
void report_cleanup(struct report *r);

/* The report in each format, appended to 'out'. */
void report_json(const struct report *r, struct buf *out);
void report_markdown(const struct report *r, struct buf *out);
void report_csv(const struct report *r, struct buf *out);
void report_svg(const struct report *r, struct buf *out);
/* The cost-accuracy chart (cost_accuracy.svg): one point per approach at (mean tokens per
 * item, accuracy) with its 95% Wilson interval as a whisker; the Pareto front is joined by a
 * line and its points are filled. Rows without token counts are left out (named in a note). */
void report_cost_svg(const struct report *r, struct buf *out);

/* Mean tokens per item (prompt + completion; NAN when neither is known). */
double report_tokens(const struct report_row *w);
/* The Pareto front over (fewer tokens, higher accuracy): front[i] is true when no other row
 * with token counts has at most row i's tokens and at least its accuracy, one of them strictly.
 * Rows without token counts are never on it. Returns the number of rows on it. */
size_t report_pareto(const struct report *r, bool *front);

/* Writes DIR/report.{json,md,csv,svg} and DIR/cost_accuracy.svg, each through a temporary file and
 * rename(2). Returns 0, or -1 with a message on 'errs'. */
int report_write(const struct report *r, const char *dir, FILE *errs);

/* "61.0%" style helpers shared with the progress line: writes into buf and returns it. */
const char *report_pct(double x, char *buf, size_t len);

#endif
