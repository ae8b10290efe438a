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

/* The server settings an approach may read, and nothing else (no keys, URLs or limits): an
 * opaque handle read through approach_opt(), approach_opt_row() and approach_return_full(). */
struct approach_opts;

struct approach_ctx {
    struct arena *arena;            /* request memory; everything dies with the request */
    const struct chat_request *req; /* the (possibly pipeline-rewritten) request; read-only */
    struct llm *llm;                /* upstream transport */
    struct usage usage;             /* llm_*() adds every upstream call's tokens here */
    struct px_error *err;           /* filled whenever run() returns < 0 */
    bool stream_final;              /* set by the engine: llm_final streams to the client */
    bool streamed;                  /* set by llm_final when it streamed the answer */
    void *sink;                     /* the engine's stream sink; opaque to approaches */
    const char *req_id;             /* for logs */
    const char *tenant;             /* the request's tenant name; "" without tenants */

    /* Server option values, read-only, through approach_opt(), approach_opt_row() and
     * approach_return_full(); never keys. The request's parsed JSON (req->body, a message's
     * raw) is the server's too: approaches read it through chat_* and llm_msg_multipart(). */
    const struct approach_opts *opts;

    /* The request's budget (set by the engine; approaches read it through llm_budget_*): the
     * tenant's max_calls_per_request (0: none), capping the options max_calls/max_tokens, and
     * what the route's earlier steps spent. An approach that degraded to fit says how in
     * budget_note (llm_budget_note; the X-Optillm-Budget header). */
    long budget_tenant_calls;
    struct usage budget_spent;
    const char *budget_note;
    /* What a router step chose ("math: self_consistency"; the X-Optillm-Route header). */
    const char *route_note;
};

struct chat_result {
    const char *text;          /* the answer, in ctx->arena */
    const char *finish_reason; /* "stop", "length" or "tool_calls"; NULL means "stop" */
    const char *tool_calls;    /* the answer's tool calls (JSON array text), or NULL */
    const char *logprobs;      /* the logprobs of the call whose text is returned unchanged
                                  (llm_choice.logprobs), or NULL */
};

/* Returns PX_OK with *out filled, or a negative px_status with ctx->err filled. */
typedef int approach_run_fn(struct approach_ctx *ctx, struct chat_result *out);

/* What a plugin leaves to be done to the answer of the steps after it (privacy puts the
 * originals back). Either function may be NULL; 'state' lives in ctx->arena (or is released
 * with arena_defer). Both run on the request's own thread, never concurrently. */
struct approach_post {
    /* The final answer text (also each tool call's JSON text): returns the restored text, in
     * 'a'. */
    const char *(*answer)(void *state, struct arena *a, const char *text);
    /* Pieces of a streamed answer, in order: returns the text that can go to the client now
     * (in 'a', possibly ""), holding back what may still change; 'end' releases the rest. */
    const char *(*stream)(void *state, struct arena *a, const char *piece, size_t len, bool end);
    void *state;
};

/* A plugin (readurls, privacy, compact, ...) shapes the request for the steps after it
 * instead of answering: it fills *next (start from a copy of *ctx->req; memory in ctx->arena)
 * and, when the answer needs it, *post. In "plugin&moa-x" moa then runs on *next; a plugin
 * that is the last step (or alone: "privacy-x") is followed by one plain completion of *next.
 * Returns PX_OK, or a negative px_status with ctx->err filled (the request fails). */
typedef int approach_prepare_fn(struct approach_ctx *ctx, struct chat_request *next,
                                struct approach_post *post);

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
    /* Where a client can multiply cost: the largest value a request body may set (a larger
     * one is a 400); flags and environment may still go up to max. 0: max. */
    double client_max;
    /* The body may lower the server's value, never raise it (z3's time limit). */
    bool client_lowers_only;
};

struct approach {
    const char *slug;                      /* canonical name: "moa" */
    const char *const *aliases;            /* NULL-terminated, or NULL */
    approach_run_fn *run;                  /* NULL only for a plugin (prepare set) */
    approach_prepare_fn *prepare;          /* a plugin: shapes the request for what follows */
    const char *const *prompts;            /* prompt names it needs, NULL-terminated */
    const struct approach_option *options; /* terminated by a NULL name, or NULL */
    const char *summary;                   /* one line, for GET /v1/approaches and --help */
    int calls;  /* upstream calls at default settings (documentation, /v1/approaches) */
    int rounds; /* sequential rounds at default settings */
    /* Under a call budget (optillm_max_calls) it degrades (fewer samples, simulations or
     * rounds) down to this many calls; 0: it cannot, and a budget below .calls is a 400. */
    int min_calls;
    /* What the approach carries from the request (checked for every step of a route by
     * chat_request_parse: a request using what an approach does not carry is a 400). */
    bool tools;           /* tools/tool_choice reach its answer calls; it returns tool_calls */
    bool response_format; /* every answer it returns comes from a call with params.answer */
    bool offload; /* calls deep library code (libz3) or blocks (readurls' fetches, mcp): runs
                     on a helper thread with a full-size stack, not on a coroutine
                     (include/scheduler.h) */
    /* It runs code (include/sandbox.h): refused (400 naming --enable-code-execution) by
     * chat_request_parse unless the server enabled code execution. */
    bool code_execution;
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

/* The options view of a configuration (for whoever builds an approach_ctx). */
const struct approach_opts *approach_opts_of(const struct config *cfg);
/* A registered option: the body's optillm_<name>, else the server's value, else the default
 * (chat_option). */
double approach_opt(const struct approach_ctx *ctx, const char *name);
/* An option from the approach's own table 'rows' (registered or not yet), clamped to its row's
 * range and rounded down for integer rows. */
double approach_opt_row(const struct approach_ctx *ctx, const struct approach_option *rows,
                        const char *name);
/* The server's --return-full-response switch. */
bool approach_return_full(const struct approach_ctx *ctx);
/* The server's --privacy-ner-url (the privacy plugin's NER service), or NULL when off. */
const char *approach_privacy_ner_url(const struct approach_ctx *ctx);
/* The server's --search-url (web_search's SearxNG-compatible JSON API), or NULL when off. */
const char *approach_search_url(const struct approach_ctx *ctx);

/* Runs approach 'a' (NULL: one plain completion of the request) on ctx's request as a step of
 * the calling approach (the router): its calls add to ctx->usage and count against the budget,
 * its final stage streams when ctx streams, it runs offloaded when it is an .offload one.
 * When 'a' cannot carry the request (its tools or response_format, code execution off on this
 * server, a call budget below its minimum) the plain completion runs instead. *ran: the slug
 * that ran ("none" for the plain completion). Returns as approach_run_fn. */
int approach_delegate(struct approach_ctx *ctx, const struct approach *a, const char **ran,
                      struct chat_result *out);

/* Renders prompt 'name' with {{key}} placeholders from vars (key, value, ..., NULL) into
 * ctx->arena. An unknown placeholder is left as is. Never NULL for a registered prompt. */
char *approach_prompt(struct approach_ctx *ctx, const char *name, ...);

#endif
