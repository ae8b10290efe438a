/* majority_voting.c: k samples of the client's conversation in one round; the final answer
 * extracted from most samples wins, and a sample carrying it is returned whole.
 *
 * Differences from OptiLLM's majority_voting plugin (shared/approaches.md 3.1): answers are
 * extracted and compared by answer.h (numbers by value, \boxed{}, "the answer is", choices)
 * instead of a first-matching-line regex; a failed sample is dropped instead of failing the
 * n call; ties go to the smaller answer key, not to the first sample to arrive, and the
 * returned sample is chosen by content (the shortest, then the first in byte order), so the
 * result does not depend on the order of parallel replies. Samples without an extractable
 * answer do not vote; when no sample has one, the samples are grouped by text similarity as
 * in self_consistency. Truncated samples vote only when none completed.
 *
 * The grouping is approaches/vote.c, shared with self_consistency.
 *
 * Adaptive sampling (the option adaptive, on by default, shared with self_consistency): the
 * samples are drawn in rounds until the vote is decided (vote_sample, adaptive.h).
 *
 * Request fields: the samples override temperature (0.6 unless the client sent one) and n;
 * every other client field reaches them unchanged, response_format and tools included (a
 * sample is returned whole). Samples that call tools vote with their calls (vote.c). */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "vote.h"

#define GEN_TEMPERATURE 0.6 /* OptiLLM's plugin default */

static int mv_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int k = (int)approach_opt(ctx, "mv_samples");
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
    got = vote_sample(ctx, msgs, nmsgs, &p, k, "majority_voting/sample", VOTE_ANSWERS_FIRST, c,
                      &rounds);
    if (got < 0)
        return got;
    pick = vote_choose(ctx->arena, c, got, VOTE_ANSWERS_FIRST, &cut);
    out->text = pick >= 0 ? c[pick].text : "";
    out->tool_calls = pick >= 0 ? c[pick].tool_calls : NULL;
    out->logprobs = pick >= 0 ? c[pick].logprobs : NULL;
    out->finish_reason = out->tool_calls ? "tool_calls" : cut ? "length" : "stop";
    return PX_OK;
}

static const struct approach_option mv_options[] = {
    {.name = "mv_samples",
     .def = 6,
     .min = 1,
     .max = 32,
     .integer = true,
     .help = "samples drawn by majority_voting"},
    {.name = NULL},
};

const struct approach approach_majority_voting = {
    .slug = "majority_voting",
    .aliases = (const char *const[]){"majority-voting", NULL},
    .run = mv_run,
    .prompts = NULL,
    .options = mv_options,
    .summary = "Majority voting: n samples in one call; the most common extracted final answer "
               "wins and a sample carrying it is returned",
    .calls = 1,
    .rounds = 1,
    .min_calls = 1,
    .tools = true,
    .response_format = true,
};
