/* vote.c: choosing one of k samples by their final answers, shared by self_consistency and
 * majority_voting. Samples vote with their extracted answer (answer.h), so differently worded
 * samples that agree end up in one group; samples without an extractable answer are grouped by
 * text similarity (Jaccard of their word sets >= 0.8). Every choice depends on content only
 * (sample order is arrival order under concurrency): groups are formed over the samples
 * sorted by text, ties go to the group with an extracted answer, then to the smaller key; the
 * returned member is the shortest, then the first in byte order. Truncated samples vote only
 * when no sample completed (the last number of a cut text is rarely its answer).
 *
 * A sample that calls tools votes with its calls' canonical key (llm_tool_calls_key: names and
 * arguments with sorted keys, ids ignored), so samples that would do the same thing agree
 * whatever their call ids or key order; among them the shortest, then the first in byte
 * order of its raw calls, is returned. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "adaptive.h"
#include "answer.h"
#include "approach.h"
#include "arena.h"
#include "log.h"
#include "vote.h"

#define SIMILARITY 0.8 /* OptiLLM's clustering threshold */

struct sample {
    int idx; /* in the caller's array */
    const char *text;
    const char *tools; /* tool_calls JSON, or NULL */
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
static const char *split_words(struct arena *ctx_arena, struct sample *s)
{
    size_t cap = s->len / 2 + 1;
    char *norm = arena_alloc(ctx_arena, s->len + 1);
    size_t pos = 0;
    size_t n = 0;

    s->words = arena_calloc(ctx_arena, cap, sizeof(*s->words));
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
        w = arena_strndup(ctx_arena, start, (size_t)(p - start));
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

static const char *key_of(struct arena *ctx_arena, const char *text)
{
    struct answer a = answer_extract(ctx_arena, text, ANSWER_NONE);

    return answer_key(ctx_arena, &a);
}

/* Content order of samples: the text grouping runs over them in this order. */
static int sample_cmp(const void *pa, const void *pb)
{
    const struct sample *a = pa;
    const struct sample *b = pb;
    int c = strcmp(a->text, b->text);

    if (c == 0)
        c = strcmp(a->tools ? a->tools : "", b->tools ? b->tools : "");
    return c;
}

/* Is member a a better representative than b: shorter, then byte order. (The members are
 * all complete or all truncated: see collect().) */
static bool better_member(const struct sample *a, const struct sample *b)
{
    if (a->len != b->len)
        return a->len < b->len;
    return sample_cmp(a, b) < 0;
}

static bool better_group(const struct group *a, const struct group *b)
{
    if (a->size != b->size)
        return a->size > b->size;
    if (a->answer != b->answer)
        return a->answer;
    return strcmp(a->key, b->key) < 0;
}

/* Groups the samples (answer keys already set; sorted here into content order); sets *ngroups. */
static struct group *group_samples(struct arena *ctx_arena, struct sample *s, int n, int *ngroups)
{
    struct group *g = arena_calloc(ctx_arena, (size_t)n, sizeof(*g));
    int ng = 0;

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
            const char *norm = split_words(ctx_arena, &s[i]);

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
    *ngroups = ng;
    return g;
}

/* Groups the samples (answer keys already set) and returns the chosen one. */
static const struct sample *vote(struct arena *ctx_arena, struct sample *s, int n)
{
    int ng = 0;
    int win = 0;
    struct group *g = group_samples(ctx_arena, s, n, &ng);

    for (int j = 1; j < ng; j++)
        if (better_group(&g[j], &g[win]))
            win = j;
    return &s[g[win].best];
}

/* The usable samples of c[0..got): blank ones dropped, truncated ones dropped when any sample
 * completed, answer keys set. Sets *n; may be 0. */
static struct sample *collect(struct arena *ctx_arena, const struct llm_choice *c, int got, int *n)
{
    struct sample *s = arena_calloc(ctx_arena, (size_t)got, sizeof(*s));
    bool any_complete = false;
    int m = 0;

    *n = 0;
    for (int i = 0; i < got; i++) {
        const char *tkey = llm_tool_calls_key(ctx_arena, c[i].tool_calls);

        if (blank(c[i].text) && !*tkey)
            continue;
        s[*n].idx = i;
        s[*n].text = c[i].text;
        s[*n].tools = *tkey ? c[i].tool_calls : NULL;
        s[*n].finish = c[i].finish_reason;
        s[*n].len = strlen(c[i].text) + (*tkey ? strlen(c[i].tool_calls) : 0);
        s[*n].key = *tkey ? arena_printf(ctx_arena, "tool:%s", tkey) : key_of(ctx_arena, c[i].text);
        any_complete = any_complete || !truncated(&s[*n]);
        (*n)++;
    }
    for (int i = 0; i < *n; i++)
        if (!any_complete || !truncated(&s[i]))
            s[m++] = s[i];
    *n = m;
    return s;
}

/* The voters of c[0..got) under 'mode'; sets *n (0: none). */
static struct sample *voters(struct arena *a, const struct llm_choice *c, int got,
                             enum vote_mode mode, int *n)
{
    int m = 0;
    bool any_key = false;
    struct sample *s = collect(a, c, got, n);

    if (*n > 0 && mode == VOTE_ANSWERS_FIRST) {
        /* Only samples with an answer vote; the text grouping is the fallback for none. */
        for (int i = 0; i < *n; i++)
            any_key = any_key || *s[i].key;
        for (int i = 0; i < *n; i++)
            if (!any_key || *s[i].key)
                s[m++] = s[i];
        *n = m;
    }
    return s;
}

int vote_choose(struct arena *a, const struct llm_choice *c, int got, enum vote_mode mode,
                bool *truncated_out)
{
    int n;
    struct sample *s = voters(a, c, got, mode, &n);
    const struct sample *pick;

    if (n == 0)
        return -1;
    pick = vote(a, s, n);
    *truncated_out = truncated(pick);
    return pick->idx;
}

int vote_tally(struct arena *a, const struct llm_choice *c, int got, enum vote_mode mode,
               int *counts)
{
    int n, ng = 0;
    struct sample *s = voters(a, c, got, mode, &n);
    struct group *g = n > 0 ? group_samples(a, s, n, &ng) : NULL;

    for (int j = 0; j < ng; j++)
        counts[j] = g[j].size;
    return ng;
}

int vote_sample(struct approach_ctx *ctx, const struct llm_msg *msgs, size_t nmsgs,
                const struct llm_params *p, int k, const char *stage, enum vote_mode mode,
                struct llm_choice *out, int *rounds)
{
    int got = 0;
    int drawn = 0;
    int *counts = arena_calloc(ctx->arena, (size_t)k + 1, sizeof(*counts));
    int ng = 0;

    *rounds = 0;
    if (approach_opt(ctx, "adaptive") < 0.5) {
        int fit = llm_budget_samples(ctx, k, 0, 0);
        int r;

        *rounds = 1;
        r = llm_sample(ctx, msgs, nmsgs, p, fit > 0 ? fit : 1, stage, out);
        if (r >= 0 && r < k && fit < k)
            llm_budget_note(ctx, "samples=%d/%d", r, k);
        return r;
    }
    double risk = approach_opt(ctx, "adaptive_risk");

    while (!adaptive_stop(counts, ng, drawn, k, risk)) {
        int m = adaptive_batch(counts, ng, k - drawn, risk);
        int fit = llm_budget_samples(ctx, m, 0, 0);
        int r;

        if (drawn > 0 && (fit == 0 || llm_budget_tokens_left(ctx) <= 0)) {
            llm_budget_note(ctx, "samples=%d/%d", got, k); /* the budget ends the vote */
            break;
        }
        if (fit > 0 && fit < m)
            llm_budget_note(ctx, "samples=%d/%d", drawn + fit, k);
        m = fit > 0 ? fit : m; /* nothing fits at all: llm_sample refuses */
        r = llm_sample(ctx, msgs, nmsgs, p, m, stage, out + got);

        (*rounds)++;
        drawn += m;
        if (r < 0) {
            /* A failed round ends the vote on what it has; with nothing yet it fails. */
            if (got == 0)
                return r;
            break;
        }
        got += r;
        ng = vote_tally(ctx->arena, out, got, mode, counts);
    }
    log_at(LOG_DEBUG, ctx->req_id, "%s: %d of %d samples in %d rounds", stage, got, k, *rounds);
    return got;
}
