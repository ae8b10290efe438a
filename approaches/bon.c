/* bon.c: best-of-n. k samples of the client's conversation (one n=k call), then every sample
 * rated by the model in one parallel batch; the best-rated sample is the answer.
 *
 * Differences from OptiLLM's bon.py (shared/approaches.md 2.2): the ratings run in parallel
 * (2 rounds instead of 1+k), the rating parser understands "Rating: 8", "8/10", "8 out of 10"
 * and "**8**" (OptiLLM scores all of those 0), a failed rating only makes its sample unrated,
 * and ties are broken by content, never by arrival order: parallel replies come back in any
 * order, so an index-based choice would make the proxy nondeterministic.
 *
 * Request fields: the samples override temperature (1.0 unless the client sent one) and n,
 * the ratings temperature (0.1) and max_tokens (256); every other client field reaches every
 * call unchanged. response_format and tools reach the samples only (one is returned whole),
 * not the ratings, whose text is parsed here. A sample that calls tools is rated like a text
 * one, its calls shown to the rater as "Tool call: name(arguments)" lines, and agrees with
 * the samples making the same calls (llm_tool_calls_key). */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"

#define RATE_TEMPERATURE 0.1
#define RATE_MAX_TOKENS  256
#define GEN_TEMPERATURE  1.0 /* OptiLLM's sampling temperature */
#define UNRATED          (-1.0)

struct cand {
    const char *text;  /* as shown to the rater: the content, then any tool calls */
    const char *tools; /* tool_calls JSON, or NULL */
    const char *content;
    const char *logprobs;
    const char *finish;
    size_t len;
    int support;   /* samples whose extracted answer equals this one's (itself included) */
    double rating; /* 0..10, or UNRATED */
};

/* ---- rating parser ------------------------------------------------------------------------ */

/* Reads [-+]digits[.digits] at p. Returns the end, or NULL when p holds no number. */
static const char *scan_number(const char *p, double *out)
{
    double v = 0;
    double scale = 1;
    bool neg = *p == '-';

    if (*p == '-' || *p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return NULL;
    while (isdigit((unsigned char)*p))
        v = v * 10 + (*p++ - '0');
    if (*p == '.' && isdigit((unsigned char)p[1])) {
        for (p++; isdigit((unsigned char)*p); p++) {
            scale /= 10;
            v += (*p - '0') * scale;
        }
    }
    *out = neg ? -v : v;
    return p;
}

static bool starts_with_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (tolower((unsigned char)*s) != *prefix)
            return false;
    return true;
}

/* A scale after a number: "/10", " / 100", " out of 10". Returns the denominator or 0. */
static double scale_after(const char *p)
{
    double d;

    while (*p == ' ' || *p == '*')
        p++;
    if (*p == '/')
        p++;
    else if (starts_with_ci(p, "out of"))
        p += 6;
    else
        return 0;
    while (*p == ' ')
        p++;
    if (!scan_number(p, &d) || d <= 0)
        return 0;
    return d;
}

/* The number at p, rescaled to 0..10 when a scale follows ("7/10", "70/100"). */
static double scaled(const char *p)
{
    double v;
    const char *end = scan_number(p, &v);
    double d = end ? scale_after(end) : 0;

    return d > 0 ? v * 10 / d : v;
}

/* The number after the last "rating", "score" or "grade" keyword, within a short gap on the
 * same line ("Rating: 8", "**Score:** 7/10", "I give it a score of 9"). */
static bool keyword_rating(const char *s, double *out)
{
    static const char *const words[] = {"rating", "score", "grade"};
    bool found = false;

    for (const char *p = s; *p; p++) {
        for (size_t w = 0; w < PX_ARRAY_LEN(words); w++) {
            const char *q = p + strlen(words[w]);
            double v;

            if (!starts_with_ci(p, words[w]))
                continue;
            for (int gap = 0; *q && *q != '\n' && gap < 24; q++, gap++)
                if (isdigit((unsigned char)*q) || (*q == '-' && isdigit((unsigned char)q[1])))
                    break;
            if (scan_number(q, &v)) {
                *out = scaled(q);
                found = true;
            }
        }
    }
    return found;
}

