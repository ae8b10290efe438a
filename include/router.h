/* router.h: the router approach's table of routes (task label -> approach) and its cache of
 * classifications. Loaded once at start-up from --router-config (or the built-in table), read
 * without locks afterwards; the cache has its own mutex. */
#ifndef ROUTER_H
#define ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct approach;

struct router_route {
    const char *label;               /* "math": what the classifier answers */
    const char *description;         /* for the classification prompt */
    const struct approach *approach; /* NULL: "none", one plain completion */
};

/* Loads a routes file ({"classifier_model", "default", "routes": {label: slug or
 * {"approach", "description"}}}), replacing the built-in table. 'code_execution': the server
 * runs code (else a route to executecode/coc is refused). Returns 0, or -1 with 'why' filled;
 * the previous table stays on failure. Call before any request runs. */
int router_load(const char *path, bool code_execution, char *why, size_t wl);
/* Back to the built-in table (tests); frees a loaded one. */
void router_reset(void);

/* The routes, in file order (built-in: math, code, reasoning, factual, creative, chat). */
size_t router_routes(const struct router_route **out);
/* The route for a label the classifier gave; NULL when unknown. */
const struct router_route *router_find(const char *label, size_t len);
/* What runs when the classifier fails or answers no known label. */
const struct router_route *router_default(void);
/* The model classification calls use, or NULL for the request's own model. */
const char *router_classifier_model(void);

/* The route a classifier's reply names (approaches/router.c): the text after the last
 * </think>, its first word if that is a label, else the label that appears earliest in it as
 * a word of its own; NULL when none does. */
const struct router_route *router_parse_label(const char *reply);

/* The classification cache: a bounded, direct-mapped table keyed by a 64-bit hash of the
 * classifier model and the prompt. Thread-safe. */
const struct router_route *router_cache_get(uint64_t key);
void router_cache_put(uint64_t key, const struct router_route *r);
/* Counters since start (or router_reset): hits and misses. */
void router_cache_stats(long *hits, long *misses);

/* Counts one routed request: its route, the approach that ran ("none" for the plain
 * completion) and how the route was found ("classified", "cached", "classifier failed",
 * "unrecognised"). Thread-safe. */
void router_count(const struct router_route *r, const char *ran, const char *how);
struct buf;
/* Appends the router's Prometheus series (decisions by route and approach, cache hits and
 * misses, classifier failures) to b; nothing before the first routed request. */
void router_metrics_render(struct buf *b);

#endif
