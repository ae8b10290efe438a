/* deepthink.c: SELF-DISCOVER, then uncertainty-routed sampling. Three sequential calls build a
 * reasoning plan for the task (select strategies from a list, adapt them to the task, turn
 * them into a JSON plan); then k samples follow the plan (one n=k call). When the share of
 * samples agreeing on the extracted final answer reaches the confidence threshold, a sample
 * with that answer is returned; otherwise one greedy (T=0) completion is the answer, streamed
 * to the client when asked. 4 rounds when the samples agree, 5 when they do not.
 *
 * Differences from OptiLLM's deepthink plugin (shared/approaches.md 3.9): the k samples are
 * one n=k call instead of k sequential calls, and the greedy call is made only when the
 * samples disagree (OptiLLM always makes it and usually throws it away); confidence is the
 * share of the majority answer as extracted by answer.h (numbers compared by value, \boxed{},
 * "the answer is") instead of a blend of difflib ratios over free text; answers are read
 * after the last </think>, so an intermediate "the answer is" in the reasoning does not vote;
 * cut-off and empty samples do not vote; a single sample is never "confident"; a failed greedy
 * call falls back to the best sample instead of failing the request; a truncated SELECT reply
 * is still parsed; the JSON plan is found by a string-aware brace scan and checked with cJSON
 * (the raw block is used when it does not parse); no "." is appended to the answer; the
 * client's conversation is sent as messages (images and earlier turns kept, its last user
 * message last) under one system message that carries the client's system prompt and the
 * plan; the client's max_tokens (or the provider's default) applies instead of a fixed 16382
 * that models with smaller output limits reject. The strategy list is
 * prompts/deepthink/modules.txt (one per line), so it can be overridden.
 *
 * Request fields: the stages set temperature, max_tokens and n (above); every other client
 * field reaches every call unchanged (llm.h). Requests with tools are refused (400, approach.h
 * .tools); response_format (json) is refused too: an answer may be an intermediate text. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "buf.h"

#define DISCOVER_TEMPERATURE 0.3 /* OptiLLM's, for the three SELF-DISCOVER calls */
#define SELECT_MAX_TOKENS    1024
#define ADAPT_MAX_TOKENS     2048
#define IMPLEMENT_MAX_TOKENS 2048
#define SAMPLE_TEMPERATURE   0.7 /* OptiLLM's; the client's temperature wins */
#define MAX_CHOSEN           7
#define DEFAULT_CHOSEN       5    /* strategies 1..5 when the SELECT reply names none */
#define TASK_MAX             4000 /* bytes of the task shown to the planning calls */
#define JSON_TRIES           16   /* '{' positions tried when looking for the plan */

struct sample {
    const char *text;
    const char *finish;
    const char *key; /* extracted answer key, or "" when it does not vote */
    size_t think;    /* bytes inside <think>...</think> */
    size_t len;
};

static const struct approach_option deepthink_options[];

/* ---- helpers ------------------------------------------------------------------------------ */

/* The option's value, clamped to its row's range (approach_opt_row). */
static double opt(const struct approach_ctx *ctx, const char *name)
{
    return approach_opt_row(ctx, deepthink_options, name);
}

static bool blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

static bool cut_off(const char *finish)
{
    return finish && strcmp(finish, "length") == 0;
}

/* s[0..len) without surrounding white space, in the arena. */
static char *trimmed(struct arena *a, const char *s, size_t len)
{
    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    return arena_strndup(a, s, len);
}

/* At most max bytes of s, cut at a UTF-8 character boundary, in the arena. */
static char *capped(struct arena *a, const char *s, size_t max)
{
    size_t len = strlen(s);

    if (len <= max)
        return arena_strdup(a, s);
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return arena_printf(a, "%.*s\n[...]", (int)max, s);
}

/* One call of the SELF-DISCOVER stage, in a round of its own. Returns the reply's text, or
 * NULL when the call failed or returned only white space. */