/* The last "N/D" or "N out of D" anywhere in the text. */
static bool fraction_rating(const char *s, double *out)
{
    bool found = false;

    for (const char *p = s; *p; p++) {
        double v;
        const char *end;

        if (!isdigit((unsigned char)*p) ||
            (p > s && (isdigit((unsigned char)p[-1]) || p[-1] == '.')))
            continue;
        end = scan_number(p, &v);
        if (end && scale_after(end) > 0) {
            *out = scaled(p);
            found = true;
        }
    }
    return found;
}

static bool markup(char c)
{
    return isspace((unsigned char)c) || c == '*' || c == '#' || c == '`' || c == '"' || c == '\'' ||
           c == '_';
}

/* A reply that is a number ("8", "**8**", "8.") or starts with one followed by punctuation
 * ("8 - solid", "7. Clear and correct"); "3 apples" is not a rating. */
static bool leading_rating(const char *s, double *out)
{
    const char *p = s;
    const char *end;

    while (*p && markup(*p))
        p++;
    end = scan_number(p, out);
    if (!end)
        return false;
    while (*end == ' ' || *end == '\t' || *end == '*' || *end == '`')
        end++;
    return *end == '\0' || strchr("-:.,;)\r\n", *end) != NULL;
}

/* The last bold number anywhere: "... so I give it **7**". */
static bool bold_rating(const char *s, double *out)
{
    bool found = false;

    for (const char *p = strstr(s, "**"); p; p = strstr(p + 2, "**")) {
        double v;
        const char *end = scan_number(p + 2, &v);

        if (end && strncmp(end, "**", 2) == 0) {
            *out = v;
            found = true;
        }
    }
    return found;
}

/* Parses a grader's reply into 0..10 (clamped); UNRATED when it holds no recognisable score.
 * Tried in order: a keyword and a number, a fraction, a leading number, a bold number. */
static double parse_rating(const char *s)
{
    double v;

    if (!keyword_rating(s, &v) && !fraction_rating(s, &v) && !leading_rating(s, &v) &&
        !bold_rating(s, &v))
        return UNRATED;
    return v < 0 ? 0 : v > 10 ? 10 : v;
}

/* ---- selection ---------------------------------------------------------------------------- */

static bool truncated(const struct cand *c)
{
    return c->finish && strcmp(c->finish, "length") == 0;
}

/* Best first: rating, then the most common extracted answer among the samples, then a
 * completed sample over a truncated one, then the shorter text, then byte order. */
static int cand_cmp(const void *pa, const void *pb)
{
    const struct cand *a = pa;
    const struct cand *b = pb;

    if (a->rating != b->rating)
        return a->rating > b->rating ? -1 : 1;
    if (a->support != b->support)
        return a->support > b->support ? -1 : 1;
    if (truncated(a) != truncated(b))
        return truncated(a) ? 1 : -1;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    if (strcmp(a->text, b->text) != 0)
        return strcmp(a->text, b->text);
    return strcmp(a->tools ? a->tools : "", b->tools ? b->tools : "");
}

static bool blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

static void count_support(struct approach_ctx *ctx, struct cand *c, int n)
{
    const char **keys = arena_calloc(ctx->arena, (size_t)n, sizeof(*keys));

    for (int i = 0; i < n; i++) {
        struct answer a = answer_extract(ctx->arena, c[i].text, ANSWER_NONE);

        keys[i] = c[i].tools ? arena_printf(ctx->arena, "tool:%s",
                                            llm_tool_calls_key(ctx->arena, c[i].tools))
                             : answer_key(ctx->arena, &a);
    }
    for (int i = 0; i < n; i++) {
        c[i].support = 0;
        for (int j = 0; j < n && *keys[i]; j++)
            if (strcmp(keys[i], keys[j]) == 0)
                c[i].support++;
    }
}

/* Rates every candidate in one parallel batch. A failed or unparseable rating leaves the
 * candidate UNRATED; the request goes on even when every rating failed. */
