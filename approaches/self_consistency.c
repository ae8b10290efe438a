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
 * majority_voting.c carries a copy of the grouping code (each approach file exports one
 * symbol only); keep the two in step. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "approach.h"
#include "arena.h"

#define GEN_TEMPERATURE 1.0 /* OptiLLM's */
#define SIMILARITY      0.8 /* OptiLLM's clustering threshold */

struct sample {
    const char *text;
    const char *finish;
    size_t len;
    const char *key; /* the answer key, or "" */
    char **words;    /* sorted, unique lower-case words (text grouping only) */
    size_t nwords;
};

struct group {
    const char *key; /* answer key, or the first member's normalised words */
    bool answer;     /* grouped by extracted answer */
    int size;
    int anchor; /* first member: text groups compare new samples with it */
    int best;   /* the member to return */
};

static bool blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == '\0';
}

static bool truncated(const struct sample *s)
{
    return s->finish && strcmp(s->finish, "length") == 0;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sample's words (ASCII letters and digits lower-cased, other bytes >= 0x80 kept), sorted
 * and unique, plus the words joined by spaces as its normalised text. */
static const char *split_words(struct approach_ctx *ctx, struct sample *s)
{
    size_t cap = s->len / 2 + 1;
    char *norm = arena_alloc(ctx->arena, s->len + 1);
    size_t pos = 0;
    size_t n = 0;

    s->words = arena_calloc(ctx->arena, cap, sizeof(*s->words));
    for (const char *p = s->text; *p;) {
        const char *start;
        char *w;

        while (*p && !isalnum((unsigned char)*p) && !((unsigned char)*p & 0x80))
            p++;
        if (!*p)
            break;
        start = p;
        while (*p && (isalnum((unsigned char)*p) || ((unsigned char)*p & 0x80)))
            p++;
        w = arena_strndup(ctx->arena, start, (size_t)(p - start));
        for (char *c = w; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        if (pos)
            norm[pos++] = ' ';
        memcpy(norm + pos, w, strlen(w));
        pos += strlen(w);
        s->words[n++] = w;
    }
    norm[pos] = '\0';
    qsort(s->words, n, sizeof(*s->words), str_cmp);
    s->nwords = 0;
    for (size_t i = 0; i < n; i++)
        if (s->nwords == 0 || strcmp(s->words[s->nwords - 1], s->words[i]) != 0)
            s->words[s->nwords++] = s->words[i];
    return norm;
}

/* |A ∩ B| / |A ∪ B| over two sorted unique word lists; two empty lists are identical. */
static double jaccard(const struct sample *a, const struct sample *b)
{
    size_t i = 0;
    size_t j = 0;
    size_t common = 0;
    size_t all = a->nwords + b->nwords;

    if (all == 0)
        return 1.0;
    while (i < a->nwords && j < b->nwords) {
        int c = strcmp(a->words[i], b->words[j]);

        if (c == 0)
            common++;
        if (c <= 0)
            i++;
        if (c >= 0)
            j++;
    }
    return (double)common / (double)(all - common);
}

static const char *key_of(struct approach_ctx *ctx, const char *text)
{
    struct answer a = answer_extract(ctx->arena, text, ANSWER_NONE);

    return answer_key(ctx->arena, &a);
}

/* Content order of samples: the text grouping runs over them in this order. */
static int sample_cmp(const void *pa, const void *pb)
{
    const struct sample *a = pa;
    const struct sample *b = pb;

    return strcmp(a->text, b->text);
}

/* Is member a a better representative than b: shorter, then byte order. (The members are
 * all complete or all truncated: see collect().) */
static bool better_member(const struct sample *a, const struct sample *b)
{
    if (a->len != b->len)
        return a->len < b->len;
    return strcmp(a->text, b->text) < 0;
}

static bool better_group(const struct group *a, const struct group *b)
{
    if (a->size != b->size)
        return a->size > b->size;
    if (a->answer != b->answer)
        return a->answer;
    return strcmp(a->key, b->key) < 0;
}

/* Groups the samples (answer keys already set) and returns the chosen one. */
static const struct sample *vote(struct approach_ctx *ctx, struct sample *s, int n)
{
    struct group *g = arena_calloc(ctx->arena, (size_t)n, sizeof(*g));
    int ng = 0;
    int win = 0;

    qsort(s, (size_t)n, sizeof(*s), sample_cmp);
    for (int i = 0; i < n; i++) {
        int j;

        if (*s[i].key) {
            for (j = 0; j < ng; j++)
                if (g[j].answer && strcmp(g[j].key, s[i].key) == 0)
                    break;
            if (j == ng)
                g[ng++] = (struct group){.key = s[i].key, .answer = true, .anchor = i, .best = i};
        } else {
            const char *norm = split_words(ctx, &s[i]);

            /* Join the first text group whose first member is similar enough: the samples
             * are in content order, so the grouping is too. */
            for (j = 0; j < ng; j++)
                if (!g[j].answer && jaccard(&s[g[j].anchor], &s[i]) >= SIMILARITY)
                    break;
            if (j == ng)
                g[ng++] = (struct group){.key = norm, .anchor = i, .best = i};
        }
        g[j].size++;
        if (better_member(&s[i], &s[g[j].best]))
            g[j].best = i;
    }
    for (int j = 1; j < ng; j++)
        if (better_group(&g[j], &g[win]))
            win = j;
    return &s[g[win].best];
}

/* The usable samples of c[0..got): blank ones dropped, truncated ones dropped when any sample
 * completed, answer keys set. Sets *n; may be 0. */
static struct sample *collect(struct approach_ctx *ctx, const struct llm_choice *c, int got, int *n)
{
    struct sample *s = arena_calloc(ctx->arena, (size_t)got, sizeof(*s));
    bool any_complete = false;
    int m = 0;

    *n = 0;
    for (int i = 0; i < got; i++) {
        if (blank(c[i].text))
            continue;
        s[*n].text = c[i].text;
        s[*n].finish = c[i].finish_reason;
        s[*n].len = strlen(c[i].text);
        s[*n].key = key_of(ctx, c[i].text);
        any_complete = any_complete || !truncated(&s[*n]);
        (*n)++;
    }
    for (int i = 0; i < *n; i++)
        if (!any_complete || !truncated(&s[i]))
            s[m++] = s[i];
    *n = m;
    return s;
}

static int sc_run(struct approach_ctx *ctx, struct chat_result *out)
{
    int k = (int)approach_opt(ctx, "samples");
    struct llm_params p = llm_params_default();
    struct llm_choice *c = arena_calloc(ctx->arena, (size_t)k, sizeof(*c));
    struct llm_msg *msgs;
    size_t nmsgs = llm_msgs_conversation(ctx, NULL, NULL, &msgs);
    const struct sample *pick;
    struct sample *s;
    int got;
    int n;

    p.temperature = isnan(ctx->req->temperature) ? GEN_TEMPERATURE : ctx->req->temperature;
    got = llm_sample(ctx, msgs, nmsgs, &p, k, "self_consistency/sample", c);
    if (got < 0)
        return got;
    s = collect(ctx, c, got, &n);
    if (n == 0) {
        out->text = "";
        out->finish_reason = "stop";
        return PX_OK;
    }
    pick = vote(ctx, s, n);
    out->text = pick->text;
    out->finish_reason = truncated(pick) ? "length" : "stop";
    return PX_OK;
}

static const struct approach_option sc_options[] = {
    {.name = "samples",
     .def = 5,
     .min = 1,
     .max = 32,
     .integer = true,
     .help = "samples drawn by self_consistency"},
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
};
