/* results.h: OUT/results.jsonl, one JSON object per (item, approach): the record, the line
 * writer and the reader used by --resume, merge and the report. A set is used by one thread at
 * a time (callers lock). */
#ifndef EVAL_RESULTS_H
#define EVAL_RESULTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct arena;

/* One finished (item, approach). Strings are owned by whoever owns the record (the set's arena
 * when it came from results_set_add or results_read). Unknown numbers are -1 (null in JSON). */
struct result {
    const char *id;
    const char *approach;
    bool correct;
    const char *extracted; /* NULL: nothing extracted (or an error) */
    const char *expected;
    const char *type;  /* "number", "choice", "text" */
    const char *error; /* NULL when the request succeeded */
    double latency_ms; /* wall time of the last attempt's request */
    long upstream_calls;
    long prompt_tokens;
    long completion_tokens;
    int status;           /* HTTP status of the last attempt, 0 for a transport error */
    int attempts;         /* requests made, retries included */
    const char *response; /* the answer text (capped), or NULL */
    bool response_truncated;
};

/* Results keyed by (id, approach): insertion order kept, duplicates refused. */
struct results_set {
    struct arena *arena;
    struct result *v;
    size_t n, cap;
    size_t *slot; /* open addressing: index + 1, 0 = empty */
    size_t nslot;
    const char **approaches; /* distinct approach names in first-seen order (in the arena) */
    size_t napproaches;
};

void results_set_init(struct results_set *s);
void results_set_cleanup(struct results_set *s);
/* The record for (id, approach), or NULL. */
const struct result *results_find(const struct results_set *s, const char *id,
                                  const char *approach);
/* Copies 'r' (strings too) into the set. Returns false (nothing added) for a duplicate. */
bool results_set_add(struct results_set *s, const struct result *r);

/* Serialises 'r' as one line of JSON followed by '\n'. Returns a malloc'd string. */
char *results_line(const struct result *r);
/* Parses one line; the strings are copied into 'a'. Returns 0, or -1 when it is not a complete
 * result object. */
int results_parse_line(struct arena *a, const char *line, size_t len, struct result *out);

/* Reads a results file into 's'. Lines that do not parse are reported on 'errs' and skipped;
 * duplicates (id, approach) keep the first. When 'repair' is set and the file's last line is
 * incomplete (a run killed mid-write), the file is truncated to the end of its last complete
 * line. Sets *lines_read (may be NULL) to the count of records added. Returns 0, or -1 when
 * the file exists but cannot be read (a missing file is an empty set). */
int results_read(const char *path, bool repair, FILE *errs, struct results_set *s,
                 size_t *lines_read);

#endif
