/* llm.h: the upstream-call contract approaches use. Everything hard about talking to an
 * upstream (key, base URL, n detection, deadlines, usage, streaming to the client) lives
 * behind these calls, so that an approach is only its algorithm.
 *
 * All calls block the calling approach (a parked coroutine, or a thread) until every transfer
 * of the stage finished; the transfers themselves run on the I/O loops, all at once. Replies
 * live in ctx->arena.
 * Every call adds its upstream usage to ctx->usage (also for failed or partial calls). */
#ifndef LLM_H
#define LLM_H

#include <stdbool.h>
#include <stddef.h>

struct approach_ctx;
struct arena;
struct cJSON;

struct usage {
    long prompt_tokens;
    long completion_tokens;
    long reasoning_tokens; /* completion_tokens_details.reasoning_tokens, when reported */
    long calls;            /* upstream HTTP calls made */
    long reported;         /* calls whose answer carried a usage object (0: tokens unknown) */
};

/* Adds u's counts (tokens and calls) to 'to'. */
void llm_usage_add(struct usage *to, const struct usage *u);
/* Reads an OpenAI "usage" object (prompt_tokens, completion_tokens,
 * completion_tokens_details.reasoning_tokens) into 'out'; fields it lacks are left as they
 * are, and so is 'out' when u is not an object. Counts are made safe with px_count. */
void llm_usage_parse(const struct cJSON *u, struct usage *out);

/* One message of an upstream conversation. When 'raw' is set (a client message object), it is
 * sent verbatim (images, tool calls, names kept) and role/content are ignored. */
struct llm_msg {
    const char *role;
    const char *content;
    const struct cJSON *raw;
};

/* Stream filters for llm_final: which part of the final completion reaches the client. */
enum llm_filter {
    LLM_FILTER_NONE = 0,  /* every token */
    LLM_FILTER_OUTPUT = 1 /* only the text inside <output>...</output> (cot_reflection) */
};

/* Every call also carries the client's other generation fields (seed, top_p, stop, user,
 * logit_bias, logprobs, metadata, ...) unchanged: the engine copies them from the request, so
 * a stage can override only temperature, max_tokens and n. */
struct llm_params {
    double temperature;     /* NAN: the client's temperature if it sent one, else omitted */
    long max_tokens;        /* < 0: the client's limit if it sent one, else omitted */
    int n;                  /* choices wanted from this call; 0 means 1 */
    enum llm_filter filter; /* llm_final only */
    /* This call's output may become the client's answer (candidates that are voted on or
     * rated and returned whole, the final stage): it also gets the client's response_format,
     * tools, tool_choice and parallel_tool_calls, and its choices may carry tool_calls.
     * Calls whose output the approach parses (ratings, critiques, plans) leave it false.
     * llm_final sets it. */
    bool answer;
    /* The approach's own tools for this call (a JSON array text of {"type":"function",...}
     * tools, e.g. MCP's), or NULL. With 'answer', the client's tools are offered after them. */
    const char *tools_json;
    /* The model this call asks for, or NULL for the request's (the router's classifier). */
    const char *model;
};

/* Returns params with temperature NAN, max_tokens -1, n 1. */
struct llm_params llm_params_default(void);

struct llm_choice {
    const char *text;          /* "" when the upstream returned null content */
    const char *finish_reason; /* "stop", "length", "tool_calls", ... ("" if absent) */
    const char *tool_calls;    /* the message's tool_calls as a JSON array text, or NULL */
    const char *logprobs;      /* the choice's logprobs object as JSON text, or NULL (none, or
                                  a streamed call) */
};

struct llm_reply {
    int status;                 /* PX_OK or a negative px_status */
    int http_status;            /* the upstream's HTTP status; 0 when none was received */
    const char *error;          /* upstream or transport error message when status != PX_OK */
    const char *error_type;     /* the upstream error's "type", or NULL */
    const char *error_code;     /* the upstream error's "code", or NULL */
    struct llm_choice *choices; /* nchoices entries on success */
    int nchoices;
    struct usage usage; /* this call's usage */
    long long latency_ms;
};

struct llm_call {
    const struct llm_msg *msgs;
    size_t nmsgs;
    struct llm_params params;
    const char *stage;      /* "bon/rate": for logs and the conversation log */
    bool stream_to_client;  /* set by llm_final only */
    struct llm_reply reply; /* filled in */
};

/* The transport behind the calls: the server's I/O loops, or a fake in tests. */
struct llm;
struct llm_ops {
    /* Runs m calls at once and returns when all have finished; fills each reply (memory in
     * ctx->arena). Does not touch ctx->usage. */
    void (*run)(struct llm *llm, struct approach_ctx *ctx, struct llm_call *calls, size_t m);
    /* n support of the upstream: -1 unknown, 0 refuses n > 1, 1 accepts. */
    int (*get_n)(struct llm *llm);
    void (*set_n)(struct llm *llm, int supported);
};
struct llm {
    const struct llm_ops *ops;
    void *impl;
};