static const char *discover_call(struct approach_ctx *ctx, const char *user, long max_tokens,
                                 const char *stage, bool *cut)
{
    struct llm_call call = {0};
    struct llm_msg *msgs;

    call.nmsgs = llm_msgs2(ctx, NULL, user, &msgs);
    call.msgs = msgs;
    call.params = llm_params_default();
    call.params.temperature = DISCOVER_TEMPERATURE;
    call.params.max_tokens = max_tokens;
    call.stage = stage;
    if (llm_batch(ctx, &call, 1) <= 0 || blank(call.reply.choices[0].text))
        return NULL;
    *cut = cut_off(call.reply.choices[0].finish_reason);
    return call.reply.choices[0].text;
}

/* ---- SELF-DISCOVER ------------------------------------------------------------------------ */

/* The non-blank lines of the strategy list. */
static char **module_list(struct approach_ctx *ctx, int *n)
{
    const char *text = approach_prompt(ctx, "deepthink/modules", NULL);
    size_t cap = 1;
    char **m;

    for (const char *p = text; *p; p++)
        cap += *p == '\n';
    m = arena_calloc(ctx->arena, cap, sizeof(*m));
    *n = 0;
    for (const char *p = text; *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);

        if (!blank(arena_strndup(ctx->arena, p, len)) && (size_t)*n < cap)
            m[(*n)++] = trimmed(ctx->arena, p, len);
        p += len + (end ? 1 : 0);
    }
    return m;
}

static bool chosen_has(const int *chosen, int n, int v)
{
    for (int i = 0; i < n; i++)
        if (chosen[i] == v)
            return true;
    return false;
}

/* Adds the integers of s[0..len) that name a strategy (1..nmod), skipping decimals and
 * duplicates, up to MAX_CHOSEN. */
static void add_indices(const char *s, size_t len, int nmod, int *chosen, int *n)
{
    for (size_t i = 0; i < len && *n < MAX_CHOSEN; i++) {
        long v = 0;
        size_t j = i;

        if (!isdigit((unsigned char)s[i]) ||
            (i > 0 && (isdigit((unsigned char)s[i - 1]) || s[i - 1] == '.' || s[i - 1] == '-')))
            continue;
        while (j < len && isdigit((unsigned char)s[j]) && v < 100000)
            v = v * 10 + (s[j++] - '0');
        if (j < len && (isdigit((unsigned char)s[j]) ||
                        (s[j] == '.' && j + 1 < len && isdigit((unsigned char)s[j + 1]))))
            continue;
        if (v >= 1 && v <= nmod && !chosen_has(chosen, *n, (int)v))
            chosen[(*n)++] = (int)v;
        i = j;
    }
}

/* The strategies a SELECT reply names (1-based): the first [..] list of integers that names
 * any, else every integer in the text; strategies 1..DEFAULT_CHOSEN when it names none. */
static int parse_selection(const char *s, int nmod, int *chosen)
{
    int n = 0;

    for (const char *p = strchr(s, '['); p && n == 0; p = strchr(p + 1, '[')) {
        size_t len = strspn(p + 1, "0123456789, \t\r\n");

        if (p[1 + len] == ']')
            add_indices(p + 1, len, nmod, chosen, &n);
    }
    if (n == 0)
        add_indices(s, strlen(s), nmod, chosen, &n);
    if (n == 0)
        for (int i = 1; i <= DEFAULT_CHOSEN && i <= nmod; i++)
            chosen[n++] = i;
    return n;
}

/* The adapted strategies: the numbered lines of the reply ("1. ...", "2) ..."), renumbered;
 * the trimmed reply when it has none. */
