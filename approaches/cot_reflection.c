/* cot_reflection.c: one call that reasons in <thinking>, checks itself in <reflection> and
 * answers in <output>; only the <output> part reaches the client (also when streaming, via
 * LLM_FILTER_OUTPUT), unless --return-full-response.
 *
 * As OptiLLM's cot_reflection.py (shared/approaches.md 2.6): temperature 0.6 and 4096 tokens
 * unless the client chose, the text from the first <output> to </output> or to the end when
 * the tag is not closed, the whole reply when there is no <output>. Unlike it, the
 * conversation is sent as messages (the client's system prompt merged into ours), and a null
 * content cannot crash it.
 *
 * Request fields: its one call sets temperature and max_tokens (above); response_format reaches
 * it; every other client field reaches every call unchanged (llm.h). Requests with tools are
 * refused (400, approach.h .tools). */
#include <math.h>
#include <string.h>

#include "approach.h"
#include "arena.h"

#define COT_TEMPERATURE 0.6
#define COT_MAX_TOKENS  4096
#define OPEN_TAG        "<output>"
#define CLOSE_TAG       "</output>"

/* s[0..len) without leading and trailing white space, in the arena. */
/* The text inside the first <output>...</output> (to the end when unclosed), or the whole
 * text when there is no <output>. */
static const char *output_of(struct arena *a, const char *text)
{
    const char *start = strstr(text, OPEN_TAG);
    const char *end;

    if (!start)
        return arena_strtrim(a, text, strlen(text));
    start += strlen(OPEN_TAG);
    end = strstr(start, CLOSE_TAG);
    return arena_strtrim(a, start, end ? (size_t)(end - start) : strlen(start));
}

static int cot_run(struct approach_ctx *ctx, struct chat_result *out)
{
    const char *system = approach_prompt(ctx, "cot_reflection/system", "system",
                                         chat_system(ctx->arena, ctx->req), NULL);
    struct llm_params p = llm_params_default();
    struct llm_choice final;
    struct llm_msg *msgs;
    size_t nmsgs;
    size_t m = 1;
    bool full = approach_return_full(ctx);
    int rc;

    /* Our system message carries the client's system prompt, so theirs are left out. */
    system = arena_strtrim(ctx->arena, system, strlen(system));
    nmsgs = llm_msgs_conversation(ctx, system, NULL, &msgs);
    for (size_t i = 1; i < nmsgs; i++)
        if (strcmp(msgs[i].role, "system") != 0 && strcmp(msgs[i].role, "developer") != 0)
            msgs[m++] = msgs[i];
    nmsgs = m;

    p.temperature = isnan(ctx->req->temperature) ? COT_TEMPERATURE : ctx->req->temperature;
    p.max_tokens = ctx->req->max_tokens > 0 ? ctx->req->max_tokens : COT_MAX_TOKENS;
    p.filter = full ? LLM_FILTER_NONE : LLM_FILTER_OUTPUT;
    rc = llm_final(ctx, msgs, nmsgs, &p, "cot_reflection/final", &final);
    if (rc < 0)
        return rc;
    if (full)
        out->text = final.text;
    else
        out->text = output_of(ctx->arena, final.text);
    out->finish_reason =
        final.finish_reason && strcmp(final.finish_reason, "length") == 0 ? "length" : "stop";
    return PX_OK;
}

const struct approach approach_cot_reflection = {
    .slug = "cot_reflection",
    .aliases = (const char *const[]){"cot-reflection", NULL},
    .run = cot_run,
    .prompts = (const char *const[]){"cot_reflection/system", NULL},
    .options = NULL,
    .summary = "Chain of thought with reflection in one call; only the <output> section is "
               "returned",
    .calls = 1,
    .rounds = 1,
    .response_format = true, /* its answer is always its llm_final stage */
};