/* k completions of one prompt: one call with n=k where the upstream supports n, else k
 * parallel calls (an upstream that refuses n, or returns fewer choices, is remembered).
 * Successful choices are stored in out[0..ret-1] (out has room for k). Failed samples are
 * dropped. Returns the number of choices (>= 1), or a negative px_status with ctx->err set
 * (from the first failure) when none succeeded. */
int llm_sample(struct approach_ctx *ctx, const struct llm_msg *msgs, size_t nmsgs,
               const struct llm_params *p, int k, const char *stage, struct llm_choice *out);

/* Does the failure of an n > 1 call say the upstream refuses n (llama.cpp's "Only one
 * completion choice is allowed", or a 400/422/500 naming the parameter n as a word of its own)?
 * A message about another parameter (tool_choice) is not a refusal. */
bool llm_refuses_n(const struct llm_reply *r);

/* m different prompts at once; each call's reply carries its own status. Returns the number
 * of successful calls; when that is 0 (and m > 0), ctx->err is set from the first failure and
 * a negative px_status is returned instead. */
int llm_batch(struct approach_ctx *ctx, struct llm_call *calls, size_t m);

/* The last stage: one completion. When the engine asked for a stream (ctx->stream_final), its
 * tokens go to the client as they arrive (through p->filter) and ctx->streamed is set. The
 * text is also returned in *out. Returns PX_OK or a negative px_status with ctx->err set. */
int llm_final(struct approach_ctx *ctx, const struct llm_msg *msgs, size_t nmsgs,
              const struct llm_params *p, const char *stage, struct llm_choice *out);

/* Convenience: a [system?, user] conversation in ctx->arena. A NULL or empty system is left
 * out. Returns the message count (1 or 2); *out points into the arena. */
size_t llm_msgs2(struct approach_ctx *ctx, const char *system, const char *user,
                 struct llm_msg **out);

/* Does this message carry its content as an array of parts (text, images)? Read-only: an
 * approach asks this instead of reading the client's JSON itself. */
bool llm_msg_multipart(const struct llm_msg *m);

/* The client's conversation as upstream messages (raw objects, so images and tool calls are
 * kept), with 'system_prefix' (if not NULL/empty) added as a leading system message, and
 * 'user_suffix' (if not NULL/empty) appended as a final user message. In ctx->arena. */
size_t llm_msgs_conversation(struct approach_ctx *ctx, const char *system_prefix,
                             const char *user_suffix, struct llm_msg **out);

/* Per-request budgets (optillm_max_calls, optillm_max_tokens; the tenant's
 * max_calls_per_request caps the calls): what is left for this approach, counting every call
 * of the request so far (earlier steps of a route included). LONG_MAX when there is no
 * budget; may be <= 0. */
long llm_budget_calls_left(const struct approach_ctx *ctx);
long llm_budget_tokens_left(const struct approach_ctx *ctx);
/* The most samples (1..k) that one llm_sample can draw within the calls left, when each sample
 * is followed by 'per_sample' more calls (ratings; none when only 1 sample) and 'reserve'
 * calls must remain for later stages; counts 1 call for the n call where the upstream takes n
 * (or is not known to refuse it), else 1 per sample. 0 when not even 1 fits. */
int llm_budget_samples(const struct approach_ctx *ctx, int k, int per_sample, int reserve);
/* Records how the approach degraded to fit the budget ("samples=3/5"); the last note wins. */
void llm_budget_note(struct approach_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Messages of a tool-call loop run by the approach (mcp), for the next call's conversation.
 * An assistant message with the reply's text (may be "") and its tool_calls (a JSON array
 * text, as in struct llm_choice): */
struct llm_msg llm_msg_tool_calls(struct approach_ctx *ctx, const char *text,
                                  const char *tool_calls);
/* A role "tool" message answering call 'tool_call_id' with 'content'. Both in ctx->arena. */
struct llm_msg llm_msg_tool_result(struct approach_ctx *ctx, const char *tool_call_id,
                                   const char *content);

/* Tool calls (a tool_calls JSON array text, as in struct llm_choice). */
/* A canonical key: each call as name(arguments), the arguments parsed and re-serialised with
 * sorted object keys (unparseable arguments kept as sent), the calls sorted and joined by
 * ";"; ids are ignored. Equal keys mean the same action. "" for NULL, empty or invalid
 * input. In 'a'. */
const char *llm_tool_calls_key(struct arena *a, const char *tool_calls);
/* A readable rendering for prompts (a rater sees what the candidate would do): one line per
 * call, "Tool call: name(arguments)". "" for NULL or empty input. In 'a'. */
const char *llm_tool_calls_text(struct arena *a, const char *tool_calls);

#endif