static const char *parse_adapted(struct approach_ctx *ctx, const char *s)
{
    struct buf b;
    int n = 0;
    char *r;

    buf_init(&b, 0);
    for (const char *p = s; *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *q = p;

        while (q < p + len && (*q == ' ' || *q == '\t' || *q == '*' || *q == '-'))
            q++;
        if (q < p + len && isdigit((unsigned char)*q)) {
            while (q < p + len && isdigit((unsigned char)*q))
                q++;
            if (q < p + len && (*q == '.' || *q == ')' || *q == ':')) {
                const char *item = trimmed(ctx->arena, q + 1, (size_t)(p + len - q - 1));

                if (*item)
                    buf_printf(&b, "%d. %s\n", ++n, item);
            }
        }
        p += len + (end ? 1 : 0);
    }
    r = n ? trimmed(ctx->arena, buf_cstr(&b), b.len) : trimmed(ctx->arena, s, strlen(s));
    buf_free(&b);
    return r;
}

/* The end of the balanced {...} block starting at p (string-aware), or NULL when unclosed. */
static const char *block_end(const char *p)
{
    int depth = 0;
    bool str = false;

    for (; *p; p++) {
        if (str) {
            if (*p == '\\' && p[1])
                p++;
            else if (*p == '"')
                str = false;
        } else if (*p == '"') {
            str = true;
        } else if (*p == '{') {
            depth++;
        } else if (*p == '}' && --depth == 0) {
            return p + 1;
        }
    }
    return NULL;
}

/* The JSON plan of an IMPLEMENT reply, pretty-printed: the first balanced {...} block that
 * parses as a JSON object (code fences and prose around it are ignored); else the first
 * balanced block as written (the model reads it either way); NULL when there is none. */
static const char *parse_structure(struct approach_ctx *ctx, const char *s)
{
    const char *raw = NULL;
    const char *p = strchr(s, '{');

    for (int tries = 0; p && tries < JSON_TRIES; tries++) {
        const char *end = block_end(p);
        cJSON *json;

        if (!end)
            break; /* cut off: any later '{' is inside this block, a fragment of the plan */
        if (!raw)
            raw = arena_strndup(ctx->arena, p, (size_t)(end - p));
        json = cJSON_ParseWithLength(p, (size_t)(end - p));
        if (cJSON_IsObject(json) && json->child) {
            char *printed = cJSON_Print(json);
            const char *r = printed ? arena_strdup(ctx->arena, printed) : raw;

            cJSON_free(printed);
            cJSON_Delete(json);
            return r;
        }
        cJSON_Delete(json);
        p = strchr(end, '{'); /* not p + 1: a nested object is not the plan */
    }
    return raw;
}

/* The generic plan of prompts/deepthink/default_structure.txt. */
static const char *default_structure(struct approach_ctx *ctx)
{
    const char *t = approach_prompt(ctx, "deepthink/default_structure", NULL);

    return trimmed(ctx->arena, t, strlen(t));
}

/* Runs SELECT, ADAPT and IMPLEMENT (3 rounds) and returns the reasoning plan. A failed stage
 * falls back to a default (strategies 1..5, their text as written, a generic plan), so the
 * request goes on whatever these calls return. */