static void rate_all(struct approach_ctx *ctx, struct cand *c, int n)
{
    struct llm_call *calls = arena_calloc(ctx->arena, (size_t)n, sizeof(*calls));
    const char *question = chat_last_user(ctx->req);
    const char *system = chat_system(ctx->arena, ctx->req);
    const char *rate_system = approach_prompt(ctx, "bon/rate_system", NULL);

    for (int i = 0; i < n; i++) {
        struct llm_msg *msgs;
        const char *user = approach_prompt(ctx, "bon/rate", "question", question, "response",
                                           c[i].text, "system", system, NULL);

        calls[i].nmsgs = llm_msgs2(ctx, rate_system, user, &msgs);
        calls[i].msgs = msgs;
        calls[i].params = llm_params_default();
        calls[i].params.temperature = RATE_TEMPERATURE;
        calls[i].params.max_tokens = RATE_MAX_TOKENS;
        calls[i].stage = "bon/rate";
    }
    /* Nothing to do when every rating failed: all candidates stay UNRATED. */
    (void)llm_batch(ctx, calls, (size_t)n);
    for (int i = 0; i < n; i++) {
        const struct llm_reply *r = &calls[i].reply;

        c[i].rating = UNRATED;
        if (r->status == PX_OK && r->nchoices > 0)
            c[i].rating = parse_rating(r->choices[0].text);
    }
}

static int bon_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int k = (int)approach_opt(ctx, "best_of_n");
    struct llm_params p = llm_params_default();
    struct llm_choice *samples = arena_calloc(ctx->arena, (size_t)k, sizeof(*samples));
    struct cand *c;
    struct llm_msg *msgs;
    size_t nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &msgs);
    int got;
    int n = 0;

    p.temperature = isnan(ctx->req->temperature) ? GEN_TEMPERATURE : ctx->req->temperature;
    p.answer = true; /* a sample is returned whole */
    {
        /* Under a call budget: fewer samples, each still rated (1 alone needs no rating). */
        int fit = llm_budget_samples(ctx, k, 1, 0);

        if (fit > 0 && fit < k) {
            llm_budget_note(ctx, "samples=%d/%d", fit, k);
            k = fit;
        }
    }
    got = llm_sample(ctx, msgs, nmsgs, &p, k, "bon/sample", samples);
    if (got < 0)
        return got;
    c = arena_calloc(ctx->arena, (size_t)got, sizeof(*c));
    for (int i = 0; i < got; i++) {
        const char *calls = llm_tool_calls_text(ctx->arena, samples[i].tool_calls);

        if (blank(samples[i].text) && !*calls)
            continue; /* an empty sample cannot be the best one; rating it wastes a call */
        c[n].content = samples[i].text;
        c[n].logprobs = samples[i].logprobs;
        c[n].tools = *calls ? samples[i].tool_calls : NULL;
        c[n].text = !*calls ? samples[i].text
                    : blank(samples[i].text)
                        ? calls
                        : arena_printf(ctx->arena, "%s\n%s", samples[i].text, calls);
        c[n].finish = samples[i].finish_reason;
        c[n].len = strlen(c[n].text);
        n++;
    }
    if (n == 0) { /* every sample was empty: so is the answer, as the upstream gave it */
        out->text = "";
        out->finish_reason = "stop";
        return PX_OK;
    }
    count_support(ctx, c, n);
    if (n > 1)
        rate_all(ctx, c, n); /* a single candidate needs no rating */
    qsort(c, (size_t)n, sizeof(*c), cand_cmp);
    out->text = c[0].content;
    out->tool_calls = c[0].tools;
    out->logprobs = c[0].logprobs;
    out->finish_reason = c[0].tools ? "tool_calls" : truncated(&c[0]) ? "length" : "stop";
    return PX_OK;
}

static const struct approach_option bon_options[] = {
    {.name = "best_of_n",
     .def = 3,
     .min = 1,
     .max = 16,
     .integer = true,
     .help = "samples generated and rated by bon"},
    {.name = NULL},
};

const struct approach approach_bon = {
    .slug = "bon",
    .aliases = (const char *const[]){"best-of-n", "best_of_n", NULL},
    .run = bon_run,
    .prompts = (const char *const[]){"bon/rate_system", "bon/rate", NULL},
    .options = bon_options,
    .summary = "Best of n: n samples in one call, each rated by the model in parallel; the "
               "best-rated one wins",
    .calls = 4,
    .rounds = 2,
    .min_calls = 1,
    .tools = true,
    .response_format = true,
};
