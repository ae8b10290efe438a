/* longcepo.c: long-context map-reduce as OptiLLM's LongCePO (shared/approaches.md 3.10),
 * parallel where OptiLLM is sequential.
 *
 * Input: the last user message, "<context><CONTEXT_END><question>" as OptiLLM expects; without
 * the delimiter the question is the text after the last "Query:", else the last sentence
 * (OptiLLM fails with a 500 there). Tokens are estimated as bytes / 4 everywhere.
 *
 * Stages:
 *  1. normalize (1 call, the client's system prompt): the bare question;
 *  2. plan (1 call, repeated up to 3 times until it holds <SUB-QUESTIONS>): at most
 *     longcepo_max_subquestions sub-questions (none when the plan never comes: tolerated);
 *  3. the context cut into chunks of longcepo_chunk_tokens (paragraphs packed greedily, a
 *     longer paragraph cut at a sentence end or space, a short last chunk rebalanced with the
 *     one before), at most longcepo_max_chunks;
 *  4. summaries: one call per chunk, all at once (once per request: OptiLLM redoes them per
 *     question and they do not depend on it here);
 *  5. for each sub-question in order, then for the original question, map-reduce with the
 *     history of earlier answers: map (one call per chunk, all at once; the passage, its
 *     neighbours' summaries, the history, the question; "[NO INFORMATION]" results dropped),
 *     collapse while the reports exceed longcepo_context_window - longcepo_max_output - the
 *     reduce prompt (adjacent pairs merged all at once per level; OptiLLM merges one pair per
 *     call), reduce (1 call, repeated up to 3 times until it holds an answer tag; the answer
 *     is the text after the last tag). No map result: the answer is "No information".
 * Temperature 0.7 and max_tokens longcepo_max_output (summaries longcepo_summary_tokens) on
 * every call, as OptiLLM; its top_p 0.7 is not sent (the client's top_p is).
 *
 * Partial failure: a failed summary leaves its neighbours without it; failed map or collapse
 * calls are dropped (a collapse keeps its inputs); a failed normalize or plan falls back to
 * the question; only when every call of a stage fails (or the final reduce) does the request
 * fail. The final answer is parsed, so it is not streamed token by token. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "approach.h"
#include "arena.h"
#include "log.h"

#define LC_TEMP       0.7
#define LC_RETRIES    3
#define LC_MAX_LEVELS 12
#define LC_NO_INFO    "[NO INFORMATION]"
#define LC_DELIM      "<CONTEXT_END>"

struct lc {
    struct approach_ctx *ctx;
    const char **chunks;
    size_t nchunks;
    const char **summaries; /* "" when its call failed */
    long max_out, summary_tokens, window, neighbors;
};

static const char *strrstr(const char *s, const char *needle)
{
    const char *last = NULL;

    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        last = p;
    return last;
}

static void split_input(struct arena *a, const char *text, const char **context,
                        const char **question)
{
    const char *d = strstr(text, LC_DELIM);
    const char *q;
    size_t len = strlen(text), cut = 0;

    if (d) {
        *context = arena_strtrim(a, text, (size_t)(d - text));
        *question = arena_strtrim(a, d + strlen(LC_DELIM), strlen(d + strlen(LC_DELIM)));
        return;
    }
    if ((q = strrstr(text, "Query:"))) {
        *context = arena_strtrim(a, text, (size_t)(q - text));
        *question = arena_strtrim(a, q + 6, strlen(q + 6));
        return;
    }
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    for (size_t i = 0; i + 1 < len; i++)
        if (strchr(".!?", text[i]) && isspace((unsigned char)text[i + 1]))
            cut = i + 1;
    *context = arena_strtrim(a, text, cut ? cut : len);
    *question = cut ? arena_strtrim(a, text + cut, len - cut) : "What is this text about?";
}

/* ---- chunks -----------------------------------------------------------------------------------
 */

/* Where to cut a piece of at most max bytes from s: after a sentence end, else at a space,
 * else at a UTF-8 boundary. */