static const char *self_discover(struct approach_ctx *ctx)
{
    const char *system = chat_system(ctx->arena, ctx->req);
    const char *task =
        capped(ctx->arena,
               *system ? arena_printf(ctx->arena, "%s\n\n%s", system, chat_last_user(ctx->req))
                       : chat_last_user(ctx->req),
               TASK_MAX);
    int nmod;
    char **mods = module_list(ctx, &nmod);
    int chosen[MAX_CHOSEN];
    int nchosen = 0;
    struct buf b;
    const char *listed;
    const char *selected;
    const char *adapted;
    const char *reply;
    const char *structure = NULL;
    bool cut = false;

    buf_init(&b, 0);
    for (int i = 0; i < nmod; i++)
        buf_printf(&b, "%d. %s\n", i + 1, mods[i]);
    listed = arena_strndup(ctx->arena, buf_cstr(&b), b.len);
    buf_reset(&b);

    reply = discover_call(
        ctx, approach_prompt(ctx, "deepthink/select", "task", task, "modules", listed, NULL),
        SELECT_MAX_TOKENS, "deepthink/select", &cut);
    /* A cut-off reply still names strategies before the cut: keep those. */
    nchosen = parse_selection(reply ? reply : "", nmod, chosen);
    for (int i = 0; i < nchosen; i++)
        buf_printf(&b, "%d. %s\n", i + 1, mods[chosen[i] - 1]);
    selected = trimmed(ctx->arena, buf_cstr(&b), b.len);
    buf_free(&b);

    reply = discover_call(
        ctx, approach_prompt(ctx, "deepthink/adapt", "task", task, "selected", selected, NULL),
        ADAPT_MAX_TOKENS, "deepthink/adapt", &cut);
    adapted = reply && !cut ? parse_adapted(ctx, reply) : selected;

    reply = discover_call(
        ctx, approach_prompt(ctx, "deepthink/implement", "task", task, "adapted", adapted, NULL),
        IMPLEMENT_MAX_TOKENS, "deepthink/implement", &cut);
    if (reply)
        structure = parse_structure(ctx, reply);
    return structure ? structure : default_structure(ctx);
}

/* ---- uncertainty routing ------------------------------------------------------------------ */

/* Bytes of reasoning inside the first <think>...</think>. */
static size_t think_len(const char *s)
{
    const char *open = strstr(s, "<think>");
    const char *close = open ? strstr(open, "</think>") : NULL;

    return close ? (size_t)(close - open) - strlen("<think>") : 0;
}

/* Is a the better representative of its answer: complete, longer reasoning, shorter text,
 * byte order. */
static bool better(const struct sample *a, const struct sample *b)
{
    if (cut_off(a->finish) != cut_off(b->finish))
        return !cut_off(a->finish);
    if (a->think != b->think)
        return a->think > b->think;
    if (a->len != b->len)
        return a->len < b->len;
    return strcmp(a->text, b->text) < 0;
}

/* The majority answer among the voting samples: sets *count (0 when none voted) and returns
 * its best sample (NULL when none voted). Ties go to the smaller key. */
static const struct sample *majority(const struct sample *s, int n, int *count)
{
    const struct sample *best = NULL;
    const char *key = NULL;

    *count = 0;
    for (int i = 0; i < n; i++) {
        int c = 0;

        if (!*s[i].key)
            continue;
        for (int j = 0; j < n; j++)
            c += strcmp(s[j].key, s[i].key) == 0;
        if (c > *count || (c == *count && strcmp(s[i].key, key) < 0)) {
            *count = c;
            key = s[i].key;
        }
    }
    for (int i = 0; key && i < n; i++)
        if (strcmp(s[i].key, key) == 0 && (!best || better(&s[i], best)))
            best = &s[i];
    return best;
}

/* The sample to fall back on when the greedy call fails: the majority's, else the best
 * non-empty one. NULL when there is none. */
static const struct sample *fallback(const struct sample *s, int n)
{
    int count;
    const struct sample *best = majority(s, n, &count);

    for (int i = 0; !count && i < n; i++)
        if (!blank(s[i].text) && (!best || better(&s[i], best)))
            best = &s[i];
    return best;
}

/* The client's conversation under our system message, which carries the client's system
 * prompt and the plan: the client's own system and developer messages are left out, and its
 * last user message stays last (images and earlier turns kept). */
static size_t conversation(struct approach_ctx *ctx, const char *system, struct llm_msg **msgs)
{
    size_t n = llm_msgs_conversation(ctx, trimmed(ctx->arena, system, strlen(system)), NULL, msgs);
    size_t m = 1;

    for (size_t i = 1; i < n; i++)
        if (strcmp((*msgs)[i].role, "system") != 0 && strcmp((*msgs)[i].role, "developer") != 0)
            (*msgs)[m++] = (*msgs)[i];
    return m;
}

