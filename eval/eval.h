/* eval.h: the evaluation runner's options, its transport (in-process engine or a running
 * proxy) and the run itself. Private to eval/. */
#ifndef EVAL_EVAL_H
#define EVAL_EVAL_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct dataset;

enum progress_mode {
    PROGRESS_AUTO = 0, /* a redrawn bar when stderr is a terminal, else periodic lines */
    PROGRESS_BAR,
    PROGRESS_LINES,
    PROGRESS_OFF
};

/* Built once by main() before threads start; read-only afterwards. */
struct eval_opts {
    const char *dataset; /* path */
    const char *out;     /* output folder */
    const char *model;   /* the model under test */
    char **approaches;   /* canonical approach names ("none", "self_consistency", "bon&moa") */
    size_t napproaches;
    const char *baseline; /* report baseline; NULL = the first approach */
    const char *proxy;    /* base URL of a running proxy (".../v1"), or NULL: in-process */
    const char *api_key;  /* key sent with each request (borrowed; never printed), or NULL */
    unsigned concurrency; /* requests in flight */
    int retries;          /* --proxy: whole-request retries (cfg.retries); in-process 0: the
                           * engine retries each upstream call itself */
    double retry_delay;   /* seconds before the first retry (cfg.retry_base); doubles */
    long limit;           /* first N dataset items; -1 = all */
    unsigned shard;       /* this shard ... */
    unsigned nshards;     /* ... of this many (1 = no sharding) */
    bool resume;
    bool overwrite;
    bool retry_errors;
    bool strict;
    bool fsync;
    bool save_responses;
    double temperature;     /* NAN: not sent */
    long max_tokens;        /* -1: not sent */
    double request_timeout; /* --proxy: seconds per request (cfg.request_timeout or 1800) */
    enum progress_mode progress;
    double progress_interval; /* seconds between plain progress lines */
    struct config cfg;        /* upstream and approach settings for in-process mode */
};

/* ---- client.c: one request, in-process or through the proxy --------------------------------- */

struct client_reply {
    int status;          /* HTTP status; 0 when no response arrived (transport error) */
    char *body;          /* malloc'd response body, or NULL */
    size_t len;          /* body length */
    long upstream_calls; /* -1 when the endpoint did not say */
    double retry_after;  /* seconds asked for by a Retry-After header, 0 if none */
    char error[256];     /* transport error text when status is 0 */
};

struct client;

/* Global set-up for the mode: in-process starts the engine (engine_startup); proxy mode sets
 * up libcurl, answer patterns and prompts. Call once before threads; returns 0 or -1. */
int client_global_init(const struct eval_opts *o);
void client_global_cleanup(const struct eval_opts *o);
/* One per worker thread. Never NULL. */
struct client *client_create(const struct eval_opts *o);
void client_destroy(struct client *c);
/* Sends one chat-completion body and waits for the answer. Fills 'out' (free it with
 * client_reply_free). Not thread-safe per client; use one client per thread. */
void client_post(struct client *c, const char *body, size_t len, struct client_reply *out);
void client_reply_free(struct client_reply *r);

/* ---- run.c: the run ------------------------------------------------------------------------ */

/* Set by the signal handler: finish the requests in flight, then stop. */
extern _Atomic int eval_stop_requested;

/* Runs every (item, approach) of 'ds' not yet in OUT/results.jsonl, appending each result as
 * it finishes, then writes the report. Returns the process exit status: 0 done, 1 a fatal
 * error (message printed), 3 every request of this run failed, 130 interrupted. */
int eval_run(const struct eval_opts *o, struct dataset *ds);

/* Reads OUT/results.jsonl of the folders in 'dirs', writes the union to out/results.jsonl and
 * the report to 'out'. Returns the exit status (0, 1 on error). */
int eval_merge(const char *const *dirs, size_t ndirs, const char *out, const char *baseline);

/* Rewrites the report of one output folder from its results.jsonl. */
int eval_report(const char *dir, const char *baseline);

/* strerror_r into 'buf'. */
const char *eval_strerror(int err, char *buf, size_t len);

#endif
