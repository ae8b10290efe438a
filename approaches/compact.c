/* compact.c: a plugin that keeps long conversations within bounds. When the conversation's
 * estimated size (message bytes / 4, tool-call arguments included) exceeds compact_threshold
 * tokens, the turns before the last compact_keep_turns ones are summarised in one upstream call
 * and replaced by one system message holding the summary. The system prompt and the recent turns
 * are kept verbatim. A turn starts at a user message, so an assistant's tool calls and their tool
 * results are never separated. A conversation under the threshold (or with nothing older than
 * the kept turns) passes unchanged, with no call; a failed summary call passes it unchanged too
 * (logged).
 *
 * Request fields: the summary call carries none of the answer fields (response_format, tools)
 * and overrides only a client's max_tokens below 1024 (raised to 1024); every field passes
 * through to the steps after it. */
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "log.h"

#define SUMMARY_MIN_TOKENS 1024

/* Token estimate used throughout: bytes / 4. */
static long est_tokens(size_t bytes)
{
    return (long)(bytes / 4);
}

static bool is_system(const struct chat_msg *m)
{
    return strcmp(m->role, "system") == 0 || strcmp(m->role, "developer") == 0;
}

static int compact_prepare(struct approach_ctx *ctx, struct chat_request *next,
                           struct approach_post *post)
{
    const struct chat_request *req = ctx->req;
    long threshold = (long)approach_opt(ctx, "compact_threshold");
    int keep = (int)approach_opt(ctx, "compact_keep_turns");
    const char **tools = arena_calloc(ctx->arena, req->nmsgs + 1, sizeof(*tools));
    size_t bytes = 0, cut = req->nmsgs, nold = 0;
    int users = 0;
    struct buf t;

    (void)post;
    for (size_t i = 0; i < req->nmsgs; i++) {
        tools[i] = chat_msg_tool_calls(ctx->arena, &req->msgs[i]);
        bytes += strlen(req->msgs[i].content) + (tools[i] ? strlen(tools[i]) : 0);
    }
    if (est_tokens(bytes) <= threshold)
        return PX_OK;
    /* The kept turns start at the keep-th user message from the end. */
    for (size_t i = req->nmsgs; i > 0 && users < keep; i--) {
        if (strcmp(req->msgs[i - 1].role, "user") == 0) {
            users++;
            cut = i - 1;
        }
    }
    if (users < keep)
        cut = 0;
    for (size_t i = 0; i < cut; i++)
        if (!is_system(&req->msgs[i]))
            nold++;
    if (nold == 0) {
        log_at(LOG_INFO, ctx->req_id,
               "compact: ~%ld tokens but nothing older than the last %d turns; unchanged",
               est_tokens(bytes), keep);
        return PX_OK;
    }

    buf_init(&t, 0);
    for (size_t i = 0; i < cut; i++) {
        const struct chat_msg *m = &req->msgs[i];

        if (is_system(m))
            continue;
        buf_printf(&t, "%s[%s]\n%s", t.len ? "\n\n" : "", m->role, m->content);
        if (tools[i])
            buf_printf(&t, "%s%s", *m->content ? "\n" : "",
                       llm_tool_calls_text(ctx->arena, tools[i]));
    }
    const char *transcript = arena_strndup(ctx->arena, buf_cstr(&t), t.len);
    buf_free(&t);

    struct llm_msg *msgs;
    size_t nmsgs =
        llm_msgs2(ctx, approach_prompt(ctx, "compact/system", NULL),
                  approach_prompt(ctx, "compact/summarise", "transcript", transcript, NULL), &msgs);
    struct llm_call call = {
        .msgs = msgs, .nmsgs = nmsgs, .params = llm_params_default(), .stage = "compact/summary"};

    /* The client's limit is for its answer: a small one is raised for the summary (the field
     * the client used is kept, so the upstream accepts it). */
    if (req->max_tokens > 0 && req->max_tokens < SUMMARY_MIN_TOKENS)
        call.params.max_tokens = SUMMARY_MIN_TOKENS;
    int rc = llm_batch(ctx, &call, 1);
    const char *summary = rc >= 0 ? call.reply.choices[0].text : NULL;

    if (!summary || !*summary) {
        log_at(LOG_WARN, ctx->req_id, "compact: the summary call failed (%s); unchanged",
               rc < 0 ? ctx->err->message : "empty summary");
        memset(ctx->err, 0, sizeof(*ctx->err));
        return PX_OK;
    }

    /* system messages of the older part, the summary, then the kept turns verbatim */
    struct chat_msg *out = arena_calloc(ctx->arena, req->nmsgs + 1, sizeof(*out));
    size_t n = 0;

    for (size_t i = 0; i < cut; i++)
        if (is_system(&req->msgs[i]))
            out[n++] = req->msgs[i];
    out[n].role = "system";
    out[n++].content = approach_prompt(ctx, "compact/summary", "summary", summary, NULL);
    for (size_t i = cut; i < req->nmsgs; i++)
        out[n++] = req->msgs[i];
    next->msgs = out;
    next->nmsgs = n;
    log_at(LOG_INFO, ctx->req_id, "compact: %zu older messages (~%ld tokens in all) summarised",
           nold, est_tokens(bytes));
    return PX_OK;
}

static const struct approach_option compact_options[] = {
    {.name = "compact_threshold",
     .def = 8000,
     .min = 1,
     .max = 100000000,
     .integer = true,
     .help = "compact: summarise older turns when the conversation exceeds this many tokens "
             "(estimated as bytes / 4)"},
    {.name = "compact_keep_turns",
     .def = 4,
     .min = 1,
     .max = 1000,
     .integer = true,
     .help = "compact: recent turns (from a user message on) kept verbatim"},
    {0},
};

const struct approach approach_compact = {
    .slug = "compact",
    .prepare = compact_prepare,
    .prompts =
        (const char *const[]){"compact/system", "compact/summarise", "compact/summary", NULL},
    .options = compact_options,
    .summary = "Plugin: a conversation above compact_threshold tokens has its older turns "
               "summarised in one call; the system prompt and recent turns kept verbatim",
    .calls = 1,
    .rounds = 1,
    .tools = true,
    .response_format = true,
};
