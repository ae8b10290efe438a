/* spl_store.h: the strategy store of the spl approach (system-prompt learning), in SQLite.
 * --spl-db FILE keeps it in a file (WAL, busy timeout: several proxies may share it);
 * without it, in memory for the life of the process. Every call blocks its caller (on a
 * coroutine: it runs on a helper thread, sched_offload) and is thread-safe: each opens its
 * own connection. Strategies belong to a tenant ("" without tenants) and a problem type. */
#ifndef SPL_STORE_H
#define SPL_STORE_H

#include <stdbool.h>
#include <stddef.h>

struct arena;

#define SPL_MAX_PER_TYPE 10 /* strategies kept per tenant and type */

struct spl_strategy {
    long long id;
    const char *text;    /* in the caller's arena */
    const char *example; /* a problem it helped with, or "" */
    long attempts;
    long successes;
};

/* Opens (creating the schema if needed) the store: a file path, or NULL for memory. Checked
 * at start-up: an unwritable or corrupt file is an error with the reason in 'why'. */
int spl_store_open(const char *path, char *why, size_t wl);
void spl_store_close(void);

/* Up to 'max' strategies of (tenant, type), best first (0.7 success rate + 0.3 recency over
 * 30 days): with 'learning', also those tried fewer than 5 times; else only those tried 5 or
 * more times with a success rate of at least 0.4. Returns the count, or -1 (store error,
 * logged). Strings in 'a'. */
int spl_select(struct arena *a, const char *tenant, const char *type, bool learning,
               struct spl_strategy *out, int max);
/* Adds a strategy unless (tenant, type) already has one, in one transaction (concurrent
 * learners, in this process or another, create one between them). Returns 1 added, 0 one was
 * there, -1 error. */
int spl_add_first(const char *tenant, const char *type, const char *text);
/* Adds a strategy, keeping at most SPL_MAX_PER_TYPE per (tenant, type) (the lowest scores
 * go). Returns 0 or -1. */
int spl_add(const char *tenant, const char *type, const char *text);
/* One attempt of strategy 'id': counted, a success counted when 'success', the example
 * replaced when 'example' is not NULL; a strategy tried 5+ times with a success rate under
 * 0.3 is removed. Atomic (no lost updates between proxies). Returns 0 or -1. */
int spl_record(long long id, bool success, const char *example);
/* The problem type a classifier's reply names (approaches/spl.c): its first word if that is
 * a known type, else the type named earliest as a word of its own, else "general". */
const char *spl_parse_type(const char *reply);

/* Strategies of a tenant (all types); -1 on error. For tests and /metrics. */
long spl_count(const char *tenant);

#endif
