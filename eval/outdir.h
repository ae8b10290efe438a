/* outdir.h: the output folder: creation, the single-writer lock, OUT/run.json (what was run,
 * never a key), and the report written from OUT/results.jsonl. Not thread-safe. */
#ifndef EVAL_OUTDIR_H
#define EVAL_OUTDIR_H

#include <stdbool.h>
#include <stddef.h>

#include "report.h"
#include "results.h"

/* What run.json records. Strings are malloc'd; outdir_meta_cleanup frees them. */
struct run_meta {
    char *model;
    char *dataset;
    char *endpoint;
    char *shard; /* "I/N" or NULL */
    char **approaches;
    size_t napproaches;
    long skipped_lines; /* -1 unknown */
    char *sources;      /* merged folders, or NULL */
};

/* Creates 'dir' and its parents (mode 0755). Returns 0, or -1 with a message printed. */
int outdir_create(const char *dir);
/* Takes an exclusive lock on DIR/.lock for the life of the process; returns the fd (keep it
 * open), or -1 with a message printed when another run holds it. */
int outdir_lock(const char *dir);
/* DIR/name into buf. */
const char *outdir_path(char *buf, size_t len, const char *dir, const char *name);

/* Reads DIR/run.json into 'm' (zeroed first). Returns 0, or -1 when absent or unreadable. */
int outdir_meta_read(const char *dir, struct run_meta *m);
/* Writes DIR/run.json atomically. Returns 0 or -1 (message printed). */
int outdir_meta_write(const char *dir, const struct run_meta *m);
void outdir_meta_cleanup(struct run_meta *m);

/* The UTC time now as "2026-01-31T12:00:00Z". */
const char *outdir_now(char *buf, size_t len);

/* Builds and writes the report of the results in 's' into 'dir', and prints a summary table
 * and the report's path to stdout. Returns 0 or -1. */
int outdir_report(const char *dir, const struct results_set *s, const struct run_meta *m,
                  const char *baseline);

#endif
