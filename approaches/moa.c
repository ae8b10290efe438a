/* moa.c: mixture of agents. k drafts of the client's conversation (one n=k call), one review
 * of all drafts, then one synthesis that is streamed to the client: 3 rounds.
 *
 * Differences from OptiLLM's moa.py (shared/approaches.md 2.3): the number of drafts is an
 * option; failed drafts are dropped instead of padded with copies of the first one; the
 * review gets 1024 tokens and is kept when truncated (512 tokens made OptiLLM throw most of
 * them away); a failed review leads to a synthesis without one instead of a canned sentence;
 * the drafts are shown in byte order, so the prompts do not depend on the order in which
 * parallel replies arrive. With a single usable draft there is nothing to compare: the review
 * is skipped and the synthesis (2 rounds) only polishes that draft.
 *
 * Request fields: the drafts override temperature (1.0 unless the client sent one) and n,
 * the review temperature (0.1) and max_tokens (1024), the synthesis temperature (0.1 unless
 * the client sent one); every other client field reaches every call unchanged. Only the
 * synthesis (llm_final) gets response_format and tools: it writes the answer, and may answer
 * with tool calls, which are returned as they are; with tools it also gets the client's
 * conversation (tool results included) before its prompt. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"

#define GEN_TEMPERATURE     1.0 /* OptiLLM's drafting temperature */
#define JUDGE_TEMPERATURE   0.1
#define CRITIQUE_MAX_TOKENS 1024
#define FINAL_TEMPERATURE   0.1 /* OptiLLM's; the client's temperature wins when it sent one */

static bool blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

static int text_cmp(const void *a, const void *b)
{
    const struct llm_choice *x = a;
    const struct llm_choice *y = b;

    return strcmp(x->text, y->text);
}

/* The drafts as numbered, tagged blocks, in the arena. */
static const char *candidate_block(struct approach_ctx *ctx, const struct llm_choice *c, int n)
{
    struct buf b;
    char *s;

    buf_init(&b, 0);
    for (int i = 0; i < n; i++) {
        const char *calls = llm_tool_calls_text(ctx->arena, c[i].tool_calls);

        buf_printf(&b, "<candidate %d>\n%s%s%s\n</candidate %d>\n\n", i + 1, c[i].text,
                   *calls && *c[i].text ? "\n" : "", calls, i + 1);
    }
    s = arena_strndup(ctx->arena, buf_cstr(&b), b.len);
    buf_free(&b);
    return s;
}

/* One review of all drafts. Returns its text, or NULL when the call failed or said nothing
 * (the synthesis then goes ahead without a review). */
static const char *critique(struct approach_ctx *ctx, const char *question, const char *cands)
{
    struct llm_call call = {0};
    struct llm_msg *msgs;
    const char *user =
        approach_prompt(ctx, "moa/critique", "question", question, "candidates", cands, NULL);

    call.nmsgs = llm_msgs2(ctx, NULL, user, &msgs);
    call.msgs = msgs;
    call.params = llm_params_default();
    call.params.temperature = JUDGE_TEMPERATURE;
    call.params.max_tokens = CRITIQUE_MAX_TOKENS;
    call.stage = "moa/critique";
    if (llm_batch(ctx, &call, 1) <= 0 || blank(call.reply.choices[0].text))
        return NULL;
    return call.reply.choices[0].text;
}

static int moa_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int k = (int)approach_opt(ctx, "moa_candidates");
    struct llm_params p = llm_params_default();
    struct llm_choice *drafts = arena_calloc(ctx->arena, (size_t)k, sizeof(*drafts));
    struct llm_choice final;
    struct llm_msg *msgs;
    size_t nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &msgs);
    const char *question = chat_last_user(ctx->req);
    const char *cands;
    const char *review = NULL;
    const char *user;
    int got;
    int n = 0;
    int rc;
    bool no_critique = false;

    p.temperature = isnan(ctx->req->temperature) ? GEN_TEMPERATURE : ctx->req->temperature;
    {
        /* Under a call budget: fewer drafts (upstreams without n), then no critique. */
        int fit = llm_budget_samples(ctx, k, 0, 2);

        if (fit == 0) {
            fit = llm_budget_samples(ctx, k, 0, 1);
            no_critique = true;
        }
        if (fit > 0 && fit < k)
            k = fit;
        if (fit < (int)approach_opt(ctx, "moa_candidates") || no_critique)
            llm_budget_note(ctx, "candidates=%d/%d%s", k, (int)approach_opt(ctx, "moa_candidates"),
                            no_critique ? " critique=0" : "");
    }
    got = llm_sample(ctx, msgs, nmsgs, &p, k, "moa/candidate", drafts);
    if (got < 0)
        return got;
    for (int i = 0; i < got; i++)
        if (!blank(drafts[i].text) || drafts[i].tool_calls)
            drafts[n++] = drafts[i];
    if (n == 0) {
        out->text = "";
        out->finish_reason = "stop";
        return PX_OK;
    }
    qsort(drafts, (size_t)n, sizeof(*drafts), text_cmp);
    cands = candidate_block(ctx, drafts, n);
    if (n > 1 && !no_critique)
        review = critique(ctx, question, cands);
    if (review)
        user = approach_prompt(ctx, "moa/final", "question", question, "candidates", cands,
                               "critique", review, NULL);
    else
        user = approach_prompt(ctx, "moa/final_nocritique", "question", question, "candidates",
                               cands, NULL);
    /* With tools the synthesis continues the client's conversation (the synthesis prompt as
     * the last user turn): a model that may call tools must see which it already called and
     * what they returned. Without tools it sees only the system prompt and the drafts. */
    if (chat_has_tools(ctx->req))
        nmsgs = llm_msgs_conversation(ctx, NULL, user, &msgs);
    else
        nmsgs = llm_msgs2(ctx, chat_system(ctx->arena, ctx->req), user, &msgs);
    p = llm_params_default();
    p.temperature = isnan(ctx->req->temperature) ? FINAL_TEMPERATURE : ctx->req->temperature;
    rc = llm_final(ctx, msgs, nmsgs, &p, "moa/final", &final);
    if (rc < 0)
        return rc;
    out->text = final.text;
    out->tool_calls = final.tool_calls;
    out->logprobs = final.logprobs;
    out->finish_reason = final.tool_calls ? "tool_calls"
                         : final.finish_reason && strcmp(final.finish_reason, "length") == 0
                             ? "length"
                             : "stop";
    return PX_OK;
}

static const struct approach_option moa_options[] = {
    {.name = "moa_candidates",
     .def = 3,
     .min = 2,
     .max = 8,
     .integer = true,
     .help = "drafts generated by moa before the review and synthesis"},
    {.name = NULL},
};

const struct approach approach_moa = {
    .slug = "moa",
    .aliases = (const char *const[]){"mixture-of-agents", "mixture_of_agents", NULL},
    .run = moa_run,
    .prompts = (const char *const[]){"moa/critique", "moa/final", "moa/final_nocritique", NULL},
    .options = moa_options,
    .summary = "Mixture of agents: n drafts in one call, a review of them, then one synthesised "
               "answer",
    .calls = 3,
    .rounds = 3,
    .min_calls = 2,
    .tools = true,
    .response_format = true,
};
