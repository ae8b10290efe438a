/* self_consistency.c: k samples of the client's conversation in one round, grouped by their
 * extracted final answer; the largest group wins and one of its samples is returned whole.
 *
 * Differences from OptiLLM's self_consistency.py (shared/approaches.md 2.5): samples vote with
 * their extracted answer (answer.h), so differently worded samples that agree end up in one
 * group; only samples without an extractable answer are grouped by text similarity (Jaccard
 * of their word sets >= 0.8). The 5 samples are one n=5 call instead of 5 sequential calls,
 * null content cannot crash it, and every choice depends on content only (sample order is
 * arrival order under concurrency): groups are formed over the samples sorted by text, ties
 * go to the group with an extracted answer, then to the smaller key; the returned member is
 * the shortest, then the first in byte order. Truncated samples vote only when no sample
 * completed (the last number of a cut text is rarely its answer).
 *
 * The grouping is approaches/vote.c, shared with majority_voting.
 *
 * Adaptive sampling (option adaptive, on by default): the samples are drawn in rounds and the
 * vote stops once the rest of the budget would very likely not change it (vote_sample,
 * adaptive.h); the 5 are a budget. adaptive=0 draws all 5 in one call.
 *
 * Request fields: the samples override temperature (1.0 unless the client sent one) and n;
 * every other client field reaches them unchanged, response_format and tools included (a
 * sample is returned whole). Samples that call tools vote with their calls (vote.c). */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adaptive.h"
#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "vote.h"

#define GEN_TEMPERATURE 1.0 /* OptiLLM's */

static int sc_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int k = (int)approach_opt(ctx, "samples");
    struct llm_params p = llm_params_default();
    struct llm_choice *c = arena_calloc(ctx->arena, (size_t)k, sizeof(*c));
    struct llm_msg *msgs;
    size_t nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &msgs);
    int pick;
    bool cut = false;
    int got;
    int rounds;

    p.temperature = isnan(ctx->req->temperature) ? GEN_TEMPERATURE : ctx->req->temperature;
    p.answer = true; /* a sample is returned whole: it gets response_format and tools */
    got = vote_sample(ctx, msgs, nmsgs, &p, k, "self_consistency/sample", VOTE_ALL, c, &rounds);
    if (got < 0)
        return got;
    pick = vote_choose(ctx->arena, c, got, VOTE_ALL, &cut);
    out->text = pick >= 0 ? c[pick].text : "";
    out->tool_calls = pick >= 0 ? c[pick].tool_calls : NULL;
    out->logprobs = pick >= 0 ? c[pick].logprobs : NULL;
    out->finish_reason = out->tool_calls ? "tool_calls" : cut ? "length" : "stop";
    return PX_OK;
}

static const struct approach_option sc_options[] = {
    {.name = "samples",
     .def = 5,
     .min = 1,
     .max = 32,
     .integer = true,
     .client_max = 16,
     .help = "samples drawn by self_consistency"},
    {.name = "adaptive",
     .def = 1,
     .min = 0,
     .max = 1,
     .integer = true,
     .help = "1: self_consistency and majority_voting draw samples in rounds and stop once "
             "the vote is decided (adaptive.h); 0: all samples at once"},
    {.name = "adaptive_risk",
     .def = ADAPTIVE_RISK,
     .min = 0,
     .max = 0.5,
     .help = "adaptive sampling stops once the chance that the remaining samples would change "
             "the vote is at most this (0: only when the lead is out of reach)"},
    /* Budgets of every approach (registered here: an option lives in some approach's table). */
    {.name = "max_calls",
     .def = 0,
     .min = 0,
     .max = 1000000,
     .integer = true,
     .help = "per-request budget of upstream calls for every approach (0: none): sc, mv, bon, "
             "moa and mcts degrade to fit, others refuse with 400 (tenant limit is the ceiling)"},
    {.name = "max_tokens",
     .def = 0,
     .min = 0,
     .max = 1e12,
     .integer = true,
     .help = "per-request budget of upstream tokens (prompt + completion; 0: none): sc and mv "
             "draw no further round once it is spent"},
    {.name = NULL},
};

const struct approach approach_self_consistency = {
    .slug = "self_consistency",
    .aliases = (const char *const[]){"self-consistency", NULL},
    .run = sc_run,
    .prompts = NULL,
    .options = sc_options,
    .summary = "Self-consistency: n samples in one call, grouped by final answer (text "
               "similarity when none); a sample of the largest group wins",
    .calls = 1,
    .rounds = 1,
    .min_calls = 1,
    .tools = true,
    .response_format = true,
};