static size_t piece_end(const char *s, size_t left, size_t max)
{
    if (left <= max)
        return left;
    for (size_t i = max; i > max / 2; i--)
        if (strchr(".?!;", s[i - 1]) && isspace((unsigned char)s[i]))
            return i;
    for (size_t i = max; i > max / 2; i--)
        if (s[i - 1] == ' ')
            return i;
    while (max > 1 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* Paragraphs (split on '\n', empty ones dropped) packed greedily into chunks of at most
 * 'max' bytes. Returns the count (at most cap). */
static size_t make_chunks(struct arena *a, const char *text, size_t max, size_t cap,
                          const char ***out)
{
    const char **c = arena_calloc(a, cap, sizeof(*c));
    size_t n = 0, len = strlen(text), pos = 0;
    const char *cur = NULL;
    size_t curlen = 0;

    while (pos < len && n < cap) {
        size_t pl = strcspn(text + pos, "\n");
        const char *p = text + pos;

        pos += pl + 1;
        while (pl > 0 && isspace((unsigned char)p[pl - 1]))
            pl--;
        if (pl == 0)
            continue;
        while (pl > 0 && n < cap) {
            size_t take = piece_end(p, pl, max);

            if (cur && curlen + 1 + take <= max) {
                cur = arena_printf(a, "%s\n%.*s", cur, (int)take, p);
                curlen += 1 + take;
            } else {
                if (cur)
                    c[n++] = cur;
                if (n == cap) {
                    cur = NULL;
                    break;
                }
                cur = arena_strndup(a, p, take);
                curlen = take;
            }
            p += take;
            pl -= take;
            while (pl > 0 && *p == ' ') {
                p++;
                pl--;
            }
        }
    }
    if (cur && n < cap)
        c[n++] = cur;
    /* a last chunk under half the size is rebalanced with the one before it, as OptiLLM: the
     * two are cut again at the line or space nearest their middle (both stay within max) */
    if (n >= 2 && strlen(c[n - 1]) < max / 2) {
        const char *both = arena_printf(a, "%s\n%s", c[n - 2], c[n - 1]);
        size_t len2 = strlen(both), lo = len2 > max ? len2 - max : 1, mid = len2 / 2;

        for (size_t d = 0; d <= mid; d++) {
            size_t i = mid - d, j = mid + d;

            if (i >= lo && i <= max && (both[i] == '\n' || both[i] == ' ')) {
                mid = i;
                break;
            }
            if (j >= lo && j <= max && j < len2 && (both[j] == '\n' || both[j] == ' ')) {
                mid = j;
                break;
            }
            if (d == len2 / 2)
                mid = 0; /* no boundary: keep the chunks as they are */
        }
        if (mid > 0) {
            c[n - 2] = arena_strndup(a, both, mid);
            c[n - 1] = arena_strdup(a, both + mid + 1);
        }
    }
    *out = c;
    return n;
}

/* ---- calls ------------------------------------------------------------------------------------
 */

static void set_call(struct lc *l, struct llm_call *c, const char *user, long max_tokens,
                     const char *stage)
{
    struct llm_msg *msgs;

    c->nmsgs = llm_msgs2(l->ctx, approach_prompt(l->ctx, "longcepo/system", NULL), user, &msgs);
    c->msgs = msgs;
    c->params = llm_params_default();
    c->params.temperature = LC_TEMP;
    c->params.max_tokens = max_tokens;
    c->stage = stage;
}

static const char *reply_text(const struct llm_call *c)
{
    return c->reply.status == PX_OK && c->reply.nchoices > 0 ? c->reply.choices[0].text : NULL;
}

/* One call, repeated up to LC_RETRIES times until its text holds one of 'tags' (NULL: any
 * successful text). Returns the last successful text, or NULL (ctx->err set) when every
 * attempt failed. */
static const char *until_tag(struct lc *l, const char *system, const char *user, long max_tokens,
                             const char *stage, const char *const *tags)
{
    const char *last = NULL;

    for (int i = 0; i < LC_RETRIES; i++) {
        struct llm_call c = {0};
        struct llm_msg *msgs;

        c.nmsgs = llm_msgs2(l->ctx, system, user, &msgs);
        c.msgs = msgs;
        c.params = llm_params_default();
        c.params.temperature = LC_TEMP;
        c.params.max_tokens = max_tokens;
        c.stage = stage;
        if (llm_batch(l->ctx, &c, 1) < 1)
            continue;
        last = reply_text(&c);
        for (int k = 0; tags && tags[k]; k++)
            if (strstr(last, tags[k]))
                return last;
        if (!tags)
            return last;
    }
    return last;
}

static bool no_info(const char *s)
{
    size_t n = strlen(LC_NO_INFO);

    for (; *s; s++)
        if (strncasecmp(s, LC_NO_INFO, n) == 0)
            return true;
    return false;
}

static const char *format_info(struct arena *a, const char *const *items, size_t n)
{
    const char *s = "";

    for (size_t i = 0; i < n; i++)
        s = arena_printf(a, "%s%sInformation of Chunk %zu:\n%s", s, i ? "\n\n" : "", i + 1,
                         items[i]);
    return s;
}

static const char *const answer_tags[] = {"**Answer**:", "**Answer**", "Answer:", NULL};

/* The text after the last answer tag, trimmed; the whole text when it has none. */
static const char *after_tag(struct arena *a, const char *text)
{
    const char *best = NULL;
    size_t blen = 0;

    for (int k = 0; answer_tags[k]; k++) {
        const char *p = strrstr(text, answer_tags[k]);

        if (p && (!best || p > best)) {
            best = p;
            blen = strlen(answer_tags[k]);
        }
    }
    if (!best)
        return arena_strtrim(a, text, strlen(text));
    best += blen;
    while (*best == ':' || isspace((unsigned char)*best))
        best++;
    return arena_strtrim(a, best, strlen(best));
}

/* Map-reduce of one question over the chunks. Returns the answer, or NULL with ctx->err set
 * when a whole stage failed. */
static const char *mapreduce(struct lc *l, const char *question, const char *history)
{
    struct approach_ctx *ctx = l->ctx;
    struct llm_call *calls = arena_calloc(ctx->arena, l->nchunks, sizeof(*calls));
    const char **items = arena_calloc(ctx->arena, l->nchunks + 1, sizeof(*items));
    size_t nitems = 0;
    const char *hist = *history ? history : "(nothing yet)";

    for (size_t i = 0; i < l->nchunks; i++) {
        size_t lo = i > (size_t)l->neighbors ? i - (size_t)l->neighbors : 0;
        size_t hi =
            i + (size_t)l->neighbors + 1 < l->nchunks ? i + (size_t)l->neighbors + 1 : l->nchunks;
        const char *nb = "";

        for (size_t k = lo; k < hi; k++)
            if (k != i && l->summaries[k][0])
                nb = arena_printf(ctx->arena, "%s%s%s", nb, *nb ? "\n\n" : "", l->summaries[k]);
        set_call(l, &calls[i],
                 approach_prompt(ctx, "longcepo/map", "neighbors", *nb ? nb : "(none)", "chunk",
                                 l->chunks[i], "history", hist, "question", question, NULL),
                 l->max_out, "longcepo/map");
    }
    if (llm_batch(ctx, calls, l->nchunks) < 0)
        return NULL;
    for (size_t i = 0; i < l->nchunks; i++) {
        const char *t = reply_text(&calls[i]);

        if (t && *t && !no_info(t))
            items[nitems++] = t;
    }
    if (nitems == 0)
        return "No information";
    /* collapse: adjacent pairs merged at once, level by level, while the reports are too long
     * for the reduce call */
    const char *empty_reduce = approach_prompt(ctx, "longcepo/reduce", "history", hist, "question",
                                               question, "info", "", NULL);
    long budget = l->window - l->max_out - (long)strlen(empty_reduce) / 4;

    for (int level = 0; level < LC_MAX_LEVELS && nitems > 1; level++) {
        const char *info = format_info(ctx->arena, items, nitems);
        size_t npairs = nitems / 2;

        if ((long)strlen(info) / 4 <= budget)
            break;
        struct llm_call *cc = arena_calloc(ctx->arena, npairs, sizeof(*cc));

        for (size_t p = 0; p < npairs; p++)
            set_call(l, &cc[p],
                     approach_prompt(ctx, "longcepo/collapse", "history", hist, "question",
                                     question, "info", format_info(ctx->arena, items + 2 * p, 2),
                                     NULL),
                     l->max_out, "longcepo/collapse");
        if (llm_batch(ctx, cc, npairs) < 0)
            return NULL;
        size_t m = 0;

        for (size_t p = 0; p < npairs; p++) {
            const char *t = reply_text(&cc[p]);

            if (t && *t) {
                if (!no_info(t))
                    items[m++] = t;
            } else { /* a failed merge keeps its inputs */
                items[m++] = arena_printf(ctx->arena, "%s\n\n%s", items[2 * p], items[2 * p + 1]);
            }
        }
        if (nitems % 2)
            items[m++] = items[nitems - 1];
        nitems = m;
        if (nitems == 0)
            return "No information";
    }
    const char *user =
        approach_prompt(ctx, "longcepo/reduce", "history", hist, "question", question, "info",
                        format_info(ctx->arena, items, nitems), NULL);
    const char *r = until_tag(l, approach_prompt(ctx, "longcepo/system", NULL), user, l->max_out,
                              "longcepo/reduce", answer_tags);

    return r ? after_tag(ctx->arena, r) : NULL;
}

static int longcepo_run(struct approach_ctx *ctx, struct chat_result *out)
{
    struct lc l = {
        .ctx = ctx,
        .max_out = (long)approach_opt(ctx, "longcepo_max_output"),
        .summary_tokens = (long)approach_opt(ctx, "longcepo_summary_tokens"),
        .window = (long)approach_opt(ctx, "longcepo_context_window"),
        .neighbors = (long)approach_opt(ctx, "longcepo_neighbors"),
    };
    size_t chunk_bytes = (size_t)approach_opt(ctx, "longcepo_chunk_tokens") * 4;
    size_t max_chunks = (size_t)approach_opt(ctx, "longcepo_max_chunks");
    size_t max_sub = (size_t)approach_opt(ctx, "longcepo_max_subquestions");
    const char *sys = chat_system(ctx->arena, ctx->req);
    const char *context, *question, *normalized, *plan, *history = "", *answer;
    static const char *const plan_tags[] = {"<SUB-QUESTIONS>", NULL};

    split_input(ctx->arena, chat_last_user(ctx->req), &context, &question);
    /* 1. the bare question */
    normalized =
        until_tag(&l, sys, approach_prompt(ctx, "longcepo/normalize", "query", question, NULL),
                  l.max_out, "longcepo/normalize", NULL);
    normalized = normalized && *normalized
                     ? arena_strtrim(ctx->arena, normalized, strlen(normalized))
                     : question;
    /* 2. the plan */
    plan = until_tag(&l, NULL,
                     approach_prompt(ctx, "longcepo/plan", "question", normalized, "max",
                                     arena_printf(ctx->arena, "%zu", max_sub), NULL),
                     l.max_out, "longcepo/plan", plan_tags);
    /* 3. chunks */
    l.nchunks = make_chunks(ctx->arena, context, chunk_bytes, max_chunks, &l.chunks);
    if (l.nchunks == 0) {
        l.chunks = arena_calloc(ctx->arena, 1, sizeof(*l.chunks));
        l.chunks[0] = "(empty)";
        l.nchunks = 1;
    }
    /* 4. summaries, all at once */
    struct llm_call *sc = arena_calloc(ctx->arena, l.nchunks, sizeof(*sc));

    l.summaries = arena_calloc(ctx->arena, l.nchunks, sizeof(*l.summaries));
    for (size_t i = 0; i < l.nchunks; i++)
        set_call(&l, &sc[i], approach_prompt(ctx, "longcepo/summary", "chunk", l.chunks[i], NULL),
                 l.summary_tokens, "longcepo/summary");
    llm_batch(ctx, sc, l.nchunks); /* failures tolerated: no summary for that chunk */
    for (size_t i = 0; i < l.nchunks; i++) {
        const char *t = reply_text(&sc[i]);

        l.summaries[i] = t ? arena_strtrim(ctx->arena, t, strlen(t)) : "";
    }
    /* 5. the sub-questions in order, then the question */
    const char *b = plan ? strstr(plan, "<SUB-QUESTIONS>") : NULL;
    const char *e = b ? strstr(b, "</SUB-QUESTIONS>") : NULL;
    size_t nsub = 0;

    if (b) {
        b += strlen("<SUB-QUESTIONS>");
        if (!e)
            e = b + strlen(b);
    }
    while (b && b < e && nsub < max_sub) {
        size_t ll = strcspn(b, "\n");
        const char *line;

        if (b + ll > e)
            ll = (size_t)(e - b);
        line = arena_strtrim(ctx->arena, b, ll);
        b += ll + 1;
        while (isdigit((unsigned char)*line))
            line++;
        if (*line == '.' || *line == ')')
            line++;
        while (isspace((unsigned char)*line))
            line++;
        if (!*line)
            continue;
        nsub++;
        answer = mapreduce(&l, line, history);
        if (!answer) {
            log_at(LOG_WARN, ctx->req_id, "longcepo: sub-question %zu failed", nsub);
            continue;
        }
        history = arena_printf(ctx->arena, "%s- Previous question: %s\n\n- Previous answer: %s\n\n",
                               history, line, answer);
    }
    answer = mapreduce(&l, question, history);
    if (!answer)
        return ctx->err && ctx->err->code ? ctx->err->code : PX_EUPSTREAM;
    out->text = answer;
    out->finish_reason = "stop";
    return PX_OK;
}

static const struct approach_option longcepo_options[] = {
    {.name = "longcepo_chunk_tokens",
     .def = 4096,
     .min = 64,
     .max = 1000000,
     .integer = true,
     .help = "longcepo: chunk size in estimated tokens (bytes / 4)"},
    {.name = "longcepo_max_chunks",
     .def = 128,
     .min = 1,
     .max = 1024,
     .integer = true,
     .help = "longcepo: chunks at most (the rest of the context is dropped)"},
    {.name = "longcepo_context_window",
     .def = 8192,
     .min = 1024,
     .max = 10000000,
     .integer = true,
     .help = "longcepo: the model's context window in tokens (collapse until the reports fit)"},
    {.name = "longcepo_max_output",
     .def = 1024,
     .min = 16,
     .max = 100000,
     .integer = true,
     .help = "longcepo: max_tokens of every call but the summaries"},
    {.name = "longcepo_summary_tokens",
     .def = 300,
     .min = 16,
     .max = 100000,
     .integer = true,
     .help = "longcepo: max_tokens of a chunk summary"},
    {.name = "longcepo_neighbors",
     .def = 5,
     .min = 0,
     .max = 100,
     .integer = true,
     .help = "longcepo: summaries of the chunks before and after given to each map call"},
    {.name = "longcepo_max_subquestions",
     .def = 5,
     .min = 0,
     .max = 20,
     .integer = true,
     .help = "longcepo: sub-questions of the plan answered at most"},
    {.name = NULL},
};

const struct approach approach_longcepo = {
    .slug = "longcepo",
    .run = longcepo_run,
    .prompts = (const char *const[]){"longcepo/system", "longcepo/normalize", "longcepo/plan",
                                     "longcepo/summary", "longcepo/map", "longcepo/collapse",
                                     "longcepo/reduce", NULL},
    .options = longcepo_options,
    .summary = "LongCePO: long-context map-reduce (normalise, plan sub-questions, summarise "
               "chunks, then per question map in parallel, collapse, reduce)",
    .calls = 0,  /* depends on the context: 2 + C + (S+1)(C + K + 1) */
    .rounds = 0, /* 3 + (S+1)(2 + collapse levels) */
    .tools = false,
    .response_format = false,
};