static int deepthink_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int k = (int)opt(ctx, "deepthink_samples");
    double threshold = opt(ctx, "deepthink_confidence");
    const char *structure =
        opt(ctx, "deepthink_self_discover") > 0 ? self_discover(ctx) : default_structure(ctx);
    const char *system =
        approach_prompt(ctx, "deepthink/solve", "system", chat_system(ctx->arena, ctx->req),
                        "structure", structure, NULL);
    struct llm_choice *c = arena_calloc(ctx->arena, (size_t)k, sizeof(*c));
    struct sample *s = arena_calloc(ctx->arena, (size_t)k, sizeof(*s));
    struct llm_params p = llm_params_default();
    struct llm_choice final = {.text = ""};
    struct llm_msg *msgs;
    size_t nmsgs = conversation(ctx, system, &msgs);
    const struct sample *pick;
    int got;
    int count = 0;
    int rc;

    p.temperature = isnan(ctx->req->temperature) ? SAMPLE_TEMPERATURE : ctx->req->temperature;
    got = llm_sample(ctx, msgs, nmsgs, &p, k, "deepthink/sample", c);
    if (got < 0)
        got = 0; /* the greedy call below is the answer then */
    for (int i = 0; i < got; i++) {
        s[i].text = c[i].text;
        s[i].finish = c[i].finish_reason;
        s[i].len = strlen(c[i].text);
        s[i].think = think_len(c[i].text);
        s[i].key = "";
        if (!blank(c[i].text) && !cut_off(c[i].finish_reason)) {
            struct answer a = answer_extract(ctx->arena, c[i].text, ANSWER_NONE);

            s[i].key = answer_key(ctx->arena, &a);
        }
    }
    pick = majority(s, got, &count);
    /* Confidence: the majority's share of the samples that came back; one sample alone is
     * no agreement. */
    if (pick && count >= 2 && (double)count / got >= threshold) {
        out->text = pick->text;
        out->finish_reason = "stop";
        return PX_OK;
    }
    p = llm_params_default();
    p.temperature = 0;
    rc = llm_final(ctx, msgs, nmsgs, &p, "deepthink/final", &final);
    if (rc == PX_OK && (!blank(final.text) || ctx->streamed)) {
        out->text = final.text;
        out->finish_reason = cut_off(final.finish_reason) ? "length" : "stop";
        return PX_OK;
    }
    /* Failed or empty: a sample is better. A streamed call may have sent part of its text
     * before failing (llm_final does not say), so a failed streamed call is not replaced. */
    pick = rc < 0 && ctx->stream_final ? NULL : fallback(s, got);
    if (!pick && rc < 0)
        return rc;
    out->text = pick ? pick->text : final.text;
    out->finish_reason = pick && cut_off(pick->finish) ? "length" : "stop";
    return PX_OK;
}

static const struct approach_option deepthink_options[] = {
    {.name = "deepthink_samples",
     .def = 3,
     .min = 1,
     .max = 10,
     .integer = true,
     .help = "samples drawn by deepthink before the confidence check"},
    {.name = "deepthink_confidence",
     .def = 0.7,
     .min = 0,
     .max = 1,
     .help = "share of deepthink samples that must agree on the answer to skip the greedy call"},
    {.name = "deepthink_self_discover",
     .def = 1,
     .min = 0,
     .max = 1,
     .integer = true,
     .help = "1: deepthink builds a SELF-DISCOVER reasoning plan first (3 calls); 0: a "
             "generic plan"},
    {.name = NULL},
};

const struct approach approach_deepthink = {
    .slug = "deepthink",
    .aliases = NULL,
    .run = deepthink_run,
    .prompts = (const char *const[]){"deepthink/modules", "deepthink/select", "deepthink/adapt",
                                     "deepthink/implement", "deepthink/default_structure",
                                     "deepthink/solve", NULL},
    .options = deepthink_options,
    .summary = "SELF-DISCOVER plan (3 calls), n samples in one call; agreeing samples win, "
               "else one greedy answer",
    .calls = 5,
    .rounds = 5,
};
