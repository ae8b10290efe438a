/* chat.h: the parsed client request that approaches see, and the approach route parsed from
 * the model name, the optillm_approach field or a message tag. */
#ifndef CHAT_H
#define CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "px.h"

struct arena;
struct approach;
struct config;
struct cJSON;

enum route_op { ROUTE_SINGLE = 0, ROUTE_AND = 1, ROUTE_OR = 2 };
#define ROUTE_MAX 8

/* What runs: nothing (count 0 = passthrough), one approach, a pipeline a&b or a fan-out a|b. */
struct route {
    enum route_op op;
    int count;
    const struct approach *steps[ROUTE_MAX];
};

struct chat_msg {
    const char *role; /* "system", "developer", "user", "assistant", "tool", ... */
    const char
        *content; /* the text (text parts of multi-part content joined by "\n"); "" if none */
    const struct cJSON *raw; /* the original message object, or NULL for built messages */
};

struct chat_request {
    struct cJSON *body;         /* parsed body, tags removed; owned by the arena */
    bool tags_removed;          /* a tag was removed: 'body' differs from the client's bytes */
    const char *model;          /* the model string the client sent */
    const char *upstream_model; /* the model without the approach prefix */
    struct chat_msg *msgs;      /* in the arena */
    size_t nmsgs;
    int n;                  /* choices asked for (default 1) */
    bool stream;            /* "stream": true */
    bool include_usage;     /* stream_options.include_usage */
    double temperature;     /* NAN when the client sent none */
    long max_tokens;        /* -1 when the client sent none */
    bool max_is_completion; /* the client used max_completion_tokens */
    struct route route;     /* what to run; count 0 = passthrough */
    const char *route_name; /* "moa", "bon&moa", "none" ... for logs */
    /* In a pipeline step after an answering step ("moa&json"): that step's answer (also the
     * last user message); NULL otherwise. */
    const char *prev_answer;
};

/* Parses a client body into 'out' (memory in 'a'): checks types (400s), removes every
 * <optillm_approach> tag from system and user messages, selects the route (model prefix, then
 * optillm_approach, then a tag unless cfg->no_approach_tags, then cfg->approach), validates
 * optillm_* options against the registry. Returns PX_OK or PX_EINVAL with 'err' filled. */
int chat_request_parse(struct arena *a, const char *body, size_t len, const struct config *cfg,
                       struct chat_request *out, struct px_error *err);

/* Parses the leading approach parts of a model name ("moa-gpt-4o", "bon&moa-x", "a|b-x",
 * "self-consistency-x"). Sets *rest to the model that goes upstream (a pointer into 'model').
 * Returns 1 when the model had an approach prefix ("none-x" included), 0 when its first part
 * is not an approach (count 0, the model whole), or PX_EINVAL (an '&'/'|' part naming an
 * unknown approach, several plain prefixes, no model after the prefix). */
int route_parse_model(const char *model, struct route *out, const char **rest,
                      struct px_error *err);

/* Parses an explicit approach value ("bon", "moa|bon", "auto", "none"). Unknown -> PX_EINVAL. */
int route_parse_value(const char *value, struct route *out, struct px_error *err);

/* Writes a route's name ("moa", "bon&moa", "none") into buf. */
void route_name(const struct route *r, char *buf, size_t len);

/* Does every step of req's route carry the request's tools and response_format (a json_object
 * or json_schema one; "text" needs nothing)? PX_OK, or PX_EINVAL with 'err' naming the field
 * and the approaches that support it. The deprecated 'functions'/'function_call' are refused
 * on approach routes. Called by chat_request_parse; a passthrough is always fine. */
int chat_check_fields(struct arena *a, const struct chat_request *req, struct px_error *err);
/* The request offers tools: a "tools" member that is not null or an empty array. */
bool chat_has_tools(const struct chat_request *req);

/* A boolean member of the body ("spl_learning"): 1 with *out set, 0 when absent or null, -1
 * when it is not a bool. */
int chat_bool_field(const struct chat_request *req, const char *name, bool *out);

/* Conversation helpers, all read-only on 'req'. */
/* The system prompt: system and developer messages joined by "\n\n"; "" if none. In 'a'. */
const char *chat_system(struct arena *a, const struct chat_request *req);
/* The last user message's text, or "" if none. Borrowed from req. */
const char *chat_last_user(const struct chat_request *req);

/* Plugins (privacy): a copy of 'in' in 'out' whose every message text passed through fn:
 * string content, text parts, tool-call arguments, and chat_msg.content. Message objects are
 * cloned (owned by 'a'); 'in' and the client's body are not changed. fn returns its result in
 * 'a' (it may return 'text' itself). Returns PX_OK. */
int chat_request_map_text(struct arena *a, const struct chat_request *in, struct chat_request *out,
                          const char *(*fn)(void *arg, struct arena *a, const char *text),
                          void *arg);

/* The request's response_format: returns its type ("json_object", "json_schema", "text"), or
 * NULL when there is none; *schema (if not NULL) is set to json_schema.schema (read-only,
 * owned by the request) or NULL. */
const char *chat_response_format(const struct chat_request *req, const struct cJSON **schema);

/* A message's tool calls as JSON array text (in 'a'), or NULL when it has none. */
const char *chat_msg_tool_calls(struct arena *a, const struct chat_msg *m);

/* A per-request option: the body's "optillm_<name>" if present (already validated by
 * chat_request_parse), else the server's value (flag or env), else the registry default. */
double chat_option(const struct chat_request *req, const struct config *cfg, const char *name);

#endif
