/* approach.h: the approach contract and the registry. An approach is one file in approaches/
 * exporting one `const struct approach approach_<slug>`, plus one row in src/registry.c. It
 * sees the parsed request and the llm_* API, never HTTP, sockets, keys or client JSON. */
#ifndef APPROACH_H
#define APPROACH_H

#include <stdbool.h>
#include <stddef.h>

#include "chat.h"
#include "llm.h"
#include "px.h"

struct arena;
struct config;

struct approach_ctx {
    struct arena *arena;            /* request memory; everything dies with the request */
    const struct chat_request *req; /* the (possibly pipeline-rewritten) request; read-only */
    const struct config *cfg;       /* server configuration; read-only */
    struct llm *llm;                /* upstream transport */
    struct usage usage;             /* llm_*() adds every upstream call's tokens here */
    struct px_error *err;           /* filled whenever run() returns < 0 */
    bool stream_final;              /* set by the engine: llm_final streams to the client */
    bool streamed;                  /* set by llm_final when it streamed the answer */
    void *sink;                     /* the engine's stream sink; opaque to approaches */
    const char *req_id;             /* for logs */
};

struct chat_result {
    const char *text;          /* the answer, in ctx->arena */
    const char *finish_reason; /* "stop" or "length"; NULL means "stop" */
};

/* Returns PX_OK with *out filled, or a negative px_status with ctx->err filled. */
typedef int approach_run_fn(struct approach_ctx *ctx, struct chat_result *out);

/* A numeric parameter of an approach: settable by flag --<name with '-'> (and '_'), by env
 * OPTILLM_<NAME>, and per request by the body field "optillm_<name>"; the alias works in each
 * of those places too. Write rows with designated initializers. */
struct approach_option {
    const char *name;  /* "best_of_n" */
    const char *alias; /* another accepted name (OptiLLM's, e.g. "mcts_simulations"), or NULL */
    double def;
    double min;
    double max;
    bool integer;
    const char *help;
};

struct approach {
    const char *slug;                      /* canonical name: "moa" */
    const char *const *aliases;            /* NULL-terminated, or NULL */
    approach_run_fn *run;                  /* never NULL */
    const char *const *prompts;            /* prompt names it needs, NULL-terminated */
    const struct approach_option *options; /* terminated by a NULL name, or NULL */
    const char *summary;                   /* one line, for GET /v1/approaches and --help */
    int calls;    /* upstream calls at default settings (documentation, /v1/approaches) */
    int rounds;   /* sequential rounds at default settings */
    bool offload; /* calls deep library code (libz3): runs on a helper thread with a full-size
                     stack, not on a coroutine (include/scheduler.h) */
};

/* The registry (src/registry.c): const, no lock needed. */
extern const struct approach *const approach_registry[];
extern const size_t approach_registry_len;

/* Finds an approach by slug or alias; NULL when unknown. */
const struct approach *approach_find(const char *name, size_t len);
/* Finds an option by name among all approaches (first wins); NULL when unknown. */
const struct approach_option *approach_option_find(const char *name);
/* "bon, moa, ..." for error messages; static storage, built once. */
const char *approach_slug_list(void);
/* Checks slugs, aliases, duplicates and that every prompt exists; returns 0 or -1 (logged). */
int registry_check(void);

/* Shorthand for approaches: chat_option(ctx->req, ctx->cfg, name). */
double approach_opt(const struct approach_ctx *ctx, const char *name);

/* Renders prompt 'name' with {{key}} placeholders from vars (key, value, ..., NULL) into
 * ctx->arena. An unknown placeholder is left as is. Never NULL for a registered prompt. */
char *approach_prompt(struct approach_ctx *ctx, const char *name, ...);

#endif
