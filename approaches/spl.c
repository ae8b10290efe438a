/* spl.c: system-prompt learning. One classification call names the request's problem type;
 * the best strategies learnt for that type (for this tenant) go into a system message before
 * the conversation, and one completion answers (streamed, the client's tools and
 * response_format kept). In learning mode (the body's "spl_learning": true, OptiLLM's field,
 * or --spl-learning) a type without strategies first gets one written by the model, and after
 * the answer each strategy used is judged (YES/NO: did the response follow it?), all at once;
 * the verdicts update the strategy's record. The store's calls run on helper threads
(sched_offload, inside spl_store.c); spl itself waits for the model on a coroutine. Inference mode
applies only strategies tried at
 * least 5 times with a success rate of 0.4 or more. The store is include/spl_store.h (SQLite,
 * shared by the proxies that use the same --spl-db file).
 *
 * Differences from OptiLLM's spl (shared/approaches.md 3.11): SQLite with transactions instead
 * of JSON files rewritten without locks; strategies per tenant; every call's tokens counted;
 * judgements in parallel; no TF-IDF merging: a type has one strategy until more are added by
 * an operator-run refinement (not built), at most SPL_MAX_PER_TYPE kept. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "approach.h"
#include "arena.h"
#include "buf.h"
#include "log.h"
#include "spl_store.h"

#define MAX_APPLIED  3
#define QUERY_MAX    4000 /* bytes of the request the classifier and the writer see */
#define STRATEGY_MAX 2000 /* bytes of a strategy kept */
#define EXAMPLE_MAX  500  /* bytes of a problem kept as a strategy's example */

static const char *const types[] = {
    "arithmetic", "algebra",   "statistics", "logic",       "word_problem",
    "coding",     "algorithm", "writing",    "summary",     "lookup",
    "planning",   "decision",  "knowledge",  "translation", "sequence",
};

/* The text after the last </think>, leading space dropped. */
static const char *after_think(const char *s)
{
    const char *t;

    while ((t = strstr(s, "</think>")) != NULL)
        s = t + 8;
    while (isspace((unsigned char)*s))
        s++;
    return s;
}

/* s cut to at most n bytes on a UTF-8 boundary, in 'a'. */
static const char *cut(struct arena *a, const char *s, size_t n)
{
    if (strlen(s) <= n)
        return s;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return arena_strndup(a, s, n);
}

/* The type a classifier reply names: its first word if that is a type, else the type named
 * earliest as a word of its own, else "general". */
const char *spl_parse_type(const char *reply)
{
    const char *t = after_think(reply), *best = "general";
    size_t w = 0, best_at = (size_t)-1;
    char low[512];
    size_t len;

    while (*t && !isalnum((unsigned char)*t))
        t++;
    while (isalnum((unsigned char)t[w]) || t[w] == '_')
        w++;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strlen(types[i]) == w && strncasecmp(types[i], t, w) == 0)
            return types[i];
    for (len = 0; t[len] && len < sizeof(low) - 1; len++)
        low[len] = (char)tolower((unsigned char)t[len]);
    low[len] = '\0';
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        size_t tl = strlen(types[i]);

        for (const char *p = low; (p = strstr(p, types[i])) != NULL; p += tl) {
            bool word = (p == low || !isalnum((unsigned char)p[-1])) &&
                        !isalnum((unsigned char)p[tl]) && p[tl] != '_';

            if (word && (size_t)(p - low) < best_at) {
                best = types[i];
                best_at = (size_t)(p - low);
            }
        }
    }
    return best;
}

static const char *query_text(struct approach_ctx *ctx)
{
    const char *sys = chat_system(ctx->arena, ctx->req);

    return cut(
        ctx->arena,
        arena_printf(ctx->arena, "%s%s%s", sys, *sys ? "\n\n" : "", chat_last_user(ctx->req)),
        QUERY_MAX);
}

/* One call [user: prompt] at 'temperature' with 'max_tokens'; its text after </think>, or
 * NULL when it failed. */
static const char *ask(struct approach_ctx *ctx, const char *stage, const char *prompt,
                       double temperature, long max_tokens)
{
    struct llm_call c = {.stage = stage};
    struct llm_msg *msgs;

    c.nmsgs = llm_msgs2(ctx, NULL, prompt, &msgs);
    c.msgs = msgs;
    c.params = llm_params_default();
    c.params.temperature = temperature;
    c.params.max_tokens = max_tokens;
    if (llm_batch(ctx, &c, 1) != 1 || c.reply.nchoices < 1) {
        memset(ctx->err, 0, sizeof(*ctx->err)); /* learning goes on without it */
        return NULL;
    }
    return after_think(c.reply.choices[0].text);
}

/* Is learning on for this request? The body's spl_learning (a bool) wins over the server's
 * --spl-learning. -1 (ctx->err set) when the field is not a bool. */
static int learning_on(struct approach_ctx *ctx)
{
    bool v;
    int rc = chat_bool_field(ctx->req, "spl_learning", &v);

    if (rc < 0)
        return px_fail(ctx->err, PX_EINVAL, "spl_learning", "'spl_learning' must be true or false");
    return rc == 1 ? v : approach_opt(ctx, "spl_learning") != 0;
}

static const char *strategies_text(struct approach_ctx *ctx, const char *type,
                                   const struct spl_strategy *s, int n)
{
    struct buf b;
    const char *text;

    buf_init(&b, 0);
    for (int i = 0; i < n; i++) {
        buf_printf(&b, "%sStrategy %d for %s problems:\n%s\n", i ? "\n" : "", i + 1, type,
                   s[i].text);
        if (*s[i].example)
            buf_printf(&b, "(It helped with: %s)\n", s[i].example);
    }
    text = arena_strndup(ctx->arena, buf_cstr(&b), b.len);
    buf_free(&b);
    return approach_prompt(ctx, "spl/apply", "type", type, "strategies", text, NULL);
}

static void judge(struct approach_ctx *ctx, const char *query, const char *answer,
                  const struct spl_strategy *s, int n)
{
    struct llm_call *c = arena_calloc(ctx->arena, (size_t)n, sizeof(*c));
    const char *example = cut(ctx->arena, chat_last_user(ctx->req), EXAMPLE_MAX);
    long left = llm_budget_calls_left(ctx);

    if (left < n) { /* a budget: judge what fits */
        n = left > 0 ? (int)left : 0;
        llm_budget_note(ctx, "spl judged %d", n);
    }
    for (int i = 0; i < n; i++) {
        struct llm_msg *msgs;

        c[i].stage = "spl/judge";
        c[i].nmsgs =
            llm_msgs2(ctx, NULL,
                      approach_prompt(ctx, "spl/judge", "strategy", s[i].text, "query", query,
                                      "answer", cut(ctx->arena, answer, QUERY_MAX), NULL),
                      &msgs);
        c[i].msgs = msgs;
        c[i].params = llm_params_default();
        c[i].params.temperature = 0;
        c[i].params.max_tokens = 8;
    }
    if (n == 0)
        return;
    if (llm_batch(ctx, c, (size_t)n) <= 0)
        memset(ctx->err, 0, sizeof(*ctx->err)); /* the answer stands; nothing is recorded */
    for (int i = 0; i < n; i++) {
        const char *v;
        bool yes;

        if (c[i].reply.status != PX_OK || c[i].reply.nchoices < 1)
            continue; /* no verdict: not an attempt */
        v = after_think(c[i].reply.choices[0].text);
        yes = strncasecmp(v, "yes", 3) == 0;
        spl_record(s[i].id, yes, yes ? example : NULL);
    }
}

static int spl_run(struct approach_ctx *ctx, struct chat_result *out)
{
    const char *tenant = ctx->tenant ? ctx->tenant : "";
    const char *query = query_text(ctx);
    struct spl_strategy s[MAX_APPLIED];
    struct llm_msg *msgs;
    struct llm_params p = llm_params_default();
    struct llm_choice final;
    const char *reply, *type;
    size_t nmsgs;
    int learning = learning_on(ctx), n, rc;
    struct buf tl;

    if (learning < 0)
        return learning;
    buf_init(&tl, 0);
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        buf_printf(&tl, "%s%s", i ? ", " : "", types[i]);
    reply = ask(ctx, "spl/classify",
                approach_prompt(ctx, "spl/classify", "types", buf_cstr(&tl), "query", query, NULL),
                0, 16);
    buf_free(&tl);
    type = reply ? spl_parse_type(reply) : "general";

    n = spl_select(ctx->arena, tenant, type, learning, s, MAX_APPLIED);
    if (n < 0)
        n = 0; /* the store failed (logged): answer without strategies */
    if (learning && n == 0 && llm_budget_calls_left(ctx) >= 2) {
        const char *text =
            ask(ctx, "spl/create",
                approach_prompt(ctx, "spl/create", "type", type, "query", query, NULL), 0.7, 1024);

        if (text && *text && spl_add_first(tenant, type, cut(ctx->arena, text, STRATEGY_MAX)) >= 0)
            n = spl_select(ctx->arena, tenant, type, true, s, MAX_APPLIED);
        if (n < 0)
            n = 0;
    }
    nmsgs = llm_msgs_conversation(ctx, n ? strategies_text(ctx, type, s, n) : NULL, NULL, &msgs);
    rc = llm_final(ctx, msgs, nmsgs, &p, "spl/final", &final);
    if (rc < 0)
        return rc;
    if (learning && n > 0)
        judge(ctx, query,
              final.tool_calls ? llm_tool_calls_text(ctx->arena, final.tool_calls) : final.text, s,
              n);
    log_at(LOG_INFO, ctx->req_id, "spl: type %s, %d strateg%s applied%s", type, n,
           n == 1 ? "y" : "ies", learning ? " (learning)" : "");
    out->text = final.text;
    out->tool_calls = final.tool_calls;
    out->logprobs = final.logprobs;
    out->finish_reason = final.tool_calls ? "tool_calls"
                         : final.finish_reason && strcmp(final.finish_reason, "length") == 0
                             ? "length"
                             : "stop";
    return PX_OK;
}

static const struct approach_option spl_options[] = {
    {.name = "spl_learning",
     .def = 0,
     .min = 0,
     .max = 1,
     .integer = true,
     .help = "1: spl learns (writes a strategy for a new problem type, judges the strategies "
             "it used) on every request; a request's \"spl_learning\": true/false wins"},
    {0},
};

const struct approach approach_spl = {
    .slug = "spl",
    .aliases = (const char *const[]){"system_prompt_learning", NULL},
    .run = spl_run,
    .prompts = (const char *const[]){"spl/classify", "spl/create", "spl/apply", "spl/judge", NULL},
    .options = spl_options,
    .summary = "System-prompt learning: strategies learnt per problem type (and tenant, in "
               "SQLite) added to the system prompt; learning per request",
    .calls = 2,
    .rounds = 2,
    .min_calls = 2,
    .tools = true,
    .response_format = true,
};
